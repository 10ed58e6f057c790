//! The tune's schedule inputs: which configurations the search has started (in order, those in flight
//! included), what the GP proposes next (one, or a batch by constant liar with slots), and the
//! confirmation's starts in ABBA order. Pure: the schedule asks `analyze_in`, which asks these.

use super::gp::{Axis, Observation, Step, step};
use super::objective::{Measured, objective, points_of};
use super::screen::{ScreenNoise, finalist};
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

/// The repeats of a tune's phases: `sr` search repeats, then `cs` confirmation starts of `cr` repeats each,
/// then, with screening, the short phase's one repeat.
#[derive(Clone, Copy)]
pub(super) struct Phases {
    pub sr: u32,
    pub cr: u32,
    pub cs: u32,
    pub screen: bool,
}

impl Phases {
    pub fn of(tp: &TunePlan) -> Phases {
        Phases {
            sr: tp.search_repeats,
            cr: tp.confirm_repeats,
            cs: tp.confirm_starts.max(1),
            screen: tp.screen.is_some(),
        }
    }

    /// The short phase's repeat (empty without screening).
    pub fn short(self) -> std::ops::Range<u32> {
        let r = self.sr + self.cr * self.cs;
        r..r + u32::from(self.screen)
    }

    /// A repeat of a search start: the short phase's or the full one's.
    pub fn searched(self, repeat: u32) -> bool {
        repeat < self.sr || self.short().contains(&repeat)
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
    let mut ids = planned_in(plan, id, repeats);
    ids.retain(|p| !rec.points.iter().any(|r| &r.point == p && r.status != Status::Interrupted));
    ids
}

/// The ids of `group`'s client points in `repeats`, recorded or not.
fn planned_in(plan: &Plan, id: &str, repeats: std::ops::Range<u32>) -> Vec<String> {
    let Some(g) = group(plan, id) else { return Vec::new() };
    g.points.iter().filter(|p| p.client.is_some() && repeats.contains(&p.repeat)).map(|p| p.id.clone()).collect()
}

/// Whether the group's last start failed (so its missing points will not come).
pub(super) fn start_failed(rec: &Recorded, id: &str) -> bool {
    rec.servers.iter().any(|s| s.id == id && s.status == Status::Failed)
}

/// The search as measured so far.
pub(super) struct Search<'a> {
    /// Configurations in the order they were started (first point record; in flight last).
    pub started: Vec<&'a TuneConfig>,
    /// Each started configuration's objective over its search repeats, the full phase (None: failed, screened
    /// out, or not measured yet).
    pub measured: BTreeMap<&'a str, Option<Measured>>,
    /// With screening: each started configuration's short phase and whether it was a finalist.
    pub screens: Screens,
    pub axes: Vec<Axis>,
    pub observed: Vec<Observation>,
    /// The constant liar: the mean of what was measured, taken for each start in flight.
    pub lie: Option<f64>,
    /// The search's first configuration: the middle of the space.
    pub middle: Vec<usize>,
    pub step: Step,
    /// The best configuration measured in full (highest posterior mean among them): the search's pick.
    pub best: Option<Vec<usize>>,
    /// A started configuration whose search points are not all recorded (it is measured first).
    pub unfinished: Option<String>,
}

/// The configurations of `tp` in the order the search started them, those in flight last.
fn started<'a>(tp: &'a TunePlan, rec: &Recorded, inflight: &InFlight<'_>) -> Vec<&'a TuneConfig> {
    let ph = Phases::of(tp);
    let first_at = |id: &str| rec.points.iter().position(|p| p.group == id && ph.searched(p.repeat));
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

/// A phase's objective and where its last record lies in the journal.
struct Phase {
    measured: Option<Measured>,
    at: Option<usize>,
}

impl Phase {
    fn of(spec: &Spec, tp: &TunePlan, rec: &Recorded, g: &str, repeats: std::ops::Range<u32>) -> Phase {
        let at = rec.points.iter().rposition(|p| p.group == g && repeats.contains(&p.repeat));
        let measured = at.and_then(|_| objective(spec, tp, &points_of(rec, g, repeats), rec));
        Phase { measured, at }
    }

    fn value(&self) -> Option<f64> {
        self.measured.as_ref().map(|m| m.value)
    }
}

/// Screening as recorded: each configuration's short phase, whether it made it a finalist, and the short
/// phase's noise over every pair (short and full on one start).
#[derive(Default)]
pub(super) struct Screens {
    pub short: BTreeMap<String, Option<Measured>>,
    pub finalist: BTreeMap<String, bool>,
    pub noise: Option<ScreenNoise>,
}

impl Screens {
    /// Each of `groups`' verdict is judged on what was recorded before its short phase ended (the best figure
    /// measured in full then, the pairs then), as the schedule judged it while its server was up.
    pub fn of(spec: &Spec, tp: &TunePlan, rec: &Recorded, groups: &[&str]) -> Screens {
        let ph = Phases::of(tp);
        if !ph.screen {
            return Screens::default();
        }
        let phases: Vec<(&str, Phase, Phase)> = groups
            .iter()
            .map(|g| (*g, Phase::of(spec, tp, rec, g, ph.short()), Phase::of(spec, tp, rec, g, ph.search())))
            .collect();
        let pairs_before = |at: usize| -> (Option<f64>, Vec<(f64, f64)>) {
            let full: Vec<(&Phase, &Phase)> =
                phases.iter().filter(|(_, _, f)| f.at.is_some_and(|a| a < at)).map(|(_, s, f)| (s, f)).collect();
            let best = full
                .iter()
                .filter_map(|(_, f)| f.value())
                .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))));
            (best, full.iter().filter_map(|(s, f)| Some((s.value()?, f.value()?))).collect())
        };
        let mut out = Screens::default();
        for (g, short, _) in &phases {
            let Some(at) = short.at else { continue };
            let (best, pairs) = pairs_before(at);
            out.finalist.insert((*g).to_owned(), finalist(short.value(), best, ScreenNoise::of(&pairs).as_ref()));
            out.short.insert((*g).to_owned(), short.measured.clone());
        }
        out.noise = ScreenNoise::of(&pairs_before(usize::MAX).1);
        out
    }

    /// Whether `g` was screened and found no finalist.
    pub fn out(&self, g: &str) -> bool {
        self.finalist.get(g) == Some(&false)
    }
}

