//! Tune: one server start at a time, as `stats::tuning` asks for it (the search's, then the
//! confirmation's), each measuring the points it was started for.

use super::{DoneReason, Policy, Schedule, Session, Start, Step, StopWhy};
use crate::record::Recorded;

pub(super) struct Tune;

impl Policy for Tune {
    fn on_running(&self, s: &Schedule<'_>, start: &Start, _rec: &Recorded) -> Step {
        match s.next_unvisited(start) {
            Some(p) => Schedule::measure_or_skip(&start.group, p, None),
            None => Step::StopGroup { group: start.group.clone(), why: StopWhy::Finished },
        }
    }

    fn to_start(
        &self,
        s: &Schedule<'_>,
        rec: &Recorded,
        session: &Session,
    ) -> Result<Vec<(String, Vec<String>)>, DoneReason> {
        // Each start is chosen on what the ones before it measured.
        if session.starts.iter().any(|st| st.phase != super::Phase::Ended) {
            return Ok(Vec::new());
        }
        let Some(next) = crate::stats::tuning::analyze(s.spec, s.plan, rec, &s.rules.pruned).and_then(|t| t.next)
        else {
            return Err(DoneReason::Complete);
        };
        let (group, points) = (next.group, next.points);
        if s.rules.pruned.contains_key(&group) {
            return Err(DoneReason::AskedAgain { group });
        }
        let asked = session.starts.iter().any(|st| st.group == group && st.points.first() == points.first());
        if asked {
            return Err(DoneReason::AskedAgain { group });
        }
        let Some(g) = s.group(&group) else { return Err(DoneReason::Complete) };
        let todo: Vec<String> = g.points.iter().filter(|p| points.contains(&p.id)).map(|p| p.id.clone()).collect();
        if todo.is_empty() {
            return Err(DoneReason::Complete);
        }
        Ok(vec![(group, todo)])
    }
}
