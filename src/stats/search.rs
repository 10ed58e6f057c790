//! The maximum-sustainable-rate search, as a pure function of what was recorded: given a group's planned
//! ladder of rates and the points measured so far, it says which point to measure next, or why the search is
//! over. The executor asks it after every point; a resumed run and a re-rendered report replay it exactly.
//!
//! The rule: probe the lowest rate, then the highest, then bisect the bracket between the highest rate that
//! sustains and the lowest that does not, until they are neighbours on the ladder (the tolerance). It stops
//! early when a rate cannot be judged: its attainment interval still straddles the target after the repeats
//! the precision rule allows (neighbouring rates cannot be told apart), or the client did not deliver it.
//! A rate is measured with all its planned repeats (or, with `precision:`, until its cell is precise)
//! before it is judged.
//!
//! Each probe's reason and the search's stop are typed findings ([`Why`], [`Stop`]) built only here;
//! [`SearchState::holds`] checks them against the ladder and the cells (`servelab report --check`). The words
//! are the templates' (`templates/rate_findings.md`).

use super::rate::{self, Judgement, RateCell};
use crate::record::plan::{Point, PrecisionTarget, ServerGroup};
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, Status};
use crate::spec::Slo;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Sustains,
    Fails,
    /// The attainment interval straddles the target: not decided at this precision.
    Borderline,
    /// The client fell behind its schedule: the rate says nothing about the server.
    Undelivered,
    /// None of its points measured anything (the server did not start, or died before them): the search stops
    /// without a verdict on the server.
    Unmeasured,
}

/// Why a rung got its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// No repeat of the rung succeeded; `error` is the first error its records carry (their own text).
    /// `measured`: some point sent requests (a failed start records its points with none).
    PointsFailed { error: Option<String>, measured: bool },
    /// The rung's cell, judged as the sweep judges it.
    Judged { judgement: Judgement },
}

impl Why {
    /// The verdict the reason gives: a probe's verdict is never chosen apart from its reason.
    pub fn verdict(&self) -> Verdict {
        match self {
            Why::PointsFailed { measured: true, .. } => Verdict::Fails,
            Why::PointsFailed { measured: false, .. } => Verdict::Unmeasured,
            Why::Judged { judgement } => match judgement {
                Judgement::Sustains(_) | Judgement::Steady => Verdict::Sustains,
                Judgement::Rising { .. } | Judgement::Below(_) => Verdict::Fails,
                Judgement::RisingSome { .. } | Judgement::Straddles(_) => Verdict::Borderline,
                Judgement::Undelivered { .. } => Verdict::Undelivered,
            },
        }
    }
}

/// One judged rate, in the order the search probed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub rate: f64,
    pub verdict: Verdict,
    pub why: Why,
}

impl Probe {
    fn new(rate: f64, why: Why) -> Probe {
        Probe { rate, verdict: why.verdict(), why }
    }
}

/// Why the search ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    /// The plan holds no rate.
    NoRates,
    /// The lowest rate fails: the limit lies below the search.
    BelowSearch { rate: f64 },
    /// The lowest rate is borderline: the limit lies near or below the search.
    LowestBorderline { rate: f64 },
    /// The client did not deliver the lowest rate.
    LowestUndelivered { rate: f64 },
    /// Nothing was measured at the lowest rate.
    LowestUnmeasured { rate: f64 },
    /// The ladder holds one rate, and it sustains.
    OneRate { rate: f64 },
    /// The highest rate sustains: the limit lies above the search.
    AboveSearch { rate: f64 },
    /// Neighbours on the ladder: `sustains` does, `fails` does not.
    Bracketed { sustains: f64, fails: f64 },
    /// `at` is borderline after every repeat allowed; `sustains` is the highest rate that sustained.
    Borderline { sustains: f64, at: f64 },
    /// The client did not deliver `at`.
    Undelivered { sustains: f64, at: f64 },
    /// Nothing was measured at `at`.
    Unmeasured { sustains: f64, at: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    pub probes: Vec<Probe>,
    /// The point to measure next; None once the search is over.
    pub next: Option<String>,
    /// Why the search ended (None while it runs).
    pub stop: Option<Stop>,
    /// The highest rate that sustained and the lowest that did not (or could not be judged).
    pub bracket: (Option<f64>, Option<f64>),
}

/// What a search needs besides the records.
pub struct Rules<'a> {
    pub slo: Option<&'a Slo>,
    pub precision: Option<PrecisionTarget>,
}

enum Rung {
    Measure(String),
    Judged(Why),
}

/// Replays the search of `group` over the records so far.
/// The search of one server group replayed over a run's records: the one entry point of the executor (which
/// point next) and the report (the probes so far), so both read the same records the same way.
pub fn replay_recorded(group: &ServerGroup, rec: &crate::record::Recorded, rules: &Rules) -> SearchState {
    let points: Vec<PointRecord> = rec.points.iter().filter(|p| p.group == group.id).cloned().collect();
    replay(group, &points, &rec.requests, rules)
}