/// Whether the search start of `group` ends after its short phase: screened, and no finalist.
pub fn screened_out(spec: &Spec, plan: &Plan, rec: &Recorded, group: &str) -> bool {
    let Some(tp) = plan.tune.as_ref().filter(|tp| tp.screen.is_some()) else { return false };
    let groups: Vec<&str> = tp.configs.iter().map(|c| c.group.as_str()).collect();
    Screens::of(spec, tp, rec, &groups).out(group)
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
        let ph = Phases::of(tp);
        let axes: Vec<Axis> = tp
            .axes
            .iter()
            .map(|a| Axis { name: a.flag.clone(), values: (0..a.values.len()).map(|i| i as f64).collect() })
            .collect();
        let started = started(tp, rec, inflight);
        let pending = |g: &str| inflight.groups.iter().any(|p| p == g);
        let groups: Vec<&str> = started.iter().map(|c| c.group.as_str()).collect();
        let screens = Screens::of(spec, tp, rec, &groups);
        let unfinished = started
            .iter()
            .filter(|c| !pending(&c.group) && !start_failed(rec, &c.group))
            .find(|c| {
                let short = !missing(plan, rec, &c.group, ph.short()).is_empty();
                short || (!screens.out(&c.group) && !missing(plan, rec, &c.group, ph.search()).is_empty())
            })
            .map(|c| c.group.clone());
        let measured: BTreeMap<&str, Option<Measured>> = started
            .iter()
            .map(|c| (c.group.as_str(), objective(spec, tp, &points_of(rec, &c.group, ph.search()), rec)))
            .collect();
        // A configuration screened out is seen by the model at its short phase's figure on the full scale.
        let value = |g: &str| {
            measured[g].as_ref().map(|m| m.value).or_else(|| {
                let short = screens.short.get(g)?.as_ref()?.value;
                Some(screens.noise.as_ref().map_or(short, |n| n.as_full(short)))
            })
        };
        let values: Vec<f64> = started.iter().filter(|c| !pending(&c.group)).filter_map(|c| value(&c.group)).collect();
        let lie = (!values.is_empty()).then(|| super::super::summary::mean(&values));
        let observed: Vec<Observation> = started
            .iter()
            .map(|c| Observation {
                config: c.index.clone(),
                value: if pending(&c.group) { lie } else { value(&c.group) },
            })
            .collect();
        // Start from the middle of the space, then let expected improvement choose.
        let middle: Vec<usize> = tp.axes.iter().map(|a| a.values.len() / 2).collect();
        let step = step(&axes, &observed, std::slice::from_ref(&middle), allowed);
        let mean_at =
            |cfg: &Vec<usize>| step.all.iter().position(|c| c == cfg).map_or(f64::NEG_INFINITY, |i| step.mean[i]);
        let best = started
            .iter()
            .filter(|c| measured[c.group.as_str()].is_some())
            .max_by(|a, b| mean_at(&a.index).total_cmp(&mean_at(&b.index)))
            .map(|c| c.index.clone());
        Search { started, measured, screens, axes, observed, lie, middle, step, best, unfinished }
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
    // The short phase first; the schedule then measures the full phase on the same start only for a finalist.
    // The finalist rule compares the two on one start, so a start cut off between them (an interrupted run,
    // resumed) is measured again whole, as a confirmation start is (below).
    let search_next = |g: String| {
        let out = a.search.screens.out(&g);
        let mut points = missing(a.plan, a.rec, &g, ph.short());
        if !out {
            points.extend(missing(a.plan, a.rec, &g, ph.search()));
        }
        let mut whole = planned_in(a.plan, &g, ph.short());
        whole.extend(planned_in(a.plan, &g, ph.search()));
        if !out && !points.is_empty() && points.len() < whole.len() {
            points = whole;
        }
        Next { points, group: g, phase: "search".into() }
    };
    // A confirmation start is one sample of the between-start noise only if one server measured all its
    // repeats. Nothing is in flight when a confirmation start is proposed, so a start with some repeats
    // recorded was cut off (an interrupted run, resumed): the new server measures all of them again, and the
    // new attempts supersede the earlier ones (which stay in the records).
    let confirm_next = |g: &String, k: u32| {
        let m = missing(a.plan, a.rec, g, ph.start(k));
        (!m.is_empty() && !start_failed(a.rec, g)).then(|| Next {
            group: g.clone(),
            points: planned_in(a.plan, g, ph.start(k)),
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
