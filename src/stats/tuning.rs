//! A tune read from its records (`servelab tune`, issue 17): each configuration's objective with its
//! interval, the search's next start (`stats::tune::step` over what was measured), the confirmation of the
//! winner and of vLLM's defaults on fresh servers, and the decision. Pure: the executor asks it what to start
//! next, the report renders it, and both see the same records, so a tune resumes and re-renders.

use super::decision::{Decision, Objective, Pick, Stopped};
use super::summary::{ci95, mean, percentile_sorted};
use super::sweep::{self, GroupSweep};
use super::tune::{Axis, Observation, step};
use crate::record::plan::{Plan, ServerGroup, TuneConfig, TunePlan};
use crate::record::{PointRecord, Recorded, RequestRecord, Status};
use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One configuration's objective over a set of its points (the search's repeats, or the confirmation's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Tokens/s (throughput) or requests/s meeting the SLO (goodput), mean over repeats, at `level`.
    pub value: f64,
    pub ci: Option<(f64, f64)>,
    /// The objective of each repeat at `level`.
    pub per_repeat: Vec<f64>,
    /// The objective at `level` per server start (the mean of its repeats): the confirmation's starts.
    pub per_start: Vec<f64>,
    /// The workload level the value comes from (`c=16`, `rate=20/s`); empty when no level qualified.
    pub level: String,
    /// p95 e2e there (the upper end of its interval, as the budget is checked).
    pub p95_e2e_s: Option<f64>,
    /// Why no level counts (every level over the budget), when none does: the value is then 0.
    pub none_within: Option<RowNote>,
}

/// What a row of the tune's table notes beside its figures (worded by `templates/findings.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowNote {
    /// Every level's p95 e2e bound is over the budget: the lowest of them.
    NoneWithin { budget_s: f64, lowest_s: f64 },
    /// The capacity model ruled the configuration out before any start; its reason as recorded.
    Pruned { why: String },
}

/// A point of the Pareto chart: one workload level of one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    pub setting: String,
    pub level: String,
    /// Output tokens/s of the server divided by its GPUs (tensor-parallel size).
    pub per_gpu: f64,
    /// Output tokens/s one request sees while decoding: 1 / median time per output token.
    pub per_user: f64,
    pub on_front: bool,
}

/// A configuration of the tune as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub group: String,
    /// `max-num-seqs=16 max-num-batched-tokens=2048`, or `vLLM defaults`.
    pub setting: String,
    /// The order of its search start (1 = first), None for vLLM's defaults.
    pub searched: Option<usize>,
    pub search: Option<Measured>,
    pub confirm: Option<Measured>,
    /// `ok`, `failed` (start or every point), `pruned`.
    pub status: String,
    pub note: Option<RowNote>,
    pub command: String,
}

/// The gain of the winner over vLLM's defaults, both measured again after the search on fresh servers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gain {
    pub winner: f64,
    pub defaults: f64,
    /// (winner − defaults) / defaults.
    pub rel: f64,
    /// Its 95% interval over server starts: Welch's interval of the difference of the per-start means, over
    /// the defaults' mean. None with one start of either: repeats on one server do not show what another
    /// start of the same configuration serves (on the H200, two starts of one configuration differed by 16%
    /// where each one's repeats agreed within 5%: examples/h200-tune).
    pub rel_ci: Option<(f64, f64)>,
    /// The interval over the repeats alone (what one server showed), for reference; it decides nothing.
    pub repeat_ci: Option<(f64, f64)>,
    /// The interval over starts lies above 0.
    pub significant: bool,
}

/// What to start next: a group and the ids of its points to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Next {
    pub group: String,
    pub points: Vec<String>,
    /// `search` or `confirm`.
    pub phase: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// What the tune maximises (worded by the templates).
    pub objective: Objective,
    pub unit: String,
    /// Every measured configuration, best search objective first; then the pruned ones.
    pub rows: Vec<Row>,
    pub pareto: Vec<ParetoPoint>,
    pub winner: Option<String>,
    pub gain: Option<Gain>,
    /// The command line the tune recommends (the winner's, or the defaults' when they are as good).
    pub recommended: Option<String>,
    /// What the tune decided, from the confirmation's gain (`stats::decision`; worded by the templates).
    pub decision: Decision,
    pub search_starts: usize,
    pub confirm_starts: usize,
    pub budget_starts: u32,
    /// Server time recorded (ready times and phases), against the wall budget.
    pub spent_s: f64,
    pub wall_s: Option<f64>,
    /// Why the search stopped, once it has.
    pub stopped: Option<Stopped>,
    pub next: Option<Next>,
    /// With slots: further starts that may begin beside `next` (the search's batch by constant liar, or the
    /// other half of a confirmation pair). Never rendered.
    #[serde(skip)]
    pub more: Vec<Next>,
    pub space: usize,
}

