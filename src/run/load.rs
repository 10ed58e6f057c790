//! One load point against a ready server: warmup (excluded), a quiet /metrics snapshot, the measured phase
//! with GPU and /metrics sampling beside it, another quiet snapshot. Everything raw goes to the journal files.

use crate::load::client::{self, Phase, RequestSpec};
use crate::load::error::WorkloadError;
use crate::load::prompt::{self, Source, TextItem, Workload};
use crate::load::text::TextMaker;
use crate::plan::{ClientConfig, OpenLoop, Point, ServerGroup};
use crate::probe::MemoryProbe;
use crate::probe::metrics::{self, Snapshot};
use crate::record::plan::Endpoint;
use crate::record::point::HostReading;
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, SampleLine, Status};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The prompts and lengths of a point: random ids below the vocabulary, exact-length text, the lines of a
/// text file, or a dataset's sample.
pub fn workload_for(
    c: &ClientConfig,
    model_dir: Option<&Path>,
    model_vocab: Option<u64>,
) -> Result<Workload, WorkloadError> {
    let vocab = c.vocab_size.or(model_vocab).unwrap_or(1000);
    let base = Workload {
        source: Source::Ids { shared_prefix: c.shared_prefix_tokens, vocab },
        fixed: (c.prompt_tokens, c.max_tokens),
        prompt_dist: c.prompt_dist,
        output_dist: c.output_dist,
        context: c.context_limit,
        seed: c.seed,
    };
    if let Some(t) = &c.trace {
        let mut source = trace_source(t, vocab)?;
        if c.endpoint == Endpoint::Chat
            && let Source::Trace { maker, .. } = &mut source
        {
            let dir = model_dir.ok_or(WorkloadError::ChatTraceNeedsLocalModel)?;
            *maker = Some(memo::maker(dir)?);
        }
        return Ok(Workload { source, ..base });
    }
    if let Some(plan) = c.sessions {
        let dir = model_dir.ok_or(WorkloadError::SessionsNeedLocalModel)?;
        let output =
            c.output_dist.unwrap_or(crate::record::plan::LengthDist::Uniform { min: c.max_tokens, max: c.max_tokens });
        let sessions = crate::load::session::Sessions { plan, maker: memo::maker(dir)?, output, seed: c.seed };
        return Ok(Workload { source: Source::Sessions(Arc::new(sessions)), ..base });
    }
    let chat = c.endpoint == Endpoint::Chat;
    // The chat endpoint's template adds its own tokens (reported as its overhead); completions add BOS.
    let specials = |m: &TextMaker| if chat { 0 } else { m.specials() };
    if let Some(d) = &c.dataset {
        let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
        let (items, _) = memo::dataset(d, c.seed, maker.as_deref(), c.context_limit)?;
        let specials = maker.as_deref().map_or(0, specials);
        return Ok(Workload { source: Source::Items { items, random: true, specials }, ..base });
    }
    if let Some(file) = &c.prompts_file {
        let text =
            std::fs::read(file).map_err(|source| WorkloadError::PromptsFileRead { path: file.clone(), source })?;
        // Token counts when the model's tokenizer is at hand; else the server's count stands alone.
        let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
        let items: Vec<TextItem> = String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| TextItem {
                text: l.to_owned(),
                tokens: maker.as_ref().and_then(|m| m.count(l, false)),
                output: None,
            })
            .collect();
        if items.is_empty() {
            return Err(WorkloadError::PromptsFileEmpty { path: file.clone() });
        }
        let specials = maker.as_deref().map_or(0, specials);
        return Ok(Workload { source: Source::Items { items: Arc::new(items), random: false, specials }, ..base });
    }
    if c.text_prompts || chat {
        let dir = model_dir.ok_or(WorkloadError::NeedsLocalModel)?;
        let maker = memo::maker(dir)?;
        let specials = specials(&maker);
        return Ok(Workload {
            source: Source::Text { maker, shared_prefix: c.shared_prefix_tokens, specials },
            ..base
        });
    }
    Ok(base)
}

