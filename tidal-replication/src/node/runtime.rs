//! One shard replica inside the runtime: its protocol machine and the execution of the
//! machine's actions against the store.

use std::collections::VecDeque;

use tidal::shard::role::{DurableEvent, ShardRole};
use tidal::wal::ship::ShipError;
use tidal::{Db, ErrorKind};

use super::epoch_file::{self, EpochRecord, PendingInstall};
use super::outbox::Outbox;
use super::staging::Staging;
use super::status::{FollowerStatus, ShardStatus};
use super::{NodeConfig, NodeError, ShardPlacement};
use crate::log::EpochHistory;
use crate::protocol::replica::{Replica, Role};
use crate::protocol::{Action, BatchSource, Message, Refusal, SnapshotMeta, SourceError};
use crate::transport::{NodeId, Transport};

/// Leader-side record of when each seq became durable, for lag in bytes and time.
const DURABLE_MARKS_MAX: usize = 8192;

/// The store read as a [`BatchSource`] for one shard.
struct DbSource<'d> {
    db: &'d Db,
    shard: u32,
}

impl BatchSource for DbSource<'_> {
    fn read_from(&self, from_seq: u64, max_bytes: u64) -> Result<Vec<Vec<u8>>, SourceError> {
        self.db.read_batches(self.shard, from_seq, max_bytes).map_err(|e| match e {
            ShipError::Behind { seq, oldest } => SourceError::Behind { seq, oldest },
            other => SourceError::Io(other.to_string()),
        })
    }

    fn latest_snapshot(&self) -> Result<Option<SnapshotMeta>, SourceError> {
        let file = self.db.latest_snapshot(self.shard).map_err(|e| SourceError::Io(e.to_string()))?;
        Ok(file.map(|f| SnapshotMeta { seq: f.seq, len: f.len }))
    }

    fn read_snapshot(&self, seq: u64, offset: u64, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
        let len = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        self.db.read_snapshot(self.shard, seq, offset, len).map_err(|e| SourceError::Io(e.to_string()))
    }
}

pub(super) struct ShardRuntime {
    pub shard: u32,
    node: NodeId,
    state_dir: std::path::PathBuf,
    replica: Replica,
    record: EpochRecord,
    /// Batches waiting for their `Sync`.
    appends: Vec<Vec<u8>>,
    /// A `Sync` held back (group commit), and the messages sent after it.
    sync_pending: bool,
    deferred: Vec<(NodeId, Message)>,
    /// Messages held until the batches appended before them are durable.
    outbox: Outbox,
    /// First actions (a leader's recovery), run by `start`.
    initial: Vec<Action>,
    /// (seq, log bytes, ms) of the leader's fsyncs, oldest first.
    marks: VecDeque<(u64, u64, u64)>,
    failed: Option<String>,
    /// Records moved to `divergent/` so far.
    set_aside_records: u64,
    /// A snapshot from the leader being received.
    staging: Staging,
    /// Shipped snapshots that failed their checks here.
    snapshots_refused: u64,
    /// The oldest seq a follower still needs, as last told to the store's retention.
    hold: u64,
}

impl ShardRuntime {
    /// The replica of `placement` as its persisted record and the store's log say.
    pub fn open(
        db: &Db,
        cfg: &NodeConfig,
        placement: &ShardPlacement,
        now_ms: u64,
    ) -> Result<ShardRuntime, NodeError> {
        let shard = placement.shard;
        let state_err = |source| NodeError::State { path: cfg.state_dir.clone(), source };
        let mut record =
            epoch_file::load(&cfg.state_dir, shard).map_err(state_err)?.unwrap_or_else(|| EpochRecord {
                epoch: 0,
                leader: Some(placement.initial_leader.0),
                leading: placement.initial_leader == cfg.node,
                history: Vec::new(),
                install: None,
            });
        if let Some(pending) = record.install.take() {
            settle_install(db, shard, &mut record, pending);
            epoch_file::store(&cfg.state_dir, shard, &record).map_err(state_err)?;
        }
        let (history, end) = rebuild_history(db, shard, &record)?;
        let leader_cfg = cfg.leader_config(placement);
        let (replica, initial) = if record.leading {
            Replica::leader(cfg.node, leader_cfg, record.epoch, history, end, now_ms)
        } else {
            let leader = record.leader.map(NodeId);
            (Replica::follower(cfg.node, leader_cfg, record.epoch, leader, history, end), Vec::new())
        };
        let role = if record.leading {
            ShardRole::Recovering { epoch: replica.epoch() }
        } else {
            ShardRole::Follower { epoch: record.epoch, leader: record.leader }
        };
        db.set_role(shard, role)?;
        tracing::info!(shard, node = %cfg.node, ?role, end, "replica opened");
        Ok(ShardRuntime {
            shard,
            node: cfg.node,
            state_dir: cfg.state_dir.clone(),
            replica,
            record,
            appends: Vec::new(),
            sync_pending: false,
            deferred: Vec::new(),
            outbox: Outbox::default(),
            initial,
            marks: VecDeque::new(),
            failed: None,
            set_aside_records: 0,
            staging: Staging::new(&cfg.state_dir, shard),
            snapshots_refused: 0,
            hold: u64::MAX,
        })
    }

