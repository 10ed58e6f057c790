//! `plan.json`: what the planner produces — server groups, each started once, holding the points run
//! against it. The planner (`crate::plan`) builds it; the executor and the reports read it.

use super::values::{EngineKind, Scalar};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub name: String,
    /// Grid axes used by the engine section: a new value means a new server.
    pub server_vars: Vec<String>,
    /// The other axes: varied against one running server.
    pub client_vars: Vec<String>,
    /// Points of the grid (its Cartesian product), before repeats.
    pub grid_points: usize,
    pub repeats: u32,
    pub groups: Vec<ServerGroup>,
    pub estimate: WallEstimate,
    /// With a precision target, `repeats` is its maximum and the executor skips the rounds a cell does not
    /// need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<PrecisionTarget>,
    /// `search:`: each group's points are the rungs of a rate ladder (× repeats); the executor measures only
    /// those the search asks for, in the order it asks, judged on what was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<RateSearchPlan>,
    /// `tune:`: every configuration of the space is a group (and vLLM's defaults one more, the last); the
    /// executor starts only those the search and the confirmation ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<TunePlan>,
}

/// A tune as planned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TunePlan {
    pub axes: Vec<TuneAxisPlan>,
    /// `throughput` or `goodput`.
    pub objective: String,
    pub p95_budget_s: Option<f64>,
    /// Server starts in all, the confirmation's two included.
    pub starts: u32,
    pub wall_s: Option<f64>,
    /// Repeats 0..search_repeats of a group are the search's; then confirm_repeats per confirmation start.
    pub search_repeats: u32,
    pub confirm_repeats: u32,
    /// Confirmation starts per configuration (the winner, the defaults). Runs recorded before it existed had one.
    #[serde(default = "one")]
    pub confirm_starts: u32,
    /// Screening: the short phase's share of the measured load, planned as one more repeat of every
    /// searched configuration after the confirmation's (`plan::tune::screen_points`). None: off, or a run
    /// recorded before screening existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<f64>,
    /// The group of vLLM's defaults: the tuned flags left out.
    pub defaults_group: String,
    /// The space's configurations: the group and one value index per axis.
    pub configs: Vec<TuneConfig>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TuneAxisPlan {
    /// The engine flag, e.g. `max-num-seqs`.
    pub flag: String,
    /// Its grid variable, e.g. `max_num_seqs`.
    pub var: String,
    pub values: Vec<Scalar>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TuneConfig {
    pub group: String,
    pub index: Vec<usize>,
}

/// A rate search as planned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateSearchPlan {
    pub low: f64,
    pub high: f64,
    pub tolerance: f64,
    /// The rates it may probe, ascending: `low`, then steps of `1 + tolerance`, then `high`.
    pub ladder: Vec<f64>,
    /// Rungs a search measures at most: the two ends, then one bisection step per halving of the ladder.
    pub max_probes: usize,
}

/// `precision:` of the spec, as planned.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrecisionTarget {
    pub rel_ci: f64,
    pub min_repeats: u32,
    pub max_repeats: u32,
}

impl Plan {
    pub fn server_starts(&self) -> usize {
        self.groups.iter().filter(|g| g.server.kind != EngineKind::External).count()
    }
    pub fn runs(&self) -> usize {
        self.groups.iter().map(|g| g.points.len()).sum()
    }
    pub fn points(&self) -> impl Iterator<Item = (&ServerGroup, &Point)> {
        self.groups.iter().flat_map(|g| g.points.iter().map(move |p| (g, p)))
    }
}

/// One distinct server configuration, started once.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerGroup {
    /// Content hash of the final argv and env (12 hex digits).
    pub id: String,
    /// Values of the server-scoped variables.
    pub vars: IndexMap<String, Scalar>,
    pub server: ServerConfig,
    pub points: Vec<Point>,
}

/// A server configuration, fully rendered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerConfig {
    pub kind: EngineKind,
    /// The command line (empty for `external`).
    pub argv: Vec<String>,
    /// Environment added to servelab's own.
    pub env: IndexMap<String, String>,
    /// Where clients connect, e.g. `http://127.0.0.1:8000`.
    pub base_url: String,
    /// Polled until it answers 200.
    pub ready_url: String,
    pub host: String,
    pub port: u16,
    /// The model as given in the spec (path or name).
    pub model: Option<String>,
    /// The name requests must use (`--served-model-name`, else the model).
    pub served_model_name: Option<String>,
    /// The rendered `max-model-len` arg, when given.
    pub max_model_len: Option<u64>,
    pub ready_timeout_s: f64,
    pub stop_timeout_s: f64,
    /// Cores the server is pinned to: set at run time by a slot, never planned (so never in an id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<usize>,
    /// GPUs (NVML indices) a slot gave the server: its memory and utilisation are read on these alone. Set
    /// at run time, never planned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    /// `engine.config_file`: the file `--config` hands vLLM, and a hash of its content (the server's id hashes
    /// the content, not the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<ConfigFile>,
}

