//! Replication figures, each next to its baseline in the same run:
//!
//! 1. **Lag** at a steady offered rate (env `REPL_RATE`, default 100,000 signals/s) with two
//!    followers: per leader batch, the time from the leader's ack (leader mode: its fsync)
//!    to the batch being applied on each follower, p50/p99, and the lag in records sampled.
//! 2. **Throughput** of batched ingest (batches of 1000, `REPL_SIGNALS`, default 400,000):
//!    a single standalone node, then the cluster in leader mode and in quorum mode.
//! 3. **Catch-up**: a follower stopped while the leader takes `REPL_CATCHUP` signals
//!    (default 1,000,000) restarts and catches up; its rate next to the leader's local
//!    replay of the same log (reopening the store).
//!
//! Environment: `REPL_LAG_ONLY=1` stops after the lag run, `REPL_LAG_SECS` (default 5) sets
//! its length, `REPL_LAG_TRACE=1` prints each batch's lag to stderr (where a tail comes
//! from), `REPL_SNAPSHOT_EVERY` sets `snapshot_every_signals` (default the store's, 1M: a
//! lag run over 10 s crosses one snapshot on every replica).
//!
//! `cargo bench -p tidal-replication --bench replication`. Three stores in one process,
//! each with its own data directory, fsync on, replicating over real TCP on loopback
//! (`TcpTransport`, HMAC handshake). Read the ratios: the machine is shared and noisy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tidal::shard::role::AckMode;
use tidal::{Db, Options, Signal, SignalKind};
use tidal_replication::node::{NodeConfig, ReplicationNode, ShardPlacement};
use tidal_replication::transport::NodeId;
use tidal_replication::transport::tcp::{TcpConfig, TcpTransport};

const BATCH: usize = 1000;
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn signal(n: u64) -> Signal {
    let mut s =
        Signal::new(format!("user-{}", n % 10_007), format!("item-{}", n % 100_003), SignalKind::Click);
    s.value = (n % 7) as f64;
    s
}

fn batches(from: u64, total: u64) -> Vec<Vec<Signal>> {
    (from..from + total).step_by(BATCH).map(|n| (n..n + BATCH as u64).map(signal).collect()).collect()
}

fn options(node: u32) -> Options {
    let snapshot_every_signals = env("REPL_SNAPSHOT_EVERY", tidal::options::SNAPSHOT_EVERY_SIGNALS_DEFAULT);
    Options {
        shards: Some(1),
        node_id: node,
        created_ms: Some(1_764_633_600_000),
        snapshot_every_signals,
        ..Options::default()
    }
}

struct Member {
    db: Db,
    node: Option<ReplicationNode>,
}

fn ports() -> Vec<std::net::SocketAddr> {
    NODES.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect()
}

fn start(dir: &Path, id: NodeId, addrs: &[std::net::SocketAddr]) -> Member {
    let db = Db::open(dir.join(format!("node-{}", id.0)), options(id.0)).expect("open");
    let peers: BTreeMap<NodeId, _> =
        NODES.iter().zip(addrs).filter(|(n, _)| **n != id).map(|(n, a)| (*n, *a)).collect();
    let me = addrs[NODES.iter().position(|n| *n == id).unwrap()];
    let (transport, inbound) =
        TcpTransport::start(TcpConfig::new(id, me, peers, "bench", b"bench-secret-0123456789".to_vec()))
            .unwrap();
    let placement = ShardPlacement { shard: 0, replicas: NODES.to_vec(), initial_leader: NODES[0] };
    let cfg = NodeConfig::new(id, vec![placement], dir.join(format!("replication-{}", id.0)));
    let node = ReplicationNode::start(db.clone(), cfg, Box::new(transport), inbound).unwrap();
    Member { db, node: Some(node) }
}