    pub fn start(&mut self, db: &Db, transport: &mut dyn Transport) {
        let actions = std::mem::take(&mut self.initial);
        self.execute(db, transport, actions);
    }

    pub fn handle(
        &mut self,
        db: &Db,
        transport: &mut dyn Transport,
        from: NodeId,
        message: Message,
        now_ms: u64,
    ) {
        if self.failed.is_some() {
            return;
        }
        let actions = self.replica.handle(from, message, now_ms, &DbSource { db, shard: self.shard });
        self.execute(db, transport, actions);
    }

    pub fn tick(&mut self, db: &Db, transport: &mut dyn Transport, now_ms: u64) {
        if self.failed.is_some() {
            return;
        }
        if self.outbox.stalled(now_ms) {
            // No fsync report for a while with batches waiting: ask the store directly (a
            // failed fsync stops the replica here instead of leaving its acks held).
            if let Err(reason) = self.settle(db, transport) {
                return self.stop_with(reason);
            }
        }
        let actions = self.replica.tick(now_ms, &DbSource { db, shard: self.shard });
        self.execute(db, transport, actions);
        self.update_hold(db);
    }

    /// A leader keeps the WAL its followers still need (within the store's cap), so a
    /// follower that was away briefly catches up from the log, not by a snapshot.
    fn update_hold(&mut self, db: &Db) {
        let hold = match self.replica.role() {
            // A follower being sent a snapshot needs the log after it.
            Role::Leader(l) => l
                .peers()
                .values()
                .map(|p| p.install.as_ref().map_or(p.durable, |i| i.seq.max(p.durable)) + 1)
                .min()
                .unwrap_or(u64::MAX),
            Role::Follower(_) => u64::MAX,
        };
        if hold != self.hold && db.hold_log(self.shard, hold).is_ok() {
            self.hold = hold;
        }
    }

    /// The store's writer fsynced through `event.seq`: a serving leader ships it.
    pub fn on_durable(&mut self, db: &Db, transport: &mut dyn Transport, event: DurableEvent, now_ms: u64) {
        if self.failed.is_none() {
            self.outbox.durable(transport, event.log_bytes);
        }
        if self.failed.is_some() || !self.replica.is_serving() {
            return;
        }
        let (end, _) = self.replica.end();
        if event.seq > end {
            self.replica.on_local_append(end + 1, event.seq);
        }
        self.marks.push_back((event.seq, event.log_bytes, now_ms));
        if self.marks.len() > DURABLE_MARKS_MAX {
            self.marks.pop_front();
        }
        let actions = self.replica.on_local_durable(event.seq, now_ms, &DbSource { db, shard: self.shard });
        self.execute(db, transport, actions);
    }

    pub fn promote(&mut self, db: &Db, transport: &mut dyn Transport, now_ms: u64) -> Result<(), NodeError> {
        self.flush(db, transport);
        self.usable()?;
        self.settle(db, transport).map_err(NodeError::Refused)?;
        if self.replica.is_leader() {
            return Err(NodeError::Refused(format!("this node already leads shard {}", self.shard)));
        }
        db.set_role(self.shard, ShardRole::Recovering { epoch: self.replica.epoch() + 1 })?;
        let actions = self.replica.promote(now_ms);
        self.execute(db, transport, actions);
        self.usable()
    }

    pub fn demote(&mut self, db: &Db, transport: &mut dyn Transport) -> Result<(), NodeError> {
        self.flush(db, transport);
        self.usable()?;
        self.settle(db, transport).map_err(NodeError::Refused)?;
        let actions = self.replica.demote();
        self.execute(db, transport, actions);
        self.usable()
    }

