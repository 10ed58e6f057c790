//! From raw records to the sweep: per repeat figures (over the steady-state window, `window.rs`), the
//! headline of each cell (a repeat by the spec's policy, or the mean of the repeats), intervals across
//! repeats (Student-t: requests within a phase are correlated, repeats are what differed), cumulative and
//! per-step efficiency from per-round ratios, validity flags, the operating point and the knee, each with
//! "borderline" where its interval straddles the threshold.

use super::knee::{GpuAt, Growth, Latency, Operating, StepEfficiency, Throughput, Thumbs, knee, paired_ratios};
pub use super::knee::{Knee, Side, side};
use super::summary::{Summary, ci95, summarize};
use super::window;
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, SampleLine, Status};
use crate::spec::{KneeRules, RepeatPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Figures of one repeat of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepeatStats {
    pub point: String,
    pub attempt: u32,
    pub repeat: u32,
    pub wall_s: f64,
    pub requests: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    pub completion_tokens: u64,
    pub qps: f64,
    pub tok_s: f64,
    pub e2e: Option<Summary>,
    pub ttft: Option<Summary>,
    /// Per token when the server sent per-chunk usage (`itl_per_token`), else per chunk gap.
    pub itl_p50_s: Option<f64>,
    #[serde(default)]
    pub itl_per_token: bool,
    /// (e2e − TTFT) / (tokens − 1) per request.
    #[serde(default)]
    pub tpot: Option<Summary>,
    pub mean_lag_s: f64,
    pub short_outputs: usize,
    pub server_generation_tokens: Option<f64>,
    pub server_mean_e2e_s: Option<f64>,
    pub server_mean_ttft_s: Option<f64>,
    pub prefix_hits: Option<f64>,
    /// Prompt tokens looked up in the prefix cache over the phase (`vllm:prefix_cache_queries_total`).
    #[serde(default)]
    pub prefix_queries: Option<f64>,
    pub waiting_max: Option<f64>,
    pub kv_usage_max: Option<f64>,
    pub preemptions: Option<f64>,
    pub gpu_util_pct: Option<f64>,
    /// GPU readings inside the window that `gpu_util_pct` averages (it is empty under 10).
    #[serde(default)]
    pub gpu_util_readings: usize,
    /// The steady-state window's length; None when the phase was too short for one and figures cover the
    /// whole phase.
    #[serde(default)]
    pub window_s: Option<f64>,
    /// Whole-phase throughput (ramp-up and drain included): the batching summary's figures.
    #[serde(default)]
    pub phase_tok_s: f64,
    #[serde(default)]
    pub phase_qps: f64,
    /// Client minus vLLM mean TTFT and e2e over the whole phase (the server's histogram deltas cover it).
    #[serde(default)]
    pub ttft_gap_s: Option<f64>,
    #[serde(default)]
    pub e2e_gap_s: Option<f64>,
    /// Requests sent after a timed phase's duration to hold the concurrency (excluded from every figure).
    #[serde(default)]
    pub tail_requests: usize,
    /// Other servers up while it was measured (slots: `run --parallel`/`--gpus`); 0 when it ran alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub beside: usize,
    /// With slots: the most CPU steal on the slot's cores during the phase, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal_pct_max: Option<f64>,
    /// With `--gpus`: a GPU of its slot shared a PCIe switch with a busy neighbour's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub switch_shared: bool,
}

/// CPU steal on a slot's cores at or above this share of their time flags a cell as contended.
const STEAL_CONTENDED_PCT: f64 = 5.0;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// All repeats of one client configuration against one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub group: String,
    pub concurrency: u32,
    pub max_tokens: u32,
    pub ignore_eos: bool,
    pub shared_prefix_tokens: u32,
    pub label: String,
    pub repeats: Vec<RepeatStats>,
    /// Index into `repeats` of the headline repeat.
    pub headline: usize,
    /// With the `mean` policy: the repeats' mean, which is then the headline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<RepeatStats>,
    pub tok_s_ci: Option<(f64, f64)>,
    pub e2e_mean_ci: Option<(f64, f64)>,
    /// S(c) = tok_s(c) / tok_s(1) of the same server; None without a concurrency-1 cell.
    pub speedup: Option<f64>,
    /// S(c) / c.
    pub efficiency: Option<f64>,
    /// p95(c) / p95(1).
    pub p95_inflation: Option<f64>,
    /// Against the previous level: (tok₂/tok₁)/(c₂/c₁) from ratios of the same round, with its interval.
    #[serde(default)]
    pub step_efficiency: Option<f64>,
    #[serde(default)]
    pub step_efficiency_ci: Option<(f64, f64)>,
    /// The 95% interval of the repeats' p95 e2e (what the latency budget is checked against).
    #[serde(default)]
    pub p95_ci: Option<(f64, f64)>,
    pub notes: Vec<CellNote>,
}

/// What a cell's figures call for beside the table: each a fact with its numbers, built only where its
/// predicate over the cell's figures holds (`flags`, `note_precision`, `finish_group`) and checked again by
/// `notes_hold`. The words are the templates' (`cell_note` in `templates/findings.md`), the CSV's included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CellNote {
    /// Failed requests of the headline, by error kind (in the kinds' order).
    Errors { total: usize, by_kind: Vec<(String, usize)> },
    /// With `ignore_eos`, successful outputs shorter than max_tokens.
    ShortOutputs { n: usize },
    /// The client's mean dispatch delay, as a share of the mean e2e, above 5%.
    ClientLag { pct: f64 },
    /// Measured while up to `servers` other servers were up (slots).
    Beside { servers: usize },
    /// The client lagged while other slots ran.
    ContendedLag,
    /// CPU steal on the slot's cores reached `STEAL_CONTENDED_PCT`.
    ContendedSteal { steal_pct: f64 },
    /// A GPU of the slot shared a PCIe switch with a busy neighbour's.
    ContendedSwitch,
    /// The client's tokens and vLLM's generation-token counter disagree in a repeat.
    TokensDiffer { repeat: u32, client: u64, server: f64 },
    /// Prefix-cache hits although the prompts shared no prefix.
    WarmPrefix { hits: f64 },
    /// Repeats with fewer completions than a steady-state window needs: their figures cover the whole phase.
    WindowTooShort { repeats: usize, of: usize, min_completions: usize },
    /// The server sent no per-chunk usage: ITL is per chunk.
    PerChunkItl,
    /// The run sampled no GPU.
    NoGpu,
    /// Fewer than `min` GPU readings in the window: no utilisation figure.
    FewGpuReadings { min: usize },
    /// Client e2e above vLLM's own by more than max(5 ms, 5%), with where the time went.
    Gap { gap_ms: f64, pct: f64, before_first_ms: f64, cause: GapCause },
    /// The tokens/s interval's half-width stayed above the precision target.
    PrecisionMissed { halfwidth_pct: f64, repeats: usize, target_pct: f64 },
    /// The last level that scaled (`Knee::throughput_knee`).
    ThroughputKnee,
    /// The first level where latency blew up (`Knee::latency_knee`).
    LatencyBlowsUp,
    /// The operating point (`Knee::operating_point`).
    OperatingPoint,
    /// A finding's interval straddles its threshold here (one of `Knee::borderline`).
    Borderline,
    /// Requests waited in some of the level's repeats and not in others (one of `Knee::borderline`).
    BorderlineQueued { repeats_waiting: usize, repeats: usize },
}

/// Where a client-server gap is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// The client's dispatch delay is more than half of it.
    ClientLag,
    /// More than half of it comes before the first token: vLLM's frontend, before the engine.
    Frontend,
    /// Between the engine and the client.
    Transport,
    /// The client's mean is below vLLM's: no time of the client's explains it.
    ServerLonger,
}

