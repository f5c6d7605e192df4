//! One shard: its state, its writer thread, and how it opens (newest valid snapshot plus the
//! WAL after it). [`router::ShardRouter`] decides which shard owns a user.
//!
//! Opening never produces a wrong state: a damaged snapshot is skipped in favour of an older
//! one or of the WAL from the start; if the records needed are gone, opening fails and says
//! which seq is missing.

pub mod applied;
pub mod apply_group;
pub(crate) mod cow;
pub mod digest;
pub mod engine;
mod install;
pub mod role;
pub mod router;
pub mod set_aside;
pub mod snapshot;
pub(crate) mod snapshot_job;
pub mod state;
mod syncer;
pub(crate) mod tail;
pub mod user;
pub(crate) mod writer;
mod writer_replica;
mod writer_snapshot;

/// Directory (in the data directory) that holds shard snapshots.
pub const SNAPSHOT_DIR: &str = "snapshots";

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::state::{Scoring, ShardParams, ShardState};
use crate::error::{Error, Result};
use crate::hlc::HybridClock;
use crate::options::{Options, PROGRESS_EVERY_RECORDS, RecoveryProgress};
use crate::wal::reader::{self, Repair, ScanReport, TornTail};
use crate::wal::vfs::Vfs;

/// What opening one shard found and did.
#[derive(Clone, Debug, Serialize)]
pub struct ShardRecovery {
    pub shard: u32,
    /// Seq covered by the snapshot the shard started from, if any.
    pub snapshot_seq: Option<u64>,
    /// Snapshots that failed their checks, with the reason; each was skipped.
    pub skipped_snapshots: Vec<(PathBuf, String)>,
    pub segments: usize,
    pub batches: u64,
    /// Records applied from the WAL (after the snapshot).
    pub records_replayed: u64,
    pub wal_bytes: u64,
    /// A torn tail that was cut off, if one was found.
    pub torn_tail: Option<TornTailReport>,
    pub applied_seq: u64,
    pub elapsed: Duration,
}