    fn usable(&self) -> Result<(), NodeError> {
        match &self.failed {
            Some(reason) => {
                Err(NodeError::Refused(format!("shard {} replica stopped: {reason}", self.shard)))
            }
            None => Ok(()),
        }
    }

    fn execute(&mut self, db: &Db, transport: &mut dyn Transport, actions: Vec<Action>) {
        for action in actions {
            if let Err(reason) = self.execute_one(db, transport, action) {
                self.stop_with(reason);
                return;
            }
        }
    }

    fn stop_with(&mut self, reason: String) {
        tracing::error!(shard = self.shard, %reason, "replica stopped");
        self.failed = Some(reason);
        self.appends.clear();
        self.deferred.clear();
        self.outbox.clear();
        self.sync_pending = false;
    }

    /// Group commit of shipped batches: a `Sync` is held back, and so is every message the
    /// machine sends after it (its acks claim durability), until the worker has taken the
    /// events already waiting; then the store appends and applies the batches of all of them
    /// and one pipelined fsync covers them, and the held messages leave, in their order, once
    /// it is reported ([`Outbox`]). Any other action flushes and waits for that fsync first,
    /// so the store sees the actions in the machine's order, with the syncs merged.
    pub fn flush(&mut self, db: &Db, transport: &mut dyn Transport) {
        if let Err(reason) = self.flush_inner(db, transport) {
            self.stop_with(reason);
        }
    }

    fn flush_inner(&mut self, db: &Db, transport: &mut dyn Transport) -> Result<(), String> {
        if self.sync_pending {
            self.sync_pending = false;
            let batches = std::mem::take(&mut self.appends);
            if !batches.is_empty() {
                let position = (db.append_shipped(self.shard, batches))
                    .map_err(|e| format!("apply shipped batches: {e}"))?;
                self.outbox.appended(position.log_bytes);
            }
            self.persist_history()?;
        }
        for (to, message) in std::mem::take(&mut self.deferred) {
            self.outbox.send(transport, to, message);
        }
        Ok(())
    }

    /// Waits for the fsync of every batch appended so far and sends what waited for it.
    fn settle(&mut self, db: &Db, transport: &mut dyn Transport) -> Result<(), String> {
        if self.outbox.waiting() {
            let durable = db.sync_shipped(self.shard).map_err(|e| format!("sync shipped batches: {e}"))?;
            self.outbox.durable(transport, durable.log_bytes);
        }
        Ok(())
    }

    fn execute_one(&mut self, db: &Db, transport: &mut dyn Transport, action: Action) -> Result<(), String> {
        match action {
            Action::Send { to, message } if self.sync_pending => self.deferred.push((to, message)),
            Action::Send { to, message } => self.outbox.send(transport, to, message),
            Action::Append(bytes) => self.appends.push(bytes),
            Action::Sync => self.sync_pending = true,
            other => {
                self.flush_inner(db, transport)?;
                self.settle(db, transport)?;
                self.execute_ordered(db, transport, other)?;
            }
        }
        Ok(())
    }

    /// The actions that go to the store in order, after any held-back sync.
    fn execute_ordered(
        &mut self,
        db: &Db,
        transport: &mut dyn Transport,
        action: Action,
    ) -> Result<(), String> {
        match action {
            Action::Send { .. } | Action::Append(_) | Action::Sync => unreachable!("handled by execute_one"),
            Action::PersistEpoch { epoch, leader } => self.persist_epoch(db, epoch, leader)?,
            Action::SetAside { from_seq } => {
                let report = db
                    .set_aside(self.shard, from_seq)
                    .map_err(|e| format!("set aside from seq {from_seq}: {e}"))?;
                tracing::warn!(
                    shard = self.shard,
                    from_seq,
                    batches = report.batches,
                    records = report.records,
                    file = ?report.file,
                    "divergent tail set aside for reconciliation"
                );
                self.set_aside_records += report.records;
            }
            Action::SendBatches { to, epoch, from_seq, max_bytes } => {
                let batches = match db.read_batches(self.shard, from_seq, max_bytes) {
                    Ok(batches) => batches,
                    Err(e) => {
                        tracing::warn!(shard = self.shard, %e, "fetch answered with nothing");
                        Vec::new()
                    }
                };
                let message = Message::Fetched { shard: self.shard, epoch, from_seq, batches };
                let _ = transport.send(to, message.encode());
            }
            Action::Commit(seq) => db.commit(self.shard, seq).map_err(|e| e.to_string())?,
            Action::Serve { epoch } => {
                db.set_role(self.shard, ShardRole::Leader { epoch }).map_err(|e| e.to_string())?;
                tracing::info!(shard = self.shard, epoch, "leading");
            }
            Action::StepDown { epoch } => {
                let own = Some(self.node.0);
                let leader = (epoch == self.record.epoch)
                    .then_some(self.record.leader)
                    .flatten()
                    .filter(|&l| Some(l) != own);
                db.set_role(self.shard, ShardRole::Follower { epoch, leader }).map_err(|e| e.to_string())?;
                self.record.leading = false;
                self.store()?;
                tracing::info!(shard = self.shard, epoch, "stepped down");
            }
            Action::SnapshotBegin { seq, len } => self.staging.begin(seq, len)?,
            Action::SnapshotWrite { offset, bytes } => self.staging.write(offset, &bytes)?,
            Action::SnapshotInstall { seq, keep_through } => self.install(db, seq, keep_through)?,
        }
        Ok(())
    }