fn wait_serving(leader: &Db) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader.submit_with(vec![signal(u64::MAX - 1)], AckMode::Leader).and_then(|p| p.wait()).is_err() {
        assert!(Instant::now() < deadline, "the leader never served");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn applied(db: &Db) -> u64 {
    db.position(0).unwrap().applied_seq
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rate = env("REPL_RATE", 100_000);
    let only_lag = std::env::var_os("REPL_LAG_ONLY").is_some();
    let total = env("REPL_SIGNALS", 400_000);
    let catch_up = env("REPL_CATCHUP", 1_000_000);
    println!(
        "replication bench: rate {rate}/s, throughput runs {total} signals, catch-up {catch_up} signals"
    );
    let single = single_node(total);
    let dir = tempfile::tempdir().unwrap();
    let addrs = ports();
    let mut members: Vec<Member> = NODES.iter().map(|&id| start(dir.path(), id, &addrs)).collect();
    wait_serving(&members[0].db);
    latency(&members[0].db);
    lag(&members, rate);
    if only_lag {
        return;
    }
    settle(&members);
    let quorum_mode = throughput(&members[0].db, total, AckMode::Quorum, 20_000_000);
    settle(&members);
    let leader_mode = throughput(&members[0].db, total, AckMode::Leader, 10_000_000);
    settle(&members);
    println!(
        "throughput: single node {single:.0}/s; cluster leader-ack {leader_mode:.0}/s ({:.2}x single); quorum-ack {quorum_mode:.0}/s ({:.2}x single; target >= 0.50x)",
        leader_mode / single,
        quorum_mode / single
    );
    catch_up_run(dir.path(), &addrs, &mut members, catch_up);
}

/// Waits until every follower applied the leader's log (no backlog carries into a run).
fn settle(members: &[Member]) {
    let target = applied(&members[0].db);
    while members.iter().any(|m| applied(&m.db) < target) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn single_node(total: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options(1)).unwrap();
    let work = batches(0, total);
    let started = Instant::now();
    for b in work {
        db.write_batch(b).unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Batched ingest with up to 4 batches in flight (pipelined, as an ingest server would).
fn throughput(leader: &Db, total: u64, ack: AckMode, from: u64) -> f64 {
    let work = batches(from, total);
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for b in work {
        pending.push_back(leader.submit_with(b, ack).unwrap());
        if pending.len() >= 4 {
            pending.pop_front().unwrap().wait().unwrap();
        }
    }
    for p in pending {
        p.wait().unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// One write at a time: the latency of a leader ack (its fsync) and of a quorum ack (its
/// fsync, shipping, a follower's fsync and apply, the ack back).
fn latency(leader: &Db) {
    for (size, ack) in [
        (1, AckMode::Leader),
        (1, AckMode::Quorum),
        (BATCH as u64, AckMode::Leader),
        (BATCH as u64, AckMode::Quorum),
    ] {
        let mut times: Vec<f64> = (0..100u64)
            .map(|i| {
                let work = batches(50_000_000 + i * size, size).remove(0);
                let started = Instant::now();
                leader.submit_with(work[..size as usize].to_vec(), ack).unwrap().wait().unwrap();
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "one write of {size} signal(s) at a time, {ack:?} ack: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

/// Offers `rate` signals/s for a few seconds; measures follower apply lag per batch.
fn lag(members: &[Member], rate: u64) {
    let run_for = Duration::from_secs(env("REPL_LAG_SECS", 5));
    let per_batch = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let leader = &members[0].db;
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let followers: Vec<Db> = members[1..].iter().map(|m| m.db.clone()).collect();
    let watcher = std::thread::spawn(move || watch(followers, rx));
    let started = Instant::now();
    let mut n = 0u64;
    let mut behind = 0u32;
    let mut lag_records = Vec::new();
    while started.elapsed() < run_for {
        let due = started + per_batch * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else if Instant::now() - due > per_batch * 4 {
            behind += 1;
        }
        let acks = leader
            .submit_with(batches(1_000_000 + n * BATCH as u64, BATCH as u64).remove(0), AckMode::Leader)
            .unwrap()
            .wait()
            .unwrap();
        let last = acks.last().unwrap().seq;
        let _ = tx.send((last, Instant::now()));
        if n.is_multiple_of(10) {
            let lead = applied(leader);
            lag_records.extend(members[1..].iter().map(|m| lead.saturating_sub(applied(&m.db)) as f64));
        }
        n += 1;
    }
    drop(tx);
    let mut lags = watcher.join().unwrap();
    let offered = n * BATCH as u64;
    let achieved = offered as f64 / started.elapsed().as_secs_f64();
    lags.sort_by(f64::total_cmp);
    lag_records.sort_by(f64::total_cmp);
    println!(
        "lag at {rate}/s offered ({achieved:.0}/s achieved, {behind} batches late): apply lag per batch p50 {:.2} ms, p99 {:.2} ms (target p99 <= 5 ms); lag in records p50 {:.0}, p99 {:.0} ({} samples)",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&lag_records, 0.5),
        percentile(&lag_records, 0.99),
        lags.len()
    );
}

/// Polls the followers' applied seqs; for each acked batch, the time until both have it.
fn watch(followers: Vec<Db>, rx: std::sync::mpsc::Receiver<(u64, Instant)>) -> Vec<f64> {
    let mut waiting: std::collections::VecDeque<(u64, Instant, usize)> = Default::default();
    let mut lags = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        loop {
            match rx.try_recv() {
                Ok((seq, at)) => waiting.push_back((seq, at, 0)),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        let seqs: Vec<u64> = followers.iter().map(applied).collect();
        while let Some(&(seq, at, _)) = waiting.front() {
            if seqs.iter().all(|s| *s >= seq) {
                lags.push(now.duration_since(at).as_secs_f64() * 1000.0);
                if std::env::var_os("REPL_LAG_TRACE").is_some() {
                    eprintln!("trace seq {seq} lag {:.2} ms", lags.last().unwrap());
                }
                waiting.pop_front();
            } else {
                break;
            }
        }
        if waiting.front().is_some_and(|(_, at, _)| now.duration_since(*at) > Duration::from_secs(30)) {
            panic!("a follower stopped applying");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    lags
}

/// Stops follower 3, writes `total` signals, restarts it: its catch-up rate, then the
/// leader's own replay rate of the same log (reopening the store).
fn catch_up_run(dir: &Path, addrs: &[std::net::SocketAddr], members: &mut [Member], total: u64) {
    let placeholder = Member { db: members[0].db.clone(), node: None };
    let Member { db, node } = std::mem::replace(&mut members[2], placeholder);
    node.unwrap().stop();
    db.close().unwrap();
    let from = applied(&members[0].db);
    let leader_rate = throughput(&members[0].db, total, AckMode::Quorum, 40_000_000);
    println!("catch-up: wrote {total} signals (quorum of two) at {leader_rate:.0}/s while node 3 was down");
    let target = applied(&members[0].db);
    let started = Instant::now();
    members[2] = start(dir, NODES[2], addrs);
    while applied(&members[2].db) < target {
        std::thread::sleep(Duration::from_millis(5));
        assert!(started.elapsed() < Duration::from_secs(600), "catch-up stalled");
    }
    let secs = started.elapsed().as_secs_f64();
    let caught = target - from;
    let rate = caught as f64 / secs;
    // The local replay of the same records: reopen the caught-up follower without snapshots.
    let placeholder = Member { db: members[0].db.clone(), node: None };
    let Member { db, node } = std::mem::replace(&mut members[2], placeholder);
    node.unwrap().stop();
    db.close().unwrap();
    let replay_started = Instant::now();
    let reopened = Db::open(dir.join("node-3"), options(3)).unwrap();
    let replayed = reopened.recovery_report().records_replayed();
    let replay_rate = replayed as f64 / replay_started.elapsed().as_secs_f64();
    println!(
        "catch-up: {caught} records in {secs:.2} s = {rate:.0} records/s over TCP (fetch, fsync, apply); local replay {replayed} records at {replay_rate:.0}/s; ratio {:.2}",
        rate / replay_rate
    );
}
