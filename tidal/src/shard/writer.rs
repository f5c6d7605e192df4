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

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use tokio::sync::oneshot;

use super::snapshot;
use super::state::ShardState;
use crate::error::{Error, Result};
use crate::history;
use crate::hlc::{Hlc, HybridClock};
use crate::metrics::Metrics;
use crate::options::Durability;
use crate::score::ScoreIndex;
use crate::session::{Ack, IdempotencyStore, SeqCheck, check_seq};
use crate::shard::applied::AppliedSeq;
use crate::signal::{Signal, SignalRef};
use crate::wal::vfs::Vfs;
use crate::wal::writer::WalWriter;
use crate::wal::{WalError, reader};

/// A request to a shard's writer thread.
pub(crate) enum Command {
    Write { signals: Vec<Signal>, reply: AckSender },
    Snapshot { reply: oneshot::Sender<Result<u64>> },
    Shutdown { reply: oneshot::Sender<Result<()>> },
}

/// Where a write request's acks go.
pub(crate) type AckSender = oneshot::Sender<Result<Vec<Ack>>>;

/// Everything the writer thread owns.
pub(crate) struct ShardWriter {
    pub shard: u32,
    /// Write requests enqueued and not yet answered (shared with the submitting side).
    pub in_flight: Arc<AtomicUsize>,
    /// The store-wide ranking, updated by every shard's batches.
    pub index: Arc<RwLock<ScoreIndex>>,
    /// This shard's applied seq, for `min_seq` waiters.
    pub applied: Arc<AppliedSeq>,
    pub metrics: Arc<Metrics>,
    pub wal: WalWriter,
    pub state: Arc<RwLock<ShardState>>,
    pub clock: Arc<HybridClock>,
    pub vfs: Arc<dyn Vfs>,
    pub wal_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    /// Where covered segments go; `None` deletes them instead.
    pub archive_dir: Option<PathBuf>,
    pub durability: Durability,
    pub group_signals_max: usize,
    pub snapshot_every_signals: u64,
    pub last_snapshot_seq: u64,
    pub last_sync: Instant,
    pub unsynced: bool,
    pub failed: Option<String>,
}

/// Decisions of the group so far that the shard state does not show yet.
#[derive(Default)]
struct Overlay {
    sessions: HashMap<String, (u64, Vec<(u64, Ack)>)>,
    idempotency: HashMap<String, Ack>,
}

enum Slot {
    New(usize),
    Duplicate(Ack),
}

