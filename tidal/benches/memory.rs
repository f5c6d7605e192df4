//! Memory: resident bytes per million signals, per million items and per million user
//! sessions.
//!
//! `cargo bench -p tidal --bench memory` (env `MEMORY_COUNT` scales every scenario, default
//! 1 000 000; the figures are always per million).
//!
//! Each scenario runs in its own child process (this bench re-executes itself with
//! `--scenario NAME`), so memory one scenario freed cannot hide another one's growth. The
//! child opens an empty store (4 shards, `Durability::None`, no snapshots, under the cargo
//! target tmpdir), reads VmRSS, writes its workload with `write_batch` of 10 000, reads VmRSS
//! again, and prints `RESULT <scenario> <bytes_per_million>` (the RSS growth per million)
//! and `RAW <scenario> <bytes_per_million>` (the raw data it stands for). The parent prints
//! the table.
//!
//! - signals: 1M signals over a fixed population (1 000 items, 1 000 users, one session
//!   each, SeqNos): the state must not grow with the signal count (history and ack rings are
//!   bounded). No idempotency keys (those are kept up to a count bound by design) and no
//!   negative kinds (hard negatives grow with distinct user x item pairs, not with signals).
//! - items: 1M distinct items, one click each, from 1 000 users.
//! - sessions: 1M distinct users with one session each (SeqNo 1), one click each, over 1 000
//!   items.
//!
//! RSS growth includes what the allocator keeps of transient buffers (batches, WAL encoding,
//! hash table growth), as a real process would.

mod common;

use common::proc_status_kb;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tidal::{Db, Durability, Options, Signal, SignalKind};

const BATCH: u64 = 10_000;
const SCENARIOS: [&str; 3] = ["signals", "items", "sessions"];
const FIXED_POPULATION: u64 = 1_000;

fn rss_bytes() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn user_id(n: u64) -> String {
    format!("user-{n:07}")
}

fn item_id(n: u64) -> String {
    format!("item-{n:07}")
}

fn session_id(user: u64) -> String {
    format!("{:016x}", user.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Signal `n` of a scenario. `seqs` numbers the fixed population's sessions.
fn signal(scenario: &str, n: u64, seqs: &mut [u64]) -> Signal {
    match scenario {
        "signals" => {
            let user = n % FIXED_POPULATION;
            let item = (n / FIXED_POPULATION + n * 7) % FIXED_POPULATION;
            let kinds = [SignalKind::Impression, SignalKind::Click, SignalKind::Like, SignalKind::Dwell];
            let mut s = Signal::new(user_id(user), item_id(item), kinds[(n % 4) as usize].clone());
            s.value = (n % 30) as f64;
            s.session = Some(session_id(user));
            seqs[user as usize] += 1;
            s.session_seq = Some(seqs[user as usize]);
            s
        }
        "items" => Signal::new(user_id(n % FIXED_POPULATION), item_id(n), SignalKind::Click),
        "sessions" => {
            let mut s = Signal::new(user_id(n), item_id(n % FIXED_POPULATION), SignalKind::Click);
            s.session = Some(session_id(n));
            s.session_seq = Some(1);
            s
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Bytes of the raw data a scenario's state stands for, and what they are.
fn raw_bytes(scenario: &str, count: u64, wal_bytes: u64) -> (u64, &'static str) {
    let ids = |f: fn(u64) -> String| (0..count).map(|n| f(n).len() as u64).sum::<u64>();
    match scenario {
        "signals" => (wal_bytes, "the signals as encoded in the WAL"),
        "items" => (ids(item_id), "item-id bytes"),
        _ => (ids(user_id) + ids(session_id), "user-id + session-id bytes"),
    }
}

fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn per_million(bytes: i64, count: u64) -> i64 {
    (bytes as f64 * 1e6 / count as f64).round() as i64
}

/// The child: one scenario, measured in a fresh process.
fn child(scenario: &str, count: u64) {
    let scratch =
        tempfile::Builder::new().prefix("memory-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch");
    let options = Options {
        shards: Some(4),
        durability: Durability::None,
        snapshot_every_signals: 0,
        ..Options::default()
    };
    let db = Db::open(scratch.path(), options).expect("open");
    let mut seqs = vec![0u64; FIXED_POPULATION as usize];
    let before = rss_bytes();
    let (mut half, started) = (before, Instant::now());
    let mut n = 0;
    while n < count {
        let end = (n + BATCH).min(count);
        db.write_batch((n..end).map(|i| signal(scenario, i, &mut seqs)).collect()).expect("write");
        n = end;
        if n == count / 2 {
            half = rss_bytes();
        }
    }
    let after = rss_bytes();
    let stats = db.stats();
    let sum = |f: fn(&tidal::query::ShardStats) -> usize| stats.iter().map(f).sum::<usize>();
    println!(
        "NOTE {scenario}: {count} signals in {:.1} s; state: {} item entries (per shard), {} users, {} sessions; RSS {:.1} MB -> {:.1} MB",
        started.elapsed().as_secs_f64(),
        sum(|s| s.items),
        sum(|s| s.users),
        sum(|s| s.sessions),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    if scenario == "signals" {
        let second = per_million(after as i64 - half as i64, count - count / 2);
        println!("NOTE signals: growth over the second half alone: {second} bytes per million signals");
    }
    let (raw, _) = raw_bytes(scenario, count, wal_bytes(scratch.path()));
    println!("RESULT {scenario} {}", per_million(after as i64 - before as i64, count));
    println!("RAW {scenario} {}", per_million(raw as i64, count));
    db.close().expect("close");
}

/// Runs one scenario in a child process; returns (RSS bytes, raw bytes) per million.
fn run_child(scenario: &str) -> (i64, i64) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe).args(["--scenario", scenario]).output().expect("run child");
    assert!(out.status.success(), "{scenario} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |tag: &str| -> i64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.strip_prefix(scenario)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {tag} line from {scenario}: {stdout}"))
    };
    for note in stdout.lines().filter_map(|l| l.strip_prefix("NOTE ")) {
        println!("  {note}");
    }
    (field("RESULT"), field("RAW"))
}

fn includes(scenario: &str) -> &'static str {
    match scenario {
        "signals" => "per 1M signals over a fixed population: bounded history/ack rings, allocator slack",
        "items" => "per 1M items: interned id (inline), CRDT state, id-map overhead, score-index entry",
        _ => "per 1M users with one session: user entry, history ring, session state + acks, ids",
    }
}

fn main() {
    let count: u64 = std::env::var("MEMORY_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        child(args.get(i + 1).expect("--scenario NAME"), count);
        return;
    }
    println!("memory benchmark: {count} signals per scenario, 4 shards, each scenario in its own process");
    let results: Vec<(&str, (i64, i64))> = SCENARIOS.iter().map(|s| (*s, run_child(s))).collect();
    println!(
        "{:<9} {:>14} {:>8} {:>14} {:>8}  what",
        "scenario", "RSS B/million", "B each", "raw B/million", "ratio"
    );
    for (scenario, (rss, raw)) in results {
        let (_, what) = raw_bytes(scenario, 0, 0);
        println!(
            "{scenario:<9} {rss:>14} {:>8.0} {raw:>14} {:>7.1}x  {} (raw = {what})",
            rss as f64 / 1e6,
            rss as f64 / raw as f64,
            includes(scenario)
        );
    }
}
