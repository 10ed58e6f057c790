//! Between-start noise: what another start of the same configuration serves. Repeats on one running server
//! agree more closely than two starts of one configuration do, so the unit of every comparison here is a
//! server start. The noise is pooled across configurations (every start a sample, relative to its
//! configuration's mean, so configurations of different sizes pool); the gain over vLLM's defaults is a paired
//! test on per-start differences in ABBA order; and the starts needed to show a gain follow from both.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The between-start noise pooled across configurations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// The pooled standard deviation of one start's objective relative to its configuration's mean.
    pub rel_sd: f64,
    /// Degrees of freedom: Σ (starts − 1) over the configurations pooled.
    pub df: usize,
    /// The starts it rests on (of configurations with two or more starts at one level).
    pub starts: usize,
    pub configs: usize,
}

/// The pooled relative between-start noise of configurations each given by its per-start values (one value
/// per server start, repeats on that server averaged first). None without a configuration of two starts.
pub fn pooled(configs: &[Vec<f64>]) -> Option<Noise> {
    let (mut ss, mut df, mut starts, mut n) = (0.0, 0usize, 0usize, 0usize);
    for x in configs.iter().filter(|x| x.len() >= 2) {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        if m <= 0.0 {
            continue;
        }
        ss += x.iter().map(|v| (v / m - 1.0).powi(2)).sum::<f64>();
        df += x.len() - 1;
        starts += x.len();
        n += 1;
    }
    (df > 0).then(|| Noise { rel_sd: (ss / df as f64).sqrt(), df, starts, configs: n })
}

/// Student's t quantile at `p` with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: usize) -> Option<f64> {
    StudentsT::new(0.0, 1.0, df as f64).ok().map(|t| t.inverse_cdf(p))
}

/// A value's one-sided 95% lower confidence bound given the noise and the starts that back it.
pub fn lower_bound(value: f64, starts: usize, noise: &Noise) -> Option<f64> {
    let t = t_quantile(0.95, noise.df)?;
    (starts > 0).then(|| value * (1.0 - t * noise.rel_sd / (starts as f64).sqrt()))
}

/// The 95% interval of the mean of paired differences (Student's t over the pairs), or None with fewer than
/// two pairs.
pub fn paired95(diffs: &[f64]) -> Option<(f64, f64)> {
    let n = diffs.len();
    if n < 2 {
        return None;
    }
    let m = diffs.iter().sum::<f64>() / n as f64;
    let sd = (diffs.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t_quantile(0.975, n - 1)? * sd / (n as f64).sqrt();
    Some((m - half, m + half))
}

/// Starts of each side beyond which no confirmation is planned (a gain this small is not worth showing).
pub const MAX_NEEDED: u32 = 1000;

/// The starts of each side a paired test at 95% needs to show a relative gain `rel` with 80% power, given
/// the relative between-start noise: the differences of a pair vary by √2 × the noise. None for no gain.
pub fn starts_needed(rel: f64, noise: &Noise) -> Option<u32> {
    if rel <= 0.0 || !rel.is_finite() {
        return None;
    }
    let (a, b) = (t_quantile(0.975, noise.df)?, t_quantile(0.80, noise.df)?);
    let n = (2.0 * ((a + b) * noise.rel_sd / rel).powi(2)).ceil();
    Some(if n.is_finite() { (n as u32).clamp(2, MAX_NEEDED) } else { MAX_NEEDED })
}

/// What the confirmation needs, worked out after its first pair (the pick and the defaults one start each,
/// beside the search's starts): the gain seen then, the noise pooled then, and the starts that would show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// The pick against the defaults on the first pair, relative.
    pub rel: f64,
    pub noise: Noise,
    /// Starts of each side that would show `rel` (None: no gain to show).
    pub needed: Option<u32>,
    pub confirm_starts: u32,
}

impl Planned {
    pub fn of(rel: f64, noise: Noise, confirm_starts: u32) -> Planned {
        Planned { needed: starts_needed(rel, &noise), rel, noise, confirm_starts }
    }

    /// Whether `confirm_starts` suffice.
    pub fn enough(&self) -> bool {
        self.needed.is_some_and(|n| n <= self.confirm_starts)
    }

    /// Checks the figure by a plainer path: the normal approximation's starts are a lower bound of the t
    /// ones, and the t formula applied once more gives the same count.
    pub fn holds(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let again = starts_needed(self.rel, &self.noise);
        if again != self.needed {
            bad.push(format!("planned: {:?} starts where the figures give {again:?}", self.needed));
        }
        if let Some(n) = self.needed {
            let z = 2.0 * ((1.959_964 + 0.841_621) * self.noise.rel_sd / self.rel).powi(2);
            if f64::from(n) + 1e-9 < z.ceil().min(f64::from(MAX_NEEDED)) {
                bad.push(format!("planned: {n} starts, fewer than the normal approximation's {z:.1}"));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_noise_is_the_relative_within_configuration_variance() {
        // Two configurations of means 100 and 1000, each ±10%: relative sd 0.1·√2 per pair's deviation.
        let n = pooled(&[vec![90.0, 110.0], vec![900.0, 1100.0], vec![500.0]]).unwrap();
        assert_eq!((n.df, n.starts, n.configs), (2, 4, 2));
        assert!((n.rel_sd - (0.02f64).sqrt()).abs() < 1e-12, "{}", n.rel_sd);
        assert!(pooled(&[vec![1.0], vec![2.0]]).is_none());
    }

    #[test]
    fn paired_interval_matches_scipy() {
        // scipy: stats.ttest_rel(a, b).confidence_interval(0.95) for differences [2, 4, 5, 3]: (1.446, 5.554)
        let (lo, hi) = paired95(&[2.0, 4.0, 5.0, 3.0]).unwrap();
        assert!((lo - 1.445_739_2).abs() < 1e-6 && (hi - 5.554_260_8).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(paired95(&[1.0]), None);
    }

    #[test]
    fn more_noise_or_a_smaller_gain_needs_more_starts() {
        let noise = |rel_sd, df| Noise { rel_sd, df, starts: df + 1, configs: 1 };
        let a = starts_needed(0.10, &noise(0.05, 10)).unwrap();
        assert!(starts_needed(0.05, &noise(0.05, 10)).unwrap() > a);
        assert!(starts_needed(0.10, &noise(0.10, 10)).unwrap() > a);
        assert!(starts_needed(0.10, &noise(0.05, 2)).unwrap() > a, "a noise known from fewer starts");
        assert_eq!(starts_needed(-0.1, &noise(0.05, 10)), None);
        let p = Planned::of(0.1, noise(0.05, 10), a);
        assert!(p.enough() && p.holds().is_empty());
        let mut q = p.clone();
        q.needed = Some(2);
        assert!(!Planned::of(0.1, noise(0.05, 10), a - 1).enough());
        assert!(!q.holds().is_empty() || a == 2);
    }
}
