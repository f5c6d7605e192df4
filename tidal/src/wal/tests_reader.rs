//! Tests of the recovery rules: torn tails are repaired, everything else is corruption that
//! names segment and offset, seq gaps are caught, and read-only scans change nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hlc::Hlc;
use crate::signal::{Signal, SignalKind};
use crate::wal::WalError;
use crate::wal::header::BatchHeader;
use crate::wal::reader::{Repair, remove_segments_before};
use crate::wal::segment::{SegmentName, encode_batch_v2_into};
use crate::wal::sim_vfs::SimVfs;
use crate::wal::tests_support::*;
use crate::wal::vfs::{StdVfs, Vfs};
use crate::wal::writer::WalWriter;

/// Where one batch landed.
#[derive(Clone, Debug)]
struct BatchAt {
    segment: PathBuf,
    offset: u64,
    first_seq: u64,
}

/// Writes batches of the given sizes (synced) and returns where each landed.
fn build(vfs: Arc<dyn Vfs>, dir: &Path, segment_bytes_max: u64, counts: &[u64]) -> Vec<BatchAt> {
    let mut writer = new_writer(vfs, dir, 0, segment_bytes_max);
    let mut at = Vec::new();
    for &count in counts {
        let first_seq = writer.next_seq();
        append_seqs(&mut writer, count).unwrap();
        let offset = writer.current_segment_len() - writer.last_batch().len() as u64;
        at.push(BatchAt { segment: writer.current_segment().to_path_buf(), offset, first_seq });
    }
    writer.sync().unwrap();
    at
}

const DIR: &str = "/db/wal";

/// Three segments of three batches each (seqs 1..=18).
fn three_segments(vfs: &SimVfs) -> Vec<BatchAt> {
    let batches = build(Arc::new(vfs.clone()), Path::new(DIR), 440, &[2; 9]);
    let segments: Vec<_> = batches.iter().map(|b| &b.segment).collect();
    assert_eq!(segments.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "layout: {batches:?}");
    batches
}

fn scan(vfs: &dyn Vfs, repair: Repair) -> Result<(crate::wal::ScanReport, Replayed), WalError> {
    read_all(vfs, Path::new(DIR), 0, 1, repair)
}

#[test]
fn torn_last_batch_is_truncated_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let std_vfs: Arc<dyn Vfs> = Arc::new(StdVfs);
    let sim: Arc<dyn Vfs> = Arc::new(SimVfs::new());
    for (vfs, dir) in [(std_vfs, tmp.path().join("wal")), (sim, PathBuf::from(DIR))] {
        for cut in [1u64, 3, 10, 63, 64, 70] {
            for path in segment_paths(vfs.as_ref(), &dir, 0) {
                vfs.remove_file(&path).unwrap();
            }
            let batches = build(vfs.clone(), &dir, 1 << 20, &[3, 3, 3]);
            let last = batches.last().unwrap();
            vfs.truncate(&last.segment, last.offset + cut).unwrap();
            let (report, recs) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::Truncate).unwrap();
            assert_seqs(&recs, 1, 7);
            let torn = report.torn_tail.expect("torn tail reported");
            assert_eq!(
                (torn.segment, torn.offset, torn.bytes_dropped),
                (last.segment.clone(), last.offset, cut)
            );
            assert_eq!(
                vfs.file_len(&last.segment).unwrap(),
                last.offset,
                "truncated to the last whole batch"
            );
            assert_eq!((report.next_seq, report.tail_segment), (7, Some(last.segment.clone())));
            // After repair the writer continues where the whole batches end.
            let mut writer =
                WalWriter::open(vfs.clone(), &dir, 0, 7, Some(last.segment.clone()), 1 << 20).unwrap();
            append_seqs(&mut writer, 4).unwrap();
            let (report, recs) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::Truncate).unwrap();
            assert_seqs(&recs, 1, 11);
            assert_eq!(report.torn_tail, None);
        }
    }
}

#[test]
fn read_only_reports_but_does_not_modify() {
    let vfs = SimVfs::new();
    let batches = three_segments(&vfs);
    let last = batches.last().unwrap();
    vfs.truncate(&last.segment, last.offset + 20).unwrap();
    let before = vfs.file_bytes(&last.segment).unwrap();
    let (report, recs) = scan(&vfs, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, 1, 17);
    assert_eq!(report.torn_tail.unwrap().offset, last.offset);
    assert_eq!(vfs.file_bytes(&last.segment).unwrap(), before);
}

