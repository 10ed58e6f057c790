//! The context templates render from: every number and finding computed in Rust, documented here field by
//! field (see also docs in README "Reports"). Templates only format and arrange.

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
    pub notes: String,
}

#[derive(Serialize)]
pub struct Batching {
    pub concurrency: u32,
    pub sequential_s: f64,
    pub concurrent_s: f64,
    pub sequential_qps: f64,
    pub concurrent_qps: f64,
    pub sequential_tok_s: f64,
    pub concurrent_tok_s: f64,
    pub speedup: Option<f64>,
}

#[derive(Serialize)]
pub struct SweepContext {
    pub group: String,
    pub cells: Vec<CellOut>,
    pub knee: Knee,
    pub rules_of_thumb: Vec<String>,
    pub batching: Option<Batching>,
    pub gpu_sampled: bool,
    pub chart: String,
    pub csv: String,
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
            notes: r.notes.join("; "),
        })
        .collect()
}

fn cell(c: &Cell) -> CellOut {
    let h = c.head();
    CellOut {
        concurrency: c.concurrency,
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
        notes: c.notes.join("; "),
    }
}

pub fn sweep(g: &GroupSweep, rules: Vec<String>, gpu_sampled: bool, suffix: &str) -> SweepContext {
    let batching = match (
        g.cells.iter().find(|c| c.concurrency == 1),
        g.cells.iter().filter(|c| c.concurrency > 1).max_by_key(|c| c.concurrency),
    ) {
        (Some(s), Some(c)) => Some(Batching {
            concurrency: c.concurrency,
            sequential_s: s.head().wall_s,
            concurrent_s: c.head().wall_s,
            sequential_qps: s.head().qps,
            concurrent_qps: c.head().qps,
            sequential_tok_s: s.head().tok_s,
            concurrent_tok_s: c.head().tok_s,
            speedup: c.speedup,
        }),
        _ => None,
    };
    SweepContext {
        group: g.group.clone(),
        cells: g.cells.iter().map(cell).collect(),
        knee: g.knee.clone(),
        rules_of_thumb: rules,
        batching,
        gpu_sampled,
        chart: format!("concurrency_sweep{suffix}.svg"),
        csv: format!("concurrency_sweep{suffix}.csv"),
    }
}
