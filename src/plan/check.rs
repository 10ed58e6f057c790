//! Checks the planner makes before and while expanding: names, bounds, grid shape and size, templates.

use super::render::Renderer;
use super::{MAX_RUNS, PlanError, key};
use crate::spec::error::{closest, one_of};
use crate::spec::{ArgValue, BoolOrTemplate, EngineKind, IntOrTemplate, Scalar, Seg, Spec};
use indexmap::IndexMap;
use minijinja::Value;
use std::collections::BTreeSet;

/// Checks that need no rendering.
pub fn spec_level(spec: &Spec) -> Result<(), PlanError> {
    check_name(&spec.name)?;
    if let Some(r) = spec.repeats
        && r < 1
    {
        return Err(PlanError::at(
            key(&["repeats"]),
            format!("repeats must be at least 1, got {r}"),
            "set `repeats: 1` or more",
        ));
    }
    check_precision(spec)?;
    check_engine(spec)?;
    check_grid(spec)
}

fn check_precision(spec: &Spec) -> Result<(), PlanError> {
    let Some(p) = spec.precision else { return Ok(()) };
    let bad = |k: &str, msg: String, fix: &str| Err(PlanError::at(key(&["precision", k]), msg, fix));
    if spec.repeats.is_some() {
        return bad(
            "max_repeats",
            "`precision` decides the repeats, so `repeats` cannot be set too".into(),
            "remove `repeats`, or remove `precision` for a fixed number of repeats",
        );
    }
    if spec.repeat_policy == crate::spec::RepeatPolicy::Best {
        return Err(PlanError::at(
            key(&["repeat_policy"]),
            "`repeat_policy: best` drifts upward with the number of repeats, so it cannot head a precision run",
            "remove `repeat_policy` (with `precision` the headline is the mean of the repeats)",
        ));
    }
    if !(p.rel_ci > 0.0 && p.rel_ci < 1.0) {
        return bad("rel_ci", format!("rel_ci must be between 0 and 1, got {}", p.rel_ci), "e.g. `rel_ci: 0.05` (±5%)");
    }
    if p.min_repeats < 2 {
        return bad(
            "min_repeats",
            format!("min_repeats must be at least 2 (an interval needs two repeats), got {}", p.min_repeats),
            "set `min_repeats: 3`",
        );
    }
    if p.max_repeats < p.min_repeats || p.max_repeats > 100 {
        return bad(
            "max_repeats",
            format!("max_repeats must be between min_repeats ({}) and 100, got {}", p.min_repeats, p.max_repeats),
            "e.g. `max_repeats: 5`",
        );
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        return Ok(());
    }
    Err(PlanError::at(
        key(&["name"]),
        format!("name `{name}` cannot be used as a folder name under out/"),
        "use 1 to 100 letters, digits, `.`, `_` or `-`, e.g. `kv-scaling`",
    ))
}

fn check_engine(spec: &Spec) -> Result<(), PlanError> {
    let e = &spec.engine;
    if e.ready_timeout.0.is_zero() {
        return Err(PlanError::at(
            key(&["engine", "ready_timeout"]),
            "`ready_timeout: 0s` gives the server no time to start",
            "give it time, e.g. `ready_timeout: 600s` (vLLM on a GPU takes 70–120 s)",
        ));
    }
    // A host name or address (a template is checked once rendered, by the URL it makes).
    let host_ok = e.host.contains("{{")
        || e.host.parse::<std::net::IpAddr>().is_ok()
        || (!e.host.is_empty()
            && e.host.len() <= 253
            && e.host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
    if !host_ok {
        return Err(PlanError::at(
            key(&["engine", "host"]),
            format!("`{}` is not a host name or an address", e.host),
            "write an address or a name, e.g. `127.0.0.1` or `localhost`",
        ));
    }
    match e.kind {
        EngineKind::Vllm if e.model.is_none() => {
            return Err(PlanError::at(
                key(&["engine"]),
                "a `vllm` engine needs `model`",
                "add `model: models/tiny-llama` (or a model path) under `engine`, or pass `--set engine.model=PATH`",
            ));
        }
        EngineKind::Command if e.command.as_ref().is_none_or(|c| c.is_empty()) => {
            return Err(PlanError::at(
                key(&["engine"]),
                "a `command` engine needs `command`",
                "add `command: [\"my-server\", \"--port\", \"{{ port }}\"]` under `engine`",
            ));
        }
        EngineKind::External if e.base_url.is_none() => {
            return Err(PlanError::at(
                key(&["engine"]),
                "an `external` engine needs `base_url`",
                "add `base_url: http://127.0.0.1:8000` under `engine`",
            ));
        }
        EngineKind::External if e.command.is_some() || !e.args.is_empty() || !e.env.is_empty() => {
            return Err(PlanError::at(
                key(&["engine", "kind"]),
                "an `external` engine is not started by servelab, so `command`, `args` and `env` would be ignored",
                "remove them, or use `kind: command` to have servelab start the server",
            ));
        }
        _ => {}
    }
    if let Some(bad) = e.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
        return Err(PlanError {
            path: key(&["engine", "env", bad]),
            at_key: true,
            message: format!("`{bad}` is not an environment variable name"),
            fix: "use a name without `=`, e.g. `VLLM_CPU_KVCACHE_SPACE`".into(),
        });
    }
    Ok(())
}