/// Starts in flight when the schedule asks, and slots free for more.
pub struct InFlight<'a> {
    pub groups: &'a [String],
    pub free: usize,
}

fn setting_of(tp: &TunePlan, c: &TuneConfig) -> String {
    tp.axes.iter().zip(&c.index).map(|(a, &i)| format!("{}={}", a.flag, a.values[i])).collect::<Vec<_>>().join(" ")
}

/// The server's command line as a shell would take it.
pub fn command_of(group: &ServerGroup) -> String {
    group.server.argv.iter().map(|a| crate::record::plan::shell_word(a)).collect::<Vec<_>>().join(" ")
}

/// The latest attempt of each of `group`'s points in `repeats`.
fn points_of<'a>(rec: &'a Recorded, group: &str, repeats: std::ops::Range<u32>) -> Vec<PointRecord> {
    let mut latest: BTreeMap<&'a str, &'a PointRecord> = BTreeMap::new();
    for p in rec.points.iter().filter(|p| p.group == group && repeats.contains(&p.repeat)) {
        let e = latest.entry(p.point.as_str()).or_insert(p);
        if p.attempt >= e.attempt {
            *e = p;
        }
    }
    latest.into_values().cloned().collect()
}

/// 1 / median time per output token of a level's requests (output tokens/s one request sees).
fn per_user(requests: &[&RequestRecord]) -> Option<f64> {
    let mut tpot: Vec<f64> = requests
        .iter()
        .filter(|r| r.ok() && !r.warmup && !r.tail)
        .filter_map(|r| {
            let n = r.completion_tokens?;
            let first = r.first_token_s?;
            (n > 1 && r.end_s > first).then(|| (r.end_s - first) / f64::from(n - 1))
        })
        .collect();
    if tpot.is_empty() {
        return None;
    }
    tpot.sort_by(f64::total_cmp);
    Some(1.0 / percentile_sorted(&tpot, 50.0))
}

/// A level of a configuration: its label, per-repeat objective, p95 e2e bound, tokens/s and per-user speed.
struct Level {
    label: String,
    per_repeat: Vec<f64>,
    ci: Option<(f64, f64)>,
    p95: Option<f64>,
    tok_s: f64,
    per_user: Option<f64>,
}

fn levels(spec: &Spec, tp: &TunePlan, points: &[PointRecord], requests: &[RequestRecord]) -> Vec<Level> {
    let reqs_of = |label_points: &[&str]| -> Vec<&RequestRecord> {
        requests.iter().filter(|r| label_points.contains(&r.point.as_str())).collect()
    };
    if tp.objective == "goodput" {
        let sweeps = super::rate::analyze(points, requests, spec.slo.as_ref());
        return sweeps
            .iter()
            .flat_map(|s| &s.cells)
            .map(|c| {
                let ids: Vec<&str> = points
                    .iter()
                    .filter(|p| p.client.open_loop.as_ref().is_some_and(|o| o.rate == c.rate))
                    .map(|p| p.point.as_str())
                    .collect();
                Level {
                    label: format!("rate={}/s", c.rate),
                    per_repeat: c.repeats.iter().map(|r| r.goodput_rps).collect(),
                    ci: c.goodput_ci,
                    p95: None,
                    tok_s: c.tok_s,
                    per_user: per_user(&reqs_of(&ids)),
                }
            })
            .collect();
    }
    let sweeps: Vec<GroupSweep> = sweep::analyze(points, requests, &[], spec.effective_policy(), &spec.knee);
    sweeps
        .iter()
        .flat_map(|g| &g.cells)
        .map(|c| {
            let ids: Vec<&str> = c.repeats.iter().map(|r| r.point.as_str()).collect();
            let per_repeat: Vec<f64> = c.repeats.iter().map(|r| r.tok_s).collect();
            Level {
                label: format!("c={}", c.concurrency),
                ci: ci95(&per_repeat),
                tok_s: mean(&per_repeat),
                per_repeat,
                p95: c.p95_upper(),
                per_user: per_user(&reqs_of(&ids)),
            }
        })
        .collect()
}

