//! [`PnCounter`]: a counter that goes up and down, replicated without coordination.
//!
//! Each replica owns one slot `(p, n)`: the total it ever added and the total it ever
//! subtracted. A replica only grows its own slot, so merge is the pointwise max per replica
//! and the value is `Σ p − Σ n`.
//!
//! Memory: an item holds several counters and a store holds millions of items, and almost
//! every counter is written by a single replica. So the slots live inline when there is one
//! (no heap allocation) and in an exactly sized boxed slice otherwise; `size_of` is 32 bytes.
//!
//! Invariants (kept by every constructor, including deserialisation, so that the derived
//! `PartialEq` is equality of counter states):
//! - slots are sorted by replica id, strictly (one slot per replica);
//! - no slot is all zero (an absent slot and a zero slot mean the same thing);
//! - `Many` holds at least two slots, `One` exactly one, `Empty` none.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ReplicaId;

/// One replica's contribution: everything it added (`p`) and subtracted (`n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    replica: ReplicaId,
    p: u64,
    n: u64,
}

impl Slot {
    fn is_zero(&self) -> bool {
        self.p == 0 && self.n == 0
    }

    /// Pointwise max: the join of two views of the same replica's slot.
    fn join(&mut self, other: &Slot) {
        self.p = self.p.max(other.p);
        self.n = self.n.max(other.n);
    }
}

/// The slot list, with the single-replica case stored inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Slots {
    #[default]
    Empty,
    One(Slot),
    Many(Box<[Slot]>),
}

impl Slots {
    fn as_slice(&self) -> &[Slot] {
        match self {
            Slots::Empty => &[],
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Slot] {
        match self {
            Slots::Empty => &mut [],
            Slots::One(slot) => std::slice::from_mut(slot),
            Slots::Many(slots) => slots,
        }
    }

    /// Canonical form of a sorted, duplicate-free, zero-free slot list.
    fn from_sorted(mut slots: Vec<Slot>) -> Slots {
        match slots.len() {
            0 => Slots::Empty,
            1 => slots.pop().map_or(Slots::Empty, Slots::One),
            _ => Slots::Many(slots.into_boxed_slice()),
        }
    }

    /// Inserts a slot for a replica that has none, at `index` (from a failed binary search).
    fn insert(&mut self, index: usize, slot: Slot) {
        let mut slots = match std::mem::take(self) {
            // The common first write of a counter: inline, no allocation.
            Slots::Empty => {
                *self = Slots::One(slot);
                return;
            }
            Slots::One(one) => {
                let mut v = Vec::with_capacity(2);
                v.push(one);
                v
            }
            Slots::Many(many) => many.into_vec(),
        };
        // Exact growth: into_boxed_slice would otherwise shrink (reallocate) anyway.
        slots.reserve_exact(1);
        slots.insert(index.min(slots.len()), slot);
        *self = Slots::from_sorted(slots);
    }
}

impl Serialize for Slots {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Slots {
    /// Accepts any slot list and restores the invariants: a snapshot from an older or
    /// corrupted writer must not produce a counter that compares or merges wrongly.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut slots = Vec::<Slot>::deserialize(d)?;
        slots.sort_by_key(|s| s.replica);
        let mut canonical: Vec<Slot> = Vec::with_capacity(slots.len());
        for slot in slots {
            match canonical.last_mut() {
                Some(last) if last.replica == slot.replica => last.join(&slot),
                _ => canonical.push(slot),
            }
        }
        canonical.retain(|s| !s.is_zero());
        Ok(Slots::from_sorted(canonical))
    }
}

/// A replicated counter that supports both increments and decrements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PnCounter {
    slots: Slots,
}

impl PnCounter {
    pub fn new() -> Self {
        PnCounter::default()
    }

    /// Adds `delta` on behalf of `replica`: positive deltas grow its `p`, negative ones its
    /// `n`. Saturates at `u64::MAX` per side rather than wrapping, since a wrapped slot would
    /// lose to every older copy of itself under max-merge.
    pub fn increment(&mut self, replica: ReplicaId, delta: i64) {
        if delta == 0 {
            return;
        }
        let magnitude = delta.unsigned_abs();
        let add = |slot: &mut Slot| {
            if delta > 0 {
                slot.p = slot.p.saturating_add(magnitude);
            } else {
                slot.n = slot.n.saturating_add(magnitude);
            }
        };
        let found = self.slots.as_slice().binary_search_by_key(&replica, |s| s.replica);
        match found {
            Ok(i) => {
                if let Some(slot) = self.slots.as_mut_slice().get_mut(i) {
                    add(slot);
                }
            }
            Err(i) => {
                let mut slot = Slot { replica, p: 0, n: 0 };
                add(&mut slot);
                self.slots.insert(i, slot);
            }
        }
    }

    /// `Σ p − Σ n` over all replicas, clamped to the `i64` range.
    pub fn value(&self) -> i64 {
        let total = self
            .slots
            .as_slice()
            .iter()
            .fold(0i128, |acc, s| acc.saturating_add(i128::from(s.p) - i128::from(s.n)));
        i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
    }

