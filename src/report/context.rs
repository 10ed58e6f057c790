//! The context templates render from: every number and finding computed in Rust, documented here field by
//! field (see also docs/outputs.md, "Reports"). Templates only format and arrange.

use crate::record::manifest::Manifest;
use crate::stats::kv::{KvFindings, KvRow};
use crate::stats::sweep::{Cell, GroupSweep, Knee};
use serde::Serialize;

#[derive(Serialize)]
pub struct Context {
    /// Spec name, description, run id, times, versions, host, GPU (from manifest.json).
    pub run: RunInfo,
    /// Present when the run started servers: the KV-scaling rows and findings.
    pub kv: Option<KvContext>,
    /// One entry per server that took load: the sweep rows, knee, rules of thumb, batching summary.
    pub sweeps: Vec<SweepContext>,
    /// One entry per server that took open-loop load.
    pub rates: Vec<RateContext>,
    /// Trace replays (open-loop points of `load.trace`), one per point.
    pub traces: Vec<crate::stats::trace::Replay>,
    /// Multi-turn session points (`load.sessions`), one per point: TTFT and cache hits by turn, session time.
    pub sessions: Vec<crate::stats::session::SessionPoint>,
    /// What each cell sent: realised lengths, the client's count against the server's, prefix-cache hits.
    pub workload: Vec<crate::stats::workload::WorkloadRow>,
    /// TTFT against the shared-prefix length per server, and what it shows.
    pub prefix: crate::stats::prefix::PrefixReport,
    /// With `tune:`: the tune read from its records.
    pub tune: Option<crate::stats::tune::TuneReport>,
    /// Load points whose latest attempt failed: never in the figures, always listed (closed loop, open loop).
    pub failed_closed: Vec<FailedPoint>,
    pub failed_open: Vec<FailedPoint>,
}

/// A load point that failed, and why.
#[derive(Clone, Debug, Serialize)]
pub struct FailedPoint {
    pub group: String,
    pub point: String,
    /// Its grid values, `k=v` joined.
    pub vars: String,
    pub repeat: u32,
    pub attempt: u32,
    pub error: String,
}

/// The load points whose latest attempt failed, in the order they were committed: (closed loop, open loop).
pub fn failed_points(points: &[crate::record::PointRecord]) -> (Vec<FailedPoint>, Vec<FailedPoint>) {
    let latest = |p: &crate::record::PointRecord| !points.iter().any(|q| q.point == p.point && q.attempt > p.attempt);
    let failed = points.iter().filter(|p| p.status != crate::record::Status::Ok && latest(p));
    let (mut closed, mut open) = (Vec::new(), Vec::new());
    for p in failed {
        let f = FailedPoint {
            group: p.group.clone(),
            point: p.point.clone(),
            vars: crate::record::values::vars_text(&p.vars, " "),
            repeat: p.repeat,
            attempt: p.attempt,
            error: p.error.clone().unwrap_or_else(|| p.status.as_str().to_owned()).replace('|', "/"),
        };
        if p.client.open_loop.is_some() { open.push(f) } else { closed.push(f) }
    }
    (closed, open)
}

#[derive(Serialize)]
pub struct RateContext {
    pub sweep: crate::stats::rate::RateSweep,
    pub chart: String,
    /// With `search:`: the search replayed over the records, and the ladder it probed.
    pub search: Option<SearchContext>,
}

#[derive(Serialize)]
pub struct SearchContext {
    pub state: crate::stats::search::SearchState,
    pub plan: crate::record::plan::RateSearchPlan,
}

#[derive(Serialize)]
pub struct RunInfo {
    pub name: String,
    pub description: Option<String>,
    pub run_id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub servelab_version: String,
    pub git_commit: String,
    pub vllm_version: Option<String>,
    pub host: String,
    pub os: String,
    pub cpu: String,
    pub gpu: Option<String>,
    pub memory_source: String,
    pub engine_command: String,
    pub spec_hash: String,
    pub repeats: u32,
    pub repeat_policy: String,
    /// What each row's figures are, in words (policy, repeats, precision target, window).
    pub headline: String,
    pub metrics_version: u32,
}

#[derive(Serialize)]
pub struct KvRowOut {
    pub max_model_len: Option<u64>,
    pub mem_used_mb: Option<f64>,
    pub delta_mb: Option<f64>,
    pub bytes_per_token_est: Option<f64>,
    pub kv_cache_tokens: Option<u64>,
    pub kv_cache_bytes: Option<f64>,
    pub max_concurrency: Option<f64>,
    pub engine_bytes_per_token: Option<f64>,
    pub ready_s: Option<f64>,
    pub status: String,
    pub notes: String,
    pub predicted_kv_tokens: Option<u64>,
    /// Predicted over engine-reported KV tokens, minus 1.
    pub predicted_error: Option<f64>,
    pub util: Option<f64>,
}

