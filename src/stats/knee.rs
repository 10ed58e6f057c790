//! The knee of a concurrency sweep as typed findings. Each claim a report can make about a server's curve is
//! one variant, built only by the functions here and only where its predicate over the cells' figures holds;
//! `Knee::holds` checks the predicates again from the cells (property tests and `servelab report --check`).
//! The words are the templates' (`templates/findings.md`): nothing here writes English.

use super::summary::{ci95, mean};
use super::sweep::{Cell, RepeatStats};
use crate::spec::KneeRules;
use serde::{Deserialize, Serialize};

/// A 95% interval (low, high); None with one repeat.
pub type Ci = Option<(f64, f64)>;

/// Where a value with an interval stands against a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Below,
    Above,
    Straddles,
}

/// `value` alone when there is no interval (one repeat).
pub fn side(value: f64, ci: Ci, threshold: f64) -> Side {
    let (lo, hi) = ci.unwrap_or((value, value));
    if hi < threshold {
        Side::Below
    } else if lo > threshold {
        Side::Above
    } else if lo == hi {
        if value < threshold { Side::Below } else { Side::Above }
    } else {
        Side::Straddles
    }
}

/// One step of the curve: tokens/s gained going from `after` to `to`, paired by round, in percent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub after: u32,
    pub to: u32,
    pub gain_pct: f64,
    pub ci_pct: Ci,
    pub min_gain_pct: f64,
}

/// Where throughput stops scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Throughput {
    /// The first step below the minimum gain with its whole interval; every step before it was above.
    Knee(Step),
    /// The first step not clearly above the minimum straddles it: a rerun may decide either way.
    Borderline(Step),
    /// Every step gained more than the minimum.
    NoKnee { from: u32, to: u32, min_gain_pct: f64 },
    /// Cells at one concurrency differ in another load setting: they are not one curve.
    NotACurve,
}

/// p95 e2e at a level against that at concurrency 1 (paired by round).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inflation {
    pub at: u32,
    pub ratio: f64,
    pub ci: Ci,
    pub max: f64,
}

/// How many of a level's repeats saw requests waiting in the server's queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub at: u32,
    pub waiting_max: f64,
    pub repeats_waiting: usize,
    pub repeats: usize,
}

/// Where latency blows up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latency {
    /// p95 inflation above the maximum with its whole interval.
    BlowUp(Inflation),
    /// Every repeat of the level had requests waiting (when the rules count waiting).
    Queued(Queue),
    /// The inflation's interval straddles the maximum.
    Borderline(Inflation),
    /// Some repeats of the level had requests waiting and some none.
    BorderlineQueued(Queue),
    NoBlowUp {
        from: u32,
        to: u32,
        max: f64,
    },
    NotACurve,
}

/// A level's p95 e2e, in ms, with its interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub concurrency: u32,
    pub p95_ms: f64,
    pub ci_ms: Ci,
}

/// The first level whose p95 is not within the budget: over it, or straddling it (`borderline`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Miss {
    pub level: Level,
    pub borderline: bool,
}

/// The operating point against a latency budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operating {
    /// Every level up to `at` keeps its p95 (interval's top) within the budget; `next` is the first that does
    /// not, None when the limit lies beyond the tested range.
    Point { at: Level, budget_ms: f64, next: Option<Miss> },
    /// Already the first level with figures misses the budget.
    NoPoint { first: Miss, budget_ms: f64 },
    /// No level has latency figures.
    NoFigures,
}

/// The thresholds the findings were decided by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub min_gain_pct: f64,
    pub inflation_max: f64,
    pub waiting_counts: bool,
    pub budget_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// The last level that still scaled, when a later one stopped scaling.
    pub throughput_knee: Option<u32>,
    /// The first level where latency blew up.
    pub latency_knee: Option<u32>,
    /// The highest level such that every level up to it keeps the upper bound of its p95 e2e within the
    /// budget (None without a budget, or when even the first level misses it).
    pub operating_point: Option<u32>,
    /// Levels whose interval straddles a threshold: a finding there could go either way on a rerun.
    pub borderline: Vec<u32>,
    pub throughput: Throughput,
    pub latency: Latency,
    /// None without a latency budget.
    pub operating: Option<Operating>,
    pub rule: Rule,
}

