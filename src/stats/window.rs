//! The steady-state window of a measured phase, and per-token timing of each request.
//!
//! The window opens at the phase's first completed request (ramp-up is over: every slot has cycled once) and
//! closes at its last dispatch in time (after it, slots only drain). Throughput is the tokens whose chunks
//! arrived inside the window divided by its length; latency percentiles cover the requests started inside
//! it. `tail` requests (sent after a timed phase's duration only to hold the concurrency up) never count. A
//! window with fewer than max(2c, 20) completions is too short to be steady: the figures then cover the
//! whole phase, with a note.
//!
//! A closed loop whose responses are not streamed is the exception: each request's tokens all arrive at its
//! end, and a loop of like requests completes them in waves, so a window opening on the first completion
//! counts the wave it opens on and the one it closes on, one wave more than it spans (it read up to twice
//! the phase's rate on a GPU). Its window spans whole rounds of c completions: from the c-th, left out, to
//! the last that ends a round before the last dispatch (`delivered`).

use crate::record::RequestRecord;

/// Completions a window needs before its figures are used: max(2 × concurrency, 20).
pub fn min_completions(concurrency: u32) -> usize {
    (2 * concurrency as usize).max(20)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub open_s: f64,
    pub close_s: f64,
    /// Requests that completed inside the window.
    pub completions: usize,
    /// The opening instant itself is outside (a window opened on a completion, whose wave it leaves out).
    pub open_exclusive: bool,
}

impl Window {
    pub fn len_s(&self) -> f64 {
        self.close_s - self.open_s
    }
    pub fn contains(&self, t: f64) -> bool {
        (t > self.open_s || (t == self.open_s && !self.open_exclusive)) && t <= self.close_s
    }
}

/// The window of a phase's measured (non-warmup, non-tail) requests; None when it is empty.
pub fn window(reqs: &[&RequestRecord]) -> Option<Window> {
    let open_s = reqs.iter().filter(|r| r.ok()).map(|r| r.end_s).reduce(f64::min)?;
    let close_s = reqs.iter().map(|r| r.start_s).reduce(f64::max)?;
    if close_s <= open_s {
        return None;
    }
    let completions = reqs.iter().filter(|r| r.ok() && r.end_s >= open_s && r.end_s <= close_s).count();
    Some(Window { open_s, close_s, completions, open_exclusive: false })
}

/// The window a phase's figures come from, or None when it holds too few completions to be steady.
pub fn steady(c: &crate::record::plan::ClientConfig, reqs: &[&RequestRecord], metrics_version: u32) -> Option<Window> {
    let w = if waves_apply(c, metrics_version) { delivered(reqs, c.concurrency as usize) } else { window(reqs) };
    w.filter(|w| w.completions >= min_completions(c.concurrency))
}

/// Whether a phase of this client takes the [`delivered`] window: a closed loop whose responses are not
/// streamed, in a run whose figures mean that (`metrics_version` 3 on).
pub fn waves_apply(c: &crate::record::plan::ClientConfig, metrics_version: u32) -> bool {
    let closed = c.open_loop.is_none() && c.trace.is_none() && c.sessions.is_none() && c.concurrency > 0;
    metrics_version >= 3 && closed && !c.stream
}

/// The window of a closed loop of `slots` streams whose responses were not streamed: whole rounds of
/// `slots` completions. It opens at the `slots`-th completion (with like requests, every slot has delivered
/// once) and leaves that instant out; it closes on the last completion that ends a whole round, no later
/// than the last dispatch (after it slots only drain). Closing at the last dispatch itself would cut the wave it falls in,
/// and count part of it against the whole of its time. None without two whole rounds.
pub fn delivered(reqs: &[&RequestRecord], slots: usize) -> Option<Window> {
    let slots = slots.max(1);
    let mut ends: Vec<f64> = reqs.iter().filter(|r| r.ok()).map(|r| r.end_s).collect();
    ends.sort_by(f64::total_cmp);
    let last_dispatch = reqs.iter().map(|r| r.start_s).reduce(f64::max)?;
    let rounds = ends.iter().take_while(|e| **e <= last_dispatch).count() / slots;
    if rounds < 2 {
        return None;
    }
    let (open_s, close_s) = (ends[slots - 1], ends[rounds * slots - 1]);
    if close_s <= open_s {
        return None;
    }
    let completions = ends.iter().filter(|e| **e > open_s && **e <= close_s).count();
    Some(Window { open_s, close_s, completions, open_exclusive: true })
}

