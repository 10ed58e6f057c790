//! The executor: the one place where time, processes and I/O meet. Takes the plan's server groups in order,
//! starts each server once, records what it committed, stops it, and rewrites the outputs after every point
//! so a crash keeps what was measured. It writes the run folder through `record` and renders derived files
//! and decides precision rounds through the `Analysis` it is given, so it never depends on `stats` or `report`.

pub mod capacity;
pub mod load;
pub mod progress;
pub mod server;

use crate::plan::{Plan, Point, ServerGroup};
use crate::probe::{self, MemoryProbe, model::ModelFacts};
use crate::record::folder::{self, MANIFEST, PLAN, POINTS, REQUESTS, SAMPLES, SPEC};
use crate::record::io::{RecordError, append_jsonl, json_pretty, write_atomic};
use crate::record::journal;
use crate::record::manifest::Manifest;
use crate::record::{Recorded, Status};
use crate::spec::{LoadedSpec, Spec};
use progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the executor needs from the layers above it (`stats`, `report`), handed in by the CLI.
pub trait Analysis: Sync {
    /// Every derived file of a run (name, bytes) from what it recorded; called after every point.
    fn derive(&self, manifest: &Manifest, rec: &Recorded) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// Whether the cell `point` belongs to needs another repeat, judged on its committed repeats so far: its
    /// tokens/s interval is wider than `rel_ci`, or a decision made from it (the latency budget) is still open.
    fn needs_repeat(&self, rec: &Recorded, group: &ServerGroup, point: &Point, rel_ci: f64) -> bool;
    /// With `search:`, the id of the group's next point to measure, judged on what it recorded so far; None
    /// once the group's search is over.
    fn search_next(&self, rec: &Recorded, group: &ServerGroup) -> Option<String>;
    /// With `tune:`, the next server start (a group and the ids of its points to measure), judged on what
    /// was recorded; None once the tune is over. `pruned`: groups the capacity model rules out.
    fn tune_next(
        &self,
        rec: &Recorded,
        plan: &Plan,
        pruned: &std::collections::BTreeMap<String, String>,
    ) -> Option<(String, Vec<String>)>;
}

pub type Derive<'a> = &'a dyn Analysis;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot write the run's output under {path}: {source}; check that the folder is writable, or pass --out DIR"
    )]
    Output { path: String, source: std::io::Error },
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("{0}")]
    Probe(String),
    #[error("{0}")]
    Report(String),
    #[error("{0}")]
    Preflight(String),
    /// An I/O error after the run was under way (exit 6, not "nothing ran").
    #[error("{0}")]
    DuringRun(String),
}