impl Cell {
    /// A cell with its repeats; the headline, intervals and findings are filled in by the group's analysis.
    fn new(group: &str, client: &crate::record::plan::ClientConfig, label: String, repeats: Vec<RepeatStats>) -> Cell {
        Cell {
            group: group.to_owned(),
            concurrency: client.concurrency,
            max_tokens: client.max_tokens,
            ignore_eos: client.ignore_eos,
            shared_prefix_tokens: client.shared_prefix_tokens,
            label,
            repeats,
            headline: 0,
            mean: None,
            tok_s_ci: None,
            e2e_mean_ci: None,
            speedup: None,
            efficiency: None,
            p95_inflation: None,
            step_efficiency: None,
            step_efficiency_ci: None,
            p95_ci: None,
            notes: Vec::new(),
        }
    }

    pub fn head(&self) -> &RepeatStats {
        self.mean.as_ref().unwrap_or(&self.repeats[self.headline])
    }

    /// Half-width of the tokens/s interval as a fraction of the mean (the precision achieved).
    pub fn tok_s_rel_halfwidth(&self) -> Option<f64> {
        let (lo, hi) = self.tok_s_ci?;
        let m = (lo + hi) / 2.0;
        (m > 0.0).then(|| (hi - lo) / 2.0 / m)
    }

    /// Between-repeat coefficient of variation of tokens/s.
    pub fn tok_s_cv(&self) -> Option<f64> {
        let tok: Vec<f64> = self.repeats.iter().map(|r| r.tok_s).collect();
        let m = super::summary::mean(&tok);
        (tok.len() >= 2 && m > 0.0).then(|| super::summary::stddev(&tok) / m)
    }

    /// The upper bound the latency budget is checked against: the interval's top, or the one value.
    pub fn p95_upper(&self) -> Option<f64> {
        self.p95_ci.map(|c| c.1).or(self.head().e2e.map(|e| e.p95))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSweep {
    pub group: String,
    pub cells: Vec<Cell>,
    pub knee: Knee,
    pub policy: RepeatPolicy,
    /// Between-repeat CV of tokens/s over the cells with ≥ 2 repeats: (median, max). The run's noise floor:
    /// differences smaller than this are not findings.
    #[serde(default)]
    pub noise_floor: Option<(f64, f64)>,
    /// What the host showed while the group ran.
    #[serde(default)]
    pub host: HostSummary,
}

/// The host during a group's phases (from samples.jsonl's slow host readings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub readings: usize,
    pub steal_pct_max: Option<f64>,
    pub load1_max: Option<f64>,
    pub sm_clock_mhz_min: Option<f64>,
    pub sm_clock_mhz_max: Option<f64>,
    /// NVML clock-event reasons seen, other than idle (0x1) and application clocks (0x2), ORed.
    pub throttle_reasons: u64,
}

/// NVML's utilisation covers a trailing sample period: readings this soon after the window opens still see
/// the ramp-up before it, so they are left out.
const NVML_TRAILING_S: f64 = 0.5;
/// Fewer GPU readings than this in the window give no utilisation figure.
const MIN_GPU_READINGS: usize = 10;

fn repeat_stats(p: &PointRecord, all: &[&RequestRecord], samples: &[&SampleLine]) -> RepeatStats {
    let tail_requests = all.iter().filter(|r| r.tail).count();
    let reqs: Vec<&RequestRecord> = all.iter().copied().filter(|r| !r.tail).collect();
    let ok_all: Vec<&RequestRecord> = reqs.iter().copied().filter(|r| r.ok()).collect();
    let mut errors = BTreeMap::new();
    for r in reqs.iter().filter(|r| !r.ok()) {
        *errors.entry(r.error.as_ref().map(|e| String::from(e.kind)).unwrap_or_default()).or_insert(0) += 1;
    }
    let tokens = |r: &RequestRecord| u64::from(r.completion_tokens.unwrap_or(r.chunks));
    let completion_tokens: u64 = ok_all.iter().map(|r| tokens(r)).sum();
    let wall = p.wall_s.max(1e-9);
    let (phase_tok_s, phase_qps) = (completion_tokens as f64 / wall, ok_all.len() as f64 / wall);
    let steady = window::window(&reqs).filter(|w| w.completions >= window::min_completions(p.client.concurrency));
    // Throughput over the window; latency over the requests started inside it (else the whole phase).
    let (tok_s, qps, ok) = match &steady {
        Some(w) => (
            ok_all.iter().map(|r| window::tokens_in(r, w)).sum::<f64>() / w.len_s(),
            w.completions as f64 / w.len_s(),
            ok_all.iter().copied().filter(|r| w.contains(r.start_s)).collect::<Vec<_>>(),
        ),
        None => (phase_tok_s, phase_qps, ok_all.clone()),
    };
    let mut itl = Vec::new();
    ok.iter().for_each(|r| window::itl_samples(r, &mut itl));
    itl.sort_by(|a, b| a.total_cmp(b));
    let delta = match (&p.before, &p.after) {
        (Some(b), Some(a)) => Some(crate::probe::metrics::delta(b, a)),
        _ => None,
    };
    let metric_max = |f: fn(&crate::probe::metrics::Snapshot) -> Option<f64>| {
        samples.iter().filter_map(|s| s.metrics.as_ref().and_then(f)).reduce(f64::max)
    };
    let utils: Vec<f64> = match &steady {
        Some(w) => samples
            .iter()
            .filter(|s| {
                let t = s.t_s - p.samples_offset_s;
                t >= w.open_s + NVML_TRAILING_S && t <= w.close_s
            })
            .filter_map(|s| s.gpu_util_pct)
            .collect(),
        None => samples.iter().filter_map(|s| s.gpu_util_pct).collect(),
    };
    // The gap covers every request the server saw between the quiet snapshots: tails included.
    let seen: Vec<&RequestRecord> = all.iter().copied().filter(|r| r.ok()).collect();
    let client_e2e = super::summary::mean(&seen.iter().map(|r| r.e2e_s()).collect::<Vec<_>>());
    let client_ttft = super::summary::mean(&seen.iter().filter_map(|r| r.ttft_s()).collect::<Vec<_>>());
    let gap = |client: f64, server: Option<f64>| server.filter(|_| client.is_finite()).map(|s| client - s);
    RepeatStats {
        point: p.point.clone(),
        attempt: p.attempt,
        repeat: p.repeat,
        wall_s: p.wall_s,
        requests: reqs.len(),
        ok: ok_all.len(),
        errors,
        completion_tokens,
        qps,
        tok_s,
        e2e: summarize(ok.iter().map(|r| r.e2e_s())),
        ttft: summarize(ok.iter().filter_map(|r| r.ttft_s())),
        itl_p50_s: (!itl.is_empty()).then(|| super::summary::percentile_sorted(&itl, 50.0)),
        itl_per_token: !ok.is_empty() && ok.iter().all(|r| window::has_chunk_tokens(r)),
        tpot: summarize(ok.iter().filter_map(|r| window::tpot_s(r))),
        mean_lag_s: super::summary::mean(&ok.iter().map(|r| r.lag_s()).collect::<Vec<_>>()),
        short_outputs: if p.client.ignore_eos {
            ok_all.iter().filter(|r| tokens(r) < u64::from(p.client.max_tokens)).count()
        } else {
            0
        },
        server_generation_tokens: delta.as_ref().and_then(|d| d.generation_tokens),
        server_mean_e2e_s: delta.as_ref().and_then(|d| d.mean_e2e_s),
        server_mean_ttft_s: delta.as_ref().and_then(|d| d.mean_ttft_s),
        prefix_hits: delta.as_ref().and_then(|d| d.prefix_hits),
        prefix_queries: delta.as_ref().and_then(|d| d.prefix_queries),
        waiting_max: metric_max(|m| m.waiting),
        kv_usage_max: metric_max(|m| m.kv_usage),
        preemptions: delta.as_ref().and_then(|d| d.preemptions),
        gpu_util_pct: (utils.len() >= MIN_GPU_READINGS).then(|| super::summary::mean(&utils)),
        gpu_util_readings: utils.len(),
        window_s: steady.map(|w| w.len_s()),
        phase_tok_s,
        phase_qps,
        ttft_gap_s: gap(client_ttft, delta.as_ref().and_then(|d| d.mean_ttft_s)),
        e2e_gap_s: gap(client_e2e, delta.as_ref().and_then(|d| d.mean_e2e_s)),
        tail_requests,
        beside: p.beside.unwrap_or(0),
        steal_pct_max: p
            .beside
            .and_then(|_| samples.iter().filter_map(|s| s.host.as_ref()?.steal_pct).reduce(f64::max)),
        switch_shared: p.switch_shared.unwrap_or(false),
    }
}

/// The mean of a cell's repeats, as one repeat: the headline under the `mean` policy.
fn mean_repeat(reps: &[RepeatStats]) -> RepeatStats {
    let m = |f: &dyn Fn(&RepeatStats) -> Option<f64>| {
        let v: Vec<f64> = reps.iter().filter_map(f).filter(|x| x.is_finite()).collect();
        (!v.is_empty()).then(|| super::summary::mean(&v))
    };
    let summary = |f: &dyn Fn(&RepeatStats) -> Option<Summary>| {
        let v: Vec<Summary> = reps.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| {
            let a = |g: fn(&Summary) -> f64| super::summary::mean(&v.iter().map(g).collect::<Vec<_>>());
            Summary {
                n: v.iter().map(|s| s.n).sum(),
                mean: a(|s| s.mean),
                p50: a(|s| s.p50),
                p95: a(|s| s.p95),
                p99: a(|s| s.p99),
                stddev: a(|s| s.stddev),
                min: v.iter().map(|s| s.min).fold(f64::INFINITY, f64::min),
                max: v.iter().map(|s| s.max).fold(f64::NEG_INFINITY, f64::max),
            }
        })
    };
    let mut errors = BTreeMap::new();
    for r in reps {
        for (k, n) in &r.errors {
            *errors.entry(k.clone()).or_insert(0) += n;
        }
    }
    let first = &reps[0];
    RepeatStats {
        point: first.point.clone(),
        attempt: first.attempt,
        repeat: first.repeat,
        wall_s: m(&|r| Some(r.wall_s)).unwrap_or(0.0),
        requests: reps.iter().map(|r| r.requests).sum::<usize>() / reps.len(),
        ok: reps.iter().map(|r| r.ok).sum::<usize>() / reps.len(),
        errors,
        completion_tokens: reps.iter().map(|r| r.completion_tokens).sum::<u64>() / reps.len() as u64,
        qps: m(&|r| Some(r.qps)).unwrap_or(0.0),
        tok_s: m(&|r| Some(r.tok_s)).unwrap_or(0.0),
        e2e: summary(&|r| r.e2e),
        ttft: summary(&|r| r.ttft),
        itl_p50_s: m(&|r| r.itl_p50_s),
        itl_per_token: reps.iter().all(|r| r.itl_per_token),
        tpot: summary(&|r| r.tpot),
        mean_lag_s: m(&|r| Some(r.mean_lag_s)).unwrap_or(0.0),
        short_outputs: reps.iter().map(|r| r.short_outputs).sum(),
        server_generation_tokens: None,
        server_mean_e2e_s: m(&|r| r.server_mean_e2e_s),
        server_mean_ttft_s: m(&|r| r.server_mean_ttft_s),
        prefix_hits: m(&|r| r.prefix_hits),
        prefix_queries: m(&|r| r.prefix_queries),
        waiting_max: reps.iter().filter_map(|r| r.waiting_max).reduce(f64::max),
        kv_usage_max: reps.iter().filter_map(|r| r.kv_usage_max).reduce(f64::max),
        preemptions: m(&|r| r.preemptions),
        gpu_util_pct: m(&|r| r.gpu_util_pct),
        gpu_util_readings: reps.iter().map(|r| r.gpu_util_readings).sum(),
        window_s: m(&|r| r.window_s),
        phase_tok_s: m(&|r| Some(r.phase_tok_s)).unwrap_or(0.0),
        phase_qps: m(&|r| Some(r.phase_qps)).unwrap_or(0.0),
        ttft_gap_s: m(&|r| r.ttft_gap_s),
        e2e_gap_s: m(&|r| r.e2e_gap_s),
        tail_requests: reps.iter().map(|r| r.tail_requests).sum(),
        beside: reps.iter().map(|r| r.beside).max().unwrap_or(0),
        steal_pct_max: reps.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max),
        switch_shared: reps.iter().any(|r| r.switch_shared),
    }
}

