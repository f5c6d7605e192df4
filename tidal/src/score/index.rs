//! [`ScoreIndex`]: every item's undecayed score, merged across shards, and the best of them in
//! order for top-k.
//!
//! Owns the head-and-floor layout. Ordering every item in one tree made each score change a
//! remove and an insert in a tree of every item: about 1,150 instructions, nearly all the
//! ranking absorber's work (see `ranking.rs`), for reads that only ever look at the best
//! few thousand. So the tree holds only the *head*: the items whose order key (score, tie
//! hash, id) is at or above a *floor* key. An item below the floor changes its score in
//! place, a compare and an add.
//!
//! Invariants:
//! - the head is exactly the live (not forgotten) items whose key is at or above the floor
//!   (every item, while there is no floor). So whether an item is in the head is decided by
//!   comparing its key with the floor, with nothing kept per item.
//! - the head grows as items cross the floor; past twice its target size the floor rises
//!   to the target-th best key and the rest leave (`trim`).
//! - it shrinks only as items fall below the floor (scores that go down); under a quarter
//!   of its target, the change that shrank it rebuilds it from every score (`rebuild`,
//!   O(items), after at least the head's size of such falls).
//! - a read that needs more than the head holds (a page deep past it) ranks every item
//!   itself (O(items)) and asks for a larger head (`keep_head_sized`): a larger target is
//!   built at the next change; a head only shrunk is rebuilt once half of it has fallen, so
//!   deep reads never make each write O(items).
//!
//! The order is that of the whole-tree index it replaced: score, then the tie hash, then the
//! index's id, best last in the tree (`top` reads it backwards).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crate::intern::{IdKey, IdMap};

/// Head entries after a rebuild or a trim; it may grow to twice this.
const HEAD_TARGET: usize = 4096;
/// The largest head a deep page may ask for (beyond it, such pages rank every item).
const HEAD_TARGET_MAX: usize = 1 << 16;

