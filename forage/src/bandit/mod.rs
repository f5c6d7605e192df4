//! Bandit exploration over sources (and optionally labels): every arm has a Beta posterior
//! over its like-probability, Thompson sampling allocates the feed's slots, and every shown
//! item is logged to Tidal as an impression with its propensity so that other policies can
//! be evaluated offline ([`ips`]).
//!
//! Arms are opaque names: a source id, or a label written as e.g. `label:{name}` when labels
//! are explored too. Submodules: [`beta`] (the sampler), [`thompson`] (choices, slot
//! allocation, propensities, feed planning), [`linear`] (the contextual bandit over item
//! content: linear Thompson sampling on projected embeddings), [`item_choice`] (the
//! item-level propensity: which of a source's candidates its turn went to), [`ips`]
//! (offline evaluation).
//!
//! # What an impression logs
//!
//! Attributes [`ATTR_PROPENSITY`] (the source-level probability of the slot's source choice,
//! logged since the first version), [`ATTR_POSITION`] and [`ATTR_POLICY`]; and, from the
//! feed since the item-level estimate exists, [`ATTR_ITEM_PROPENSITY`],
//! [`ATTR_WITHIN_PROPENSITY`], [`ATTR_CANDIDATES`] and [`ATTR_GREEDY_PROPENSITY`] (see
//! [`item_choice`]). Readers take an
//! impression without the item-level attributes as an older log: its source-level
//! propensity stands in ([`ips::read_logs`]).
//!
//! # Reward model (what a posterior counts)
//!
//! For one `(user, arm)` pair, with `I` impressions, `R` rewards (like and click signals) and
//! `N` explicit negatives (skip and dislike signals):
//!
//! * `alpha = PRIOR_ALPHA + R`
//! * `beta  = PRIOR_BETA + max(I − R, N)`
//!
//! An impression without a reward counts as no reward as soon as it is logged (there is no
//! waiting window: a later like simply moves one unit from `beta` to `alpha`). Explicit
//! negatives are already among the unrewarded impressions when the item was shown through
//! the feed; they only count on their own when they outnumber those (feedback on items that
//! were never logged as shown). A click followed by a like on one item counts as two rewards.
//!
//! # Where the counts live in Tidal
//!
//! A user's history in Tidal does not keep the source of a signal, and item aggregates sum
//! over all users, so the bandit keeps one **counter item** per `(user, arm)`:
//! item [`arm_item_id`] = `arm:{user}:{arm}`, written by the **counter user**
//! [`counter_user_id`] = `forage-arms:{user}` (a separate user so the counters never crowd
//! the real user's bounded history ring, nor show up among their hard negatives).
//! [`log_impressions`] and [`feedback_signals`] write the real signal and the counter signal
//! together; [`read_posteriors`] reads the counters' per-kind counts with [`TidalAccess::item_counts`].
//! The two may live on different shards: a crash between them can lose one counter update,
//! which shifts a posterior by one observation and never corrupts anything.

pub mod beta;
pub mod ips;
pub mod item_choice;
pub mod linear;
pub mod thompson;

use std::collections::BTreeMap;

use tidal::{Ack, Signal, SignalKind};

use crate::store::{StoreError, TidalAccess};

pub use ips::{EvalReport, LoggedImpression, Logs, evaluate, read_logs};
pub use thompson::{
    Allocation, ArmCandidates, SlotChoice, allocate, allocate_slots, allocate_slots_with, arm_probabilities,
    choose_arm, plan_feed, plan_feed_allocated, plan_feed_with,
};

