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
//! per store, so this stays small). It is taken only when a kind is new to an item.
//!
//! A `KindRef` compares, hashes and encodes exactly as the `SignalKind` it points to, so the
//! counters' order, digests and snapshot bytes do not change.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::signal::SignalKind;

/// A signal kind by reference to its one process-wide copy (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KindRef(&'static SignalKind);

/// The built-in kinds at one address (a `const` would be a new copy at every use).
static BUILTIN: [SignalKind; 8] = SignalKind::BUILTIN;

/// Every custom kind seen by this process, each leaked once.
fn custom_kinds() -> &'static Mutex<HashSet<&'static SignalKind>> {
    static KINDS: OnceLock<Mutex<HashSet<&'static SignalKind>>> = OnceLock::new();
    KINDS.get_or_init(|| Mutex::new(HashSet::new()))
}

impl KindRef {
    /// The reference for `kind`: a built-in costs nothing, a custom kind takes the interner's
    /// lock (and leaks its name the first time the process sees it).
    pub fn new(kind: &SignalKind) -> KindRef {
        if let Some(builtin) = usize::from(kind.code()).checked_sub(1).and_then(|i| BUILTIN.get(i)) {
            return KindRef(builtin);
        }
        let mut kinds = custom_kinds().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = kinds.get(kind) {
            return KindRef(known);
        }
        let leaked: &'static SignalKind = Box::leak(Box::new(kind.clone()));
        kinds.insert(leaked);
        KindRef(leaked)
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
        SignalKind::deserialize(d).map(|kind| KindRef::new(&kind))
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
