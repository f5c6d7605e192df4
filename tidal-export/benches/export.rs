//! Export: rows/s and signals/s of a DPO Parquet export from 10 million signals, and the
//! export's peak memory.
//!
//! `cargo bench -p tidal-export --bench export` (env `EXPORT_SIGNALS` scales the history, default
//! 10 000 000).
//!
//! The parent process builds the store once under the cargo target tmpdir
//! (`export-bench-<N>/store`, reused while its `BUILT` marker exists): 4 shards,
//! `Durability::None`, default snapshots (so most of the history is read from `archive/`),
//! a manual clock. The workload: 10 000 concurrent session slots, each round writes one
//! signal per slot as one batch and advances the clock by a minute; a session is 20 signals
//! (impression, then a reaction on the same item: click, like, skip, dislike, dwell, or
//! nothing), so about 20 min of activity followed by the 30 min idle gap; users have about
//! 100 signals over 5 sessions and draw items from a personal pool of 60 out of 50 000.
//!
//! The export then runs in a child process (this bench re-executes itself with
//! `EXPORT_BENCH_CHILD` set), so the memory of building the store does not count: it calls
//! `export_dir` to DPO Parquet and prints the rows, rows/s, signals/s (signals of the
//! history, each read twice) and VmHWM, the child's peak resident memory.

#[path = "../../tidal/benches/common/mod.rs"]
mod common;

use common::proc_status_kb;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tidal::hlc::ManualClock;
use tidal::{Db, Durability, Options, Signal, SignalKind};
use tidal_export::{ExportFormat, ExportOptions, Hooks, export_dir};

const SIGNALS_DEFAULT: u64 = 10_000_000;
const SLOTS: u64 = 10_000;
const SESSION_SIGNALS: u64 = 20;
const ROUND_MS: u64 = 60_000;
const ITEMS: u64 = 50_000;
const POOL: u64 = 60;
const SIGNALS_PER_USER: u64 = 100;
const T0_MS: u64 = 1_700_000_000_000;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Signal `g` of the workload (see the module docs).
fn signal(g: u64, users: u64) -> Signal {
    let (slot, round) = (g % SLOTS, g / SLOTS);
    let (session, position) = (round / SESSION_SIGNALS, round % SESSION_SIGNALS);
    let user = mix(slot.wrapping_mul(0x9e37_79b9) ^ session.wrapping_mul(0x85eb_ca6b)) % users;
    let pick = |k: u64| (user.wrapping_mul(131) + mix(g - position + k) % POOL) % ITEMS;
    let item = pick(position / 2);
    let roll = mix(g ^ 0x5bd1_e995) % 100;
    let (kind, value, item) = match (position % 2, roll) {
        (0, _) => (SignalKind::Impression, 1.0, item),
        (_, 0..25) => (SignalKind::Click, 1.0, item),
        (_, 25..35) => (SignalKind::Like, 1.0, item),
        (_, 35..50) => (SignalKind::Skip, 1.0, item),
        (_, 50..58) => (SignalKind::Dislike, 1.0, item),
        (_, 58..75) => (SignalKind::Dwell, 20.0, item),
        _ => (SignalKind::Impression, 1.0, pick(SESSION_SIGNALS + position)),
    };
    let mut s = Signal::new(format!("user-{user:07}"), format!("item-{item:05}"), kind);
    s.value = value;
    s.session = Some(format!("s{session}-{slot}"));
    s
}

fn build_store(store: &Path, signals: u64) {
    let marker = store.join("BUILT");
    if marker.exists() {
        println!("reusing the store in {}", store.display());
        return;
    }
    let _ = std::fs::remove_dir_all(store);
    let clock = Arc::new(ManualClock::new(T0_MS));
    let options =
        Options { shards: Some(4), durability: Durability::None, clock: clock.clone(), ..Options::default() };
    let db = Db::open(store, options).expect("open the store");
    let users = (signals / SIGNALS_PER_USER).max(1);
    let started = Instant::now();
    let mut g = 0;
    while g < signals {
        let batch: Vec<Signal> = (g..(g + SLOTS).min(signals)).map(|n| signal(n, users)).collect();
        clock.set(T0_MS + (g / SLOTS) * ROUND_MS);
        g += batch.len() as u64;
        db.write_batch(batch).expect("write a batch");
    }
    db.close().expect("close the store");
    std::fs::write(&marker, b"ok").expect("write the marker");
    let secs = started.elapsed().as_secs_f64();
    println!("built {signals} signals in {secs:.1} s ({:.0} signals/s)", signals as f64 / secs);
}

/// The child: one export, measured.
fn child(store: &Path, output: &Path) {
    let options =
        ExportOptions { format: ExportFormat::Dpo, exported_at_ms: T0_MS, ..ExportOptions::default() };
    let started = Instant::now();
    let report = export_dir(store, output, &options, &Hooks::default()).expect("export");
    let secs = started.elapsed().as_secs_f64();
    let signals: u64 = report.shards.iter().map(|s| s.signals_read).sum();
    let pairs: u64 = report.shards.iter().map(|s| s.pairs).sum();
    let bytes = std::fs::metadata(output).map_or(0, |m| m.len());
    println!("signals            {signals}");
    println!("rows               {} ({} train, {} test)", report.rows, report.rows_train, report.rows_test);
    println!("contexts           {} ({} with rows)", report.contexts, report.contexts_with_rows);
    println!("user-item pairs    {pairs} (summed over shards; one shard's are held at a time)");
    println!("open contexts peak {}", report.open_contexts_peak);
    println!("rows by source     {:?}", report.rows_by_source);
    println!("parquet bytes      {bytes}");
    println!("elapsed            {secs:.2} s");
    println!("rows/s             {:.0}", report.rows as f64 / secs);
    println!("signals/s          {:.0} (history signals; each is read twice)", signals as f64 / secs);
    println!("peak RSS (VmHWM)   {:.1} MiB", proc_status_kb("VmHWM:") as f64 / 1024.0);
}

fn main() {
    if let Ok(dir) = std::env::var("EXPORT_BENCH_CHILD") {
        let dir = PathBuf::from(dir);
        child(&dir.join("store"), &dir.join("dpo.parquet"));
        return;
    }
    let signals =
        std::env::var("EXPORT_SIGNALS").ok().and_then(|v| v.parse().ok()).unwrap_or(SIGNALS_DEFAULT);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-bench-{signals}"));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    build_store(&dir.join("store"), signals);
    println!("export: DPO Parquet from {signals} signals (child process)");
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new(exe).env("EXPORT_BENCH_CHILD", &dir).status().expect("run the export child");
    assert!(status.success(), "the export child failed");
    let _ = std::fs::remove_file(dir.join("dpo.parquet"));
}