/// A vLLM config file (`vllm serve --config PATH`) as planned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConfigFile {
    /// As the spec gives it (relative to the directory servelab runs in), and as argv passes it.
    pub path: String,
    /// SHA-256 of the content, first 12 hex digits.
    pub content: String,
}

/// One measurement: a client configuration against a server, for one repeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Content hash of (server config, client config, repeat index) (12 hex digits).
    pub id: String,
    /// Values of every grid variable at this point.
    pub vars: IndexMap<String, Scalar>,
    pub repeat: u32,
    /// The load, or none when the point only measures the server at ready.
    pub client: Option<ClientConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientConfig {
    pub concurrency: u32,
    /// Requests measured in this repeat (after the max(requests, 4 × concurrency) rule); 0 for a phase sized
    /// by `duration_s`.
    pub requests: u32,
    /// `load.requests` as written.
    pub requests_asked: u32,
    pub exact_requests: bool,
    pub max_tokens: u32,
    pub prompt_tokens: u32,
    pub ignore_eos: bool,
    pub stream: bool,
    pub warmup: u32,
    pub seed: u64,
    pub shared_prefix_tokens: u32,
    pub prompts_file: Option<String>,
    pub vocab_size: Option<u64>,
    pub request_timeout_s: f64,
    /// The point fails when more than this share of its measured requests failed.
    #[serde(default = "default_max_error_rate", skip_serializing_if = "is_default_max_error_rate")]
    pub max_error_rate: f64,
    /// The measured phase's length when sized by time (`load.duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Open-loop load (`load.rate`); `concurrency` is then its cap (`max_concurrency`, 0 for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    /// The API the requests go to; left out of plan.json (and so of point ids) for the default.
    #[serde(default, skip_serializing_if = "Endpoint::is_default")]
    pub endpoint: Endpoint,
    /// Prompt lengths drawn per request (`prompt_tokens` is then the distribution's nominal mean, used by
    /// estimates); None: every prompt is `prompt_tokens` long. New fields are left out when unused, so the ids
    /// of points planned before them do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_dist: Option<LengthDist>,
    /// Output lengths (`max_tokens` per request) drawn per request, as `prompt_dist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dist: Option<LengthDist>,
    /// The server's context (max-model-len) when known and lengths vary: a drawn prompt is shortened so that
    /// prompt + output fits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_limit: Option<u32>,
    /// Prompts are text of an exact token length, built with the model's own tokenizer (`tokenizer.json` in
    /// the model folder), instead of token ids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_prompts: bool,
    /// Prompts (and output lengths) sampled from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    /// A trace replay: arrivals, lengths and prompts from a window of a trace file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<super::trace::TracePlan>,
    /// Multi-turn sessions on the chat endpoint (`load.sessions`): the phase is sized in sessions and each
    /// turn resends the history with the server's own answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionPlan>,
    /// `load.client_threads`; left out when 1 (0, a default value, reads as 1), so earlier ids do not change.
    #[serde(default = "one_thread", skip_serializing_if = "at_most_one")]
    pub client_threads: u32,
}

fn one_thread() -> u32 {
    1
}

fn at_most_one(n: &u32) -> bool {
    *n <= 1
}

/// `load.sessions`, planned: every length a distribution (a fixed one as `uniform` of one value).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionPlan {
    /// Sessions per measured phase (a phase by count); 0 for a phase by time.
    pub count: u32,
    /// Turns of a session.
    pub turns: LengthDist,
    /// Tokens of each new user message (the message's text alone, without the chat template).
    pub user_tokens: LengthDist,
    /// Milliseconds between a turn's last token and the next turn's send.
    pub think_ms: LengthDist,
}

impl SessionPlan {
    /// The most turns a session may have: a session's turn number is below it, so request indices are unique.
    pub const MAX_TURNS: u32 = 1000;
    /// The most sessions a phase holds: a request's index (session × `MAX_TURNS` + turn − 1) fits in 32 bits.
    pub const MAX_SESSIONS: u32 = u32::MAX / Self::MAX_TURNS - 1;
}

