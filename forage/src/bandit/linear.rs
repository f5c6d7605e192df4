//! The contextual bandit over item content: linear Thompson sampling (Agrawal & Goyal,
//! "Thompson Sampling for Contextual Bandits with Linear Payoffs", 2013) on a fixed random
//! projection of the item embeddings.
//!
//! Owns [`Projection`] (embedding → [`DIMS`] features: [`DIMS`]−1 Gaussian random
//! projections, Johnson–Lindenstrauss style, plus a constant bias feature) and
//! [`LinearThompson`] (the ridge-regression posterior of one user).
//!
//! Model: the like-probability of an item with features `z` is about `θ·z`. With
//! `A = λI + Σ z zᵀ` over every item the user was exposed to and `b = Σ r z` over their
//! rewards (1 for a like or an open, 0 otherwise), the posterior of `θ` is
//! `N(A⁻¹b, v² A⁻¹)`; a feed request draws one `θ̃` from it and scores every candidate by
//! `θ̃·z`, so items of content the user has not been shown yet keep a chance, and content
//! that keeps being ignored loses it.
//!
//! Invariants: the projection is a pure function of the input dimension and [`SEED`]
//! (the model is never stored: it is rebuilt from the user's signals at start-up, so a
//! different projection after an upgrade changes nothing durable); `A` stays symmetric
//! positive definite (λ > 0 and only outer products are added), so the Cholesky
//! factorisation always exists; non-finite inputs are ignored, never propagated.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::beta::standard_normal;

/// Features the bandit learns on (the last one is the constant bias).
pub const DIMS: usize = 64;
/// Seed of the projection matrix.
pub const SEED: u64 = 0x0f07_a6e1_1ea7;
/// Ridge regularisation λ (prior precision of θ).
pub const RIDGE: f64 = 1.0;
/// Posterior scale v of the Thompson draw: larger explores more.
pub const EXPLORATION_DEFAULT: f64 = 0.3;

/// A fixed random projection of embeddings of one dimension to [`DIMS`] features.
#[derive(Clone, Debug)]
pub struct Projection {
    input_dims: usize,
    /// Row-major, (DIMS − 1) × input_dims, entries N(0, 1/(DIMS − 1)).
    matrix: Vec<f32>,
}

impl Projection {
    pub fn new(input_dims: usize) -> Projection {
        let mut rng = StdRng::seed_from_u64(SEED ^ input_dims as u64);
        let scale = 1.0 / ((DIMS - 1) as f64).sqrt();
        let matrix =
            (0..(DIMS - 1) * input_dims).map(|_| (standard_normal(&mut rng) * scale) as f32).collect();
        Projection { input_dims, matrix }
    }

    pub fn input_dims(&self) -> usize {
        self.input_dims
    }

    /// The features of `embedding`, `None` when its length is not the projection's.
    pub fn project(&self, embedding: &[f32]) -> Option<Vec<f32>> {
        if embedding.len() != self.input_dims || self.input_dims == 0 {
            return None;
        }
        let mut out: Vec<f32> = self
            .matrix
            .chunks_exact(self.input_dims)
            .map(|row| crate::rank::dot_f32(row, embedding))
            .collect();
        out.push(1.0);
        out.iter().all(|x| x.is_finite()).then_some(out)
    }

    /// `θ` pulled back to the embedding space: `(Pᵀθ[..DIMS−1], θ[DIMS−1])`, so that
    /// `θ·project(e) = direction·e + bias` for every embedding `e`. Ranking scores the
    /// candidates with this (one dot product with the embedding per candidate, folded into
    /// the taste query) instead of projecting every candidate. `None` when `θ` does not
    /// have [`DIMS`] finite entries.
    pub fn pull_back(&self, theta: &[f32]) -> Option<crate::rank::ContentDraw> {
        if theta.len() != DIMS || theta.iter().any(|x| !x.is_finite()) || self.input_dims == 0 {
            return None;
        }
        let mut direction = vec![0.0f32; self.input_dims];
        for (row, t) in self.matrix.chunks_exact(self.input_dims).zip(theta) {
            direction.iter_mut().zip(row).for_each(|(d, p)| *d += t * p);
        }
        Some(crate::rank::ContentDraw { theta: theta.to_vec(), direction, bias: f64::from(theta[DIMS - 1]) })
    }
}

