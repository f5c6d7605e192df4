//! Label thresholds calibrated from the labels' own examples, and the assignment rule.
//!
//! Owns two decisions:
//! - **Calibration** ([`calibrate`]): a calibrated label's threshold separates its own
//!   positives (the leave-one-out similarities of its examples and confirmed items: each to
//!   the prototype of the others, which is how a new item relates to the prototype) from its
//!   negatives (the other labels' examples and its rejected items, against its prototype). The
//!   threshold is the middle of the widest interval that maximises Youden's J = TPR − FPR
//!   over those two sets, clamped to [[`CALIBRATED_MIN`], [`CALIBRATED_MAX`]]. Short texts
//!   sit at similarities around 0.3 to their own label under all-MiniLM-L6-v2, so a fixed 0.35
//!   misses half of them; the calibrated value follows the data.
//! - **Assignment** ([`decide`]): a label with a hand-set threshold is given when its
//!   similarity reaches the threshold; a calibrated one also needs to be within
//!   [`CO_LABEL_MARGIN`] of the best label's similarity (a second label must be about as
//!   close as the first). When no label is given that way, the nearest label is given if it
//!   beats the runner-up by [`NEAREST_MARGIN`] and reaches [`NEAREST_FLOOR`] (one label is
//!   clearly best), unless it is strict; with a single label there is no runner-up and no
//!   fallback. Feedback forcing (confirmed, rejected) applies on
//!   top, in `labels::Prototypes`.

/// Lowest calibrated threshold.
pub const CALIBRATED_MIN: f32 = 0.1;
/// Highest calibrated threshold.
pub const CALIBRATED_MAX: f32 = 0.9;
// The three margins below were chosen on the dev half of the news eval set
// (`tests/labels_news_eval.rs` splits it; the held-out half is reported apart), not on the
// whole set.
/// How much closer than the runner-up the nearest label must be for the fallback.
pub const NEAREST_MARGIN: f32 = 0.01;
/// Least similarity the nearest label needs for the fallback (centred similarities: 0
/// means "closer than the average text").
pub const NEAREST_FLOOR: f32 = 0.0;
/// How far below the best label's similarity a calibrated label may be and still be given.
pub const CO_LABEL_MARGIN: f32 = 0.01;

/// The calibrated threshold from the positives' and negatives' similarities (see the module
/// docs); `None` without positives (a label with a single example and no confirmations).
pub fn calibrate(positives: &[f32], negatives: &[f32]) -> Option<f32> {
    let positives: Vec<f32> = positives.iter().copied().filter(|x| x.is_finite()).collect();
    let negatives: Vec<f32> = negatives.iter().copied().filter(|x| x.is_finite()).collect();
    if positives.is_empty() {
        return None;
    }
    let mut cuts: Vec<f32> = positives.iter().chain(&negatives).copied().collect();
    cuts.sort_by(f32::total_cmp);
    cuts.dedup();
    let j = |t: f32| {
        let tpr = positives.iter().filter(|p| **p >= t).count() as f32 / positives.len() as f32;
        let fpr = if negatives.is_empty() {
            0.0
        } else {
            negatives.iter().filter(|n| **n >= t).count() as f32 / negatives.len() as f32
        };
        tpr - fpr
    };
    // Candidate thresholds: each distinct value (t = value keeps it above). The best J is
    // reached on a run of consecutive cuts; take the middle between that run's first cut
    // and the value just below it, so the threshold sits in the gap, not on a point.
    let scores: Vec<f32> = cuts.iter().map(|t| j(*t)).collect();
    let best = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut best_gap, mut threshold) = (f32::NEG_INFINITY, cuts[0]);
    for (i, t) in cuts.iter().enumerate() {
        if scores[i] < best - 1e-6 {
            continue;
        }
        let below = if i == 0 { t - 0.1 } else { cuts[i - 1] };
        if t - below > best_gap {
            best_gap = t - below;
            threshold = (t + below) / 2.0;
        }
    }
    Some(threshold.clamp(CALIBRATED_MIN, CALIBRATED_MAX))
}

