//! What a run records about each server start: written to `servers/<id>/startup.json`, and the only input
//! the KV-scaling CSV is computed from.

use crate::engine::logparse::LogFacts;
use crate::engine::process::StopReport;
use crate::probe::model::ModelFacts;
use crate::probe::{MemSample, Source};
use crate::spec::Scalar;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

/// Whether memory went back to the idle baseline after the stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseCheck {
    pub released: bool,
    pub waited_s: f64,
    /// The reading the check ended on.
    pub after: MemSample,
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The server group's content hash.
    pub id: String,
    /// Server-scoped variables of the group.
    pub vars: IndexMap<String, Scalar>,
    pub argv: Vec<String>,
    pub env: IndexMap<String, String>,
    pub base_url: String,
    pub status: Status,
    /// vLLM's own failure line, or servelab's reason.
    pub error: Option<String>,
    pub log_tail: Option<String>,
    pub started_at: String,
    pub ready_s: Option<f64>,
    /// The max-model-len asked for (the rendered arg), else what /v1/models reports.
    pub max_model_len: Option<u64>,
    pub served_max_model_len: Option<u64>,
    /// The model name the server lists in /v1/models (what requests must use).
    #[serde(default)]
    pub served_model: Option<String>,
    pub memory_source: Source,
    /// The reading just before the start (the idle baseline).
    pub baseline: MemSample,
    /// The reading once ready.
    pub at_ready: Option<MemSample>,
    /// Readings during startup, about one a second.
    pub timeline: Vec<MemSample>,
    pub log: LogFacts,
    pub cache_config_info: Option<BTreeMap<String, String>>,
    pub version: Option<String>,
    pub model: Option<ModelFacts>,
    pub stop: Option<StopReport>,
    pub release: Option<ReleaseCheck>,
    /// Every process seen in the server's tree.
    pub pids: Vec<u32>,
}

impl ServerRecord {
    /// KV tokens: vLLM's metrics label when present, else the log line.
    pub fn kv_cache_tokens(&self) -> Option<u64> {
        self.info_u64("kv_cache_size_tokens").or(self.log.kv_cache_tokens)
    }

    /// KV bytes over all GPUs: exact from `kv_cache_memory_bytes` when the budget was given in bytes, else the
    /// logged GiB. Both are per GPU: under tensor parallelism each rank holds its share of the KV heads for
    /// every token, so the pool is the per-rank figure × the tensor-parallel size (KV tokens are not split).
    pub fn kv_cache_bytes(&self) -> Option<(f64, &'static str)> {
        let ranks = self.tensor_parallel_size() as f64;
        if let Some(b) = self.info_u64("kv_cache_memory_bytes") {
            return Some((b as f64 * ranks, "exact"));
        }
        self.log.kv_gib.map(|g| (g * 1024.0 * 1024.0 * 1024.0 * ranks, "log GiB"))
    }

    /// `--tensor-parallel-size` / `-tp` from the command line (1 when absent).
    pub fn tensor_parallel_size(&self) -> u64 {
        let argv = &self.argv;
        argv.iter()
            .enumerate()
            .find_map(|(i, a)| match a.as_str() {
                "--tensor-parallel-size" | "-tp" => argv.get(i + 1)?.parse().ok(),
                _ => a.strip_prefix("--tensor-parallel-size=")?.parse().ok(),
            })
            .unwrap_or(1)
    }

    pub fn max_concurrency(&self) -> Option<f64> {
        self.cache_config_info
            .as_ref()
            .and_then(|i| i.get("kv_cache_max_concurrency")?.parse().ok())
            .or(self.log.max_concurrency)
    }

    fn info_u64(&self, key: &str) -> Option<u64> {
        let v = self.cache_config_info.as_ref()?.get(key)?;
        v.parse::<u64>().ok().or_else(|| v.parse::<f64>().ok().filter(|f| *f >= 0.0).map(|f| f as u64))
    }
}

/// One measured point, as recorded in `points.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub point: String,
    /// Which attempt at the point (a failed point runs again on resume); records match on (point, attempt).
    #[serde(default)]
    pub attempt: u32,
    pub group: String,
    pub repeat: u32,
    pub vars: indexmap::IndexMap<String, crate::spec::Scalar>,
    pub client: crate::plan::ClientConfig,
    pub model: String,
    pub started_at: String,
    /// Measured phase: start to the end of its last request.
    pub wall_s: f64,
    pub warmup_requests: u32,
    /// /metrics when the server was quiet before and after the measured phase.
    pub before: Option<crate::probe::metrics::Snapshot>,
    pub after: Option<crate::probe::metrics::Snapshot>,
    /// A GPU probe was sampling utilisation.
    pub gpu_sampled: bool,
    pub status: String,
    pub error: Option<String>,
}

/// One line of `samples.jsonl`: a /metrics scrape or a GPU reading during a measured phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    pub point: String,
    #[serde(default)]
    pub attempt: u32,
    pub t_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::probe::metrics::Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_used_mb: Option<f64>,
}
