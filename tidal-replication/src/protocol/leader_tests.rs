//! Tests of the leader machine: recovery, shipping within the window, quorum commit.

use super::*;
use crate::protocol::test_batches::{MemLog, batch};

const F1: NodeId = NodeId(2);
const F2: NodeId = NodeId(3);

fn cfg() -> LeaderConfig {
    LeaderConfig { recovery_grace_ms: 1000, ..LeaderConfig::new(0, vec![F1, F2]) }
}

fn position(end: u64, history: &[(u64, u64)], epoch: u64) -> Message {
    let history = history.to_vec();
    let h = EpochHistory::from_starts(history.clone()).unwrap();
    Message::Position { shard: 0, epoch, end: h.pos(end), durable: end, history }
}

fn sends(actions: &[Action]) -> Vec<(NodeId, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, message.kind())),
            _ => None,
        })
        .collect()
}

fn log_of(epoch: u64, batches: &[(u64, u64)]) -> MemLog {
    let mut log = MemLog::default();
    for &(first, n) in batches {
        log.push(first, batch(0, epoch, first, n));
    }
    log
}

#[test]
fn recovery_persists_a_new_epoch_probes_and_serves_when_all_answered() {
    let log = log_of(1, &[(1, 2)]);
    let history = EpochHistory::from_starts(vec![(1, 1)]).unwrap();
    let (mut l, out) = Leader::start(cfg(), 1, history.clone(), 2, 0);
    assert_eq!(out[0], Action::PersistEpoch { epoch: 2, leader: None });
    assert_eq!(sends(&out), vec![(F1, "probe"), (F2, "probe")]);
    assert!(
        l.handle(F1, position(2, &[(1, 1)], 2), 1, &log).iter().all(|a| !matches!(a, Action::Serve { .. }))
    );
    assert!(!l.is_serving());
    let out = l.handle(F2, position(0, &[], 2), 2, &log);
    assert!(out.contains(&Action::Serve { epoch: 2 }), "{out:?}");
    // F2 is empty: it is shipped the log from seq 1 at once.
    assert_eq!(sends(&out), vec![(F2, "append")]);
}

#[test]
fn a_majority_is_enough_after_the_grace_period() {
    let log = MemLog::default();
    let (mut l, _) = Leader::start(cfg(), 0, EpochHistory::new(), 0, 0);
    l.handle(F1, position(0, &[], 1), 10, &log);
    assert!(!l.tick(999, &log).contains(&Action::Serve { epoch: 1 }));
    assert!(l.tick(1000, &log).contains(&Action::Serve { epoch: 1 }));
}

#[test]
fn a_restarted_leader_fetches_what_a_follower_holds_beyond_its_end() {
    // We lost seq 3..=4 (a damaged tail); F1 holds them, F2 does not.
    let log = log_of(1, &[(1, 2)]);
    let (mut l, _) = Leader::start(cfg(), 1, EpochHistory::from_starts(vec![(1, 1)]).unwrap(), 2, 0);
    let out = l.handle(F1, position(4, &[(1, 1)], 2), 1, &log);
    assert_eq!(sends(&out), vec![(F1, "fetch")]);
    l.handle(F2, position(2, &[(1, 1)], 2), 2, &log);
    assert!(!l.is_serving(), "no writes while a fetch is pending");
    let fetched = Message::Fetched { shard: 0, epoch: 2, from_seq: 3, batches: vec![batch(0, 1, 3, 2)] };
    let out = l.handle(F1, fetched, 3, &log);
    assert_eq!(out[0], Action::Append(batch(0, 1, 3, 2)));
    assert_eq!(out[1], Action::Sync);
    assert_eq!(l.end(), 4);
    // It asks F1 again; F1 has nothing more, so recovery ends.
    let out = l.handle(F1, position(4, &[(1, 1)], 2), 4, &log);
    assert!(out.contains(&Action::Serve { epoch: 2 }), "{out:?}");
}

#[test]
fn shipping_respects_the_window_and_commit_needs_this_epochs_record_on_a_quorum() {
    let mut log = MemLog::default();
    let (mut l, _) = Leader::start(LeaderConfig { window_records: 4, ..cfg() }, 0, EpochHistory::new(), 0, 0);
    l.handle(F1, position(0, &[], 1), 0, &log);
    l.handle(F2, position(0, &[], 1), 0, &log);
    assert!(l.is_serving());
    for first in [1, 3, 5] {
        log.push(first, batch(0, 1, first, 2));
        l.on_local_append(first, first + 1);
    }
    let out = l.on_local_durable(6, 1, &log);
    // Window of 4 records: batches 1..=2 and 3..=4 leave (in one message), 5..=6 waits.
    assert_eq!(sends(&out), vec![(F1, "append"), (F2, "append")]);
    assert_eq!(l.peers()[&F1].next, 5);
    let ack = |durable| Message::Ack { shard: 0, epoch: 1, durable, applied: durable };
    let out = l.handle(F1, ack(4), 2, &log);
    assert!(out.contains(&Action::Commit(4)), "leader + F1 = quorum: {out:?}");
    assert_eq!(sends(&out), vec![(F1, "append")]);
    assert!(l.handle(F1, ack(6), 3, &log).contains(&Action::Commit(6)));
    // Silence from F2: after the retransmit timeout it is shipped again from its durable seq.
    l.tick(500, &log);
    assert_eq!(l.peers()[&F2].next, 5);
    assert_eq!(l.stats().retransmits, 1);
}

#[test]
fn a_refusal_naming_a_newer_epoch_steps_the_leader_down() {
    let log = MemLog::default();
    let (mut l, _) = Leader::start(cfg(), 3, EpochHistory::new(), 0, 0);
    let refused =
        Message::Refused { shard: 0, epoch: 7, reason: Refusal::StaleEpoch, end: LogPos::default() };
    assert_eq!(l.handle(F1, refused, 1, &log), vec![Action::StepDown { epoch: 7 }]);
}
