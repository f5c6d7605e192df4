//! Reads. Each read takes a shard's read lock once, so it sees whole batches only, and
//! reports the seq of every shard it reflects.
//!
//! Item state is merged across shards (each shard is its own CRDT replica, so the merge sums
//! the shards); user and session state live in the user's shard.

pub mod score;
pub mod visibility;

use serde::Serialize;

use crate::crdt::CrdtSignalState;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::shard::state::HistoryEntry;

/// An item's aggregate over every shard.
#[derive(Clone, Debug)]
pub struct ItemView {
    pub item: String,
    /// The merged CRDT state (per-replica counters; see [`ItemView::summary`]).
    pub state: CrdtSignalState,
    /// Applied seq of each shard when it was read (index = shard).
    pub seqs: Vec<u64>,
}

/// Per-kind totals of an item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindTotals {
    pub count: i64,
    pub value_sum: f64,
}

/// What an item's state means, without per-replica detail: what JSON readers get.
#[derive(Clone, Debug, Serialize)]
pub struct ItemSummary {
    pub item: String,
    pub kinds: std::collections::BTreeMap<String, KindTotals>,
    pub last_rating: Option<f64>,
    /// `(label, confirmed)` of the last label signal.
    pub last_label: Option<(String, bool)>,
    pub first_hlc: Hlc,
    pub last_hlc: Hlc,
    pub seqs: Vec<u64>,
}

impl ItemView {
    pub fn summary(&self) -> ItemSummary {
        ItemSummary {
            item: self.item.clone(),
            kinds: self
                .state
                .kinds()
                .map(|(k, count, value_sum)| (k.to_string(), KindTotals { count, value_sum }))
                .collect(),
            last_rating: self.state.last_rating(),
            last_label: self.state.last_label().map(|(l, ok)| (l.to_owned(), ok)),
            first_hlc: self.state.first_hlc(),
            last_hlc: self.state.last_hlc(),
            seqs: self.seqs.clone(),
        }
    }
}

impl Serialize for ItemView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.summary().serialize(serializer)
    }
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

/// Most items one top-k read returns.
pub const TOP_K_MAX: usize = 10_000;

/// One ranked item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedItem {
    pub item: String,
    /// The weighted, time-decayed score at the read's time.
    pub score: f64,
}

/// The best items by decayed score.
#[derive(Clone, Debug, Serialize)]
pub struct TopK {
    pub items: Vec<RankedItem>,
    /// Wall-clock ms the scores were decayed to.
    pub at_ms: u64,
    /// Applied seq of each shard the ranking reflects at least.
    pub seqs: Vec<u64>,
}

/// The signals of one session that the user's recent history still holds.
#[derive(Clone, Debug, Serialize)]
pub struct SessionHistory {
    pub user: String,
    pub session: String,
    pub hwm: u64,
    /// Oldest first; bounded by the user's history ring (`user_history_max`).
    pub entries: Vec<HistoryEntry>,
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
                    Some(m) => m.merge(&part.state),
                    None => merged = Some(part.state.clone()),
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

    /// The `k` best items by weighted, time-decayed score, skipping `offset` (paging).
    /// Reads the ordered index: no scan of the items.
    pub fn top_k(&self, k: usize, offset: usize) -> Result<TopK> {
        if k > TOP_K_MAX {
            return Err(Error::InvalidRequest(format!("k is {k}; at most {TOP_K_MAX}")));
        }
        // Seqs first: the index already reflects at least these batches.
        let seqs = self.applied_seqs();
        let at_ms = self.inner.clock.now().physical_ms();
        let decay = self.inner.scoring.decay;
        let top = self.inner.index.read().unwrap_or_else(|e| e.into_inner()).top(k, offset);
        let items = top
            .into_iter()
            .map(|(item, raw)| RankedItem { item: item.to_string(), score: decay.at(raw, at_ms) })
            .collect();
        Ok(TopK { items, at_ms, seqs })
    }

    /// An item's current score (weighted, time-decayed), if it has one.
    pub fn score(&self, item: &str) -> Option<f64> {
        let raw = self.inner.index.read().unwrap_or_else(|e| e.into_inner()).score(item)?;
        Some(self.inner.scoring.decay.at(raw, self.inner.clock.now().physical_ms()))
    }

    /// The session's signals still in the user's history ring, and its high-water mark.
    pub fn session_history(&self, user: &str, session: &str) -> Option<SessionHistory> {
        let shard = self.inner.router.shard_for(user);
        let state = self.inner.shards[shard as usize].state.read().unwrap_or_else(|e| e.into_inner());
        let found = state.users.get(user)?;
        let hwm = found.session(session)?.hwm;
        let entries =
            found.history.iter().filter(|e| e.session.as_deref() == Some(session)).cloned().collect();
        Some(SessionHistory {
            user: user.to_owned(),
            session: session.to_owned(),
            hwm,
            entries,
            seq: state.applied_seq,
        })
    }

    /// Items the user rejected and has not wanted since, sorted.
    pub fn hard_negatives(&self, user: &str) -> Vec<String> {
        self.user(user).map(|u| u.hard_negatives).unwrap_or_default()
    }

    /// Applied seq of every shard (index = shard), as published after each batch: reads
    /// made afterwards reflect at least these. Never waits behind a batch being applied.
    pub fn applied_seqs(&self) -> Vec<u64> {
        self.inner.shards.iter().map(|s| s.applied.get()).collect()
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
