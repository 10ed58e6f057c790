//! The experiment spec: what a user writes in YAML. Plain data, no behaviour beyond defaults.
//! Every struct denies unknown fields, so a typo is an error with a suggestion, never silently ignored.

use super::values::{ArgValue, BoolOrTemplate, Dur, IntOrTemplate, Length, NumOrTemplate, Scalar};
pub use crate::record::plan::{Arrival, Endpoint};
pub use crate::record::values::EngineKind;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod search;
pub use search::{
    DEFAULT_EQUIVALENCE_MARGIN, RateSearch, Search, Tune, TuneAxis, TuneBudget, TuneObjective, TuneRange,
};

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
    /// How many times each point is measured (default 1). Excludes `precision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<i64>,
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
    /// Reports to render after the run. Empty: the ones the data supports.
    #[serde(default)]
    pub report: Vec<ReportKind>,
    /// A folder of report templates overriding the built-in ones file by file (relative to the directory
    /// servelab runs in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<String>,
    /// Overrides for the wall-time estimate of `servelab plan`.
    #[serde(default)]
    pub estimate: Estimate,
    /// Thresholds of the knee finding (where throughput stops scaling, where latency blows up).
    #[serde(default)]
    pub knee: KneeRules,
    /// Repeat each cell until its tokens/s is known to this precision, instead of a fixed `repeats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Per-request objectives (`ttft`, `tpot`, `e2e`, any subset): goodput and attainment per cell, and the
    /// highest rate that sustains them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// Search instead of sweep: `search: { rate: { low, high, tolerance } }` finds the highest open-loop rate
    /// that sustains the SLO by bracketing and bisecting on one server per configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// `servelab tune`: search engine arguments for the configuration that serves the `load:` workload best
    /// under an objective, in few server starts, then measure the winner and vLLM's defaults again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<Tune>,
    /// Inputs of the reports that are not measurements (kept in the spec so re-rendering stays exact).
    #[serde(default, skip_serializing_if = "ReportOptions::is_empty")]
    pub report_options: ReportOptions,
}

/// A precision target: after each round of repeats, only cells whose Student-t 95% half-width of tokens/s
/// exceeds `rel_ci` of the mean get another repeat, up to `max_repeats`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Precision {
    /// Target half-width of the 95% interval of tokens/s, as a fraction of the mean (0.05 = ±5%).
    #[serde(default = "default_rel_ci")]
    pub rel_ci: f64,
    /// Repeats every cell gets (at least 2: an interval needs two).
    #[serde(default = "default_min_repeats")]
    pub min_repeats: i64,
    /// Repeats a cell gets at most.
    #[serde(default = "default_max_repeats")]
    pub max_repeats: i64,
}

impl Precision {
    /// As planned (`plan.json`).
    pub fn target(self) -> crate::record::plan::PrecisionTarget {
        crate::record::plan::PrecisionTarget {
            rel_ci: self.rel_ci,
            min_repeats: self.min_repeats as u32,
            max_repeats: self.max_repeats as u32,
        }
    }
}

fn default_rel_ci() -> f64 {
    0.05
}
fn default_min_repeats() -> i64 {
    3
}
fn default_max_repeats() -> i64 {
    5
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportOptions {
    /// Tokens per request (prompt + output) of the workload the KV report's throughput pick is made for
    /// (default 4096): the pick is the length whose pool holds the most such requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_len: Option<u64>,
}

impl ReportOptions {
    pub fn is_empty(&self) -> bool {
        self.request_len.is_none()
    }
}

/// The knee rules, written into the outputs with the finding.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KneeRules {
    /// Throughput stops scaling at the first step whose tokens/s gain (paired by round) falls below this
    /// fraction with its whole 95% interval.
    #[serde(default = "default_gain")]
    pub marginal_gain_min: f64,
    /// Latency blows up at the first level whose p95 e2e exceeds this multiple of the p95 at concurrency 1.
    #[serde(default = "default_inflation")]
    pub p95_inflation_max: f64,
    /// ... or where the server had requests waiting (queueing) during the level.
    #[serde(default = "yes_bool")]
    pub waiting_counts: bool,
    /// Latency budget for the operating point: the highest level such that every level up to it keeps the
    /// upper 95% bound of its p95 e2e within this (e.g. `2s`). Without it the relative rule above decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_budget: Option<Dur>,
}

