//! The request shape of a point, checked: lengths (fixed or drawn), prompts (ids, exact text, a file, a
//! dataset), the shared prefix, and that every request fits the server's context.

use super::check::{self, at_point};
use super::{MAX_TOKENS, PlanError, key};
use crate::record::plan::{Dataset, Endpoint, LengthDist};
use crate::spec::{DistKind, IntOrTemplate, Length, Load, Scalar};
use indexmap::IndexMap;

/// What the planner fills in of a client configuration's workload.
pub struct Planned {
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    pub prompt_dist: Option<LengthDist>,
    pub output_dist: Option<LengthDist>,
    pub context_limit: Option<u32>,
    pub shared_prefix_tokens: u32,
    pub text_prompts: bool,
    pub dataset: Option<Dataset>,
}

/// Renders and checks the workload keys of `load` at one point; `int` renders an integer key.
pub fn plan(
    load: &Load,
    vars: &IndexMap<String, Scalar>,
    (model, max_model_len): (Option<&str>, Option<u64>),
    int: &dyn Fn(&str, &IntOrTemplate, i64) -> Result<u32, PlanError>,
) -> Result<Planned, PlanError> {
    let limit = max_model_len.map(|l| l.min(u64::from(MAX_TOKENS)) as u32);
    let (max_tokens, output_dist) = length("max_tokens", &load.max_tokens, limit, vars, int)?;
    let (prompt_tokens, prompt_dist) = length("prompt_tokens", &load.prompt_tokens, limit, vars, int)?;
    let min_of = |fixed: u32, d: &Option<LengthDist>| d.map_or(fixed, |d| d.bounds().0);
    let shared_prefix_tokens = int("shared_prefix_tokens", &load.shared_prefix_tokens, 0)?;
    if shared_prefix_tokens > min_of(prompt_tokens, &prompt_dist) {
        return Err(PlanError::at(
            key(&["load", "shared_prefix_tokens"]),
            format!(
                "shared_prefix_tokens {shared_prefix_tokens} is longer than the shortest prompt ({})",
                min_of(prompt_tokens, &prompt_dist)
            ),
            "make the shared prefix at most prompt_tokens long (a distribution's `min`)",
        ));
    }
    let dataset = load.dataset.as_ref().map(|d| Dataset { path: d.path.clone(), format: d.format, samples: d.samples });
    if let Some(d) = &dataset {
        check_dataset(d, load)?;
    }
    if let Some(l) = max_model_len {
        check::fits_context(min_of(prompt_tokens, &prompt_dist), min_of(max_tokens, &output_dist), l, vars)?;
    }
    let varies = prompt_dist.is_some() || output_dist.is_some() || dataset.is_some();
    let chat = load.endpoint == Endpoint::Chat;
    // Chat sends text: exact text unless a file gives it.
    let text_prompts = load.text_prompts || (chat && load.prompts_file.is_none() && dataset.is_none());
    let tokenizer = model.map(|m| std::path::Path::new(m).join("tokenizer.json")).filter(|t| t.is_file());
    if text_prompts && tokenizer.is_none() {
        let why = match chat {
            true => "`endpoint: chat` sends text, built to an exact length with the model's tokenizer",
            false => "`text_prompts` builds text to an exact length with the model's tokenizer",
        };
        return Err(PlanError::at(
            key(&["load", if load.text_prompts { "text_prompts" } else { "endpoint" }]),
            format!("{why}, and `engine.model` is not a local folder with a tokenizer.json"),
            "point `engine.model` at the model's folder, or give the text: `prompts_file: FILE` (one prompt per line) or `dataset:`",
        ));
    }
    Ok(Planned {
        prompt_tokens,
        max_tokens,
        prompt_dist,
        output_dist,
        context_limit: limit.filter(|_| varies),
        shared_prefix_tokens,
        text_prompts,
        dataset,
    })
}

fn check_dataset(d: &Dataset, load: &Load) -> Result<(), PlanError> {
    let at = || key(&["load", "dataset", "path"]);
    if load.prompts_file.is_some() || load.text_prompts {
        return Err(PlanError::at(
            key(&["load", "dataset"]),
            "`dataset` gives the prompts, and so do `prompts_file`/`text_prompts`",
            "keep one source of prompts",
        ));
    }
    if d.samples == 0 || d.samples > 1_000_000 {
        return Err(PlanError::at(
            key(&["load", "dataset", "samples"]),
            format!("samples must be 1 to 1,000,000, got {}", d.samples),
            "e.g. `samples: 1000`",
        ));
    }
    match std::fs::metadata(&d.path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(PlanError::at(at(), format!("dataset {} is not a file", d.path), "name a JSON or JSONL file")),
        Err(e) => Err(PlanError::at(
            at(),
            format!("cannot read dataset {}: {e}", d.path),
            "give a path relative to the directory servelab runs in, or an absolute one",
        )),
    }
}