#[test]
fn bit_flip_before_the_last_batch_of_the_last_segment_is_corruption() {
    // Header bytes (magic, seq, CRC) and payload bytes of the middle batch of the last segment.
    for delta in [0u64, 17, 61, 64 + 9] {
        let vfs = SimVfs::new();
        let batches = three_segments(&vfs);
        let victim = &batches[7];
        assert!(vfs.flip_bit(&victim.segment, victim.offset + delta, 3));
        let before = vfs.file_bytes(&victim.segment).unwrap();
        let (segment, offset, reason) = corruption_at(scan(&vfs, Repair::Truncate).unwrap_err());
        assert_eq!((segment, offset), (victim.segment.clone(), victim.offset), "delta {delta}: {reason}");
        assert!(reason.contains("valid batch follows"), "{reason}");
        assert_eq!(vfs.file_bytes(&victim.segment).unwrap(), before, "corruption is never repaired");
    }
}

/// A flip in the last batch of the last segment cannot be told from a torn write: the CRC
/// fails and nothing valid follows. So it is repaired as a torn tail (see the format doc).
#[test]
fn bit_flip_in_the_last_batch_is_a_torn_tail() {
    for delta in [0u64, 30, 64 + 5] {
        let vfs = SimVfs::new();
        let batches = three_segments(&vfs);
        let last = batches.last().unwrap();
        assert!(vfs.flip_bit(&last.segment, last.offset + delta, 0));
        let (report, recs) = scan(&vfs, Repair::Truncate).unwrap();
        assert_seqs(&recs, 1, 17);
        assert_eq!(report.torn_tail.unwrap().offset, last.offset);
    }
}

#[test]
fn any_damage_in_an_earlier_segment_is_corruption() {
    for damage in ["flip header", "flip payload", "truncate"] {
        let vfs = SimVfs::new();
        let batches = three_segments(&vfs);
        let victim = &batches[2]; // the last batch of the first segment
        assert_ne!(victim.segment, batches[3].segment);
        match damage {
            "flip header" => assert!(vfs.flip_bit(&victim.segment, victim.offset + 2, 1)),
            "flip payload" => assert!(vfs.flip_bit(&victim.segment, victim.offset + 80, 1)),
            _ => vfs.truncate(&victim.segment, victim.offset + 70).unwrap(),
        }
        let (segment, offset, reason) = corruption_at(scan(&vfs, Repair::Truncate).unwrap_err());
        assert_eq!((segment, offset), (victim.segment.clone(), victim.offset), "{damage}: {reason}");
        assert!(reason.contains("not the last segment"), "{reason}");
    }
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let vfs = SimVfs::new();
    let batches = three_segments(&vfs);
    vfs.remove_file(&batches[4].segment).unwrap();
    let (segment, offset, reason) = corruption_at(scan(&vfs, Repair::Truncate).unwrap_err());
    assert_eq!((segment, offset), (batches[6].segment.clone(), 0), "{reason}");
    assert!(reason.contains("missing segment"), "{reason}");
}

#[test]
fn segments_below_from_seq_are_not_read() {
    let vfs = SimVfs::new();
    let batches = three_segments(&vfs);
    assert!(vfs.flip_bit(&batches[0].segment, 5, 5));
    let from = batches[3].first_seq;
    let (report, recs) = read_all(&vfs, Path::new(DIR), 0, from, Repair::Truncate).unwrap();
    assert_seqs(&recs, from, 19);
    assert_eq!(report.segments.len(), 2);
    let from = batches[3].first_seq - 1;
    assert!(
        read_all(&vfs, Path::new(DIR), 0, from, Repair::Truncate).is_err(),
        "now the damaged segment is needed"
    );
}

#[test]
fn no_segments_is_an_empty_log_and_a_late_start_is_missing() {
    let vfs = SimVfs::new();
    let (report, recs) = read_all(&vfs, Path::new("/nowhere"), 0, 0, Repair::Truncate).unwrap();
    assert_eq!((report.next_seq, report.tail_segment, recs.len()), (1, None, 0));
    let (report, _) = read_all(&vfs, Path::new("/nowhere"), 0, 42, Repair::Truncate).unwrap();
    assert_eq!(report.next_seq, 42);
    let batches = three_segments(&vfs);
    remove_segments_before(&vfs, Path::new(DIR), 0, batches[3].first_seq).unwrap();
    let err = scan(&vfs, Repair::Truncate).unwrap_err();
    assert!(matches!(err, WalError::Missing { shard: 0, first_available: 7, needed: 1 }), "{err}");
}

