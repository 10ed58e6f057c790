//! Summaries of samples: mean, numpy-linear percentiles, sample standard deviation, and Student-t 95%
//! intervals (statrs) across repeats.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// Sample standard deviation (n − 1); 0 for a single value.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

/// numpy's default ("linear") percentile of sorted data, q in [0, 100].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

pub fn stddev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// None for no data. NaNs are dropped.
pub fn summarize(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(Summary {
        n: v.len(),
        mean: mean(&v),
        p50: percentile_sorted(&v, 50.0),
        p95: percentile_sorted(&v, 95.0),
        p99: percentile_sorted(&v, 99.0),
        stddev: stddev(&v),
        min: v[0],
        max: v[v.len() - 1],
    })
}

/// The Student-t 95% confidence interval of the mean; None with fewer than two values.
pub fn ci95(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, (xs.len() - 1) as f64).ok()?.inverse_cdf(0.975);
    let half = t * stddev(xs) / (xs.len() as f64).sqrt();
    let m = mean(xs);
    Some((m - half, m + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 95, 99]) == [3.0, 8.8, 9.76]
        let s = summarize([4.0, 1.0, 10.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.p50, 3.0);
        assert!((s.p95 - 8.8).abs() < 1e-12);
        assert!((s.p99 - 9.76).abs() < 1e-12);
        assert_eq!(s.mean, 4.0);
        // numpy.std([1,2,3,4,10], ddof=1) == 3.5355339059327378
        assert!((s.stddev - 3.5355339059327378).abs() < 1e-12);
        assert_eq!(summarize([]), None);
    }

    #[test]
    fn t_interval_matches_scipy() {
        // scipy.stats.t.interval(0.95, 2, loc=mean, scale=sem) for [10, 12, 14]: (7.03172, 16.96828)
        let (lo, hi) = ci95(&[10.0, 12.0, 14.0]).unwrap();
        assert!((lo - 7.031724).abs() < 1e-5, "{lo}");
        assert!((hi - 16.968276).abs() < 1e-5, "{hi}");
        assert_eq!(ci95(&[1.0]), None);
    }
}
