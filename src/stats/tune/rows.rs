//! The tune's table: a row per configuration (searched in order, then vLLM's defaults, then the pruned
//! ones), each with its search and confirmation figures, and the Pareto chart's points.

use super::noise::{self, Noise, Planned};
use super::objective::{Measured, RowNote, levels, objective, points_of};
use super::schedule::{Phases, Search, group, start_failed};
use super::{Lower, ParetoPoint, Row, command_of, setting_of};
use crate::record::plan::{Plan, TunePlan};
use crate::record::{PointRecord, Recorded, Status};
use crate::spec::Spec;
use std::collections::BTreeMap;

/// The confirmation of a group over all its starts; the level chosen over all of them, then each start's mean
/// at that level.
pub(super) fn confirmed(spec: &Spec, tp: &TunePlan, rec: &Recorded, g: &str) -> Option<Measured> {
    let ph = Phases::of(tp);
    let mut m = objective(spec, tp, &points_of(rec, g, ph.confirm()), rec)?;
    let starts: Vec<(u32, f64)> = (0..ph.cs)
        .filter_map(|k| {
            let pts: Vec<PointRecord> =
                points_of(rec, g, ph.start(k)).into_iter().filter(|p| p.status == Status::Ok).collect();
            levels(spec, tp, &pts, rec)
                .into_iter()
                .find(|l| l.label == m.level)
                .map(|l| (k, super::super::summary::mean(&l.per_repeat)))
        })
        .collect();
    (m.start_index, m.per_start) = starts.into_iter().unzip();
    Some(m)
}

/// Every row: the searched configurations best first, the defaults (when measured or failed), the pruned.
pub(super) fn rows(
    spec: &Spec,
    plan: &Plan,
    tp: &TunePlan,
    rec: &Recorded,
    search: &Search<'_>,
    defaults: Option<&Measured>,
    pruned: &BTreeMap<String, String>,
) -> Vec<Row> {
    let command = |g: &str| group(plan, g).map(command_of).unwrap_or_default();
    let mut rows: Vec<Row> = Vec::new();
    for (n, c) in search.started.iter().enumerate() {
        let m = search.measured[c.group.as_str()].clone();
        let screen = search.screens.short.get(&c.group).cloned().flatten();
        let status = match (&m, &screen) {
            (Some(_), _) => "ok",
            (None, Some(_)) if search.screens.out(&c.group) => "screened",
            _ => "failed",
        };
        rows.push(Row {
            group: c.group.clone(),
            setting: setting_of(tp, c),
            defaults: false,
            searched: Some(n + 1),
            note: m.as_ref().and_then(|m| m.none_within.clone()),
            search: m,
            screen,
            confirm: confirmed(spec, tp, rec, &c.group),
            status: status.into(),
            command: command(&c.group),
            lower: None,
        });
    }
    // Measured in full first, then those screened out by their short phase, then the failed.
    rows.sort_by(|a, b| {
        let v = |m: &Option<Measured>| m.as_ref().map_or(f64::NEG_INFINITY, |m| m.value);
        v(&b.search).total_cmp(&v(&a.search)).then(v(&b.screen).total_cmp(&v(&a.screen)))
    });
    if defaults.is_some() || start_failed(rec, &tp.defaults_group) {
        rows.push(Row {
            group: tp.defaults_group.clone(),
            setting: String::new(),
            defaults: true,
            searched: None,
            search: None,
            screen: None,
            note: defaults.and_then(|m| m.none_within.clone()),
            status: if defaults.is_some() { "ok".into() } else { "failed".into() },
            confirm: defaults.cloned(),
            command: command(&tp.defaults_group),
            lower: None,
        });
    }
    for c in tp.configs.iter().filter(|c| pruned.contains_key(&c.group)) {
        rows.push(Row {
            group: c.group.clone(),
            setting: setting_of(tp, c),
            defaults: false,
            searched: None,
            search: None,
            screen: None,
            confirm: None,
            status: "pruned".into(),
            note: Some(RowNote::Pruned { why: pruned[&c.group].clone() }),
            command: command(&c.group),
            lower: None,
        });
    }
    rows
}

