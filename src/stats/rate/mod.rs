//! The open-loop rate sweep: per cell (one offered rate), whether the client delivered the schedule, whether
//! the server kept up, SLO attainment and goodput; per group, the highest rate that sustains the SLO.
//!
//! A cell's measured requests are those its schedule placed before the duration (at least `min_requests`);
//! tail arrivals and warmups never count. Offered rate = measured arrivals ÷ the measured span (the duration,
//! or the last measured arrival when the SLO minimum extended it); achieved rate = those actually sent
//! within the span ÷ the span — both against the pre-drawn schedule, not the nominal rate, whose Poisson
//! noise alone is 1/√(λ·duration).
//!
//! Each claim about a cell or a group is a typed finding ([`Judgement`], [`Note`], [`Sustainable`]) built only
//! here and only where its predicate over the cells' figures holds; [`RateSweep::holds`] checks them again from
//! the cells by a plainer path. The words are the templates' (`templates/rate_findings.md`).

mod holds;
#[cfg(test)]
mod tests;

pub use holds::{plain_judgement, same_judgement};

use super::summary::{ci95, mean, percentile_sorted};
use super::window;
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, Status};
use crate::spec::Slo;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF};

/// A request more than this late against its schedule counts as late.
pub const LATE_S: f64 = 0.001;
/// The client delivered a cell's load when at most this share of its requests left late.
pub const LATE_SHARE_MAX: f64 = 0.01;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateRepeat {
    pub requests: usize,
    pub span_s: f64,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    /// Requests meeting every SLO (all successful ones without an SLO).
    pub met: usize,
    pub goodput_rps: f64,
    pub tok_s: f64,
    pub p95_e2e_s: f64,
    /// Mean requests in flight over the first and the last third of the steady window (None: too few arrivals).
    pub in_flight_first: Option<f64>,
    pub in_flight_last: Option<f64>,
    pub errors: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateCell {
    pub rate: f64,
    pub arrival: String,
    /// `load.client_threads` of its points (1 when not set): cells that differ only by it are cells of their
    /// own, and the CSV's `client_threads` column tells them apart.
    #[serde(default = "one_thread")]
    pub client_threads: u32,
    pub repeats: Vec<RateRepeat>,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub lateness_p50_s: f64,
    pub lateness_p99_s: f64,
    pub late_share: f64,
    /// At most 1% of requests left over 1 ms late: the cell measured the load it asked for.
    pub delivered: bool,
    /// The in-flight count kept rising in some repeat: the server did not keep up (never a steady state).
    pub rising: bool,
    /// Repeats whose in-flight count kept rising (all of them: the rate fails; some: it is borderline).
    #[serde(default)]
    pub rising_repeats: usize,
    pub requests: usize,
    pub met: usize,
    pub attainment: f64,
    /// 95% interval of the attainment: Clopper–Pearson over the pooled requests, widened to the Student-t
    /// interval over the repeats' attainments when there are two or more. Requests of one phase are not
    /// independent near the limit (one queue build-up fails many in a row): on an H200, three 3 s phases at
    /// 200/s met the SLO for 66%, 100% and 100% of their requests, which the pooled interval alone (87–90%)
    /// hides.
    pub attainment_ci: (f64, f64),
    pub goodput_rps: f64,
    pub goodput_ci: Option<(f64, f64)>,
    pub tok_s: f64,
    pub mean_e2e_s: f64,
    pub p50_e2e_s: f64,
    pub p95_e2e_s: f64,
    pub p95_e2e_ci: Option<(f64, f64)>,
    pub ttft_p50_s: f64,
    pub ttft_p95_s: f64,
    pub tpot_p50_s: f64,
    pub tpot_p95_s: f64,
    pub errors: usize,
    pub notes: Vec<Note>,
}

/// What a cell's table row flags.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// More than [`LATE_SHARE_MAX`] of the cell's requests left over [`LATE_S`] late.
    Undelivered { late_share: f64, late_p99_s: f64 },
    /// The in-flight count kept rising in `rising` of the cell's `repeats` (at least one).
    Rising { rising: usize, repeats: usize },
}

/// A cell's pooled attainment, the interval shown for it, and the SLO's target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attainment {
    pub share: f64,
    pub ci: (f64, f64),
    pub target: f64,
}

