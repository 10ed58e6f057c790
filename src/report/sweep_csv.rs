//! `concurrency_sweep.csv` (experiments B and C) and `batching_summary.csv`: pure functions of the analysis.

use crate::stats::sweep::{Cell, GroupSweep};

pub const COLUMNS: [&str; 19] = [
    "concurrency",
    "mean_e2e_s",
    "p95_e2e_s",
    "qps",
    "tok_s",
    "gpu_util_pct",
    "notes",
    "requests",
    "ttft_p50_s",
    "ttft_p95_s",
    "itl_p50_s",
    "errors",
    "efficiency",
    "tok_s_ci_low",
    "tok_s_ci_high",
    "server_mean_e2e_s",
    "server_mean_ttft_s",
    "waiting_max",
    "kv_usage_max",
];

fn f(v: Option<f64>, d: usize) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.d$}")).unwrap_or_default()
}

pub fn row(c: &Cell) -> Vec<String> {
    let h = c.head();
    vec![
        c.concurrency.to_string(),
        f(h.e2e.map(|s| s.mean), 4),
        f(h.e2e.map(|s| s.p95), 4),
        f(Some(h.qps), 3),
        f(Some(h.tok_s), 1),
        f(h.gpu_util_pct, 1),
        c.notes.join("; "),
        h.requests.to_string(),
        f(h.ttft.map(|s| s.p50), 4),
        f(h.ttft.map(|s| s.p95), 4),
        f(h.itl_p50_s, 5),
        h.errors.values().sum::<usize>().to_string(),
        f(c.efficiency, 3),
        f(c.tok_s_ci.map(|x| x.0), 1),
        f(c.tok_s_ci.map(|x| x.1), 1),
        f(h.server_mean_e2e_s, 4),
        f(h.server_mean_ttft_s, 4),
        f(h.waiting_max, 0),
        f(h.kv_usage_max, 4),
    ]
}

/// One sweep's CSV.
pub fn render(group: &GroupSweep) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(COLUMNS);
    for c in &group.cells {
        let _ = w.write_record(row(c));
    }
    w.into_inner().unwrap_or_default()
}

pub const BATCHING_COLUMNS: [&str; 12] = [
    "sequential_s",
    "concurrent_s",
    "sequential_qps",
    "concurrent_qps",
    "sequential_tok_s",
    "concurrent_tok_s",
    "concurrency",
    "requests",
    "max_tokens",
    "speedup",
    "repeat_policy",
    "repeats",
];

/// Sequential (concurrency 1) against the highest concurrency of the sweep; None without both.
pub fn batching(group: &GroupSweep) -> Option<Vec<String>> {
    let seq = group.cells.iter().find(|c| c.concurrency == 1)?;
    let conc = group.cells.iter().filter(|c| c.concurrency > 1).max_by_key(|c| c.concurrency)?;
    let (s, c) = (seq.head(), conc.head());
    Some(vec![
        f(Some(s.wall_s), 3),
        f(Some(c.wall_s), 3),
        f(Some(s.qps), 3),
        f(Some(c.qps), 3),
        f(Some(s.tok_s), 1),
        f(Some(c.tok_s), 1),
        conc.concurrency.to_string(),
        c.requests.to_string(),
        conc.max_tokens.to_string(),
        f(conc.speedup, 2),
        format!("{:?}", group.policy).to_lowercase(),
        conc.repeats.len().to_string(),
    ])
}

pub fn render_batching(group: &GroupSweep) -> Option<Vec<u8>> {
    let row = batching(group)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(BATCHING_COLUMNS);
    let _ = w.write_record(row);
    w.into_inner().ok()
}
