//! Seeded draws of prompt and output lengths. Each draw is a pure function of (seed, salt, index, which), so
//! a request's lengths do not depend on the order requests are sent in, and a rerun sends the same lengths.

use crate::record::plan::LengthDist;

/// splitmix64: a fast, well-mixed generator; deterministic across platforms.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in (0, 1): never 0, so its logarithm is finite.
fn unit(state: &mut u64) -> f64 {
    ((splitmix(state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller).
fn gaussian(state: &mut u64) -> f64 {
    let (u, v) = (unit(state), unit(state));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Which length of a request a draw is for: prompt and output draws are independent.
#[derive(Clone, Copy)]
pub enum Which {
    Prompt = 1,
    Output = 2,
}

/// The generator state of one draw.
pub fn state(seed: u64, salt: u64, index: u64, which: Which) -> u64 {
    let mut s = seed ^ salt.rotate_left(29) ^ index.wrapping_mul(0x9FB2_1C65_1E98_DF25) ^ (which as u64) << 61;
    splitmix(&mut s);
    s
}

/// One length from `dist`, clipped to its bounds.
pub fn draw(dist: &LengthDist, state: &mut u64) -> u32 {
    let x = match *dist {
        LengthDist::Uniform { min, max } => {
            return min + (splitmix(state) % (u64::from(max - min) + 1)) as u32;
        }
        LengthDist::Normal { mean, sd, .. } => mean + sd * gaussian(state),
        LengthDist::Lognormal { mean, sigma, .. } => (mean.ln() - sigma * sigma / 2.0 + sigma * gaussian(state)).exp(),
    };
    let (min, max) = dist.bounds();
    // `as` saturates (NaN to 0), then the clip applies.
    (x.round() as u32).clamp(min, max)
}

/// A request's (prompt, output) lengths: each fixed or drawn, then the prompt shortened (never below 1) so
/// that both fit `context`.
pub fn lengths(
    fixed: (u32, u32),
    dists: (Option<&LengthDist>, Option<&LengthDist>),
    context: Option<u32>,
    (seed, salt, index): (u64, u64, u64),
) -> (u32, u32) {
    let pick = |fixed: u32, dist: Option<&LengthDist>, which| match dist {
        Some(d) => draw(d, &mut state(seed, salt, index, which)),
        None => fixed,
    };
    let (prompt, output) = (pick(fixed.0, dists.0, Which::Prompt), pick(fixed.1, dists.1, Which::Output));
    match context {
        Some(limit) if prompt.saturating_add(output) > limit => (limit.saturating_sub(output).max(1), output),
        _ => (prompt, output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(d: &LengthDist, n: u64) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n).map(|i| draw(d, &mut state(7, 3, i, Which::Prompt))).collect();
        v.sort_unstable();
        v
    }

    fn mean(v: &[u32]) -> f64 {
        v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn uniform_covers_its_bounds_evenly() {
        let v = sample(&LengthDist::Uniform { min: 10, max: 20 }, 20_000);
        assert_eq!((v[0], v[v.len() - 1]), (10, 20));
        assert!((mean(&v) - 15.0).abs() < 0.1, "{}", mean(&v));
    }

    #[test]
    fn normal_has_its_mean_and_sd_and_is_clipped() {
        let v = sample(&LengthDist::Normal { mean: 500.0, sd: 100.0, min: 1, max: 10_000 }, 20_000);
        let m = mean(&v);
        let sd = (v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((m - 500.0).abs() < 3.0 && (sd - 100.0).abs() < 3.0, "{m} {sd}");
        let clipped = sample(&LengthDist::Normal { mean: 500.0, sd: 100.0, min: 450, max: 520 }, 2_000);
        assert_eq!((clipped[0], clipped[clipped.len() - 1]), (450, 520));
    }

    #[test]
    fn lognormal_mean_is_the_mean_not_the_median() {
        let v = sample(&LengthDist::Lognormal { mean: 256.0, sigma: 0.5, min: 1, max: 1_000_000 }, 40_000);
        assert!((mean(&v) - 256.0).abs() < 3.0, "mean {}", mean(&v));
        // The median is exp(ln 256 − 0.125) = 225.9.
        assert!((f64::from(v[v.len() / 2]) - 225.9).abs() < 3.0, "median {}", v[v.len() / 2]);
    }

    #[test]
    fn draws_are_deterministic_and_independent_of_each_other() {
        let d = LengthDist::Uniform { min: 1, max: 1_000_000 };
        let a = lengths((0, 0), (Some(&d), Some(&d)), None, (1, 2, 3));
        assert_eq!(a, lengths((0, 0), (Some(&d), Some(&d)), None, (1, 2, 3)));
        assert_ne!(a.0, a.1, "prompt and output draws differ");
        assert_ne!(a, lengths((0, 0), (Some(&d), Some(&d)), None, (1, 2, 4)));
        assert_eq!(lengths((128, 64), (None, None), None, (1, 2, 3)), (128, 64));
    }

    #[test]
    fn the_prompt_gives_way_to_the_context() {
        let d = LengthDist::Uniform { min: 900, max: 1000 };
        for i in 0..100 {
            let (p, o) = lengths((0, 200), (Some(&d), None), Some(1024), (1, 2, i));
            assert!(p + o <= 1024 && o == 200 && p >= 824, "{p} {o}");
        }
        assert_eq!(lengths((10, 5000), (None, None), Some(1024), (0, 0, 0)), (1, 5000));
    }
}
