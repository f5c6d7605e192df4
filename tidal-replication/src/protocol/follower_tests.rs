//! Tests of the follower machine: epochs, the append check, duplicates, divergence.

use super::*;
use crate::protocol::test_batches::batch;

const L: NodeId = NodeId(1);
const OTHER: NodeId = NodeId(3);

fn append(epoch: u64, prev: LogPos, batches: Vec<Vec<u8>>) -> Message {
    Message::Append { shard: 0, epoch, prev, batches, commit: 0 }
}

fn refusal(actions: &[Action]) -> Option<Refusal> {
    actions.iter().find_map(|a| match a {
        Action::Send { message: Message::Refused { reason, .. }, .. } => Some(*reason),
        _ => None,
    })
}

fn appended(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::Append(_))).count()
}

#[test]
fn a_new_epoch_is_persisted_before_anything_else_and_older_ones_are_refused() {
    let mut f = Follower::new(0, 0, None, EpochHistory::new(), 0);
    let out = f.handle(L, Message::Probe { shard: 0, epoch: 2 });
    assert_eq!(out[0], Action::PersistEpoch { epoch: 2, leader: Some(L) });
    assert!(matches!(&out[1], Action::Send { message: Message::Position { epoch: 2, .. }, .. }));
    assert_eq!(refusal(&f.handle(OTHER, Message::Probe { shard: 0, epoch: 1 })), Some(Refusal::StaleEpoch));
    // Another leader in the same epoch is refused too: one leader per epoch.
    assert_eq!(refusal(&f.handle(OTHER, Message::Probe { shard: 0, epoch: 2 })), Some(Refusal::StaleEpoch));
    assert_eq!(f.stats().refused.get("stale_epoch"), Some(&2));
    // Messages for another shard are not ours to answer.
    assert!(f.handle(L, Message::Probe { shard: 9, epoch: 5 }).is_empty());
}

#[test]
fn appends_are_checked_synced_then_acked_and_duplicates_skipped() {
    let mut f = Follower::new(0, 1, Some(L), EpochHistory::new(), 0);
    let out = f.handle(L, append(1, LogPos::default(), vec![batch(0, 1, 1, 3), batch(0, 1, 4, 2)]));
    assert_eq!(appended(&out), 2);
    let sync = out.iter().position(|a| *a == Action::Sync).unwrap();
    let ack =
        out.iter().position(|a| matches!(a, Action::Send { message: Message::Ack { durable: 5, .. }, .. }));
    assert!(ack.unwrap() > sync, "ack only after fsync: {out:?}");
    assert_eq!((f.end(), f.durable()), (5, 5));
    // The same append again (a duplicate delivery): nothing written, acked again.
    let out = f.handle(L, append(1, LogPos::default(), vec![batch(0, 1, 1, 3), batch(0, 1, 4, 2)]));
    assert_eq!((appended(&out), f.stats().batches_duplicate), (0, 2));
    assert!(matches!(out.last(), Some(Action::Send { message: Message::Ack { durable: 5, .. }, .. })));
}

#[test]
fn gaps_mismatches_and_bad_batches_are_refused_and_write_nothing() {
    let mut f = Follower::new(0, 1, Some(L), EpochHistory::new(), 0);
    f.handle(L, append(1, LogPos::default(), vec![batch(0, 1, 1, 3)]));
    let gap = f.handle(L, append(1, LogPos { epoch: 1, seq: 7 }, vec![batch(0, 1, 8, 1)]));
    assert_eq!((refusal(&gap), appended(&gap)), (Some(Refusal::Gap), 0));
    let mismatch = f.handle(L, append(1, LogPos { epoch: 0, seq: 3 }, vec![batch(0, 1, 4, 1)]));
    assert_eq!(refusal(&mismatch), Some(Refusal::Mismatch));
    let mut flipped = batch(0, 1, 4, 2);
    let at = flipped.len() - 3;
    flipped[at] ^= 0x10;
    let bad = f.handle(L, append(1, LogPos { epoch: 1, seq: 3 }, vec![flipped]));
    assert_eq!((refusal(&bad), appended(&bad)), (Some(Refusal::BadBatch), 0));
    let wrong_shard = f.handle(L, append(1, LogPos { epoch: 1, seq: 3 }, vec![batch(5, 1, 4, 1)]));
    assert_eq!(refusal(&wrong_shard), Some(Refusal::BadBatch));
    let future_epoch = f.handle(L, append(1, LogPos { epoch: 1, seq: 3 }, vec![batch(0, 2, 4, 1)]));
    assert_eq!(refusal(&future_epoch), Some(Refusal::BadBatch));
    assert_eq!(f.end(), 3);
}

#[test]
fn a_divergent_tail_is_set_aside_not_dropped() {
    // We hold epoch-1 records 1..=6; the new leader of epoch 2 had only 1..=3.
    let mut f = Follower::new(0, 1, Some(L), EpochHistory::new(), 0);
    f.handle(L, append(1, LogPos::default(), vec![batch(0, 1, 1, 3), batch(0, 1, 4, 3)]));
    let out = f.handle(OTHER, append(2, LogPos { epoch: 1, seq: 3 }, vec![batch(0, 2, 4, 2)]));
    assert_eq!(out[0], Action::PersistEpoch { epoch: 2, leader: Some(OTHER) });
    assert_eq!(out[1], Action::SetAside { from_seq: 4 });
    assert_eq!(appended(&out), 1);
    assert_eq!((f.end(), f.history().starts()), (5, &[(1, 1), (2, 4)][..]));
    assert_eq!(f.stats().set_asides, 1);
}

#[test]
fn fetches_are_answered_with_batches_capped() {
    let mut f = Follower::new(0, 1, Some(L), EpochHistory::new(), 0);
    let out = f.handle(L, Message::Fetch { shard: 0, epoch: 2, from_seq: 4, max_bytes: u64::MAX });
    let send = Action::SendBatches { to: L, epoch: 2, from_seq: 4, max_bytes: FETCH_BYTES_MAX };
    assert_eq!(out, vec![Action::PersistEpoch { epoch: 2, leader: Some(L) }, send]);
}
