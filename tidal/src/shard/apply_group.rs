//! Applying many records at once, faster than one by one: a shard's items and users are
//! spread over far more memory than the caches hold, so applying a record is mostly waiting
//! for memory (the hash table's bucket, the entry, the entry's own allocations), one miss
//! after the other. Here the records go in chunks, and each chunk in three passes:
//! 1. look up every record's item and user (the lookups do not depend on each other, so
//!    the processor overlaps their misses);
//! 2. read a little of each entry found and of what it points to (the same overlap);
//! 3. apply the records in order, handing each its ids (`ShardState::apply_with_ids`),
//!    with the memory now in the cache.
//!
//! The result is exactly that of [`ShardState::apply`] record by record: passes 1 and 2 only
//! read, and an id never changes once given. A key first seen in the chunk is not found in
//! pass 1 and is interned in pass 3, in record order, as one by one.

use std::sync::Arc;

use super::state::ShardState;
use crate::hlc::Hlc;
use crate::signal::SignalRef;

/// Records per chunk: enough misses to overlap, few enough that the chunk's entries stay
/// in the first-level caches until pass 3.
const CHUNK: usize = 16;

impl ShardState {
    /// Applies `records`, with seqs from `first_seq` on, from a batch node `origin` wrote, as
    /// [`ShardState::apply`] would one by one, and hands each record's `(item id, score
    /// contribution)` to `out`.
    pub fn apply_group(
        &mut self,
        first_seq: u64,
        origin: u32,
        records: &[(Hlc, SignalRef<'_>)],
        mut out: impl FnMut((u32, f64)),
    ) {
        let mut hashes = [(0u64, 0u64); CHUNK];
        let mut candidates = [(None, None); CHUNK];
        let mut ids = [(None, None); CHUNK];
        let mut seq = first_seq;
        for chunk in records.chunks(CHUNK) {
            let n = chunk.len();
            let (hashes, candidates, ids) = (&mut hashes[..n], &mut candidates[..n], &mut ids[..n]);
            // Pass 1: each key's hash and home bucket.
            for ((hash, candidate), (_, signal)) in hashes.iter_mut().zip(candidates.iter_mut()).zip(chunk) {
                *hash = (self.items.hash_key(signal.item), self.users.hash_key(signal.user));
                *candidate = (self.items.home(hash.0), self.users.home(hash.1));
            }
            // Pass 2: the candidates' slots.
            std::hint::black_box(self.touch_slots(candidates));
            // Pass 3: the checked ids, and what their entries point to.
            for ((found, &(item, user)), (_, signal)) in ids.iter_mut().zip(hashes.iter()).zip(chunk) {
                *found = (self.items.id_hashed(signal.item, item), self.users.id_hashed(signal.user, user));
            }
            std::hint::black_box(self.touch_heaps(ids));
            // Pass 4: apply.
            for (found, (hlc, signal)) in ids.iter().zip(chunk) {
                out(self.apply_with_ids(seq, origin, *hlc, signal, *found));
                seq += 1;
            }
        }
    }

    /// Pass 2: each candidate's slot, its key (which the search compares) and its value.
    fn touch_slots(&self, ids: &[(Option<u32>, Option<u32>)]) -> u64 {
        let mut sum = 0u64;
        for (item, user) in ids {
            if let Some((key, entry)) = item.and_then(|id| self.items.slots().get(id as usize)) {
                sum = sum.wrapping_add(key.as_bytes().len() as u64).wrapping_add(entry.state.last_hlc().0);
            }
            if let Some((key, user)) = user.and_then(|id| self.users.slots().get(id as usize)) {
                sum = sum.wrapping_add(key.as_bytes().len() as u64).wrapping_add(user.history.len() as u64);
            }
        }
        sum
    }

    /// Pass 3: what applying will change behind each found item and user.
    fn touch_heaps(&self, ids: &[(Option<u32>, Option<u32>)]) -> u64 {
        let mut sum = 0u64;
        for (item, user) in ids {
            if let Some(entry) = item.and_then(|id| self.items.value(id)) {
                sum = sum.wrapping_add(entry.state.touch());
            }
            if let Some(user) = user.and_then(|id| self.users.value(id)) {
                // The session a signal names is almost always the user's latest, which
                // applying compares by name.
                let session =
                    user.sessions.last().map_or(0, |s| s.hwm + s.session.bytes().next().map_or(0, u64::from));
                let oldest =
                    user.history.front().and_then(|h| h.session.as_ref()).map_or(0, Arc::strong_count);
                let negatives = user.hard_negatives.as_ref().map_or(0, |set| set.len());
                sum = sum.wrapping_add(session).wrapping_add(oldest as u64).wrapping_add(negatives as u64);
            }
        }
        sum
    }
}
