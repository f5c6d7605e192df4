//! The contextual bandit over item content: linear Thompson sampling (Agrawal & Goyal,
//! "Thompson Sampling for Contextual Bandits with Linear Payoffs", 2013) on a fixed random
//! projection of the item embeddings.
//!
//! Owns [`Projection`] (embedding → [`DIMS`] features: [`DIMS`]−1 Gaussian random
//! projections, Johnson–Lindenstrauss style, plus a constant bias feature) and
//! [`LinearThompson`] (the ridge-regression posterior of one user) with [`LinearPosterior`]
//! (the same posterior factorised, for several draws per request).
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
        self.posterior().mean()
    }

    /// One draw `θ̃ ~ N(A⁻¹b, v² A⁻¹)`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, v: f64) -> Vec<f32> {
        self.posterior().sample(rng, v)
    }

    /// The posterior factorised once, for several draws (one Cholesky factorisation, then
    /// two triangular solves per draw).
    pub fn posterior(&self) -> LinearPosterior {
        let l = cholesky(&self.a);
        let mean = solve_upper_transposed(&l, &solve_lower(&l, &self.b));
        LinearPosterior { l, mean }
    }
}

/// A [`LinearThompson`] posterior with its design matrix factorised: `A = L Lᵀ`.
#[derive(Clone, Debug)]
pub struct LinearPosterior {
    l: Vec<f64>,
    mean: Vec<f64>,
}

impl LinearPosterior {
    /// The posterior mean `A⁻¹b`.
    pub fn mean(&self) -> Vec<f32> {
        self.mean.iter().map(|x| *x as f32).collect()
    }

    /// One draw `θ̃ ~ N(A⁻¹b, v² A⁻¹)`: [`DIMS`] standard normals from `rng`, nothing else.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, v: f64) -> Vec<f32> {
        self.sample_with_noise(rng, v).0
    }

    /// [`LinearPosterior::sample`], and the standard normals `ε` it was made of:
    /// `θ̃ = A⁻¹b + v L⁻ᵀ ε`.
    pub fn sample_with_noise<R: Rng + ?Sized>(&self, rng: &mut R, v: f64) -> (Vec<f32>, Vec<f64>) {
        let eps: Vec<f64> = (0..DIMS).map(|_| standard_normal(rng)).collect();
        // With A = L Lᵀ, u = L⁻ᵀ ε has covariance L⁻ᵀ L⁻¹ = A⁻¹.
        let u = solve_upper_transposed(&self.l, &eps);
        let theta =
            self.mean.iter().zip(u).map(|(m, u)| (m + v * u) as f32).filter(|x| x.is_finite()).collect();
        (theta, eps)
    }

    /// `L⁻¹ x` for a vector of [`DIMS`] entries (empty for another length). Sums in
    /// another order than the draws' solves (four lanes, so it vectorises): equal up to
    /// rounding, and never used for a draw, so what a page shows does not depend on it.
    pub fn solve_l(&self, x: &[f64]) -> Vec<f64> {
        if x.len() != DIMS {
            return Vec::new();
        }
        let n = DIMS;
        let mut y = vec![0.0; n];
        for i in 0..n {
            y[i] = (x[i] - dot_f64(&self.l[i * n..i * n + i], &y[..i])) / self.l[i * n + i];
        }
        y
    }

    /// `L⁻ᵀ y` for a vector of [`DIMS`] entries (empty for another length), column by column
    /// (rows of `L` are contiguous), as [`LinearPosterior::solve_l`].
    pub fn solve_lt(&self, y: &[f64]) -> Vec<f64> {
        if y.len() != DIMS {
            return Vec::new();
        }
        let n = DIMS;
        let (mut rest, mut u) = (y.to_vec(), vec![0.0; n]);
        for i in (0..n).rev() {
            u[i] = rest[i] / self.l[i * n + i];
            let ui = u[i];
            rest[..i].iter_mut().zip(&self.l[i * n..i * n + i]).for_each(|(r, l)| *r -= l * ui);
        }
        u
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

/// Dot product of two equally long f64 slices in four lanes.
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a_chunks, b_chunks) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
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
    fn the_lane_solves_match_the_draws_solves() {
        let mut model = LinearThompson::default();
        for seed in 0..50 {
            model.observe(&unit(seed, DIMS), true, 1.0);
        }
        let posterior = model.posterior();
        let x: Vec<f64> = unit(99, DIMS).into_iter().map(f64::from).collect();
        let close =
            |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-9 * (1.0 + b.abs()));
        assert!(close(&posterior.solve_l(&x), &solve_lower(&posterior.l, &x)));
        assert!(close(&posterior.solve_lt(&x), &solve_upper_transposed(&posterior.l, &x)));
        assert!(posterior.solve_l(&x[..3]).is_empty() && posterior.solve_lt(&[]).is_empty());
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
