//! The human view of a plan, as `servelab plan` prints it.

use super::estimate::human;
use super::{Plan, Point};
use std::fmt::Write;

/// Left-aligned columns separated by two spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}

fn vars_text(point: &Point, names: &[String]) -> String {
    let parts: Vec<String> =
        point.vars.iter().filter(|(k, _)| names.contains(k)).map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join(" ") }
}

/// Quotes an argv element for display when it holds spaces or shell metacharacters.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let starts = plan.server_starts();
    let _ = writeln!(
        out,
        "plan `{}`: {} grid points × {} repeat{} = {} runs",
        plan.name,
        plan.grid_points,
        plan.repeats,
        if plan.repeats == 1 { "" } else { "s" },
        plan.runs()
    );
    let _ = writeln!(out, "server-scoped: {}; client-scoped: {}", list(&plan.server_vars), list(&plan.client_vars));
    let _ = writeln!(out, "server starts: {starts} (one start per grid point would be {})", plan.grid_points);
    let e = &plan.estimate;
    let source =
        if e.from_spec { "from the spec's `estimate:`" } else { "engine defaults; set `estimate:` to override" };
    let range = match e.min_total_s {
        Some(min) => format!("{}–{} (precision target: min–max repeats)", human(min), human(e.total_s)),
        None => human(e.total_s),
    };
    let _ = writeln!(
        out,
        "estimated wall time: {range} ({}s per start, {}s per stop, {}s per request: {source})",
        e.startup_s, e.stop_s, e.per_request_s
    );
    if let Some(s) = &plan.search {
        let _ = writeln!(
            out,
            "search: rates {}–{} req/s on a ladder of {} ({}% apart); each server measures at most {} of them, \
             chosen as it runs (lowest, highest, then bisection)",
            s.low,
            s.high,
            s.ladder.len(),
            s.tolerance * 100.0,
            s.max_probes
        );
    }
    for (i, group) in plan.groups.iter().enumerate() {
        let vars: Vec<String> = group.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "\nserver {}/{}  {}  {}",
            i + 1,
            plan.groups.len(),
            group.id,
            if vars.is_empty() { "-".to_owned() } else { vars.join(" ") }
        );
        let argv: Vec<String> = group.server.argv.iter().map(|w| shell_word(w)).collect();
        let env: Vec<String> = group.server.env.iter().map(|(k, v)| format!("{k}={}", shell_word(v))).collect();
        let command = [env, argv].concat().join(" ");
        let _ = writeln!(
            out,
            "  {}",
            if command.is_empty() { format!("external endpoint {}", group.server.base_url) } else { command }
        );
        let mut rows = vec![
            ["point", "repeat", "client vars", "load", "requests", "prompt", "max_tokens"].map(String::from).to_vec(),
        ];
        for p in &group.points {
            let mut row = vec![p.id.clone(), p.repeat.to_string(), vars_text(p, &plan.client_vars)];
            match &p.client {
                Some(c) => {
                    let load = match c.rate() {
                        Some(r) if c.concurrency > 0 => format!("rate={r}/s ≤{}", c.concurrency),
                        Some(r) => format!("rate={r}/s"),
                        None => format!("c={}", c.concurrency),
                    };
                    let requests = match c.duration_s {
                        Some(d) => format!("{d}s"),
                        None => c.requests.to_string(),
                    };
                    row.extend([load, requests, c.prompt_tokens.to_string(), c.max_tokens.to_string()])
                }
                None => row.extend(["-", "startup only", "-", "-"].map(String::from)),
            }
            rows.push(row);
        }
        for line in columns(&rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
