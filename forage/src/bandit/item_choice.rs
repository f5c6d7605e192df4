//! Item-level propensities: how likely the feed was to put the item it showed into its
//! slot, the source's choice and the item's within the source together.
//!
//! Owns [`ContentDraws`] (a request's extra draws of the content bandit's posterior) and the
//! estimator [`item_propensities`]. The feed logs, for every item it shows
//! ([`super::log_impressions`]):
//!
//! * `propensity`: `p_src`, the probability that the slot went to the item's source given
//!   this request's content draw (Thompson sampling over sources, [`super::thompson`]);
//! * `item_propensity`: `p`, the probability that the slot went to this item (below);
//! * `within_propensity`: `p_within`, the probability that the source's turn went to this
//!   item rather than another of its candidates;
//! * `candidates`: how many candidates, over all sources, the slot was chosen from (the
//!   candidates of every source ranked for the page, at most
//!   `app::feed::CANDIDATES_PER_ARM_MAX` each, minus the items placed at earlier steps): what
//!   uniform choice over items would have chosen among;
//! * `greedy_propensity`: the probability that the content-greedy policy (the same feed
//!   ranking by the content model's posterior mean `μ` instead of a draw, with the same
//!   Thompson sampling over sources) would have put this item into the slot: 0 when its
//!   ranking gives the source's turn to another item. `forage eval` scores that policy.
//!
//! Every probability is of one slot's decision given what the page held before it (the
//! items placed at earlier steps).
//!
//! # The estimator
//!
//! Inside a source the choice is deterministic given the request's content draw `θ̃₀`: the
//! source's `j`-th turn takes its best remaining candidate by `s(c) = taste·e_c + θ̃·z_c +
//! freshness(c)` with `θ̃ = θ̃₀` (see [`crate::rank`]); the slot goes to the source with the
//! highest `Beta draw + s(next item) − freshness(next item)`. The randomness is the Beta
//! draws and the content draw, `θ̃ = μ + v L⁻ᵀ ε` with `ε ~ N(0, I)` ([`super::linear`]). No
//! closed form gives the probability (it is an orthant probability of a correlated
//! Gaussian, mixed over Beta draws), so it is estimated by Monte Carlo. Only the content
//! term depends on the draw, so under any draw `s(c) = s₀(c) + (θ̃ − θ̃₀)·z_c` exactly, from
//! the scores the ranking computed.
//!
//! **Within the source.** [`CONTENT_DRAWS`] (`K`) fresh draws `ε_k`, each
//! Rao-Blackwellised along one direction, so that probabilities far below 1/K come out
//! smooth and nonzero instead of as zero wins. For item `i`, take the unit direction
//! `u ∝ L⁻¹(z_i − z̄)` (`z̄`: the mean features of its competitors: the direction that
//! raises `i` over them fastest) and split each draw into `ε = t u + ε⊥`, with
//! `t ~ N(0, 1)` independent of `ε⊥`. Given `ε⊥`, every difference `s(i) − s(c)` is
//! affine in `t`: `D_k(c) + β_c (t − t_k)`, where `D_k(c)` is the difference under draw
//! `k`, `t_k = ε_k·u` and `β_c = v (L⁻ᵀu)·(z_i − z_c)`. So the set of `t` where `i` wins is
//! an interval `[lo, hi]`, of probability `w_k = Φ(hi) − Φ(lo)` exactly, and
//! `p_within = mean_k w_k`: unbiased for the probability that `i` beats the pool (the
//! expectation of the plain win indicator, with less variance).
//!
//! **Source and item together.** The first [`JOINT_ROUNDS`] (`R`) of the source choice's
//! own Monte-Carlo rounds of Beta draws (those behind `p_src`), round `r` paired with
//! content draw `k = r mod K`. Along the item's direction `t`, under draw `k`, the item's
//! source bids the item's own score and every other open source its
//! [`BIDDERS_PER_SOURCE`] best remaining items (a source that gives nothing on the page
//! bids from the first [`RIVAL_POOL`] of its pool), each bid affine in `t`; so, given
//! round `r`'s Beta draws, the item's source wins on an interval of `t` too, and `P_r` is
//! the probability of that interval's intersection with the item's own. Then
//! `p = (Σ_r P_r + ½ · p_within) / (R + ½ · open sources)`, smoothed as `p_src` is. The
//! source and the item move together this way: a draw that favours the item's content
//! also gives its source the slot, which the product `p_src · p_within` would count twice
//! (it overstated such choices up to 17 times over in a simulation), and evaluating the
//! source choice at the draw itself (`t = t_k`) rather than where the item wins would
//! understate them as badly. The unit tests compare the estimate, the product and a
//! brute-force run of the whole step.
//!
//! Cost per page: one pass over the pools per draw (`(K + 1) · pool items` dot products of
//! [`DIMS`]), and per shown item one triangular solve pair, one pass over its pool, a
//! dot product per rival bidder and `R · rivals` comparisons (about 0.6 ms for a page of
//! 20 from 20 sources; `cargo bench -p forage --bench feed` with
//! `RUST_LOG=forage::app::feed=debug` prints it as `item_propensity_us`).
//!
//! # Limits, each a bias toward a larger propensity (a smaller weight) unless said
//!
//! * **Clipping.** `p_within ≥` [`WITHIN_PROPENSITY_MIN`] (an inverse-propensity weight's
//!   within-source factor stays below 10⁴ however unlikely the choice was) and
//!   `p ≥` [`PROPENSITY_MIN`].
//! * **The pool.** The competitors are the source's best [`pool_size`] candidates under
//!   `θ̃₀` (the ranking's exactly scored shortlist); the rest are taken never to win. While
//!   the posterior is wide that overstates small propensities (an item that won among the
//!   best 64 of 2,000 by chance is credited with about 1/64 rather than 1/2,000).
//! * **Rival bidders.** A rival source's bid is the best of its few best items, each held
//!   on its line in `t`; an item further down that would overtake them is missed, which
//!   understates the rival.
//! * **Noise.** `K` and `R` are small: a small propensity is right in expectation but a
//!   single estimate can be off by half of itself or more.
//! * **Per slot.** A page's later slots are scored given its earlier ones as logged.
//!
//! Without a content draw (the content bandit off, or no embeddings) the ranking inside a
//! source is deterministic: `p_within` = 1 and `p = p_src`.
//!
//! The fresh draws come from their own random generator (`app::Forage`), so estimating
//! propensities never changes what a page shows.

