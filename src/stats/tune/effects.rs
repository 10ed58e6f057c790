//! Each tuned flag's effect, with its interval, around the recommended configuration R (the search's pick
//! where the recommendation is vLLM's defaults). The estimator is a contrast of two measured configurations
//! that differ in that flag alone: R against R with the flag at its default, or, where R keeps the default,
//! R against R with the flag at each other value measured. Its relative effect is (moved − base) / base, base
//! the side with the flag at its default; its 95% interval takes each side's mean as `starts` draws of the
//! pooled between-start noise (σ relative): (moved − base) ± t₀.₉₇₅ σ √(moved²/n₁ + base²/n₂), over base, with
//! the base taken as fixed as the gain over the defaults takes it. A flag "does not matter here" only where
//! every contrast's interval lies within ±δ; it matters where one excludes 0; else it is unclear.

use super::flags::{FlagDefault, is_default};
use super::noise::{Noise, t_quantile};
use super::{Row, TuneReport};
use crate::record::plan::TunePlan;
use crate::record::server::LogValue;
use serde::{Deserialize, Serialize};

/// What a flag's contrasts say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The defaults' log does not state the flag's default: no contrast is taken.
    DefaultNotRead,
    /// No measured configuration differs from R in this flag alone: neither a searched one nor, where the
    /// default is no value searched, the defaults' own row (R's other flags off their defaults).
    NotMeasured,
    /// An interval excludes 0.
    Matters,
    /// Every interval lies within ±δ.
    DoesNotMatter,
    /// Neither: an interval is wider than ±δ and holds 0, or there is no noise to give one.
    Unclear,
}

/// One contrast: the flag moved from its default to `to`, the rest as R.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contrast {
    pub to: String,
    /// The row with the flag at its default, and the row with it at `to` (groups).
    pub base: String,
    pub moved: String,
    pub rel: f64,
    pub ci: Option<(f64, f64)>,
    /// The starts behind the base's and the moved side's figures.
    pub starts: (usize, usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagEffect {
    pub flag: String,
    pub default: Option<LogValue>,
    /// Its value in R.
    pub value: String,
    pub contrasts: Vec<Contrast>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    /// δ, relative.
    pub margin: f64,
    /// R: its group and setting.
    pub around: String,
    pub setting: String,
    pub flags: Vec<FlagEffect>,
}

/// A row's figure and starts as `rows::rank` backs it.
fn figure(r: &Row) -> Option<(f64, usize)> {
    let m = r.confirm.as_ref().filter(|c| !c.per_start.is_empty()).or(r.search.as_ref())?;
    (!m.per_start.is_empty() && m.value > 0.0).then_some((m.value, m.per_start.len()))
}

/// The relative contrast and its interval, as the module says.
fn contrast_of(base: (f64, usize), moved: (f64, usize), noise: Option<&Noise>) -> (f64, Option<(f64, f64)>) {
    let rel = (moved.0 - base.0) / base.0;
    let ci = noise.and_then(|n| {
        let se = n.rel_sd * (moved.0.powi(2) / moved.1 as f64 + base.0.powi(2) / base.1 as f64).sqrt();
        let half = t_quantile(0.975, n.df)? * se;
        Some(((moved.0 - base.0 - half) / base.0, (moved.0 - base.0 + half) / base.0))
    });
    (rel, ci)
}

/// The verdict of a flag's contrasts at margin δ.
fn verdict(contrasts: &[Contrast], margin: f64) -> Verdict {
    if contrasts.is_empty() {
        Verdict::NotMeasured
    } else if contrasts.iter().any(|c| c.ci.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0)) {
        Verdict::Matters
    } else if contrasts.iter().all(|c| c.ci.is_some_and(|(lo, hi)| lo > -margin && hi < margin)) {
        Verdict::DoesNotMatter
    } else {
        Verdict::Unclear
    }
}

