//! The tune's table: a row per configuration (searched in order, then vLLM's defaults, then the pruned
//! ones), each with its search and confirmation figures, and the Pareto chart's points.

use super::objective::{Measured, RowNote, levels, objective, points_of};
use super::schedule::{Phases, Search, group, start_failed};
use super::{ParetoPoint, Row, command_of, setting_of};
use crate::record::plan::{Plan, TunePlan};
use crate::record::{PointRecord, Recorded, Status};
use crate::spec::Spec;
use std::collections::BTreeMap;

/// The confirmation of a group over all its starts; the level chosen over all of them, then each start's mean
/// at that level.
pub(super) fn confirmed(spec: &Spec, tp: &TunePlan, rec: &Recorded, g: &str) -> Option<Measured> {
    let ph = Phases::of(tp);
    let mut m = objective(spec, tp, &points_of(rec, g, ph.confirm()), &rec.requests)?;
    m.per_start = (0..ph.cs)
        .filter_map(|k| {
            let pts: Vec<PointRecord> =
                points_of(rec, g, ph.start(k)).into_iter().filter(|p| p.status == Status::Ok).collect();
            levels(spec, tp, &pts, &rec.requests)
                .into_iter()
                .find(|l| l.label == m.level)
                .map(|l| super::super::summary::mean(&l.per_repeat))
        })
        .collect();
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
        let failed = m.is_none();
        rows.push(Row {
            group: c.group.clone(),
            setting: setting_of(tp, c),
            searched: Some(n + 1),
            note: m.as_ref().and_then(|m| m.none_within.clone()),
            search: m,
            confirm: confirmed(spec, tp, rec, &c.group),
            status: if failed { "failed".into() } else { "ok".into() },
            command: command(&c.group),
        });
    }
    rows.sort_by(|a, b| {
        let v = |r: &Row| r.search.as_ref().map_or(f64::NEG_INFINITY, |m| m.value);
        v(b).total_cmp(&v(a))
    });
    if defaults.is_some() || start_failed(rec, &tp.defaults_group) {
        rows.push(Row {
            group: tp.defaults_group.clone(),
            setting: "vLLM defaults".into(),
            searched: None,
            search: None,
            note: defaults.and_then(|m| m.none_within.clone()),
            status: if defaults.is_some() { "ok".into() } else { "failed".into() },
            confirm: defaults.cloned(),
            command: command(&tp.defaults_group),
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
            command: command(&c.group),
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
