//! The reads of [`Db`]. Each read takes a shard's read lock once, so it sees whole batches
//! only, and reports the seq of every shard it reflects.

use std::time::{Duration, Instant};

use super::Db;
use crate::crdt::CrdtSignalState;
use crate::error::{Error, Result};
use crate::query::visibility::{SeqToken, WAIT_MAX};
use crate::query::{
    ItemView, RankedItem, SessionHistory, SessionView, ShardStats, TOP_K_MAX, TopK, UserView,
};

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
        let mut hard_negatives: Vec<String> =
            found.hard_negative_ids().filter_map(|id| state.items.key(id)).map(str::to_owned).collect();
        hard_negatives.sort();
        Some(UserView {
            user: user.to_owned(),
            shard,
            hard_negatives,
            history: found.history.iter().map(|h| state.history_entry(h)).collect(),
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
        let top = self.inner.ranking.read().top(k, offset);
        let items =
            top.into_iter().map(|(item, raw)| RankedItem { item, score: decay.at(raw, at_ms) }).collect();
        Ok(TopK { items, at_ms, seqs })
    }

    /// An item's current score (weighted, time-decayed), if it has one.
    pub fn score(&self, item: &str) -> Option<f64> {
        let raw = self.inner.ranking.read().score(item)?;
        Some(self.inner.scoring.decay.at(raw, self.inner.clock.now().physical_ms()))
    }

    /// The session's signals still in the user's history ring, and its high-water mark.
    pub fn session_history(&self, user: &str, session: &str) -> Option<SessionHistory> {
        let shard = self.inner.router.shard_for(user);
        let state = self.inner.shards[shard as usize].state.read().unwrap_or_else(|e| e.into_inner());
        let found = state.users.get(user)?;
        let hwm = found.session(session)?.hwm;
        let entries = found
            .history
            .iter()
            .filter(|e| e.session.as_deref() == Some(session))
            .map(|e| state.history_entry(e))
            .collect();
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

impl Db {
    /// Waits until every shard in `token` has applied its seq, for at most `timeout`
    /// (capped at [`WAIT_MAX`]). Reads made afterwards reflect at least the token.
    pub fn wait_for(&self, token: &SeqToken, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout.min(WAIT_MAX);
        for &(shard, seq) in &token.0 {
            let handle = self.inner.shards.get(shard as usize).ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "min_seq names shard {shard}; the store has {}",
                    self.inner.shards.len()
                ))
            })?;
            let seen = handle.applied.wait(seq, deadline);
            if seen < seq {
                return Err(Error::NotYet { shard, applied: seen, wanted: seq });
            }
        }
        Ok(())
    }
}
