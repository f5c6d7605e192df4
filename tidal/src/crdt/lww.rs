//! [`LwwRegister`]: a last-writer-wins register.
//!
//! The register keeps the write with the greatest stamp `(Hlc, ReplicaId)`: later clocks win,
//! and equal clocks are broken by replica id so two replicas never disagree on the winner.
//!
//! One replica can still issue two writes with the same stamp (a replayed write that changed,
//! a hand-built state). For merge to stay commutative even then, the value itself breaks the
//! last tie, through [`LwwValue`]: a *total* order. We use a small trait rather than `Ord`
//! because the registers we need hold `f64` (ratings), which is not `Ord`; its impl uses
//! [`f64::total_cmp`], so even NaN orders deterministically and nothing panics. (Signal
//! values are validated finite before they reach a register, so NaN should not occur; the
//! one consequence if it did is that the derived `PartialEq` would not see a NaN register as
//! equal to itself.)
//!
//! Invariant: the stored triple is the maximum, under `(hlc, replica, value)`, of every write
//! this register has seen or merged. Merge is therefore a max: commutative, associative,
//! idempotent.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::ReplicaId;
use crate::hlc::Hlc;

/// A total order on register values, used only to break exact stamp ties.
pub trait LwwValue {
    /// A total order: reflexive, antisymmetric, transitive, defined for every pair.
    fn lww_cmp(&self, other: &Self) -> Ordering;
}

macro_rules! lww_value_by_ord {
    ($($t:ty),* $(,)?) => {
        $(impl LwwValue for $t {
            fn lww_cmp(&self, other: &Self) -> Ordering {
                Ord::cmp(self, other)
            }
        })*
    };
}