impl Rule {
    pub fn of(r: &KneeRules) -> Rule {
        Rule {
            min_gain_pct: r.marginal_gain_min * 100.0,
            inflation_max: r.p95_inflation_max,
            waiting_counts: r.waiting_counts,
            budget_ms: r.p95_budget.map(|b| b.0.as_secs_f64() * 1e3),
        }
    }
}

impl Knee {
    /// Cells at one concurrency that differ in another load setting: no knee is claimed.
    pub fn not_a_curve(rules: &KneeRules) -> Knee {
        Knee {
            throughput_knee: None,
            latency_knee: None,
            operating_point: None,
            borderline: Vec::new(),
            throughput: Throughput::NotACurve,
            latency: Latency::NotACurve,
            operating: None,
            rule: Rule::of(rules),
        }
    }
}

/// Ratios of the same round (repeat index) of two cells: levels of one round ran back to back, so pairing
/// them cancels part of the host's slow drift.
pub fn paired_ratios(a: &Cell, b: &Cell, f: fn(&RepeatStats) -> Option<f64>) -> Vec<f64> {
    b.repeats
        .iter()
        .filter_map(|rb| {
            let ra = a.repeats.iter().find(|r| r.repeat == rb.repeat)?;
            let (x, y) = (f(ra)?, f(rb)?);
            (x > 0.0).then(|| y / x)
        })
        .collect()
}

/// The knee over one server's levels, sorted by concurrency. "No knee within the tested range" is a finding.
pub fn knee(cells: &[Cell], rules: &KneeRules) -> Knee {
    let range = (cells.first().map_or(0, |c| c.concurrency), cells.last().map_or(0, |c| c.concurrency));
    let mut borderline = Vec::new();
    let throughput = throughput(cells, rules, range);
    if let Throughput::Borderline(s) = &throughput {
        borderline.push(s.to);
    }
    let latency = latency(cells, rules, range);
    match &latency {
        Latency::Borderline(i) => borderline.push(i.at),
        Latency::BorderlineQueued(q) => borderline.push(q.at),
        _ => {}
    }
    let operating = rules.p95_budget.map(|b| operating(cells, b.0.as_secs_f64() * 1e3));
    if let Some(Operating::Point { next: Some(m), .. } | Operating::NoPoint { first: m, .. }) = &operating
        && m.borderline
    {
        borderline.push(m.level.concurrency);
    }
    borderline.sort_unstable();
    borderline.dedup();
    Knee {
        throughput_knee: match &throughput {
            Throughput::Knee(s) => Some(s.after),
            _ => None,
        },
        latency_knee: match &latency {
            Latency::BlowUp(i) => Some(i.at),
            Latency::Queued(q) => Some(q.at),
            _ => None,
        },
        operating_point: match &operating {
            Some(Operating::Point { at, .. }) => Some(at.concurrency),
            _ => None,
        },
        borderline,
        throughput,
        latency,
        operating,
        rule: Rule::of(rules),
    }
}

/// Each step's paired gain and its interval, as a ratio (1.1 is +10%).
fn steps(cells: &[Cell]) -> impl Iterator<Item = (&Cell, &Cell, f64, Ci)> {
    cells.windows(2).filter_map(|pair| {
        let ratios = paired_ratios(&pair[0], &pair[1], |r| Some(r.tok_s));
        (!ratios.is_empty()).then(|| (&pair[0], &pair[1], mean(&ratios), ci95(&ratios)))
    })
}

/// The first step whose paired gain is below the minimum with its whole interval; a step whose interval
/// straddles it first is borderline.
fn throughput(cells: &[Cell], rules: &KneeRules, (from, to): (u32, u32)) -> Throughput {
    let min_gain_pct = rules.marginal_gain_min * 100.0;
    for (prev, cur, gain, ci) in steps(cells) {
        let step = || Step {
            after: prev.concurrency,
            to: cur.concurrency,
            gain_pct: (gain - 1.0) * 100.0,
            ci_pct: ci.map(|(a, b)| ((a - 1.0) * 100.0, (b - 1.0) * 100.0)),
            min_gain_pct,
        };
        match side(gain, ci, 1.0 + rules.marginal_gain_min) {
            Side::Below => return Throughput::Knee(step()),
            Side::Straddles => return Throughput::Borderline(step()),
            Side::Above => {}
        }
    }
    Throughput::NoKnee { from, to, min_gain_pct }
}

