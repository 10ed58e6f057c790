//! The open-loop rate sweep: per cell (one offered rate), whether the client delivered the schedule, whether
//! the server kept up, SLO attainment and goodput; per group, the highest rate that sustains the SLO.
//!
//! A cell's measured requests are those its schedule placed before the duration (at least `min_requests`);
//! tail arrivals and warmups never count. Offered rate = measured arrivals ÷ the measured span (the duration,
//! or the last measured arrival when the SLO minimum extended it); achieved rate = those actually sent
//! within the span ÷ the span — both against the pre-drawn schedule, not the nominal rate, whose Poisson
//! noise alone is 1/√(λ·duration).

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
    pub notes: Vec<String>,
}

/// What a group's sweep concludes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sustainable {
    /// The highest rate such that it and every lower rate sustain the SLO (or, without one, keep up).
    pub rate: Option<f64>,
    /// The first rate above it, and why it does not count.
    pub next: Option<(f64, String)>,
    /// The next rate's interval straddles the target: a rerun may decide either way.
    pub borderline: bool,
    pub sentence: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateSweep {
    pub group: String,
    pub slo: Option<String>,
    pub target: Option<f64>,
    pub cells: Vec<RateCell>,
    pub sustainable: Sustainable,
    /// Said when a verdict rests on one phase per rate.
    #[serde(default)]
    pub caveat: Option<String>,
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
        notes.push(format!(
            "the client did not deliver this rate: {:.1}% of requests left over 1 ms late (p99 {:.1} ms)",
            100.0 * late_share,
            1e3 * percentile_sorted(&late, 99.0)
        ));
    }
    if rising {
        notes.push(format!(
            "requests in flight kept rising in {rising_repeats} of {} repeats: the server did not keep up (no steady state)",
            repeats.len()
        ));
    }
    RateCell {
        rate,
        arrival,
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

/// A cell being gathered: (group, rate, arrival, its repeats, their measured requests).
type Pending<'a> = (String, f64, String, Vec<RateRepeat>, Vec<&'a RequestRecord>);

/// The open-loop cells of every group, in rate order, and each group's sustainable rate.
pub fn analyze(points: &[PointRecord], requests: &[RequestRecord], slo: Option<&Slo>) -> Vec<RateSweep> {
    let mut sweeps: Vec<RateSweep> = Vec::new();
    let open = points.iter().filter(|p| p.status == Status::Ok && p.client.open_loop.is_some());
    let mut cells: Vec<Pending> = Vec::new();
    let measured = requests.iter().filter(|r| !r.warmup && !r.tail);
    let requests_of = crate::record::ByPoint::new(measured, |r| (r.point.as_str(), r.attempt));
    for p in open {
        let o = p.client.open_loop.as_ref().expect("filtered on open_loop");
        let reqs: Vec<&RequestRecord> = requests_of.get(&p.point, p.attempt).to_vec();
        let arrival = match o.burstiness {
            Some(b) => format!("{:?} (burstiness {b})", o.arrival).to_lowercase(),
            None => format!("{:?}", o.arrival).to_lowercase(),
        };
        let rep = repeat_of(p, &reqs, slo);
        match cells.iter_mut().find(|c| c.0 == p.group && c.1 == o.rate && c.2 == arrival) {
            Some(c) => {
                c.3.push(rep);
                c.4.extend(reqs);
            }
            None => cells.push((p.group.clone(), o.rate, arrival, vec![rep], reqs)),
        }
    }
    for (group, rate, arrival, reps, reqs) in cells {
        let cell = cell_of(rate, arrival, reps, &reqs);
        match sweeps.iter_mut().find(|s| s.group == group) {
            Some(s) => s.cells.push(cell),
            None => sweeps.push(RateSweep {
                group,
                slo: slo.map(describe),
                target: slo.map(|s| s.attainment),
                cells: vec![cell],
                sustainable: Sustainable { rate: None, next: None, borderline: false, sentence: String::new() },
                caveat: None,
            }),
        }
    }
    for s in &mut sweeps {
        s.cells.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        s.sustainable = sustainable(&s.cells, s.target, s.slo.as_deref());
        let single: Vec<String> =
            s.cells.iter().filter(|c| c.repeats.len() < 2).map(|c| super::trimmed(c.rate, 2)).collect();
        if s.target.is_some() && !single.is_empty() {
            s.caveat = Some(format!(
                "{} req/s {} measured in one phase: {} attainment interval counts its requests as independent, \
                 which near the limit they are not (one queue build-up fails many in a row), so a rerun may \
                 decide otherwise; two or more repeats (`repeats:` or `precision:`) widen it to the spread \
                 between phases",
                single.join(", "),
                if single.len() == 1 { "was" } else { "were each" },
                if single.len() == 1 { "its" } else { "each" }
            ));
        }
    }
    sweeps
}