/// The objective over a configuration's points: the best level within the budget (throughput), or the best
/// goodput. None when nothing was measured.
fn objective(spec: &Spec, tp: &TunePlan, points: &[PointRecord], requests: &[RequestRecord]) -> Option<Measured> {
    let ok: Vec<PointRecord> = points.iter().filter(|p| p.status == Status::Ok).cloned().collect();
    let lv = levels(spec, tp, &ok, requests);
    if lv.is_empty() {
        return None;
    }
    let budget = tp.p95_budget_s;
    let within = |l: &Level| match budget {
        Some(b) => l.p95.is_some_and(|p| p <= b),
        None => true,
    };
    let best = lv.iter().filter(|l| within(l)).max_by(|a, b| mean(&a.per_repeat).total_cmp(&mean(&b.per_repeat)));
    Some(match best {
        Some(l) => Measured {
            value: mean(&l.per_repeat),
            ci: l.ci,
            per_repeat: l.per_repeat.clone(),
            per_start: vec![mean(&l.per_repeat)],
            level: l.label.clone(),
            p95_e2e_s: l.p95,
            none_within: None,
        },
        None => {
            let lowest = lv.iter().filter_map(|l| l.p95).fold(f64::INFINITY, f64::min);
            Measured {
                value: 0.0,
                ci: None,
                per_repeat: Vec::new(),
                per_start: Vec::new(),
                level: String::new(),
                p95_e2e_s: Some(lowest),
                none_within: Some(RowNote::NoneWithin { budget_s: budget.unwrap_or_default(), lowest_s: lowest }),
            }
        }
    })
}

fn group<'a>(plan: &'a Plan, id: &str) -> Option<&'a ServerGroup> {
    plan.groups.iter().find(|g| g.id == id)
}

/// The ids of `group`'s client points in `repeats` that have no record yet (an interrupted one is measured
/// again).
fn missing(plan: &Plan, rec: &Recorded, id: &str, repeats: std::ops::Range<u32>) -> Vec<String> {
    let Some(g) = group(plan, id) else { return Vec::new() };
    g.points
        .iter()
        .filter(|p| p.client.is_some() && repeats.contains(&p.repeat))
        .filter(|p| !rec.points.iter().any(|r| r.point == p.id && r.status != Status::Interrupted))
        .map(|p| p.id.clone())
        .collect()
}

/// Whether the group's last start failed (so its missing points will not come).
fn start_failed(rec: &Recorded, id: &str) -> bool {
    rec.servers.iter().any(|s| s.id == id && s.status == Status::Failed)
}

/// The welch interval of mean(a) − mean(b).
fn welch95(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let var = |x: &[f64]| super::summary::stddev(x).powi(2) / x.len() as f64;
    let (va, vb) = (var(a), var(b));
    let se = (va + vb).sqrt();
    let d = mean(a) - mean(b);
    if se == 0.0 {
        return Some((d, d));
    }
    let df = (va + vb).powi(2) / (va.powi(2) / (a.len() - 1) as f64 + vb.powi(2) / (b.len() - 1) as f64);
    let t = StudentsT::new(0.0, 1.0, df).ok()?.inverse_cdf(0.975);
    Some((d - t * se, d + t * se))
}

/// The gain of the pick over the defaults, both as measured again: None without both, or when the defaults
/// met the objective nowhere (a gain over 0 is no figure).
pub fn gain_of(winner: Option<&Measured>, defaults: Option<&Measured>) -> Option<Gain> {
    let (w, d) = (winner?, defaults?);
    if d.value <= 0.0 {
        return None;
    }
    let rel = |ci: Option<(f64, f64)>| ci.map(|(lo, hi)| (lo / d.value, hi / d.value));
    let ci = rel(welch95(&w.per_start, &d.per_start));
    Some(Gain {
        winner: w.value,
        defaults: d.value,
        rel: w.value / d.value - 1.0,
        rel_ci: ci,
        repeat_ci: rel(welch95(&w.per_repeat, &d.per_repeat)),
        significant: ci.is_some_and(|c| c.0 > 0.0),
    })
}