fn check_grid(spec: &Spec) -> Result<(), PlanError> {
    let mut runs: u64 = spec.planned_repeats() as u64;
    for (axis, values) in &spec.grid {
        let path = key(&["grid", axis]);
        let is_ident = axis.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && axis.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_ident {
            return Err(PlanError {
                path,
                at_key: true,
                message: format!("axis name `{axis}` cannot be used as a template variable"),
                fix: format!(
                    "use letters, digits and `_`, e.g. `{}`",
                    axis.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
            });
        }
        if super::BUILTIN_VARS.contains(&axis.as_str()) {
            return Err(PlanError {
                path,
                at_key: true,
                message: format!("`{axis}` is a built-in template variable and cannot be a grid axis"),
                fix: format!("rename the axis, e.g. `{axis}_value`, or set `engine.{axis}` directly"),
            });
        }
        if values.is_empty() {
            return Err(PlanError::at(
                path,
                format!("grid axis `{axis}` has no values"),
                format!("list at least one value, e.g. `{axis}: [1, 2]`, or remove the axis"),
            ));
        }
        check_duplicates(axis, values)?;
        runs = runs.saturating_mul(values.len() as u64);
    }
    if runs > MAX_RUNS {
        return Err(PlanError::at(
            key(&["grid"]),
            format!(
                "the grid expands to {runs} runs (points × repeats), more than the {MAX_RUNS} servelab accepts; that is surely a mistake"
            ),
            "shorten the axes, or split the experiment into several specs",
        ));
    }
    Ok(())
}

fn check_duplicates(axis: &str, values: &[Scalar]) -> Result<(), PlanError> {
    // A map from text to first index: linear in the axis's size (a list scan was quadratic: 23 s for 150k).
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let text = v.to_string();
        if let Some(&first) = seen.get(&text) {
            return Err(PlanError::at(
                vec![Seg::Key("grid".into()), Seg::Key(axis.into()), Seg::Index(i)],
                format!("value `{text}` appears twice in grid axis `{axis}` (items {first} and {i})"),
                "remove the duplicate; use `repeats` to measure a point more than once",
            ));
        }
        seen.insert(text, i);
    }
    Ok(())
}

/// Every template string of the spec, with its path: engine ones first (they decide server scope).
/// Template strings with the path of the key that holds each.
type Located = Vec<(Vec<Seg>, String)>;

fn templates(spec: &Spec) -> (Located, Located) {
    let e = &spec.engine;
    let mut engine = Vec::new();
    let mut push = |path: Vec<Seg>, text: &str| engine.push((path, text.to_owned()));
    push(key(&["engine", "host"]), &e.host);
    push(key(&["engine", "ready_path"]), &e.ready_path);
    if let IntOrTemplate::Template(t) = &e.port {
        push(key(&["engine", "port"]), t);
    }
    for (name, text) in [("model", &e.model), ("base_url", &e.base_url), ("config_file", &e.config_file)] {
        if let Some(t) = text {
            push(key(&["engine", name]), t);
        }
    }
    for (i, t) in e.command.iter().flatten().enumerate() {
        push(vec![Seg::Key("engine".into()), Seg::Key("command".into()), Seg::Index(i)], t);
    }
    for (k, v) in &e.args {
        let path = key(&["engine", "args", k]);
        match v {
            ArgValue::Scalar(Scalar::Str(t)) => push(path, t),
            ArgValue::List(items) => items.iter().enumerate().for_each(|(i, s)| {
                if let Scalar::Str(t) = s {
                    let mut p = path.clone();
                    p.push(Seg::Index(i));
                    push(p, t);
                }
            }),
            _ => {}
        }
    }
    for (k, v) in &e.env {
        if let Scalar::Str(t) = v {
            push(key(&["engine", "env", k]), t);
        }
    }
    let mut load = Vec::new();
    if let Some(l) = &spec.load {
        for (name, v) in [("concurrency", &l.concurrency), ("max_concurrency", &l.max_concurrency)] {
            if let Some(IntOrTemplate::Template(t)) = v {
                load.push((key(&["load", name]), t.clone()));
            }
        }
        if let Some(crate::spec::NumOrTemplate::Template(t)) = &l.rate {
            load.push((key(&["load", "rate"]), t.clone()));
        }
        for (name, v) in [("max_tokens", &l.max_tokens), ("prompt_tokens", &l.prompt_tokens)] {
            if let Some(t) = v.template() {
                load.push((key(&["load", name]), t.to_owned()));
            }
        }
        let ints = [("warmup", &l.warmup), ("shared_prefix_tokens", &l.shared_prefix_tokens)];
        for (name, v) in ints.into_iter().chain([("client_threads", &l.client_threads)]) {
            if let IntOrTemplate::Template(t) = v {
                load.push((key(&["load", name]), t.clone()));
            }
        }
        if let Some(IntOrTemplate::Template(t)) = &l.requests {
            load.push((key(&["load", "requests"]), t.clone()));
        }
        if let Some(t) = &l.trace {
            load.extend(super::trace::templates(t));
        }
        for (name, v) in [("ignore_eos", &l.ignore_eos), ("stream", &l.stream)] {
            if let BoolOrTemplate::Template(t) = v {
                load.push((key(&["load", name]), t.clone()));
            }
        }
    }
    (engine, load)
}

