//! Screening: a searched configuration is measured first with a short phase; only a finalist gets the full
//! phase, on the same server start. A start is the expensive part, and a full phase on the start that
//! screened a configuration carries that start's offset just as the short phase did, so what the full phase
//! adds is only the short phase's own noise. That noise is measured, not assumed: every configuration measured
//! both ways is a pair (short, full) on one start, and the ratio short/full over the pairs says how far a
//! short phase strays from the full one on the same server. The rule keeps a configuration unless its short
//! phase says its full one would beat the best measured in full with a chance under 2.5%. Short phases never
//! enter the between-start noise (`noise`), which is estimated from full phases alone.

use super::noise::t_quantile;
use serde::{Deserialize, Serialize};

/// Pairs below which every screened configuration is a finalist (the short phase's noise is not known yet).
pub const MIN_PAIRS: usize = 3;
/// The one-sided chance below which a configuration's full phase is not worth measuring.
const P_MISS: f64 = 0.025;

/// How a short phase relates to the full phase on the same start, from the pairs measured both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScreenNoise {
    /// Mean of short / full over the pairs (a short phase's bias, e.g. a ramp-up that weighs more on it).
    pub ratio: f64,
    /// Standard deviation of short / full over the pairs.
    pub sd: f64,
    pub pairs: usize,
}