/// Whether every flag of the configuration (value indices in axis order) but `except` is at its default.
fn at_defaults(tp: &TunePlan, at: &[usize], defaults: &[FlagDefault], except: Option<usize>) -> bool {
    let flags = tp.axes.iter().zip(at).zip(defaults).enumerate();
    flags.filter(|(f, _)| Some(*f) != except).all(|(_, ((a, &i), d))| is_default(d, &a.values[i].to_string()))
}

/// Finds the measured row of a configuration (value indices in axis order): its searched row, or the
/// defaults' where every value is its default; the one of more starts where both are.
fn find<'a>(tp: &TunePlan, rows: &'a [Row], at: &[usize], defaults: &[FlagDefault]) -> Option<&'a Row> {
    let searched = tp.configs.iter().find(|c| c.index == at).and_then(|c| rows.iter().find(|r| r.group == c.group));
    let all_default = at_defaults(tp, at, defaults, None);
    let defaults_row = rows.iter().find(|r| r.defaults).filter(|_| all_default);
    let starts = |r: Option<&Row>| r.and_then(figure).map_or(0, |f| f.1);
    match (searched.filter(|r| figure(r).is_some()), defaults_row.filter(|r| figure(r).is_some())) {
        (Some(s), Some(d)) => Some(if starts(Some(d)) > starts(Some(s)) { d } else { s }),
        (s, d) => s.or(d),
    }
}

/// A flag whose default lies outside the space (a space fixed to a pick, say) still moves alone from its
/// default where every other flag of R is at its own: R against the defaults' row.
fn outside_space(
    tp: &TunePlan,
    rows: &[Row],
    (r, rf): (&Row, (f64, usize)),
    at: &[usize],
    f: usize,
    defaults: &[FlagDefault],
    noise: Option<&Noise>,
) -> Option<Contrast> {
    let base = rows.iter().find(|x| x.defaults).filter(|_| at_defaults(tp, at, defaults, Some(f)))?;
    let bf = figure(base)?;
    let (rel, ci) = contrast_of(bf, rf, noise);
    let to = tp.axes[f].values[at[f]].to_string();
    Some(Contrast { to, base: base.group.clone(), moved: r.group.clone(), rel, ci, starts: (bf.1, rf.1) })
}

impl Effects {
    /// Every tuned flag's effect around the row `around` (a searched configuration).
    pub fn of(
        tp: &TunePlan,
        rows: &[Row],
        around: &str,
        defaults: &[FlagDefault],
        noise: Option<&Noise>,
        margin: f64,
    ) -> Option<Effects> {
        let r = rows.iter().find(|x| x.group == around)?;
        let at = &tp.configs.iter().find(|c| c.group == around)?.index;
        let rf = figure(r)?;
        let mut flags = Vec::new();
        for (f, (axis, d)) in tp.axes.iter().zip(defaults).enumerate() {
            let value = axis.values[at[f]].to_string();
            let mut contrasts = Vec::new();
            let def = d.value.as_ref().and_then(|v| axis.values.iter().position(|x| v.same_as(&x.to_string())));
            let others: Vec<usize> = match def {
                Some(di) if di != at[f] => vec![di],
                Some(_) => (0..axis.values.len()).filter(|&j| j != at[f]).collect(),
                None => Vec::new(),
            };
            for j in others {
                let mut there = at.clone();
                there[f] = j;
                let Some(o) = find(tp, rows, &there, defaults) else { continue };
                let Some(of) = figure(o) else { continue };
                let moved_is_r = def != Some(at[f]);
                let ((base, bf), (moved, mf)) = if moved_is_r { ((o, of), (r, rf)) } else { ((r, rf), (o, of)) };
                let (rel, ci) = contrast_of(bf, mf, noise);
                let to = axis.values[if moved_is_r { at[f] } else { j }].to_string();
                contrasts.push(Contrast {
                    to,
                    base: base.group.clone(),
                    moved: moved.group.clone(),
                    rel,
                    ci,
                    starts: (bf.1, mf.1),
                });
            }
            if def.is_none()
                && d.value.is_some()
                && let Some(c) = outside_space(tp, rows, (r, rf), at, f, defaults, noise)
            {
                contrasts.push(c);
            }
            let verdict = if d.value.is_none() { Verdict::DefaultNotRead } else { verdict(&contrasts, margin) };
            flags.push(FlagEffect { flag: axis.flag.clone(), default: d.value.clone(), value, contrasts, verdict });
        }
        Some(Effects { margin, around: around.to_owned(), setting: r.setting.clone(), flags })
    }