/// Checks every template's syntax and variables; returns the variables the engine section uses.
/// The variables the engine's templates read, and those any template reads.
pub fn template_vars(spec: &Spec, renderer: &Renderer) -> Result<(BTreeSet<String>, BTreeSet<String>), PlanError> {
    let defined = super::defined_vars(spec);
    let (engine, load) = templates(spec);
    let mut engine_vars = BTreeSet::new();
    let mut used = BTreeSet::new();
    for (i, (path, text)) in engine.iter().chain(load.iter()).enumerate() {
        let vars = renderer.variables(text).map_err(|msg| {
            PlanError::at(
                path.clone(),
                format!("template `{text}` does not parse: {msg}"),
                "fix the minijinja syntax, e.g. `{{ max_model_len }}`",
            )
        })?;
        if let Some(undefined) = vars.iter().find(|v| !defined.contains(*v)) {
            let names: Vec<&str> = defined.iter().map(String::as_str).collect();
            let fix = match closest(undefined, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? (defined: {})", one_of(&names)),
                None => format!("add `{undefined}` to `grid`, or use one of {}", one_of(&names)),
            };
            return Err(PlanError::at(
                path.clone(),
                format!("template `{text}` uses undefined variable `{undefined}`"),
                fix,
            ));
        }
        used.extend(vars.iter().cloned());
        if i < engine.len() {
            engine_vars.extend(vars);
        }
    }
    Ok((engine_vars, used))
}

/// An axis no template reads makes every point of it identical: surely a mistake in the spec.
pub fn unused_axes(spec: &Spec, used: &BTreeSet<String>) -> Result<(), PlanError> {
    let Some(unused) = spec.grid.keys().find(|axis| !used.contains(*axis)) else { return Ok(()) };
    Err(PlanError {
        path: key(&["grid", unused]),
        at_key: true,
        message: format!(
            "grid axis `{unused}` is used by no template under `engine` or `load`, so its points would all be identical"
        ),
        fix: format!("use it, e.g. `\"{{{{ {unused} }}}}\"` in an engine arg or a load value, or remove the axis"),
    })
}

/// " (at grid point a=1, b=2)" for messages about values that depend on the point.
pub fn at_point(vars: &IndexMap<String, Scalar>) -> String {
    if vars.is_empty() {
        return String::new();
    }
    format!(" (at grid point {})", crate::record::values::vars_text(vars, ", "))
}

/// Renders one template of the spec; a failure is an error at `path` naming the template and the grid point.
pub fn render_at(
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    path: Vec<Seg>,
    text: &str,
) -> Result<Value, PlanError> {
    renderer.render(text, ctx).map_err(|msg| {
        PlanError::at(
            path,
            format!("template `{text}` failed{}: {msg}", at_point(vars)),
            "fix the template; `servelab schema` lists what each key accepts",
        )
    })
}

/// An upper bound on a rendered integer, with the key and the fix.
pub fn at_most(path: &[&str], value: u32, max: u32, vars: &IndexMap<String, Scalar>) -> Result<(), PlanError> {
    if value <= max {
        return Ok(());
    }
    Err(PlanError::at(
        key(path),
        format!("{value}{} is beyond what servelab accepts ({max})", at_point(vars)),
        format!("set `{}` to at most {max}", path.join(".")),
    ))
}

/// Client threads a load may ask for: more than a host has cores only time-slices them.
pub const MAX_CLIENT_THREADS: u32 = 256;

