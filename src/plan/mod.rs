//! The planner: a pure function from a spec to the run matrix. No processes, no clock.
//!
//! Expansion is the Cartesian product of the grid (first axis slowest). Every template under `engine` is
//! rendered per point; points whose rendered server configuration hashes the same share one server group,
//! so each configuration starts once. Groups keep the order of their first point; within a group, repeats
//! are interleaved (all client points of repeat 0, then repeat 1, ...) so slow drift spreads over levels.

pub mod capacity;
pub mod check;
pub mod config_file;
pub mod estimate;
pub mod render;
pub mod search;
pub mod server;
pub mod sessions;
pub mod slots;
pub mod table;
pub mod trace;
pub mod tune;
pub mod workload;

pub use crate::record::plan::*;

use crate::spec::{Load, Scalar, Seg, Spec};
use indexmap::IndexMap;
use render::Renderer;
use std::collections::BTreeSet;

/// Runs (grid points × repeats) above this are surely a mistake in the grid.
pub const MAX_RUNS: u64 = 10_000;

/// Requests in flight above this are a mistake in the spec (each holds a connection and a task).
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Prompt or output tokens per request above this are beyond any model servelab measures.
pub const MAX_TOKENS: u32 = 10_000_000;

/// Names the planner defines for templates besides the grid axes.
pub const BUILTIN_VARS: [&str; 3] = ["model", "host", "port"];

/// A problem found while planning, pointed at a spec path; the caller turns it into a located error.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanError {
    pub path: Vec<Seg>,
    /// Point at the key rather than its value (misnamed keys and axes).
    pub at_key: bool,
    pub message: String,
    pub fix: String,
}

impl PlanError {
    pub fn at(path: Vec<Seg>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        PlanError { path, at_key: false, message: message.into(), fix: fix.into() }
    }
}

pub fn key(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|p| Seg::Key((*p).to_owned())).collect()
}

pub use crate::record::short_hash;

/// A stable content hash of a value's canonical JSON.
pub fn content_hash<T: serde::Serialize>(value: &T) -> String {
    short_hash(&serde_json::to_vec(value).unwrap_or_default())
}

/// Plans a loaded spec, pointing any planner error at its place in the spec file.
pub fn build_located(loaded: &crate::spec::LoadedSpec) -> Result<Plan, crate::spec::SpecError> {
    build(&loaded.spec).map_err(|e| {
        if e.at_key {
            loaded.source.error_at_key(&e.path, e.message, e.fix)
        } else {
            loaded.source.error_at(&e.path, e.message, e.fix)
        }
    })
}

/// Expands a spec into its plan. With `tune:`, the space's configurations and vLLM's defaults are planned as
/// server groups (plan::tune), each with the search's and the confirmation's repeats.
pub fn build(spec: &Spec) -> Result<Plan, PlanError> {
    match tune::expand(spec)? {
        Some(t) => {
            let tune = spec.tune.as_ref().expect("expanded");
            let repeats = spec.planned_repeats().max(1) as u32 + tune.confirm_repeats * tune.confirm_starts;
            let mut plan = build_points(&t.spec, t.points, repeats)?;
            let tp = tune::finish(spec, t.axes, &plan.groups)?;
            tune::screen_points(&tp, &mut plan.groups);
            // The estimate covers the starts the budget allows, not every configuration of the space.
            let n = (tp.starts as usize).min(plan.groups.len());
            plan.estimate = estimate::wall_time(spec, &plan.groups[..n], None);
            plan.repeats = tp.search_repeats;
            plan.tune = Some(tp);
            Ok(plan)
        }
        None => {
            // Counted before it is expanded: eight axes of 100 values would allocate until the kernel stops it.
            check::spec_level(spec)?;
            build_points(spec, cartesian(&spec.grid), spec.planned_repeats() as u32)
        }
    }
}

