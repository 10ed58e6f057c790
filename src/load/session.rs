//! Multi-turn sessions (`load.sessions`) on the chat endpoint. A session's turns run in order: turn `t`
//! sends the user messages of turns 1 to `t` with, between them, the answers the server actually returned
//! (their streamed text, verbatim). Everything that can be is drawn before the session starts, seeded by
//! (seed, phase salt, session, turn): the number of turns, each user message's length and text, each
//! turn's `max_tokens` and think time. Only the answers come from the server.
//!
//! Sessions arrive by concurrency (that many sessions in flight, each starting the next when it ends) or by
//! rate (session arrivals on the open loop's pre-drawn schedule; `max_concurrency` caps sessions in flight).
//! A turn that fails ends its session: its later turns are not sent, because their history would hold no
//! answer to resend.

use super::answer::Answer;
use super::client::{self, Built, Phase, PhaseResult, RequestSpec};
use super::lengths::{self, Which};
use super::text::TextMaker;
use crate::record::RequestRecord;
use crate::record::plan::{LengthDist, SessionPlan};
use crate::record::request::SessionTurn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Salts that keep a session's draws independent of each other and of single-request draws.
const TURNS: u64 = 0x5E55_1011_0000_0001;
const USER: u64 = 0x5E55_1011_0000_0002;
const OUTPUT: u64 = 0x5E55_1011_0000_0003;
const THINK: u64 = 0x5E55_1011_0000_0004;
const TEXT: u64 = 0x5E55_1011_0000_0005;

/// A point's sessions: what is drawn for each, and the tokenizer their user messages are built with.
#[derive(Debug)]
pub struct Sessions {
    pub plan: SessionPlan,
    pub maker: Arc<TextMaker>,
    /// Each turn's `max_tokens` (a fixed length as `uniform` of one value).
    pub output: LengthDist,
    pub seed: u64,
}

/// One turn, drawn before its session starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    pub user_tokens: u32,
    pub max_tokens: u32,
    /// Milliseconds from the previous turn's last token to this turn's send (0 for the first turn).
    pub think_ms: u32,
}

/// A request's index in its phase: unique, and in session-then-turn order.
pub fn index(session: u32, turn: u32) -> u32 {
    session.saturating_mul(SessionPlan::MAX_TURNS).saturating_add(turn.saturating_sub(1))
}

impl Sessions {
    fn state(&self, salt: u64, which: u64, session: u32, turn: u32, w: Which) -> u64 {
        lengths::state(self.seed, salt ^ which, u64::from(index(session, turn)), w)
    }

    /// Session `session`'s turns as drawn for a phase of salt `salt`.
    pub fn draw(&self, salt: u64, session: u32) -> Vec<Turn> {
        let turns = lengths::draw(&self.plan.turns, &mut self.state(salt, TURNS, session, 0, Which::Prompt)).max(1);
        (1..=turns)
            .map(|t| Turn {
                user_tokens: lengths::draw(
                    &self.plan.user_tokens,
                    &mut self.state(salt, USER, session, t, Which::Prompt),
                ),
                max_tokens: lengths::draw(&self.output, &mut self.state(salt, OUTPUT, session, t, Which::Output)),
                think_ms: match t {
                    1 => 0,
                    _ => lengths::draw(&self.plan.think_ms, &mut self.state(salt, THINK, session, t, Which::Prompt)),
                },
            })
            .collect()
    }

    /// The user message of a turn: text of `len` tokens of the model's tokenizer, and its count.
    pub fn user_text(&self, salt: u64, session: u32, turn: u32, len: u32) -> (String, u32) {
        let own = self.state(salt, TEXT, session, turn, Which::Prompt);
        self.maker.text(len, 0, 0, own, false)
    }
}

