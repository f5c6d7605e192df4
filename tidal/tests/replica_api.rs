//! The store's replication surface, driven by hand as a runtime would: roles, quorum-held
//! acks, shipping a leader's batches to a follower, and reading the log back.

use std::time::Duration;

use tidal::shard::role::{AckMode, ShardRole};
use tidal::wal::ship::ShipError;
use tidal::wal::{BatchHeader, decode_batch};
use tidal::{Db, Error, Options, Signal, SignalKind};

fn open(dir: &std::path::Path, node: u32) -> Db {
    // Replicas share every pinned parameter, the decay reference time included.
    let options =
        Options { shards: Some(1), node_id: node, created_ms: Some(1_700_000_000_000), ..Options::default() };
    Db::open(dir, options).unwrap()
}

fn signals(from: u32, n: u32) -> Vec<Signal> {
    (from..from + n)
        .map(|i| Signal::new(format!("u{}", i % 3), format!("item-{i}"), SignalKind::Like))
        .collect()
}

#[test]
fn a_follower_applies_shipped_batches_and_quorum_acks_wait_for_the_commit() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(a.path(), 1), open(b.path(), 2));
    leader.set_role(0, ShardRole::Leader { epoch: 4 }).unwrap();
    follower.set_role(0, ShardRole::Follower { epoch: 4, leader: Some(1) }).unwrap();
    let durable = leader.subscribe_durable().unwrap();

    // Leader-mode writes are acknowledged at the leader's fsync.
    let acks = leader.submit_with(signals(0, 5), AckMode::Leader).unwrap().wait().unwrap();
    assert_eq!(acks.last().unwrap().seq, 5);
    assert_eq!(durable.recv_timeout(Duration::from_secs(5)).unwrap().seq, 5);

    // A quorum-mode write waits until the runtime says a quorum holds it.
    let pending = leader.submit_with(signals(5, 3), AckMode::Quorum).unwrap();
    assert_eq!(durable.recv_timeout(Duration::from_secs(5)).unwrap().seq, 8);
    let batches = leader.read_batches(0, 1, u64::MAX).unwrap();
    assert_eq!(batches.len(), 2);
    let (header, _, _) = decode_batch(&batches[1]).unwrap();
    assert_eq!((header.version, header.epoch, header.origin_node), (3, 4, 1));
    assert_eq!(follower.apply_shipped(0, batches.clone()).unwrap(), 8);
    leader.commit(0, 8).unwrap();
    assert_eq!(pending.wait().unwrap().len(), 3);

    // Same batches, same state; the follower's log holds the leader's bytes.
    assert_eq!(follower.digests(), leader.digests());
    assert_eq!(follower.read_batches(0, 1, u64::MAX).unwrap(), batches);
    assert_eq!(follower.item("item-6").unwrap().state.count(&SignalKind::Like), 1);

    // A write to the follower names the leader; a re-shipped batch is refused.
    let err = follower.write(Signal::new("u", "x", SignalKind::Click)).unwrap_err();
    assert!(matches!(err, Error::NotLeader { shard: 0, epoch: 4, leader: Some(1) }), "{err}");
    assert!(follower.apply_shipped(0, vec![batches[0].clone()]).is_err());
    assert_eq!(follower.digests(), leader.digests());
    assert!(matches!(leader.read_batches(0, 2, 10), Err(ShipError::NotABoundary(2))));
}

#[test]
fn leaving_the_leader_role_fails_the_writes_waiting_for_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 1);
    db.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    let pending = db.submit_with(signals(0, 2), AckMode::Quorum).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    db.set_role(0, ShardRole::Follower { epoch: 2, leader: Some(3) }).unwrap();
    let err = pending.wait().unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    assert_eq!(db.role(0).unwrap(), ShardRole::Follower { epoch: 2, leader: Some(3) });
}

#[test]
fn a_standalone_store_keeps_writing_v2_headers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 1);
    db.write_batch(signals(0, 2)).unwrap();
    let batches = db.read_batches(0, 1, u64::MAX).unwrap();
    let (header, _) = BatchHeader::decode(&batches[0]).unwrap();
    assert_eq!((header.version, header.epoch), (2, 0));
}

