//! The executor: the one place where time, processes and I/O meet. Takes the plan's server groups in order,
//! starts each server once, records what it committed, stops it, and rewrites the outputs after every group
//! so a crash keeps what was measured.

pub mod journal;
pub mod load;
pub mod manifest;
pub mod progress;
pub mod record;
pub mod recorded;
pub mod server;

use crate::load::record::RequestRecord;
use crate::plan::{Plan, Point, ServerGroup};
use crate::probe::{self, MemoryProbe, model::ModelFacts};
use crate::report::derive::{self, json};
use crate::spec::{LoadedSpec, Spec};
use crate::stats::sweep::GroupSweep;
use manifest::Manifest;
use progress::Progress;
use record::{PointRecord, SampleLine, ServerRecord, Status};
use std::io::Write;
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
    Probe(String),
    #[error("{0}")]
    Report(String),
    #[error("{0}")]
    Preflight(String),
}

pub struct RunOptions {
    /// Runs go to `<out_root>/<spec name>/<run id>/`.
    pub out_root: PathBuf,
    pub run_id: Option<String>,
    /// Continue this run folder: points already measured are skipped.
    pub resume: Option<PathBuf>,
    /// Resume even though the environment fingerprint changed.
    pub force: bool,
    /// Stop at the first failed point or server start.
    pub fail_fast: bool,
}

/// Everything a run recorded, in memory; the files hold the same.
#[derive(Default)]
pub struct Recorded {
    pub servers: Vec<ServerRecord>,
    pub points: Vec<PointRecord>,
    pub requests: Vec<RequestRecord>,
    pub samples: Vec<SampleLine>,
}

impl Recorded {
    /// The servers servelab started (an `external` endpoint has no startup to report).
    pub fn started_servers(&self) -> Vec<ServerRecord> {
        self.servers.iter().filter(|s| !s.argv.is_empty()).cloned().collect()
    }
}

pub struct Outcome {
    pub dir: PathBuf,
    pub recorded: Recorded,
    pub sweeps: Vec<GroupSweep>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn failed_servers(&self) -> usize {
        self.recorded.servers.iter().filter(|s| s.status != Status::Ok).count()
    }
    pub fn failed_points(&self) -> usize {
        self.recorded.points.iter().filter(|p| p.status != "ok").count()
    }
}

/// Appends JSON lines to a journal file.
fn append<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<(), RunError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RunError::Output { path: path.display().to_string(), source })?;
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).unwrap_or_default();
        buf.push(b'\n');
    }
    file.write_all(&buf)
        .and_then(|_| file.flush())
        .map_err(|source| RunError::Output { path: path.display().to_string(), source })
}

fn write_derived(dir: &Path, spec: &Spec, manifest: &Manifest, rec: &Recorded) -> Result<Vec<GroupSweep>, RunError> {
    let templates = spec.templates.as_ref().map(PathBuf::from);
    let (files, sweeps) = derive::derive(spec, manifest, rec, templates).map_err(RunError::Report)?;
    for (name, bytes) in files {
        write(&dir.join(name), &bytes)?;
    }
    Ok(sweeps)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    // Write then rename, so a crash never leaves a half-written file in place of a good one.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| RunError::Output { path: path.display().to_string(), source })
}

/// Model facts from `<model>/config.json` when the model is a local folder; `--dtype` and
/// `--kv-cache-dtype` from the server's argv decide the KV element size.
fn model_facts(group: &ServerGroup) -> Option<ModelFacts> {
    let model = group.server.model.as_ref()?;
    let text = std::fs::read_to_string(Path::new(model).join("config.json")).ok()?;
    let argv = &group.server.argv;
    let arg = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str);
    probe::model::from_config(&text, arg("--dtype"), arg("--kv-cache-dtype")).ok()
}

