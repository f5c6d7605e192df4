//! Ranking items by a weighted, time-decayed score, answered from an ordered index.
//!
//! Each shard keeps, per item and built-in kind, a decayed value sum
//! `S_k = Σ value · 2^((t_i − t_ref) / half_life)` ([`DecayedSums`]), where `t_ref` is fixed
//! when the store is created. An item's score is `Σ_k w_k · S_k` summed over shards. Decaying
//! to any query time `t` multiplies every score by the same `2^((t_ref − t) / half_life)`, so
//! the order never changes with time and no re-sorting is needed: [`ScoreIndex`] keeps items
//! ordered by the undecayed score and is updated by each batch before it is acknowledged.
//! Weights may change from one open to the next (the index is rebuilt from the sums);
//! the half-life is fixed at creation. Custom kinds do not contribute to scores.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::intern::{IdKey, IdMap};
use crate::signal::SignalKind;

/// Built-in kinds that carry a decayed sum (impression .. label).
pub const SCORED_KINDS: usize = 8;
/// Default half-life of a signal's weight: one week.
pub const HALF_LIFE_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Exponents are clamped here so sums stay finite (about 700 half-lives after creation).
const EXPONENT_MAX: f64 = 700.0;

/// Per-kind weights of the score. A signal contributes `weight(kind) · value`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights(pub [f64; SCORED_KINDS]);

impl Default for Weights {
    /// impression 0, click 1, like 3, dislike −3, skip −1, dwell 0.01 per second,
    /// rating 0.3 per point, label 0.
    fn default() -> Self {
        Weights([0.0, 1.0, 3.0, -3.0, -1.0, 0.01, 0.3, 0.0])
    }
}

impl Weights {
    /// Weight of a kind; custom kinds weigh nothing.
    pub fn of(&self, kind: &SignalKind) -> f64 {
        slot(kind).map_or(0.0, |i| self.0[i])
    }

    /// Sets a built-in kind's weight; false for a custom kind.
    pub fn set(&mut self, kind: &SignalKind, weight: f64) -> bool {
        slot(kind).map(|i| self.0[i] = weight).is_some()
    }
}

fn slot(kind: &SignalKind) -> Option<usize> {
    usize::from(kind.code()).checked_sub(1).filter(|i| *i < SCORED_KINDS)
}

/// The decay clock of a store: reference time and half-life, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decay {
    pub t_ref_ms: u64,
    pub half_life_ms: u64,
}

impl Decay {
    /// `2^((t − t_ref) / half_life)`, clamped to stay finite.
    pub fn growth(&self, t_ms: u64) -> f64 {
        let exponent = (t_ms as f64 - self.t_ref_ms as f64) / self.half_life_ms.max(1) as f64;
        exponent.clamp(-EXPONENT_MAX, EXPONENT_MAX).exp2()
    }

    /// Converts an undecayed score to its value at time `now_ms`.
    pub fn at(&self, raw: f64, now_ms: u64) -> f64 {
        raw / self.growth(now_ms)
    }
}

/// An item's decayed value sums per built-in kind, in one shard: logically `[f64; 8]`
/// ([`DecayedSums::to_array`], and that is how it encodes), stored compactly because most
/// items of a large store see one or two kinds. Up to two sums sit inline (`tags` holds
/// slot + 1 of each, 0 when unused); a third kind moves all of them to a boxed array. A sum is
/// "present" once its kind was added, even if it is +0.0, and absent sums read as +0.0, so
/// the array is exactly what adding into a zeroed `[f64; 8]` would give.
#[derive(Clone, Default)]
pub struct DecayedSums {
    tags: [u8; 2],
    inline: [f64; 2],
    spilled: Option<Box<[f64; SCORED_KINDS]>>,
}

/// The encoded form: the eight sums (the type's original shape).
#[derive(Serialize, Deserialize)]
#[serde(rename = "DecayedSums")]
struct SumsRepr([f64; SCORED_KINDS]);

impl Serialize for DecayedSums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SumsRepr(self.to_array()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DecayedSums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(DecayedSums::from_array(SumsRepr::deserialize(d)?.0))
    }
}

