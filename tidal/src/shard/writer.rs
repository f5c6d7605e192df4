//! The single writer of one shard: group commit.
//!
//! The writer thread owns the shard's WAL. It takes every request waiting in its queue (up
//! to `group_signals_max` signals), decides each signal against the session HWMs and the
//! idempotency store (plus what earlier requests of the same group decided), stamps HLCs and
//! seqs, appends ONE batch, fsyncs once (by durability mode), applies the batch under one
//! write lock, and only then replies. So: acked means durable and visible, and readers never
//! see half a batch.
//!
//! After an I/O error the writer stops accepting writes (fail-stop): what is on disk is
//! intact up to the last ack, and reopening the store recovers it. Retrying an fsync after
//! a failure is unsafe on Linux, where the kernel may have dropped the dirty pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::engine;
use super::snapshot_job::{SnapshotJob, SnapshotTarget};
use super::state::ShardState;
use crate::error::{Error, Result};

use super::role::{AckMode, DurableEvent, ShardRole, ShippedPosition};
use super::syncer::Syncer;
use crate::hlc::{Hlc, HybridClock};
use crate::metrics::Metrics;
use crate::options::Durability;
use crate::ranking::{Delta, Ranking};
use crate::session::Ack;
use crate::shard::applied::AppliedSeq;
use crate::signal::{Signal, SignalRef};
use crate::wal::WalError;
use crate::wal::writer::WalWriter;