fn prepare_manifest(loaded: &LoadedSpec, plan: &Plan, probe: &dyn MemoryProbe, run_id: Option<String>) -> Manifest {
    let (host, os, cpu, cpus) = manifest::host_facts();
    Manifest {
        servelab_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("SERVELAB_GIT_COMMIT").to_owned(),
        run_id: run_id.unwrap_or_else(|| chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()),
        spec_file: loaded.source.file.clone(),
        spec_hash: manifest::short_hash(loaded.source.text.as_bytes()),
        overrides: loaded.overrides.clone(),
        plan: plan.clone(),
        host,
        os,
        cpu,
        cpus,
        mem_total_mb: probe::procfs::meminfo().map(|(t, _)| t as f64 / probe::MIB),
        memory_source: probe.source().as_str().to_owned(),
        gpu: probe.describe(),
        vllm_version: None,
        engine_command: plan.groups.first().map(|g| g.server.argv.clone()).unwrap_or_default(),
        model_config_hash: None,
        started_at: chrono::Local::now().to_rfc3339(),
        ended_at: None,
    }
}

/// Creates the run folder and writes what was asked (spec, plan, manifest): before any server starts, so an
/// unwritable output is an error that costs nothing.
fn prepare(dir: &Path, loaded: &LoadedSpec, plan: &Plan, manifest: &Manifest) -> Result<(), RunError> {
    std::fs::create_dir_all(dir.join("servers"))
        .map_err(|source| RunError::Output { path: dir.display().to_string(), source })?;
    write(&dir.join("plan.json"), &json(plan))?;
    write(&dir.join("spec.yaml"), loaded.source.text.as_bytes())?;
    write(&dir.join("manifest.json"), &json(manifest))
}

/// Checks that need no server: output writable (done by `prepare`), ports free, the API key present.
fn preflight(plan: &Plan, spec: &Spec) -> Result<Option<String>, RunError> {
    let mut seen = std::collections::BTreeSet::new();
    for g in plan.groups.iter().filter(|g| g.server.kind != crate::spec::EngineKind::External) {
        if seen.insert((g.server.host.clone(), g.server.port)) {
            crate::engine::ready::check_port_free(&g.server.host, g.server.port)
                .map_err(|e| RunError::Preflight(e.to_string()))?;
        }
    }
    match &spec.engine.api_key_env {
        Some(name) => std::env::var(name).map(Some).map_err(|_| RunError::Preflight(format!("`engine.api_key_env` names the environment variable {name}, which is not set; export it (servelab reads the key from there and never writes it down)"))),
        None => Ok(None),
    }
}

