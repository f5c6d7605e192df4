//! What a shard keeps per user ([`UserState`]: hard negatives, the recent-history ring,
//! sessions) in its in-memory layout, and the two string forms of it: the view that snapshots
//! and the digest encode ([`UserStateRef`]) and the wire shape snapshots decode
//! ([`UserStateWire`]).
//!
//! In memory, items and custom kinds are `u32` ids of the shard's maps
//! ([`crate::intern::IdMap`]): pushing a history entry or a hard negative copies four bytes
//! and touches no other allocation. Invariant: every item id held here names an item of the
//! same shard's item map (the apply path interns the item before the user sees it, and
//! decoding refuses a user that names an unknown item). The encoded forms name items and
//! kinds by their strings, field for field in the order the pre-interning `UserState`
//! derived, so snapshot bytes and digests do not depend on ids and stay what they were.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{HistoryEntry, ShardState};
use crate::crdt::AddWinsSet;
use crate::hlc::Hlc;
use crate::session::SessionState;
use crate::signal::SignalKind;

/// A signal kind as a history ring keeps it: a built-in kind's wire code (1..=8), or
/// [`KindId::CUSTOM_BASE`] plus the id of the custom kind's name in the shard's kind map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindId(pub u32);

impl KindId {
    pub const CUSTOM_BASE: u32 = 16;
}

/// The built-in kinds with a `'static` home, so their names borrow for as long as needed.
static BUILTIN_KINDS: [SignalKind; 8] = SignalKind::BUILTIN;

/// One entry of a user's recent history, as the ring holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistorySlot {
    /// Id in the shard's item map.
    pub item: u32,
    pub kind: KindId,
    pub value: f64,
    pub hlc: Hlc,
    /// Shared with the session's own record: no allocation per signal.
    pub session: Option<Arc<str>>,
}

/// Everything the store keeps about one user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserState {
    /// Items (ids) the user rejected (dislike, skip, rejected label, low rating) and has not
    /// wanted since: add-wins on the negative, removed by a later positive. `None` until the
    /// first negative; once created it stays, even empty, since its causal context is state.
    pub hard_negatives: Option<Box<AddWinsSet<u32>>>,
    /// Most recent signals, oldest first.
    pub history: VecDeque<HistorySlot>,
    /// Sessions, least recently active first.
    pub sessions: Vec<SessionState>,
    /// `(hash of session id, hwm)` of sessions evicted by the per-user bound, newest last,
    /// so a late retry into one is refused as stale instead of applied twice. `None` until
    /// the first eviction (most users never have one: 8 bytes instead of 32), never empty.
    pub evicted_sessions: Option<Box<VecDeque<(u64, u64)>>>,
}

/// What snapshots and the digest encode for a user with no evicted session.
static NO_EVICTED_SESSIONS: VecDeque<(u64, u64)> = VecDeque::new();

impl UserState {
    pub fn session(&self, session: &str) -> Option<&SessionState> {
        self.sessions.iter().find(|s| &*s.session == session)
    }

    /// The hard negatives' item ids, in id order.
    pub fn hard_negative_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.hard_negatives.iter().flat_map(|set| set.iter().copied())
    }
}

/// A history entry with its item and kind as strings (the encoded form).
#[derive(Serialize)]
pub struct HistoryEntryRef<'a> {
    item: &'a str,
    kind: &'a str,
    value: f64,
    hlc: Hlc,
    session: Option<&'a str>,
}

/// A user's state with ids resolved to strings: what snapshots and the digest encode.
#[derive(Serialize)]
pub struct UserStateRef<'a> {
    hard_negatives: AddWinsSet<&'a str>,
    history: Vec<HistoryEntryRef<'a>>,
    sessions: &'a [SessionState],
    evicted_sessions: &'a VecDeque<(u64, u64)>,
}

/// A user's state as snapshots carry it (items and kinds by name).
#[derive(Deserialize)]
pub struct UserStateWire {
    hard_negatives: AddWinsSet<Box<str>>,
    history: VecDeque<HistoryEntry>,
    sessions: Vec<SessionState>,
    #[serde(default)]
    evicted_sessions: VecDeque<(u64, u64)>,
}