impl std::fmt::Debug for DecayedSums {
    /// As the array (the logical value), whatever the layout.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DecayedSums").field(&self.to_array()).finish()
    }
}

impl PartialEq for DecayedSums {
    fn eq(&self, other: &Self) -> bool {
        self.to_array() == other.to_array()
    }
}

impl DecayedSums {
    /// The sums from their array form (bit-exact: a -0.0 sum stays -0.0).
    pub fn from_array(sums: [f64; SCORED_KINDS]) -> DecayedSums {
        let mut out = DecayedSums::default();
        let present = sums.iter().filter(|s| s.to_bits() != 0).count();
        if present > out.tags.len() {
            out.spilled = Some(Box::new(sums));
            return out;
        }
        let present = sums.iter().enumerate().filter(|(_, s)| s.to_bits() != 0);
        for (i, (slot, sum)) in present.enumerate() {
            // slot < 8, so slot + 1 fits a u8.
            out.tags[i] = slot as u8 + 1;
            out.inline[i] = *sum;
        }
        out
    }

    /// The eight sums, in slot order.
    pub fn to_array(&self) -> [f64; SCORED_KINDS] {
        if let Some(all) = &self.spilled {
            return **all;
        }
        let mut sums = [0.0; SCORED_KINDS];
        for (tag, sum) in self.tags.iter().zip(self.inline) {
            if let Some(slot) = sums.get_mut(usize::from(*tag).wrapping_sub(1)) {
                *slot = sum;
            }
        }
        sums
    }

    /// The sum of `slot`, made present (zero) if it was not.
    fn sum_mut(&mut self, slot: usize) -> &mut f64 {
        if self.spilled.is_none() {
            let tag = slot as u8 + 1;
            if let Some(i) = self.tags.iter().position(|t| *t == tag) {
                return &mut self.inline[i];
            }
            if let Some(i) = self.tags.iter().position(|t| *t == 0) {
                self.tags[i] = tag;
                self.inline[i] = 0.0;
                return &mut self.inline[i];
            }
            let mut all = Box::new(self.to_array());
            all[slot] = 0.0;
            (self.tags, self.inline) = ([0; 2], [0.0; 2]);
            self.spilled = Some(all);
        }
        match &mut self.spilled {
            Some(all) => &mut all[slot],
            None => unreachable!("spilled just above"),
        }
    }

    /// Adds a signal; returns its contribution to the undecayed score under `weights`.
    pub fn add(&mut self, kind: &SignalKind, value: f64, growth: f64, weights: &Weights) -> f64 {
        match slot(kind) {
            Some(i) => {
                *self.sum_mut(i) += value * growth;
                weights.0[i] * value * growth
            }
            None => 0.0,
        }
    }

    /// The undecayed score under `weights`.
    pub fn score(&self, weights: &Weights) -> f64 {
        self.to_array().iter().zip(weights.0).map(|(s, w)| s * w).sum()
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.spilled.as_ref().map_or(0, |_| std::mem::size_of::<[f64; SCORED_KINDS]>())
    }
}

