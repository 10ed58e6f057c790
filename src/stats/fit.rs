//! Least-squares line fit (statrs has no regression).

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination; 1 for a perfect line, NaN-free (0 when y does not vary and the fit is flat).
    pub r2: f64,
}

/// Fits y = slope·x + intercept. None for fewer than two distinct x.
pub fn linear(xs: &[f64], ys: &[f64]) -> Option<Fit> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let ss_res: f64 = xs.iter().zip(ys).map(|(x, y)| (y - slope * x - intercept).powi(2)).sum();
    let r2 = if ss_tot == 0.0 { if ss_res == 0.0 { 1.0 } else { 0.0 } } else { 1.0 - ss_res / ss_tot };
    Some(Fit { slope, intercept, r2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_line_and_reports_r2() {
        let f = linear(&[1.0, 2.0, 3.0], &[3.0, 5.0, 7.0]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 1.0).abs() < 1e-12 && (f.r2 - 1.0).abs() < 1e-12);
        let noisy = linear(&[0.0, 1.0, 2.0, 3.0], &[0.0, 1.0, 1.0, 3.0]).unwrap();
        assert!((noisy.slope - 0.9).abs() < 1e-12);
        assert!(noisy.r2 > 0.8 && noisy.r2 < 1.0);
        assert_eq!(linear(&[1.0, 1.0], &[2.0, 3.0]), None);
        assert_eq!(linear(&[1.0], &[2.0]), None);
        assert_eq!(linear(&[1.0, 2.0], &[5.0, 5.0]).unwrap().r2, 1.0);
    }
}
