//! One server group's life in a run: baseline, start, readiness with a memory timeline, the reading at ready,
//! startup facts, stop, and the check that memory went back to the baseline.

use crate::engine::process::{ServerProcess, StopReport};
use crate::engine::{EngineError, logparse, ready};
use crate::plan::ServerGroup;
use crate::probe::{self, MemSample, MemoryProbe, model::ModelFacts};
use crate::record::server::ReleaseCheck;
use crate::record::{ServerRecord, Status};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A started, ready server and what has been recorded so far.
pub struct Running {
    /// None for an `external` endpoint, which servelab neither started nor stops.
    pub process: Option<ServerProcess>,
    pub record: ServerRecord,
}

pub(crate) fn new_record(group: &ServerGroup, probe: &dyn MemoryProbe, model: Option<ModelFacts>) -> ServerRecord {
    ServerRecord {
        id: group.id.clone(),
        vars: group.vars.clone(),
        argv: group.server.argv.clone(),
        env: group.server.env.clone(),
        base_url: group.server.base_url.clone(),
        status: Status::Ok,
        error: None,
        log_tail: None,
        started_at: chrono::Local::now().to_rfc3339(),
        ready_s: None,
        max_model_len: group.server.max_model_len,
        served_max_model_len: None,
        served_model: None,
        memory_source: probe.source(),
        baseline: probe::sample(probe, &BTreeSet::new(), 0.0),
        at_ready: None,
        timeline: Vec::new(),
        log: Default::default(),
        cache_config_info: None,
        version: None,
        model,
        stop: None,
        release: None,
        pids: Vec::new(),
        predicted: None,
        slot: None,
        warnings: Vec::new(),
    }
}

fn fail(record: &mut ServerRecord, e: &EngineError) {
    record.status = if matches!(e, EngineError::Interrupted) { Status::Interrupted } else { Status::Failed };
    record.error = Some(match e {
        EngineError::Interrupted => "stopped by Ctrl-C before the server was ready".to_owned(),
        other => other.short(),
    });
    if let EngineError::ExitedEarly { tail, .. } | EngineError::NotReady { tail, .. } = e {
        record.log_tail = Some(tail.clone());
    }
}

/// Model facts from `<model>/config.json` when the model is a local folder, or a warning when the folder has
/// a config.json that cannot be read or parsed (a model named by its hub id has none, which needs no word).
pub(crate) fn read_model_facts(group: &ServerGroup) -> Result<Option<ModelFacts>, String> {
    let Some(model) = group.server.model.as_ref() else { return Ok(None) };
    let path = Path::new(model).join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e}; the KV theory and the capacity prediction are left out",
                path.display()
            ));
        }
    };
    let argv = &group.server.argv;
    let arg = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).map(String::as_str);
    probe::model::from_config(&text, arg("--dtype"), arg("--kv-cache-dtype")).map(Some).map_err(|e| {
        format!(
            "{} does not parse as a model config ({e}); the KV theory and the capacity prediction are left out",
            path.display()
        )
    })
}

/// Starts the group's server and waits until it is ready. On failure the record says why and no process
/// remains.
pub async fn start(
    group: &ServerGroup,
    dir: &Path,
    probe: &dyn MemoryProbe,
    model: Option<ModelFacts>,
    http: &reqwest::Client,
    interrupted: &AtomicBool,
    api_key: Option<&str>,
) -> Result<Running, ServerRecord> {
    let cfg = &group.server;
    let mut record = new_record(group, probe, model);
    if cfg.kind == crate::spec::EngineKind::External {
        return external(cfg, record, http).await;
    }
    let log_path = dir.join("server.log");
    if let Err(e) = ready::check_port_free(&cfg.host, cfg.port) {
        fail(&mut record, &e);
        return Err(record);
    }
    // The key goes to the child's environment only, never into the recorded configuration.
    let mut env = cfg.env.clone();
    if let (Some(key), crate::spec::EngineKind::Vllm) = (api_key, cfg.kind) {
        env.insert("VLLM_API_KEY".to_owned(), key.to_owned());
    }
    let mut process = match ServerProcess::spawn(
        &cfg.argv,
        &env,
        &log_path,
        Duration::from_secs_f64(cfg.stop_timeout_s),
        &cfg.cpus,
    ) {
        Ok(p) => p,
        Err(source) => {
            let program = cfg.argv.first().cloned().unwrap_or_default();
            let hint = "is it installed and on PATH? For vLLM on CPU run scripts/setup-vllm-cpu.sh and add its bin/ to PATH, or set `engine.command`".to_owned();
            fail(&mut record, &EngineError::Spawn { program, source, hint });
            return Err(record);
        }
    };
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let timeline = &mut record.timeline;
    let result = ready::wait_ready(&mut process, cfg, &log_path, http, interrupted, api_key, |p| {
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let tree = p.tree();
            timeline.push(probe::sample(probe, &tree, p.started.elapsed().as_secs_f64()));
        }
    })
    .await;
    match result {
        Ok(info) => {
            let tree = process.tree();
            record.at_ready = Some(probe::sample(probe, &tree, info.ready_s));
            record.ready_s = Some(info.ready_s);
            record.served_max_model_len = info.served_max_model_len;
            record.served_model = info.served_model;
            record.max_model_len = record.max_model_len.or(info.served_max_model_len);
            let (version, cache_info) = ready::server_facts(http, &cfg.base_url).await;
            record.version = version;
            record.cache_config_info = cache_info;
            Ok(Running { process: Some(process), record })
        }
        Err(e) => {
            fail(&mut record, &e);
            let stop = process.stop(Duration::from_secs_f64(cfg.stop_timeout_s)).await;
            finish(&mut record, &process, stop, probe, interrupted).await;
            Err(record)
        }
    }
}