pub fn replay(group: &ServerGroup, points: &[PointRecord], requests: &[RequestRecord], rules: &Rules) -> SearchState {
    let mut ladder: Vec<f64> = group.points.iter().filter_map(|p| p.client.as_ref()?.rate()).collect();
    ladder.sort_by(f64::total_cmp);
    ladder.dedup();
    let mut s = SearchState { probes: Vec::new(), next: None, stop: None, bracket: (None, None) };
    let Some(last) = ladder.len().checked_sub(1) else {
        s.stop = Some(Stop::NoRates);
        return s;
    };
    let judge = |i: usize, s: &mut SearchState| -> Option<Verdict> {
        match rung(group, ladder[i], points, requests, rules) {
            Rung::Measure(id) => {
                s.next = Some(id);
                None
            }
            Rung::Judged(why) => {
                let p = Probe::new(ladder[i], why);
                let v = p.verdict;
                s.probes.push(p);
                Some(v)
            }
        }
    };
    let Some(v) = judge(0, &mut s) else { return s };
    if v != Verdict::Sustains {
        s.bracket = (None, Some(ladder[0]));
        let rate = ladder[0];
        s.stop = Some(match v {
            Verdict::Borderline => Stop::LowestBorderline { rate },
            Verdict::Undelivered => Stop::LowestUndelivered { rate },
            Verdict::Unmeasured => Stop::LowestUnmeasured { rate },
            _ => Stop::BelowSearch { rate },
        });
        return s;
    }
    s.bracket.0 = Some(ladder[0]);
    if last == 0 {
        s.stop = Some(Stop::OneRate { rate: ladder[0] });
        return s;
    }
    let (mut lo, mut hi) = (0, last);
    let Some(v) = judge(last, &mut s) else { return s };
    match v {
        Verdict::Sustains => {
            s.bracket = (Some(ladder[last]), None);
            s.stop = Some(Stop::AboveSearch { rate: ladder[last] });
            return s;
        }
        Verdict::Fails => {}
        Verdict::Borderline | Verdict::Undelivered | Verdict::Unmeasured => {
            return undecided(s, ladder[lo], ladder[last], v);
        }
    }
    loop {
        s.bracket = (Some(ladder[lo]), Some(ladder[hi]));
        if hi - lo <= 1 {
            s.stop = Some(Stop::Bracketed { sustains: ladder[lo], fails: ladder[hi] });
            return s;
        }
        let mid = (lo + hi) / 2;
        let Some(v) = judge(mid, &mut s) else { return s };
        match v {
            Verdict::Sustains => lo = mid,
            Verdict::Fails => hi = mid,
            Verdict::Borderline | Verdict::Undelivered | Verdict::Unmeasured => {
                return undecided(s, ladder[lo], ladder[mid], v);
            }
        }
    }
}

fn undecided(mut s: SearchState, lo: f64, at: f64, v: Verdict) -> SearchState {
    s.bracket = (Some(lo), Some(at));
    s.stop = Some(match v {
        Verdict::Borderline => Stop::Borderline { sustains: lo, at },
        Verdict::Unmeasured => Stop::Unmeasured { sustains: lo, at },
        _ => Stop::Undelivered { sustains: lo, at },
    });
    s
}

/// A rung's state: the point it needs measured next, or its verdict once its repeats are in.
fn rung(group: &ServerGroup, rate: f64, points: &[PointRecord], requests: &[RequestRecord], rules: &Rules) -> Rung {
    let mut planned: Vec<&Point> =
        group.points.iter().filter(|p| p.client.as_ref().and_then(|c| c.rate()) == Some(rate)).collect();
    planned.sort_by_key(|p| p.repeat);
    // The latest attempt of each planned point; an interrupted one is measured again.
    let latest = |id: &str| points.iter().filter(|r| r.point == id).max_by_key(|r| r.attempt);
    let settled: Vec<&PointRecord> =
        planned.iter().filter_map(|p| latest(&p.id)).filter(|r| r.status != Status::Interrupted).collect();
    let next = planned.iter().find(|p| latest(&p.id).is_none_or(|r| r.status == Status::Interrupted));
    let ok: Vec<PointRecord> = settled.iter().filter(|r| r.status == Status::Ok).map(|r| (*r).clone()).collect();
    let target = rules.slo.map(|s| s.attainment);
    let cell: Option<RateCell> =
        rate::analyze(&ok, requests, rules.slo).into_iter().next().and_then(|s| s.cells.into_iter().next());
    let more = match rules.precision {
        None => true,
        Some(p) => {
            settled.len() < p.min_repeats as usize
                || cell.as_ref().is_none_or(|c| rate::needs_repeat(c, p.rel_ci, target))
        }
    };
    if let Some(p) = next
        && more
    {
        return Rung::Measure(p.id.clone());
    }
    let Some(cell) = cell else {
        let error = settled.iter().find_map(|r| r.error.clone());
        // A point with no request at all was never measured (a failed start records its points so): that says
        // nothing about the rate.
        let measured = settled.iter().any(|r| requests.iter().any(|q| q.point == r.point && q.attempt == r.attempt));
        return Rung::Judged(Why::PointsFailed { error, measured });
    };
    Rung::Judged(Why::Judged { judgement: rate::judge(&cell, target) })
}

