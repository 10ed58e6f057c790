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
}