/// A fixed length (rendered) or a distribution (checked); returns the nominal length and the distribution.
pub(super) fn length(
    name: &str,
    v: &Length,
    limit: Option<u32>,
    vars: &IndexMap<String, Scalar>,
    int: &dyn Fn(&str, &IntOrTemplate, i64) -> Result<u32, PlanError>,
) -> Result<(u32, Option<LengthDist>), PlanError> {
    let d = match v {
        Length::Fixed(v) => {
            let n = int(name, v, 1)?;
            check::at_most(&["load", name], n, MAX_TOKENS, vars)?;
            return Ok((n, None));
        }
        Length::Dist(d) => d,
    };
    let bad = |field: &str, why: String, fix: &str| PlanError::at(key(&["load", name, field]), why, fix);
    let fields: [(&str, bool, &[DistKind]); 6] = [
        ("value", d.value.is_some(), &[DistKind::Fixed]),
        ("mean", d.mean.is_some(), &[DistKind::Normal, DistKind::Lognormal]),
        ("sd", d.sd.is_some(), &[DistKind::Normal]),
        ("sigma", d.sigma.is_some(), &[DistKind::Lognormal]),
        ("min", d.min.is_some(), &[DistKind::Uniform, DistKind::Normal, DistKind::Lognormal]),
        ("max", d.max.is_some(), &[DistKind::Uniform, DistKind::Normal, DistKind::Lognormal]),
    ];
    for (field, set, kinds) in fields {
        if set && !kinds.contains(&d.dist) {
            return Err(bad(
                field,
                format!("`{field}` does not shape a {:?} distribution", d.dist).to_lowercase(),
                "remove it",
            ));
        }
    }
    let ceiling = limit.unwrap_or(MAX_TOKENS);
    let min = d.min.unwrap_or(1);
    let max = d.max.unwrap_or(i64::from(ceiling));
    if min < 1 || max < min || max > i64::from(ceiling) {
        return Err(bad(
            "max",
            format!("{name} needs 1 ≤ min ≤ max ≤ {ceiling}, got min {min}, max {max}{}", at_point(vars)),
            "the limit is max-model-len when set (else 10,000,000)",
        ));
    }
    let (min, max) = (min as u32, max as u32);
    let need = |field: &str, x: Option<f64>, ok: fn(f64) -> bool, example: &str| match x {
        Some(x) if x.is_finite() && ok(x) => Ok(x),
        Some(x) => Err(bad(field, format!("{field} {x} is out of range"), example)),
        None => Err(bad(field, format!("a {:?} distribution needs `{field}`", d.dist).to_lowercase(), example)),
    };
    let dist = match d.dist {
        DistKind::Fixed => {
            let n = d
                .value
                .ok_or_else(|| bad("value", "a fixed distribution needs `value`".into(), "e.g. `value: 128`"))?;
            return length(name, &Length::int(n), limit, vars, int);
        }
        DistKind::Uniform if d.min.is_none() || d.max.is_none() => {
            let why = "a uniform distribution needs `min` and `max`".into();
            return Err(bad("min", why, "e.g. `{dist: uniform, min: 16, max: 512}`"));
        }
        DistKind::Uniform => LengthDist::Uniform { min, max },
        DistKind::Normal => LengthDist::Normal {
            mean: need("mean", d.mean, |x| x >= 1.0, "e.g. `mean: 256`")?,
            sd: need("sd", d.sd, |x| x > 0.0, "e.g. `sd: 64`")?,
            min,
            max,
        },
        DistKind::Lognormal => LengthDist::Lognormal {
            mean: need("mean", d.mean, |x| x >= 1.0, "e.g. `mean: 256`")?,
            sigma: need("sigma", d.sigma, |x| x > 0.0 && x <= 4.0, "e.g. `sigma: 0.5` (0 < sigma ≤ 4)")?,
            min,
            max,
        },
    };
    Ok((dist.mean().round().clamp(f64::from(min), f64::from(max)) as u32, Some(dist)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DistSpec;

    fn dist(yaml: &str) -> DistSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn plan_len(d: &str, limit: Option<u32>) -> Result<(u32, Option<LengthDist>), String> {
        let int = |_: &str, v: &IntOrTemplate, _: i64| match v {
            IntOrTemplate::Int(i) => Ok(*i as u32),
            IntOrTemplate::Template(_) => unreachable!(),
        };
        length("prompt_tokens", &Length::Dist(dist(d)), limit, &IndexMap::new(), &int).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn distributions_are_checked_and_get_their_defaults() {
        assert_eq!(
            plan_len("{dist: lognormal, mean: 256, sigma: 0.5, min: 16, max: 2048}", None).unwrap(),
            (256, Some(LengthDist::Lognormal { mean: 256.0, sigma: 0.5, min: 16, max: 2048 }))
        );
        assert_eq!(
            plan_len("{dist: normal, mean: 100, sd: 10}", Some(4096)).unwrap(),
            (100, Some(LengthDist::Normal { mean: 100.0, sd: 10.0, min: 1, max: 4096 }))
        );
        assert_eq!(
            plan_len("{dist: uniform, min: 10, max: 20}", None).unwrap(),
            (15, Some(LengthDist::Uniform { min: 10, max: 20 }))
        );
        assert_eq!(plan_len("{dist: fixed, value: 77}", None).unwrap(), (77, None));
        for (bad, says) in [
            ("{dist: uniform, min: 10}", "needs `min` and `max`"),
            ("{dist: normal, mean: 100}", "needs `sd`"),
            ("{dist: lognormal, mean: 100, sigma: 9}", "sigma 9 is out of range"),
            ("{dist: uniform, min: 10, max: 20, sigma: 1}", "does not shape a uniform"),
            ("{dist: uniform, min: 10, max: 5000}", "max 5000"),
            ("{dist: fixed}", "needs `value`"),
        ] {
            let e = plan_len(bad, Some(4096)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
