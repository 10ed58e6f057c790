//! `points.jsonl` and `samples.jsonl`: one record per measured point, and the scrapes and GPU readings taken
//! while it ran.

use super::plan::ClientConfig;
use super::server::Status;
use super::values::Scalar;
use serde::{Deserialize, Serialize};

/// One measured point, as recorded in `points.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub point: String,
    /// Which attempt at the point (a failed point runs again on resume); records match on (point, attempt).
    #[serde(default)]
    pub attempt: u32,
    pub group: String,
    pub repeat: u32,
    pub vars: indexmap::IndexMap<String, Scalar>,
    pub client: ClientConfig,
    pub model: String,
    pub started_at: String,
    /// Measured phase: start to the end of its last request.
    pub wall_s: f64,
    /// When the phase started on the clock of this point's `samples.jsonl` lines (sample `t_s` minus this is
    /// on the requests' clock).
    #[serde(default)]
    pub samples_offset_s: f64,
    pub warmup_requests: u32,
    /// /metrics when the server was quiet before and after the measured phase.
    pub before: Option<Snapshot>,
    pub after: Option<Snapshot>,
    /// A GPU probe was sampling utilisation.
    pub gpu_sampled: bool,
    pub status: Status,
    pub error: Option<String>,
    /// Other servers up at any moment while it was measured (a run with slots); absent when it ran alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beside: Option<usize>,
    /// A GPU of its slot shared a PCIe switch with a GPU of another slot in use meanwhile (`--gpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_shared: Option<bool>,
    /// A trace replayed on the chat endpoint: the prefix-cache bound counted on the token ids of the prompts
    /// as sent (the chat template rendered, then tokenized), at each of `record::tracefile::BLOCK_SIZES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_sent: Option<Vec<super::trace::PrefixBound>>,
    /// With `trace_sent`: whether a chat template was found and rendered around each message (false: none was
    /// found, and the bound is counted on the messages' tokens alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_sent_template: Option<bool>,
}

impl PointRecord {
    /// A point measured ok, alone, with no /metrics snapshot and no GPU sampled: attempt and repeat 0, no
    /// variables. The fake engine and the test fixtures start from it and set what they need.
    pub fn measured(point: impl Into<String>, group: impl Into<String>, client: ClientConfig, wall_s: f64) -> Self {
        PointRecord {
            point: point.into(),
            attempt: 0,
            group: group.into(),
            repeat: 0,
            vars: indexmap::IndexMap::new(),
            client,
            model: String::new(),
            started_at: String::new(),
            wall_s,
            samples_offset_s: 0.0,
            warmup_requests: 0,
            before: None,
            after: None,
            gpu_sampled: false,
            status: Status::Ok,
            error: None,
            beside: None,
            switch_shared: None,
            trace_sent: None,
            trace_sent_template: None,
        }
    }
}

/// One line of `samples.jsonl`: a /metrics scrape or a GPU reading during a measured phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    pub point: String,
    #[serde(default)]
    pub attempt: u32,
    pub t_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_used_mb: Option<f64>,
    /// What the host showed, sampled slowly (about once a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostReading>,
}

/// The host while a phase ran: CPU steal since the previous reading and the load average; on a GPU its SM
/// clock and clock-event reasons (NVML).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReading {
    /// Share of CPU time stolen by the hypervisor since the previous reading, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<f64>,
    /// NVML's clock-event reasons bitmask, ORed over the GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<u64>,
}

/// The figures servelab takes from vLLM's /metrics at one instant (summed over engines and label sets).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub t_s: f64,
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    /// 0–1 (`vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc` before 0.9).
    pub kv_usage: Option<f64>,
    pub preemptions: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub prefix_hits: Option<f64>,
    pub prefix_queries: Option<f64>,
    pub e2e_sum: Option<f64>,
    pub e2e_count: Option<f64>,
    pub ttft_sum: Option<f64>,
    pub ttft_count: Option<f64>,
    pub queue_sum: Option<f64>,
    pub queue_count: Option<f64>,
}