/// One user's linear Thompson-sampling posterior (see the module docs).
#[derive(Clone, Debug)]
pub struct LinearThompson {
    /// Row-major DIMS × DIMS design matrix.
    a: Vec<f64>,
    b: Vec<f64>,
    observations: usize,
}

impl Default for LinearThompson {
    fn default() -> Self {
        let mut a = vec![0.0; DIMS * DIMS];
        for i in 0..DIMS {
            a[i * DIMS + i] = RIDGE;
        }
        LinearThompson { a, b: vec![0.0; DIMS], observations: 0 }
    }
}

impl LinearThompson {
    /// Folds one observation in: `exposure` adds `z zᵀ` to `A` (once per item), `reward`
    /// adds `reward · z` to `b`. Vectors of the wrong length or not finite are ignored.
    pub fn observe(&mut self, z: &[f32], exposure: bool, reward: f64) {
        if z.len() != DIMS || !reward.is_finite() || z.iter().any(|x| !x.is_finite()) {
            return;
        }
        if exposure {
            for i in 0..DIMS {
                let zi = f64::from(z[i]);
                let row = &mut self.a[i * DIMS..(i + 1) * DIMS];
                row.iter_mut().zip(z).for_each(|(a, zj)| *a += zi * f64::from(*zj));
            }
            self.observations += 1;
        }
        if reward != 0.0 {
            self.b.iter_mut().zip(z).for_each(|(b, zi)| *b += reward * f64::from(*zi));
        }
    }

    /// Items the user was exposed to.
    pub fn observations(&self) -> usize {
        self.observations
    }

    /// The posterior mean `A⁻¹b`.
    pub fn mean(&self) -> Vec<f32> {
        let l = cholesky(&self.a);
        let y = solve_lower(&l, &self.b);
        solve_upper_transposed(&l, &y).into_iter().map(|x| x as f32).collect()
    }

    /// One draw `θ̃ ~ N(A⁻¹b, v² A⁻¹)`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, v: f64) -> Vec<f32> {
        let l = cholesky(&self.a);
        let mean = solve_upper_transposed(&l, &solve_lower(&l, &self.b));
        let eps: Vec<f64> = (0..DIMS).map(|_| standard_normal(rng)).collect();
        // With A = L Lᵀ, u = L⁻ᵀ ε has covariance L⁻ᵀ L⁻¹ = A⁻¹.
        let u = solve_upper_transposed(&l, &eps);
        mean.iter().zip(u).map(|(m, u)| (m + v * u) as f32).filter(|x| x.is_finite()).collect()
    }
}

/// The lower Cholesky factor of a symmetric positive-definite DIMS × DIMS matrix. A pivot
/// that is not positive (impossible for `λI + Σ zzᵀ` with λ > 0, barring rounding) is
/// replaced by λ so the factor always exists.
fn cholesky(a: &[f64]) -> Vec<f64> {
    let n = DIMS;
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                l[i * n + i] = if sum > 0.0 && sum.is_finite() { sum.sqrt() } else { RIDGE.sqrt() };
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    l
}

/// Solves `L y = x` for lower-triangular `L`.
fn solve_lower(l: &[f64], x: &[f64]) -> Vec<f64> {
    let n = DIMS;
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (x[i] - s) / l[i * n + i];
    }
    y
}