use rand::Rng;

use super::linear::{DIMS, LinearPosterior};
use super::thompson::{Allocation, ITEM_SCORE_WEIGHT, PROPENSITY_SMOOTHING, sanitize_offset};
use crate::rank::dot_f32;

/// Fresh posterior draws behind each within-source propensity.
pub const CONTENT_DRAWS: usize = 8;
/// Smallest within-source propensity logged (see the module docs: clipping).
pub const WITHIN_PROPENSITY_MIN: f64 = 1e-4;
/// Smallest item-level propensity logged.
pub const PROPENSITY_MIN: f64 = 1e-9;
/// Fewest candidates of a source competing in the estimate.
pub const POOL_MIN: usize = 64;

/// Candidates of one source that compete in the estimate for a page of `slots`: the best
/// [`POOL_MIN`], or twice the page when that is more.
pub fn pool_size(slots: usize) -> usize {
    slots.saturating_mul(2).max(POOL_MIN)
}

/// A request's extra draws of the content bandit, as offsets from the draw it ranked with,
/// with the posterior they were drawn from.
#[derive(Clone, Debug, Default)]
pub struct ContentDraws {
    /// The posterior and its scale `v`; `None` when the ranking had no draw.
    posterior: Option<(LinearPosterior, f64)>,
    /// `θ̃_k − θ̃₀` for each fresh draw.
    deltas: Vec<Vec<f32>>,
    /// `ε_k`, the standard normals behind each fresh draw.
    noises: Vec<Vec<f64>>,
    /// `μ − θ̃₀` (`μ` alone without a draw); `None` without a content model.
    mean: Option<Vec<f32>>,
}

