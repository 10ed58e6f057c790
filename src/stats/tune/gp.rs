//! The search of `servelab tune`: which server configuration to start next, as a pure
//! function of what was measured, so that a tune resumes and re-renders like a rate search.
//!
//! Model-based: a Gaussian process over the configurations (each axis scaled to [0, 1], by its index in the
//! axis's ordered values, so integer axes on a log grid are evenly spaced), with a squared-exponential kernel and
//! homoscedastic noise, both chosen by marginal likelihood over a small grid; the next configuration is the
//! one of highest expected improvement over the best posterior mean seen. Spaces are small and discrete (a few
//! engine knobs × a handful of values: tens to hundreds of configurations), so an exact GP on at most a few
//! dozen observations is a few hundred lines of arithmetic; a crate such as egobox-ego would bring ndarray
//! and linfa into the build for the same decision (decided in docs/spec.md, "servelab tune SPEC").

/// One axis of the search space: its values in order (choices as given; ranges expanded by the planner).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<f64>,
}

/// A configuration: one index per axis.
pub type Config = Vec<usize>;

/// Every configuration of the space, first axis slowest.
pub fn configs(axes: &[Axis]) -> Vec<Config> {
    crate::record::plan::configs_of(&axes.iter().map(|a| a.values.len()).collect::<Vec<_>>())
}

fn position(axes: &[Axis], c: &Config) -> Vec<f64> {
    axes.iter()
        .zip(c)
        .map(|(a, &i)| if a.values.len() < 2 { 0.0 } else { i as f64 / (a.values.len() - 1) as f64 })
        .collect()
}

/// A measured configuration: its objective (higher is better) or None when it could not serve (failed start).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub config: Config,
    pub value: Option<f64>,
}

/// The posterior of the objective over every configuration, from the observations.
pub struct Posterior {
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
}

fn kernel(a: &[f64], b: &[f64], ell: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (-d2 / (2.0 * ell * ell)).exp()
}

