//! The whole signal history of a store, for export and offline evaluation.
//!
//! Snapshots let a shard drop the WAL segments they cover. With `Options::wal_archive` on
//! (the default) those segments are moved, not deleted, to `archive/`: the signals are the
//! training data. [`scan_history`] reads a shard's archived segments and then its live WAL,
//! in seq order, read-only, so it can run beside a writing store. It reports where the
//! history starts and any hole (segments removed while archiving was off).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::signal::SignalRef;
use crate::wal::vfs::Vfs;
use crate::wal::{Repair, WalError, list_segments, scan_shard_records};

/// Directory of archived segments inside the data directory.
pub const ARCHIVE_DIR: &str = "archive";
/// Directory of live segments inside the data directory.
pub const WAL_DIR: &str = "wal";

/// What a history scan of one shard covered.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistoryReport {
    pub shard: u32,
    /// Seq of the first record available (1 when the history is complete).
    pub first_seq: u64,
    /// One past the last record read.
    pub next_seq: u64,
    /// Records handed to the callback.
    pub records: u64,
    /// `(from, to)`: seqs `from..to` are missing between the archive and the WAL.
    pub hole: Option<(u64, u64)>,
}

/// Moves the segments of `shard` whose records all lie below `seq` from `wal_dir` to
/// `archive_dir` (never the last segment), making both directories durable.
pub fn archive_segments_before(
    vfs: &dyn Vfs,
    wal_dir: &Path,
    archive_dir: &Path,
    shard: u32,
    seq: u64,
) -> Result<Vec<PathBuf>, WalError> {
    let segments: Vec<_> = list_segments(vfs, wal_dir)?.into_iter().filter(|s| s.shard == shard).collect();
    let mut moved = Vec::new();
    for pair in segments.windows(2) {
        if pair[1].first_seq > seq {
            break;
        }
        let file_name = pair[0].path.file_name().map(PathBuf::from).unwrap_or_default();
        let to = archive_dir.join(file_name);
        vfs.rename(&pair[0].path, &to).map_err(|e| WalError::io("archive segment", &pair[0].path, e))?;
        moved.push(to);
    }
    if !moved.is_empty() {
        // The new entries first: a crash between the two syncs may leave a segment in both
        // places' histories, never in neither.
        vfs.sync_dir(archive_dir).map_err(|e| WalError::io("fsync archive directory", archive_dir, e))?;
        vfs.sync_dir(wal_dir).map_err(|e| WalError::io("fsync WAL directory", wal_dir, e))?;
    }
    Ok(moved)
}

/// Reads every record of `shard` with seq below `until_seq` (archive first, then the WAL),
/// in seq order, without modifying anything.
pub fn scan_history(
    vfs: &dyn Vfs,
    data_dir: &Path,
    shard: u32,
    until_seq: u64,
    mut on_record: impl FnMut(u64, Hlc, SignalRef<'_>) -> Result<()>,
) -> Result<HistoryReport> {
    let archive = data_dir.join(ARCHIVE_DIR);
    let wal = data_dir.join(WAL_DIR);
    let first_of = |dir: &Path| -> Result<Option<u64>> {
        let all = if vfs.list_dir(dir).is_ok() { list_segments(vfs, dir)? } else { Vec::new() };
        Ok(all.into_iter().find(|s| s.shard == shard).map(|s| s.first_seq))
    };
    let mut report = HistoryReport { shard, ..HistoryReport::default() };
    let mut records = 0u64;
    let mut deliver = |seq: u64, hlc: Hlc, signal: SignalRef<'_>| -> Result<()> {
        if seq < until_seq {
            records += 1;
            on_record(seq, hlc, signal)?;
        }
        Ok(())
    };
    let mut next = None;
    if let Some(first) = first_of(&archive)? {
        report.first_seq = first;
        let scanned =
            scan_shard_records::<Error>(vfs, &archive, shard, first, Repair::ReadOnly, &mut deliver)?;
        next = Some(scanned.next_seq);
    }
    if let Some(first) = first_of(&wal)? {
        let from = next.map_or(first, |n: u64| n.max(first));
        if let Some(n) = next.filter(|n| first > *n) {
            report.hole = Some((n, first));
        }
        if next.is_none() {
            report.first_seq = first;
        }
        let scanned = scan_shard_records::<Error>(vfs, &wal, shard, from, Repair::ReadOnly, &mut deliver)?;
        next = Some(scanned.next_seq);
    }
    report.next_seq = next.unwrap_or(1).min(until_seq.max(1));
    report.records = records;
    Ok(report)
}
