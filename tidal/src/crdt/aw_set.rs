//! [`AddWinsSet`]: the optimised observed-remove set (add wins), with dots and a causal
//! context.
//!
//! Every add mints a fresh [`Dot`] `(replica, counter)` and tags the element with it; a remove
//! drops the dots it has *observed*. The causal context (a version vector: per replica, the
//! highest counter seen) remembers every dot this state has ever known, added or removed, so a
//! merge can tell "removed here" (dot covered by my context but absent) from "never seen here"
//! (dot not covered). A concurrent add carries a dot the remover never saw, so it survives:
//! add wins.
//!
//! Invariants:
//! - each element's dot list is sorted, duplicate-free and non-empty (an element with no
//!   dots is absent), and every dot is covered by the context;
//! - the dots one replica minted that this state knows are exactly `1..=context[replica]`
//!   (contiguous), which is why a version vector suffices as the causal context. This holds
//!   because states only ever travel whole: whoever knows dot `(r, k)` learnt it from a state
//!   whose context already covered `(r, 1..=k)`. (Shipping partial deltas would break it.)
//! - a replica id mints dots only in one state history (see the module docs of `crdt`).
//!
//! Deserialisation restores the first invariant so that a damaged snapshot cannot make
//! merges or comparisons misbehave.
//!
//! Memory: a local add leaves its element exactly one dot, so one dot is stored inline
//! ([`Dots`]); only merges of concurrent adds make lists of more, boxed. The wire form is a
//! plain list either way.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Serialize, Serializer};

use super::ReplicaId;

/// A unique add event: the `counter`-th add minted by `replica` (counters start at 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub replica: ReplicaId,
    pub counter: u64,
}

/// The dots of one live element: never empty, sorted, one inline (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dots {
    One(Dot),
    Many(Box<[Dot]>),
}

impl Dots {
    fn as_slice(&self) -> &[Dot] {
        match self {
            Dots::One(dot) => std::slice::from_ref(dot),
            Dots::Many(dots) => dots,
        }
    }

    /// `None` for an empty list (the element is absent).
    fn from_vec(mut dots: Vec<Dot>) -> Option<Dots> {
        match dots.len() {
            0 => None,
            1 => dots.pop().map(Dots::One),
            _ => Some(Dots::Many(dots.into_boxed_slice())),
        }
    }
}

impl Serialize for Dots {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

/// An observed-remove set where a concurrent add beats a remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "AddWinsSetRepr<T>",
    bound(deserialize = "T: Deserialize<'de> + Ord + Clone", serialize = "T: Serialize")
)]
pub struct AddWinsSet<T> {
    /// Live elements and the dots of the adds that put them there.
    entries: BTreeMap<T, Dots>,
    /// Version vector: per replica, the highest dot counter this state has seen.
    context: BTreeMap<ReplicaId, u64>,
}

/// The wire shape, before the invariants are checked.
#[derive(Deserialize)]
struct AddWinsSetRepr<T: Ord> {
    entries: BTreeMap<T, Vec<Dot>>,
    context: BTreeMap<ReplicaId, u64>,
}

impl<T: Ord + Clone> From<AddWinsSetRepr<T>> for AddWinsSet<T> {
    fn from(repr: AddWinsSetRepr<T>) -> Self {
        let AddWinsSetRepr { entries: wire, mut context } = repr;
        let mut entries = BTreeMap::new();
        for (elem, mut dots) in wire {
            dots.retain(|d| d.counter > 0);
            dots.sort_unstable();
            dots.dedup();
            // A dot the context does not cover would be resurrected by every merge; widen
            // the context instead, which keeps the element and makes the state consistent.
            for dot in &dots {
                let seen = context.entry(dot.replica).or_insert(0);
                *seen = (*seen).max(dot.counter);
            }
            if let Some(dots) = Dots::from_vec(dots) {
                entries.insert(elem, dots);
            }
        }
        context.retain(|_, counter| *counter > 0);
        AddWinsSet { entries, context }
    }
}

impl<T> Default for AddWinsSet<T> {
    fn default() -> Self {
        AddWinsSet { entries: BTreeMap::new(), context: BTreeMap::new() }
    }
}

