//! Tests of the writer with the reader: rollover and naming, reopening, the v1 fixture
//! (legacy segments followed by v2 ones), retention, fail-stop, and a throughput report.

use std::path::Path;
use std::sync::Arc;

use crate::hlc::Hlc;
use crate::signal::{Signal, SignalKind};
use crate::wal::WalError;
use crate::wal::reader::{Repair, list_segments, remove_segments_before, scan_shard};
use crate::wal::segment::{
    SegmentName, decode_batch, encode_batch_v1, parse_segment_file_name, segment_file_name,
};
use crate::wal::sim_vfs::{SimOp, SimVfs};
use crate::wal::tests_support::*;
use crate::wal::vfs::{StdVfs, Vfs};
use crate::wal::writer::WalWriter;

#[test]
fn segment_names_are_canonical() {
    assert_eq!(segment_file_name(3, 4097), "s0003-00000000000000004097.wal");
    assert_eq!(segment_file_name(12345, u64::MAX), "s12345-18446744073709551615.wal");
    assert_eq!(parse_segment_file_name("s0003-00000000000000004097.wal"), Some((3, 4097)));
    assert_eq!(parse_segment_file_name("s12345-18446744073709551615.wal"), Some((12345, u64::MAX)));
    for bad in [
        "s003-00000000000000004097.wal",
        "s0003-0000000000000004097.wal",
        "s00003-00000000000000004097.wal",
        "s0003-00000000000000004097.wal.tmp",
        "x0003-00000000000000004097.wal",
        "s+003-00000000000000004097.wal",
        "s0003-99999999999999999999.wal",
        "snapshot.bin",
    ] {
        assert_eq!(parse_segment_file_name(bad), None, "{bad}");
    }
}

#[test]
fn many_batches_roll_over_and_reopen_continues_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let vfs: Arc<dyn Vfs> = Arc::new(StdVfs);
    let mut writer = new_writer(vfs.clone(), &dir, 2, 4096);
    for i in 0..200 {
        append_seqs(&mut writer, 1 + i % 7).unwrap();
    }
    writer.sync().unwrap();
    let next = writer.next_seq();
    drop(writer);
    let segments = list_segments(vfs.as_ref(), &dir).unwrap();
    assert!(segments.len() > 5, "rolled over: {} segments", segments.len());
    let (report, recs) = read_all(vfs.as_ref(), &dir, 2, 1, Repair::Truncate).unwrap();
    assert_seqs(&recs, 1, next);
    assert_eq!((report.next_seq, report.batches, report.torn_tail.clone()), (next, 200, None));
    assert_eq!(report.segments.len(), segments.len());
    for (summary, name) in report.segments.iter().zip(&segments) {
        assert_eq!(name.path.file_name().unwrap().to_str().unwrap(), segment_file_name(2, summary.first_seq));
        assert_eq!(summary.header_versions, [0, summary.batches, 0]);
        assert_eq!(
            (summary.hlc_min, summary.hlc_max),
            (hlc_of(summary.first_seq), hlc_of(summary.next_seq - 1))
        );
        // A segment is rolled over only once full; the last batch may overshoot.
        assert!(summary.path == report.segments.last().unwrap().path || summary.bytes >= 4096);
    }
    // Reopen at the tail and keep going.
    let tail = report.tail_segment.clone();
    assert_eq!(tail.as_deref(), Some(segments.last().unwrap().path.as_path()));
    let mut writer = WalWriter::open(vfs.clone(), &dir, 2, report.next_seq, tail, 4096).unwrap();
    append_seqs(&mut writer, 5).unwrap();
    writer.sync().unwrap();
    let (report, recs) = read_all(vfs.as_ref(), &dir, 2, 1, Repair::Truncate).unwrap();
    assert_seqs(&recs, 1, next + 5);
    assert_eq!(report.next_seq, next + 5);
    // Scanning from the middle skips whole segments and hands over only what is needed.
    let from = next - 10;
    let (report, recs) = read_all(vfs.as_ref(), &dir, 2, from, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, from, next + 5);
    assert!(report.segments.len() < segments.len());
}

