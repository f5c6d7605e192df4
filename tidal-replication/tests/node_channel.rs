//! Three real stores replicating one shard through the runtime, over in-process channels:
//! quorum and leader acks, a follower that restarts and catches up, an explicit promotion.

use std::time::{Duration, Instant};

use tidal::shard::role::AckMode;
use tidal::{Db, Error, Options, Signal, SignalKind};
use tidal_replication::node::{NodeConfig, ReplicationNode, ShardPlacement};
use tidal_replication::transport::NodeId;
use tidal_replication::transport::channel::ChannelNet;

const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

struct Member {
    db: Db,
    node: ReplicationNode,
}

fn start(net: &ChannelNet, dir: &std::path::Path, id: NodeId) -> Member {
    let options =
        Options { shards: Some(1), node_id: id.0, created_ms: Some(1_700_000_000_000), ..Options::default() };
    let db = Db::open(dir.join("data"), options).unwrap();
    let placement = ShardPlacement { shard: 0, replicas: NODES.to_vec(), initial_leader: NODES[0] };
    let cfg = NodeConfig {
        retransmit_ms: 50,
        recovery_grace_ms: 500,
        ..NodeConfig::new(id, vec![placement], dir.join("replication"))
    };
    let (transport, inbound) = net.join(id, 1024);
    let node = ReplicationNode::start(db.clone(), cfg, Box::new(transport), inbound).unwrap();
    Member { db, node }
}

