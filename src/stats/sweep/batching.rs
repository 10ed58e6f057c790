//! Sequential against the highest concurrency: the batching summary.

use super::*;

/// Sequential (concurrency 1) against the highest concurrency of a sweep, from each cell's headline repeat
/// over the whole phase (ramp-up and drain included: the batching summary compares the same requests end to
/// end): the batching summary of the CSV, the console and the reports.
#[derive(Clone, Debug, Serialize)]
pub struct Batching {
    pub concurrency: u32,
    pub sequential_s: f64,
    pub concurrent_s: f64,
    pub sequential_qps: f64,
    pub concurrent_qps: f64,
    pub sequential_tok_s: f64,
    pub concurrent_tok_s: f64,
    pub speedup: Option<f64>,
    /// Of the concurrent cell's headline repeat.
    pub requests: usize,
    pub max_tokens: u32,
    pub repeats: usize,
    pub policy: RepeatPolicy,
}

/// None without both a concurrency-1 cell and a higher one.
pub fn batching(group: &GroupSweep) -> Option<Batching> {
    let seq = group.cells.iter().find(|c| c.concurrency == 1)?;
    let conc = group.cells.iter().filter(|c| c.concurrency > 1).max_by_key(|c| c.concurrency)?;
    let (s, c) = (seq.head(), conc.head());
    Some(Batching {
        concurrency: conc.concurrency,
        sequential_s: s.wall_s,
        concurrent_s: c.wall_s,
        sequential_qps: s.phase_qps,
        concurrent_qps: c.phase_qps,
        sequential_tok_s: s.phase_tok_s,
        concurrent_tok_s: c.phase_tok_s,
        speedup: (s.phase_tok_s > 0.0).then(|| c.phase_tok_s / s.phase_tok_s),
        requests: c.requests,
        max_tokens: conc.max_tokens,
        repeats: conc.repeats.len(),
        policy: group.policy,
    })
}
