//! KV-scaling rows and findings: pure functions of the recorded server starts.

mod findings;
mod holds;
#[cfg(test)]
mod tests;

use findings::successful;
pub use findings::{DEFAULT_REQUEST_LEN, findings, findings_of};

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
