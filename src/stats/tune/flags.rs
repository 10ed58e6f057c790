//! Fewest flags changed, and each tuned flag's effect. vLLM's defaults are the ones the defaults' own
//! server resolved, as its startup log states them (`record::server::EngineArgs`), never a table here; a
//! flag whose default the log does not state is "not read", and counts as changed.
//!
//! - `Fewest`: among the searched configurations whose 95% interval under the pooled between-start noise
//!   overlaps the confirmation's pick's, the one that changes the fewest flags from those defaults (ties:
//!   the higher lower bound). The defaults themselves are no candidate: the paired confirmation already told
//!   the pick from them, and it only picks a searched configuration where it did.
//! - `Effects`: each flag's effect around the recommended configuration R: the objective at R against the
//!   measured configuration that differs from R in that flag alone, set to its default (or, where R keeps the
//!   default, set to each other value measured), with an interval from the pooled noise. "Does not matter
//!   here" only where every such interval lies within ±δ (`tune.equivalence_margin`).
//!
//! The words are the templates'; `Fewest::holds` and `Effects::holds` check both again from the report's
//! rows by their settings as written.

use super::noise::{Noise, t_quantile};
use super::objective::Measured;
use super::{Row, TuneReport};
use crate::record::plan::TunePlan;
use crate::record::server::{ArgSource, LogValue, ServerRecord};
use serde::{Deserialize, Serialize};

/// A tuned flag's default as vLLM's defaults' server resolved it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagDefault {
    pub flag: String,
    /// None: not read (the log does not state it, or no log facts were recorded).
    pub value: Option<LogValue>,
    pub source: Option<ArgSource>,
}

/// Every tuned flag's default from the defaults' server record (None: that server has no record).
pub fn defaults_of(tp: &TunePlan, server: Option<&ServerRecord>) -> Vec<FlagDefault> {
    let args = server.and_then(|s| s.log.args.as_ref());
    tp.axes
        .iter()
        .map(|a| {
            let read = args.and_then(|x| x.value(&a.flag));
            FlagDefault { flag: a.flag.clone(), value: read.map(|(v, _)| v.clone()), source: read.map(|(_, s)| s) }
        })
        .collect()
}

/// Whether a flag's value `written` is its default (false where the default was not read).
pub(super) fn is_default(d: &FlagDefault, written: &str) -> bool {
    d.value.as_ref().is_some_and(|v| v.same_as(written))
}

/// A configuration the noise cannot tell from the pick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tied {
    pub group: String,
    pub setting: String,
    /// The flags it changes from vLLM's defaults (those not read included).
    pub changed: usize,
    pub value: f64,
    /// Its two-sided 95% interval under the pooled noise, and the starts behind it.
    pub interval: (f64, f64),
    pub starts: usize,
    pub lower: f64,
}

/// Fewest flags changed: which of the configurations tied with the pick is recommended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fewest {
    /// The confirmation's pick (its group).
    pub best: String,
    /// The configuration recommended (its group): the pick itself where no tied one changes fewer flags.
    pub pick: String,
    pub setting: String,
    /// The flags `pick` changes from vLLM's defaults, those whose default was not read included.
    pub changed: Vec<String>,
    /// Every configuration tied with the pick (the pick included), fewest changes first.
    pub tied: Vec<Tied>,
}

/// A row's best-backed figure (the confirmation's where it has starts, else the search's), as `rows::rank`
/// takes it.
fn backed(r: &Row) -> Option<&Measured> {
    r.confirm.as_ref().filter(|c| !c.per_start.is_empty()).or(r.search.as_ref()).filter(|m| !m.per_start.is_empty())
}

/// The two-sided 95% interval of a mean of `starts` starts under the noise.
fn interval(value: f64, starts: usize, noise: &Noise) -> Option<(f64, f64)> {
    let half = t_quantile(0.975, noise.df)? * noise.rel_sd * value / (starts as f64).sqrt();
    Some((value - half, value + half))
}

/// The tuned flags a searched configuration (its flag values in axis order) changes from the defaults.
fn changed(values: &[String], defaults: &[FlagDefault]) -> Vec<String> {
    defaults.iter().zip(values).filter(|(d, v)| !is_default(d, v)).map(|(d, _)| d.flag.clone()).collect()
}

/// A row's flag values in axis order, from the plan.
fn values_of(tp: &TunePlan, group: &str) -> Option<Vec<String>> {
    let c = tp.configs.iter().find(|c| c.group == group)?;
    Some(tp.axes.iter().zip(&c.index).map(|(a, &i)| a.values[i].to_string()).collect())
}

