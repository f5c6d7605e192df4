//! Crash-image tests in the style of redb's: the whole store runs on `SimVfs`, which knows
//! what was fsynced and what was only written. At a random moment, while a writer thread is
//! busy, we take the image a power cut would leave (unsynced bytes lost, torn, or garbage;
//! files whose directory entry was never fsynced gone), open a store on it, and check that
//! every write acknowledged before the cut is there exactly once.
//!
//! Small segments force frequent rollovers (a new file + directory fsync) and periodic
//! snapshots exercise the temp-file/rename/directory-fsync path and WAL removal.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tidal::wal::sim_vfs::{SimVfs, TornWrite};
use tidal::{Db, Options, Signal, SignalKind};

const POLICIES: [TornWrite; 4] =
    [TornWrite::None, TornWrite::All, TornWrite::RandomPrefix, TornWrite::RandomPrefixGarbage];

fn options(vfs: SimVfs) -> Options {
    Options {
        shards: Some(2),
        segment_bytes_max: 4096,
        snapshot_every_signals: 300,
        vfs: Arc::new(vfs),
        ..Options::default()
    }
}

fn signal(n: u64) -> Signal {
    let mut s = Signal::new(format!("u{}", n % 13), format!("i{n}"), SignalKind::Like);
    s.idempotency_key = Some(format!("k{n}"));
    s
}

/// Writes until stopped; publishes the highest n whose batch was acknowledged (+1).
fn writer(db: Db, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>, seed: u64) {
    let mut n = 0;
    let mut batch = 1 + seed % 7;
    while !stop.load(Ordering::Relaxed) {
        if db.write_batch((n..n + batch).map(signal).collect()).is_err() {
            return;
        }
        n += batch;
        acked.store(n, Ordering::SeqCst);
        batch = 1 + (batch * 31 + 7) % 17;
    }
}

fn check_image(image: SimVfs, dir: &Path, acked: u64, seed: u64, policy: TornWrite) {
    let db = Db::open(dir, options(image))
        .unwrap_or_else(|e| panic!("seed {seed} {policy:?}: reopen failed: {e}"));
    for n in 0..acked {
        let view =
            db.item(&format!("i{n}")).unwrap_or_else(|| panic!("seed {seed} {policy:?}: acked i{n} lost"));
        assert_eq!(view.state.count(&SignalKind::Like), 1, "seed {seed} {policy:?}: i{n} not exactly once");
    }
    // Retrying everything acknowledged changes nothing: the idempotency keys survived too.
    let retry = db.write_batch((0..acked.min(200)).map(signal).collect()).expect("retry");
    assert!(retry.iter().all(|a| a.duplicate), "seed {seed} {policy:?}: a retry was applied twice");
}

#[test]
fn power_cut_at_random_moments_keeps_every_acknowledged_write() {
    let dir = Path::new("/sim/store");
    for seed in 0..12u64 {
        let vfs = SimVfs::new();
        let db = Db::open(dir, options(vfs.clone())).expect("open on SimVfs");
        let (acked, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let handle = {
            let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || writer(db, acked, stop, seed))
        };
        let mut images = Vec::new();
        for (cut, policy) in POLICIES.into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(5 + (seed * 7 + cut as u64 * 13) % 40));
            // Read the acked count first: everything acked before the image must survive.
            let acked_now = acked.load(Ordering::SeqCst);
            images.push((vfs.crash_image(policy, seed * 100 + cut as u64), acked_now, policy));
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().expect("writer");
        drop(db);
        assert!(images.last().is_some_and(|i| i.1 > 0), "seed {seed}: the writer acknowledged nothing");
        for (image, acked_now, policy) in images {
            check_image(image, dir, acked_now, seed, policy);
        }
    }
}

#[test]
fn every_sync_point_of_a_short_history_recovers() {
    // Cut after every single acknowledged batch of a deterministic history.
    let dir = Path::new("/sim/short");
    let vfs = SimVfs::new();
    let db = Db::open(dir, options(vfs.clone())).expect("open");
    let mut n = 0;
    for step in 0..60u64 {
        let batch = 1 + step % 5;
        db.write_batch((n..n + batch).map(signal).collect()).expect("write");
        n += batch;
        if step % 20 == 19 {
            db.snapshot().expect("snapshot");
        }
        for (i, policy) in POLICIES.iter().enumerate() {
            check_image(vfs.crash_image(*policy, step * 4 + i as u64), dir, n, step, *policy);
        }
    }
}
