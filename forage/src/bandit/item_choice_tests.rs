use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::bandit::Posterior;
use crate::bandit::beta::{beta, standard_normal};
use crate::bandit::linear::LinearThompson;
use crate::bandit::thompson::{SlotChoice, allocate};
use crate::rank::Diversity;

/// The pool's scores moved by `delta`: `s(c) + delta·z_c`; scores that are not finite
/// become −∞ (they never win).
fn shift(scores: &[f64], features: &[&[f32]], delta: &[f32]) -> Vec<f64> {
    scores
        .iter()
        .zip(features)
        .map(|(s, z)| {
            let moved = s + f64::from(dot_f32(delta, z));
            if moved.is_finite() { moved } else { f64::NEG_INFINITY }
        })
        .collect()
}

fn axis(i: usize) -> Vec<f32> {
    let mut z = vec![0.0; DIMS];
    z[i] = 1.0;
    z
}

fn random(rng: &mut StdRng, scale: f64) -> Vec<f32> {
    (0..DIMS).map(|_| (scale * standard_normal(rng)) as f32).collect()
}

fn pool<'a>(scores: &[f64], features: &[Option<&'a [f32]>]) -> ArmPool<'a> {
    ArmPool { scores: scores.to_vec(), freshness: vec![0.0; scores.len()], features: features.to_vec() }
}

/// The estimates of one source's first `turns` turns when it is the only source.
fn one_source(
    scores: &[f64],
    features: &[Option<&[f32]>],
    turns: usize,
    draws: &ContentDraws,
) -> Vec<ItemChoice> {
    let allocation = Allocation {
        choices: vec![SlotChoice { arm: 0, propensity: 1.0 }; turns],
        arms: 1,
        rounds: vec![0.5; 200],
        available: vec![vec![true]; turns],
    };
    item_propensities(&[pool(scores, features)], &allocation, draws)
}

#[test]
fn without_a_draw_the_ranking_is_certain() {
    let got = one_source(&[3.0, 2.0, 1.0], &[None, None, None], 2, &ContentDraws::default());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c.within == 1.0 && c.propensity == 1.0 && c.greedy.is_none()), "{got:?}");
}

#[test]
fn two_items_get_the_closed_form() {
    // Equal scores at the posterior mean on orthogonal features: a coin flip, which the
    // conditional estimate gets exactly from any number of draws.
    let (z0, z1) = (axis(0), axis(1));
    let features = [Some(z0.as_slice()), Some(z1.as_slice())];
    let mut rng = StdRng::seed_from_u64(1);
    let wide = LinearThompson::default().posterior();
    let draws = ContentDraws::new(wide, Some(&[0.0; DIMS]), &mut rng, 1.0, 4);
    assert_eq!(draws.draws(), 4);
    let got = one_source(&[0.0, 0.0], &features, 2, &draws);
    assert!((got[0].within - 0.5).abs() < 1e-6, "{got:?}");
    assert!((got[0].propensity - 0.5).abs() < 1e-6, "the only source: the item's share is all: {got:?}");
    assert_eq!(got[1].within, 1.0, "the second turn has no competitor left");
    // One unit ahead with v = 1 and unit variances: P(N(0, 2) > −1) = Φ(1/√2).
    let got = one_source(&[1.0, 0.0], &features, 1, &draws);
    assert!((got[0].within - 0.760_249).abs() < 1e-5, "{got:?}");
}

#[test]
fn the_conditional_estimate_agrees_with_brute_force() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut model = LinearThompson::default();
    for _ in 0..30 {
        let z = random(&mut rng, 0.4);
        model.observe(&z, true, if z[0] > 0.0 { 1.0 } else { 0.0 });
    }
    let posterior = model.posterior();
    let v = 0.5;
    let logged = posterior.sample(&mut rng, v);
    let features: Vec<Vec<f32>> = (0..6).map(|_| random(&mut rng, 0.4)).collect();
    let mut scores: Vec<f64> =
        features.iter().map(|z| 0.1 * standard_normal(&mut rng) + f64::from(dot_f32(&logged, z))).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let refs: Vec<Option<&[f32]>> = features.iter().map(|z| Some(z.as_slice())).collect();
    let draws = ContentDraws::new(posterior.clone(), Some(&logged), &mut rng, v, 400);
    let estimated = one_source(&scores, &refs, 3, &draws);
    // Brute force: the share of 40,000 fresh draws under which each turn's item wins.
    let brute = ContentDraws::new(posterior, Some(&logged), &mut rng, v, 40_000);
    let flat: Vec<&[f32]> = features.iter().map(|z| z.as_slice()).collect();
    for (j, e) in estimated.iter().enumerate() {
        let wins = brute.deltas.iter().filter(|d| wins(&shift(&scores, &flat, d), j)).count();
        let truth = wins as f64 / brute.draws() as f64;
        assert!(truth > 0.05 && truth < 0.95, "turn {j}: a choice this certain tests little ({truth})");
        assert!((e.within - truth).abs() < 0.02, "turn {j}: {} vs {truth}", e.within);
    }
}