/// Prior successes of every arm: Beta(1, 1) is uniform over the like-probability.
pub const PRIOR_ALPHA: f64 = 1.0;
/// Prior failures of every arm.
pub const PRIOR_BETA: f64 = 1.0;
/// Name of the Thompson-sampling policy in the impressions' `policy` attribute.
pub const POLICY_THOMPSON: &str = "thompson";
/// Attribute holding the probability with which the policy chose the item's arm.
pub const ATTR_PROPENSITY: &str = "propensity";
/// Attribute holding the probability with which the policy chose the item itself for its
/// slot (its arm's choice and the item's within the arm, together: [`item_choice`]).
pub const ATTR_ITEM_PROPENSITY: &str = "item_propensity";
/// Attribute holding the probability that the arm's turn went to this item.
pub const ATTR_WITHIN_PROPENSITY: &str = "within_propensity";
/// Attribute holding the number of candidates (over all arms) the slot was chosen from.
pub const ATTR_CANDIDATES: &str = "candidates";
/// Attribute holding the probability that the content-greedy policy (the feed ranking by
/// the content model's mean instead of a draw) would have chosen this item for the slot.
pub const ATTR_GREEDY_PROPENSITY: &str = "greedy_propensity";
/// Attribute holding the item's 0-based position in the feed.
pub const ATTR_POSITION: &str = "position";
/// Attribute naming the policy that chose the item.
pub const ATTR_POLICY: &str = "policy";
/// Prefix of counter items: `arm:{user}:{arm}`.
pub const ARM_ITEM_PREFIX: &str = "arm:";
/// Prefix of counter users: `forage-arms:{user}`.
pub const COUNTER_USER_PREFIX: &str = "forage-arms:";
/// Longest context id, in bytes: the idempotency key `imp:{context}:{position}` must stay
/// under Tidal's 128-byte key limit.
pub const CONTEXT_ID_BYTES_MAX: usize = 96;
/// Most items one feed logs at once.
pub const FEED_SLOTS_MAX: usize = 500;

/// What the bandit can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BanditError {
    /// The caller passed something unusable; nothing was written.
    #[error("invalid input: {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    /// Tidal refused or failed the write or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, reason: impl Into<String>) -> BanditError {
    BanditError::InvalidInput { field: field.to_owned(), reason: reason.into() }
}

/// A Beta posterior over an arm's reward probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posterior {
    pub alpha: f64,
    pub beta: f64,
}

impl Default for Posterior {
    fn default() -> Self {
        Posterior { alpha: PRIOR_ALPHA, beta: PRIOR_BETA }
    }
}

impl Posterior {
    /// The posterior mean, alpha / (alpha + beta).
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// One more observation: a reward or not.
    pub fn update(&mut self, reward: bool) {
        if reward {
            self.alpha += 1.0;
        } else {
            self.beta += 1.0;
        }
    }
}

/// What Tidal knows about one `(user, arm)` pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmCounts {
    pub impressions: u64,
    /// Like and click signals.
    pub rewards: u64,
    /// Skip and dislike signals.
    pub negatives: u64,
}

/// The posterior for some counts (see the module docs for the rule).
pub fn posterior_from_counts(counts: ArmCounts) -> Posterior {
    let unrewarded = counts.impressions.saturating_sub(counts.rewards).max(counts.negatives);
    Posterior { alpha: PRIOR_ALPHA + counts.rewards as f64, beta: PRIOR_BETA + unrewarded as f64 }
}

/// The counter item of `(user, arm)`.
pub fn arm_item_id(user: &str, arm: &str) -> String {
    format!("{ARM_ITEM_PREFIX}{user}:{arm}")
}

/// The user that writes `user`'s counter signals.
pub fn counter_user_id(user: &str) -> String {
    format!("{COUNTER_USER_PREFIX}{user}")
}

/// The counts of `(user, arm)` as Tidal holds them now (zero when never seen).
pub fn read_counts(store: &dyn TidalAccess, user: &str, arm: &str) -> Result<ArmCounts, StoreError> {
    let counts = store.item_counts(&arm_item_id(user, arm))?;
    let count = |kind: &SignalKind| counts.get(kind);
    Ok(ArmCounts {
        impressions: count(&SignalKind::Impression),
        rewards: count(&SignalKind::Like) + count(&SignalKind::Click),
        negatives: count(&SignalKind::Skip) + count(&SignalKind::Dislike),
    })
}

