//! The executor: the one place where time, processes and I/O meet. Takes the plan's server groups in order,
//! starts each server once, records what it committed, stops it, and rewrites the outputs after every group
//! so a crash keeps what was measured.

pub mod load;
pub mod manifest;
pub mod progress;
pub mod recorded;
pub mod record;
pub mod server;

use crate::load::record::RequestRecord;
use crate::plan::{Plan, ServerGroup};
use crate::probe::{self, MemoryProbe, model::ModelFacts};
use crate::report::derive;
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
    #[error("cannot write the run's output under {path}: {source}; check that the folder is writable, or pass --out DIR")]
    Output { path: String, source: std::io::Error },
    #[error("{0}")]
    Probe(String),
    #[error("{0}")]
    Report(String),
}

pub struct RunOptions {
    /// Runs go to `<out_root>/<spec name>/<run id>/`.
    pub out_root: PathBuf,
    pub run_id: Option<String>,
}

/// Everything a run recorded, in memory; the files hold the same.
#[derive(Default)]
pub struct Recorded {
    pub servers: Vec<ServerRecord>,
    pub points: Vec<PointRecord>,
    pub requests: Vec<RequestRecord>,
    pub samples: Vec<SampleLine>,
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
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|source| RunError::Output { path: path.display().to_string(), source })?;
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).unwrap_or_default();
        buf.push(b'\n');
    }
    file.write_all(&buf).and_then(|_| file.flush()).map_err(|source| RunError::Output { path: path.display().to_string(), source })
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

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
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

fn prepare(loaded: &LoadedSpec, plan: &Plan, opts: &RunOptions, probe: &dyn MemoryProbe) -> Result<(PathBuf, Manifest), RunError> {
    let run_id = opts.run_id.clone().unwrap_or_else(|| chrono::Local::now().format("%Y%m%d-%H%M%S").to_string());
    let dir = opts.out_root.join(&plan.name).join(&run_id);
    std::fs::create_dir_all(dir.join("servers")).map_err(|source| RunError::Output { path: dir.display().to_string(), source })?;
    write(&dir.join("plan.json"), &json(plan))?;
    write(&dir.join("spec.yaml"), loaded.source.text.as_bytes())?;
    let (host, os, cpu, cpus) = manifest::host_facts();
    let manifest = Manifest {
        servelab_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("SERVELAB_GIT_COMMIT").to_owned(),
        run_id,
        spec_file: loaded.source.file.clone(),
        spec_hash: manifest::short_hash(loaded.source.text.as_bytes()),
        overrides: loaded.overrides.clone(),
        plan: plan.clone(),
        host,
        os,
        cpu,
        cpus,
        mem_total_mb: probe::procfs::meminfo().map(|(t, _)| t as f64 / 1048576.0),
        memory_source: probe.source().as_str().to_owned(),
        gpu: probe.describe(),
        vllm_version: None,
        engine_command: plan.groups.first().map(|g| g.server.argv.clone()).unwrap_or_default(),
        model_config_hash: None,
        started_at: chrono::Local::now().to_rfc3339(),
        ended_at: None,
    };
    write(&dir.join("manifest.json"), &json(&manifest))?;
    Ok((dir, manifest))
}

pub async fn execute(loaded: &LoadedSpec, plan: &Plan, opts: &RunOptions, interrupted: &AtomicBool) -> Result<Outcome, RunError> {
    let probe: Arc<dyn MemoryProbe> = Arc::from(probe::select(loaded.spec.measure.memory).map_err(RunError::Probe)?);
    let (dir, mut manifest) = prepare(loaded, plan, opts, probe.as_ref())?;
    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| RunError::Probe(format!("HTTP client: {e}")))?;
    let progress = Progress::new(plan.runs());
    progress.line(&format!("run {}: {} server starts, {} runs, memory from {}", dir.display(), plan.server_starts(), plan.runs(), probe.source().as_str()));
    let mut rec = Recorded::default();
    let mut sweeps = Vec::new();
    for (i, group) in plan.groups.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let ctx = GroupCtx { index: (i, plan.groups.len()), dir: &dir, probe: probe.clone(), http: &http, interrupted, progress: &progress, spec: &loaded.spec, manifest: &manifest };
        run_group(&ctx, group, &mut rec).await?;
        if let Some(server) = rec.servers.last() {
            manifest.vllm_version = manifest.vllm_version.take().or(server.version.clone());
            manifest.model_config_hash = manifest.model_config_hash.take().or(server.model.as_ref().map(|m| m.config_hash.clone()));
        }
        write(&dir.join("manifest.json"), &json(&manifest))?;
        sweeps = write_derived(&dir, &loaded.spec, &manifest, &rec)?;
    }
    progress.finish();
    manifest.ended_at = Some(chrono::Local::now().to_rfc3339());
    write(&dir.join("manifest.json"), &json(&manifest))?;
    if !rec.servers.is_empty() {
        sweeps = write_derived(&dir, &loaded.spec, &manifest, &rec)?;
    }
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
}