fn default_gain() -> f64 {
    0.10
}
fn default_inflation() -> f64 {
    2.0
}

impl Default for KneeRules {
    fn default() -> Self {
        KneeRules { marginal_gain_min: 0.10, p95_inflation_max: 2.0, waiting_counts: true, p95_budget: None }
    }
}

impl Spec {
    /// The headline policy: the mean under a precision target, else `repeat_policy`.
    pub fn effective_policy(&self) -> RepeatPolicy {
        if self.precision.is_some() { RepeatPolicy::Mean } else { self.repeat_policy }
    }

    /// Repeats the plan lists per cell: `precision.max_repeats`, else `repeats`, else 1.
    pub fn planned_repeats(&self) -> i64 {
        self.precision.map(|p| p.max_repeats).or(self.repeats).unwrap_or(1)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RepeatPolicy {
    /// The repeat with the highest tokens/s.
    Best,
    /// The repeat with the median tokens/s.
    #[default]
    Median,
    /// The mean of the repeats (what a precision target makes the headline).
    Mean,
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
    /// `vllm` only: a vLLM config file (YAML of flag values) passed as `vllm serve MODEL --config PATH`, e.g. a
    /// `recommended.yaml` written by `servelab tune`. Relative to the directory servelab runs in. The server's
    /// id hashes the file's content, not its path. A flag it sets may not also be in `args`, and it may not set
    /// `model`, `host`, `port` or `config` (servelab passes those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
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
    /// Name of an environment variable holding an API key. servelab reads the key from there, gives it to a
    /// `vllm` server as `VLLM_API_KEY`, sends it as `Authorization: Bearer`, and never writes it down (logs
    /// are redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Grace period between SIGTERM and SIGKILL to the server's process group.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
    /// GPUs each server needs under `servelab run --gpus` (default: its tensor × pipeline parallel size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Let `--gpus` mix GPU models in one run (refused by default: their figures are not comparable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mixed_gpus: bool,
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
    /// `completions` (default: `/v1/completions`) or `chat` (`/v1/chat/completions` with one user message
    /// per request; needs text prompts, `prompts_file`, and a model with a chat template or the server's
    /// `--chat-template`).
    #[serde(default, skip_serializing_if = "Endpoint::is_default")]
    pub endpoint: Endpoint,
    /// Requests in flight at once (closed loop; default 1, sequential). Excludes `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<IntOrTemplate>,
    /// Open loop: requests per second, sent on a pre-drawn schedule whether or not the server keeps up.
    /// Excludes `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<NumOrTemplate>,
    /// How open-loop arrivals are spaced: `poisson` (default), `constant` or `gamma` (with `burstiness`).
    #[serde(default, skip_serializing_if = "Arrival::is_default")]
    pub arrival: Arrival,
    /// Shape of gamma inter-arrival times: 1 is Poisson, below 1 burstier, above 1 more regular.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstiness: Option<f64>,
    /// Open loop: at most this many requests in flight; an arrival waits for a free slot (and is then late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<IntOrTemplate>,
    /// Requests per repeat. Unless `exact_requests`, at least 4 × concurrency are sent, so that high levels
    /// really hold their concurrency. Excludes `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<IntOrTemplate>,
    /// Length of each measured phase (e.g. `10s`): the client keeps `concurrency` requests in flight for this
    /// long. Excludes `requests`; a load with neither gets `duration: 10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    /// After each server start, load at the group's highest concurrency for this long before the first
    /// measured point (the first phase after a start otherwise runs slower). `0s` turns it off.
    #[serde(default = "default_server_warmup")]
    pub server_warmup: Dur,
    /// Send exactly `requests` at every level (experiment B's fixed 32).
    #[serde(default)]
    pub exact_requests: bool,
    /// Tokens generated per request: a number, or a distribution drawn per request (as `prompt_tokens`).
    #[serde(default = "int64")]
    pub max_tokens: Length,
    /// Prompt length in tokens: a number, or a distribution drawn per request, e.g.
    /// `{ dist: lognormal, mean: 256, sigma: 0.5, min: 16, max: 2048 }` (also `uniform` with `min`/`max`,
    /// `normal` with `mean`/`sd`, `fixed` with `value`).
    #[serde(default = "int128")]
    pub prompt_tokens: Length,
    /// Send text of exactly `prompt_tokens` tokens, built with the model's own tokenizer (`tokenizer.json` of
    /// the model folder), instead of token ids. Implied by `endpoint: chat` without `prompts_file`/`dataset`.
    #[serde(default)]
    pub text_prompts: bool,
    /// Prompts and output lengths sampled from a file (replaces `prompt_tokens`, `max_tokens` and
    /// `prompts_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSpec>,
    /// Replay a request trace: arrivals on its timestamps, its prompt and output lengths, prompts whose shared
    /// prefixes are exactly its `hash_ids`' (replaces `concurrency`, `requests`, `duration`, `prompt_tokens`,
    /// `max_tokens` and the other prompt sources; `max_concurrency` still caps it). With `rate`, its requests
    /// go in trace order on that rate's schedule instead of its timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSpec>,
    /// Multi-turn sessions on the chat endpoint: each session's turns in order, each turn resending the
    /// earlier user messages and the answers the server actually returned, plus a new user message.
    /// `concurrency` is then sessions in flight, `rate` sessions per second; `max_tokens` is per turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsSpec>,
    /// Ask the server to ignore end-of-sequence, so every request generates exactly `max_tokens`.
    #[serde(default = "yes")]
    pub ignore_eos: BoolOrTemplate,
    /// Stream tokens (needed for time to first token).
    #[serde(default = "yes")]
    pub stream: BoolOrTemplate,
    /// Requests sent before measuring, excluded from every figure.
    #[serde(default = "int2")]
    pub warmup: IntOrTemplate,
    /// Seed of the random token-id prompts; the same seed gives the same prompts.
    #[serde(default)]
    pub seed: u64,
    /// Tokens every prompt shares at its start (for prefix-cache experiments). 0: every prompt is distinct
    /// from its first token, so prefix caching cannot inflate results.
    #[serde(default = "int0")]
    pub shared_prefix_tokens: IntOrTemplate,
    /// Text prompts, one per line, used in turn instead of random token ids (prompt_tokens is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_file: Option<String>,
    /// Token ids are drawn below this. Default: the model's `vocab_size` from config.json, else 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    /// A point fails when more than this share of its measured requests failed (any error is noted).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// A request taking longer than this is recorded as a `timeout` error.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// OS threads the client drives the load from, each with a single-threaded runtime, an HTTP client and a
    /// share of the load of its own: an open loop's (or trace's) arrival `i` goes to thread `i mod N`; a closed
    /// loop's concurrency is split across them and its request budget shared. 1 (the default): as before, one
    /// dispatcher thread for an open loop, servelab's own runtime for a closed loop.
    #[serde(default = "int1", skip_serializing_if = "is_int1")]
    pub client_threads: IntOrTemplate,
}

/// `load.dataset`: a file of prompts, read once while streaming, sampled with `load.seed`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The file, relative to the directory servelab runs in (as `prompts_file`). At most 4 GiB.
    pub path: String,
    /// `sharegpt` (a JSON array of conversations: the first human turn is the prompt, the reply's length in
    /// the model's tokens the output length) or `jsonl` (`{"prompt": "...", "output_tokens": N}` per line).
    pub format: crate::record::plan::DatasetFormat,
    /// Entries kept (a seeded reservoir sample); each request draws one of them at random.
    #[serde(default = "default_samples")]
    pub samples: u32,
}

/// `load.trace`: which trace, which window of it, how fast, and caps for a small model. Every value but
/// `format` may be a template over the grid variables.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// The trace file (plain, `.xz` or `.gz`), relative to the directory servelab runs in. Its identity in
    /// point ids is a hash of its content, not this path.
    pub path: String,
    /// `mooncake` (default: JSON lines of `timestamp` ms, `input_length`, `output_length`, `hash_ids` of
    /// 512-token blocks) or `azure_csv` (`TIMESTAMP`, `ContextTokens`, `GeneratedTokens`).
    #[serde(default)]
    pub format: crate::record::trace::TraceFormat,
    /// Arrivals are the timestamps divided by this (2 = twice as fast); not with `load.rate`.
    #[serde(default = "one")]
    pub speedup: NumOrTemplate,
    /// The window's start, in seconds from the trace's first timestamp (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<NumOrTemplate>,
    /// The window's length in trace seconds (default: to the end of the trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumOrTemplate>,
    /// Prompts longer than this are cut to it (their blocks beyond it are dropped); the report counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<IntOrTemplate>,
    /// Output lengths above this are cut to it; the report counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<IntOrTemplate>,
}

