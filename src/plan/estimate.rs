//! A rough wall-time estimate, before anything runs: server starts and stops, plus requests in batches of
//! the concurrency. Per-engine defaults come from measured startups (vLLM on an H200: 70–120 s to ready);
//! a spec's `estimate:` overrides them (e.g. ~30 s for vLLM on CPU with --enforce-eager).

use super::{RateSearchPlan, ServerGroup, WallEstimate};
use crate::spec::{EngineKind, Spec};

/// (startup, stop, per request) seconds for an engine kind.
pub fn defaults(kind: EngineKind) -> (f64, f64, f64) {
    match kind {
        EngineKind::Vllm => (90.0, 5.0, 0.5),
        EngineKind::Command => (30.0, 5.0, 0.5),
        EngineKind::External => (0.0, 0.0, 0.5),
    }
}

/// With a search, each group measures about `max_probes` of its ladder's rungs: its points count in that share.
pub fn wall_time(spec: &Spec, groups: &[ServerGroup], search: Option<&RateSearchPlan>) -> WallEstimate {
    let (d_start, d_stop, d_req) = defaults(spec.engine.kind);
    let o = &spec.estimate;
    let startup_s = o.startup.map_or(d_start, |d| d.0.as_secs_f64());
    let stop_s = o.stop.map_or(d_stop, |d| d.0.as_secs_f64());
    let per_request_s = o.per_request.map_or(d_req, |d| d.0.as_secs_f64());
    let from_spec = o.startup.is_some() || o.stop.is_some() || o.per_request.is_some();
    let server_warmup_s = spec.load.as_ref().map_or(0.0, |l| l.server_warmup.0.as_secs_f64());
    // With a precision target every cell runs min_repeats rounds and at most max_repeats.
    let min_repeat = spec.precision.map(|p| p.min_repeats as u32);
    let share = search.map_or(1.0, |s| s.max_probes as f64 / s.ladder.len().max(1) as f64);
    let (mut total_s, mut min_total_s) = (0.0, 0.0);
    for group in groups {
        let mut fixed = 0.0;
        if group.server.kind != EngineKind::External {
            fixed += startup_s + stop_s;
        }
        if group.points.iter().any(|p| p.client.is_some()) {
            fixed += server_warmup_s;
        }
        total_s += fixed;
        min_total_s += fixed;
        for point in &group.points {
            if let Some(c) = &point.client {
                // A session is its turns' requests in a row, with its think times between them.
                let (per_session, think_s) = c.sessions.map_or((1.0, 0.0), |s| {
                    let turns = s.turns.mean().max(1.0);
                    (turns, (turns - 1.0) * s.think_ms.mean() / 1e3)
                });
                let batches = f64::from((c.warmup + c.requests).div_ceil(c.concurrency.max(1)));
                let batches = batches * per_session + batches * think_s / per_request_s.max(1e-9);
                // A phase by time lasts its duration plus about one request to drain (tail requests); an
                // open loop's at least its minimum arrivals at its rate.
                let floor = c.open_loop.as_ref().map_or(0.0, |o| f64::from(o.min_requests) / o.rate);
                let phase = c.duration_s.map_or(0.0, |d| d.max(floor) + per_request_s);
                let s = (batches * per_request_s + phase) * share;
                total_s += s;
                if min_repeat.is_none_or(|m| point.repeat < m) {
                    min_total_s += s;
                }
            }
        }
    }
    let min_total_s = min_repeat.map(|_| min_total_s);
    WallEstimate { startup_s, stop_s, per_request_s, from_spec, total_s, min_total_s }
}

/// `1h 02m 03s`, `6m 20s`, `45s`.
pub fn human(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// Each group's share of the estimate (start, points, stop), in plan order: what the slots are packed by.
pub fn group_costs(spec: &Spec, plan: &super::Plan) -> Vec<f64> {
    plan.groups.iter().map(|g| wall_time(spec, std::slice::from_ref(g), plan.search.as_ref()).total_s).collect()
}
