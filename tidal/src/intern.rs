//! Interned ids: [`IdMap`] gives each distinct id string (an item, a user, a custom kind) a
//! dense `u32` the first time it is seen, and keeps the value it names in a `Vec` at that
//! index. The history rings, hard-negative sets and the score index hold these `u32`s instead
//! of shared strings, so applying a record moves no reference counts and compares no string
//! behind a pointer.
//!
//! Owns the key → id table and the id-indexed slots. Invariants:
//! - ids are `0..len`, in first-seen order, and are never removed or reused (a shard never
//!   forgets an item or a user), so an id held elsewhere stays valid for the map's life;
//! - `slots[id].0` is the key the table maps to `id`. The table ([`IdTable`]) holds only
//!   32 bits of each key's hash and its id (8 bytes per bucket, at most 7/10 full), so a
//!   probe reads a slot's key only on a 32-bit hash match, and growing never rereads a key;
//! - ids are an in-memory layout only. Nothing durable or compared across replicas (snapshot
//!   bytes, the [`StateDigest`](crate::shard::digest::StateDigest)) may depend on them: those
//!   resolve ids back to strings.

use std::hash::BuildHasher;

use crate::id_table::IdTable;

/// Longest key kept inline in its slot (no allocation; comparing it reads the slot itself).
pub const INLINE_KEY_BYTES_MAX: usize = 22;

/// An id string stored inline when short, boxed otherwise.
#[derive(Clone, PartialEq, Eq)]
pub enum IdKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES_MAX] },
    Boxed(Box<str>),
}

