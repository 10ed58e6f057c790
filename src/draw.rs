//! Seeded draws that are the same on every machine: splitmix64 and the uniform and normal draws built on it.
//! The in-process fake engine (`run::fake`) draws its between-start noise here, and the tests that plant
//! surfaces for it, or for the tune's search, draw with the same functions rather than copies of them.

/// splitmix64: advances `state` and returns the next value.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from the top 53 bits of the next value.
pub fn unit(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller), its first uniform kept off 0 so that its logarithm is finite.
pub fn normal(state: &mut u64) -> f64 {
    let (u, v) = (unit(state).max(1e-12), unit(state));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draws_are_splitmix64_and_land_in_their_ranges() {
        // splitmix64's first output from state 0 (Vigna's reference implementation).
        assert_eq!(splitmix(&mut 0), 0xE220_A839_7B1D_CDAF);
        let mut s = 7;
        let draws: Vec<f64> = (0..10_000).map(|_| unit(&mut s)).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let normals: Vec<f64> = (0..10_000).map(|_| normal(&mut s)).collect();
        let mean = normals.iter().sum::<f64>() / 1e4;
        let var = normals.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / 1e4;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean}, variance {var}");
    }
}