/// The headline repeat: best or median by tokens/s (the lower median for an even count).
fn headline(repeats: &[RepeatStats], policy: RepeatPolicy) -> usize {
    let mut order: Vec<usize> = (0..repeats.len()).collect();
    order.sort_by(|a, b| repeats[*a].tok_s.total_cmp(&repeats[*b].tok_s));
    match policy {
        RepeatPolicy::Best => *order.last().unwrap_or(&0),
        RepeatPolicy::Median | RepeatPolicy::Mean => order[(order.len().saturating_sub(1)) / 2],
    }
}

fn flags(cell: &Cell, gpu_sampled: bool, all_requests: &[&RequestRecord]) -> Vec<CellNote> {
    let h = cell.head();
    let mut notes = Vec::new();
    if !h.errors.is_empty() {
        let by_kind = h.errors.iter().map(|(k, n)| (k.clone(), *n)).collect();
        notes.push(CellNote::Errors { total: h.errors.values().sum::<usize>(), by_kind });
    }
    if h.short_outputs > 0 {
        notes.push(CellNote::ShortOutputs { n: h.short_outputs });
    }
    let lagged = h.e2e.as_ref().is_some_and(|e2e| h.mean_lag_s > 0.05 * e2e.mean);
    if let Some(e2e) = h.e2e.as_ref().filter(|_| lagged) {
        notes.push(CellNote::ClientLag { pct: 100.0 * h.mean_lag_s / e2e.mean });
    }
    let beside = cell.repeats.iter().map(|r| r.beside).max().unwrap_or(0);
    if beside > 0 {
        notes.push(CellNote::Beside { servers: beside });
        if lagged {
            notes.push(CellNote::ContendedLag);
        }
        let steal = cell.repeats.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max);
        if let Some(steal_pct) = steal.filter(|s| *s >= STEAL_CONTENDED_PCT) {
            notes.push(CellNote::ContendedSteal { steal_pct });
        }
        if cell.repeats.iter().any(|r| r.switch_shared) {
            notes.push(CellNote::ContendedSwitch);
        }
    }
    for r in &cell.repeats {
        let client: u64 = all_requests
            .iter()
            .filter(|q| q.point == r.point && q.attempt == r.attempt && !q.warmup)
            .map(|q| u64::from(q.completion_tokens.unwrap_or(q.chunks)))
            .sum();
        if let Some(server) = r.server_generation_tokens
            && (server - client as f64).abs() > 0.5
        {
            notes.push(CellNote::TokensDiffer { repeat: r.repeat, client, server });
        }
    }
    if let Some(hits) = h.prefix_hits.filter(|hits| cell.shared_prefix_tokens == 0 && *hits > 0.0) {
        notes.push(CellNote::WarmPrefix { hits });
    }
    let whole = cell.repeats.iter().filter(|r| r.window_s.is_none()).count();
    if whole > 0 {
        notes.push(CellNote::WindowTooShort {
            repeats: whole,
            of: cell.repeats.len(),
            min_completions: window::min_completions(cell.concurrency),
        });
    }
    if h.itl_p50_s.is_some() && !h.itl_per_token {
        notes.push(CellNote::PerChunkItl);
    }
    if !gpu_sampled {
        notes.push(CellNote::NoGpu);
    } else if h.gpu_util_pct.is_none() {
        notes.push(CellNote::FewGpuReadings { min: MIN_GPU_READINGS });
    }
    if let Some(n) = gap_note(h) {
        notes.push(n);
    }
    notes
}