/// A length distribution of the spec, validated: every draw is clipped to `[min, max]`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "dist", rename_all = "snake_case")]
pub enum LengthDist {
    Uniform {
        min: u32,
        max: u32,
    },
    Normal {
        mean: f64,
        sd: f64,
        min: u32,
        max: u32,
    },
    /// `mean` is the distribution's mean (not its median): the log-mean is ln(mean) − sigma²/2.
    Lognormal {
        mean: f64,
        sigma: f64,
        min: u32,
        max: u32,
    },
}

impl LengthDist {
    pub fn bounds(&self) -> (u32, u32) {
        match *self {
            LengthDist::Uniform { min, max }
            | LengthDist::Normal { min, max, .. }
            | LengthDist::Lognormal { min, max, .. } => (min, max),
        }
    }
    /// The nominal mean, before clipping (what estimates and tables use).
    pub fn mean(&self) -> f64 {
        match *self {
            LengthDist::Uniform { min, max } => (f64::from(min) + f64::from(max)) / 2.0,
            LengthDist::Normal { mean, .. } | LengthDist::Lognormal { mean, .. } => mean,
        }
    }
}

/// `load.dataset`, as planned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dataset {
    pub path: String,
    pub format: DatasetFormat,
    /// Entries kept by the seeded reservoir sample taken while streaming the file; requests draw from them.
    pub samples: u32,
}

/// How a dataset file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// A JSON array of `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}`: the first
    /// human turn is the prompt, the length of the reply after it (in the model's tokens) the output length.
    Sharegpt,
    /// One JSON object per line: `{"prompt": "...", "output_tokens": N}`.
    Jsonl,
}

/// `load.endpoint`: the OpenAI-compatible API requests are sent to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/v1/completions` with a prompt (token ids or text).
    #[default]
    Completions,
    /// `/v1/chat/completions` with one user message (text prompts; the server applies its chat template).
    Chat,
}

impl Endpoint {
    pub fn is_default(&self) -> bool {
        *self == Endpoint::Completions
    }
    /// The path under the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

impl ClientConfig {
    /// The open loop's rate, or None for a closed loop.
    pub fn rate(&self) -> Option<f64> {
        self.open_loop.as_ref().map(|o| o.rate)
    }
}

/// Arrivals on a schedule pre-drawn from `seed` (the same seed, the same schedule).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    pub arrival: Arrival,
    /// Gamma shape (1 = Poisson), for `arrival: gamma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burstiness: Option<f64>,
    /// A measured phase holds at least this many arrivals even when `duration` would hold fewer (an SLO's
    /// attainment needs them: 400 gives a 99% target a usable Clopper–Pearson interval).
    #[serde(default)]
    pub min_requests: u32,
}

/// The spacing of open-loop arrivals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Exponential gaps: independent arrivals, as from many users.
    #[default]
    Poisson,
    /// Equal gaps of 1/rate.
    Constant,
    /// Gamma gaps with shape `burstiness` (mean 1/rate).
    Gamma,
}

impl Arrival {
    pub fn is_default(&self) -> bool {
        *self == Arrival::Poisson
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WallEstimate {
    pub startup_s: f64,
    pub stop_s: f64,
    pub per_request_s: f64,
    /// Whether each figure came from the spec's `estimate:` (else the engine kind's default).
    pub from_spec: bool,
    /// Every planned point measured (with a precision target: every cell at `max_repeats`).
    pub total_s: f64,
    /// With a precision target: every cell at `min_repeats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_total_s: Option<f64>,
}

/// `load.max_error_rate`'s default; left out of plan.json (and so of point ids) when unchanged.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.1;

fn default_max_error_rate() -> f64 {
    DEFAULT_MAX_ERROR_RATE
}

fn is_default_max_error_rate(x: &f64) -> bool {
    *x == DEFAULT_MAX_ERROR_RATE
}

/// Every configuration of a space whose axes have these many values, as one value index per axis, first axis
/// slowest.
pub fn configs_of(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    for &n in sizes {
        out = out.into_iter().flat_map(|c| (0..n).map(move |i| [c.clone(), vec![i]].concat())).collect();
    }
    out
}

/// Quotes an argv element for display when it holds spaces or shell metacharacters.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// One GPU of the host as NVML names it (index, UUID, model), and the NUMA node its PCIe root is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotGpu {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}
