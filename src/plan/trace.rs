//! `load.trace` at one point: its keys rendered, the window read and checked (a bad line is an error here, at
//! validate, naming the line), and what the window holds recorded in the plan.

use super::check::{self, at_point};
use super::{MAX_CONCURRENCY, PlanError, key};
use crate::record::trace::{TracePlan, TraceSchedule};
use crate::record::tracefile::{self, Select};
use crate::spec::{IntOrTemplate, Load, NumOrTemplate, Scalar, TraceSpec};
use indexmap::IndexMap;
use minijinja::Value;

/// How a point's templates are rendered.
pub struct Render<'a> {
    pub renderer: &'a super::render::Renderer,
    pub ctx: &'a Value,
    pub vars: &'a IndexMap<String, Scalar>,
}

/// Arrivals a window may hold (its requests are held in memory with their blocks).
const MAX_REQUESTS: usize = 2_000_000;

/// Renders and reads `load.trace` at one point.
pub fn plan(t: &TraceSpec, load: &Load, r: &Render, max_model_len: Option<u64>) -> Result<TracePlan, PlanError> {
    conflicts(load)?;
    let at = |k: &str| key(&["load", "trace", k]);
    let path = match t.path.contains("{{") {
        true => {
            let v = check::render_at(r.renderer, r.ctx, r.vars, at("path"), &t.path)?;
            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
        }
        false => t.path.clone(),
    };
    let schedule = pace(t, load)?;
    let speedup = check::render_positive(r.renderer, r.ctx, r.vars, &["load", "trace", "speedup"], &t.speedup)?;
    let start_s = match &t.start {
        None | Some(NumOrTemplate::Num(0.0)) => 0.0,
        Some(v) => check::render_positive(r.renderer, r.ctx, r.vars, &["load", "trace", "start"], v)?,
    };
    let duration_s = match &t.duration {
        None => None,
        Some(v) => Some(check::render_positive(r.renderer, r.ctx, r.vars, &["load", "trace", "duration"], v)?),
    };
    let int = |k: &str, v: &Option<IntOrTemplate>| match v {
        None => Ok(None),
        Some(v) => check::render_int(r.renderer, r.ctx, r.vars, &["load", "trace", k], v, 1).map(Some),
    };
    let (max_input, max_output) =
        (int("max_input_tokens", &t.max_input_tokens)?, int("max_output_tokens", &t.max_output_tokens)?);
    let select = Select { start_s, duration_s, max_input, max_output };
    let w = tracefile::read_shared(std::path::Path::new(&path), t.format, &select).map_err(|e| {
        PlanError::at(at("path"), format!("{e}{}", at_point(r.vars)), "fix the trace, or point `path` at another")
    })?;
    if w.requests.len() > MAX_REQUESTS {
        return Err(PlanError::at(
            at("duration"),
            format!("the window holds {} requests, over {MAX_REQUESTS}", w.requests.len()),
            "replay a shorter window: `start` and `duration` in trace seconds",
        ));
    }
    if let Some(limit) = max_model_len {
        let longest = w.requests.iter().map(|q| u64::from(q.input) + u64::from(q.output)).max().unwrap_or(0);
        if longest > limit {
            return Err(PlanError::at(
                at("max_input_tokens"),
                format!(
                    "a request of the window needs {longest} tokens (prompt + output), over max-model-len {limit}{}",
                    at_point(r.vars)
                ),
                "cap the lengths: `max_input_tokens` + `max_output_tokens` at most max-model-len",
            ));
        }
    }
    Ok(TracePlan {
        path,
        format: t.format,
        content: w.content.clone(),
        speedup,
        schedule,
        select,
        requests: w.requests.len() as u32,
        found: w.found.clone(),
    })
}