/// A client-server gap above max(5 ms, 5%) of vLLM's own mean, with what it is.
fn gap_note(h: &RepeatStats) -> Option<CellNote> {
    let (gap, server) = (h.e2e_gap_s?, h.server_mean_e2e_s?);
    if gap.abs() <= (0.005f64).max(0.05 * server) {
        return None;
    }
    let before_first = h.ttft_gap_s.unwrap_or(0.0);
    let cause = if gap < 0.0 {
        GapCause::ServerLonger
    } else if h.mean_lag_s > 0.5 * gap.abs() {
        GapCause::ClientLag
    } else if before_first > 0.5 * gap {
        GapCause::Frontend
    } else {
        GapCause::Transport
    };
    Some(CellNote::Gap { gap_ms: gap * 1e3, pct: 100.0 * gap / server, before_first_ms: before_first * 1e3, cause })
}

/// Checks each note of a cell as written against the cell's own figures and the group's knee, by the
/// predicates alone: every note's numbers and condition, and every knee level's note present. Returns what
/// disagrees. (Notes drawn from records the cell does not carry — the client's token count, whether a GPU
/// was sampled — are checked for what the cell does carry.)
pub fn notes_hold(c: &Cell, knee: &Knee, precision: Option<f64>) -> Vec<String> {
    let h = c.head();
    let mut bad = Vec::new();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let beside = c.repeats.iter().map(|r| r.beside).max().unwrap_or(0);
    let lag_pct = h.e2e.filter(|e| h.mean_lag_s > 0.05 * e.mean).map(|e| 100.0 * h.mean_lag_s / e.mean);
    for n in &c.notes {
        let ok = match n {
            CellNote::Errors { total, by_kind } => {
                *total > 0
                    && *total == h.errors.values().sum::<usize>()
                    && by_kind.iter().all(|(k, n)| h.errors.get(k) == Some(n))
                    && by_kind.len() == h.errors.len()
            }
            CellNote::ShortOutputs { n } => *n > 0 && *n == h.short_outputs,
            CellNote::ClientLag { pct } => lag_pct.is_some_and(|p| close(p, *pct)),
            CellNote::Beside { servers } => *servers > 0 && *servers == beside,
            CellNote::ContendedLag => beside > 0 && lag_pct.is_some(),
            CellNote::ContendedSteal { steal_pct } => {
                beside > 0
                    && *steal_pct >= STEAL_CONTENDED_PCT
                    && c.repeats.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max) == Some(*steal_pct)
            }
            CellNote::ContendedSwitch => beside > 0 && c.repeats.iter().any(|r| r.switch_shared),
            CellNote::TokensDiffer { repeat, client, server } => {
                (server - *client as f64).abs() > 0.5
                    && c.repeats.iter().any(|r| r.repeat == *repeat && r.server_generation_tokens == Some(*server))
            }
            CellNote::WarmPrefix { hits } => c.shared_prefix_tokens == 0 && *hits > 0.0 && h.prefix_hits == Some(*hits),
            CellNote::WindowTooShort { repeats, of, .. } => {
                *repeats > 0
                    && *of == c.repeats.len()
                    && *repeats == c.repeats.iter().filter(|r| r.window_s.is_none()).count()
            }
            CellNote::PerChunkItl => h.itl_p50_s.is_some() && !h.itl_per_token,
            CellNote::NoGpu => h.gpu_util_pct.is_none(),
            CellNote::FewGpuReadings { min } => h.gpu_util_pct.is_none() && h.gpu_util_readings < *min,
            CellNote::Gap { gap_ms, pct, before_first_ms, cause } => match (h.e2e_gap_s, h.server_mean_e2e_s) {
                (Some(gap), Some(server)) => {
                    let first = h.ttft_gap_s.unwrap_or(0.0);
                    let plain = if gap < 0.0 {
                        GapCause::ServerLonger
                    } else if h.mean_lag_s > gap.abs() / 2.0 {
                        GapCause::ClientLag
                    } else if first > gap / 2.0 {
                        GapCause::Frontend
                    } else {
                        GapCause::Transport
                    };
                    gap.abs() > (0.005f64).max(0.05 * server)
                        && close(*gap_ms, gap * 1e3)
                        && close(*pct, 100.0 * gap / server)
                        && close(*before_first_ms, first * 1e3)
                        && *cause == plain
                }
                _ => false,
            },
            CellNote::PrecisionMissed { halfwidth_pct, repeats, target_pct } => {
                precision.is_some_and(|t| close(t * 100.0, *target_pct))
                    && *halfwidth_pct > *target_pct
                    && *repeats == c.repeats.len()
                    && c.tok_s_rel_halfwidth().is_some_and(|x| close(x * 100.0, *halfwidth_pct))
            }
            CellNote::ThroughputKnee => knee.throughput_knee == Some(c.concurrency),
            CellNote::LatencyBlowsUp => knee.latency_knee == Some(c.concurrency),
            CellNote::OperatingPoint => knee.operating_point == Some(c.concurrency),
            CellNote::Borderline => knee.borderline.contains(&c.concurrency) && straddles_at(knee, c.concurrency),
            CellNote::BorderlineQueued { repeats_waiting, repeats } => {
                let waited = c.repeats.iter().filter(|r| r.waiting_max.is_some_and(|w| w > 0.0)).count();
                knee.borderline.contains(&c.concurrency)
                    && *repeats_waiting == waited
                    && *repeats == c.repeats.len()
                    && waited > 0
                    && waited < *repeats
            }
        };
        if !ok {
            bad.push(format!("concurrency {}: the note {n:?} does not hold against its figures", c.concurrency));
        }
    }
    let has = |f: fn(&CellNote) -> bool| c.notes.iter().any(f);
    let missing = [
        (!h.errors.is_empty() && !has(|n| matches!(n, CellNote::Errors { .. })), "errors"),
        (h.short_outputs > 0 && !has(|n| matches!(n, CellNote::ShortOutputs { .. })), "short outputs"),
        (lag_pct.is_some() && !has(|n| matches!(n, CellNote::ClientLag { .. })), "client lag"),
        (beside > 0 && !has(|n| matches!(n, CellNote::Beside { .. })), "other servers up"),
        (
            c.repeats.iter().any(|r| r.window_s.is_none()) && !has(|n| matches!(n, CellNote::WindowTooShort { .. })),
            "a window too short",
        ),
        (knee.throughput_knee == Some(c.concurrency) && !has(|n| matches!(n, CellNote::ThroughputKnee)), "the knee"),
        (knee.latency_knee == Some(c.concurrency) && !has(|n| matches!(n, CellNote::LatencyBlowsUp)), "the blow-up"),
        (
            knee.operating_point == Some(c.concurrency) && !has(|n| matches!(n, CellNote::OperatingPoint)),
            "the operating point",
        ),
        (
            knee.borderline.contains(&c.concurrency)
                && !has(|n| matches!(n, CellNote::Borderline | CellNote::BorderlineQueued { .. })),
            "borderline",
        ),
        (
            precision.is_some_and(|t| c.tok_s_rel_halfwidth().is_some_and(|x| x > t))
                && !has(|n| matches!(n, CellNote::PrecisionMissed { .. })),
            "the precision missed",
        ),
    ];
    for (_, what) in missing.iter().filter(|(m, _)| *m) {
        bad.push(format!("concurrency {}: {what} without its note", c.concurrency));
    }
    bad
}