    /// Checks every contrast from the report's rows by their settings as written: the two rows differ in
    /// that flag alone (the defaults' row standing for every default recorded), the base has the flag at
    /// its default, the figures and the interval come out again, and each verdict is what its intervals
    /// and δ give.
    pub fn holds(&self, t: &TuneReport) -> Vec<String> {
        let mut bad = Vec::new();
        let settings = |r: &Row| -> Vec<(String, String)> {
            if r.defaults {
                let d = t.flag_defaults.iter();
                return d.filter_map(|d| Some((d.flag.clone(), d.value.as_ref()?.to_string()))).collect();
            }
            r.setting.split(' ').filter_map(|kv| kv.split_once('=')).map(|(a, b)| (a.into(), b.into())).collect()
        };
        for fe in &self.flags {
            for c in &fe.contrasts {
                let (Some(b), Some(m)) =
                    (t.rows.iter().find(|r| r.group == c.base), t.rows.iter().find(|r| r.group == c.moved))
                else {
                    bad.push(format!("effects: {} has no rows {} and {}", fe.flag, c.base, c.moved));
                    continue;
                };
                let (sb, sm) = (settings(b), settings(m));
                let differ: Vec<&String> = sb.iter().filter(|x| !sm.contains(x)).map(|x| &x.0).collect();
                let base_default =
                    sb.iter().any(|(f, v)| f == &fe.flag && fe.default.as_ref().is_some_and(|d| d.same_as(v)));
                if differ != [&fe.flag] || sb.len() != sm.len() || !base_default {
                    bad.push(format!(
                        "effects: {} against {} is no move of {} alone from its default",
                        m.setting, b.setting, fe.flag
                    ));
                }
                let again = figure(b).zip(figure(m)).map(|(bf, mf)| plain(bf, mf, t.noise.as_ref()));
                if !again.is_some_and(|(rel, ci)| {
                    close(rel, c.rel)
                        && ci.is_some() == c.ci.is_some()
                        && ci.zip(c.ci).is_none_or(|(a, b)| close(a.0, b.0) && close(a.1, b.1))
                }) {
                    bad.push(format!("effects: {} moves by {} {:?}, the rows give {again:?}", fe.flag, c.rel, c.ci));
                }
            }
            let want = if fe.default.is_none() { Verdict::DefaultNotRead } else { verdict(&fe.contrasts, self.margin) };
            if fe.verdict != want {
                bad.push(format!("effects: {} is {:?} where its intervals give {want:?}", fe.flag, fe.verdict));
            }
        }
        bad
    }
}

/// `contrast_of` written out with statrs' t directly.
fn plain(base: (f64, usize), moved: (f64, usize), noise: Option<&Noise>) -> (f64, Option<(f64, f64)>) {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let d = moved.0 - base.0;
    let ci = noise.and_then(|n| {
        let t = StudentsT::new(0.0, 1.0, n.df as f64).ok()?.inverse_cdf(0.975);
        let var = n.rel_sd.powi(2) * (moved.0 * moved.0 / moved.1 as f64 + base.0 * base.0 / base.1 as f64);
        Some(((d - t * var.sqrt()) / base.0, (d + t * var.sqrt()) / base.0))
    });
    (d / base.0, ci)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