impl ContentDraws {
    /// `draws` fresh draws of `posterior` at scale `v` against `logged`, the draw the
    /// ranking used (`None`: it used none, so only the mean is kept). Draws without
    /// [`DIMS`] finite entries are left out.
    pub fn new<R: Rng + ?Sized>(
        posterior: LinearPosterior,
        logged: Option<&[f32]>,
        rng: &mut R,
        v: f64,
        draws: usize,
    ) -> ContentDraws {
        let zero = [0.0f32; DIMS];
        let logged = logged.filter(|t| t.len() == DIMS);
        let base = logged.unwrap_or(&zero);
        let minus = |theta: &[f32]| -> Vec<f32> { theta.iter().zip(base).map(|(t, b)| t - b).collect() };
        let mean = posterior.mean();
        let mean = (mean.len() == DIMS && mean.iter().all(|x| x.is_finite())).then(|| minus(&mean));
        let mut out = ContentDraws { mean, ..ContentDraws::default() };
        if logged.is_none() {
            return out;
        }
        for _ in 0..draws {
            let (theta, noise) = posterior.sample_with_noise(rng, v);
            if theta.len() == DIMS {
                out.deltas.push(minus(&theta));
                out.noises.push(noise);
            }
        }
        out.posterior = Some((posterior, v));
        out
    }

    /// Fresh draws held.
    pub fn draws(&self) -> usize {
        self.deltas.len()
    }
}

/// One source's pool for the estimate: its best candidates under the logged draw, best
/// first (so its `j`-th item is what its `j`-th turn on the page took).
#[derive(Clone, Debug, Default)]
pub struct ArmPool<'a> {
    /// Exact scores under the logged draw, freshness included.
    pub scores: Vec<f64>,
    /// Each item's freshness term (the source choice's offsets leave it out, as the feed's do).
    pub freshness: Vec<f64>,
    /// Each item's content features (`None`: it has none, so the draw does not move it).
    pub features: Vec<Option<&'a [f32]>>,
}

/// The item-level estimate of the item placed at one step of an allocation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemChoice {
    /// Probability of this item for this slot: the source's choice and the item's together.
    pub propensity: f64,
    /// `p_within`: probability that the source's turn went to this item, in
    /// [[`WITHIN_PROPENSITY_MIN`], 1].
    pub within: f64,
    /// Probability that the content-greedy policy (the feed ranking by the posterior mean
    /// instead of a draw) chooses this item for this slot: 0 when its ranking picks another
    /// item of the source; `None` without a content model.
    pub greedy: Option<f64>,
}