/// Reads a tune from its records. `pruned`: configurations the capacity model ruled out (group → why).
pub fn analyze(spec: &Spec, plan: &Plan, rec: &Recorded, pruned: &BTreeMap<String, String>) -> Option<TuneReport> {
    analyze_in(spec, plan, rec, pruned, &InFlight { groups: &[], free: 1 })
}

/// `analyze` as the schedule sees it with starts in flight: those count as started (their configurations are
/// not proposed again, and the search's GP takes them at the mean of what was measured — a constant liar), and
/// up to `free` starts are proposed at once. A confirmation waits for every start in flight, and with two free
/// slots starts its next pair together, so the ABBA order puts each on the other slot the next time.
pub fn analyze_in(
    spec: &Spec,
    plan: &Plan,
    rec: &Recorded,
    pruned: &BTreeMap<String, String>,
    inflight: &InFlight<'_>,
) -> Option<TuneReport> {
    let tp = plan.tune.as_ref()?;
    let sr = tp.search_repeats;
    let (cr, cs) = (tp.confirm_repeats, tp.confirm_starts.max(1));
    let confirm = sr..sr + cr * cs;
    let start_range = |k: u32| sr + k * cr..sr + (k + 1) * cr;
    let axes: Vec<Axis> = tp
        .axes
        .iter()
        .map(|a| Axis { name: a.flag.clone(), values: (0..a.values.len()).map(|i| i as f64).collect() })
        .collect();
    // The search's configurations in the order they were started (first point record), and what each gave.
    let first_at = |id: &str| rec.points.iter().position(|p| p.group == id && p.repeat < sr);
    let mut started: Vec<(&TuneConfig, usize)> = tp
        .configs
        .iter()
        .filter_map(|c| {
            first_at(&c.group).or_else(|| start_failed(rec, &c.group).then_some(usize::MAX)).map(|i| (c, i))
        })
        .collect();
    started.sort_by_key(|(_, i)| *i);
    let pending = |g: &str| inflight.groups.iter().any(|p| p == g);
    for c in tp.configs.iter().filter(|c| pending(&c.group)) {
        if !started.iter().any(|(s, _)| s.group == c.group) {
            started.push((c, usize::MAX - 1));
        }
    }
    let unfinished = started
        .iter()
        .filter(|(c, _)| !pending(&c.group))
        .find(|(c, _)| !start_failed(rec, &c.group) && !missing(plan, rec, &c.group, 0..sr).is_empty())
        .map(|(c, _)| c.group.clone());
    let search: BTreeMap<&str, Option<Measured>> = started
        .iter()
        .map(|(c, _)| (c.group.as_str(), objective(spec, tp, &points_of(rec, &c.group, 0..sr), &rec.requests)))
        .collect();
    let values: Vec<f64> = search.values().flatten().map(|m| m.value).collect();
    let lie = (!values.is_empty()).then(|| mean(&values));
    let observed: Vec<Observation> = started
        .iter()
        .map(|(c, _)| Observation {
            config: c.index.clone(),
            value: if pending(&c.group) { lie } else { search[c.group.as_str()].as_ref().map(|m| m.value) },
        })
        .collect();
    let allowed = |cfg: &Vec<usize>| tp.configs.iter().any(|c| &c.index == cfg && !pruned.contains_key(&c.group));
    // Start from the middle of the space, then let expected improvement choose.
    let middle: Vec<usize> = tp.axes.iter().map(|a| a.values.len() / 2).collect();
    let st = step(&axes, &observed, std::slice::from_ref(&middle), &allowed);
    // Every start counts, the earlier starts of a group started again included.
    let starts = rec.servers.iter().chain(&rec.earlier_starts);
    let spent_s: f64 = starts.filter_map(|s| s.ready_s).sum::<f64>() + rec.points.iter().map(|p| p.wall_s).sum::<f64>();
    let search_budget = tp.starts.saturating_sub(2 * cs) as usize;
    let stopped = Stopped::of(tp.starts, search_budget, started.len(), spent_s, tp.wall_s, st.next.is_some());
    let config_group = |cfg: &Vec<usize>| tp.configs.iter().find(|c| &c.index == cfg).map(|c| c.group.clone());
    // A pick that met the objective nowhere (no level within the budget) is no winner.
    let winner = st
        .best
        .as_ref()
        .and_then(config_group)
        .filter(|g| search.get(g.as_str()).and_then(Option::as_ref).is_some_and(|m| m.value > 0.0));
    // The confirmation's starts in ABBA order (winner, defaults, defaults, winner, ...), so a slow drift of the
    // machine weighs on both alike.
    let confirm_order: Vec<(String, u32)> = (0..cs)
        .flat_map(|k| {
            let pair = [winner.clone(), Some(tp.defaults_group.clone())];
            let pair = if k % 2 == 0 { pair } else { [pair[1].clone(), pair[0].clone()] };
            pair.into_iter().flatten().map(move |g| (g, k))
        })
        .collect();
    let search_next = |g: String| Next { points: missing(plan, rec, &g, 0..sr), group: g, phase: "search".into() };
    let confirm_next = |g: &String, k: u32| {
        let m = missing(plan, rec, g, start_range(k));
        (!m.is_empty() && !start_failed(rec, g)).then(|| Next { group: g.clone(), points: m, phase: "confirm".into() })
    };
    let mut nexts: Vec<Next> = match (&unfinished, &stopped) {
        (Some(g), _) => vec![search_next(g.clone())],
        (None, None) => {
            let room = search_budget.saturating_sub(started.len()).min(inflight.free);
            batch(&axes, &observed, &middle, &allowed, st.next.clone(), lie, room)
                .iter()
                .filter_map(config_group)
                .map(search_next)
                .collect()
        }
        // The confirmation decides from every search start: it waits for those in flight.
        (None, Some(_)) if !inflight.groups.is_empty() => Vec::new(),
        (None, Some(_)) if inflight.free >= 2 => (0..cs)
            .map(|k| confirm_order.iter().filter(|(_, j)| *j == k).filter_map(|(g, j)| confirm_next(g, *j)).collect())
            .find(|pair: &Vec<Next>| !pair.is_empty())
            .unwrap_or_default(),
        (None, Some(_)) => confirm_order.iter().find_map(|(g, k)| confirm_next(g, *k)).into_iter().collect(),
    };
    let more = nexts.split_off(nexts.len().min(1));
    let next = nexts.pop();
    // The confirmation of a group over all its starts; the level chosen over all of them, then each start's
    // mean at that level.
    let confirmed = |g: &str| {
        let mut m = objective(spec, tp, &points_of(rec, g, confirm.clone()), &rec.requests)?;
        m.per_start = (0..cs)
            .filter_map(|k| {
                let pts: Vec<PointRecord> =
                    points_of(rec, g, start_range(k)).into_iter().filter(|p| p.status == Status::Ok).collect();
                levels(spec, tp, &pts, &rec.requests)
                    .into_iter()
                    .find(|l| l.label == m.level)
                    .map(|l| mean(&l.per_repeat))
            })
            .collect();
        Some(m)
    };
    let mut rows: Vec<Row> = Vec::new();
    for (n, (c, _)) in started.iter().enumerate() {
        let m = search[c.group.as_str()].clone();
        let failed = m.is_none();
        rows.push(Row {
            group: c.group.clone(),
            setting: setting_of(tp, c),
            searched: Some(n + 1),
            note: m.as_ref().and_then(|m| m.none_within.clone()),
            search: m,
            confirm: confirmed(&c.group),
            status: if failed { "failed".into() } else { "ok".into() },
            command: group(plan, &c.group).map(command_of).unwrap_or_default(),
        });
    }
    rows.sort_by(|a, b| {
        let v = |r: &Row| r.search.as_ref().map_or(f64::NEG_INFINITY, |m| m.value);
        v(b).total_cmp(&v(a))
    });
    let defaults = confirmed(&tp.defaults_group);
    if defaults.is_some() || start_failed(rec, &tp.defaults_group) {
        rows.push(Row {
            group: tp.defaults_group.clone(),
            setting: "vLLM defaults".into(),
            searched: None,
            search: None,
            note: defaults.as_ref().and_then(|m| m.none_within.clone()),
            status: if defaults.is_some() { "ok".into() } else { "failed".into() },
            confirm: defaults.clone(),
            command: group(plan, &tp.defaults_group).map(command_of).unwrap_or_default(),
        });
    }
    for c in tp.configs.iter().filter(|c| pruned.contains_key(&c.group)) {
        rows.push(Row {
            group: c.group.clone(),
            setting: setting_of(tp, c),
            searched: None,
            search: None,
            confirm: None,
            status: "pruned".into(),
            note: Some(RowNote::Pruned { why: pruned[&c.group].clone() }),
            command: group(plan, &c.group).map(command_of).unwrap_or_default(),
        });
    }
    let win_confirm = winner.as_deref().and_then(confirmed);
    let gain = gain_of(win_confirm.as_ref(), defaults.as_ref());
    let unit = if tp.objective == "goodput" { "req/s meeting the SLO" } else { "tok/s" };
    let winner_setting = rows.iter().find(|r| Some(&r.group) == winner.as_ref()).map(|r| r.setting.clone());
    let starts = |m: &Option<Measured>| m.as_ref().map_or(0, |m| m.per_start.len());
    let decision = Decision::of(
        next.is_some() || stopped.is_none(),
        winner_setting.as_deref(),
        gain.as_ref(),
        (starts(&win_confirm), starts(&defaults)),
    );
    let recommended = match decision.pick() {
        Pick::Winner => winner.clone(),
        Pick::Defaults => Some(tp.defaults_group.clone()),
        Pick::DefaultsIfMeasured => defaults.as_ref().map(|_| tp.defaults_group.clone()),
        Pick::Nothing => None,
    };
    let recommended = recommended.and_then(|g| group(plan, &g)).map(command_of);
    let pareto = pareto(spec, tp, rec, &rows);
    Some(TuneReport {
        objective: Objective::of(tp, spec.slo.as_ref()),
        unit: unit.into(),
        rows,
        pareto,
        winner,
        gain,
        recommended,
        decision,
        search_starts: started.len(),
        confirm_starts: confirm_order
            .iter()
            .filter(|(g, k)| rec.points.iter().any(|p| &p.group == g && start_range(*k).contains(&p.repeat)))
            .count(),
        budget_starts: tp.starts,
        spent_s,
        wall_s: tp.wall_s,
        stopped,
        next,
        more,
        space: tp.configs.len(),
    })
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

/// Each measured level of each configuration (search repeats, and the confirmation's for the defaults) on
/// tokens/s per GPU against tokens/s per user, and which points no other point beats on both.
fn pareto(spec: &Spec, tp: &TunePlan, rec: &Recorded, rows: &[Row]) -> Vec<ParetoPoint> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.status != "pruned") {
        let reps = if r.searched.is_some() { 0..tp.search_repeats } else { tp.search_repeats..u32::MAX };
        let pts: Vec<PointRecord> =
            points_of(rec, &r.group, reps).into_iter().filter(|p| p.status == Status::Ok).collect();
        let gpus = rec.servers.iter().find(|s| s.id == r.group).map_or(1, |s| s.tensor_parallel_size()).max(1);
        for l in levels(spec, tp, &pts, &rec.requests) {
            if let Some(u) = l.per_user {
                out.push(ParetoPoint {
                    setting: r.setting.clone(),
                    level: l.label,
                    per_gpu: l.tok_s / gpus as f64,
                    per_user: u,
                    on_front: false,
                });
            }
        }
    }
    let n = out.len();
    for i in 0..n {
        let dominated = (0..n).any(|j| {
            j != i
                && out[j].per_gpu >= out[i].per_gpu
                && out[j].per_user >= out[i].per_user
                && (out[j].per_gpu > out[i].per_gpu || out[j].per_user > out[i].per_user)
        });
        out[i].on_front = !dominated;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_interval_matches_scipy() {
        // scipy 1.x: stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        let (lo, hi) = welch95(&[10.0, 12.0, 14.0], &[7.0, 8.0, 9.0]).unwrap();
        assert!((lo + 0.155_399_5).abs() < 1e-6 && (hi - 8.155_399_5).abs() < 1e-6, "{lo} {hi}");
        let (lo, hi) = welch95(&[10.0, 12.0, 14.0, 13.0], &[7.0, 8.0, 9.0]).unwrap();
        assert!((lo - 1.575_396_1).abs() < 1e-6 && (hi - 6.924_603_9).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(welch95(&[1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn per_user_speed_is_one_over_the_median_time_per_output_token() {
        let r = |first: f64, end: f64, n: u32| RequestRecord {
            first_token_s: Some(first),
            end_s: end,
            completion_tokens: Some(n),
            http_status: Some(200),
            ..Default::default()
        };
        let reqs = [r(0.1, 1.1, 11), r(0.1, 2.1, 11), r(0.1, 0.6, 11)];
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        assert!((per_user(&refs).unwrap() - 10.0).abs() < 1e-9);
    }
}