/// Opens the run folder: a new one, or the one being resumed with what it recorded so far.
fn open_run(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    probe: &dyn MemoryProbe,
) -> Result<(PathBuf, Manifest, Recorded), RunError> {
    let fresh = prepare_manifest(loaded, plan, probe, opts.run_id.clone());
    let Some(dir) = &opts.resume else {
        let dir = opts.out_root.join(&plan.name).join(&fresh.run_id);
        prepare(&dir, loaded, plan, &fresh)?;
        return Ok((dir, fresh, Recorded::default()));
    };
    let (_, old, rec) =
        recorded::read_run(dir).map_err(|e| RunError::Preflight(format!("cannot resume {}: {e}", dir.display())))?;
    let model_hash = plan.groups.iter().find_map(model_facts).map(|m| m.config_hash);
    let changes = fingerprint_changes(&old, &fresh, model_hash.as_deref());
    if !changes.is_empty() && !opts.force {
        return Err(RunError::Preflight(format!(
            "the environment changed since {} was recorded ({}); its figures would not be comparable. Start a new run, or pass --force to resume anyway",
            dir.display(),
            changes.join("; ")
        )));
    }
    let mut manifest = old.clone();
    manifest.plan = plan.clone();
    manifest.overrides = loaded.overrides.clone();
    manifest.spec_hash = fresh.spec_hash.clone();
    manifest.ended_at = None;
    prepare(dir, loaded, plan, &manifest)?;
    Ok((dir.clone(), manifest, rec))
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
) -> Result<Outcome, RunError> {
    let probe: Arc<dyn MemoryProbe> = Arc::from(probe::select(loaded.spec.measure.memory).map_err(RunError::Probe)?);
    let (dir, mut manifest, mut rec) = open_run(loaded, plan, opts, probe.as_ref())?;
    let api_key = preflight(plan, &loaded.spec)?;
    let journal = journal::Journal::new(&dir);
    let state = journal::state(&journal.read());
    let http =
        reqwest::Client::builder().no_proxy().build().map_err(|e| RunError::Probe(format!("HTTP client: {e}")))?;
    let progress = Progress::new(plan.runs());
    let pending = plan.points().filter(|(_, p)| !state.done.contains(&p.id)).count();
    progress.line(&format!(
        "run {}: {} server configurations, {pending} of {} runs to measure, memory from {}",
        dir.display(),
        plan.groups.len(),
        plan.runs(),
        probe.source().as_str()
    ));
    let mut sweeps = Vec::new();
    let mut stop_early = false;
    for (i, group) in plan.groups.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) || stop_early {
            break;
        }
        let todo: Vec<&Point> = group.points.iter().filter(|p| !state.done.contains(&p.id)).collect();
        if todo.is_empty() {
            progress.line(&format!(
                "server {}/{} {}: every point already measured, not started",
                i + 1,
                plan.groups.len(),
                group.id
            ));
            progress.points_done(group.points.len());
            continue;
        }
        let ctx = GroupCtx {
            index: (i, plan.groups.len()),
            dir: &dir,
            probe: probe.clone(),
            http: &http,
            interrupted,
            progress: &progress,
            spec: &loaded.spec,
            manifest: &manifest,
            journal: &journal,
            attempts: &state.attempts,
            api_key: api_key.as_deref(),
            fail_fast: opts.fail_fast,
        };
        let failed = run_group(&ctx, group, &todo, &mut rec).await?;
        stop_early = failed && opts.fail_fast;
        if let Some(server) = rec.servers.iter().rev().find(|s| s.id == group.id) {
            if let (Some(old), Some(new)) = (&manifest.vllm_version, &server.version)
                && old != new
                && !opts.force
                && opts.resume.is_some()
            {
                return Err(RunError::Preflight(format!(
                    "vLLM changed since this run was recorded ({old} → {new}); start a new run, or pass --force"
                )));
            }
            manifest.vllm_version = manifest.vllm_version.take().or(server.version.clone());
            manifest.model_config_hash =
                manifest.model_config_hash.take().or(server.model.as_ref().map(|m| m.config_hash.clone()));
        }
        write(&dir.join("manifest.json"), &json(&manifest))?;
        sweeps = write_derived(&dir, &loaded.spec, &manifest, &rec)?;
    }
    progress.finish();
    manifest.ended_at = Some(chrono::Local::now().to_rfc3339());
    write(&dir.join("manifest.json"), &json(&manifest))?;
    sweeps = if rec.servers.is_empty() { sweeps } else { write_derived(&dir, &loaded.spec, &manifest, &rec)? };
    Ok(Outcome { dir, recorded: rec, sweeps, interrupted: interrupted.load(Ordering::SeqCst) })
}

struct GroupCtx<'a> {
    index: (usize, usize),
    dir: &'a Path,
    probe: Arc<dyn MemoryProbe>,
    http: &'a reqwest::Client,
    interrupted: &'a AtomicBool,
    progress: &'a Progress,
    spec: &'a Spec,
    manifest: &'a Manifest,
    journal: &'a journal::Journal,
    attempts: &'a std::collections::BTreeMap<String, u32>,
    api_key: Option<&'a str>,
    fail_fast: bool,
}

impl GroupCtx<'_> {
    fn journal(&self, entry: &journal::Entry) -> Result<(), RunError> {
        self.journal
            .append(entry)
            .map_err(|source| RunError::Output { path: self.dir.join("journal.jsonl").display().to_string(), source })
    }

    fn point_done(&self, point: &str, group: &str, attempt: u32, status: &str) -> Result<(), RunError> {
        if status == "interrupted" {
            return Ok(()); // not finished: a resume measures it
        }
        self.journal(&journal::Entry::PointDone {
            point: point.to_owned(),
            group: group.to_owned(),
            attempt,
            status: status.to_owned(),
            at: chrono::Local::now().to_rfc3339(),
        })
    }

    fn attempt(&self, point: &str) -> u32 {
        self.attempts.get(point).copied().unwrap_or(0)
    }
}

/// Keeps an earlier attempt's server files when a resumed run starts the same server again.
fn archive_previous(server_dir: &Path) {
    if !server_dir.join("startup.json").exists() {
        return;
    }
    let n = (1..).find(|n| !server_dir.join(format!("startup-{n}.json")).exists()).unwrap_or(1);
    let _ = std::fs::rename(server_dir.join("startup.json"), server_dir.join(format!("startup-{n}.json")));
    let _ = std::fs::rename(server_dir.join("server.log"), server_dir.join(format!("server-{n}.log")));
}

