//! Thompson sampling: choosing arms by sampling their Beta posteriors, allocating a feed's
//! slots, and the propensity of every choice.
//!
//! Invariants: every choice is among the arms marked available; every propensity is in
//! (0, 1] and the propensities of the available arms sum to 1; all randomness comes from the
//! injected `Rng`.
//!
//! Propensities are estimated by Monte Carlo: [`PROPENSITY_DRAWS`] independent rounds of
//! Thompson sampling, counting how often each arm wins, smoothed by adding
//! [`PROPENSITY_SMOOTHING`] to every count so that no arm gets probability 0 (inverse
//! propensity weights stay finite). The standard error of an estimate p is about
//! sqrt(p(1−p)/200) ≤ 0.035.

use rand::Rng;

use super::beta::beta;
use super::{FEED_SLOTS_MAX, Posterior, Shown};

/// Monte-Carlo rounds behind each propensity estimate.
pub const PROPENSITY_DRAWS: usize = 200;
/// Pseudo-count added to every available arm's wins when estimating propensities.
pub const PROPENSITY_SMOOTHING: f64 = 0.5;
/// Most arms one allocation considers (the first ones given); bounds the Monte-Carlo work,
/// which is about `ARMS_MAX² · PROPENSITY_DRAWS` Beta draws at worst per request.
pub const ARMS_MAX: usize = 256;

fn posterior_of(posteriors: &[Posterior], arm: usize) -> Posterior {
    posteriors.get(arm).copied().unwrap_or_default()
}

/// One round of Thompson sampling: draws every available arm's posterior and returns the arm
/// with the highest draw (ties: the lowest index), or `None` when no arm is available.
/// `available[i]` false (or missing) excludes arm `i`; arms without a posterior get the prior.
pub fn choose_arm<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    available: &[bool],
    rng: &mut R,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (arm, _) in available.iter().enumerate().filter(|(_, ok)| **ok) {
        let p = posterior_of(posteriors, arm);
        let draw = beta(rng, p.alpha, p.beta);
        if best.is_none_or(|(_, b)| draw > b) {
            best = Some((arm, draw));
        }
    }
    best.map(|(arm, _)| arm)
}

/// The probability that [`choose_arm`] picks each arm (0 for unavailable arms), estimated
/// with `draws` rounds (see the module docs). All zeros when no arm is available.
pub fn arm_probabilities<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    available: &[bool],
    rng: &mut R,
    draws: usize,
) -> Vec<f64> {
    let mut wins = vec![0usize; available.len()];
    for _ in 0..draws {
        if let Some(arm) = choose_arm(posteriors, available, rng) {
            wins[arm] += 1;
        }
    }
    let open = available.iter().filter(|ok| **ok).count();
    let total = draws as f64 + PROPENSITY_SMOOTHING * open as f64;
    available
        .iter()
        .zip(wins)
        .map(|(ok, w)| if *ok { (w as f64 + PROPENSITY_SMOOTHING) / total } else { 0.0 })
        .collect()
}

/// The arm chosen for one slot, and the probability of that choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotChoice {
    pub arm: usize,
    pub propensity: f64,
}

/// Allocates up to `slots` slots (at most [`FEED_SLOTS_MAX`]): for each, one Thompson round
/// among the arms that still have items (`capacity[i]` items for arm `i`; arms past
/// [`ARMS_MAX`] are ignored). Stops early when every arm is exhausted.
///
/// When several arms have items, one arm gets at most [`arm_share_max`] of the slots, so the
/// page can be arranged with no more than [`crate::rank::SAME_SOURCE_RUN_MAX`] items of one
/// source in a row; the cap is lifted only when the other arms run out of items.
pub fn allocate_slots<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    capacity: &[usize],
    slots: usize,
    rng: &mut R,
) -> Vec<SlotChoice> {
    let mut left = capacity[..capacity.len().min(ARMS_MAX)].to_vec();
    let slots = slots.min(FEED_SLOTS_MAX);
    let mut choices = Vec::with_capacity(slots.min(left.iter().sum()));
    // Posteriors do not change within one request, so the propensities only change when
    // an arm runs out: recompute them then, not every slot.
    let mut cached: Option<(Vec<bool>, Vec<f64>)> = None;
    let share_max = if left.iter().filter(|n| **n > 0).count() > 1 { arm_share_max(slots) } else { slots };
    let mut taken = vec![0usize; left.len()];
    for _ in 0..slots {
        let mut available: Vec<bool> =
            left.iter().zip(&taken).map(|(n, t)| *n > 0 && *t < share_max).collect();
        if !available.contains(&true) {
            available = left.iter().map(|n| *n > 0).collect();
        }
        let Some(arm) = choose_arm(posteriors, &available, rng) else { break };
        if cached.as_ref().is_none_or(|(a, _)| *a != available) {
            let probs = arm_probabilities(posteriors, &available, rng, PROPENSITY_DRAWS);
            cached = Some((available, probs));
        }
        // `arm` was available, so `left[arm] > 0` and `arm < probs.len()`.
        let propensity = cached.as_ref().map_or(1.0, |(_, probs)| probs[arm]);
        left[arm] -= 1;
        taken[arm] += 1;
        choices.push(SlotChoice { arm, propensity });
    }
    choices
}

