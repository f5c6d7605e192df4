//! Offline evaluation of a policy from the logged impressions, by inverse propensity scoring.
//!
//! Owns reading the logs back from Tidal ([`read_logs`]) and the estimators ([`evaluate`]).
//!
//! A logged impression `i` is item `x_i` shown from arm `a_i` with propensity `p_i`: the
//! logging policy's probability of choosing that item for that slot (the arm's probability
//! times the within-arm one, `super::item_choice`). Its reward `r_i` is 1 when the same user
//! liked or clicked the same item with the same context id, else 0. For a target policy
//! giving probability `π_i` of choosing `x_i` in that slot, with weights `w_i = π_i / p_i`:
//!
//! * IPS   = Σ w_i r_i / n (unbiased when the propensities are right),
//! * SNIPS = Σ w_i r_i / Σ w_i (self-normalised: a little biased, much lower variance),
//! * effective sample size = (Σ w_i)² / Σ w_i².
//!
//! Each slot is scored on its own, given what the logging policy had placed before it on
//! the page (the usual per-slot approximation for a page of several items).
//!
//! **Older logs.** Impressions logged before the item-level attributes existed carry the
//! arm's propensity only. [`read_logs`] then lets it stand in for the item's
//! (`item_level` false), which is exact when the arm's choice of item was certain and
//! otherwise overstates the propensity; a target that needs an attribute such a record
//! lacks (the candidate count, the content-greedy policy's probability) gives it a
//! probability of NaN, and it is skipped.
//!
//! Records whose propensity is not in (0, 1] or whose target probability is not in [0, 1]
//! are skipped and counted, never used.

use std::collections::{HashMap, HashSet};

use tidal::{Db, SignalKind};

use super::{
    ATTR_CANDIDATES, ATTR_GREEDY_PROPENSITY, ATTR_ITEM_PROPENSITY, ATTR_POLICY, ATTR_POSITION,
    ATTR_PROPENSITY, ATTR_WITHIN_PROPENSITY, COUNTER_USER_PREFIX,
};

/// Most impressions [`read_logs`] collects; later ones are left out and reported.
pub const LOGS_MAX: usize = 1_000_000;

/// One impression as logged, joined with its reward.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedImpression {
    pub user: String,
    pub context: String,
    pub item: String,
    /// The arm (source) the item was shown from.
    pub arm: String,
    pub position: u32,
    /// Probability that the logging policy chose this item for its slot: the logged
    /// item-level propensity, or in an older log the arm's (see `item_level`).
    pub propensity: f64,
    /// Probability that the logging policy chose the item's arm for its slot.
    pub arm_propensity: f64,
    /// `propensity` was logged for the item (false: an older log; the arm's stands in).
    pub item_level: bool,
    /// Probability that the logging policy's arm gave its turn to this item, when logged.
    pub within_propensity: Option<f64>,
    /// Candidates over all arms the slot was chosen from, when logged.
    pub candidates: Option<u32>,
    /// Probability that the content-greedy policy would have chosen this item for its
    /// slot, when logged.
    pub greedy_propensity: Option<f64>,
    pub policy: String,
    /// 1.0 when the user liked or clicked the item in the same context, else 0.0.
    pub reward: f64,
}

/// What an offline evaluation estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub ips: f64,
    pub snips: f64,
    /// Impressions used.
    pub n: usize,
    pub effective_sample_size: f64,
    /// Impressions skipped for an unusable propensity or target probability.
    pub skipped: usize,
}

/// Estimates the value (expected reward per impression) of a target policy, given as the
/// probability it would have chosen the logged arm of each impression.
pub fn evaluate(logs: &[LoggedImpression], target: impl Fn(&LoggedImpression) -> f64) -> EvalReport {
    let (mut n, mut skipped) = (0usize, 0usize);
    let (mut weighted_reward, mut weight_sum, mut weight_sq_sum) = (0.0, 0.0, 0.0);
    for log in logs {
        let pi = target(log);
        let usable = log.propensity > 0.0 && log.propensity <= 1.0 && (0.0..=1.0).contains(&pi);
        if !usable || !log.reward.is_finite() {
            skipped += 1;
            continue;
        }
        let w = pi / log.propensity;
        n += 1;
        weighted_reward += w * log.reward;
        weight_sum += w;
        weight_sq_sum += w * w;
    }
    let ips = if n > 0 { weighted_reward / n as f64 } else { 0.0 };
    let snips = if weight_sum > 0.0 { weighted_reward / weight_sum } else { 0.0 };
    let effective_sample_size =
        if weight_sq_sum > 0.0 { weight_sum * weight_sum / weight_sq_sum } else { 0.0 };
    EvalReport { ips, snips, n, effective_sample_size, skipped }
}

