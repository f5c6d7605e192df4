//! [`KindRef`]: a signal kind in 8 bytes, as an item's per-kind counters hold it.
//!
//! Every item keeps one entry per kind it has seen, and a large store holds millions of
//! items. A [`SignalKind`] is 24 bytes (a boxed name for custom kinds); a `KindRef` is one
//! pointer to a `SignalKind` that lives for the process: the built-in kinds point into a
//! static copy of [`SignalKind::BUILTIN`], custom kinds into a process-wide interner that keeps each
//! distinct custom name once. That makes an item's first kind entry 72 bytes instead of 88
//! (an 80-byte heap block instead of 96).
//!
//! The interner never forgets a name: it holds each distinct custom kind the process ever
//! applied or decoded, once (ingest allows at most 64 registered names of at most 32 bytes
//! per store, so this stays small). It is taken only when a kind is new to an item. Decoding
//! (a snapshot, a shipped state) refuses a new name once [`INTERNED_KINDS_MAX`] are held, so
//! damaged or hostile input cannot grow it without bound.
//!
//! A `KindRef` compares, hashes and encodes exactly as the `SignalKind` it points to, so the
//! counters' order, digests and snapshot bytes do not change.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::signal::SignalKind;

/// Distinct custom kind names decoding may add to the interner (applying validated signals
/// is not limited: their kinds are registered, at most 64 per store).
pub const INTERNED_KINDS_MAX: usize = 1 << 16;

/// A signal kind by reference to its one process-wide copy (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KindRef(&'static SignalKind);

/// The built-in kinds at one address (a `const` would be a new copy at every use).
static BUILTIN: [SignalKind; 8] = SignalKind::BUILTIN;

/// Custom kinds this thread has looked up, most kept: found here, a kind takes no lock.
/// Shards decode and replay on parallel threads, and the interner's lock, taken for every
/// item-kind pair, cost 51 ns a lookup alone and 490 ns with four threads at once (on two
/// cores); with this list, 9 ns and 24 ns.
const SEEN_MAX: usize = 64;

thread_local! {
    static SEEN: RefCell<Vec<&'static SignalKind>> = const { RefCell::new(Vec::new()) };
}

/// Every custom kind seen by this process, each leaked once.
fn custom_kinds() -> &'static Mutex<HashSet<&'static SignalKind>> {
    static KINDS: OnceLock<Mutex<HashSet<&'static SignalKind>>> = OnceLock::new();
    KINDS.get_or_init(|| Mutex::new(HashSet::new()))
}

impl KindRef {
    /// The reference for `kind`: a built-in costs nothing, a custom kind takes the interner's
    /// lock (and leaks its name the first time the process sees it).
    pub fn new(kind: &SignalKind) -> KindRef {
        // Unbounded: `interned` refuses a name only when `max` names are already held.
        Self::interned(kind, usize::MAX).unwrap_or_else(|| unreachable!("usize::MAX interned kinds"))
    }

    /// [`KindRef::new`], or `None` for a custom kind new to a process that holds `max` names.
    fn interned(kind: &SignalKind, max: usize) -> Option<KindRef> {
        if let Some(builtin) = usize::from(kind.code()).checked_sub(1).and_then(|i| BUILTIN.get(i)) {
            return Some(KindRef(builtin));
        }
        if let Some(seen) = SEEN.with_borrow(|seen| seen.iter().copied().find(|k| *k == kind)) {
            return Some(KindRef(seen));
        }
        let found = {
            let mut kinds = custom_kinds().lock().unwrap_or_else(|e| e.into_inner());
            match kinds.get(kind) {
                Some(known) => *known,
                None if kinds.len() >= max => return None,
                None => {
                    let leaked: &'static SignalKind = Box::leak(Box::new(kind.clone()));
                    kinds.insert(leaked);
                    leaked
                }
            }
        };
        SEEN.with_borrow_mut(|seen| {
            if seen.len() < SEEN_MAX {
                seen.push(found);
            }
        });
        Some(KindRef(found))
    }

    pub fn get(self) -> &'static SignalKind {
        self.0
    }
}

impl std::fmt::Debug for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl Serialize for KindRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KindRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kind = SignalKind::deserialize(d)?;
        KindRef::interned(&kind, INTERNED_KINDS_MAX).ok_or_else(|| {
            serde::de::Error::custom(format!("more than {INTERNED_KINDS_MAX} distinct custom kinds"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_point_at_the_constants_and_customs_are_kept_once() {
        assert!(std::ptr::eq(KindRef::new(&SignalKind::Click).get(), &BUILTIN[1]));
        assert!(std::ptr::eq(KindRef::new(&SignalKind::Click).get(), KindRef::new(&SignalKind::Click).get()));
        let a = KindRef::new(&SignalKind::from_name("kind-ref-test"));
        let b = KindRef::new(&SignalKind::from_name("kind-ref-test"));
        assert!(std::ptr::eq(a.get(), b.get()), "one copy per name");
        assert_eq!(a.get(), &SignalKind::from_name("kind-ref-test"));
        assert_eq!(std::mem::size_of::<KindRef>(), 8);
    }

    #[test]
    fn threads_find_the_same_copy() {
        let kind = SignalKind::from_name("kind-ref-threads");
        let here = KindRef::new(&kind);
        let there: Vec<KindRef> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| KindRef::new(&kind))).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert!(there.iter().all(|k| std::ptr::eq(k.get(), here.get())), "one copy for every thread");
        assert!(std::ptr::eq(KindRef::new(&kind).get(), here.get()), "and again from this thread's list");
    }

    #[test]
    fn decoding_stops_adding_names_at_the_bound() {
        let known = KindRef::new(&SignalKind::from_name("kind-ref-bound-known"));
        let fresh = SignalKind::from_name("kind-ref-bound-fresh");
        assert_eq!(KindRef::interned(&fresh, 0), None, "a new name past the bound");
        assert_eq!(KindRef::interned(&known.get().clone(), 0), Some(known), "a known name is found");
        assert_eq!(KindRef::interned(&SignalKind::Like, 0), Some(KindRef::new(&SignalKind::Like)));
    }

    #[test]
    fn order_and_encoding_are_the_kinds_own() {
        let kinds = [
            SignalKind::Impression,
            SignalKind::Label,
            SignalKind::from_name("a"),
            SignalKind::from_name("b"),
        ];
        for x in &kinds {
            for y in &kinds {
                assert_eq!(KindRef::new(x).cmp(&KindRef::new(y)), x.cmp(y), "{x:?} vs {y:?}");
            }
            let bytes = postcard::to_stdvec(&KindRef::new(x)).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(x).unwrap());
            assert_eq!(postcard::from_bytes::<KindRef>(&bytes).unwrap(), KindRef::new(x));
        }
    }
}
