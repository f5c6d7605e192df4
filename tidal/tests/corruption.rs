//! Damage on real files, and what opening the store does about it (see `docs/wal-format.md`,
//! "Recovery", and `tidal::shard`):
//!
//! - a WAL cut short in its last batch, or a bit flip in the last batch of the last segment,
//!   is a torn tail: opening truncates it, reports segment and offset, keeps every earlier
//!   signal exactly once, and the store goes on writing;
//! - a bit flip anywhere before that (an earlier batch of the last segment, or any batch of an
//!   earlier segment) is `WalError::Corruption` naming segment and offset, and the failed open
//!   leaves the files as they were;
//! - a damaged or truncated snapshot is skipped for an older one (or for the WAL from seq 1);
//!   if the records that fallback needs are gone, opening fails with `Error::Snapshot`;
//! - (`tidal wal verify` and `inspect` are tested with the binary, in `tidal-cli/tests/wal_cli.rs`).
//!
//! Every store has one shard and 4 KiB segments, so a few hundred signals fill several
//! segments of that one shard. Item `i{n}` gets exactly one Like (from user `u{n}`), so each
//! item's count says whether its signal survived.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tidal::shard::snapshot;
use tidal::wal::{WalError, segment_file_name};
use tidal::{Db, Error, Options, Signal, SignalKind};

/// Signals per written batch.
const PER_BATCH: usize = 3;
/// Bytes of a v2 batch header.
const HEADER: u64 = 64;

fn options() -> Options {
    Options { shards: Some(1), segment_bytes_max: 4096, snapshot_every_signals: 0, ..Options::default() }
}

fn open(dir: &Path) -> Db {
    Db::open(dir, options()).unwrap_or_else(|e| panic!("open: {e}"))
}

/// `(n, seq)` of every acknowledged item `i{n}`.
type Acked = Vec<(u64, u64)>;

/// Writes item `i{n}` (one Like by user `u{n}`) for every n in `range`, [`PER_BATCH`] per batch.
fn write_items(db: &Db, range: Range<u64>) -> Acked {
    let ns: Vec<u64> = range.collect();
    let mut acked = Vec::new();
    for chunk in ns.chunks(PER_BATCH) {
        let signals = chunk.iter().map(|n| Signal::new(format!("u{n}"), format!("i{n}"), SignalKind::Like));
        let acks = db.write_batch(signals.collect()).expect("write");
        assert_eq!(acks.len(), chunk.len());
        for (n, ack) in chunk.iter().zip(acks) {
            assert!(!ack.duplicate && ack.shard == 0);
            acked.push((*n, ack.seq));
        }
    }
    acked
}

/// A closed store holding the items of `range`.
fn store(dir: &Path, range: Range<u64>) -> Acked {
    let db = open(dir);
    let acked = write_items(&db, range);
    db.close().expect("close");
    acked
}

/// Asserts that every item whose seq `kept` accepts is there exactly once and every other is absent.
fn assert_items(db: &Db, acked: &[(u64, u64)], kept: impl Fn(u64) -> bool) {
    for &(n, seq) in acked {
        let count = db.item(&format!("i{n}")).map(|v| v.state.count(&SignalKind::Like));
        assert_eq!(count, kept(seq).then_some(1), "item i{n} (seq {seq})");
    }
}

/// The segments of shard 0, in log order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("s0000-"))
        .collect();
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// One batch of a segment, found by walking the v2 headers.
#[derive(Clone, Copy, Debug)]
struct Batch {
    offset: u64,
    len: u64,
    first_seq: u64,
    records: u64,
}

impl Batch {
    /// An offset in the middle of the payload.
    fn mid_payload(&self) -> u64 {
        self.offset + HEADER + (self.len - HEADER) / 2
    }
}

/// Every batch of a segment; the segment must be sound and named for its first seq.
fn batch_offsets(path: &Path) -> Vec<Batch> {
    let bytes = std::fs::read(path).expect("read segment");
    let le = |at: usize, n: usize| bytes[at..at + n].iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert_eq!((&bytes[at..at + 4], le(at + 4, 2)), (&b"TDLB"[..], 2), "v2 header at {at}");
        let len = HEADER + le(at + 40, 4);
        let batch = Batch { offset: at as u64, len, first_seq: le(at + 16, 8), records: le(at + 12, 4) };
        if let Some(prev) = batches.last().copied().map(|b: Batch| b.first_seq + b.records) {
            assert_eq!(batch.first_seq, prev, "seqs are contiguous at {at}");
        }
        batches.push(batch);
        at += len as usize;
    }
    assert_eq!(at, bytes.len(), "segment ends with a whole batch");
    assert_eq!(file_name(path), segment_file_name(0, batches[0].first_seq));
    batches
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)).expect("truncate");
}