/// What one rate's cell says about the server, in the order it is decided: a growing queue first (late
/// arrivals offer no more load than the schedule, so the server could not keep up with less than was asked),
/// then the client's delivery, then the SLO.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Judgement {
    /// The in-flight count kept rising in every repeat: the server did not keep up.
    Rising { repeats: usize },
    /// It kept rising in some repeats and held steady in others: borderline.
    RisingSome { rising: usize, repeats: usize },
    /// More than [`LATE_SHARE_MAX`] of the requests left over [`LATE_S`] late: the rate cannot be judged.
    Undelivered { late_share: f64 },
    /// The whole attainment interval lies below the target.
    Below(Attainment),
    /// The interval holds the target: borderline.
    Straddles(Attainment),
    /// The interval's lower bound reaches the target.
    Sustains(Attainment),
    /// No SLO: the client delivered and requests in flight stayed steady.
    Steady,
}

impl Judgement {
    /// The rate sustains the SLO (or, without one, keeps up).
    pub fn sustains(&self) -> bool {
        matches!(self, Judgement::Sustains(_) | Judgement::Steady)
    }

    /// A rerun may decide either way.
    pub fn borderline(&self) -> bool {
        matches!(self, Judgement::RisingSome { .. } | Judgement::Straddles(_))
    }
}

/// What a group's sweep concludes: the highest rate such that it and every lower rate sustain the SLO (or,
/// without one, keep up).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sustainable {
    /// Every rate up to `rate` sustains; `next`, the first rate above it, does not, for `why`.
    Limit { rate: f64, next: f64, why: Judgement },
    /// Every tested rate sustains, up to `rate`: the limit lies above.
    AboveAll { rate: f64 },
    /// Already the lowest rate does not sustain.
    NoneSustains { lowest: f64, why: Judgement },
    /// No open-loop cell was measured.
    NoCells,
}

impl Sustainable {
    /// The sustainable rate, when one is.
    pub fn rate(&self) -> Option<f64> {
        match self {
            Sustainable::Limit { rate, .. } | Sustainable::AboveAll { rate } => Some(*rate),
            _ => None,
        }
    }
}

/// The per-request objectives of the SLO, in seconds, and the attainment target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SloRule {
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
    pub attainment: f64,
}