/// Each measured level of each configuration (search repeats, and the confirmation's for the defaults) on
/// tokens/s per GPU against tokens/s per user, and which points no other point beats on both.
pub(super) fn pareto(spec: &Spec, tp: &TunePlan, rec: &Recorded, rows: &[Row]) -> Vec<ParetoPoint> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.status != "pruned") {
        let reps = if r.searched.is_some() { 0..tp.search_repeats } else { tp.search_repeats..u32::MAX };
        let pts: Vec<PointRecord> =
            points_of(rec, &r.group, reps).into_iter().filter(|p| p.status == Status::Ok).collect();
        let gpus = rec.servers.iter().find(|s| s.id == r.group).map_or(1, |s| s.tensor_parallel_size()).max(1);
        for l in levels(spec, tp, &pts, rec) {
            if let Some(u) = l.per_user {
                out.push(ParetoPoint {
                    setting: r.setting.clone(),
                    defaults: r.defaults,
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

/// A row's starts as samples of the between-start noise, each the mean of its repeats: the confirmation's,
/// and the search's one where it came from the same level (the search's start of the pick was chosen for
/// being high, so it widens the noise rather than narrowing it).
pub(super) fn start_values(r: &Row) -> Vec<f64> {
    match (&r.search, &r.confirm) {
        (s, Some(c)) => {
            let same = s.as_ref().filter(|s| s.level == c.level && !s.level.is_empty());
            same.map(|s| s.value).into_iter().chain(c.per_start.iter().copied()).collect()
        }
        (Some(s), None) if !s.level.is_empty() => vec![s.value],
        _ => Vec::new(),
    }
}

/// Each row's lower bound under the noise, and the rows ranked by it (without a noise, by the search's
/// figure, as every searched configuration then rests on its one start): searched rows first, the defaults
/// and the pruned after them, as before.
pub(super) fn rank(rows: &mut [Row], noise: Option<&Noise>) {
    for r in rows.iter_mut() {
        let best = r.confirm.as_ref().filter(|c| !c.per_start.is_empty()).or(r.search.as_ref());
        r.lower = noise.zip(best).and_then(|(n, m)| {
            let starts = m.per_start.len();
            noise::lower_bound(m.value, starts, n).map(|value| Lower { value, starts })
        });
    }
    let searched = rows.iter().take_while(|r| r.searched.is_some()).count();
    rows[..searched].sort_by(|a, b| {
        let v = |r: &Row| match (&r.lower, &r.search) {
            (Some(l), _) if noise.is_some() => l.value,
            (_, Some(m)) => m.value,
            _ => f64::NEG_INFINITY,
        };
        v(b).total_cmp(&v(a))
    });
}

/// The confirmation's plan after its first pair: the pick's and the defaults' start 0, the noise pooled over
/// the pick's starts then (its search start where at the same level, and start 0).
pub(super) fn planned(rows: &[Row], winner: Option<&str>, confirm_starts: u32) -> Option<Planned> {
    let w = rows.iter().find(|r| Some(r.group.as_str()) == winner)?;
    let d = rows.iter().find(|r| r.searched.is_none() && r.status != "pruned")?;
    let first = |m: &super::Measured| m.start_index.iter().position(|&k| k == 0).map(|i| m.per_start[i]);
    let (wc, dc) = (w.confirm.as_ref()?, d.confirm.as_ref()?);
    let (w0, d0) = (first(wc)?, first(dc)?);
    let search = w.search.as_ref().filter(|s| s.level == wc.level).map(|s| s.value);
    let noise = noise::pooled(&[search.into_iter().chain([w0]).collect()])?;
    (d0 > 0.0).then(|| Planned::of(w0 / d0 - 1.0, noise, confirm_starts))
}