/// Whether the request's server sent tokens per chunk (vLLM's continuous usage stats).
pub fn has_chunk_tokens(r: &RequestRecord) -> bool {
    !r.chunk_tokens.is_empty() && r.chunk_tokens.len() == r.chunk_us.len() + 1
}

/// (arrival time, tokens) of each content chunk. Without per-chunk usage the completion tokens are spread
/// evenly over the chunks; a non-streamed response delivers them all at its end.
pub fn chunk_arrivals(r: &RequestRecord) -> Vec<(f64, f64)> {
    let total = f64::from(r.completion_tokens.unwrap_or(r.chunks));
    let Some(first) = r.first_token_s else { return vec![(r.end_s, total)] };
    let times = std::iter::once(first).chain(r.chunk_us.iter().map(|us| first + f64::from(*us) / 1e6));
    if has_chunk_tokens(r) {
        return times.zip(r.chunk_tokens.iter().map(|k| f64::from(*k))).collect();
    }
    let n = (r.chunk_us.len() + 1) as f64;
    times.map(|t| (t, total / n)).collect()
}

/// Tokens whose chunks arrived inside the window.
pub fn tokens_in(r: &RequestRecord, w: &Window) -> f64 {
    chunk_arrivals(r).iter().filter(|(t, _)| w.contains(*t)).map(|(_, k)| k).sum()
}

/// Time per output token after the first: (e2e − TTFT) / (tokens − 1); None under two tokens or without TTFT.
pub fn tpot_s(r: &RequestRecord) -> Option<f64> {
    let tokens = r.completion_tokens?;
    (tokens >= 2).then_some(())?;
    Some((r.end_s - r.first_token_s?) / f64::from(tokens - 1))
}