#[derive(Serialize)]
pub struct KvContext {
    pub rows: Vec<KvRowOut>,
    pub findings: KvFindings,
    /// Relative path of the chart.
    pub chart: String,
}

#[derive(Serialize)]
pub struct CellOut {
    pub concurrency: u32,
    pub client_threads: u32,
    pub requests: usize,
    pub mean_e2e_s: Option<f64>,
    pub p95_e2e_s: Option<f64>,
    pub p99_e2e_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p95_s: Option<f64>,
    pub itl_p50_s: Option<f64>,
    pub qps: f64,
    pub tok_s: f64,
    pub wall_s: f64,
    pub tok_s_ci_low: Option<f64>,
    pub tok_s_ci_high: Option<f64>,
    pub speedup: Option<f64>,
    pub efficiency: Option<f64>,
    pub p95_inflation: Option<f64>,
    pub gpu_util_pct: Option<f64>,
    pub server_mean_e2e_s: Option<f64>,
    pub server_mean_ttft_s: Option<f64>,
    pub waiting_max: Option<f64>,
    pub kv_usage_max: Option<f64>,
    pub errors: usize,
    pub repeats: usize,
    /// Worded by `cell_note` in `findings.md`.
    pub notes: Vec<crate::stats::sweep::CellNote>,
    pub tpot_p50_s: Option<f64>,
    pub tpot_p95_s: Option<f64>,
    pub itl_per_token: bool,
    pub tok_s_rel_halfwidth: Option<f64>,
    pub window_s: Option<f64>,
    pub gpu_util_readings: usize,
    pub ttft_gap_s: Option<f64>,
    pub e2e_gap_s: Option<f64>,
    pub step_efficiency: Option<f64>,
    pub step_efficiency_ci_low: Option<f64>,
    pub step_efficiency_ci_high: Option<f64>,
    pub p95_ci_low: Option<f64>,
    pub p95_ci_high: Option<f64>,
    pub phase_tok_s: f64,
}

pub use crate::stats::sweep::Batching;

#[derive(Serialize)]
pub struct SweepContext {
    pub group: String,
    pub cells: Vec<CellOut>,
    /// Some cell runs its client on more than one thread: the table gets a client-threads column (cells that
    /// differ only by it would otherwise read as one concurrency twice).
    pub threads_vary: bool,
    pub knee: Knee,
    pub rules_of_thumb: crate::stats::knee::Thumbs,
    pub batching: Option<Batching>,
    /// Between-repeat CV of tokens/s: median and max over the cells (the run's noise floor).
    pub noise_floor: Option<(f64, f64)>,
    pub host: crate::stats::sweep::HostSummary,
    /// Cells that missed the precision target (with one, the run says so).
    pub imprecise: Vec<u32>,
    pub gpu_sampled: bool,
    pub chart: String,
    pub csv: String,
}

fn headline_text(m: &Manifest, repeats: u32, policy: &str) -> String {
    let rows = match (m.plan.precision, policy) {
        (Some(p), _) => format!(
            "Each row is the mean of its repeats: {}–{} per cell, more only where tokens/s was not yet known to \
             ±{:.0}% (95% interval)",
            p.min_repeats,
            p.max_repeats,
            p.rel_ci * 100.0
        ),
        (None, "mean") => format!("Each row is the mean of {repeats} repeat{}", if repeats == 1 { "" } else { "s" }),
        (None, _) => {
            format!("Each row is the {policy} of {repeats} repeat{} by tokens/s", if repeats == 1 { "" } else { "s" })
        }
    };
    let waves = m
        .plan
        .points()
        .any(|(_, p)| p.client.as_ref().is_some_and(|c| crate::stats::window::waves_apply(c, m.metrics_version)));
    let span = if waves {
        "from its first completion to its last dispatch in time; for responses not streamed in a closed loop \
         of c streams, whole rounds of c completions from its c-th"
    } else {
        "from its first completion to its last dispatch in time"
    };
    format!(
        "{rows}; intervals are Student-t 95% over the repeats. Throughput and latency come from each phase's \
         steady-state window ({span}), unless a row's notes say the phase was too short for one"
    )
}

