//! `load.sessions`, checked: multi-turn sessions on the chat endpoint. Their lengths are distributions of the
//! same kind as `prompt_tokens` (a fixed value is a `uniform` of one value), their turns are bounded so a
//! request's index is unique, and a session of nominal length must fit the server's context.

use super::check::at_point;
use super::workload::length;
use super::{PlanError, key};
use crate::record::plan::{Endpoint, LengthDist, SessionPlan};
use crate::spec::{IntOrTemplate, Load, Scalar, ThinkTime};
use indexmap::IndexMap;

/// A length as a distribution: a fixed one is `uniform` from it to it.
fn dist_of((fixed, dist): (u32, Option<LengthDist>)) -> LengthDist {
    dist.unwrap_or(LengthDist::Uniform { min: fixed, max: fixed })
}

/// The keys a session's history replaces, with why.
fn conflicts(load: &Load) -> Option<(&'static str, &'static str)> {
    let why = "a session's prompt is its history and a new user message of `sessions.user_tokens`";
    if load.trace.is_some() {
        return Some(("trace", "a trace replays single requests on its own schedule"));
    }
    if load.dataset.is_some() {
        return Some(("dataset", why));
    }
    if load.prompts_file.is_some() {
        return Some(("prompts_file", why));
    }
    if load.requests.is_some() {
        return Some(("requests", "a session phase is sized by `sessions.count` (or `duration`)"));
    }
    if !matches!(load.shared_prefix_tokens, IntOrTemplate::Int(0)) {
        return Some(("shared_prefix_tokens", "a session shares its own history, turn after turn"));
    }
    None
}

/// Renders and checks `load.sessions` at one point; `out` is `max_tokens` as planned (per turn).
pub fn plan(
    load: &Load,
    vars: &IndexMap<String, Scalar>,
    context: Option<u64>,
    out: (u32, Option<LengthDist>),
    int: &dyn Fn(&str, &IntOrTemplate, i64) -> Result<u32, PlanError>,
) -> Result<Option<SessionPlan>, PlanError> {
    let Some(s) = &load.sessions else { return Ok(None) };
    if load.endpoint != Endpoint::Chat {
        return Err(PlanError::at(
            key(&["load", "sessions"]),
            "sessions resend a chat history, and `load.endpoint` is not `chat`",
            "add `endpoint: chat` under `load`",
        ));
    }
    if let Some((other, why)) = conflicts(load) {
        return Err(PlanError::at(
            key(&["load", other]),
            format!("`{other}` does not go with `sessions`: {why}"),
            format!("remove `{other}`"),
        ));
    }
    let count = match &s.count {
        Some(_) if load.duration.is_some() => {
            return Err(PlanError::at(
                key(&["load", "duration"]),
                "`duration` and `sessions.count` both size the measured phase",
                "keep one: `sessions: {count: N}` (a phase by count) or `duration: 60s` (sessions start until it has passed)",
            ));
        }
        Some(c) => int("sessions.count", c, 1)?,
        None => 0,
    };
    // A request's index is session × MAX_TURNS + turn − 1, a u32.
    super::check::at_most(&["load", "sessions", "count"], count, SessionPlan::MAX_SESSIONS, vars)?;
    let limit = context.map(|l| l.min(u64::from(super::MAX_TOKENS)) as u32);
    let turns = dist_of(length("sessions.turns", &s.turns, None, vars, int)?);
    if turns.bounds().1 > SessionPlan::MAX_TURNS {
        return Err(PlanError::at(
            key(&["load", "sessions", "turns"]),
            format!("a session of {} turns is more than servelab sends ({})", turns.bounds().1, SessionPlan::MAX_TURNS),
            format!("give turns at most {} (a distribution's `max`)", SessionPlan::MAX_TURNS),
        ));
    }
    let user_tokens = dist_of(length("sessions.user_tokens", &s.user_tokens, limit, vars, int)?);
    let think_ms = match &s.think_time {
        ThinkTime::Fixed(d) => {
            let ms = d.0.as_millis().min(u128::from(u32::MAX)) as u32;
            LengthDist::Uniform { min: ms, max: ms }
        }
        ThinkTime::Dist(d) => {
            dist_of(length("sessions.think_time", &crate::spec::Length::Dist(d.clone()), None, vars, int)?)
        }
    };
    // The last turn of a session of nominal length holds every turn's message and answer: it must fit.
    let per_turn = user_tokens.mean() + dist_of(out).mean();
    let nominal = turns.mean().round() * per_turn;
    if let Some(l) = limit
        && nominal > f64::from(l)
    {
        return Err(PlanError::at(
            key(&["load", "sessions", "turns"]),
            format!(
                "a session of {} turns of {} user and {} answer tokens holds {nominal:.0} tokens by its last turn, \
                 more than max-model-len {l}{}",
                turns.mean().round(),
                user_tokens.mean().round(),
                dist_of(out).mean().round(),
                at_point(vars)
            ),
            "fewer turns, shorter `user_tokens` or `max_tokens`, or a longer `--max-model-len`",
        ));
    }
    Ok(Some(SessionPlan { count, turns, user_tokens, think_ms }))
}
