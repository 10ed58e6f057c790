//! KV-scaling rows and findings: pure functions of the recorded server starts.

use crate::record::{MIB, Source};
use crate::record::{ServerRecord, Status};

/// One row's numbers before formatting.
#[derive(Clone, Debug, PartialEq)]
pub struct KvRow {
    pub max_model_len: Option<u64>,
    /// GPU: device-wide used MiB at ready. CPU: the server tree's RSS MiB.
    pub mem_used_mb: Option<f64>,
    pub delta_mb: Option<f64>,
    pub bytes_per_token_est: Option<f64>,
    pub notes: Vec<RowNote>,
    pub memory_source: Source,
    pub server_mem_mb: Option<f64>,
    pub kv_cache_tokens: Option<u64>,
    pub kv_cache_bytes: Option<f64>,
    pub max_concurrency: Option<f64>,
    pub engine_bytes_per_token: Option<f64>,
    pub theory_bytes_per_token: Option<u64>,
    pub weights_gib: Option<f64>,
    pub ready_s: Option<f64>,
    pub status: Status,
    /// The capacity model's KV tokens, predicted before the start.
    pub predicted_kv_tokens: Option<u64>,
    /// `--gpu-memory-utilization` as given (None: vLLM's default).
    pub util: Option<f64>,
    /// The server's grid values (variable, value), to tell rows apart when they share a max-model-len.
    pub vars: Vec<(String, String)>,
    /// Why the start failed, in vLLM's (or servelab's) words.
    pub error: Option<String>,
}

fn mem_used(r: &ServerRecord) -> Option<f64> {
    let s = r.at_ready.as_ref()?;
    match r.memory_source {
        Source::Procfs => s.server_rss_mb,
        _ => s.device_used_mb,
    }
}

fn server_mem(r: &ServerRecord) -> Option<f64> {
    let s = r.at_ready.as_ref()?;
    match r.memory_source {
        Source::Procfs => s.server_rss_mb,
        _ => s.server_gpu_mb,
    }
}

/// Rows sorted by max-model-len (the smallest is the baseline); deltas compare with the previous row that
/// has a memory reading.
pub fn rows(records: &[ServerRecord]) -> Vec<KvRow> {
    let mut sorted: Vec<&ServerRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.max_model_len.unwrap_or(u64::MAX));
    let mut prev: Option<(u64, f64)> = None;
    sorted.iter().map(|r| row(r, &mut prev)).collect()
}

/// Memory above the run's idle baseline on a slot's GPUs at its start that says they were not idle.
const NOT_IDLE_MB: f64 = 256.0;

/// A fact about one row, with its figures; `report::kv_csv::note_text` words it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowNote {
    /// The first row with a memory reading: the deltas start from it.
    Baseline,
    /// A CPU engine: memory is the server process tree's RSS.
    CpuRss,
    /// The model's own reason why the theory's bytes per token do not apply.
    TheoryNotApplicable { why: String },
    /// Memory was not back at the idle baseline after the server stopped.
    NotReleased,
    /// The server ran in one of several slots at once: where.
    Slot { slot: usize, slots: usize, port: u16, gpus: Vec<(u32, Option<String>)>, cpus: Vec<usize> },
    /// The slot's GPUs held more than `NOT_IDLE_MB` above the idle baseline at its start.
    NotIdle { extra_mb: f64 },
    /// The start did not succeed, in its own words.
    Error { status: Status, error: String },
}

fn row(r: &ServerRecord, prev: &mut Option<(u64, f64)>) -> KvRow {
    let mem = mem_used(r);
    let mut notes = Vec::new();
    let (mut delta_mb, mut est) = (None, None);
    match (mem, r.max_model_len, *prev) {
        (Some(m), Some(len), Some((plen, pm))) => {
            delta_mb = Some(m - pm);
            if len != plen {
                est = Some((m - pm) * MIB / (len as f64 - plen as f64));
            }
        }
        (Some(_), Some(_), None) => notes.push(RowNote::Baseline),
        _ => {}
    }
    if let (Some(m), Some(len)) = (mem, r.max_model_len) {
        *prev = Some((len, m));
    }
    if r.memory_source == Source::Procfs && mem.is_some() {
        notes.push(RowNote::CpuRss);
    }
    if let Some(why) = r.model.as_ref().and_then(|m| m.theory_not_applicable.clone()) {
        notes.push(RowNote::TheoryNotApplicable { why });
    }
    if r.release.as_ref().is_some_and(|c| !c.released) {
        notes.push(RowNote::NotReleased);
    }
    if let Some(s) = r.slot.as_ref().filter(|s| s.slots > 1) {
        notes.push(RowNote::Slot {
            slot: s.slot,
            slots: s.slots,
            port: s.port,
            gpus: s.gpus.iter().map(|g| (g.index, g.name.clone())).collect(),
            cpus: s.cpus.clone(),
        });
    }
    // A slot's GPUs must be as idle at its start as before any slot started.
    if let (Some(idle), Some(at_start)) = (r.slot.as_ref().and_then(|s| s.idle_mb), r.baseline.device_used_mb)
        && at_start - idle > NOT_IDLE_MB
    {
        notes.push(RowNote::NotIdle { extra_mb: at_start - idle });
    }
    if let Some(e) = &r.error {
        notes.push(RowNote::Error { status: r.status, error: e.clone() });
    }
    let kv_bytes = r.kv_cache_bytes();
    let tokens = r.kv_cache_tokens();
    KvRow {
        max_model_len: r.max_model_len,
        mem_used_mb: mem,
        delta_mb,
        bytes_per_token_est: est,
        notes,
        memory_source: r.memory_source,
        server_mem_mb: server_mem(r),
        kv_cache_tokens: tokens,
        kv_cache_bytes: kv_bytes.map(|b| b.0),
        max_concurrency: r.max_concurrency(),
        engine_bytes_per_token: match (kv_bytes, tokens) {
            (Some((b, _)), Some(t)) if t > 0 => Some(b / t as f64),
            _ => None,
        },
        theory_bytes_per_token: r.model.as_ref().and_then(|m| m.theory_bytes_per_token),
        weights_gib: r.log.weights_gib,
        ready_s: r.ready_s,
        status: r.status,
        predicted_kv_tokens: r.predicted.as_ref().map(|c| c.kv_tokens),
        util: crate::record::capacity::util_of(&r.argv),
        vars: r.vars.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        error: r.error.clone(),
    }
}

use super::fit;
use serde::Serialize;

