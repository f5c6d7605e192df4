//! What reads return: item, user, session and ranking views, shard counters, and the
//! `min_seq` token ([`visibility::SeqToken`]). A leaf: the reads themselves are methods of
//! [`crate::Db`] (`db/reads.rs`), which build these views.
//!
//! Item state is merged across shards (each shard is its own CRDT replica, so the merge sums
//! the shards); user and session state live in the user's shard.

pub mod visibility;

use serde::Serialize;

use crate::crdt::CrdtSignalState;
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
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ShardStats {
    pub shard: u32,
    pub applied_seq: u64,
    pub last_hlc: Hlc,
    pub items: usize,
    pub users: usize,
    pub sessions: usize,
    pub idempotency_keys: usize,
}