impl IdKey {
    pub fn new(key: &str) -> IdKey {
        if key.len() <= INLINE_KEY_BYTES_MAX {
            let mut bytes = [0u8; INLINE_KEY_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            // len <= 22 fits a u8.
            IdKey::Inline { len: key.len() as u8, bytes }
        } else {
            IdKey::Boxed(key.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IdKey::Inline { len, bytes } => &bytes[..usize::from(*len).min(INLINE_KEY_BYTES_MAX)],
            IdKey::Boxed(key) => key.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Inline bytes are copied whole from a `&str` (`new`), so they are UTF-8; the
            // fallback is unreachable.
            IdKey::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            IdKey::Boxed(key) => key,
        }
    }

    /// Bytes held on the heap (0 when inline).
    pub fn heap_bytes(&self) -> usize {
        match self {
            IdKey::Inline { .. } => 0,
            IdKey::Boxed(key) => key.len(),
        }
    }
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A map from id strings to dense `u32` ids and one value per id (see the module docs).
#[derive(Clone)]
pub struct IdMap<V> {
    table: IdTable,
    slots: Vec<(IdKey, V)>,
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap { table: IdTable::default(), slots: Vec::new(), hasher: foldhash::fast::RandomState::default() }
    }
}

/// A key being looked up. A short key is built as it would be stored, so it compares as one
/// fixed-size value (zero padding included) with no call to `memcmp`; a long key compares by
/// bytes and is boxed only if it gets interned. `IdKey::new` decides the form by length
/// alone, so a key and its stored form always take the same branch.
enum Probe<'k> {
    Inline(IdKey),
    Long(&'k str),
}

impl<'k> Probe<'k> {
    fn new(key: &'k str) -> Probe<'k> {
        if key.len() <= INLINE_KEY_BYTES_MAX { Probe::Inline(IdKey::new(key)) } else { Probe::Long(key) }
    }

    fn of(key: &'k IdKey) -> Probe<'k> {
        match key {
            IdKey::Inline { .. } => Probe::Inline(key.clone()),
            IdKey::Boxed(long) => Probe::Long(long),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Probe::Inline(key) => key.as_bytes(),
            Probe::Long(key) => key.as_bytes(),
        }
    }

    fn matches(&self, stored: &IdKey) -> bool {
        match (self, stored) {
            (Probe::Inline(key), stored) => key == stored,
            (Probe::Long(key), IdKey::Boxed(stored)) => key.as_bytes() == stored.as_bytes(),
            (Probe::Long(_), IdKey::Inline { .. }) => false,
        }
    }

    fn into_key(self) -> IdKey {
        match self {
            Probe::Inline(key) => key,
            Probe::Long(key) => IdKey::Boxed(key.into()),
        }
    }
}

/// Is `id` the id of the probed key?
fn names<V>(slots: &[(IdKey, V)], id: u32, probe: &Probe<'_>) -> bool {
    slots.get(id as usize).is_some_and(|(k, _)| probe.matches(k))
}

impl<V> IdMap<V> {
    /// An empty map with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        IdMap {
            table: IdTable::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// A map whose ids `0..len` name `slots` in order (keys distinct, as the slots of another
    /// map are; a repeated key would be found under its first id only).
    pub fn from_slots(slots: Vec<(IdKey, V)>) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        let mut table = IdTable::with_capacity(slots.len());
        for (id, (key, _)) in slots.iter().enumerate() {
            table.insert_new(hasher.hash_one(key.as_bytes()), id as u32);
        }
        IdMap { table, slots, hasher }
    }

    /// Every `(key, value)` slot, in id order.
    pub fn slots(&self) -> &[(IdKey, V)] {
        &self.slots
    }

    /// Keys hash as bytes, so a `&str` and a stored key hash alike without a UTF-8 check.
    fn hash_of(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(bytes)
    }

    /// The id of `key`, if it was interned.
    pub fn id(&self, key: &str) -> Option<u32> {
        self.id_hashed(key, self.hash_key(key))
    }

    /// The hash [`IdMap::id_hashed`] and [`IdMap::home`] take for `key`.
    pub fn hash_key(&self, key: &str) -> u64 {
        self.hash_of(key.as_bytes())
    }

    /// [`IdMap::id`] with the key's hash computed before.
    pub fn id_hashed(&self, key: &str, hash: u64) -> Option<u32> {
        let probe = Probe::new(key);
        self.table.find(hash, |id| names(&self.slots, id, &probe))
    }

    /// Reads the table's home bucket for `hash`, and returns the id it holds if the hash bits
    /// match (a candidate: the key is not checked). Applying a group of records calls it for
    /// many keys before searching any, so the buckets' cache misses overlap (see
    /// `shard::apply_group`).
    pub fn home(&self, hash: u64) -> Option<u32> {
        IdTable::candidate(self.table.home(hash), hash).filter(|&id| (id as usize) < self.slots.len())
    }

    /// The id of `key`, interning it with the value `new()` if it is new. Returns the id and
    /// whether it was new.
    pub fn intern_with(&mut self, key: &str, new: impl FnOnce() -> V) -> (u32, bool) {
        self.intern_probe(Probe::new(key), new)
    }

    /// [`IdMap::intern_with`] for a key already in [`IdKey`] form (another map's key).
    pub fn intern_key_with(&mut self, key: &IdKey, new: impl FnOnce() -> V) -> (u32, bool) {
        self.intern_probe(Probe::of(key), new)
    }

    /// The hash of a key in stored form ([`IdMap::hash_key`] of its string).
    pub fn hash_id_key(&self, key: &IdKey) -> u64 {
        self.hash_of(key.as_bytes())
    }

    /// [`IdMap::intern_key_with`] given the key's hash ([`IdMap::hash_id_key`]), for a bulk
    /// build that read the key's home bucket earlier ([`IdMap::home`]).
    pub fn intern_key_hashed(&mut self, key: &IdKey, hash: u64, new: impl FnOnce() -> V) -> (u32, bool) {
        debug_assert_eq!(hash, self.hash_id_key(key), "a hash of another key");
        self.intern_hashed(Probe::of(key), hash, new)
    }

    fn intern_probe(&mut self, probe: Probe<'_>, new: impl FnOnce() -> V) -> (u32, bool) {
        let hash = self.hash_of(probe.bytes());
        self.intern_hashed(probe, hash, new)
    }

    fn intern_hashed(&mut self, probe: Probe<'_>, hash: u64, new: impl FnOnce() -> V) -> (u32, bool) {
        if let Some(id) = self.table.find(hash, |id| names(&self.slots, id, &probe)) {
            return (id, false);
        }
        // A shard would need terabytes of memory to hold 2^32 keys; ids then wrap rather
        // than panic, which the key check turns into misses, not into wrong values.
        let id = self.slots.len() as u32;
        self.table.insert_new(hash, id);
        self.slots.push((probe.into_key(), new()));
        (id, true)
    }

    /// Sets the value of `key` (interning it if new); returns its id.
    pub fn insert(&mut self, key: &str, value: V) -> u32 {
        match self.id(key) {
            Some(id) => {
                if let Some(slot) = self.slots.get_mut(id as usize) {
                    slot.1 = value;
                }
                id
            }
            None => self.intern_with(key, || value).0,
        }
    }

    /// The id of `key` and its value, interned with `new()` if it is new.
    pub fn entry_with(&mut self, key: &str, new: impl FnOnce() -> V) -> (u32, &mut V) {
        let (id, _) = self.intern_with(key, new);
        // Every id the table hands out is below `slots.len()` (see `intern_with`).
        (id, &mut self.slots[id as usize].1)
    }

    /// [`IdMap::entry_with`] given the id a lookup of `key` found earlier (ids never
    /// change), which skips the lookup; `None` looks it up (and interns it if new).
    pub fn entry_with_id(&mut self, id: Option<u32>, key: &str, new: impl FnOnce() -> V) -> (u32, &mut V) {
        match id {
            Some(id) if (id as usize) < self.slots.len() => {
                debug_assert_eq!(
                    self.slots[id as usize].0.as_bytes(),
                    key.as_bytes(),
                    "id {id} names another key"
                );
                (id, &mut self.slots[id as usize].1)
            }
            _ => self.entry_with(key, new),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.id(key).and_then(|id| self.value(id))
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.id(key).and_then(|id| self.value_mut(id))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.id(key).is_some()
    }

    /// The key interned as `id`.
    pub fn key(&self, id: u32) -> Option<&str> {
        self.slots.get(id as usize).map(|(k, _)| k.as_str())
    }

    /// The key interned as `id`, in stored form (no UTF-8 check).
    pub fn id_key(&self, id: u32) -> Option<&IdKey> {
        self.slots.get(id as usize).map(|(k, _)| k)
    }

    /// `(id, key, value)` in id order, keys in stored form.
    pub fn iter_keys(&self) -> impl ExactSizeIterator<Item = (u32, &IdKey, &V)> + '_ {
        self.slots.iter().enumerate().map(|(id, (k, v))| (id as u32, k, v))
    }

    pub fn value(&self, id: u32) -> Option<&V> {
        self.slots.get(id as usize).map(|(_, v)| v)
    }

    pub fn value_mut(&mut self, id: u32) -> Option<&mut V> {
        self.slots.get_mut(id as usize).map(|(_, v)| v)
    }

    /// `(id, key, value)` in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, &str, &V)> + '_ {
        self.slots.iter().enumerate().map(|(id, (k, v))| (id as u32, k.as_str(), v))
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.slots.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut V> + '_ {
        self.slots.iter_mut().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held beyond `size_of::<IdMap<V>>()` by the table, the slots and boxed keys
    /// (not counting what the values hold on the heap).
    pub fn heap_bytes(&self) -> usize {
        let table = self.table.heap_bytes();
        let slots = self.slots.capacity() * std::mem::size_of::<(IdKey, V)>();
        table + slots + self.slots.iter().map(|(k, _)| k.heap_bytes()).sum::<usize>()
    }
}

impl<V> std::ops::Index<&str> for IdMap<V> {
    type Output = V;

    /// The value of `key`; panics if it was never interned (as `HashMap`'s index does).
    fn index(&self, key: &str) -> &V {
        self.get(key).unwrap_or_else(|| panic!("no entry for key {key:?}"))
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.slots.iter().map(|(k, v)| (k.as_str(), v))).finish()
    }
}

impl<'a, V> FromIterator<(&'a str, V)> for IdMap<V> {
    /// Later values of a repeated key replace earlier ones, as collecting into a map does.
    fn from_iter<I: IntoIterator<Item = (&'a str, V)>>(iter: I) -> Self {
        let mut map = IdMap::default();
        for (key, value) in iter {
            map.insert(key, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_stable_and_keys_round_trip() {
        let mut map: IdMap<u64> = IdMap::default();
        let long = "x".repeat(INLINE_KEY_BYTES_MAX + 1);
        let keys = ["a", "", "item-0000001", long.as_str(), &long[..INLINE_KEY_BYTES_MAX]];
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(map.intern_with(key, || n as u64), (n as u32, true));
        }
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(map.intern_with(key, || 99), (n as u32, false), "{key:?} interned once");
            assert_eq!(map.id(key), Some(n as u32));
            assert_eq!(map.key(n as u32), Some(*key));
            assert_eq!(map[*key], n as u64);
        }
        assert_eq!(map.id("b"), None);
        assert_eq!(map.insert("a", 7), 0);
        assert_eq!((map["a"], map.len()), (7, keys.len()));
        assert!(matches!(IdKey::new(&long), IdKey::Boxed(_)));
        assert!(matches!(IdKey::new(&long[1..]), IdKey::Inline { .. }));
    }

    #[test]
    fn survives_growth() {
        let mut map: IdMap<u32> = IdMap::default();
        for n in 0..20_000u32 {
            assert_eq!(map.intern_with(&format!("k{n}"), || n).0, n);
        }
        assert!((0..20_000u32).all(|n| map.get(&format!("k{n}")) == Some(&n)));
        assert_eq!(map.iter().map(|(id, _, v)| (id, *v)).last(), Some((19_999, 19_999)));
    }
}