impl SloRule {
    pub fn of(slo: &Slo) -> SloRule {
        let s = |d: Option<crate::spec::Dur>| d.map(|d| d.0.as_secs_f64());
        SloRule { ttft_s: s(slo.ttft), tpot_s: s(slo.tpot), e2e_s: s(slo.e2e), attainment: slo.attainment }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateSweep {
    pub group: String,
    pub slo: Option<SloRule>,
    pub target: Option<f64>,
    pub cells: Vec<RateCell>,
    pub sustainable: Sustainable,
    /// With an SLO: the rates measured in one phase, whose attainment interval counts the requests as
    /// independent, which near the limit they are not (one queue build-up fails many in a row).
    #[serde(default)]
    pub one_phase: Vec<f64>,
}

/// The Clopper–Pearson 95% interval of k successes in n trials.
pub fn clopper_pearson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let lo = if k == 0.0 { 0.0 } else { Beta::new(k, n - k + 1.0).map_or(0.0, |b| b.inverse_cdf(0.025)) };
    let hi = if k == n { 1.0 } else { Beta::new(k + 1.0, n - k).map_or(1.0, |b| b.inverse_cdf(0.975)) };
    (lo, hi)
}

/// Whether one request met every objective of the SLO (a failed request never does).
pub fn meets(r: &RequestRecord, slo: Option<&Slo>) -> bool {
    if !r.ok() {
        return false;
    }
    let Some(slo) = slo else { return true };
    let within = |limit: Option<crate::spec::Dur>, v: Option<f64>| match (limit, v) {
        (None, _) => true,
        (Some(l), Some(v)) => v <= l.0.as_secs_f64(),
        (Some(_), None) => false,
    };
    let ttft = r.first_token_s.map(|f| f - r.start_s);
    // A request of one token has no time per output token: it cannot miss that objective.
    let tpot_ok =
        slo.tpot.is_none() || r.completion_tokens.is_some_and(|t| t < 2) || within(slo.tpot, window::tpot_s(r));
    within(slo.ttft, ttft) && tpot_ok && within(slo.e2e, Some(r.end_s - r.start_s))
}

/// Mean requests in flight at each measured arrival, over the first and the last third of [open, close].
fn in_flight_thirds(reqs: &[&RequestRecord], open: f64, close: f64) -> (Option<f64>, Option<f64>) {
    let mut ends: Vec<f64> = reqs.iter().map(|r| r.end_s).collect();
    ends.sort_by(f64::total_cmp);
    let mut starts: Vec<f64> = reqs.iter().map(|r| r.start_s).collect();
    starts.sort_by(f64::total_cmp);
    let at = |t: f64| (starts.partition_point(|s| *s <= t) - ends.partition_point(|e| *e <= t)) as f64;
    let third = (close - open) / 3.0;
    let mean_in = |a: f64, b: f64| {
        let xs: Vec<f64> = starts.iter().filter(|s| **s >= a && **s < b).map(|s| at(*s)).collect();
        (xs.len() >= 10).then(|| mean(&xs))
    };
    (mean_in(open, open + third), mean_in(close - third, close + 1e-9))
}

/// Rising: the last third holds more than 1.5× the first third's requests in flight, plus 2 (a server
/// that keeps up holds a steady count; one that does not accumulates a queue).
pub fn rising(first: Option<f64>, last: Option<f64>) -> bool {
    matches!((first, last), (Some(f), Some(l)) if l > 1.5 * f + 2.0)
}

fn repeat_of(p: &PointRecord, reqs: &[&RequestRecord], slo: Option<&Slo>) -> RateRepeat {
    repeat_over(p.client.duration_s.unwrap_or(0.0), reqs, slo)
}

/// One repeat of a phase by time of `d` seconds (0: by count).
fn repeat_over(d: f64, reqs: &[&RequestRecord], slo: Option<&Slo>) -> RateRepeat {
    let last_scheduled = reqs.iter().map(|r| r.scheduled_s).fold(0.0, f64::max);
    // A phase by time offers n arrivals in d; one extended to its SLO minimum, n − 1 gaps up to its last arrival.
    let (span_s, offered) = if d > 0.0 && last_scheduled < d {
        (d, reqs.len() as f64)
    } else {
        (last_scheduled.max(1e-9), reqs.len().saturating_sub(1) as f64)
    };
    let sent = reqs.iter().filter(|r| r.start_s <= span_s).count().min(offered as usize);
    let met = reqs.iter().filter(|r| meets(r, slo)).count();
    let w = window::window(reqs);
    let tok_s = w.map_or(0.0, |w| reqs.iter().map(|r| window::tokens_in(r, &w)).sum::<f64>() / w.len_s());
    let mut e2e: Vec<f64> = reqs.iter().filter(|r| r.ok()).map(|r| r.end_s - r.start_s).collect();
    e2e.sort_by(f64::total_cmp);
    let (first, last) = w.map_or((None, None), |w| in_flight_thirds(reqs, w.open_s, w.close_s));
    let achieved_rps = sent as f64 / span_s;
    RateRepeat {
        requests: reqs.len(),
        span_s,
        offered_rps: offered / span_s,
        achieved_rps,
        met,
        // The achieved rate times the share that met the SLO: one window for both, so goodput never exceeds
        // what was sent (met ÷ span counted n requests against n − 1 gaps, or requests sent after the span).
        goodput_rps: achieved_rps * met as f64 / reqs.len().max(1) as f64,
        tok_s,
        p95_e2e_s: percentile_sorted(&e2e, 95.0),
        in_flight_first: first,
        in_flight_last: last,
        errors: reqs.iter().filter(|r| !r.ok()).count(),
    }
}

/// A rate or a latency is never negative: a Student-t interval over few repeats can reach below 0.
fn nonnegative(ci: Option<(f64, f64)>) -> Option<(f64, f64)> {
    ci.map(|(lo, hi)| (lo.max(0.0), hi))
}

fn sorted(mut xs: Vec<f64>) -> Vec<f64> {
    xs.sort_by(f64::total_cmp);
    xs
}

/// Clopper–Pearson over the pooled requests, widened by the Student-t interval over the repeats' own
/// attainments (see [`RateCell::attainment_ci`]).
pub fn attainment_interval(repeats: &[RateRepeat]) -> (f64, f64) {
    let (requests, met) = (repeats.iter().map(|r| r.requests).sum(), repeats.iter().map(|r| r.met).sum());
    let (lo, hi) = clopper_pearson(met, requests);
    let shares: Vec<f64> =
        repeats.iter().filter(|r| r.requests > 0).map(|r| r.met as f64 / r.requests as f64).collect();
    match ci95(&shares) {
        Some((tlo, thi)) => (lo.min(tlo).max(0.0), hi.max(thi).min(1.0)),
        None => (lo, hi),
    }
}

fn cell_of(rate: f64, arrival: String, repeats: Vec<RateRepeat>, reqs: &[&RequestRecord]) -> RateCell {
    let late = sorted(reqs.iter().map(|r| r.start_s - r.scheduled_s).collect());
    let ok: Vec<&&RequestRecord> = reqs.iter().filter(|r| r.ok()).collect();
    let e2e = sorted(ok.iter().map(|r| r.end_s - r.start_s).collect());
    let ttft = sorted(ok.iter().filter_map(|r| r.first_token_s.map(|f| f - r.start_s)).collect());
    let tpot = sorted(ok.iter().filter_map(|r| window::tpot_s(r)).collect());
    let late_share = late.iter().filter(|l| **l > LATE_S).count() as f64 / late.len().max(1) as f64;
    let (requests, met) = (repeats.iter().map(|r| r.requests).sum(), repeats.iter().map(|r| r.met).sum());
    let per = |f: fn(&RateRepeat) -> f64| repeats.iter().map(f).collect::<Vec<f64>>();
    let rising_repeats = repeats.iter().filter(|r| rising(r.in_flight_first, r.in_flight_last)).count();
    let rising = rising_repeats > 0;
    let attainment_ci = attainment_interval(&repeats);
    let delivered = late_share <= LATE_SHARE_MAX;
    let mut notes = Vec::new();
    if !delivered {
        notes.push(Note::Undelivered { late_share, late_p99_s: percentile_sorted(&late, 99.0) });
    }
    if rising {
        notes.push(Note::Rising { rising: rising_repeats, repeats: repeats.len() });
    }
    RateCell {
        rate,
        arrival,
        client_threads: 1,
        offered_rps: mean(&per(|r| r.offered_rps)),
        achieved_rps: mean(&per(|r| r.achieved_rps)),
        lateness_p50_s: percentile_sorted(&late, 50.0),
        lateness_p99_s: percentile_sorted(&late, 99.0),
        late_share,
        delivered,
        rising,
        rising_repeats,
        requests,
        met,
        attainment: met as f64 / requests.max(1) as f64,
        attainment_ci,
        goodput_rps: mean(&per(|r| r.goodput_rps)),
        goodput_ci: nonnegative(ci95(&per(|r| r.goodput_rps))),
        tok_s: mean(&per(|r| r.tok_s)),
        mean_e2e_s: mean(&e2e),
        p50_e2e_s: percentile_sorted(&e2e, 50.0),
        p95_e2e_s: mean(&per(|r| r.p95_e2e_s)),
        p95_e2e_ci: nonnegative(ci95(&per(|r| r.p95_e2e_s))),
        ttft_p50_s: percentile_sorted(&ttft, 50.0),
        ttft_p95_s: percentile_sorted(&ttft, 95.0),
        tpot_p50_s: percentile_sorted(&tpot, 50.0),
        tpot_p95_s: percentile_sorted(&tpot, 95.0),
        errors: repeats.iter().map(|r| r.errors).sum(),
        repeats,
        notes,
    }
}

/// With a precision target an open-loop cell gets another repeat while its goodput's half-width exceeds
/// `rel_ci` of the mean, or while its attainment interval straddles the SLO target (the decision is close).
pub fn needs_repeat(c: &RateCell, rel_ci: f64, target: Option<f64>) -> bool {
    let imprecise = match c.goodput_ci {
        Some((lo, hi)) => c.goodput_rps <= 0.0 || (hi - lo) / 2.0 > rel_ci * c.goodput_rps,
        None => true,
    };
    let close = target.is_some_and(|t| c.attainment_ci.0 < t && t <= c.attainment_ci.1);
    imprecise || close
}

fn one_thread() -> u32 {
    1
}

/// A cell being gathered: (group, rate, arrival, its repeats, their measured requests, client threads).
type Pending<'a> = (String, f64, String, Vec<RateRepeat>, Vec<&'a RequestRecord>, u32);