pub fn run_info(m: &Manifest, description: Option<String>, name: &str, repeats: u32, policy: &str) -> RunInfo {
    RunInfo {
        name: name.to_owned(),
        description,
        run_id: m.run_id.clone(),
        started_at: m.started_at.clone(),
        ended_at: m.ended_at.clone(),
        servelab_version: m.servelab_version.clone(),
        git_commit: m.git_commit.clone(),
        vllm_version: m.vllm_version.clone(),
        host: m.host.clone(),
        os: m.os.clone(),
        cpu: m.cpu.clone(),
        gpu: m.gpu.clone(),
        memory_source: m.memory_source.clone(),
        engine_command: m.engine_command.join(" "),
        spec_hash: m.spec_hash.clone(),
        repeats,
        repeat_policy: policy.to_owned(),
        headline: headline_text(m, repeats, policy),
        metrics_version: m.metrics_version,
    }
}

pub fn kv_rows(rows: &[KvRow]) -> Vec<KvRowOut> {
    rows.iter()
        .map(|r| KvRowOut {
            max_model_len: r.max_model_len,
            mem_used_mb: r.mem_used_mb,
            delta_mb: r.delta_mb,
            bytes_per_token_est: r.bytes_per_token_est,
            kv_cache_tokens: r.kv_cache_tokens,
            kv_cache_bytes: r.kv_cache_bytes,
            max_concurrency: r.max_concurrency,
            engine_bytes_per_token: r.engine_bytes_per_token,
            ready_s: r.ready_s,
            status: r.status.as_str().to_owned(),
            notes: super::kv_csv::notes_text(&r.notes),
            predicted_kv_tokens: r.predicted_kv_tokens,
            predicted_error: match (r.predicted_kv_tokens, r.kv_cache_tokens) {
                (Some(p), Some(e)) if e > 0 => Some(p as f64 / e as f64 - 1.0),
                _ => None,
            },
            util: r.util,
        })
        .collect()
}

fn cell(c: &Cell) -> CellOut {
    let h = c.head();
    CellOut {
        concurrency: c.concurrency,
        client_threads: c.client_threads,
        requests: h.requests,
        mean_e2e_s: h.e2e.map(|s| s.mean),
        p95_e2e_s: h.e2e.map(|s| s.p95),
        p99_e2e_s: h.e2e.map(|s| s.p99),
        ttft_p50_s: h.ttft.map(|s| s.p50),
        ttft_p95_s: h.ttft.map(|s| s.p95),
        itl_p50_s: h.itl_p50_s,
        qps: h.qps,
        tok_s: h.tok_s,
        wall_s: h.wall_s,
        tok_s_ci_low: c.tok_s_ci.map(|x| x.0),
        tok_s_ci_high: c.tok_s_ci.map(|x| x.1),
        speedup: c.speedup,
        efficiency: c.efficiency,
        p95_inflation: c.p95_inflation,
        gpu_util_pct: h.gpu_util_pct,
        server_mean_e2e_s: h.server_mean_e2e_s,
        server_mean_ttft_s: h.server_mean_ttft_s,
        waiting_max: h.waiting_max,
        kv_usage_max: h.kv_usage_max,
        errors: h.errors.values().sum(),
        repeats: c.repeats.len(),
        notes: c.notes.clone(),
        tpot_p50_s: h.tpot.map(|s| s.p50),
        tpot_p95_s: h.tpot.map(|s| s.p95),
        itl_per_token: h.itl_per_token,
        tok_s_rel_halfwidth: c.tok_s_rel_halfwidth(),
        window_s: h.window_s,
        gpu_util_readings: h.gpu_util_readings,
        ttft_gap_s: h.ttft_gap_s,
        e2e_gap_s: h.e2e_gap_s,
        step_efficiency: c.step_efficiency,
        step_efficiency_ci_low: c.step_efficiency_ci.map(|x| x.0),
        step_efficiency_ci_high: c.step_efficiency_ci.map(|x| x.1),
        p95_ci_low: c.p95_ci.map(|x| x.0),
        p95_ci_high: c.p95_ci.map(|x| x.1),
        phase_tok_s: h.phase_tok_s,
    }
}

pub fn sweep(g: &GroupSweep, rules: crate::stats::knee::Thumbs, gpu_sampled: bool, suffix: &str) -> SweepContext {
    let batching = crate::stats::sweep::batching(g);
    SweepContext {
        group: g.group.clone(),
        cells: g.cells.iter().map(cell).collect(),
        threads_vary: g.cells.iter().any(|c| c.client_threads > 1),
        knee: g.knee.clone(),
        rules_of_thumb: rules,
        batching,
        noise_floor: g.noise_floor,
        host: g.host.clone(),
        imprecise: Vec::new(),
        gpu_sampled,
        chart: format!("concurrency_sweep{suffix}.svg"),
        csv: format!("concurrency_sweep{suffix}.csv"),
    }
}