impl ScreenNoise {
    /// From pairs (short, full) of one start each; None with fewer than `MIN_PAIRS` pairs of positive figures.
    pub fn of(pairs: &[(f64, f64)]) -> Option<ScreenNoise> {
        let r: Vec<f64> = pairs.iter().filter(|(s, f)| *f > 0.0 && *s >= 0.0).map(|(s, f)| s / f).collect();
        if r.len() < MIN_PAIRS {
            return None;
        }
        let n = r.len() as f64;
        let ratio = r.iter().sum::<f64>() / n;
        let sd = (r.iter().map(|x| (x - ratio).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        Some(ScreenNoise { ratio, sd, pairs: r.len() })
    }

    /// The lowest short / full ratio a configuration's next start shows with a chance of 2.5% or more: the
    /// lower end of the ratio's one-sided prediction interval (Student's t over the pairs).
    pub fn lowest_ratio(&self) -> Option<f64> {
        let n = self.pairs as f64;
        let t = t_quantile(1.0 - P_MISS, self.pairs - 1)?;
        Some(self.ratio - t * self.sd * (1.0 + 1.0 / n).sqrt())
    }

    /// A short phase's figure on the full phase's scale (what the search's model takes for a configuration
    /// screened out).
    pub fn as_full(&self, short: f64) -> f64 {
        if self.ratio > 0.0 { short / self.ratio } else { short }
    }
}

/// Whether a configuration whose short phase served `short` gets the full phase: yes while nothing was
/// measured in full, or the short phase's noise is not known, or the full phase could beat `best` (the best
/// figure measured in full so far) with a chance of 2.5% or more. A short phase that measured nothing is out.
pub fn finalist(short: Option<f64>, best: Option<f64>, noise: Option<&ScreenNoise>) -> bool {
    let Some(short) = short else { return false };
    let (Some(best), Some(noise)) = (best.filter(|b| *b > 0.0), noise) else { return true };
    match noise.lowest_ratio() {
        Some(low) if low > 0.0 => short >= low * best,
        _ => true,
    }
}

/// What screening did in a tune, for its report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Screening {
    /// The short phase's share of the measured load.
    pub share: f64,
    /// Searched configurations measured by the short phase alone.
    pub screened_only: usize,
    /// Searched configurations measured in full (finalists; every one before the short phase's noise was
    /// known).
    pub full: usize,
    /// The short phase against the full one over every pair at the end of the search.
    pub noise: Option<ScreenNoise>,
}

impl Screening {
    /// Checks the counts and the short phase's noise against the rows written beside them, by a plainer
    /// path: screened out are the rows of status `screened` with a short-phase figure, measured in full the
    /// searched rows with a search figure, and the noise is recomputed from the rows' (short, full) pairs.
    pub fn holds(&self, rows: &[super::Row]) -> Vec<String> {
        let mut bad = Vec::new();
        let out = rows.iter().filter(|r| r.status == "screened" && r.screen.is_some()).count();
        let full = rows.iter().filter(|r| r.searched.is_some() && r.search.is_some()).count();
        if (out, full) != (self.screened_only, self.full) {
            bad.push(format!(
                "screening: {} screened out and {} in full, where the rows give {out} and {full}",
                self.screened_only, self.full
            ));
        }
        let pairs: Vec<(f64, f64)> =
            rows.iter().filter_map(|r| Some((r.screen.as_ref()?.value, r.search.as_ref()?.value))).collect();
        let again = ScreenNoise::of(&pairs);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        let same = match (&again, &self.noise) {
            (Some(a), Some(b)) => a.pairs == b.pairs && close(a.ratio, b.ratio) && close(a.sd, b.sd),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            bad.push(format!("screening: short-phase noise {:?} where the rows give {again:?}", self.noise));
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finalist_is_one_whose_full_phase_could_still_beat_the_best() {
        // Short phases 2% low on average, ±1%: the pairs' ratios 0.97, 0.98, 0.99.
        let pairs = [(97.0, 100.0), (196.0, 200.0), (49.5, 50.0)];
        let n = ScreenNoise::of(&pairs).unwrap();
        assert!((n.ratio - 0.98).abs() < 1e-12 && (n.sd - 0.01).abs() < 1e-12, "{n:?}");
        // t(0.975, 2) = 4.303: the lowest ratio 0.98 − 4.303 × 0.01 × √(4/3) = 0.9303.
        let low = n.lowest_ratio().unwrap();
        assert!((low - 0.930_313).abs() < 1e-5, "{low}");
        let best = Some(100.0);
        assert!(finalist(Some(94.0), best, Some(&n)), "could still reach 100");
        assert!(!finalist(Some(92.0), best, Some(&n)), "92 / 0.93 stays below 100");
        assert!(finalist(Some(120.0), best, Some(&n)));
        // Nothing to beat yet, or the noise unknown: a finalist; nothing measured: out.
        assert!(finalist(Some(1.0), None, Some(&n)));
        assert!(finalist(Some(1.0), best, None));
        assert!(!finalist(None, best, Some(&n)));
        assert!(ScreenNoise::of(&pairs[..2]).is_none(), "{MIN_PAIRS} pairs at least");
        // A noisier short phase keeps more configurations.
        let noisy = ScreenNoise::of(&[(90.0, 100.0), (100.0, 100.0), (110.0, 100.0)]).unwrap();
        assert!(finalist(Some(80.0), best, Some(&noisy)));
        assert!((noisy.as_full(50.0) - 50.0).abs() < 1e-9 && (n.as_full(98.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn screenings_figures_are_checked_against_the_rows() {
        let m = |value: f64| super::super::Measured {
            value,
            ci: None,
            per_repeat: vec![value],
            per_start: vec![value],
            start_index: vec![0],
            level: "c=4".into(),
            p95_e2e_s: None,
            none_within: None,
        };
        let row = |search: Option<f64>, screen: Option<f64>, status: &str| super::super::Row {
            group: "g".into(),
            setting: "x=1".into(),
            defaults: false,
            searched: Some(1),
            search: search.map(m),
            screen: screen.map(m),
            confirm: None,
            status: status.into(),
            note: None,
            command: String::new(),
            lower: None,
        };
        let rows = [
            row(Some(100.0), Some(97.0), "ok"),
            row(Some(200.0), Some(196.0), "ok"),
            row(Some(50.0), Some(49.5), "ok"),
            row(None, Some(10.0), "screened"),
        ];
        let noise = ScreenNoise::of(&[(97.0, 100.0), (196.0, 200.0), (49.5, 50.0)]);
        let s = Screening { share: 0.25, screened_only: 1, full: 3, noise };
        assert!(s.holds(&rows).is_empty(), "{:?}", s.holds(&rows));
        let wrong = Screening { screened_only: 2, ..s.clone() };
        assert!(!wrong.holds(&rows).is_empty());
        let no_noise = Screening { noise: None, ..s };
        assert!(!no_noise.holds(&rows).is_empty());
    }
}
