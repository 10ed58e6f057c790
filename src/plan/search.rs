//! `search: { rate: { low, high, tolerance } }` as planned: a geometric ladder of rates. The planner makes
//! every rung a point (× repeats), so each has its stable id; the executor measures only the rungs the search
//! asks for (`stats::search`), so a search costs about log2(rungs) + 2 of them.

use super::{PlanError, RateSearchPlan, key};
use crate::spec::Spec;

/// Rungs a ladder may have (a tolerance of 1% from 1 to 1,000,000 req/s has 1,389: too fine to search).
const MAX_RUNGS: usize = 400;

/// The search of a spec, checked against its load section; None without `search:`.
pub fn plan(spec: &Spec) -> Result<Option<RateSearchPlan>, PlanError> {
    let Some(search) = &spec.search else { return Ok(None) };
    let s = search.rate;
    let Some(load) = &spec.load else {
        return Err(PlanError::at(
            key(&["search", "rate"]),
            "a rate search needs a `load:` section: the workload it sends at each rate",
            "add `load:` with the request shape (prompt_tokens, max_tokens, duration, arrival)",
        ));
    };
    if load.rate.is_some() {
        return Err(PlanError::at(
            key(&["load", "rate"]),
            "`search.rate` chooses the rates, so `load.rate` is not used",
            "remove `load.rate` (or remove `search:` to sweep the rates you list)",
        ));
    }
    if load.concurrency.is_some() {
        return Err(PlanError::at(
            key(&["load", "concurrency"]),
            "`search.rate` drives an open loop; `concurrency` sets a closed one",
            "remove `load.concurrency`; to cap requests in flight use `load.max_concurrency`",
        ));
    }
    let bad = |field: &str, msg: String, fix: &str| Err(PlanError::at(key(&["search", "rate", field]), msg, fix));
    if !(s.low.is_finite() && s.low > 0.0) {
        return bad("low", format!("low must be a rate above 0 (requests/s), got {}", s.low), "e.g. `low: 1`");
    }
    if !(s.high.is_finite() && s.high > s.low && s.high <= 1e6) {
        return bad(
            "high",
            format!("high must be above low ({}) and at most 1000000 requests/s, got {}", s.low, s.high),
            "e.g. `high: 64`",
        );
    }
    if !(0.01..=1.0).contains(&s.tolerance) {
        return bad(
            "tolerance",
            format!("tolerance is a relative step between 0.01 and 1, got {}", s.tolerance),
            "e.g. `tolerance: 0.1` (the answer to within 10%)",
        );
    }
    let ladder = ladder(s.low, s.high, s.tolerance);
    if ladder.len() > MAX_RUNGS {
        return bad(
            "tolerance",
            format!(
                "low {} to high {} in steps of {} is {} rates, over {MAX_RUNGS}",
                s.low,
                s.high,
                s.tolerance,
                ladder.len()
            ),
            "raise `tolerance` or narrow low..high",
        );
    }
    let max_probes = max_probes(ladder.len());
    Ok(Some(RateSearchPlan { low: s.low, high: s.high, tolerance: s.tolerance, ladder, max_probes }))
}

/// `low`, `low·(1+tol)`, `low·(1+tol)²`, … below `high`, then `high`; each to 3 significant digits (a rate
/// a person can read and type again), duplicates dropped.
pub fn ladder(low: f64, high: f64, tolerance: f64) -> Vec<f64> {
    let mut rungs = Vec::new();
    let mut r = low;
    while r < high / (1.0 + tolerance / 2.0) {
        let x = round3(r);
        if rungs.last() != Some(&x) {
            rungs.push(x);
        }
        r *= 1.0 + tolerance;
    }
    let top = round3(high);
    if rungs.last().is_none_or(|&last| last < top) {
        rungs.push(top);
    }
    rungs
}

fn round3(x: f64) -> f64 {
    let scale = 10f64.powi(2 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

/// The two ends, then one rung per halving of the bracket between them.
pub fn max_probes(rungs: usize) -> usize {
    match rungs {
        0..=2 => rungs,
        n => 2 + (n - 1).next_power_of_two().trailing_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_steps_by_the_tolerance_and_ends_at_high() {
        assert_eq!(ladder(10.0, 20.0, 0.1), vec![10.0, 11.0, 12.1, 13.3, 14.6, 16.1, 17.7, 20.0]);
        assert_eq!(ladder(1.0, 2.0, 1.0), vec![1.0, 2.0]);
        let l = ladder(0.5, 400.0, 0.05);
        assert!(l.windows(2).all(|w| w[1] > w[0] && w[1] / w[0] <= 1.06), "{l:?}");
        assert_eq!((l[0], *l.last().unwrap()), (0.5, 400.0));
    }

    #[test]
    fn probes_grow_with_the_log_of_the_ladder() {
        assert_eq!([1, 2, 3, 4, 5, 9, 17, 18].map(max_probes), [1, 2, 3, 4, 4, 5, 6, 7]);
    }
}
