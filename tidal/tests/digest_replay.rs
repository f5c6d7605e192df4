//! The digest contract replicas will rely on, on random workloads: the state rebuilt from
//! the WAL (after snapshots at random points, restarts and retried writes) has the digest of
//! the live state, and a second store fed the same batches raw (`WalWriter::append_encoded`
//! plus `shard::engine::apply_batch`, as a follower will) has it too, live and reopened.

use std::path::Path;
use std::sync::atomic::Ordering;

use proptest::prelude::*;
use tidal::shard::digest::StateDigest;
use tidal::shard::engine::{BatchOutcome, apply_batch};
use tidal::shard::state::ShardState;
use tidal::wal::vfs::StdVfs;
use tidal::wal::{WalWriter, decode_batch, list_segments};
use tidal::{Db, Options, Signal, SignalKind};

const SHARDS: u32 = 2;

fn options() -> Options {
    Options {
        shards: Some(SHARDS),
        segment_bytes_max: 4096,
        snapshot_every_signals: 0,
        wal_archive: true,
        ..Options::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Signals `(user, item, kind, idempotency key)`; a repeated key is a retry.
    Write(Vec<(u8, u8, u8, Option<u8>)>),
    /// The next SeqNo of a user's session, possibly resent (a retry).
    Sequenced {
        user: u8,
        resend: bool,
    },
    Snapshot,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0u8..6, 0u8..12, 0u8..5, prop::option::of(0u8..20)), 1..8).prop_map(Op::Write),
        2 => (0u8..6, any::<bool>()).prop_map(|(user, resend)| Op::Sequenced { user, resend }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

fn kind(k: u8) -> SignalKind {
    [SignalKind::Like, SignalKind::Click, SignalKind::Skip, SignalKind::Dislike, SignalKind::Rating]
        [k as usize]
        .clone()
}

fn run(dir: &Path, ops: &[Op]) -> Vec<StateDigest> {
    let mut db = Db::open(dir, options()).unwrap();
    let mut seqs = [0u64; 6];
    for op in ops {
        match op {
            Op::Write(signals) => {
                let batch = signals.iter().map(|(u, i, k, key)| {
                    let mut s = Signal::new(format!("u{u}"), format!("i{i}"), kind(*k));
                    s.value = if *k == 4 { f64::from(*i % 5) } else { 1.0 };
                    s.idempotency_key = key.map(|key| format!("k{key}"));
                    s
                });
                db.write_batch(batch.collect()).unwrap();
            }
            Op::Sequenced { user, resend } => {
                let slot = &mut seqs[*user as usize];
                if !*resend || *slot == 0 {
                    *slot += 1;
                }
                let mut s = Signal::new(format!("u{user}"), format!("s{slot}"), SignalKind::Click);
                s.session = Some("main".into());
                s.session_seq = Some(*slot);
                db.write(s).unwrap();
            }
            Op::Snapshot => {
                db.snapshot().unwrap();
            }
            Op::Restart => {
                let before = db.digests();
                db.close().unwrap();
                db = Db::open(dir, options()).unwrap();
                assert_eq!(db.digests(), before, "a restart rebuilds the same state");
            }
        }
    }
    let live = db.digests();
    db.close().unwrap();
    live
}

/// Every batch of `shard` in the store at `dir` (archive first, then the WAL), exact bytes.
fn raw_batches(dir: &Path, shard: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["archive", "wal"] {
        let sub = dir.join(sub);
        for segment in list_segments(&StdVfs, &sub).unwrap().into_iter().filter(|s| s.shard == shard) {
            let bytes = std::fs::read(&segment.path).unwrap();
            let mut at = 0;
            while at < bytes.len() {
                let (header, _, len) = decode_batch(&bytes[at..]).unwrap();
                // Archived and live segments may overlap nowhere, but skip any batch seen.
                if out.is_empty() || header.first_seq > last_seq(&out) {
                    out.push(bytes[at..at + len].to_vec());
                }
                at += len;
            }
        }
    }
    out
}

fn last_seq(batches: &[Vec<u8>]) -> u64 {
    let (header, _, _) = decode_batch(batches.last().unwrap()).unwrap();
    header.next_seq() - 1
}

/// Feeds `a`'s batches raw into a new store at `b` (same manifest: the pinned values) and
/// returns the digests of the states built on the way.
fn feed_raw(a: &Path, b: &Path) -> Vec<StateDigest> {
    std::fs::create_dir_all(b.join("wal")).unwrap();
    std::fs::copy(a.join("MANIFEST.json"), b.join("MANIFEST.json")).unwrap();
    let params = Db::open(a, options()).unwrap().params();
    (0..SHARDS)
        .map(|shard| {
            let vfs = std::sync::Arc::new(StdVfs);
            let mut wal = WalWriter::open(vfs, &b.join("wal"), shard, 1, None, 4096).unwrap();
            let mut state = ShardState::with_params(shard, &params);
            for bytes in raw_batches(a, shard) {
                wal.append_encoded(&bytes).unwrap();
                let (header, payload, _) = decode_batch(&bytes).unwrap();
                let outcome = apply_batch(&mut state, &header, payload, 1).unwrap();
                assert!(matches!(outcome, BatchOutcome::Applied(_)), "each batch applies once: {outcome:?}");
            }
            wal.sync().unwrap();
            state.digest()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn replay_and_raw_feed_reach_the_live_digest(ops in prop::collection::vec(op(), 1..40)) {
        let a = tempfile::tempdir().unwrap();
        let live = run(a.path(), &ops);
        let reopened = Db::open(a.path(), options()).unwrap();
        prop_assert_eq!(&reopened.digests(), &live, "rebuilt from snapshot + WAL");
        drop(reopened);
        let b = tempfile::tempdir().unwrap();
        prop_assert_eq!(&feed_raw(a.path(), b.path()), &live, "fed the same batches raw");
        let copy = Db::open(b.path(), options()).unwrap();
        prop_assert_eq!(&copy.digests(), &live, "the raw copy, reopened from its own WAL");
    }
}

/// A snapshot of a state larger than one copy slice, taken while another thread writes to
/// old and new items and users: reopening from it (plus the WAL after it) rebuilds the
/// live state, so the copy swept between those writes is the state at its seq.
#[test]
fn a_snapshot_taken_while_writes_go_on_rebuilds_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    // No fsync per write, and a copy of 16 entries per group: many writes land while the
    // copy is swept, so an entry changed before the sweep reaches it is all but certain.
    let options = || Options {
        segment_bytes_max: 1 << 20,
        durability: tidal::Durability::None,
        snapshot_copy_slice_entries: 16,
        ..options()
    };
    let db = std::sync::Arc::new(Db::open(dir.path(), options()).unwrap());
    // Batch `n` again later, without keys: the items first seen in the last batches have the
    // highest ids, which the copy's sweep (in id order) reaches last.
    let batch = |n: u64, keyed: bool| -> Vec<Signal> {
        (0..500u64)
            .map(|k| {
                let r = (n * 500 + k).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
                let mut s = Signal::new(
                    format!("u{}", r % 5000),
                    format!("i{}", (r >> 13) % 200_000),
                    kind((r % 5) as u8),
                );
                s.idempotency_key = (keyed && r.is_multiple_of(4)).then(|| format!("k{n}-{k}"));
                s
            })
            .collect()
    };
    for n in 0..200 {
        db.write_batch(batch(n, true)).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (db, stop, written) = (db.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut n = 200;
            while !stop.load(Ordering::Relaxed) || n < 240 {
                db.write_batch(batch(199 - (n - 200) % 200, false)).unwrap();
                n += 1;
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 202 {
        std::thread::yield_now();
    }
    let seqs = db.snapshot().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let live = db.digests();
    let db = std::sync::Arc::into_inner(db).unwrap();
    db.close().unwrap();
    let reopened = Db::open(dir.path(), options()).unwrap();
    let report = reopened.recovery_report();
    for (shard, seq) in report.shards.iter().zip(&seqs) {
        assert_eq!(shard.snapshot_seq, Some(*seq), "shard {} opened from the snapshot", shard.shard);
    }
    assert!(report.records_replayed() > 0, "writes after the snapshot's seq are replayed");
    assert_eq!(reopened.digests(), live);
}
