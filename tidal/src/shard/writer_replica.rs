//! The writer thread's replication duties: its role, the leader's quorum-held acks, the
//! fsync reports a runtime ships by, and a follower's shipped batches.
//!
//! A follower appends a leader's batches with [`crate::wal::WalWriter::append_encoded`] (the
//! exact bytes, both CRCs checked again) and applies them through the same engine the leader
//! used ([`engine::apply_batch`]) before its own fsync: the leader ships only what it holds
//! durably, and the follower's acks claim durability only after its fsync. That fsync is
//! inline, or pipelined on the shard's syncer thread (`syncer.rs`) so the next batches are
//! applied while it runs. A duplicate or a gap is refused: the protocol in front of the store
//! must never send one, and a batch that does not continue the log changes nothing.

use std::sync::atomic::Ordering;

use super::engine::{self, BatchOutcome};
use super::role::{AckMode, DurableEvent, ShardRole, ShippedPosition};
use super::syncer::{SyncRequest, Syncer};
use super::writer::{PendingAck, ShardWriter};
use crate::error::{Error, Result};
use crate::wal::decode_batch;

impl ShardWriter {
    /// Why this shard refuses writes now, if it does.
    pub(super) fn write_refusal(&self) -> Option<Error> {
        if self.failed.is_some() {
            return Some(self.failed_error());
        }
        match self.role {
            ShardRole::Standalone | ShardRole::Leader { .. } => None,
            ShardRole::Follower { epoch, leader } => {
                Some(Error::NotLeader { shard: self.shard, epoch, leader })
            }
            ShardRole::Recovering { epoch } => {
                Some(Error::NotLeader { shard: self.shard, epoch, leader: None })
            }
        }
    }