/// What paces the replay: `load.rate` when set (the trace's requests in order, on the rate's pre-drawn
/// schedule), else the timestamps over `speedup`. `speedup` beside `rate` would be ignored, and `arrival` or
/// `burstiness` without it too: both are errors rather than silently dropped.
fn pace(t: &TraceSpec, load: &Load) -> Result<TraceSchedule, PlanError> {
    if load.rate.is_some() {
        if !matches!(t.speedup, NumOrTemplate::Num(x) if x == 1.0) {
            return Err(PlanError::at(
                key(&["load", "trace", "speedup"]),
                "`trace.speedup` paces the trace's timestamps, and `rate` replaces them",
                "keep one: `rate: N` sends the window's requests at N per second in trace order; `speedup` keeps \
                 their timestamps, divided by it",
            ));
        }
        return Ok(TraceSchedule::Rate);
    }
    if load.burstiness.is_some() || !load.arrival.is_default() {
        return Err(PlanError::at(
            key(&["load", "arrival"]),
            "`arrival` and `burstiness` shape a rate's schedule, and a trace without `rate` keeps its timestamps",
            "add `rate: N` to send the window's requests at that rate in trace order, or remove them",
        ));
    }
    Ok(TraceSchedule::Timestamps)
}

/// The keys a trace replaces (`rate` does not: it paces the window's requests instead of the timestamps).
fn conflicts(load: &Load) -> Result<(), PlanError> {
    let set: [(&str, bool); 7] = [
        ("concurrency", load.concurrency.is_some()),
        ("requests", load.requests.is_some()),
        ("duration", load.duration.is_some()),
        ("dataset", load.dataset.is_some()),
        ("prompts_file", load.prompts_file.is_some()),
        ("text_prompts", load.text_prompts),
        ("shared_prefix_tokens", !matches!(load.shared_prefix_tokens, IntOrTemplate::Int(0))),
    ];
    if let Some((k, _)) = set.iter().find(|(_, on)| *on) {
        return Err(PlanError::at(
            key(&["load", k]),
            format!("`trace` gives the arrivals, lengths and prompts, and `{k}` sets them too"),
            "remove it; the window is `trace.start`/`trace.duration`, the pace `trace.speedup` (or `rate`)",
        ));
    }
    Ok(())
}

/// The cap on requests in flight (`max_concurrency`, 0 for none).
pub fn cap(
    load: &Load,
    int: &dyn Fn(&str, &IntOrTemplate, i64) -> Result<u32, PlanError>,
    vars: &IndexMap<String, Scalar>,
) -> Result<u32, PlanError> {
    let cap = match &load.max_concurrency {
        Some(m) => int("max_concurrency", m, 1)?,
        None => 0,
    };
    check::at_most(&["load", "max_concurrency"], cap, MAX_CONCURRENCY, vars)?;
    Ok(cap)
}

/// What a point's id hashes of its client: the trace by its content, not its path (a trace moved or renamed
/// keeps its points; another trace at the same path gets new ones). Unchanged without a trace.
pub fn identity(client: &Option<crate::record::plan::ClientConfig>) -> Option<crate::record::plan::ClientConfig> {
    let mut c = client.clone()?;
    if let Some(t) = &mut c.trace {
        t.path.clear();
    }
    Some(c)
}

/// The templates of `load.trace`, with their places: grid axes used there are used axes.
pub fn templates(t: &TraceSpec) -> Vec<(Vec<crate::spec::Seg>, String)> {
    let at = |k: &str| key(&["load", "trace", k]);
    let mut out = Vec::new();
    if t.path.contains("{{") {
        out.push((at("path"), t.path.clone()));
    }
    let nums = [("speedup", Some(&t.speedup)), ("start", t.start.as_ref()), ("duration", t.duration.as_ref())];
    for (k, v) in nums {
        if let Some(NumOrTemplate::Template(text)) = v {
            out.push((at(k), text.clone()));
        }
    }
    for (k, v) in [("max_input_tokens", &t.max_input_tokens), ("max_output_tokens", &t.max_output_tokens)] {
        if let Some(IntOrTemplate::Template(text)) = v {
            out.push((at(k), text.clone()));
        }
    }
    out
}
