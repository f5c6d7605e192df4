//! Recovery speed: opening a store of 10 million signals without and with a snapshot, next
//! to the time it takes to just read the same WAL files sequentially (the physical limit).
//!
//! `cargo bench -p tidal --bench recovery` (env `RECOVERY_SIGNALS` sets the store size,
//! default 10 000 000; `RECOVERY_DIR` keeps the store for later runs and `RECOVERY_OPEN_ONLY`
//! measures only the first open, for profiling).
//!
//! Setup, not measured against any target: a store on real disk (under the cargo target
//! tmpdir), 4 shards, no automatic snapshots, loaded with `write_batch` of 10 000 realistic
//! signals with `Durability::None` (fsync would only slow the setup down; recovery reads the
//! same bytes either way). About 1M distinct items, 100k users with sessions (most with
//! SeqNos), an idempotency key on 1 signal in 10, a mix of kinds.
//!
//! Measured, after closing the store:
//! 1. a plain sequential read (`std::fs::read`) of every file under `wal/`, twice; the second,
//!    warm-cache pass is the limit, because replay also reads from the page cache;
//! 2. `Db::open` replaying the whole WAL: signals/s, WAL MB/s, and that rate as a percent of
//!    the sequential read (target >= 50%);
//! 3. `Db::snapshot`, close, `Db::open` again: open time from the snapshot and what it
//!    still replays (should be ~0).
//!
//! The shards recover on parallel threads; the machine's parallelism is printed since it
//! caps that. Peak RSS (VmHWM) covers the whole process, load phase included.

mod common;

use common::proc_status_kb;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidal::{Db, Durability, Options, RecoveryReport, Signal, SignalKind};

const BATCH: u64 = 10_000;
const SHARDS: u32 = 4;
const USERS: u64 = 100_000;
const ITEMS: u64 = 1_000_000;
const HOT_ITEMS: u64 = 10_000;
/// Every user starts a new session every this many signals (of all users).
const SESSION_SPAN: u64 = 1_000_000;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic realistic signals; tracks the SeqNo of every user's current session.
struct Workload {
    session_seqs: Vec<u64>,
    epoch: u64,
}

impl Workload {
    fn new() -> Self {
        Workload { session_seqs: vec![0; USERS as usize], epoch: 0 }
    }

    fn signal(&mut self, n: u64) -> Signal {
        let r = mix(n);
        let user = r % USERS;
        // 30% of signals go to a hot head of items, the rest spread over all of them.
        let item = if (r >> 20) % 10 < 3 { (r >> 24) % HOT_ITEMS } else { (r >> 24) % ITEMS };
        let (kind, value) = kind_and_value(r >> 44);
        let mut s = Signal::new(format!("user-{user:06}"), format!("item-{item:07}"), kind);
        s.value = value;
        if s.kind == SignalKind::Label {
            s.attrs.insert("label".into(), "relevant".into());
        }
        if n / SESSION_SPAN != self.epoch {
            self.epoch = n / SESSION_SPAN;
            self.session_seqs.fill(0);
        }
        s.session = Some(format!("{:016x}", mix(user ^ (self.epoch << 32))));
        // Four users in five run an SDK that numbers their signals (SeqNo).
        if !user.is_multiple_of(5) {
            let seq = &mut self.session_seqs[user as usize];
            *seq += 1;
            s.session_seq = Some(*seq);
        }
        if r.is_multiple_of(10) {
            s.idempotency_key = Some(format!("evt-{n:016x}"));
        }
        if (r >> 8).is_multiple_of(4) {
            s.context = Some("home-feed".into());
        }
        s
    }
}

fn kind_and_value(r: u64) -> (SignalKind, f64) {
    match r % 100 {
        0..50 => (SignalKind::Impression, 1.0),
        50..70 => (SignalKind::Click, 1.0),
        70..78 => (SignalKind::Like, 1.0),
        78..81 => (SignalKind::Dislike, 1.0),
        81..88 => (SignalKind::Skip, 1.0),
        88..96 => (SignalKind::Dwell, (r / 100 % 600) as f64 / 10.0),
        96..99 => (SignalKind::Rating, (r / 100 % 11) as f64),
        _ => (SignalKind::Label, 1.0),
    }
}

fn options() -> Options {
    Options {
        shards: Some(SHARDS),
        durability: Durability::None,
        snapshot_every_signals: 0,
        ..Options::default()
    }
}

