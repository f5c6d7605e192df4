//! A snapshot install between a leader machine and a follower machine over a seeded lossy
//! network (drops, duplicates, reordering): the follower is behind what the leader's log
//! holds, gets the snapshot exactly once, byte for byte, and then the log after it.

use super::follower::Follower;
use super::leader::{Leader, LeaderConfig};
use super::test_batches::{MemLog, batch};
use super::{Action, BatchSource, Message, SnapshotMeta, SourceError};
use crate::log::EpochHistory;
use crate::transport::NodeId;
use crate::transport::rng::SimRng;

const LEADER: NodeId = NodeId(1);
const FOLLOWER: NodeId = NodeId(2);
/// The leader's log holds seqs from here; the snapshot covers everything before.
const OLDEST: u64 = 1001;
const END: u64 = 1100;

/// A log whose early segments are gone, with a snapshot covering them.
struct RetiredLog {
    log: MemLog,
    snapshot: Vec<u8>,
}

impl BatchSource for RetiredLog {
    fn read_from(&self, from_seq: u64, max_bytes: u64) -> Result<Vec<Vec<u8>>, SourceError> {
        if from_seq < OLDEST {
            return Err(SourceError::Behind { seq: from_seq, oldest: OLDEST });
        }
        self.log.read_from(from_seq, max_bytes)
    }
    fn latest_snapshot(&self) -> Result<Option<SnapshotMeta>, SourceError> {
        Ok(Some(SnapshotMeta { seq: OLDEST - 1, len: self.snapshot.len() as u64 }))
    }
    fn read_snapshot(&self, seq: u64, offset: u64, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
        assert_eq!(seq, OLDEST - 1);
        let start = (offset as usize).min(self.snapshot.len());
        let end = (start + max_bytes as usize).min(self.snapshot.len());
        Ok(self.snapshot[start..end].to_vec())
    }
}

fn leader_log(seed: u64) -> RetiredLog {
    let mut rng = SimRng::new(seed);
    let snapshot = (0..50_000).map(|_| rng.next_u64() as u8).collect();
    let mut log = MemLog::default();
    for first in (OLDEST..=END).step_by(10) {
        log.push(first, batch(0, 4, first, 10));
    }
    RetiredLog { log, snapshot }
}

/// What the follower's runtime did.
#[derive(Default)]
struct FollowerDisk {
    begun: u32,
    staged: Vec<u8>,
    installs: Vec<(u64, u64, Vec<u8>)>,
    appended: Vec<u64>,
}

impl FollowerDisk {
    fn run(&mut self, actions: Vec<Action>, net: &mut Vec<(NodeId, Message)>) {
        for action in actions {
            match action {
                Action::Send { to, message } => net.push((to, message)),
                Action::SnapshotBegin { .. } => {
                    self.begun += 1;
                    self.staged.clear();
                }
                Action::SnapshotWrite { offset, bytes } => {
                    assert_eq!(offset, self.staged.len() as u64, "chunks are staged in order");
                    self.staged.extend(bytes);
                }
                Action::SnapshotInstall { seq, keep_through } => {
                    self.installs.push((seq, keep_through, std::mem::take(&mut self.staged)));
                }
                Action::Append(bytes) => {
                    let (h, _) = tidal::wal::BatchHeader::decode(&bytes).unwrap();
                    self.appended.push(h.first_seq);
                }
                Action::PersistEpoch { .. } | Action::Sync | Action::SetAside { .. } => {}
                other => panic!("unexpected follower action {other:?}"),
            }
        }
    }
}

