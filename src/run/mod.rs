//! The executor: the one place where time, processes and I/O meet. It opens the run folder (`open`), asks
//! the schedule (`crate::schedule`) for every step that may run now and carries the steps out (`exec`)
//! through the seam (`seam`): servers as processes and load over HTTP (`real`), or the in-process fake
//! (`fake`). Derived files are rendered (`crate::report`) when a server start ends, at the end of the run
//! and once on interrupt — never after every point.

pub mod capacity;
mod exec;
pub mod fake;
pub mod load;
mod open;
pub mod progress;
pub mod real;
pub mod seam;
pub mod server;
pub mod workload;

pub use open::{MAX_PROMPTS_FILE, check_inputs, check_run_id, check_templates};

use crate::plan::{Plan, ServerGroup};
use crate::probe::{self, MemoryProbe, model::ModelFacts};
use crate::record::io::{RecordError, json_pretty, write_atomic};
use crate::record::journal;
use crate::record::manifest::Manifest;
use crate::record::{Recorded, Status};
use crate::report::ReportError;
use crate::schedule::{Rules, Schedule};
use crate::spec::{LoadedSpec, Spec};
use progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot write the run's output under {path}: {source}; check that the folder is writable, or pass --out DIR"
    )]
    Output { path: String, source: std::io::Error },
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Probe(#[from] crate::probe::ProbeError),
    /// The HTTP client could not be built (TLS or resolver setup): nothing servelab's input can fix.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error(
        "cannot render the reports: {0}; the records are committed, so `servelab report RUN` re-renders them once it is fixed"
    )]
    Report(#[source] Box<ReportError>),
    #[error("{0}")]
    Preflight(#[from] Preflight),
    /// A report template of the spec's `templates:` folder fails on synthetic records of the plan.
    #[error(
        "the report templates in {dir} cannot render this plan's reports: {source} (checked against synthetic records before anything started)"
    )]
    Templates {
        dir: String,
        #[source]
        source: Box<ReportError>,
    },
    /// On resume, the first server of this invocation reported another vLLM than the run was recorded with.
    #[error(
        "vLLM changed since {dir} was recorded ({old} → {new}); nothing was measured under {new}. Start a new run, or pass --force to resume anyway"
    )]
    VllmChanged { dir: String, old: String, new: String },
    /// The executor and the schedule disagree: a bug in servelab.
    #[error("{0}")]
    Internal(String),
    /// An I/O or report error after the run was under way (exit 6, not "nothing ran").
    #[error(transparent)]
    DuringRun(Box<RunError>),
}

/// Why a run refuses to start, found before any server starts (exit 2, nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum Preflight {
    /// The plan's prompts cannot be built: a dataset, a prompts file, a tokenizer or a trace.
    #[error("{0}")]
    Workload(#[from] crate::load::error::WorkloadError),
    /// The run folder, the host's slots or the plan: the message names the input and says the fix.
    #[error("{0}")]
    Refused(String),
}

impl From<String> for Preflight {
    fn from(message: String) -> Self {
        Preflight::Refused(message)
    }
}

// Boxed in `RunError`: a report error is large, and `RunError` is the error of every step of the loop.
impl From<ReportError> for RunError {
    fn from(e: ReportError) -> Self {
        RunError::Report(Box::new(e))
    }
}

impl RunError {
    /// A preflight refusal whose message names the input and says the fix.
    pub(crate) fn refused(message: String) -> RunError {
        RunError::Preflight(Preflight::Refused(message))
    }

    /// Output and report errors once servers have been started are run-time errors: what was measured is
    /// committed, and the run cannot be said to have done nothing.
    pub(crate) fn during_run(self) -> RunError {
        match self {
            RunError::Output { .. } | RunError::Record(_) | RunError::Report(_) => RunError::DuringRun(Box::new(self)),
            other => other,
        }
    }
}

pub struct RunOptions {
    /// Runs go to `<out_root>/<spec name>/<run id>/`.
    pub out_root: PathBuf,
    pub run_id: Option<String>,
    /// Continue this run folder: points already measured are skipped.
    pub resume: Option<PathBuf>,
    /// Resume even though the environment fingerprint changed, or into a folder of another experiment (`name`).
    pub force: bool,
    /// Stop at the first failed point or server start.
    pub fail_fast: bool,
    /// A tune starts at most this many servers in this invocation, then stops; `--resume` goes on (a GPU
    /// lent in time slots).
    pub max_starts: Option<usize>,
    /// What the host lends the run at once (`Host::serial()`: one group after the other, nothing bound).
    pub host: crate::plan::slots::Host,
    /// `--shard I/N`: the plan given is that shard's share; the manifest records which.
    pub shard: Option<crate::record::manifest::ShardOf>,
}

impl RunOptions {
    /// A fresh run into `<out_root>/<spec name>/<run_id>`, one group after the other: no resume, no limit on
    /// starts, nothing bound, no shard (`servelab bench`, and tests that drive a run in process).
    pub fn serial(out_root: PathBuf, run_id: Option<String>) -> RunOptions {
        RunOptions {
            out_root,
            run_id,
            resume: None,
            force: false,
            fail_fast: false,
            max_starts: None,
            host: crate::plan::slots::Host::serial(),
            shard: None,
        }
    }
}