/// "ttft ≤ 200 ms, e2e ≤ 2 s".
pub fn describe(slo: &Slo) -> String {
    let parts: Vec<String> = [("TTFT", slo.ttft), ("TPOT", slo.tpot), ("e2e", slo.e2e)]
        .iter()
        .filter_map(|(n, d)| d.map(|d| format!("{n} ≤ {}", super::fmt_secs(d.0.as_secs_f64()))))
        .collect();
    if parts.is_empty() { "every request succeeds".into() } else { parts.join(", ") }
}

/// Why a cell does not sustain the SLO (None: it does), and whether that verdict is borderline.
pub fn verdict(c: &RateCell, target: Option<f64>) -> Option<(String, bool)> {
    // A queue that keeps growing fails whatever the client's lateness: late arrivals offer no more load than
    // the schedule, so the server could not keep up with less than was asked.
    if c.rising && c.rising_repeats >= c.repeats.len() {
        return Some(("requests in flight kept rising: the server did not keep up".into(), false));
    }
    if c.rising {
        let why = format!(
            "requests in flight kept rising in {} of {} repeats: the server keeps up only some of the time, borderline",
            c.rising_repeats,
            c.repeats.len()
        );
        return Some((why, true));
    }
    if !c.delivered {
        return Some(("the client did not deliver it, so it cannot be judged".into(), false));
    }
    let target = target?;
    let (lo, hi) = c.attainment_ci;
    (lo < target).then(|| {
        let straddles = hi >= target;
        let what = format!(
            "attainment {:.1}% (95% CI {:.1}–{:.1}%) against {:.1}%",
            100.0 * c.attainment,
            100.0 * lo,
            100.0 * hi,
            100.0 * target
        );
        (if straddles { format!("{what}, borderline") } else { format!("{what}, below") }, straddles)
    })
}

