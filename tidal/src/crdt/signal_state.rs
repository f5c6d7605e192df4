//! [`CrdtSignalState`]: everything the store aggregates about one item, as a CRDT.
//!
//! Per signal kind seen: a count and a value sum (in thousandths, so it is an integer
//! PN-counter and merges exactly); the last rating and the last label (LWW registers); and the
//! first and last HLC (min and max, with `Hlc::ZERO` meaning "none yet").
//!
//! Each shard of each node applies signals under its own replica id, so the global view of an
//! item is the merge of its per-shard states: distinct replicas sum, the same replica's copies
//! (a follower, a re-sent snapshot) take the max and are never counted twice.
//!
//! Memory: one of these lives per item, for millions of items. Kinds sit in an exactly sized
//! boxed slice (no spare capacity; an item sees a handful of kinds and a new kind is rare),
//! each named by an 8-byte [`KindRef`] (72 bytes per kind with its counters), and
//! the rating and label registers, which most items never use, share one box (absent while
//! both are empty; the wire form is the unboxed one). `size_of` is 40 bytes.
//!
//! Invariants (restored on deserialisation): `kinds` is sorted by kind with no duplicates and
//! no entry with both counters empty; `registers` is `None` rather than two empty registers.

use serde::{Deserialize, Serialize};

use super::kind_ref::KindRef;
use super::{LwwRegister, PnCounter, ReplicaId};
use crate::hlc::Hlc;
use crate::signal::{SignalKind, SignalRef};

/// The counters of one signal kind on one item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounters {
    /// Number of signals of this kind.
    pub count: PnCounter,
    /// Sum of their values, in thousandths (`round(value * 1000)`), negatives on the N side.
    pub value_milli: PnCounter,
}

impl KindCounters {
    fn merge(&mut self, other: &KindCounters) {
        self.count.merge(&other.count);
        self.value_milli.merge(&other.value_milli);
    }

    fn is_empty(&self) -> bool {
        self.count.is_empty() && self.value_milli.is_empty()
    }
}

type LabelRegister = LwwRegister<(String, bool)>;
type RatingRegister = LwwRegister<f64>;

/// The registers most items never use, boxed together.
#[derive(Clone, Debug, Default, PartialEq)]
struct Registers {
    rating: RatingRegister,
    label: LabelRegister,
}

/// The per-item aggregate of signals: counts and sums per kind, last rating and label, and
/// the first and last HLC.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "SignalStateRepr")]
pub struct CrdtSignalState {
    kinds: Box<[(KindRef, KindCounters)]>,
    registers: Option<Box<Registers>>,
    first_hlc: Hlc,
    last_hlc: Hlc,
}

/// The encoded shape (as the type derived it before the registers were boxed together).
#[derive(Serialize)]
#[serde(rename = "CrdtSignalState")]
struct SignalStateRef<'a> {
    kinds: &'a [(KindRef, KindCounters)],
    last_rating: &'a RatingRegister,
    last_label: Option<&'a LabelRegister>,
    first_hlc: Hlc,
    last_hlc: Hlc,
}

impl Serialize for CrdtSignalState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let empty = RatingRegister::new();
        let registers = self.registers.as_deref();
        SignalStateRef {
            kinds: &self.kinds,
            last_rating: registers.map_or(&empty, |r| &r.rating),
            last_label: registers.map(|r| &r.label).filter(|l| !l.is_empty()),
            first_hlc: self.first_hlc,
            last_hlc: self.last_hlc,
        }
        .serialize(s)
    }
}

/// The wire shape, before the invariants are restored.
#[derive(Deserialize)]
struct SignalStateRepr {
    kinds: Vec<(KindRef, KindCounters)>,
    last_rating: LwwRegister<f64>,
    last_label: Option<Box<LabelRegister>>,
    first_hlc: Hlc,
    last_hlc: Hlc,
}