/// A planned trace's window, read again (once per process) and checked to be the content that was planned.
fn trace_source(t: &crate::record::trace::TracePlan, vocab: u64) -> Result<Source, WorkloadError> {
    use crate::record::tracefile::{Select, read_shared};
    let select = Select {
        start_s: t.start_s,
        duration_s: t.duration_s,
        max_input: t.max_input_tokens,
        max_output: t.max_output_tokens,
    };
    let window = read_shared(Path::new(&t.path), t.format, &select)?;
    if window.content != t.content {
        return Err(WorkloadError::TraceChanged {
            path: t.path.clone(),
            then: t.content.clone(),
            now: window.content.clone(),
        });
    }
    Ok(Source::Trace { window, vocab, speedup: t.speedup, maker: None })
}

/// What a trace replay's window holds, for the console before any server starts.
fn trace_note(t: &crate::record::trace::TracePlan, vocab: u64, max_rank: u32) -> String {
    let pct = |b: &crate::record::trace::PrefixBound| {
        b.rate().map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
    };
    let mut note = format!(
        "trace {} (content {}): {} requests over {:.1} s of trace at speedup {} ({:.2} requests/s); {} prompts and {} outputs capped; \
         prefix-cache bound {} in blocks of {} tokens ({} without caps; the report counts the server's block size)",
        t.path,
        t.content,
        t.requests,
        t.span_s,
        t.speedup,
        t.mean_rate(),
        t.capped_input,
        t.capped_output,
        t.bound_at(16, true).map_or_else(|| "-".to_owned(), |b| pct(&b)),
        16,
        t.bound_at(16, false).map_or_else(|| "-".to_owned(), |b| pct(&b))
    );
    if u64::from(max_rank) + 16 >= vocab {
        note.push_str(&format!(
            "; warning: a prefix of the window is followed by {} distinct blocks, more than the {vocab} token ids \
             tell apart by their first token, so some prompts share one token more than their ids say",
            max_rank + 1
        ));
    }
    note
}