/// The body of a turn: the history (user, answer, user, ..., user) as alternating messages.
fn body(spec: &RequestSpec, history: &[String], max_tokens: u32) -> Vec<u8> {
    let messages: Vec<serde_json::Value> = history
        .iter()
        .enumerate()
        .map(|(i, text)| serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": text}))
        .collect();
    let mut body = serde_json::json!({
        "model": spec.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "ignore_eos": spec.ignore_eos,
        "stream": spec.stream,
    });
    if spec.stream {
        body["stream_options"] = serde_json::json!({"include_usage": true, "continuous_usage_stats": true});
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What every session of a phase shares.
struct Shared {
    http: reqwest::Client,
    spec: Arc<RequestSpec>,
    sessions: Arc<Sessions>,
    phase: Phase,
    t0: Instant,
}

/// One session, turn after turn; `scheduled` is its arrival (or when its closed-loop slot was free), `slot`
/// when a `max_concurrency` slot became free for it.
async fn session(sh: &Shared, id: u32, scheduled: Instant, slot: Option<f64>) -> Vec<RequestRecord> {
    let (spec, phase, t0) = (&*sh.spec, &sh.phase, sh.t0);
    let turns = sh.sessions.draw(phase.salt, id);
    let mut records = Vec::with_capacity(turns.len());
    let mut history: Vec<String> = Vec::with_capacity(2 * turns.len());
    // The history's tokens as the client counts them: user messages as built, answers through the tokenizer.
    let mut history_tokens = 0u32;
    let mut due = scheduled;
    for (t, turn) in (1u32..).zip(&turns) {
        if t > 1 {
            tokio::time::sleep_until(due.into()).await;
        }
        let (user, n) = sh.sessions.user_text(phase.salt, id, t, turn.user_tokens);
        history.push(user);
        let built = Built {
            bytes: body(spec, &history, turn.max_tokens),
            max_tokens: turn.max_tokens,
            sent_tokens: Some(history_tokens.saturating_add(n)),
        };
        let mut answer = Answer::default();
        let mut r =
            client::one_request_reading(&sh.http, spec, phase, (index(id, t), built), (t0, due), Some(&mut answer))
                .await;
        r.session = Some(SessionTurn { id, turn: t });
        r.cached_tokens = answer.cached_tokens;
        if t == 1 {
            r.slot_s = slot;
        }
        let (ok, end_s) = (r.ok(), r.end_s);
        records.push(r);
        if !ok {
            break;
        }
        history_tokens =
            history_tokens.saturating_add(n).saturating_add(sh.sessions.maker.count(&answer.text, false).unwrap_or(0));
        history.push(answer.text);
        let next_think = turns.get(t as usize).map_or(0, |next| next.think_ms);
        due = t0 + Duration::from_secs_f64(end_s.max(0.0)) + Duration::from_millis(u64::from(next_think));
    }
    records
}

/// A phase of sessions: `phase.requests` sessions (0: as many as start within `phase.duration`), closed
/// loop at `phase.concurrency` sessions in flight, or open loop on the phase's schedule of session arrivals.
pub async fn run(
    http: &reqwest::Client,
    spec: &Arc<RequestSpec>,
    sessions: &Arc<Sessions>,
    phase: &Phase,
) -> PhaseResult {
    let t0 = Instant::now();
    let sh = Arc::new(Shared {
        http: http.clone(),
        spec: spec.clone(),
        sessions: sessions.clone(),
        phase: phase.clone(),
        t0,
    });
    let mut tasks = JoinSet::new();
    match &phase.open_loop {
        None => {
            let next = Arc::new(AtomicU32::new(0));
            let deadline = phase.duration.map(|d| t0 + d);
            let workers = match deadline {
                Some(_) => phase.concurrency.max(1),
                None => phase.concurrency.min(phase.requests).max(1),
            };
            for _ in 0..workers {
                let (sh, next) = (sh.clone(), next.clone());
                tasks.spawn(async move {
                    let mut records = Vec::new();
                    loop {
                        let now = Instant::now();
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let over = id >= SessionPlan::MAX_SESSIONS
                            || match deadline {
                                Some(d) => now >= d,
                                None => id >= sh.phase.requests,
                            };
                        if over {
                            break records;
                        }
                        records.extend(session(&sh, id, now, None).await);
                    }
                });
            }
        }
        Some(o) => {
            let duration_s = phase.duration.map(|d| d.as_secs_f64());
            let arrivals = super::arrival::schedule(o, phase.schedule_seed, duration_s, phase.requests).measured;
            let cap =
                (phase.concurrency > 0).then(|| Arc::new(tokio::sync::Semaphore::new(phase.concurrency as usize)));
            for (id, at) in (0..SessionPlan::MAX_SESSIONS).zip(arrivals) {
                let due = t0 + Duration::from_secs_f64(at.max(0.0));
                tokio::time::sleep_until(due.into()).await;
                let permit = match &cap {
                    Some(c) => c.clone().acquire_owned().await.ok(),
                    None => None,
                };
                let slot = permit.as_ref().map(|_| Instant::now().duration_since(t0).as_secs_f64());
                let sh = sh.clone();
                tasks.spawn(async move {
                    let records = session(&sh, id, due, slot).await;
                    drop(permit);
                    records
                });
            }
        }
    }
    let mut records = Vec::new();
    let mut panicked = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => records.extend(r),
            Err(e) => panicked = panicked.or(Some(client::join_error(e))),
        }
    }
    records.sort_by_key(|r| r.index);
    let wall_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    PhaseResult { records, wall_s, t0, panicked }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Option<Arc<TextMaker>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-llama");
        dir.join("tokenizer.json").exists().then(|| Arc::new(TextMaker::load(&dir).unwrap()))
    }

    #[test]
    fn draws_are_seeded_bounded_and_independent_of_order() {
        let Some(maker) = tiny() else { return };
        let plan = SessionPlan {
            count: 8,
            turns: LengthDist::Uniform { min: 1, max: 6 },
            user_tokens: LengthDist::Lognormal { mean: 40.0, sigma: 0.5, min: 8, max: 200 },
            think_ms: LengthDist::Uniform { min: 10, max: 20 },
        };
        let s = Sessions { plan, maker, output: LengthDist::Uniform { min: 2, max: 9 }, seed: 3 };
        let all: Vec<Vec<Turn>> = (0..200).map(|i| s.draw(7, i)).collect();
        assert_eq!(s.draw(7, 150), all[150], "a session's draws do not depend on the others'");
        assert_ne!(s.draw(8, 150), all[150], "another phase, other draws");
        let lens: std::collections::BTreeSet<usize> = all.iter().map(Vec::len).collect();
        assert_eq!(lens, (1..=6).collect(), "every turn count of the distribution occurs");
        for turns in &all {
            assert_eq!(turns[0].think_ms, 0);
            for t in turns {
                assert!((8..=200).contains(&t.user_tokens) && (2..=9).contains(&t.max_tokens), "{t:?}");
                assert!(turns.len() == 1 || t.think_ms == 0 || (10..=20).contains(&t.think_ms), "{t:?}");
            }
        }
        let (a, n) = s.user_text(7, 3, 2, 33);
        assert_eq!((n, s.maker.count(&a, false)), (33, Some(33)), "exact length in the model's tokens");
        assert_eq!(s.user_text(7, 3, 2, 33).0, a);
        assert_ne!(s.user_text(7, 3, 3, 33).0, a, "each turn's message is its own");
        assert!(index(3, 1) < index(3, 2) && index(3, 1000) < index(4, 1));
    }
}
