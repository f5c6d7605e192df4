//! The leader side of a shard: recover, then ship the WAL to every follower.
//!
//! A [`Leader`] starts in recovery under a new epoch (one higher than any it knows): it makes
//! the epoch durable, probes every follower, and fetches the batches a follower holds beyond
//! its own log end on the same history (a batch it acknowledged and then lost to a damaged
//! tail, or one a previous leader shipped). It serves writes only when every follower has
//! answered, or a majority has and the grace period is over, so it never reuses a seq that
//! a follower it heard from already holds.
//!
//! Serving, it keeps one [`Peer`] per follower: the next seq to ship, what the follower has
//! made durable, and a bounded window of unacknowledged records. It ships only what its own
//! WAL has made durable, raw, several batches per message, and goes back to the follower's
//! durable seq when acks stop coming (go-back-N; the follower skips duplicates). Commit is
//! the highest seq durable on a quorum, advanced only through a record of the leader's own
//! epoch (Raft's rule: counting replicas of an older epoch's record does not commit it).

use std::collections::BTreeMap;

use tidal::wal::{BatchHeader, decode_batch};

use super::message::{Message, Refusal};
use super::{Action, BatchSource, ProtocolStats, SourceError};
use crate::log::LogPos as Pos;
use crate::log::{EpochHistory, LogPos, match_point};
use crate::transport::NodeId;

/// Retransmit timeouts without a word from a follower after which it is treated as down:
/// probed, not shipped to, until it answers.
pub const SILENT_RTOS: u64 = 4;

/// Whether `peer` was heard from in the last `ms`.
pub(crate) fn heard_within(peer: &Peer, now_ms: u64, ms: u64) -> bool {
    peer.last_heard_ms.is_some_and(|t| now_ms.saturating_sub(t) < ms)
}

/// Tuning of a leader (per shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    pub shard: u32,
    /// The shard's other replicas.
    pub followers: Vec<NodeId>,
    /// Unacknowledged records in flight per follower.
    pub window_records: u64,
    /// Bytes of batches per append message (at least one batch is sent).
    pub message_bytes: u64,
    /// Without an ack for this long, ship again from the follower's durable seq.
    pub retransmit_ms: u64,
    /// How long recovery waits for every follower before it settles for a majority.
    pub recovery_grace_ms: u64,
}

impl LeaderConfig {
    pub fn new(shard: u32, followers: Vec<NodeId>) -> LeaderConfig {
        LeaderConfig {
            shard,
            followers,
            window_records: 64 * 1024,
            message_bytes: 1024 * 1024,
            retransmit_ms: 200,
            recovery_grace_ms: 10_000,
        }
    }

    /// Replicas (this one included) whose durable copy makes a record committed.
    pub fn quorum(&self) -> usize {
        let replicas = self.followers.len() + 1;
        replicas / 2 + 1
    }
}

/// What the leader knows of one follower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Heard a position since the last probe: shipping.
    pub streaming: bool,
    /// Next seq to ship.
    pub next: u64,
    pub durable: u64,
    pub applied: u64,
    pub last_sent_ms: u64,
    pub last_heard_ms: Option<u64>,
    /// Position and history from its last answer to a probe.
    pub position: Option<(LogPos, EpochHistory)>,
    /// Behind what the log holds: gets a snapshot, not batches.
    pub needs_snapshot: bool,
    /// The snapshot install in progress, if any (see `leader_install.rs`).
    pub install: Option<Install>,
    /// It does not host the shard: not shipped to until it answers a probe.
    pub unknown_shard: bool,
    /// The follower log end a `Gap` refusal last rewound shipping to.
    rewound_to: Option<u64>,
}

/// A snapshot being streamed to one follower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Install {
    /// The last seq the snapshot covers, and its size.
    pub seq: u64,
    pub len: u64,
    /// Bytes sent, and bytes the follower said it holds.
    pub sent: u64,
    pub acked: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Recovering { since_ms: u64, fetching: Option<NodeId> },
    Serving,
}

/// The leader of one shard. See the module docs.
#[derive(Clone, Debug)]
pub struct Leader {
    cfg: LeaderConfig,
    epoch: u64,
    phase: Phase,
    history: EpochHistory,
    end: u64,
    durable: u64,
    commit: u64,
    peers: BTreeMap<NodeId, Peer>,
    /// When the pending recovery fetch was sent.
    fetch_sent_ms: u64,
    stats: ProtocolStats,
}

