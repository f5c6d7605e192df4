//! When a shard's writer snapshots, and how it takes the copy a snapshot encodes: a copy at
//! one seq, swept a slice at a time (`Options::snapshot_copy_slice_entries`) after each
//! group commit (or while the writer is idle), so a write never waits for more than one
//! slice (see `shard::cow`). The finished copy
//! goes to the background job (`shard::snapshot_job`), which encodes and writes it.
//!
//! Invariants: at most one copy or job per shard at a time; the WAL is fsynced through the
//! copy's seq before the copy begins, so a snapshot never covers a record the WAL could
//! still lose; anything that replaces the state or the log first settles both
//! ([`ShardWriter::settle_snapshot`]).

use tokio::sync::oneshot;

use super::role::ShardRole;
use super::snapshot_job::SnapshotJob;
use super::writer::ShardWriter;
use crate::error::Result;

/// Who waits for a snapshot's outcome, if anyone.
pub(crate) type SnapshotReply = Option<oneshot::Sender<Result<u64>>>;

impl ShardWriter {
    /// After a group: goes on with a copy in progress, or begins one when a snapshot is due.
    pub(super) fn maybe_snapshot(&mut self) {
        if self.copying.is_some() {
            self.advance_copy(self.copy_slice_entries);
            return;
        }
        if self.job.as_ref().is_some_and(|job| !job.is_finished()) {
            return;
        }
        let applied = self.wal.next_seq() - 1;
        let every = self.snapshot_every_signals;
        let due = every > 0
            && match self.role {
                ShardRole::Standalone => applied - self.last_snapshot_seq >= every,
                // Replicas snapshot when the log crosses a boundary shifted by a quarter
                // period per node id: every `every` signals still, but not all at the same
                // seq, so the replicas of a shard do not all copy their state at once, each
                // slowing the others on shared cores.
                _ => {
                    let phase = every / 4 * u64::from(self.node_id % 4);
                    (applied + phase) / every > (self.last_snapshot_seq + phase) / every
                }
            };
        if due && let Err(error) = self.start_snapshot(&mut None) {
            tracing::warn!(shard = self.shard, %error, "automatic snapshot failed; the WAL still holds everything");
        }
    }

    /// Begins a snapshot of the current state, after settling a running one: the copy is
    /// swept by later calls of [`ShardWriter::advance_copy`], then written in the background.
    /// The job takes `reply` and sends it the outcome; on an error here `reply` is left to the
    /// caller.
    pub fn start_snapshot(&mut self, reply: &mut SnapshotReply) -> Result<()> {
        if self.failed.is_some() {
            return Err(self.failed_error());
        }
        self.settle_snapshot();
        // A snapshot must never cover records the WAL could still lose.
        if let Err(e) = self.wal.sync() {
            self.fail(&e);
            return Err(self.failed_error());
        }
        self.unsynced = false;
        let seq = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.begin_copy();
            state.applied_seq
        };
        self.last_snapshot_seq = seq;
        self.copying = Some(reply.take());
        // A small state is copied at once.
        self.advance_copy(self.copy_slice_entries);
        Ok(())
    }

    /// Copies up to `budget` more entries of the copy in progress; once it is whole, starts
    /// the job that writes it.
    pub(super) fn advance_copy(&mut self, budget: usize) {
        if self.copying.is_none() {
            return;
        }
        let done = self.state.write().unwrap_or_else(|e| e.into_inner()).copy_step(budget);
        let Some(copy) = done else { return };
        // A job that does not start drops `reply`: its caller hears that the writer failed.
        let reply = self.copying.take().flatten();
        match SnapshotJob::start(self.snapshot_target.clone(), copy, reply) {
            Ok(job) => self.job = Some(job),
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "snapshot job did not start; the WAL still holds everything");
            }
        }
    }

    /// Finishes a copy in progress and waits for the snapshot job: before anything that
    /// replaces the state or cuts the log, and before the writer stops.
    pub(super) fn settle_snapshot(&mut self) {
        self.advance_copy(usize::MAX);
        if let Some(job) = self.job.take() {
            job.wait();
        }
    }
}