impl From<SignalStateRepr> for CrdtSignalState {
    fn from(repr: SignalStateRepr) -> Self {
        let mut kinds = repr.kinds;
        kinds.sort_by_key(|a| a.0);
        let mut canonical: Vec<(KindRef, KindCounters)> = Vec::with_capacity(kinds.len());
        for (kind, counters) in kinds {
            match canonical.last_mut() {
                Some((last, merged)) if *last == kind => merged.merge(&counters),
                _ => canonical.push((kind, counters)),
            }
        }
        canonical.retain(|(_, counters)| !counters.is_empty());
        CrdtSignalState {
            kinds: canonical.into_boxed_slice(),
            registers: match (repr.last_rating, repr.last_label.filter(|label| !label.is_empty())) {
                (rating, None) if rating.is_empty() => None,
                (rating, label) => {
                    Some(Box::new(Registers { rating, label: label.map(|l| *l).unwrap_or_default() }))
                }
            },
            first_hlc: repr.first_hlc,
            last_hlc: repr.last_hlc,
        }
    }
}

/// A signal value in thousandths. `as` saturates out-of-range values and maps NaN to 0, so
/// this cannot panic; validated values (|v| <= 1e9) fit exactly.
fn value_milli(value: f64) -> i64 {
    (value * 1000.0).round() as i64
}

/// The earlier of two stamps where `Hlc::ZERO` means "none" (the identity, not the minimum).
fn min_stamp(a: Hlc, b: Hlc) -> Hlc {
    match (a, b) {
        (Hlc::ZERO, other) | (other, Hlc::ZERO) => other,
        (a, b) => a.min(b),
    }
}

impl CrdtSignalState {
    pub fn new() -> Self {
        CrdtSignalState::default()
    }

    /// Reads the state's out-of-line part (no effect but loading it into the cache, for a
    /// caller that will change the state soon: see `shard::apply_group`).
    pub fn touch(&self) -> u64 {
        self.kinds.first().map_or(0, |(kind, _)| u64::from(kind.get().code()))
    }

    /// Folds one signal, stamped `hlc`, into the state on behalf of `replica`.
    pub fn apply(&mut self, signal: &SignalRef<'_>, hlc: Hlc, replica: ReplicaId) {
        let counters = self.counters_mut(&signal.kind);
        counters.count.increment(replica, 1);
        counters.value_milli.increment(replica, value_milli(signal.value));
        match signal.kind {
            SignalKind::Rating => {
                self.registers.get_or_insert_default().rating.set(signal.value, hlc, replica);
            }
            SignalKind::Label => {
                // Validation guarantees the label attribute; a signal without one still
                // counts but cannot name a label.
                if let Some(label) = signal.label() {
                    let confirmed = signal.value > 0.0;
                    self.registers
                        .get_or_insert_default()
                        .label
                        .set_with(hlc, replica, || (label.to_owned(), confirmed));
                }
            }
            _ => {}
        }
        self.first_hlc = min_stamp(self.first_hlc, hlc);
        self.last_hlc = self.last_hlc.max(hlc);
    }

    /// The counters of `kind`, created empty (in sorted position) if this is its first signal.
    fn counters_mut(&mut self, kind: &SignalKind) -> &mut KindCounters {
        let index = match self.kinds.binary_search_by(|(k, _)| k.get().cmp(kind)) {
            Ok(i) => i,
            // An item's first kind (most items of a large store have one): one exact
            // allocation, no Vec round trip.
            Err(_) if self.kinds.is_empty() => {
                self.kinds = Box::new([(KindRef::new(kind), KindCounters::default())]);
                0
            }
            Err(i) => {
                let mut kinds = std::mem::take(&mut self.kinds).into_vec();
                kinds.reserve_exact(1);
                kinds.insert(i, (KindRef::new(kind), KindCounters::default()));
                self.kinds = kinds.into_boxed_slice();
                i
            }
        };
        &mut self.kinds[index].1
    }

