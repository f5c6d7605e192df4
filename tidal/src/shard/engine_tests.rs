use super::*;
use crate::crdt::replica_id;
use crate::shard::state::StateLimits;
use crate::signal::SignalKind;
use crate::wal::segment::{decode_batch, encode_batch_v1, encode_batch_v2_into};

fn limits() -> StateLimits {
    StateLimits {
        user_history_max: 8,
        user_sessions_max: 4,
        idempotency_window_ms: 1 << 40,
        idempotency_keys_max: 100,
    }
}

fn batch(origin: u32, first_seq: u64, items: &[&str]) -> Vec<u8> {
    let signals: Vec<Signal> = items.iter().map(|i| Signal::new("u", *i, SignalKind::Like)).collect();
    let records: Vec<(Hlc, SignalRef<'_>)> = signals
        .iter()
        .enumerate()
        .map(|(n, s)| (Hlc::new(10 + first_seq + n as u64, 0), s.as_ref()))
        .collect();
    let mut buf = Vec::new();
    encode_batch_v2_into(&mut buf, 0, origin, first_seq, &records).unwrap();
    buf
}

fn apply(state: &mut ShardState, bytes: &[u8]) -> BatchOutcome {
    let (header, payload, _) = decode_batch(bytes).unwrap();
    apply_batch(state, &header, payload, 9).unwrap()
}

#[test]
fn batches_apply_once_in_order_and_gaps_are_named() {
    let mut st = ShardState::new(0, limits());
    assert!(
        matches!(apply(&mut st, &batch(1, 1, &["a", "b"])), BatchOutcome::Applied(a) if a.applied_seq == 2)
    );
    assert!(matches!(apply(&mut st, &batch(1, 1, &["a", "b"])), BatchOutcome::Duplicate));
    assert!(matches!(apply(&mut st, &batch(1, 5, &["c"])), BatchOutcome::Gap { expected: 3 }));
    // Overlapping the applied seq: only the new record applies.
    let outcome = apply(&mut st, &batch(1, 2, &["b", "c"]));
    assert!(
        matches!(outcome, BatchOutcome::Applied(ref a) if a.applied_seq == 3 && a.index_deltas.len() == 1)
    );
    assert_eq!(st.items["b"].state.count(&SignalKind::Like), 1, "never twice");
    assert_eq!(st.items["c"].state.count(&SignalKind::Like), 1);
}

#[test]
fn records_are_credited_to_the_origin_node() {
    let mut st = ShardState::new(0, limits());
    apply(&mut st, &batch(3, 1, &["a"]));
    let slots: Vec<_> = st.items["a"].state.counters(&SignalKind::Like).unwrap().count.iter().collect();
    assert_eq!(slots, vec![(replica_id(3, 0), 1, 0)], "node 3 wrote it, whoever applies it");
    // A v1 batch has no origin in its header: the store's node (here 9) wrote it.
    let signals = [Signal::new("u", "b", SignalKind::Like)];
    let v1 = encode_batch_v1(2, &[(Hlc::new(50, 0), signals[0].as_ref())]).unwrap();
    apply(&mut st, &v1);
    let slots: Vec<_> = st.items["b"].state.counters(&SignalKind::Like).unwrap().count.iter().collect();
    assert_eq!(slots, vec![(replica_id(9, 0), 1, 0)]);
}

#[test]
fn a_replica_of_the_same_batches_merges_without_double_counting() {
    let (mut leader, mut follower) = (ShardState::new(0, limits()), ShardState::new(0, limits()));
    for bytes in [batch(1, 1, &["a", "a"]), batch(1, 3, &["a"])] {
        apply(&mut leader, &bytes);
        apply(&mut follower, &bytes);
    }
    assert_eq!(leader.digest(), follower.digest());
    let mut merged = leader.items["a"].state.clone();
    merged.merge(&follower.items["a"].state);
    assert_eq!(merged.count(&SignalKind::Like), 3, "same replica id: merge is max, not sum");
}

#[test]
fn planning_is_pure_and_rejects_a_gapped_request_whole() {
    let st = ShardState::new(0, limits());
    let sequenced = |n: u64| {
        let mut s = Signal::new("u", format!("i{n}"), SignalKind::Click);
        s.session = Some("s".into());
        s.session_seq = Some(n);
        s
    };
    let requests =
        vec![vec![sequenced(1), sequenced(2)], vec![sequenced(4)], vec![sequenced(3), sequenced(2)]];
    let mut t = 0;
    let mut stamps = || {
        t += 1;
        Hlc::new(t, 0)
    };
    let plan = plan_group(&st, &requests, 1, &mut stamps);
    assert_eq!(plan.records.len(), 3, "1, 2, then 3; the gap (4) writes nothing");
    assert!(matches!(plan.requests[1], Err(Error::SessionGap { expected: 3, got: 4, .. })));
    let third = plan.requests[2].as_ref().unwrap();
    assert_eq!(third[0], Slot::New(2));
    assert!(matches!(third[1], Slot::Duplicate(ack) if ack.seq == 2 && ack.duplicate), "in-group retry");
    assert_eq!(plan.duplicates(), 1);
    assert_eq!(st.applied_seq, 0, "the state is only read");
}

#[test]
fn a_refused_request_adds_no_record_to_its_group() {
    let st = ShardState::new(0, limits());
    let session = |item: &str, seq: u64| {
        let mut s = Signal::new("u", item, SignalKind::Click);
        (s.session, s.session_seq) = (Some("s".into()), Some(seq));
        s
    };
    // The second request starts well, then skips a SeqNo: all of it is refused.
    let requests = vec![
        vec![Signal::new("v", "a", SignalKind::Like)],
        vec![session("b", 1), session("c", 3)],
        vec![Signal::new("w", "d", SignalKind::Like)],
    ];
    let mut clock = 0u64;
    let plan = plan_group(&st, &requests, 1, &mut || {
        clock += 1;
        Hlc::new(100, clock as u16)
    });
    let items: Vec<&str> = plan.records.iter().map(|(_, s)| s.item).collect();
    assert_eq!(items, ["a", "d"], "nothing of the refused request is written");
    assert!(matches!(plan.requests[1], Err(Error::SessionGap { expected: 2, got: 3, .. })));
    let acks: Vec<u64> = [0, 2]
        .iter()
        .map(|&r| match plan.requests[r].as_ref().unwrap()[0] {
            Slot::New(i) => slot_ack(0, 1, &plan.records, Slot::New(i)).seq,
            Slot::Duplicate(_) => panic!("not a retry"),
        })
        .collect();
    assert_eq!(acks, [1, 2], "the requests around it take consecutive seqs");
}
