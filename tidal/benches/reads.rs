//! Read latency over 1 million items: item-state lookup (merged across shards) and top-k
//! (k = 100) by decayed score, p50/p99/max, next to SQLite answering the same questions
//! (primary-key lookup; `ORDER BY score DESC LIMIT 100` on an indexed score column).
//!
//! `cargo bench -p tidal --bench reads` (env `READS_ITEMS` scales the item count).
//! The top-k reads run while a writer keeps ingesting (Tidal) or updating scores (SQLite),
//! as they would in production. A last line times deep pages (k = 100 at offset items / 2),
//! which Tidal answers by ranking every item (its ordered head holds only the best few
//! thousand, see `score/index.rs`) and SQLite by walking its score index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tidal::{Db, Durability, Options, Signal, SignalKind};

const LOOKUPS: usize = 100_000;
const TOP_QUERIES: usize = 2_000;
const K: usize = 100;
const DEEP_PAGES: usize = 20;

type Figures = (f64, f64, f64);

/// `n` timings of `read`.
fn timed(n: usize, mut read: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            read();
            t.elapsed()
        })
        .collect()
}

fn kind(n: u64) -> SignalKind {
    [SignalKind::Click, SignalKind::Like, SignalKind::Dwell, SignalKind::Skip][(n % 4) as usize].clone()
}

fn signal(n: u64, items: u64) -> Signal {
    let mut s = Signal::new(format!("user-{}", n % 50_000), format!("item-{}", n % items), kind(n));
    s.value = if s.kind == SignalKind::Dwell { (n % 300) as f64 } else { 1.0 };
    s
}

/// p50, p99 and max of the samples, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99), at(1.0))
}

fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    *x >> 33
}

fn tidal_reads(items: u64) -> (Figures, Figures, Figures) {
    let scratch =
        tempfile::Builder::new().prefix("reads-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let options = Options { shards: Some(4), durability: Durability::None, ..Options::default() };
    let db = Db::open(scratch.path(), options).expect("open");
    let total = items * 2;
    for start in (0..total).step_by(10_000) {
        db.write_batch((start..(start + 10_000).min(total)).map(|n| signal(n, items)).collect())
            .expect("load");
    }
    let mut x = 7;
    let lookups: Vec<Duration> = (0..LOOKUPS)
        .map(|_| {
            let id = format!("item-{}", lcg(&mut x) % items);
            let t = Instant::now();
            std::hint::black_box(db.item(&id).expect("present"));
            t.elapsed()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = total;
            while !stop.load(Ordering::Relaxed) {
                db.write_batch((n..n + 100).map(|m| signal(m, items)).collect()).expect("write");
                n += 100;
            }
        })
    };
    let tops: Vec<Duration> = (0..TOP_QUERIES)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(db.top_k(K, 0).expect("top"));
            t.elapsed()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let offset = items as usize / 2;
    let deep = timed(DEEP_PAGES, || drop(std::hint::black_box(db.top_k(K, offset).expect("deep page"))));
    (percentiles(lookups), percentiles(tops), percentiles(deep))
}

fn sqlite_reads(items: u64) -> (Figures, Figures, Figures) {
    let scratch =
        tempfile::Builder::new().prefix("reads-sql-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let mut conn = Connection::open(scratch.path().join("reads.sqlite")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE items(item TEXT PRIMARY KEY, clicks INTEGER, likes INTEGER, dwell REAL, skips INTEGER, score REAL);",
    )
    .expect("schema");
    let tx = conn.transaction().expect("tx");
    for i in 0..items {
        let score = (i % 1000) as f64 * 0.37;
        tx.execute("INSERT INTO items VALUES (?1, 1, 1, 30.0, 0, ?2)", params![format!("item-{i}"), score])
            .expect("insert");
    }
    tx.commit().expect("commit");
    conn.execute_batch("CREATE INDEX items_score ON items(score DESC);").expect("index");
    let mut x = 7;
    let mut lookup = conn.prepare("SELECT * FROM items WHERE item = ?1").expect("prepare");
    let lookups: Vec<Duration> = (0..LOOKUPS)
        .map(|_| {
            let id = format!("item-{}", lcg(&mut x) % items);
            let t = Instant::now();
            let row: (String, f64) =
                lookup.query_row(params![id], |r| Ok((r.get(0)?, r.get(5)?))).expect("row");
            std::hint::black_box(row);
            t.elapsed()
        })
        .collect();
    // Like Tidal's, the top-k reads run while a writer keeps updating scores.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (scratch.path().join("reads.sqlite"), stop.clone());
        std::thread::spawn(move || {
            let mut conn = Connection::open(path).expect("writer connection");
            conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA busy_timeout=10000;").expect("pragmas");
            let mut x = 11;
            while !stop.load(Ordering::Relaxed) {
                let tx = conn.transaction().expect("tx");
                for _ in 0..100 {
                    let id = format!("item-{}", lcg(&mut x) % items);
                    tx.execute("UPDATE items SET score = score + 1.0 WHERE item = ?1", params![id])
                        .expect("update");
                }
                tx.commit().expect("commit");
            }
        })
    };
    let mut top =
        conn.prepare("SELECT item, score FROM items ORDER BY score DESC LIMIT ?1").expect("prepare");
    let tops: Vec<Duration> = (0..TOP_QUERIES)
        .map(|_| {
            let t = Instant::now();
            let rows: Vec<(String, f64)> = top
                .query_map(params![K as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            std::hint::black_box(rows);
            t.elapsed()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let deep = sqlite_deep_pages(&conn, items);
    (percentiles(lookups), percentiles(tops), percentiles(deep))
}

/// Deep pages from SQLite's score index (`LIMIT k OFFSET items / 2`).
fn sqlite_deep_pages(conn: &Connection, items: u64) -> Vec<Duration> {
    let mut page = conn
        .prepare("SELECT item, score FROM items ORDER BY score DESC LIMIT ?1 OFFSET ?2")
        .expect("prepare");
    let offset = (items / 2) as i64;
    timed(DEEP_PAGES, || {
        let rows: Vec<(String, f64)> = page
            .query_map(params![K as i64, offset], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        std::hint::black_box(rows);
    })
}

fn main() {
    let items: u64 = std::env::var("READS_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("reads over {items} items (top-k during concurrent writes for both; SQLite: indexed, WAL mode)");
    let ((tl50, tl99, tlmax), (tt50, tt99, ttmax), (td50, _, tdmax)) = tidal_reads(items);
    let ((sl50, sl99, slmax), (st50, st99, stmax), (sd50, _, sdmax)) = sqlite_reads(items);
    println!(
        "item lookup  us: tidal p50 {tl50:>7.1} p99 {tl99:>7.1} max {tlmax:>8.0} | sqlite p50 {sl50:>7.1} p99 {sl99:>7.1} max {slmax:>8.0} | p99 ratio {:.2}x",
        sl99 / tl99
    );
    println!(
        "top-{K}      us: tidal p50 {tt50:>7.1} p99 {tt99:>7.1} max {ttmax:>8.0} | sqlite p50 {st50:>7.1} p99 {st99:>7.1} max {stmax:>8.0} | p99 ratio {:.2}x",
        st99 / tt99
    );
    println!(
        "deep page ms (k {K}, offset {}): tidal p50 {:>7.1} max {:>7.1} | sqlite p50 {:>7.1} max {:>7.1} | p50 ratio {:.2}x",
        items / 2,
        td50 / 1e3,
        tdmax / 1e3,
        sd50 / 1e3,
        sdmax / 1e3,
        sd50 / td50
    );
    println!("target: p99 <= 2000 us for both reads");
}