impl ShardWriter {
    /// The thread body: serve commands until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        while let Some(first) = self.next_command(&rx) {
            let mut writes = Vec::new();
            let mut controls = Vec::new();
            let mut signals = 0;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Write { signals: s, reply } => {
                        signals += s.len();
                        writes.push((s, reply));
                    }
                    other => controls.push(other),
                }
                if signals < self.group_signals_max && controls.is_empty() {
                    next = rx.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                let answered = writes.len();
                self.commit_group(writes);
                self.in_flight.fetch_sub(answered, Ordering::AcqRel);
                self.maybe_snapshot();
            }
            for control in controls {
                if self.handle_control(control) {
                    return;
                }
            }
        }
        // Every sender is gone: nobody waits for the result, so report it here.
        if let Err(error) = self.finish() {
            tracing::error!(shard = self.shard, %error, "shard writer stopped");
        }
    }

    fn next_command(&mut self, rx: &Receiver<Command>) -> Option<Command> {
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
        match cmd {
            Command::Write { .. } => false,
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
                false
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(self.finish());
                true
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.unsynced && self.failed.is_none() {
            self.sync_now();
        }
        match &self.failed {
            Some(reason) => Err(Error::ShardFailed { shard: self.shard, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn sync_now(&mut self) {
        if let Err(e) = self.timed_sync() {
            self.fail(&e);
        }
    }

    fn fail(&mut self, error: &WalError) {
        tracing::error!(shard = self.shard, %error, "WAL write failed; shard stops accepting writes");
        self.failed = Some(error.to_string());
    }

    fn failed_error(&self) -> Error {
        Error::ShardFailed { shard: self.shard, reason: self.failed.clone().unwrap_or_default() }
    }

    fn commit_group(&mut self, writes: Vec<(Vec<Signal>, AckSender)>) {
        if self.failed.is_some() {
            for (_, reply) in writes {
                let _ = reply.send(Err(self.failed_error()));
            }
            return;
        }
        let base_seq = self.wal.next_seq();
        let (batches, replies): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        let mut records: Vec<(Hlc, SignalRef<'_>)> = Vec::new();
        let mut overlay = Overlay::default();
        let plans: Vec<Result<Vec<Slot>>> = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            batches.iter().map(|b| self.plan(&state, b, base_seq, &mut overlay, &mut records)).collect()
        };
        if !records.is_empty()
            && let Err(e) = self.append_and_sync(base_seq, &records)
        {
            self.fail(&e);
            for reply in replies {
                let _ = reply.send(Err(self.failed_error()));
            }
            return;
        }
        let contributions: Vec<(Arc<str>, f64)> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            records
                .iter()
                .enumerate()
                .map(|(i, (hlc, s))| state.apply(base_seq + i as u64, *hlc, s))
                .collect()
        };
        // Rankings and read-your-writes waiters learn of the batch before it is acknowledged.
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            for (item, delta) in &contributions {
                index.add(item, *delta);
            }
        }
        self.applied.publish(self.wal.next_seq() - 1);
        let duplicates = plans.iter().flatten().flatten().filter(|s| matches!(s, Slot::Duplicate(_))).count();
        self.metrics.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
        for (plan, reply) in plans.into_iter().zip(replies) {
            let acks =
                plan.map(|slots| slots.into_iter().map(|s| self.ack_of(s, base_seq, &records)).collect());
            let _ = reply.send(acks);
        }
    }

    fn ack_of(&self, slot: Slot, base_seq: u64, records: &[(Hlc, SignalRef<'_>)]) -> Ack {
        match slot {
            Slot::New(i) => Ack::new(self.shard, base_seq + i as u64, records[i].0),
            Slot::Duplicate(ack) => ack,
        }
    }

    fn append_and_sync(&mut self, base_seq: u64, records: &[(Hlc, SignalRef<'_>)]) -> Result<(), WalError> {
        let info = self.wal.append(records)?;
        debug_assert_eq!(info.first_seq, base_seq);
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics.wal_bytes.fetch_add(info.bytes, Ordering::Relaxed);
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

    /// fsyncs the WAL, recording the latency.
    fn timed_sync(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        self.wal.sync()?;
        self.metrics.fsync.observe(started.elapsed());
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Decides every signal of one request. A session gap or stale duplicate rejects the
    /// whole request, and then nothing of it reaches `records` or the overlay.
    fn plan<'a>(
        &self,
        state: &ShardState,
        signals: &'a [Signal],
        base_seq: u64,
        overlay: &mut Overlay,
        records: &mut Vec<(Hlc, SignalRef<'a>)>,
    ) -> Result<Vec<Slot>> {
        let mut local = Overlay::default();
        let mut fresh: Vec<(Hlc, SignalRef<'a>)> = Vec::new();
        let mut slots = Vec::with_capacity(signals.len());
        for signal in signals {
            if let Some(ack) = self.find_duplicate_key(state, overlay, &local, signal) {
                slots.push(Slot::Duplicate(ack.as_duplicate()));
                continue;
            }
            if let Some(dup) = self.check_session(state, overlay, &local, signal)? {
                slots.push(Slot::Duplicate(dup));
                continue;
            }
            let hlc = self.clock.now();
            let index = records.len() + fresh.len();
            let ack = Ack::new(self.shard, base_seq + index as u64, hlc);
            note(&mut local, state, overlay, signal, ack);
            fresh.push((hlc, signal.as_ref()));
            slots.push(Slot::New(index));
        }
        records.extend(fresh);
        overlay.sessions.extend(local.sessions);
        overlay.idempotency.extend(local.idempotency);
        Ok(slots)
    }

    fn find_duplicate_key(
        &self,
        state: &ShardState,
        group: &Overlay,
        local: &Overlay,
        s: &Signal,
    ) -> Option<Ack> {
        let key = IdempotencyStore::scoped_key(&s.user, s.idempotency_key.as_deref()?);
        local
            .idempotency
            .get(&key)
            .or_else(|| group.idempotency.get(&key))
            .copied()
            .or_else(|| state.idempotency.get(&key))
    }

    fn check_session(
        &self,
        state: &ShardState,
        group: &Overlay,
        local: &Overlay,
        s: &Signal,
    ) -> Result<Option<Ack>> {
        let (Some(session), Some(n)) = (s.session.as_deref(), s.session_seq) else {
            return Ok(None);
        };
        let key = IdempotencyStore::scoped_key(&s.user, session);
        let check = match local.sessions.get(&key).or_else(|| group.sessions.get(&key)) {
            Some((hwm, acks)) => check_seq(*hwm, acks, n),
            None => state.session_check(&s.user, session, n),
        };
        match check {
            SeqCheck::Apply => Ok(None),
            SeqCheck::Duplicate(ack) => Ok(Some(ack)),
            SeqCheck::Gap { expected } => {
                Err(Error::SessionGap { user: s.user.clone(), session: session.to_owned(), expected, got: n })
            }
            SeqCheck::StaleDuplicate { hwm } => {
                Err(Error::StaleDuplicate { user: s.user.clone(), session: session.to_owned(), got: n, hwm })
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.wal.next_seq() - 1;
        let due = self.snapshot_every_signals > 0
            && applied - self.last_snapshot_seq >= self.snapshot_every_signals;
        if due && let Err(error) = self.snapshot() {
            tracing::warn!(shard = self.shard, %error, "automatic snapshot failed; the WAL still holds everything");
        }
    }

    /// Writes a snapshot of the current state, prunes old snapshots and the WAL they cover.
    pub fn snapshot(&mut self) -> Result<u64> {
        if self.failed.is_some() {
            return Err(self.failed_error());
        }
        // A snapshot must never cover records the WAL could still lose.
        if let Err(e) = self.wal.sync() {
            self.fail(&e);
            return Err(self.failed_error());
        }
        self.unsynced = false;
        let (bytes_seq, path) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let path = snapshot::write(&*self.vfs, &self.snapshot_dir, &state)?;
            (state.applied_seq, path)
        };
        self.last_snapshot_seq = bytes_seq;
        if let Some(oldest) = snapshot::prune(&*self.vfs, &self.snapshot_dir, self.shard)? {
            let retired = match &self.archive_dir {
                Some(archive) => history::archive_segments_before(
                    &*self.vfs,
                    &self.wal_dir,
                    archive,
                    self.shard,
                    oldest + 1,
                )?,
                None => reader::remove_segments_before(&*self.vfs, &self.wal_dir, self.shard, oldest + 1)?,
            };
            tracing::debug!(
                shard = self.shard,
                segments = retired.len(),
                "WAL segments covered by snapshots retired"
            );
        }
        tracing::info!(shard = self.shard, seq = bytes_seq, path = %path.display(), "snapshot written");
        Ok(bytes_seq)
    }
}

/// Records a planned write in the request's overlay.
fn note(local: &mut Overlay, state: &ShardState, group: &Overlay, s: &Signal, ack: Ack) {
    if let Some(key) = &s.idempotency_key {
        local.idempotency.insert(IdempotencyStore::scoped_key(&s.user, key), ack);
    }
    let (Some(session), Some(n)) = (s.session.as_deref(), s.session_seq) else {
        return;
    };
    let key = IdempotencyStore::scoped_key(&s.user, session);
    let entry = local.sessions.entry(key.clone()).or_insert_with(|| match group.sessions.get(&key) {
        Some(known) => known.clone(),
        None => state.session(&s.user, session).map_or_else(
            || (state.evicted_hwm(&s.user, session), Vec::new()),
            |st| (st.hwm, st.recent_acks().copied().collect()),
        ),
    });
    entry.0 = n;
    entry.1.push((n, ack));
}
