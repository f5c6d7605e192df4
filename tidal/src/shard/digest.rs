//! [`StateDigest`]: an order-independent fingerprint of a shard's logical state, the value
//! replicas compare to prove they hold the same shard.
//!
//! Each logical element (an item's CRDT aggregate and ranking sums, a user's negatives,
//! history and sessions, an idempotency entry) is encoded canonically and hashed on two
//! independent 64-bit lanes; the lanes are summed (wrapping), so the digest does not depend
//! on hash-map iteration order. Element encodings are canonical by construction: CRDT
//! counters keep their slots sorted by replica, add-wins sets are B-trees, histories and
//! session lists are ordered by the records that built them. The one floating-point sum in
//! the state (the decayed ranking sums) is rounded to 40 significant bits before hashing,
//! so a different summation order (a state rebuilt by merging) does not change the digest.
//! The hash is the store's stable FNV-1a with a finaliser ([`stable_hash`]): the same on
//! every platform and every build, unlike `std`'s hasher.

use std::fmt;

use serde::Serialize;

use super::state::{ItemEntry, ShardState};
use crate::shard::router::stable_hash;

/// Two lanes of wrapping sums of element hashes, plus the element count and the shard's
/// applied seq and last HLC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct StateDigest {
    pub applied_seq: u64,
    pub elements: u64,
    pub lanes: [u64; 2],
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}@{}", self.lanes[0], self.lanes[1], self.applied_seq)
    }
}

/// Accumulates element hashes.
struct Accumulator {
    digest: StateDigest,
    buf: Vec<u8>,
}

impl Accumulator {
    /// Adds the element the buffer holds now, then clears it.
    fn add(&mut self) {
        let second = {
            self.buf.push(0xA5);
            let h = stable_hash(&self.buf);
            self.buf.pop();
            h
        };
        self.digest.lanes[0] = self.digest.lanes[0].wrapping_add(stable_hash(&self.buf));
        self.digest.lanes[1] = self.digest.lanes[1].wrapping_add(second);
        self.digest.elements += 1;
        self.buf.clear();
    }

    fn put(&mut self, tag: u8, id: &str, value: &impl Serialize) {
        self.buf.push(tag);
        self.buf.extend_from_slice(id.as_bytes());
        self.buf.push(0);
        // Serialising plain data into a Vec cannot fail.
        let encoded = postcard::to_extend(value, std::mem::take(&mut self.buf)).unwrap_or_default();
        self.buf = encoded;
        self.add();
    }
}

/// `x` rounded to 40 significant bits (ties away from zero in magnitude).
fn rounded(x: f64) -> u64 {
    if x == 0.0 {
        return 0; // +0 and -0 are one value
    }
    (x.to_bits().wrapping_add(1 << 11)) >> 12
}

impl ShardState {
    /// The digest of the logical state (see the module docs).
    pub fn digest(&self) -> StateDigest {
        let mut acc = Accumulator {
            digest: StateDigest { applied_seq: self.applied_seq, elements: 0, lanes: [0, 0] },
            buf: Vec::with_capacity(256),
        };
        acc.put(b'h', "", &(self.shard, self.applied_seq, self.last_hlc));
        for (_, item, entry) in self.items.iter() {
            let ItemEntry { state, decayed } = entry;
            let sums: Vec<u64> = decayed.to_array().iter().map(|x| rounded(*x)).collect();
            acc.put(b'i', item, &(state, sums));
        }
        // Items and kinds by name, never by id: ids are layout (see `shard::user`).
        for (_, user, state) in self.users.iter() {
            acc.put(b'u', user, &self.user_ref(state));
        }
        for (key, ack) in self.idempotency.entries() {
            acc.put(b'k', key, &ack);
        }
        acc.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::shard::state::StateLimits;
    use crate::signal::{Signal, SignalKind};

    fn limits() -> StateLimits {
        StateLimits {
            user_history_max: 4,
            user_sessions_max: 2,
            idempotency_window_ms: 1 << 40,
            idempotency_keys_max: 100,
        }
    }

    fn signals() -> Vec<Signal> {
        (0..40u64)
            .map(|n| {
                let kind = [SignalKind::Like, SignalKind::Skip, SignalKind::Dislike, SignalKind::Click]
                    [n as usize % 4]
                    .clone();
                let mut s = Signal::new(format!("u{}", n % 5), format!("i{}", n % 7), kind);
                s.idempotency_key = (n % 3 == 0).then(|| format!("k{n}"));
                s.session = Some(format!("s{}", n % 2));
                s
            })
            .collect()
    }

    fn fed(order: impl Iterator<Item = usize>) -> ShardState {
        let all = signals();
        let mut st = ShardState::new(0, limits());
        for (seq, i) in order.enumerate() {
            st.apply(seq as u64 + 1, 1, Hlc::new(100 + seq as u64, 0), &all[i].as_ref());
        }
        st
    }

    /// The same logical state with every item and user id assigned in reverse order.
    fn relabeled(st: &ShardState) -> ShardState {
        let mut out = ShardState::new(st.shard, st.limits);
        (out.applied_seq, out.last_hlc) = (st.applied_seq, st.last_hlc);
        out.idempotency = st.idempotency.clone();
        let items: Vec<_> = st.items.iter().collect();
        for (_, key, entry) in items.into_iter().rev() {
            out.items.insert(key, entry.clone());
        }
        let users: Vec<_> = st.users.iter().collect();
        for (_, key, user) in users.into_iter().rev() {
            let wire = serde_json::from_str(&serde_json::to_string(&st.user_ref(user)).unwrap()).unwrap();
            let user = out.user_from_wire(wire).unwrap();
            out.users.insert(key, user);
        }
        out
    }

    #[test]
    fn equal_states_have_equal_digests_whatever_the_ids() {
        let a = fed(0..40);
        let b = relabeled(&a);
        assert_ne!(a.items.id("i0"), b.items.id("i0"), "the layouts differ");
        assert_ne!(a.users.id("u0"), b.users.id("u0"), "the layouts differ");
        assert!(a.users.values().any(|u| u.hard_negative_ids().count() > 0), "negatives are covered");
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn any_difference_changes_the_digest() {
        let base = fed(0..40).digest();
        assert_ne!(base, fed(0..39).digest(), "one record fewer");
        assert_ne!(base, fed((0..40).rev()).digest(), "another order of records");
        let mut other_origin = ShardState::new(0, limits());
        for (seq, s) in signals().iter().enumerate() {
            other_origin.apply(seq as u64 + 1, 2, Hlc::new(100 + seq as u64, 0), &s.as_ref());
        }
        assert_ne!(base, other_origin.digest(), "credited to another origin node");
    }

    #[test]
    fn rounding_hides_summation_order_only() {
        assert_eq!(rounded(0.1 + 0.2 + 0.3), rounded(0.3 + 0.2 + 0.1));
        assert_ne!(rounded(1.0), rounded(1.0 + 1e-9));
        assert_eq!(rounded(0.0), rounded(-0.0));
    }
}