impl ShardState {
    /// The id of a kind, interning a custom kind's name.
    pub fn kind_id(&mut self, kind: &SignalKind) -> KindId {
        match kind {
            SignalKind::Custom(name) => KindId(KindId::CUSTOM_BASE + self.kinds.intern_with(name, || ()).0),
            builtin => KindId(u32::from(builtin.code())),
        }
    }

    /// The name of a kind id ("" for an id this shard never issued).
    pub fn kind_name(&self, kind: KindId) -> &str {
        match kind.0.checked_sub(KindId::CUSTOM_BASE) {
            Some(custom) => self.kinds.key(custom).unwrap_or_default(),
            None => {
                kind.0.checked_sub(1).and_then(|i| BUILTIN_KINDS.get(i as usize)).map_or("", |k| k.as_str())
            }
        }
    }

    /// The kind a kind id stands for.
    pub fn kind_of(&self, kind: KindId) -> SignalKind {
        let name = self.kind_name(kind);
        match kind.0.checked_sub(1).and_then(|i| BUILTIN_KINDS.get(i as usize)) {
            Some(builtin) if kind.0 < KindId::CUSTOM_BASE => builtin.clone(),
            _ => SignalKind::Custom(name.into()),
        }
    }

    /// The public form of a history slot.
    pub fn history_entry(&self, slot: &HistorySlot) -> HistoryEntry {
        HistoryEntry {
            item: self.items.key(slot.item).unwrap_or_default().into(),
            kind: self.kind_of(slot.kind),
            value: slot.value,
            hlc: slot.hlc,
            session: slot.session.clone(),
        }
    }

    /// The encoded form of `user` (a user of this shard).
    pub fn user_ref<'a>(&'a self, user: &'a UserState) -> UserStateRef<'a> {
        let item = |id: &u32| Ok::<_, std::convert::Infallible>(self.items.key(*id).unwrap_or_default());
        let hard_negatives = match &user.hard_negatives {
            Some(set) => set.try_map(item).unwrap_or_else(|never| match never {}),
            None => AddWinsSet::default(),
        };
        let history = user
            .history
            .iter()
            .map(|h| HistoryEntryRef {
                item: self.items.key(h.item).unwrap_or_default(),
                kind: self.kind_name(h.kind),
                value: h.value,
                hlc: h.hlc,
                session: h.session.as_deref(),
            })
            .collect();
        UserStateRef {
            hard_negatives,
            history,
            sessions: &user.sessions,
            evicted_sessions: user.evicted_sessions.as_deref().unwrap_or(&NO_EVICTED_SESSIONS),
        }
    }

    /// The in-memory form of a decoded user. Items must already be in the item map; the
    /// history's sessions are re-shared with the user's own session records.
    pub fn user_from_wire(&mut self, wire: UserStateWire) -> Result<UserState, String> {
        let UserStateWire { hard_negatives, history, sessions, evicted_sessions } = wire;
        let item_id = |items: &crate::intern::IdMap<_>, item: &str| {
            items.id(item).ok_or_else(|| format!("names item {item:?}, which the snapshot does not hold"))
        };
        let empty = hard_negatives == AddWinsSet::default();
        let hard_negatives = hard_negatives.try_map(|item| item_id(&self.items, item))?;
        let mut slots = VecDeque::with_capacity(history.len());
        for entry in history {
            let session = entry
                .session
                .map(|s| sessions.iter().find(|own| own.session == s).map_or(s, |own| own.session.clone()));
            slots.push_back(HistorySlot {
                item: item_id(&self.items, &entry.item)?,
                kind: self.kind_id(&entry.kind),
                value: entry.value,
                hlc: entry.hlc,
                session,
            });
        }
        Ok(UserState {
            hard_negatives: (!empty).then(|| Box::new(hard_negatives)),
            history: slots,
            sessions,
            evicted_sessions: (!evicted_sessions.is_empty()).then(|| Box::new(evicted_sessions)),
        })
    }
}