/// Builds each distinct workload of the plan once, before any server starts: a dataset that is empty, has a
/// bad line or no usable entry, or whose every prompt is too long, a prompts file with no line, and a model
/// folder whose `tokenizer.json` does not parse all stop the run here (exit 2) rather than at its first point.
/// The samples are kept for the run. Returns a line per dataset saying what was left out.
pub fn check_workloads(plan: &crate::record::plan::Plan) -> Result<Vec<String>, WorkloadError> {
    let mut seen = std::collections::HashSet::new();
    let mut notes = Vec::new();
    for g in &plan.groups {
        let model_dir = g.server.model.as_deref().map(Path::new).filter(|m| m.is_dir());
        if let Some(dir) = model_dir
            && seen.insert(format!("tokenizer\0{}", dir.display()))
            && dir.join("tokenizer.json").is_file()
        {
            crate::load::text::check_tokenizer(dir)?;
        }
        for c in g.points.iter().filter_map(|p| p.client.as_ref()) {
            if let Some(t) = &c.trace {
                let vocab = c.vocab_size.unwrap_or(1000);
                let Source::Trace { window, .. } = trace_source(t, vocab)? else { continue };
                if c.endpoint == Endpoint::Chat {
                    // Text needs the tokenizer, the bound the template: both found before any server starts.
                    workload_for(c, model_dir, None)?;
                    crate::load::trace::ChatTemplate::find(&g.server.argv, model_dir.unwrap_or(Path::new(".")))?;
                }
                let note = trace_note(t, c.vocab_size.unwrap_or(u64::MAX), window.max_rank);
                if !notes.contains(&note) {
                    notes.push(note);
                }
                continue;
            }
            let needs_text =
                c.dataset.is_some() || c.prompts_file.is_some() || c.text_prompts || c.endpoint == Endpoint::Chat;
            let key = serde_json::to_string(&(c, model_dir)).map_err(WorkloadError::Key)?;
            if !needs_text || !seen.insert(key) {
                continue;
            }
            workload_for(c, model_dir, None)?;
            if let Some(d) = &c.dataset {
                let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
                let (_, t) = memo::dataset(d, c.seed, maker.as_deref(), c.context_limit)?;
                let note = format!(
                    "dataset {}: {} usable entries, {} left out while reading (no prompt or reply, an odd record, \
                     an output of 0 tokens); {} sampled, {} of them left out as longer than max-model-len {}",
                    d.path,
                    t.seen,
                    t.skipped,
                    t.kept + t.too_long,
                    t.too_long,
                    c.context_limit.map_or_else(|| "(unknown)".to_owned(), |l| l.to_string())
                );
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    Ok(notes)
}

/// Tokenizers and dataset samples, loaded once per process: a run's points share them, and a dataset of
/// hundreds of MB is streamed once rather than once per point.
mod memo {
    use crate::load::dataset;
    use crate::load::error::WorkloadError;
    use crate::load::prompt::TextItem;
    use crate::load::text::TextMaker;
    use crate::record::plan::Dataset;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, LazyLock, Mutex};

    type Memo<K, V> = LazyLock<Mutex<HashMap<K, V>>>;
    static MAKERS: Memo<PathBuf, Arc<TextMaker>> = LazyLock::new(Default::default);
    static DATASETS: Memo<String, (Arc<Vec<TextItem>>, Tally)> = LazyLock::new(Default::default);

    pub fn maker(dir: &Path) -> Result<Arc<TextMaker>, WorkloadError> {
        let mut memo = MAKERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = memo.get(dir) {
            return Ok(m.clone());
        }
        let m = Arc::new(TextMaker::load(dir)?);
        memo.insert(dir.to_owned(), m.clone());
        Ok(m)
    }

    /// What a dataset's sampling kept and left out, for the console.
    #[derive(Clone, Copy, Debug)]
    pub struct Tally {
        /// Usable entries in the file.
        pub seen: u64,
        /// Entries left out while reading: no prompt or reply, an odd record, an output length of 0.
        pub skipped: u64,
        /// Sampled entries left out because their prompt leaves no room in max-model-len.
        pub too_long: usize,
        pub kept: usize,
    }

    /// A dataset's sample as text items, without the entries whose prompt leaves no room in `context`.
    pub fn dataset(
        d: &Dataset,
        seed: u64,
        maker: Option<&TextMaker>,
        context: Option<u32>,
    ) -> Result<(Arc<Vec<TextItem>>, Tally), WorkloadError> {
        let key = format!("{}\0{:?}\0{}\0{seed}\0{context:?}\0{}", d.path, d.format, d.samples, maker.is_some());
        let mut memo = DATASETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = memo.get(&key) {
            return Ok(hit.clone());
        }
        let sampled = dataset::sample(Path::new(&d.path), d.format, d.samples, seed, maker)?;
        let drawn = sampled.entries.len();
        let items: Vec<TextItem> = sampled
            .entries
            .into_iter()
            .map(|e| TextItem {
                tokens: maker.and_then(|m| m.count(&e.prompt, false)),
                text: e.prompt,
                output: Some(e.output_tokens),
            })
            .filter(|i| match (i.tokens, context) {
                (Some(t), Some(limit)) => t + maker.map_or(0, TextMaker::specials) < limit,
                _ => true,
            })
            .collect();
        if items.is_empty() {
            let limit = context.map_or_else(|| "the server's".to_owned(), |c| c.to_string());
            return Err(WorkloadError::AllTooLong { path: d.path.clone(), drawn, limit });
        }
        let tally =
            Tally { seen: sampled.seen, skipped: sampled.skipped, too_long: drawn - items.len(), kept: items.len() };
        let hit = (Arc::new(items), tally);
        memo.insert(key, hit.clone());
        Ok(hit)
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

/// A trace on the chat endpoint: the prefix-cache bound on the prompts the measured phase will send, counted
/// before it starts (the planner cannot tokenize) and recorded with the point for the report.
fn chat_trace_bound(
    spec: &RequestSpec,
    group: &ServerGroup,
    record: &mut PointRecord,
) -> Result<(), crate::load::error::ChatTemplateError> {
    let Source::Trace { window, maker: Some(maker), .. } = &spec.workload.source else { return Ok(()) };
    let model_dir = group.server.model.as_deref().map(Path::new).unwrap_or(Path::new("."));
    let template = crate::load::trace::ChatTemplate::find(&group.server.argv, model_dir)?;
    let salt = prompt::salt(&format!("{}/{}", record.point, record.attempt));
    record.trace_sent =
        Some(crate::load::trace::sent_bounds(window, spec.workload.seed, salt, maker, template.as_ref())?);
    Ok(())
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
    };
    PointOutput { point: record, requests: Vec::new(), samples: Vec::new() }
}
