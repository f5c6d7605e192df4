//! Exactly-once bookkeeping: acknowledgements, per-session SeqNo high-water marks, and the
//! idempotency store.
//!
//! Invariant: everything here is a pure function of the WAL records applied so far, in seq
//! order. Eviction uses record stamps, never the wall clock, so recovery (and a follower
//! applying shipped batches) rebuilds exactly the same tables as the writer had.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;

/// Recent acks kept per session, so a retried SeqNo gets its original ack back.
pub const SESSION_ACKS_KEPT: usize = 8;
/// Default retention of idempotency keys, measured in HLC time.
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Default bound on idempotency keys kept per shard.
pub const IDEMPOTENCY_KEYS_MAX_DEFAULT: usize = 1_000_000;

/// What the store answers for an applied signal: where it lives and its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub shard: u32,
    pub seq: u64,
    pub hlc: Hlc,
    /// True when this write was a retry: the ack is the original one and nothing changed.
    #[serde(default)]
    pub duplicate: bool,
}

impl Ack {
    pub fn new(shard: u32, seq: u64, hlc: Hlc) -> Ack {
        Ack { shard, seq, hlc, duplicate: false }
    }

    /// The same ack, marked as the answer to a retry.
    pub fn as_duplicate(self) -> Ack {
        Ack { duplicate: true, ..self }
    }
}

/// One session of one user: its high-water mark and its last few acks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub session: Arc<str>,
    /// Highest SeqNo applied; 0 when the session only had signals without SeqNo.
    pub hwm: u64,
    pub last_hlc: Hlc,
    /// `(session_seq, ack)` of the most recent sequenced writes, oldest first.
    acks: VecDeque<(u64, Ack)>,
}

/// What to do with a signal given its session's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    Apply,
    Duplicate(Ack),
    /// A duplicate older than the acks kept.
    StaleDuplicate {
        hwm: u64,
    },
    Gap {
        expected: u64,
    },
}

impl SessionState {
    pub fn new(session: &str) -> Self {
        SessionState { session: session.into(), hwm: 0, last_hlc: Hlc::ZERO, acks: VecDeque::new() }
    }

    /// The rule of DESIGN 4: `hwm + 1` applies, `<= hwm` is a duplicate, beyond is a gap.
    pub fn check(&self, session_seq: u64) -> SeqCheck {
        check_seq(self.hwm, &self.acks, session_seq)
    }

    /// Records an applied signal of this session.
    pub fn record(&mut self, session_seq: Option<u64>, ack: Ack) {
        self.last_hlc = self.last_hlc.max(ack.hlc);
        if let Some(n) = session_seq {
            self.hwm = n;
            match self.acks.len() {
                SESSION_ACKS_KEPT => {
                    self.acks.pop_front();
                }
                // Most sessions of a large store are short: room for one ack first, then
                // for all it keeps (not 4, then 8: the same two allocations).
                0 => self.acks.reserve_exact(1),
                1 => self.acks.reserve_exact(SESSION_ACKS_KEPT - 1),
                _ => {}
            }
            self.acks.push_back((n, ack));
        }
    }

    /// The recent `(session_seq, ack)` pairs, oldest first.
    pub fn recent_acks(&self) -> impl Iterator<Item = &(u64, Ack)> {
        self.acks.iter()
    }
}

/// [`SessionState::check`] over any source of hwm and recent acks (also the writer's
/// in-flight overlay).
pub fn check_seq<'a>(hwm: u64, acks: impl IntoIterator<Item = &'a (u64, Ack)>, session_seq: u64) -> SeqCheck {
    if session_seq == hwm + 1 {
        SeqCheck::Apply
    } else if session_seq > hwm {
        SeqCheck::Gap { expected: hwm + 1 }
    } else {
        acks.into_iter()
            .find(|(n, _)| *n == session_seq)
            .map_or(SeqCheck::StaleDuplicate { hwm }, |(_, ack)| SeqCheck::Duplicate(ack.as_duplicate()))
    }
}

/// Idempotency keys (scoped per user) mapped to the ack of their first write.
///
/// Bounded by a count and by a retention window in HLC time; the oldest keys go first.
#[derive(Clone, Debug, Default)]
pub struct IdempotencyStore {
    map: HashMap<Arc<str>, Ack>,
    /// Keys in insertion (= seq) order, for eviction.
    order: VecDeque<Arc<str>>,
    window_ms: u64,
    keys_max: usize,
    /// Reused to build scoped keys (not state).
    scratch: String,
    /// A copy at one seq in progress (see `shard::cow`); not cloned with the store.
    copy: CopyInProgress,
}

/// The store's entries at the seq a copy began, oldest first, gathered a slice at a time.
///
/// The store only appends keys and evicts them from the front, and a key's ack never
/// changes, so the entries at that seq are the first `len` of `order` then: `cursor` of them
/// are handled, and `evicted` of them have left `order` since, each handled before it left.
#[derive(Debug)]
pub struct IdempotencyCopy {
    len: usize,
    cursor: usize,
    evicted: usize,
    copied: Vec<(Arc<str>, Ack)>,
}