/// The posterior of every arm, in the order given.
pub fn read_posteriors(
    store: &dyn TidalAccess,
    user: &str,
    arms: &[&str],
) -> Result<Vec<Posterior>, StoreError> {
    arms.iter().map(|arm| Ok(posterior_from_counts(read_counts(store, user, arm)?))).collect()
}

/// One item shown in a feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shown {
    pub item: String,
    /// The arm (source) the item was drawn from.
    pub source: String,
    /// Probability with which the policy chose this arm for this slot, in (0, 1].
    pub propensity: f64,
    /// 0-based position in the feed.
    pub position: u32,
    /// 0-based order in which the page's slots were decided (positions are rearranged
    /// afterwards by the diversity rule).
    pub step: u32,
    /// Items the arm gave on this page before this one: the item is the arm's candidate of
    /// this rank.
    pub rank: u32,
    /// The item-level decision, when estimated; `None` logs the arm-level propensity alone.
    pub item_level: Option<ItemLevel>,
}

/// The item-level side of a slot's decision ([`item_choice`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemLevel {
    /// Probability with which the policy chose this item for this slot, in (0, 1].
    pub propensity: f64,
    /// Probability that the arm's turn went to this item, in (0, 1].
    pub within: f64,
    /// Candidates over all arms the slot was chosen from.
    pub candidates: u32,
    /// Probability that the content-greedy policy chooses this item for this slot, in
    /// [0, 1] (`None`: no content model).
    pub greedy: Option<f64>,
}

