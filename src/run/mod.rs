//! The executor: the one place where time, processes and I/O meet. Takes the plan's server groups in order,
//! starts each server once, records what it committed, stops it, and rewrites the outputs after every group
//! so a crash keeps what was measured.

pub mod progress;
pub mod record;
pub mod server;

use crate::plan::{Plan, ServerGroup};
use crate::probe::{self, MemoryProbe, model::ModelFacts};
use crate::report::kv_csv;
use crate::spec::LoadedSpec;
use progress::Progress;
use record::{ServerRecord, Status};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot write the run's output under {path}: {source}; check that the folder is writable, or pass --out DIR")]
    Output { path: String, source: std::io::Error },
    #[error("{0}")]
    Probe(String),
    #[error("{0}")]
    Unsupported(String),
}

pub struct RunOptions {
    /// Runs go to `<out_root>/<spec name>/<run id>/`.
    pub out_root: PathBuf,
    pub run_id: Option<String>,
}

pub struct Outcome {
    pub dir: PathBuf,
    pub servers: Vec<ServerRecord>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn failed(&self) -> usize {
        self.servers.iter().filter(|s| s.status != Status::Ok).count()
    }
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

fn prepare(loaded: &LoadedSpec, plan: &Plan, opts: &RunOptions) -> Result<PathBuf, RunError> {
    let run_id = opts.run_id.clone().unwrap_or_else(|| chrono::Local::now().format("%Y%m%d-%H%M%S").to_string());
    let dir = opts.out_root.join(&plan.name).join(run_id);
    std::fs::create_dir_all(dir.join("servers")).map_err(|source| RunError::Output { path: dir.display().to_string(), source })?;
    write(&dir.join("plan.json"), &json(plan))?;
    write(&dir.join("spec.yaml"), loaded.source.text.as_bytes())?;
    Ok(dir)
}

pub async fn execute(loaded: &LoadedSpec, plan: &Plan, opts: &RunOptions, interrupted: &AtomicBool) -> Result<Outcome, RunError> {
    if plan.points().any(|(_, p)| p.client.is_some()) {
        return Err(RunError::Unsupported("this spec has a `load` section; sending load is not implemented yet (issue 4). `servelab run` measures startup-only specs such as experiments/cpu/kv_scaling.yaml".into()));
    }
    let probe = probe::select(loaded.spec.measure.memory).map_err(RunError::Probe)?;
    let dir = prepare(loaded, plan, opts)?;
    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| RunError::Probe(format!("HTTP client: {e}")))?;
    let progress = Progress::new(plan.runs());
    progress.line(&format!("run {}: {} server starts, memory from {}", dir.display(), plan.server_starts(), probe.source().as_str()));
    let mut servers = Vec::new();
    for (i, group) in plan.groups.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let record = run_group(group, (i, plan.groups.len()), &dir, probe.as_ref(), &http, interrupted, &progress).await?;
        progress.points_done(group.points.len());
        servers.push(record);
        write(&dir.join("kv_cache_scaling.csv"), &kv_csv::render(&servers))?;
    }
    progress.finish();
    Ok(Outcome { dir, servers, interrupted: interrupted.load(Ordering::SeqCst) })
}

async fn run_group(
    group: &ServerGroup,
    (i, n): (usize, usize),
    dir: &Path,
    probe: &dyn MemoryProbe,
    http: &reqwest::Client,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<ServerRecord, RunError> {
    let server_dir = dir.join("servers").join(&group.id);
    std::fs::create_dir_all(&server_dir).map_err(|source| RunError::Output { path: server_dir.display().to_string(), source })?;
    let vars: Vec<String> = group.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    progress.line(&format!("server {}/{n} {} {}: starting", i + 1, group.id, vars.join(" ")));
    progress.status(&format!("server {}/{n} starting", i + 1));
    let record = match server::start(group, &server_dir, probe, model_facts(group), http, interrupted).await {
        Ok(running) => {
            let ready_s = running.record.ready_s.unwrap_or_default();
            progress.line(&format!("server {}/{n}: ready in {ready_s:.1} s; stopping", i + 1));
            server::stop(running, group, &server_dir, probe, interrupted)
        }
        Err(record) => {
            progress.line(&format!("server {}/{n}: {}: {}", i + 1, record.status.as_str(), record.error.as_deref().unwrap_or("")));
            record
        }
    };
    write(&server_dir.join("startup.json"), &json(&record))?;
    Ok(record)
}
