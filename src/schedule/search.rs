//! The rate search: on each group's server, the rung the search asks for next, judged on what was recorded
//! (`stats::search`), until the search is over. Groups are independent: each one's search is a bisection on
//! its own server.

use super::{Policy, Schedule, Session, Start, Step, StopWhy};
use crate::plan::ServerGroup;
use crate::record::Recorded;

pub(super) struct Search;

fn next(s: &Schedule<'_>, rec: &Recorded, group: &ServerGroup) -> Option<String> {
    let rules = crate::stats::search::Rules {
        slo: s.spec.slo.as_ref(),
        precision: s.spec.precision.map(crate::spec::Precision::target),
    };
    crate::stats::search::replay_recorded(group, rec, &rules).next
}

impl Policy for Search {
    fn on_running(&self, s: &Schedule<'_>, start: &Start, rec: &Recorded) -> Step {
        let stop = |why| Step::StopGroup { group: start.group.clone(), why };
        if start.dead {
            return stop(StopWhy::Dead);
        }
        let Some(group) = s.group(&start.group) else { return stop(StopWhy::Finished) };
        let Some(id) = next(s, rec, group) else { return stop(StopWhy::Finished) };
        if start.visited.contains(&id) {
            return stop(StopWhy::AskedAgain { point: id });
        }
        match group.points.iter().find(|p| p.id == id) {
            Some(p) => Schedule::measure_or_skip(&start.group, p, None),
            None => stop(StopWhy::Finished),
        }
    }

    fn to_start(
        &self,
        s: &Schedule<'_>,
        rec: &Recorded,
        session: &Session,
    ) -> Result<Vec<(String, Vec<String>)>, super::DoneReason> {
        Ok(s.plan
            .groups
            .iter()
            .filter(|g| !session.started(&g.id))
            .filter_map(|g| Some((g.id.clone(), vec![next(s, rec, g)?])))
            .collect())
    }
}