/// Room kept free in the KV pool when judging what fits.
pub const SAFETY_MARGIN: f64 = 0.10;
/// A max-model-len is "safe" when the pool holds this many full-length requests.
pub const HEADROOM_REQUESTS: u64 = 4;
/// vLLM's default `--max-num-seqs` (H200 default 1024, ../shared/reference/vllm.md; 256 on smaller devices).
pub const DEFAULT_MAX_NUM_SEQS: u64 = 256;
pub const DEFAULT_MAX_NUM_SEQS_LARGE_GPU: u64 = 1024;
/// Memory that moves less than this share of its mean across the lengths is flat, in percent.
pub const FLAT_SPREAD_PCT: f64 = 2.0;
/// A rising fit at least this good reads as linear.
pub const LINEAR_MIN_R2: f64 = 0.9;
/// A step further than this share of the largest memory from the fitted line is "off the line", in percent.
pub const OFF_LINE_PCT: f64 = 1.0;
/// The request length of the "concurrent 4K-token requests" line.
pub const FOUR_K: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitOut {
    pub slope_mb_per_token: f64,
    pub slope_bytes_per_token: f64,
    pub intercept_mb: f64,
    pub r2: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub from: u64,
    pub to: u64,
    pub delta_mb: f64,
    /// What the fitted line predicts for this step.
    pub expected_mb: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    pub max_model_len: u64,
    /// The values of the axis the rows vary when it is not max-model-len (`KvFindings::axis`), e.g. "0.05".
    pub setting: String,
    pub kv_tokens: u64,
    /// (request tokens, concurrent requests that fit).
    pub fits: Vec<(u64, u64)>,
}

/// What memory does along max-model-len. Each variant carries the figures that decide it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regime {
    /// Memory spread (max − min over the mean) below `max_spread_pct`. `kv_tokens`: the one KV capacity every
    /// length reported, when they all reported the same.
    Flat { spread_mb: f64, spread_pct: f64, max_spread_pct: f64, from: u64, to: u64, kv_tokens: Option<u64> },
    /// Not flat, and memory rises along a fitted line with R² of at least `min_r2`.
    Linear { mb_per_1k_tokens: f64, r2: f64, min_r2: f64, from: u64, to: u64 },
    /// Not flat and not linear.
    Irregular { spread_pct: f64, slope_mb_per_token: f64, r2: f64 },
    /// Fewer than two distinct successful lengths with a memory reading: no line to fit.
    Insufficient,
}

/// What the slope of memory says about bytes per KV token, given the regime.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlopeReading {
    /// Flat: memory does not move with the length, so the slope says nothing.
    Flat,
    /// Linear, and the KV capacity grew along the length too: memory slope over capacity slope.
    PerKvToken { bytes_per_length_token: f64, kv_tokens_per_length_token: f64, bytes_per_kv_token: f64 },
    /// Linear, without a rising capacity to divide by: the slope is per token of max-model-len.
    PerLengthToken,
    /// Irregular: no reliable slope.
    NoSlope,
}

/// Memory outside the engine-reported KV pool, and how it moved along the lengths (linear regime only).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outside {
    /// From the shortest to the longest length, MiB.
    pub moved_mb: f64,
    /// Least-squares slope against KV tokens, bytes per KV token.
    pub bytes_per_kv_token: f64,
}

/// How KV capacity and memory come in steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Granularity {
    pub block_size: Option<u64>,
    /// One block's bytes by the engine's (else the theory's) bytes per token, KiB.
    pub block_kib: Option<f64>,
    /// Every measured capacity is a whole number of blocks (false without a block size).
    pub whole_blocks: bool,
    /// The smallest memory step above 0.05 MiB between successive lengths.
    pub smallest_step_mb: Option<f64>,
    /// None without a fitted line; else the steps further than `off_line_pct` of memory from it.
    pub off_line: Option<Vec<Step>>,
    pub off_line_pct: f64,
}

/// The rows' setting the report reads along.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Axis {
    /// The rows vary max-model-len (or there is one row).
    MaxModelLen,
    /// The rows share one max-model-len and differ in these grid variables.
    Settings { names: Vec<String> },
    /// The rows share one max-model-len and one configuration: starts told apart by their order.
    Starts,
}

/// A row of the envelope with the requests of some length its pool holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Holding {
    pub max_model_len: u64,
    pub setting: String,
    pub requests: u64,
}

/// The pick for few users with long prompts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LatencyPick {
    /// The safe max-model-len (the largest), with the full-length requests its pool holds.
    Length(Holding),
    /// Every start has the safe max-model-len and the axis sets the pool: the settings whose pools hold the
    /// fewest and the most full-length requests.
    Setting { max_model_len: u64, fewest: Holding, most: Holding },
    /// No length is safe.
    NoneSafe,
}

/// The pick for many requests of the workload's length.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThroughputPick {
    /// No successful row admits a request of `request_len` tokens.
    NoneHolds { request_len: u64 },
    /// Along a setting axis: the setting whose pool holds the most requests of `request_len` tokens.
    Setting { best: Holding, request_len: u64 },
    /// Every length that admits the request holds the same number of them.
    SameAtEveryLength { requests: u64, request_len: u64 },
    /// The length whose pool holds the most requests of `request_len` tokens (the shortest among equals).
    Length { best: Holding, request_len: u64 },
}

/// Where `--max-num-seqs` came from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqsSource {
    Flag,
    LargeGpuDefault,
    Default,
}

/// What "memory" is in the table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// The server process tree's RSS (CPU engine).
    ServerRss,
    /// Device-wide GPU memory used at ready.
    DeviceUsed,
    /// No successful row.
    Unknown,
}

/// A start that did not succeed, with vLLM's own words when it gave any.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failed {
    pub max_model_len: u64,
    pub status: String,
    pub error: Option<String>,
}