/// The logs read back from Tidal, and whether [`LOGS_MAX`] cut them short.
#[derive(Clone, Debug, Default)]
pub struct Logs {
    pub impressions: Vec<LoggedImpression>,
    pub truncated: bool,
}

type RewardKey = (String, String, String);

/// Reads every logged impression (signals of kind `impression` carrying a `propensity`
/// attribute and a context id; the bandit's counter users are left out) from the whole
/// history of every shard (`tidal::history::scan_history`), and joins each with its reward.
pub fn read_logs(db: &Db) -> Result<Logs, tidal::Error> {
    let mut logs = Logs::default();
    let mut rewarded: HashSet<RewardKey> = HashSet::new();
    let seqs = db.applied_seqs();
    for (shard, seq) in seqs.iter().enumerate() {
        tidal::history::scan_history(db.vfs(), db.dir(), shard as u32, seq + 1, |_, _, s| {
            if s.user.starts_with(COUNTER_USER_PREFIX) {
                return Ok(());
            }
            let Some(context) = s.context else { return Ok(()) };
            if matches!(s.kind, SignalKind::Like | SignalKind::Click) {
                rewarded.insert((s.user.to_owned(), context.to_owned(), s.item.to_owned()));
            } else if s.kind == SignalKind::Impression {
                let Some(log) = logged_impression(&s, context) else { return Ok(()) };
                if logs.impressions.len() >= LOGS_MAX {
                    logs.truncated = true;
                    return Ok(());
                }
                logs.impressions.push(log);
            }
            Ok(())
        })?;
    }
    for log in &mut logs.impressions {
        if rewarded.contains(&(log.user.clone(), log.context.clone(), log.item.clone())) {
            log.reward = 1.0;
        }
    }
    Ok(logs)
}

/// The impression `s` as a log record (reward 0 until joined), `None` when it carries no
/// usable `propensity` (not logged by a policy). An `item_propensity` that does not parse
/// counts as absent: the record is then read as an older log.
fn logged_impression(s: &tidal::SignalRef<'_>, context: &str) -> Option<LoggedImpression> {
    let attrs: HashMap<&str, &str> = s.attrs.iter().copied().collect();
    let arm_propensity: f64 = attrs.get(ATTR_PROPENSITY)?.parse().ok()?;
    let item_propensity: Option<f64> = attrs.get(ATTR_ITEM_PROPENSITY).and_then(|p| p.parse().ok());
    Some(LoggedImpression {
        user: s.user.to_owned(),
        context: context.to_owned(),
        item: s.item.to_owned(),
        arm: s.source.unwrap_or_default().to_owned(),
        position: attrs.get(ATTR_POSITION).and_then(|p| p.parse().ok()).unwrap_or(0),
        propensity: item_propensity.unwrap_or(arm_propensity),
        arm_propensity,
        item_level: item_propensity.is_some(),
        within_propensity: attrs.get(ATTR_WITHIN_PROPENSITY).and_then(|p| p.parse().ok()),
        candidates: attrs.get(ATTR_CANDIDATES).and_then(|c| c.parse().ok()),
        greedy_propensity: attrs.get(ATTR_GREEDY_PROPENSITY).and_then(|p| p.parse().ok()),
        policy: attrs.get(ATTR_POLICY).copied().unwrap_or_default().to_owned(),
        reward: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(arm: &str, propensity: f64, reward: f64) -> LoggedImpression {
        LoggedImpression {
            user: "u".into(),
            context: "c".into(),
            item: "i".into(),
            arm: arm.into(),
            position: 0,
            propensity,
            arm_propensity: propensity,
            item_level: true,
            within_propensity: None,
            candidates: None,
            greedy_propensity: None,
            policy: "test".into(),
            reward,
        }
    }

    #[test]
    fn same_policy_weights_are_one() {
        let logs = [log("a", 0.5, 1.0), log("b", 0.5, 0.0)];
        let report = evaluate(&logs, |_| 0.5);
        assert_eq!(report.n, 2);
        assert!((report.ips - 0.5).abs() < 1e-12);
        assert!((report.snips - 0.5).abs() < 1e-12);
        assert!((report.effective_sample_size - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_records_are_skipped() {
        let logs = [log("a", 0.0, 1.0), log("a", f64::NAN, 1.0), log("a", 0.5, 1.0), log("b", 0.5, 1.0)];
        let report = evaluate(&logs, |l| if l.arm == "b" { 2.0 } else { 1.0 });
        assert_eq!((report.n, report.skipped), (1, 3));
        assert!((report.ips - 2.0).abs() < 1e-12);
    }

    #[test]
    fn no_logs_no_estimate() {
        assert_eq!(evaluate(&[], |_| 1.0), EvalReport::default());
    }
}
