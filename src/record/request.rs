//! `requests.jsonl`: one raw record per request — instants as seconds from the phase start, never derived
//! figures. Failures are data: a failed request is a record with its error kind and message.

use serde::{Deserialize, Serialize};

/// In memory, chunk arrival times are offsets from the first token (`chunk_us`); on disk they are the gaps
/// between consecutive chunks (`chunk_gap_us`), which are small, repetitive numbers that compress to about
/// half the size (an H200 sweep's 24k requests × 64 chunks: 2.4 → 2.1 MB as xz). Both convert exactly
/// (wrapping integer arithmetic), and records written before the change (`chunk_us` on disk) still read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::Request", into = "wire::Request")]
pub struct RequestRecord {
    /// The point (measurement) this request belongs to.
    pub point: String,
    /// Which attempt at the point (a failed point runs again on resume).
    pub attempt: u32,
    pub index: u32,
    pub warmup: bool,
    /// When the closed loop had a free slot for it.
    pub scheduled_s: f64,
    /// Open loop under `max_concurrency`: when a slot was free for it (it waited from `scheduled_s` to here
    /// for the cap, and from here to `start_s` for the client). None without a cap.
    pub slot_s: Option<f64>,
    /// Just before the request was sent.
    pub start_s: f64,
    /// The first chunk with non-empty text (streaming only).
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    /// Arrival times of content chunks after the first, relative to it, in microseconds.
    pub chunk_us: Vec<u32>,
    /// Tokens each content chunk carried, from the first non-empty one on (so one more entry than
    /// `chunk_us`), from the server's per-chunk usage; empty when the server did not send it.
    pub chunk_tokens: Vec<u32>,
    /// Content chunks received (a chunk may carry several tokens).
    pub chunks: u32,
    /// Sent after the phase's duration only to keep its concurrency up until the requests sent in time had
    /// finished; excluded from every figure.
    pub tail: bool,
    /// From the server's `usage`.
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// The prompt's tokens as the client counted them (token ids, or text through the model's tokenizer),
    /// to be checked against `prompt_tokens`; None when it could not count them.
    pub sent_tokens: Option<u32>,
    /// The `max_tokens` this request asked for, when output lengths vary between requests.
    pub max_tokens: Option<u32>,
    pub http_status: Option<u16>,
    pub error: Option<RequestError>,
    /// A multi-turn session's request (`load.sessions`): which session and which turn of it (from 1).
    pub session: Option<SessionTurn>,
    /// Prompt tokens the server served from its prefix cache, from `usage.prompt_tokens_details.cached_tokens`
    /// (vLLM sends it with `--enable-prompt-tokens-details`); None when the server did not say.
    pub cached_tokens: Option<u32>,
}