    /// Joins `other` into `self`. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &CrdtSignalState) {
        self.merge_kinds(&other.kinds);
        // Both empty is `None` (the invariant), so a `Some` brings a non-empty register.
        if let Some(theirs) = other.registers.as_deref() {
            match &mut self.registers {
                Some(mine) => {
                    mine.rating.merge(&theirs.rating);
                    mine.label.merge(&theirs.label);
                }
                None => self.registers = Some(Box::new(theirs.clone())),
            }
        }
        self.first_hlc = min_stamp(self.first_hlc, other.first_hlc);
        self.last_hlc = self.last_hlc.max(other.last_hlc);
    }

    fn merge_kinds(&mut self, theirs: &[(KindRef, KindCounters)]) {
        let find =
            |kinds: &[(KindRef, KindCounters)], kind: &KindRef| kinds.binary_search_by(|(k, _)| k.cmp(kind));
        // Common case (replicas of one item see the same kinds): join in place, no allocation.
        if theirs.iter().all(|(kind, _)| find(&self.kinds, kind).is_ok()) {
            for (kind, counters) in theirs {
                if let Ok(i) = find(&self.kinds, kind)
                    && let Some((_, mine)) = self.kinds.get_mut(i)
                {
                    mine.merge(counters);
                }
            }
            return;
        }
        let mut merged = std::mem::take(&mut self.kinds).into_vec();
        for (kind, counters) in theirs {
            match find(&merged, kind) {
                Ok(i) => {
                    if let Some((_, mine)) = merged.get_mut(i) {
                        mine.merge(counters);
                    }
                }
                Err(i) => merged.insert(i, (*kind, counters.clone())),
            }
        }
        self.kinds = merged.into_boxed_slice();
    }

    /// How many signals of `kind` this item received.
    pub fn count(&self, kind: &SignalKind) -> i64 {
        self.counters(kind).map_or(0, |c| c.count.value())
    }

    /// The sum of the values of the signals of `kind`, to a thousandth.
    pub fn value_sum(&self, kind: &SignalKind) -> f64 {
        self.counters(kind).map_or(0.0, |c| milli_to_f64(&c.value_milli))
    }

    /// The counters of `kind`, if a signal of that kind was seen.
    pub fn counters(&self, kind: &SignalKind) -> Option<&KindCounters> {
        let i = self.kinds.binary_search_by(|(k, _)| k.get().cmp(kind)).ok()?;
        self.kinds.get(i).map(|(_, counters)| counters)
    }

    /// Every kind seen, in kind order, with its count and value sum.
    pub fn kinds(&self) -> impl Iterator<Item = (&SignalKind, i64, f64)> + '_ {
        self.kinds.iter().map(|(kind, c)| (kind.get(), c.count.value(), milli_to_f64(&c.value_milli)))
    }

    /// The earliest signal's stamp; `Hlc::ZERO` if there is none.
    pub fn first_hlc(&self) -> Hlc {
        self.first_hlc
    }

    /// The latest signal's stamp; `Hlc::ZERO` if there is none.
    pub fn last_hlc(&self) -> Hlc {
        self.last_hlc
    }

    /// The value of the latest rating signal.
    pub fn last_rating(&self) -> Option<f64> {
        self.registers.as_deref()?.rating.get().copied()
    }

    /// The latest label signal: the label's name and whether it was confirmed (value > 0).
    pub fn last_label(&self) -> Option<(&str, bool)> {
        let (name, confirmed) = self.registers.as_deref()?.label.get()?;
        Some((name.as_str(), *confirmed))
    }

    /// True when no signal was ever applied or merged in.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.last_hlc == Hlc::ZERO
    }

    /// Bytes this state holds on the heap (beyond `size_of::<CrdtSignalState>()`); an
    /// estimate that ignores allocator overhead.
    pub fn heap_bytes(&self) -> usize {
        let kinds: usize = self
            .kinds
            .iter()
            // A custom kind's name is shared process-wide (`KindRef`), not held per item.
            .map(|(_, c)| c.count.heap_bytes() + c.value_milli.heap_bytes())
            .sum();
        let registers = self.registers.as_deref().map_or(0, |r| {
            std::mem::size_of::<Registers>() + r.label.get().map_or(0, |(name, _)| name.capacity())
        });
        std::mem::size_of_val::<[(KindRef, KindCounters)]>(&self.kinds) + kinds + registers
    }
}