    /// Installs the staged snapshot through `seq` (see [`Action::SnapshotInstall`]).
    fn install(&mut self, db: &Db, seq: u64, keep_through: u64) -> Result<(), String> {
        let bytes = self.staging.finish(seq)?;
        // The history through the snapshot is only in the machine: record it first.
        let history = self.replica.history().starts().to_vec();
        self.record.install = Some(PendingInstall { seq, history });
        self.store()?;
        let (installed, aside) = match db.install_snapshot(self.shard, bytes, keep_through) {
            Ok(done) => done,
            // Refused by its checks, before anything changed: stay as we were and let the
            // leader learn our real position (it sends another).
            Err(e) if matches!(e.kind(), ErrorKind::Corruption | ErrorKind::InvalidInput) => {
                tracing::error!(shard = self.shard, seq, error = %e, "the leader's snapshot was refused");
                self.snapshots_refused += 1;
                self.record.install = None;
                self.store()?;
                return self.reload_follower(db);
            }
            Err(e) => return Err(format!("install the leader's snapshot through seq {seq}: {e}")),
        };
        if installed != seq {
            return Err(format!("the staged snapshot covers seq {installed}, not {seq}"));
        }
        self.set_aside_records += aside.records;
        self.record.install = None;
        self.record.history = self.replica.history().starts().to_vec();
        self.store()?;
        tracing::warn!(shard = self.shard, seq, set_aside = aside.records, "installed the leader's snapshot");
        Ok(())
    }

    /// The follower machine again as the store and the record say (after a refused install,
    /// which the machine had taken as done).
    fn reload_follower(&mut self, db: &Db) -> Result<(), String> {
        let (history, end) = rebuild_history(db, self.shard, &self.record).map_err(|e| e.to_string())?;
        let cfg = self.replica.config().clone();
        let leader = self.record.leader.map(NodeId);
        self.replica = Replica::follower(self.node, cfg, self.record.epoch, leader, history, end);
        Ok(())
    }

