//! Beta variates from Gamma variates, with nothing but a uniform `rand::Rng`.
//!
//! Owns the samplers the bandit draws from: a standard normal (Box–Muller), a Gamma(shape, 1)
//! (Marsaglia–Tsang, "A simple method for generating gamma variables", 2000) and
//! Beta(α, β) = X / (X + Y) with X ~ Gamma(α), Y ~ Gamma(β).
//!
//! Invariants: every sampler returns a finite value in its support for any input; parameters
//! that are not finite and positive are replaced by [`PARAM_MIN`] (no panic on bad input);
//! randomness comes only from the injected `Rng`, so a seeded run is reproducible.

use rand::Rng;

/// Smallest shape parameter the samplers accept; smaller or invalid ones are raised to it.
pub const PARAM_MIN: f64 = 1e-3;
/// Largest shape parameter the samplers accept; larger ones are lowered to it.
pub const PARAM_MAX: f64 = 1e12;
/// Most rejection rounds of one Gamma draw. Marsaglia–Tsang accepts at least ~95% of rounds
/// for shape ≥ 1, so this bound is never reached in practice; if it were, the mode is returned.
pub const GAMMA_ROUNDS_MAX: usize = 1_000;

fn sanitize(param: f64) -> f64 {
    if param.is_finite() && param > 0.0 { param.clamp(PARAM_MIN, PARAM_MAX) } else { PARAM_MIN }
}

/// A uniform variate in the open-at-zero interval (0, 1].
fn uniform_open<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - rng.random::<f64>()
}

/// A standard normal variate (Box–Muller, cosine branch).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = uniform_open(rng);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, scale 1) variate (Marsaglia–Tsang; shape < 1 through the boost
/// Gamma(a) = Gamma(a + 1) · U^(1/a)).
pub fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    let shape = sanitize(shape);
    if shape < 1.0 {
        let boosted = gamma_at_least_one(rng, shape + 1.0);
        return boosted * uniform_open(rng).powf(1.0 / shape);
    }
    gamma_at_least_one(rng, shape)
}

fn gamma_at_least_one<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    debug_assert!(shape >= 1.0);
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    for _ in 0..GAMMA_ROUNDS_MAX {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = uniform_open(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
    shape - 1.0
}

/// A Beta(alpha, beta) variate in [0, 1].
pub fn beta<R: Rng + ?Sized>(rng: &mut R, alpha: f64, beta: f64) -> f64 {
    let x = gamma(rng, alpha);
    let y = gamma(rng, beta);
    let sum = x + y;
    // Both can underflow to 0 for tiny shapes: fall back to the mean.
    if sum > 0.0 && sum.is_finite() {
        (x / sum).clamp(0.0, 1.0)
    } else {
        let (a, b) = (sanitize(alpha), sanitize(beta));
        a / (a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const DRAWS: usize = 100_000;

    fn moments(mut draw: impl FnMut() -> f64) -> (f64, f64) {
        let xs: Vec<f64> = (0..DRAWS).map(|_| draw()).collect();
        let mean = xs.iter().sum::<f64>() / DRAWS as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (DRAWS as f64 - 1.0);
        (mean, var)
    }

    #[test]
    fn normal_has_mean_zero_and_variance_one() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mean, var) = moments(|| standard_normal(&mut rng));
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn gamma_moments_match_shape() {
        let mut rng = StdRng::seed_from_u64(2);
        for shape in [0.3, 1.0, 2.5, 40.0] {
            let (mean, var) = moments(|| gamma(&mut rng, shape));
            assert!((mean - shape).abs() < 0.03 * shape.max(1.0), "shape {shape}: mean {mean}");
            assert!((var - shape).abs() < 0.06 * shape.max(1.0), "shape {shape}: variance {var}");
        }
    }

    #[test]
    fn beta_moments_match_parameters() {
        let mut rng = StdRng::seed_from_u64(3);
        for (a, b) in [(1.0, 1.0), (2.0, 5.0), (0.5, 0.5), (30.0, 70.0), (1.0, 200.0)] {
            let want_mean = a / (a + b);
            let want_var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
            let (mean, var) = moments(|| beta(&mut rng, a, b));
            assert!((mean - want_mean).abs() < 0.01, "Beta({a},{b}): mean {mean} vs {want_mean}");
            assert!(
                (var - want_var).abs() < 0.05 * want_var + 1e-4,
                "Beta({a},{b}): var {var} vs {want_var}"
            );
        }
    }

    #[test]
    fn bad_parameters_give_finite_values_in_support() {
        let mut rng = StdRng::seed_from_u64(4);
        for p in [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e300] {
            let g = gamma(&mut rng, p);
            assert!(g.is_finite() && g >= 0.0, "gamma({p}) = {g}");
            let b = beta(&mut rng, p, 1.0);
            assert!((0.0..=1.0).contains(&b), "beta({p}, 1) = {b}");
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let draws = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10).map(|_| beta(&mut rng, 2.0, 3.0)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}
