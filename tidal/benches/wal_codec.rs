//! WAL codec speed: batch encode, batch check (header + CRC), record decode, and a full
//! replay scan from real files next to a plain sequential read of the same files.
//!
//! `cargo bench -p tidal --bench wal_codec`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tidal::hlc::Hlc;
use tidal::signal::{Signal, SignalKind};
use tidal::wal::segment::encode_batch_v2_into;
use tidal::wal::vfs::StdVfs;
use tidal::wal::{Repair, WalError, WalWriter, decode_batch, records, scan_shard_records};

const BATCHES: usize = 400;
const PER_BATCH: usize = 1000;

fn signal(n: usize) -> Signal {
    let mut s =
        Signal::new(format!("user-{}", n % 10_007), format!("item-{}", n % 100_003), SignalKind::Click);
    s.session = Some(format!("sess-{}", n % 10_007));
    s.idempotency_key = Some(format!("key-{n}"));
    s
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out.expect("at least one run"))
}

fn main() {
    let owned: Vec<Signal> = (0..PER_BATCH).map(signal).collect();
    let recs: Vec<_> =
        owned.iter().enumerate().map(|(i, s)| (Hlc::new(1_000 + i as u64, 0), s.as_ref())).collect();
    let mut buf = Vec::new();
    let (enc, header) = best_of(20, || {
        buf.clear();
        encode_batch_v2_into(&mut buf, 0, 1, 1, &recs).expect("encode")
    });
    let mb = buf.len() as f64 / 1e6;
    let (check, _) = best_of(20, || decode_batch(&buf).expect("decode").2);
    let (_, payload, _) = decode_batch(&buf).expect("decode");
    let (dec, n) = best_of(20, || records(payload).filter(|r| r.is_ok()).count());
    assert_eq!(n as u32, header.record_count);
    println!(
        "batch of {PER_BATCH} ({:.0} B/record): encode {:.0} MB/s, check {:.0} MB/s, record decode {:.0} MB/s ({:.1} M records/s)",
        buf.len() as f64 / PER_BATCH as f64,
        mb / enc,
        mb / check,
        mb / dec,
        PER_BATCH as f64 / dec / 1e6
    );

    let scratch =
        tempfile::Builder::new().prefix("wal-codec-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let dir = scratch.path();
    let mut writer = WalWriter::open(Arc::new(StdVfs), dir, 0, 1, None, 64 << 20).expect("writer");
    for _ in 0..BATCHES {
        writer.append(&recs).expect("append");
    }
    writer.sync().expect("sync");
    let total = (BATCHES * PER_BATCH) as f64;
    let (read, bytes) = best_of(3, || sequential_read(dir));
    let (scan, count) = best_of(3, || {
        let mut n = 0u64;
        scan_shard_records::<WalError>(&StdVfs, dir, 0, 1, Repair::ReadOnly, |_, _, _| {
            n += 1;
            Ok(())
        })
        .expect("scan");
        n
    });
    assert_eq!(count as f64, total);
    let mb = bytes as f64 / 1e6;
    println!(
        "{:.0} MB on disk: sequential read {:.0} MB/s; scan+decode {:.0} MB/s ({:.1} M records/s) = {:.0}% of the read",
        mb,
        mb / read,
        mb / scan,
        total / scan / 1e6,
        100.0 * read / scan
    );
}

/// Reads every file in `dir` front to back: the physical limit a replay can approach.
fn sequential_read(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read(e.path()).map_or(0, |b| std::hint::black_box(b).len() as u64))
        .sum()
}
