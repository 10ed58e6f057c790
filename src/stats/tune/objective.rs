//! A configuration's objective from its records: each workload level's figure per repeat, the best level
//! within the budget (throughput) or the best goodput, and the gain of the pick over vLLM's defaults.

use super::super::summary::{ci95, mean, percentile_sorted};
use super::super::sweep::{self, GroupSweep};
use crate::record::plan::TunePlan;
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
    /// Which start each `per_start` value is (the confirmation's start k, in ABBA order; 0 for the search's
    /// one start): the paired test pairs the pick's start k with the defaults' start k.
    pub start_index: Vec<u32>,
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

/// The gain of the winner over vLLM's defaults, both measured again after the search on fresh servers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gain {
    pub winner: f64,
    pub defaults: f64,
    /// (winner − defaults) / defaults.
    pub rel: f64,
    /// Its 95% interval over server starts: the paired t interval of the per-start differences (the pick's
    /// start k against the defaults' start k, started side by side in ABBA order), over the defaults' mean.
    /// None with fewer than two pairs: repeats on one server do not show what another start of the same
    /// configuration serves (on the H200, two starts of one configuration differed by 16% where each one's
    /// repeats agreed within 5%: examples/h200-tune).
    pub rel_ci: Option<(f64, f64)>,
    /// The pairs of starts the interval rests on.
    pub pairs: usize,
    /// The interval over the repeats alone (what one server showed), for reference; it decides nothing.
    pub repeat_ci: Option<(f64, f64)>,
    /// The interval over starts lies above 0.
    pub significant: bool,
}

/// The latest attempt of each of `group`'s points in `repeats`.
pub(super) fn points_of<'a>(rec: &'a Recorded, group: &str, repeats: std::ops::Range<u32>) -> Vec<PointRecord> {
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
pub(super) struct Level {
    pub label: String,
    pub per_repeat: Vec<f64>,
    pub ci: Option<(f64, f64)>,
    pub p95: Option<f64>,
    pub tok_s: f64,
    pub per_user: Option<f64>,
}

pub(super) fn levels(spec: &Spec, tp: &TunePlan, points: &[PointRecord], rec: &Recorded) -> Vec<Level> {
    let requests = &rec.requests;
    let reqs_of = |label_points: &[&str]| -> Vec<&RequestRecord> {
        requests.iter().filter(|r| label_points.contains(&r.point.as_str())).collect()
    };
    if tp.objective == "goodput" {
        let sweeps = super::super::rate::analyze(points, requests, spec.slo.as_ref());
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
    let sweeps: Vec<GroupSweep> =
        sweep::analyze(points, requests, &[], spec.effective_policy(), &spec.knee, rec.metrics_version);
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
pub(super) fn objective(spec: &Spec, tp: &TunePlan, points: &[PointRecord], rec: &Recorded) -> Option<Measured> {
    let ok: Vec<PointRecord> = points.iter().filter(|p| p.status == Status::Ok).cloned().collect();
    let lv = levels(spec, tp, &ok, rec);
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
            start_index: vec![0],
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
                start_index: Vec::new(),
                level: String::new(),
                p95_e2e_s: Some(lowest),
                none_within: Some(RowNote::NoneWithin { budget_s: budget.unwrap_or_default(), lowest_s: lowest }),
            }
        }
    })
}

/// The welch interval of mean(a) − mean(b).
fn welch95(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let var = |x: &[f64]| super::super::summary::stddev(x).powi(2) / x.len() as f64;
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

/// The pick's start k minus the defaults' start k, for every k both have.
pub fn paired_diffs(w: &Measured, d: &Measured) -> Vec<f64> {
    let of = |m: &Measured, k: u32| m.start_index.iter().position(|&j| j == k).map(|i| m.per_start[i]);
    w.start_index.iter().filter_map(|&k| Some(of(w, k)? - of(d, k)?)).collect()
}

/// The gain of the pick over the defaults, both as measured again: None without both, or when the defaults
/// met the objective nowhere (a gain over 0 is no figure).
pub fn gain_of(winner: Option<&Measured>, defaults: Option<&Measured>) -> Option<Gain> {
    let (w, d) = (winner?, defaults?);
    if d.value <= 0.0 {
        return None;
    }
    let rel = |ci: Option<(f64, f64)>| ci.map(|(lo, hi)| (lo / d.value, hi / d.value));
    let diffs = paired_diffs(w, d);
    let ci = rel(super::noise::paired95(&diffs));
    Some(Gain {
        winner: w.value,
        defaults: d.value,
        rel: w.value / d.value - 1.0,
        rel_ci: ci,
        pairs: diffs.len(),
        repeat_ci: rel(welch95(&w.per_repeat, &d.per_repeat)),
        significant: ci.is_some_and(|c| c.0 > 0.0),
    })
}

/// A test's configuration measured at level c=8 with these per-start values (one repeat each).
#[cfg(test)]
pub(super) fn measured_at_starts(per_start: &[f64]) -> Measured {
    let value = per_start.iter().sum::<f64>() / per_start.len() as f64;
    Measured {
        value,
        ci: None,
        per_repeat: per_start.to_vec(),
        per_start: per_start.to_vec(),
        start_index: (0..per_start.len() as u32).collect(),
        level: "c=8".into(),
        p95_e2e_s: Some(1.0),
        none_within: None,
    }
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
