//! Open-loop arrival schedules: offsets from the phase start, pre-drawn from a seeded generator so that the
//! same seed gives the same schedule, and the figures can compare what was sent with what was asked for.

use crate::record::plan::{Arrival, OpenLoop};

/// SplitMix64: tiny, seedable and good enough for inter-arrival draws (not for anything secret).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1): never 0, so its logarithm is finite.
    fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.open01(), self.open01());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Gamma(shape, 1): Marsaglia and Tsang (2000); shapes below 1 through the boost U^(1/shape).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.open01().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.open01();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// Draws the gaps between arrivals, in seconds.
#[derive(Clone, Debug)]
pub struct Gaps {
    rng: Rng,
    rate: f64,
    arrival: Arrival,
    shape: f64,
}

impl Gaps {
    pub fn new(o: &OpenLoop, seed: u64) -> Self {
        Gaps { rng: Rng::new(seed), rate: o.rate, arrival: o.arrival, shape: o.burstiness.unwrap_or(1.0) }
    }
    pub fn next_gap(&mut self) -> f64 {
        match self.arrival {
            Arrival::Constant => 1.0 / self.rate,
            Arrival::Poisson => -self.rng.open01().ln() / self.rate,
            // Mean shape × scale = 1/rate; coefficient of variation 1/√shape.
            Arrival::Gamma => self.rng.gamma(self.shape) / (self.shape * self.rate),
        }
    }
}

/// The arrivals of one phase: the measured ones, then tail arrivals drawn on from the same stream.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Every arrival before the duration, and at least `min_requests` (or `requests` for a phase by count).
    pub measured: Vec<f64>,
    next: f64,
    gaps: Gaps,
}

impl Schedule {
    /// The next tail arrival (after every measured one).
    pub fn next_tail(&mut self) -> f64 {
        let t = self.next;
        self.next += self.gaps.next_gap();
        t
    }
}

impl Schedule {
    /// A given schedule (a trace's), up to `duration_s` when set (at least its first arrival); tail arrivals
    /// go on from its last at the open loop's mean rate.
    pub fn given(mut measured: Vec<f64>, o: &OpenLoop, seed: u64, duration_s: Option<f64>) -> Schedule {
        if let Some(d) = duration_s {
            let keep = measured.iter().position(|t| *t >= d).unwrap_or(measured.len()).max(1);
            measured.truncate(keep);
        }
        let mut gaps = Gaps::new(o, seed);
        let next = measured.last().copied().unwrap_or(0.0) + gaps.next_gap();
        Schedule { measured, next, gaps }
    }
}

/// Draws a phase's schedule; the first arrival is at 0.
pub fn schedule(o: &OpenLoop, seed: u64, duration_s: Option<f64>, requests: u32) -> Schedule {
    let mut gaps = Gaps::new(o, seed);
    let at_least = o.min_requests.max(requests) as usize;
    let mut measured = Vec::with_capacity(at_least.max(duration_s.map_or(0, |d| (o.rate * d) as usize + 1)));
    let mut t = 0.0;
    while duration_s.is_some_and(|d| t < d) || measured.len() < at_least {
        measured.push(t);
        t += gaps.next_gap();
    }
    Schedule { measured, next: t, gaps }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rate: f64, arrival: Arrival, burstiness: Option<f64>) -> OpenLoop {
        OpenLoop { rate, arrival, burstiness, min_requests: 0 }
    }

    fn cv(xs: &[f64]) -> f64 {
        let gaps: Vec<f64> = xs.windows(2).map(|w| w[1] - w[0]).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / (gaps.len() - 1) as f64;
        var.sqrt() / m
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_another_seed_another() {
        let o = open(50.0, Arrival::Poisson, None);
        let a = schedule(&o, 7, Some(10.0), 0).measured;
        assert_eq!(a, schedule(&o, 7, Some(10.0), 0).measured);
        assert_ne!(a, schedule(&o, 8, Some(10.0), 0).measured);
        assert!(a.iter().all(|t| *t < 10.0) && a[0] == 0.0);
    }

    #[test]
    fn arrivals_have_the_asked_rate_and_spread() {
        for (arrival, b, want_cv) in
            [(Arrival::Poisson, None, 1.0_f64), (Arrival::Gamma, Some(0.25), 2.0), (Arrival::Gamma, Some(4.0), 0.5)]
        {
            let a = schedule(&open(1000.0, arrival, b), 1, Some(100.0), 0).measured;
            // 100,000 arrivals expected: Poisson noise is 1/√100000 ≈ 0.3%, so 2% is far outside it.
            assert!((a.len() as f64 / 100_000.0 - 1.0).abs() < 0.02 * want_cv.max(1.0), "{arrival:?}: {}", a.len());
            assert!((cv(&a) / want_cv - 1.0).abs() < 0.05, "{arrival:?} {b:?}: cv {}", cv(&a));
        }
        let c = schedule(&open(4.0, Arrival::Constant, None), 1, Some(2.0), 0).measured;
        assert_eq!(c, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]);
    }

    #[test]
    fn a_phase_holds_at_least_its_minimum_and_tail_gaps_continue_the_stream() {
        let o = OpenLoop { min_requests: 400, ..open(10.0, Arrival::Poisson, None) };
        let mut a = schedule(&o, 3, Some(5.0), 0);
        assert_eq!(a.measured.len(), 400, "10/s for 5 s is ~50 arrivals; the SLO minimum extends it");
        let longer = schedule(&OpenLoop { min_requests: 402, ..o.clone() }, 3, Some(5.0), 0).measured;
        assert_eq!([a.next_tail(), a.next_tail()], [longer[400], longer[401]], "the tail continues the same draws");
        let by_count = schedule(&open(10.0, Arrival::Poisson, None), 3, None, 25).measured;
        assert_eq!(by_count.len(), 25);
    }
}