/// A request to a shard's writer thread.
pub(crate) enum Command {
    Write {
        signals: Vec<Signal>,
        ack: AckMode,
        reply: AckSender,
    },
    Snapshot {
        reply: oneshot::Sender<Result<u64>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<()>>,
    },
    /// Replication: change the shard's role (see `writer_replica.rs` for the rest).
    SetRole {
        role: ShardRole,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Replication: append a leader's batches byte for byte, apply, fsync (inline, or
    /// `pipelined` on the shard's syncer thread: see `syncer.rs`).
    Shipped {
        batches: Vec<Vec<u8>>,
        pipelined: bool,
        reply: oneshot::Sender<Result<ShippedPosition>>,
    },
    /// Replication: wait for the pipelined fsyncs; answers the durable position.
    SyncShipped {
        reply: oneshot::Sender<Result<DurableEvent>>,
    },
    /// Replication: a quorum holds everything through `seq`; release those acks.
    Commit {
        seq: u64,
    },
    /// Replication: report every fsync to `tx`.
    Subscribe {
        tx: std::sync::mpsc::Sender<DurableEvent>,
    },
    /// Replication: move the log from `from_seq` on aside and recover from what is left.
    SetAside {
        from_seq: u64,
        reply: oneshot::Sender<Result<super::set_aside::SetAsideReport>>,
    },
    /// Replication: replace the shard by a snapshot the leader shipped.
    InstallSnapshot {
        bytes: Vec<u8>,
        keep_through: u64,
        reply: oneshot::Sender<Result<(u64, super::set_aside::SetAsideReport)>>,
    },
}

/// Where a write request's acks go.
pub(crate) type AckSender = oneshot::Sender<Result<Vec<Ack>>>;

/// Everything the writer thread owns.
pub(crate) struct ShardWriter {
    pub shard: u32,
    /// This node: the origin of every batch the writer appends.
    pub node_id: u32,
    /// Write requests enqueued and not yet answered (shared with the submitting side).
    pub in_flight: Arc<AtomicUsize>,
    /// The store-wide ranking, updated by every shard's batches.
    pub ranking: Arc<Ranking>,
    /// This shard's applied seq, for `min_seq` waiters.
    pub applied: Arc<AppliedSeq>,
    pub metrics: Arc<Metrics>,
    pub wal: WalWriter,
    pub state: Arc<RwLock<ShardState>>,
    pub clock: Arc<HybridClock>,
    /// Where snapshots are written, by a background job.
    pub snapshot_target: SnapshotTarget,
    /// The snapshot being written, if one is.
    pub job: Option<SnapshotJob>,
    /// A snapshot's copy being taken (see `writer_snapshot`), with who waits for it.
    pub copying: Option<super::writer_snapshot::SnapshotReply>,
    /// Entries copied per slice (`Options::snapshot_copy_slice_entries`).
    pub copy_slice_entries: usize,
    pub durability: Durability,
    pub group_signals_max: usize,
    pub snapshot_every_signals: u64,
    pub last_snapshot_seq: u64,
    pub last_sync: Instant,
    pub unsynced: bool,
    pub failed: Option<String>,
    /// Replication role (standalone unless a runtime set one).
    pub role: ShardRole,
    /// Quorum-mode acks waiting for a commit: (last seq of the group, replies).
    pub waiting: std::collections::VecDeque<(u64, Vec<PendingAck>)>,
    /// Highest seq a quorum holds (leader) as last released.
    pub committed: u64,
    /// Bytes appended since the store opened (reported with fsyncs).
    pub log_bytes: u64,
    /// How to recover this shard again (after a set-aside).
    pub reopen: Arc<super::set_aside::Reopen>,
    /// Where fsyncs are reported (a replication runtime).
    pub subscriber: Option<std::sync::mpsc::Sender<DurableEvent>>,
    /// A follower's pipelined fsync thread, started with its first pipelined batch.
    pub syncer: Option<Syncer>,
    /// Every appended batch goes here too, for shipping (see `tail.rs`).
    pub tail: Arc<std::sync::Mutex<super::tail::TailCache>>,
    /// The ranking's id of each of the shard's items, by shard-local item id (`u32::MAX`:
    /// not yet known); see [`add_deltas`]. Cleared when the state is rebuilt.
    pub index_ids: Vec<u32>,
}

/// Queues a group's ranking deltas (by shard-local item id) for the store-wide ranking
/// (see `ranking.rs`). A known item goes by its cached index id, with no hash probe of its
/// key; an item new to the cache goes by key, until the index has an id for it that the
/// writer can read without waiting. The index never moves an id (it is built once, when
/// the store opens), and the cache is cleared whenever the shard's state, and so its local
/// ids, is rebuilt (a set-aside, an install).
pub(super) fn add_deltas(ids: &mut Vec<u32>, state: &ShardState, ranking: &Ranking, deltas: &[(u32, f64)]) {
    let mut queued = Vec::with_capacity(deltas.len());
    for &(item, delta) in deltas {
        if let Some(id) = ids.get(item as usize).copied().filter(|&id| id != u32::MAX) {
            debug_assert!(ranking.id_names(id, state.items.id_key(item)), "a stale index id");
            queued.push(Delta::Id(id, delta));
            continue;
        }
        let Some(key) = state.items.id_key(item) else { continue };
        match ranking.try_id(key) {
            Some(id) => {
                if ids.len() <= item as usize {
                    ids.resize(item as usize + 1, u32::MAX);
                }
                ids[item as usize] = id;
                queued.push(Delta::Id(id, delta));
            }
            None => queued.push(Delta::Key(key.clone(), delta)),
        }
    }
    ranking.queue(&mut queued);
}

/// Stamps for a group of `len` signals from one clock read: the group's records take
/// consecutive stamps of a run (a duplicate takes none, so some of the run may go unused:
/// stamps need only be unique and increasing); past the run, one read each.
fn stamp_run(clock: &HybridClock, len: usize) -> impl FnMut() -> Hlc + '_ {
    let mut run: Option<(u64, u64)> = None;
    move || {
        let (next, end) = run.get_or_insert_with(|| {
            let first = clock.now_run(len as u64).0;
            (first, first + len as u64)
        });
        if *next < *end {
            *next += 1;
            Hlc(*next - 1)
        } else {
            clock.now()
        }
    }
}

/// An answer held back until the quorum commit reaches its group.
pub(crate) type PendingAck = (AckSender, Result<Vec<Ack>>);