/// The open-loop cells of every group, in rate order, and each group's sustainable rate.
pub fn analyze(points: &[PointRecord], requests: &[RequestRecord], slo: Option<&Slo>) -> Vec<RateSweep> {
    let open = points.iter().filter(|p| p.status == Status::Ok && p.client.open_loop.is_some());
    let mut cells: Vec<Pending> = Vec::new();
    let measured = requests.iter().filter(|r| !r.warmup && !r.tail);
    let requests_of = crate::record::ByPoint::new(measured, |r| (r.point.as_str(), r.attempt));
    for p in open {
        let o = p.client.open_loop.as_ref().expect("filtered on open_loop");
        let reqs: Vec<&RequestRecord> = requests_of.get(&p.point, p.attempt).to_vec();
        let mut arrival = match o.burstiness {
            Some(b) => format!("{:?} (burstiness {b})", o.arrival).to_lowercase(),
            None => format!("{:?}", o.arrival).to_lowercase(),
        };
        // Client threads change who sends, not the schedule: each count is a cell of its own, named in the
        // arrival column only when above 1 so that earlier runs read as they did.
        if p.client.client_threads > 1 {
            arrival.push_str(&format!(" ({} client threads)", p.client.client_threads));
        }
        let rep = repeat_of(p, &reqs, slo);
        match cells.iter_mut().find(|c| c.0 == p.group && c.1 == o.rate && c.2 == arrival) {
            Some(c) => {
                c.3.push(rep);
                c.4.extend(reqs);
            }
            None => cells.push((p.group.clone(), o.rate, arrival, vec![rep], reqs, p.client.client_threads.max(1))),
        }
    }
    let mut groups: Vec<(String, Vec<RateCell>)> = Vec::new();
    for (group, rate, arrival, reps, reqs, threads) in cells {
        let cell = RateCell { client_threads: threads, ..cell_of(rate, arrival, reps, &reqs) };
        match groups.iter_mut().find(|g| g.0 == group) {
            Some(g) => g.1.push(cell),
            None => groups.push((group, vec![cell])),
        }
    }
    groups.into_iter().map(|(group, cells)| sweep_of(group, cells, slo)).collect()
}

