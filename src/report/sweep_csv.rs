//! `concurrency_sweep.csv` (experiments B and C) and `batching_summary.csv`: pure functions of the analysis.

use crate::stats::sweep::{self, Cell, GroupSweep};

/// Why the sweep CSV could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum SweepCsvError {
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// The notes column is worded by the built-in `findings.md`; a failure there is a bug in it.
    #[error("the notes column: {0:#}")]
    Notes(#[from] minijinja::Error),
}

/// The notes column: each cell's notes in the built-in templates' words (`cell_note` in `findings.md`), so
/// the CSV says what the reports' notes column says.
pub fn notes_text(cells: &[Cell]) -> Result<Vec<String>, minijinja::Error> {
    let env = super::markdown::environment(None);
    let t = env.template_from_str("{% import \"findings.md\" as f %}{{ f.notes(notes) }}")?;
    cells.iter().map(|c| t.render(minijinja::context! { notes => &c.notes })).collect()
}

pub const COLUMNS: [&str; 30] = [
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
    "tpot_p50_s",
    "tpot_p95_s",
    "repeats",
    "tok_s_rel_halfwidth",
    "window_s",
    "gpu_util_readings",
    "ttft_gap_s",
    "e2e_gap_s",
    "step_efficiency",
    "prefix_hit_rate",
    // Always there, last: a fixed schema for readers, and the columns before it keep their positions.
    "client_threads",
];

fn f(v: Option<f64>, d: usize) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.d$}")).unwrap_or_default()
}

/// A cell's row, with its notes worded (`notes_text`).
pub fn row(c: &Cell, notes: String) -> Vec<String> {
    let h = c.head();
    vec![
        c.concurrency.to_string(),
        f(h.e2e.map(|s| s.mean), 4),
        f(h.e2e.map(|s| s.p95), 4),
        f(Some(h.qps), 3),
        f(Some(h.tok_s), 1),
        f(h.gpu_util_pct, 1),
        notes,
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
        f(h.tpot.map(|s| s.p50), 5),
        f(h.tpot.map(|s| s.p95), 5),
        c.repeats.len().to_string(),
        f(c.tok_s_rel_halfwidth(), 4),
        f(h.window_s, 3),
        h.gpu_util_readings.to_string(),
        f(h.ttft_gap_s, 4),
        f(h.e2e_gap_s, 4),
        f(c.step_efficiency, 3),
        // Prompt tokens served from vLLM's prefix cache over those looked up, during the phase.
        f(h.prefix_hits.zip(h.prefix_queries).filter(|(_, q)| *q > 0.0).map(|(hits, q)| hits / q), 4),
        c.client_threads.to_string(),
    ]
}

/// One sweep's CSV.
pub fn render(group: &GroupSweep) -> Result<Vec<u8>, SweepCsvError> {
    let notes = notes_text(&group.cells)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for (c, n) in group.cells.iter().zip(notes) {
        w.write_record(row(c, n))?;
    }
    Ok(w.into_inner().map_err(|e| csv::Error::from(e.into_error()))?)
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

/// The batching summary as a CSV row (BATCHING_COLUMNS); None without both a sequential and a concurrent cell.
pub fn batching(group: &GroupSweep) -> Option<Vec<String>> {
    let b = sweep::batching(group)?;
    Some(vec![
        f(Some(b.sequential_s), 3),
        f(Some(b.concurrent_s), 3),
        f(Some(b.sequential_qps), 3),
        f(Some(b.concurrent_qps), 3),
        f(Some(b.sequential_tok_s), 1),
        f(Some(b.concurrent_tok_s), 1),
        b.concurrency.to_string(),
        b.requests.to_string(),
        b.max_tokens.to_string(),
        f(b.speedup, 2),
        format!("{:?}", b.policy).to_lowercase(),
        b.repeats.to_string(),
    ])
}

pub fn render_batching(group: &GroupSweep) -> Result<Option<Vec<u8>>, csv::Error> {
    let Some(row) = batching(group) else {
        return Ok(None);
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(BATCHING_COLUMNS)?;
    w.write_record(row)?;
    w.into_inner().map(Some).map_err(|e| csv::Error::from(e.into_error()))
}