/// The KV findings. Every claim is a typed value built only here, where its predicate holds;
/// `KvFindings::holds` checks them again from the rows. The words are `templates/cache_findings.md`'s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvFindings {
    pub lengths: Vec<u64>,
    pub failed: Vec<Failed>,
    pub memory: MemoryKind,
    pub mem_min_mb: Option<f64>,
    pub mem_max_mb: Option<f64>,
    pub memory_spread_pct: Option<f64>,
    pub fit: Option<FitOut>,
    pub regime: Regime,
    pub steps: Vec<Step>,
    pub block_size: Option<u64>,
    pub granularity: Granularity,
    pub bytes_per_token_slope: Option<f64>,
    pub bytes_per_token_engine: Option<f64>,
    pub bytes_per_token_theory: Option<u64>,
    pub slope_over_theory: Option<f64>,
    pub engine_over_theory: Option<f64>,
    /// None when the regime is insufficient.
    pub slope_reading: Option<SlopeReading>,
    /// (max-model-len, memory less the engine-reported KV pool, MiB) for each successful length.
    pub outside_pool: Vec<(u64, f64)>,
    /// Slope of `outside_pool` per KV token: what the rest of the server adds to (or takes from) the memory
    /// slope. Memory = pool + outside, so this is exactly the slope's departure from the pool's own growth.
    pub bytes_per_token_outside: Option<f64>,
    pub outside_over_theory: Option<f64>,
    pub outside: Option<Outside>,
    pub max_num_seqs: u64,
    pub max_num_seqs_source: SeqsSource,
    pub margin: f64,
    pub headroom_requests: u64,
    pub request_lengths: Vec<u64>,
    /// The setting the successful rows vary: the envelope, the picks and their words follow it.
    pub axis: Axis,
    pub envelope: Vec<Envelope>,
    /// The rows whose pool admits a 4K-token request, with how many fit.
    pub concurrent_4k: Vec<Holding>,
    pub safe_max_model_len: Option<u64>,
    pub latency_pick: LatencyPick,
    pub throughput_pick: ThroughputPick,
}

fn arg_u64(argv: &[String], flag: &str) -> Option<u64> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok())
}

/// Rounds a request up to whole KV blocks, as vLLM allocates them.
fn blocks(tokens: u64, block: u64) -> u64 {
    tokens.div_ceil(block.max(1)) * block.max(1)
}

/// The rows the findings read: started, with a length and a memory reading.
fn successful(all: &[KvRow]) -> Vec<&KvRow> {
    all.iter().filter(|r| r.status == Status::Ok && r.max_model_len.is_some() && r.mem_used_mb.is_some()).collect()
}

/// `request_len`: tokens per request (prompt + output) of the workload the throughput pick is for (4096
/// when the spec's `report_options.request_len` is unset).
pub fn findings(records: &[ServerRecord], request_len: Option<u64>) -> KvFindings {
    let block = records.iter().find_map(|r| r.cache_config_info.as_ref()?.get("block_size")?.parse::<u64>().ok());
    let argv = records.first().map(|r| r.argv.clone()).unwrap_or_default();
    let seqs = match arg_u64(&argv, "--max-num-seqs") {
        Some(n) => (n, SeqsSource::Flag),
        // The default depends on the device: large GPUs (H100/H200 class, 70 GiB and more) get 1024.
        None => match records.iter().find_map(|r| r.at_ready.as_ref()?.device_total_mb) {
            Some(total) if total >= 70.0 * 1024.0 => (DEFAULT_MAX_NUM_SEQS_LARGE_GPU, SeqsSource::LargeGpuDefault),
            _ => (DEFAULT_MAX_NUM_SEQS, SeqsSource::Default),
        },
    };
    findings_of(&rows(records), block, seqs, request_len)
}

/// The findings over rows, given the engine's KV block size and `--max-num-seqs` (what `findings` reads off
/// the records besides the rows).
pub fn findings_of(
    all: &[KvRow],
    block: Option<u64>,
    (max_num_seqs, seqs_source): (u64, SeqsSource),
    request_len: Option<u64>,
) -> KvFindings {
    let ok = successful(all);
    let xs: Vec<f64> = ok.iter().map(|r| r.max_model_len.unwrap_or(0) as f64).collect();
    let ys: Vec<f64> = ok.iter().map(|r| r.mem_used_mb.unwrap_or(0.0)).collect();
    let fit = fit::linear(&xs, &ys).map(|f| FitOut {
        slope_mb_per_token: f.slope,
        slope_bytes_per_token: f.slope * MIB,
        intercept_mb: f.intercept,
        r2: f.r2,
    });
    let (mem_min, mem_max) = (ys.iter().cloned().reduce(f64::min), ys.iter().cloned().reduce(f64::max));
    let spread = match (mem_min, mem_max) {
        (Some(a), Some(b)) if !ys.is_empty() => Some(100.0 * (b - a) / (ys.iter().sum::<f64>() / ys.len() as f64)),
        _ => None,
    };
    let kv_tokens: Vec<f64> = ok.iter().filter_map(|r| r.kv_cache_tokens.map(|t| t as f64)).collect();
    let tokens_fit = if kv_tokens.len() == xs.len() { fit::linear(&xs, &kv_tokens) } else { None };
    let theory = ok.iter().find_map(|r| r.theory_bytes_per_token);
    let engine = ok
        .iter()
        .filter_map(|r| r.engine_bytes_per_token)
        .reduce(|a, b| a + b)
        .map(|s| s / ok.iter().filter(|r| r.engine_bytes_per_token.is_some()).count() as f64);
    let memory = match ok.first().map(|r| r.memory_source) {
        Some(Source::Procfs) => MemoryKind::ServerRss,
        Some(_) => MemoryKind::DeviceUsed,
        None => MemoryKind::Unknown,
    };
    let lengths: Vec<u64> = ok.iter().filter_map(|r| r.max_model_len).collect();
    let steps = steps(&ok, fit.as_ref());
    let regime = regime(&ok, &lengths, spread, (mem_min, mem_max), fit.as_ref());
    let (slope_reading, bytes_per_token_slope) = slope_reading(&regime, fit.as_ref(), tokens_fit);
    let granularity = granularity(&ok, &steps, block, engine.or(theory.map(|t| t as f64)), mem_max, fit.is_some());
    let mut f = KvFindings {
        lengths,
        failed: all
            .iter()
            .filter(|r| r.status != Status::Ok)
            .map(|r| Failed {
                max_model_len: r.max_model_len.unwrap_or(0),
                status: r.status.as_str().to_owned(),
                error: r.error.clone(),
            })
            .collect(),
        memory,
        mem_min_mb: mem_min,
        mem_max_mb: mem_max,
        memory_spread_pct: spread,
        fit: fit.clone(),
        regime,
        steps,
        block_size: block,
        granularity,
        bytes_per_token_slope,
        bytes_per_token_engine: engine,
        bytes_per_token_theory: theory,
        slope_over_theory: bytes_per_token_slope.zip(theory).map(|(s, t)| s / t as f64),
        engine_over_theory: match (engine, theory) {
            (Some(e), Some(t)) if t > 0 => Some(e / t as f64),
            _ => None,
        },
        slope_reading,
        outside_pool: Vec::new(),
        bytes_per_token_outside: None,
        outside_over_theory: None,
        outside: None,
        max_num_seqs,
        max_num_seqs_source: seqs_source,
        margin: SAFETY_MARGIN,
        headroom_requests: HEADROOM_REQUESTS,
        request_lengths: Vec::new(),
        axis: Axis::MaxModelLen,
        envelope: Vec::new(),
        concurrent_4k: Vec::new(),
        safe_max_model_len: None,
        latency_pick: LatencyPick::NoneSafe,
        throughput_pick: ThroughputPick::NoneHolds { request_len: request_len.unwrap_or(DEFAULT_REQUEST_LEN) },
    };
    outside_pool(&mut f, &ok);
    envelope(&mut f, &ok, request_len.unwrap_or(DEFAULT_REQUEST_LEN));
    f
}

