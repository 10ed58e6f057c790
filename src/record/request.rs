//! `requests.jsonl`: one raw record per request — instants as seconds from the phase start, never derived
//! figures. Failures are data: a failed request is a record with its error kind and message.

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
    /// Tokens each content chunk carried, from the first non-empty one on (so one more entry than
    /// `chunk_us`), from the server's per-chunk usage; empty when the server did not send it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_tokens: Vec<u32>,
    /// Content chunks received (a chunk may carry several tokens).
    pub chunks: u32,
    /// Sent after the phase's duration only to keep its concurrency up until the requests sent in time had
    /// finished; excluded from every figure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tail: bool,
    /// From the server's `usage`.
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub http_status: Option<u16>,
    pub error: Option<RequestError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Why a request failed; written as `connect`, `timeout`, `http_<status>`, `stream`, `body` or
/// `request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ErrorKind {
    /// No connection (refused, reset before a response).
    Connect,
    /// `request_timeout` passed.
    Timeout,
    /// The server answered with this non-success status.
    Http(u16),
    /// The response stream broke or ended without `[DONE]`.
    Stream,
    /// A non-streaming body that could not be read or parsed.
    Body,
    /// Any other failure to send the request.
    Request,
}

impl From<ErrorKind> for String {
    fn from(k: ErrorKind) -> String {
        match k {
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::Http(code) => format!("http_{code}"),
            ErrorKind::Stream => "stream".into(),
            ErrorKind::Body => "body".into(),
            ErrorKind::Request => "request".into(),
        }
    }
}

impl TryFrom<String> for ErrorKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "connect" => Ok(ErrorKind::Connect),
            "timeout" => Ok(ErrorKind::Timeout),
            "stream" => Ok(ErrorKind::Stream),
            "body" => Ok(ErrorKind::Body),
            "request" => Ok(ErrorKind::Request),
            _ => s
                .strip_prefix("http_")
                .and_then(|c| c.parse().ok())
                .map(ErrorKind::Http)
                .ok_or_else(|| format!("unknown request error kind {s:?}")),
        }
    }
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
