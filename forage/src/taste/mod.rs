//! What Forage remembers of one user: every item shown to them (the seen state), what they
//! liked, opened, skipped and disliked, in order and with recency, and the observations
//! that feed the content bandit ([`crate::bandit::linear`]).
//!
//! Owns [`UserState`], a pure function of the user's signals applied in write order
//! ([`UserState::apply`]): the app rebuilds it at start-up from Tidal's complete history
//! (so it survives restarts and is exact after a crash: an impression is in it if and only
//! if Tidal acknowledged it) and then applies each signal after Tidal acknowledged it.
//!
//! Invariants:
//! - an item is *seen* once an impression of it was logged for the user; the feed never
//!   shows a seen item again (the saved list is how a user keeps one, see `app::saved`);
//! - liked and rejected items are kept newest first, each bounded by [`PROFILE_ITEMS_MAX`]
//!   (the oldest falls out); the latest of like and skip/dislike wins (a like after a
//!   dislike takes the item out of the rejected side, and back);
//! - the seen set and the history are bounded by [`SEEN_ITEMS_MAX`] (oldest forgotten
//!   first; a forgotten item could be shown again, which only happens past that many
//!   impressions of one user).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tidal::SignalKind;

/// Most items one user's seen state and history remember.
pub const SEEN_ITEMS_MAX: usize = 1_000_000;
/// Most liked (and, separately, rejected) items one user's profile keeps.
pub const PROFILE_ITEMS_MAX: usize = 10_000;

/// A set of items ordered by the last time they were put in, bounded, newest first.
#[derive(Clone, Debug, Default)]
pub struct RecencySet {
    stamp_of: HashMap<Arc<str>, u64>,
    by_stamp: BTreeMap<u64, Arc<str>>,
    next: u64,
}

impl RecencySet {
    /// Puts `item` in as the newest; drops the oldest past `max`.
    pub fn touch(&mut self, item: &Arc<str>, max: usize) {
        self.remove(item);
        self.next += 1;
        self.stamp_of.insert(item.clone(), self.next);
        self.by_stamp.insert(self.next, item.clone());
        while self.by_stamp.len() > max {
            if let Some((_, old)) = self.by_stamp.pop_first() {
                self.stamp_of.remove(&old);
            }
        }
    }

    pub fn remove(&mut self, item: &str) {
        if let Some(stamp) = self.stamp_of.remove(item) {
            self.by_stamp.remove(&stamp);
        }
    }

    pub fn contains(&self, item: &str) -> bool {
        self.stamp_of.contains_key(item)
    }

    pub fn len(&self) -> usize {
        self.by_stamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stamp.is_empty()
    }

    /// The items, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_stamp.values().rev()
    }

    /// The items put in after stamp `after`, oldest first, with their stamps (stamps only
    /// grow, so a reader that remembers the last stamp it saw reads only what is new).
    pub fn put_after(&self, after: u64) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.by_stamp.range(after.saturating_add(1)..).map(|(s, id)| (*s, id))
    }
}

/// What happened to one item, for the history view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Marks {
    /// When the item was first touched (shown, or feedback without a showing), ms.
    pub first_ms: u64,
    /// When the item was last touched, ms.
    pub last_ms: u64,
    pub shown: bool,
    pub liked: bool,
    pub opened: bool,
    pub skipped: bool,
    pub disliked: bool,
}

/// One observation for the content bandit: the item was shown (or judged) and earned
/// `reward` (1 for a like or an open, else 0), folded in once its embedding is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub item: Arc<str>,
    /// Add the item's vector to the design matrix (its first observation).
    pub exposure: bool,
    /// Reward to add (0 or 1).
    pub reward: f64,
}

/// One user's remembered state (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct UserState {
    marks: HashMap<Arc<str>, Marks>,
    /// Items in the order they were first touched (the history view, oldest first).
    order: RecencySet,
    pub liked: RecencySet,
    pub rejected: RecencySet,
    /// Items that already earned a reward in the bandit (one reward per item).
    rewarded: std::collections::HashSet<Arc<str>>,
    /// Observations not yet folded into the bandit.
    pub pending: Vec<Observation>,
    /// Items shown to the user.
    shown: usize,
}

impl UserState {
    /// Applies one signal of the user, acknowledged by Tidal, at `at_ms`. Kinds other than
    /// impression, like, click, skip and dislike change nothing.
    pub fn apply(&mut self, item: &str, kind: &SignalKind, at_ms: u64) {
        if !matches!(
            kind,
            SignalKind::Impression
                | SignalKind::Like
                | SignalKind::Click
                | SignalKind::Skip
                | SignalKind::Dislike
        ) {
            return;
        }
        let item: Arc<str> = match self.marks.get_key_value(item) {
            Some((k, _)) => k.clone(),
            None => Arc::from(item),
        };
        let fresh = !self.marks.contains_key(&item);
        let marks = self.marks.entry(item.clone()).or_insert(Marks { first_ms: at_ms, ..Marks::default() });
        marks.last_ms = marks.last_ms.max(at_ms);
        let exposure = fresh;
        let mut reward = 0.0;
        match kind {
            SignalKind::Impression => {
                if !marks.shown {
                    self.shown += 1;
                }
                marks.shown = true;
            }
            SignalKind::Like | SignalKind::Click => {
                if *kind == SignalKind::Like {
                    marks.liked = true;
                    marks.disliked = false;
                    self.liked.touch(&item, PROFILE_ITEMS_MAX);
                    self.rejected.remove(&item);
                } else {
                    marks.opened = true;
                }
                if self.rewarded.insert(item.clone()) {
                    reward = 1.0;
                }
            }
            _ => {
                if *kind == SignalKind::Dislike {
                    marks.disliked = true;
                    marks.liked = false;
                    self.liked.remove(&item);
                } else {
                    marks.skipped = true;
                }
                self.rejected.touch(&item, PROFILE_ITEMS_MAX);
            }
        }
        if fresh {
            self.order.touch(&item, SEEN_ITEMS_MAX);
            self.forget_beyond_bound();
        }
        if exposure || reward > 0.0 {
            self.pending.push(Observation { item, exposure, reward });
        }
    }