/// Groups points into cells per server group, in plan order.
pub fn analyze(
    points: &[PointRecord],
    requests: &[RequestRecord],
    samples: &[SampleLine],
    policy: RepeatPolicy,
    rules: &KneeRules,
) -> Vec<GroupSweep> {
    let measured: Vec<&RequestRecord> = requests.iter().filter(|r| !r.warmup).collect();
    let requests_of = crate::record::ByPoint::new(measured.iter().copied(), |r| (r.point.as_str(), r.attempt));
    let samples_of = crate::record::ByPoint::new(samples, |s| (s.point.as_str(), s.attempt));
    let mut groups: Vec<GroupSweep> = Vec::new();
    // Open-loop points are the rate sweep's (stats::rate).
    for p in points.iter().filter(|p| p.status == Status::Ok && p.client.open_loop.is_none()) {
        let label = cell_label(p);
        let reqs: Vec<&RequestRecord> = requests_of.get(&p.point, p.attempt).to_vec();
        let samps: Vec<&SampleLine> = samples_of.get(&p.point, p.attempt).to_vec();
        let stats = repeat_stats(p, &reqs, &samps);
        let gi = match groups.iter().position(|g| g.group == p.group) {
            Some(i) => i,
            None => {
                groups.push(GroupSweep {
                    group: p.group.clone(),
                    cells: Vec::new(),
                    knee: Knee::not_a_curve(rules),
                    policy,
                    noise_floor: None,
                    host: HostSummary::default(),
                });
                groups.len() - 1
            }
        };
        add_host(&mut groups[gi].host, &samps);
        let cells = &mut groups[gi].cells;
        match cells.iter_mut().find(|c| c.label == label) {
            Some(c) => c.repeats.push(stats),
            None => cells.push(Cell::new(&p.group, &p.client, label, vec![stats])),
        }
    }
    let gpu_sampled = points.iter().any(|p| p.gpu_sampled);
    for g in &mut groups {
        finish_group(g, policy, rules, gpu_sampled, &measured);
    }
    groups
}

/// Whether a cell should get another repeat under `precision`: its tokens/s interval is wider than the target
/// (or it has no interval yet), or — with a latency budget — its p95 e2e interval straddles the budget, so the
/// operating point decided from it is still open. Repeats go where a decision is close, up to `max_repeats`.
pub fn needs_repeat(cell: &Cell, rel_ci: f64, p95_budget_s: Option<f64>) -> bool {
    if cell.tok_s_rel_halfwidth().is_none_or(|h| h > rel_ci) {
        return true;
    }
    let p95 = cell.head().e2e.map(|e| e.p95);
    matches!((p95, p95_budget_s), (Some(p95), Some(budget)) if side(p95, cell.p95_ci, budget) == Side::Straddles)
}

/// Notes the cells whose tokens/s interval is wider than the precision target (a note, not a failure);
/// returns their levels per group.
pub fn note_precision(groups: &mut [GroupSweep], rel_ci: f64) -> Vec<Vec<u32>> {
    let mut missed = Vec::new();
    for g in groups {
        let mut levels = Vec::new();
        for c in &mut g.cells {
            if let Some(h) = c.tok_s_rel_halfwidth().filter(|h| *h > rel_ci) {
                c.notes.push(CellNote::PrecisionMissed {
                    halfwidth_pct: h * 100.0,
                    repeats: c.repeats.len(),
                    target_pct: rel_ci * 100.0,
                });
                levels.push(c.concurrency);
            }
        }
        missed.push(levels);
    }
    missed
}

/// NVML clock-event reasons that say nothing about the measurement: GPU idle (0x1), application clocks
/// setting (0x2).
const BENIGN_THROTTLE: u64 = 0x1 | 0x2;

fn add_host(h: &mut HostSummary, samples: &[&SampleLine]) {
    for r in samples.iter().filter_map(|s| s.host.as_ref()) {
        h.readings += 1;
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        h.steal_pct_max = max(h.steal_pct_max, r.steal_pct);
        h.load1_max = max(h.load1_max, r.load1);
        h.sm_clock_mhz_min = min(h.sm_clock_mhz_min, r.sm_clock_mhz);
        h.sm_clock_mhz_max = max(h.sm_clock_mhz_max, r.sm_clock_mhz);
        h.throttle_reasons |= r.throttle_reasons.unwrap_or(0) & !BENIGN_THROTTLE;
    }
}

/// Cells are told apart by their client configuration without the repeat.
fn cell_label(p: &PointRecord) -> String {
    let c = &p.client;
    let size = match c.duration_s {
        Some(d) => format!("d={d}s"),
        None => format!("n={}", c.requests),
    };
    format!(
        "c={} {size} max_tokens={} prompt={} prefix={} stream={} eos={}",
        c.concurrency, c.max_tokens, c.prompt_tokens, c.shared_prefix_tokens, c.stream, c.ignore_eos
    )
}

fn finish_group(
    g: &mut GroupSweep,
    policy: RepeatPolicy,
    rules: &KneeRules,
    gpu_sampled: bool,
    measured: &[&RequestRecord],
) {
    for c in &mut g.cells {
        c.headline = headline(&c.repeats, policy);
        c.mean = (policy == RepeatPolicy::Mean).then(|| mean_repeat(&c.repeats));
        let tok: Vec<f64> = c.repeats.iter().map(|r| r.tok_s).collect();
        c.tok_s_ci = ci95(&tok);
        let e2e: Vec<f64> = c.repeats.iter().filter_map(|r| r.e2e.map(|s| s.mean)).collect();
        c.e2e_mean_ci = ci95(&e2e);
        let p95: Vec<f64> = c.repeats.iter().filter_map(|r| r.e2e.map(|s| s.p95)).collect();
        c.p95_ci = ci95(&p95);
    }
    g.cells.sort_by_key(|c| c.concurrency);
    let base = g.cells.iter().find(|c| c.concurrency == 1).map(|c| (c.head().tok_s, c.head().e2e.map(|s| s.p95)));
    for i in 0..g.cells.len() {
        if i > 0 && g.cells[i - 1].concurrency != g.cells[i].concurrency {
            let (prev, cur) = (&g.cells[i - 1], &g.cells[i]);
            let scale = f64::from(cur.concurrency) / f64::from(prev.concurrency.max(1));
            let ratios: Vec<f64> = paired_ratios(prev, cur, |r| Some(r.tok_s)).iter().map(|r| r / scale).collect();
            let step = (!ratios.is_empty()).then(|| super::summary::mean(&ratios));
            let ci = ci95(&ratios);
            g.cells[i].step_efficiency = step;
            g.cells[i].step_efficiency_ci = ci;
        }
        let c = &mut g.cells[i];
        if let Some((tok1, p95_1)) = base {
            c.speedup = (tok1 > 0.0).then(|| c.head().tok_s / tok1);
            c.efficiency = c.speedup.map(|s| s / f64::from(c.concurrency));
            c.p95_inflation = match (c.head().e2e, p95_1) {
                (Some(s), Some(p)) if p > 0.0 => Some(s.p95 / p),
                _ => None,
            };
        }
        c.notes = flags(c, gpu_sampled, measured);
    }
    let cvs: Vec<f64> = g.cells.iter().filter_map(Cell::tok_s_cv).collect();
    g.noise_floor = (!cvs.is_empty()).then(|| {
        let mut sorted = cvs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        (super::summary::percentile_sorted(&sorted, 50.0), sorted[sorted.len() - 1])
    });
    let mut levels: Vec<u32> = g.cells.iter().map(|c| c.concurrency).collect();
    levels.dedup();
    // Cells at one concurrency that differ in another load setting (a shared-prefix axis, say) are not one
    // curve against concurrency: no knee is claimed.
    g.knee = if levels.len() < g.cells.len() { Knee::not_a_curve(rules) } else { knee(&g.cells, rules) };
    for c in &mut g.cells {
        if Some(c.concurrency) == g.knee.throughput_knee {
            c.notes.push(CellNote::ThroughputKnee);
        }
        if Some(c.concurrency) == g.knee.latency_knee {
            c.notes.push(CellNote::LatencyBlowsUp);
        }
        if Some(c.concurrency) == g.knee.operating_point {
            c.notes.push(CellNote::OperatingPoint);
        }
        if g.knee.borderline.contains(&c.concurrency) {
            if straddles_at(&g.knee, c.concurrency) {
                c.notes.push(CellNote::Borderline);
            }
            if let Latency::BorderlineQueued(q) = &g.knee.latency
                && q.at == c.concurrency
            {
                c.notes.push(CellNote::BorderlineQueued { repeats_waiting: q.repeats_waiting, repeats: q.repeats });
            }
        }
    }
}

