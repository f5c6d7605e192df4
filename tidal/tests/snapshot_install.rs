//! A replica behind what its leader's log holds: the leader's retention (archiving off)
//! drops covered segments unless a replica holds them, and the replica is brought up to date
//! by installing the leader's snapshot file, then the log after it. Restarts and a crash
//! between the snapshot and the retirement of the old segments keep the same state.

use std::path::Path;

use tidal::shard::role::{AckMode, ShardRole};
use tidal::wal::ship::ShipError;
use tidal::{Db, Options, Signal, SignalKind};

fn options(node: u32) -> Options {
    Options {
        shards: Some(1),
        node_id: node,
        created_ms: Some(1_700_000_000_000),
        wal_archive: false,
        segment_bytes_max: 4096,
        snapshot_every_signals: 0,
        ..Options::default()
    }
}

fn signals(from: u32, n: u32) -> Vec<Signal> {
    (from..from + n)
        .map(|i| Signal::new(format!("u{}", i % 7), format!("item-{}", i % 50), SignalKind::Like))
        .collect()
}

/// Writes `rounds` batches of 40 signals, snapshotting after each round.
fn write_and_snapshot(db: &Db, from: u32, rounds: u32) {
    for r in 0..rounds {
        db.submit_with(signals(from + r * 40, 40), AckMode::Leader).unwrap().wait().unwrap();
        db.snapshot().unwrap();
    }
}

fn ship_all(leader: &Db, follower: &Db, from_seq: u64) {
    let batches = leader.read_batches(0, from_seq, u64::MAX).unwrap();
    follower.apply_shipped(0, batches).unwrap();
}

fn snapshot_bytes(db: &Db) -> (u64, Vec<u8>) {
    let file = db.latest_snapshot(0).unwrap().expect("a snapshot");
    let mut bytes = Vec::new();
    while (bytes.len() as u64) < file.len {
        bytes.extend(db.read_snapshot(0, file.seq, bytes.len() as u64, 1000).unwrap());
    }
    (file.seq, bytes)
}

#[test]
fn a_replica_behind_retention_installs_the_leaders_snapshot_and_continues() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::open(a.path(), options(1)).unwrap();
    leader.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    let follower = Db::open(b.path(), options(2)).unwrap();
    follower.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
    write_and_snapshot(&leader, 0, 2);
    ship_all(&leader, &follower, 1);
    assert_eq!(follower.digests(), leader.digests());

    // The follower is away; retention drops what snapshots cover.
    write_and_snapshot(&leader, 1000, 30);
    let err = leader.read_batches(0, 81, u64::MAX).unwrap_err();
    assert!(matches!(err, ShipError::Behind { seq: 81, .. }), "{err}");

    let (seq, bytes) = snapshot_bytes(&leader);
    assert!(seq > 80);
    // A damaged byte is refused and changes nothing.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    assert!(follower.install_snapshot(0, bad, 80).is_err());
    assert_eq!(follower.position(0).unwrap().applied_seq, 80);
    assert_eq!(follower.install_snapshot(0, bytes.clone(), 80).unwrap().0, seq);
    assert_eq!(follower.position(0).unwrap().applied_seq, seq);
    // Not ahead of the log any more: refused.
    assert!(follower.install_snapshot(0, bytes, seq).is_err());

    // The log after the snapshot follows; the states agree, and survive a restart.
    leader.submit_with(signals(5000, 40), AckMode::Leader).unwrap().wait().unwrap();
    ship_all(&leader, &follower, seq + 1);
    assert_eq!(follower.digests(), leader.digests());
    let digests = follower.digests();
    follower.close().unwrap();
    let follower = Db::open(b.path(), options(2)).unwrap();
    assert_eq!(follower.digests(), digests);
    assert_eq!(follower.position(0).unwrap().applied_seq, leader.position(0).unwrap().applied_seq);
}

#[test]
fn a_crash_after_the_snapshot_and_before_the_old_segments_go_recovers_the_snapshot() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::open(a.path(), options(1)).unwrap();
    write_and_snapshot(&leader, 0, 20);
    let follower = Db::open(b.path(), options(2)).unwrap();
    follower.write_batch(signals(0, 40)).unwrap();
    follower.close().unwrap();
    let (seq, bytes) = snapshot_bytes(&leader);
    // What a crash leaves after the install's first durable step: the snapshot, and the
    // old log still below it.
    std::fs::write(b.path().join("snapshots").join(tidal::shard::snapshot::file_name(0, seq)), &bytes)
        .unwrap();
    let follower = Db::open(b.path(), options(2)).unwrap();
    assert_eq!(follower.position(0).unwrap().applied_seq, seq);
    assert_eq!(follower.digests(), leader.digests());
    follower.write_batch(signals(9000, 5)).unwrap();
    assert_eq!(follower.position(0).unwrap().applied_seq, seq + 5);
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal")).unwrap().count()
}

