//! The tune's schedule inputs: which configurations the search has started (in order, those in flight
//! included), what the GP proposes next (one, or a batch by constant liar with slots), and the
//! confirmation's starts in ABBA order. Pure: the schedule asks `analyze_in`, which asks these.

use super::gp::{Axis, Observation, Step, step};
use super::objective::{Measured, objective, points_of};
use crate::record::plan::{Plan, ServerGroup, TuneConfig, TunePlan};
use crate::record::{Recorded, Status};
use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to start next: a group and the ids of its points to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Next {
    pub group: String,
    pub points: Vec<String>,
    /// `search` or `confirm`.
    pub phase: String,
}

/// Starts in flight when the schedule asks, and slots free for more.
pub struct InFlight<'a> {
    pub groups: &'a [String],
    pub free: usize,
}

/// The repeats of a tune's phases: `sr` search repeats, then `cs` confirmation starts of `cr` repeats each.
#[derive(Clone, Copy)]
pub(super) struct Phases {
    pub sr: u32,
    pub cr: u32,
    pub cs: u32,
}

impl Phases {
    pub fn of(tp: &TunePlan) -> Phases {
        Phases { sr: tp.search_repeats, cr: tp.confirm_repeats, cs: tp.confirm_starts.max(1) }
    }

    pub fn search(self) -> std::ops::Range<u32> {
        0..self.sr
    }

    /// Every confirmation repeat.
    pub fn confirm(self) -> std::ops::Range<u32> {
        self.sr..self.sr + self.cr * self.cs
    }

    /// The repeats of the confirmation's start `k`.
    pub fn start(self, k: u32) -> std::ops::Range<u32> {
        self.sr + k * self.cr..self.sr + (k + 1) * self.cr
    }
}

pub(super) fn group<'a>(plan: &'a Plan, id: &str) -> Option<&'a ServerGroup> {
    plan.groups.iter().find(|g| g.id == id)
}

/// The ids of `group`'s client points in `repeats` that have no record yet (an interrupted one is measured
/// again).
pub(super) fn missing(plan: &Plan, rec: &Recorded, id: &str, repeats: std::ops::Range<u32>) -> Vec<String> {
    let Some(g) = group(plan, id) else { return Vec::new() };
    g.points
        .iter()
        .filter(|p| p.client.is_some() && repeats.contains(&p.repeat))
        .filter(|p| !rec.points.iter().any(|r| r.point == p.id && r.status != Status::Interrupted))
        .map(|p| p.id.clone())
        .collect()
}

/// Whether the group's last start failed (so its missing points will not come).
pub(super) fn start_failed(rec: &Recorded, id: &str) -> bool {
    rec.servers.iter().any(|s| s.id == id && s.status == Status::Failed)
}

/// The search as measured so far.
pub(super) struct Search<'a> {
    /// Configurations in the order they were started (first point record; in flight last).
    pub started: Vec<&'a TuneConfig>,
    /// Each started configuration's objective over its search repeats (None: failed or not measured yet).
    pub measured: BTreeMap<&'a str, Option<Measured>>,
    pub axes: Vec<Axis>,
    pub observed: Vec<Observation>,
    /// The constant liar: the mean of what was measured, taken for each start in flight.
    pub lie: Option<f64>,
    /// The search's first configuration: the middle of the space.
    pub middle: Vec<usize>,
    pub step: Step,
    /// A started configuration whose search points are not all recorded (it is measured first).
    pub unfinished: Option<String>,
}

/// The configurations of `tp` in the order the search started them, those in flight last.
fn started<'a>(tp: &'a TunePlan, rec: &Recorded, inflight: &InFlight<'_>) -> Vec<&'a TuneConfig> {
    let first_at = |id: &str| rec.points.iter().position(|p| p.group == id && p.repeat < tp.search_repeats);
    let mut started: Vec<(&TuneConfig, usize)> = tp
        .configs
        .iter()
        .filter_map(|c| {
            first_at(&c.group).or_else(|| start_failed(rec, &c.group).then_some(usize::MAX)).map(|i| (c, i))
        })
        .collect();
    started.sort_by_key(|(_, i)| *i);
    for c in tp.configs.iter().filter(|c| inflight.groups.contains(&c.group)) {
        if !started.iter().any(|(s, _)| s.group == c.group) {
            started.push((c, usize::MAX - 1));
        }
    }
    started.into_iter().map(|(c, _)| c).collect()
}