/// `x`'s bits mapped so that integer order is `f64::total_cmp` order (what `total_cmp`
/// itself compares).
pub(super) fn total_order_bits(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// A score in total order (NaN cannot occur, but would sort last rather than panic).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Key(f64);

impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// An item's place in the order: score, tie hash, index id.
type OrderKey = (Key, u32, u32);

/// Every item's undecayed score, merged across shards, the best in order for top-k.
///
/// Equal scores are common (every item seen once has the same one), so the order breaks ties
/// by a stable 32-bit hash of the id (`tie_hash`), then by the index's own id of the item
/// (ties of both score and hash are rare; they fall to the order the index first saw the
/// items in). Items are interned ([`IdMap`]: the key once, inline when short). Memory per
/// item: a 32-byte slot (key and score) and its id-table share; the head's 16-byte entries
/// are a few thousand in all. The tie hash is not kept but recomputed from the key when it
/// is needed (an entry of the head moves, or a score meets the floor's).
#[derive(Debug)]
pub struct ScoreIndex {
    /// Per item: the score.
    scores: IdMap<f64>,
    /// The live items at or above `floor`, in order.
    head: BTreeSet<OrderKey>,
    /// `None`: every live item is in the head.
    floor: Option<OrderKey>,
    /// What the head holds after a trim or a rebuild.
    head_target: usize,
    /// The most entries a read needed beyond the head (the next change grows the head).
    wanted: AtomicUsize,
    /// Ids of items [`ScoreIndex::forget_if_zero`] dropped. An [`IdMap`] never removes an id,
    /// so a forgotten item keeps its slot but is out of the order, `score` and `len` until
    /// it is added again (rare: set-aside tails).
    forgotten: hashbrown::HashSet<u32>,
}

impl Default for ScoreIndex {
    fn default() -> Self {
        ScoreIndex::with_head_target(HEAD_TARGET)
    }
}

/// The order's tie-break for equal scores: the high half of the id's stable hash.
fn tie_hash(item: &[u8]) -> u32 {
    (crate::shard::router::stable_hash(item) >> 32) as u32
}

impl ScoreIndex {
    /// An empty index whose head holds about `target` items (tests use small ones).
    pub(crate) fn with_head_target(target: usize) -> Self {
        ScoreIndex {
            scores: IdMap::default(),
            head: BTreeSet::new(),
            floor: None,
            head_target: target.max(1),
            wanted: AtomicUsize::new(0),
            forgotten: hashbrown::HashSet::new(),
        }
    }

    /// Adds `delta` to an item's score, keeping the order.
    pub fn add(&mut self, item: &str, delta: f64) {
        self.add_key(&IdKey::new(item), delta);
    }

    /// [`ScoreIndex::add`] for an item named by a shard's stored key. Returns the index's
    /// id of the item: stable for the index's life, for [`ScoreIndex::add_id`].
    pub fn add_key(&mut self, item: &IdKey, delta: f64) -> u32 {
        let (id, new) = self.scores.intern_key_with(item, || delta);
        self.update(id, new, delta);
        id
    }

    /// [`ScoreIndex::add`] for an item by the id [`ScoreIndex::add_key`] returned (no hash
    /// probe: a shard's writer keeps its items' index ids). An unknown id changes nothing.
    pub fn add_id(&mut self, id: u32, delta: f64) {
        self.update(id, false, delta);
    }

    /// The index's id of `item`, if it has one (a forgotten item keeps its id).
    pub fn id(&self, item: &str) -> Option<u32> {
        self.scores.id(item)
    }

    /// The key of an index id (to check a cached id).
    pub fn id_key(&self, id: u32) -> Option<&IdKey> {
        self.scores.id_key(id)
    }

    fn tie(&self, id: u32) -> u32 {
        self.scores.id_key(id).map_or(0, |key| tie_hash(key.as_bytes()))
    }

    /// Whether an item with `score` belongs in the head (the tie hash only when the score is
    /// the floor's own).
    fn at_or_above_floor(&self, score: f64, id: u32) -> bool {
        let Some((Key(floor), floor_tie, floor_id)) = self.floor else { return true };
        match score.total_cmp(&floor) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => (self.tie(id), id) >= (floor_tie, floor_id),
        }
    }

    fn update(&mut self, id: u32, new: bool, delta: f64) {
        // Back after being forgotten: as new, with `delta` as its score.
        let revived = !new && !self.forgotten.is_empty() && self.forgotten.remove(&id);
        if !new && !revived && delta == 0.0 {
            return;
        }
        let Some(&old) = self.scores.value(id) else { return };
        let was_in = !new && !revived && self.at_or_above_floor(old, id);
        let score = if new || revived { delta } else { old + delta };
        if let Some(slot) = self.scores.value_mut(id) {
            *slot = score;
        }
        let is_in = self.at_or_above_floor(score, id);
        if was_in || is_in {
            let tie = self.tie(id);
            if was_in {
                self.head.remove(&(Key(old), tie, id));
            }
            if is_in {
                self.head.insert((Key(score), tie, id));
            }
        }
        self.keep_head_sized();
    }

    /// Trims a head grown past twice its target, rebuilds one shrunk under a quarter of it
    /// (or one a read found too small).
    fn keep_head_sized(&mut self) {
        // A read wanted more than the head holds: a larger target (with room to spare) the
        // first time, a rebuild once half the head has fallen below the floor since the
        // last one. Either way a rebuild's O(items) comes after O(head) changes at least,
        // however often deep pages are read (past HEAD_TARGET_MAX they never ask).
        let wanted = std::mem::take(self.wanted.get_mut());
        if self.floor.is_some() && wanted > self.head.len() {
            if wanted > self.head_target {
                self.head_target = (2 * wanted.next_power_of_two()).min(HEAD_TARGET_MAX);
                self.rebuild();
            } else if self.head.len() < self.head_target / 2 {
                self.rebuild();
            }
        } else if self.head.len() > 2 * self.head_target {
            let floor = self.head.iter().rev().nth(self.head_target - 1).copied();
            if let Some(floor) = floor {
                self.head = self.head.split_off(&floor);
                self.floor = Some(floor);
            }
        } else if self.floor.is_some() && self.head.len() < self.head_target / 4 {
            self.rebuild();
        }
    }

    /// Every live item's order key (O(items): hashes every key for its tie).
    fn all_keys(&self) -> Vec<OrderKey> {
        let live = self.scores.iter_keys().filter(|(id, _, _)| !self.forgotten.contains(id));
        live.map(|(id, key, &score)| (Key(score), tie_hash(key.as_bytes()), id)).collect()
    }

    /// The page of `keys` in rank order that skips the best `offset` and holds up to `k`,
    /// best first: O(keys) selections, and a sort of the page only.
    fn page(mut keys: Vec<OrderKey>, offset: usize, k: usize) -> Vec<OrderKey> {
        // The order of `Key` (f64::total_cmp) as plain integers: much faster than through
        // `total_cmp` and the tuple `Ord` on a large index.
        let order = |&(score, tie, id): &OrderKey| std::cmp::Reverse((total_order_bits(score.0), tie, id));
        if offset >= keys.len() || k == 0 {
            return Vec::new();
        }
        let end = offset.saturating_add(k).min(keys.len());
        if end < keys.len() {
            keys.select_nth_unstable_by_key(end - 1, order);
            keys.truncate(end);
        }
        if offset > 0 {
            keys.select_nth_unstable_by_key(offset - 1, order);
            keys.drain(..offset);
        }
        keys.sort_unstable_by_key(order);
        keys
    }

    /// Rebuilds the head from every score: the best `head_target` items, the floor the
    /// last of them.
    fn rebuild(&mut self) {
        let keys = self.all_keys();
        let everything = keys.len() <= self.head_target;
        let best = Self::page(keys, 0, self.head_target);
        self.floor = if everything { None } else { best.last().copied() };
        self.head = best.into_iter().collect();
    }

    /// Drops an item whose score is exactly zero (after its only shard's share was taken
    /// back: a set-aside tail). Returns whether it was dropped.
    pub fn forget_if_zero(&mut self, item: &str) -> bool {
        let Some(id) = self.scores.id(item).filter(|id| !self.forgotten.contains(id)) else {
            return false;
        };
        match self.scores.value(id) {
            Some(&score) if score == 0.0 => {
                if self.at_or_above_floor(score, id) {
                    self.head.remove(&(Key(score), tie_hash(item.as_bytes()), id));
                }
                self.forgotten.insert(id);
                self.keep_head_sized();
                true
            }
            _ => false,
        }
    }

    /// Builds the index from per-shard contributions in one pass: sums per item first, then
    /// the head. `parts_hint` (the number of parts, or an upper bound on the items) sizes
    /// the id map once instead of growing it step by step.
    pub fn from_parts<'a>(
        parts: impl IntoIterator<Item = (&'a IdKey, f64)>,
        parts_hint: usize,
    ) -> ScoreIndex {
        let mut scores: IdMap<f64> = IdMap::with_capacity(parts_hint);
        // In chunks, as `shard::apply_group` applies records: read every key's home bucket
        // and the slot it names first, so the chunk's cache misses overlap, then intern.
        const CHUNK: usize = 32;
        let mut parts = parts.into_iter();
        let mut chunk: Vec<(&IdKey, f64, u64)> = Vec::with_capacity(CHUNK);
        loop {
            chunk.clear();
            chunk
                .extend(parts.by_ref().take(CHUNK).map(|(key, score)| (key, score, scores.hash_id_key(key))));
            if chunk.is_empty() {
                break;
            }
            let mut touched = 0u64;
            for &(_, _, hash) in &chunk {
                if let Some((key, sum)) = scores.home(hash).and_then(|id| scores.slots().get(id as usize)) {
                    touched = touched.wrapping_add(key.as_bytes().len() as u64).wrapping_add(sum.to_bits());
                }
            }
            std::hint::black_box(touched);
            for &(item, score, hash) in &chunk {
                let (id, new) = scores.intern_key_hashed(item, hash, || score);
                if !new && let Some(sum) = scores.value_mut(id) {
                    *sum += score;
                }
            }
        }
        let mut index = ScoreIndex { scores, ..ScoreIndex::default() };
        index.rebuild();
        index
    }

    /// The `k` highest-scored items after skipping `offset`, best first, with raw scores.
    pub fn top(&self, k: usize, offset: usize) -> Vec<(String, f64)> {
        let name = |&(score, _, id): &OrderKey| Some((self.scores.key(id)?.to_owned(), score.0));
        let need = k.saturating_add(offset);
        if self.floor.is_none() || self.head.len() >= need {
            return self.head.iter().rev().skip(offset).take(k).filter_map(name).collect();
        }
        if offset >= self.len() {
            return Vec::new();
        }
        // A page past the head: rank everything, and ask for a head that holds it (if one
        // could).
        if need <= HEAD_TARGET_MAX {
            self.wanted.fetch_max(need, AtomicOrdering::Relaxed);
        }
        Self::page(self.all_keys(), offset, k).iter().filter_map(name).collect()
    }

    pub fn score(&self, item: &str) -> Option<f64> {
        let id = self.scores.id(item).filter(|id| !self.forgotten.contains(id))?;
        self.scores.value(id).copied()
    }

    pub fn len(&self) -> usize {
        self.scores.len() - self.forgotten.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in the head (a measurement, for tests and benches).
    pub fn head_len(&self) -> usize {
        self.head.len()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
