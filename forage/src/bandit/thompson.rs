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
use crate::rank::Diversity;

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
    allocate_slots_with(posteriors, capacity, &|_, _| 0.0, slots, Diversity::default(), rng)
}

/// [`allocate_slots`] with item offsets and a diversity rule (its share cap per arm). A slot
/// goes to the arm with the highest `draw + offset(arm, k)`, where `draw` is a sample of the
/// arm's posterior and `k` the number of items the arm gave already (so the offset is that
/// of the item the arm would give next: the feed passes the item's rank score, so an arm
/// whose remaining items are poor loses slots even while its past like rate is high). The
/// propensity is the probability of that choice given the offsets, estimated with
/// [`PROPENSITY_DRAWS`] rounds of posterior draws made once per call (the posteriors do not
/// change within a call).
pub fn allocate_slots_with<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    capacity: &[usize],
    offset: &dyn Fn(usize, usize) -> f64,
    slots: usize,
    diversity: Diversity,
    rng: &mut R,
) -> Vec<SlotChoice> {
    allocate(posteriors, capacity, offset, slots, diversity, rng).choices
}

/// What [`allocate`] decided, and what its propensities were estimated from (the item-level
/// estimate of [`super::item_choice`] reuses both).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allocation {
    pub choices: Vec<SlotChoice>,
    /// Arms considered (at most [`ARMS_MAX`]).
    pub arms: usize,
    /// `rounds[r * arms + a]`: arm `a`'s posterior draw in Monte-Carlo round `r`.
    pub rounds: Vec<f64>,
    /// `available[step][a]`: whether arm `a` could take the slot decided at `step`.
    pub available: Vec<Vec<bool>>,
}

/// [`allocate_slots_with`], returning the whole [`Allocation`].
pub fn allocate<R: Rng + ?Sized>(
    posteriors: &[Posterior],
    capacity: &[usize],
    offset: &dyn Fn(usize, usize) -> f64,
    slots: usize,
    diversity: Diversity,
    rng: &mut R,
) -> Allocation {
    let mut left = capacity[..capacity.len().min(ARMS_MAX)].to_vec();
    let arms = left.len();
    let slots = slots.min(FEED_SLOTS_MAX);
    let mut choices = Vec::with_capacity(slots.min(left.iter().sum()));
    let mut available_at = Vec::with_capacity(choices.capacity());
    // rounds[r * arms + a]: arm a's posterior draw in Monte-Carlo round r.
    let rounds: Vec<f64> = (0..PROPENSITY_DRAWS)
        .flat_map(|_| (0..arms).map(|a| posterior_of(posteriors, a)).collect::<Vec<_>>())
        .map(|p| beta(rng, p.alpha, p.beta))
        .collect();
    let share_max =
        if left.iter().filter(|n| **n > 0).count() > 1 { diversity.share_max(slots) } else { slots };
    let mut taken = vec![0usize; arms];
    for _ in 0..slots {
        let mut available: Vec<bool> =
            left.iter().zip(&taken).map(|(n, t)| *n > 0 && *t < share_max).collect();
        if !available.contains(&true) {
            available = left.iter().map(|n| *n > 0).collect();
        }
        let offsets: Vec<f64> = (0..arms)
            .map(|a| if available[a] { sanitize_offset(offset(a, taken[a])) } else { 0.0 })
            .collect();
        let draw = |a: usize, rng: &mut R| {
            let p = posterior_of(posteriors, a);
            beta(rng, p.alpha, p.beta)
        };
        let Some(arm) = best_arm(&available, &offsets, |a| draw(a, rng)) else { break };
        let mut wins = vec![0usize; arms];
        for r in 0..PROPENSITY_DRAWS {
            if let Some(w) = best_arm(&available, &offsets, |a| rounds[r * arms + a]) {
                wins[w] += 1;
            }
        }
        let open = available.iter().filter(|ok| **ok).count();
        let total = PROPENSITY_DRAWS as f64 + PROPENSITY_SMOOTHING * open as f64;
        let propensity = (wins[arm] as f64 + PROPENSITY_SMOOTHING) / total;
        left[arm] -= 1;
        taken[arm] += 1;
        choices.push(SlotChoice { arm, propensity });
        available_at.push(available);
    }
    Allocation { choices, arms, rounds, available: available_at }
}

/// Offsets that are not finite count as 0.
pub(super) fn sanitize_offset(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// The available arm with the highest `value(arm) + offsets[arm]` (ties: the lowest index).
pub(super) fn best_arm(
    available: &[bool],
    offsets: &[f64],
    mut value: impl FnMut(usize) -> f64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (arm, _) in available.iter().enumerate().filter(|(_, ok)| **ok) {
        let v = value(arm) + offsets[arm];
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((arm, v));
        }
    }
    best.map(|(arm, _)| arm)
}

/// Most of `slots` one arm may fill so that the others can still separate its items into
/// runs of at most [`crate::rank::SAME_SOURCE_RUN_MAX`]: the largest `c` with
/// `c <= RUN_MAX * (slots - c + 1)`.
pub fn arm_share_max(slots: usize) -> usize {
    Diversity::default().share_max(slots)
}

/// One arm's candidates for a feed, best first (as [`crate::rank::rank`] ordered them).
#[derive(Clone, Debug, PartialEq)]
pub struct ArmCandidates {
    pub arm: String,
    pub items: Vec<String>,
    /// Each item's rank score, in the same order; empty when the slots should follow the
    /// arm posteriors alone. Scores enter the slot choice as offsets (see
    /// [`allocate_slots_with`]), weighted by [`ITEM_SCORE_WEIGHT`].
    pub scores: Vec<f64>,
}