#[test]
fn open_refuses_a_tail_that_cannot_continue_the_log() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let path = new_writer(Arc::new(vfs.clone()), dir, 1, 1 << 20).current_segment().to_path_buf();
    let open = |shard, next_seq, tail: &Path| {
        WalWriter::open(Arc::new(vfs.clone()), dir, shard, next_seq, Some(tail.to_path_buf()), 1 << 20)
    };
    assert!(open(1, 5, &path).is_err(), "an empty segment named 1 continues only at seq 1");
    assert!(open(2, 1, &path).is_err(), "another shard's segment");
    assert!(open(1, 0, &path).is_err(), "seqs start at 1");
    assert!(open(1, 1, &dir.join("notes.wal")).is_err(), "not a segment name");
    assert!(open(1, 1, &path).is_ok());
}

#[test]
fn last_batch_is_exactly_what_was_written() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 1 << 20);
    assert!(writer.last_batch().is_empty());
    append_seqs(&mut writer, 3).unwrap();
    let first = writer.last_batch().to_vec();
    append_seqs(&mut writer, 2).unwrap();
    let second = writer.last_batch().to_vec();
    let on_disk = vfs.file_bytes(writer.current_segment()).unwrap();
    assert_eq!(on_disk, [first.clone(), second.clone()].concat());
    let (h, _, len) = decode_batch(&second).unwrap();
    assert_eq!((h.first_seq, h.record_count, h.shard_id, len), (4, 2, Some(0), second.len()));
    assert_eq!(h.origin_node, 0, "not recorded unless set");
}

#[test]
fn every_batch_records_its_origin_node() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 3, 1 << 20).with_origin_node(42);
    append_seqs(&mut writer, 2).unwrap();
    let (h, _, _) = decode_batch(writer.last_batch()).unwrap();
    assert_eq!((h.origin_node, h.shard_id), (42, Some(3)));
}

/// A standalone log (v2) that becomes a replica's log (v3 with epochs) reads back whole,
/// each batch with the epoch it was written under.
#[test]
fn epochs_switch_the_header_to_v3_and_mixed_logs_read_back() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 3, 1 << 20).with_origin_node(42);
    append_seqs(&mut writer, 2).unwrap();
    let mut versions = vec![decode_batch(writer.last_batch()).unwrap().0];
    for epoch in [1, 5] {
        writer.set_epoch(epoch);
        assert_eq!(writer.epoch(), epoch);
        append_seqs(&mut writer, 3).unwrap();
        versions.push(decode_batch(writer.last_batch()).unwrap().0);
    }
    let got: Vec<(u16, u64)> = versions.iter().map(|h| (h.version, h.epoch)).collect();
    assert_eq!(got, vec![(2, 0), (3, 1), (3, 5)]);
    writer.sync().unwrap();
    let (report, recs) = read_all(&vfs, dir, 3, 1, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, 1, 9);
    assert_eq!(report.segments[0].header_versions, [0, 1, 2]);
}

#[test]
fn empty_append_is_a_noop_and_too_large_leaves_the_writer_usable() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 1 << 20);
    append_seqs(&mut writer, 1).unwrap();
    let info = writer.append(&[]).unwrap();
    assert_eq!((info.first_seq, info.record_count, info.bytes), (2, 0, 0));
    assert!(writer.last_batch().is_empty());
    let mut huge = Signal::new("u", "i", SignalKind::Click);
    huge.attrs = (0..80).map(|i| (format!("k{i}"), "v".repeat(1000))).collect();
    let err = writer.append(&[(Hlc(1), huge.as_ref())]).unwrap_err();
    assert!(matches!(err, WalError::TooLarge(_)), "{err}");
    append_seqs(&mut writer, 2).unwrap();
    let (_, recs) = read_all(&vfs, dir, 0, 1, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, 1, 4);
}

#[test]
fn an_io_error_poisons_the_writer() {
    for op in [SimOp::Write, SimOp::SyncData, SimOp::SyncDir, SimOp::Create] {
        let vfs = SimVfs::new();
        let dir = Path::new("/db/wal");
        // A tiny segment limit, so the second append rolls over (sync, create, sync_dir).
        let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 1);
        append_seqs(&mut writer, 1).unwrap();
        vfs.fail_next(op);
        if op == SimOp::SyncData {
            assert!(writer.sync().is_err());
        } else {
            assert!(append_seqs(&mut writer, 1).is_err(), "{op:?} must fail");
            assert!(writer.last_batch().is_empty(), "a failed append ships nothing");
        }
        let err = append_seqs(&mut writer, 1).unwrap_err();
        assert!(err.to_string().contains("failed earlier"), "{op:?}: {err}");
        assert!(writer.sync().is_err());
    }
}

