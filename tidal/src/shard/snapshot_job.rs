//! Snapshots off the write path: the shard's writer thread hands a consistent copy of its
//! state at one seq (taken a slice at a time between group commits, see `shard::cow`) to a
//! background thread, which encodes it, writes it atomically, prunes old snapshots and retires
//! the WAL segments they cover, while the writer goes on committing.
//!
//! Invariants: at most one job per shard runs at a time (the writer waits for a running one
//! before it starts another, and before it stops); the WAL is fsynced up to the copy's seq
//! before the copy is taken, so a snapshot never covers a record the WAL could still lose;
//! segments are only retired below the oldest kept snapshot, and the segment the writer
//! appends to is never among them (it has no successor). The copy costs memory: up to one
//! more shard state while a job runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::cow::StateCopy;
use super::snapshot;
use super::state::{ShardParams, ShardState};
use crate::error::Result;
use crate::history;
use crate::session::IdempotencyCopy;
use crate::wal::vfs::Vfs;
use crate::wal::{WalError, reader};

/// Where a shard's snapshots and retired segments go.
#[derive(Clone)]
pub(crate) struct SnapshotTarget {
    pub shard: u32,
    pub params: ShardParams,
    pub vfs: Arc<dyn Vfs>,
    pub snapshot_dir: PathBuf,
    pub wal_dir: PathBuf,
    /// Where covered segments go; `None` deletes them instead.
    pub archive_dir: Option<PathBuf>,
    /// Deleting (not archiving): the oldest seq a replica still needs (`u64::MAX`: none),
    /// and how many bytes of covered segments may be kept for it.
    pub hold: Arc<AtomicU64>,
    pub hold_bytes_max: u64,
    /// The shard's cached log tail: forgets what retention removes.
    pub tail: Arc<std::sync::Mutex<super::tail::TailCache>>,
}

/// A snapshot being written in the background.
pub(crate) struct SnapshotJob {
    /// The seq the snapshot covers.
    pub seq: u64,
    handle: JoinHandle<()>,
}

impl SnapshotJob {
    /// Starts writing `copy` (a copy the writer made). The outcome goes to `reply` when
    /// someone waits for it, else failures are logged (the WAL still holds everything).
    pub fn start(
        target: SnapshotTarget,
        (copy, idempotency): (StateCopy, IdempotencyCopy),
        reply: Option<oneshot::Sender<Result<u64>>>,
    ) -> Result<SnapshotJob> {
        let seq = copy.seq();
        let dir = target.snapshot_dir.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tidal-snap-{}", target.shard))
            .spawn(move || {
                let state = copy.into_state(idempotency, &target.params);
                let outcome = write(&target, &state);
                drop(state);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(outcome);
                    }
                    None => {
                        if let Err(error) = outcome {
                            tracing::warn!(shard = target.shard, %error, "automatic snapshot failed; the WAL still holds everything");
                        }
                    }
                }
            })
            .map_err(|e| WalError::io("spawn snapshot thread", dir, e))?;
        Ok(SnapshotJob { seq, handle })
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the job to end (its outcome went to its reply or the log).
    pub fn wait(self) {
        if self.handle.join().is_err() {
            tracing::error!(seq = self.seq, "snapshot thread panicked");
        }
    }
}

/// Writes the snapshot, prunes old ones, retires the WAL they cover; returns the seq.
fn write(target: &SnapshotTarget, state: &ShardState) -> Result<u64> {
    let vfs = &*target.vfs;
    let path = snapshot::write(vfs, &target.snapshot_dir, state, &target.params)?;
    if let Some(oldest) = snapshot::prune(vfs, &target.snapshot_dir, target.shard)? {
        let retired = match &target.archive_dir {
            Some(archive) => {
                history::archive_segments_before(vfs, &target.wal_dir, archive, target.shard, oldest + 1)?
            }
            None => {
                let hold = target.hold.load(Ordering::Acquire);
                let upto = held_retire_seq(vfs, target, oldest + 1, hold)?;
                target.tail.lock().unwrap_or_else(|e| e.into_inner()).forget_before(upto);
                reader::remove_segments_before(vfs, &target.wal_dir, target.shard, upto)?
            }
        };
        tracing::debug!(
            shard = target.shard,
            segments = retired.len(),
            "WAL segments covered by snapshots retired"
        );
    }
    tracing::info!(shard = target.shard, seq = state.applied_seq, path = %path.display(), "snapshot written");
    Ok(state.applied_seq)
}

/// The seq below which segments may go, when a replica still needs the log from `hold`:
/// `upto` itself if nothing is held (or the hold is at or above it), else the first seq of
/// the oldest segment to keep, keeping the held segments newest first while their bytes stay
/// within the cap. A replica behind what is kept gets a snapshot.
fn held_retire_seq(vfs: &dyn Vfs, target: &SnapshotTarget, upto: u64, hold: u64) -> Result<u64> {
    if hold >= upto {
        return Ok(upto);
    }
    let mut segments = reader::list_segments(vfs, &target.wal_dir)?;
    segments.retain(|s| s.shard == target.shard);
    // Removable segments: those whose successor starts at or below `upto`.
    let removable: Vec<_> = segments.windows(2).take_while(|p| p[1].first_seq <= upto).collect();
    let mut keep_from = upto;
    let mut kept_bytes = 0u64;
    for pair in removable.iter().rev() {
        // Wholly below the hold: not needed.
        if pair[1].first_seq <= hold {
            break;
        }
        let len = vfs.file_len(&pair[0].path).map_err(|e| WalError::io("stat segment", &pair[0].path, e))?;
        if kept_bytes + len > target.hold_bytes_max {
            tracing::warn!(
                shard = target.shard,
                hold,
                kept_bytes,
                cap = target.hold_bytes_max,
                "WAL hold cap reached: a replica needing older seqs gets a snapshot"
            );
            break;
        }
        kept_bytes += len;
        keep_from = pair[0].first_seq;
    }
    Ok(keep_from)
}