/// Weight of an arm's next item's rank score in the slot choice, against a draw of the
/// arm's posterior (both are on a like-probability-like scale).
pub const ITEM_SCORE_WEIGHT: f64 = 1.0;

/// A feed of up to `slots` items: slots are allocated by Thompson sampling, each slot takes
/// its arm's best item not yet used, then the diversity rule of [`crate::rank::diversify_by`]
/// reorders them and positions are numbered 0.. in the final order. `posteriors[i]` belongs to
/// `arms[i]`. The propensity of an item is that of its arm's choice for the slot it filled;
/// each item also carries the step that decided its slot and its rank in its arm, from which
/// the caller estimates the item-level propensity ([`super::item_choice`]).
pub fn plan_feed<R: Rng + ?Sized>(
    arms: &[ArmCandidates],
    posteriors: &[Posterior],
    slots: usize,
    rng: &mut R,
) -> Vec<Shown> {
    plan_feed_with(arms, posteriors, slots, Diversity::default(), rng)
}

/// [`plan_feed`] under a given diversity rule.
pub fn plan_feed_with<R: Rng + ?Sized>(
    arms: &[ArmCandidates],
    posteriors: &[Posterior],
    slots: usize,
    diversity: Diversity,
    rng: &mut R,
) -> Vec<Shown> {
    plan_feed_allocated(arms, posteriors, slots, diversity, rng).0
}

/// [`plan_feed_with`], and the [`Allocation`] behind it.
pub fn plan_feed_allocated<R: Rng + ?Sized>(
    arms: &[ArmCandidates],
    posteriors: &[Posterior],
    slots: usize,
    diversity: Diversity,
    rng: &mut R,
) -> (Vec<Shown>, Allocation) {
    let capacity: Vec<usize> = arms.iter().map(|a| a.items.len()).collect();
    let mut next = vec![0usize; arms.len()];
    let mut shown = Vec::new();
    let offset = |arm: usize, k: usize| arms[arm].scores.get(k).map_or(0.0, |s| ITEM_SCORE_WEIGHT * s);
    let allocation = allocate(posteriors, &capacity, &offset, slots, diversity, rng);
    for (step, choice) in allocation.choices.iter().enumerate() {
        // Allocation only picks arms with items left, so both indexes are in bounds.
        let arm = &arms[choice.arm];
        let rank = next[choice.arm];
        next[choice.arm] += 1;
        shown.push(Shown {
            item: arm.items[rank].clone(),
            source: arm.arm.clone(),
            propensity: choice.propensity,
            position: 0,
            step: step as u32,
            rank: rank as u32,
            item_level: None,
        });
    }
    let run = diversity.same_source_run_max.unwrap_or(0);
    let mut shown = crate::rank::diversify_with(shown, run, |s| s.source.as_str());
    for (position, s) in shown.iter_mut().enumerate() {
        s.position = position as u32;
    }
    (shown, allocation)
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
    fn an_arm_whose_next_item_is_poor_loses_slots() {
        let mut rng = StdRng::seed_from_u64(7);
        // Arm 0 had the better like rate, but its items score far below arm 1's.
        let posteriors = [Posterior { alpha: 60.0, beta: 40.0 }, Posterior { alpha: 50.0, beta: 50.0 }];
        let offset = |arm: usize, _k: usize| if arm == 0 { 0.0 } else { 0.4 };
        let choices = allocate_slots_with(&posteriors, &[20, 20], &offset, 10, Diversity::OFF, &mut rng);
        assert_eq!(choices.iter().filter(|c| c.arm == 1).count(), 10, "{choices:?}");
        assert!(choices.iter().all(|c| c.propensity > 0.9), "the choice was near-certain: {choices:?}");
        // Without offsets the better posterior wins.
        let choices = allocate_slots_with(&posteriors, &[20, 20], &|_, _| 0.0, 10, Diversity::OFF, &mut rng);
        assert!(choices.iter().filter(|c| c.arm == 0).count() >= 7, "{choices:?}");
    }

    #[test]
    fn feed_uses_each_item_once_with_positions_in_order() {
        let mut rng = StdRng::seed_from_u64(5);
        let arms = vec![
            ArmCandidates {
                arm: "a".into(),
                items: vec!["a1".into(), "a2".into(), "a3".into()],
                scores: vec![],
            },
            ArmCandidates { arm: "b".into(), items: vec!["b1".into()], scores: vec![] },
        ];
        let feed = plan_feed(&arms, &[Posterior::default(); 2], 10, &mut rng);
        let mut items: Vec<&str> = feed.iter().map(|s| s.item.as_str()).collect();
        items.sort();
        assert_eq!(items, ["a1", "a2", "a3", "b1"]);
        assert!(feed.iter().enumerate().all(|(i, s)| s.position == i as u32));
        // Every step once; an arm's items in rank order.
        let mut steps: Vec<u32> = feed.iter().map(|s| s.step).collect();
        steps.sort();
        assert_eq!(steps, [0, 1, 2, 3]);
        for s in &feed {
            let arm = arms.iter().find(|a| a.arm == s.source).expect("arm");
            assert_eq!(arm.items[s.rank as usize], s.item);
        }
    }
}
