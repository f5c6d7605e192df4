//! Write latency while a snapshot is written, next to the same load without one.
//!
//! `cargo bench -p tidal --bench snapshot_stall` (env `STALL_ITEMS` sets the store's size,
//! default 1 000 000 items).
//!
//! Setup: a store with `STALL_ITEMS` items over 100 000 users (loaded in batches, fsync
//! durability, 4 shards, no automatic snapshots). Measured: 32 writer threads each writing
//! single signals (fsync durability, so every ack waits for a group commit) for a fixed
//! time, recording every write's latency; once with no snapshot, once starting
//! `Db::snapshot()` (every shard) right after the writers start. Printed: p50, p99, max and
//! throughput of both runs, their ratio, and how long the snapshot took. Snapshots are
//! written by a background job from a copy of the state (`shard/snapshot_job.rs`), so the
//! writers should only feel the copy, not the encoding and fsync of the file.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidal::{Db, Options, Signal, SignalKind};

const WRITERS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(4);
const USERS: u64 = 100_000;

fn signal(n: u64, items: u64) -> Signal {
    let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = Signal::new(
        format!("user-{}", mix % USERS),
        format!("item-{}", (mix >> 20) % items),
        SignalKind::Click,
    );
    s.session = Some(format!("s-{}", mix % USERS));
    s
}

fn options() -> Options {
    Options { shards: Some(4), snapshot_every_signals: 0, ..Options::default() }
}

fn load(dir: &Path, items: u64) -> Db {
    let db = Db::open(dir, options()).expect("open");
    let started = Instant::now();
    for first in (0..items).step_by(10_000) {
        let batch = (first..first + 10_000).map(|n| {
            let mut s = signal(n, items);
            s.item = format!("item-{n}");
            s
        });
        db.write_batch(batch.collect()).expect("load");
    }
    println!("setup: {items} items in {:.1} s", started.elapsed().as_secs_f64());
    db
}

struct Run {
    latencies: Vec<Duration>,
    secs: f64,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        self.latencies[((self.latencies.len() - 1) as f64 * p) as usize]
    }
}

fn run(db: &Db, items: u64, base: u64, snapshot: bool) -> (Run, Option<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut n = base + w * 10_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    db.write(signal(n, items)).expect("write");
                    out.push(t.elapsed());
                    n += 1;
                }
                out
            })
        })
        .collect();
    let snap = snapshot.then(|| {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            db.snapshot().expect("snapshot");
            t.elapsed()
        })
    });
    std::thread::sleep(RUN_FOR);
    let took = snap.map(|h| h.join().expect("snapshot thread"));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = writers.into_iter().flat_map(|h| h.join().expect("writer")).collect();
    latencies.sort_unstable();
    (Run { latencies, secs: started.elapsed().as_secs_f64() }, took)
}

fn report(name: &str, r: &Run) {
    println!(
        "{name}: {} writes = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        r.latencies.len(),
        r.latencies.len() as f64 / r.secs,
        r.pct(0.5).as_secs_f64() * 1e3,
        r.pct(0.99).as_secs_f64() * 1e3,
        r.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn main() {
    let items: u64 = std::env::var("STALL_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::Builder::new().prefix("stall-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let db = load(dir.path(), items);
    let (quiet, _) = run(&db, items, 1 << 40, false);
    let (busy, took) = run(&db, items, 2 << 40, true);
    println!(
        "{WRITERS} writers of single signals (fsync), {:.0} s each, store of {items} items:",
        RUN_FOR.as_secs_f64()
    );
    report("  without a snapshot", &quiet);
    report("  with a snapshot   ", &busy);
    if let Some(took) = took {
        println!("  the snapshot of every shard took {:.2} s while the writers ran", took.as_secs_f64());
    }
    println!(
        "  ratio with/without: p99 {:.2}x, max {:.2}x, throughput {:.2}x",
        busy.pct(0.99).as_secs_f64() / quiet.pct(0.99).as_secs_f64(),
        busy.latencies.last().unwrap().as_secs_f64() / quiet.latencies.last().unwrap().as_secs_f64(),
        (busy.latencies.len() as f64 / busy.secs) / (quiet.latencies.len() as f64 / quiet.secs)
    );
    db.close().expect("close");
}
