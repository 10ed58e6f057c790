//! `manifest.json`: the environment fingerprint of a run. Raw data: written when the run starts and again
//! when it ends; reports read it, never the live machine.

use super::plan::Plan;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub servelab_version: String,
    pub git_commit: String,
    pub run_id: String,
    pub spec_file: String,
    /// SHA-256 of the spec text as read (before `--set`), 12 hex digits.
    pub spec_hash: String,
    pub overrides: Vec<String>,
    pub plan: Plan,
    pub host: String,
    pub os: String,
    pub cpu: String,
    pub cpus: usize,
    pub mem_total_mb: Option<f64>,
    pub memory_source: String,
    /// GPU names, driver and CUDA versions (NVML), when a GPU answers.
    pub gpu: Option<String>,
    /// From the first server's `/version`.
    pub vllm_version: Option<String>,
    /// The first server's command line.
    pub engine_command: Vec<String>,
    /// SHA-256 of the model's config.json, 12 hex digits.
    pub model_config_hash: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// What the figures derived from this run's records mean. 1: `itl_p50_s` is the gap between SSE
    /// chunks, figures cover the whole phase. 2: per-token ITL from per-chunk usage, TPOT, steady-state
    /// windows. 3: a closed loop whose responses are not streamed opens its window once every slot has
    /// delivered (`stats::window::delivered`). A resumed run keeps its version, so what it decided on goes
    /// on meaning the same. `compare` refuses to mix versions.
    #[serde(default = "metrics_v1")]
    pub metrics_version: u32,
    /// A tune's configurations the capacity model ruled out on this GPU, and why (group → reason).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tune_pruned: std::collections::BTreeMap<String, String>,
    /// With `--gpus`: each lent GPU's used memory (MiB, NVML) read before any slot started in this
    /// invocation: the idle baseline each slot's server is held against.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gpu_idle_mb: std::collections::BTreeMap<u32, f64>,
    /// `run --shard I/N`: which share of the plan's server groups this folder holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardOf>,
    /// A folder written by `servelab merge`: each merged shard's environment, ordered by (shard index, run id),
    /// so the same shards merge to the same manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardEnv>,
}

/// A shard's place in its run: `index` of `count`, and the server groups it was given (plan order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOf {
    pub index: usize,
    pub count: usize,
    pub groups: Vec<String>,
}

/// One merged shard as its own manifest recorded it: where it ran, on what, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEnv {
    /// None for a run folder without `--shard` merged beside shards.
    pub index: Option<usize>,
    pub count: Option<usize>,
    pub run_id: String,
    pub host: String,
    pub gpu: Option<String>,
    pub cpus: usize,
    pub vllm_version: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// The server groups whose records were taken from this shard.
    pub groups: Vec<String>,
}

/// The version of figures this build records (see `Manifest::metrics_version`).
pub const METRICS_VERSION: u32 = 3;

fn metrics_v1() -> u32 {
    1
}