#[test]
fn a_hold_keeps_segments_a_replica_needs_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options(1)).unwrap();
    db.hold_log(0, 1).unwrap();
    write_and_snapshot(&db, 0, 30);
    // Held: the whole log is still readable.
    assert!(!db.read_batches(0, 1, 100).unwrap().is_empty());
    let held = segments(dir.path());
    db.hold_log(0, u64::MAX).unwrap();
    write_and_snapshot(&db, 2000, 2);
    assert!(segments(dir.path()) < held, "released: covered segments go");
    assert!(matches!(db.read_batches(0, 1, 100), Err(ShipError::Behind { .. })));
    db.close().unwrap();

    // A cap of one segment's worth keeps only the newest covered segments.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options { wal_hold_bytes_max: 5000, ..options(1) }).unwrap();
    db.hold_log(0, 1).unwrap();
    write_and_snapshot(&db, 0, 30);
    assert!(matches!(db.read_batches(0, 1, 100), Err(ShipError::Behind { .. })));
    assert!(segments(dir.path()) < held);
}

#[test]
fn an_install_sets_the_own_records_the_leader_never_had_aside() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::open(a.path(), options(1)).unwrap();
    write_and_snapshot(&leader, 0, 20);
    let follower = Db::open(b.path(), options(2)).unwrap();
    // 45 records of its own; the first 5 count as shared, the 40 after them diverged.
    follower.write_batch(signals(7000, 5)).unwrap();
    follower.write_batch(signals(7005, 40)).unwrap();
    let (seq, bytes) = snapshot_bytes(&leader);
    let (installed, aside) = follower.install_snapshot(0, bytes, 5).unwrap();
    assert_eq!((installed, aside.records, aside.batches), (seq, 40, 1));
    let file = aside.file.expect("a divergent file");
    assert!(file.starts_with(b.path().join("divergent")) && file.exists());
    assert_eq!(follower.digests(), leader.digests());
}

#[test]
fn a_follower_snapshots_what_it_applies_and_retires_its_log() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::open(a.path(), options(1)).unwrap();
    leader.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    let follower = Db::open(b.path(), Options { snapshot_every_signals: 200, ..options(2) }).unwrap();
    follower.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
    for r in 0..30 {
        leader.submit_with(signals(r * 40, 40), AckMode::Leader).unwrap().wait().unwrap();
        let from = follower.position(0).unwrap().applied_seq + 1;
        ship_all(&leader, &follower, from);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let snapshots = std::fs::read_dir(b.path().join("snapshots")).unwrap().count();
    assert!(snapshots >= 2, "the follower wrote {snapshots} snapshots");
    assert!(matches!(follower.read_batches(0, 1, 100), Err(ShipError::Behind { .. })), "covered segments go");
    let digests = follower.digests();
    follower.close().unwrap();
    let follower = Db::open(b.path(), options(2)).unwrap();
    assert_eq!(follower.digests(), digests);
    assert!(follower.recovery_report().shards[0].snapshot_seq.is_some(), "recovery starts from a snapshot");
}

#[test]
fn a_crash_mid_install_never_replays_a_divergent_tail_on_the_snapshot() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::open(a.path(), options(1)).unwrap();
    write_and_snapshot(&leader, 0, 20);
    let (seq, bytes) = snapshot_bytes(&leader);
    // A follower whose own log runs past the snapshot's seq, all of it divergent.
    let follower = Db::open(b.path(), options(2)).unwrap();
    follower.write_batch(signals(7000, 5)).unwrap();
    follower.write_batch(signals(7005, seq as u32 + 20)).unwrap();
    assert!(follower.position(0).unwrap().applied_seq > seq);
    follower.install_snapshot(0, bytes.clone(), 5).unwrap();
    follower.close().unwrap();
    // What the steps leave on disk is what a crash right after the snapshot left: no
    // record after seq 5 of the old log may be replayed on top of the snapshot.
    let follower = Db::open(b.path(), options(2)).unwrap();
    assert_eq!(follower.digests(), leader.digests());
    assert_eq!(follower.position(0).unwrap().applied_seq, seq);
}

