//! A trace replay as planned (`load.trace`): where the trace is, which window of it is replayed and how fast,
//! and what the planner learnt while reading it (requests, caps applied, the prefix-cache bound). The bound is
//! kept here so a report renders from the run folder alone, without the trace file.

use super::tracefile::Select;
use serde::{Deserialize, Serialize};

/// How a trace file is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    /// One JSON object per line: `timestamp` (ms from the trace's start), `input_length`, `output_length` and
    /// `hash_ids` (one id per 512-token block; equal leading ids are a shared prefix). Plain, `.xz` or `.gz`.
    #[default]
    Mooncake,
    /// The Azure LLM inference trace's CSV: a header naming `TIMESTAMP` (a datetime such as
    /// `2023-11-16 18:15:46.6805900`), `ContextTokens` and `GeneratedTokens`. No prefix information.
    AzureCsv,
}

/// What paces a replay's arrivals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceSchedule {
    /// The trace's own timestamps, divided by `speedup`.
    #[default]
    Timestamps,
    /// The open loop's `rate` (with its `arrival` and `burstiness`), on a schedule pre-drawn from the seed: the
    /// window's requests go in trace order, one per arrival, and its timestamps are not used.
    Rate,
}

impl TraceSchedule {
    /// Left out of the plan when the timestamps pace the replay, so the ids of earlier plans do not change.
    pub fn is_timestamps(&self) -> bool {
        *self == TraceSchedule::Timestamps
    }
}

/// The upper bound on the prefix-cache hit rate the replayed window's own blocks allow: an unbounded cache,
/// empty at the window's start, reusing whole blocks of `block_size` tokens of a prompt's longest prefix
/// shared with any earlier prompt of the window (never its last token, which is always computed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrefixBound {
    /// The server's KV block size the bound is counted in.
    pub block_size: u32,
    /// Prompt tokens such a cache would serve.
    pub hit_tokens: u64,
    /// Prompt tokens of the window (after caps).
    pub prompt_tokens: u64,
}

impl PrefixBound {
    /// The bound as a share of prompt tokens; None for a window without prompt tokens.
    pub fn rate(&self) -> Option<f64> {
        (self.prompt_tokens > 0).then(|| self.hit_tokens as f64 / self.prompt_tokens as f64)
    }
}

/// What reading a trace's window found besides its requests: read into [`crate::record::tracefile::Window`]
/// and recorded in the plan ([`TracePlan::found`]), so a report renders from the run folder alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowFound {
    /// Trace seconds from the window's first arrival to its last (before `speedup`).
    pub span_s: f64,
    /// Requests whose prompt (output) length the caps shortened.
    pub capped_input: u32,
    pub capped_output: u32,
    /// Prompt tokens of the window before caps.
    pub input_tokens_uncapped: u64,
    /// The bound at each KV block size of `record::tracefile::BLOCK_SIZES` (a report picks the server's).
    pub bounds: Vec<PrefixBound>,
    /// The same bounds without caps (what capping costs the cache).
    pub bounds_uncapped: Vec<PrefixBound>,
}

/// `load.trace`, as planned. It is hashed into point ids (`plan::trace::identity`), so its serialized bytes
/// must not change: `select` and `found` are flattened, their keys standing where they always stood, between
/// `speedup` and `requests` and after `requests`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TracePlan {
    /// The file, relative to the directory servelab runs in. Not part of the point's identity (the content
    /// hash is): a trace moved or renamed resumes as the same points.
    pub path: String,
    pub format: TraceFormat,
    /// SHA-256 of the (decompressed) content, first 12 hex digits.
    pub content: String,
    /// Arrivals are the trace's timestamps divided by this (1 under a rate's schedule).
    pub speedup: f64,
    /// The timestamps (the default), or `load.rate`'s pre-drawn schedule.
    #[serde(default, skip_serializing_if = "TraceSchedule::is_timestamps")]
    pub schedule: TraceSchedule,
    /// The window (trace seconds from the trace's first timestamp) and the length caps.
    #[serde(flatten)]
    pub select: Select,
    /// Requests in the window (every one is sent once, in trace order).
    pub requests: u32,
    #[serde(flatten)]
    pub found: WindowFound,
}

impl TracePlan {
    /// The bound at a block size (with caps, or without), if counted at it.
    pub fn bound_at(&self, block_size: u32, capped: bool) -> Option<PrefixBound> {
        let list = if capped { &self.found.bounds } else { &self.found.bounds_uncapped };
        list.iter().find(|b| b.block_size == block_size).copied()
    }

    /// The window's mean offered rate, requests per second (after `speedup`).
    pub fn mean_rate(&self) -> f64 {
        if self.found.span_s > 0.0 && self.requests > 1 {
            f64::from(self.requests - 1) / (self.found.span_s / self.speedup)
        } else {
            f64::from(self.requests.max(1))
        }
    }
}
