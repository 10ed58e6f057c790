//! An incremental parser of vLLM's `/v1/completions` and `/v1/chat/completions` SSE streams, built for speed: each byte is scanned once
//! (memchr for line ends, memmem for the few keys), nothing is allocated per token, and a full JSON parse
//! happens only for the rare final usage chunk and for errors.
//!
//! vLLM writes one event per line: `data: {"id":...,"choices":[{"index":0,"text":" w12",...}],"usage":null}`,
//! then, with `stream_options.include_usage`, a chunk with `"choices":[]` and `"usage":{...}`, then
//! `data: [DONE]`. With `continuous_usage_stats` as well, every content chunk carries `"usage":{...}` with
//! the running completion-token count, which is how tokens per chunk are known.

use memchr::memchr;
use memchr::memmem::Finder;
use std::sync::LazyLock;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A content chunk; `non_empty` when its text is not "" (TTFT counts only those). With
    /// `continuous_usage_stats`, `completion_tokens` is the running count of tokens generated so far.
    Content {
        non_empty: bool,
        completion_tokens: Option<u32>,
    },
    /// The final usage chunk.
    Usage {
        prompt_tokens: Option<u32>,
        completion_tokens: Option<u32>,
    },
    Done,
    /// An error event in the stream (vLLM sends `{"error": {...}}`).
    Error(String),
    /// A line grew past the parser's limit without ending: the stream is broken or hostile.
    Overflow,
}

static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\":"));
/// Chat: a token's text is `delta.content` (`"reasoning_content"` does not match: the needle starts with `"`).
static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\":"));
static DELTA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"delta\":"));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":{"));
static PROMPT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"prompt_tokens\":"));
static COMPLETION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"completion_tokens\":"));

#[derive(Default)]
pub struct SseParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The longest line kept (0: no limit); past it the parser reports `Overflow` once and stops buffering.
    max_line: usize,
    overflowed: bool,
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn int_after(finder: &Finder<'_>, payload: &[u8]) -> Option<u32> {
    let at = finder.find(payload)? + finder.needle().len();
    let digits = skip_ws(&payload[at..]);
    let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

/// Classifies one `data:` payload.
pub fn classify(payload: &[u8]) -> Option<Event> {
    let payload = skip_ws(payload);
    if payload.starts_with(b"[DONE]") {
        return Some(Event::Done);
    }
    if payload.starts_with(b"{\"error\"") || payload.starts_with(b"{ \"error\"") {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(payload).chars().take(300).collect());
        return Some(Event::Error(msg));
    }
    let text = TEXT.find(payload).map(|at| at + TEXT.needle().len());
    if let Some(at) = text.or_else(|| CONTENT.find(payload).map(|at| at + CONTENT.needle().len())) {
        let rest = skip_ws(&payload[at..]);
        let non_empty = rest.len() > 1 && rest[0] == b'"' && rest[1] != b'"';
        // Per-chunk usage (vLLM's continuous_usage_stats) follows the choices in the same event.
        let completion_tokens = USAGE.find(rest).and_then(|u| int_after(&COMPLETION, &rest[u..]));
        return Some(Event::Content { non_empty, completion_tokens });
    }
    if let Some(at) = DELTA.find(payload) {
        // A chat chunk without content (a finish or a role-only delta): a chunk, never the first token.
        let completion_tokens = USAGE.find(&payload[at..]).and_then(|u| int_after(&COMPLETION, &payload[at + u..]));
        return Some(Event::Content { non_empty: false, completion_tokens });
    }
    if USAGE.find(payload).is_some() {
        return Some(Event::Usage {
            prompt_tokens: int_after(&PROMPT, payload),
            completion_tokens: int_after(&COMPLETION, payload),
        });
    }
    None
}

impl SseParser {
    pub fn with_max_line(max_line: usize) -> Self {
        SseParser { partial: Vec::new(), max_line, overflowed: false }
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds bytes as they arrive; `on_event` sees every complete event in order.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event)) {
        if self.overflowed {
            return;
        }
        if !self.partial.is_empty() {
            let Some(end) = memchr(b'\n', bytes) else {
                self.partial.extend_from_slice(bytes);
                self.check_overflow(&mut on_event);
                return;
            };
            self.partial.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.partial);
            line_event(&line, &mut on_event);
            self.partial = line;
            self.partial.clear();
            bytes = &bytes[end + 1..];
        }
        while let Some(end) = memchr(b'\n', bytes) {
            line_event(&bytes[..end], &mut on_event);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        self.check_overflow(&mut on_event);
    }

    /// Past `max_line` without a line end: report once, drop the buffer, read nothing more.
    fn check_overflow(&mut self, on_event: &mut impl FnMut(Event)) {
        if self.max_line > 0 && self.partial.len() > self.max_line {
            self.partial = Vec::new();
            self.overflowed = true;
            on_event(Event::Overflow);
        }
    }
}