/// A group's cells in rate order with the findings drawn from them.
fn sweep_of(group: String, mut cells: Vec<RateCell>, slo: Option<&Slo>) -> RateSweep {
    cells.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let target = slo.map(|s| s.attainment);
    let one_phase = match target {
        Some(_) => cells.iter().filter(|c| c.repeats.len() < 2).map(|c| c.rate).collect(),
        None => Vec::new(),
    };
    RateSweep { group, slo: slo.map(SloRule::of), target, sustainable: sustainable(&cells, target), cells, one_phase }
}

/// What the cell says about the server (see [`Judgement`] for the order of the tests).
pub fn judge(c: &RateCell, target: Option<f64>) -> Judgement {
    let repeats = c.repeats.len();
    if c.rising && c.rising_repeats >= repeats {
        return Judgement::Rising { repeats };
    }
    if c.rising {
        return Judgement::RisingSome { rising: c.rising_repeats, repeats };
    }
    if !c.delivered {
        return Judgement::Undelivered { late_share: c.late_share };
    }
    let Some(target) = target else { return Judgement::Steady };
    let a = Attainment { share: c.attainment, ci: c.attainment_ci, target };
    let (lo, hi) = c.attainment_ci;
    if lo >= target {
        Judgement::Sustains(a)
    } else if hi >= target {
        Judgement::Straddles(a)
    } else {
        Judgement::Below(a)
    }
}

/// The highest rate such that it and every lower rate sustain, and the first that does not.
pub fn sustainable(cells: &[RateCell], target: Option<f64>) -> Sustainable {
    let judged: Vec<Judgement> = cells.iter().map(|c| judge(c, target)).collect();
    let first_bad = judged.iter().position(|j| !j.sustains());
    match (first_bad, cells.last()) {
        (None, None) => Sustainable::NoCells,
        (None, Some(last)) => Sustainable::AboveAll { rate: last.rate },
        (Some(0), _) => Sustainable::NoneSustains { lowest: cells[0].rate, why: judged[0].clone() },
        (Some(i), _) => Sustainable::Limit { rate: cells[i - 1].rate, next: cells[i].rate, why: judged[i].clone() },
    }
}