/// `load.sessions`: how many sessions, how many turns each, how long each new user message is, and how
/// long the user thinks between an answer and the next message.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionsSpec {
    /// Sessions per measured phase (a phase by count). Without it the phase runs by `load.duration`:
    /// sessions start until it has passed, and every session started runs to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrTemplate>,
    /// Turns of a session: a number, or a distribution drawn per session (at most 1000).
    #[serde(default = "three")]
    pub turns: Length,
    /// Tokens of each new user message (the text alone, without the chat template): a number or a
    /// distribution drawn per turn.
    #[serde(default = "sixty_four")]
    pub user_tokens: Length,
    /// Between an answer's last token and the next turn: a duration (`500ms`), or a distribution in
    /// milliseconds drawn per turn (`{dist: lognormal, mean: 2000, sigma: 0.5, max: 10000}`).
    #[serde(default = "no_think")]
    pub think_time: ThinkTime,
}

/// A think time: one duration, or a distribution of milliseconds.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ThinkTime {
    Fixed(Dur),
    Dist(super::values::DistSpec),
}

fn three() -> Length {
    Length::int(3)
}

fn sixty_four() -> Length {
    Length::int(64)
}

fn no_think() -> ThinkTime {
    ThinkTime::Fixed(Dur(std::time::Duration::ZERO))
}

