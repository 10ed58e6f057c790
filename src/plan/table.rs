//! The human view of a plan, as `servelab plan` prints it.

use super::estimate::human;
use super::{Plan, Point};

/// Left-aligned columns separated by two spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        putln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}

fn vars_text(point: &Point, names: &[String]) -> String {
    let parts = crate::record::values::vars_text(point.vars.iter().filter(|(k, _)| names.contains(k)), " ");
    if parts.is_empty() { "-".to_owned() } else { parts }
}

pub use crate::record::plan::shell_word;

/// A tune's plan: the space, the budget and one line per configuration (the points of each start are the same
/// workload; the search picks which configurations start).
fn render_tune(plan: &Plan, t: &super::TunePlan) -> String {
    let mut out = String::new();
    let axes: Vec<String> = t
        .axes
        .iter()
        .map(|a| {
            format!("{} ∈ {{{}}}", a.flag, a.values.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        })
        .collect();
    putln!(out, "tune `{}`: {} configurations: {}", plan.name, t.configs.len(), axes.join(" × "));
    let objective = match t.p95_budget_s {
        Some(b) if t.objective == "throughput" => format!("highest tokens/s with p95 e2e within {b} s"),
        _ => "highest goodput at the SLO".to_owned(),
    };
    let per_start = plan
        .groups
        .first()
        .map_or(0, |g| g.points.iter().filter(|p| p.client.is_some() && p.repeat < t.search_repeats).count());
    putln!(
        out,
        "objective: {objective}; budget: {} server starts ({} for the search, then {} fresh starts each of the winner and vLLM's defaults, {} repeats per start){}",
        t.starts,
        t.starts.saturating_sub(2 * t.confirm_starts),
        t.confirm_starts,
        t.confirm_repeats,
        t.wall_s.map(|w| format!(", {} of server time for the search", human(w))).unwrap_or_default()
    );
    putln!(out, "each search start measures {per_start} points ({} repeats of the workload)", t.search_repeats);
    let e = &plan.estimate;
    putln!(out, "estimated wall time: {} for the budget's starts", human(e.total_s));
    for (i, group) in plan.groups.iter().enumerate() {
        let vars = crate::record::values::vars_text(&group.vars, " ");
        let label = if group.id == t.defaults_group { "vLLM defaults".to_owned() } else { vars };
        putln!(out, "  {:>4}  {}  {label}", i + 1, group.id);
    }
    for (what, id) in [("first configuration", plan.groups.first()), ("vLLM defaults", plan.groups.last())]
        .map(|(w, g)| (w, g.map(|g| g.id.clone())))
    {
        if let Some(g) = plan.groups.iter().find(|g| Some(&g.id) == id.as_ref()) {
            let argv: Vec<String> = g.server.argv.iter().map(|w| shell_word(w)).collect();
            putln!(out, "{what}: {}", argv.join(" "));
        }
    }
    out
}

pub fn render(plan: &Plan) -> String {
    if let Some(t) = &plan.tune {
        return render_tune(plan, t);
    }
    let mut out = String::new();
    let starts = plan.server_starts();
    putln!(
        out,
        "plan `{}`: {} grid points × {} repeat{} = {} runs",
        plan.name,
        plan.grid_points,
        plan.repeats,
        if plan.repeats == 1 { "" } else { "s" },
        plan.runs()
    );
    putln!(out, "server-scoped: {}; client-scoped: {}", list(&plan.server_vars), list(&plan.client_vars));
    putln!(out, "server starts: {starts} (one start per grid point would be {})", plan.grid_points);
    let e = &plan.estimate;
    let source =
        if e.from_spec { "from the spec's `estimate:`" } else { "engine defaults; set `estimate:` to override" };
    let range = match e.min_total_s {
        Some(min) => format!("{}–{} (precision target: min–max repeats)", human(min), human(e.total_s)),
        None => human(e.total_s),
    };
    putln!(
        out,
        "estimated wall time: {range} ({}s per start, {}s per stop, {}s per request: {source})",
        e.startup_s,
        e.stop_s,
        e.per_request_s
    );
    if let Some(s) = &plan.search {
        putln!(
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
        render_group(&mut out, plan, i, group);
    }
    out
}

/// One server group: its command line and a row per point.
fn render_group(out: &mut String, plan: &Plan, i: usize, group: &crate::record::plan::ServerGroup) {
    let vars = crate::record::values::vars_text(&group.vars, " ");
    putln!(
        out,
        "\nserver {}/{}  {}  {}",
        i + 1,
        plan.groups.len(),
        group.id,
        if vars.is_empty() { "-" } else { &vars }
    );
    let argv: Vec<String> = group.server.argv.iter().map(|w| shell_word(w)).collect();
    let env: Vec<String> = group.server.env.iter().map(|(k, v)| format!("{k}={}", shell_word(v))).collect();
    let command = [env, argv].concat().join(" ");
    putln!(
        out,
        "  {}",
        if command.is_empty() { format!("external endpoint {}", group.server.base_url) } else { command }
    );
    let mut rows =
        vec![["point", "repeat", "client vars", "load", "requests", "prompt", "max_tokens"].map(String::from).to_vec()];
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
                    None if c.sessions.is_some() => format!("{} sessions", c.requests),
                    None => c.requests.to_string(),
                };
                row.extend([load, requests, c.prompt_tokens.to_string(), c.max_tokens.to_string()])
            }
            None => row.extend(["-", "startup only", "-", "-"].map(String::from)),
        }
        rows.push(row);
    }
    for line in columns(&rows).lines() {
        putln!(out, "  {line}");
    }
}

/// Which group would run where and when, with the wall time against one group after the other.
pub fn slots(plan: &Plan, a: &super::slots::Assignment) -> String {
    let ids = |v: Vec<String>| if v.is_empty() { "-".to_owned() } else { v.join(",") };
    let mut rows = vec![["group", "vars", "slot", "port", "GPUs", "cores", "start", "end"].map(str::to_owned).to_vec()];
    for p in &a.placed {
        let g = plan.groups.iter().find(|g| g.id == p.group);
        let vars = g.map(|g| crate::record::values::vars_text(&g.vars, " ")).unwrap_or_default();
        let port = g.map_or(0, |g| usize::from(g.server.port) + p.lease.slot);
        rows.push(vec![
            p.group.clone(),
            if vars.is_empty() { "-".to_owned() } else { vars },
            p.lease.slot.to_string(),
            port.to_string(),
            ids(p.lease.gpus.iter().map(|g| g.index.to_string()).collect()),
            ids(p.lease.cpus.iter().map(usize::to_string).collect()),
            human(p.start_s),
            human(p.end_s),
        ]);
    }
    let mut out = format!("\nslots: {} at once\n", a.slots);
    out.push_str(&columns(&rows));
    let ratio = if a.wall_s > 0.0 { a.serial_s / a.wall_s } else { 1.0 };
    putln!(
        out,
        "estimated wall time on {} slots: {} (one group after the other: {}, {ratio:.1}× faster)",
        a.slots,
        human(a.wall_s),
        human(a.serial_s)
    );
    out
}
