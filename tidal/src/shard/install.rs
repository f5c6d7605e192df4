//! Installing a snapshot a leader shipped: what a replica does when it is behind what the
//! leader's log still holds.
//!
//! The writer thread decodes the bytes with every check a local snapshot gets (both CRCs,
//! the shard, the pinned parameters), refuses a snapshot that is not ahead of its own log,
//! writes it durably under its seq, retires every WAL segment of the shard (archived when
//! archiving is on, else deleted: the snapshot covers all of them), and recovers the shard
//! from the new snapshot, so the log continues at the snapshot's seq + 1.
//!
//! Crash safety: the snapshot is durable before the first segment goes. A crash after it
//! and before the segments are gone leaves a WAL that ends below the snapshot; recovery
//! then starts a fresh segment at the snapshot's seq + 1 and retirement removes the old ones
//! later (see `wal::reader`). Records of its own after the point where its log and the
//! leader's part (`keep_through`) are first copied to `divergent/`, as a set-aside does (an
//! install never drops a divergent tail), and cut from the log (whole batches) before the
//! snapshot is written, so a crash never replays them on top of it.

use std::sync::Arc;

use super::set_aside::{Reopen, SetAsideReport};
use super::snapshot;
use super::writer::ShardWriter;
use crate::error::{Error, Result};
use crate::wal::ship::{ShipError, cut_log};
use crate::wal::{Repair, WalError, reader};

impl ShardWriter {
    /// Installs `bytes` (a snapshot file); the own records after `keep_through` (never the
    /// leader's) are set aside first, whole batches. Returns the snapshot's seq and what
    /// was set aside.
    pub(super) fn install_snapshot(
        &mut self,
        bytes: &[u8],
        keep_through: u64,
        reopen: &Arc<Reopen>,
    ) -> Result<(u64, SetAsideReport)> {
        if let Some(reason) = &self.failed {
            return Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() });
        }
        let state = snapshot::decode(bytes, self.shard, &reopen.params)
            .map_err(|e| Error::Snapshot(format!("shard {}: shipped snapshot refused: {e}", self.shard)))?;
        let seq = state.applied_seq;
        drop(state);
        let own_end = self.wal.next_seq().saturating_sub(1);
        if seq <= keep_through.min(own_end) {
            return Err(Error::InvalidRequest(format!(
                "shard {}: snapshot at seq {seq} is not ahead of the log kept, which ends at seq {}",
                self.shard,
                keep_through.min(own_end)
            )));
        }
        self.settle_snapshot();
        self.wal.sync().map_err(|e| {
            self.fail(&e);
            self.failed_error()
        })?;
        let mut report = SetAsideReport {
            shard: self.shard,
            from_seq: keep_through + 1,
            batches: 0,
            records: 0,
            bytes: 0,
            file: None,
        };
        let paths = &reopen.paths;
        let vfs = &*reopen.options.vfs;
        if own_end > keep_through {
            let divergent = self.divergent_batches(reopen, keep_through + 1)?;
            report.file = Some(self.save_divergent(reopen, keep_through + 1, &divergent, &mut report)?);
            // Cut before the snapshot is written: a crash after it must not replay these
            // records on top of the snapshot.
            if let Some(first) = divergent.first() {
                let (header, _) =
                    crate::wal::BatchHeader::decode(first).map_err(|e| Error::InvalidState(e.to_string()))?;
                let dirs = [paths.wal_dir.as_path(), paths.archive_dir.as_path()];
                cut_log(vfs, &dirs, self.shard, header.first_seq).map_err(|e| match e {
                    ShipError::Wal(w) => Error::Wal(w),
                    other => Error::InvalidState(other.to_string()),
                })?;
                // Own snapshots that cover cut records would outrank the leader's.
                for (snap_seq, path) in snapshot::list(vfs, &paths.snapshot_dir, self.shard)? {
                    if snap_seq >= header.first_seq {
                        vfs.remove_file(&path).map_err(|e| WalError::io("remove snapshot", &path, e))?;
                    }
                }
                vfs.sync_dir(&paths.snapshot_dir)
                    .map_err(|e| WalError::io("sync dir", &paths.snapshot_dir, e))?;
            }
        }
        let path = snapshot::write_bytes(vfs, &paths.snapshot_dir, self.shard, seq, bytes)?;
        let archive = reopen.options.wal_archive.then_some(paths.archive_dir.as_path());
        let retired = retire_all_segments(vfs, &paths.wal_dir, archive, self.shard)?;
        self.recover_again(reopen, None, seq + 1)?;
        self.last_snapshot_seq = seq;
        tracing::warn!(shard = self.shard, seq, retired, set_aside = report.records, path = %path.display(), "snapshot installed from the leader");
        Ok((seq, report))
    }

    /// The exact bytes of every batch that holds a record from `from_seq` on, in the
    /// archive (segments the own snapshots covered) and the WAL.
    fn divergent_batches(&self, reopen: &Reopen, from_seq: u64) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let vfs = &*reopen.options.vfs;
        let mut last = 0u64;
        for dir in [&reopen.paths.archive_dir, &reopen.paths.wal_dir] {
            let segments = reader::list_segments(vfs, dir)?;
            let Some(first) = segments.iter().find(|s| s.shard == self.shard).map(|s| s.first_seq) else {
                continue;
            };
            let from = from_seq.max(first);
            reader::scan_shard::<Error>(vfs, dir, self.shard, from, Repair::ReadOnly, |h, p| {
                if h.first_seq > last {
                    last = h.next_seq() - 1;
                    out.push([h.encode(), p.to_vec()].concat());
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// Moves (to `archive`) or deletes every WAL segment of `shard`; returns how many went.
fn retire_all_segments(
    vfs: &dyn crate::wal::vfs::Vfs,
    wal_dir: &std::path::Path,
    archive: Option<&std::path::Path>,
    shard: u32,
) -> Result<usize> {
    let segments: Vec<_> =
        reader::list_segments(vfs, wal_dir)?.into_iter().filter(|s| s.shard == shard).collect();
    if let Some(archive) = archive {
        vfs.create_dir_all(archive).map_err(|e| WalError::io("create archive dir", archive, e))?;
    }
    for segment in &segments {
        let path = &segment.path;
        match archive {
            Some(dir) => {
                let name = path.file_name().expect("segment file name");
                vfs.rename(path, &dir.join(name)).map_err(|e| WalError::io("archive segment", path, e))?;
            }
            None => vfs.remove_file(path).map_err(|e| WalError::io("remove segment", path, e))?,
        }
    }
    if !segments.is_empty() {
        vfs.sync_dir(wal_dir).map_err(|e| WalError::io("sync dir", wal_dir, e))?;
        if let Some(dir) = archive {
            vfs.sync_dir(dir).map_err(|e| WalError::io("sync archive dir", dir, e))?;
        }
    }
    Ok(segments.len())
}