fn milli_to_f64(counter: &PnCounter) -> f64 {
    counter.value() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::replica_id;
    use crate::signal::Signal;

    fn signal(kind: SignalKind, value: f64) -> Signal {
        let mut s = Signal::new("u", "i", kind);
        s.value = value;
        s
    }

    fn label(name: &str, value: f64) -> Signal {
        let mut s = signal(SignalKind::Label, value);
        s.attrs.insert("label".into(), name.into());
        s
    }

    fn merged(a: &CrdtSignalState, b: &CrdtSignalState) -> CrdtSignalState {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    #[test]
    fn empty_state_reports_nothing() {
        let s = CrdtSignalState::new();
        assert!(s.is_empty());
        assert_eq!(s.count(&SignalKind::Click), 0);
        assert_eq!(s.value_sum(&SignalKind::Click), 0.0);
        assert_eq!(s.kinds().count(), 0);
        assert_eq!((s.first_hlc(), s.last_hlc()), (Hlc::ZERO, Hlc::ZERO));
        assert_eq!((s.last_rating(), s.last_label()), (None, None));
    }

    #[test]
    fn counts_and_sums_per_kind() {
        let mut s = CrdtSignalState::new();
        let r = replica_id(1, 0);
        s.apply(&signal(SignalKind::Dwell, 2.5).as_ref(), Hlc(10), r);
        s.apply(&signal(SignalKind::Click, 1.0).as_ref(), Hlc(11), r);
        s.apply(&signal(SignalKind::Dwell, 0.0004).as_ref(), Hlc(12), r);
        s.apply(&signal(SignalKind::from_name("boost"), -1.25).as_ref(), Hlc(13), r);
        assert_eq!(s.count(&SignalKind::Dwell), 2);
        assert_eq!(s.value_sum(&SignalKind::Dwell), 2.5, "values round to thousandths");
        assert_eq!(s.count(&SignalKind::Click), 1);
        assert_eq!(s.value_sum(&SignalKind::from_name("boost")), -1.25);
        let kinds: Vec<_> = s.kinds().map(|(k, n, v)| (k.as_str().to_owned(), n, v)).collect();
        assert_eq!(
            kinds,
            vec![("click".to_owned(), 1, 1.0), ("dwell".to_owned(), 2, 2.5), ("boost".to_owned(), 1, -1.25),],
            "sorted by kind: built-ins first, then custom"
        );
        let boost = s.counters(&SignalKind::from_name("boost")).cloned().unwrap_or_default();
        assert_eq!(boost.value_milli.iter().collect::<Vec<_>>(), vec![(r, 0, 1250)]);
    }

    #[test]
    fn first_and_last_hlc_ignore_order() {
        let mut s = CrdtSignalState::new();
        for t in [30, 10, 20] {
            s.apply(&signal(SignalKind::Like, 1.0).as_ref(), Hlc(t), 1);
        }
        assert_eq!((s.first_hlc(), s.last_hlc()), (Hlc(10), Hlc(30)));
        let mut unstamped = CrdtSignalState::new();
        unstamped.apply(&signal(SignalKind::Like, 1.0).as_ref(), Hlc::ZERO, 2);
        let m = merged(&s, &unstamped);
        assert_eq!(m.first_hlc(), Hlc(10), "ZERO means none, not earliest");
    }

    #[test]
    fn last_rating_and_label_are_last_writer_wins() {
        let mut a = CrdtSignalState::new();
        a.apply(&signal(SignalKind::Rating, 8.0).as_ref(), Hlc(20), 1);
        a.apply(&signal(SignalKind::Rating, 3.0).as_ref(), Hlc(10), 1);
        a.apply(&label("spam", 1.0).as_ref(), Hlc(5), 1);
        let mut b = CrdtSignalState::new();
        b.apply(&label("spam", 0.0).as_ref(), Hlc(6), 2);
        assert_eq!(a.last_rating(), Some(8.0));
        assert_eq!(a.last_label(), Some(("spam", true)));
        assert_eq!(merged(&a, &b).last_label(), Some(("spam", false)));
        assert_eq!(merged(&b, &a).last_label(), Some(("spam", false)));
        assert_eq!(merged(&b, &a).count(&SignalKind::Label), 2);
    }

    #[test]
    fn label_signal_without_label_still_counts() {
        let mut s = CrdtSignalState::new();
        s.apply(&signal(SignalKind::Label, 1.0).as_ref(), Hlc(1), 1);
        assert_eq!(s.count(&SignalKind::Label), 1);
        assert_eq!(s.last_label(), None);
        assert_eq!(s.registers, None);
    }

    #[test]
    fn shards_sum_and_copies_of_one_shard_do_not_double_count() {
        let (shard0, shard1) = (replica_id(1, 0), replica_id(1, 1));
        let click = signal(SignalKind::Click, 1.0);
        let mut s0 = CrdtSignalState::new();
        s0.apply(&click.as_ref(), Hlc(1), shard0);
        let follower0 = s0.clone(); // a follower that has applied the first signal only
        s0.apply(&click.as_ref(), Hlc(2), shard0);
        let mut s1 = CrdtSignalState::new();
        s1.apply(&click.as_ref(), Hlc(3), shard1);

        let global = merged(&merged(&s0, &s1), &follower0);
        assert_eq!(global.count(&SignalKind::Click), 3);
        assert_eq!(merged(&global, &s0), global, "re-merging a shard adds nothing");
        assert_eq!(merged(&global, &global), global);
    }

    #[test]
    fn merge_adds_missing_kinds_in_order() {
        let mut a = CrdtSignalState::new();
        a.apply(&signal(SignalKind::Skip, 1.0).as_ref(), Hlc(1), 1);
        let mut b = CrdtSignalState::new();
        b.apply(&signal(SignalKind::Impression, 1.0).as_ref(), Hlc(2), 2);
        b.apply(&signal(SignalKind::Skip, 1.0).as_ref(), Hlc(3), 2);
        b.apply(&signal(SignalKind::from_name("zzz"), 1.0).as_ref(), Hlc(4), 2);
        let ab = merged(&a, &b);
        assert_eq!(ab, merged(&b, &a));
        assert_eq!(ab.count(&SignalKind::Skip), 2);
        assert_eq!(ab.kinds().map(|(k, _, _)| k.as_str()).collect::<Vec<_>>(), ["impression", "skip", "zzz"]);
    }

    #[test]
    fn serde_round_trips_and_canonicalises() {
        let mut s = CrdtSignalState::new();
        s.apply(&signal(SignalKind::Rating, 7.0).as_ref(), Hlc(4), 1);
        s.apply(&label("ok", 1.0).as_ref(), Hlc(5), 1);
        let json = serde_json::to_string(&s).unwrap();
        let back: CrdtSignalState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);

        let messy = r#"{"kinds":[["skip",{"count":[{"replica":1,"p":1,"n":0}],"value_milli":[]}],
            ["click",{"count":[],"value_milli":[]}],
            ["skip",{"count":[{"replica":2,"p":1,"n":0}],"value_milli":[]}]],
            "last_rating":{"entry":null},"last_label":{"entry":null},"first_hlc":1,"last_hlc":2}"#;
        let fixed: CrdtSignalState = serde_json::from_str(messy).unwrap();
        assert_eq!(fixed.kinds().map(|(k, n, _)| (k.as_str(), n)).collect::<Vec<_>>(), [("skip", 2)]);
        assert_eq!(fixed.registers, None);
    }

    #[test]
    fn stays_small() {
        assert!(std::mem::size_of::<CrdtSignalState>() <= 40);
        assert!(std::mem::size_of::<KindCounters>() <= 64);
        let mut s = CrdtSignalState::new();
        s.apply(&signal(SignalKind::Click, 1.0).as_ref(), Hlc(1), 1);
        let entry = std::mem::size_of::<(KindRef, KindCounters)>();
        assert_eq!(entry, 72, "an 80-byte heap block, not 96");
        assert_eq!(s.heap_bytes(), entry, "one kind, one replica: a single exact allocation");
    }
}
