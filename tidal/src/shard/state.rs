//! The in-memory state of one shard: per-item CRDT aggregates, per-user state (hard
//! negatives, recent history, sessions) and the idempotency store.
//!
//! Invariant: the state is a pure function of the WAL records applied in seq order, each
//! with the node that originated its batch ([`ShardState::apply`] is the only mutator besides
//! snapshot loading), and of the pinned [`StateLimits`] and decay, so a replayed or
//! replicated shard equals the writer's. CRDT slots are credited to the *origin* node's
//! replica id, never to the applying node's: a follower replaying a leader's batches holds
//! the leader's replica, and merging the two copies does not double count.
//!
//! Layout: items, users and custom kind names are interned per shard
//! ([`IdMap`]: dense `u32` ids, values in id-indexed slots, short keys inline), and the
//! history rings, hard-negative sets and index deltas hold the `u32`s, so a popular item costs
//! its bytes once and applying a record moves no reference counts. Ids are layout only:
//! snapshots and the digest resolve them to strings ([`super::user`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::user::{HistorySlot, KindId, UserState};
use crate::crdt::{CrdtSignalState, replica_id};
use crate::hlc::Hlc;
use crate::intern::IdMap;
use crate::options::{USER_HISTORY_MAX_DEFAULT, USER_SESSIONS_MAX_DEFAULT};
use crate::score::{Decay, DecayedSums, HALF_LIFE_MS_DEFAULT, Weights};
use crate::session::{
    Ack, IDEMPOTENCY_KEYS_MAX_DEFAULT, IDEMPOTENCY_WINDOW_MS_DEFAULT, IdempotencyStore, SeqCheck,
    SessionState, check_seq,
};
use crate::shard::router::stable_hash;
use crate::signal::{SignalKind, SignalRef};

/// Limits that shape the state; they must be equal wherever a shard's WAL is replayed, so
/// they are pinned in the manifest and in every snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLimits {
    pub user_history_max: usize,
    pub user_sessions_max: usize,
    pub idempotency_window_ms: u64,
    pub idempotency_keys_max: usize,
}

/// Everything applying records depends on besides the records themselves, pinned per shard
/// when the store is created (manifest) and recorded in every snapshot, so every replica
/// computes the same state from the same batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardParams {
    /// The store's shard count (routing depends on it).
    pub shards: u32,
    pub limits: StateLimits,
    /// The decay clock of the ranking sums.
    pub decay: Decay,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            user_history_max: USER_HISTORY_MAX_DEFAULT,
            user_sessions_max: USER_SESSIONS_MAX_DEFAULT,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
            idempotency_keys_max: IDEMPOTENCY_KEYS_MAX_DEFAULT,
        }
    }
}

/// What a shard keeps per item: the CRDT aggregate and its decayed sums for ranking.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemEntry {
    pub state: CrdtSignalState,
    pub decayed: DecayedSums,
}

/// How applied signals feed the ranking: the store's decay clock and the current weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    pub decay: Decay,
    pub weights: Weights,
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            decay: Decay { t_ref_ms: 0, half_life_ms: HALF_LIFE_MS_DEFAULT },
            weights: Weights::default(),
        }
    }
}

/// One entry of a user's recent history, as reads return it (the ring itself holds
/// [`HistorySlot`]s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub item: Arc<str>,
    pub kind: SignalKind,
    pub value: f64,
    pub hlc: Hlc,
    /// Shared with the session's own record.
    pub session: Option<Arc<str>>,
}

/// The state of one shard. A snapshot encodes a copy taken a slice at a time (`shard::cow`).
#[derive(Clone, Debug)]
pub struct ShardState {
    pub shard: u32,
    /// Seq of the last applied record; 0 before the first.
    pub applied_seq: u64,
    pub last_hlc: Hlc,
    pub items: IdMap<ItemEntry>,
    pub users: IdMap<UserState>,
    /// Names of the custom kinds the history rings hold (as [`KindId`]s).
    pub kinds: IdMap<()>,
    pub idempotency: IdempotencyStore,
    pub limits: StateLimits,
    pub scoring: Scoring,
    /// The decay growth of the last record's millisecond: records of a batch share their
    /// millisecond, so most records skip the `exp2`. Derived, not part of the state.
    growth_memo: (u64, Decay, f64),
    /// A copy of the state at an earlier seq being taken for a snapshot (see `shard::cow`):
    /// `apply` hands it the old value of every entry it is about to change.
    pub(super) copy: super::cow::CopySlot,
}