/// Stops a running server and completes its record.
pub async fn stop(
    mut running: Running,
    group: &ServerGroup,
    probe: &dyn MemoryProbe,
    interrupted: &AtomicBool,
) -> ServerRecord {
    if let Some(process) = &mut running.process {
        let report = process.stop(Duration::from_secs_f64(group.server.stop_timeout_s)).await;
        finish(&mut running.record, process, report, probe, interrupted).await;
    }
    running.record
}

/// An `external` endpoint: no lifecycle, only a check that it answers and what it says about itself.
async fn external(
    cfg: &crate::plan::ServerConfig,
    mut record: ServerRecord,
    http: &reqwest::Client,
) -> Result<Running, ServerRecord> {
    let begin = Instant::now();
    let answer = http.get(&cfg.ready_url).timeout(Duration::from_secs(10)).send().await;
    match answer {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            record.status = Status::Failed;
            record.error = Some(format!("external endpoint {} answered {}", cfg.ready_url, r.status()));
            return Err(record);
        }
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(format!("external endpoint {} is unreachable: {e}", cfg.ready_url));
            return Err(record);
        }
    }
    record.ready_s = Some(begin.elapsed().as_secs_f64());
    if let Ok(r) = http.get(format!("{}/v1/models", cfg.base_url)).timeout(Duration::from_secs(10)).send().await {
        let body = crate::probe::json_capped(r, crate::probe::MAX_SMALL_BODY).await;
        record.served_model = body["data"][0]["id"].as_str().map(str::to_owned);
        record.served_max_model_len = body["data"][0]["max_model_len"].as_u64();
    }
    let (version, info) = ready::server_facts(http, &cfg.base_url).await;
    record.version = version;
    record.cache_config_info = info;
    Ok(Running { process: None, record })
}

async fn finish(
    record: &mut ServerRecord,
    process: &ServerProcess,
    stop: StopReport,
    probe: &dyn MemoryProbe,
    interrupted: &AtomicBool,
) {
    if !stop.leftover.is_empty() {
        record.status = Status::Failed;
        record.error.get_or_insert(format!("processes {:?} survived SIGKILL", stop.leftover));
    }
    record.stop = Some(stop);
    record.pids = process.seen().into_iter().collect();
    record.warnings.extend(process.warnings().iter().cloned());
    if let Err(e) = process.log.close() {
        let text = format!(
            "{} lacks the end of the server's output ({e}); the log parser reads the kept text, not the file",
            process.log.path().display()
        );
        eprintln!("warning: {text}");
        record.warnings.push(text);
    }
    record.log = logparse::parse(&process.log.text());
    record.release = Some(wait_released(&record.baseline, probe, interrupted).await);
}

/// Waits until memory is back at the idle baseline: device memory on a GPU, available host memory on CPU.
/// The tolerance absorbs other tenants and the page cache: max(256 MiB, 2% of the total).
pub async fn wait_released(baseline: &MemSample, probe: &dyn MemoryProbe, interrupted: &AtomicBool) -> ReleaseCheck {
    let begin = Instant::now();
    // GPU memory is the server's alone to give back (vLLM frees it within seconds; an orphan never does);
    // host memory also moves with every other process on the machine, so it gets a shorter wait.
    let limit = Duration::from_secs(if baseline.device_used_mb.is_some() { 60 } else { 10 });
    let check = |s: &MemSample| -> (bool, String) {
        match (baseline.device_used_mb, baseline.device_total_mb, s.device_used_mb) {
            (Some(b), Some(total), Some(now)) => {
                let tol = (total * 0.02).max(256.0);
                (now <= b + tol, format!("device used ≤ baseline {b:.0} MiB + {tol:.0} MiB"))
            }
            _ => match (baseline.host_available_mb, s.host_available_mb) {
                (Some(b), Some(now)) => {
                    let total = probe::procfs::meminfo().map(|(t, _)| t as f64 / probe::MIB).unwrap_or(0.0);
                    let tol = (total * 0.02).max(256.0);
                    (now >= b - tol, format!("host available ≥ baseline {b:.0} MiB − {tol:.0} MiB"))
                }
                _ => (true, "no memory reading to compare".to_owned()),
            },
        }
    };
    loop {
        let after = probe::sample(probe, &BTreeSet::new(), 0.0);
        let (ok, rule) = check(&after);
        if ok || begin.elapsed() > limit || interrupted.load(Ordering::SeqCst) {
            return ReleaseCheck { released: ok, waited_s: begin.elapsed().as_secs_f64(), after, rule };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