/// The estimate for every step of `allocation` (see the module docs), whose arms are
/// `pools` in order.
pub fn item_propensities(
    pools: &[ArmPool<'_>],
    allocation: &Allocation,
    draws: &ContentDraws,
) -> Vec<ItemChoice> {
    let arms = pools.len().min(allocation.arms);
    let features: Vec<Vec<&[f32]>> =
        pools[..arms].iter().map(|p| with_zeros(&p.features, p.scores.len())).collect();
    let mut gives = vec![0usize; arms];
    for choice in &allocation.choices {
        if let Some(n) = gives.get_mut(choice.arm) {
            *n += 1;
        }
    }
    // Every fresh draw, then the posterior mean (the content-greedy policy's scores).
    let deltas: Vec<&[f32]> = draws.deltas.iter().chain(&draws.mean).map(Vec::as_slice).collect();
    let mut shifted = Moved::all(&pools[..arms], &features, &gives, &deltas);
    let greedy = draws.mean.as_ref().and_then(|_| shifted.pop());
    let shifted: Vec<&Moved> = shifted.iter().collect();
    let mut given = vec![0usize; arms];
    let mut out = Vec::with_capacity(allocation.choices.len());
    for (step, choice) in allocation.choices.iter().enumerate() {
        let a = choice.arm;
        // Without the item in the pools, or without a draw, the source's choice is all.
        let mut estimate = ItemChoice { propensity: choice.propensity, within: 1.0, greedy: None };
        if let Some(j) = given.get(a).copied().filter(|j| *j < pools[a].scores.len()) {
            let joint =
                Joint { allocation, step, arm: a, rank: j, given: &given, pools, features: &features };
            estimate.greedy = greedy.as_ref().map(|mean| {
                let certain = Conditional::plain(std::iter::once(true));
                if wins(&mean.scores[a], j) { joint.estimate(&certain, &[mean]) } else { 0.0 }
            });
            if let Some((posterior, v)) = draws.posterior.as_ref().filter(|_| !shifted.is_empty()) {
                let arm_shifted: Vec<&[f64]> = shifted.iter().map(|m| m.scores[a].as_slice()).collect();
                let within = conditional_wins(j, &features[a], &arm_shifted, &draws.noises, posterior, *v);
                estimate.propensity = joint.estimate(&within, &shifted);
                estimate.within = within.mean().clamp(WITHIN_PROPENSITY_MIN, 1.0);
            }
        }
        out.push(estimate);
        if let Some(g) = given.get_mut(a) {
            *g += 1;
        }
    }
    out
}

/// The features of every pool item, zeros for those without.
fn with_zeros<'a>(features: &[Option<&'a [f32]>], len: usize) -> Vec<&'a [f32]> {
    (0..len)
        .map(|i| features.get(i).copied().flatten().filter(|z| z.len() == DIMS).unwrap_or(&ZERO))
        .collect()
}

/// Items of a source that bid for a slot in the joint estimate: its best remaining ones.
pub const BIDDERS_PER_SOURCE: usize = 2;
/// Monte-Carlo rounds of the source choice the joint estimate uses (the first ones of the
/// logged propensity's, [`CONTENT_DRAWS`] divides it so every draw gets as many).
pub const JOINT_ROUNDS: usize = 64;

/// Probability below which a draw's share of an item is taken as none (it is skipped).
const NEGLIGIBLE: f64 = 1e-15;
/// Pool items of a source that gives no item on the page and only bids against the others.
pub const RIVAL_POOL: usize = 8;

/// The ranks of the best `n` of `scores`, best first (ties: the lower rank, as in the
/// ranking): one pass, inserting into the short list.
fn best_ranks(scores: &[f64], n: usize) -> Vec<u32> {
    let mut best: Vec<u32> = Vec::with_capacity(n + 1);
    for (c, score) in scores.iter().enumerate() {
        if best.len() == n && best.last().is_none_or(|last| scores[*last as usize] >= *score) {
            continue;
        }
        // After the equal ones: they have lower ranks.
        let at = best.iter().position(|b| scores[*b as usize] < *score).unwrap_or(best.len());
        best.insert(at, c as u32);
        best.truncate(n);
    }
    best
}

/// Every source's pool under one draw: the moved scores, and each pool's best ranks by them.
struct Moved {
    /// `scores[b]`: source `b`'s pool.
    scores: Vec<Vec<f64>>,
    /// `order[b]`: source `b`'s best ranks, best first under the draw (ties: the lower
    /// rank, as in the ranking).
    order: Vec<Vec<u32>>,
}

