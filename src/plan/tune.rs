//! `tune:` as planned. Each tuned flag becomes a grid variable of its own, and the flag an engine argument
//! rendered from it, so a configuration of the space is an ordinary server group with a stable id (its
//! points journal, resume and re-render like any other). The variable's value `default` leaves the flag out:
//! the one configuration with every flag left out is vLLM's defaults, planned last. The planner plans every
//! configuration; the executor starts only those the search asks for (`stats::tune`).

use super::{PlanError, Point, ServerGroup, TuneAxisPlan, TuneConfig, TunePlan, key};
use crate::spec::{ArgValue, EngineKind, Scalar, Spec, TuneAxis, TuneObjective};
use indexmap::IndexMap;

/// Values one tuned flag may take (a range doubling from 1 to 2^63 has 64).
const MAX_VALUES: usize = 64;
/// Configurations a space may have: the search's model is exact, its cost grows with the cube of the
/// measured configurations and linearly with the space.
const MAX_CONFIGS: usize = 4096;
/// The value of a tune variable that leaves its flag out (vLLM's default).
pub const DEFAULT: &str = "default";

/// A spec with `tune:` expanded: the spec with the tuned flags as grid variables and engine arguments, and
/// the grid points to plan (every configuration × the load's own grid, then vLLM's defaults × that grid).
pub struct Expanded {
    pub spec: Spec,
    pub points: Vec<IndexMap<String, Scalar>>,
    pub axes: Vec<TuneAxisPlan>,
}

fn err(path: &[&str], message: impl Into<String>, fix: impl Into<String>) -> PlanError {
    PlanError::at(key(path), message, fix)
}

/// The values of one axis, checked.
fn values(flag: &str, axis: &TuneAxis) -> Result<Vec<Scalar>, PlanError> {
    let path = ["tune", "space", flag];
    let out: Vec<Scalar> = match axis {
        TuneAxis::Choices(c) => c.clone(),
        TuneAxis::Range(r) => {
            if r.min == 0 || r.max < r.min {
                return Err(err(
                    &path,
                    format!("range {}..{} is empty or starts at 0", r.min, r.max),
                    "write `{min: 16, max: 1024}` with 1 ≤ min ≤ max",
                ));
            }
            let mut v = Vec::new();
            let mut x = r.min;
            while x <= r.max && v.len() <= MAX_VALUES {
                v.push(Scalar::Int(x.min(i64::MAX as u64) as i64));
                x = match r.step {
                    Some(0) => return Err(err(&path, "step 0 never reaches max", "use `step: 1` or more")),
                    Some(s) => x.saturating_add(s),
                    None => x.saturating_mul(2),
                };
                if x == u64::MAX {
                    break;
                }
            }
            v
        }
    };
    if out.is_empty() {
        return Err(err(&path, format!("`{flag}` has no values to try"), "list at least one, e.g. `[64, 256]`"));
    }
    if out.len() > MAX_VALUES {
        return Err(err(
            &path,
            format!("`{flag}` has over {MAX_VALUES} values"),
            "narrow the range or use a larger `step` (a range doubles by default)",
        ));
    }
    for (i, v) in out.iter().enumerate() {
        if matches!(v, Scalar::Str(s) if s == DEFAULT) {
            return Err(err(
                &path,
                format!("`{DEFAULT}` is not a value of `{flag}`: vLLM's defaults are always measured"),
                "remove it; the confirmation measures vLLM's defaults (every tuned flag left out)",
            ));
        }
        if out[..i].contains(v) {
            return Err(err(&path, format!("`{flag}` lists {v} twice"), "list each value once"));
        }
    }
    Ok(out)
}