    /// Joins `other` into `self`: per replica, the max of each side.
    pub fn merge(&mut self, other: &PnCounter) {
        let theirs = other.slots.as_slice();
        if theirs.is_empty() {
            return;
        }
        // Common case: both sides know the same replicas (often the same single one), so
        // the join is in place and allocates nothing.
        let mine = self.slots.as_slice();
        if theirs.iter().all(|t| mine.binary_search_by_key(&t.replica, |s| s.replica).is_ok()) {
            let mine = self.slots.as_mut_slice();
            for t in theirs {
                if let Ok(i) = mine.binary_search_by_key(&t.replica, |s| s.replica)
                    && let Some(slot) = mine.get_mut(i)
                {
                    slot.join(t);
                }
            }
            return;
        }
        self.slots = Slots::from_sorted(merge_sorted(self.slots.as_slice(), theirs));
    }

    /// Each replica's slot as `(replica, p, n)`, in replica order (for digests and debugging).
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64, u64)> + '_ {
        self.slots.as_slice().iter().map(|s| (s.replica, s.p, s.n))
    }

    /// True when no replica ever counted anything non-zero.
    pub fn is_empty(&self) -> bool {
        self.slots.as_slice().is_empty()
    }

    /// Bytes this counter holds on the heap (beyond `size_of::<PnCounter>()`).
    pub fn heap_bytes(&self) -> usize {
        match &self.slots {
            Slots::Many(slots) => std::mem::size_of_val::<[Slot]>(slots),
            Slots::Empty | Slots::One(_) => 0,
        }
    }
}

/// Union of two sorted slot lists, joining the slots of replicas present in both.
fn merge_sorted(a: &[Slot], b: &[Slot]) -> Vec<Slot> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.replica.cmp(&y.replica) {
                Ordering::Less => a.next().copied(),
                Ordering::Greater => b.next().copied(),
                Ordering::Equal => {
                    let mut joined = **x;
                    joined.join(y);
                    a.next();
                    b.next();
                    Some(joined)
                }
            },
            (Some(_), None) => a.next().copied(),
            (None, Some(_)) => b.next().copied(),
            (None, None) => None,
        };
        match next {
            Some(slot) => out.push(slot),
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_and_decrements_add_up() {
        let mut c = PnCounter::new();
        c.increment(1, 5);
        c.increment(1, -2);
        c.increment(2, 10);
        c.increment(2, 0);
        assert_eq!(c.value(), 13);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(1, 5, 2), (2, 10, 0)]);
    }

    #[test]
    fn zero_delta_creates_no_slot() {
        let mut c = PnCounter::new();
        c.increment(9, 0);
        assert!(c.is_empty());
        assert_eq!(c, PnCounter::new());
    }

    #[test]
    fn one_replica_stays_inline() {
        let mut c = PnCounter::new();
        c.increment(4, 1);
        c.increment(4, -1);
        assert_eq!(c.heap_bytes(), 0);
        assert_eq!(c.value(), 0);
        c.increment(1, 1);
        assert_eq!(c.heap_bytes(), 2 * std::mem::size_of::<Slot>());
    }

    #[test]
    fn slots_stay_sorted_whatever_the_insert_order() {
        let mut c = PnCounter::new();
        for r in [5, 1, 9, 3, 7] {
            c.increment(r, r as i64);
        }
        let replicas: Vec<_> = c.iter().map(|(r, _, _)| r).collect();
        assert_eq!(replicas, vec![1, 3, 5, 7, 9]);
        assert_eq!(c.value(), 25);
    }

    #[test]
    fn merge_takes_max_per_replica_and_sums_across_replicas() {
        let mut a = PnCounter::new();
        a.increment(1, 3);
        let mut a_later = a.clone();
        a_later.increment(1, 4);
        let mut b = PnCounter::new();
        b.increment(2, -6);

        let mut m = a.clone();
        m.merge(&a_later);
        m.merge(&b);
        m.merge(&a);
        assert_eq!(m.value(), 7 - 6, "same replica is max, not sum");
        m.merge(&m.clone());
        assert_eq!(m.value(), 1);
    }

    #[test]
    fn merge_in_place_and_by_union_agree() {
        let mut a = PnCounter::new();
        a.increment(1, 2);
        a.increment(2, 2);
        let mut b = PnCounter::new();
        b.increment(2, 5);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.value(), 7);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut c = PnCounter::new();
        c.increment(1, i64::MAX);
        c.increment(1, i64::MAX);
        c.increment(1, i64::MAX);
        assert_eq!(c.iter().next(), Some((1, u64::MAX, 0)));
        assert_eq!(c.value(), i64::MAX, "value clamps to i64");
        c.increment(2, i64::MIN);
        c.increment(2, i64::MIN);
        c.increment(2, i64::MIN);
        assert_eq!(c.iter().nth(1), Some((2, 0, u64::MAX)));
        assert_eq!(c.value(), 0);
    }

    #[test]
    fn serde_round_trips_and_canonicalises() {
        let mut c = PnCounter::new();
        c.increment(2, 4);
        c.increment(1, -3);
        let json = serde_json::to_string(&c).unwrap();
        let back: PnCounter = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);

        let messy = r#"[{"replica":2,"p":1,"n":0},{"replica":1,"p":0,"n":3},
                        {"replica":2,"p":4,"n":0},{"replica":8,"p":0,"n":0}]"#;
        let fixed: PnCounter = serde_json::from_str(messy).unwrap();
        assert_eq!(fixed, c);
        let one: PnCounter = serde_json::from_str(r#"[{"replica":3,"p":1,"n":0}]"#).unwrap();
        assert_eq!(one.heap_bytes(), 0);
    }

    #[test]
    fn stays_small() {
        assert!(std::mem::size_of::<PnCounter>() <= 32);
    }
}