/// Whether a finding of the knee at `level` is borderline because its interval straddles the threshold
/// (rather than because only some repeats queued).
fn straddles_at(k: &Knee, level: u32) -> bool {
    let throughput = matches!(&k.throughput, Throughput::Borderline(s) if s.to == level);
    let latency = matches!(&k.latency, Latency::Borderline(i) if i.at == level);
    let operating = matches!(
        &k.operating,
        Some(Operating::Point { next: Some(m), .. } | Operating::NoPoint { first: m, .. })
            if m.borderline && m.level.concurrency == level
    );
    throughput || latency || operating
}

/// Rules of thumb, each a computed fact with its numbers (templates word them).
pub fn rules_of_thumb(g: &GroupSweep) -> Thumbs {
    let cells = &g.cells;
    let (Some(first), Some(last)) = (cells.first(), cells.last()) else { return Thumbs::default() };
    let growth = match (last.speedup, last.efficiency) {
        (Some(speedup), Some(efficiency)) => Some(Growth {
            from: first.concurrency,
            to: last.concurrency,
            speedup,
            efficiency,
            tok_s_from: first.head().tok_s,
            tok_s_to: last.head().tok_s,
        }),
        _ => None,
    };
    let steps = cells
        .windows(2)
        .filter_map(|p| {
            Some(StepEfficiency {
                from: p[0].concurrency,
                to: p[1].concurrency,
                efficiency: p[1].step_efficiency?,
                ci: p[1].step_efficiency_ci,
            })
        })
        .collect();
    let at = g.knee.operating_point.and_then(|k| cells.iter().find(|c| c.concurrency == k)).unwrap_or(last);
    let gpu = at.head().gpu_util_pct.map(|util_pct| GpuAt {
        concurrency: at.concurrency,
        util_pct,
        readings: at.head().gpu_util_readings,
    });
    Thumbs { growth, steps, noise_floor: g.noise_floor, gpu }
}

/// Sequential (concurrency 1) against the highest concurrency of a sweep, from each cell's headline repeat
/// over the whole phase (ramp-up and drain included: the batching summary compares the same requests end to
/// end): the batching summary of the CSV, the console and the reports.
#[derive(Clone, Debug, Serialize)]
pub struct Batching {
    pub concurrency: u32,
    pub sequential_s: f64,
    pub concurrent_s: f64,
    pub sequential_qps: f64,
    pub concurrent_qps: f64,
    pub sequential_tok_s: f64,
    pub concurrent_tok_s: f64,
    pub speedup: Option<f64>,
    /// Of the concurrent cell's headline repeat.
    pub requests: usize,
    pub max_tokens: u32,
    pub repeats: usize,
    pub policy: RepeatPolicy,
}

/// None without both a concurrency-1 cell and a higher one.
pub fn batching(group: &GroupSweep) -> Option<Batching> {
    let seq = group.cells.iter().find(|c| c.concurrency == 1)?;
    let conc = group.cells.iter().filter(|c| c.concurrency > 1).max_by_key(|c| c.concurrency)?;
    let (s, c) = (seq.head(), conc.head());
    Some(Batching {
        concurrency: conc.concurrency,
        sequential_s: s.wall_s,
        concurrent_s: c.wall_s,
        sequential_qps: s.phase_qps,
        concurrent_qps: c.phase_qps,
        sequential_tok_s: s.phase_tok_s,
        concurrent_tok_s: c.phase_tok_s,
        speedup: (s.phase_tok_s > 0.0).then(|| c.phase_tok_s / s.phase_tok_s),
        requests: c.requests,
        max_tokens: conc.max_tokens,
        repeats: conc.repeats.len(),
        policy: group.policy,
    })
}