impl ShardState {
    pub fn new(shard: u32, limits: StateLimits) -> Self {
        ShardState {
            shard,
            applied_seq: 0,
            last_hlc: Hlc::ZERO,
            items: IdMap::default(),
            users: IdMap::default(),
            kinds: IdMap::default(),
            idempotency: IdempotencyStore::new(limits.idempotency_window_ms, limits.idempotency_keys_max),
            limits,
            scoring: Scoring::default(),
            growth_memo: (u64::MAX, Decay { t_ref_ms: 0, half_life_ms: 0 }, 0.0),
            copy: super::cow::CopySlot::default(),
        }
    }

    fn growth_at(&mut self, t_ms: u64) -> f64 {
        let decay = self.scoring.decay;
        if self.growth_memo.0 != t_ms || self.growth_memo.1 != decay {
            self.growth_memo = (t_ms, decay, decay.growth(t_ms));
        }
        self.growth_memo.2
    }

    /// An empty state applied with a store's pinned parameters (limits and decay).
    pub fn with_params(shard: u32, params: &ShardParams) -> Self {
        let mut state = ShardState::new(shard, params.limits);
        state.scoring.decay = params.decay;
        state
    }

    /// Applies the record with sequence number `seq` from a batch that node `origin` wrote.
    /// Callers apply records in seq order. Returns the item's id in [`ShardState::items`] and
    /// the signal's contribution to its undecayed score.
    pub fn apply(&mut self, seq: u64, origin: u32, hlc: Hlc, signal: &SignalRef<'_>) -> (u32, f64) {
        self.apply_with_ids(seq, origin, hlc, signal, (None, None))
    }

    /// [`ShardState::apply`] given the ids of the record's item and user if a lookup found
    /// them earlier (`shard::apply_group`); `None` looks them up.
    pub(super) fn apply_with_ids(
        &mut self,
        seq: u64,
        origin: u32,
        hlc: Hlc,
        signal: &SignalRef<'_>,
        (item_id, user_id): (Option<u32>, Option<u32>),
    ) -> (u32, f64) {
        debug_assert!(seq > self.applied_seq, "seq {seq} applied after {}", self.applied_seq);
        let ack = Ack::new(self.shard, seq, hlc);
        let replica = replica_id(origin, self.shard);
        let growth = self.growth_at(hlc.physical_ms());
        let weights = self.scoring.weights;
        let (item, entry) = self.items.entry_with_id(item_id, signal.item, ItemEntry::default);
        if let Some(copy) = self.copy.0.as_deref_mut() {
            copy.items.preserve(item, signal.item, entry);
        }
        entry.state.apply(signal, hlc, replica);
        let contribution = entry.decayed.add(&signal.kind, signal.value, growth, &weights);
        let kind = self.kind_id(&signal.kind);
        self.apply_user(item, user_id, (kind, replica, ack), signal);
        if let Some(key) = signal.idempotency_key {
            self.idempotency.insert_scoped(signal.user, key, ack);
        }
        self.applied_seq = seq;
        self.last_hlc = self.last_hlc.max(hlc);
        (item, contribution)
    }