/// Lower-triangular Cholesky factor of a symmetric positive-definite matrix, or None.
fn cholesky(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - s;
                if d <= 0.0 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (m[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves L Lᵀ x = b.
fn solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

/// The GP posterior over `points` given standardised observations at `xs`; the kernel's length and the noise
/// are those of highest marginal likelihood on a small grid.
fn posterior(xs: &[Vec<f64>], ys: &[f64], points: &[Vec<f64>]) -> Posterior {
    let n = xs.len();
    // (log marginal likelihood, length scale, Cholesky factor, K⁻¹y) of the best hyperparameters so far.
    type Fit = (f64, f64, Vec<Vec<f64>>, Vec<f64>);
    let mut best: Option<Fit> = None;
    for ell in [0.1, 0.2, 0.3, 0.5, 0.8, 1.2] {
        for noise in [1e-4, 1e-2, 0.05, 0.1, 0.3] {
            let k: Vec<Vec<f64>> = (0..n)
                .map(|i| (0..n).map(|j| kernel(&xs[i], &xs[j], ell) + if i == j { noise } else { 0.0 }).collect())
                .collect();
            let Some(l) = cholesky(&k) else { continue };
            let alpha = solve(&l, ys);
            let fit: f64 = ys.iter().zip(&alpha).map(|(y, a)| y * a).sum();
            let logdet: f64 = (0..n).map(|i| l[i][i].ln()).sum::<f64>() * 2.0;
            let lml = -0.5 * fit - 0.5 * logdet;
            if best.as_ref().is_none_or(|b| lml > b.0) {
                best = Some((lml, ell, l, alpha));
            }
        }
    }
    let Some((_, ell, l, alpha)) = best else {
        return Posterior { mean: vec![0.0; points.len()], sd: vec![1.0; points.len()] };
    };
    let mut mean = Vec::with_capacity(points.len());
    let mut sd = Vec::with_capacity(points.len());
    for p in points {
        let ks: Vec<f64> = xs.iter().map(|x| kernel(p, x, ell)).collect();
        mean.push(ks.iter().zip(&alpha).map(|(k, a)| k * a).sum());
        let v = solve(&l, &ks);
        sd.push((1.0 - ks.iter().zip(&v).map(|(k, w)| k * w).sum::<f64>()).max(1e-12).sqrt());
    }
    Posterior { mean, sd }
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + statrs::function::erf::erf(z / std::f64::consts::SQRT_2))
}

/// The state of a search: every configuration's posterior (in the objective's units), the next configuration
/// to measure, and the best so far (highest posterior mean among those measured).
pub struct Step {
    pub all: Vec<Config>,
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    pub next: Option<Config>,
    pub best: Option<Config>,
}

/// The next configuration to measure: `start` (e.g. vLLM's defaults, then the corners) until each has been
/// tried, then the unmeasured configuration of highest expected improvement. `allowed` prunes configurations
/// (those the capacity model says cannot start).
pub fn step(axes: &[Axis], observed: &[Observation], start: &[Config], allowed: &dyn Fn(&Config) -> bool) -> Step {
    let all: Vec<Config> = configs(axes).into_iter().filter(|c| allowed(c)).collect();
    let tried = |c: &Config| observed.iter().any(|o| &o.config == c);
    let ok: Vec<&Observation> = observed.iter().filter(|o| o.value.is_some()).collect();
    let points: Vec<Vec<f64>> = all.iter().map(|c| position(axes, c)).collect();
    let (mean, sd) = if ok.is_empty() {
        (vec![0.0; all.len()], vec![1.0; all.len()])
    } else {
        let raw: Vec<f64> = ok.iter().filter_map(|o| o.value).collect();
        let m = raw.iter().sum::<f64>() / raw.len() as f64;
        let s =
            (raw.iter().map(|y| (y - m).powi(2)).sum::<f64>() / raw.len() as f64).sqrt().max(1e-9 * m.abs().max(1.0));
        let ys: Vec<f64> = raw.iter().map(|y| (y - m) / s).collect();
        let xs: Vec<Vec<f64>> = ok.iter().map(|o| position(axes, &o.config)).collect();
        let p = posterior(&xs, &ys, &points);
        (p.mean.iter().map(|x| m + s * x).collect(), p.sd.iter().map(|x| s * x).collect())
    };
    let best = all
        .iter()
        .enumerate()
        .filter(|(_, c)| ok.iter().any(|o| &o.config == *c))
        .max_by(|a, b| mean[a.0].total_cmp(&mean[b.0]))
        .map(|(_, c)| c.clone());
    let next = start.iter().find(|c| allowed(c) && !tried(c)).cloned().or_else(|| {
        let incumbent =
            best.as_ref().and_then(|b| all.iter().position(|c| c == b)).map_or(f64::NEG_INFINITY, |i| mean[i]);
        all.iter()
            .enumerate()
            .filter(|(_, c)| !tried(c))
            .map(|(i, c)| {
                let z = (mean[i] - incumbent) / sd[i].max(1e-12);
                let ei = (mean[i] - incumbent) * normal_cdf(z) + sd[i] * normal_pdf(z);
                (ei, c)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c.clone())
    });
    Step { all, mean, sd, next, best }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::{normal as gauss, splitmix, unit};

    /// A smooth surface over an 8 × 8 grid (e.g. max-num-seqs × max-num-batched-tokens on log grids): a broad
    /// hill at a random place, a smaller second hill, values of order 1,000 tokens/s.
    fn surface(seed: u64) -> impl Fn(&Config) -> f64 {
        let mut s = seed.wrapping_mul(0x9E37) ^ 0xABCD;
        let (a, b, c, d) = (unit(&mut s), unit(&mut s), unit(&mut s), unit(&mut s));
        move |cfg: &Config| {
            let (x, y) = (cfg[0] as f64 / 7.0, cfg[1] as f64 / 7.0);
            let hill = (-((x - a).powi(2) + (y - b).powi(2)) / 0.18).exp();
            let bump = 0.5 * (-((x - c).powi(2) + (y - d).powi(2)) / 0.03).exp();
            1000.0 + 800.0 * hill + 400.0 * bump
        }
    }

    fn axes() -> Vec<Axis> {
        let v: Vec<f64> = (0..8).map(|i| f64::from(1 << i)).collect();
        vec![Axis { name: "a".into(), values: v.clone() }, Axis { name: "b".into(), values: v }]
    }

    const NOISE: f64 = 20.0;
    const BUDGET: usize = 12;

    /// Runs a search of `BUDGET` measurements on the seed's surface with noise; returns the true value of the
    /// configuration it recommends and the true best.
    fn run(seed: u64, model: bool) -> (f64, f64) {
        let f = surface(seed);
        let axes = axes();
        let all = configs(&axes);
        let best = all.iter().map(&f).fold(f64::MIN, f64::max);
        let mut noise = seed ^ 0x5151;
        let mut observed = Vec::new();
        let start = [vec![0, 0], vec![7, 7], vec![0, 7], vec![7, 0]];
        for _ in 0..BUDGET {
            let next = if model {
                step(&axes, &observed, &start, &|_| true).next.unwrap()
            } else {
                loop {
                    let c = all[(splitmix(&mut noise) % all.len() as u64) as usize].clone();
                    if !observed.iter().any(|o: &Observation| o.config == c) {
                        break c;
                    }
                }
            };
            let y = f(&next) + NOISE * gauss(&mut noise);
            observed.push(Observation { config: next, value: Some(y) });
        }
        let pick = if model {
            step(&axes, &observed, &start, &|_| true).best.unwrap()
        } else {
            observed.iter().max_by(|a, b| a.value.unwrap().total_cmp(&b.value.unwrap())).unwrap().config.clone()
        };
        (f(&pick), best)
    }

    #[test]
    fn configurations_are_the_cartesian_product() {
        let c = configs(&axes());
        assert_eq!(c.len(), 64);
        assert_eq!((c[0].clone(), c[1].clone(), c[63].clone()), (vec![0, 0], vec![0, 1], vec![7, 7]));
    }

    /// Over 20 seeds, with 12 of 64 configurations measured under noise, the search
    /// recommends one within the noise (2 sd) of the best in at least 90% of them, and more often than random
    /// search with the same budget.
    #[test]
    fn the_search_finds_the_best_within_the_noise_and_beats_random_search() {
        let within = |(got, best): (f64, f64)| got >= best - 2.0 * NOISE;
        let model = (0..20).filter(|&s| within(run(s, true))).count();
        let random = (0..20).filter(|&s| within(run(s, false))).count();
        eprintln!("within the noise of the best: model-based {model} of 20, random {random} of 20");
        assert!(model >= 18, "model-based search: {model} of 20 within the noise of the best");
        assert!(model > random, "model-based {model} against random {random} of 20");
    }

    #[test]
    fn pruned_and_failed_configurations_are_never_proposed_again() {
        let axes = axes();
        let observed = vec![Observation { config: vec![0, 0], value: None }];
        let s = step(&axes, &observed, &[vec![0, 0], vec![1, 1]], &|c| c[0] < 4);
        assert_eq!(s.next, Some(vec![1, 1]), "the failed start is tried, the next start point comes");
        assert_eq!(s.all.len(), 32);
        assert!(s.best.is_none(), "nothing measured yet");
        let s = step(&axes, &[Observation { config: vec![1, 1], value: Some(5.0) }], &[], &|c| c[0] < 4);
        assert!(s.next.as_ref().is_some_and(|c| c[0] < 4 && c != &vec![1, 1]));
    }
}
