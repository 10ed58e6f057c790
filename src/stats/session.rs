//! Multi-turn sessions (`load.sessions`): per session point, TTFT by turn number as the history grows, the
//! prefix-cache hit rate by turn (the server's own per-request count, `cached_tokens`, over the turn's prompt
//! tokens), and session time (first send to last token). Typed values only; templates/sessions.md words them.

use super::trace::Spread;
use crate::record::{PointRecord, RequestRecord, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The requests of one turn number across a point's sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRow {
    /// From 1: turn `t` resends the history of turns 1 to `t − 1`.
    pub turn: u32,
    /// Requests of this turn number, and those that failed.
    pub requests: usize,
    pub errors: usize,
    /// TTFT over the turn's successful requests.
    pub ttft: Spread,
    /// Prompt tokens as the server counted them (`usage`), p50 over the turn's successful requests.
    pub prompt_tokens_p50: Option<f64>,
    /// Σ cached_tokens / Σ prompt_tokens over the turn's requests whose answer said both; None when none did.
    pub hit_rate: Option<f64>,
    /// Requests whose answer carried `cached_tokens`.
    pub cached_counted: usize,
}

/// One session point (its latest attempt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionPoint {
    pub group: String,
    /// The point's grid values, as the reports write them.
    pub vars: String,
    pub point: String,
    pub repeat: u32,
    /// An open loop (sessions per second) rather than sessions in flight.
    pub open: bool,
    /// Sessions recorded, and those a failed turn ended (their last recorded turn failed).
    pub sessions: usize,
    pub ended_by_error: usize,
    /// Turns recorded per session.
    pub turns: Spread,
    /// From a session's first send to its last turn's end, over the sessions no error ended (seconds).
    pub session_time: Spread,
    pub by_turn: Vec<TurnRow>,
    /// The server's prefix-cache hit rate over the whole phase from its counters, when it counts them.
    pub server_hit_rate: Option<f64>,
}

/// Every session point of the run, in the order points were committed (latest attempt, failed ones left out).
pub fn analyze(points: &[PointRecord], requests: &[RequestRecord]) -> Vec<SessionPoint> {
    let latest = |p: &PointRecord| !points.iter().any(|q| q.point == p.point && q.attempt > p.attempt);
    points
        .iter()
        .filter(|p| p.status == Status::Ok && p.client.sessions.is_some() && latest(p))
        .map(|p| {
            let reqs: Vec<&RequestRecord> = requests
                .iter()
                .filter(|r| r.point == p.point && r.attempt == p.attempt && !r.warmup && r.session.is_some())
                .collect();
            point(p, &reqs)
        })
        .collect()
}

fn point(p: &PointRecord, reqs: &[&RequestRecord]) -> SessionPoint {
    let mut sessions: BTreeMap<u32, Vec<&RequestRecord>> = BTreeMap::new();
    let mut turns: BTreeMap<u32, Vec<&RequestRecord>> = BTreeMap::new();
    for r in reqs {
        let Some(s) = r.session else { continue };
        sessions.entry(s.id).or_default().push(r);
        turns.entry(s.turn).or_default().push(r);
    }
    let mut ended_by_error = 0;
    let mut times = Vec::new();
    for recs in sessions.values_mut() {
        recs.sort_by_key(|r| r.session.map_or(0, |s| s.turn));
        match recs.last() {
            Some(last) if !last.ok() => ended_by_error += 1,
            Some(last) => times.push(last.end_s - recs[0].start_s),
            None => {}
        }
    }
    let by_turn = turns.into_iter().map(|(turn, recs)| turn_row(turn, &recs)).collect();
    let server_hit_rate = super::trace::server_hit_rate(p);
    SessionPoint {
        group: p.group.clone(),
        vars: crate::record::values::vars_text(&p.vars, " "),
        point: p.point.clone(),
        repeat: p.repeat,
        open: p.client.open_loop.is_some(),
        sessions: sessions.len(),
        ended_by_error,
        turns: Spread::of(sessions.values().map(|v| v.len() as f64).collect()),
        session_time: Spread::of(times),
        by_turn,
        server_hit_rate,
    }
}

fn turn_row(turn: u32, recs: &[&RequestRecord]) -> TurnRow {
    let ok: Vec<&&RequestRecord> = recs.iter().filter(|r| r.ok()).collect();
    let mut prompts: Vec<f64> = ok.iter().filter_map(|r| r.prompt_tokens).map(f64::from).collect();
    prompts.sort_by(f64::total_cmp);
    let counted: Vec<(u32, u32)> = recs.iter().filter_map(|r| Some((r.cached_tokens?, r.prompt_tokens?))).collect();
    let prompt_sum: u64 = counted.iter().map(|c| u64::from(c.1)).sum();
    let cached_sum: u64 = counted.iter().map(|c| u64::from(c.0)).sum();
    TurnRow {
        turn,
        requests: recs.len(),
        errors: recs.len() - ok.len(),
        ttft: Spread::of(ok.iter().filter_map(|r| r.ttft_s()).collect()),
        prompt_tokens_p50: (!prompts.is_empty()).then(|| super::summary::percentile_sorted(&prompts, 50.0)),
        hit_rate: (prompt_sum > 0).then(|| cached_sum as f64 / prompt_sum as f64),
        cached_counted: counted.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::request::SessionTurn;

    fn req(id: u32, turn: u32, start: f64, end: f64, prompt: u32, cached: Option<u32>, ok: bool) -> RequestRecord {
        RequestRecord {
            point: "p".into(),
            index: id * 1000 + turn - 1,
            start_s: start,
            first_token_s: Some(start + 0.01 * f64::from(turn)),
            end_s: end,
            prompt_tokens: Some(prompt),
            cached_tokens: cached,
            session: Some(SessionTurn { id, turn }),
            error: (!ok)
                .then(|| crate::record::RequestError { kind: crate::record::ErrorKind::Timeout, message: "t".into() }),
            ..Default::default()
        }
    }

    #[test]
    fn turns_sessions_and_hit_rates_are_counted_per_turn() {
        let reqs = [
            req(0, 1, 0.0, 1.0, 100, Some(0), true),
            req(0, 2, 1.5, 2.0, 300, Some(96), true),
            req(1, 1, 0.2, 0.9, 100, Some(0), true),
            req(1, 2, 1.0, 1.2, 280, None, false),
            req(2, 1, 0.4, 0.6, 100, None, true),
        ];
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        let p = PointRecord { model: "m".into(), ..PointRecord::measured("p", "g", Default::default(), 2.0) };
        let s = point(&p, &refs);
        assert_eq!((s.sessions, s.ended_by_error), (3, 1));
        assert_eq!(s.session_time.n, 2, "the session an error ended has no session time");
        assert!((s.session_time.max - 2.0).abs() < 1e-9, "{:?}", s.session_time);
        assert_eq!(s.by_turn.len(), 2);
        let (t1, t2) = (&s.by_turn[0], &s.by_turn[1]);
        assert_eq!((t1.turn, t1.requests, t1.errors, t1.cached_counted), (1, 3, 0, 2));
        assert_eq!(t1.hit_rate, Some(0.0));
        assert_eq!((t2.turn, t2.requests, t2.errors, t2.cached_counted), (2, 2, 1, 1));
        assert_eq!(t2.hit_rate, Some(96.0 / 300.0));
        assert!((t2.ttft.p50 - 0.02).abs() < 1e-9, "the failed turn has no TTFT: {:?}", t2.ttft);
    }
}