fn check_context(context: &str) -> Result<(), BanditError> {
    if context.is_empty() || context.len() > CONTEXT_ID_BYTES_MAX {
        return Err(invalid("context", format!("must be 1..={CONTEXT_ID_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Logs every shown item as an `impression` of `user` with attrs `propensity`, `position` and
/// `policy` (and the item-level ones when estimated, see the module docs), the request's
/// `context` id and the idempotency key `imp:{context}:{position}` (a retried request logs
/// once), plus one counter impression per item (see the module docs). Everything is
/// validated before anything is written.
pub fn log_impressions(
    store: &dyn TidalAccess,
    user: &str,
    context: &str,
    policy: &str,
    shown: &[Shown],
) -> Result<Vec<Ack>, BanditError> {
    check_context(context)?;
    if shown.len() > FEED_SLOTS_MAX {
        return Err(invalid("shown", format!("at most {FEED_SLOTS_MAX} items")));
    }
    let counter_user = counter_user_id(user);
    let mut signals = Vec::with_capacity(shown.len() * 2);
    for s in shown {
        if !(s.propensity > 0.0 && s.propensity <= 1.0) {
            return Err(invalid("propensity", format!("{} is not in (0, 1]", s.propensity)));
        }
        let key = format!("imp:{context}:{}", s.position);
        let mut attrs = BTreeMap::new();
        attrs.insert(ATTR_PROPENSITY.to_owned(), s.propensity.to_string());
        attrs.insert(ATTR_POSITION.to_owned(), s.position.to_string());
        attrs.insert(ATTR_POLICY.to_owned(), policy.to_owned());
        if let Some(level) = &s.item_level {
            let probability = |p: f64| p > 0.0 && p <= 1.0;
            if !probability(level.propensity) || !probability(level.within) {
                return Err(invalid("item_level", format!("{level:?}: propensities not in (0, 1]")));
            }
            if level.greedy.is_some_and(|g| !(0.0..=1.0).contains(&g)) {
                return Err(invalid("item_level", format!("{level:?}: greedy propensity not in [0, 1]")));
            }
            attrs.insert(ATTR_ITEM_PROPENSITY.to_owned(), level.propensity.to_string());
            attrs.insert(ATTR_WITHIN_PROPENSITY.to_owned(), level.within.to_string());
            attrs.insert(ATTR_CANDIDATES.to_owned(), level.candidates.to_string());
            if let Some(greedy) = level.greedy {
                attrs.insert(ATTR_GREEDY_PROPENSITY.to_owned(), greedy.to_string());
            }
        }
        let mut impression = Signal::new(user, &s.item, SignalKind::Impression);
        impression.context = Some(context.to_owned());
        impression.source = Some(s.source.clone());
        impression.idempotency_key = Some(key.clone());
        impression.attrs = attrs;
        let mut counter = Signal::new(&counter_user, arm_item_id(user, &s.source), SignalKind::Impression);
        counter.context = Some(context.to_owned());
        counter.idempotency_key = Some(key);
        signals.push(impression);
        signals.push(counter);
    }
    Ok(store.write(signals)?)
}

/// The signals to write for a piece of feedback (`kind` like, click, skip or dislike) on an
/// item shown from `source` in the request `context`: the user's own signal (carrying the
/// context, so [`ips::read_logs`] can join it to its impression) and the arm's counter signal.
/// Both get `idempotency_key` when given (scoped per user by Tidal, so they do not collide).
pub fn feedback_signals(
    user: &str,
    item: &str,
    source: &str,
    context: Option<&str>,
    kind: SignalKind,
    idempotency_key: Option<&str>,
) -> Result<Vec<Signal>, BanditError> {
    if !matches!(kind, SignalKind::Like | SignalKind::Click | SignalKind::Skip | SignalKind::Dislike) {
        return Err(invalid("kind", format!("`{kind}` is not bandit feedback")));
    }
    if let Some(context) = context {
        check_context(context)?;
    }
    let mut own = Signal::new(user, item, kind.clone());
    own.context = context.map(str::to_owned);
    own.source = Some(source.to_owned());
    own.idempotency_key = idempotency_key.map(str::to_owned);
    let mut counter = Signal::new(counter_user_id(user), arm_item_id(user, source), kind);
    counter.context = own.context.clone();
    counter.idempotency_key = own.idempotency_key.clone();
    Ok(vec![own, counter])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_only_without_counts() {
        assert_eq!(
            posterior_from_counts(ArmCounts::default()),
            Posterior { alpha: PRIOR_ALPHA, beta: PRIOR_BETA }
        );
    }

    #[test]
    fn impressions_without_reward_count_as_failures() {
        let p = posterior_from_counts(ArmCounts { impressions: 10, rewards: 3, negatives: 2 });
        assert_eq!(p, Posterior { alpha: PRIOR_ALPHA + 3.0, beta: PRIOR_BETA + 7.0 });
    }

    #[test]
    fn negatives_without_impressions_still_count() {
        let p = posterior_from_counts(ArmCounts { impressions: 0, rewards: 1, negatives: 4 });
        assert_eq!(p, Posterior { alpha: PRIOR_ALPHA + 1.0, beta: PRIOR_BETA + 4.0 });
    }

    #[test]
    fn more_rewards_than_impressions_never_underflow() {
        let p = posterior_from_counts(ArmCounts { impressions: 1, rewards: 2, negatives: 0 });
        assert_eq!(p, Posterior { alpha: PRIOR_ALPHA + 2.0, beta: PRIOR_BETA });
    }

    #[test]
    fn update_moves_the_mean() {
        let mut p = Posterior::default();
        assert_eq!(p.mean(), 0.5);
        p.update(true);
        p.update(true);
        p.update(false);
        assert_eq!(p, Posterior { alpha: 3.0, beta: 2.0 });
        assert!((p.mean() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn feedback_rejects_non_feedback_kinds_and_long_contexts() {
        assert!(feedback_signals("u", "i", "s", None, SignalKind::Impression, None).is_err());
        let long = "c".repeat(CONTEXT_ID_BYTES_MAX + 1);
        assert!(feedback_signals("u", "i", "s", Some(&long), SignalKind::Like, None).is_err());
        let ok = feedback_signals("u", "i", "s", Some("c1"), SignalKind::Like, Some("k")).unwrap();
        assert_eq!(ok[1].item, arm_item_id("u", "s"));
        assert_eq!(ok[1].user, counter_user_id("u"));
        assert_eq!(ok[0].context.as_deref(), Some("c1"));
    }
}
