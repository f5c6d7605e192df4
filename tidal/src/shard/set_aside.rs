//! Setting a divergent tail aside: a replica's records that the shard's current leader
//! never had (written under an older epoch, never committed) leave the log intact.
//!
//! The writer thread fsyncs, copies the exact bytes of every batch from `from_seq` on into
//! `divergent/` (fsynced, named by shard, seq and epoch: kept for reconciliation, never
//! replayed), cuts the WAL back to `from_seq - 1`, removes snapshots that cover the cut
//! records, and rebuilds the shard's state by recovering it from what is left (newest
//! snapshot below the cut, then the WAL), fixing the store-wide ranking on the way.
//! A crash in the middle leaves either the old log (and the copy, harmless) or the cut one:
//! the copy is durable before the first byte of the log is removed.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::state::{Scoring, ShardParams};
use super::writer::ShardWriter;
use super::{ShardPaths, open_shard, snapshot};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::wal::WalError;
use crate::wal::ship::{cut_log, read_batches};
use crate::wal::writer::WalWriter;

/// Directory (in the data directory) that holds set-aside batches.
pub const DIVERGENT_DIR: &str = "divergent";

/// What the writer needs to recover its shard again.
pub(crate) struct Reopen {
    pub options: Options,
    pub paths: ShardPaths,
    pub params: ShardParams,
    pub scoring: Scoring,
    pub divergent_dir: PathBuf,
}

/// What a set-aside moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetAsideReport {
    pub shard: u32,
    pub from_seq: u64,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// Where the batches went (`None` when the log held nothing from `from_seq`).
    pub file: Option<PathBuf>,
}

impl ShardWriter {
    pub(super) fn set_aside(&mut self, from_seq: u64, reopen: &Arc<Reopen>) -> Result<SetAsideReport> {
        if let Some(reason) = &self.failed {
            return Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() });
        }
        self.settle_snapshot();
        self.wal.sync().map_err(|e| self.fail_with(e))?;
        let paths = &reopen.paths;
        let vfs = &*reopen.options.vfs;
        let dirs = [paths.wal_dir.as_path(), paths.archive_dir.as_path()];
        let (batches, _) =
            read_batches(vfs, &dirs, self.shard, from_seq, u64::MAX, None).map_err(ship_error)?;
        let mut report =
            SetAsideReport { shard: self.shard, from_seq, batches: 0, records: 0, bytes: 0, file: None };
        if batches.is_empty() {
            return Ok(report);
        }
        report.file = Some(self.save_divergent(reopen, from_seq, &batches, &mut report)?);
        let tail = cut_log(vfs, &dirs, self.shard, from_seq).map_err(ship_error)?;
        for (seq, path) in snapshot::list(vfs, &paths.snapshot_dir, self.shard)? {
            if seq >= from_seq {
                vfs.remove_file(&path).map_err(|e| Error::Wal(WalError::io("remove snapshot", &path, e)))?;
            }
        }
        vfs.sync_dir(&paths.snapshot_dir)
            .map_err(|e| Error::Wal(WalError::io("sync dir", &paths.snapshot_dir, e)))?;
        self.recover_again(reopen, tail, from_seq)?;
        tracing::warn!(shard = self.shard, from_seq, batches = report.batches, records = report.records, file = ?report.file, "divergent tail set aside");
        Ok(report)
    }

    fn fail_with(&mut self, e: WalError) -> Error {
        self.fail(&e);
        self.failed_error()
    }

    pub(super) fn save_divergent(
        &self,
        reopen: &Reopen,
        from_seq: u64,
        batches: &[Vec<u8>],
        report: &mut SetAsideReport,
    ) -> Result<PathBuf> {
        let dir = &reopen.divergent_dir;
        let vfs = &*reopen.options.vfs;
        let io = |what, e| Error::Wal(WalError::io(what, dir, e));
        vfs.create_dir_all(dir).map_err(|e| io("create divergent dir", e))?;
        let mut n = 0;
        let path = loop {
            let name = format!("s{:04}-{from_seq:020}-{n}.wal", self.shard);
            let path = dir.join(name);
            if vfs.file_len(&path).is_err() {
                break path;
            }
            n += 1;
        };
        let mut file = vfs.create_new(&path).map_err(|e| io("create divergent file", e))?;
        for bytes in batches {
            file.write_all(bytes).map_err(|e| io("write divergent file", e))?;
            let (header, _) =
                crate::wal::BatchHeader::decode(bytes).map_err(|e| Error::InvalidState(e.to_string()))?;
            report.batches += 1;
            report.records += u64::from(header.record_count);
            report.bytes += bytes.len() as u64;
        }
        file.sync_data().map_err(|e| io("sync divergent file", e))?;
        vfs.sync_dir(dir).map_err(|e| io("sync divergent dir", e))?;
        Ok(path)
    }

    /// Recovers the shard from the cut log and swaps the state, the WAL writer and the
    /// ranking's share of this shard.
    pub(super) fn recover_again(
        &mut self,
        reopen: &Reopen,
        tail: Option<PathBuf>,
        from_seq: u64,
    ) -> Result<()> {
        let opened = open_shard(
            &reopen.options,
            &reopen.paths,
            self.shard,
            (&reopen.params, reopen.scoring),
            &self.clock,
        )?;
        let next_seq = opened.scan.next_seq.max(opened.state.applied_seq + 1);
        if next_seq != from_seq {
            return Err(Error::InvalidState(format!(
                "shard {}: after setting aside from seq {from_seq} the log continues at {next_seq}",
                self.shard
            )));
        }
        let tail = tail.or(opened.scan.tail_segment.clone());
        let vfs = reopen.options.vfs.clone();
        let wal = WalWriter::open(
            vfs,
            &reopen.paths.wal_dir,
            self.shard,
            next_seq,
            tail,
            reopen.options.segment_bytes_max,
        )?
        .with_origin_node(self.node_id);
        let weights = reopen.scoring.weights;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        {
            let mut index = self.ranking.write();
            for (_, item, entry) in state.items.iter_keys() {
                index.add_key(item, -entry.decayed.score(&weights));
            }
            for (_, item, entry) in opened.state.items.iter_keys() {
                index.add_key(item, entry.decayed.score(&weights));
            }
            // Items only the set-aside records had (here): gone, unless another shard has them.
            for (_, item, _) in state.items.iter().filter(|(_, k, _)| !opened.state.items.contains_key(k)) {
                index.forget_if_zero(item);
            }
        }
        *state = opened.state;
        self.wal = wal;
        self.last_snapshot_seq = self.last_snapshot_seq.min(next_seq - 1);
        self.applied.publish(next_seq - 1);
        Ok(())
    }
}

fn ship_error(e: crate::wal::ship::ShipError) -> Error {
    match e {
        crate::wal::ship::ShipError::Wal(w) => Error::Wal(w),
        other => Error::InvalidState(other.to_string()),
    }
}