fn steps(ok: &[&KvRow], fit: Option<&FitOut>) -> Vec<Step> {
    let Some(fit) = fit else { return Vec::new() };
    ok.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let (la, lb) = (a.max_model_len.unwrap_or(0), b.max_model_len.unwrap_or(0));
            Step {
                from: la,
                to: lb,
                delta_mb: b.mem_used_mb.unwrap_or(0.0) - a.mem_used_mb.unwrap_or(0.0),
                expected_mb: fit.slope_mb_per_token * (lb as f64 - la as f64),
            }
        })
        .collect()
}

fn regime(
    ok: &[&KvRow],
    lengths: &[u64],
    spread: Option<f64>,
    (mem_min, mem_max): (Option<f64>, Option<f64>),
    fit: Option<&FitOut>,
) -> Regime {
    let (Some(spread), Some(fit)) = (spread, fit) else { return Regime::Insufficient };
    let tokens = ok.iter().filter_map(|r| r.kv_cache_tokens).collect::<Vec<_>>();
    let tokens_const = tokens.windows(2).all(|w| w[0] == w[1]);
    let (from, to) = (lengths.first().copied().unwrap_or(0), lengths.last().copied().unwrap_or(0));
    if spread < FLAT_SPREAD_PCT {
        Regime::Flat {
            spread_mb: mem_max.unwrap_or(0.0) - mem_min.unwrap_or(0.0),
            spread_pct: spread,
            max_spread_pct: FLAT_SPREAD_PCT,
            from,
            to,
            kv_tokens: tokens.first().copied().filter(|_| tokens_const),
        }
    } else if fit.slope_mb_per_token > 0.0 && fit.r2 >= LINEAR_MIN_R2 {
        Regime::Linear {
            mb_per_1k_tokens: fit.slope_mb_per_token * 1000.0,
            r2: fit.r2,
            min_r2: LINEAR_MIN_R2,
            from,
            to,
        }
    } else {
        Regime::Irregular { spread_pct: spread, slope_mb_per_token: fit.slope_mb_per_token, r2: fit.r2 }
    }
}

/// The slope read as bytes per KV token where the regime allows it.
fn slope_reading(
    regime: &Regime,
    fit: Option<&FitOut>,
    tokens_fit: Option<fit::Fit>,
) -> (Option<SlopeReading>, Option<f64>) {
    match (regime, fit) {
        (Regime::Flat { .. }, _) => (Some(SlopeReading::Flat), None),
        (Regime::Irregular { .. }, _) => (Some(SlopeReading::NoSlope), None),
        (Regime::Linear { .. }, Some(fit)) => match tokens_fit.filter(|t| t.slope > 0.0) {
            // Memory per token of length divided by KV tokens per token of length = bytes per KV token.
            Some(tf) => {
                let per_kv_token = fit.slope_bytes_per_token / tf.slope;
                let reading = SlopeReading::PerKvToken {
                    bytes_per_length_token: fit.slope_bytes_per_token,
                    kv_tokens_per_length_token: tf.slope,
                    bytes_per_kv_token: per_kv_token,
                };
                (Some(reading), Some(per_kv_token))
            }
            None => (Some(SlopeReading::PerLengthToken), Some(fit.slope_bytes_per_token)),
        },
        _ => (None, None),
    }
}

/// Splits memory into the engine-reported KV pool and everything else (CUDA context, weights, the allocator's
/// cache, graph pools, buffers). Only for a linear regime, where the slope is read as bytes per KV token: the
/// part outside the pool should not move with the length, and when it does this says by how much.
fn outside_pool(f: &mut KvFindings, ok: &[&KvRow]) {
    if !matches!(f.regime, Regime::Linear { .. }) {
        return;
    }
    let points: Vec<(u64, f64, f64)> = ok
        .iter()
        .filter_map(|r| Some((r.max_model_len?, r.mem_used_mb? - r.kv_cache_bytes? / MIB, r.kv_cache_tokens? as f64)))
        .collect();
    if points.len() != ok.len() || points.len() < 2 {
        return;
    }
    f.outside_pool = points.iter().map(|(l, o, _)| (*l, *o)).collect();
    let tokens: Vec<f64> = points.iter().map(|p| p.2).collect();
    let outside: Vec<f64> = points.iter().map(|p| p.1).collect();
    let Some(per_token) = fit::linear(&tokens, &outside).map(|fit| fit.slope * MIB) else { return };
    f.bytes_per_token_outside = Some(per_token);
    f.outside_over_theory = f.bytes_per_token_theory.map(|t| per_token / t as f64);
    f.outside = Some(Outside { moved_mb: outside[outside.len() - 1] - outside[0], bytes_per_kv_token: per_token });
}

fn granularity(
    ok: &[&KvRow],
    steps: &[Step],
    block: Option<u64>,
    bytes_per_token: Option<f64>,
    mem_max: Option<f64>,
    has_fit: bool,
) -> Granularity {
    let tolerance = OFF_LINE_PCT / 100.0 * mem_max.unwrap_or(1.0).max(1.0);
    Granularity {
        block_size: block,
        block_kib: block.zip(bytes_per_token).map(|(b, bpt)| b as f64 * bpt / 1024.0),
        whole_blocks: block.is_some_and(|b| ok.iter().filter_map(|r| r.kv_cache_tokens).all(|t| t % b.max(1) == 0)),
        smallest_step_mb: steps.iter().map(|s| s.delta_mb.abs()).filter(|d| *d > 0.05).reduce(f64::min),
        off_line: has_fit
            .then(|| steps.iter().filter(|s| (s.delta_mb - s.expected_mb).abs() > tolerance).cloned().collect()),
        off_line_pct: OFF_LINE_PCT,
    }
}

