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

mod batching;
mod knee;
mod notes;
mod precision;
mod repeats;
#[cfg(test)]
mod tests;

pub use batching::{Batching, batching};
pub use knee::rules_of_thumb;
use knee::{finish_group, straddles_at};
use notes::flags;
pub use notes::notes_hold;
pub use precision::{needs_repeat, note_precision};
use repeats::{MIN_GPU_READINGS, add_host, cell_label, headline, mean_repeat, repeat_stats};

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
    /// The prompts repeat content by design (sessions resend their history, a trace's or a dataset's prompts
    /// may share prefixes), so prefix-cache hits say nothing about a cache left warm. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_by_design: bool,
    /// `load.client_threads` (1 when not set): cells that differ only by it are told apart by it (the label
    /// names it above 1; the CSV has a column, the table one when some cell of the sweep is above 1).
    #[serde(default = "one_thread")]
    pub client_threads: u32,
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

fn one_thread() -> u32 {
    1
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
            shared_by_design: client.sessions.is_some()
                || client.trace.is_some()
                || client.dataset.is_some()
                || client.prompts_file.is_some(),
            client_threads: client.client_threads.max(1),
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

/// [`analyze`] over everything a run recorded, under its spec's repeat policy and knee rules.
pub fn of_run(rec: &crate::record::Recorded, spec: &crate::spec::Spec) -> Vec<GroupSweep> {
    analyze(&rec.points, &rec.requests, &rec.samples, spec.effective_policy(), &spec.knee, rec.metrics_version)
}

/// Groups points into cells per server group, in plan order.
pub fn analyze(
    points: &[PointRecord],
    requests: &[RequestRecord],
    samples: &[SampleLine],
    policy: RepeatPolicy,
    rules: &KneeRules,
    metrics_version: u32,
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
        let stats = repeat_stats(p, &reqs, &samps, metrics_version);
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
