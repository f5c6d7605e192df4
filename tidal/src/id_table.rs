//! The hash table behind [`crate::intern::IdMap`]: key hashes to dense `u32` ids.
//!
//! Owns only `(hash, id)` pairs; the keys live in the map's slots, and the map compares them.
//! Why not `hashbrown`: applying a group of records looks up many keys whose buckets are
//! not in any cache, and overlaps those misses by reading each key's home bucket first
//! ([`IdTable::home`]) and only then searching (`shard::apply_group`). That needs the bucket
//! a hash starts at, which `hashbrown` does not expose. This table is small because of what
//! an `IdMap` never does: it never removes an id, so there are no tombstones.
//!
//! Layout: open addressing with linear probing over a power-of-two `Vec<u64>`. An entry is
//! `hash32 << 32 | (id + 1)`, 0 being empty; the home bucket of a hash is `hash32 & mask`, so
//! growing rehashes from the stored bits alone. Load stays at or below 7/10, so a hit reads one
//! or two adjacent entries, usually within one cache line. Equal 32-bit hashes of different
//! keys are told apart by the caller's key check.

/// Entries per 10 buckets at most before the table doubles.
const LOAD_TENTHS_MAX: usize = 7;

#[derive(Clone, Debug, Default)]
pub struct IdTable {
    buckets: Vec<u64>,
    len: usize,
}

/// The 32 bits of a key's hash the table keeps.
fn short(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl IdTable {
    /// A table with room for `capacity` ids before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        IdTable { buckets: zeroed_buckets(buckets_for(capacity)), len: 0 }
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The entry in `hash`'s home bucket (0 if empty or the table is): reading it brings the
    /// bucket into the cache for a search soon after.
    pub fn home(&self, hash: u64) -> u64 {
        self.buckets.get(short(hash) as usize & self.mask()).copied().unwrap_or(0)
    }

    /// The id in a [`IdTable::home`] entry, if its hash bits match `hash`'s (unverified: the
    /// caller's key check decides).
    pub fn candidate(entry: u64, hash: u64) -> Option<u32> {
        (entry != 0 && (entry >> 32) as u32 == short(hash)).then(|| (entry as u32).wrapping_sub(1))
    }

    /// The id whose key `is_key` accepts among those stored with `hash`.
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let (tag, mask) = (short(hash), self.mask());
        let mut at = tag as usize & mask;
        loop {
            let entry = self.buckets[at];
            if entry == 0 {
                return None;
            }
            let id = (entry as u32).wrapping_sub(1);
            if (entry >> 32) as u32 == tag && is_key(id) {
                return Some(id);
            }
            at = (at + 1) & mask;
        }
    }

    /// Stores `id` under `hash`; the caller checked that its key is not stored.
    pub fn insert_new(&mut self, hash: u64, id: u32) {
        if (self.len + 1) * 10 > self.buckets.len() * LOAD_TENTHS_MAX {
            self.grow();
        }
        place(&mut self.buckets, u64::from(short(hash)) << 32 | (u64::from(id) + 1));
        self.len += 1;
    }

    fn grow(&mut self) {
        let mut buckets = zeroed_buckets(buckets_for(self.len + 1).max(self.buckets.len() * 2));
        for &entry in self.buckets.iter().filter(|&&e| e != 0) {
            place(&mut buckets, entry);
        }
        self.buckets = buckets;
    }

    /// Bytes the buckets take.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u64>()
    }
}

/// `n` empty buckets, written rather than allocated zeroed. `vec![0; n]` of a large table
/// gets fresh pages that the kernel maps to its shared zero page on the first read (a
/// lookup's probe) and copies on the first write (an insert), with a TLB flush on every
/// core the process runs on: two faults and an interrupt per page, 5% of a 10M-signal
/// replay. Written once, each page takes one fault.
#[allow(clippy::slow_vector_initialization, reason = "the writes are the point: see above")]
fn zeroed_buckets(n: usize) -> Vec<u64> {
    let mut buckets = Vec::with_capacity(n);
    buckets.resize(n, 0);
    buckets
}

/// Puts `entry` in the first free bucket from its home (there is one: load < 1).
fn place(buckets: &mut [u64], entry: u64) {
    let mask = buckets.len() - 1;
    let mut at = (entry >> 32) as usize & mask;
    while buckets[at] != 0 {
        at = (at + 1) & mask;
    }
    buckets[at] = entry;
}

/// A power of two of buckets holding `ids` within the load bound (at least 8).
fn buckets_for(ids: usize) -> usize {
    (ids * 10).div_ceil(LOAD_TENTHS_MAX).max(8).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_stored_through_growth_and_equal_hashes() {
        let mut table = IdTable::default();
        assert_eq!(table.find(7, |_| true), None);
        // Ids 0..5000 under hashes that share their 32 kept bits in pairs.
        let hash = |id: u32| u64::from(id / 2) << 32 | u64::from(id);
        for id in 0..5000 {
            table.insert_new(hash(id), id);
        }
        for id in 0..5000 {
            assert_eq!(table.find(hash(id), |found| found == id), Some(id));
        }
        assert_eq!(table.find(hash(5001), |_| false), None);
        assert!(table.heap_bytes() >= 5000 * 10 / 7 * 8);
    }

    proptest::proptest! {
        /// Against a plain map, with hashes drawn from a small range so that collisions of
        /// the kept bits and long probe runs are common.
        #[test]
        fn agrees_with_a_map(hashes in proptest::collection::vec(0u64..64, 0..300)) {
            let mut table = IdTable::default();
            let mut model: std::collections::HashMap<u32, u64> = Default::default();
            for (id, h) in hashes.iter().enumerate() {
                let hash = h << 32 | (h * 7919);
                table.insert_new(hash, id as u32);
                model.insert(id as u32, hash);
            }
            for (&id, &hash) in &model {
                proptest::prop_assert_eq!(table.find(hash, |found| found == id), Some(id));
            }
            proptest::prop_assert_eq!(table.find(99 << 32, |_| true), None);
        }
    }

    #[test]
    fn a_home_bucket_names_its_candidate() {
        let mut table = IdTable::default();
        assert_eq!(table.home(42 << 32), 0, "an empty table has no bucket");
        table.insert_new(42 << 32, 9);
        assert_eq!(IdTable::candidate(table.home(42 << 32), 42 << 32), Some(9));
        assert_eq!(IdTable::candidate(table.home(43 << 32), 43 << 32), None);
        assert_eq!(IdTable::candidate(table.home(42 << 32), 50 << 32), None, "other hash bits");
    }
}
