//! Tune: server starts as `stats::tune` asks for them (the search's, then the confirmation's), each
//! measuring the points it was started for: one at a time, or with slots up to the free ones at once (the
//! search's batch by constant liar; the confirmation's pairs side by side, swapped from one pair to the next).

use super::{DoneReason, Policy, Schedule, Session, Start, Step, StopWhy};
use crate::record::Recorded;

pub(super) struct Tune;

impl Policy for Tune {
    fn on_running(&self, s: &Schedule<'_>, start: &Start, rec: &Recorded) -> Step {
        match s.next_unvisited(start) {
            // After its short phase, a configuration that is no finalist is not measured in full.
            Some(p)
                if is_full_search(s, p.repeat)
                    && crate::stats::tune::screened_out(s.spec, s.plan, rec, &start.group) =>
            {
                Step::StopGroup { group: start.group.clone(), why: StopWhy::Finished }
            }
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
        // Each start is chosen on what the ones before it measured; with slots, up to the free ones at once.
        let in_flight: Vec<String> =
            session.starts.iter().filter(|st| st.phase != super::Phase::Ended).map(|st| st.group.clone()).collect();
        let free = s.rules.slots.max(1).saturating_sub(in_flight.len());
        if free == 0 {
            return Ok(Vec::new());
        }
        let inflight = crate::stats::tune::InFlight { groups: &in_flight, free };
        let Some(report) = crate::stats::tune::analyze_in(s.spec, s.plan, rec, &s.rules.pruned, &inflight) else {
            return Err(DoneReason::Complete);
        };
        let mut out = Vec::new();
        for (n, next) in report.next.into_iter().chain(report.more).enumerate() {
            let (group, points) = (next.group, next.points);
            let asked = session.starts.iter().any(|st| st.group == group && st.points.first() == points.first());
            if s.rules.pruned.contains_key(&group) || asked {
                // The first proposal asked again: a resume may retry; a later one is left for the next round.
                if n == 0 && in_flight.is_empty() {
                    return Err(DoneReason::AskedAgain { group });
                }
                continue;
            }
            let Some(g) = s.group(&group) else { continue };
            // In the order asked: a search start measures its short phase first.
            let todo: Vec<String> = points.iter().filter(|id| g.points.iter().any(|p| &p.id == *id)).cloned().collect();
            if !todo.is_empty() && !in_flight.contains(&group) {
                out.push((group, todo));
            }
        }
        if out.is_empty() && in_flight.is_empty() {
            return Err(DoneReason::Complete);
        }
        Ok(out)
    }
}

/// A repeat of a search start's full phase on a screened tune.
fn is_full_search(s: &Schedule<'_>, repeat: u32) -> bool {
    s.plan.tune.as_ref().is_some_and(|t| t.screen.is_some() && repeat < t.search_repeats)
}
