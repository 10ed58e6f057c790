//! One load point against a ready server: warmup (excluded), a quiet /metrics snapshot, the measured phase
//! with GPU and /metrics sampling beside it, another quiet snapshot. Everything raw goes to the journal files.

use crate::load::client::{self, Phase, RequestSpec};
use crate::load::error::WorkloadError;
use crate::load::prompt;
use crate::plan::{ClientConfig, OpenLoop, Point, ServerGroup};
use crate::probe::MemoryProbe;
use crate::probe::metrics::{self, Snapshot};
use crate::record::point::HostReading;
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, SampleLine, Status};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::workload::chat_trace_bound;
pub use super::workload::{check_workloads, workload_for};

pub struct PointOutput {
    pub point: PointRecord,
    pub requests: Vec<RequestRecord>,
    pub samples: Vec<SampleLine>,
}

async fn scrape(http: &reqwest::Client, base_url: &str, t_s: f64) -> Option<Snapshot> {
    let resp = http.get(format!("{base_url}/metrics")).timeout(Duration::from_secs(5)).send().await.ok()?;
    let bytes = crate::probe::body_capped(resp, crate::probe::MAX_METRICS_BODY).await.ok()?;
    Some(metrics::snapshot(&metrics::parse(&String::from_utf8_lossy(&bytes)), t_s))
}

/// /metrics once the server is idle and its counters stopped moving (vLLM updates them asynchronously).
pub async fn quiet_snapshot(http: &reqwest::Client, base_url: &str) -> Option<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut prev = scrape(http, base_url, 0.0).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = scrape(http, base_url, 0.0).await?;
        let idle = now.running.unwrap_or(0.0) == 0.0 && now.waiting.unwrap_or(0.0) == 0.0;
        let still = now.generation_tokens == prev.generation_tokens
            && now.e2e_count == prev.e2e_count
            && now.ttft_count == prev.ttft_count;
        if (idle && still) || Instant::now() > deadline {
            return Some(now);
        }
        prev = now;
    }
}

/// What the sampler needs: where to scrape, what to read, and which point its lines belong to.
struct Sampler {
    http: reqwest::Client,
    base_url: String,
    probe: Arc<dyn MemoryProbe>,
    point: String,
    attempt: u32,
    interval: Duration,
    scrape_metrics: bool,
    /// A slot's cores: steal is read on these alone (the whole host when empty).
    cores: Vec<usize>,
}

/// How often the host (CPU steal, load, SM clock, throttle reasons) is read: slowly, it drifts slowly.
const HOST_EVERY: Duration = Duration::from_secs(1);
/// The longest the sampler sleeps at once, so a stop (end of phase, Ctrl-C) never waits out an interval.
const SAMPLER_TICK: Duration = Duration::from_millis(20);

/// Samples GPU utilisation every `interval`, /metrics every max(interval, 500 ms) and the host every second
/// until `stop` is set. `t0` is the origin of the lines' `t_s`.
async fn sample_during(sampler: Sampler, t0: Instant, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<SampleLine>>>) {
    let Sampler { http, base_url, probe, point, attempt, interval, scrape_metrics, cores } = sampler;
    let line = |t_s: f64| SampleLine {
        point: point.clone(),
        attempt,
        t_s,
        metrics: None,
        gpu_util_pct: None,
        gpu_mem_used_mb: None,
        host: None,
    };
    let push = |l: SampleLine| out.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    let metrics_every = interval.max(Duration::from_millis(500));
    let (mut next_gpu, mut next_metrics, mut next_host) = (t0, t0, t0);
    let mut cpu_before = crate::probe::cpu_times_of(&cores);
    while !stop.load(Ordering::SeqCst) {
        crate::record::failpoint::panic("sampler-panic");
        let now = Instant::now();
        let t_s = now.duration_since(t0).as_secs_f64();
        if now >= next_gpu {
            next_gpu = now + interval;
            if let Some(util) = probe.utilization() {
                push(SampleLine {
                    gpu_util_pct: Some(util),
                    gpu_mem_used_mb: probe.device().map(|d| d.0),
                    ..line(t_s)
                });
            }
        }
        if scrape_metrics && now >= next_metrics {
            next_metrics = now + metrics_every;
            if let Some(m) = scrape(&http, &base_url, t_s).await {
                push(SampleLine { metrics: Some(m), ..line(t_s) });
            }
        }
        if now >= next_host {
            next_host = now + HOST_EVERY;
            let cpu = crate::probe::cpu_times_of(&cores);
            let steal_pct = match (cpu_before, cpu) {
                (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => Some(100.0 * (s1 - s0) as f64 / (t1 - t0) as f64),
                _ => None,
            };
            cpu_before = cpu;
            let clocks = probe.clocks();
            let host = HostReading {
                steal_pct,
                load1: crate::probe::load_average(),
                sm_clock_mhz: clocks.map(|c| c.0),
                throttle_reasons: clocks.map(|c| c.1),
            };
            push(SampleLine { host: Some(host), ..line(t_s) });
        }
        let due = next_gpu.min(if scrape_metrics { next_metrics } else { next_host }).min(next_host);
        tokio::time::sleep(due.saturating_duration_since(Instant::now()).min(SAMPLER_TICK)).await;
    }
}

#[derive(Clone)]
pub struct Context<'a> {
    /// Sent as `Authorization: Bearer` when the spec names an API key variable.
    pub api_key: Option<String>,
    pub http: &'a reqwest::Client,
    pub probe: Arc<dyn MemoryProbe>,
    pub gpu_interval: Duration,
    pub server_metrics: bool,
    pub interrupted: &'a AtomicBool,
}

