//! `tidal bench cluster`: replication measured over real processes, each figure next to its
//! baseline in the same run.
//!
//! Starts a single `tidal serve` (the baseline), then a 3-node cluster of `tidal serve
//! --node N --cluster FILE` processes on loopback (replication over TCP with the HMAC
//! handshake, fsync durability, scratch directories), and measures:
//!
//! 1. **Lag**: one client offers `--rate` signals/s in batches of `--batch` to the shard's
//!    leader (`ack=leader`). For every batch, one reader per follower asks that follower for
//!    an item of the batch with the ack's `min_seq` token (`GET /v1/items/..?min_seq=`, which
//!    waits until the follower has applied the batch): the lag of a batch is the time from
//!    the leader's ack to the answer of the slower follower, so it includes one HTTP read.
//!    The leader's `/v1/cluster/status` is sampled every 100 ms for the lag in records.
//! 2. **Throughput**: `--clients` clients post batches as fast as the server answers, to the
//!    single node, then to the cluster's leader with `ack=leader` and with `ack=quorum`.
//!
//! One shard (every signal goes to one leader), so the single node and the cluster do the
//! same work per signal. Read the ratios: the machine is shared, and on 2 cores the three
//! nodes, the clients and the readers compete for the same CPUs.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tidal_replication::cluster::ClusterConfig;

use crate::bench_cmd::{Measured, measure, post_signals, read_answer, start_tidal, tempfile_dir};
use crate::cluster_cmd::{cluster_file, spawn_nodes, stop_children, wait_ready};

#[derive(Args)]
pub struct ClusterArgs {
    /// Signals per second offered in the lag run.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Seconds of the lag run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Signals per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent clients in the throughput runs.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    throughput_seconds: u64,
}

pub fn run(args: &ClusterArgs) -> Result<()> {
    if args.batch == 0 || args.rate == 0 {
        bail!("--batch and --rate must be positive");
    }
    let scratch = tempfile_dir("tidal-bench-cluster")?;
    let single = {
        let (_server, addr) = start_tidal(&scratch.join("single"), "fsync", 1)?;
        throughput(args, &addr, "")?
    };
    let path = cluster_file(3, &scratch.join("cluster"), 1)?;
    let cluster = ClusterConfig::load(&path)?;
    let mut children = spawn_nodes(&cluster, &path, &scratch.join("cluster"))?;
    let measured = wait_ready(&cluster).and_then(|()| measure_cluster(args, &cluster));
    stop_children(&mut children);
    let (lag, leader, quorum) = measured?;
    println!("{lag}");
    println!("throughput, {} clients, batches of {}:", args.clients, args.batch);
    println!("  single node         {single}");
    println!("  cluster, leader ack {leader}   {:.2}x single", leader.rate / single.rate);
    println!("  cluster, quorum ack {quorum}   {:.2}x single (target >= 0.50x)", quorum.rate / single.rate);
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}

fn throughput(args: &ClusterArgs, addr: &str, query: &str) -> Result<Measured> {
    let batch = args.batch;
    measure(args.clients, args.throughput_seconds, |n| post_signals(addr, query, n, batch).map(drop), batch)
}

