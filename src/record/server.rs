//! `servers/<id>/startup.json`: what a run records about each server start, and the only input the
//! KV-scaling CSV is computed from. The facts parsed from the log and the model's config live here too.

use super::memory::{MemSample, Source};
use super::values::Scalar;
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

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// The capacity model's prediction made before the start (GPU engines with a local model folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<super::capacity::Capacity>,
    /// Where it ran when the run had slots (`--parallel`, `--gpus`): slot, port, GPUs, cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotRecord>,
    /// What went wrong around the server without failing it, each also printed on stderr: the watchdog or
    /// the subreaper could not be set up (a servelab killed outright may leave the server running), an
    /// earlier attempt's files could not be set aside, the model's config.json could not be read. Absent
    /// when there is nothing to say, so records without warnings read and write as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A server's share of the host, as the run lent it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SlotRecord {
    pub slot: usize,
    pub port: u16,
    /// The GPUs it was given (`CUDA_VISIBLE_DEVICES`): index, UUID and model where NVML named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<crate::record::plan::SlotGpu>,
    /// Cores its server and its client threads were pinned to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<usize>,
    /// How many slots the run had: above 1, other servers ran beside this one.
    pub slots: usize,
    /// Its GPUs' used memory before any slot started (MiB, summed): the idle baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_mb: Option<f64>,
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
        super::capacity::flag(&self.argv, &["--tensor-parallel-size", "-tp"]).and_then(|v| v.parse().ok()).unwrap_or(1)
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// SHA-256 (12 hex digits) of config.json, so runs can tell models apart.
    pub config_hash: String,
    pub model_type: Option<String>,
    pub layers: Option<u64>,
    pub kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub max_position_embeddings: Option<u64>,
    #[serde(default)]
    pub vocab_size: Option<u64>,
    /// The KV cache element type used for the theory (the model's, `--dtype`, or `--kv-cache-dtype`).
    pub kv_dtype: String,
    pub kv_dtype_bytes: u64,
    pub theory_bytes_per_token: Option<u64>,
    /// Set when the formula does not describe this model's KV cache (sliding window, MLA, hybrid).
    pub theory_not_applicable: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogFacts {
    /// "Model loading took X GiB and Y seconds".
    pub weights_gib: Option<f64>,
    pub model_load_s: Option<f64>,
    /// "Available KV cache memory: X GiB" (profiled budget).
    pub available_kv_gib: Option<f64>,
    /// "... reserved X GiB memory for KV Cache as specified by kv_cache_memory_bytes".
    pub reserved_kv_gib: Option<f64>,
    /// CPU: "Explicitly set (X/Y) GiB for KV cache": X the KV space, Y the node's memory.
    pub cpu_kv_gib: Option<f64>,
    pub cpu_node_gib: Option<f64>,
    /// "GPU" or "CPU" from "<device> KV cache size: N tokens".
    pub kv_device: Option<String>,
    pub kv_cache_tokens: Option<u64>,
    /// "Maximum concurrency for N tokens per request: X x".
    pub max_concurrency_tokens: Option<u64>,
    pub max_concurrency: Option<f64>,
    pub graph_capture_s: Option<f64>,
    pub graph_capture_gib: Option<f64>,
    pub init_engine_s: Option<f64>,
    pub compile_s: Option<f64>,
    /// The KV GiB figure the log gives, whichever form it took.
    pub kv_gib: Option<f64>,
    /// vLLM 0.26's "Actual usage is ..." breakdown: the CUDA total, the requested memory (utilisation × total)
    /// and the memory outside the KV pool by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_total_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_torch_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cudagraph_gib: Option<f64>,
    /// The lines these facts came from, without their prefixes.
    pub lines: Vec<String>,
    /// The engine arguments as this server resolved them (`engine::logargs`); absent where the log says
    /// nothing of them (logs of older records, engines that are not vLLM), so such records read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<EngineArgs>,
}

/// vLLM's engine arguments as its startup log states them, keyed by vLLM's Python name (`max_num_seqs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineArgs {
    /// "non-default args: {...}": what the command line set away from vLLM's argument defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub non_default: BTreeMap<String, LogValue>,
    /// What the engine resolved where it says so: the scalar entries of "Initializing a V1 LLM engine (...)
    /// with config: k=v, ...", "Chunked prefill is enabled with max_num_batched_tokens=N" and, at DEBUG,
    /// "Defaulting max_num_seqs to N for ... usage context".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<String, LogValue>,
}

/// Where a value of [`EngineArgs`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgSource {
    /// The command line set it ("non-default args").
    NonDefault,
    /// The engine resolved it (its config line, or a line naming the value it defaulted to).
    Resolved,
}

impl EngineArgs {
    /// The value of flag `flag` (vLLM's command-line name, `max-num-seqs`, or its Python name) as this
    /// server ran with it, and where the log said so; None where the log does not say.
    pub fn value(&self, flag: &str) -> Option<(&LogValue, ArgSource)> {
        let key = flag.trim_start_matches('-').replace('-', "_");
        (self.non_default.get(&key).map(|v| (v, ArgSource::NonDefault)))
            .or_else(|| self.resolved.get(&key).map(|v| (v, ArgSource::Resolved)))
    }
}

/// A scalar of vLLM's log, typed as Python printed it: `True`, `8192`, `0.9`, `'auto'`, `None`, or a bare
/// word (`torch.bfloat16`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    None,
}

impl LogValue {
    /// Python's repr of a scalar; None for a container or an object (`[...]`, `{...}`, `X(...)`, `<...>`).
    pub fn of_python(text: &str) -> Option<LogValue> {
        let t = text.trim();
        let quoted = |q: char| t.len() >= 2 && t.starts_with(q) && t.ends_with(q);
        Some(match t {
            "True" => LogValue::Bool(true),
            "False" => LogValue::Bool(false),
            "None" => LogValue::None,
            _ if quoted('\'') || quoted('"') => LogValue::Text(t[1..t.len() - 1].to_owned()),
            _ if t.is_empty() || t.contains(['[', '{', '(', '<', ' ', '\'', '"']) => return None,
            _ => match (t.parse::<i64>(), t.parse::<f64>()) {
                (Ok(i), _) => LogValue::Int(i),
                (_, Ok(f)) if f.is_finite() => LogValue::Float(f),
                _ => LogValue::Text(t.to_owned()),
            },
        })
    }

    /// Whether a value as a spec writes it (`256`, `true`, `auto`) is this one: numbers by value, booleans
    /// in either case, text as written.
    pub fn same_as(&self, written: &str) -> bool {
        let w = written.trim();
        match self {
            LogValue::Bool(b) => w.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            LogValue::Int(i) => w.parse::<f64>().is_ok_and(|x| x == *i as f64),
            LogValue::Float(f) => w.parse::<f64>().is_ok_and(|x| x == *f),
            LogValue::Text(s) => s == w,
            LogValue::None => w.eq_ignore_ascii_case("none") || w == "null",
        }
    }
}

impl std::fmt::Display for LogValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogValue::Bool(b) => write!(f, "{b}"),
            LogValue::Int(i) => write!(f, "{i}"),
            LogValue::Float(x) => write!(f, "{x}"),
            LogValue::Text(s) => f.write_str(s),
            LogValue::None => f.write_str("None"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopReport {
    /// Seconds from SIGTERM until the whole tree was gone (or until SIGKILL).
    pub stop_s: f64,
    /// SIGKILL was needed after the grace period.
    pub escalated: bool,
    /// Processes still alive after SIGKILL (should be empty).
    pub leftover: Vec<u32>,
    pub exit: Option<String>,
}