/// Replaces every occurrence of the API key in a file (the server may log its arguments).
fn redact(path: &Path, secret: Option<&str>) {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else { return };
    if let Ok(text) = std::fs::read(path) {
        let text = String::from_utf8_lossy(&text);
        if text.contains(secret) {
            let _ = std::fs::write(path, text.replace(secret, "[redacted]"));
        }
    }
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
    let vars: Vec<String> = group.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ctx.progress.line(&format!("server {}/{n} {} {}: starting", i + 1, group.id, vars.join(" ")));
    ctx.progress.status(&format!("server {}/{n} starting", i + 1));
    if group.server.kind != crate::spec::EngineKind::External {
        ctx.journal(&journal::Entry::ServerStart { group: group.id.clone(), at: chrono::Local::now().to_rfc3339() })?;
    }
    let facts = model_facts(group);
    let vocab = facts.as_ref().and_then(|f| f.vocab_size);
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
            (server::stop(running, group, &server_dir, ctx.probe.as_ref(), ctx.interrupted), failed)
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
                ctx.point_done(&p.id, &group.id, ctx.attempt(&p.id), record.status.as_str())?;
            }
            let failed = record.status == Status::Failed;
            (record, failed)
        }
    };
    // A startup-only point is the server start itself.
    for p in todo.iter().filter(|p| p.client.is_none()) {
        ctx.point_done(&p.id, &group.id, ctx.attempt(&p.id), record.status.as_str())?;
    }
    redact(&server_dir.join("server.log"), ctx.api_key);
    write(&server_dir.join("startup.json"), &json(&record))?;
    let failed = points_failed || record.status == Status::Failed;
    match rec.servers.iter_mut().find(|s| s.id == record.id) {
        Some(old) => *old = record,
        None => rec.servers.push(record),
    }
    Ok(failed)
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
    let mut failed = false;
    let mut dead: Option<String> = None;
    for (j, point) in todo.iter().enumerate() {
        if ctx.interrupted.load(Ordering::SeqCst) {
            break;
        }
        let Some(c) = &point.client else {
            ctx.progress.points_done(1);
            continue;
        };
        let attempt = ctx.attempt(&point.id);
        let mut out = match &dead {
            Some(why) => load::not_run(group, point, attempt, model, why),
            None => {
                ctx.progress.status(&format!(
                    "server {}/{}: point {}/{} c={} repeat {}",
                    ctx.index.0 + 1,
                    ctx.index.1,
                    j + 1,
                    todo.len(),
                    c.concurrency,
                    point.repeat
                ));
                load::run_point(&load_ctx, group, point, attempt, model, vocab).await
            }
        };
        if dead.is_none()
            && out.point.status == "ok"
            && out.requests.iter().any(|r| !r.ok())
            && !server_alive(running, ctx.http, &group.server.base_url).await
        {
            let why = "the server died during this point".to_owned();
            out.point.status = "failed".into();
            out.point.error = Some(why.clone());
            dead = Some(format!("not run: {why} before it"));
        }
        append(&ctx.dir.join("requests.jsonl"), &out.requests)?;
        append(&ctx.dir.join("samples.jsonl"), &out.samples)?;
        append(&ctx.dir.join("points.jsonl"), std::slice::from_ref(&out.point))?;
        ctx.point_done(&point.id, &group.id, attempt, &out.point.status)?;
        let ok = out.requests.iter().filter(|r| !r.warmup && r.ok()).count();
        ctx.progress.line(&format!(
            "  point {} c={} repeat {}: {} ({ok}/{} ok, {:.1} s){}",
            point.id,
            c.concurrency,
            point.repeat,
            out.point.status,
            c.requests,
            out.point.wall_s,
            out.point.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ));
        failed |= out.point.status == "failed";
        rec.points.push(out.point);
        rec.requests.extend(out.requests);
        rec.samples.extend(out.samples);
        ctx.progress.points_done(1);
        write_derived(ctx.dir, ctx.spec, ctx.manifest, rec)?;
        if failed && ctx.fail_fast {
            break;
        }
    }
    Ok(failed)
}