fn build_points(spec: &Spec, grid: Vec<IndexMap<String, Scalar>>, repeats: u32) -> Result<Plan, PlanError> {
    check::spec_level(spec)?;
    let renderer = Renderer::default();
    let (engine_vars, used_vars) = check::template_vars(spec, &renderer)?;
    let (server_vars, client_vars): (Vec<String>, Vec<String>) =
        spec.grid.keys().cloned().partition(|axis| engine_vars.contains(axis));
    let search = search::plan(spec)?;
    let mut groups: Vec<ServerGroup> = Vec::new();
    let mut grid_points = 0;
    for vars in grid {
        grid_points += 1;
        let server = server::render(spec, &vars, &renderer)?;
        let server_id = content_hash(&server::identity(&server));
        // A search plans every rung of its ladder as a point; the executor measures the ones it asks for.
        let clients = match (&spec.load, &search) {
            (Some(load), Some(s)) => s
                .ladder
                .iter()
                .map(|&rate| {
                    let load = crate::spec::Load { rate: Some(crate::spec::NumOrTemplate::Num(rate)), ..load.clone() };
                    render_client(&load, &vars, &server, &renderer, spec.slo.is_some()).map(Some)
                })
                .collect::<Result<Vec<_>, _>>()?,
            (Some(load), None) => vec![Some(render_client(load, &vars, &server, &renderer, spec.slo.is_some())?)],
            (None, _) => vec![None],
        };
        let group = match groups.iter_mut().position(|g| g.id == server_id) {
            Some(i) => &mut groups[i],
            None => {
                let scoped = pick(&vars, &server_vars);
                groups.push(ServerGroup { id: server_id.clone(), vars: scoped, server, points: Vec::new() });
                groups.last_mut().expect("just pushed")
            }
        };
        let client_vars_here = pick(&vars, &client_vars);
        for client in clients {
            for repeat in 0..repeats {
                let id = content_hash(&(&server_id, &client_vars_here, &trace::identity(&client), repeat));
                group.points.push(Point { id, vars: vars.clone(), repeat, client: client.clone() });
            }
        }
    }
    for group in &mut groups {
        group.points.sort_by_key(|p| p.repeat); // stable: keeps grid order within a repeat
    }
    check::unused_axes(spec, &used_vars)?;
    let estimate = estimate::wall_time(spec, &groups, search.as_ref());
    let precision = spec.precision.map(crate::spec::Precision::target);
    Ok(Plan {
        name: spec.name.clone(),
        server_vars,
        client_vars,
        grid_points,
        repeats,
        groups,
        estimate,
        precision,
        search,
        tune: None,
    })
}