#[test]
fn rollover_syncs_the_old_segment_then_the_directory() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 100);
    let at_open = vfs.sync_counts();
    assert!(at_open.sync_dir >= 1, "creating the first segment syncs the directory");
    append_seqs(&mut writer, 5).unwrap(); // > 100 bytes: the next append rolls over
    let old = writer.current_segment().to_path_buf();
    assert_eq!(vfs.durable_bytes(&old).unwrap().len(), 0);
    append_seqs(&mut writer, 1).unwrap();
    assert_ne!(writer.current_segment(), old);
    let counts = vfs.sync_counts();
    assert_eq!((counts.sync_data, counts.sync_dir), (at_open.sync_data + 1, at_open.sync_dir + 1));
    assert_eq!(vfs.durable_bytes(&old), vfs.file_bytes(&old), "old segment durable before rollover");
    assert_eq!(writer.current_segment().file_name().unwrap().to_str().unwrap(), segment_file_name(0, 6));
}

/// A v1 segment written by the fixture writer (as an old version would have), then a v2
/// segment written by today's writer, continuing the seqs.
#[test]
fn v1_fixture_segments_stay_readable() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    vfs.create_dir_all(dir).unwrap();
    let v1_path = SegmentName::new(dir, 4, 1).path;
    let mut file = vfs.create_new(&v1_path).unwrap();
    let mut seq = 1;
    for count in [3u64, 1, 4] {
        let owned: Vec<Signal> = (seq..seq + count).map(signal).collect();
        let recs: Vec<_> =
            owned.iter().enumerate().map(|(i, s)| (hlc_of(seq + i as u64), s.as_ref())).collect();
        file.write_all(&encode_batch_v1(seq, &recs).unwrap()).unwrap();
        seq += count;
    }
    file.sync_data().unwrap();
    vfs.sync_dir(dir).unwrap();
    // Recovery, as after an upgrade: the v2 writer appends to the v1 tail, then rolls over.
    let (report, recs) = read_all(&vfs, dir, 4, 1, Repair::Truncate).unwrap();
    assert_seqs(&recs, 1, 9);
    let summary = &report.segments[0];
    assert_eq!(
        (summary.header_versions, summary.hlc_min, summary.hlc_max),
        ([3, 0, 0], hlc_of(1), hlc_of(8))
    );
    // Room for exactly one more batch in the v1 segment before rollover.
    let room = vfs.file_len(&v1_path).unwrap() + 1;
    let mut writer =
        WalWriter::open(Arc::new(vfs.clone()), dir, 4, report.next_seq, report.tail_segment, room).unwrap();
    append_seqs(&mut writer, 2).unwrap(); // into the v1 segment
    append_seqs(&mut writer, 3).unwrap(); // rolls over into a v2-only segment
    writer.sync().unwrap();
    let mut headers = Vec::new();
    let report = scan_shard(&vfs, dir, 4, 1, Repair::ReadOnly, |h, _| {
        headers.push((h.version, h.first_seq, h.record_count, h.hlc_min, h.hlc_max));
        Ok::<(), WalError>(())
    })
    .unwrap();
    let expect = |v, first, n| (v, first, n, hlc_of(first), hlc_of(first + u64::from(n) - 1));
    assert_eq!(
        headers,
        vec![expect(1, 1, 3), expect(1, 4, 1), expect(1, 5, 4), expect(2, 9, 2), expect(2, 11, 3)]
    );
    assert_eq!(
        report.segments.iter().map(|s| s.header_versions).collect::<Vec<_>>(),
        vec![[3, 1, 0], [0, 1, 0]]
    );
    let (_, recs) = read_all(&vfs, dir, 4, 1, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, 1, 14);
}