fn signals(from: u32, n: u32) -> Vec<Signal> {
    (from..from + n)
        .map(|i| Signal::new(format!("u{}", i % 5), format!("item-{i}"), SignalKind::Like))
        .collect()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes on `leader` until it serves (it recovers first), then returns the acks.
fn write(leader: &Db, signals: Vec<Signal>, ack: AckMode) -> Vec<tidal::Ack> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A shard that does not serve yet refuses at submit (nothing enqueued) or, if its
        // role changes meanwhile, at the writer: either way NotLeader, and nothing written.
        match leader.submit_with(signals.clone(), ack).and_then(|pending| pending.wait()) {
            Ok(acks) => return acks,
            Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

#[test]
fn three_stores_replicate_catch_up_and_fail_over_by_promotion() {
    let dirs: Vec<_> = NODES.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let net = ChannelNet::new();
    let mut members: Vec<Option<Member>> =
        NODES.iter().zip(&dirs).map(|(&id, d)| Some(start(&net, d.path(), id))).collect();
    let db = |m: &Vec<Option<Member>>, i: usize| m[i].as_ref().unwrap().db.clone();

    // Quorum acks: when the write returns, a majority holds it durably.
    let acks = write(&db(&members, 0), signals(0, 50), AckMode::Quorum);
    assert_eq!(acks.len(), 50);
    let last = acks.last().unwrap().seq;
    let on_followers = (1..3).filter(|&i| db(&members, i).position(0).unwrap().applied_seq >= last).count();
    assert!(on_followers >= 1, "a quorum ack means a follower has it");
    for i in 1..3 {
        eventually("followers applied everything", || {
            db(&members, i).position(0).unwrap().applied_seq == last
        });
        assert_eq!(db(&members, i).digests(), db(&members, 0).digests());
    }
    let err = db(&members, 1).write(Signal::new("u", "x", SignalKind::Click)).unwrap_err();
    assert!(matches!(err, Error::NotLeader { leader: Some(1), .. }), "{err}");

    // Node 3 goes away; writes go on with a quorum of two (and in leader mode).
    let gone = members[2].take().unwrap();
    net.cut(NODES[2]);
    gone.node.stop();
    gone.db.close().unwrap();
    write(&db(&members, 0), signals(50, 40), AckMode::Quorum);
    let last = write(&db(&members, 0), signals(90, 10), AckMode::Leader).last().unwrap().seq;
    // It comes back and catches up from the leader's log.
    members[2] = Some(start(&net, dirs[2].path(), NODES[2]));
    eventually("the restarted follower caught up", || {
        db(&members, 2).position(0).unwrap().applied_seq == last
    });
    assert_eq!(db(&members, 2).digests(), db(&members, 0).digests());

    // Explicit failover: node 1 steps down, node 2 leads under a new epoch.
    members[0].as_ref().unwrap().node.demote(0).unwrap();
    members[1].as_ref().unwrap().node.promote(0).unwrap();
    let acks = write(&db(&members, 1), signals(100, 20), AckMode::Quorum);
    assert_eq!(acks.first().unwrap().seq, last + 1, "the new leader continues the seqs");
    let status = members[1].as_ref().unwrap().node.status();
    assert_eq!((status.shards[0].role, status.shards[0].epoch), ("leader", 2));
    for i in [0, 2] {
        let last = acks.last().unwrap().seq;
        eventually("everyone follows the new leader", || {
            db(&members, i).position(0).unwrap().applied_seq == last
        });
        assert_eq!(db(&members, i).digests(), db(&members, 1).digests());
    }
    let err = db(&members, 0).write(Signal::new("u", "y", SignalKind::Click)).unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
}

/// A leader cut off from its followers keeps acknowledging leader-mode writes that nobody
/// else has. Once a follower is promoted and the old leader hears of the new epoch, it
/// steps down and moves those records aside (kept in `divergent/`), then follows.
#[test]
fn a_deposed_leaders_unreplicated_tail_is_set_aside_not_merged() {
    let dirs: Vec<_> = NODES.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let net = ChannelNet::new();
    let members: Vec<Member> = NODES.iter().zip(&dirs).map(|(&id, d)| start(&net, d.path(), id)).collect();
    let common = write(&members[0].db, signals(0, 30), AckMode::Quorum).last().unwrap().seq;
    for m in &members[1..] {
        eventually("followers caught up", || m.db.position(0).unwrap().applied_seq == common);
    }
    net.cut(NODES[0]);
    let lost = write(&members[0].db, signals(30, 7), AckMode::Leader);
    assert_eq!(lost.first().unwrap().seq, common + 1);
    members[1].node.promote(0).unwrap();
    let fresh = write(&members[1].db, signals(100, 12), AckMode::Quorum);
    assert_eq!(fresh.first().unwrap().seq, common + 1, "the new leader reuses the seqs nobody else had");
    net.restore(NODES[0]);
    let last = fresh.last().unwrap().seq;
    eventually("the old leader follows", || members[0].db.position(0).unwrap().applied_seq == last);
    eventually("the digests agree", || members[0].db.digests() == members[1].db.digests());
    assert!(members[0].db.item("item-30").is_none(), "a set-aside signal is not applied");
    assert!(members[0].db.item("item-100").is_some());
    eventually("the status tells of the set-aside", || {
        let status = members[0].node.status();
        (status.shards[0].role, status.shards[0].set_aside_records) == ("follower", 7)
    });
    let divergent = std::fs::read_dir(dirs[0].path().join("data/divergent")).unwrap().count();
    assert_eq!(divergent, 1);
}

/// A peer that ships a batch for a shard this node does not host is told so (its leader
/// counts the refusal by reason and stops shipping there): nothing is applied, and the
/// node goes on serving the shard it does host.
#[test]
fn a_batch_for_a_shard_the_node_does_not_host_is_refused_and_changes_nothing() {
    use tidal_replication::protocol::{Message, Refusal};
    use tidal_replication::transport::Transport;
    let net = ChannelNet::new();
    let dir = tempfile::tempdir().unwrap();
    let member = start(&net, dir.path(), NODES[1]);
    let (mut peer, replies) = net.join(NODES[0], 64);
    let batches = vec![vec![0u8; 64]];
    let append = Message::Append { shard: 9, epoch: 1, prev: Default::default(), batches, commit: 0 };
    peer.send(NODES[1], append.encode()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let (from, bytes) = replies.recv_timeout(deadline - Instant::now()).expect("an answer");
        match Message::decode(&bytes).unwrap() {
            Message::Refused { shard: 9, reason, .. } => break (from, reason),
            _ => continue, // the node's own probes and answers about shard 0
        }
    };
    assert_eq!(refusal, (NODES[1], Refusal::UnknownShard));
    assert_eq!(member.db.position(0).unwrap().applied_seq, 0, "nothing applied");
    let status = member.node.status();
    assert_eq!(status.shards.len(), 1);
    assert!(status.shards[0].failed.is_none() && status.shards[0].role != "failed", "{status:?}");
}