impl Moved {
    /// The pools moved by each of `deltas` (a draw minus the logged one), in one pass over
    /// the features (each item's are read once for every draw). `gives[b]`: items source
    /// `b` gives on the page; a source that gives none only bids, with the first
    /// [`RIVAL_POOL`] of its pool, and only the best `gives[b] + BIDDERS_PER_SOURCE` of a
    /// pool are ordered (all that [`Moved::bidders`] can be asked for).
    fn all(
        pools: &[ArmPool<'_>],
        features: &[Vec<&[f32]>],
        gives: &[usize],
        deltas: &[&[f32]],
    ) -> Vec<Moved> {
        let mut out: Vec<Moved> = deltas
            .iter()
            .map(|_| Moved {
                scores: Vec::with_capacity(pools.len()),
                order: Vec::with_capacity(pools.len()),
            })
            .collect();
        for ((pool, features), gives) in pools.iter().zip(features).zip(gives) {
            let len = if *gives > 0 { pool.scores.len() } else { pool.scores.len().min(RIVAL_POOL) };
            let mut scores = vec![vec![0.0; len]; deltas.len()];
            for (c, (s, z)) in pool.scores[..len].iter().zip(&features[..len]).enumerate() {
                for (k, delta) in deltas.iter().enumerate() {
                    let moved = s + f64::from(dot_f32(delta, z));
                    scores[k][c] = if moved.is_finite() { moved } else { f64::NEG_INFINITY };
                }
            }
            let wanted = (gives + BIDDERS_PER_SOURCE).min(len);
            for (moved, scores) in out.iter_mut().zip(scores) {
                moved.order.push(best_ranks(&scores, wanted));
                moved.scores.push(scores);
            }
        }
        out
    }

    /// Source `b`'s [`BIDDERS_PER_SOURCE`] best items from rank `from` on, as
    /// `(source-choice offset, rank)`: the offset is the item's score without freshness,
    /// weighted as the feed weighs it (0 when not finite).
    fn bidders<'a>(
        &'a self,
        b: usize,
        from: usize,
        freshness: &'a [f64],
    ) -> impl Iterator<Item = (f64, usize)> + 'a {
        let scores = &self.scores[b];
        self.order[b].iter().map(|c| *c as usize).filter(move |c| *c >= from).take(BIDDERS_PER_SOURCE).map(
            move |c| {
                let fresh = freshness.get(c).copied().unwrap_or(0.0);
                (sanitize_offset(ITEM_SCORE_WEIGHT * (scores[c] - fresh)), c)
            },
        )
    }
}

/// One item's joint estimate: the item chosen within its source and its source chosen for
/// the slot, under the same draws.
struct Joint<'a> {
    allocation: &'a Allocation,
    step: usize,
    arm: usize,
    rank: usize,
    /// Items each source gave before this step.
    given: &'a [usize],
    pools: &'a [ArmPool<'a>],
    features: &'a [Vec<&'a [f32]>],
}

/// A rival bid in one draw, against the item's own: the item's source outbids it in round
/// `r` where `(β_r(own) − β_r(rival's source)) + lead + gain · (t' − t_k) > 0`.
#[derive(Clone, Copy)]
struct Rival {
    source: usize,
    /// The item's offset minus the rival's, at `t_k`.
    lead: f64,
    /// The item's slope in `t` minus the rival's, and its inverse.
    gain: f64,
    inverse_gain: f64,
}

