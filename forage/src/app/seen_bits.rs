//! A per-user bitset over the candidate index's item numbers that lets a feed request skip
//! the user's seen and rejected items without hashing an id per candidate.
//!
//! Owns [`TouchedBits`]. Invariant: for the index build it was synced with (its
//! `identity`), the bit of every item that the index holds and the user touched (shown,
//! liked, opened, skipped, disliked: `UserState::is_touched`) is set. A set bit means "ask
//! the state" (`UserState::is_hidden`, exact); a clear bit means "not hidden", because a
//! hidden item is always touched. Touching only grows (forgotten items keep their bit and
//! fall back to the exact check), so the bits are kept current incrementally: each sync
//! reads the items touched since the last stamp it saw and the items the index gained
//! since its last length. A new index build (other numbers) starts the bits over.
//!
//! Memory: one bit per index item per user who asked for a feed (125 KB at a million
//! items).

use super::index::CandidateIndex;
use crate::taste::UserState;

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct TouchedBits {
    identity: u64,
    /// Index items looked at (numbers below are synced).
    indexed: usize,
    /// The last first-touch stamp read from the state.
    stamp: u64,
    words: Vec<u64>,
}

impl TouchedBits {
    /// Brings the bits up to `state` and `index` (see the module docs).
    pub fn sync(&mut self, state: &UserState, index: &CandidateIndex) {
        if self.identity != index.identity() {
            // Starting over: reading every touched item (from stamp 0) covers the index as
            // it is now, so the index's items need no scan (a million lookups at 1M items).
            let fresh =
                TouchedBits { identity: index.identity(), indexed: index.items(), ..TouchedBits::default() };
            *self = fresh;
        }
        self.words.resize(index.items().div_ceil(64), 0);
        for n in self.indexed..index.items() {
            // Items the index gained since the last sync, touched before they arrived.
            if state.is_touched(index.id(n as u32)) {
                self.set(n as u32);
            }
        }
        self.indexed = index.items();
        let mut last = self.stamp;
        for (stamp, id) in state.touched_after(self.stamp) {
            last = stamp;
            if let Some(n) = index.number(id) {
                self.set(n);
            }
        }
        self.stamp = last;
    }

    fn set(&mut self, n: u32) {
        let n = n as usize;
        self.words[n / 64] |= 1 << (n % 64);
    }

    /// May item number `n` be hidden from the user? (false: certainly not.)
    #[inline]
    pub fn may_hide(&self, n: u32) -> bool {
        let n = n as usize;
        self.words.get(n / 64).is_some_and(|w| w & (1 << (n % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use tidal::SignalKind;

    use super::*;
    use crate::catalog::{Catalog, NewItem};

    fn item(n: usize) -> NewItem {
        NewItem { guid: Some(format!("g{n}")), title: format!("item {n}"), ..NewItem::default() }
    }

    fn ids(cat: &Catalog) -> Vec<String> {
        let mut ids: Vec<String> = cat.item_stamps().expect("stamps").into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn bits_cover_every_touched_item_across_syncs_and_new_items() {
        let mut cat = Catalog::open_in_memory().expect("catalog");
        let src = cat.add_source("file:///a", "file", 60, 0).expect("source");
        cat.upsert_items(src, &[item(1), item(2), item(3)], 1).expect("upsert");
        let mut index = CandidateIndex::build(&cat, "m").expect("build");
        let mut state = UserState::default();
        let mut bits = TouchedBits::default();
        let first = ids(&cat);
        state.apply(&first[0], &SignalKind::Impression, 1);
        bits.sync(&state, &index);
        let hidden = |bits: &TouchedBits, index: &CandidateIndex, id: &str| {
            bits.may_hide(index.number(id).expect("number"))
        };
        assert!(hidden(&bits, &index, &first[0]));
        assert!(!hidden(&bits, &index, &first[1]) && !hidden(&bits, &index, &first[2]));
        // Touched after the sync, and touched before the index held the item.
        state.apply(&first[1], &SignalKind::Skip, 2);
        cat.upsert_items(src, &[item(4)], 2).expect("upsert");
        let new = ids(&cat).into_iter().find(|id| !first.contains(id)).expect("new id");
        state.apply(&new, &SignalKind::Dislike, 3);
        bits.sync(&state, &index);
        assert!(hidden(&bits, &index, &first[1]));
        index.catch_up(&cat).expect("catch up");
        bits.sync(&state, &index);
        assert!(hidden(&bits, &index, &new), "an item touched before it reached the index");
        assert!(!hidden(&bits, &index, &first[2]));
        // A rebuild (new identity) starts over and still covers everything.
        let rebuilt = CandidateIndex::build(&cat, "m").expect("rebuild");
        bits.sync(&state, &rebuilt);
        let all: Vec<bool> = ids(&cat).iter().map(|id| hidden(&bits, &rebuilt, id)).collect();
        assert_eq!(all.iter().filter(|b| **b).count(), 3, "{all:?}");
    }
}