/// The workload request length of the throughput pick when the spec gives none.
pub const DEFAULT_REQUEST_LEN: u64 = 4096;

impl KvFindings {
    /// Full-length requests the envelope row's pool holds (KV pool less the margin, in whole blocks).
    fn full(&self, e: &Envelope) -> u64 {
        (e.kv_tokens as f64 * (1.0 - self.margin)) as u64 / blocks(e.max_model_len, self.block_size.unwrap_or(16))
    }

    fn holding(e: &Envelope, requests: u64) -> Holding {
        Holding { max_model_len: e.max_model_len, setting: e.setting.clone(), requests }
    }
}

fn envelope(f: &mut KvFindings, ok: &[&KvRow], request_len: u64) {
    let block = f.block_size.unwrap_or(16);
    let mut lengths: Vec<u64> = f.lengths.clone();
    lengths.push(FOUR_K);
    lengths.push(request_len);
    lengths.sort_unstable();
    lengths.dedup();
    f.request_lengths = lengths.clone();
    let (axis, settings) = axis_of(ok);
    f.axis = axis;
    for (r, setting) in ok.iter().zip(settings) {
        let (Some(m), Some(k)) = (r.max_model_len, r.kv_cache_tokens) else { continue };
        let usable = (k as f64 * (1.0 - f.margin)) as u64;
        let fits = lengths
            .iter()
            .filter(|l| **l <= m)
            .map(|l| (*l, (usable / blocks(*l, block)).min(f.max_num_seqs)))
            .collect();
        f.envelope.push(Envelope { max_model_len: m, setting, kv_tokens: k, fits });
    }
    f.concurrent_4k = f
        .envelope
        .iter()
        .filter_map(|e| e.fits.iter().find(|(l, _)| *l == FOUR_K).map(|(_, n)| KvFindings::holding(e, *n)))
        .collect();
    f.safe_max_model_len = f
        .envelope
        .iter()
        .filter(|e| {
            (e.kv_tokens as f64 * (1.0 - f.margin)) as u64 >= f.headroom_requests * blocks(e.max_model_len, block)
        })
        .map(|e| e.max_model_len)
        .max();
    f.latency_pick = match f.safe_max_model_len.and_then(|m| f.envelope.iter().find(|e| e.max_model_len == m)) {
        Some(e) if f.axis == Axis::MaxModelLen => LatencyPick::Length(KvFindings::holding(e, f.full(e))),
        Some(e) => {
            // The first row with the fewest and the first with the most full-length requests.
            let at = |pick: fn(u64, u64) -> bool| {
                f.envelope.iter().fold(None::<&Envelope>, |b, x| match b {
                    Some(b) if !pick(f.full(x), f.full(b)) => Some(b),
                    _ => Some(x),
                })
            };
            let (lo, hi) = (at(|x, b| x < b).unwrap_or(e), at(|x, b| x > b).unwrap_or(e));
            LatencyPick::Setting {
                max_model_len: e.max_model_len,
                fewest: KvFindings::holding(lo, f.full(lo)),
                most: KvFindings::holding(hi, f.full(hi)),
            }
        }
        None => LatencyPick::NoneSafe,
    };
    f.throughput_pick = throughput_pick(f, request_len);
}

/// The grid variables whose values differ among rows that share one max-model-len, and each row's values of
/// them; (MaxModelLen, empty settings) when the rows vary max-model-len (or there is one row).
fn axis_of(ok: &[&KvRow]) -> (Axis, Vec<String>) {
    let lengths: std::collections::BTreeSet<Option<u64>> = ok.iter().map(|r| r.max_model_len).collect();
    if ok.len() < 2 || lengths.len() > 1 {
        return (Axis::MaxModelLen, vec![String::new(); ok.len()]);
    }
    let value = |r: &KvRow, k: &str| r.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let names: Vec<String> = ok[0]
        .vars
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| ok.iter().any(|r| value(r, k) != value(ok[0], k)))
        .collect();
    if names.is_empty() {
        // Starts of one configuration: told apart by their order.
        return (Axis::Starts, (1..=ok.len()).map(|i| i.to_string()).collect());
    }
    let settings = ok.iter().map(|r| names.iter().map(|k| value(r, k)).collect::<Vec<_>>().join(", ")).collect();
    (Axis::Settings { names }, settings)
}

/// The row whose pool holds the most concurrent requests of the workload's length, read off the envelope;
/// when every length holds the same number the length does not change capacity, and the pick is the longest
/// prompt needed.
fn throughput_pick(f: &KvFindings, request_len: u64) -> ThroughputPick {
    let holds = |e: &Envelope| e.fits.iter().find(|(l, _)| *l == request_len).map(|(_, n)| *n);
    let best =
        f.envelope.iter().filter_map(|e| Some((e, holds(e)?))).max_by_key(|(e, n)| (*n, u64::MAX - e.max_model_len));
    let Some((e, n)) = best else {
        return ThroughputPick::NoneHolds { request_len };
    };
    if f.axis != Axis::MaxModelLen {
        return ThroughputPick::Setting { best: KvFindings::holding(e, n), request_len };
    }
    if f.envelope.iter().filter_map(holds).all(|m| m == n) {
        return ThroughputPick::SameAtEveryLength { requests: n, request_len };
    }
    ThroughputPick::Length { best: KvFindings::holding(e, n), request_len }
}

/// Two figures agree when they differ by rounding alone (the checks recompute them by other sums).
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Slope and R² by the textbook sums, a second path beside `fit::linear`; None for fewer than two distinct x.
fn plain_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
        sxy += (x - mx) * (y - my);
    }
    (sxx > 0.0).then(|| (sxy / sxx, if syy > 0.0 { sxy * sxy / (sxx * syy) } else { 1.0 }))
}