/// p95(c)/p95(1) paired by round, with its interval; the cell's own ratio when no round pairs.
fn inflation(base: Option<&Cell>, c: &Cell) -> (f64, Ci) {
    let ratios = base.map(|b| paired_ratios(b, c, |r| r.e2e.map(|e| e.p95))).unwrap_or_default();
    match (ratios.is_empty(), c.p95_inflation) {
        (false, _) => (mean(&ratios), ci95(&ratios)),
        (true, Some(x)) => (x, None),
        (true, None) => (f64::NAN, None),
    }
}

/// The level's repeats that saw requests waiting: all of them, not only the headline, decide.
fn queue(c: &Cell) -> Queue {
    let waiting: Vec<f64> = c.repeats.iter().filter_map(|r| r.waiting_max).filter(|w| *w > 0.0).collect();
    Queue {
        at: c.concurrency,
        waiting_max: waiting.iter().copied().fold(0.0, f64::max),
        repeats_waiting: waiting.len(),
        repeats: c.repeats.len(),
    }
}

fn latency(cells: &[Cell], rules: &KneeRules, (from, to): (u32, u32)) -> Latency {
    let base = cells.iter().find(|c| c.concurrency == 1);
    for c in cells {
        let (ratio, ci) = inflation(base, c);
        let s = if ratio.is_finite() { side(ratio, ci, rules.p95_inflation_max) } else { Side::Below };
        let q = queue(c);
        let inf = || Inflation { at: c.concurrency, ratio, ci, max: rules.p95_inflation_max };
        let all_wait = rules.waiting_counts && q.repeats_waiting > 0 && q.repeats_waiting == q.repeats;
        let some_wait = rules.waiting_counts && q.repeats_waiting > 0 && q.repeats_waiting < q.repeats;
        if s == Side::Above {
            return Latency::BlowUp(inf());
        }
        if all_wait {
            return Latency::Queued(q);
        }
        if s == Side::Straddles {
            return Latency::Borderline(inf());
        }
        if some_wait {
            return Latency::BorderlineQueued(q);
        }
    }
    Latency::NoBlowUp { from, to, max: rules.p95_inflation_max }
}

fn level(c: &Cell) -> Option<Level> {
    let p95 = c.head().e2e.map(|e| e.p95)?;
    Some(Level { concurrency: c.concurrency, p95_ms: p95 * 1e3, ci_ms: c.p95_ci.map(|(a, b)| (a * 1e3, b * 1e3)) })
}

fn operating(cells: &[Cell], budget_ms: f64) -> Operating {
    let mut last_ok: Option<Level> = None;
    for l in cells.iter().filter_map(level) {
        match side(l.p95_ms, l.ci_ms, budget_ms) {
            Side::Below => last_ok = Some(l),
            s => {
                let miss = Miss { level: l, borderline: s == Side::Straddles };
                return match last_ok {
                    Some(at) => Operating::Point { at, budget_ms, next: Some(miss) },
                    None => Operating::NoPoint { first: miss, budget_ms },
                };
            }
        }
    }
    match last_ok {
        Some(at) => Operating::Point { at, budget_ms, next: None },
        None => Operating::NoFigures,
    }
}

/// Two figures agree when they differ by rounding alone.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn same_ci(a: Ci, b: Ci) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => same(x.0, y.0) && same(x.1, y.1),
        (None, None) => true,
        _ => false,
    }
}