/// Solves `Lᵀ u = y` for lower-triangular `L`.
fn solve_upper_transposed(l: &[f64], y: &[f64]) -> Vec<f64> {
    let n = DIMS;
    let mut u = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * u[k]).sum();
        u[i] = (y[i] - s) / l[i * n + i];
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..dims).map(|_| standard_normal(&mut rng) as f32).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn projection_roughly_keeps_inner_products_and_adds_a_bias() {
        let p = Projection::new(384);
        let (a, b) = (unit(1, 384), unit(2, 384));
        let (za, zb) = (p.project(&a).expect("a"), p.project(&b).expect("b"));
        assert_eq!((za.len(), za[DIMS - 1]), (DIMS, 1.0));
        let dot = |x: &[f32], y: &[f32]| crate::rank::dot_f32(&x[..DIMS - 1], &y[..DIMS - 1]);
        assert!((dot(&za, &za) - 1.0).abs() < 0.5, "{}", dot(&za, &za));
        assert!(dot(&za, &zb).abs() < 0.5);
        assert!(p.project(&a[..10]).is_none());
        assert_eq!(Projection::new(384).project(&a), Some(za), "the projection is deterministic");
    }

    #[test]
    fn pulled_back_draws_score_embeddings_as_the_features_do() {
        let p = Projection::new(384);
        let theta = unit(7, DIMS);
        let draw = p.pull_back(&theta).expect("pull back");
        for seed in 10..20 {
            let e = unit(seed, 384);
            let z = p.project(&e).expect("features");
            let via_features = crate::rank::dot_f32(&theta, &z);
            let via_embedding = crate::rank::dot_f32(&draw.direction, &e) + draw.bias as f32;
            assert!((via_features - via_embedding).abs() < 1e-4, "{via_features} vs {via_embedding}");
        }
        assert!(p.pull_back(&theta[..10]).is_none());
        assert!(p.pull_back(&[f32::NAN; DIMS]).is_none());
    }

    #[test]
    fn the_posterior_mean_learns_which_content_pays() {
        let p = Projection::new(384);
        let (good, bad) = (unit(3, 384), unit(4, 384));
        let (zg, zb) = (p.project(&good).expect("g"), p.project(&bad).expect("b"));
        let mut model = LinearThompson::default();
        for i in 0..200 {
            model.observe(&zg, true, if i % 5 == 0 { 0.0 } else { 1.0 });
            model.observe(&zb, true, if i % 10 == 0 { 1.0 } else { 0.0 });
        }
        let mean = model.mean();
        let score = |z: &[f32]| crate::rank::dot_f32(&mean, z);
        assert!((score(&zg) - 0.8).abs() < 0.05, "good {}", score(&zg));
        assert!((score(&zb) - 0.1).abs() < 0.05, "bad {}", score(&zb));
        assert_eq!(model.observations(), 400);
        // Draws spread around the mean, less as data grows.
        let mut rng = StdRng::seed_from_u64(9);
        let draws: Vec<f32> =
            (0..200).map(|_| crate::rank::dot_f32(&model.sample(&mut rng, 1.0), &zg)).collect();
        let m = draws.iter().sum::<f32>() / 200.0;
        assert!((m - 0.8).abs() < 0.05 && draws.iter().any(|d| (d - m).abs() > 0.01), "{m}");
        let fresh = LinearThompson::default();
        let spread: Vec<f32> =
            (0..200).map(|_| crate::rank::dot_f32(&fresh.sample(&mut rng, 1.0), &zg)).collect();
        let var = |xs: &[f32]| xs.iter().map(|x| x * x).sum::<f32>() / xs.len() as f32;
        assert!(var(&spread) > 10.0 * var(&draws.iter().map(|d| d - m).collect::<Vec<_>>()));
    }

    #[test]
    fn bad_vectors_are_ignored() {
        let mut model = LinearThompson::default();
        model.observe(&[f32::NAN; DIMS], true, 1.0);
        model.observe(&[1.0; 3], true, 1.0);
        assert_eq!(model.observations(), 0);
        assert!(model.mean().iter().all(|x| *x == 0.0));
    }
}
