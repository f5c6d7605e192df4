//! A restart that finds a snapshot install recorded as under way.

use super::*;
use crate::node::ShardPlacement;
use tidal::{Options, Signal, SignalKind};

fn options(node: u32) -> Options {
    Options {
        shards: Some(1),
        node_id: node,
        created_ms: Some(1_700_000_000_000),
        snapshot_every_signals: 0,
        ..Options::default()
    }
}

/// A leader store in `dir` with 40 signals and a snapshot through them: its file and bytes.
fn leader_snapshot(dir: &std::path::Path) -> (tidal::SnapshotFile, Vec<u8>) {
    let leader = Db::open(dir, options(1)).unwrap();
    leader
        .write_batch((0..40).map(|i| Signal::new("u", format!("i{i}"), SignalKind::Like)).collect())
        .unwrap();
    leader.snapshot().unwrap();
    let file = leader.latest_snapshot(0).unwrap().unwrap();
    let bytes = leader.read_snapshot(0, file.seq, 0, file.len as usize).unwrap();
    (file, bytes)
}

/// A leader's snapshot through seq 40, and a follower whose record names its install as
/// pending with the leader's history; `install` says whether the store performed it.
fn open_after(install: bool) -> Vec<(u64, u64)> {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, bytes) = leader_snapshot(a.path());
    let follower = Db::open(b.path(), options(2)).unwrap();
    // Its own log runs past seq 20, where the leader's history has epoch 3 begin.
    follower
        .write_batch((0..45).map(|i| Signal::new("v", format!("own{i}"), SignalKind::Click)).collect())
        .unwrap();
    if install {
        follower.install_snapshot(0, bytes, 0).unwrap();
    }
    let cfg = NodeConfig::new(
        NodeId(2),
        vec![ShardPlacement { shard: 0, replicas: vec![NodeId(1), NodeId(2)], initial_leader: NodeId(1) }],
        b.path().join("replication"),
    );
    let record = EpochRecord {
        epoch: 3,
        leader: Some(1),
        leading: false,
        history: vec![(1, 1)],
        install: Some(PendingInstall { seq: 40, history: vec![(1, 1), (3, 20)] }),
    };
    epoch_file::store(&cfg.state_dir, 0, &record).unwrap();
    let runtime = ShardRuntime::open(&follower, &cfg, &cfg.placements[0], 0).unwrap();
    let stored = epoch_file::load(&cfg.state_dir, 0).unwrap().unwrap();
    assert_eq!(stored.install, None, "the pending install is settled and cleared");
    runtime.status(&follower).history
}

#[test]
fn a_pending_install_the_store_performed_gives_the_leaders_history() {
    assert_eq!(open_after(true), vec![(1, 1), (3, 20)]);
}

#[test]
fn a_pending_install_the_store_never_performed_is_dropped() {
    assert_eq!(open_after(false), vec![(1, 1)]);
}

#[test]
fn a_shipped_snapshot_that_fails_its_checks_is_refused_and_the_replica_goes_on() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (file, mut bytes) = leader_snapshot(a.path());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let follower = Db::open(b.path(), options(2)).unwrap();
    follower.write_batch(vec![Signal::new("v", "own", SignalKind::Click)]).unwrap();
    let cfg = NodeConfig::new(
        NodeId(2),
        vec![ShardPlacement { shard: 0, replicas: vec![NodeId(1), NodeId(2)], initial_leader: NodeId(1) }],
        b.path().join("replication"),
    );
    let mut runtime = ShardRuntime::open(&follower, &cfg, &cfg.placements[0], 0).unwrap();
    let net = crate::transport::channel::ChannelNet::new();
    let (mut transport, _inbox) = net.join(NodeId(2), 16);
    let actions = vec![
        Action::SnapshotBegin { seq: file.seq, len: file.len },
        Action::SnapshotWrite { offset: 0, bytes },
        Action::SnapshotInstall { seq: file.seq, keep_through: 1 },
    ];
    runtime.execute(&follower, &mut transport, actions);
    let status = runtime.status(&follower);
    assert_eq!((status.failed.clone(), status.snapshots_refused, status.end), (None, 1, 1), "{status:?}");
    assert_eq!(epoch_file::load(&cfg.state_dir, 0).unwrap().unwrap().install, None);
    assert!(follower.item("own").is_some(), "the store is as it was");
}
