//! Raw per-request records: instants as seconds from the phase start, never derived figures.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The point (measurement) this request belongs to.
    pub point: String,
    /// Which attempt at the point (a failed point runs again on resume).
    #[serde(default)]
    pub attempt: u32,
    pub index: u32,
    pub warmup: bool,
    /// When the closed loop had a free slot for it.
    pub scheduled_s: f64,
    /// Just before the request was sent.
    pub start_s: f64,
    /// The first chunk with non-empty text (streaming only).
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    /// Arrival times of content chunks after the first, relative to it, in microseconds (inter-token gaps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_us: Vec<u32>,
    /// Content chunks received (a chunk may carry several tokens).
    pub chunks: u32,
    /// From the server's `usage`.
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub http_status: Option<u16>,
    pub error: Option<RequestError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestError {
    /// connect | timeout | http_<status> | stream | body
    pub kind: String,
    pub message: String,
}

impl RequestRecord {
    pub fn e2e_s(&self) -> f64 {
        self.end_s - self.start_s
    }
    pub fn ttft_s(&self) -> Option<f64> {
        self.first_token_s.map(|t| t - self.start_s)
    }
    /// Dispatch delay: how late the client sent it after its slot was free.
    pub fn lag_s(&self) -> f64 {
        self.start_s - self.scheduled_s
    }
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
    /// Gaps between consecutive content chunks, seconds.
    pub fn gaps_s(&self) -> impl Iterator<Item = f64> + '_ {
        let mut prev = 0u32;
        self.chunk_us.iter().map(move |&t| {
            let gap = t.saturating_sub(prev);
            prev = t;
            f64::from(gap) / 1e6
        })
    }
}