/// The install stopped at each of its durable steps (the k-th fsync of a file or a
/// directory fails), then a power cut: the reopened follower is either its old self, its
/// old self cut back to the shared records, or the leader's snapshot. Never the snapshot
/// with its own divergent records replayed on top, never an unopenable store.
#[test]
fn an_install_cut_short_at_any_durable_step_leaves_a_consistent_store() {
    use std::sync::Arc;
    use tidal::wal::sim_vfs::{SimOp, SimVfs, TornWrite};
    // A clock that stands still: equal writes give equal states in separate stores.
    let sim = |vfs: &SimVfs| Options {
        vfs: Arc::new(vfs.clone()),
        clock: Arc::new(tidal::hlc::ManualClock::new(1_700_000_000_000)),
        ..options(2)
    };
    let a = tempfile::tempdir().unwrap();
    let leader = Db::open(a.path(), options(1)).unwrap();
    write_and_snapshot(&leader, 0, 20);
    let (seq, bytes) = snapshot_bytes(&leader);
    let expected_leader = leader.digests();
    // The follower's possible states: all of its own log, or its first (shared) batch.
    let build = |vfs: &SimVfs, all: bool| {
        let db = Db::open(Path::new("/f"), sim(vfs)).unwrap();
        db.write_batch(signals(7000, 5)).unwrap();
        if all {
            db.write_batch(signals(7005, seq as u32 + 20)).unwrap();
            // Its own snapshot of the divergent records must not outrank the leader's.
            db.snapshot().unwrap();
        }
        db
    };
    let shared = build(&SimVfs::new(), false).digests();
    let whole = build(&SimVfs::new(), true).digests();
    let mut outcomes = [0u32; 3];
    for op in [SimOp::SyncData, SimOp::SyncDir] {
        for k in 0..12 {
            let vfs = SimVfs::new();
            let db = build(&vfs, true);
            vfs.fail_after(op, k);
            let result = db.install_snapshot(0, bytes.clone(), 5);
            let image = vfs.crash_image(TornWrite::RandomPrefixGarbage, k);
            drop(db);
            let reopened = Db::open(Path::new("/f"), sim(&image))
                .unwrap_or_else(|e| panic!("{op:?} #{k} ({result:?}): the store does not open: {e}"));
            let got = reopened.digests();
            let which = [&expected_leader, &whole, &shared].iter().position(|d| **d == got);
            let which = which.unwrap_or_else(|| panic!("{op:?} #{k} ({result:?}): a state no step leaves"));
            outcomes[which] += 1;
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "the sweep reached both sides of the install: {outcomes:?}");
}

/// Replicas of one shard snapshot as often as configured, but at seqs a quarter period apart
/// by node id, so they do not all stop to copy their state at once.
#[test]
fn replicas_snapshot_at_staggered_seqs() {
    let a = tempfile::tempdir().unwrap();
    let leader = Db::open(a.path(), options(1)).unwrap();
    leader.set_role(0, ShardRole::Leader { epoch: 1 }).unwrap();
    for r in 0..30 {
        leader.submit_with(signals(r * 40, 40), AckMode::Leader).unwrap().wait().unwrap();
    }
    let mut firsts = Vec::new();
    for node in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let follower =
            Db::open(dir.path(), Options { snapshot_every_signals: 400, ..options(node) }).unwrap();
        follower.set_role(0, ShardRole::Follower { epoch: 1, leader: Some(1) }).unwrap();
        // One batch of 40 at a time. The first snapshot is never skipped (no earlier job
        // runs), so its seq is the end of the batch that crossed the first boundary.
        let mut first = None;
        for r in 0..30u64 {
            follower.apply_shipped(0, leader.read_batches(0, r * 40 + 1, 1).unwrap()).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
            while first.is_none() && std::time::Instant::now() < deadline {
                first = follower.latest_snapshot(0).unwrap().map(|s| s.seq);
            }
        }
        firsts.push(first.expect("a snapshot"));
    }
    // Phases of 200 (node 2) and 300 (node 3): the first boundaries are at 200 and 100.
    assert_eq!(firsts, [200, 120], "first snapshot seqs of nodes 2 and 3");
}