/// Every file of the WAL and snapshot directories with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    for sub in ["wal", "snapshots"] {
        for entry in std::fs::read_dir(dir.join(sub)).expect("read dir") {
            let path = entry.expect("entry").path();
            all.insert(path.clone(), std::fs::read(&path).expect("read"));
        }
    }
    all
}

/// Puts back the files that [`files`] saved and removes any other.
fn restore(dir: &Path, saved: &BTreeMap<PathBuf, Vec<u8>>) {
    for path in files(dir).keys().filter(|p| !saved.contains_key(*p)) {
        std::fs::remove_file(path).expect("remove");
    }
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("restore");
    }
}

/// Opening must fail with corruption at exactly `segment` and `offset`, changing no file.
fn expect_corruption(dir: &Path, segment: &Path, offset: u64) {
    let before = files(dir);
    match Db::open(dir, options()) {
        Ok(_) => panic!("opened despite damage in {} at {offset}", segment.display()),
        Err(Error::Wal(WalError::Corruption { segment: s, offset: o, reason })) => {
            assert_eq!((s.as_path(), o), (segment, offset), "reason: {reason}");
        }
        Err(other) => panic!("expected corruption in {} at {offset}, got {other}", segment.display()),
    }
    assert!(files(dir) == before, "the failed open changed files");
}

/// Cuts the last segment at `cut(last batch)`, inside its last batch, and checks the repair.
fn torn_last_batch(cut: impl Fn(&Batch) -> u64) {
    let dir = tempfile::tempdir().unwrap();
    let acked = store(dir.path(), 0..300);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    let tail = segs.last().unwrap();
    let last = *batch_offsets(tail).last().unwrap();
    let at = cut(&last);
    assert!(last.offset < at && at < last.offset + last.len);
    let torn_items = acked.iter().filter(|(_, seq)| *seq >= last.first_seq).count() as u64;
    assert_eq!((torn_items, last.records), (PER_BATCH as u64, PER_BATCH as u64), "the last batch is whole");
    set_len(tail, at);

    let db = open(dir.path());
    let torn = db.recovery_report().shards[0].torn_tail.clone().expect("torn tail reported");
    assert_eq!((&torn.segment, torn.offset, torn.bytes_dropped), (tail, last.offset, at - last.offset));
    assert_eq!(std::fs::metadata(tail).unwrap().len(), last.offset, "truncated to the last whole batch");
    assert_eq!(db.applied_seqs(), [last.first_seq - 1]);
    assert_items(&db, &acked, |seq| seq < last.first_seq);
    let more = write_items(&db, 1000..1010);
    assert_eq!(more[0].1, last.first_seq, "seqs go on where the kept log ends");
    db.close().unwrap();

    let db = open(dir.path());
    assert!(db.recovery_report().shards[0].torn_tail.is_none(), "second reopen is clean");
    assert_items(&db, &acked, |seq| seq < last.first_seq);
    assert_items(&db, &more, |_| true);
}

#[test]
fn torn_last_batch_mid_payload_is_cut_off() {
    torn_last_batch(Batch::mid_payload);
}

#[test]
fn torn_last_batch_mid_header_is_cut_off() {
    torn_last_batch(|b| b.offset + HEADER / 2);
}

/// Header bytes to flip: magic, version, record_count, first_seq, payload_len, reserved, CRC.
const HEADER_BYTES_TO_FLIP: [u64; 7] = [0, 4, 12, 16, 40, 50, 61];