/// Writes raw `bytes` as a new last segment of shard 0 named for `first_seq`.
fn put_segment(vfs: &SimVfs, first_seq: u64, bytes: &[u8]) -> PathBuf {
    let path = SegmentName::new(Path::new(DIR), 0, first_seq).path;
    let mut file = vfs.create_new(&path).unwrap();
    file.write_all(bytes).unwrap();
    path
}

fn raw_batch(shard: u32, first_seq: u64, count: u64) -> Vec<u8> {
    let owned: Vec<Signal> = (first_seq..first_seq + count).map(signal).collect();
    let recs: Vec<_> =
        owned.iter().enumerate().map(|(i, s)| (hlc_of(first_seq + i as u64), s.as_ref())).collect();
    let mut buf = Vec::new();
    encode_batch_v2_into(&mut buf, shard, 1, first_seq, &recs).unwrap();
    buf
}

#[test]
fn seq_breaks_and_foreign_shards_are_corruption() {
    for (what, second) in
        [("gap", raw_batch(0, 5, 1)), ("overlap", raw_batch(0, 2, 1)), ("shard", raw_batch(1, 3, 1))]
    {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new(DIR)).unwrap();
        let first = raw_batch(0, 1, 2);
        let path = put_segment(&vfs, 1, &[first.clone(), second].concat());
        let (segment, offset, reason) = corruption_at(scan(&vfs, Repair::Truncate).unwrap_err());
        assert_eq!((segment, offset), (path, first.len() as u64), "{what}: {reason}");
    }
    // A segment whose name disagrees with its first batch.
    let vfs = SimVfs::new();
    vfs.create_dir_all(Path::new(DIR)).unwrap();
    let path = put_segment(&vfs, 1, &raw_batch(0, 2, 1));
    assert_eq!(corruption_at(scan(&vfs, Repair::Truncate).unwrap_err()).0, path);
}

/// A batch whose CRCs pass but whose record is garbage was written that way: corruption,
/// never truncated as if it were torn.
#[test]
fn undecodable_record_under_a_valid_crc_is_corruption() {
    // One framed record: length 2, version 1, then a varint that never ends.
    let payload = [2u32.to_le_bytes().as_slice(), &[1, 0x80]].concat();
    let header = BatchHeader {
        version: 2,
        flags: 0,
        shard_id: Some(0),
        origin_node: 7,
        record_count: 1,
        first_seq: 1,
        hlc_min: Hlc::ZERO,
        hlc_max: Hlc::ZERO,
        payload_len: payload.len() as u32,
        payload_crc32c: crc32c::crc32c(&payload),
        epoch: 0,
    };
    let vfs = SimVfs::new();
    vfs.create_dir_all(Path::new(DIR)).unwrap();
    let bytes = [header.encode_v2().to_vec(), payload].concat();
    let path = put_segment(&vfs, 1, &bytes);
    let (segment, offset, reason) = corruption_at(scan(&vfs, Repair::Truncate).unwrap_err());
    assert_eq!((segment, offset), (path.clone(), 64), "{reason}");
    assert_eq!(vfs.file_bytes(&path).unwrap(), bytes);
}

/// A 64-byte valid v2 header (first seq `first_seq`) made only of ASCII bytes, so a user can
/// smuggle it into a string field.
fn ascii_header(first_seq: u64) -> String {
    (0x2020_2020u64..)
        .find_map(|hlc| {
            let h = BatchHeader {
                version: 2,
                flags: 0,
                shard_id: Some(0),
                origin_node: 7,
                record_count: 1,
                first_seq,
                hlc_min: Hlc(0x2020_2020),
                hlc_max: Hlc(hlc),
                payload_len: 0x30,
                payload_crc32c: 0x2020_2020,
                epoch: 0,
            };
            String::from_utf8(h.encode_v2().to_vec()).ok().filter(|s| s.is_ascii())
        })
        .unwrap_or_default()
}