/// `x`'s bits mapped so that integer order is `f64::total_cmp` order (what `total_cmp`
/// itself compares).
fn total_order_bits(x: f64) -> i64 {
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

/// Every item's undecayed score, merged across shards, ordered for top-k.
///
/// Equal scores are common (every item seen once has the same one), so the order breaks ties
/// by a stable 32-bit hash of the id (`tie_hash`), then by the index's own id of the item
/// (ties of both score and hash are rare; they fall to the order the index first saw the
/// items in). Items are interned ([`IdMap`]: the key once, inline when short), so the order
/// holds 16-byte entries and comparing them never reads a string. Memory per item: a 32-byte
/// slot (key and score), its id-table share and one order entry; the tie hash is not kept
/// but recomputed from the key when an item's entry moves (a hash of a short string, next to
/// the order's remove and insert).
#[derive(Debug, Default)]
pub struct ScoreIndex {
    /// Per item: the score.
    scores: IdMap<f64>,
    order: BTreeSet<(Key, u32, u32)>,
    /// Ids of items [`ScoreIndex::forget_if_zero`] dropped. An [`IdMap`] never removes an id,
    /// so a forgotten item keeps its slot but is out of the order, `score` and `len` until
    /// it is added again (rare: set-aside tails).
    forgotten: hashbrown::HashSet<u32>,
}

/// The order's tie-break for equal scores: the high half of the id's stable hash.
fn tie_hash(item: &[u8]) -> u32 {
    (crate::shard::router::stable_hash(item) >> 32) as u32
}

impl ScoreIndex {
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

    fn update(&mut self, id: u32, new: bool, delta: f64) {
        // Back after being forgotten: as new, with `delta` as its score.
        let revived = !new && !self.forgotten.is_empty() && self.forgotten.remove(&id);
        if !new && !revived && delta == 0.0 {
            return;
        }
        let Some(key) = self.scores.id_key(id) else { return };
        let tie = tie_hash(key.as_bytes());
        let Some(score) = self.scores.value_mut(id) else { return };
        if revived {
            *score = delta;
        } else if !new {
            self.order.remove(&(Key(*score), tie, id));
            *score += delta;
        }
        self.order.insert((Key(*score), tie, id));
    }

    /// Drops an item whose score is exactly zero (after its only shard's share was taken
    /// back: a set-aside tail). Returns whether it was dropped.
    pub fn forget_if_zero(&mut self, item: &str) -> bool {
        let Some(id) = self.scores.id(item).filter(|id| !self.forgotten.contains(id)) else {
            return false;
        };
        match self.scores.value(id) {
            Some(&score) if score == 0.0 => {
                self.order.remove(&(Key(score), tie_hash(item.as_bytes()), id));
                self.forgotten.insert(id);
                true
            }
            _ => false,
        }
    }

    /// Builds the index from per-shard contributions in one pass: sums per item first, then
    /// one sorted bulk build. `parts_hint` (the number of parts, or an upper bound on the
    /// items) sizes the id map once instead of growing it step by step.
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
        let mut order: Vec<(Key, u32, u32)> =
            scores.iter_keys().map(|(id, key, &score)| (Key(score), tie_hash(key.as_bytes()), id)).collect();
        // The order of `Key` (f64::total_cmp) as plain integers: sorting a large index
        // compares much faster than through `total_cmp` and the tuple `Ord`.
        order.sort_unstable_by_key(|&(score, tie, id)| (total_order_bits(score.0), tie, id));
        ScoreIndex { scores, order: order.into_iter().collect(), forgotten: hashbrown::HashSet::new() }
    }

    /// The `k` highest-scored items after skipping `offset`, best first, with raw scores.
    pub fn top(&self, k: usize, offset: usize) -> Vec<(String, f64)> {
        let ranked = self.order.iter().rev().skip(offset).take(k);
        ranked.filter_map(|(s, _, id)| Some((self.scores.key(*id)?.to_owned(), s.0))).collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_orders_and_updates() {
        let mut idx = ScoreIndex::default();
        let (a, b, c) = ("a", "b", "c");
        idx.add(a, 1.0);
        idx.add(b, 5.0);
        idx.add(c, 3.0);
        idx.add(a, 10.0);
        let top: Vec<String> = idx.top(2, 0).into_iter().map(|(i, _)| i.to_string()).collect();
        assert_eq!(top, ["a", "b"]);
        assert_eq!(idx.top(5, 2).len(), 1);
        idx.add(a, -20.0);
        assert_eq!(&*idx.top(1, 0)[0].0, "b");
        assert_eq!(idx.top(3, 0).last().map(|(i, s)| (i.to_string(), *s)), Some(("a".into(), -9.0)));
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn a_bulk_build_equals_adding_one_by_one() {
        // Parts of 300 items from three "shards", overlapping, more than one chunk each.
        let keys: Vec<IdKey> = (0..300).map(|n| IdKey::new(&format!("item-{n}"))).collect();
        let mut parts = Vec::new();
        for shard in 0..3u32 {
            for (n, key) in keys.iter().enumerate().filter(|(n, _)| (*n as u32 + shard).is_multiple_of(2)) {
                parts.push((key, f64::from(shard) + n as f64 / 7.0));
            }
        }
        let bulk = ScoreIndex::from_parts(parts.iter().map(|(k, s)| (*k, *s)), parts.len());
        let mut one_by_one = ScoreIndex::default();
        for (key, score) in &parts {
            one_by_one.add_key(key, *score);
        }
        assert_eq!(bulk.len(), 300);
        assert_eq!(bulk.top(300, 0), one_by_one.top(300, 0));
        for key in &keys {
            assert_eq!(bulk.score(key.as_str()), one_by_one.score(key.as_str()), "{key:?}");
        }
    }

    #[test]
    fn forgotten_items_leave_until_added_again() {
        let mut idx = ScoreIndex::default();
        idx.add("a", 2.0);
        idx.add("b", 1.0);
        assert!(!idx.forget_if_zero("a"), "a non-zero score stays");
        idx.add("a", -2.0);
        assert!(idx.forget_if_zero("a"));
        assert!(!idx.forget_if_zero("a"), "already gone");
        assert!(!idx.forget_if_zero("nobody"));
        assert_eq!((idx.score("a"), idx.len()), (None, 1));
        assert_eq!(idx.top(5, 0), [("b".to_owned(), 1.0)]);
        idx.add("a", 0.5);
        assert_eq!((idx.score("a"), idx.len()), (Some(0.5), 2));
        assert_eq!(idx.top(5, 0), [("b".to_owned(), 1.0), ("a".to_owned(), 0.5)]);
    }

    #[test]
    fn decay_halves_per_half_life_and_keeps_order() {
        let decay = Decay { t_ref_ms: 1_000, half_life_ms: 100 };
        assert_eq!(decay.growth(1_100), 2.0);
        assert_eq!(decay.growth(900), 0.5);
        // A signal now is worth twice one a half-life ago, whenever we look.
        let (old, new) = (decay.growth(1_000), decay.growth(1_100));
        for now in [1_100, 5_000, 90_000] {
            assert!((decay.at(new, now) / decay.at(old, now) - 2.0).abs() < 1e-9);
        }
        assert!(decay.growth(u64::MAX).is_finite());
    }

    #[test]
    fn weights_apply_per_kind_and_ignore_custom() {
        let w = Weights::default();
        let mut sums = DecayedSums::default();
        assert_eq!(sums.add(&SignalKind::Like, 1.0, 1.0, &w), 3.0);
        assert_eq!(sums.add(&SignalKind::Dwell, 100.0, 1.0, &w), 1.0);
        assert_eq!(sums.add(&SignalKind::Custom("x".into()), 5.0, 1.0, &w), 0.0);
        assert_eq!(sums.score(&w), 4.0);
        let mut other = Weights::default();
        other.set(&SignalKind::Like, 0.0);
        assert_eq!(sums.score(&other), 1.0, "re-weighting needs no replay");
    }

    #[test]
    fn integer_order_is_total_cmp_order() {
        let xs = [f64::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-300, 2.0, f64::INFINITY, f64::NAN, -f64::NAN];
        for a in xs {
            for b in xs {
                assert_eq!(total_order_bits(a).cmp(&total_order_bits(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn sums_spill_past_two_kinds_and_keep_their_array_form() {
        let w = Weights::default();
        let mut sums = DecayedSums::default();
        let mut plain = [0.0f64; SCORED_KINDS];
        let adds = [(SignalKind::Click, 1.0), (SignalKind::Label, -0.0), (SignalKind::Click, 2.0)];
        let more = [(SignalKind::Like, 1.5), (SignalKind::Dwell, 30.0), (SignalKind::Impression, 1.0)];
        for (n, (kind, value)) in adds.iter().chain(&more).enumerate() {
            sums.add(kind, *value, 2.0, &w);
            plain[slot(kind).unwrap()] += value * 2.0;
            assert_eq!(sums.to_array().map(f64::to_bits), plain.map(f64::to_bits), "after {n} adds");
            assert_eq!(sums.spilled.is_some(), n >= 3, "after {n} adds");
            let back = DecayedSums::from_array(sums.to_array());
            assert_eq!(back.to_array().map(f64::to_bits), plain.map(f64::to_bits));
            let json = serde_json::to_string(&sums).unwrap();
            assert_eq!(json, serde_json::to_string(&plain).unwrap(), "encodes as the array");
        }
        assert!(std::mem::size_of::<DecayedSums>() <= 32);
    }
}