fn pick(vars: &IndexMap<String, Scalar>, names: &[String]) -> IndexMap<String, Scalar> {
    vars.iter().filter(|(k, _)| names.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The Cartesian product of the axes, first axis slowest. An empty grid is one point with no variables.
pub fn cartesian(grid: &IndexMap<String, Vec<Scalar>>) -> Vec<IndexMap<String, Scalar>> {
    let mut points = vec![IndexMap::new()];
    for (axis, values) in grid {
        points = points
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.insert(axis.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    points
}

/// Renders the load section at one point and checks it against the server's max-model-len.
fn render_client(
    load: &Load,
    vars: &IndexMap<String, Scalar>,
    server: &ServerConfig,
    renderer: &Renderer,
    slo: bool,
) -> Result<ClientConfig, PlanError> {
    let ctx = server::context(vars, server);
    let int = |name: &str, v: &crate::spec::IntOrTemplate, min: i64| {
        check::render_int(renderer, &ctx, vars, &["load", name], v, min)
    };
    if !(0.0..=1.0).contains(&load.max_error_rate) {
        return Err(PlanError::at(
            key(&["load", "max_error_rate"]),
            format!("max_error_rate must be a share between 0 and 1, got {}", load.max_error_rate),
            "e.g. `max_error_rate: 0.1` (a point fails when more than 10% of its requests fail)",
        ));
    }
    let traced = match &load.trace {
        Some(t) => {
            let r = trace::Render { renderer, ctx: &ctx, vars };
            Some(trace::plan(t, load, &r, server.max_model_len)?)
        }
        None => None,
    };
    let (concurrency, open_loop) = loop_shape(load, traced.as_ref(), (renderer, &ctx), vars, &int, slo)?;
    let w = workload::plan(load, vars, (server.model.as_deref(), server.max_model_len), &int)?;
    let sessions = sessions::plan(load, vars, server.max_model_len, (w.max_tokens, w.output_dist), &int)?;
    let (requests_asked, duration_s) = phase_size(load, traced.as_ref(), sessions.as_ref(), &int)?;
    let client_threads = int("client_threads", &load.client_threads, 1)?;
    check::client_threads(client_threads, concurrency, open_loop.is_some(), vars)?;
    if client_threads > 1 && sessions.is_some() {
        return Err(PlanError::at(
            key(&["load", "client_threads"]),
            "sessions run on one client thread: their turns are not split across threads yet",
            "remove `client_threads` (or set it to 1) with `sessions`",
        ));
    }
    let warmup = int("warmup", &load.warmup, 0)?;
    check::at_most(&["load", "warmup"], warmup, MAX_CONCURRENCY, vars)?;
    let ignore_eos = check::render_bool(renderer, &ctx, vars, &["load", "ignore_eos"], &load.ignore_eos)?;
    let stream = check::render_bool(renderer, &ctx, vars, &["load", "stream"], &load.stream)?;
    check_arrivals(open_loop.as_ref(), duration_s, vars)?;
    let requests = match duration_s {
        Some(_) => 0,
        None if open_loop.is_some() || sessions.is_some() => requests_asked,
        None if load.exact_requests => requests_asked,
        None => requests_asked.max(concurrency.saturating_mul(4)),
    };
    Ok(ClientConfig {
        concurrency,
        requests,
        requests_asked,
        exact_requests: load.exact_requests,
        max_tokens: w.max_tokens,
        // A session's nominal prompt is its new user message (the history grows from it turn after turn).
        prompt_tokens: sessions.map_or(w.prompt_tokens, |s| s.user_tokens.mean().round() as u32),
        ignore_eos,
        stream,
        warmup,
        seed: load.seed,
        shared_prefix_tokens: w.shared_prefix_tokens,
        prompts_file: load.prompts_file.clone(),
        vocab_size: load.vocab_size,
        request_timeout_s: load.request_timeout.0.as_secs_f64(),
        max_error_rate: load.max_error_rate,
        duration_s,
        open_loop,
        endpoint: load.endpoint,
        prompt_dist: w.prompt_dist,
        output_dist: w.output_dist,
        context_limit: w.context_limit,
        text_prompts: w.text_prompts,
        dataset: w.dataset,
        trace: traced,
        sessions,
        client_threads,
    })
}

/// Closed loop (`concurrency`) or open loop (`rate`, shaped by `arrival`, `burstiness`, `max_concurrency`),
/// never both; a replay is an open loop on the trace's schedule. Returns the concurrency (an open loop's cap,
/// 0 for none) and the open loop.
fn loop_shape(
    load: &Load,
    traced: Option<&crate::record::trace::TracePlan>,
    (renderer, ctx): (&Renderer, &minijinja::Value),
    vars: &IndexMap<String, Scalar>,
    int: &dyn Fn(&str, &crate::spec::IntOrTemplate, i64) -> Result<u32, PlanError>,
    slo: bool,
) -> Result<(u32, Option<OpenLoop>), PlanError> {
    match (&load.concurrency, &load.rate) {
        // A replay is an open loop on the trace's schedule; its rate is the window's mean, for the reports.
        // Under `rate`, the rate's own schedule; never extended for an SLO (each request of the window once).
        _ if let Some(t) = traced => {
            let o = match &load.rate {
                Some(rate) => {
                    let rate = check::render_positive(renderer, ctx, vars, &["load", "rate"], rate)?;
                    open_loop(load, rate, false, vars)?
                }
                None => OpenLoop { rate: t.mean_rate(), arrival: load.arrival, burstiness: None, min_requests: 0 },
            };
            Ok((trace::cap(load, int, vars)?, Some(o)))
        }
        (Some(_), Some(_)) => Err(PlanError::at(
            key(&["load", "rate"]),
            "`rate` (open loop) and `concurrency` (closed loop) both set the load",
            "keep one; to cap an open loop's requests in flight use `max_concurrency`",
        )),
        (_, Some(rate)) => {
            let rate = check::render_positive(renderer, ctx, vars, &["load", "rate"], rate)?;
            let cap = match &load.max_concurrency {
                Some(m) => int("max_concurrency", m, 1)?,
                None => 0,
            };
            check::at_most(&["load", "max_concurrency"], cap, MAX_CONCURRENCY, vars)?;
            Ok((cap, Some(open_loop(load, rate, slo, vars)?)))
        }
        (c, None) => {
            if load.max_concurrency.is_some() || load.burstiness.is_some() || !load.arrival.is_default() {
                return Err(PlanError::at(
                    key(&["load", "rate"]),
                    "`arrival`, `burstiness` and `max_concurrency` shape an open loop, but `rate` is not set",
                    "add `rate: N` (requests per second) instead of `concurrency`, or remove them",
                ));
            }
            let c = int("concurrency", c.as_ref().unwrap_or(&crate::spec::IntOrTemplate::Int(1)), 1)?;
            check::at_most(&["load", "concurrency"], c, MAX_CONCURRENCY, vars)?;
            Ok((c, None))
        }
    }
}

/// A phase is sized by time (`duration`, the default) or by a request count, never both; a replay by its
/// window. Returns the requests asked for and the duration.
fn phase_size(
    load: &Load,
    traced: Option<&crate::record::trace::TracePlan>,
    sessions: Option<&crate::record::plan::SessionPlan>,
    int: &dyn Fn(&str, &crate::spec::IntOrTemplate, i64) -> Result<u32, PlanError>,
) -> Result<(u32, Option<f64>), PlanError> {
    // A phase is sized by time (`duration`, the default) or by a request count, never both.
    match (&load.requests, load.duration) {
        _ if let Some(t) = traced => Ok((t.requests, None)),
        _ if let Some(s) = sessions.filter(|s| s.count > 0) => Ok((s.count, None)),
        (Some(_), Some(_)) => Err(PlanError::at(
            key(&["load", "duration"]),
            "`duration` and `requests` both size the measured phase",
            "keep one: `duration: 10s` (a phase by time) or `requests: N` (a phase by count)",
        )),
        (Some(r), None) => Ok((int("requests", r, 1)?, None)),
        (None, Some(d)) if d.0.is_zero() => Err(PlanError::at(
            key(&["load", "duration"]),
            "`duration: 0s` measures nothing",
            "give the phase time, e.g. `duration: 10s`, or size it by count with `requests: N`",
        )),
        (None, d) => Ok((0, Some(d.map_or(10.0, |d| d.0.as_secs_f64())))),
    }
}

/// An open loop's schedule is drawn before the phase: its arrivals are bounded.
fn check_arrivals(
    open_loop: Option<&OpenLoop>,
    duration_s: Option<f64>,
    vars: &IndexMap<String, Scalar>,
) -> Result<(), PlanError> {
    if let (Some(o), Some(d)) = (open_loop, duration_s)
        && o.rate * d > MAX_ARRIVALS
    {
        return Err(PlanError::at(
            key(&["load", "rate"]),
            format!(
                "rate {} × duration {d} s is over {MAX_ARRIVALS} arrivals per phase{}",
                o.rate,
                check::at_point(vars)
            ),
            "lower `rate` or `duration`",
        ));
    }
    Ok(())
}

/// Arrivals a phase may pre-draw (its schedule is held in memory: 8 bytes each).
const MAX_ARRIVALS: f64 = 5e6;

/// With an SLO, a phase holds at least this many arrivals (see `OpenLoop::min_requests`).
pub const SLO_MIN_REQUESTS: u32 = 400;

fn open_loop(load: &Load, rate: f64, slo: bool, vars: &IndexMap<String, Scalar>) -> Result<OpenLoop, PlanError> {
    use crate::spec::Arrival;
    let burstiness = match (load.arrival, load.burstiness) {
        (Arrival::Gamma, None) => {
            return Err(PlanError::at(
                key(&["load", "arrival"]),
                "`arrival: gamma` needs `burstiness`",
                "add `burstiness: 0.5` (burstier than Poisson) or `burstiness: 2` (more regular); 1 is Poisson",
            ));
        }
        (Arrival::Gamma, Some(b)) if !(b.is_finite() && b > 0.0 && b <= 1000.0) => {
            return Err(PlanError::at(
                key(&["load", "burstiness"]),
                format!("burstiness must be above 0 and at most 1000, got {b}{}", check::at_point(vars)),
                "e.g. `burstiness: 0.5`",
            ));
        }
        (Arrival::Gamma, b) => b,
        (_, Some(_)) => {
            return Err(PlanError::at(
                key(&["load", "burstiness"]),
                "`burstiness` shapes gamma arrivals only",
                "set `arrival: gamma`, or remove `burstiness`",
            ));
        }
        (_, None) => None,
    };
    let min_requests = if slo { SLO_MIN_REQUESTS } else { 0 };
    Ok(OpenLoop { rate, arrival: load.arrival, burstiness, min_requests })
}

/// All variable names a template may use: the grid axes and the builtins.
pub fn defined_vars(spec: &Spec) -> BTreeSet<String> {
    spec.grid.keys().cloned().chain(BUILTIN_VARS.iter().map(|s| (*s).to_owned())).collect()
}