    fn persist_epoch(&mut self, db: &Db, epoch: u64, leader: Option<NodeId>) -> Result<(), String> {
        self.record.epoch = epoch;
        self.record.leader = leader.map(|n| n.0);
        self.record.leading = leader == Some(self.node);
        self.record.history = self.replica.history().starts().to_vec();
        self.store()?;
        if !self.record.leading && !self.replica.is_leader() {
            let role = ShardRole::Follower { epoch, leader: self.record.leader };
            db.set_role(self.shard, role).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn persist_history(&mut self) -> Result<(), String> {
        let history = self.replica.history().starts();
        if history != self.record.history.as_slice() {
            self.record.history = history.to_vec();
            self.store()?;
        }
        Ok(())
    }

    fn store(&self) -> Result<(), String> {
        epoch_file::store(&self.state_dir, self.shard, &self.record)
            .map_err(|e| format!("persist epoch record: {e}"))
    }

    pub fn status(&self, db: &Db) -> ShardStatus {
        let (end, durable) = self.replica.end();
        let applied = db.position(self.shard).map(|p| p.applied_seq).unwrap_or(0);
        let (role, commit, followers) = match self.replica.role() {
            Role::Leader(l) => {
                let role = if l.is_serving() { "leader" } else { "recovering" };
                (role, l.commit(), self.followers(l, durable))
            }
            Role::Follower(_) => ("follower", 0, Vec::new()),
        };
        ShardStatus {
            shard: self.shard,
            role: if self.failed.is_some() { "failed" } else { role },
            epoch: self.replica.epoch(),
            leader: if self.replica.is_leader() { Some(self.node.0) } else { self.record.leader },
            end,
            durable,
            applied,
            commit,
            followers,
            stats: self.replica.stats().clone(),
            history: self.replica.history().starts().to_vec(),
            set_aside_records: self.set_aside_records,
            snapshots_refused: self.snapshots_refused,
            failed: self.failed.clone(),
        }
    }

    fn followers(&self, leader: &crate::protocol::leader::Leader, durable: u64) -> Vec<FollowerStatus> {
        let now = self.marks.back().map_or(0, |m| m.2);
        let (_, log_bytes_now, _) = self.marks.back().copied().unwrap_or_default();
        leader
            .peers()
            .iter()
            .map(|(id, p)| {
                let lag_records = durable.saturating_sub(p.durable);
                // The first fsync that covered a seq the follower lacks.
                let mark = self.marks.iter().find(|(seq, _, _)| *seq > p.durable);
                let (lag_bytes, lag_ms) = match (lag_records, mark) {
                    (0, _) | (_, None) => (0, 0),
                    (_, Some(&(_, bytes, at))) => {
                        let before =
                            self.marks.iter().rev().find(|(seq, _, _)| *seq <= p.durable).map_or(0, |m| m.1);
                        (
                            log_bytes_now.saturating_sub(before).max(bytes.saturating_sub(before)),
                            now.saturating_sub(at),
                        )
                    }
                };
                FollowerStatus {
                    node: id.0,
                    durable: p.durable,
                    applied: p.applied,
                    lag_records,
                    lag_bytes,
                    lag_ms,
                    last_heard_ms_ago: p.last_heard_ms.map(|t| now.saturating_sub(t)),
                    needs_snapshot: p.needs_snapshot,
                }
            })
            .collect()
    }
}

/// A restart found an install recorded as under way: if the store holds that snapshot (the
/// install got past its durable step), the leader's history through it is the log's; else
/// the install did not happen and the record's history stands.
fn settle_install(db: &Db, shard: u32, record: &mut EpochRecord, pending: PendingInstall) {
    // The install writes the snapshot under its seq, after removing every own snapshot
    // from the cut on: the newest snapshot being that one means the install got that far.
    let latest = db.latest_snapshot(shard).ok().flatten().map_or(0, |s| s.seq);
    let applied = db.position(shard).map_or(0, |p| p.applied_seq);
    let installed = latest == pending.seq && applied >= pending.seq;
    tracing::warn!(shard, seq = pending.seq, installed, "a snapshot install was under way at the last stop");
    if installed {
        record.history = pending.history;
    }
}

/// The epoch history of `shard`'s log: the persisted one up to its last epoch start, then
/// the batch headers from there to the end (a batch appended after the record was written
/// is not missed). Returns it with the log's last seq.
fn rebuild_history(db: &Db, shard: u32, record: &EpochRecord) -> Result<(EpochHistory, u64), NodeError> {
    let from = record.history.last().map_or(1, |&(_, start)| start);
    let (scanned, scanned_end) =
        db.scan_epochs(shard, from).map_err(|e| NodeError::Refused(format!("scan shard {shard}: {e}")))?;
    // A replica that installed a snapshot holds no records up to it: the store's applied
    // seq (everything durable at open) is its end.
    let applied = db.position(shard).map(|p| p.applied_seq).unwrap_or(0);
    let end = scanned_end.max(applied);
    let mut starts: Vec<(u64, u64)> =
        record.history.iter().copied().filter(|&(_, start)| start <= from && start <= end).collect();
    for (epoch, start) in scanned {
        if epoch > 0 && starts.last().is_none_or(|&(last, _)| last < epoch) {
            starts.push((epoch, start));
        }
    }
    let history = EpochHistory::from_starts(starts.clone())
        .ok_or_else(|| NodeError::Refused(format!("shard {shard}: inconsistent epoch history {starts:?}")))?;
    Ok((history, end))
}

/// A message for a shard this node does not host: say so (counted by the sender).
pub(super) fn refuse_unknown_shard(transport: &mut dyn Transport, from: NodeId, message: &Message) {
    if matches!(message, Message::Probe { .. } | Message::Append { .. } | Message::Fetch { .. }) {
        let refused = Message::Refused {
            shard: message.shard(),
            epoch: message.epoch(),
            reason: Refusal::UnknownShard,
            end: Default::default(),
        };
        let _ = transport.send(from, refused.encode());
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
