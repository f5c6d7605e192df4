//! Reads. Each read takes a shard's read lock once, so it sees whole batches only, and
//! reports the seq of every shard it reflects.
//!
//! Item state is merged across shards (each shard is its own CRDT replica, so the merge sums
//! the shards); user and session state live in the user's shard.

use serde::Serialize;

use crate::crdt::CrdtSignalState;
use crate::db::Db;
use crate::hlc::Hlc;
use crate::shard::state::HistoryEntry;

/// An item's aggregate over every shard.
#[derive(Clone, Debug, Serialize)]
pub struct ItemView {
    pub item: String,
    pub state: CrdtSignalState,
    /// Applied seq of each shard when it was read (index = shard).
    pub seqs: Vec<u64>,
}

/// A session of a user as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionView {
    pub session: String,
    pub hwm: u64,
    pub last_hlc: Hlc,
}

/// What the store keeps about a user.
#[derive(Clone, Debug, Serialize)]
pub struct UserView {
    pub user: String,
    pub shard: u32,
    /// Items the user rejected and has not wanted since, sorted.
    pub hard_negatives: Vec<String>,
    /// Most recent signals, oldest first.
    pub history: Vec<HistoryEntry>,
    pub sessions: Vec<SessionView>,
    /// Applied seq of the user's shard when it was read.
    pub seq: u64,
}

/// Counters of one shard.
#[derive(Clone, Debug, Serialize)]
pub struct ShardStats {
    pub shard: u32,
    pub applied_seq: u64,
    pub last_hlc: Hlc,
    pub items: usize,
    pub users: usize,
    pub sessions: usize,
    pub idempotency_keys: usize,
}

impl Db {
    /// The item's state merged across shards, or `None` if no shard has seen it.
    pub fn item(&self, item: &str) -> Option<ItemView> {
        let mut merged: Option<CrdtSignalState> = None;
        let mut seqs = Vec::with_capacity(self.inner.shards.len());
        for shard in &self.inner.shards {
            let state = shard.state.read().unwrap_or_else(|e| e.into_inner());
            seqs.push(state.applied_seq);
            if let Some(part) = state.items.get(item) {
                match &mut merged {
                    Some(m) => m.merge(part),
                    None => merged = Some(part.clone()),
                }
            }
        }
        merged.map(|state| ItemView { item: item.to_owned(), state, seqs })
    }

    /// The user's hard negatives, recent history and sessions.
    pub fn user(&self, user: &str) -> Option<UserView> {
        let shard = self.inner.router.shard_for(user);
        let state = self.inner.shards[shard as usize].state.read().unwrap_or_else(|e| e.into_inner());
        let found = state.users.get(user)?;
        let mut hard_negatives: Vec<String> = found.hard_negatives.iter().map(|i| i.to_string()).collect();
        hard_negatives.sort();
        Some(UserView {
            user: user.to_owned(),
            shard,
            hard_negatives,
            history: found.history.iter().cloned().collect(),
            sessions: found
                .sessions
                .iter()
                .map(|s| SessionView { session: s.session.to_string(), hwm: s.hwm, last_hlc: s.last_hlc })
                .collect(),
            seq: state.applied_seq,
        })
    }

    /// The session's high-water mark (highest applied SeqNo), if the store knows the session.
    pub fn session_hwm(&self, user: &str, session: &str) -> Option<u64> {
        let shard = self.inner.router.shard_for(user);
        let state = self.inner.shards[shard as usize].state.read().unwrap_or_else(|e| e.into_inner());
        state.session(user, session).map(|s| s.hwm)
    }

    /// Applied seq of every shard (index = shard).
    pub fn applied_seqs(&self) -> Vec<u64> {
        self.inner
            .shards
            .iter()
            .map(|s| s.state.read().unwrap_or_else(|e| e.into_inner()).applied_seq)
            .collect()
    }

    /// Per-shard counters. Counting sessions walks every user: a diagnostic, not a hot path.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.inner
            .shards
            .iter()
            .map(|s| {
                let st = s.state.read().unwrap_or_else(|e| e.into_inner());
                ShardStats {
                    shard: st.shard,
                    applied_seq: st.applied_seq,
                    last_hlc: st.last_hlc,
                    items: st.items.len(),
                    users: st.users.len(),
                    sessions: st.session_count(),
                    idempotency_keys: st.idempotency.len(),
                }
            })
            .collect()
    }
}