async fn run_group(ctx: &GroupCtx<'_>, group: &ServerGroup, rec: &mut Recorded) -> Result<(), RunError> {
    let (i, n) = ctx.index;
    let server_dir = ctx.dir.join("servers").join(&group.id);
    std::fs::create_dir_all(&server_dir).map_err(|source| RunError::Output { path: server_dir.display().to_string(), source })?;
    let vars: Vec<String> = group.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ctx.progress.line(&format!("server {}/{n} {} {}: starting", i + 1, group.id, vars.join(" ")));
    ctx.progress.status(&format!("server {}/{n} starting", i + 1));
    let facts = model_facts(group);
    let vocab = facts.as_ref().and_then(|f| f.vocab_size);
    let record = match server::start(group, &server_dir, ctx.probe.as_ref(), facts, ctx.http, ctx.interrupted).await {
        Ok(running) => {
            let ready_s = running.record.ready_s.unwrap_or_default();
            ctx.progress.line(&format!("server {}/{n}: ready in {ready_s:.1} s", i + 1));
            // The spec's model name wins (a `--served-model-name`, or `bench --model`); else what /v1/models lists.
            let model = group.server.served_model_name.clone().or(running.record.served_model.clone()).unwrap_or_default();
            run_points(ctx, group, &model, vocab, rec).await?;
            ctx.progress.line(&format!("server {}/{n}: stopping", i + 1));
            server::stop(running, group, &server_dir, ctx.probe.as_ref(), ctx.interrupted)
        }
        Err(record) => {
            ctx.progress.line(&format!("server {}/{n}: {}: {}", i + 1, record.status.as_str(), record.error.as_deref().unwrap_or("")));
            ctx.progress.points_done(group.points.len());
            record
        }
    };
    write(&server_dir.join("startup.json"), &json(&record))?;
    rec.servers.push(record);
    Ok(())
}

/// The group's points against its running server; outputs are rewritten after every point.
async fn run_points(ctx: &GroupCtx<'_>, group: &ServerGroup, model: &str, vocab: Option<u64>, rec: &mut Recorded) -> Result<(), RunError> {
    let load_ctx = load::Context {
        http: ctx.http,
        probe: ctx.probe.clone(),
        gpu_interval: ctx.spec.measure.gpu_util_interval.0.max(Duration::from_millis(10)),
        server_metrics: ctx.spec.measure.server_metrics,
        interrupted: ctx.interrupted,
    };
    for (j, point) in group.points.iter().enumerate() {
        if ctx.interrupted.load(Ordering::SeqCst) {
            break;
        }
        let Some(c) = &point.client else {
            ctx.progress.points_done(1);
            continue;
        };
        ctx.progress.status(&format!("server {}/{}: point {}/{} c={} repeat {}", ctx.index.0 + 1, ctx.index.1, j + 1, group.points.len(), c.concurrency, point.repeat));
        let out = load::run_point(&load_ctx, group, point, model, vocab).await;
        append(&ctx.dir.join("requests.jsonl"), &out.requests)?;
        append(&ctx.dir.join("samples.jsonl"), &out.samples)?;
        append(&ctx.dir.join("points.jsonl"), std::slice::from_ref(&out.point))?;
        let ok = out.requests.iter().filter(|r| !r.warmup && r.ok()).count();
        ctx.progress.line(&format!("  point {} c={} repeat {}: {} ({ok}/{} ok, {:.1} s)", point.id, c.concurrency, point.repeat, out.point.status, c.requests, out.point.wall_s));
        rec.points.push(out.point);
        rec.requests.extend(out.requests);
        rec.samples.extend(out.samples);
        ctx.progress.points_done(1);
        write_derived(ctx.dir, ctx.spec, ctx.manifest, rec)?;
    }
    Ok(())
}