#[test]
fn flip_in_an_earlier_batch_of_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let acked = store(dir.path(), 0..300);
    let segs = segments(dir.path());
    let tail = segs.last().unwrap();
    let batches = batch_offsets(tail);
    assert!(batches.len() >= 3, "the last segment has several batches");
    for target in [batches[0], batches[batches.len() / 2], batches[batches.len() - 2]] {
        let payload = [target.offset + HEADER, target.mid_payload(), target.offset + target.len - 1];
        for at in HEADER_BYTES_TO_FLIP.map(|o| target.offset + o).into_iter().chain(payload) {
            flip(tail, at, 5);
            expect_corruption(dir.path(), tail, target.offset);
            flip(tail, at, 5);
        }
    }
    let db = open(dir.path());
    assert!(db.recovery_report().shards[0].torn_tail.is_none());
    assert_items(&db, &acked, |_| true);
}

#[test]
fn flip_in_an_earlier_segment_is_corruption_even_in_its_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let acked = store(dir.path(), 0..300);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    for seg in &segs[..2] {
        let batches = batch_offsets(seg);
        for target in [batches[0], batches[batches.len() / 2], *batches.last().unwrap()] {
            let payload = [target.offset + HEADER, target.mid_payload(), target.offset + target.len - 1];
            for at in HEADER_BYTES_TO_FLIP.map(|o| target.offset + o).into_iter().chain(payload) {
                flip(seg, at, 2);
                expect_corruption(dir.path(), seg, target.offset);
                flip(seg, at, 2);
            }
        }
    }
    let db = open(dir.path());
    assert!(db.recovery_report().shards[0].torn_tail.is_none());
    assert_items(&db, &acked, |_| true);
}

#[test]
fn flip_in_the_last_batch_of_the_last_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let acked = store(dir.path(), 0..300);
    let saved = files(dir.path());
    let tail = segments(dir.path()).pop().unwrap();
    let last = *batch_offsets(&tail).last().unwrap();
    let payload = [last.offset + HEADER, last.mid_payload(), last.offset + last.len - 1];
    for at in HEADER_BYTES_TO_FLIP.map(|o| last.offset + o).into_iter().chain(payload) {
        flip(&tail, at, 7);
        let db = open(dir.path());
        let torn = db.recovery_report().shards[0].torn_tail.clone().expect("torn tail reported");
        assert_eq!((&torn.segment, torn.offset, torn.bytes_dropped), (&tail, last.offset, last.len));
        assert_eq!(db.applied_seqs(), [last.first_seq - 1], "flip at {at}");
        assert_items(&db, &acked, |seq| seq < last.first_seq);
        db.close().unwrap();
        restore(dir.path(), &saved);
    }
}

fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join("snapshots").join(snapshot::file_name(0, seq))
}

/// Flips a bit in the middle of a snapshot file.
fn damage(path: &Path) {
    let len = std::fs::metadata(path).expect("snapshot exists").len();
    flip(path, len / 2, 0);
}

/// Writes each range of `ranges`, snapshotting after every range but the last; closes.
/// Returns the acks and the seq of every snapshot.
fn store_with_snapshots(dir: &Path, ranges: &[Range<u64>]) -> (Acked, Vec<u64>) {
    let db = open(dir);
    let (mut acked, mut snaps) = (Vec::new(), Vec::new());
    for (i, range) in ranges.iter().enumerate() {
        acked.extend(write_items(&db, range.clone()));
        if i + 1 < ranges.len() {
            let seqs = db.snapshot().expect("snapshot");
            assert_eq!(seqs, [acked.last().unwrap().1]);
            snaps.push(seqs[0]);
        }
    }
    db.close().unwrap();
    (acked, snaps)
}

/// Opens, checks what recovery started from and skipped, and that every item is there once.
fn open_and_check(dir: &Path, acked: &Acked, from: Option<u64>, skipped: &[PathBuf]) {
    let db = open(dir);
    let report = &db.recovery_report().shards[0];
    assert_eq!(report.snapshot_seq, from);
    let skipped_paths: Vec<&PathBuf> = report.skipped_snapshots.iter().map(|(p, _)| p).collect();
    assert_eq!(skipped_paths, skipped.iter().collect::<Vec<_>>());
    let last = acked.last().unwrap().1;
    assert_eq!(report.records_replayed, last - from.unwrap_or(0));
    assert_eq!(db.applied_seqs(), [last]);
    assert_items(&db, acked, |_| true);
    db.close().unwrap();
}

