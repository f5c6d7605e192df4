//! Embedded ingest, fsync mode, against SQLite doing the same work in the same run.
//!
//! `cargo bench -p tidal --bench ingest` (env `INGEST_SIGNALS` scales the batched runs).
//!
//! The work per signal, for both: make the signal durable, and update its item's aggregate
//! (count per kind, value sum). SQLite runs in WAL mode with `synchronous=FULL` (every commit
//! fsyncs), inserting the signal row and upserting the aggregate row in one transaction per
//! batch. Two shapes: batches of 1000 from one caller, and 64 concurrent single-signal
//! writers (Tidal's group commit vs. SQLite's one-writer lock). Ratios are what to read: the
//! machine is shared and noisy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tidal::{Db, Options, Signal, SignalKind};

const BATCH: usize = 1000;
const WRITERS: usize = 64;
const CONCURRENT_FOR: Duration = Duration::from_secs(4);

/// Shards of the Tidal store (env `INGEST_SHARDS`, default 4).
fn shards() -> u32 {
    std::env::var("INGEST_SHARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4)
}

fn signal(n: u64) -> Signal {
    let mut s =
        Signal::new(format!("user-{}", n % 10_007), format!("item-{}", n % 100_003), SignalKind::Click);
    s.value = (n % 7) as f64;
    s.session = Some(format!("sess-{}", n % 10_007));
    s
}

/// The signals of a batched run, built before the clock starts (client work, not the store's).
fn make_batches(total: u64) -> Vec<Vec<Signal>> {
    (0..total).step_by(BATCH).map(|n| (n..n + BATCH as u64).map(signal).collect()).collect()
}

/// One caller writing batches; `in_flight` batches are submitted before the oldest is
/// awaited (1 = wait for each batch; 2 = build the next batch while one commits).
fn tidal_batched(dir: &Path, total: u64, in_flight: usize) -> f64 {
    let db = Db::open(dir, Options { shards: Some(shards()), ..Options::default() }).expect("open");
    let batches = make_batches(total);
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0;
    for batch in batches {
        if pending.len() == in_flight {
            let oldest: tidal::PendingWrite = pending.pop_front().expect("in flight");
            oldest.wait().expect("write");
        }
        n += batch.len();
        pending.push_back(db.submit(batch).expect("submit"));
    }
    for p in pending {
        p.wait().expect("write");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    db.close().expect("close");
    rate
}

fn tidal_concurrent(dir: &Path) -> f64 {
    let db = Db::open(dir, Options { shards: Some(shards()), ..Options::default() }).expect("open");
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..WRITERS as u64 {
            let (db, count) = (db.clone(), count.clone());
            scope.spawn(move || {
                let mut n = w;
                while started.elapsed() < CONCURRENT_FOR {
                    db.write(signal(n)).expect("write");
                    count.fetch_add(1, Ordering::Relaxed);
                    n += WRITERS as u64;
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn sqlite_open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("sqlite open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;
         CREATE TABLE IF NOT EXISTS signals(id INTEGER PRIMARY KEY, user TEXT, session TEXT, item TEXT,
             kind TEXT, value REAL, hlc INTEGER);
         CREATE TABLE IF NOT EXISTS items(item TEXT, kind TEXT, count INTEGER, value_sum REAL,
             PRIMARY KEY(item, kind));",
    )
    .expect("sqlite schema");
    conn
}

fn sqlite_write(tx: &rusqlite::Transaction<'_>, s: &Signal, hlc: i64) {
    tx.prepare_cached(
        "INSERT INTO signals(user, session, item, kind, value, hlc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| st.execute(params![s.user, s.session, s.item, s.kind.as_str(), s.value, hlc]))
    .expect("insert");
    tx.prepare_cached(
        "INSERT INTO items(item, kind, count, value_sum) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT(item, kind) DO UPDATE SET count = count + 1, value_sum = value_sum + excluded.value_sum",
    )
    .and_then(|mut st| st.execute(params![s.item, s.kind.as_str(), s.value]))
    .expect("upsert");
}

fn sqlite_batched(dir: &Path, total: u64) -> f64 {
    let mut conn = sqlite_open(&dir.join("bench.sqlite"));
    let batches = make_batches(total);
    let started = Instant::now();
    let mut n = 0;
    for batch in &batches {
        let tx = conn.transaction().expect("tx");
        for s in batch {
            sqlite_write(&tx, s, n as i64);
            n += 1;
        }
        tx.commit().expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn sqlite_concurrent(dir: &Path) -> f64 {
    let path = dir.join("bench-concurrent.sqlite");
    drop(sqlite_open(&path));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..WRITERS as u64 {
            let (path, count) = (path.clone(), count.clone());
            scope.spawn(move || {
                let mut conn = sqlite_open(&path);
                let mut n = w;
                while started.elapsed() < CONCURRENT_FOR {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("tx");
                    sqlite_write(&tx, &signal(n), n as i64);
                    tx.commit().expect("commit");
                    count.fetch_add(1, Ordering::Relaxed);
                    n += WRITERS as u64;
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ingest-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir")
}

fn main() {
    let total: u64 = std::env::var("INGEST_SIGNALS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let total = total.div_ceil(BATCH as u64) * BATCH as u64;
    let sqlite_total = (total / 10).max(BATCH as u64);
    // INGEST_PHASES=batched,concurrent (default both) lets a profiler look at one shape.
    let phases = std::env::var("INGEST_PHASES").unwrap_or_else(|_| "batched,concurrent".into());
    println!("ingest benchmark: fsync durability, {} shards; SQLite WAL mode, synchronous=FULL", shards());
    if phases.contains("batched") {
        let sqlite_b = sqlite_batched(scratch().path(), sqlite_total);
        for in_flight in [1, 2] {
            let tidal_b = tidal_batched(scratch().path(), total, in_flight);
            println!(
                "batches of {BATCH}, {in_flight} in flight: tidal {tidal_b:>10.0} signals/s   sqlite {sqlite_b:>10.0} signals/s   ratio {:>6.1}x",
                tidal_b / sqlite_b
            );
        }
    }
    if phases.contains("concurrent") {
        let tidal_c = tidal_concurrent(scratch().path());
        let sqlite_c = sqlite_concurrent(scratch().path());
        println!(
            "{WRITERS} single-signal writers: tidal {tidal_c:>10.0} signals/s   sqlite {sqlite_c:>10.0} signals/s   ratio {:>6.1}x",
            tidal_c / sqlite_c
        );
    }
}