fn line_event(line: &[u8], on_event: &mut impl FnMut(Event)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(payload) = line.strip_prefix(b"data:")
        && let Some(e) = classify(payload)
    {
        on_event(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_chunks_count_delta_content_and_skip_the_role_only_first_chunk() {
        let role = br#" {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0}}"#;
        let token = br#" {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" w3"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":10,"completion_tokens":1}}"#;
        let finish = br#" {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":10,"completion_tokens":1}}"#;
        let usage = br#" {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"total_tokens":10,"completion_tokens":1}}"#;
        assert_eq!(classify(role), Some(Event::Content { non_empty: false, completion_tokens: Some(0) }));
        assert_eq!(classify(token), Some(Event::Content { non_empty: true, completion_tokens: Some(1) }));
        assert_eq!(classify(finish), Some(Event::Content { non_empty: false, completion_tokens: Some(1) }));
        assert_eq!(classify(usage), Some(Event::Usage { prompt_tokens: Some(9), completion_tokens: Some(1) }));
    }

    const STREAM: &str = "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" w12\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" \\\"q\\\" w7\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":128,\"total_tokens\":192,\"completion_tokens\":64,\"prompt_tokens_details\":null}}\n\n\
data: [DONE]\n\n";

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| out.push(e));
        }
        out
    }

    #[test]
    fn parses_vllm_stream() {
        let expected = vec![
            Event::Content { non_empty: false, completion_tokens: None },
            Event::Content { non_empty: true, completion_tokens: None },
            Event::Content { non_empty: true, completion_tokens: None },
            Event::Usage { prompt_tokens: Some(128), completion_tokens: Some(64) },
            Event::Done,
        ];
        assert_eq!(events(&[STREAM.as_bytes()]), expected);
        // Split at every byte boundary: the same events.
        for cut in 1..STREAM.len() {
            let (a, b) = STREAM.as_bytes().split_at(cut);
            assert_eq!(events(&[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.as_bytes().chunks(7).collect();
        assert_eq!(events(&bytes), expected);
    }

    #[test]
    fn continuous_usage_gives_the_running_token_count_of_each_content_chunk() {
        let chunk = |text: &str, n: u32| {
            format!(
                "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}}],\"usage\":{{\"prompt_tokens\":8,\"total_tokens\":{},\"completion_tokens\":{n}}}}}\n\n",
                8 + n
            )
        };
        let stream = format!("{}{}data: [DONE]\n\n", chunk(" w1", 1), chunk(" w2 w3 w4", 4));
        assert_eq!(
            events(&[stream.as_bytes()]),
            vec![
                Event::Content { non_empty: true, completion_tokens: Some(1) },
                Event::Content { non_empty: true, completion_tokens: Some(4) },
                Event::Done
            ]
        );
    }

    #[test]
    fn a_line_without_end_overflows_once_and_stops_buffering() {
        let mut p = SseParser::with_max_line(64);
        let mut out = Vec::new();
        p.feed(b"data: [DONE]\n", |e| out.push(e));
        for _ in 0..100 {
            p.feed(&[b'x'; 16], |e| out.push(e));
        }
        assert_eq!(out, vec![Event::Done, Event::Overflow]);
        assert!(p.overflowed() && p.partial.capacity() == 0);
    }

    #[test]
    fn errors_and_crlf() {
        let s = "data: {\"error\": {\"object\": \"error\", \"message\": \"engine died\", \"code\": 500}}\r\n\r\n";
        assert_eq!(events(&[s.as_bytes()]), vec![Event::Error("engine died".into())]);
        assert_eq!(events(&[b": comment\nevent: x\ndata: [DONE]\r\n"]), vec![Event::Done]);
    }
}

#[cfg(test)]
mod recorded {
    use super::*;

    #[test]
    fn parses_a_recorded_vllm_032_stream() {
        let text = include_str!("../../tests/fixtures/sse/vllm-0.32-cpu-4-tokens.txt");
        let mut events = Vec::new();
        SseParser::default().feed(text.as_bytes(), |e| events.push(e));
        assert_eq!(events.len(), 6);
        assert!(events[..4].iter().all(|e| *e == Event::Content { non_empty: true, completion_tokens: None }));
        assert_eq!(events[4], Event::Usage { prompt_tokens: Some(4), completion_tokens: Some(4) });
        assert_eq!(events[5], Event::Done);
    }
}
