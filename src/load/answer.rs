//! The text of an answer, read as it streams: a session's next turn resends it verbatim. The load's own SSE
//! parser counts chunks without decoding their text (its hot path allocates nothing per token); this reader
//! decodes each event in full, and runs only for the requests of a session.

use super::client::MAX_SSE_LINE;

/// What a session keeps of one answer.
#[derive(Debug, Default)]
pub struct Answer {
    /// A line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The answer's text: every `delta.content` (chat) or `text` (completions), in order.
    pub text: String,
    /// `usage.prompt_tokens_details.cached_tokens` of the final usage chunk, when the server sent it.
    pub cached_tokens: Option<u32>,
}

impl Answer {
    /// Feeds bytes as they arrive (any split: a line may span reads).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut from = 0;
        while let Some(end) = memchr::memchr(b'\n', &self.partial[from..]) {
            let line = std::mem::take(&mut self.partial);
            self.line(&line[from..from + end]);
            self.partial = line;
            from += end + 1;
        }
        self.partial.drain(..from);
        // The load's parser ends the request on such a line; the text is then never resent.
        if self.partial.len() > MAX_SSE_LINE {
            self.partial = Vec::new();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else { return };
        let payload = payload.trim_ascii();
        if payload.is_empty() || payload == b"[DONE]" {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
            self.event(&v);
        }
    }

    fn event(&mut self, v: &serde_json::Value) {
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()) {
            self.text.push_str(t);
        }
        self.usage(v);
    }

    fn usage(&mut self, v: &serde_json::Value) {
        if let Some(n) = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() {
            self.cached_tokens = Some(n.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// A whole (non-streamed) answer.
    pub fn whole(&mut self, v: &serde_json::Value) {
        let choice = &v["choices"][0];
        if let Some(t) = choice["message"]["content"].as_str().or_else(|| choice["text"].as_str()) {
            self.text.push_str(t);
        }
        self.usage(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_cached_tokens_are_read_across_any_split() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" He said \\\"hi\\\"\\n\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" é\"},\"finish_reason\":null}]}\r\n\r\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":128}}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for step in [1, 3, 7, stream.len()] {
            let mut a = Answer::default();
            for part in stream.chunks(step) {
                a.feed(part);
            }
            assert_eq!(a.text, " He said \"hi\"\n é", "split {step}");
            assert_eq!(a.cached_tokens, Some(128));
        }
    }
}