/// What [`decide`] needs to know of one label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub threshold: f32,
    pub calibrated: bool,
    pub strict: bool,
}

/// The labels (indices into `rules`) an embedding gets from its similarities `sims`
/// (`sims[i]` to label `i`); see the module docs. Labels with an empty prototype score 0 and
/// are never the nearest one.
pub fn decide(rules: &[Rule], sims: &[f32]) -> Vec<usize> {
    let best = sims.iter().copied().filter(|s| s.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let given: Vec<usize> = rules
        .iter()
        .zip(sims)
        .enumerate()
        .filter(|(_, (r, s))| **s >= r.threshold && (!r.calibrated || **s >= best - CO_LABEL_MARGIN))
        .map(|(i, _)| i)
        .collect();
    if !given.is_empty() {
        return given;
    }
    let mut order: Vec<usize> = (0..rules.len().min(sims.len())).filter(|i| sims[*i].is_finite()).collect();
    order.sort_by(|a, b| sims[*b].total_cmp(&sims[*a]).then(a.cmp(b)));
    // "Clearly best" needs a competitor: with a single label there is nothing to beat.
    let (Some(&nearest), Some(&second)) = (order.first(), order.get(1)) else { return Vec::new() };
    let runner_up = sims[second].max(0.0);
    let clear = sims[nearest] >= NEAREST_FLOOR && sims[nearest] - runner_up >= NEAREST_MARGIN;
    if clear && !rules[nearest].strict { vec![nearest] } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_sits_in_the_gap_between_positives_and_negatives() {
        let t = calibrate(&[0.30, 0.35, 0.42, 0.5], &[0.02, 0.1, 0.18, 0.05]).expect("threshold");
        assert!((t - 0.24).abs() < 1e-6, "{t}");
        // Overlap: J is best with the two low positives given up... or not: the cut keeps
        // more positives than negatives it lets in.
        let t = calibrate(&[0.2, 0.3, 0.4, 0.5], &[0.1, 0.25, 0.05, 0.0]).expect("threshold");
        assert!(t > 0.1 && t <= 0.3, "{t}");
        assert_eq!(calibrate(&[], &[0.1]), None);
        assert_eq!(calibrate(&[0.99], &[]), Some(CALIBRATED_MAX));
        assert_eq!(calibrate(&[0.01], &[0.0]), Some(CALIBRATED_MIN));
    }

    fn rule(threshold: f32, calibrated: bool, strict: bool) -> Rule {
        Rule { threshold, calibrated, strict }
    }

    #[test]
    fn calibrated_labels_need_to_be_near_the_best_and_manual_ones_do_not() {
        let rules = [rule(0.2, true, false), rule(0.2, true, false), rule(0.2, false, false)];
        assert_eq!(decide(&rules, &[0.5, 0.3, 0.3]), [0, 2]);
        assert_eq!(decide(&rules, &[0.5, 0.495, 0.1]), [0, 1]);
        assert_eq!(decide(&rules, &[0.5, 0.47, 0.1]), [0], "too far below the best");
    }

    #[test]
    fn a_clear_nearest_label_is_given_unless_strict() {
        let rules = [rule(0.4, true, false), rule(0.4, true, false)];
        assert_eq!(decide(&rules, &[0.3, 0.1]), [0], "clearly nearest");
        assert!(decide(&rules, &[0.3, 0.295]).is_empty(), "too close to call");
        assert!(decide(&rules, &[-0.05, -0.2]).is_empty(), "too far from everything");
        let strict = [rule(0.4, true, true), rule(0.4, true, false)];
        assert!(decide(&strict, &[0.3, 0.1]).is_empty());
        assert!(decide(&[], &[]).is_empty());
        assert!(decide(&[rule(0.4, true, false)], &[0.3]).is_empty(), "a lone label has nothing to beat");
    }
}