impl Fewest {
    /// Among the searched rows tied with the pick `best` (a group), the one of fewest changes. None without
    /// a noise, or where the pick has no figure.
    pub fn of(tp: &TunePlan, rows: &[Row], best: &str, defaults: &[FlagDefault], noise: &Noise) -> Option<Fewest> {
        let best_row = rows.iter().find(|r| r.group == best)?;
        let bm = backed(best_row)?;
        let bi = interval(bm.value, bm.per_start.len(), noise)?;
        let mut tied: Vec<Tied> = Vec::new();
        for r in rows.iter().filter(|r| r.searched.is_some() && r.status == "ok") {
            let (Some(m), Some(vals)) = (backed(r), values_of(tp, &r.group)) else { continue };
            let Some(i) = interval(m.value, m.per_start.len(), noise).filter(|i| i.1 >= bi.0 && i.0 <= bi.1) else {
                continue;
            };
            tied.push(Tied {
                group: r.group.clone(),
                setting: r.setting.clone(),
                changed: changed(&vals, defaults).len(),
                value: m.value,
                interval: i,
                starts: m.per_start.len(),
                lower: r.lower.as_ref().map_or(f64::NEG_INFINITY, |l| l.value),
            });
        }
        tied.sort_by(|a, b| a.changed.cmp(&b.changed).then(b.lower.total_cmp(&a.lower)));
        let pick = tied.first()?.clone();
        let changed = changed(&values_of(tp, &pick.group)?, defaults);
        Some(Fewest { best: best.to_owned(), pick: pick.group, setting: pick.setting, changed, tied })
    }

    /// Checks the choice from the report's rows by their settings as written: the tied set is every searched
    /// row whose interval (recomputed) overlaps the pick's, each one's changes are counted from its setting
    /// against the defaults recorded, no tied row changes fewer flags (or as few with a higher lower bound),
    /// and the command line recommended is the chosen row's.
    pub fn holds(&self, t: &TuneReport) -> Vec<String> {
        let mut bad = Vec::new();
        let Some(noise) = &t.noise else { return vec!["fewest: a choice without a between-start noise".into()] };
        let ci = |r: &Row| backed(r).and_then(|m| plain_interval(m.value, m.per_start.len(), noise));
        let Some(bi) = t.rows.iter().find(|r| r.group == self.best).and_then(ci) else {
            return vec![format!("fewest: the pick {} has no figure", self.best)];
        };
        let mut want: Vec<&Row> = t
            .rows
            .iter()
            .filter(|r| r.searched.is_some() && r.status == "ok")
            .filter(|r| ci(r).is_some_and(|i| i.1 >= bi.0 && i.0 <= bi.1))
            .collect();
        let count = |r: &Row| written_changes(&r.setting, &t.flag_defaults);
        let key = |r: &Row| (count(r), -r.lower.as_ref().map_or(f64::NEG_INFINITY, |l| l.value));
        want.sort_by(|a, b| key(a).0.cmp(&key(b).0).then(key(a).1.total_cmp(&key(b).1)));
        let mut got: Vec<&str> = self.tied.iter().map(|x| x.group.as_str()).collect();
        let mut expect: Vec<&str> = want.iter().map(|r| r.group.as_str()).collect();
        got.sort();
        expect.sort();
        if got != expect {
            bad.push(format!("fewest: tied {got:?} where the rows give {expect:?}"));
        }
        match want.first() {
            Some(w) if key(w) != want.iter().find(|r| r.group == self.pick).map_or((usize::MAX, 0.0), |r| key(r)) => {
                bad.push(format!("fewest: {} chosen where {} changes fewer flags", self.pick, w.group));
            }
            _ => {}
        }
        if let Some(r) = t.rows.iter().find(|r| r.group == self.pick) {
            if count(r) != self.changed.len() {
                bad.push(format!("fewest: {} changes {} flags, not {:?}", r.setting, count(r), self.changed));
            }
            if t.recommended.as_deref() != Some(r.command.as_str()) {
                bad.push(format!("fewest: recommended {:?}, not {}'s command line", t.recommended, self.pick));
            }
        }
        bad
    }
}

/// The flags a setting as written (`x=1 y=2`) changes from the defaults recorded.
fn written_changes(setting: &str, defaults: &[FlagDefault]) -> usize {
    let pairs: Vec<(&str, &str)> = setting.split(' ').filter_map(|kv| kv.split_once('=')).collect();
    defaults
        .iter()
        .filter(|d| match &d.value {
            Some(v) => pairs.iter().any(|(f, w)| *f == d.flag && !v.same_as(w)),
            None => true,
        })
        .count()
}

/// `interval` written out with statrs' t directly.
fn plain_interval(value: f64, starts: usize, noise: &Noise) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let t = StudentsT::new(0.0, 1.0, noise.df as f64).ok()?.inverse_cdf(0.975);
    let se = noise.rel_sd * value / (starts as f64).sqrt();
    Some((value - t * se, value + t * se))
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
