//! What runs next: a pure function from the plan, the records committed so far and this invocation's
//! account of its server starts (`Session`) to every step that may run now. The executor (`run`) carries the
//! steps out — one group at a time, or several on their own slots — and feeds back what happened; it never
//! decides what to measure. Three policies: the grid with its precision loop (`grid`), the rate search
//! (`search`), and tune (`tune`). No clock, no process, no file: every decision is reproducible from the
//! records, which is what makes `--resume` continue exactly where a run stopped.

mod grid;
mod search;
mod session;
mod tune;

pub use session::{Phase, Session, Start};

use crate::plan::{Plan, Point, ServerGroup};
use crate::record::Recorded;
use crate::spec::Spec;
use std::collections::{BTreeMap, BTreeSet};

/// One thing the executor may do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Start the group's server to measure these points (ids, in order).
    StartGroup { group: String, points: Vec<String> },
    /// Measure one point (one repeat of a cell) on the group's running server.
    Measure { group: String, point: String, repeat: u32 },
    /// Pass over a point on the running server without measuring it.
    Skip { group: String, point: String, repeat: u32, why: SkipWhy },
    /// Stop the group's server.
    StopGroup { group: String, why: StopWhy },
    /// Nothing is in flight and nothing more will start.
    Done { reason: DoneReason },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SkipWhy {
    /// A startup-only point: the server start is its measurement, committed when the server stops.
    StartupOnly,
    /// The cell already meets the precision target (±`rel_ci`) and decides nothing close.
    PrecisionMet { rel_ci: f64 },
}

#[derive(Clone, Debug, PartialEq)]
pub enum StopWhy {
    /// Every point it was started for is measured or passed over (or the search is over).
    Finished,
    /// The run was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
    /// `--fail-fast` and something failed.
    FailFast,
    /// Its server died; a search does not measure on a dead server.
    Dead,
    /// The search asked again for a point it measured on this start: a bug, but never a loop.
    AskedAgain { point: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum DoneReason {
    /// The policy has nothing more to measure.
    Complete,
    Interrupted,
    FailFast,
    /// `--max-starts`: this invocation started as many servers as it may; `--resume` goes on.
    MaxStarts {
        starts: usize,
    },
    /// Tune asked again for a start it made in this invocation (e.g. its server failed): a resume may retry.
    AskedAgain {
        group: String,
    },
}

/// What the executor is told to respect, besides the plan.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub fail_fast: bool,
    /// Start at most this many servers in this invocation.
    pub max_starts: Option<usize>,
    /// Tune: configurations the capacity model rules out (group → why); never started.
    pub pruned: BTreeMap<String, String>,
    /// Server groups that may run at once (the executor's slots; 0 or 1: one at a time). Tune proposes up
    /// to this many starts at once; the grid and the search start whatever the executor has room for.
    pub slots: usize,
    /// Servers the run started before this invocation (the journal's), so a resumed tune numbers its starts
    /// against the budget from where it stopped.
    pub started_before: usize,
}

/// A policy decides, for a running group, what comes next on it, and which groups may start.
trait Policy {
    /// The next step on a started group that has nothing in flight (`Measure`, `Skip` or `StopGroup`).
    fn on_running(&self, s: &Schedule<'_>, start: &Start, rec: &Recorded) -> Step;
    /// Groups that may start now, with the points each would measure; or why nothing more will start.
    fn to_start(
        &self,
        s: &Schedule<'_>,
        rec: &Recorded,
        session: &Session,
    ) -> Result<Vec<(String, Vec<String>)>, DoneReason>;
}

/// The schedule of one run: its plan, spec and rules, and the policy the plan calls for.
pub struct Schedule<'a> {
    pub spec: &'a Spec,
    pub plan: &'a Plan,
    pub rules: Rules,
    /// Points committed ok before this invocation (from the journal).
    pub done: BTreeSet<String>,
    policy: Box<dyn Policy + Sync + 'a>,
}

impl<'a> Schedule<'a> {
    pub fn new(spec: &'a Spec, plan: &'a Plan, rules: Rules, done: BTreeSet<String>) -> Self {
        let policy: Box<dyn Policy + Sync> = match (&plan.search, &plan.tune) {
            (_, Some(_)) => Box::new(tune::Tune),
            (Some(_), _) => Box::new(search::Search),
            _ => Box::new(grid::Grid),
        };
        Schedule { spec, plan, rules, done, policy }
    }

    pub fn group(&self, id: &str) -> Option<&'a ServerGroup> {
        self.plan.groups.iter().find(|g| g.id == id)
    }

