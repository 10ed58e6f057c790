//! What `servelab run` prints at the end: the CSVs it wrote, the batching summary line, the knee findings.

use crate::record::Recorded;
use crate::report::{kv_csv, sweep_csv};
use crate::stats::sweep::GroupSweep;
use std::path::Path;

/// A CSV as console text; a CSV that could not be rendered says so in its place (the run's derive step fails
/// on the same error, so it is never lost).
fn csv_text<E: std::fmt::Display>(csv: Result<Vec<u8>, E>) -> String {
    match csv {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(could not be rendered: {e})\n"),
    }
}

/// Rendered from the records (the same bytes the run wrote), not read back from disk.
pub fn summary(dir: &Path, rec: &Recorded, sweeps: &[GroupSweep]) -> String {
    let mut out = String::new();
    let started = rec.started_servers();
    if rec.points.is_empty() && !started.is_empty() {
        let text = csv_text(kv_csv::render(&started));
        put!(out, "{}:\n{text}", dir.join("kv_cache_scaling.csv").display());
    }
    for g in sweeps {
        let name = if sweeps.len() > 1 {
            format!("concurrency_sweep-{}.csv", g.group)
        } else {
            "concurrency_sweep.csv".to_owned()
        };
        let csv = csv_text(sweep_csv::render(g));
        put!(out, "{}:\n{csv}", dir.join(name).display());
        if let Some(row) = sweep_csv::batching(g) {
            let pairs: Vec<String> =
                sweep_csv::BATCHING_COLUMNS.iter().zip(&row).take(6).map(|(k, v)| format!("{k}={v}")).collect();
            putln!(
                out,
                "batching, whole phases ({} repeat{}, {}, c={}): {}",
                row[11],
                if row[11] == "1" { "" } else { "s" },
                if row[10] == "mean" { "their mean".to_owned() } else { format!("{} repeat by tokens/s", row[10]) },
                row[6],
                pairs.join(", ")
            );
        }
        out.push_str(&knee_lines(g));
    }
    out
}

/// The knee findings in the built-in templates' words (`findings.md`).
fn knee_lines(g: &GroupSweep) -> String {
    const TEXT: &str = "{% import \"findings.md\" as f %}{% if k.operating %}{{ f.operating(k.operating) }}\n{% endif %}\
        knee: {{ f.throughput(k.throughput) }}\n      {{ f.latency(k.latency) }}\nrule: {{ f.rule(k.rule) }}\n";
    super::markdown::environment(None)
        .render_str(TEXT, minijinja::context! { k => &g.knee })
        .unwrap_or_else(|e| format!("(the knee findings could not be worded: {e})\n"))
}

/// The tune's decision in the built-in templates' words (`findings.md`).
fn decision_line(d: &crate::stats::tune::decision::Decision) -> String {
    super::markdown::environment(None)
        .render_str("{% import \"findings.md\" as f %}{{ f.decision(d) }}", minijinja::context! { d })
        .unwrap_or_else(|e| format!("(the decision could not be worded: {e})"))
}

/// The end of `servelab run` and `servelab tune`: a tune's decision and recommended command line, or the
/// sweep's summary.
pub fn after_run(
    spec: &crate::spec::Spec,
    manifest: &crate::record::manifest::Manifest,
    dir: &Path,
    rec: &Recorded,
) -> String {
    let plan = &manifest.plan;
    if plan.tune.is_some() {
        let mut out = String::new();
        if let Some(t) = crate::stats::tune::analyze(spec, plan, rec, &manifest.tune_pruned) {
            putln!(out, "{}: {}", dir.join("tune.md").display(), decision_line(&t.decision));
            if let Some(c) = &t.recommended {
                putln!(out, "recommended: {c}");
            }
        }
        return out;
    }
    let sweeps = crate::stats::sweep::of_run(rec, spec);
    summary(dir, rec, &sweeps)
}
