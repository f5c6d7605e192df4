//! Tests of the zero-filled reserve (`WalWriter::reserve_ahead`) on the real file system:
//! batches overwrite it without growing the file, a crash leaves zeros that recovery takes
//! for the log's end and cuts off, rolled-over and released segments end at their last
//! batch, shipping reads stop at the zeros, and zeros are a torn tail only where one may be.

use std::path::Path;
use std::sync::Arc;

use crate::wal::reader::{Repair, scan_shard};
use crate::wal::ship::read_batches;
use crate::wal::tests_support::*;
use crate::wal::vfs::{StdVfs, Vfs};
use crate::wal::writer::{RESERVE_STEP_MAX, RESERVE_STEP_MIN, WalWriter};

fn disk_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn std_vfs() -> Arc<dyn Vfs> {
    Arc::new(StdVfs)
}

#[test]
fn batches_overwrite_the_reserve_and_a_crash_leaves_zeros_that_recovery_cuts() {
    let tmp = tempfile::tempdir().unwrap();
    let (vfs, dir) = (std_vfs(), tmp.path().join("wal"));
    let mut writer = new_writer(vfs.clone(), &dir, 0, 1 << 20);
    append_seqs(&mut writer, 3).unwrap();
    writer.sync().unwrap();
    writer.reserve_ahead().unwrap();
    let path = writer.current_segment().to_path_buf();
    let logical = writer.current_segment_len();
    assert_eq!(disk_len(&path), logical + RESERVE_STEP_MIN, "zero-filled past the last batch");
    append_seqs(&mut writer, 4).unwrap();
    writer.sync().unwrap();
    assert_eq!(disk_len(&path), logical + RESERVE_STEP_MIN, "the batch went into the reserve");
    let written = writer.current_segment_len();
    let next = writer.next_seq();
    drop(writer); // a crash: nothing released the reserve

    let (report, records) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::ReadOnly).unwrap();
    assert_seqs(&records, 1, next);
    assert_eq!((report.next_seq, report.torn_tail), (next, None), "zeros are the end, not a torn batch");
    assert_eq!(disk_len(&path), logical + RESERVE_STEP_MIN, "a report-only scan changes nothing");
    let (report, _) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::Truncate).unwrap();
    assert_eq!(disk_len(&path), written, "repair cuts the zeros off");
    let mut writer = WalWriter::open(vfs.clone(), &dir, 0, next, report.tail_segment, 1 << 20).unwrap();
    append_seqs(&mut writer, 2).unwrap();
    writer.sync().unwrap();
    let (_, records) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::ReadOnly).unwrap();
    assert_seqs(&records, 1, next + 2);
}

#[test]
fn rolled_over_and_released_segments_end_at_their_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (vfs, dir) = (std_vfs(), tmp.path().join("wal"));
    let mut writer = new_writer(vfs.clone(), &dir, 1, 2 * RESERVE_STEP_MIN);
    for n in 0..3000 {
        append_seqs(&mut writer, 1 + n % 5).unwrap();
        if n % 50 == 0 {
            writer.sync().unwrap();
        }
        writer.reserve_ahead().unwrap();
    }
    let current = writer.current_segment().to_path_buf();
    assert!(disk_len(&current) > writer.current_segment_len(), "the last segment has a reserve");
    writer.release().unwrap();
    assert_eq!(disk_len(&current), writer.current_segment_len());
    let next = writer.next_seq();
    drop(writer);
    let report =
        scan_shard(vfs.as_ref(), &dir, 1, 1, Repair::ReadOnly, |_, _| Ok::<(), crate::wal::WalError>(()))
            .unwrap();
    assert!(report.segments.len() >= 3, "rolled over: {} segments", report.segments.len());
    for summary in &report.segments {
        assert_eq!(
            disk_len(&summary.path),
            summary.bytes,
            "{} ends at its last batch",
            summary.path.display()
        );
    }
    assert_eq!(report.next_seq, next);
}

#[test]
fn shipping_reads_of_a_live_segment_stop_at_the_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let (vfs, dir) = (std_vfs(), tmp.path().join("wal"));
    let mut writer = new_writer(vfs.clone(), &dir, 0, 1 << 20);
    append_seqs(&mut writer, 2).unwrap();
    append_seqs(&mut writer, 3).unwrap();
    writer.sync().unwrap();
    writer.reserve_ahead().unwrap();
    let (batches, cursor) = read_batches(vfs.as_ref(), &[&dir], 0, 1, u64::MAX, None).unwrap();
    assert_eq!(batches.len(), 2);
    let cursor = cursor.expect("a cursor after the batches");
    assert_eq!(cursor.seq, 6);
    append_seqs(&mut writer, 1).unwrap();
    let (more, _) = read_batches(vfs.as_ref(), &[&dir], 0, 6, u64::MAX, Some(&cursor)).unwrap();
    assert_eq!(more.len(), 1, "the batch written into the reserve is read, the zeros are not");
}

#[test]
fn zeros_ending_an_earlier_segment_are_corruption_and_a_torn_batch_before_zeros_is_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let (vfs, dir) = (std_vfs(), tmp.path().join("wal"));
    let mut writer = new_writer(vfs.clone(), &dir, 0, 4096);
    while segment_paths(vfs.as_ref(), &dir, 0).len() < 2 {
        append_seqs(&mut writer, 3).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);
    let paths = segment_paths(vfs.as_ref(), &dir, 0);
    let append = |path: &Path, bytes: &[u8]| {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
    };

    // The last segment: half a batch, then zeros. A torn write, reported as one.
    let mut torn = vec![0u8; 4096];
    torn[..4].copy_from_slice(&crate::wal::header::BATCH_MAGIC.to_le_bytes());
    torn[4..40].fill(0xab);
    append(&paths[1], &torn);
    let (report, _) = read_all(vfs.as_ref(), &dir, 0, 1, Repair::ReadOnly).unwrap();
    assert!(report.torn_tail.is_some(), "a torn batch is reported even when zeros follow it");

    // An earlier segment ending in zeros is not the writer's reserve (that is released
    // before the next segment exists): corruption, never skipped.
    append(&paths[0], &[0u8; 512]);
    let (segment, _, _) = corruption_at(read_all(vfs.as_ref(), &dir, 0, 1, Repair::Truncate).unwrap_err());
    assert_eq!(segment, paths[0]);
}

#[test]
fn reserving_ends_at_the_segment_limit_and_keeps_within_a_step_of_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (vfs, dir) = (std_vfs(), tmp.path().join("wal"));
    let limit = 20 * RESERVE_STEP_MIN;
    let mut writer = new_writer(vfs.clone(), &dir, 0, limit);
    let path = writer.current_segment().to_path_buf();
    let mut slices = 0;
    while writer.current_segment_len() < limit {
        append_seqs(&mut writer, 20).unwrap();
        // As the shard writer does between groups: slices until nothing more is wanted.
        while writer.reserve_slice().unwrap() {
            slices += 1;
            assert!(slices < 10_000, "reserving never ends");
        }
        assert!(!writer.reserve_wanted() || writer.current_segment_len() >= limit);
        let (len, disk) = (writer.current_segment_len(), disk_len(&path));
        assert!(disk <= limit.max(len), "past the segment limit: {disk}");
        assert!(disk - len <= RESERVE_STEP_MAX, "more than a step ahead: {}", disk - len);
    }
    assert!(slices > 5, "reserved in slices: {slices}");
    assert!(!writer.reserve_wanted(), "a full segment wants no reserve");
}