    pub fn point(&self, group: &str, id: &str) -> Option<&'a Point> {
        self.group(group)?.points.iter().find(|p| p.id == id)
    }

    /// Every step that may run now, steps on running groups first, then starts in the policy's order. An
    /// empty list: wait for what is in flight.
    pub fn next_steps(&self, rec: &Recorded, session: &Session) -> Vec<Step> {
        let halt = if session.interrupted {
            Some((StopWhy::Interrupted, DoneReason::Interrupted))
        } else if self.rules.fail_fast && session.any_failed() {
            Some((StopWhy::FailFast, DoneReason::FailFast))
        } else {
            None
        };
        let mut steps = Vec::new();
        for start in session.starts.iter().filter(|s| s.phase == Phase::Up) {
            steps.push(match &halt {
                Some((why, _)) => Step::StopGroup { group: start.group.clone(), why: why.clone() },
                None => self.policy.on_running(self, start, rec),
            });
        }
        let started = session.starts.len();
        let reason = match halt {
            Some((_, reason)) => reason,
            None if self.rules.max_starts.is_some_and(|m| started >= m) => DoneReason::MaxStarts { starts: started },
            None => match self.policy.to_start(self, rec, session) {
                Ok(starts) => {
                    let room = self.rules.max_starts.map_or(usize::MAX, |m| m - started);
                    let starts = starts.into_iter().take(room);
                    steps.extend(starts.map(|(group, points)| Step::StartGroup { group, points }));
                    DoneReason::Complete
                }
                Err(reason) => reason,
            },
        };
        if steps.is_empty() && !session.in_flight() {
            steps.push(Step::Done { reason });
        }
        steps
    }

    /// "server i/n": a grid's or search's group by its place in the plan; a tune's start by its number
    /// against the budget of starts.
    pub fn ordinal(&self, group: &str, session: &Session) -> (usize, usize) {
        match &self.plan.tune {
            Some(t) => {
                // A start cut off midway is made again, so the count may pass the budget.
                let i = self.rules.started_before + session.starts.len().saturating_sub(1);
                (i, (t.starts as usize).max(i + 1))
            }
            None => (self.plan.groups.iter().position(|g| g.id == group).unwrap_or(0), self.plan.groups.len()),
        }
    }

    /// Groups this invocation will not start because everything they hold is already measured (a grid
    /// whose points are all done, a search that is over).
    pub fn finished_groups(&self, rec: &Recorded) -> Vec<&'a ServerGroup> {
        if self.plan.tune.is_some() {
            return Vec::new();
        }
        let empty = Session::default();
        let starting: BTreeSet<String> = match self.policy.to_start(self, rec, &empty) {
            Ok(s) => s.into_iter().map(|(g, _)| g).collect(),
            Err(_) => BTreeSet::new(),
        };
        self.plan.groups.iter().filter(|g| !starting.contains(&g.id)).collect()
    }

    /// The points a progress bar counts: a search measures about `max_probes` rungs per group, a tune its
    /// search repeats per start (and, screening, its short phase: at most both).
    pub fn expected_points(&self) -> usize {
        let plan = self.plan;
        if let Some(t) = &plan.tune {
            let short = t.search_repeats + t.confirm_repeats * t.confirm_starts;
            let searched = |r: u32| r < t.search_repeats || (t.screen.is_some() && r == short);
            let per_start = plan
                .groups
                .first()
                .map_or(0, |g| g.points.iter().filter(|p| p.client.is_some() && searched(p.repeat)).count());
            return per_start * t.starts as usize;
        }
        plan.groups.iter().map(|g| self.expected_in(g)).sum()
    }

    pub fn expected_in(&self, g: &ServerGroup) -> usize {
        match &self.plan.search {
            Some(s) => g.points.len().min(s.max_probes * self.plan.repeats as usize),
            None => g.points.len(),
        }
    }

    /// The first point of `start` not yet visited, in the order it was started for.
    fn next_unvisited(&self, start: &Start) -> Option<&'a Point> {
        let visited: BTreeSet<&str> = start.visited.iter().map(String::as_str).collect();
        start.points.iter().filter(|p| !visited.contains(p.as_str())).find_map(|p| self.point(&start.group, p))
    }

    /// Measure, or pass over a startup-only point.
    fn measure_or_skip(group: &str, p: &Point, precision_met: Option<f64>) -> Step {
        let (group, point, repeat) = (group.to_owned(), p.id.clone(), p.repeat);
        match (&p.client, precision_met) {
            (None, _) => Step::Skip { group, point, repeat, why: SkipWhy::StartupOnly },
            (Some(_), Some(rel_ci)) => Step::Skip { group, point, repeat, why: SkipWhy::PrecisionMet { rel_ci } },
            (Some(_), None) => Step::Measure { group, point, repeat },
        }
    }
}

#[cfg(test)]
mod tests;