pub struct Outcome {
    pub dir: PathBuf,
    pub recorded: Recorded,
    /// The manifest as the run left it (with a tune's pruned configurations).
    pub manifest: Manifest,
    pub interrupted: bool,
}

impl Outcome {
    /// (starts that became ready, all starts) over the whole run, earlier invocations' included: a tune
    /// starts one configuration several times, and a resumed run counts what came before it. An external
    /// endpoint counts as one start, as it always has.
    pub fn starts_ok(&self) -> (usize, usize) {
        let rec = &self.recorded;
        let started: Vec<_> = rec.servers.iter().chain(&rec.earlier_starts).collect();
        (started.iter().filter(|s| s.status == Status::Ok).count(), started.len())
    }
    pub fn failed_servers(&self) -> usize {
        self.recorded.servers.iter().filter(|s| s.status == Status::Failed).count()
    }
    /// Points whose latest attempt failed (a resumed run that measured them again counts them once, ok).
    pub fn failed_points(&self) -> usize {
        let mut latest: std::collections::BTreeMap<&str, &crate::record::PointRecord> = Default::default();
        for p in &self.recorded.points {
            let e = latest.entry(p.point.as_str()).or_insert(p);
            if p.attempt >= e.attempt {
                *e = p;
            }
        }
        latest.values().filter(|p| p.status == Status::Failed).count()
    }
}

/// Which side of the seam a run uses, and a hook for tests of resume.
#[derive(Clone, Debug, Default)]
pub struct Seam {
    /// The in-process fake (`fake`: no process, no port) instead of real servers.
    pub fake: bool,
    /// The fake's time per point (so groups in flight at once interleave).
    pub fake_delay: Duration,
    /// Interrupt the run, as Ctrl-C would, once this many points were measured.
    pub interrupt_after: Option<usize>,
}

