//! `rate_sweep.csv`: one row per offered rate of an open-loop sweep, a pure function of the analysis.

use crate::stats::rate::{RateCell, RateSweep};

pub const COLUMNS: [&str; 32] = [
    "rate",
    "arrival",
    "offered_rps",
    "achieved_rps",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "late_share",
    "delivered",
    "in_flight_rising",
    "requests",
    "slo_met",
    "attainment",
    "attainment_ci_low",
    "attainment_ci_high",
    "goodput_rps",
    "goodput_ci_low",
    "goodput_ci_high",
    "repeats",
    "tok_s",
    "mean_e2e_s",
    "p50_e2e_s",
    "p95_e2e_s",
    "p95_e2e_ci_low",
    "p95_e2e_ci_high",
    "ttft_p50_s",
    "ttft_p95_s",
    "tpot_p50_s",
    "tpot_p95_s",
    "errors",
    "sustainable",
    "notes",
    // Last, so that readers of the columns before it by position are unaffected.
    "client_threads",
];

fn f(v: Option<f64>, d: usize) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.d$}")).unwrap_or_default()
}

fn row(c: &RateCell, sustainable: Option<f64>, notes: String) -> Vec<String> {
    vec![
        crate::stats::trimmed(c.rate, 4).replace(',', ""),
        c.arrival.clone(),
        f(Some(c.offered_rps), 3),
        f(Some(c.achieved_rps), 3),
        f(Some(c.lateness_p50_s * 1e3), 3),
        f(Some(c.lateness_p99_s * 1e3), 3),
        f(Some(c.late_share), 4),
        c.delivered.to_string(),
        c.rising.to_string(),
        c.requests.to_string(),
        c.met.to_string(),
        f(Some(c.attainment), 4),
        f(Some(c.attainment_ci.0), 4),
        f(Some(c.attainment_ci.1), 4),
        f(Some(c.goodput_rps), 3),
        f(c.goodput_ci.map(|x| x.0), 3),
        f(c.goodput_ci.map(|x| x.1), 3),
        c.repeats.len().to_string(),
        f(Some(c.tok_s), 1),
        f(Some(c.mean_e2e_s), 4),
        f(Some(c.p50_e2e_s), 4),
        f(Some(c.p95_e2e_s), 4),
        f(c.p95_e2e_ci.map(|x| x.0), 4),
        f(c.p95_e2e_ci.map(|x| x.1), 4),
        f(Some(c.ttft_p50_s), 4),
        f(Some(c.ttft_p95_s), 4),
        f(Some(c.tpot_p50_s), 5),
        f(Some(c.tpot_p95_s), 5),
        c.errors.to_string(),
        (sustainable.is_some_and(|r| c.rate <= r)).to_string(),
        notes,
        c.client_threads.to_string(),
    ]
}

/// A cell's notes in the built-in templates' words (`rate_findings.md`), as the report's table has them.
fn notes(env: &minijinja::Environment, c: &RateCell) -> Result<String, csv::Error> {
    env.render_str("{% import \"rate_findings.md\" as f %}{{ f.notes(n) }}", minijinja::context! { n => &c.notes })
        .map_err(|e| csv::Error::from(std::io::Error::other(e)))
}

pub fn render(s: &RateSweep) -> Result<Vec<u8>, csv::Error> {
    let env = super::markdown::environment(None);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for c in &s.cells {
        w.write_record(row(c, s.sustainable.rate(), notes(&env, c)?))?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