impl KvFindings {
    /// Checks every finding against the rows it was drawn from by a second, plainer path: the spread, the line,
    /// the pools' request counts and the safe length are recomputed from the rows, each regime's and each
    /// pick's predicate is tested on them, and each "most" or "fewest" is checked to be so. Returns what
    /// disagrees.
    pub fn holds(&self, all: &[KvRow], request_len: Option<u64>) -> Vec<String> {
        let mut bad = Vec::new();
        let ok = successful(all);
        let mem: Vec<f64> = ok.iter().filter_map(|r| r.mem_used_mb).collect();
        let lens: Vec<u64> = ok.iter().filter_map(|r| r.max_model_len).collect();
        let points: Vec<(f64, f64)> = lens.iter().zip(&mem).map(|(l, m)| (*l as f64, *m)).collect();
        let line = plain_line(&points);
        let (lo, hi) =
            (mem.iter().copied().fold(f64::INFINITY, f64::min), mem.iter().copied().fold(f64::MIN, f64::max));
        let spread = 100.0 * (hi - lo) / (mem.iter().sum::<f64>() / mem.len().max(1) as f64);
        let (from, to) = (lens.first().copied().unwrap_or(0), lens.last().copied().unwrap_or(0));
        let tokens: Vec<u64> = ok.iter().filter_map(|r| r.kv_cache_tokens).collect();
        match (&self.regime, line) {
            (Regime::Insufficient, None) => {}
            (Regime::Flat { spread_mb, spread_pct, max_spread_pct, from: a, to: b, kv_tokens }, Some(_)) => {
                let flat = spread < *max_spread_pct;
                if !flat || !same(*spread_pct, spread) || !same(*spread_mb, hi - lo) {
                    bad.push(format!(
                        "flat: memory spread {spread:.3}% ({:.1} MiB) against {max_spread_pct}%",
                        hi - lo
                    ));
                }
                let one = tokens.first().copied().filter(|t| tokens.iter().all(|x| x == t));
                if (*a, *b) != (from, to) || *kv_tokens != one {
                    bad.push(format!(
                        "flat: lengths {a}–{b} and capacity {kv_tokens:?}; the rows give {from}–{to}, {one:?}"
                    ));
                }
            }
            (Regime::Linear { mb_per_1k_tokens, r2, min_r2, from: a, to: b }, Some((slope, plain_r2))) => {
                if spread < FLAT_SPREAD_PCT || !(slope > 0.0 && plain_r2 >= *min_r2) {
                    bad.push(format!("linear: spread {spread:.3}%, slope {slope:.6} MiB/token, R² {plain_r2:.4}"));
                }
                if !same(*mb_per_1k_tokens, slope * 1000.0) || !same(*r2, plain_r2) || (*a, *b) != (from, to) {
                    bad.push(format!("linear: {mb_per_1k_tokens:.3} MiB per 1,000 tokens, R² {r2:.4}; the rows give {:.3}, {plain_r2:.4}", slope * 1000.0));
                }
            }
            (Regime::Irregular { spread_pct, slope_mb_per_token, r2 }, Some((slope, plain_r2))) => {
                if spread < FLAT_SPREAD_PCT || (slope > 0.0 && plain_r2 >= LINEAR_MIN_R2) {
                    bad.push(format!("irregular: spread {spread:.3}%, slope {slope:.6} MiB/token, R² {plain_r2:.4}"));
                }
                if !same(*spread_pct, spread) || !same(*slope_mb_per_token, slope) || !same(*r2, plain_r2) {
                    bad.push("irregular: its figures are not the rows'".to_owned());
                }
            }
            (r, l) => bad.push(format!("{r:?} where the rows' line is {l:?}")),
        }
        if let Some(SlopeReading::PerKvToken {
            bytes_per_length_token,
            kv_tokens_per_length_token,
            bytes_per_kv_token,
        }) = &self.slope_reading
        {
            let tpoints: Vec<(f64, f64)> = lens.iter().zip(&tokens).map(|(l, t)| (*l as f64, *t as f64)).collect();
            let per = plain_line(&tpoints).map(|(s, _)| s).filter(|_| tokens.len() == lens.len());
            let mem_slope = line.map(|(s, _)| s * MIB);
            if per.is_none_or(|p| !same(p, *kv_tokens_per_length_token))
                || mem_slope.is_none_or(|m| !same(m, *bytes_per_length_token))
                || !same(*bytes_per_kv_token, bytes_per_length_token / kv_tokens_per_length_token)
            {
                bad.push(format!("bytes per KV token {bytes_per_kv_token:.1} is not the memory slope over the capacity slope {mem_slope:?}/{per:?}"));
            }
        }
        bad.extend(self.granularity_holds(&ok, line.map(|(s, _)| s), hi));
        bad.extend(self.envelope_holds(&ok, request_len));
        bad
    }

    /// Whole blocks, the steps off the line and the memory outside the pool, from the rows.
    fn granularity_holds(&self, ok: &[&KvRow], slope: Option<f64>, mem_max: f64) -> Vec<String> {
        let mut bad = Vec::new();
        let g = &self.granularity;
        let whole =
            g.block_size.is_some_and(|b| ok.iter().all(|r| r.kv_cache_tokens.is_none_or(|t| t % b.max(1) == 0)));
        if g.whole_blocks != whole {
            bad.push(format!("whole blocks: {} claimed, the capacities say {whole}", g.whole_blocks));
        }
        let tolerance = g.off_line_pct / 100.0 * mem_max.max(1.0);
        let off: Option<Vec<(u64, u64)>> = slope.map(|slope| {
            ok.windows(2)
                .filter_map(|w| {
                    let (a, b) = (w[0].max_model_len?, w[1].max_model_len?);
                    let delta = w[1].mem_used_mb? - w[0].mem_used_mb?;
                    ((delta - slope * (b as f64 - a as f64)).abs() > tolerance).then_some((a, b))
                })
                .collect()
        });
        let claimed = g.off_line.as_ref().map(|s| s.iter().map(|s| (s.from, s.to)).collect::<Vec<_>>());
        if claimed != off {
            bad.push(format!("steps off the line {claimed:?}; the rows give {off:?}"));
        }
        if let Some(o) = &self.outside {
            let outside: Vec<f64> = ok.iter().filter_map(|r| Some(r.mem_used_mb? - r.kv_cache_bytes? / MIB)).collect();
            let moved = outside.last().zip(outside.first()).map(|(l, f)| l - f);
            if !matches!(self.regime, Regime::Linear { .. }) || moved.is_none_or(|m| !same(m, o.moved_mb)) {
                bad.push(format!("memory outside the pool moved {:.1} MiB; the rows give {moved:?}", o.moved_mb));
            }
        }
        bad
    }