impl RunError {
    /// Output errors once servers have been started are run-time I/O errors.
    fn during_run(self) -> RunError {
        match self {
            RunError::Output { .. } | RunError::Record(_) => RunError::DuringRun(self.to_string()),
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
}

pub struct Outcome {
    pub dir: PathBuf,
    pub recorded: Recorded,
    /// The manifest as the run left it (with a tune's pruned configurations).
    pub manifest: Manifest,
    pub interrupted: bool,
}

impl Outcome {
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

fn write_derived(dir: &Path, manifest: &Manifest, rec: &Recorded, derive: Derive) -> Result<(), RunError> {
    for (name, bytes) in derive.derive(manifest, rec).map_err(RunError::Report)? {
        write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// Model facts from `<model>/config.json` when the model is a local folder; `--dtype` and
/// `--kv-cache-dtype` from the server's argv decide the KV element size.
pub(crate) fn model_facts(group: &ServerGroup) -> Option<ModelFacts> {
    let model = group.server.model.as_ref()?;
    let text = std::fs::read_to_string(Path::new(model).join("config.json")).ok()?;
    let argv = &group.server.argv;
    let arg = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str);
    probe::model::from_config(&text, arg("--dtype"), arg("--kv-cache-dtype")).ok()
}

fn prepare_manifest(loaded: &LoadedSpec, plan: &Plan, probe: &dyn MemoryProbe, run_id: String) -> Manifest {
    let (host, os, cpu, cpus) = probe::host_facts();
    Manifest {
        servelab_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("SERVELAB_GIT_COMMIT").to_owned(),
        run_id,
        spec_file: loaded.source.file.clone(),
        spec_hash: crate::record::short_hash(loaded.source.text.as_bytes()),
        overrides: loaded.overrides.clone(),
        plan: plan.clone(),
        host,
        os,
        cpu,
        cpus,
        mem_total_mb: probe::procfs::meminfo().map(|(t, _)| t as f64 / crate::record::MIB),
        memory_source: probe.source().as_str().to_owned(),
        gpu: probe.describe(),
        vllm_version: None,
        engine_command: plan.groups.first().map(|g| g.server.argv.clone()).unwrap_or_default(),
        model_config_hash: None,
        started_at: chrono::Local::now().to_rfc3339(),
        ended_at: None,
        metrics_version: crate::record::manifest::METRICS_VERSION,
        tune_pruned: Default::default(),
    }
}

/// A run id is one path component, so `--run-id` can never write outside `--out`.
pub fn check_run_id(id: &str) -> Result<(), RunError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        return Ok(());
    }
    Err(RunError::Preflight(format!(
        "--run-id {id:?} is not a plain folder name; use letters, digits, '.', '_' and '-' only (not '..'), at \
         most 128 characters"
    )))
}

/// The folder of a new run: `--run-id` as given (which must not exist yet), or a timestamp with the first free
/// `-N` suffix, so two runs started in the same second never share a folder.
fn new_run_dir(out: &Path, run_id: Option<&str>) -> Result<(PathBuf, String), RunError> {
    let io = |source| RunError::Output { path: out.display().to_string(), source };
    std::fs::create_dir_all(out).map_err(io)?;
    if let Some(id) = run_id {
        check_run_id(id)?;
        let dir = out.join(id);
        return match std::fs::create_dir(&dir) {
            Ok(()) => Ok((dir, id.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RunError::Preflight(format!(
                "the run folder {} already exists; continue it with --resume {}, or choose another --run-id",
                dir.display(),
                dir.display()
            ))),
            Err(e) => Err(io(e)),
        };
    }
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    for n in 1u32.. {
        let id = if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") };
        match std::fs::create_dir(out.join(&id)) {
            Ok(()) => return Ok((out.join(&id), id)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
    unreachable!("u32 run-id suffixes exhausted")
}

/// Writes what was asked (spec, plan, manifest) before any server starts, so an unwritable output is an error
/// that costs nothing. On resume, a spec that differs from the recorded one is kept as `spec-N.yaml` first.
fn prepare(dir: &Path, loaded: &LoadedSpec, plan: &Plan, manifest: &Manifest) -> Result<(), RunError> {
    std::fs::create_dir_all(dir.join("servers"))
        .map_err(|source| RunError::Output { path: dir.display().to_string(), source })?;
    let spec_path = dir.join(SPEC);
    if let Ok(old) = std::fs::read(&spec_path)
        && old != loaded.source.text.as_bytes()
    {
        let n = (1..).find(|n| !dir.join(format!("spec-{n}.yaml")).exists()).unwrap_or(1);
        write_atomic(&dir.join(format!("spec-{n}.yaml")), &old)?;
    }
    write_atomic(&dir.join(PLAN), &json_pretty(plan))?;
    write_atomic(&spec_path, loaded.source.text.as_bytes())?;
    write_atomic(&dir.join(MANIFEST), &json_pretty(manifest))?;
    Ok(())
}

/// The largest `prompts_file` servelab reads (it is held in memory whole).
pub const MAX_PROMPTS_FILE: u64 = 256 * 1024 * 1024;

/// Files the plan reads: each `prompts_file` must be a regular file (not `/dev/zero`, not a folder) of at
/// most `MAX_PROMPTS_FILE` bytes. Run by `validate` too.
pub fn check_inputs(plan: &Plan) -> Result<(), RunError> {
    let files: std::collections::BTreeSet<&str> =
        plan.points().filter_map(|(_, p)| p.client.as_ref()?.prompts_file.as_deref()).collect();
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| {
            RunError::Preflight(format!("`load.prompts_file` {f}: {e}; give the path of a text file, one prompt a line (relative paths are relative to the folder servelab runs in)"))
        })?;
        if !meta.is_file() {
            return Err(RunError::Preflight(format!(
                "`load.prompts_file` {f} is not a regular file; give a text file, one prompt a line"
            )));
        }
        if meta.len() > MAX_PROMPTS_FILE {
            return Err(RunError::Preflight(format!(
                "`load.prompts_file` {f} is {} MiB, more than the {} MiB servelab reads; use fewer prompts",
                meta.len() / (1024 * 1024),
                MAX_PROMPTS_FILE / (1024 * 1024)
            )));
        }
    }
    Ok(())
}

/// Checks that need no server: input files, ports free, the API key present.
fn preflight(plan: &Plan, spec: &Spec) -> Result<Option<String>, RunError> {
    check_inputs(plan)?;
    let mut seen = std::collections::BTreeSet::new();
    for g in plan.groups.iter().filter(|g| g.server.kind != crate::spec::EngineKind::External) {
        if seen.insert((g.server.host.clone(), g.server.port)) {
            crate::engine::ready::check_port_free(&g.server.host, g.server.port)
                .map_err(|e| RunError::Preflight(e.to_string()))?;
        }
    }
    match &spec.engine.api_key_env {
        Some(name) => {
            let key = std::env::var(name).map_err(|_| RunError::Preflight(format!("`engine.api_key_env` names the environment variable {name}, which is not set; export it (servelab reads the key from there and never writes it down)")))?;
            crate::record::io::forbid(&key).map_err(|e| RunError::Preflight(format!("{e} (from {name})")))?;
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// Opens the run folder: a new one, or the one being resumed with what it committed so far.
fn open_run(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    probe: &dyn MemoryProbe,
) -> Result<(PathBuf, Manifest, Recorded), RunError> {
    let Some(dir) = &opts.resume else {
        let (dir, id) = new_run_dir(&opts.out_root.join(&plan.name), opts.run_id.as_deref())?;
        let fresh = prepare_manifest(loaded, plan, probe, id);
        prepare(&dir, loaded, plan, &fresh)?;
        return Ok((dir, fresh, Recorded::default()));
    };
    let old = folder::read(dir).map_err(|e| RunError::Preflight(format!("cannot resume {}: {e}", dir.display())))?;
    // Edits of the same experiment resume (new points are measured, done ones kept); another experiment's spec
    // would mix two experiments' records in one folder.
    if old.manifest.plan.name != plan.name && !opts.force {
        return Err(RunError::Preflight(format!(
            "{} holds the experiment `{}`, but this spec is `{}`; start a new run, or pass --force to add this experiment to that folder",
            dir.display(),
            old.manifest.plan.name,
            plan.name
        )));
    }
    let fresh = prepare_manifest(loaded, plan, probe, old.manifest.run_id.clone());
    let model_hash = plan.groups.iter().find_map(model_facts).map(|m| m.config_hash);
    let changes = fingerprint_changes(&old.manifest, &fresh, model_hash.as_deref());
    if !changes.is_empty() && !opts.force {
        return Err(RunError::Preflight(format!(
            "the environment changed since {} was recorded ({}); its figures would not be comparable. Start a new run, or pass --force to resume anyway",
            dir.display(),
            changes.join("; ")
        )));
    }
    let mut manifest = old.manifest.clone();
    manifest.plan = plan.clone();
    manifest.overrides = loaded.overrides.clone();
    manifest.spec_hash = fresh.spec_hash.clone();
    manifest.ended_at = None;
    prepare(dir, loaded, plan, &manifest)?;
    Ok((dir.clone(), manifest, old.recorded))
}

/// What differs between the recorded environment and this one (servelab, GPU, model; vLLM is checked once a
/// server answers).
fn fingerprint_changes(old: &Manifest, now: &Manifest, model_hash: Option<&str>) -> Vec<String> {
    let mut changes = Vec::new();
    if old.servelab_version != now.servelab_version {
        changes.push(format!("servelab {} → {}", old.servelab_version, now.servelab_version));
    }
    if old.gpu != now.gpu {
        changes.push(format!("GPU {:?} → {:?}", old.gpu, now.gpu));
    }
    if let (Some(a), Some(b)) = (&old.model_config_hash, model_hash)
        && a != b
    {
        changes.push(format!("model config {a} → {b}"));
    }
    changes
}

pub async fn execute(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    interrupted: &AtomicBool,
    derive: Derive<'_>,
) -> Result<Outcome, RunError> {
    let probe: Arc<dyn MemoryProbe> = Arc::from(probe::select(loaded.spec.measure.memory).map_err(RunError::Probe)?);
    if let Some(id) = &opts.run_id {
        check_run_id(id)?;
    }
    let api_key = preflight(plan, &loaded.spec)?;
    let (dir, mut manifest, mut rec) = open_run(loaded, plan, opts, probe.as_ref())?;
    let journal = journal::Journal::new(&dir);
    let state = journal::state(&journal.read()?);
    let http =
        reqwest::Client::builder().no_proxy().build().map_err(|e| RunError::Probe(format!("HTTP client: {e}")))?;
    // A search measures about max_probes rungs of each group's ladder, in an order decided as it goes.
    let per_group = |g: &ServerGroup| match &plan.search {
        Some(s) => g.points.len().min(s.max_probes * plan.repeats as usize),
        None => g.points.len(),
    };
    // A tune measures, per start, the search's repeats of the workload (the confirmation's are close to it).
    let total = match &plan.tune {
        Some(t) => {
            let per_start = plan
                .groups
                .first()
                .map_or(0, |g| g.points.iter().filter(|p| p.client.is_some() && p.repeat < t.search_repeats).count());
            per_start * t.starts as usize
        }
        None => plan.groups.iter().map(per_group).sum(),
    };
    let progress = Progress::new(total);
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
    let env = Env {
        dir: &dir,
        probe: probe.clone(),
        http: &http,
        interrupted,
        progress: &progress,
        spec: &loaded.spec,
        journal: &journal,
        state: &state,
        api_key: api_key.as_deref(),
        opts,
        derive,
        plan,
    };
    if plan.tune.is_some() {
        tune_groups(&env, &mut manifest, &mut rec).await?;
    } else {
        let mut stop_early = false;
        for (i, group) in plan.groups.iter().enumerate() {
            if interrupted.load(Ordering::SeqCst) || stop_early {
                break;
            }
            let todo: Vec<&Point> = match &plan.search {
                // A search's next point is decided on what was recorded, one at a time.
                Some(_) => derive
                    .search_next(&rec, group)
                    .and_then(|id| group.points.iter().find(|p| p.id == id))
                    .into_iter()
                    .collect(),
                None => group.points.iter().filter(|p| !state.done.contains(&p.id)).collect(),
            };
            if todo.is_empty() {
                progress.line(&format!(
                    "server {}/{} {}: every point already measured, not started",
                    i + 1,
                    plan.groups.len(),
                    group.id
                ));
                progress.points_done(per_group(group));
                continue;
            }
            let failed = one_group(&env, (i, plan.groups.len()), group, &todo, &mut manifest, &mut rec).await?;
            stop_early = failed && opts.fail_fast;
        }
    }
    progress.finish();
    manifest.ended_at = Some(chrono::Local::now().to_rfc3339());
    write_atomic(&dir.join(MANIFEST), &json_pretty(&manifest)).map_err(|e| RunError::from(e).during_run())?;
    if !rec.servers.is_empty() {
        write_derived(&dir, &manifest, &rec, derive).map_err(RunError::during_run)?;
    }
    Ok(Outcome { dir, recorded: rec, manifest, interrupted: interrupted.load(Ordering::SeqCst) })
}

/// What every server start of a run shares.
struct Env<'a> {
    dir: &'a Path,
    probe: Arc<dyn MemoryProbe>,
    http: &'a reqwest::Client,
    interrupted: &'a AtomicBool,
    progress: &'a Progress,
    spec: &'a Spec,
    journal: &'a journal::Journal,
    state: &'a journal::State,
    api_key: Option<&'a str>,
    opts: &'a RunOptions,
    derive: Derive<'a>,
    plan: &'a Plan,
}

/// Starts one group's server for `todo`, then updates the manifest and the derived files. Returns whether
/// anything failed.
async fn one_group(
    env: &Env<'_>,
    index: (usize, usize),
    group: &ServerGroup,
    todo: &[&Point],
    manifest: &mut Manifest,
    rec: &mut Recorded,
) -> Result<bool, RunError> {
    let ctx = GroupCtx { index, env, manifest };
    let failed = run_group(&ctx, group, todo, rec).await.map_err(RunError::during_run)?;
    if let Some(server) = rec.servers.iter().rev().find(|s| s.id == group.id) {
        if let (Some(old), Some(new)) = (&manifest.vllm_version, &server.version)
            && old != new
            && !env.opts.force
            && env.opts.resume.is_some()
        {
            return Err(RunError::Preflight(format!(
                "vLLM changed since this run was recorded ({old} → {new}); start a new run, or pass --force"
            )));
        }
        manifest.vllm_version = manifest.vllm_version.take().or(server.version.clone());
        manifest.model_config_hash =
            manifest.model_config_hash.take().or(server.model.as_ref().map(|m| m.config_hash.clone()));
    }
    write_atomic(&env.dir.join(MANIFEST), &json_pretty(manifest)).map_err(|e| RunError::from(e).during_run())?;
    write_derived(env.dir, manifest, rec, env.derive).map_err(RunError::during_run)?;
    Ok(failed)
}

/// The configurations of the space the capacity model rules out on this GPU (group → why): those that
/// cannot start, and those whose KV pool cannot hold one request of the workload. Nothing without a GPU.
fn prune(env: &Env<'_>) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(gpu) = env.probe.cuda_total_bytes() else { return out };
    for g in env.plan.groups.iter().filter(|g| g.server.kind == crate::spec::EngineKind::Vllm) {
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

/// A tune: asks the analysis for the next start (the search's, then the confirmation's) until it has none.
async fn tune_groups(env: &Env<'_>, manifest: &mut Manifest, rec: &mut Recorded) -> Result<(), RunError> {
    let pruned = prune(env);
    if !pruned.is_empty() {
        env.progress.line(&format!(
            "tune: the capacity model rules out {} of {} configurations on this GPU",
            pruned.len(),
            env.plan.groups.len() - 1
        ));
    }
    manifest.tune_pruned = pruned.clone();
    let mut asked = std::collections::BTreeSet::new();
    let n = env.plan.tune.as_ref().map_or(0, |t| t.starts as usize);
    while !env.interrupted.load(Ordering::SeqCst) {
        if env.opts.max_starts.is_some_and(|m| asked.len() >= m) {
            env.progress.line(&format!(
                "tune: stopping after {} server starts (--max-starts); `servelab tune SPEC --resume {}` goes on",
                asked.len(),
                env.dir.display()
            ));
            break;
        }
        let Some((id, points)) = env.derive.tune_next(rec, env.plan, &pruned) else { break };
        let Some(group) = env.plan.groups.iter().find(|g| g.id == id) else { break };
        if !asked.insert((id.clone(), points.first().cloned())) {
            // Asked again for a start it made in this run (e.g. its server failed): a resume may try again.
            env.progress.line(&format!("tune: asked again for server {id}; the tune stops here"));
            break;
        }
        let todo: Vec<&Point> = group.points.iter().filter(|p| points.contains(&p.id)).collect();
        if todo.is_empty() {
            break;
        }
        let failed = one_group(env, (asked.len() - 1, n), group, &todo, manifest, rec).await?;
        if failed && env.opts.fail_fast {
            break;
        }
    }
    Ok(())
}

/// One server start: the run's shared context, which start of how many, and the manifest as it stands.
struct GroupCtx<'a> {
    index: (usize, usize),
    env: &'a Env<'a>,
    manifest: &'a Manifest,
}

impl<'a> std::ops::Deref for GroupCtx<'a> {
    type Target = Env<'a>;
    fn deref(&self) -> &Env<'a> {
        self.env
    }
}

impl GroupCtx<'_> {
    fn journal(&self, entry: &journal::Entry) -> Result<(), RunError> {
        Ok(self.journal.append(entry)?)
    }

    fn now() -> String {
        chrono::Local::now().to_rfc3339()
    }

    /// Claims the point's attempt number before anything of it is written.
    fn point_start(&self, point: &str, group: &str, attempt: u32) -> Result<(), RunError> {
        let (point, group) = (point.to_owned(), group.to_owned());
        self.journal(&journal::Entry::PointStart { point, group, attempt, at: Self::now() })
    }

    /// Commits the point's records. An interrupted point is committed too (its records are data, its status
    /// says it did not finish): a resume measures it again under the next attempt number.
    fn point_done(&self, point: &str, group: &str, attempt: u32, status: Status) -> Result<(), RunError> {
        let (point, group) = (point.to_owned(), group.to_owned());
        self.journal(&journal::Entry::PointDone { point, group, attempt, status, at: Self::now() })
    }

    fn attempt(&self, point: &str) -> u32 {
        self.state.next_attempt(point)
    }
}

/// "c=8" for a closed loop, "rate=50/s" for an open one.
fn load_label(c: &crate::plan::ClientConfig) -> String {
    match c.rate() {
        Some(r) => format!("rate={r}/s"),
        None => format!("c={}", c.concurrency),
    }
}

/// Keeps an earlier attempt's server files when a resumed run starts the same server again.
/// A compressed folder (`servelab compress`) holds `startup.json.xz`: it is kept the same way.
fn archive_previous(server_dir: &Path) {
    const FORMS: [&str; 3] = ["", ".xz", ".gz"];
    let present = |stem: &str| FORMS.iter().any(|ext| server_dir.join(format!("{stem}{ext}")).exists());
    if !present("startup.json") {
        return;
    }
    let n = (1..).find(|n| !present(&format!("startup-{n}.json"))).unwrap_or(1);
    for ext in FORMS {
        let from = server_dir.join(format!("startup.json{ext}"));
        if from.exists() {
            let _ = std::fs::rename(from, server_dir.join(format!("startup-{n}.json{ext}")));
        }
    }
    let _ = std::fs::rename(server_dir.join("server.log"), server_dir.join(format!("server-{n}.log")));
}

/// Starts the group's server, runs its pending points, stops it. Returns whether anything failed.
async fn run_group(
    ctx: &GroupCtx<'_>,
    group: &ServerGroup,
    todo: &[&Point],
    rec: &mut Recorded,
) -> Result<bool, RunError> {
    let (i, n) = ctx.index;
    let server_dir = ctx.dir.join("servers").join(&group.id);
    std::fs::create_dir_all(&server_dir)
        .map_err(|source| RunError::Output { path: server_dir.display().to_string(), source })?;
    archive_previous(&server_dir);
    let vars = crate::record::values::vars_text(&group.vars, " ");
    ctx.progress.line(&format!("server {}/{n} {} {vars}: starting", i + 1, group.id));
    ctx.progress.status(&format!("server {}/{n} starting", i + 1));
    if group.server.kind != crate::spec::EngineKind::External {
        ctx.journal(&journal::Entry::ServerStart { group: group.id.clone(), at: chrono::Local::now().to_rfc3339() })?;
    }
    let facts = model_facts(group);
    let vocab = facts.as_ref().and_then(|f| f.vocab_size);
    // The pre-flight prediction, kept beside what the start then shows (GPU engines only: NVML gives the total).
    let predicted = match (group.server.kind, ctx.probe.cuda_total_bytes()) {
        (crate::spec::EngineKind::Vllm, Some(gpu)) => capacity::predict(group, facts.as_ref(), gpu).ok(),
        _ => None,
    };
    let (record, points_failed) = match server::start(
        group,
        &server_dir,
        ctx.probe.as_ref(),
        facts,
        ctx.http,
        ctx.interrupted,
        ctx.api_key,
    )
    .await
    {
        Ok(mut running) => {
            let ready_s = running.record.ready_s.unwrap_or_default();
            ctx.progress.line(&format!("server {}/{n}: ready in {ready_s:.1} s", i + 1));
            // The spec's model name wins (a `--served-model-name`, or `bench --model`); else what /v1/models lists.
            let model =
                group.server.served_model_name.clone().or(running.record.served_model.clone()).unwrap_or_default();
            let failed = run_points(ctx, group, todo, &mut running, &model, vocab, rec).await?;
            ctx.progress.line(&format!("server {}/{n}: stopping", i + 1));
            (server::stop(running, group, ctx.probe.as_ref(), ctx.interrupted).await, failed)
        }
        Err(record) => {
            ctx.progress.line(&format!(
                "server {}/{n}: {}: {}",
                i + 1,
                record.status.as_str(),
                record.error.as_deref().unwrap_or("")
            ));
            ctx.progress.points_done(todo.len());
            for p in todo.iter().filter(|p| p.client.is_some()) {
                ctx.point_done(&p.id, &group.id, ctx.attempt(&p.id), record.status)?;
            }
            let failed = record.status == Status::Failed;
            (record, failed)
        }
    };
    let mut record = record;
    record.predicted = predicted;
    // A startup-only point is the server start itself.
    for p in todo.iter().filter(|p| p.client.is_none()) {
        ctx.point_done(&p.id, &group.id, ctx.attempt(&p.id), record.status)?;
    }
    // The server may log its arguments or environment; its log is the one file servelab did not write itself.
    crate::record::io::redact_file(&server_dir.join("server.log")).map_err(|e| RunError::DuringRun(e.to_string()))?;
    write_atomic(&server_dir.join("startup.json"), &json_pretty(&record))?;
    let failed = points_failed || record.status == Status::Failed;
    match rec.servers.iter_mut().find(|s| s.id == record.id) {
        Some(old) => *old = record,
        None => rec.servers.push(record),
    }
    Ok(failed)
}

/// A point whose measured requests failed beyond `max_error_rate` fails (its records stay: failures are data).
fn fail_on_errors(point: &mut crate::record::PointRecord, requests: &[crate::record::RequestRecord]) {
    let measured: Vec<_> = requests.iter().filter(|r| !r.warmup && !r.tail).collect();
    let failed = measured.iter().filter(|r| !r.ok()).count();
    let limit = point.client.max_error_rate;
    if point.status == Status::Ok && !measured.is_empty() && failed as f64 > limit * measured.len() as f64 {
        point.status = Status::Failed;
        point.error = Some(format!(
            "{failed} of {} requests failed, more than max_error_rate {:.0}%",
            measured.len(),
            limit * 100.0
        ));
    }
}

/// Whether the server still serves: its leader alive and /health answering.
async fn server_alive(running: &mut server::Running, http: &reqwest::Client, base_url: &str) -> bool {
    if let Some(p) = &mut running.process
        && !p.alive()
    {
        return false;
    }
    let health = http.get(format!("{base_url}/health")).timeout(Duration::from_secs(5)).send().await;
    health.map(|r| r.status().is_success()).unwrap_or(false)
}

/// The group's pending points against its running server; outputs are rewritten after every point. A server
/// that dies fails its point and the points after it, which are recorded as not run.
async fn run_points(
    ctx: &GroupCtx<'_>,
    group: &ServerGroup,
    todo: &[&Point],
    running: &mut server::Running,
    model: &str,
    vocab: Option<u64>,
    rec: &mut Recorded,
) -> Result<bool, RunError> {
    let load_ctx = load::Context {
        http: ctx.http,
        probe: ctx.probe.clone(),
        gpu_interval: ctx.spec.measure.gpu_util_interval.0.max(Duration::from_millis(10)),
        server_metrics: ctx.spec.measure.server_metrics,
        interrupted: ctx.interrupted,
        api_key: ctx.api_key.map(str::to_owned),
    };
    let warm = ctx.spec.load.as_ref().map_or(Duration::ZERO, |l| l.server_warmup.0);
    if !warm.is_zero() && todo.iter().any(|p| p.client.is_some()) {
        ctx.progress.status(&format!("server {}/{}: warming up", ctx.index.0 + 1, ctx.index.1));
        match load::server_warmup(&load_ctx, group, model, vocab, warm).await {
            Ok(n) => ctx
                .progress
                .line(&format!("  server warmup: {n} requests in {:.0} s (not measured)", warm.as_secs_f64())),
            Err(e) => ctx.progress.line(&format!("  server warmup did not run: {e}")),
        }
    }
    let mut m = Measure { load: load_ctx, running, model, vocab, dead: None, failed: false };
    if ctx.plan.search.is_some() {
        return search_points(ctx, group, &mut m, rec).await;
    }
    for (j, point) in todo.iter().enumerate() {
        if ctx.interrupted.load(Ordering::SeqCst) {
            break;
        }
        let Some(c) = &point.client else {
            ctx.progress.points_done(1);
            continue;
        };
        if let Some(p) = ctx.plan.precision
            && point.repeat >= p.min_repeats
            && m.dead.is_none()
            && !ctx.derive.needs_repeat(rec, group, point, p.rel_ci)
        {
            // The cell already meets the precision target and decides nothing close: no further rounds
            // (recomputed on resume).
            ctx.progress.line(&format!(
                "  point {} {} repeat {}: skipped, the cell meets ±{:.1}% and is clear of the latency budget",
                point.id,
                load_label(c),
                point.repeat,
                p.rel_ci * 100.0
            ));
            ctx.progress.points_done(1);
            continue;
        }
        measure(ctx, group, point, (j + 1, todo.len()), &mut m, rec).await?;
        if m.failed && ctx.opts.fail_fast {
            break;
        }
    }
    Ok(m.failed)
}

/// A search's points, one at a time, each chosen on what the ones before it recorded (`Analysis::search_next`).
async fn search_points(
    ctx: &GroupCtx<'_>,
    group: &ServerGroup,
    m: &mut Measure<'_, '_>,
    rec: &mut Recorded,
) -> Result<bool, RunError> {
    let mut measured = std::collections::BTreeSet::new();
    while !ctx.interrupted.load(Ordering::SeqCst) && m.dead.is_none() && !(m.failed && ctx.opts.fail_fast) {
        let Some(id) = ctx.derive.search_next(rec, group) else { break };
        let Some(point) = group.points.iter().find(|p| p.id == id) else { break };
        if !measured.insert(id) {
            // The search asked again for a point it has: a bug, but never a loop.
            ctx.progress.line(&format!("  the search asked again for point {}; it stops here", point.id));
            break;
        }
        measure(ctx, group, point, (measured.len(), 0), m, rec).await?;
    }
    Ok(m.failed)
}

/// What the points of one running server share.
struct Measure<'a, 'r> {
    load: load::Context<'a>,
    running: &'r mut server::Running,
    model: &'r str,
    vocab: Option<u64>,
    /// Why the points after a dead server are not run.
    dead: Option<String>,
    failed: bool,
}

/// Measures one point (`nth` of `of`; 0: not known ahead) and commits its records.
async fn measure(
    ctx: &GroupCtx<'_>,
    group: &ServerGroup,
    point: &Point,
    (nth, of): (usize, usize),
    m: &mut Measure<'_, '_>,
    rec: &mut Recorded,
) -> Result<(), RunError> {
    let Some(c) = &point.client else { return Ok(()) };
    let attempt = ctx.attempt(&point.id);
    ctx.point_start(&point.id, &group.id, attempt)?;
    let mut out = match &m.dead {
        Some(why) => load::not_run(group, point, attempt, m.model, why),
        None => {
            let of = if of == 0 { String::new() } else { format!("/{of}") };
            ctx.progress.status(&format!(
                "server {}/{}: point {nth}{of} {} repeat {}",
                ctx.index.0 + 1,
                ctx.index.1,
                load_label(c),
                point.repeat
            ));
            load::run_point(&m.load, group, point, attempt, m.model, m.vocab).await
        }
    };
    if m.dead.is_none()
        && out.point.status == Status::Ok
        && out.requests.iter().any(|r| !r.ok())
        && !server_alive(m.running, ctx.http, &group.server.base_url).await
    {
        let why = "the server died during this point".to_owned();
        out.point.status = Status::Failed;
        out.point.error = Some(why.clone());
        m.dead = Some(format!("not run: {why} before it"));
    }
    fail_on_errors(&mut out.point, &out.requests);
    // Records first, then the journal line that commits them: a crash in between leaves them uncommitted.
    append_jsonl(&ctx.dir.join(REQUESTS), &out.requests, false)?;
    append_jsonl(&ctx.dir.join(SAMPLES), &out.samples, false)?;
    append_jsonl(&ctx.dir.join(POINTS), std::slice::from_ref(&out.point), true)?;
    ctx.point_done(&point.id, &group.id, attempt, out.point.status)?;
    let measured: Vec<_> = out.requests.iter().filter(|r| !r.warmup && !r.tail).collect();
    let ok = measured.iter().filter(|r| r.ok()).count();
    ctx.progress.line(&format!(
        "  point {} {} repeat {}: {} ({ok}/{} ok, {:.1} s){}",
        point.id,
        load_label(c),
        point.repeat,
        out.point.status,
        measured.len(),
        out.point.wall_s,
        out.point.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    ));
    m.failed |= out.point.status == Status::Failed;
    rec.points.push(out.point);
    rec.requests.extend(out.requests);
    rec.samples.extend(out.samples);
    ctx.progress.points_done(1);
    write_derived(ctx.dir, ctx.manifest, rec, ctx.derive)
}