/// Runs a phase, giving up (dropping in-flight requests) when interrupted.
async fn phase_or_interrupt(
    http: &reqwest::Client,
    spec: &Arc<RequestSpec>,
    phase: &Phase,
    interrupted: &AtomicBool,
    cpus: &[usize],
) -> Option<client::PhaseResult> {
    let run = async {
        if cpus.is_empty() { client::run_phase(http, spec, phase).await } else { run_pinned(cpus, spec, phase).await }
    };
    let watch = async {
        while !interrupted.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = run => Some(r),
        () = watch => None,
    }
}

/// A phase on a thread of its own pinned to a slot's cores, with a runtime and a client of its own (threads
/// it starts, the open loop's included, inherit the pinning), so two slots' clients never share a core.
/// Dropping the future (Ctrl-C) ends the phase on that thread.
async fn run_pinned(cpus: &[usize], spec: &Arc<RequestSpec>, phase: &Phase) -> client::PhaseResult {
    let (cpus, spec, phase) = (cpus.to_vec(), spec.clone(), phase.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (_cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = std::time::Instant::now();
    let spawned = std::thread::Builder::new().name("servelab-slot-client".into()).spawn(move || {
        if let Err(e) = crate::engine::process::pin_current_thread(&cpus) {
            eprintln!("warning: the slot's client could not be pinned to cores {cpus:?}: {e}");
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cpus.len().max(1)).enable_all().build();
        let Ok(rt) = rt else { return };
        let pool = if phase.concurrency == 0 { 1024 } else { phase.concurrency };
        let http = client::http_client(pool);
        rt.block_on(async {
            tokio::select! {
                // why: a send fails only when the caller dropped the phase (Ctrl-C), which then wants nothing;
                // cancel_rx ends with a send or with its sender dropped, and both mean stop.
                r = client::run_phase(&http, &spec, &phase) => { done_tx.send(r).ok(); }
                _ = cancel_rx => {}
            }
        });
    });
    match spawned {
        Ok(_) => done_rx.await.unwrap_or_else(|_| lost(t0, "the slot's client thread ended without a result")),
        Err(e) => lost(t0, &format!("the slot's client thread could not start: {e}")),
    }
}

/// A phase that produced nothing because its thread failed: the point fails with why.
fn lost(t0: std::time::Instant, why: &str) -> client::PhaseResult {
    client::PhaseResult { records: Vec::new(), wall_s: 0.0, t0, panicked: Some(why.to_owned()) }
}

/// Idle connections kept: one per slot of a closed loop; an open loop has no slots, so keep enough that
/// arrivals rarely pay for a new connection.
fn pool_size(c: &ClientConfig) -> u32 {
    match c.open_loop {
        Some(_) if c.concurrency == 0 => 1024,
        _ => c.concurrency,
    }
}

/// What every request of a point asks for.
fn request_spec(
    c: &ClientConfig,
    group: &ServerGroup,
    model: &str,
    model_vocab: Option<u64>,
    api_key: Option<String>,
) -> Result<Arc<RequestSpec>, WorkloadError> {
    let base = &group.server.base_url;
    let model_dir = group.server.model.as_deref().map(Path::new).filter(|m| m.is_dir());
    let workload = Arc::new(workload_for(c, model_dir, model_vocab)?);
    let path = c.endpoint.path();
    let url = format!("{base}{path}");
    let url = reqwest::Url::parse(&url).map_err(|e| WorkloadError::BadUrl { url, source: e.into() })?;
    Ok(Arc::new(RequestSpec {
        url,
        chat: c.endpoint == crate::record::plan::Endpoint::Chat,
        model: model.to_owned(),
        ignore_eos: c.ignore_eos,
        stream: c.stream,
        timeout: Duration::from_secs_f64(c.request_timeout_s),
        record_max_tokens: workload.varies_output(),
        workload,
        api_key,
    }))
}

/// Why the server warmup after a start did not run (it is not measured: the run goes on, saying why).
#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    #[error("interrupted")]
    Interrupted,
}

/// Load at the group's highest concurrency for `duration` right after a server start, so the first measured
/// point does not pay for the server's first batches. Its requests are not recorded; returns how many
/// completed, or why it could not run.
pub async fn server_warmup(
    ctx: &Context<'_>,
    group: &ServerGroup,
    model: &str,
    model_vocab: Option<u64>,
    duration: Duration,
) -> Result<usize, WarmupError> {
    // A closed loop warms up at the group's highest concurrency (a bounded load). An open loop warms up at its
    // lowest rate: a rate above what the server sustains would hold it overloaded until the warmup's own
    // requests drain (a search's 800/s ceiling sent 21,470 requests in a "3 s" warmup on an H200).
    let clients: Vec<&ClientConfig> = group.points.iter().filter_map(|p| p.client.as_ref()).collect();
    let by = |key: fn(&ClientConfig) -> f64| move |a: &&&ClientConfig, b: &&&ClientConfig| key(a).total_cmp(&key(b));
    let open = clients.iter().filter(|c| c.open_loop.is_some()).min_by(by(|c| c.rate().unwrap_or(0.0)));
    let Some(c) = open.or_else(|| clients.iter().max_by(by(|c| f64::from(c.concurrency)))).copied() else {
        return Ok(0);
    };
    let spec = request_spec(c, group, model, model_vocab, ctx.api_key.clone())?;
    let phase = Phase {
        point: "server-warmup".into(),
        attempt: 0,
        requests: 0,
        duration: Some(duration),
        concurrency: c.concurrency,
        warmup: true,
        salt: prompt::salt(&format!("{}/server-warmup", group.id)),
        open_loop: c.open_loop.clone().map(|o| OpenLoop { min_requests: 0, ..o }),
        schedule_seed: prompt::salt(&format!("{}/server-warmup/schedule", group.id)),
        threads: c.client_threads.max(1),
    };
    let http = client::http_client(pool_size(c));
    let r = phase_or_interrupt(&http, &spec, &phase, ctx.interrupted, &group.server.cpus)
        .await
        .ok_or(WarmupError::Interrupted)?;
    Ok(r.records.iter().filter(|r| r.ok()).count())
}

#[allow(
    clippy::too_many_lines,
    reason = "a point's steps in the order they happen (warmup, baseline, sampler, phase, after-snapshot, record); \
              split it along those steps next"
)]
pub async fn run_point(
    ctx: &Context<'_>,
    group: &ServerGroup,
    point: &Point,
    attempt: u32,
    model: &str,
    model_vocab: Option<u64>,
) -> PointOutput {
    let c = point.client.clone().expect("load points have a client config");
    let base = &group.server.base_url;
    let mut record = PointRecord {
        point: point.id.clone(),
        attempt,
        group: group.id.clone(),
        repeat: point.repeat,
        vars: point.vars.clone(),
        client: c.clone(),
        model: model.to_owned(),
        started_at: chrono::Local::now().to_rfc3339(),
        wall_s: 0.0,
        samples_offset_s: 0.0,
        warmup_requests: c.warmup,
        before: None,
        after: None,
        gpu_sampled: ctx.probe.utilization().is_some(),
        status: Status::Ok,
        error: None,
        beside: None,
        switch_shared: None,
        trace_sent: None,
        trace_sent_template: None,
    };
    let http = client::http_client(pool_size(&c));
    let spec = match request_spec(&c, group, model, model_vocab, ctx.api_key.clone()) {
        Ok(s) => s,
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(e.to_string());
            return PointOutput { point: record, requests: Vec::new(), samples: Vec::new() };
        }
    };
    if let Err(e) = chat_trace_bound(&spec, group, &mut record) {
        record.status = Status::Failed;
        record.error = Some(e.to_string());
        return PointOutput { point: record, requests: Vec::new(), samples: Vec::new() };
    }
    let mut requests = Vec::new();
    if c.warmup > 0 {
        let warm = Phase {
            point: point.id.clone(),
            attempt,
            requests: c.warmup,
            duration: None,
            concurrency: c.concurrency.min(c.warmup),
            warmup: true,
            salt: prompt::salt(&format!("{}/{attempt}/warmup", point.id)),
            open_loop: None,
            schedule_seed: 0,
            threads: 1,
        };
        if let Some(r) = phase_or_interrupt(&http, &spec, &warm, ctx.interrupted, &group.server.cpus).await {
            // Warmup requests are never figures, but a worker that panicked there is a bug the point must show.
            if let Some(why) = &r.panicked {
                record.status = Status::Failed;
                record.error = Some(format!("during warmup: {why}"));
            }
            requests.extend(r.records);
        }
    }
    record.before = quiet_snapshot(ctx.http, base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = Sampler {
        http: ctx.http.clone(),
        base_url: base.clone(),
        probe: ctx.probe.clone(),
        point: point.id.clone(),
        attempt,
        interval: ctx.gpu_interval,
        scrape_metrics: ctx.server_metrics,
        cores: group.server.cpus.clone(),
    };
    let sampler_t0 = Instant::now();
    let sampler = tokio::spawn(sample_during(sampler, sampler_t0, stop.clone(), samples.clone()));
    let phase = Phase {
        point: point.id.clone(),
        attempt,
        requests: c.requests,
        duration: c.duration_s.map(Duration::from_secs_f64),
        concurrency: c.concurrency,
        warmup: false,
        salt: prompt::salt(&format!("{}/{attempt}", point.id)),
        open_loop: c.open_loop.clone(),
        // The same spec seed and point give the same schedule, on every attempt.
        schedule_seed: c.seed ^ prompt::salt(&format!("{}/schedule", point.id)),
        threads: c.client_threads.max(1),
    };
    let result = if ctx.interrupted.load(Ordering::SeqCst) {
        None
    } else {
        phase_or_interrupt(&http, &spec, &phase, ctx.interrupted, &group.server.cpus).await
    };
    stop.store(true, Ordering::SeqCst);
    let sampler_failed = sampler.await.err().map(|e| format!("the sampler failed: {}", client::join_error(e)));
    match result {
        Some(r) => {
            if let Some(why) = &r.panicked {
                record.status = Status::Failed;
                record.error = Some(why.clone());
            }
            record.wall_s = r.wall_s;
            record.samples_offset_s = r.t0.duration_since(sampler_t0).as_secs_f64();
            requests.extend(r.records);
            record.after = quiet_snapshot(ctx.http, base).await;
        }
        None => {
            record.status = Status::Interrupted;
            record.error = Some("Ctrl-C during the measured phase; its requests were cancelled".into());
        }
    }
    // Samples lost: the point's GPU and server figures would silently shrink, so the point fails (an
    // interrupted one stays interrupted, to be measured again, and says it too).
    if let Some(why) = sampler_failed {
        if record.status != Status::Interrupted {
            record.status = Status::Failed;
        }
        record.error = Some(match record.error.take() {
            Some(first) => format!("{first}; {why}"),
            None => why,
        });
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    PointOutput { point: record, requests, samples }
}

/// A point that was not run because its server had died: recorded as failed, with no requests.
pub fn not_run(group: &ServerGroup, point: &Point, attempt: u32, model: &str, why: &str) -> PointOutput {
    let record = PointRecord {
        point: point.id.clone(),
        attempt,
        group: group.id.clone(),
        repeat: point.repeat,
        vars: point.vars.clone(),
        client: point.client.clone().expect("load points have a client config"),
        model: model.to_owned(),
        started_at: chrono::Local::now().to_rfc3339(),
        wall_s: 0.0,
        samples_offset_s: 0.0,
        warmup_requests: 0,
        before: None,
        after: None,
        gpu_sampled: false,
        status: Status::Failed,
        error: Some(why.to_owned()),
        beside: None,
        switch_shared: None,
        trace_sent: None,
        trace_sent_template: None,
    };
    PointOutput { point: record, requests: Vec::new(), samples: Vec::new() }
}