/// A divergent tail leaves intact: the log, the state, the snapshots and the ranking are
/// as if it had never been written, and its bytes wait in `divergent/`.
#[test]
fn set_aside_cuts_the_log_and_rebuilds_the_shard() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db, reference) = (open(a.path(), 1), open(b.path(), 2));
    db.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    reference.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
    db.submit_with(signals(0, 4), AckMode::Leader).unwrap().wait().unwrap();
    db.submit_with(signals(4, 4), AckMode::Leader).unwrap().wait().unwrap();
    let kept = db.read_batches(0, 1, u64::MAX).unwrap();
    reference.apply_shipped(0, kept.clone()).unwrap();
    // The tail to set aside, with a snapshot that covers part of it.
    db.submit_with(signals(8, 3), AckMode::Leader).unwrap().wait().unwrap();
    db.snapshot().unwrap();
    db.submit_with(signals(11, 2), AckMode::Leader).unwrap().wait().unwrap();
    let tail = db.read_batches(0, 9, u64::MAX).unwrap();
    db.set_role(0, ShardRole::Follower { epoch: 2, leader: Some(3) }).unwrap();

    let report = db.set_aside(0, 9).unwrap();
    assert_eq!((report.batches, report.records), (2, 5));
    let saved = std::fs::read(report.file.as_ref().unwrap()).unwrap();
    assert_eq!(saved, tail.concat());
    assert_eq!(db.position(0).unwrap().applied_seq, 8);
    assert_eq!(db.read_batches(0, 1, u64::MAX).unwrap(), kept);
    assert!(db.read_batches(0, 9, u64::MAX).unwrap().is_empty(), "the set-aside tail is not served");
    assert_eq!(db.digests(), reference.digests());
    assert!(db.item("item-9").is_none());
    let top = db.top_k(100, 0).unwrap();
    assert_eq!(top.items.len(), 8, "the ranking lost the set-aside items: {:?}", top.items);
    assert!(top.items.iter().all(|r| r.item != "item-9"));
    // The log continues at 9 (with the new leader's batches), and survives a reopen.
    let next = reference.read_batches(0, 1, u64::MAX).unwrap();
    assert_eq!(next, kept);
    drop(reference);
    db.close().unwrap();
    let db = open(a.path(), 1);
    assert_eq!(db.position(0).unwrap().applied_seq, 8);
    assert!(db.item("item-9").is_none());
}

/// The pipelined follower path: batches are visible once `append_shipped` returns, and
/// claimed durable only by a report whose byte count reaches theirs; `sync_shipped` waits
/// for it, and a power cut after it keeps every batch.
#[test]
fn pipelined_shipped_batches_are_reported_durable_only_after_their_fsync() {
    use std::sync::Arc;
    use tidal::wal::sim_vfs::{SimOp, SimVfs, TornWrite};
    let a = tempfile::tempdir().unwrap();
    let leader = open(a.path(), 1);
    leader.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    for i in 0..4 {
        leader.submit_with(signals(i * 5, 5), AckMode::Leader).unwrap().wait().unwrap();
    }
    let batches = leader.read_batches(0, 1, u64::MAX).unwrap();
    let sim = |vfs: &SimVfs| Options {
        vfs: Arc::new(vfs.clone()),
        shards: Some(1),
        node_id: 2,
        created_ms: Some(1_700_000_000_000),
        ..Options::default()
    };
    let vfs = SimVfs::new();
    let follower = Db::open(std::path::Path::new("/f"), sim(&vfs)).unwrap();
    follower.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
    let reports = follower.subscribe_durable().unwrap();
    let first = follower.append_shipped(0, batches[..2].to_vec()).unwrap();
    assert_eq!(first.applied_seq, 10);
    assert!(follower.item("item-9").is_some(), "applied before its fsync");
    let second = follower.append_shipped(0, batches[2..].to_vec()).unwrap();
    assert!(second.applied_seq == 20 && second.log_bytes > first.log_bytes);
    let settled = follower.sync_shipped(0).unwrap();
    assert_eq!((settled.seq, settled.log_bytes), (20, second.log_bytes));
    let mut reported = 0;
    while let Ok(event) = reports.recv_timeout(Duration::from_millis(200)) {
        assert!(event.log_bytes >= reported, "reports never go back");
        reported = event.log_bytes;
    }
    assert_eq!(reported, second.log_bytes);
    let reopened =
        Db::open(std::path::Path::new("/f"), sim(&vfs.crash_image(TornWrite::RandomPrefixGarbage, 7)));
    assert_eq!(reopened.unwrap().digests(), leader.digests());

    // A failed pipelined fsync: never reported, and the shard stops.
    let vfs = SimVfs::new();
    let follower = Db::open(std::path::Path::new("/f"), sim(&vfs)).unwrap();
    follower.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
    let reports = follower.subscribe_durable().unwrap();
    vfs.fail_next(SimOp::SyncData);
    follower.append_shipped(0, batches[..1].to_vec()).unwrap();
    assert!(matches!(follower.sync_shipped(0), Err(Error::ShardFailed { .. })));
    assert!(reports.try_recv().is_err(), "a failed fsync reported durable");
    assert!(matches!(follower.append_shipped(0, batches[1..2].to_vec()), Err(Error::ShardFailed { .. })));
}
