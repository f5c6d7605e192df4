//! Crash-image tests: write through [`SimVfs`], cut the power under every [`TornWrite`]
//! policy and many seeds, recover, and check that every synced batch survived, that the log
//! is a gap-free prefix of what was written, and that the repaired log takes new appends.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::wal::reader::Repair;
use crate::wal::segment::SegmentName;
use crate::wal::sim_vfs::{SimVfs, TornWrite};
use crate::wal::tests_support::*;
use crate::wal::vfs::Vfs;
use crate::wal::writer::WalWriter;

const DIR: &str = "/db/wal";

/// What the writer had done when the power went.
struct Written {
    /// Every seq below this was fsynced (by `sync` or by a rollover).
    durable_next: u64,
    /// Every seq below this was written.
    written_next: u64,
}

fn random_workload(vfs: &SimVfs, rng: &mut StdRng) -> Written {
    let segment_bytes_max = rng.random_range(200..2_000);
    let mut writer = new_writer(Arc::new(vfs.clone()), Path::new(DIR), 0, segment_bytes_max);
    let mut synced_next = 1;
    for _ in 0..rng.random_range(1..40) {
        append_seqs(&mut writer, rng.random_range(1..6)).unwrap();
        if rng.random_bool(0.3) {
            writer.sync().unwrap();
            synced_next = writer.next_seq();
        }
    }
    // A rollover synced everything before the current segment.
    let current = SegmentName::from_path(writer.current_segment()).unwrap();
    Written { durable_next: synced_next.max(current.first_seq), written_next: writer.next_seq() }
}

#[test]
fn every_synced_batch_survives_every_crash() {
    let mut torn_tails = 0;
    for seed in 0..100 {
        for policy in TornWrite::ALL {
            let mut rng = StdRng::seed_from_u64(seed);
            let vfs = SimVfs::new();
            let written = random_workload(&vfs, &mut rng);
            let image = vfs.crash_image(policy, seed);
            let ctx = format!("seed {seed}, {policy:?}");
            let (report, recs) = read_all(&image, Path::new(DIR), 0, 1, Repair::Truncate)
                .unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
            let next = report.next_seq;
            assert!(
                next >= written.durable_next,
                "{ctx}: lost synced data ({next} < {})",
                written.durable_next
            );
            assert!(next <= written.written_next, "{ctx}");
            assert_seqs(&recs, 1, next);
            match policy {
                TornWrite::None => assert_eq!(next, written.durable_next, "{ctx}"),
                TornWrite::All => assert_eq!((next, report.torn_tail), (written.written_next, None), "{ctx}"),
                _ => torn_tails += usize::from(report.torn_tail.is_some()),
            }
            continue_after_recovery(&image, next, report.tail_segment, &ctx);
        }
    }
    // The random policies must actually have produced torn tails to repair.
    assert!(torn_tails > 50, "only {torn_tails} torn tails");
}

/// The repaired image takes new batches, and they survive the next crash.
fn continue_after_recovery(image: &SimVfs, next: u64, tail: Option<std::path::PathBuf>, ctx: &str) {
    let mut writer = WalWriter::open(Arc::new(image.clone()), Path::new(DIR), 0, next, tail, 500).unwrap();
    append_seqs(&mut writer, 3).unwrap();
    writer.sync().unwrap();
    let again = image.crash_image(TornWrite::RandomPrefixGarbage, next);
    let (report, recs) = read_all(&again, Path::new(DIR), 0, 1, Repair::Truncate).unwrap();
    assert_eq!(report.next_seq, next + 3, "{ctx}");
    assert_seqs(&recs, 1, next + 3);
}

