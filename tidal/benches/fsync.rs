//! The fsync of a WAL append, into a growing file and into the zero-filled reserve the
//! writer keeps ahead of a segment's end (`wal::writer`, `docs/wal-format.md`), in the same
//! run: the physical cost under group commit, and what the reserve saves.
//!
//! `cargo bench -p tidal --bench fsync` (env `FSYNC_WRITES`, default 1000 per file;
//! `FSYNC_BYTES`, default 20000, about a quarter of a 1000-signal batch, one shard's part).
//! Each writer appends `FSYNC_BYTES` and fdatasyncs, over and over, through `StdVfs`, with 1
//! and with 4 files syncing at once (4 shards). Ratios are what to read: the disk is shared.

use std::path::Path;
use std::time::{Duration, Instant};

use tidal::wal::vfs::{StdVfs, Vfs};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every fdatasync's latency of one writer.
fn one_file(path: &Path, reserve: bool, writes: usize, bytes: usize) -> Vec<Duration> {
    let mut file = StdVfs.create_new(path).expect("create");
    if reserve {
        file.reserve((writes * bytes) as u64).expect("reserve");
    }
    let batch: Vec<u8> = (0..bytes).map(|n| (n * 31 % 251) as u8 + 1).collect();
    let mut took = Vec::with_capacity(writes);
    for _ in 0..writes {
        file.write_all(&batch).expect("write");
        let started = Instant::now();
        file.sync_data().expect("fdatasync");
        took.push(started.elapsed());
    }
    std::fs::remove_file(path).expect("remove");
    took
}

/// Mean and p99 in ms over `files` writers syncing at once.
fn measure(dir: &Path, files: usize, reserve: bool, writes: usize, bytes: usize) -> (f64, f64) {
    let mut all: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..files)
            .map(|n| {
                let path = dir.join(format!("f{files}-{n}-{reserve}.wal"));
                scope.spawn(move || one_file(&path, reserve, writes, bytes))
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("writer")).collect()
    });
    all.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = all.iter().map(|d| ms(*d)).sum::<f64>() / all.len() as f64;
    (mean, ms(all[(all.len() * 99 / 100).min(all.len() - 1)]))
}

fn main() {
    let (writes, bytes) = (env("FSYNC_WRITES", 1000), env("FSYNC_BYTES", 20_000));
    let tmp = tempfile::Builder::new().prefix("fsync-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    println!("fdatasync after each append of {bytes} B, {writes} appends per file");
    for files in [1, 4] {
        let growing = measure(tmp.path(), files, false, writes, bytes);
        let reserved = measure(tmp.path(), files, true, writes, bytes);
        println!(
            "{files} file(s): growing file mean {:.3} ms (p99 {:.3})   into the reserve mean {:.3} ms (p99 {:.3})   ratio {:.2}x",
            growing.0,
            growing.1,
            reserved.0,
            reserved.1,
            growing.0 / reserved.0
        );
    }
}