fn load(dir: &Path, total: u64) {
    let db = Db::open(dir, options()).expect("open for load");
    let mut workload = Workload::new();
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let batch: Vec<Signal> = (n..n + BATCH).map(|i| workload.signal(i)).collect();
        db.write_batch(batch).expect("write");
        n += BATCH;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = db.stats();
    db.close().expect("close after load");
    let sum = |f: fn(&tidal::query::ShardStats) -> usize| stats.iter().map(f).sum::<usize>();
    println!(
        "load (setup, Durability::None, batches of {BATCH}): {n} signals in {secs:.1} s = {:.0} signals/s",
        n as f64 / secs
    );
    println!(
        "  state: {} items (per-shard entries), {} users, {} sessions, {} idempotency keys",
        sum(|s| s.items),
        sum(|s| s.users),
        sum(|s| s.sessions),
        sum(|s| s.idempotency_keys)
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn bytes_under(dir: &Path) -> u64 {
    files_under(dir).iter().map(|p| p.metadata().expect("metadata").len()).sum()
}

/// Reads every file once, in name order; returns (bytes, seconds).
fn read_all(files: &[PathBuf]) -> (u64, f64) {
    let started = Instant::now();
    let mut bytes = 0u64;
    for path in files {
        let data = std::fs::read(path).expect("read WAL file");
        bytes += black_box(&data).len() as u64;
    }
    (bytes, started.elapsed().as_secs_f64())
}

/// The sequential-read limit in MB/s (second, warm-cache pass).
fn sequential_read(dir: &Path) -> f64 {
    let files = files_under(&dir.join("wal"));
    let (_, cold) = read_all(&files);
    let (bytes, warm) = read_all(&files);
    let mbs = bytes as f64 / 1e6 / warm;
    println!(
        "sequential read of wal/ ({} files, {:.1} MB, 1 thread): first pass {:.2} s, second {:.2} s = {mbs:.0} MB/s",
        files.len(),
        bytes as f64 / 1e6,
        cold,
        warm
    );
    mbs
}

fn timed_open(dir: &Path) -> (Db, Duration) {
    let started = Instant::now();
    let db = Db::open(dir, options()).expect("reopen");
    (db, started.elapsed())
}

fn print_shards(report: &RecoveryReport) {
    let busy: Duration = report.shards.iter().map(|s| s.elapsed).sum();
    let slowest = report.shards.iter().map(|s| s.elapsed).max().unwrap_or_default();
    let per_shard: Vec<String> = report
        .shards
        .iter()
        .map(|s| {
            format!("s{} {:.2}s/{:.1}M", s.shard, s.elapsed.as_secs_f64(), s.records_replayed as f64 / 1e6)
        })
        .collect();
    println!(
        "  shards: {} (sum of shard times {:.2} s over {:.2} s wall = {:.2}x overlap)",
        per_shard.join(", "),
        busy.as_secs_f64(),
        report.elapsed.as_secs_f64(),
        busy.as_secs_f64() / report.elapsed.as_secs_f64()
    );
    println!(
        "  after the slowest shard: {:.2} s of serial work (building cross-shard state such as the score index)",
        report.elapsed.saturating_sub(slowest).as_secs_f64()
    );
}

fn open_without_snapshot(dir: &Path, seq_mbs: f64) -> (Db, Duration) {
    let (db, wall) = timed_open(dir);
    let report = db.recovery_report();
    let secs = report.elapsed.as_secs_f64();
    let (records, mb) = (report.records_replayed(), report.wal_bytes() as f64 / 1e6);
    println!(
        "open without snapshot: {:.2} s (recovery {secs:.2} s): {records} signals replayed = {:.0} signals/s, {:.1} MB of WAL = {:.0} MB/s",
        wall.as_secs_f64(),
        records as f64 / secs,
        mb,
        mb / secs
    );
    println!(
        "  replay rate = {:.0}% of the sequential-read rate (target >= 50%); {:.0} B/signal on disk",
        100.0 * mb / secs / seq_mbs,
        report.wal_bytes() as f64 / records.max(1) as f64
    );
    print_shards(report);
    println!("  RSS after open: {:.0} MB", proc_status_kb("VmRSS:") as f64 / 1024.0);
    (db, wall)
}

fn open_with_snapshot(dir: &Path, db: Db, full_open: Duration) {
    let started = Instant::now();
    let seqs = db.snapshot().expect("snapshot");
    let snap_secs = started.elapsed().as_secs_f64();
    db.close().expect("close after snapshot");
    let snap_bytes = bytes_under(&dir.join("snapshots"));
    println!(
        "snapshot of all shards (up to seqs {seqs:?}): {:.1} MB written in {snap_secs:.2} s",
        snap_bytes as f64 / 1e6
    );
    let (db, wall) = timed_open(dir);
    let report = db.recovery_report();
    println!(
        "open with snapshot: {:.2} s (recovery {:.2} s): {} signals replayed, {:.1} MB of WAL scanned, {:.1} MB of snapshots = {:.1}x faster than without",
        wall.as_secs_f64(),
        report.elapsed.as_secs_f64(),
        report.records_replayed(),
        report.wal_bytes() as f64 / 1e6,
        snap_bytes as f64 / 1e6,
        full_open.as_secs_f64() / wall.as_secs_f64()
    );
    print_shards(report);
    db.close().expect("close");
}

fn main() {
    let total: u64 =
        std::env::var("RECOVERY_SIGNALS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let total = total.div_ceil(BATCH) * BATCH;
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "recovery benchmark: {total} signals, {SHARDS} shards recovered on parallel threads, available_parallelism = {parallelism}"
    );
    let scratch = tempfile::Builder::new()
        .prefix("recovery-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir");
    // For profiling: RECOVERY_DIR keeps the store (loaded once, reused by later runs) and
    // RECOVERY_OPEN_ONLY=1 measures only the open without snapshot.
    let kept = std::env::var_os("RECOVERY_DIR").map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(scratch.path());
    if !dir.join(tidal::manifest::MANIFEST_FILE).exists() {
        load(dir, total);
    }
    let seq_mbs = sequential_read(dir);
    let (db, full_open) = open_without_snapshot(dir, seq_mbs);
    if std::env::var_os("RECOVERY_OPEN_ONLY").is_some() {
        return;
    }
    open_with_snapshot(dir, db, full_open);
    println!(
        "peak RSS (VmHWM, whole process incl. load): {:.0} MB",
        proc_status_kb("VmHWM:") as f64 / 1024.0
    );
}