/// Most of `slots` one arm may fill so that the others can still separate its items into
/// runs of at most [`crate::rank::SAME_SOURCE_RUN_MAX`]: the largest `c` with
/// `c <= RUN_MAX * (slots - c + 1)`.
pub fn arm_share_max(slots: usize) -> usize {
    let run = crate::rank::SAME_SOURCE_RUN_MAX;
    (run * (slots + 1)) / (run + 1)
}

/// One arm's candidates for a feed, best first (as [`crate::rank::rank`] ordered them).
#[derive(Clone, Debug, PartialEq)]
pub struct ArmCandidates {
    pub arm: String,
    pub items: Vec<String>,
}

/// A feed of up to `slots` items: slots are allocated by Thompson sampling, each slot takes
/// its arm's best item not yet used, then the diversity rule of [`crate::rank::diversify_by`]
/// reorders them and positions are numbered 0.. in the final order. `posteriors[i]` belongs to
/// `arms[i]`. The propensity of an item is that of its arm's choice for the slot it filled.
pub fn plan_feed<R: Rng + ?Sized>(
    arms: &[ArmCandidates],
    posteriors: &[Posterior],
    slots: usize,
    rng: &mut R,
) -> Vec<Shown> {
    let capacity: Vec<usize> = arms.iter().map(|a| a.items.len()).collect();
    let mut next = vec![0usize; arms.len()];
    let mut shown = Vec::new();
    for choice in allocate_slots(posteriors, &capacity, slots, rng) {
        // Allocation only picks arms with items left, so both indexes are in bounds.
        let arm = &arms[choice.arm];
        let item = arm.items[next[choice.arm]].clone();
        next[choice.arm] += 1;
        shown.push(Shown { item, source: arm.arm.clone(), propensity: choice.propensity, position: 0 });
    }
    let mut shown = crate::rank::diversify_by(shown, |s| s.source.as_str());
    for (position, s) in shown.iter_mut().enumerate() {
        s.position = position as u32;
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn unavailable_arms_are_never_chosen() {
        let mut rng = StdRng::seed_from_u64(1);
        let posteriors = [Posterior { alpha: 100.0, beta: 1.0 }, Posterior::default()];
        for _ in 0..100 {
            assert_eq!(choose_arm(&posteriors, &[false, true], &mut rng), Some(1));
        }
        assert_eq!(choose_arm(&posteriors, &[false, false], &mut rng), None);
        assert_eq!(choose_arm(&posteriors, &[], &mut rng), None);
    }

    #[test]
    fn propensities_sum_to_one_and_favour_the_better_arm() {
        let mut rng = StdRng::seed_from_u64(2);
        let posteriors = [Posterior { alpha: 30.0, beta: 70.0 }, Posterior { alpha: 60.0, beta: 40.0 }];
        let probs = arm_probabilities(&posteriors, &[true, true, false], &mut rng, PROPENSITY_DRAWS);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(probs[1] > 0.95 && probs[0] > 0.0, "{probs:?}");
        assert_eq!(probs[2], 0.0);
    }

    #[test]
    fn equal_posteriors_give_equal_propensities() {
        let mut rng = StdRng::seed_from_u64(3);
        let probs = arm_probabilities(&[Posterior::default(); 2], &[true, true], &mut rng, 20_000);
        assert!((probs[0] - 0.5).abs() < 0.02, "{probs:?}");
    }

    #[test]
    fn allocation_respects_capacity_and_stops_when_exhausted() {
        let mut rng = StdRng::seed_from_u64(4);
        let choices = allocate_slots(&[Posterior::default(); 3], &[1, 0, 2], 10, &mut rng);
        assert_eq!(choices.len(), 3);
        assert_eq!(choices.iter().filter(|c| c.arm == 1).count(), 0);
        assert_eq!(choices.iter().filter(|c| c.arm == 2).count(), 2);
        assert!(choices.iter().all(|c| c.propensity > 0.0 && c.propensity <= 1.0));
        // The last slot had one arm left: it was certain.
        assert_eq!(choices.last().map(|c| c.propensity), Some(1.0));
    }

    #[test]
    fn one_strong_arm_leaves_room_for_separators() {
        assert_eq!((arm_share_max(10), arm_share_max(20), arm_share_max(1)), (7, 14, 1));
        let mut rng = StdRng::seed_from_u64(6);
        let posteriors = [Posterior { alpha: 500.0, beta: 1.0 }, Posterior { alpha: 1.0, beta: 500.0 }];
        let choices = allocate_slots(&posteriors, &[50, 50], 10, &mut rng);
        assert_eq!(choices.iter().filter(|c| c.arm == 0).count(), 7);
        // With too few others, the cap gives way rather than leave slots empty.
        let choices = allocate_slots(&posteriors, &[50, 1], 10, &mut rng);
        assert_eq!(choices.len(), 10);
    }

    #[test]
    fn feed_uses_each_item_once_with_positions_in_order() {
        let mut rng = StdRng::seed_from_u64(5);
        let arms = vec![
            ArmCandidates { arm: "a".into(), items: vec!["a1".into(), "a2".into(), "a3".into()] },
            ArmCandidates { arm: "b".into(), items: vec!["b1".into()] },
        ];
        let feed = plan_feed(&arms, &[Posterior::default(); 2], 10, &mut rng);
        let mut items: Vec<&str> = feed.iter().map(|s| s.item.as_str()).collect();
        items.sort();
        assert_eq!(items, ["a1", "a2", "a3", "b1"]);
        assert!(feed.iter().enumerate().all(|(i, s)| s.position == i as u32));
    }
}