    pub(super) fn set_role(&mut self, role: ShardRole) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() });
        }
        let leading = matches!(role, ShardRole::Leader { .. });
        if !leading {
            // Writes waiting for a quorum will never get it from this node now.
            let epoch = role.epoch();
            for (_, held) in self.waiting.drain(..) {
                for (reply, _) in held {
                    let _ = reply.send(Err(Error::NotLeader { shard: self.shard, epoch, leader: None }));
                }
            }
        }
        if !matches!(role, ShardRole::Standalone) && self.unsynced {
            // A replica's log must be durable before its role changes hands.
            self.wal.sync().map_err(|e| {
                self.fail(&e);
                self.failed_error()
            })?;
            self.unsynced = false;
        }
        self.wal.set_epoch(if leading { role.epoch() } else { 0 });
        self.committed = self.committed.max(if leading { 0 } else { self.wal.next_seq() - 1 });
        self.role = role;
        tracing::info!(shard = self.shard, ?role, next_seq = self.wal.next_seq(), "shard role set");
        Ok(())
    }

    /// Whether a write in mode `ack` waits for the quorum commit.
    pub(super) fn holds_for_quorum(&self, ack: AckMode) -> bool {
        ack == AckMode::Quorum && matches!(self.role, ShardRole::Leader { .. })
    }

    /// Holds `replies` until the commit reaches `last_seq` (or answers them if it has).
    pub(super) fn hold(&mut self, last_seq: u64, replies: Vec<PendingAck>) {
        if replies.is_empty() {
            return;
        }
        if self.committed >= last_seq {
            for (reply, acks) in replies {
                let _ = reply.send(acks);
            }
            return;
        }
        self.waiting.push_back((last_seq, replies));
    }

    /// A quorum holds everything through `seq`: answer the writes it covers.
    pub(super) fn release(&mut self, seq: u64) {
        self.committed = self.committed.max(seq);
        while self.waiting.front().is_some_and(|(last, _)| *last <= self.committed) {
            let (_, replies) = self.waiting.pop_front().expect("front");
            for (reply, acks) in replies {
                let _ = reply.send(acks);
            }
        }
    }

    /// Tells the runtime (if any) how far the log is durable.
    pub(super) fn report_durable(&mut self) {
        if let Some(tx) = &self.subscriber {
            let event =
                DurableEvent { shard: self.shard, seq: self.wal.next_seq() - 1, log_bytes: self.log_bytes };
            if tx.send(event).is_err() {
                self.subscriber = None;
            }
        }
    }

    /// A follower's step: append every batch raw, apply them in order, then fsync once
    /// (inline, or on the syncer thread when `pipelined`). Returns the applied position.
    pub(super) fn apply_shipped(
        &mut self,
        batches: Vec<Vec<u8>>,
        pipelined: bool,
    ) -> Result<ShippedPosition> {
        if let Some(reason) = self.syncer.as_ref().and_then(Syncer::failure) {
            self.failed.get_or_insert(reason);
        }
        if let Some(reason) = &self.failed {
            return Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() });
        }
        if !matches!(self.role, ShardRole::Follower { .. } | ShardRole::Recovering { .. }) {
            return Err(Error::InvalidState(format!(
                "shard {} leads: it takes no shipped batches",
                self.shard
            )));
        }
        let mut appended = 0;
        for bytes in &batches {
            match self.wal.append_encoded(bytes) {
                Ok(info) => {
                    appended += 1;
                    self.tail_cache().push(info.first_seq, info.record_count, bytes);
                    self.log_bytes += info.bytes;
                    self.metrics.wal_bytes.fetch_add(info.bytes, Ordering::Relaxed);
                }
                Err(e @ crate::wal::WalError::Refused(_)) => {
                    // Nothing of this batch was written; what came before it is applied below.
                    tracing::warn!(shard = self.shard, error = %e, "shipped batch refused");
                    self.apply_and_sync(&batches[..appended], pipelined)?;
                    return Err(Error::Wal(e));
                }
                Err(e) => {
                    self.fail(&e);
                    return Err(self.failed_error());
                }
            }
        }
        self.apply_and_sync(&batches, pipelined)
    }

    fn apply_and_sync(&mut self, batches: &[Vec<u8>], pipelined: bool) -> Result<ShippedPosition> {
        let position = |w: &Self| ShippedPosition { applied_seq: w.applied.get(), log_bytes: w.log_bytes };
        if batches.is_empty() {
            return Ok(position(self));
        }
        // Applied before the fsync, so follower reads see the leader's records at once:
        // they are durable on the leader already (it ships nothing else), and the durable
        // ack to it waits for this fsync. A failed fsync stops the shard.
        let mut deltas = Vec::new();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for bytes in batches {
            let (header, payload, _) = decode_batch(bytes).map_err(|e| Error::InvalidState(e.to_string()))?;
            self.clock.observe_trusted(header.hlc_max);
            match engine::apply_batch(&mut state, &header, payload, self.node_id)? {
                BatchOutcome::Applied(applied) => deltas.extend(applied.index_deltas),
                other => {
                    return Err(Error::InvalidState(format!(
                        "shard {}: shipped batch at seq {} is {other:?} after its append",
                        self.shard, header.first_seq
                    )));
                }
            }
            self.metrics.signals_written.fetch_add(u64::from(header.record_count), Ordering::Relaxed);
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        }
        let applied_seq = state.applied_seq;
        {
            // The deltas name items by shard-local id: resolved while the state is held
            // (lock order: shard state, then index, as in the leader's write path).
            super::writer::add_deltas(&mut self.index_ids, &state, &self.ranking, &deltas);
        }
        drop(state);
        self.applied.publish(applied_seq);
        let queued = pipelined && self.request_sync();
        if !queued && let Err(e) = self.timed_sync() {
            self.fail(&e);
            return Err(self.failed_error());
        }
        // A follower snapshots too, so its WAL is retired and its recovery stays short.
        self.maybe_snapshot();
        Ok(position(self))
    }

    /// Hands the fsync of everything appended to the syncer thread (started on first use);
    /// false when it cannot take it, and the caller syncs inline.
    fn request_sync(&mut self) -> bool {
        if self.syncer.is_none() {
            match Syncer::start(self.shard, self.metrics.clone()) {
                Ok(syncer) => self.syncer = Some(syncer),
                Err(error) => {
                    tracing::warn!(shard = self.shard, %error, "no syncer thread; fsyncs stay inline");
                    return false;
                }
            }
        }
        let file = match self.wal.sync_handle() {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "no pipelined fsync for this group");
                return false;
            }
        };
        let event =
            DurableEvent { shard: self.shard, seq: self.wal.next_seq() - 1, log_bytes: self.log_bytes };
        let request = SyncRequest { event, file, report: self.subscriber.clone() };
        self.syncer.as_ref().is_some_and(|syncer| syncer.request(request))
    }

    /// Waits for the syncer's fsyncs in flight; a failed one stops the shard.
    pub(super) fn settle_syncer(&mut self) {
        let Some(syncer) = &self.syncer else { return };
        syncer.settle();
        if let Some(reason) = syncer.failure()
            && self.failed.is_none()
        {
            tracing::error!(shard = self.shard, %reason, "pipelined WAL fsync failed; shard stops accepting writes");
            self.failed = Some(reason);
        }
    }

    /// The durable position once the pipelined fsyncs are done (reported to the runtime).
    pub(super) fn durable_position(&mut self) -> Result<DurableEvent> {
        if self.failed.is_some() {
            return Err(self.failed_error());
        }
        let event =
            DurableEvent { shard: self.shard, seq: self.wal.next_seq() - 1, log_bytes: self.log_bytes };
        if let Some(tx) = &self.subscriber {
            let _ = tx.send(event);
        }
        Ok(event)
    }
}
