//! The follower side of a shard: accept what the current leader ships, exactly once.
//!
//! A [`Follower`] knows its log (end, durable seq, epoch history) and the highest epoch it
//! has answered, with that epoch's leader (both durable: [`Action::PersistEpoch`]). It
//! refuses messages of an older epoch, and of another leader in the same epoch, so a
//! deposed leader can never again collect a quorum. An append is checked Raft-style: the
//! follower must hold the leader's previous record (same seq, same epoch); each shipped
//! batch is verified with the WAL's own checks (both CRCs, framing, shard, contiguity,
//! epoch). A batch it already holds under the same epoch is a duplicate and skipped; one
//! whose seqs it holds under another epoch means its tail diverged from the leader's, and
//! that tail is set aside intact ([`Action::SetAside`]), never silently dropped.

use tidal::wal::decode_batch;

use super::message::{Message, Refusal};
use super::{Action, ProtocolStats};
use crate::log::{EpochHistory, LogPos};
use crate::transport::NodeId;

/// Largest reply to one fetch (a recovering leader asks in steps).
pub const FETCH_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// The follower of one shard. See the module docs.
#[derive(Clone, Debug)]
pub struct Follower {
    shard: u32,
    epoch: u64,
    leader: Option<NodeId>,
    history: EpochHistory,
    end: u64,
    durable: u64,
    /// A snapshot being received: (seq, len, bytes staged).
    receiving: Option<(u64, u64, u64)>,
    stats: ProtocolStats,
}

impl Follower {
    /// A follower whose log (as recovery found it: everything durable) ends at `end` with
    /// `history`, and which last answered `leader` in `epoch`.
    pub fn new(shard: u32, epoch: u64, leader: Option<NodeId>, history: EpochHistory, end: u64) -> Follower {
        let epoch = epoch.max(history.last_epoch());
        Follower {
            shard,
            epoch,
            leader,
            history,
            end,
            durable: end,
            receiving: None,
            stats: ProtocolStats::default(),
        }
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn end(&self) -> u64 {
        self.end
    }
    pub fn durable(&self) -> u64 {
        self.durable
    }
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }
    pub fn stats(&self) -> &ProtocolStats {
        &self.stats
    }
    fn pos(&self) -> LogPos {
        self.history.pos(self.end)
    }

    /// Handles one message from `from`.
    pub fn handle(&mut self, from: NodeId, message: Message) -> Vec<Action> {
        let mut out = Vec::new();
        if message.shard() != self.shard {
            return out;
        }
        match message {
            Message::Probe { epoch, .. } => {
                if self.admit(from, epoch, &mut out) {
                    out.push(self.send(from, self.position()));
                }
            }
            Message::Append { epoch, prev, batches, .. } => {
                if self.admit(from, epoch, &mut out) {
                    self.append(from, prev, batches, &mut out);
                }
            }
            Message::Fetch { epoch, from_seq, max_bytes, .. } => {
                if self.admit(from, epoch, &mut out) {
                    let max_bytes = max_bytes.min(FETCH_BYTES_MAX);
                    out.push(Action::SendBatches { to: from, epoch, from_seq, max_bytes });
                }
            }
            Message::SnapshotChunk { epoch, seq, len, history, offset, bytes, .. } => {
                if self.admit(from, epoch, &mut out) {
                    self.snapshot_chunk(from, (seq, len, history), offset, bytes, &mut out);
                }
            }
            // Answers meant for a leader; a follower has nothing to do with them.
            Message::Position { .. }
            | Message::Ack { .. }
            | Message::Refused { .. }
            | Message::Fetched { .. }
            | Message::SnapshotAck { .. } => {}
        }
        out
    }

    /// The follower's answer to a probe.
    pub fn position(&self) -> Message {
        Message::Position {
            shard: self.shard,
            epoch: self.epoch,
            end: self.pos(),
            durable: self.durable,
            history: self.history.starts().to_vec(),
        }
    }

    /// Accepts `from` as the leader of `epoch`, or refuses it (stale epoch, or another
    /// leader already answered in this epoch). A newer epoch is made durable first.
    fn admit(&mut self, from: NodeId, epoch: u64, out: &mut Vec<Action>) -> bool {
        let other_leader = epoch == self.epoch && self.leader.is_some_and(|l| l != from);
        if epoch < self.epoch || other_leader {
            self.refuse(from, Refusal::StaleEpoch, out);
            return false;
        }
        if epoch > self.epoch || self.leader.is_none() {
            self.epoch = epoch;
            self.leader = Some(from);
            out.push(Action::PersistEpoch { epoch, leader: Some(from) });
        }
        true
    }

    fn refuse(&mut self, to: NodeId, reason: Refusal, out: &mut Vec<Action>) {
        self.stats.refuse(reason);
        let message = Message::Refused { shard: self.shard, epoch: self.epoch, reason, end: self.pos() };
        out.push(self.send(to, message));
    }

    fn send(&self, to: NodeId, message: Message) -> Action {
        Action::Send { to, message }
    }