impl Joint<'_> {
    /// The item's probability: `(Σ_r P_r + ½ · p_within) / (R + ½ · open sources)`, where
    /// `P_r` is the probability, given content draw `r mod K`, that the item wins within
    /// its source and its source wins Monte-Carlo round `r` of the source choice (the
    /// logged propensity's own rounds, smoothed the same way). Along the item's direction
    /// `t`, the item's source bids the item's own score and every other open source its
    /// best remaining items under the draw ([`BIDDERS_PER_SOURCE`] of them), each affine in
    /// `t`; so the source wins on an interval of `t`, and `P_r` is the probability of its
    /// intersection with the item's own interval.
    fn estimate(&self, within: &Conditional, moved: &[&Moved]) -> f64 {
        let Some(available) = self.allocation.available.get(self.step) else { return PROPENSITY_MIN };
        let arms = self.allocation.arms.min(available.len()).min(self.pools.len());
        let rivals = self.rivals(within, moved, &available[..arms]);
        let stride = self.allocation.arms;
        let rounds = (self.allocation.rounds.len() / stride.max(1)).min(JOINT_ROUNDS);
        let mut total = 0.0;
        for r in 0..rounds {
            let k = r % within.draws();
            let draws = &self.allocation.rounds[r * stride..(r + 1) * stride];
            let (t, mut lo, mut hi) = (within.t[k], within.lo[k], within.hi[k]);
            for rival in &rivals[k] {
                let c = draws[self.arm] - draws[rival.source] + rival.lead;
                if rival.gain > 0.0 {
                    lo = lo.max(t - c * rival.inverse_gain);
                } else if rival.gain < 0.0 {
                    hi = hi.min(t - c * rival.inverse_gain);
                } else if c < 0.0 || (c == 0.0 && rival.source < self.arm) || c.is_nan() {
                    hi = f64::NEG_INFINITY;
                }
                if hi <= lo {
                    break;
                }
            }
            total += normal_interval(lo, hi);
        }
        let open = available.iter().filter(|ok| **ok).count() as f64;
        let p =
            (total + PROPENSITY_SMOOTHING * within.mean()) / (rounds as f64 + PROPENSITY_SMOOTHING * open);
        p.clamp(PROPENSITY_MIN, 1.0)
    }

    /// `rivals[k]`: every bid of another open source under draw `k`, against the item's.
    fn rivals(&self, within: &Conditional, moved: &[&Moved], available: &[bool]) -> Vec<Vec<Rival>> {
        // `direction · z` of the pool items met so far, by source and rank (NaN: not yet).
        let starts: Vec<usize> = self
            .pools
            .iter()
            .scan(0, |at, p| {
                let start = *at;
                *at += p.scores.len();
                Some(start)
            })
            .collect();
        let mut along = vec![f64::NAN; self.pools.iter().map(|p| p.scores.len()).sum()];
        let mut slope = |b: usize, c: usize| -> f64 {
            if within.direction.is_empty() {
                return 0.0;
            }
            let cached = &mut along[starts[b] + c];
            if cached.is_nan() {
                let z = self.features.get(b).and_then(|f| f.get(c)).copied().unwrap_or(&ZERO);
                *cached = f64::from(dot_f32(&within.direction, z));
            }
            ITEM_SCORE_WEIGHT * within.scale * *cached
        };
        let own_slope = slope(self.arm, self.rank);
        let fresh = self.pools[self.arm].freshness.get(self.rank).copied().unwrap_or(0.0);
        (0..within.draws())
            .map(|k| {
                let mut rivals = Vec::new();
                let (t, lo, hi) = (within.t[k], within.lo[k], within.hi[k]);
                if normal_interval(lo, hi) < NEGLIGIBLE {
                    // The item (almost) never wins under this draw: no round will count it.
                    return rivals;
                }
                let own = sanitize_offset(ITEM_SCORE_WEIGHT * (moved[k].scores[self.arm][self.rank] - fresh));
                for (b, _) in available.iter().enumerate().filter(|(b, open)| **open && *b != self.arm) {
                    for (offset, c) in moved[k].bidders(b, self.given[b], &self.pools[b].freshness) {
                        let (lead, gain) = (own - offset, own_slope - slope(b, c));
                        // Beta draws lie in [0, 1]: a rival this far behind over the whole
                        // interval never binds.
                        let worst = if gain >= 0.0 { gain * (lo - t) } else { gain * (hi - t) };
                        if lead - 1.0 + worst > 0.0 {
                            continue;
                        }
                        rivals.push(Rival { source: b, lead, gain, inverse_gain: 1.0 / gain });
                    }
                }
                rivals
            })
            .collect()
    }
}

/// An item's within-source win, per fresh draw `k`: the interval `[lo_k, hi_k]` of `t`
/// (the draw's coordinate along the item's direction, see the module docs) where it wins,
/// with the draw's own `t_k`.
struct Conditional {
    t: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// `L⁻ᵀu`: a unit of `t` moves a score by `scale · (direction · z)`; empty when the draws
    /// were not split (every interval is then all or nothing).
    direction: Vec<f32>,
    /// `v`.
    scale: f64,
}

impl Conditional {
    /// The plain indicators of `won`: each draw wins or not, with no direction.
    fn plain(won: impl Iterator<Item = bool>) -> Conditional {
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        for w in won {
            lo.push(if w { f64::NEG_INFINITY } else { f64::INFINITY });
            hi.push(if w { f64::INFINITY } else { f64::NEG_INFINITY });
        }
        Conditional { t: vec![0.0; lo.len()], lo, hi, direction: Vec::new(), scale: 0.0 }
    }