impl IdempotencyCopy {
    /// A store holding the copied entries, with the shard's limits.
    pub fn into_store(self, limits: crate::shard::state::StateLimits) -> IdempotencyStore {
        let mut store = IdempotencyStore::new(limits.idempotency_window_ms, limits.idempotency_keys_max);
        store.order = self.copied.iter().map(|(key, _)| key.clone()).collect();
        store.map = self.copied.into_iter().collect();
        store
    }

    /// Called with each entry eviction takes from the front of `order`.
    fn evicting(&mut self, key: Arc<str>, ack: Option<Ack>) {
        if self.evicted == self.cursor && self.cursor < self.len {
            self.copied.extend(ack.map(|ack| (key, ack)));
            self.cursor += 1;
        }
        self.evicted += 1;
    }
}

#[derive(Debug, Default)]
struct CopyInProgress(Option<Box<IdempotencyCopy>>);

impl Clone for CopyInProgress {
    fn clone(&self) -> Self {
        CopyInProgress(None)
    }
}

impl IdempotencyStore {
    pub fn new(window_ms: u64, keys_max: usize) -> Self {
        IdempotencyStore { window_ms, keys_max: keys_max.max(1), ..Default::default() }
    }

    /// The store's key for a user's idempotency key. Ids cannot hold control characters,
    /// so the separator cannot collide.
    pub fn scoped_key(user: &str, key: &str) -> String {
        let mut scoped = String::with_capacity(user.len() + key.len() + 1);
        scoped.push_str(user);
        scoped.push('\u{1f}');
        scoped.push_str(key);
        scoped
    }

    pub fn get(&self, scoped_key: &str) -> Option<Ack> {
        self.map.get(scoped_key).copied()
    }

    /// Remembers the ack of a first write, then evicts by count and by age.
    pub fn insert(&mut self, scoped_key: &str, ack: Ack) {
        let key: Arc<str> = scoped_key.into();
        // The first write's ack stays (a copy in progress relies on acks never changing).
        if let std::collections::hash_map::Entry::Vacant(vacant) = self.map.entry(key.clone()) {
            vacant.insert(ack);
            self.order.push_back(key);
        }
        self.evict(ack.hlc);
    }