    /// The consistency check and the batches of one append, then fsync and ack.
    fn append(&mut self, from: NodeId, prev: LogPos, batches: Vec<Vec<u8>>, out: &mut Vec<Action>) {
        if prev.seq > self.end {
            return self.refuse(from, Refusal::Gap, out);
        }
        if prev.seq > 0 && self.history.epoch_at(prev.seq) != prev.epoch {
            return self.refuse(from, Refusal::Mismatch, out);
        }
        let mut cursor = prev.seq;
        let mut appended = false;
        for bytes in batches {
            match self.take_batch(cursor, bytes, out) {
                Ok((next_cursor, wrote)) => {
                    cursor = next_cursor;
                    appended |= wrote;
                }
                Err(reason) => {
                    if appended {
                        self.sync(out);
                    }
                    return self.refuse(from, reason, out);
                }
            }
        }
        if appended {
            self.sync(out);
        }
        let ack = Message::Ack {
            shard: self.shard,
            epoch: self.epoch,
            durable: self.durable,
            applied: self.durable,
        };
        out.push(self.send(from, ack));
    }

    fn sync(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Sync);
        self.durable = self.end;
    }

    /// One shipped batch that must start at `cursor + 1`. Returns the new cursor and whether
    /// it was appended (false: a duplicate).
    fn take_batch(
        &mut self,
        cursor: u64,
        bytes: Vec<u8>,
        out: &mut Vec<Action>,
    ) -> Result<(u64, bool), Refusal> {
        let (header, _, len) = decode_batch(&bytes).map_err(|_| Refusal::BadBatch)?;
        let bad = len != bytes.len()
            || header.shard_id != Some(self.shard)
            || header.first_seq != cursor + 1
            || header.epoch > self.epoch;
        if bad {
            return Err(Refusal::BadBatch);
        }
        let last = header.next_seq() - 1;
        if header.first_seq <= self.end {
            if last <= self.end && self.history.epoch_at(last) == header.epoch {
                self.stats.batches_duplicate += 1;
                return Ok((last, false));
            }
            // Our records from first_seq on were never the leader's: keep them aside.
            self.stats.set_asides += 1;
            out.push(Action::SetAside { from_seq: header.first_seq });
            self.end = header.first_seq - 1;
            self.durable = self.durable.min(self.end);
            self.history.truncate_after(self.end);
        }
        self.history.observe(header.epoch, header.first_seq).map_err(|_| Refusal::BadBatch)?;
        self.end = last;
        self.stats.batches_appended += 1;
        out.push(Action::Append(bytes));
        Ok((last, true))
    }
}

/// A snapshot's identity as shipped: its seq, its length, the leader's history through it.
type SnapshotId = (u64, u64, Vec<(u64, u64)>);

impl Follower {
    /// One chunk of a snapshot the leader streams because this log is behind its own. Chunks
    /// are taken in order only (the staged copy grows contiguously); the ack says how much
    /// is staged, so the leader resends what was lost. A whole snapshot is installed at
    /// once: the own records after the point where this log and the leader's part are set
    /// aside first, then the log continues at the snapshot's seq + 1.
    fn snapshot_chunk(
        &mut self,
        from: NodeId,
        id: SnapshotId,
        offset: u64,
        bytes: Vec<u8>,
        out: &mut Vec<Action>,
    ) {
        let (seq, len, history) = id;
        let Some(history) = EpochHistory::from_starts(history)
            .filter(|h| h.last_epoch() <= self.epoch && h.starts().iter().all(|&(_, s)| s <= seq))
        else {
            return self.refuse(from, Refusal::BadBatch, out);
        };
        // At or past it on the same history already: nothing to install.
        if seq <= self.end && self.history.epoch_at(seq) == history.epoch_at(seq) {
            return self.snapshot_ack(from, seq, len, true, out);
        }
        if self.receiving.is_none_or(|(s, l, _)| (s, l) != (seq, len)) {
            if offset != 0 {
                return self.snapshot_ack(from, seq, 0, false, out);
            }
            out.push(Action::SnapshotBegin { seq, len });
            self.receiving = Some((seq, len, 0));
        }
        let (_, _, staged) = self.receiving.expect("receiving");
        if offset == staged && !bytes.is_empty() {
            if offset + bytes.len() as u64 > len {
                self.receiving = None;
                return self.refuse(from, Refusal::BadBatch, out);
            }
            self.receiving = Some((seq, len, staged + bytes.len() as u64));
            out.push(Action::SnapshotWrite { offset, bytes });
        }
        let (_, _, staged) = self.receiving.expect("receiving");
        if staged < len {
            return self.snapshot_ack(from, seq, staged, false, out);
        }
        self.receiving = None;
        let keep_through = crate::log::match_point(&self.history, self.end, &history, seq);
        if keep_through < self.end {
            self.stats.set_asides += 1;
        }
        out.push(Action::SnapshotInstall { seq, keep_through });
        self.stats.snapshot_installs += 1;
        self.history = history;
        self.history.truncate_after(seq);
        self.end = seq;
        self.durable = seq;
        self.snapshot_ack(from, seq, len, true, out);
    }

    fn snapshot_ack(&mut self, to: NodeId, seq: u64, received: u64, installed: bool, out: &mut Vec<Action>) {
        let message = Message::SnapshotAck { shard: self.shard, epoch: self.epoch, seq, received, installed };
        out.push(self.send(to, message));
    }
}

#[cfg(test)]
#[path = "follower_tests.rs"]
mod tests;