/// Writes seqs 1..=6, then seq 7 whose user id is `fake`; returns the last batch's
/// segment, its offset, and the offset of `fake` inside it.
fn write_with_lookalike(vfs: &SimVfs, fake: &str) -> (PathBuf, u64, u64) {
    let mut writer = new_writer(Arc::new(vfs.clone()), Path::new(DIR), 0, 1 << 20);
    append_seqs(&mut writer, 6).unwrap();
    // The user id carries the lookalike; the long item keeps bytes after it in the record.
    let evil = Signal::new(fake, "i".repeat(100), SignalKind::Click);
    writer.append(&[(hlc_of(7), evil.as_ref())]).unwrap();
    let batch = writer.last_batch().to_vec();
    let fake_at = batch.windows(64).position(|w| w == fake.as_bytes()).unwrap() as u64;
    let start = writer.current_segment_len() - batch.len() as u64;
    (writer.current_segment().to_path_buf(), start, fake_at)
}

/// A header-lookalike inside the torn batch's own payload is user data, not a batch: the
/// tail is still repaired, even with a perfectly plausible seq.
#[test]
fn header_lookalike_in_the_torn_payload_does_not_block_repair() {
    let fake = ascii_header(8);
    assert!(BatchHeader::decode(fake.as_bytes()).is_ok());
    let vfs = SimVfs::new();
    let (path, start, fake_at) = write_with_lookalike(&vfs, &fake);
    vfs.truncate(&path, start + fake_at + 64 + 20).unwrap();
    let (report, recs) = scan(&vfs, Repair::Truncate).unwrap();
    assert_seqs(&recs, 1, 7);
    assert_eq!(report.torn_tail.unwrap().offset, start);
}

/// When the damaged batch's header itself is bad, its length is unknown and the search
/// passes through its payload: a lookalike there blocks repair only if its seq is plausible
/// (a residual risk, documented in the format doc), never with an implausible one.
#[test]
fn header_lookalike_after_a_damaged_header_needs_a_plausible_seq() {
    for (first_seq, torn) in [(1, true), (1_000_000, true), (7, false), (9, false)] {
        let vfs = SimVfs::new();
        let (path, start, _) = write_with_lookalike(&vfs, &ascii_header(first_seq));
        assert!(vfs.flip_bit(&path, start + 20, 2));
        let result = scan(&vfs, Repair::Truncate);
        assert_eq!(result.is_ok(), torn, "lookalike seq {first_seq}: {:?}", result.err());
        if let Ok((report, _)) = result {
            assert_eq!(report.torn_tail.unwrap().offset, start);
        }
    }
}

#[test]
fn an_empty_last_segment_continues_the_log() {
    let vfs = SimVfs::new();
    build(Arc::new(vfs.clone()), Path::new(DIR), 1 << 20, &[3]);
    put_segment(&vfs, 4, &[]);
    let (report, recs) = scan(&vfs, Repair::Truncate).unwrap();
    assert_seqs(&recs, 1, 4);
    assert_eq!(
        (report.next_seq, report.tail_segment),
        (4, Some(SegmentName::new(Path::new(DIR), 0, 4).path))
    );
}

/// The log ends before `from_seq` (a snapshot of records that never became durable): the
/// writer must start a fresh segment rather than leave a gap inside the old one.
#[test]
fn a_log_that_ends_before_from_seq_starts_a_fresh_segment() {
    let vfs = SimVfs::new();
    let dir = Path::new(DIR);
    build(Arc::new(vfs.clone()), dir, 1 << 20, &[5]);
    let (report, _) = read_all(&vfs, dir, 0, 50, Repair::Truncate).unwrap();
    assert_eq!((report.next_seq, report.tail_segment.clone()), (50, None));
    let mut writer = WalWriter::open(Arc::new(vfs.clone()), dir, 0, 50, None, 1 << 20).unwrap();
    append_seqs(&mut writer, 3).unwrap();
    let (_, recs) = read_all(&vfs, dir, 0, 50, Repair::Truncate).unwrap();
    assert_seqs(&recs, 50, 53);
    assert!(scan(&vfs, Repair::ReadOnly).is_err(), "from seq 1 the gap is visible");
    assert_eq!(remove_segments_before(&vfs, dir, 0, 50).unwrap().len(), 1);
}