/// Checks the spec around `tune:` (load, objective, budget, engine).
fn check(spec: &Spec, t: &crate::spec::Tune) -> Result<(), PlanError> {
    if spec.search.is_some() {
        return Err(err(&["search"], "`search:` and `tune:` both decide what to measure", "keep one"));
    }
    if spec.precision.is_some() {
        return Err(err(
            &["precision"],
            "`precision:` and `tune:` both decide how many repeats to measure",
            "remove `precision:`; a tune measures `repeats` per searched start and `confirm_repeats` per confirmation start",
        ));
    }
    if spec.engine.kind == EngineKind::External {
        return Err(err(
            &["engine", "kind"],
            "a tune starts a server per configuration; an `external` endpoint cannot be restarted with other flags",
            "use `kind: vllm` (or `kind: command`)",
        ));
    }
    let Some(load) = &spec.load else {
        return Err(err(&["tune"], "a tune needs a `load:` section: the workload it tunes for", "add `load:`"));
    };
    match t.objective {
        TuneObjective::Throughput => {
            if t.p95_budget.is_none() {
                return Err(err(
                    &["tune", "objective"],
                    "the `throughput` objective needs a latency budget",
                    "add `p95_budget: 2s` under `tune:` (tokens/s counts only where p95 e2e stays within it)",
                ));
            }
            if load.rate.is_some() {
                return Err(err(
                    &["load", "rate"],
                    "the `throughput` objective measures closed-loop levels; `rate` sets an open loop",
                    "use `concurrency:` (a grid axis for several levels), or `objective: goodput` with `slo:`",
                ));
            }
        }
        TuneObjective::Goodput => {
            if spec.slo.is_none() || load.rate.is_none() {
                return Err(err(
                    &["tune", "objective"],
                    "the `goodput` objective counts requests meeting `slo:` in an open loop",
                    "add `slo:` and set `load.rate` (a grid axis for several rates)",
                ));
            }
        }
    }
    if t.confirm_repeats == 0 || t.confirm_repeats > 100 {
        return Err(err(&["tune", "confirm_repeats"], "confirm_repeats must be 1 to 100", "e.g. 3"));
    }
    if t.confirm_starts == 0 || t.confirm_starts > 10 {
        return Err(err(&["tune", "confirm_starts"], "confirm_starts must be 1 to 10", "e.g. 2"));
    }
    if !(0.0..1.0).contains(&t.screen) {
        return Err(err(
            &["tune", "screen"],
            format!("screen {} is not a share of the measured load below 1", t.screen),
            "e.g. `screen: 0.25` (a short phase of a quarter of the requests), or `screen: 0` for none",
        ));
    }
    if t.equivalence_margin.is_some_and(|m| !(m > 0.0 && m < 1.0)) {
        return Err(err(
            &["tune", "equivalence_margin"],
            "equivalence_margin is a fraction of the objective, above 0 and below 1",
            "e.g. 0.02 (±2%)",
        ));
    }
    let confirm = 2 * t.confirm_starts;
    if t.budget.starts <= confirm {
        return Err(err(
            &["tune", "budget", "starts"],
            format!(
                "{} server starts leave none for the search: the confirmation takes {confirm} ({} per configuration)",
                t.budget.starts, t.confirm_starts
            ),
            format!("allow at least {} (more to search a 2-flag space), or lower `confirm_starts`", confirm + 1),
        ));
    }
    Ok(())
}

/// Expands `tune:`; None without it.
pub fn expand(spec: &Spec) -> Result<Option<Expanded>, PlanError> {
    let Some(t) = &spec.tune else { return Ok(None) };
    check(spec, t)?;
    if t.space.is_empty() {
        return Err(err(&["tune", "space"], "the space is empty", "add a flag, e.g. `max-num-seqs: [64, 256]`"));
    }
    let mut out = spec.clone();
    let mut axes = Vec::new();
    for (flag, axis) in &t.space {
        let var = flag.replace('-', "_");
        let ok = !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || var.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(PlanError {
                path: key(&["tune", "space", flag]),
                at_key: true,
                message: format!("`{flag}` is not an engine flag name"),
                fix: "write the flag without dashes in front, e.g. `max-num-seqs`".into(),
            });
        }
        let same = |k: &String| k.replace('_', "-") == flag.replace('_', "-");
        if spec.engine.args.keys().any(same) {
            return Err(err(
                &["engine", "args", flag],
                format!("`{flag}` is both an engine arg and tuned"),
                "remove it from `engine.args`: the tune sets it, and leaves it out for vLLM's defaults",
            ));
        }
        if spec.grid.contains_key(&var) || super::BUILTIN_VARS.contains(&var.as_str()) {
            return Err(err(
                &["grid", &var],
                format!("grid axis `{var}` has the name the tune gives `{flag}`"),
                "rename the grid axis",
            ));
        }
        let values = values(flag, axis)?;
        let template = format!("{{{{ none if {var} == '{DEFAULT}' else {var} }}}}");
        out.engine.args.insert(flag.clone(), ArgValue::Scalar(Scalar::Str(template)));
        let mut grid_values = values.clone();
        grid_values.push(Scalar::Str(DEFAULT.into()));
        out.grid.insert(var.clone(), grid_values);
        axes.push(TuneAxisPlan { flag: flag.clone(), var, values });
    }
    let space: usize = axes.iter().map(|a| a.values.len()).product();
    if space > MAX_CONFIGS {
        return Err(err(
            &["tune", "space"],
            format!("the space has {space} configurations, over {MAX_CONFIGS}"),
            "tune fewer flags or fewer values per flag",
        ));
    }
    let load_points = super::cartesian(&spec.grid);
    let configs = super::configs_of(&axes.iter().map(|a| a.values.len()).collect::<Vec<_>>());
    let mut points = Vec::new();
    let settings: Vec<Vec<Scalar>> = configs
        .iter()
        .map(|c| axes.iter().zip(c).map(|(a, &i)| a.values[i].clone()).collect())
        .chain(std::iter::once(vec![Scalar::Str(DEFAULT.into()); axes.len()]))
        .collect();
    for setting in settings {
        for lp in &load_points {
            let mut vars = lp.clone();
            vars.extend(axes.iter().zip(&setting).map(|(a, v)| (a.var.clone(), v.clone())));
            points.push(vars);
        }
    }
    Ok(Some(Expanded { spec: out, points, axes }))
}