#[test]
fn unsynced_directory_changes_are_undone_by_a_crash() {
    let vfs = SimVfs::new();
    let dir = Path::new(DIR);
    vfs.create_dir_all(dir).unwrap();
    let (kept, lost, renamed, removed) =
        (dir.join("kept"), dir.join("lost"), dir.join("renamed"), dir.join("removed"));
    for path in [&kept, &removed] {
        let mut file = vfs.create_new(path).unwrap();
        file.write_all(b"durable").unwrap();
        file.sync_data().unwrap();
    }
    vfs.sync_dir(dir).unwrap();
    // A new file, fsynced, whose directory entry never was: it vanishes.
    let mut file = vfs.create_new(&lost).unwrap();
    file.write_all(b"synced data, unsynced name").unwrap();
    file.sync_data().unwrap();
    vfs.rename(&kept, &renamed).unwrap();
    vfs.remove_file(&removed).unwrap();
    let image = vfs.crash_image(TornWrite::All, 1);
    let mut names = image.list_dir(dir).unwrap();
    names.sort();
    assert_eq!(names, ["kept", "removed"]);
    assert_eq!(image.read_file(&kept).unwrap(), b"durable");
    // Once the directory is synced, all three changes are durable.
    vfs.sync_dir(dir).unwrap();
    let image = vfs.crash_image(TornWrite::None, 1);
    let mut names = image.list_dir(dir).unwrap();
    names.sort();
    assert_eq!(names, ["lost", "renamed"]);
    assert_eq!(image.read_file(&lost).unwrap(), b"synced data, unsynced name");
}

#[test]
fn unsynced_bytes_follow_the_policy() {
    let vfs = SimVfs::new();
    let path = Path::new(DIR).join("f");
    vfs.create_dir_all(Path::new(DIR)).unwrap();
    let mut file = vfs.create_new(&path).unwrap();
    vfs.sync_dir(Path::new(DIR)).unwrap();
    file.write_all(b"0123").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"456789").unwrap();
    assert_eq!(vfs.crash_image(TornWrite::None, 0).file_bytes(&path).unwrap(), b"0123");
    assert_eq!(vfs.crash_image(TornWrite::All, 0).file_bytes(&path).unwrap(), b"0123456789");
    for seed in 0..50 {
        let prefix = vfs.crash_image(TornWrite::RandomPrefix, seed).file_bytes(&path).unwrap();
        assert!(b"0123456789".starts_with(&prefix) && prefix.len() >= 4);
        let garbage = vfs.crash_image(TornWrite::RandomPrefixGarbage, seed).file_bytes(&path).unwrap();
        assert!(garbage.starts_with(b"0123") && garbage.len() <= 10);
    }
}

/// What the writer's rollover guards against: a segment whose creation was never made
/// durable vanishes with its fsynced batch (first half); the writer does sync the
/// directory, so its fsynced batch in a new segment survives (second half).
#[test]
fn rollover_makes_the_new_segment_durable() {
    let vfs = SimVfs::new();
    let dir = Path::new(DIR);
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 1);
    append_seqs(&mut writer, 2).unwrap();
    writer.sync().unwrap();
    // By hand, as a writer that forgot sync_dir would do it: create, write, sync_data.
    let forgotten = SegmentName::new(dir, 0, 3).path;
    let mut file = vfs.create_new(&forgotten).unwrap();
    file.write_all(&raw_batch_bytes(writer.shard())).unwrap();
    file.sync_data().unwrap();
    let image = vfs.crash_image(TornWrite::All, 7);
    assert!(!image.exists(&forgotten), "a create without sync_dir is lost");
    let (report, _) = read_all(&image, dir, 0, 1, Repair::Truncate).unwrap();
    assert_eq!(report.next_seq, 3, "the fsynced batch in the forgotten segment is gone");

    // The real writer: rollover (segment max is 1 byte) syncs the directory.
    let vfs = SimVfs::new();
    let mut writer = new_writer(Arc::new(vfs.clone()), dir, 0, 1);
    append_seqs(&mut writer, 2).unwrap();
    append_seqs(&mut writer, 2).unwrap();
    assert_eq!(writer.current_segment(), SegmentName::new(dir, 0, 3).path);
    writer.sync().unwrap();
    let image = vfs.crash_image(TornWrite::None, 7);
    assert!(image.exists(&SegmentName::new(dir, 0, 3).path));
    let (report, recs) = read_all(&image, dir, 0, 1, Repair::Truncate).unwrap();
    assert_eq!(report.next_seq, 5);
    assert_seqs(&recs, 1, 5);
}

/// Encodes (without writing it to the writer's file) the batch seqs 3..5 would be.
fn raw_batch_bytes(shard: u32) -> Vec<u8> {
    let owned: Vec<_> = (3..5).map(signal).collect();
    let recs: Vec<_> = owned.iter().enumerate().map(|(i, s)| (hlc_of(3 + i as u64), s.as_ref())).collect();
    let mut buf = Vec::new();
    crate::wal::segment::encode_batch_v2_into(&mut buf, shard, 1, 3, &recs).unwrap();
    buf
}