/// Where a request sits in a multi-turn session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTurn {
    /// The session's number in its phase, from 0.
    pub id: u32,
    /// The turn's number in its session, from 1: turn `t` sends the history of turns 1 to `t − 1`.
    pub turn: u32,
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
    /// An open-loop arrival that could not be sent before its phase had to end (every `max_concurrency` slot
    /// stayed busy): never sent, counted as late.
    NotSent,
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
            ErrorKind::NotSent => "not_sent".into(),
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
            "not_sent" => Ok(ErrorKind::NotSent),
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
    /// Of an open-loop request's lateness, the wait for a `max_concurrency` slot (0 without a cap).
    pub fn cap_wait_s(&self) -> f64 {
        self.slot_s.map_or(0.0, |s| (s - self.scheduled_s).max(0.0))
    }
    /// Of its lateness, the client's own: from a free slot (or its schedule) to sending.
    pub fn client_late_s(&self) -> f64 {
        self.start_s - self.slot_s.unwrap_or(self.scheduled_s).max(self.scheduled_s)
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

mod wire {
    use super::{RequestError, RequestRecord, SessionTurn};
    use serde::{Deserialize, Serialize};

    /// The on-disk form of [`RequestRecord`]; field order is the file's column order.
    #[derive(Serialize, Deserialize)]
    pub struct Request {
        point: String,
        #[serde(default)]
        attempt: u32,
        index: u32,
        warmup: bool,
        scheduled_s: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot_s: Option<f64>,
        start_s: f64,
        first_token_s: Option<f64>,
        end_s: f64,
        /// Gaps between consecutive chunk arrivals (the first from the first token), microseconds.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chunk_gap_us: Vec<u32>,
        /// The form written before `chunk_gap_us`: offsets from the first token. Read, never written.
        #[serde(default, skip_serializing)]
        chunk_us: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chunk_tokens: Vec<u32>,
        chunks: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tail: bool,
        prompt_tokens: Option<u32>,
        completion_tokens: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_tokens: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u32>,
        http_status: Option<u16>,
        error: Option<RequestError>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionTurn>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached_tokens: Option<u32>,
    }

    pub fn to_gaps(offsets: &[u32]) -> Vec<u32> {
        let mut prev = 0u32;
        offsets
            .iter()
            .map(|&t| {
                let gap = t.wrapping_sub(prev);
                prev = t;
                gap
            })
            .collect()
    }

    pub fn to_offsets(gaps: &[u32]) -> Vec<u32> {
        let mut at = 0u32;
        gaps.iter()
            .map(|&g| {
                at = at.wrapping_add(g);
                at
            })
            .collect()
    }

    impl From<Request> for RequestRecord {
        fn from(w: Request) -> Self {
            let chunk_us = if w.chunk_gap_us.is_empty() { w.chunk_us } else { to_offsets(&w.chunk_gap_us) };
            RequestRecord {
                point: w.point,
                attempt: w.attempt,
                index: w.index,
                warmup: w.warmup,
                scheduled_s: w.scheduled_s,
                slot_s: w.slot_s,
                start_s: w.start_s,
                first_token_s: w.first_token_s,
                end_s: w.end_s,
                chunk_us,
                chunk_tokens: w.chunk_tokens,
                chunks: w.chunks,
                tail: w.tail,
                prompt_tokens: w.prompt_tokens,
                completion_tokens: w.completion_tokens,
                sent_tokens: w.sent_tokens,
                max_tokens: w.max_tokens,
                http_status: w.http_status,
                error: w.error,
                session: w.session,
                cached_tokens: w.cached_tokens,
            }
        }
    }

    impl From<RequestRecord> for Request {
        fn from(r: RequestRecord) -> Self {
            Request {
                point: r.point,
                attempt: r.attempt,
                index: r.index,
                warmup: r.warmup,
                scheduled_s: r.scheduled_s,
                slot_s: r.slot_s,
                start_s: r.start_s,
                first_token_s: r.first_token_s,
                end_s: r.end_s,
                chunk_gap_us: to_gaps(&r.chunk_us),
                chunk_us: Vec::new(),
                chunk_tokens: r.chunk_tokens,
                chunks: r.chunks,
                tail: r.tail,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                sent_tokens: r.sent_tokens,
                max_tokens: r.max_tokens,
                http_status: r.http_status,
                error: r.error,
                session: r.session,
                cached_tokens: r.cached_tokens,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_times_are_written_as_gaps_and_read_back_exactly_in_either_form() {
        let line = r#"{"point":"p","attempt":1,"index":0,"warmup":false,"scheduled_s":0.5,"start_s":0.5,"first_token_s":0.6,"end_s":0.9,"chunk_us":[100,250,250,4000000000],"chunks":5,"prompt_tokens":3,"completion_tokens":5,"http_status":200,"error":null}"#;
        let old: RequestRecord = serde_json::from_str(line).unwrap();
        assert_eq!(old.chunk_us, [100, 250, 250, 4_000_000_000]);
        let written = serde_json::to_string(&old).unwrap();
        assert!(written.contains(r#""chunk_gap_us":[100,150,0,3999999750]"#), "{written}");
        assert!(!written.contains(r#""chunk_us""#), "{written}");
        assert_eq!(serde_json::from_str::<RequestRecord>(&written).unwrap(), old);
        // Any sequence round-trips, even one that is not increasing (wrapping arithmetic).
        assert_eq!(wire::to_offsets(&wire::to_gaps(&[5, 3, u32::MAX, 0])), [5, 3, u32::MAX, 0]);
    }
}
