//! The experiment spec: what a user writes in YAML. Plain data, no behaviour beyond defaults.
//! Every struct denies unknown fields, so a typo is an error with a suggestion, never silently ignored.

use super::values::{ArgValue, BoolOrTemplate, Dur, IntOrTemplate, Scalar};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An experiment: a grid of configurations, the engine that serves them, the load that measures them.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Name of the experiment; runs go to `out/<name>/<run-id>/`. Letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// What the experiment is for, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The server under test and how to start it.
    pub engine: Engine,
    /// Named axes; the run matrix is their Cartesian product. Each axis is a list of numbers or strings.
    /// An axis used anywhere under `engine` is server-scoped (a new server per value); otherwise client-scoped.
    #[serde(default)]
    pub grid: IndexMap<String, Vec<Scalar>>,
    /// How many times each point is measured.
    #[serde(default = "default_repeats")]
    pub repeats: i64,
    /// Which repeat is the headline row: the best or the median by tokens/s. Intervals use all repeats.
    #[serde(default)]
    pub repeat_policy: RepeatPolicy,
    /// The load sent to each server configuration. Without it, a point only starts the server and measures
    /// what it commits (the KV-scaling experiment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// What to sample and how.
    #[serde(default)]
    pub measure: Measure,
    /// Reports to render after the run.
    #[serde(default)]
    pub report: Vec<ReportKind>,
    /// Overrides for the wall-time estimate of `servelab plan`.
    #[serde(default)]
    pub estimate: Estimate,
}

pub fn default_repeats() -> i64 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RepeatPolicy {
    /// The repeat with the highest tokens/s.
    Best,
    /// The repeat with the median tokens/s.
    #[default]
    Median,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// vLLM: `vllm serve {{ model }}` plus the args, started and stopped by servelab.
    #[default]
    Vllm,
    /// Any OpenAI-compatible server started from `command`, ready when `ready_path` answers 200.
    Command,
    /// An already running endpoint at `base_url`; servelab does not start or stop it.
    External,
}

/// The server under test. Every value may be a minijinja template over the grid variables and `model`,
/// `host`, `port`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    #[serde(default)]
    pub kind: EngineKind,
    /// Model path or name, passed to the server (`{{ model }}` in `command`). A relative path is relative to
    /// the directory servelab runs in. Override on the command line with `--set engine.model=PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The server's argv, never a shell string. Default for `vllm`: `["vllm", "serve", "{{ model }}"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Flags appended to `command`, in order. `k: v` → `--k v`; `true` → `--k`; `false` → `--no-k`;
    /// `null` → omitted; a list → repeated flag.
    #[serde(default)]
    pub args: IndexMap<String, ArgValue>,
    /// Environment added to the server's (which inherits servelab's).
    #[serde(default)]
    pub env: IndexMap<String, Scalar>,
    /// Address the server binds and servelab connects to.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port the server listens on.
    #[serde(default = "default_port")]
    pub port: IntOrTemplate,
    /// For `external`: the endpoint, e.g. `http://127.0.0.1:8000`. Others derive it from host and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Path that answers 200 when the server is ready.
    #[serde(default = "default_ready_path")]
    pub ready_path: String,
    /// How long a server may take to become ready.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: Dur,
    /// Grace period between SIGTERM and SIGKILL to the server's process group.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
}

pub fn default_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_port() -> IntOrTemplate {
    IntOrTemplate::Int(8000)
}
fn default_ready_path() -> String {
    "/health".to_owned()
}
fn default_ready_timeout() -> Dur {
    Dur::secs(600)
}
fn default_stop_timeout() -> Dur {
    Dur::secs(10)
}

/// The load of one point. Values may be templates over the grid variables.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Requests in flight at once (closed loop); 1 is sequential.
    #[serde(default = "int1")]
    pub concurrency: IntOrTemplate,
    /// Requests per repeat. Unless `exact_requests`, at least 4 × concurrency are sent, so that high levels
    /// really hold their concurrency.
    #[serde(default = "int32")]
    pub requests: IntOrTemplate,
    /// Send exactly `requests` at every level (experiment B's fixed 32).
    #[serde(default)]
    pub exact_requests: bool,
    /// Tokens generated per request.
    #[serde(default = "int64")]
    pub max_tokens: IntOrTemplate,
    /// Prompt length in tokens.
    #[serde(default = "int128")]
    pub prompt_tokens: IntOrTemplate,
    /// Ask the server to ignore end-of-sequence, so every request generates exactly `max_tokens`.
    #[serde(default = "yes")]
    pub ignore_eos: BoolOrTemplate,
    /// Stream tokens (needed for time to first token).
    #[serde(default = "yes")]
    pub stream: BoolOrTemplate,
    /// Requests sent before measuring, excluded from every figure.
    #[serde(default = "int2")]
    pub warmup: IntOrTemplate,
}

fn int1() -> IntOrTemplate {
    IntOrTemplate::Int(1)
}
fn int2() -> IntOrTemplate {
    IntOrTemplate::Int(2)
}
fn int32() -> IntOrTemplate {
    IntOrTemplate::Int(32)
}
fn int64() -> IntOrTemplate {
    IntOrTemplate::Int(64)
}
fn int128() -> IntOrTemplate {
    IntOrTemplate::Int(128)
}
fn yes() -> BoolOrTemplate {
    BoolOrTemplate::Bool(true)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemorySource {
    /// NVML when a GPU driver answers, else procfs.
    #[default]
    Auto,
    Nvml,
    NvidiaSmi,
    Procfs,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// Where memory figures come from.
    #[serde(default)]
    pub memory: MemorySource,
    /// Sampling interval of GPU utilisation and memory during load.
    #[serde(default = "default_util_interval")]
    pub gpu_util_interval: Dur,
    /// Scrape the server's /metrics during load.
    #[serde(default = "yes_bool")]
    pub server_metrics: bool,
}

fn default_util_interval() -> Dur {
    Dur::millis(100)
}
fn yes_bool() -> bool {
    true
}

impl Default for Measure {
    fn default() -> Self {
        Measure { memory: MemorySource::Auto, gpu_util_interval: default_util_interval(), server_metrics: true }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// Experiment A: memory and KV capacity against max-model-len.
    KvCacheScalingNotes,
    /// Experiment B: sequential against concurrent throughput.
    BatchingBenchmark,
    /// Experiment C: throughput and latency against concurrency, with the knee.
    ConcurrencySweep,
}

/// Overrides for the plan's wall-time estimate; unset fields use the engine kind's defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// Seconds from start to ready, per server start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Dur>,
    /// Seconds to stop a server and see its memory released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Dur>,
    /// Seconds per request at concurrency 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Dur>,
}