/// `load.client_threads`: at most [`MAX_CLIENT_THREADS`], and for a closed loop at most its concurrency (a
/// thread without a slot would send nothing).
pub fn client_threads(n: u32, concurrency: u32, open: bool, vars: &IndexMap<String, Scalar>) -> Result<(), PlanError> {
    at_most(&["load", "client_threads"], n, MAX_CLIENT_THREADS, vars)?;
    if open || n <= concurrency {
        return Ok(());
    }
    Err(PlanError::at(
        key(&["load", "client_threads"]),
        format!("client_threads {n} is more than the closed loop's concurrency {concurrency}{}", at_point(vars)),
        format!("use at most {concurrency} client threads (each holds at least one of the concurrent requests)"),
    ))
}

/// Renders an integer field and checks its lower bound.
pub fn render_int(
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    path: &[&str],
    v: &IntOrTemplate,
    min: i64,
) -> Result<u32, PlanError> {
    let name = path.join(".");
    let (value, where_) = match v {
        IntOrTemplate::Int(i) => (*i, String::new()),
        IntOrTemplate::Template(t) => {
            let rendered = render_at(renderer, ctx, vars, key(path), t)?;
            let int = rendered.as_i64().or_else(|| rendered.as_str().and_then(|s| s.trim().parse().ok()));
            let Some(int) = int else {
                return Err(PlanError::at(
                    key(path),
                    format!("`{t}` renders to `{rendered}`{}, which is not an integer", at_point(vars)),
                    format!("make `{name}` an integer"),
                ));
            };
            (int, at_point(vars))
        }
    };
    if value < min {
        let what = if min == 0 { "0 or more" } else { "1 or more" };
        let hint = if name == "load.concurrency" { " (1 = sequential)" } else { "" };
        return Err(PlanError::at(
            key(path),
            format!("must be at least {min}, got {value}{where_}"),
            format!("set `{name}` to {what}{hint}"),
        ));
    }
    u32::try_from(value).map_err(|_| {
        PlanError::at(key(path), format!("{value}{where_} is too large"), format!("set `{name}` below {}", u32::MAX))
    })
}

/// Renders a number field; it must be finite and above 0.
pub fn render_positive(
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    path: &[&str],
    v: &crate::spec::NumOrTemplate,
) -> Result<f64, PlanError> {
    let name = path.join(".");
    let (value, where_) = match v {
        crate::spec::NumOrTemplate::Num(x) => (*x, String::new()),
        crate::spec::NumOrTemplate::Template(t) => {
            let rendered = render_at(renderer, ctx, vars, key(path), t)?;
            let num =
                f64::try_from(rendered.clone()).ok().or_else(|| rendered.as_str().and_then(|s| s.trim().parse().ok()));
            let Some(num) = num else {
                return Err(PlanError::at(
                    key(path),
                    format!("`{t}` renders to `{rendered}`{}, which is not a number", at_point(vars)),
                    format!("make `{name}` a number"),
                ));
            };
            (num, at_point(vars))
        }
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(PlanError::at(
            key(path),
            format!("must be above 0, got {value}{where_}"),
            format!("set `{name}` to a positive number, e.g. 10 (requests per second)"),
        ));
    }
    Ok(value)
}

pub fn render_bool(
    renderer: &Renderer,
    ctx: &Value,
    vars: &IndexMap<String, Scalar>,
    path: &[&str],
    v: &BoolOrTemplate,
) -> Result<bool, PlanError> {
    match v {
        BoolOrTemplate::Bool(b) => Ok(*b),
        BoolOrTemplate::Template(t) => {
            let rendered = render_at(renderer, ctx, vars, key(path), t)?;
            match (rendered.kind(), rendered.as_str().map(str::trim)) {
                (minijinja::value::ValueKind::Bool, _) => Ok(rendered.is_true()),
                (_, Some("true")) => Ok(true),
                (_, Some("false")) => Ok(false),
                _ => Err(PlanError::at(
                    key(path),
                    format!("`{t}` renders to `{rendered}`{}, not true or false", at_point(vars)),
                    format!("make `{}` true or false", path.join(".")),
                )),
            }
        }
    }
}

/// Every request must fit the context: vLLM rejects or truncates otherwise.
pub fn fits_context(
    prompt_tokens: u32,
    max_tokens: u32,
    max_model_len: u64,
    vars: &IndexMap<String, Scalar>,
) -> Result<(), PlanError> {
    let need = u64::from(prompt_tokens) + u64::from(max_tokens);
    if need <= max_model_len {
        return Ok(());
    }
    Err(PlanError::at(
        key(&["load", "max_tokens"]),
        format!(
            "prompt_tokens + max_tokens = {prompt_tokens} + {max_tokens} = {need} exceeds max-model-len {max_model_len}{}",
            at_point(vars)
        ),
        "lower `load.max_tokens` or `load.prompt_tokens`, or raise `engine.args.max-model-len`: every request must fit the context",
    ))
}