/// A torn WAL tail that opening cut off.
#[derive(Clone, Debug, Serialize)]
pub struct TornTailReport {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

impl From<&TornTail> for TornTailReport {
    fn from(t: &TornTail) -> Self {
        TornTailReport {
            segment: t.segment.clone(),
            offset: t.offset,
            bytes_dropped: t.bytes_dropped,
            reason: t.reason.clone(),
        }
    }
}

/// Everything a shard's opening hands to the writer thread and the readers.
pub(crate) struct OpenedShard {
    pub state: ShardState,
    pub scan: ScanReport,
    pub recovery: ShardRecovery,
}

#[derive(Clone)]
pub(crate) struct ShardPaths {
    pub wal_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub archive_dir: PathBuf,
}

/// Opens one shard: newest usable snapshot, then replay of the WAL after it. Records are
/// applied with the store's pinned `params`; v1 batches (no origin in the header) are
/// credited to this store's node.
pub(crate) fn open_shard(
    options: &Options,
    paths: &ShardPaths,
    shard: u32,
    (params, scoring): (&ShardParams, Scoring),
    clock: &HybridClock,
) -> Result<OpenedShard> {
    let started = Instant::now();
    let vfs = &*options.vfs;
    let mut skipped = Vec::new();
    for (seq, path) in snapshot::list(vfs, &paths.snapshot_dir, shard)? {
        let loaded = vfs
            .read_file(&path)
            .map_err(|e| format!("read: {e}"))
            .and_then(|bytes| snapshot::decode(&bytes, shard, params).map_err(|e| e.to_string()));
        let mut state = match loaded {
            Ok(state) => state,
            Err(reason) => {
                tracing::warn!(shard, path = %path.display(), %reason, "snapshot skipped");
                skipped.push((path, reason));
                continue;
            }
        };
        debug_assert_eq!(state.applied_seq, seq);
        state.scoring = scoring;
        return replay(options, paths, state, Some(seq), skipped, clock, started);
    }
    let mut state = ShardState::new(shard, params.limits);
    state.scoring = scoring;
    // No usable snapshot: the archive (segments snapshots covered) still holds the history.
    let from_archive = replay_archive(vfs, &paths.archive_dir, &mut state, options.node_id, clock)?;
    if from_archive > 0 {
        tracing::warn!(shard, records = from_archive, "no usable snapshot; replayed the WAL archive");
    }
    let tried: Vec<String> = skipped.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    let mut opened = replay(options, paths, state, None, skipped, clock, started).map_err(|e| match e {
        Error::Wal(crate::wal::WalError::Missing { first_available, .. }) if !tried.is_empty() => {
            Error::Snapshot(format!(
                "shard {shard}: no usable snapshot ({}) and the WAL starts at seq {first_available}; \
             refusing to open with lost history",
                tried.join("; ")
            ))
        }
        other => other,
    })?;
    opened.recovery.records_replayed += from_archive;
    Ok(opened)
}

/// Applies the archived segments of the state's shard if they start at seq 1 (the whole
/// early history); returns the records applied. Read-only.
fn replay_archive(
    vfs: &dyn Vfs,
    archive: &std::path::Path,
    state: &mut ShardState,
    node_id: u32,
    clock: &HybridClock,
) -> Result<u64> {
    let shard = state.shard;
    let listed =
        if vfs.list_dir(archive).is_ok() { reader::list_segments(vfs, archive)? } else { Vec::new() };
    if listed.iter().find(|s| s.shard == shard).is_none_or(|s| s.first_seq != 1) {
        return Ok(0);
    }
    let mut applied = 0;
    reader::scan_shard_origin_batches::<Error>(
        vfs,
        archive,
        shard,
        1,
        Repair::ReadOnly,
        |origin, first_seq, records| {
            state.apply_group(first_seq, origin.unwrap_or(node_id), &records, |_| ());
            applied += records.len() as u64;
            Ok(())
        },
    )?;
    // Once, not per record: the clock is shared by every recovering shard.
    clock.observe_trusted(state.last_hlc);
    Ok(applied)
}

fn replay(
    options: &Options,
    paths: &ShardPaths,
    mut state: ShardState,
    snapshot_seq: Option<u64>,
    skipped_snapshots: Vec<(PathBuf, String)>,
    clock: &HybridClock,
    started: Instant,
) -> Result<OpenedShard> {
    let shard = state.shard;
    let vfs: &dyn Vfs = &*options.vfs;
    let from_seq = state.applied_seq + 1;
    clock.observe_trusted(state.last_hlc);
    let mut replayed = 0u64;
    let node_id = options.node_id;
    let scan = reader::scan_shard_origin_batches::<Error>(
        vfs,
        &paths.wal_dir,
        shard,
        from_seq,
        Repair::Truncate,
        |origin, first_seq, records| {
            state.apply_group(first_seq, origin.unwrap_or(node_id), &records, |_| ());
            let before = replayed;
            replayed += records.len() as u64;
            if before / PROGRESS_EVERY_RECORDS != replayed / PROGRESS_EVERY_RECORDS
                && let Some(progress) = &options.progress
            {
                progress(RecoveryProgress { shard, records_done: replayed });
            }
            Ok(())
        },
    )?;
    // Once, not per record: the clock is shared by every recovering shard.
    clock.observe_trusted(state.last_hlc);
    let recovery = ShardRecovery {
        shard,
        snapshot_seq,
        skipped_snapshots,
        segments: scan.segments.len(),
        batches: scan.batches,
        records_replayed: replayed,
        wal_bytes: scan.bytes,
        torn_tail: scan.torn_tail.as_ref().map(Into::into),
        applied_seq: state.applied_seq,
        elapsed: started.elapsed(),
    };
    Ok(OpenedShard { state, scan, recovery })
}

/// Shared handle to a shard's state for readers.
pub(crate) type SharedState = Arc<RwLock<ShardState>>;