impl<'a> Search<'a> {
    pub fn of(
        spec: &Spec,
        plan: &Plan,
        tp: &'a TunePlan,
        rec: &Recorded,
        allowed: &dyn Fn(&Vec<usize>) -> bool,
        inflight: &InFlight<'_>,
    ) -> Search<'a> {
        let sr = tp.search_repeats;
        let axes: Vec<Axis> = tp
            .axes
            .iter()
            .map(|a| Axis { name: a.flag.clone(), values: (0..a.values.len()).map(|i| i as f64).collect() })
            .collect();
        let started = started(tp, rec, inflight);
        let pending = |g: &str| inflight.groups.iter().any(|p| p == g);
        let unfinished = started
            .iter()
            .filter(|c| !pending(&c.group))
            .find(|c| !start_failed(rec, &c.group) && !missing(plan, rec, &c.group, 0..sr).is_empty())
            .map(|c| c.group.clone());
        let measured: BTreeMap<&str, Option<Measured>> = started
            .iter()
            .map(|c| (c.group.as_str(), objective(spec, tp, &points_of(rec, &c.group, 0..sr), &rec.requests)))
            .collect();
        let values: Vec<f64> = measured.values().flatten().map(|m| m.value).collect();
        let lie = (!values.is_empty()).then(|| super::super::summary::mean(&values));
        let observed: Vec<Observation> = started
            .iter()
            .map(|c| Observation {
                config: c.index.clone(),
                value: if pending(&c.group) { lie } else { measured[c.group.as_str()].as_ref().map(|m| m.value) },
            })
            .collect();
        // Start from the middle of the space, then let expected improvement choose.
        let middle: Vec<usize> = tp.axes.iter().map(|a| a.values.len() / 2).collect();
        let step = step(&axes, &observed, std::slice::from_ref(&middle), allowed);
        Search { started, measured, axes, observed, lie, middle, step, unfinished }
    }
}

/// The confirmation's starts in ABBA order (winner, defaults, defaults, winner, ...), so a slow drift of the
/// machine weighs on both alike.
pub(super) fn confirm_order(winner: Option<&String>, defaults: &str, cs: u32) -> Vec<(String, u32)> {
    (0..cs)
        .flat_map(|k| {
            let pair = [winner.cloned(), Some(defaults.to_owned())];
            let pair = if k % 2 == 0 { pair } else { [pair[1].clone(), pair[0].clone()] };
            pair.into_iter().flatten().map(move |g| (g, k))
        })
        .collect()
}

/// Where the tune stands for the schedule: the search, its stop, the confirmation's order.
pub(super) struct Ask<'a, 'b> {
    pub plan: &'a Plan,
    pub tp: &'a TunePlan,
    pub rec: &'a Recorded,
    pub search: &'b Search<'a>,
    pub search_budget: usize,
    pub stopped: bool,
    pub order: &'b [(String, u32)],
    pub allowed: &'b dyn Fn(&Vec<usize>) -> bool,
}

/// The starts to propose now: the first, then those that may begin beside it (`more`).
pub(super) fn nexts(a: &Ask<'_, '_>, inflight: &InFlight<'_>) -> (Option<Next>, Vec<Next>) {
    let ph = Phases::of(a.tp);
    let config_group = |cfg: &Vec<usize>| a.tp.configs.iter().find(|c| &c.index == cfg).map(|c| c.group.clone());
    let search_next =
        |g: String| Next { points: missing(a.plan, a.rec, &g, ph.search()), group: g, phase: "search".into() };
    let confirm_next = |g: &String, k: u32| {
        let m = missing(a.plan, a.rec, g, ph.start(k));
        (!m.is_empty() && !start_failed(a.rec, g)).then(|| Next {
            group: g.clone(),
            points: m,
            phase: "confirm".into(),
        })
    };
    let s = a.search;
    let mut nexts: Vec<Next> = match (&s.unfinished, a.stopped) {
        (Some(g), _) => vec![search_next(g.clone())],
        (None, false) => {
            let room = a.search_budget.saturating_sub(s.started.len()).min(inflight.free);
            batch(&s.axes, &s.observed, &s.middle, a.allowed, s.step.next.clone(), s.lie, room)
                .iter()
                .filter_map(config_group)
                .map(search_next)
                .collect()
        }
        // The confirmation decides from every search start: it waits for those in flight.
        (None, true) if !inflight.groups.is_empty() => Vec::new(),
        (None, true) if inflight.free >= 2 => (0..ph.cs)
            .map(|k| a.order.iter().filter(|(_, j)| *j == k).filter_map(|(g, j)| confirm_next(g, *j)).collect())
            .find(|pair: &Vec<Next>| !pair.is_empty())
            .unwrap_or_default(),
        (None, true) => a.order.iter().find_map(|(g, k)| confirm_next(g, *k)).into_iter().collect(),
    };
    let more = nexts.split_off(nexts.len().min(1));
    (nexts.pop(), more)
}

/// Up to `room` configurations to start at once: `first`, then what expected improvement proposes with each
/// proposal taken as measured at `lie` (the constant liar), so the batch spreads instead of repeating itself.
fn batch(
    axes: &[Axis],
    observed: &[Observation],
    middle: &[usize],
    allowed: &dyn Fn(&Vec<usize>) -> bool,
    first: Option<Vec<usize>>,
    lie: Option<f64>,
    room: usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = first.into_iter().take(room).collect();
    let mut obs = observed.to_vec();
    while out.len() < room {
        let Some(last) = out.last() else { break };
        obs.push(Observation { config: last.clone(), value: lie });
        match step(axes, &obs, &[middle.to_vec()], allowed).next {
            Some(c) if !out.contains(&c) => out.push(c),
            _ => break,
        }
    }
    out
}