fn one() -> NumOrTemplate {
    NumOrTemplate::Num(1.0)
}

fn default_samples() -> u32 {
    1000
}

/// Service-level objectives, per request; a request meets the SLO when it meets every one given.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<Dur>,
    /// Time per output token after the first: (e2e − TTFT) / (tokens − 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot: Option<Dur>,
    /// End to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<Dur>,
    /// The share of requests that must meet it: a rate sustains the SLO when the lower bound of its
    /// attainment's 95% (Clopper–Pearson) interval is at least this.
    #[serde(default = "default_attainment")]
    pub attainment: f64,
}

fn default_attainment() -> f64 {
    0.99
}

pub fn default_max_error_rate() -> f64 {
    crate::record::plan::DEFAULT_MAX_ERROR_RATE
}

fn default_server_warmup() -> Dur {
    Dur::secs(3)
}

fn default_request_timeout() -> Dur {
    Dur::secs(300)
}

fn int1() -> IntOrTemplate {
    IntOrTemplate::Int(1)
}

fn is_int1(v: &IntOrTemplate) -> bool {
    matches!(v, IntOrTemplate::Int(1))
}

fn int0() -> IntOrTemplate {
    IntOrTemplate::Int(0)
}
fn int2() -> IntOrTemplate {
    IntOrTemplate::Int(2)
}
fn int64() -> Length {
    Length::int(64)
}
fn int128() -> Length {
    Length::int(128)
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
    /// Open loop: goodput, SLO attainment and latency against the offered rate, with the sustainable rate.
    RateSweep,
    /// TTFT against the shared-prefix length (`shared_prefix_tokens` as a grid axis), per server (e.g. prefix
    /// caching on and off), with vLLM's prefix-cache hit rate.
    PrefixCache,
    /// `servelab tune`: the configurations ranked with intervals, the Pareto chart, the recommended command
    /// line and its gain over vLLM's defaults.
    Tune,
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
