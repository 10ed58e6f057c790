//! `search:` and `tune:`: what a rate search looks for, and what a tune searches, for what, within what
//! budget.

use super::*;

/// What `search:` looks for.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The maximum sustainable open-loop rate.
    pub rate: RateSearch,
}

/// The rates a search may probe: a geometric ladder from `low` to `high` whose steps are `tolerance` apart.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateSearch {
    /// The lowest rate (requests/s), probed first: if it does not sustain, nothing higher is tried.
    pub low: f64,
    /// The highest rate, probed second: if it sustains, the limit lies above the search.
    pub high: f64,
    /// Relative step of the ladder (default 0.1): the search stops when the highest sustaining and the
    /// lowest failing rate are neighbours, i.e. known to within this fraction.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

pub(super) fn default_tolerance() -> f64 {
    0.1
}

/// What `tune:` searches, for what, and within what budget.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tune {
    /// Engine flags (as in `engine.args`, e.g. `max-num-seqs`) and the values to try: a list of choices, or
    /// `{min, max}` — integers doubling from `min` up to `max` (a log scale), or steps of `step` with `step`.
    pub space: IndexMap<String, TuneAxis>,
    /// `throughput`: the highest tokens/s among the workload's levels whose p95 e2e stays within
    /// `p95_budget` (the upper end of its 95% interval). `goodput`: the highest goodput (requests/s meeting
    /// `slo:`) among the workload's rates.
    pub objective: TuneObjective,
    /// The latency budget of the `throughput` objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_budget: Option<Dur>,
    /// What the tune may spend.
    pub budget: TuneBudget,
    /// Repeats per confirmation start (default 3).
    #[serde(default = "default_confirm_repeats")]
    pub confirm_repeats: u32,
    /// Fresh server starts of the winner and of vLLM's defaults each, after the search, in the order winner,
    /// defaults, defaults, winner, ... (default 2). The gain's interval is over these starts: repeats on one
    /// server do not show what another start of the same configuration serves.
    #[serde(default = "default_confirm_starts")]
    pub confirm_starts: u32,
    /// Screening (default 0.25): each searched configuration is first measured with a short phase, this
    /// fraction of the load's measured requests (or duration); only a finalist — one whose short phase could
    /// still beat the best measured in full — gets the full phase, on the same server start. `0` gives every
    /// searched configuration the full phase.
    #[serde(default = "default_screen")]
    pub screen: f64,
    /// The equivalence margin δ, relative (default 0.02, i.e. ±2%): a tuned flag is reported as not
    /// mattering for this workload only where the whole 95% interval of its effect lies within ±δ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equivalence_margin: Option<f64>,
}

pub(super) fn default_screen() -> f64 {
    0.25
}

/// The equivalence margin when the spec gives none.
pub const DEFAULT_EQUIVALENCE_MARGIN: f64 = 0.02;

impl Tune {
    /// `equivalence_margin`, or its default.
    pub fn margin(&self) -> f64 {
        self.equivalence_margin.unwrap_or(DEFAULT_EQUIVALENCE_MARGIN)
    }
}

pub(super) fn default_confirm_starts() -> u32 {
    2
}

pub(super) fn default_confirm_repeats() -> u32 {
    3
}

/// Values of one tuned flag.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TuneAxis {
    Choices(Vec<Scalar>),
    Range(TuneRange),
}

/// Integers from `min` to `max`: doubling (the default, a log scale), or `step` apart.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneRange {
    pub min: u64,
    pub max: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TuneObjective {
    Throughput,
    Goodput,
}

/// The tune's budget. `starts` counts every server start of the tune, the confirmation's included.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneBudget {
    pub starts: u32,
    /// No further configuration is searched once the recorded server time (starts and phases) passes this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall: Option<Dur>,
}