#[test]
fn damaged_snapshots_fall_back_to_older_one_then_full_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, snaps) = store_with_snapshots(dir.path(), &[0..9, 9..60, 60..120]);
    let first_segment = dir.path().join("wal").join(segment_file_name(0, 1));
    assert!(first_segment.exists(), "no segment was removed yet");
    let (older, newer) = (snapshot_path(dir.path(), snaps[0]), snapshot_path(dir.path(), snaps[1]));

    damage(&newer);
    open_and_check(dir.path(), &acked, Some(snaps[0]), std::slice::from_ref(&newer));
    assert!(
        !newer.exists() && newer.with_extension("snap.damaged").exists(),
        "the damaged one was moved aside"
    );
    damage(&older);
    open_and_check(dir.path(), &acked, None, std::slice::from_ref(&older));
}

#[test]
fn damaged_snapshots_fall_back_to_the_wal_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, snaps) = store_with_snapshots(dir.path(), &[0..240, 240..480, 480..720, 720..780]);
    assert!(!dir.path().join("wal").join(segment_file_name(0, 1)).exists(), "retention retired it");
    assert!(dir.path().join("archive").join(segment_file_name(0, 1)).exists(), "to the archive");
    let (older, newer) = (snapshot_path(dir.path(), snaps[1]), snapshot_path(dir.path(), snaps[2]));
    damage(&newer);
    damage(&older);
    open_and_check(dir.path(), &acked, None, &[newer, older]);
}

#[test]
fn damaged_snapshots_without_the_early_wal_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, snaps) = store_with_snapshots(dir.path(), &[0..240, 240..480, 480..720, 720..780]);
    assert!(!dir.path().join("wal").join(segment_file_name(0, 1)).exists(), "retention removed it");
    // As if archiving had been off: the early history is gone for good.
    std::fs::remove_dir_all(dir.path().join("archive")).unwrap();
    assert!(!snapshot_path(dir.path(), snaps[0]).exists(), "retention keeps two snapshots");
    let (older, newer) = (snapshot_path(dir.path(), snaps[1]), snapshot_path(dir.path(), snaps[2]));

    damage(&newer);
    open_and_check(dir.path(), &acked, Some(snaps[1]), std::slice::from_ref(&newer));
    damage(&older);
    let before = files(dir.path());
    match Db::open(dir.path(), options()) {
        Ok(_) => panic!("opened without a usable snapshot and without the WAL from seq 1"),
        Err(Error::Snapshot(msg)) => {
            assert!(msg.contains(&file_name(&older)), "{msg} names {}", older.display());
        }
        Err(other) => panic!("expected Error::Snapshot, got {other}"),
    }
    assert!(files(dir.path()) == before, "the failed open changed files");
}

#[test]
fn retention_after_a_damaged_snapshot_keeps_two_usable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut acked, snaps) = store_with_snapshots(dir.path(), &[0..240, 240..480, 480..500]);
    damage(&snapshot_path(dir.path(), snaps[1]));
    // Open (moving the damaged one aside), write, and take ONE more snapshot: retention must
    // now keep it and the good older one, not the damaged file.
    let newest = {
        let db = open(dir.path());
        acked.extend(write_items(&db, 500..740));
        let newest = db.snapshot().unwrap()[0];
        db.close().unwrap();
        newest
    };
    // The newest is damaged too: the other kept snapshot must be a usable one.
    damage(&snapshot_path(dir.path(), newest));
    let db = open(dir.path());
    let report = &db.recovery_report().shards[0];
    assert!(
        report.snapshot_seq.is_some_and(|seq| seq < newest),
        "fell back to a usable snapshot: {report:?}"
    );
    assert_items(&db, &acked, |_| true);
}

#[test]
fn truncated_snapshot_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, snaps) = store_with_snapshots(dir.path(), &[0..30, 30..60, 60..90]);
    let newer = snapshot_path(dir.path(), snaps[1]);
    let whole = std::fs::read(&newer).unwrap();
    for len in [0, whole.len() / 2, whole.len() - 1] {
        std::fs::write(&newer, &whole[..len]).unwrap();
        open_and_check(dir.path(), &acked, Some(snaps[0]), std::slice::from_ref(&newer));
    }
    std::fs::write(&newer, &whole).unwrap();
    open_and_check(dir.path(), &acked, Some(snaps[1]), &[]);
}