    fn forget_beyond_bound(&mut self) {
        if self.marks.len() <= SEEN_ITEMS_MAX {
            return;
        }
        let live: std::collections::HashSet<&Arc<str>> = self.order.newest_first().collect();
        let dropped: Vec<Arc<str>> = self.marks.keys().filter(|k| !live.contains(k)).cloned().collect();
        for item in dropped {
            if self.marks.remove(&item).is_some_and(|m| m.shown) {
                self.shown -= 1;
            }
            self.rewarded.remove(&item);
        }
    }

    /// Did the user ever touch `item` (shown, or any feedback)? Every hidden item is
    /// touched ([`UserState::is_hidden`]), which is what `app::seen_bits` relies on.
    pub fn is_touched(&self, item: &str) -> bool {
        self.marks.contains_key(item)
    }

    /// The touched items after stamp `after` in first-touch order, with their stamps.
    pub fn touched_after(&self, after: u64) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.order.put_after(after)
    }

    /// Was `item` shown to the user?
    pub fn is_seen(&self, item: &str) -> bool {
        self.marks.get(item).is_some_and(|m| m.shown)
    }

    /// Is `item` kept out of the feed: shown already, or rejected (skipped or disliked and
    /// not liked since)? One lookup for items the user never touched.
    pub fn is_hidden(&self, item: &str) -> bool {
        self.marks.get(item).is_some_and(|m| m.shown || self.rejected.contains(item))
    }

    /// Items shown to the user so far.
    pub fn shown_count(&self) -> usize {
        self.shown
    }

    /// What happened to `item`.
    pub fn marks(&self, item: &str) -> Option<Marks> {
        self.marks.get(item).copied()
    }

    /// The history, newest first: `offset` items skipped, at most `limit`.
    pub fn history(&self, offset: usize, limit: usize) -> Vec<(Arc<str>, Marks)> {
        self.order
            .newest_first()
            .skip(offset)
            .take(limit)
            .filter_map(|id| Some((id.clone(), *self.marks.get(id)?)))
            .collect()
    }

    /// Items in the history.
    pub fn history_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recency_set_keeps_the_newest_within_its_bound() {
        let mut set = RecencySet::default();
        for id in ["a", "b", "c", "a", "d"] {
            set.touch(&Arc::from(id), 3);
        }
        let order: Vec<&str> = set.newest_first().map(|s| &**s).collect();
        assert_eq!(order, ["d", "a", "c"]);
        assert!(!set.contains("b"));
        set.remove("a");
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn impressions_mark_seen_and_feedback_moves_sides() {
        let mut s = UserState::default();
        s.apply("x", &SignalKind::Impression, 10);
        s.apply("x", &SignalKind::Impression, 11);
        assert!(s.is_seen("x") && !s.is_seen("y"));
        assert_eq!(s.shown_count(), 1);
        s.apply("x", &SignalKind::Dislike, 12);
        assert!(s.rejected.contains("x") && !s.liked.contains("x"));
        s.apply("x", &SignalKind::Like, 13);
        assert!(s.liked.contains("x") && !s.rejected.contains("x"));
        s.apply("y", &SignalKind::Like, 14);
        let liked: Vec<&str> = s.liked.newest_first().map(|i| &**i).collect();
        assert_eq!(liked, ["y", "x"]);
        // y was liked without being shown: it is in the history, not seen.
        assert!(!s.is_seen("y"));
        let history: Vec<String> = s.history(0, 10).iter().map(|(i, _)| i.to_string()).collect();
        assert_eq!(history, ["y", "x"]);
        let marks = s.marks("x").expect("marks");
        assert!(marks.shown && marks.liked && !marks.disliked && marks.first_ms == 10 && marks.last_ms == 13);
    }

    #[test]
    fn the_bandit_gets_one_exposure_and_one_reward_per_item() {
        let mut s = UserState::default();
        s.apply("x", &SignalKind::Impression, 1);
        s.apply("x", &SignalKind::Like, 2);
        s.apply("x", &SignalKind::Click, 3);
        s.apply("x", &SignalKind::Like, 4);
        s.apply("y", &SignalKind::Skip, 5);
        let got: Vec<(&str, bool, f64)> =
            s.pending.iter().map(|o| (&*o.item, o.exposure, o.reward)).collect();
        assert_eq!(got, [("x", true, 0.0), ("x", false, 1.0), ("y", true, 0.0)]);
        s.apply("z", &SignalKind::Dwell, 6);
        assert_eq!(s.pending.len(), 3, "dwell is not bandit feedback");
    }
}
