//! `workload.csv`: one row per cell of what was sent, a pure function of `stats::workload`.

use crate::stats::workload::{Spread, WorkloadRow};

pub const COLUMNS: [&str; 24] = [
    "group",
    "cell",
    "endpoint",
    "requests",
    "prompt_min",
    "prompt_p50",
    "prompt_p95",
    "prompt_max",
    "output_min",
    "output_p50",
    "output_p95",
    "output_max",
    "client_prompt_min",
    "client_prompt_p50",
    "client_prompt_p95",
    "client_prompt_max",
    "server_minus_client_min",
    "server_minus_client_p50",
    "server_minus_client_p95",
    "server_minus_client_max",
    "mismatched",
    "prefix_hit_rate",
    "flag",
    "notes",
];

fn spread(s: Option<Spread>) -> [String; 4] {
    match s {
        Some(s) => [s.min, s.p50, s.p95, s.max].map(|x| x.to_string()),
        None => Default::default(),
    }
}

/// A template error as the CSV writer's error (the CSV words its flags with the reports' macros).
fn template_error(e: minijinja::Error) -> csv::Error {
    csv::Error::from(std::io::Error::other(e))
}

pub fn render(rows: &[WorkloadRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    // The flag in the templates' words (`findings.md`), so the CSV says what the report says; compiled once.
    let env = super::markdown::environment(None);
    let flag =
        env.template_from_str("{% import \"findings.md\" as f %}{{ f.workload_flag(w) }}").map_err(template_error)?;
    for r in rows {
        let mut row =
            vec![r.group.clone(), r.cell.clone(), format!("{:?}", r.endpoint).to_lowercase(), r.requests.to_string()];
        for s in [r.prompt, r.output, r.sent, r.overhead] {
            row.extend(spread(s));
        }
        row.push(r.mismatched.to_string());
        row.push(r.prefix_hit_rate.map(|x| format!("{x:.4}")).unwrap_or_default());
        row.push((r.mismatched > 0).to_string());
        row.push(match r.mismatched > 0 {
            true => flag.render(minijinja::context! { w => r }).map_err(template_error)?,
            false => String::new(),
        });
        w.write_record(row)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

pub const PREFIX_COLUMNS: [&str; 8] = [
    "server",
    "group",
    "shared_prefix_tokens",
    "repeats",
    "ttft_p50_s",
    "ttft_ci_low",
    "ttft_ci_high",
    "prefix_hit_rate",
];

/// `prefix_cache.csv`: TTFT against the shared-prefix length per server.
pub fn render_prefix(rows: &[crate::stats::prefix::PrefixRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(PREFIX_COLUMNS)?;
    let f = |x: Option<f64>| x.map(|x| format!("{x:.5}")).unwrap_or_default();
    for r in rows {
        w.write_record([
            r.server.clone(),
            r.group.clone(),
            r.shared_prefix_tokens.to_string(),
            r.repeats.to_string(),
            f(Some(r.ttft_p50_s)),
            f(r.ttft_ci.map(|c| c.0)),
            f(r.ttft_ci.map(|c| c.1)),
            r.hit_rate.map(|x| format!("{x:.4}")).unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