pub fn sustainable(cells: &[RateCell], target: Option<f64>, slo: Option<&str>) -> Sustainable {
    let first_bad = cells.iter().position(|c| verdict(c, target).is_some());
    let good = &cells[..first_bad.unwrap_or(cells.len())];
    let rate = good.last().map(|c| c.rate);
    let next = first_bad.map(|i| (cells[i].rate, verdict(&cells[i], target).map(|v| v.0).unwrap_or_default()));
    let borderline = first_bad.is_some_and(|i| verdict(&cells[i], target).is_some_and(|v| v.1));
    let goal = match (slo, target) {
        (Some(s), Some(t)) => format!("sustains the SLO ({s}; attainment lower bound ≥ {:.1}%)", 100.0 * t),
        _ => "keeps up (requests in flight stay steady)".to_owned(),
    };
    let sentence = match (rate, &next) {
        (Some(r), Some((n, why))) => format!(
            "Sustainable rate: {} req/s {goal}; at {} req/s {why}.",
            super::trimmed(r, 2),
            super::trimmed(*n, 2)
        ),
        (Some(r), None) => {
            format!(
                "Sustainable rate: every tested rate up to {} req/s {goal}; the limit lies above.",
                super::trimmed(r, 2)
            )
        }
        (None, Some((n, why))) => {
            format!("No tested rate {goal}: at the lowest, {} req/s, {why}.", super::trimmed(*n, 2))
        }
        (None, None) => "No open-loop cell was measured.".to_owned(),
    };
    Sustainable { rate, next, borderline, sentence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(rate: f64, met: usize, n: usize) -> RateCell {
        cell_of(rate, "poisson".into(), vec![], &[]).with(met, n)
    }

    impl RateCell {
        fn with(mut self, met: usize, n: usize) -> Self {
            (self.met, self.requests) = (met, n);
            self.attainment = met as f64 / n as f64;
            self.attainment_ci = clopper_pearson(met, n);
            self.delivered = true;
            self
        }
    }

    #[test]
    fn clopper_pearson_matches_known_values() {
        // Checked by the defining identity: P(X ≥ 396 | n = 400, p = lo) = P(X ≤ 396 | p = hi) = 0.025
        // (exact binomial sums); for 400/400 the lower bound is 0.025^(1/400).
        let (lo, hi) = clopper_pearson(396, 400);
        assert!((lo - 0.974_595_2).abs() < 1e-6 && (hi - 0.997_268_8).abs() < 1e-6, "{lo} {hi}");
        let (lo, hi) = clopper_pearson(400, 400);
        assert!((lo - 0.025f64.powf(1.0 / 400.0)).abs() < 1e-9 && hi == 1.0, "{lo}");
        assert_eq!(clopper_pearson(0, 10).0, 0.0);
    }

    #[test]
    fn the_sustainable_rate_stops_at_the_first_rate_that_fails_and_says_borderline_when_it_straddles() {
        let cells = [cell(1.0, 400, 400), cell(2.0, 400, 400), cell(4.0, 396, 400), cell(8.0, 300, 400)];
        let s = sustainable(&cells, Some(0.99), Some("e2e ≤ 2 s"));
        assert_eq!(s.rate, Some(2.0));
        assert!(s.borderline, "396/400: 97.5–99.7% straddles 99%");
        assert!(s.sentence.starts_with("Sustainable rate: 2 req/s sustains the SLO"), "{}", s.sentence);
        assert!(
            s.sentence.contains("at 4 req/s attainment 99.0% (95% CI 97.5–99.7%) against 99.0%, borderline"),
            "{}",
            s.sentence
        );
        let clear = sustainable(&[cell(1.0, 400, 400), cell(2.0, 300, 400)], Some(0.99), Some("x"));
        assert!(!clear.borderline && clear.sentence.contains(", below."), "{}", clear.sentence);
        let mut rising = cell(2.0, 400, 400);
        rising.rising = true;
        let r = sustainable(&[cell(1.0, 400, 400), rising], Some(0.99), Some("x"));
        assert_eq!(r.rate, Some(1.0), "a rising queue fails the SLO whatever its attainment");
        let none = sustainable(&[cell(1.0, 10, 400)], Some(0.99), Some("x"));
        assert!(none.rate.is_none() && none.sentence.starts_with("No tested rate"), "{}", none.sentence);
    }

    fn req(index: u32, scheduled: f64, start: f64, e2e: f64) -> RequestRecord {
        RequestRecord {
            point: "p".into(),
            attempt: 0,
            index,
            warmup: false,
            scheduled_s: scheduled,
            start_s: start,
            first_token_s: Some(start + 0.01),
            end_s: start + e2e,
            chunk_us: vec![],
            chunk_tokens: vec![],
            chunks: 1,
            tail: false,
            prompt_tokens: Some(8),
            completion_tokens: Some(1),
            http_status: Some(200),
            error: None,
            ..Default::default()
        }
    }

    #[test]
    fn a_growing_queue_is_rising_and_a_steady_one_is_not() {
        // 100 arrivals/s for 3 s; steady: every request takes 50 ms (≈5 in flight). Growing: each takes longer.
        let steady: Vec<RequestRecord> = (0..300).map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0, 0.05)).collect();
        let growing: Vec<RequestRecord> =
            (0..300).map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0, 0.05 + i as f64 / 100.0)).collect();
        for (reqs, want) in [(steady, false), (growing, true)] {
            let refs: Vec<&RequestRecord> = reqs.iter().collect();
            let w = window::window(&refs).unwrap();
            let (f, l) = in_flight_thirds(&refs, w.open_s, w.close_s);
            assert_eq!(rising(f, l), want, "{f:?} {l:?}");
        }
    }

    fn repeat(met: usize, requests: usize, rising_queue: bool) -> RateRepeat {
        RateRepeat {
            requests,
            span_s: 3.0,
            offered_rps: requests as f64 / 3.0,
            achieved_rps: requests as f64 / 3.0,
            met,
            goodput_rps: met as f64 / 3.0,
            tok_s: 0.0,
            p95_e2e_s: 0.1,
            in_flight_first: Some(5.0),
            in_flight_last: Some(if rising_queue { 50.0 } else { 5.0 }),
            errors: 0,
        }
    }

    #[test]
    fn phases_that_disagree_widen_the_attainment_interval() {
        // The H200's three phases at 200/s: 418, 595 and 604 of 634, 595, 604 met the SLO.
        let reps = [repeat(418, 634, false), repeat(595, 595, false), repeat(604, 604, false)];
        let (lo, hi) = attainment_interval(&reps);
        let pooled = clopper_pearson(1617, 1833);
        assert!(lo < 0.5 && hi == 1.0 && pooled.0 > 0.86, "{lo} {hi} against pooled {pooled:?}");
        // Phases that agree keep the pooled interval.
        let same = [repeat(396, 400, false), repeat(396, 400, false)];
        assert_eq!(attainment_interval(&same), clopper_pearson(792, 800));
    }

    #[test]
    fn a_queue_rising_in_some_repeats_is_borderline_and_in_all_fails() {
        let some = cell_of(200.0, "poisson".into(), vec![repeat(400, 400, true), repeat(400, 400, false)], &[]);
        assert!(
            matches!(verdict(&some, Some(0.99)), Some((w, true)) if w.contains("1 of 2")),
            "{:?}",
            verdict(&some, Some(0.99))
        );
        let all = cell_of(200.0, "poisson".into(), vec![repeat(400, 400, true), repeat(400, 400, true)], &[]);
        assert!(matches!(verdict(&all, Some(0.99)), Some((_, false))));
    }

    #[test]
    fn lateness_counts_against_the_schedule() {
        let reqs: Vec<RequestRecord> = (0..200)
            .map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0 + if i % 20 == 0 { 0.005 } else { 0.0001 }, 0.05))
            .collect();
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        let c = cell_of(100.0, "poisson".into(), vec![], &refs);
        assert!((c.late_share - 0.05).abs() < 1e-12 && !c.delivered, "5% left 5 ms late: {}", c.late_share);
        assert!((c.lateness_p50_s - 0.0001).abs() < 1e-9);
    }

    proptest::proptest! {
        /// Goodput never exceeds the achieved rate: a phase by time or one extended to its SLO minimum, sends
        /// late or on time, every request meeting the SLO or none.
        #[test]
        fn goodput_never_exceeds_what_was_sent(
            n in 2u32..300,
            rate in 1.0f64..500.0,
            duration in 0.1f64..5.0,
            late_ms in 0.0f64..50.0,
            e2e in 0.001f64..1.0,
        ) {
            let reqs: Vec<RequestRecord> =
                (0..n).map(|i| req(i, i as f64 / rate, i as f64 / rate + late_ms / 1000.0, e2e)).collect();
            let refs: Vec<&RequestRecord> = reqs.iter().collect();
            let slo = Slo { ttft: None, tpot: None, e2e: Some(crate::spec::Dur(std::time::Duration::from_secs(10))), attainment: 0.9 };
            let r = repeat_over(duration, &refs, Some(&slo));
            proptest::prop_assert!(r.goodput_rps <= r.achieved_rps + 1e-12, "{r:?}");
        }
    }
}