fn measure_cluster(args: &ClusterArgs, cluster: &ClusterConfig) -> Result<(String, Measured, Measured)> {
    let (leader, followers) = find_leader(cluster)?;
    // Past the leader's recovery: the first write is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while post_signals(&leader, "?ack=quorum", u64::MAX - 10_000, 1).is_err() {
        if Instant::now() > deadline {
            bail!("the leader at {leader} never served");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = lag(args, &leader, &followers)?;
    let leader_ack = throughput(args, &leader, "?ack=leader")?;
    let quorum_ack = throughput(args, &leader, "?ack=quorum")?;
    Ok((lag, leader_ack, quorum_ack))
}

/// The API address of shard 0's leader, and those of the other nodes.
fn find_leader(cluster: &ClusterConfig) -> Result<(String, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in &cluster.file.nodes {
            let url = format!("http://{}/v1/cluster/status", node.api);
            let Ok(mut answer) = ureq::get(&url).call() else { continue };
            let status: serde_json::Value = answer.body_mut().read_json()?;
            let leads = status["shards"].as_array().into_iter().flatten().any(|s| s["role"] == "leader");
            if leads {
                let others = cluster.file.nodes.iter().filter(|n| n.id != node.id);
                return Ok((node.api.to_string(), others.map(|n| n.api.to_string()).collect()));
            }
        }
        if Instant::now() > deadline {
            bail!("no node leads shard 0 after 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lag run (see the module docs); returns its report line.
fn lag(args: &ClusterArgs, leader: &str, followers: &[String]) -> Result<String> {
    let per_batch = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let run_for = Duration::from_secs(args.seconds);
    let (stop_tx, stop_rx) = channel::<()>();
    let sampler = {
        let leader = leader.to_owned();
        std::thread::spawn(move || sample_lag_records(&leader, &stop_rx))
    };
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for follower in followers {
        let (tx, rx) = channel::<Acked>();
        let follower = follower.clone();
        senders.push(tx);
        readers.push(std::thread::spawn(move || read_through(&follower, &rx)));
    }
    // Batches are due on a fixed schedule and posted by two clients, so one slow answer
    // does not hold back the next batch (a client posts at most one at a time).
    let (due_tx, due_rx) = channel::<u64>();
    let due_rx = std::sync::Mutex::new(due_rx);
    let started = Instant::now();
    let (n, late) = std::thread::scope(|scope| -> Result<(u64, u64)> {
        let posters: Vec<_> =
            (0..POSTERS).map(|_| scope.spawn(|| post_due(args.batch, leader, &due_rx, &senders))).collect();
        let (mut n, mut late) = (0u64, 0u64);
        while started.elapsed() < run_for {
            let due = started + per_batch * n as u32;
            match due.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None if due.elapsed() > per_batch * 4 => late += 1,
                None => {}
            }
            due_tx.send(n)?;
            n += 1;
        }
        drop(due_tx);
        for poster in posters {
            poster.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        }
        Ok((n, late))
    })?;
    let achieved = (n * args.batch as u64) as f64 / started.elapsed().as_secs_f64();
    drop(senders);
    let mut slowest = std::collections::BTreeMap::<u64, f64>::new();
    for reader in readers {
        for (batch, ms) in reader.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?? {
            let worst = slowest.entry(batch).or_insert(0.0);
            *worst = worst.max(ms);
        }
    }
    let _ = stop_tx.send(());
    let records = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))??;
    let lags: Vec<f64> = slowest.into_values().collect();
    Ok(lag_report(args.rate, achieved, late, lags, records))
}

/// The lag run's report line: per-batch lag (ms) and sampled lag in records, p50 and p99.
fn lag_report(rate: u64, achieved: f64, late: u64, mut lags: Vec<f64>, records: Vec<u64>) -> String {
    lags.sort_by(f64::total_cmp);
    let mut records: Vec<f64> = records.into_iter().map(|r| r as f64).collect();
    records.sort_by(f64::total_cmp);
    let pct =
        |v: &[f64], q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    format!(
        "lag at {rate} signals/s offered ({achieved:.0}/s achieved, {late} batches late), 2 followers, 3 processes: \
         leader ack to visible on both followers p50 {:.2} ms, p99 {:.2} ms (target p99 <= 5 ms); \
         lag in records p50 {:.0}, p99 {:.0} ({} batches, {} samples)",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        pct(&records, 0.5),
        pct(&records, 0.99),
        lags.len(),
        records.len()
    )
}

/// Clients posting in the lag run.
const POSTERS: usize = 2;

/// One acknowledged batch: its number, its token, one of its items, when the ack came.
type Acked = (u64, String, String, Instant);

/// Posts every batch number taken from `due` to the leader; hands each ack to the readers.
fn post_due(
    batch: usize,
    leader: &str,
    due: &std::sync::Mutex<Receiver<u64>>,
    readers: &[std::sync::mpsc::Sender<Acked>],
) -> Result<()> {
    loop {
        let next = due.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(n) = next else { return Ok(()) };
        let first = 1_000_000_000 + n * batch as u64;
        let token = post_signals(leader, "?ack=leader", first, batch)?;
        let acked = Instant::now();
        let item = format!("item-{}", first % 100_003);
        for tx in readers {
            let _ = tx.send((n, token.clone(), item.clone(), acked));
        }
    }
}

/// For each acknowledged batch: a read on `follower` that waits for its token; the batch
/// number and the time from the ack to the answer, in ms.
fn read_through(follower: &str, rx: &Receiver<Acked>) -> Result<Vec<(u64, f64)>> {
    let stream = TcpStream::connect(follower).with_context(|| format!("connecting to {follower}"))?;
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    let mut lags = Vec::new();
    for (batch, token, item, acked) in rx {
        let token = tidal_client::client::encode_component(&token);
        let request = format!(
            "GET /v1/items/{item}?min_seq={token}&wait_ms=30000 HTTP/1.1\r\nHost: {follower}\r\n\r\n"
        );
        conn.get_mut().write_all(request.as_bytes())?;
        let (status, body) = read_answer(&mut conn)?;
        if status != 200 {
            bail!("follower {follower} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        lags.push((batch, acked.elapsed().as_secs_f64() * 1e3));
    }
    Ok(lags)
}

/// The followers' lag in records as the leader reports it, every 100 ms until `stop`.
fn sample_lag_records(leader: &str, stop: &Receiver<()>) -> Result<Vec<u64>> {
    let url = format!("http://{leader}/v1/cluster/status");
    let mut samples = Vec::new();
    while stop.recv_timeout(Duration::from_millis(100)).is_err() {
        let status: serde_json::Value = ureq::get(&url).call()?.body_mut().read_json()?;
        for shard in status["shards"].as_array().into_iter().flatten() {
            for f in shard["followers"].as_array().into_iter().flatten() {
                samples.extend(f["lag_records"].as_u64());
            }
        }
    }
    Ok(samples)
}