impl Knee {
    /// Checks every finding against the cells it was drawn from by a second, plainer path: each figure is
    /// recomputed from the repeats, each predicate (below, above, straddles, every repeat queued) is tested on
    /// the recomputed figures, and each "first" is checked to be first. Returns what disagrees.
    pub fn holds(&self, cells: &[Cell], rules: &KneeRules) -> Vec<String> {
        let mut bad = Vec::new();
        if matches!(self.throughput, Throughput::NotACurve) {
            return bad;
        }
        let at = |c: u32| cells.iter().position(|x| x.concurrency == c);
        // Throughput: recompute every step plainly and find the first that is not clearly above.
        let min = 1.0 + rules.marginal_gain_min;
        let mut first_not_above = None;
        for i in 1..cells.len() {
            let r = paired_ratios(&cells[i - 1], &cells[i], |r| Some(r.tok_s));
            if r.is_empty() {
                continue;
            }
            let (g, ci) = (r.iter().sum::<f64>() / r.len() as f64, ci95(&r));
            let (lo, hi) = ci.unwrap_or((g, g));
            if !(lo > min || (lo == hi && g >= min)) {
                first_not_above = Some((i, g, ci, hi < min || (lo == hi && g < min)));
                break;
            }
        }
        match (&self.throughput, first_not_above) {
            (Throughput::Knee(s) | Throughput::Borderline(s), Some((i, g, ci, below))) => {
                let knee = matches!(self.throughput, Throughput::Knee(_));
                if at(s.after) != Some(i - 1) || at(s.to) != Some(i) {
                    bad.push(format!("throughput: the first step not above the minimum is {}→{}", s.after, s.to));
                }
                if !same(s.gain_pct, (g - 1.0) * 100.0)
                    || !same_ci(s.ci_pct, ci.map(|(a, b)| ((a - 1.0) * 100.0, (b - 1.0) * 100.0)))
                {
                    bad.push(format!("throughput: the gain {}→{} is not {:.3}%", s.after, s.to, s.gain_pct));
                }
                if knee != below {
                    bad.push(format!(
                        "throughput: {}→{} is {} the minimum",
                        s.after,
                        s.to,
                        if below { "below" } else { "straddling" }
                    ));
                }
            }
            (Throughput::NoKnee { .. }, None) => {}
            (t, f) => bad.push(format!("throughput: {t:?} where the first step not above is {f:?}")),
        }
        bad.extend(self.latency_holds(cells, rules));
        bad.extend(self.operating_holds(cells, rules));
        let knee_of = match &self.throughput {
            Throughput::Knee(s) => Some(s.after),
            _ => None,
        };
        let blow_up_at = match &self.latency {
            Latency::BlowUp(i) => Some(i.at),
            Latency::Queued(q) => Some(q.at),
            _ => None,
        };
        if self.throughput_knee != knee_of || self.latency_knee != blow_up_at {
            bad.push("throughput_knee or latency_knee does not follow from its finding".to_owned());
        }
        bad
    }

    /// The operating point from each level's p95 upper bound against the budget, plainly.
    fn operating_holds(&self, cells: &[Cell], rules: &KneeRules) -> Vec<String> {
        let Some(budget) = rules.p95_budget.map(|b| b.0.as_secs_f64()) else {
            return match self.operating {
                None => Vec::new(),
                Some(_) => vec!["an operating point without a budget".to_owned()],
            };
        };
        let with: Vec<&Cell> = cells.iter().filter(|c| c.head().e2e.is_some()).collect();
        let within = with.iter().take_while(|c| c.p95_upper().is_some_and(|u| u < budget)).count();
        let expected = within.checked_sub(1).map(|i| with[i].concurrency);
        let mut bad = Vec::new();
        if self.operating_point != expected {
            bad.push(format!(
                "operating point {:?}, but the levels within the budget end at {expected:?}",
                self.operating_point
            ));
        }
        let next = with.get(within).map(|c| c.concurrency);
        let found_next = match &self.operating {
            Some(Operating::Point { next, .. }) => next.as_ref().map(|m| m.level.concurrency),
            Some(Operating::NoPoint { first, .. }) => Some(first.level.concurrency),
            _ => None,
        };
        if found_next != next {
            bad.push(format!("the first level over the budget is {next:?}, not {found_next:?}"));
        }
        bad
    }

