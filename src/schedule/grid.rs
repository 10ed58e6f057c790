//! The grid: every group's pending points in plan order, one start each; with a precision target, the
//! repeats past `min_repeats` that a cell no longer needs are passed over.

use super::{Policy, Schedule, Session, Start, Step, StopWhy};
use crate::plan::{Point, ServerGroup};
use crate::record::Recorded;

pub(super) struct Grid;

impl Policy for Grid {
    fn on_running(&self, s: &Schedule<'_>, start: &Start, rec: &Recorded) -> Step {
        let Some(p) = s.next_unvisited(start) else {
            return Step::StopGroup { group: start.group.clone(), why: StopWhy::Finished };
        };
        let met = match (s.plan.precision, s.group(&start.group)) {
            // On a dead server every point is recorded as not run: none is passed over.
            (Some(t), Some(g)) if p.repeat >= t.min_repeats && !start.dead && !needs_repeat(s, rec, g, p, t.rel_ci) => {
                Some(t.rel_ci)
            }
            _ => None,
        };
        Schedule::measure_or_skip(&start.group, p, met)
    }

    fn to_start(
        &self,
        s: &Schedule<'_>,
        _rec: &Recorded,
        session: &Session,
    ) -> Result<Vec<(String, Vec<String>)>, super::DoneReason> {
        let pending = |g: &ServerGroup| -> Vec<String> {
            g.points.iter().filter(|p| !s.done.contains(&p.id)).map(|p| p.id.clone()).collect()
        };
        Ok(s.plan
            .groups
            .iter()
            .filter(|g| !session.started(&g.id))
            .map(|g| (g.id.clone(), pending(g)))
            .filter(|(_, points)| !points.is_empty())
            .collect())
    }
}

/// Whether `point`'s cell needs another repeat, judged on its committed repeats: its tokens/s interval is
/// wider than `rel_ci`, or a decision made from it (the latency budget, the SLO attainment) is still open.
pub(super) fn needs_repeat(s: &Schedule<'_>, rec: &Recorded, group: &ServerGroup, point: &Point, rel_ci: f64) -> bool {
    let points: Vec<_> = rec
        .points
        .iter()
        .filter(|p| p.group == group.id && Some(&p.client) == point.client.as_ref())
        .cloned()
        .collect();
    let spec = s.spec;
    if point.client.as_ref().is_some_and(|c| c.open_loop.is_some()) {
        let slo = spec.slo.as_ref();
        let sweeps = crate::stats::rate::analyze(&points, &rec.requests, slo);
        let target = slo.map(|s| s.attainment);
        return sweeps
            .first()
            .and_then(|s| s.cells.first())
            .is_none_or(|c| crate::stats::rate::needs_repeat(c, rel_ci, target));
    }
    let sweeps = crate::stats::sweep::analyze(
        &points,
        &rec.requests,
        &rec.samples,
        spec.effective_policy(),
        &spec.knee,
        rec.metrics_version,
    );
    let budget = spec.knee.p95_budget.map(|b| b.0.as_secs_f64());
    sweeps.first().and_then(|s| s.cells.first()).is_none_or(|c| crate::stats::sweep::needs_repeat(c, rel_ci, budget))
}