impl<T: Ord + Clone> AddWinsSet<T> {
    pub fn new() -> Self {
        AddWinsSet::default()
    }

    /// Adds `elem` on behalf of `replica` with a fresh dot. The element's older dots are
    /// dropped: the context still covers them, so merges treat them as removed, and the new
    /// dot alone keeps the element alive.
    ///
    /// A replica's counter saturates at `u64::MAX` rather than wrapping; reaching it would
    /// take 2^64 adds from one replica.
    pub fn add(&mut self, elem: T, replica: ReplicaId) {
        let seen = self.context.entry(replica).or_insert(0);
        *seen = seen.saturating_add(1);
        let dot = Dots::One(Dot { replica, counter: *seen });
        match self.entries.entry(elem) {
            Entry::Occupied(mut e) => *e.get_mut() = dot,
            Entry::Vacant(e) => {
                e.insert(dot);
            }
        }
    }

    /// Removes `elem` as observed here: its known dots go, the context keeps them, so the
    /// removal reaches every replica that saw the same adds but not adds it did not see.
    /// Returns whether the element was present.
    pub fn remove(&mut self, elem: &T) -> bool {
        self.entries.remove(elem).is_some()
    }

    pub fn contains(&self, elem: &T) -> bool {
        self.entries.contains_key(elem)
    }