/// Screening's short phases: one more repeat of every searched configuration's load points (after the
/// search's and the confirmation's repeats, so the ids of those stay as they were), each measuring `screen`
/// of the requests (at least one per concurrent slot) or of the duration. The schedule measures them first on
/// a search start (`stats::tune::schedule`). vLLM's defaults are never screened: they are only confirmed.
pub fn screen_points(tp: &TunePlan, groups: &mut [ServerGroup]) {
    let Some(share) = tp.screen else { return };
    let repeat = tp.search_repeats + tp.confirm_repeats * tp.confirm_starts;
    for g in groups.iter_mut().filter(|g| g.id != tp.defaults_group) {
        let short: Vec<Point> = g
            .points
            .iter()
            .filter(|p| p.repeat == 0)
            .filter_map(|p| {
                let mut c = p.client.clone()?;
                if c.requests > 0 {
                    let floor = if c.open_loop.is_some() { 1 } else { c.concurrency.max(1) };
                    c.requests = ((f64::from(c.requests) * share).ceil() as u32).max(floor).min(c.requests);
                }
                c.duration_s = c.duration_s.map(|d| d * share);
                let id = super::content_hash(&(&p.id, "screen", &c, repeat));
                Some(Point { id, vars: p.vars.clone(), repeat, client: Some(c) })
            })
            .collect();
        g.points.extend(short);
    }
}

/// The tune's plan over the planned groups, checking that only the tuned flags start new servers.
pub fn finish(spec: &Spec, axes: Vec<TuneAxisPlan>, groups: &[ServerGroup]) -> Result<TunePlan, PlanError> {
    let t = spec.tune.as_ref().expect("finish follows expand");
    let is_default = |g: &ServerGroup| axes.iter().all(|a| g.vars.get(&a.var) == Some(&Scalar::Str(DEFAULT.into())));
    let mut configs = Vec::new();
    let mut defaults_group = None;
    for g in groups {
        // A server-scoped grid axis of one value changes nothing between configurations; more would.
        let varied = |k: &&String| spec.grid.get(*k).is_some_and(|v| v.len() > 1);
        if let Some(extra) = g.vars.keys().filter(varied).find(|k| !axes.iter().any(|a| &a.var == *k)) {
            return Err(err(
                &["grid", extra],
                format!("grid axis `{extra}` changes the server, but a tune's grid may only vary the load"),
                "tune the flag under `tune.space` instead, or use the axis only under `load:`",
            ));
        }
        if is_default(g) {
            defaults_group = Some(g.id.clone());
            continue;
        }
        let index = axes
            .iter()
            .map(|a| g.vars.get(&a.var).and_then(|v| a.values.iter().position(|x| x == v)).unwrap_or(0))
            .collect();
        configs.push(TuneConfig { group: g.id.clone(), index });
    }
    Ok(TunePlan {
        objective: match t.objective {
            TuneObjective::Throughput => "throughput".into(),
            TuneObjective::Goodput => "goodput".into(),
        },
        p95_budget_s: t.p95_budget.map(|d| d.0.as_secs_f64()),
        starts: t.budget.starts,
        wall_s: t.budget.wall.map(|d| d.0.as_secs_f64()),
        search_repeats: spec.planned_repeats().max(1) as u32,
        confirm_repeats: t.confirm_repeats,
        confirm_starts: t.confirm_starts,
        screen: (t.screen > 0.0).then_some(t.screen),
        defaults_group: defaults_group.unwrap_or_default(),
        configs,
        axes,
    })
}