#[test]
fn the_source_and_the_item_are_estimated_together() {
    // Two sources whose best items pull the content draw in opposite directions: a draw
    // that favours one source's item also gives that source the slot. The joint estimate
    // follows a brute-force run of the whole step; the product of the source's logged
    // propensity and the item's share overstates whichever the logged draw favoured.
    let mut rng = StdRng::seed_from_u64(5);
    let wide = LinearThompson::default().posterior();
    let v = 0.5;
    let logged = wide.sample(&mut rng, v);
    let (plus, minus): (Vec<f32>, Vec<f32>) = (axis(0), axis(0).iter().map(|x| -x).collect());
    let (z1, z2) = (axis(1), axis(2));
    let features: [[Option<&[f32]>; 2]; 2] = [[Some(&plus), Some(&z1)], [Some(&minus), Some(&z2)]];
    let score = |z: &[f32], base: f64| base + f64::from(dot_f32(&logged, z));
    let mut pools: Vec<ArmPool<'_>> = Vec::new();
    for f in &features {
        let mut items: Vec<(f64, Option<&[f32]>)> =
            f.iter().map(|z| (score(z.unwrap_or(&ZERO), 0.0), *z)).collect();
        items.sort_by(|a, b| b.0.total_cmp(&a.0));
        pools.push(ArmPool {
            scores: items.iter().map(|i| i.0).collect(),
            freshness: vec![0.0; 2],
            features: items.iter().map(|i| i.1).collect(),
        });
    }
    let posteriors = [Posterior { alpha: 5.0, beta: 5.0 }; 2];
    let offset = |arm: usize, k: usize| pools[arm].scores[k];
    let allocation = allocate(&posteriors, &[2, 2], &offset, 1, Diversity::OFF, &mut rng);
    let (arm, logged_p_src) = (allocation.choices[0].arm, allocation.choices[0].propensity);
    // As many content draws as source rounds, so that every round has its own.
    let draws = ContentDraws::new(wide.clone(), Some(&logged), &mut rng, v, 200);
    let got = item_propensities(&pools, &allocation, &draws)[0];
    // Brute force: fresh content and source draws, the whole step each time.
    let runs = 40_000;
    let hits = (0..runs)
        .filter(|_| {
            let theta = wide.sample(&mut rng, v);
            // Each source's best item under the draw: (score, rank in the pool).
            let best = |p: &ArmPool<'_>| -> (f64, usize) {
                let moved = |j: usize| {
                    let z = p.features[j].unwrap_or(&ZERO);
                    p.scores[j] + f64::from(dot_f32(&theta, z)) - f64::from(dot_f32(&logged, z))
                };
                (0..p.scores.len())
                    .map(|j| (moved(j), j))
                    .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a })
            };
            let (b0, b1) = (best(&pools[0]), best(&pools[1]));
            let v0 = beta(&mut rng, 5.0, 5.0) + b0.0;
            let v1 = beta(&mut rng, 5.0, 5.0) + b1.0;
            let (winner, item) = if v0 >= v1 { (0, b0.1) } else { (1, b1.1) };
            winner == arm && item == 0
        })
        .count();
    let truth = hits as f64 / runs as f64;
    let product = logged_p_src * got.within;
    println!("joint {:.4}, product {product:.4}, brute force {truth:.4}", got.propensity);
    assert!((got.propensity - truth).abs() < 0.05, "joint {} vs brute force {truth}", got.propensity);
    assert!((got.propensity - truth).abs() < (product - truth).abs(), "the product did as well");
}

#[test]
fn an_item_far_behind_gets_a_tiny_propensity_down_to_the_floor() {
    let (z0, z1) = (axis(0), axis(1));
    let features = [Some(z0.as_slice()), Some(z1.as_slice())];
    let mut rng = StdRng::seed_from_u64(3);
    let wide = LinearThompson::default().posterior();
    let draws = ContentDraws::new(wide, Some(&[0.0; DIMS]), &mut rng, 1.0, CONTENT_DRAWS);
    // Behind by 4 with a difference of variance 2: Φ(−4/√2), small but resolved.
    let p = one_source(&[0.0, 4.0], &features, 1, &draws)[0].within;
    assert!((p - 0.002_339).abs() < 1e-5, "{p}");
    let got = one_source(&[0.0, 100.0], &features, 1, &draws)[0];
    assert_eq!((got.within, got.greedy), (WITHIN_PROPENSITY_MIN, Some(0.0)));
    // Far ahead, the mean picks it too, and with no other source the greedy policy surely.
    let got = one_source(&[100.0, 0.0], &features, 1, &draws)[0];
    assert!(got.greedy.is_some_and(|g| g > 0.99) && got.within > 0.99, "{got:?}");
}

#[test]
fn non_finite_scores_never_win() {
    let mut rng = StdRng::seed_from_u64(4);
    let draws =
        ContentDraws::new(LinearThompson::default().posterior(), Some(&[0.0; DIMS]), &mut rng, 1.0, 4);
    let got = one_source(&[f64::NAN, 0.0], &[None, None], 2, &draws);
    assert_eq!((got[0].within, got[1].within), (WITHIN_PROPENSITY_MIN, 1.0));
}

#[test]
fn normal_intervals_match_known_values() {
    // Φ(1) − Φ(−1), and a far tail that must keep its relative precision.
    assert!((normal_interval(-1.0, 1.0) - 0.682_689_492_137).abs() < 1e-12);
    let tail = normal_interval(6.0, f64::INFINITY);
    assert!((tail - 9.865_876_450_377e-10).abs() / tail < 1e-9, "{tail}");
    assert!((normal_interval(f64::NEG_INFINITY, f64::INFINITY) - 1.0).abs() < 1e-12);
    assert_eq!(normal_interval(1.0, 0.0), 0.0);
}

#[test]
fn best_ranks_are_best_first_with_ties_to_the_lower_rank() {
    let scores = [1.0, 3.0, 2.0, 3.0, f64::NEG_INFINITY, 2.5];
    assert_eq!(best_ranks(&scores, 3), [1, 3, 5]);
    assert_eq!(best_ranks(&scores, 10), [1, 3, 5, 2, 0, 4]);
    assert!(best_ranks(&scores, 0).is_empty());
}