    fn draws(&self) -> usize {
        self.t.len()
    }

    /// `p_within`: the mean over the draws of `w_k`, the probability of draw `k`'s interval.
    fn mean(&self) -> f64 {
        let total: f64 = self.lo.iter().zip(&self.hi).map(|(lo, hi)| normal_interval(*lo, *hi)).sum();
        total / self.draws().max(1) as f64
    }
}

/// The features of an item without any: the draw does not move its score.
const ZERO: [f32; DIMS] = [0.0; DIMS];

/// Whether item `j` beats every later item under `shifted` (ties go to the earlier item,
/// as in the ranking).
fn wins(shifted: &[f64], j: usize) -> bool {
    shifted[j] > f64::NEG_INFINITY && shifted[j + 1..].iter().all(|s| shifted[j] >= *s)
}

/// The Rao-Blackwellised win of item `j` over the later items, per fresh draw (see the
/// module docs); the plain win indicator of each draw when the direction is degenerate.
fn conditional_wins(
    j: usize,
    features: &[&[f32]],
    shifted: &[&[f64]],
    noises: &[Vec<f64>],
    posterior: &LinearPosterior,
    v: f64,
) -> Conditional {
    let plain = || Conditional::plain(shifted.iter().map(|s| wins(s, j)));
    let rivals = &features[j + 1..];
    if rivals.is_empty() {
        return plain();
    }
    let zi: Vec<f64> = features[j].iter().map(|x| f64::from(*x)).collect();
    let mut direction = zi.clone();
    for z in rivals {
        direction.iter_mut().zip(*z).for_each(|(d, x)| *d -= f64::from(*x) / rivals.len() as f64);
    }
    let x = posterior.solve_l(&direction);
    let norm = x.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !(norm > 1e-12 && norm.is_finite()) {
        return plain();
    }
    let u: Vec<f64> = x.iter().map(|x| x / norm).collect();
    // Slopes only order bids: f32 (and its vectorised dot product) is plenty.
    let w: Vec<f32> = posterior.solve_lt(&u).into_iter().map(|x| x as f32).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let w_zi = f64::from(dot_f32(&w, features[j]));
    let betas: Vec<f64> = rivals.iter().map(|z| v * (w_zi - f64::from(dot_f32(&w, z)))).collect();
    let mut out = Conditional { t: Vec::new(), lo: Vec::new(), hi: Vec::new(), direction: w, scale: v };
    for (s, noise) in shifted.iter().zip(noises) {
        let t = dot(noise, &u);
        let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
        for (rival, beta) in s[j + 1..].iter().zip(&betas) {
            // Item j beats this rival where D + β (t' − t) ≥ 0.
            let d = s[j] - rival;
            if d.is_nan() || (*beta == 0.0 && d < 0.0) {
                hi = f64::NEG_INFINITY;
                break;
            }
            if *beta > 0.0 {
                lo = lo.max(t - d / beta);
            } else if *beta < 0.0 {
                hi = hi.min(t - d / beta);
            }
        }
        out.t.push(t);
        out.lo.push(lo);
        out.hi.push(hi);
    }
    out
}

/// `P(lo ≤ t ≤ hi)` for a standard normal `t`, computed on the side of the smaller tail so
/// that small probabilities keep their relative precision.
fn normal_interval(lo: f64, hi: f64) -> f64 {
    if lo.is_nan() || hi.is_nan() || hi <= lo {
        return 0.0;
    }
    let upper = |x: f64| 0.5 * libm::erfc(x / std::f64::consts::SQRT_2);
    let p = if lo >= 0.0 {
        upper(lo) - upper(hi)
    } else if hi <= 0.0 {
        upper(-hi) - upper(-lo)
    } else {
        1.0 - upper(-lo) - upper(hi)
    };
    p.clamp(0.0, 1.0)
}

#[cfg(test)]
#[path = "item_choice_tests.rs"]
mod tests;