/// Property tests: synthetic sweeps of every shape (linear, convex, plateau, dip, noisy), and every finding
/// and rule of thumb checked against the numbers it describes.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn repeat(concurrency: u32, round: u32, tok_s: f64, p95: f64) -> RepeatStats {
        let e2e = Summary { n: 100, mean: p95 * 0.8, p50: p95 * 0.8, p95, p99: p95, stddev: 0.0, min: 0.0, max: p95 };
        RepeatStats {
            point: format!("c{concurrency}r{round}"),
            attempt: 0,
            repeat: round,
            wall_s: 10.0,
            requests: 100,
            ok: 100,
            errors: BTreeMap::new(),
            completion_tokens: (tok_s * 10.0) as u64,
            qps: tok_s / 64.0,
            tok_s,
            e2e: Some(e2e),
            ttft: None,
            itl_p50_s: None,
            itl_per_token: true,
            tpot: None,
            mean_lag_s: 0.0,
            short_outputs: 0,
            server_generation_tokens: None,
            server_mean_e2e_s: None,
            server_mean_ttft_s: None,
            prefix_hits: None,
            prefix_queries: None,
            waiting_max: None,
            kv_usage_max: None,
            preemptions: None,
            gpu_util_pct: None,
            gpu_util_readings: 0,
            window_s: Some(9.5),
            phase_tok_s: tok_s,
            phase_qps: tok_s / 64.0,
            ttft_gap_s: None,
            e2e_gap_s: None,
            tail_requests: 0,
            beside: 0,
            steal_pct_max: None,
            switch_shared: false,
        }
    }

    fn client(concurrency: u32) -> crate::record::plan::ClientConfig {
        crate::record::plan::ClientConfig {
            concurrency,
            requests: 0,
            requests_asked: 0,
            exact_requests: false,
            max_tokens: 64,
            prompt_tokens: 128,
            ignore_eos: true,
            stream: true,
            warmup: 0,
            seed: 0,
            shared_prefix_tokens: 0,
            prompts_file: None,
            vocab_size: None,
            request_timeout_s: 300.0,
            max_error_rate: 0.1,
            duration_s: Some(10.0),
            open_loop: None,
            endpoint: Default::default(),
            ..Default::default()
        }
    }

    /// A group from per-level (tok/s, p95) curves with multiplicative noise per round.
    fn group(levels: &[u32], tok: &[f64], p95: &[f64], noise: &[Vec<f64>], rules: &KneeRules) -> GroupSweep {
        let cells = levels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let client = client(c);
                let repeats = noise
                    .iter()
                    .enumerate()
                    .map(|(r, n)| repeat(c, r as u32, tok[i] * n[i], p95[i] * (2.0 - n[i])))
                    .collect();
                Cell::new("g", &client, format!("c={c}"), repeats)
            })
            .collect();
        let mut g = GroupSweep {
            group: "g".into(),
            cells,
            knee: Knee::not_a_curve(rules),
            policy: RepeatPolicy::Mean,
            noise_floor: None,
            host: HostSummary::default(),
        };
        finish_group(&mut g, RepeatPolicy::Mean, rules, false, &[]);
        g
    }

    #[test]
    fn repeats_go_where_the_latency_decision_is_open() {
        let rules = KneeRules::default();
        // p95 0.24, 0.264, 0.216 s over three rounds: 95% interval about 0.18–0.30 s; tokens/s ±25%.
        let g = group(&[1], &[100.0], &[0.24], &[vec![1.0], vec![0.9], vec![1.1]], &rules);
        let cell = &g.cells[0];
        assert!(needs_repeat(cell, 0.05, None), "tokens/s is not within ±5%");
        assert!(!needs_repeat(cell, 0.5, None), "tokens/s is within ±50% and nothing else is asked");
        assert!(needs_repeat(cell, 0.5, Some(0.25)), "the p95 interval straddles a 250 ms budget");
        assert!(!needs_repeat(cell, 0.5, Some(0.5)), "clearly within a 500 ms budget");
        assert!(!needs_repeat(cell, 0.5, Some(0.1)), "clearly over a 100 ms budget: more repeats decide nothing");
    }

    fn shape(kind: u8, n: usize) -> (Vec<f64>, Vec<f64>) {
        let levels: Vec<f64> = (0..n).map(|i| 2f64.powi(i as i32)).collect();
        let tok: Vec<f64> = levels
            .iter()
            .enumerate()
            .map(|(i, c)| match kind {
                0 => 100.0 * c,                                      // linear
                1 => 100.0 * c.powf(1.3),                            // convex
                2 => 100.0 * c.min(8.0),                             // plateau
                3 => 100.0 * c * if i == n / 2 { 0.7 } else { 1.0 }, // dip
                _ => 100.0 * c.powf(0.8),                            // concave
            })
            .collect();
        let p95: Vec<f64> = levels.iter().map(|c| 0.1 * (1.0 + c / 16.0)).collect();
        (tok, p95)
    }

    fn paired(g: &GroupSweep, i: usize, f: fn(&RepeatStats) -> Option<f64>) -> (f64, Option<(f64, f64)>) {
        let r = paired_ratios(&g.cells[i - 1], &g.cells[i], f);
        (crate::stats::summary::mean(&r), ci95(&r))
    }

    /// The findings as the built-in templates word them.
    fn words(g: &GroupSweep) -> String {
        const TEXT: &str = "{% import \"findings.md\" as f %}{% if s.knee.operating %}{{ f.operating(s.knee.operating) }}\n{% endif %}\
            {{ f.throughput(s.knee.throughput) }}\n{{ f.latency(s.knee.latency) }}\n{{ f.thumbs(s) }}";
        let s = serde_json::json!({ "knee": g.knee, "rules_of_thumb": rules_of_thumb(g) });
        crate::report::markdown::environment(None).render_str(TEXT, minijinja::context! { s }).unwrap()
    }

    fn check(g: &GroupSweep, rules: &KneeRules) -> Result<(), TestCaseError> {
        use crate::stats::knee::{Operating, Throughput};
        let cells = &g.cells;
        let wrong = g.knee.holds(cells, rules);
        prop_assert!(wrong.is_empty(), "{:?}", wrong);
        let min_ratio = 1.0 + rules.marginal_gain_min;
        let sides: Vec<Side> =
            (1..cells.len()).map(|i| paired(g, i, |r| Some(r.tok_s))).map(|(m, ci)| side(m, ci, min_ratio)).collect();
        let first_not_above = sides.iter().position(|s| *s != Side::Above);
        let text = words(g);
        match (&g.knee.throughput, first_not_above) {
            (Throughput::Knee(s), Some(i)) => {
                prop_assert_eq!(sides[i], Side::Below);
                prop_assert_eq!(s.after, cells[i].concurrency);
                prop_assert_eq!(g.knee.throughput_knee, Some(s.after));
                let (m, _) = paired(g, i + 1, |r| Some(r.tok_s));
                let expected = format!(
                    "throughput stops scaling after concurrency {}: going to {} gains {:.0}% tokens/s",
                    s.after,
                    s.to,
                    (m - 1.0) * 100.0
                );
                prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
            }
            (Throughput::Borderline(s), Some(i)) => {
                prop_assert_eq!(sides[i], Side::Straddles);
                prop_assert!(text.contains("borderline: throughput may stop scaling"));
                prop_assert!(g.knee.borderline.contains(&s.to));
            }
            (Throughput::NoKnee { .. }, None) => prop_assert!(text.contains("no throughput knee")),
            (t, f) => prop_assert!(false, "{:?} where the first step not above is {:?}", t, f),
        }
        if let Some(budget) = rules.p95_budget.map(|b| b.0.as_secs_f64()) {
            let within: Vec<bool> = cells.iter().map(|c| c.p95_upper().is_some_and(|u| u <= budget)).collect();
            let expected = within.iter().position(|w| !w).map_or(cells.len(), |i| i);
            let op = g.knee.operating_point;
            prop_assert_eq!(op, expected.checked_sub(1).map(|i| cells[i].concurrency));
            if let Some(Operating::Point { at, .. }) = &g.knee.operating {
                let expected = format!("concurrency {} ", at.concurrency);
                prop_assert!(text.contains(&expected));
            }
        }
        // "From concurrency a to b, tokens/s grows s× (x → y): a cumulative efficiency S(c)/c of e."
        let (first, last) = (&cells[0], &cells[cells.len() - 1]);
        let s = last.head().tok_s / first.head().tok_s;
        let grows = format!("From concurrency {} to {}, tokens/s grows {s:.1}×", first.concurrency, last.concurrency);
        prop_assert!(text.contains(&grows), "{} lacks {}", text, grows);
        let e = s / f64::from(last.concurrency);
        let eff = format!("S(c)/c of {e:.2}.");
        prop_assert!(text.contains(&eff), "{} lacks {}", text, eff);
        for i in 1..cells.len() {
            let (m, _) = paired(g, i, |r| Some(r.tok_s));
            let step = m / (f64::from(cells[i].concurrency) / f64::from(cells[i - 1].concurrency));
            let expected = format!("{}→{}: {step:.2}", cells[i - 1].concurrency, cells[i].concurrency);
            prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn every_sentence_matches_the_numbers_it_describes(
            kind in 0u8..5,
            n in 3usize..8,
            rounds in 1usize..6,
            noise in proptest::collection::vec(proptest::collection::vec(0.85f64..1.15, 8), 6),
            budget_ms in 100u64..400,
        ) {
            let levels: Vec<u32> = (0..n).map(|i| 1 << i).collect();
            let (tok, p95) = shape(kind, n);
            let rules = KneeRules {
                p95_budget: Some(crate::spec::Dur(std::time::Duration::from_millis(budget_ms))),
                ..KneeRules::default()
            };
            let g = group(&levels, &tok, &p95, &noise[..rounds], &rules);
            check(&g, &rules)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Queueing decides from every repeat: all of a level's repeats waited → blow-up; some → borderline;
        /// and whatever the finding, its predicate holds against the cells.
        #[test]
        fn queueing_is_read_from_every_repeat(
            waited in proptest::collection::vec(proptest::collection::vec(proptest::option::of(0u32..40), 3), 5),
            rounds in 1usize..4,
        ) {
            use crate::stats::knee::Latency;
            let rules = KneeRules::default();
            let levels = [1, 2, 4, 8, 16];
            let flat = vec![vec![1.0; 8]; rounds];
            let mut g = group(&levels, &[100.0, 200.0, 400.0, 800.0, 1600.0], &[0.1; 5], &flat, &rules);
            for (c, w) in g.cells.iter_mut().zip(&waited) {
                for (r, x) in c.repeats.iter_mut().zip(w) {
                    r.waiting_max = x.map(f64::from);
                }
            }
            g.knee = super::knee(&g.cells, &rules);
            prop_assert!(g.knee.holds(&g.cells, &rules).is_empty(), "{:?}", g.knee.holds(&g.cells, &rules));
            let counts: Vec<usize> = g.cells.iter()
                .map(|c| c.repeats.iter().filter(|r| r.waiting_max.is_some_and(|w| w > 0.0)).count())
                .collect();
            match counts.iter().position(|n| *n > 0) {
                None => {
                    let none = matches!(g.knee.latency, Latency::NoBlowUp { .. });
                    prop_assert!(none, "{:?}", g.knee.latency);
                }
                Some(i) if counts[i] == rounds => {
                    let queued = matches!(&g.knee.latency, Latency::Queued(q) if q.at == levels[i]);
                    prop_assert!(queued, "{:?}", g.knee.latency);
                    prop_assert_eq!(g.knee.latency_knee, Some(levels[i]));
                }
                Some(i) => {
                    let some = matches!(&g.knee.latency, Latency::BorderlineQueued(q) if q.at == levels[i]);
                    prop_assert!(some, "{:?}", g.knee.latency);
                    prop_assert_eq!(g.knee.latency_knee, None);
                    prop_assert!(g.knee.borderline.contains(&levels[i]));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Over generated repeats (errors, short outputs, client lag, slots, short phases, client-server gaps,
        /// warm prefix caches, per-chunk ITL), every cell note holds against its cell's figures, every
        /// condition that calls for a note has it, and the CSV words the notes as the reports do.
        #[test]
        fn every_cell_note_holds_against_its_figures(
            per in proptest::collection::vec(
                (0usize..3, 0usize..4, 0f64..0.2, 0usize..3, proptest::option::of(0f64..12.0), proptest::bool::ANY,
                 proptest::bool::weighted(0.2), proptest::option::of(-0.05f64..0.2), 0f64..1.0,
                 proptest::option::of(0f64..50.0), proptest::bool::weighted(0.8)),
                12),
            rounds in 1usize..4,
            gpu in proptest::bool::ANY,
        ) {
            let rules = KneeRules::default();
            let levels = [1, 2, 4, 8];
            let (tok, p95) = shape(2, 4);
            let flat = vec![vec![1.0; 8]; rounds];
            let mut g = group(&levels, &tok, &p95, &flat, &rules);
            for (i, r) in g.cells.iter_mut().flat_map(|c| c.repeats.iter_mut()).enumerate() {
                let (errors, short, lag, beside, steal, switch, whole, gap, first, hits, per_token) = per[i % 12];
                if errors > 0 {
                    r.errors.insert(if i % 2 == 0 { "timeout".into() } else { "http_500".into() }, errors);
                }
                r.short_outputs = short;
                r.mean_lag_s = lag;
                r.beside = beside;
                r.steal_pct_max = steal.filter(|_| beside > 0);
                r.switch_shared = switch && beside > 0;
                r.window_s = (!whole).then_some(9.5);
                r.e2e_gap_s = gap;
                r.server_mean_e2e_s = gap.map(|_| 0.3);
                r.ttft_gap_s = gap.map(|g| g * first);
                r.prefix_hits = hits;
                r.itl_p50_s = Some(0.01);
                r.itl_per_token = per_token;
                r.gpu_util_pct = gpu.then_some(50.0).filter(|_| i % 3 != 0);
            }
            finish_group(&mut g, RepeatPolicy::Mean, &rules, gpu, &[]);
            let words = crate::report::sweep_csv::notes_text(&g.cells).unwrap();
            for (c, text) in g.cells.iter().zip(&words) {
                let wrong = notes_hold(c, &g.knee, None);
                prop_assert!(wrong.is_empty(), "{:?}", wrong);
                let h = c.head();
                let errors: usize = h.errors.values().sum();
                prop_assert_eq!(errors > 0, text.contains(&format!("errors: {errors} (")), "{}", text);
                let whole = c.repeats.iter().filter(|r| r.window_s.is_none()).count();
                let short = format!("{whole} of {} repeats too short", c.repeats.len());
                prop_assert_eq!(whole > 0, text.contains(&short), "{}", text);
                prop_assert_eq!(!gpu, text.contains("no GPU: gpu_util_pct not measured"), "{}", text);
                if let CellNote::Gap { gap_ms, .. } = c.notes.iter().find(|n| matches!(n, CellNote::Gap { .. })).unwrap_or(&CellNote::NoGpu) {
                    let said = if *gap_ms < 0.0 { "below vLLM's" } else { "exceeds vLLM's" };
                    prop_assert!(text.contains(said), "{}", text);
                }
            }
            // A note the figures do not call for does not hold.
            let mut c = g.cells[0].clone();
            c.notes.push(CellNote::ShortOutputs { n: c.head().short_outputs + 1 });
            prop_assert!(!notes_hold(&c, &g.knee, None).is_empty());
        }
    }

    #[test]
    fn a_tampered_finding_does_not_hold() {
        use crate::stats::knee::{Latency, Throughput};
        let rules = KneeRules::default();
        let quiet = vec![vec![1.0; 8], vec![1.01; 8], vec![0.99; 8]];
        let (tok, p95) = shape(2, 6);
        let mut g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &quiet, &rules);
        assert!(g.knee.holds(&g.cells, &rules).is_empty());
        let honest = g.knee.clone();
        if let Throughput::Knee(s) = &mut g.knee.throughput {
            s.after = 4;
        }
        assert!(!g.knee.holds(&g.cells, &rules).is_empty(), "a knee moved to another level");
        g.knee = honest.clone();
        g.knee.latency = Latency::NoBlowUp { from: 1, to: 32, max: 2.0 };
        g.cells[3].repeats[0].waiting_max = Some(5.0);
        assert!(!g.knee.holds(&g.cells, &rules).is_empty(), "queueing at 8 left unsaid");
    }

    #[test]
    fn a_clear_plateau_is_a_knee_and_a_straddling_step_is_borderline() {
        let rules = KneeRules::default();
        let quiet = vec![vec![1.0; 8], vec![1.01; 8], vec![0.99; 8]];
        let (tok, p95) = shape(2, 6);
        let g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &quiet, &rules);
        assert_eq!(g.knee.throughput_knee, Some(8));
        // One noisy round at 16 makes the 8→16 step's interval straddle the 10% minimum.
        let noisy = vec![vec![1.0; 8], vec![1.0, 1.0, 1.0, 1.0, 1.4, 1.0, 1.0, 1.0], vec![1.0; 8]];
        let g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &noisy, &rules);
        assert_eq!(g.knee.throughput_knee, None);
        assert!(matches!(g.knee.throughput, crate::stats::knee::Throughput::Borderline(_)), "{:?}", g.knee.throughput);
        check(&g, &rules).unwrap();
    }
}