    /// Request counts, the safe length and the picks, from each row's KV tokens.
    fn envelope_holds(&self, ok: &[&KvRow], request_len: Option<u64>) -> Vec<String> {
        let mut bad = Vec::new();
        let block = self.block_size.unwrap_or(16).max(1);
        let whole = |t: u64| t.div_ceil(block) * block;
        // (max-model-len, usable KV tokens) of each row with a capacity.
        let pools: Vec<(u64, u64)> = ok
            .iter()
            .filter_map(|r| Some((r.max_model_len?, (r.kv_cache_tokens? as f64 * (1.0 - self.margin)) as u64)))
            .collect();
        let fits = |(m, usable): (u64, u64), len: u64| (len <= m).then(|| (usable / whole(len)).min(self.max_num_seqs));
        let four_k: Vec<u64> = pools.iter().filter_map(|p| fits(*p, FOUR_K)).collect();
        if self.concurrent_4k.iter().map(|h| h.requests).collect::<Vec<_>>() != four_k {
            bad.push(format!("concurrent 4K requests {:?}; the pools hold {four_k:?}", self.concurrent_4k));
        }
        let safe = pools.iter().filter(|(m, u)| *u >= self.headroom_requests * whole(*m)).map(|p| p.0).max();
        if self.safe_max_model_len != safe {
            bad.push(format!("safe max-model-len {:?}; the pools give {safe:?}", self.safe_max_model_len));
        }
        let full: Vec<u64> = pools.iter().map(|(m, u)| u / whole(*m)).collect();
        let one_length = ok.len() > 1 && ok.iter().all(|r| r.max_model_len == ok[0].max_model_len);
        match &self.latency_pick {
            LatencyPick::NoneSafe if safe.is_none() => {}
            LatencyPick::Length(h) if !one_length => {
                let at = pools.iter().position(|p| Some(p.0) == safe);
                if Some(h.max_model_len) != safe || at.map(|i| full[i]) != Some(h.requests) {
                    bad.push(format!("latency pick {h:?}; the safe length is {safe:?}"));
                }
            }
            LatencyPick::Setting { max_model_len, fewest, most } if one_length => {
                let (min, max) = (full.iter().min().copied(), full.iter().max().copied());
                if Some(*max_model_len) != safe || Some(fewest.requests) != min || Some(most.requests) != max {
                    bad.push(format!("latency pick: {fewest:?} and {most:?}; the pools hold {min:?} to {max:?}"));
                }
            }
            p => bad.push(format!("latency pick {p:?} where the safe length is {safe:?}")),
        }
        let len = request_len.unwrap_or(DEFAULT_REQUEST_LEN);
        let held: Vec<(u64, u64)> = pools.iter().filter_map(|p| Some((p.0, fits(*p, len)?))).collect();
        let most = held.iter().map(|h| h.1).max();
        let claim = |h: &Holding| Some(h.requests) == most && held.contains(&(h.max_model_len, h.requests));
        match &self.throughput_pick {
            ThroughputPick::NoneHolds { request_len } if held.is_empty() && *request_len == len => {}
            ThroughputPick::Setting { best, request_len } if one_length && *request_len == len && claim(best) => {}
            ThroughputPick::SameAtEveryLength { requests, request_len }
                if !one_length && *request_len == len && held.iter().all(|h| h.1 == *requests) && !held.is_empty() => {}
            ThroughputPick::Length { best, request_len }
                if !one_length
                    && *request_len == len
                    && claim(best)
                    && held.iter().any(|h| h.1 != best.requests)
                    && held.iter().filter(|h| Some(h.1) == most).all(|h| h.0 >= best.max_model_len) => {}
            p => bad.push(format!("throughput pick {p:?}; the pools hold {held:?} requests of {len} tokens")),
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(len: u64, mem: f64, tokens: Option<u64>, util: Option<&str>) -> KvRow {
        KvRow {
            max_model_len: Some(len),
            mem_used_mb: Some(mem),
            delta_mb: None,
            bytes_per_token_est: None,
            notes: Vec::new(),
            memory_source: Source::Nvml,
            server_mem_mb: None,
            kv_cache_tokens: tokens,
            kv_cache_bytes: tokens.map(|t| t as f64 * 12288.0),
            max_concurrency: None,
            engine_bytes_per_token: tokens.map(|_| 12288.0),
            theory_bytes_per_token: Some(12288),
            weights_gib: None,
            ready_s: None,
            status: Status::Ok,
            predicted_kv_tokens: None,
            util: None,
            vars: util.map(|u| vec![("util".to_owned(), u.to_owned())]).unwrap_or_default(),
            error: None,
        }
    }

    /// The findings as the built-in templates word them.
    fn words(f: &KvFindings) -> String {
        const TEXT: &str = "{% import \"cache_findings.md\" as k %}{{ k.regime(f.regime) }}\n{{ k.granularity(f.granularity) }}\n\
            {% if f.slope_reading %}{{ k.slope_reading(f.slope_reading) }}\n{% endif %}{{ k.concurrent_4k(f) }}\n\
            {{ k.latency_pick(f) }}\n{{ k.throughput_pick(f) }}\n";
        crate::report::markdown::environment(None).render_str(TEXT, minijinja::context! { f }).unwrap()
    }

    #[test]
    fn the_throughput_pick_is_the_length_whose_pool_holds_the_most_requests_of_the_workload() {
        // A longer max-model-len bought a bigger pool, so it holds more 1K requests.
        let rows = [row(1024, 4000.0, Some(4096), None), row(4096, 4200.0, Some(16384), None)];
        let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(1024));
        assert!(f.holds(&rows, Some(1024)).is_empty(), "{:?}", f.holds(&rows, Some(1024)));
        let text = words(&f);
        assert!(text.contains("max-model-len 4096: of the lengths measured") && text.contains("(14,"), "{text}");
        // The same pool at every length: the length does not change capacity.
        let rows = [row(1024, 4000.0, Some(16384), None), row(4096, 4001.0, Some(16384), None)];
        let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(1024));
        assert!(words(&f).contains("max-model-len does not change capacity here (14"), "{}", words(&f));
        let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(8192));
        assert!(words(&f).contains("no successful max-model-len holds a request of 8192"), "{}", words(&f));
        assert!(f.holds(&rows, Some(8192)).is_empty());
    }

    #[test]
    fn a_tampered_kv_finding_does_not_hold() {
        let rows = [
            row(1024, 3680.0, Some(16384), None),
            row(4096, 4240.0, Some(65536), None),
            row(16384, 6480.0, Some(262144), None),
        ];
        let honest = findings_of(&rows, Some(16), (1024, SeqsSource::LargeGpuDefault), None);
        assert!(honest.holds(&rows, None).is_empty(), "{:?}", honest.holds(&rows, None));
        assert!(matches!(honest.regime, Regime::Linear { .. }), "{:?}", honest.regime);
        let mut f = honest.clone();
        f.regime = Regime::Flat {
            spread_mb: 1.0,
            spread_pct: 0.1,
            max_spread_pct: 2.0,
            from: 1024,
            to: 16384,
            kv_tokens: None,
        };
        assert!(!f.holds(&rows, None).is_empty(), "flat claimed for memory that rose");
        let mut f = honest.clone();
        f.safe_max_model_len = Some(4096);
        assert!(!f.holds(&rows, None).is_empty(), "a safe length that is not the largest");
        let mut f = honest.clone();
        if let ThroughputPick::Length { best, .. } = &mut f.throughput_pick {
            best.max_model_len = 4096;
            best.requests = 14;
        }
        assert!(!f.holds(&rows, None).is_empty(), "a pick that does not hold the most");
        let mut f = honest.clone();
        f.granularity.off_line = Some(vec![f.steps[0].clone()]);
        assert!(!f.holds(&rows, None).is_empty(), "a step on the line said to be off it");
        let mut f = honest.clone();
        if let Some(o) = &mut f.outside {
            o.moved_mb += 10.0;
        }
        assert!(!f.holds(&rows, None).is_empty(), "memory outside the pool that did not move so");
        let mut f = honest;
        f.concurrent_4k[0].requests += 1;
        assert!(!f.holds(&rows, None).is_empty(), "a count the pool does not hold");
    }

    const LENGTHS: [u64; 7] = [512, 1024, 2048, 4096, 8192, 16384, 32768];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the rows, every KV finding holds against them, and its words carry its figures: the regime
        /// named by the spread and the line, the safe length, the counts of 4K requests and the picks.
        #[test]
        fn every_kv_sentence_matches_the_rows(
            shape in 0u8..4,
            lengths in proptest::sample::subsequence(LENGTHS.to_vec(), 1..6),
            noise in proptest::collection::vec(0.0f64..1.0, 7),
            slope in 0.005f64..0.3,
            per_len in 1u64..24,
            pool in 1u64..40_000,
            failed in proptest::option::of(0usize..7),
            seqs in prop_oneof![Just(256u64), Just(1024u64)],
            request_len in prop_oneof![Just(None), Just(Some(1024u64)), Just(Some(3000u64))],
        ) {
            let mut rows: Vec<KvRow> = lengths
                .iter()
                .zip(&noise)
                .enumerate()
                .map(|(i, (&len, &n))| match shape {
                    // Flat: a fixed pool, memory within a few MiB.
                    0 => row(len, 40_000.0 + 20.0 * n, Some(pool * 16), None),
                    // Linear: pool and memory follow the length.
                    1 => row(len, 3_000.0 + slope * len as f64 + 5.0 * n, Some(per_len * len), None),
                    // Anything.
                    2 => row(len, 1_000.0 + 9_000.0 * n, Some(((n * 1e6) as u64 / 16) * 16), None),
                    // One length, the pool set by another setting.
                    _ => row(4096, 2_000.0 + 70_000.0 * n, Some(((n * 2e6) as u64 / 16) * 16), Some(&format!("0.{}", i + 1))),
                })
                .collect();
            if let Some(i) = failed.filter(|i| *i < rows.len()) {
                rows[i].status = Status::Failed;
                rows[i].error = Some("out of memory".to_owned());
            }
            let f = findings_of(&rows, Some(16), (seqs, SeqsSource::Default), request_len);
            let wrong = f.holds(&rows, request_len);
            prop_assert!(wrong.is_empty(), "{:?}\n{:?}", wrong, f);
            let text = words(&f);
            let ok: Vec<&KvRow> = rows.iter().filter(|r| r.status == Status::Ok).collect();
            let mem: Vec<f64> = ok.iter().filter_map(|r| r.mem_used_mb).collect();
            let distinct = ok.iter().map(|r| r.max_model_len).collect::<std::collections::BTreeSet<_>>().len();
            if distinct < 2 {
                prop_assert!(text.starts_with("**Not enough successful lengths"), "{}", text);
            } else {
                let (lo, hi) = (mem.iter().copied().fold(f64::MAX, f64::min), mem.iter().copied().fold(f64::MIN, f64::max));
                let spread = 100.0 * (hi - lo) / (mem.iter().sum::<f64>() / mem.len() as f64);
                if spread < 2.0 {
                    let expected = format!("**Flat: the KV pool is sized by memory utilisation (or a fixed KV size), not by max-model-len.** Memory varied by {:.1} MiB ({spread:.2}%)", hi - lo);
                    prop_assert!(text.starts_with(&expected), "{} lacks {}", text, expected);
                } else {
                    prop_assert!(!text.starts_with("**Flat"), "{}", text);
                }
            }
            // The largest length whose pool, less 10%, holds four full-length requests; its words.
            let usable = |r: &KvRow| (r.kv_cache_tokens.unwrap_or(0) as f64 * 0.9) as u64;
            let whole = |l: u64| l.div_ceil(16) * 16;
            let safe = ok.iter().filter(|r| usable(r) >= 4 * whole(r.max_model_len.unwrap())).filter_map(|r| r.max_model_len).max();
            prop_assert_eq!(f.safe_max_model_len, safe);
            match (safe, shape) {
                (None, _) => prop_assert!(text.contains("no length in this run is safe"), "{}", text),
                (Some(s), 3) if ok.len() > 1 => {
                    let expected = format!("every start has max-model-len {s}, the largest safe one here; util sets the pool");
                    prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
                }
                (Some(s), _) => {
                    let expected = format!("max-model-len {s} (the largest safe one)");
                    prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
                }
            }
            for r in ok.iter().filter(|r| r.max_model_len.unwrap() >= 4096) {
                let n = (usable(r) / 4096).min(seqs);
                let at = match shape == 3 && ok.len() > 1 {
                    true => format!("util {}", r.vars[0].1),
                    false => format!("max-model-len {}", r.max_model_len.unwrap()),
                };
                let expected = format!("{at}: {n}");
                prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
            }
            // The throughput pick names the most requests of the workload's length any pool holds.
            let len = request_len.unwrap_or(4096);
            let most = ok.iter().filter(|r| r.max_model_len.unwrap() >= len).map(|r| (usable(r) / whole(len)).min(seqs)).max();
            match most {
                None => prop_assert!(text.contains("no successful max-model-len holds a request"), "{}", text),
                Some(n) => {
                    let said = format!("({n},");
                    let same = format!("({n} concurrent requests of {len} tokens fit at every length");
                    prop_assert!(text.contains(&said) || text.contains(&same), "{} lacks {}", text, n);
                }
            }
        }
    }
}