impl ShardWriter {
    /// The thread body: serve commands until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        self.wal.set_epoch(self.role.epoch());
        let mut waiting = None;
        while let Some(first) = waiting.take().or_else(|| self.next_command(&rx)) {
            let mut writes = Vec::new();
            let mut controls = Vec::new();
            let mut signals = 0;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Write { signals: s, ack, reply } => {
                        signals += s.len();
                        writes.push((s, ack, reply));
                    }
                    other => controls.push(other),
                }
                if signals < self.group_signals_max && controls.is_empty() {
                    next = rx.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                self.commit_group(writes);
                self.maybe_snapshot();
            }
            for control in controls {
                if self.handle_control(control) {
                    return;
                }
            }
            // Between groups, every reply sent: space for the next batches' fsyncs.
            waiting = self.reserve_while_idle(&rx);
        }
        // Every sender is gone: nobody waits for the result, so report it here.
        if let Err(error) = self.finish() {
            tracing::error!(shard = self.shard, %error, "shard writer stopped");
        }
    }

    fn next_command(&mut self, rx: &Receiver<Command>) -> Option<Command> {
        // Idle with a copy in progress: sweep it a slice at a time, looking for work between.
        while self.copying.is_some() {
            match rx.try_recv() {
                Ok(cmd) => return Some(cmd),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.advance_copy(self.copy_slice_entries);
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            }
        }
        let Durability::Interval(every) = self.durability else {
            return rx.recv().ok();
        };
        loop {
            if !self.unsynced {
                return rx.recv().ok();
            }
            let wait = every.saturating_sub(self.last_sync.elapsed());
            match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(cmd) => return Some(cmd),
                Err(RecvTimeoutError::Timeout) => self.sync_now(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Returns true when the thread must exit.
    fn handle_control(&mut self, cmd: Command) -> bool {
        if !matches!(cmd, Command::Shipped { .. } | Command::Commit { .. } | Command::Subscribe { .. }) {
            // Everything else may change the log or expects it durable: no fsync in flight.
            self.settle_syncer();
        }
        if matches!(cmd, Command::SetAside { .. } | Command::InstallSnapshot { .. }) {
            // The log is about to be cut or replaced: reads go to the segments until the
            // next append; the state is rebuilt, so its local item ids change. The segment
            // ends at its last batch again first (no reserve), as recovery expects.
            self.tail_cache().clear();
            self.index_ids.clear();
            self.release_wal();
        }
        match cmd {
            Command::Write { .. } => false,
            Command::SetRole { role, reply } => {
                let _ = reply.send(self.set_role(role));
                false
            }
            Command::Shipped { batches, pipelined, reply } => {
                let _ = reply.send(self.apply_shipped(batches, pipelined));
                false
            }
            Command::SyncShipped { reply } => {
                let _ = reply.send(self.durable_position());
                false
            }
            Command::Commit { seq } => {
                self.release(seq);
                false
            }
            Command::Subscribe { tx } => {
                self.subscriber = Some(tx);
                false
            }
            Command::SetAside { from_seq, reply } => {
                let reopen = self.reopen.clone();
                let _ = reply.send(self.set_aside(from_seq, &reopen));
                false
            }
            Command::InstallSnapshot { bytes, keep_through, reply } => {
                let reopen = self.reopen.clone();
                let _ = reply.send(self.install_snapshot(&bytes, keep_through, &reopen));
                false
            }
            Command::Snapshot { reply } => {
                // The job answers the caller once its file is durable.
                let mut reply = Some(reply);
                if let Err(e) = self.start_snapshot(&mut reply)
                    && let Some(reply) = reply
                {
                    let _ = reply.send(Err(e));
                }
                false
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(self.finish());
                true
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.settle_syncer();
        self.settle_snapshot();
        if self.unsynced && self.failed.is_none() {
            self.sync_now();
        }
        // A clean close leaves the segment ending at its last batch.
        self.release_wal();
        match &self.failed {
            Some(reason) => Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Tops up the WAL's zero-filled reserve (see `WalWriter::reserve_slice`) a slice at a
    /// time while no command waits; returns the command that came meanwhile, if one did. A
    /// failure stops the shard like any WAL I/O error.
    fn reserve_while_idle(&mut self, rx: &Receiver<Command>) -> Option<Command> {
        // Without fsyncs there is nothing to speed up, and the reserve's own sync would be
        // one the store was told not to do.
        if self.failed.is_some() || self.durability == Durability::None {
            return None;
        }
        while self.wal.reserve_wanted() {
            match rx.try_recv() {
                Ok(cmd) => return Some(cmd),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if let Err(e) = self.wal.reserve_slice() {
                self.fail(&e);
                return None;
            }
        }
        None
    }

    fn release_wal(&mut self) {
        if self.failed.is_none()
            && let Err(e) = self.wal.release()
        {
            self.fail(&e);
        }
    }

    fn sync_now(&mut self) {
        if let Err(e) = self.timed_sync() {
            self.fail(&e);
        }
    }

    pub(super) fn fail(&mut self, error: &WalError) {
        tracing::error!(shard = self.shard, %error, "WAL write failed; shard stops accepting writes");
        self.failed = Some(error.to_string());
    }

    pub(super) fn failed_error(&self) -> Error {
        Error::ShardFailed { shard: self.shard, reason: self.failed.clone().unwrap_or_default() }
    }

    /// Commits a group of write requests and answers each. The requests stop counting as in
    /// flight before any answer goes out, so a caller that has its answer and writes again
    /// finds the shard idle (and its next batch prechecked, see `Db::submit_with`).
    fn commit_group(&mut self, writes: Vec<(Vec<Signal>, AckMode, AckSender)>) {
        let answering = writes.len();
        if self.write_refusal().is_some() {
            self.in_flight.fetch_sub(answering, Ordering::AcqRel);
            for (_, _, reply) in writes {
                let _ = reply.send(Err(self.write_refusal().expect("refused")));
            }
            return;
        }
        let base_seq = self.wal.next_seq();
        let mut requests = Vec::with_capacity(writes.len());
        let mut replies = Vec::with_capacity(writes.len());
        for (signals, ack, reply) in writes {
            requests.push(signals);
            replies.push((ack, reply));
        }
        let plan = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let clock = &self.clock;
            let mut stamp = stamp_run(clock, requests.iter().map(Vec::len).sum());
            engine::plan_group(&state, &requests, base_seq, &mut stamp)
        };
        if !plan.records.is_empty()
            && let Err(e) = self.append_and_sync(base_seq, &plan.records)
        {
            self.fail(&e);
            self.in_flight.fetch_sub(answering, Ordering::AcqRel);
            for (_, reply) in replies {
                let _ = reply.send(Err(self.failed_error()));
            }
            return;
        }
        let applied = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let applied = engine::apply_records(&mut state, base_seq, self.node_id, &plan.records);
            // Rankings and read-your-writes waiters learn of the batch before it is
            // acknowledged (a read absorbs what is queued). The deltas name items by
            // shard-local id, so they are resolved while the state is at hand (lock order:
            // shard state, then index, then queue; no path takes them the other way round).
            add_deltas(&mut self.index_ids, &state, &self.ranking, &applied.index_deltas);
            applied
        };
        debug_assert_eq!(applied.applied_seq, self.wal.next_seq() - 1);
        self.applied.publish(self.wal.next_seq() - 1);
        self.metrics.duplicates.fetch_add(plan.duplicates() as u64, Ordering::Relaxed);
        let engine::GroupPlan { records, requests } = plan;
        // Applied and published: the group is no longer in flight.
        self.in_flight.fetch_sub(answering, Ordering::AcqRel);
        let mut held = Vec::new();
        for (request, (ack, reply)) in requests.into_iter().zip(replies) {
            let acks = request.map(|slots| {
                slots.into_iter().map(|s| engine::slot_ack(self.shard, base_seq, &records, s)).collect()
            });
            if self.holds_for_quorum(ack) {
                held.push((reply, acks));
            } else {
                let _ = reply.send(acks);
            }
        }
        self.hold(self.wal.next_seq() - 1, held);
    }

    fn append_and_sync(&mut self, base_seq: u64, records: &[(Hlc, SignalRef<'_>)]) -> Result<(), WalError> {
        let info = self.wal.append(records)?;
        debug_assert_eq!(info.first_seq, base_seq);
        self.tail_cache().push(info.first_seq, info.record_count, self.wal.last_batch());
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.wal_bytes.fetch_add(info.bytes, Ordering::Relaxed);
        self.log_bytes += info.bytes;
        self.metrics.signals_written.fetch_add(records.len() as u64, Ordering::Relaxed);
        let due = match self.durability {
            Durability::Fsync => true,
            Durability::Interval(every) => {
                self.unsynced = true;
                self.last_sync.elapsed() >= every
            }
            Durability::None => false,
        };
        if due {
            self.timed_sync()?;
        }
        Ok(())
    }

    pub(super) fn tail_cache(&self) -> std::sync::MutexGuard<'_, super::tail::TailCache> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// fsyncs the WAL, recording the latency, and reports it to the replication runtime.
    pub(super) fn timed_sync(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        self.wal.sync()?;
        self.metrics.fsync.observe(started.elapsed());
        self.unsynced = false;
        self.last_sync = Instant::now();
        self.report_durable();
        Ok(())
    }
}