/// Runs one seeded install; returns the follower's disk and the leader.
fn run(seed: u64, follower_history: &[(u64, u64)], follower_end: u64) -> (FollowerDisk, Leader, RetiredLog) {
    let log = leader_log(seed);
    let mut rng = SimRng::new(seed ^ 0x5eed);
    let cfg = LeaderConfig { message_bytes: 4096, retransmit_ms: 50, ..LeaderConfig::new(0, vec![FOLLOWER]) };
    let history = EpochHistory::from_starts(vec![(1, 1), (4, 900)]).unwrap();
    let (mut leader, first) = Leader::start(cfg, 4, history, END, 0);
    let fh = EpochHistory::from_starts(follower_history.to_vec()).unwrap();
    let mut follower = Follower::new(0, 0, None, fh, follower_end);
    let mut disk = FollowerDisk::default();
    let mut net: Vec<(NodeId, Message)> = Vec::new();
    let sends = |actions: Vec<Action>, net: &mut Vec<(NodeId, Message)>| {
        for a in actions {
            if let Action::Send { to, message } = a {
                net.push((to, message));
            }
        }
    };
    sends(first, &mut net);
    let mut now = 0;
    for _ in 0..200_000 {
        now += 5;
        if rng.chance(0.2) || net.is_empty() {
            sends(leader.tick(now, &log), &mut net);
        }
        if net.is_empty() {
            continue;
        }
        let (to, message) = net.swap_remove(rng.below(net.len() as u64) as usize);
        if rng.chance(0.15) {
            continue;
        }
        if rng.chance(0.1) {
            net.push((to, message.clone()));
        }
        if to == FOLLOWER {
            disk.run(follower.handle(LEADER, message), &mut net);
        } else {
            sends(leader.handle(FOLLOWER, message, now, &log), &mut net);
        }
        let peer = &leader.peers()[&FOLLOWER];
        if follower.end() == END && peer.durable == END {
            return (disk, leader, log);
        }
    }
    panic!(
        "seed {seed}: no convergence; follower end {}, disk installs {}",
        follower.end(),
        disk.installs.len()
    );
}

#[test]
fn a_follower_behind_the_log_gets_the_snapshot_once_then_the_log() {
    for seed in 0..300 {
        let (disk, leader, log) = run(seed, &[(1, 1)], 10);
        assert_eq!(disk.begun, 1, "seed {seed}: one staging");
        assert_eq!(disk.installs.len(), 1, "seed {seed}: one install");
        let (seq, keep_through, bytes) = &disk.installs[0];
        assert_eq!((*seq, *keep_through), (OLDEST - 1, 10), "seed {seed}");
        assert!(bytes == &log.snapshot, "seed {seed}: the snapshot arrived byte for byte");
        let expected: Vec<u64> = (OLDEST..=END).step_by(10).collect();
        assert_eq!(disk.appended, expected, "seed {seed}: the log after the snapshot, in order, once");
        assert_eq!(leader.stats().snapshot_installs, 1, "seed {seed}");
    }
}

#[test]
fn a_divergent_tail_is_kept_through_the_point_where_the_logs_part() {
    // The follower led epoch 2 from seq 5 on; the leader's log has epoch 1 there.
    let (disk, _, _) = run(7, &[(1, 1), (2, 5)], 50);
    assert_eq!(disk.installs.len(), 1);
    assert_eq!(disk.installs[0].1, 4, "records from seq 5 on are set aside");
}

#[test]
fn an_install_acked_by_a_follower_already_past_it_ships_after_its_log() {
    // Stale appends the transport queued reached the follower while the install began: it
    // acks them, then answers the snapshot's chunk from its log ("installed").
    let log = leader_log(1);
    let cfg = LeaderConfig { message_bytes: 4096, ..LeaderConfig::new(0, vec![FOLLOWER]) };
    let history = EpochHistory::from_starts(vec![(1, 1), (4, 900)]).unwrap();
    let (mut leader, _) = Leader::start(cfg, 4, history, END, 0);
    let position = Message::Position {
        shard: 0,
        epoch: 5,
        end: crate::log::LogPos { epoch: 1, seq: 10 },
        durable: 10,
        history: vec![(1, 1)],
    };
    leader.handle(FOLLOWER, position, 1, &log);
    leader.on_local_durable(END, 2, &log);
    assert!(leader.peers()[&FOLLOWER].install.is_some(), "behind the log: an install starts");
    leader.handle(FOLLOWER, Message::Ack { shard: 0, epoch: 5, durable: 1050, applied: 1050 }, 3, &log);
    let ack = Message::SnapshotAck { shard: 0, epoch: 5, seq: OLDEST - 1, received: 50_000, installed: true };
    let out = leader.handle(FOLLOWER, ack, 4, &log);
    let first_prev = out.iter().find_map(|a| match a {
        Action::Send { message: Message::Append { prev, .. }, .. } => Some(prev.seq),
        _ => None,
    });
    assert_eq!(first_prev, Some(1050), "shipping resumes after the follower's log: {out:?}");
    let peer = &leader.peers()[&FOLLOWER];
    // Shipping resumed after its log (1051 on), not after the snapshot.
    assert_eq!((peer.durable, peer.next, peer.needs_snapshot), (1050, END + 1, false));
    leader.tick(1000, &log);
}
