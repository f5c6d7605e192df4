//! Property tests for the CRDTs: random operation histories on three replicas (with random
//! state exchanges between them), then the semilattice laws on the resulting states, and
//! per type a check against a plain model so that a merge which merely *looks* lawful (one
//! that keeps the max of everything, say) still fails.
//!
//! Case counts stay moderate so the suite is quick in a debug build.

use std::cmp::Ordering;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{AddWinsSet, CrdtSignalState, LwwRegister, LwwValue, PnCounter, ReplicaId, replica_id};
use crate::hlc::Hlc;
use crate::signal::{Signal, SignalKind};

const CASES: u32 = 128;

/// The three replicas: two shards of node 1 and one shard of node 2.
const REPLICAS: [ReplicaId; 3] = [replica_id(1, 0), replica_id(1, 1), replica_id(2, 0)];

const PERMUTATIONS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

trait Crdt: Clone + PartialEq + Debug {
    fn join(&mut self, other: &Self);
}

impl Crdt for PnCounter {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl Crdt for LwwRegister<f64> {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl Crdt for AddWinsSet<u8> {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl Crdt for CrdtSignalState {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

fn joined<S: Crdt>(a: &S, b: &S) -> S {
    let mut m = a.clone();
    m.join(b);
    m
}

fn join_in_order<S: Crdt>(states: &[S; 3], order: [usize; 3]) -> S {
    let [first, second, third] = order.map(|i| &states[i]);
    joined(&joined(first, second), third)
}

/// Commutativity, associativity, idempotence, and order-independence of a full merge.
fn check_laws<S: Crdt>(states: &[S; 3]) -> Result<(), TestCaseError> {
    let [a, b, c] = states;
    for (x, y) in [(a, b), (a, c), (b, c)] {
        prop_assert_eq!(joined(x, y), joined(y, x), "commutative");
        prop_assert_eq!(joined(&joined(x, y), y), joined(x, y), "absorbs a repeat");
    }
    for x in states {
        prop_assert_eq!(&joined(x, x), x, "idempotent");
    }
    prop_assert_eq!(joined(&joined(a, b), c), joined(a, &joined(b, c)), "associative");
    let reference = join_in_order(states, [0, 1, 2]);
    for order in PERMUTATIONS {
        prop_assert_eq!(&join_in_order(states, order), &reference, "order {:?}", order);
    }
    Ok(())
}

/// Replica `to` receives the whole state of replica `from`.
fn sync<S: Crdt>(states: &mut [S; 3], from: usize, to: usize) {
    let sent = states[from].clone();
    states[to].join(&sent);
}

fn replica() -> impl Strategy<Value = usize> {
    0usize..3
}

// ---- PnCounter ----

#[derive(Clone, Debug)]
enum CounterOp {
    Inc { at: usize, delta: i64 },
    Sync { from: usize, to: usize },
}

fn counter_op() -> impl Strategy<Value = CounterOp> {
    prop_oneof![
        3 => (replica(), -1_000i64..1_000).prop_map(|(at, delta)| CounterOp::Inc { at, delta }),
        1 => (replica(), replica()).prop_map(|(from, to)| CounterOp::Sync { from, to }),
    ]
}

/// Runs the history; returns the replica states and the sum of every delta.
fn run_counters(ops: &[CounterOp]) -> ([PnCounter; 3], i64) {
    let mut states: [PnCounter; 3] = Default::default();
    let mut total = 0;
    for op in ops {
        match *op {
            CounterOp::Inc { at, delta } => {
                states[at].increment(REPLICAS[at], delta);
                total += delta;
            }
            CounterOp::Sync { from, to } => sync(&mut states, from, to),
        }
    }
    (states, total)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn pn_counter_merge_is_a_semilattice(ops in prop::collection::vec(counter_op(), 0..40)) {
        let (states, _) = run_counters(&ops);
        check_laws(&states)?;
    }

    #[test]
    fn pn_counter_merge_of_all_replicas_counts_every_delta_once(
        ops in prop::collection::vec(counter_op(), 0..40),
    ) {
        let (states, total) = run_counters(&ops);
        prop_assert_eq!(join_in_order(&states, [2, 0, 1]).value(), total);
    }
}

// ---- LwwRegister ----

#[derive(Clone, Debug)]
enum LwwOp {
    /// Replica `at` records a write stamped with replica id `as_of`; usually `as_of == at`,
    /// but not always, so that equal stamps with different values do occur.
    Set {
        at: usize,
        as_of: usize,
        value: f64,
        hlc: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn lww_op() -> impl Strategy<Value = LwwOp> {
    let value = prop_oneof![Just(0.0), Just(-0.0), Just(1.0), -10.0f64..10.0];
    prop_oneof![
        3 => (replica(), prop::option::weighted(0.2, replica()), value, 0u64..8).prop_map(
            |(at, other, value, hlc)| LwwOp::Set { at, as_of: other.unwrap_or(at), value, hlc }
        ),
        1 => (replica(), replica()).prop_map(|(from, to)| LwwOp::Sync { from, to }),
    ]
}

type Write = (f64, Hlc, ReplicaId);

fn run_registers(ops: &[LwwOp]) -> ([LwwRegister<f64>; 3], Vec<Write>) {
    let mut states: [LwwRegister<f64>; 3] = Default::default();
    let mut writes = Vec::new();
    for op in ops {
        match *op {
            LwwOp::Set { at, as_of, value, hlc } => {
                states[at].set(value, Hlc(hlc), REPLICAS[as_of]);
                writes.push((value, Hlc(hlc), REPLICAS[as_of]));
            }
            LwwOp::Sync { from, to } => sync(&mut states, from, to),
        }
    }
    (states, writes)
}

fn write_order(a: &Write, b: &Write) -> Ordering {
    (a.1, a.2).cmp(&(b.1, b.2)).then_with(|| a.0.lww_cmp(&b.0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn lww_merge_is_a_semilattice(ops in prop::collection::vec(lww_op(), 0..30)) {
        let (states, _) = run_registers(&ops);
        check_laws(&states)?;
    }

    #[test]
    fn lww_merge_of_all_replicas_keeps_the_greatest_write(
        ops in prop::collection::vec(lww_op(), 0..30),
    ) {
        let (states, writes) = run_registers(&ops);
        let all = join_in_order(&states, [1, 2, 0]);
        let expected = writes.iter().max_by(|a, b| write_order(a, b));
        prop_assert_eq!(all.stamp(), expected.map(|w| (w.1, w.2)));
        prop_assert_eq!(all.get().map(|v| v.to_bits()), expected.map(|w| w.0.to_bits()));
    }
}

// ---- AddWinsSet ----

#[derive(Clone, Debug)]
enum SetOp {
    Add { at: usize, elem: u8 },
    Remove { at: usize, elem: u8 },
    Sync { from: usize, to: usize },
}

fn set_op() -> impl Strategy<Value = SetOp> {
    let elem = 0u8..6;
    prop_oneof![
        3 => (replica(), elem.clone()).prop_map(|(at, elem)| SetOp::Add { at, elem }),
        2 => (replica(), elem).prop_map(|(at, elem)| SetOp::Remove { at, elem }),
        2 => (replica(), replica()).prop_map(|(from, to)| SetOp::Sync { from, to }),
    ]
}

fn run_sets(ops: &[SetOp]) -> [AddWinsSet<u8>; 3] {
    let mut states: [AddWinsSet<u8>; 3] = Default::default();
    for op in ops {
        match *op {
            SetOp::Add { at, elem } => states[at].add(elem, REPLICAS[at]),
            SetOp::Remove { at, elem } => {
                states[at].remove(&elem);
            }
            SetOp::Sync { from, to } => sync(&mut states, from, to),
        }
    }
    states
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn aw_set_merge_is_a_semilattice(ops in prop::collection::vec(set_op(), 0..40)) {
        check_laws(&run_sets(&ops))?;
    }

    /// On one replica (no concurrency) the set behaves exactly like a `BTreeSet`.
    #[test]
    fn aw_set_sequential_ops_match_a_plain_set(ops in prop::collection::vec(set_op(), 0..40)) {
        let mut set = AddWinsSet::new();
        let mut model = std::collections::BTreeSet::new();
        for op in &ops {
            match *op {
                SetOp::Add { elem, .. } => {
                    set.add(elem, REPLICAS[0]);
                    model.insert(elem);
                }
                SetOp::Remove { elem, .. } => {
                    prop_assert_eq!(set.remove(&elem), model.remove(&elem));
                }
                SetOp::Sync { .. } => {}
            }
        }
        let elems: Vec<u8> = set.iter().copied().collect();
        prop_assert_eq!(elems, model.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(set.len(), model.len());
    }

    /// Replica 1 removes an element it observed while replica 0 concurrently re-adds it:
    /// after any merge order the element is present (add wins).
    #[test]
    fn aw_set_concurrent_add_survives_remove(
        ops in prop::collection::vec(set_op(), 0..30),
        elem in 0u8..6,
    ) {
        let mut states = run_sets(&ops);
        states[0].add(elem, REPLICAS[0]);
        sync(&mut states, 0, 1);
        prop_assert!(states[1].contains(&elem));
        states[1].remove(&elem);
        states[0].add(elem, REPLICAS[0]);
        for order in PERMUTATIONS {
            prop_assert!(join_in_order(&states, order).contains(&elem), "order {:?}", order);
        }
    }

    /// A remove issued after observing every replica's adds removes the element everywhere.
    #[test]
    fn aw_set_observed_remove_wins_over_older_adds(
        ops in prop::collection::vec(set_op(), 0..30),
        elem in 0u8..6,
    ) {
        let mut states = run_sets(&ops);
        states[0].add(elem, REPLICAS[0]);
        sync(&mut states, 0, 1);
        sync(&mut states, 2, 1);
        states[1].remove(&elem);
        for order in PERMUTATIONS {
            prop_assert!(!join_in_order(&states, order).contains(&elem), "order {:?}", order);
        }
    }
}

// ---- CrdtSignalState ----

#[derive(Clone, Debug)]
struct SignalOp {
    shard: usize,
    signal: Signal,
    hlc: u64,
    /// Whether the shard's follower copy applied this signal; it stops at its shard's first
    /// `false`, so each follower holds a prefix of its shard's history.
    follower_keeps: bool,
}

fn signal_op() -> impl Strategy<Value = SignalOp> {
    let kind = prop_oneof![
        Just(SignalKind::Click),
        Just(SignalKind::Dwell),
        Just(SignalKind::Rating),
        Just(SignalKind::Label),
        Just(SignalKind::from_name("bookmark")),
    ];
    let label = prop_oneof![Just("spam"), Just("ok")];
    (replica(), kind, -50.0f64..50.0, label, 1u64..40, any::<bool>()).prop_map(
        |(shard, kind, value, label, hlc, follower_keeps)| {
            let mut signal = Signal::new("u", "item", kind);
            signal.value = value;
            signal.attrs.insert("label".into(), label.into());
            SignalOp { shard, signal, hlc, follower_keeps }
        },
    )
}

struct ShardRun {
    shards: [CrdtSignalState; 3],
    /// Per shard, a follower that applied a prefix of the shard's signals (same replica id).
    followers: [CrdtSignalState; 3],
    /// Every signal applied to one state, each under its shard's replica id.
    single: CrdtSignalState,
}

fn run_shards(ops: &[SignalOp]) -> ShardRun {
    let mut run =
        ShardRun { shards: Default::default(), followers: Default::default(), single: Default::default() };
    let mut follower_lags = [false; 3];
    for op in ops {
        let (signal, hlc, replica) = (op.signal.as_ref(), Hlc(op.hlc), REPLICAS[op.shard]);
        run.shards[op.shard].apply(&signal, hlc, replica);
        run.single.apply(&signal, hlc, replica);
        // The follower applies the shard's signals in order until it first falls behind.
        follower_lags[op.shard] |= !op.follower_keeps;
        if !follower_lags[op.shard] {
            run.followers[op.shard].apply(&signal, hlc, replica);
        }
    }
    run
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn signal_state_merge_is_a_semilattice(
        ops in prop::collection::vec(signal_op(), 0..30),
        syncs in prop::collection::vec((replica(), replica()), 0..4),
    ) {
        let mut states = run_shards(&ops).shards;
        for (from, to) in syncs {
            sync(&mut states, from, to);
        }
        check_laws(&states)?;
    }

    /// Merging per-shard states (and stale follower copies of them) equals applying every
    /// signal to one state: shards sum, copies of one shard never double count.
    #[test]
    fn signal_state_per_shard_merge_equals_single_state(
        ops in prop::collection::vec(signal_op(), 0..40),
    ) {
        let run = run_shards(&ops);
        for order in PERMUTATIONS {
            prop_assert_eq!(&join_in_order(&run.shards, order), &run.single, "order {:?}", order);
        }
        let mut with_followers = join_in_order(&run.followers, [2, 1, 0]);
        for shard in &run.shards {
            with_followers.merge(shard);
        }
        with_followers.merge(&join_in_order(&run.followers, [0, 1, 2]));
        prop_assert_eq!(&with_followers, &run.single);

        let kinds = [SignalKind::Click, SignalKind::Dwell, SignalKind::Rating, SignalKind::Label];
        for kind in kinds.into_iter().chain([SignalKind::from_name("bookmark")]) {
            let of_kind: Vec<_> = ops.iter().filter(|op| op.signal.kind == kind).collect();
            let milli: i64 =
                of_kind.iter().map(|op| (op.signal.value * 1000.0).round() as i64).sum();
            prop_assert_eq!(with_followers.count(&kind), of_kind.len() as i64);
            prop_assert_eq!(with_followers.value_sum(&kind), milli as f64 / 1000.0);
        }
        let stamps = ops.iter().map(|op| Hlc(op.hlc));
        prop_assert_eq!(with_followers.first_hlc(), stamps.clone().min().unwrap_or(Hlc::ZERO));
        prop_assert_eq!(with_followers.last_hlc(), stamps.max().unwrap_or(Hlc::ZERO));
    }
}