impl Leader {
    /// Starts leading with a log that ends (durably) at `end`, in an epoch above
    /// `known_epoch`. Returns the leader and its first actions (persist the epoch, probe).
    pub fn start(
        cfg: LeaderConfig,
        known_epoch: u64,
        history: EpochHistory,
        end: u64,
        now_ms: u64,
    ) -> (Leader, Vec<Action>) {
        let epoch = known_epoch.max(history.last_epoch()) + 1;
        let peers = cfg.followers.iter().map(|&n| (n, Peer::default())).collect();
        let mut leader = Leader {
            cfg,
            epoch,
            phase: Phase::Recovering { since_ms: now_ms, fetching: None },
            history,
            end,
            durable: end,
            commit: 0,
            peers,
            fetch_sent_ms: 0,
            stats: ProtocolStats::default(),
        };
        let mut out = vec![Action::PersistEpoch { epoch, leader: None }];
        leader.probe_all(now_ms, &mut out);
        // A shard with no followers has nobody to wait for.
        leader.recover_step(now_ms, &mut out);
        (leader, out)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn is_serving(&self) -> bool {
        self.phase == Phase::Serving
    }
    pub fn end(&self) -> u64 {
        self.end
    }
    pub fn durable(&self) -> u64 {
        self.durable
    }
    pub fn commit(&self) -> u64 {
        self.commit
    }
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }
    pub fn peers(&self) -> &BTreeMap<NodeId, Peer> {
        &self.peers
    }
    pub fn stats(&self) -> &ProtocolStats {
        &self.stats
    }
    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    /// The own writer appended a batch (`first_seq..=last_seq`, stamped with this epoch).
    pub fn on_local_append(&mut self, first_seq: u64, last_seq: u64) {
        debug_assert!(self.is_serving() && first_seq == self.end + 1);
        // The epoch only grows, and the seq continues the log: this cannot fail.
        let _ = self.history.observe(self.epoch, first_seq);
        self.end = last_seq;
    }

    /// The own WAL is durable through `seq`: ship it, and commit what a quorum holds.
    pub fn on_local_durable(&mut self, seq: u64, now_ms: u64, log: &dyn BatchSource) -> Vec<Action> {
        self.durable = self.durable.max(seq.min(self.end));
        let mut out = Vec::new();
        self.advance_commit(&mut out);
        self.pump(now_ms, log, &mut out);
        out
    }