    fn apply_user(
        &mut self,
        item: u32,
        user_id: Option<u32>,
        (kind, replica, ack): (KindId, u64, Ack),
        signal: &SignalRef<'_>,
    ) {
        let limits = self.limits;
        let (id, user) = self.users.entry_with_id(user_id, signal.user, UserState::default);
        if let Some(copy) = self.copy.0.as_deref_mut() {
            copy.users.preserve(id, signal.user, user);
        }
        if signal.kind.is_negative(signal.value) {
            user.hard_negatives.get_or_insert_default().add(item, replica);
        } else if signal.kind.is_positive(signal.value)
            && let Some(negatives) = &mut user.hard_negatives
            && !negatives.is_empty()
        {
            negatives.remove(&item);
        }
        if let Some(session) = signal.session {
            let evicted = record_session(
                &mut user.sessions,
                session,
                signal.session_seq,
                ack,
                limits.user_sessions_max,
            );
            if let Some(evicted) = evicted {
                let kept = user.evicted_sessions.get_or_insert_default();
                if kept.len() == EVICTED_SESSIONS_KEPT {
                    kept.pop_front();
                }
                kept.push_back((stable_hash(evicted.session.as_bytes()), evicted.hwm));
            }
        }
        let recycled =
            if user.history.len() >= limits.user_history_max { user.history.pop_front() } else { None };
        if limits.user_history_max > 0 {
            let recycled = recycled.and_then(|slot| slot.session);
            let session = signal.session.map(|name| shared_session(&user.sessions, name, recycled));
            // Exactly sized at first: most users of a large store have few signals.
            if user.history.capacity() == 0 {
                user.history.reserve_exact(1);
            }
            user.history.push_back(HistorySlot { item, kind, value: signal.value, hlc: ack.hlc, session });
        }
    }

    /// What the SeqNo rule says about `session_seq` in this session, counting sessions that
    /// were evicted by the per-user bound.
    pub fn session_check(&self, user: &str, session: &str, session_seq: u64) -> SeqCheck {
        let Some(found) = self.users.get(user) else {
            return check_seq(0, &[], session_seq);
        };
        if let Some(live) = found.session(session) {
            return live.check(session_seq);
        }
        check_seq(self.evicted_hwm(user, session), &[], session_seq)
    }

    /// The hwm an evicted session had when the per-user bound dropped it (0 if none).
    pub fn evicted_hwm(&self, user: &str, session: &str) -> u64 {
        let hash = stable_hash(session.as_bytes());
        let evicted = self
            .users
            .get(user)
            .map(|u| u.evicted_sessions.iter().flat_map(|kept| kept.iter()).rev().find(|(h, _)| *h == hash));
        evicted.flatten().map_or(0, |e| e.1)
    }

    /// The session's state, if the shard knows it.
    pub fn session(&self, user: &str, session: &str) -> Option<&SessionState> {
        self.users.get(user)?.session(session)
    }

    /// Number of sessions across users (a measurement, O(users)).
    pub fn session_count(&self) -> usize {
        self.users.values().map(|u| u.sessions.len()).sum()
    }
}

/// Evicted sessions remembered per user (16 bytes each).
pub const EVICTED_SESSIONS_KEPT: usize = 256;

/// The shared name of the session just recorded (the most recent one), for a history slot.
/// `recycled` is the session of the slot the ring just dropped: a user's recent signals are
/// mostly of one session, so it is usually that very name, and moving it over spares an
/// atomic increment and decrement of a count that is rarely in the cache.
fn shared_session(sessions: &[SessionState], name: &str, recycled: Option<Arc<str>>) -> Arc<str> {
    debug_assert!(
        sessions.last().is_none_or(|last| &*last.session == name),
        "{name} is not the last session"
    );
    match sessions.last() {
        Some(last) => match recycled {
            Some(old) if Arc::ptr_eq(&old, &last.session) => old,
            _ => last.session.clone(),
        },
        // Only with a per-user bound of 0 sessions: nothing to share.
        None => name.into(),
    }
}