    fn latency_holds(&self, cells: &[Cell], rules: &KneeRules) -> Vec<String> {
        let mut bad = Vec::new();
        let base = cells.iter().find(|c| c.concurrency == 1);
        let mut first = None;
        for c in cells {
            let r = base.map(|b| paired_ratios(b, c, |r| r.e2e.map(|e| e.p95))).unwrap_or_default();
            let (x, ci) = match (r.is_empty(), c.p95_inflation) {
                (false, _) => (r.iter().sum::<f64>() / r.len() as f64, ci95(&r)),
                (true, Some(x)) => (x, None),
                (true, None) => (f64::NAN, None),
            };
            let (lo, hi) = ci.unwrap_or((x, x));
            let above = x.is_finite() && (lo > rules.p95_inflation_max || (lo == hi && x >= rules.p95_inflation_max));
            let straddles = x.is_finite() && !above && hi >= rules.p95_inflation_max && lo != hi;
            let waited = c.repeats.iter().filter(|r| r.waiting_max.is_some_and(|w| w > 0.0)).count();
            let waits = rules.waiting_counts && waited > 0;
            if above || straddles || waits {
                first = Some((c.concurrency, x, ci, above, straddles, waited, c.repeats.len()));
                break;
            }
        }
        match (&self.latency, first) {
            (Latency::BlowUp(i) | Latency::Borderline(i), Some((c, x, ci, above, straddles, waited, n))) => {
                let blow = matches!(self.latency, Latency::BlowUp(_));
                let all = rules.waiting_counts && waited == n && n > 0;
                if i.at != c || !same(i.ratio, x) || !same_ci(i.ci, ci) {
                    bad.push(format!("latency: the inflation at {} is not {:.3}", i.at, i.ratio));
                }
                if (blow && !above) || (!blow && (!straddles || all)) {
                    bad.push(format!("latency: the predicate of {:?} does not hold at {c}", self.latency));
                }
            }
            (Latency::Queued(q) | Latency::BorderlineQueued(q), Some((c, _, _, above, straddles, waited, n))) => {
                let all = matches!(self.latency, Latency::Queued(_));
                if q.at != c || q.repeats_waiting != waited || q.repeats != n || above || (!all && straddles) {
                    bad.push(format!("latency: {} of {} repeats waited at {c}, not {:?}", waited, n, q));
                }
                if all != (waited == n) {
                    bad.push(format!("latency: queued in {waited} of {n} repeats at {c} is not {:?}", self.latency));
                }
            }
            (Latency::NoBlowUp { .. }, None) => {}
            (l, f) => bad.push(format!("latency: {l:?} where the first level over is {f:?}")),
        }
        bad
    }
}

/// Tokens/s from the first level to the last: S(c) and S(c)/c.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    pub from: u32,
    pub to: u32,
    pub speedup: f64,
    pub efficiency: f64,
    pub tok_s_from: f64,
    pub tok_s_to: f64,
}

/// (tok₂/tok₁)/(c₂/c₁) against the previous level, paired by round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepEfficiency {
    pub from: u32,
    pub to: u32,
    pub efficiency: f64,
    pub ci: Ci,
}

/// GPU utilisation at a level over the steady-state window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuAt {
    pub concurrency: u32,
    pub util_pct: f64,
    pub readings: usize,
}

/// Rules of thumb: computed facts, each with its numbers (the template words them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thumbs {
    pub growth: Option<Growth>,
    pub steps: Vec<StepEfficiency>,
    /// Between-repeat CV of tokens/s: (median, max).
    pub noise_floor: Option<(f64, f64)>,
    /// At the operating point, or the last level.
    pub gpu: Option<GpuAt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_reads_the_whole_interval() {
        assert_eq!(side(1.0, Some((0.8, 0.9)), 1.0), Side::Below);
        assert_eq!(side(1.0, Some((1.1, 1.2)), 1.0), Side::Above);
        assert_eq!(side(1.0, Some((0.9, 1.1)), 1.0), Side::Straddles);
        assert_eq!(side(0.5, None, 1.0), Side::Below);
        assert_eq!(side(1.0, None, 1.0), Side::Above);
    }
}