/// Every derived file of a run, rendered from what it recorded.
pub(crate) fn write_derived(
    dir: &Path,
    spec: &Spec,
    manifest: &Manifest,
    rec: &Recorded,
    templates: Option<PathBuf>,
) -> Result<(), RunError> {
    let (files, _) = crate::report::derive::derive(spec, manifest, rec, templates)?;
    for (name, bytes) in files {
        write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// Model facts from `<model>/config.json` when the model is a local folder; `--dtype` and
/// `--kv-cache-dtype` from the server's argv decide the KV element size.
/// A config.json that cannot be read is warned about once, where the server starts (`real.rs`, into its
/// startup record); the other readers go on without the facts.
pub(crate) fn model_facts(group: &ServerGroup) -> Option<ModelFacts> {
    server::read_model_facts(group).unwrap_or_default()
}

/// Runs the plan against real servers.
pub async fn execute(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    interrupted: &AtomicBool,
) -> Result<Outcome, RunError> {
    execute_on(loaded, plan, opts, interrupted, &Seam::default()).await
}

/// Runs the plan on the given side of the seam.
pub async fn execute_on(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    interrupted: &AtomicBool,
    seam: &Seam,
) -> Result<Outcome, RunError> {
    let probe: Arc<dyn MemoryProbe> = Arc::from(probe::select(loaded.spec.measure.memory)?);
    if let Some(id) = &opts.run_id {
        check_run_id(id)?;
    }
    let slots = if opts.host.binds() { crate::plan::slots::Pool::new(&opts.host).capacity() } else { 1 };
    let port_offset = opts.shard.as_ref().map_or(0, |s| s.index * slots);
    let api_key = open::preflight(plan, loaded, &opts.host, port_offset)?;
    let (dir, mut manifest, mut rec) = open::open_run(loaded, plan, opts, probe.as_ref())?;
    let journal = journal::Journal::new(&dir);
    let state = journal::state(&journal.read()?);
    let http = http_client()?;
    let pruned = if plan.tune.is_some() { prune(plan, probe.as_ref()) } else { Default::default() };
    manifest.tune_pruned = pruned.clone();
    if let crate::plan::slots::Lend::Gpus(gpus) = &opts.host.lend {
        manifest.gpu_idle_mb = gpu_idle(gpus, probe.as_ref());
    }
    let started_before = state.server_starts;
    let rules = Rules { fail_fast: opts.fail_fast, max_starts: opts.max_starts, pruned, slots, started_before };
    let schedule = Schedule::new(&loaded.spec, plan, rules, state.done.clone());
    let progress = Progress::new(schedule.expected_points());
    announce(&progress, &dir, plan, &state, probe.as_ref());
    if !manifest.tune_pruned.is_empty() {
        progress.line(&format!(
            "tune: the capacity model rules out {} of {} configurations on this GPU",
            manifest.tune_pruned.len(),
            plan.groups.len() - 1
        ));
    }
    let env = exec::Env {
        dir: &dir,
        spec: &loaded.spec,
        progress: &progress,
        journal: &journal,
        probe: probe.as_ref(),
        interrupted,
        resume: opts.resume.is_some(),
        force: opts.force,
        host: &opts.host,
        templates: loaded.spec.templates.as_ref().map(PathBuf::from),
        port_offset,
    };
    if seam.fake {
        let engine = fake::FakeEngine { probe: probe.clone(), interrupted };
        let inner = fake::FakeDriver { measure_delay: seam.fake_delay };
        let driver = seam::StopAfter::new(inner, seam.interrupt_after, interrupted);
        exec::Exec { env, engine: &engine, driver: &driver, schedule: &schedule }
            .run(&state, &mut manifest, &mut rec)
            .await?;
    } else {
        let engine = real::Processes { probe: probe.clone(), http: &http, interrupted, api_key: api_key.as_deref() };
        let load = load::Context {
            http: &http,
            probe: probe.clone(),
            gpu_interval: loaded.spec.measure.gpu_util_interval.0.max(Duration::from_millis(10)),
            server_metrics: loaded.spec.measure.server_metrics,
            interrupted,
            api_key: api_key.clone(),
        };
        let warm = loaded.spec.load.as_ref().map_or(Duration::ZERO, |l| l.server_warmup.0);
        let driver = seam::StopAfter::new(real::Http { load, warm }, seam.interrupt_after, interrupted);
        exec::Exec { env, engine: &engine, driver: &driver, schedule: &schedule }
            .run(&state, &mut manifest, &mut rec)
            .await?;
    }
    progress.finish();
    finish(&dir, loaded, &mut manifest, &rec)?;
    Ok(Outcome { dir, recorded: rec, manifest, interrupted: interrupted.load(Ordering::SeqCst) })
}

/// The client of every request and probe: no proxy, no redirect (a benchmark measures the server it names).
fn http_client() -> Result<reqwest::Client, RunError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(RunError::HttpClient)
}

/// Each lent GPU's idle reading, before any slot starts.
fn gpu_idle(gpus: &[crate::plan::slots::Gpu], probe: &dyn MemoryProbe) -> std::collections::BTreeMap<u32, f64> {
    let idle = |i: u32| probe.for_gpus(&[i]).and_then(|p| p.device()).map(|d| d.0);
    gpus.iter().filter_map(|g| Some((g.index, idle(g.index)?))).collect()
}

/// The run's end: the manifest with its end time, and the derived files when a server was recorded.
fn finish(dir: &Path, loaded: &LoadedSpec, manifest: &mut Manifest, rec: &Recorded) -> Result<(), RunError> {
    manifest.ended_at = Some(chrono::Local::now().to_rfc3339());
    crate::record::io::write_doc(&dir.join(crate::record::folder::MANIFEST), &json_pretty(&*manifest))
        .map_err(|e| RunError::from(e).during_run())?;
    if !rec.servers.is_empty() {
        let templates = loaded.spec.templates.as_ref().map(PathBuf::from);
        write_derived(dir, &loaded.spec, manifest, rec, templates).map_err(RunError::during_run)?;
    }
    Ok(())
}

/// The run's first console line: where it goes, what it will measure, where memory is read.
fn announce(progress: &Progress, dir: &Path, plan: &Plan, state: &journal::State, probe: &dyn MemoryProbe) {
    let pending = plan.points().filter(|(_, p)| !state.done.contains(&p.id)).count();
    let what = match (&plan.search, &plan.tune) {
        (Some(s), _) => format!("a search over {} rates per configuration", s.ladder.len()),
        (_, Some(t)) => format!("a tune in at most {} server starts", t.starts),
        _ => format!("{pending} of {} runs to measure", plan.runs()),
    };
    progress.line(&format!(
        "run {}: {} server configurations, {what}, memory from {}",
        dir.display(),
        plan.groups.len(),
        probe.source().as_str()
    ));
}

/// The configurations of the space the capacity model rules out on this GPU (group → why): those that
/// cannot start, and those whose KV pool cannot hold one request of the workload. Nothing without a GPU.
fn prune(plan: &Plan, probe: &dyn MemoryProbe) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(gpu) = probe.cuda_total_bytes() else { return out };
    for g in plan.groups.iter().filter(|g| g.server.kind == crate::spec::EngineKind::Vllm) {
        let Ok(p) = capacity::predict(g, model_facts(g).as_ref(), gpu) else { continue };
        // The longest request the workload sends (a drawn length at its upper bound), within the context.
        let need = g.points.iter().filter_map(|p| p.client.as_ref()).map(|c| {
            let out = c.output_dist.as_ref().map_or(c.max_tokens, |d| d.bounds().1);
            let prompt = c.prompt_dist.as_ref().map_or(c.prompt_tokens, |d| d.bounds().1);
            let len = u64::from(prompt) + u64::from(out);
            g.server.max_model_len.map_or(len, |m| len.min(m))
        });
        let need = need.max().unwrap_or(0);
        if let Some(why) = p.cannot_start.clone() {
            out.insert(g.id.clone(), format!("cannot start: {why}"));
        } else if p.kv_tokens < need {
            out.insert(
                g.id.clone(),
                format!("its KV pool ({} tokens) cannot hold one request of the workload ({need} tokens)", p.kv_tokens),
            );
        }
    }
    out
}