    /// Time passed: retransmit to silent followers, re-probe, end recovery after the grace.
    pub fn tick(&mut self, now_ms: u64, log: &dyn BatchSource) -> Vec<Action> {
        let mut out = Vec::new();
        // Silent: nothing sent to it and nothing heard from it for a retransmit timeout. A
        // follower busy applying a full window still acks message by message, so it is
        // not silent and gets no duplicates.
        let silent = |p: &Peer, rto: u64| {
            let last = p.last_sent_ms.max(p.last_heard_ms.unwrap_or(0));
            now_ms.saturating_sub(last) >= rto
        };
        let rto = self.cfg.retransmit_ms;
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let peer = &self.peers[&id];
            let gone = !heard_within(peer, now_ms, SILENT_RTOS * rto);
            if !peer.streaming && silent(peer, rto) {
                self.probe(id, now_ms, &mut out);
            } else if peer.streaming && peer.next > peer.durable + 1 && silent(peer, rto) && gone {
                // Silent for long: probably down. Probe it instead of queueing the window
                // for it again; shipping resumes when it answers.
                self.probe(id, now_ms, &mut out);
            } else if peer.streaming && peer.next > peer.durable + 1 && silent(peer, rto) {
                self.stats.retransmits += 1;
                let peer = self.peers.get_mut(&id).expect("peer");
                peer.next = peer.durable + 1;
            }
        }
        self.tick_installs(now_ms, log, &mut out);
        // A fetch whose answer was lost: ask again after a fresh probe.
        if let Phase::Recovering { since_ms, fetching: Some(id) } = self.phase
            && now_ms.saturating_sub(self.fetch_sent_ms) >= rto
        {
            self.phase = Phase::Recovering { since_ms, fetching: None };
            self.probe(id, now_ms, &mut out);
        }
        self.recover_step(now_ms, &mut out);
        self.pump(now_ms, log, &mut out);
        out
    }

    /// Handles one message from `from`.
    pub fn handle(
        &mut self,
        from: NodeId,
        message: Message,
        now_ms: u64,
        log: &dyn BatchSource,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if message.shard() != self.cfg.shard || !self.peers.contains_key(&from) {
            return out;
        }
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.last_heard_ms = Some(now_ms);
        }
        match message {
            Message::Position { epoch, end, durable, history, .. } => {
                if self.newer(epoch, &mut out) {
                    return out;
                }
                self.on_position(from, end, durable, history, now_ms, &mut out);
            }
            Message::Ack { epoch, durable, applied, .. } if epoch == self.epoch => {
                let peer = self.peers.get_mut(&from).expect("peer");
                peer.durable = peer.durable.max(durable);
                peer.applied = peer.applied.max(applied);
                peer.next = peer.next.max(peer.durable + 1);
                self.advance_commit(&mut out);
            }
            Message::Refused { epoch, reason, end, .. } => {
                self.on_refused(from, epoch, reason, end, now_ms, &mut out)
            }
            Message::SnapshotAck { epoch, seq, received, installed, .. } if epoch == self.epoch => {
                self.on_snapshot_ack(from, seq, received, installed, &mut out);
            }
            Message::Fetched { epoch, from_seq, batches, .. } if epoch == self.epoch => {
                self.on_fetched(from, from_seq, batches, now_ms, &mut out);
            }
            // Another node claims to lead this epoch or an older one: tell it it is deposed.
            Message::Probe { .. }
            | Message::Append { .. }
            | Message::Fetch { .. }
            | Message::SnapshotChunk { .. } => {
                let end = self.history.pos(self.end);
                let refused = Message::Refused {
                    shard: self.cfg.shard,
                    epoch: self.epoch,
                    reason: Refusal::StaleEpoch,
                    end,
                };
                out.push(Action::Send { to: from, message: refused });
            }
            _ => {}
        }
        self.pump(now_ms, log, &mut out);
        out
    }

    /// A peer claims a newer epoch: stop leading.
    fn newer(&mut self, epoch: u64, out: &mut Vec<Action>) -> bool {
        if epoch > self.epoch {
            out.push(Action::StepDown { epoch });
            return true;
        }
        false
    }

    fn on_refused(
        &mut self,
        from: NodeId,
        epoch: u64,
        reason: Refusal,
        end: Pos,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        self.stats.refuse(reason);
        match reason {
            // Another leader holds this epoch or a newer one exists: we are deposed.
            Refusal::StaleEpoch if epoch >= self.epoch => {
                out.push(Action::StepDown { epoch: epoch.max(self.epoch) })
            }
            Refusal::StaleEpoch => {}
            Refusal::UnknownShard => {
                self.peers.get_mut(&from).expect("peer").unknown_shard = true;
            }
            Refusal::Gap if epoch == self.epoch && self.rewind(from, end) => {}
            Refusal::Gap | Refusal::Mismatch | Refusal::BadBatch => self.probe(from, now_ms, out),
        }
    }

    /// A `Gap` from a follower whose log end lies on this leader's log (a restarted follower
    /// sent appends from a stale position): ship again from its end, without a probe. The
    /// other refusals of appends sent before this rewind carry the same end and are ignored,
    /// so a window of stale appends costs one rewind, not a probe each.
    fn rewind(&mut self, from: NodeId, end: Pos) -> bool {
        let on_our_log = end.seq <= self.end && self.history.epoch_at(end.seq) == end.epoch;
        let serving = self.is_serving();
        let peer = self.peers.get_mut(&from).expect("peer");
        if !serving || !peer.streaming || !on_our_log || end.seq < peer.durable {
            return false;
        }
        if peer.rewound_to != Some(end.seq) {
            peer.rewound_to = Some(end.seq);
            peer.next = end.seq + 1;
            self.stats.retransmits += 1;
        }
        true
    }

    fn on_position(
        &mut self,
        from: NodeId,
        end: LogPos,
        durable: u64,
        history: Vec<(u64, u64)>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(history) = EpochHistory::from_starts(history).filter(|h| h.pos(end.seq) == end) else {
            self.stats.refuse(Refusal::BadBatch);
            return;
        };
        let peer = self.peers.get_mut(&from).expect("peer");
        peer.position = Some((end, history.clone()));
        peer.durable = durable.min(end.seq);
        peer.unknown_shard = false;
        if self.is_serving() {
            let mp = match_point(&self.history, self.end, &history, end.seq);
            let peer = self.peers.get_mut(&from).expect("peer");
            peer.durable = peer.durable.min(mp);
            peer.next = mp + 1;
            peer.streaming = true;
            // Already at or past the snapshot it was being sent (its ack was lost), or no
            // install under way: shipping finds out afresh what it needs.
            if peer.install.as_ref().is_none_or(|i| mp >= i.seq) {
                peer.install = None;
                peer.needs_snapshot = false;
            }
            return;
        }
        self.recover_step(now_ms, out);
    }

    /// Recovery: adopt the most up-to-date log among the followers heard (Raft's order:
    /// the epoch of the last record, then the length). If a follower's log is ahead of ours,
    /// our own records it does not share are set aside and its records fetched; once no
    /// heard follower is ahead, serve when enough have answered. Committed records are on
    /// a quorum, and the most up-to-date log of any majority holds all of them, so a leader
    /// that serves after this never sets a committed record aside elsewhere.
    fn recover_step(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let Phase::Recovering { since_ms, fetching: None } = self.phase else { return };
        let own = self.history.pos(self.end);
        let ahead = self
            .peers
            .iter()
            .filter_map(|(&id, p)| p.position.as_ref().map(|(pos, history)| (*pos, id, history)))
            .filter(|(pos, _, _)| *pos > own)
            .max_by_key(|(pos, id, _)| (*pos, std::cmp::Reverse(*id)));
        let Some((pos, id, history)) = ahead else { return self.try_serve(now_ms, out) };
        let mp = match_point(&self.history, self.end, history, pos.seq);
        if mp < self.end {
            self.stats.set_asides += 1;
            out.push(Action::SetAside { from_seq: mp + 1 });
            self.end = mp;
            self.durable = mp;
            self.history.truncate_after(mp);
        }
        self.phase = Phase::Recovering { since_ms, fetching: Some(id) };
        let message = Message::Fetch {
            shard: self.cfg.shard,
            epoch: self.epoch,
            from_seq: mp + 1,
            max_bytes: self.cfg.message_bytes,
        };
        self.fetch_sent_ms = now_ms;
        out.push(Action::Send { to: id, message });
    }

    fn on_fetched(
        &mut self,
        from: NodeId,
        from_seq: u64,
        batches: Vec<Vec<u8>>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.phase != (Phase::Recovering { since_ms: self.since(), fetching: Some(from) })
            || from_seq != self.end + 1
        {
            return;
        }
        let mut appended = false;
        for bytes in batches {
            let Ok((header, _, len)) = decode_batch(&bytes) else { break };
            let fits = len == bytes.len()
                && header.shard_id == Some(self.cfg.shard)
                && header.first_seq == self.end + 1
                && header.epoch < self.epoch
                && self.history.observe(header.epoch, header.first_seq).is_ok();
            if !fits {
                break;
            }
            self.end = header.next_seq() - 1;
            self.stats.fetched_batches += 1;
            out.push(Action::Append(bytes));
            appended = true;
        }
        if appended {
            out.push(Action::Sync);
            self.durable = self.end;
        }
        // Ask again (from the new end) or move on: the peer's position is re-learned.
        self.phase = Phase::Recovering { since_ms: self.since(), fetching: None };
        if appended {
            self.probe(from, now_ms, out);
        } else if let Some(peer) = self.peers.get_mut(&from) {
            // It has nothing beyond our end after all: forget its claim.
            peer.position = None;
            self.probe(from, now_ms, out);
        }
    }

    fn since(&self) -> u64 {
        match self.phase {
            Phase::Recovering { since_ms, .. } => since_ms,
            Phase::Serving => 0,
        }
    }

    /// Serve when every follower answered, or a majority did and the grace is over.
    fn try_serve(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let Phase::Recovering { since_ms, fetching: None } = self.phase else { return };
        let heard = self.peers.values().filter(|p| p.position.is_some()).count();
        let all = heard == self.peers.len();
        let majority = heard + 1 >= self.cfg.quorum();
        if !(all || majority && now_ms.saturating_sub(since_ms) >= self.cfg.recovery_grace_ms) {
            return;
        }
        self.phase = Phase::Serving;
        for peer in self.peers.values_mut() {
            match &peer.position {
                Some((pos, history)) => {
                    let mp = match_point(&self.history, self.end, history, pos.seq);
                    peer.durable = peer.durable.min(mp);
                    peer.next = mp + 1;
                    peer.streaming = true;
                }
                None => peer.streaming = false,
            }
        }
        out.push(Action::Serve { epoch: self.epoch });
        self.advance_commit(out);
    }

    fn probe_all(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.probe(id, now_ms, out);
        }
    }

    fn probe(&mut self, to: NodeId, now_ms: u64, out: &mut Vec<Action>) {
        let peer = self.peers.get_mut(&to).expect("peer");
        peer.streaming = false;
        peer.rewound_to = None;
        peer.last_sent_ms = now_ms;
        out.push(Action::Send { to, message: Message::Probe { shard: self.cfg.shard, epoch: self.epoch } });
    }

    /// The highest seq durable on a quorum, if it holds a record of this epoch.
    fn advance_commit(&mut self, out: &mut Vec<Action>) {
        if !self.is_serving() {
            return;
        }
        let mut durables: Vec<u64> = self.peers.values().map(|p| p.durable).collect();
        durables.push(self.durable);
        durables.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = durables[self.cfg.quorum() - 1];
        if candidate > self.commit && self.history.epoch_at(candidate) == self.epoch {
            self.commit = candidate;
            out.push(Action::Commit(candidate));
        }
    }

    /// Ships durable batches to every streaming follower, within its window.
    fn pump(&mut self, now_ms: u64, log: &dyn BatchSource, out: &mut Vec<Action>) {
        if !self.is_serving() {
            return;
        }
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            if self.peers[&id].install.is_some() {
                self.send_snapshot(id, now_ms, log, out);
            } else {
                while self.ship_one(id, now_ms, log, out) {}
            }
        }
    }

    /// Ships one append message to `id` if it is due; false when nothing was sent.
    fn ship_one(&mut self, id: NodeId, now_ms: u64, log: &dyn BatchSource, out: &mut Vec<Action>) -> bool {
        let (durable, commit, shard, epoch) = (self.durable, self.commit, self.cfg.shard, self.epoch);
        let window = self.cfg.window_records;
        let peer = self.peers.get(&id).expect("peer");
        if !peer.streaming
            || peer.needs_snapshot
            || peer.unknown_shard
            || peer.next > durable
            || peer.next.saturating_sub(peer.durable + 1) >= window
        {
            return false;
        }
        let prev = self.history.pos(peer.next - 1);
        let batches = match log.read_from(peer.next, self.cfg.message_bytes) {
            Ok(batches) if !batches.is_empty() => batches,
            Ok(_) | Err(SourceError::Io(_)) => return false,
            Err(SourceError::Behind { oldest, .. }) => {
                self.start_install(id, oldest, now_ms, log, out);
                return false;
            }
        };
        // Only durable batches leave: cut the read at the durable seq.
        let (mut next, window_end) = (peer.next, peer.durable + window);
        let mut shipped = Vec::new();
        for bytes in batches {
            // The log verified these batches when it wrote them; the header says their range.
            let Ok((header, _)) = BatchHeader::decode(&bytes) else { break };
            let last = header.next_seq() - 1;
            let beyond_window = !shipped.is_empty() && last > window_end;
            if header.first_seq != next || last > durable || beyond_window {
                break;
            }
            next = header.next_seq();
            self.stats.bytes_shipped += bytes.len() as u64;
            shipped.push(bytes);
        }
        if shipped.is_empty() {
            return false;
        }
        self.stats.batches_shipped += shipped.len() as u64;
        let peer = self.peers.get_mut(&id).expect("peer");
        peer.next = next;
        peer.last_sent_ms = now_ms;
        out.push(Action::Send {
            to: id,
            message: Message::Append { shard, epoch, prev, batches: shipped, commit },
        });
        true
    }
}

#[path = "leader_install.rs"]
mod install;

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