#[test]
fn remove_segments_before_keeps_the_last_and_everything_needed() {
    let vfs = SimVfs::new();
    let dir = Path::new("/db/wal");
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 1, 1);
    let mut other = new_writer(Arc::new(vfs.clone()), dir, 2, 1);
    for _ in 0..4 {
        append_seqs(&mut writer, 10).unwrap(); // segments start at 1, 11, 21, 31
        append_seqs(&mut other, 10).unwrap();
    }
    writer.sync().unwrap();
    assert!(remove_segments_before(&vfs, dir, 1, 10).unwrap().is_empty(), "seq 10 is in the first segment");
    let removed = remove_segments_before(&vfs, dir, 1, 21).unwrap();
    assert_eq!(removed, vec![SegmentName::new(dir, 1, 1).path, SegmentName::new(dir, 1, 11).path]);
    let (_, recs) = read_all(&vfs, dir, 1, 21, Repair::ReadOnly).unwrap();
    assert_seqs(&recs, 21, 41);
    assert!(matches!(
        read_all(&vfs, dir, 1, 20, Repair::ReadOnly),
        Err(WalError::Missing { shard: 1, first_available: 21, needed: 20 })
    ));
    let removed = remove_segments_before(&vfs, dir, 1, 1000).unwrap();
    assert_eq!(removed, vec![SegmentName::new(dir, 1, 21).path]);
    assert_eq!(segment_paths(&vfs, dir, 1), vec![SegmentName::new(dir, 1, 31).path]);
    assert_eq!(segment_paths(&vfs, dir, 2).len(), 4, "other shards untouched");
    // The removal was made durable.
    let image = vfs.crash_image(crate::wal::sim_vfs::TornWrite::All, 0);
    assert_eq!(segment_paths(&image, dir, 1).len(), 1);
}

#[test]
fn append_encoded_writes_the_exact_bytes_and_refuses_misfits() {
    let tmp = tempfile::tempdir().unwrap();
    let vfs: Arc<dyn Vfs> = Arc::new(StdVfs);
    // A leader's log, batch by batch.
    let mut leader = new_writer(vfs.clone(), &tmp.path().join("leader"), 3, 1024).with_origin_node(7);
    let mut shipped = Vec::new();
    for count in [1, 4, 2, 9, 3, 5] {
        append_seqs(&mut leader, count).unwrap();
        shipped.push(leader.last_batch().to_vec());
    }
    leader.sync().unwrap();
    let follower_dir = tmp.path().join("follower");
    let mut follower = new_writer(vfs.clone(), &follower_dir, 3, 1024);
    let refused = |r: Result<_, WalError>| matches!(r, Err(WalError::Refused(_)));
    assert!(refused(follower.append_encoded(&shipped[1])), "not the next seq");
    let mut flipped = shipped[0].clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(refused(follower.append_encoded(&flipped)), "payload CRC");
    flipped = shipped[0].clone();
    flipped[20] ^= 1;
    assert!(refused(follower.append_encoded(&flipped)), "header CRC");
    let mut trailing = shipped[0].clone();
    trailing.push(0);
    assert!(refused(follower.append_encoded(&trailing)), "trailing bytes");
    let mut other = new_writer(vfs.clone(), &tmp.path().join("other"), 4, 1024);
    assert!(refused(other.append_encoded(&shipped[0])), "another shard's log");
    for bytes in &shipped {
        let info = follower.append_encoded(bytes).unwrap();
        assert_eq!(info.bytes as usize, bytes.len());
        assert_eq!(follower.last_batch(), &bytes[..]);
    }
    follower.sync().unwrap();
    assert_eq!(follower.next_seq(), leader.next_seq());
    // Byte for byte: both logs hold the same batches (origin 7 included), segment files aside.
    let concat = |dir: &Path| -> Vec<u8> {
        let segs = list_segments(&StdVfs, dir).unwrap();
        segs.iter().flat_map(|s| std::fs::read(&s.path).unwrap()).collect()
    };
    assert_eq!(concat(&follower_dir), concat(&tmp.path().join("leader")));
    let (header, _, _) = decode_batch(&concat(&follower_dir)).unwrap();
    assert_eq!(header.origin_node, 7);
}

#[test]
fn read_range_tails_a_file_on_both_file_systems() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimVfs::new();
    let path_on = |vfs: &dyn Vfs, dir: &Path| {
        vfs.create_dir_all(dir).unwrap();
        let path = dir.join("f");
        let mut file = vfs.create_new(&path).unwrap();
        file.write_all(b"0123456789").unwrap();
        path
    };
    for (vfs, dir) in [(&StdVfs as &dyn Vfs, tmp.path().to_path_buf()), (&sim as &dyn Vfs, "/sim".into())] {
        let path = path_on(vfs, &dir);
        assert_eq!(vfs.read_range(&path, 3, 4).unwrap(), b"3456");
        assert_eq!(vfs.read_range(&path, 8, 10).unwrap(), b"89", "short at the end");
        assert_eq!(vfs.read_range(&path, 12, 4).unwrap(), b"", "nothing past it");
    }
}
