//! Fixtures shared by the unit tests of `stats` (rate, search, sweep): a client and a request record with
//! every field a test does not vary at one plain value, so each test names only what it is about.

use crate::record::plan::ClientConfig;
use crate::record::request::RequestRecord;

/// A streaming client (`ignore_eos`) whose measured phase is sized by time: a test sets the load shape, the
/// lengths, the timeout and the error budget it needs over this.
pub fn timed_client(duration_s: f64) -> ClientConfig {
    ClientConfig { ignore_eos: true, stream: true, duration_s: Some(duration_s), ..Default::default() }
}

/// A request of `point` answered in one chunk with HTTP 200, 8 prompt tokens and 1 completion token:
/// scheduled at `scheduled_s`, sent at `start_s`, its first token `ttft_s` and its end `e2e_s` after that.
pub fn ok_request(point: &str, index: u32, scheduled_s: f64, start_s: f64, ttft_s: f64, e2e_s: f64) -> RequestRecord {
    RequestRecord {
        point: point.into(),
        attempt: 0,
        index,
        warmup: false,
        scheduled_s,
        start_s,
        first_token_s: Some(start_s + ttft_s),
        end_s: start_s + e2e_s,
        chunk_us: vec![],
        chunk_tokens: vec![],
        chunks: 1,
        tail: false,
        prompt_tokens: Some(8),
        completion_tokens: Some(1),
        http_status: Some(200),
        error: None,
        ..Default::default()
    }
}