    /// The same set over other elements: `f` maps each element (it must be injective, or
    /// elements would merge). Dots and the causal context are kept as they are. Used to
    /// store a set over interned ids and to encode it over the strings they stand for.
    pub fn try_map<U: Ord, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<AddWinsSet<U>, E> {
        let mut entries = BTreeMap::new();
        for (elem, dots) in &self.entries {
            entries.insert(f(elem)?, dots.clone());
        }
        Ok(AddWinsSet { entries, context: self.context.clone() })
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Joins `other` into `self`. A dot survives if both sides have it, or if one side has
    /// it and the other side's context does not cover it (the other side never saw it, so
    /// it cannot have removed it). Contexts join pointwise by max.
    pub fn merge(&mut self, other: &AddWinsSet<T>) {
        // Elements only `other` has: computed first, against our context before the join,
        // and before `retain` below can drop elements of ours that `other` removed.
        let mut added = Vec::new();
        for (elem, theirs) in &other.entries {
            if !self.entries.contains_key(elem) {
                let kept: Vec<Dot> =
                    theirs.as_slice().iter().filter(|d| !covers(&self.context, d)).copied().collect();
                if let Some(kept) = Dots::from_vec(kept) {
                    added.push((elem.clone(), kept));
                }
            }
        }
        let my_context = &self.context;
        self.entries.retain(|elem, mine| {
            let theirs = other.entries.get(elem).map_or(&[][..], Dots::as_slice);
            if mine.as_slice() == theirs {
                return true;
            }
            match Dots::from_vec(join_dots(mine.as_slice(), my_context, theirs, &other.context)) {
                Some(joined) => {
                    *mine = joined;
                    true
                }
                None => false,
            }
        });
        self.entries.extend(added);
        for (&replica, &counter) in &other.context {
            let seen = self.context.entry(replica).or_insert(0);
            *seen = (*seen).max(counter);
        }
    }
}

/// Has a state with this context seen `dot`?
fn covers(context: &BTreeMap<ReplicaId, u64>, dot: &Dot) -> bool {
    context.get(&dot.replica).is_some_and(|&seen| dot.counter <= seen)
}

/// The dots of one element after a merge, from two sorted dot lists and their contexts.
fn join_dots(
    mine: &[Dot],
    my_context: &BTreeMap<ReplicaId, u64>,
    theirs: &[Dot],
    their_context: &BTreeMap<ReplicaId, u64>,
) -> Vec<Dot> {
    let mut out = Vec::with_capacity(mine.len().max(theirs.len()));
    let (mut i, mut j) = (0, 0);
    loop {
        match (mine.get(i), theirs.get(j)) {
            (Some(a), Some(b)) if a == b => {
                out.push(*a);
                i += 1;
                j += 1;
            }
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                if !covers(their_context, a) {
                    out.push(*a);
                }
                i += 1;
            }
            (_, Some(b)) => {
                if !covers(my_context, b) {
                    out.push(*b);
                }
                j += 1;
            }
            _ => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(a: &AddWinsSet<&'static str>, b: &AddWinsSet<&'static str>) -> AddWinsSet<&'static str> {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    #[test]
    fn add_remove_contains() {
        let mut s = AddWinsSet::new();
        assert!(s.is_empty());
        s.add("a", 1);
        s.add("b", 1);
        s.add("a", 1);
        assert!(s.contains(&"a"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(s.remove(&"a"));
        assert!(!s.remove(&"a"));
        assert!(!s.contains(&"a"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn readd_replaces_old_dots() {
        let mut s = AddWinsSet::new();
        s.add("a", 1);
        s.add("a", 1);
        assert_eq!(s.entries.get("a").map(Dots::as_slice), Some(&[Dot { replica: 1, counter: 2 }][..]));
        assert_eq!(s.context.get(&1), Some(&2));
    }

    #[test]
    fn observed_remove_propagates() {
        let mut a = AddWinsSet::new();
        a.add("x", 1);
        let mut b = merged(&AddWinsSet::new(), &a);
        assert!(b.contains(&"x"));
        b.remove(&"x");
        assert!(!merged(&a, &b).contains(&"x"));
        assert!(!merged(&b, &a).contains(&"x"));
    }

    #[test]
    fn concurrent_add_beats_remove() {
        let mut a = AddWinsSet::new();
        a.add("x", 1);
        let mut b = merged(&AddWinsSet::new(), &a);
        b.remove(&"x");
        a.add("x", 1); // concurrent with b's remove: a fresh dot b never saw
        assert!(merged(&a, &b).contains(&"x"));
        assert!(merged(&b, &a).contains(&"x"));
    }

    #[test]
    fn concurrent_adds_on_two_replicas_keep_both_dots() {
        let mut a = AddWinsSet::new();
        a.add("x", 1);
        let mut b = AddWinsSet::new();
        b.add("x", 2);
        let m = merged(&a, &b);
        assert_eq!(m.entries.get("x").map(|d| d.as_slice().len()), Some(2));
        assert_eq!(m, merged(&b, &a));
        // A replica that saw both adds removes both.
        let mut c = m.clone();
        c.remove(&"x");
        assert!(!merged(&merged(&a, &b), &c).contains(&"x"));
    }

    #[test]
    fn merge_is_idempotent() {
        let mut a = AddWinsSet::new();
        a.add("x", 1);
        a.add("y", 2);
        a.remove(&"x");
        assert_eq!(merged(&a, &a), a);
    }

    #[test]
    fn deserialise_restores_invariants() {
        let json = r#"{"entries":{"a":[{"replica":2,"counter":5},{"replica":2,"counter":5},
                       {"replica":1,"counter":1}],"b":[],"c":[{"replica":3,"counter":0}]},
                       "context":{"1":1,"4":0}}"#;
        let s: AddWinsSet<String> = serde_json::from_str(json).unwrap();
        assert_eq!(s.iter().map(String::as_str).collect::<Vec<_>>(), vec!["a"]);
        let dots = s.entries.get("a").map(|d| d.as_slice().to_vec()).unwrap_or_default();
        assert_eq!(dots, vec![Dot { replica: 1, counter: 1 }, Dot { replica: 2, counter: 5 }]);
        assert_eq!(s.context.iter().map(|(r, c)| (*r, *c)).collect::<Vec<_>>(), vec![(1, 1), (2, 5)]);
        let back: AddWinsSet<String> = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn one_dot_is_inline_and_the_wire_form_is_a_list() {
        assert_eq!(std::mem::size_of::<Dots>(), 24, "a dot and a tag; no heap block for one");
        let mut s = AddWinsSet::new();
        s.add("a", 1);
        assert!(matches!(s.entries.get("a"), Some(Dots::One(_))));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"entries":{"a":[{"replica":1,"counter":1}]},"context":{"1":1}}"#);
    }
}