    /// [`IdempotencyStore::insert`] of `scoped_key(user, key)`, built in a reused buffer so
    /// the apply path allocates the key once (its shared copy), not twice.
    pub fn insert_scoped(&mut self, user: &str, key: &str, ack: Ack) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.push_str(user);
        scratch.push('\u{1f}');
        scratch.push_str(key);
        self.insert(&scratch, ack);
        self.scratch = scratch;
    }

    fn evict(&mut self, newest: Hlc) {
        let horizon = newest.physical_ms().saturating_sub(self.window_ms);
        while let Some(oldest) = self.order.front() {
            let expired = self.map.get(oldest).is_none_or(|ack| ack.hlc.physical_ms() < horizon);
            if self.order.len() <= self.keys_max && !expired {
                break;
            }
            if let Some(key) = self.order.pop_front() {
                let ack = self.map.remove(&key);
                if let Some(copy) = self.copy.0.as_deref_mut() {
                    copy.evicting(key, ack);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries oldest first, for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Ack)> {
        self.order.iter().filter_map(|k| self.map.get(k).map(|a| (&**k, *a)))
    }

    /// Begins a copy of the entries as they are now (see [`IdempotencyCopy`]).
    pub fn begin_copy(&mut self) {
        let len = self.order.len();
        let copy = IdempotencyCopy { len, cursor: 0, evicted: 0, copied: Vec::with_capacity(len) };
        self.copy.0 = Some(Box::new(copy));
    }

    /// Copies up to `budget` more entries of a copy in progress.
    pub fn copy_step(&mut self, budget: usize) {
        let Some(copy) = self.copy.0.as_deref_mut() else { return };
        let end = copy.len.min(copy.cursor.saturating_add(budget));
        while copy.cursor < end {
            // Not yet handled, so not yet evicted: `evicted <= cursor`.
            let Some(key) = self.order.get(copy.cursor - copy.evicted) else { break };
            copy.copied.extend(self.map.get(key).map(|ack| (key.clone(), *ack)));
            copy.cursor += 1;
        }
    }

    /// Has the copy in progress (if any) handled every entry?
    pub fn copy_is_done(&self) -> bool {
        self.copy.0.as_ref().is_none_or(|copy| copy.cursor == copy.len)
    }

    /// Ends the copy in progress and returns it.
    pub fn take_copy(&mut self) -> Option<IdempotencyCopy> {
        self.copy.0.take().map(|copy| *copy)
    }

    /// Rebuilds from snapshot entries given oldest first.
    pub fn from_entries(window_ms: u64, keys_max: usize, entries: Vec<(String, Ack)>) -> Self {
        let mut store = IdempotencyStore::new(window_ms, keys_max);
        for (key, ack) in entries {
            store.insert(&key, ack);
        }
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64) -> Ack {
        Ack::new(0, seq, Hlc::new(1_000 + seq, 0))
    }

    #[test]
    fn seqno_rules() {
        let mut s = SessionState::new("s");
        assert_eq!(s.check(1), SeqCheck::Apply);
        assert_eq!(s.check(2), SeqCheck::Gap { expected: 1 });
        s.record(Some(1), ack(10));
        s.record(Some(2), ack(11));
        assert_eq!(s.check(3), SeqCheck::Apply);
        assert_eq!(s.check(1), SeqCheck::Duplicate(ack(10).as_duplicate()));
        assert_eq!(s.check(5), SeqCheck::Gap { expected: 3 });
    }

    #[test]
    fn old_duplicates_are_stale_not_reapplied() {
        let mut s = SessionState::new("s");
        for n in 1..=(SESSION_ACKS_KEPT as u64 + 3) {
            s.record(Some(n), ack(n));
        }
        assert_eq!(s.check(1), SeqCheck::StaleDuplicate { hwm: SESSION_ACKS_KEPT as u64 + 3 });
        assert!(matches!(s.check(SESSION_ACKS_KEPT as u64 + 3), SeqCheck::Duplicate(_)));
    }

    #[test]
    fn a_session_holds_room_for_one_ack_then_for_all_it_keeps() {
        let mut s = SessionState::new("s");
        s.record(Some(1), ack(1));
        assert_eq!(s.acks.capacity(), 1, "a one-signal session");
        s.record(Some(2), ack(2));
        let grown = s.acks.capacity();
        assert!(grown >= SESSION_ACKS_KEPT, "{grown}");
        for n in 3..=(3 * SESSION_ACKS_KEPT as u64) {
            s.record(Some(n), ack(n));
        }
        assert_eq!((s.acks.len(), s.acks.capacity()), (SESSION_ACKS_KEPT, grown), "no growth past the bound");
    }

    #[test]
    fn unsequenced_signals_do_not_move_hwm() {
        let mut s = SessionState::new("s");
        s.record(None, ack(1));
        assert_eq!(s.hwm, 0);
        assert_eq!(s.last_hlc, ack(1).hlc);
    }

    #[test]
    fn idempotency_store_bounds_count_oldest_first() {
        let mut store = IdempotencyStore::new(u64::MAX / 2, 3);
        for n in 1..=5 {
            store.insert(&IdempotencyStore::scoped_key("u", &format!("k{n}")), ack(n));
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(&IdempotencyStore::scoped_key("u", "k2")), None);
        assert_eq!(store.get(&IdempotencyStore::scoped_key("u", "k5")), Some(ack(5)));
    }

    #[test]
    fn idempotency_store_expires_by_record_time() {
        let mut store = IdempotencyStore::new(100, 10);
        store.insert("a", Ack::new(0, 1, Hlc::new(1_000, 0)));
        store.insert("b", Ack::new(0, 2, Hlc::new(1_050, 0)));
        assert_eq!(store.len(), 2);
        store.insert("c", Ack::new(0, 3, Hlc::new(1_120, 0)));
        assert_eq!(store.get("a"), None);
        assert!(store.get("b").is_some());
    }

    #[test]
    fn idempotency_keys_are_scoped_per_user() {
        let mut store = IdempotencyStore::new(1_000, 10);
        store.insert(&IdempotencyStore::scoped_key("alice", "k"), ack(1));
        assert_eq!(store.get(&IdempotencyStore::scoped_key("bob", "k")), None);
        store.insert_scoped("bob", "k", ack(2));
        store.insert_scoped("al", "ice", ack(3));
        assert_eq!(store.get(&IdempotencyStore::scoped_key("bob", "k")), Some(ack(2)));
        assert_eq!(store.get(&IdempotencyStore::scoped_key("alice", "k")), Some(ack(1)));
        assert_eq!(store.get(&IdempotencyStore::scoped_key("al", "ice")), Some(ack(3)));
    }

    #[test]
    fn entries_round_trip_preserves_order() {
        let mut store = IdempotencyStore::new(u64::MAX / 2, 100);
        for n in 1..=4 {
            store.insert(&format!("k{n}"), ack(n));
        }
        let entries: Vec<_> = store.entries().map(|(k, a)| (k.to_owned(), a)).collect();
        let back = IdempotencyStore::from_entries(u64::MAX / 2, 100, entries.clone());
        let again: Vec<_> = back.entries().map(|(k, a)| (k.to_owned(), a)).collect();
        assert_eq!(entries, again);
    }
}