lww_value_by_ord!(bool, char, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
lww_value_by_ord!(String, Box<str>, Vec<u8>, ());

impl LwwValue for f64 {
    fn lww_cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl LwwValue for f32 {
    fn lww_cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl<T: LwwValue> LwwValue for Option<T> {
    fn lww_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Some(a), Some(b)) => a.lww_cmp(b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
}

impl<A: LwwValue, B: LwwValue> LwwValue for (A, B) {
    fn lww_cmp(&self, other: &Self) -> Ordering {
        self.0.lww_cmp(&other.0).then_with(|| self.1.lww_cmp(&other.1))
    }
}

impl<A: LwwValue, B: LwwValue, C: LwwValue> LwwValue for (A, B, C) {
    fn lww_cmp(&self, other: &Self) -> Ordering {
        self.0.lww_cmp(&other.0).then_with(|| self.1.lww_cmp(&other.1)).then_with(|| self.2.lww_cmp(&other.2))
    }
}

/// A register whose value is the one written with the greatest `(Hlc, ReplicaId)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    entry: Option<(T, Hlc, ReplicaId)>,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister { entry: None }
    }
}

impl<T> LwwRegister<T> {
    pub fn new() -> Self {
        LwwRegister::default()
    }

    /// The winning value, if anything was written.
    pub fn get(&self) -> Option<&T> {
        self.entry.as_ref().map(|(value, _, _)| value)
    }

    /// The stamp of the winning write.
    pub fn stamp(&self) -> Option<(Hlc, ReplicaId)> {
        self.entry.as_ref().map(|&(_, hlc, replica)| (hlc, replica))
    }

    pub fn is_empty(&self) -> bool {
        self.entry.is_none()
    }

    /// Could a write stamped `(hlc, replica)` win (or tie, and be decided by value)?
    fn may_win(&self, hlc: Hlc, replica: ReplicaId) -> bool {
        self.stamp().is_none_or(|current| (hlc, replica) >= current)
    }
}

impl<T: LwwValue> LwwRegister<T> {
    /// Does the write `(value, hlc, replica)` beat the current one?
    fn beats(&self, value: &T, hlc: Hlc, replica: ReplicaId) -> bool {
        match &self.entry {
            None => true,
            Some((current, cur_hlc, cur_replica)) => {
                let order =
                    (hlc, replica).cmp(&(*cur_hlc, *cur_replica)).then_with(|| value.lww_cmp(current));
                order == Ordering::Greater
            }
        }
    }

    /// Records a write; it takes effect if its `(hlc, replica, value)` is the greatest seen.
    pub fn set(&mut self, value: T, hlc: Hlc, replica: ReplicaId) {
        if self.beats(&value, hlc, replica) {
            self.entry = Some((value, hlc, replica));
        }
    }

    /// Like [`set`](Self::set), but builds the value only if the stamp can still win, so a
    /// stale write of an owned value (a label `String`) costs no allocation.
    pub fn set_with(&mut self, hlc: Hlc, replica: ReplicaId, value: impl FnOnce() -> T) {
        if self.may_win(hlc, replica) {
            self.set(value(), hlc, replica);
        }
    }
}

impl<T: LwwValue + Clone> LwwRegister<T> {
    /// Joins `other` into `self`: the greater of the two writes stays.
    pub fn merge(&mut self, other: &LwwRegister<T>) {
        if let Some((value, hlc, replica)) = &other.entry
            && self.beats(value, *hlc, *replica)
        {
            self.entry = Some((value.clone(), *hlc, *replica));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged<T: LwwValue + Clone>(a: &LwwRegister<T>, b: &LwwRegister<T>) -> LwwRegister<T> {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    #[test]
    fn empty_register_has_nothing() {
        let r = LwwRegister::<f64>::new();
        assert_eq!(r.get(), None);
        assert_eq!(r.stamp(), None);
        assert!(r.is_empty());
    }

    #[test]
    fn later_hlc_wins_whatever_the_order() {
        let mut r = LwwRegister::new();
        r.set(1.0, Hlc(20), 1);
        r.set(2.0, Hlc(10), 9);
        assert_eq!(r.get(), Some(&1.0));
        assert_eq!(r.stamp(), Some((Hlc(20), 1)));
        r.set(3.0, Hlc(30), 0);
        assert_eq!(r.get(), Some(&3.0));
    }

    #[test]
    fn equal_hlc_is_broken_by_replica() {
        let mut a = LwwRegister::new();
        a.set(1.0, Hlc(5), 2);
        let mut b = LwwRegister::new();
        b.set(9.0, Hlc(5), 1);
        assert_eq!(merged(&a, &b).get(), Some(&1.0));
        assert_eq!(merged(&b, &a).get(), Some(&1.0));
    }

    #[test]
    fn equal_stamp_is_broken_by_value_so_merge_commutes() {
        let mut a = LwwRegister::new();
        a.set(("spam".to_string(), false), Hlc(5), 1);
        let mut b = LwwRegister::new();
        b.set(("spam".to_string(), true), Hlc(5), 1);
        assert_eq!(merged(&a, &b), merged(&b, &a));
        assert_eq!(merged(&a, &b).get(), Some(&("spam".to_string(), true)));
    }

    #[test]
    fn f64_ties_use_a_total_order_and_nan_does_not_panic() {
        let mut a = LwwRegister::<f64>::new();
        a.set(-0.0, Hlc(5), 1);
        let mut b = LwwRegister::new();
        b.set(0.0, Hlc(5), 1);
        assert_eq!(merged(&a, &b).get().map(|v| v.is_sign_positive()), Some(true));
        assert_eq!(merged(&b, &a).get().map(|v| v.is_sign_positive()), Some(true));
        let mut n = LwwRegister::new();
        n.set(f64::NAN, Hlc(5), 1);
        let m = merged(&b, &n);
        assert!(m.get().is_some_and(|v| v.is_nan()), "positive NaN sorts above 0.0");
    }

    #[test]
    fn merge_is_idempotent_and_ignores_empty() {
        let mut a = LwwRegister::new();
        a.set(4u64, Hlc(7), 3);
        assert_eq!(merged(&a, &a), a);
        assert_eq!(merged(&a, &LwwRegister::new()), a);
        assert_eq!(merged(&LwwRegister::new(), &a), a);
    }

    #[test]
    fn set_with_skips_building_stale_values() {
        let mut r = LwwRegister::new();
        r.set("new".to_string(), Hlc(10), 1);
        r.set_with(Hlc(9), 5, || unreachable!("a stale write must not build its value"));
        r.set_with(Hlc(10), 1, || "newer-by-value".to_string());
        assert_eq!(r.get().map(String::as_str), Some("newer-by-value"));
        r.set_with(Hlc(11), 0, || "latest".to_string());
        assert_eq!(r.get().map(String::as_str), Some("latest"));
    }

    #[test]
    fn option_and_triple_orders_are_total() {
        assert_eq!(None::<u8>.lww_cmp(&Some(0)), Ordering::Less);
        assert_eq!(Some(2u8).lww_cmp(&Some(1)), Ordering::Greater);
        assert_eq!((1u8, 2.0f32, false).lww_cmp(&(1, 2.0, true)), Ordering::Less);
    }

    #[test]
    fn serde_round_trip() {
        let mut r = LwwRegister::new();
        r.set(("x".to_string(), true), Hlc(3), 4);
        let json = serde_json::to_string(&r).unwrap();
        let back: LwwRegister<(String, bool)> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