/// Updates (or creates) a session and keeps the list ordered by recency, bounded: the
/// session ends up last. Returns the session the bound evicted, if any.
fn record_session(
    sessions: &mut Vec<SessionState>,
    session: &str,
    seq: Option<u64>,
    ack: Ack,
    max: usize,
) -> Option<SessionState> {
    let mut evicted = None;
    // From the back: the active session is almost always the most recent one.
    match sessions.iter().rposition(|s| &*s.session == session) {
        // Already the most recent: the common case of a session's consecutive signals.
        Some(i) if i + 1 == sessions.len() => sessions[i].record(seq, ack),
        Some(i) => {
            let mut state = sessions.remove(i);
            state.record(seq, ack);
            sessions.push(state);
        }
        None => {
            let mut state = SessionState::new(session);
            state.record(seq, ack);
            if sessions.capacity() == 0 {
                sessions.reserve_exact(1);
            }
            sessions.push(state);
            if sessions.len() > max {
                evicted = Some(sessions.remove(0));
            }
        }
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Signal;

    fn limits() -> StateLimits {
        StateLimits {
            user_history_max: 4,
            user_sessions_max: 2,
            idempotency_window_ms: 10_000,
            idempotency_keys_max: 100,
        }
    }

    fn sig(user: &str, item: &str, kind: SignalKind) -> Signal {
        Signal::new(user, item, kind)
    }

    #[test]
    fn apply_counts_and_tracks_negatives() {
        let mut st = ShardState::new(0, limits());
        st.apply(1, 1, Hlc::new(10, 0), &sig("u", "a", SignalKind::Like).as_ref());
        st.apply(2, 1, Hlc::new(11, 0), &sig("u", "a", SignalKind::Like).as_ref());
        st.apply(3, 1, Hlc::new(12, 0), &sig("u", "b", SignalKind::Dislike).as_ref());
        assert_eq!(st.items["a"].state.count(&SignalKind::Like), 2);
        let b = st.items.id("b").unwrap();
        assert_eq!(st.users["u"].hard_negative_ids().collect::<Vec<_>>(), [b]);
        st.apply(4, 1, Hlc::new(13, 0), &sig("u", "b", SignalKind::Like).as_ref());
        assert_eq!(st.users["u"].hard_negative_ids().count(), 0, "a later positive removes it");
        assert_eq!(st.applied_seq, 4);
    }

    #[test]
    fn history_and_sessions_are_bounded() {
        let mut st = ShardState::new(0, limits());
        for n in 1..=6u64 {
            let mut s = sig("u", &format!("i{n}"), SignalKind::Click);
            s.session = Some(format!("s{}", n % 3));
            st.apply(n, 1, Hlc::new(n, 0), &s.as_ref());
        }
        let user = &st.users["u"];
        assert_eq!(user.history.len(), 4);
        assert_eq!(&*st.history_entry(&user.history[0]).item, "i3");
        assert_eq!(user.sessions.len(), 2);
        assert_eq!(&*user.sessions[1].session, "s0", "most recent last");
    }

    #[test]
    fn history_holds_interned_item_and_kind_ids() {
        let mut st = ShardState::new(0, limits());
        st.apply(1, 1, Hlc::new(1, 0), &sig("u", "shared", SignalKind::Click).as_ref());
        st.apply(2, 1, Hlc::new(2, 0), &sig("v", "shared", SignalKind::from_name("boost")).as_ref());
        let id = st.items.id("shared").unwrap();
        let (u, v) = (&st.users["u"].history[0], &st.users["v"].history[0]);
        assert_eq!((u.item, v.item), (id, id));
        assert_eq!(st.history_entry(u).kind, SignalKind::Click);
        assert_eq!(st.history_entry(v).kind, SignalKind::Custom("boost".into()));
        assert_eq!(st.kind_name(v.kind), "boost");
    }

    #[test]
    fn history_slots_name_their_own_session_when_the_ring_recycles_a_name() {
        let mut st = ShardState::new(0, limits());
        // Full ring of s1, then s2 twice, then s1 again: the recycled slot's name (s1) is
        // kept where it matches and replaced where it does not.
        let sessions = ["s1", "s1", "s1", "s1", "s1", "s2", "s2", "s1", "s3"];
        for (n, session) in sessions.iter().enumerate() {
            let mut s = sig("u", &format!("i{n}"), SignalKind::Click);
            s.session = Some(session.to_string());
            st.apply(n as u64 + 1, 1, Hlc::new(n as u64 + 1, 0), &s.as_ref());
        }
        let user = &st.users["u"];
        let names: Vec<String> =
            user.history.iter().map(|h| h.session.as_deref().unwrap_or("").to_owned()).collect();
        assert_eq!(names, ["s2", "s2", "s1", "s3"]);
        let live: Vec<&str> = user.sessions.iter().map(|s| &*s.session).collect();
        assert_eq!(live, ["s1", "s3"], "s2 was evicted (two sessions kept); its slots keep its name");
        let s1 = &user.sessions[0].session;
        assert!(user.history[2].session.as_ref().is_some_and(|n| Arc::ptr_eq(n, s1)), "shares the live name");
    }
}