/// What the search rule gives for a sequence of verdicts: the rates probed in order (with the rung being
/// measured last while the search runs), the stop (None while it runs) and the bracket. The rule written
/// plainly over indices, without records.
type Expected = (Vec<f64>, Option<Stop>, (Option<f64>, Option<f64>));

fn expected(ladder: &[f64], verdicts: &[Verdict]) -> Expected {
    let mut probed = Vec::new();
    let Some(last) = ladder.len().checked_sub(1) else { return (probed, Some(Stop::NoRates), (None, None)) };
    probed.push(ladder[0]);
    let Some(&v) = verdicts.first() else { return (probed, None, (None, None)) };
    let rate = ladder[0];
    let stop = match v {
        Verdict::Sustains => None,
        Verdict::Fails => Some(Stop::BelowSearch { rate }),
        Verdict::Borderline => Some(Stop::LowestBorderline { rate }),
        Verdict::Undelivered => Some(Stop::LowestUndelivered { rate }),
        Verdict::Unmeasured => Some(Stop::LowestUnmeasured { rate }),
    };
    if stop.is_some() {
        return (probed, stop, (None, Some(rate)));
    }
    if last == 0 {
        return (probed, Some(Stop::OneRate { rate }), (Some(rate), None));
    }
    let (mut lo, mut hi, mut at) = (0, last, last);
    let mut k = 1;
    loop {
        probed.push(ladder[at]);
        let Some(&v) = verdicts.get(k) else {
            let bracket = if at == last { (Some(ladder[0]), None) } else { (Some(ladder[lo]), Some(ladder[hi])) };
            return (probed, None, bracket);
        };
        k += 1;
        let (sustains, to) = (ladder[lo], ladder[at]);
        match v {
            Verdict::Sustains if at == last => {
                return (probed, Some(Stop::AboveSearch { rate: to }), (Some(to), None));
            }
            Verdict::Sustains => lo = at,
            Verdict::Fails => hi = at,
            Verdict::Borderline => {
                return (probed, Some(Stop::Borderline { sustains, at: to }), (Some(sustains), Some(to)));
            }
            Verdict::Undelivered => {
                return (probed, Some(Stop::Undelivered { sustains, at: to }), (Some(sustains), Some(to)));
            }
            Verdict::Unmeasured => {
                return (probed, Some(Stop::Unmeasured { sustains, at: to }), (Some(sustains), Some(to)));
            }
        }
        if hi - lo <= 1 {
            let (s, f) = (ladder[lo], ladder[hi]);
            return (probed, Some(Stop::Bracketed { sustains: s, fails: f }), (Some(s), Some(f)));
        }
        at = (lo + hi) / 2;
    }
}

impl SearchState {
    /// Checks the search as written against its ladder and the group's cells: each probe's verdict follows
    /// from its reason, each reason from the cell at its rate (judged again by plain comparisons), each rate
    /// is the one the rule probes next after the verdicts before it, and the stop and bracket are the rule's.
    pub fn holds(&self, ladder: &[f64], cells: &[RateCell], target: Option<f64>) -> Vec<String> {
        let mut bad = Vec::new();
        for p in &self.probes {
            let at = super::trimmed(p.rate, 3);
            if p.verdict != p.why.verdict() {
                bad.push(format!("{at} req/s: verdict {:?} where its reason gives {:?}", p.verdict, p.why.verdict()));
            }
            let cell = cells.iter().find(|c| c.rate == p.rate);
            match (&p.why, cell) {
                (Why::PointsFailed { .. }, None) => {}
                (Why::Judged { judgement }, Some(c)) => {
                    let plain = rate::plain_judgement(c, target);
                    if !rate::same_judgement(judgement, &plain) {
                        bad.push(format!("{at} req/s: {judgement:?}, but its cell gives {plain:?}"));
                    }
                }
                (Why::PointsFailed { .. }, Some(_)) => {
                    bad.push(format!("{at} req/s: its points failed, yet it has a cell"))
                }
                (Why::Judged { .. }, None) => bad.push(format!("{at} req/s: judged, yet no cell at that rate")),
            }
        }
        let verdicts: Vec<Verdict> = self.probes.iter().map(|p| p.verdict).collect();
        let (probed, stop, bracket) = expected(ladder, &verdicts);
        let rates: Vec<f64> = self.probes.iter().map(|p| p.rate).collect();
        let running = usize::from(stop.is_none() && !ladder.is_empty());
        if probed.len() != rates.len() + running || probed[..rates.len().min(probed.len())] != rates[..] {
            bad.push(format!("probed {rates:?}; the rule probes {probed:?}"));
        }
        if self.stop != stop || self.bracket != bracket {
            bad.push(format!(
                "stopped {:?} bracketing {:?}; the rule gives {stop:?} bracketing {bracket:?}",
                self.stop, self.bracket
            ));
        }
        if self.stop.is_some() && self.next.is_some() {
            bad.push("the search stopped, yet names a point to measure next".to_owned());
        }
        bad
    }
}

#[cfg(test)]
mod tests;