/// Inter-token latency samples: each chunk's gap split over the tokens it carried (one sample per token).
/// Without per-chunk usage, one sample per chunk gap (an overestimate when chunks carry several tokens).
pub fn itl_samples(r: &RequestRecord, out: &mut Vec<f64>) {
    if !has_chunk_tokens(r) {
        out.extend(r.gaps_s());
        return;
    }
    for (gap, k) in r.gaps_s().zip(&r.chunk_tokens[1..]) {
        if *k > 0 {
            out.extend(std::iter::repeat_n(gap / f64::from(*k), *k as usize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: f64, first: f64, end: f64) -> RequestRecord {
        RequestRecord {
            point: "p".into(),
            attempt: 0,
            index: 0,
            warmup: false,
            scheduled_s: start,
            start_s: start,
            first_token_s: Some(first),
            end_s: end,
            chunk_us: vec![100_000, 200_000, 300_000],
            chunk_tokens: vec![1, 2, 1, 4],
            chunks: 4,
            prompt_tokens: Some(8),
            completion_tokens: Some(8),
            http_status: Some(200),
            error: None,
            tail: false,
            ..Default::default()
        }
    }

    #[test]
    fn the_window_opens_at_the_first_completion_and_closes_at_the_last_dispatch() {
        let rs = [req(0.0, 0.1, 0.4), req(0.0, 0.2, 1.0), req(0.4, 0.5, 0.8), req(0.9, 1.0, 1.3)];
        let refs: Vec<&RequestRecord> = rs.iter().collect();
        let w = window(&refs).unwrap();
        assert_eq!((w.open_s, w.close_s, w.completions), (0.4, 0.9, 2));
        // Chunks at 0.5, 0.6, 0.7, 0.8 carry 1, 2, 1, 4 tokens: all inside.
        assert_eq!(tokens_in(&rs[2], &w), 8.0);
        // The last request's chunks (1.0 ...) all arrive after the window closed.
        assert_eq!(tokens_in(&rs[3], &w), 0.0);
        // The first one's chunks: 0.1, 0.2, 0.3 are before it opened, 0.4 (4 tokens) at its edge.
        assert_eq!(tokens_in(&rs[0], &w), 4.0);
    }

    /// A closed loop of 4 slots whose non-streamed requests take 1 s: each slot completes at j + 1 ms × slot
    /// and sends its next request 0.1 ms later, for 5 rounds. The rate is 4 requests (512 tokens) a second.
    fn waves() -> Vec<RequestRecord> {
        let mut out = Vec::new();
        for slot in 0..4 {
            let mut start = 0.0;
            for j in 1..=5 {
                let end = f64::from(j) + 0.001 * f64::from(slot);
                let mut r = req(start, 0.0, end);
                (r.first_token_s, r.chunk_us, r.chunk_tokens, r.chunks, r.completion_tokens) =
                    (None, vec![], vec![], 1, Some(128));
                out.push(r);
                start = end + 0.0001;
            }
        }
        out
    }

    #[test]
    fn a_window_of_waves_counts_the_waves_it_spans_once() {
        let rs = waves();
        let refs: Vec<&RequestRecord> = rs.iter().collect();
        let rate = |w: &Window| rs.iter().map(|r| tokens_in(r, w)).sum::<f64>() / w.len_s();
        // Opened on the first completion it counts 4 waves over the 3 s between the first and the last
        // dispatch (the last round's requests end after it).
        let first = window(&refs).unwrap();
        assert_eq!(first.completions, 16);
        assert!(rate(&first) > 1.2 * 512.0, "{}", rate(&first));
        // Opened once every slot delivered, the wave it opens on is out: 3 waves over 3 s.
        let w = delivered(&refs, 4).unwrap();
        assert_eq!((w.open_s, w.completions), (1.003, 12));
        assert!((rate(&w) - 512.0).abs() < 0.5, "{}", rate(&w));
        assert!(!w.contains(1.003) && w.contains(1.0031) && w.contains(w.close_s));
        // The last dispatch falls inside a wave (two slots send no 5th request): the window closes on the
        // last whole round, 2 waves over 2 s, rather than count half a wave against the whole of its time.
        let cut: Vec<&RequestRecord> = rs.iter().filter(|r| !(r.start_s > 4.0 && r.end_s > 5.0015)).collect();
        let w = delivered(&cut, 4).unwrap();
        assert_eq!((w.close_s, w.completions), (3.003, 8));
        assert!((rate(&w) - 512.0).abs() < 0.5, "{}", rate(&w));
        // Without two whole rounds before the last dispatch: no such window.
        assert_eq!(delivered(&refs, 9), None);
    }

    #[test]
    fn per_token_itl_splits_a_chunk_gap_over_its_tokens_and_tpot_covers_the_request() {
        let r = req(0.0, 0.1, 0.4);
        let mut itl = Vec::new();
        itl_samples(&r, &mut itl);
        let expected = [0.05, 0.05, 0.1, 0.025, 0.025, 0.025, 0.025];
        assert_eq!(itl.len(), 7);
        assert!(itl.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-9), "{itl:?}");
        assert!((tpot_s(&r).unwrap() - 0.3 / 7.0).abs() < 1e-12);
        let mut old = r.clone();
        old.chunk_tokens.clear();
        let mut per_chunk = Vec::new();
        itl_samples(&old, &mut per_chunk);
        assert_eq!(per_chunk.len(), 3, "without per-chunk usage: one sample per gap");
        assert_eq!(chunk_arrivals(&old).iter().map(|c| c.1).sum::<f64>(), 8.0);
    }
}
