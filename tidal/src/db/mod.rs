//! [`Db`]: the embedded store. Opens (recovers) every shard in parallel, validates and
//! routes writes to the shards' writer threads, and answers point reads.
//!
//! Data directory layout: `MANIFEST.json`, `LOCK`, `wal/` (segments of every shard,
//! shard-aware names), `snapshots/`, and `archive/` (segments snapshots cover, kept for
//! export; see [`crate::history`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

mod reads;
mod replica;
pub use replica::SnapshotFile;

use crate::error::{Error, Result};
use crate::history::{ARCHIVE_DIR, WAL_DIR};
use crate::hlc::HybridClock;
use crate::manifest::{self, Manifest};
use crate::metrics::Metrics;
use crate::options::Options;
use crate::ranking::{Absorber, Ranking};
use crate::score::{ScoreIndex, Weights};
use crate::session::{Ack, IdempotencyStore, SeqCheck, check_seq};
use crate::shard::applied::AppliedSeq;
use crate::shard::role::{AckMode, ShardRole};
use crate::shard::router::ShardRouter;
use crate::shard::snapshot_job::SnapshotTarget;
use crate::shard::state::{Scoring, ShardParams};
use crate::shard::writer::{Command, ShardWriter};
use crate::shard::{OpenedShard, ShardPaths, ShardRecovery, SharedState, open_shard};
use crate::signal::{BATCH_SIGNALS_MAX, REQUEST_BYTES_MAX, Signal};
use crate::wal::WalError;
use crate::wal::vfs::Vfs;
use crate::wal::writer::WalWriter;

/// What opening the store recovered, per shard.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    pub shards: Vec<ShardRecovery>,
    pub elapsed: Duration,
}

impl RecoveryReport {
    pub fn records_replayed(&self) -> u64 {
        self.shards.iter().map(|s| s.records_replayed).sum()
    }

    pub fn wal_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.wal_bytes).sum()
    }
}

pub(crate) struct ShardHandle {
    pub state: SharedState,
    /// Write requests queued or being committed; while any are, the state is not the whole
    /// truth about sessions and only the writer can judge SeqNos.
    in_flight: Arc<AtomicUsize>,
    pub applied: Arc<AppliedSeq>,
    /// The role last set (mirrors the writer's, for readers and status).
    pub role: Mutex<ShardRole>,
    /// The oldest seq a replica still needs from this shard's WAL (see [`Db::hold_log`]).
    pub hold: Arc<AtomicU64>,
    /// The newest batches of the log, pushed by the writer (see `shard::tail`).
    pub tail: Arc<Mutex<crate::shard::tail::TailCache>>,
    tx: SyncSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct DbInner {
    pub dir: PathBuf,
    pub options: Options,
    pub manifest: Manifest,
    pub router: ShardRouter,
    pub shards: Vec<ShardHandle>,
    pub clock: Arc<HybridClock>,
    pub recovery: RecoveryReport,
    pub ranking: Arc<Ranking>,
    /// Moves queued score deltas into the ranking's order (see `ranking.rs`); stops when
    /// the store is dropped.
    _absorber: Absorber,
    pub scoring: Scoring,
    pub metrics: Arc<Metrics>,
    ship_cursors: replica::ShipCursors,
    _lock: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The embedded signal store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

/// Acks a submitted batch will produce; wait for them blocking or async.
#[must_use = "a write is only acknowledged once waited for"]
pub struct PendingWrite {
    len: usize,
    /// Per shard: the input positions of its signals, and where its acks arrive.
    parts: Vec<(Vec<usize>, AckReceiver)>,
}

type AckReceiver = oneshot::Receiver<Result<Vec<Ack>>>;

impl PendingWrite {
    /// Blocks until every shard acknowledged (inside an async runtime, use `wait_async`).
    pub fn wait(self) -> Result<Vec<Ack>> {
        let mut acks = vec![None; self.len];
        for (indices, rx) in self.parts {
            let part = block_on(rx).map_err(|_| Error::Closed)??;
            place(&mut acks, &indices, part);
        }
        Ok(acks.into_iter().flatten().collect())
    }

    /// Waits without blocking a thread.
    pub async fn wait_async(self) -> Result<Vec<Ack>> {
        let mut acks = vec![None; self.len];
        for (indices, rx) in self.parts {
            let part = rx.await.map_err(|_| Error::Closed)??;
            place(&mut acks, &indices, part);
        }
        Ok(acks.into_iter().flatten().collect())
    }
}

/// Polls a future to completion on this thread, parking between wake-ups. Unlike tokio's
/// `blocking_recv` it does not panic inside an async runtime (it blocks that worker thread,
/// so async callers should prefer [`PendingWrite::wait_async`]).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn place(acks: &mut [Option<Ack>], indices: &[usize], part: Vec<Ack>) {
    for (i, ack) in indices.iter().zip(part) {
        acks[*i] = Some(ack);
    }
}

impl Db {
    /// Opens the store in `dir`, creating it if needed, and recovers every shard.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let vfs = options.vfs.clone();
        let paths = ShardPaths {
            wal_dir: dir.join(WAL_DIR),
            snapshot_dir: dir.join(crate::shard::SNAPSHOT_DIR),
            archive_dir: dir.join(ARCHIVE_DIR),
        };
        for d in [&dir, &paths.wal_dir, &paths.snapshot_dir, &paths.archive_dir] {
            vfs.create_dir_all(d).map_err(|e| WalError::io("create directory", d, e))?;
        }
        let lock = vfs.lock_dir(&dir).map_err(|e| WalError::io("lock data directory", &dir, e))?;
        let clock = Arc::new(HybridClock::new(options.clock.clone(), options.clock_skew_max_ms));
        let manifest = manifest::load_or_create(&*vfs, &dir, &options, clock.now().physical_ms())?;
        let started = Instant::now();
        let params = manifest.params();
        let scoring = Scoring { decay: params.decay, weights: options.score_weights };
        let opened = recover_all(&options, &paths, &params, scoring, &clock)?;
        let ranking = Arc::new(Ranking::new(build_index(&opened, &scoring.weights)));
        let absorber =
            ranking.start_absorber().map_err(|e| WalError::io("spawn ranking absorber", &dir, e))?;
        let metrics = Arc::new(Metrics::default());
        quarantine_damaged_snapshots(&*vfs, &paths.snapshot_dir, &opened)?;
        let recovery = RecoveryReport {
            shards: opened.iter().map(|o| o.recovery.clone()).collect(),
            elapsed: started.elapsed(),
        };
        tracing::info!(
            shards = manifest.shards,
            replayed = recovery.records_replayed(),
            elapsed_ms = recovery.elapsed.as_millis() as u64,
            "store opened"
        );
        let mut shards = Vec::with_capacity(opened.len());
        for opened in opened {
            shards.push(start_writer(&options, &paths, opened, &params, &clock, (&ranking, &metrics))?);
        }
        let router = ShardRouter::new(manifest.shards);
        let inner = DbInner {
            dir,
            options,
            manifest,
            router,
            shards,
            clock,
            recovery,
            ranking,
            _absorber: absorber,
            scoring,
            metrics,
            ship_cursors: Default::default(),
            _lock: lock,
        };
        Ok(Db { inner: Arc::new(inner) })
    }

    /// Writes one signal; returns once it is durable (per the durability mode) and visible.
    pub fn write(&self, signal: Signal) -> Result<Ack> {
        let mut acks = self.write_batch(vec![signal])?;
        acks.pop().ok_or(Error::Closed)
    }

    /// Writes a batch. Every signal is validated first: one invalid signal rejects the batch
    /// and nothing of it is written. Acks come back in input order.
    pub fn write_batch(&self, signals: Vec<Signal>) -> Result<Vec<Ack>> {
        self.submit(signals)?.wait()
    }

    /// Validates, routes and enqueues a batch; the returned [`PendingWrite`] yields the acks.
    ///
    /// When no earlier write is still in flight on a shard, its session rules are checked
    /// for the whole batch before anything is enqueued, so a gap rejects the batch whole.
    /// While earlier writes are in flight (a pipelining caller), only the shard's writer can
    /// judge SeqNos: it then rejects that shard's part alone, after other shards' parts may
    /// have committed. Either way a rejected part writes nothing.
    pub fn submit(&self, signals: Vec<Signal>) -> Result<PendingWrite> {
        self.submit_with(signals, AckMode::default())
    }

    /// [`Db::submit`] with an explicit acknowledgement mode (it matters on a replicated
    /// shard's leader: `Quorum` waits for a majority of replicas, `Leader` only for the
    /// leader's own fsync).
    pub fn submit_with(&self, signals: Vec<Signal>, ack: AckMode) -> Result<PendingWrite> {
        let inner = &*self.inner;
        if signals.len() > BATCH_SIGNALS_MAX {
            return Err(Error::BatchTooLarge { len: signals.len(), max: BATCH_SIGNALS_MAX });
        }
        let mut bytes = 0;
        for (index, signal) in signals.iter().enumerate() {
            signal.validate(&inner.options.custom_kinds).map_err(|f| Error::InvalidSignal {
                index,
                field: f.field,
                reason: f.reason,
            })?;
            bytes += signal.encoded_len_estimate();
        }
        if bytes > REQUEST_BYTES_MAX {
            return Err(Error::BatchBytesTooLarge { bytes, max: REQUEST_BYTES_MAX });
        }
        let len = signals.len();
        // Sized for an even spread (and a little more), so routing moves each signal once.
        let share = len / inner.shards.len() + len / (4 * inner.shards.len()) + 1;
        let mut by_shard: Vec<(Vec<usize>, Vec<Signal>)> =
            (0..inner.shards.len()).map(|_| (Vec::with_capacity(share), Vec::with_capacity(share))).collect();
        for (index, signal) in signals.into_iter().enumerate() {
            let part = &mut by_shard[inner.router.shard_for(&signal.user) as usize];
            part.0.push(index);
            part.1.push(signal);
        }
        for (shard, (_, part)) in by_shard.iter().enumerate() {
            let handle = &inner.shards[shard];
            if part.is_empty() {
                continue;
            }
            // A shard this node does not lead refuses the whole batch before any part of it
            // is enqueued (its writer checks again, for a role that changes meanwhile).
            if let Some(refusal) = not_leader(shard as u32, &handle.role) {
                return Err(refusal);
            }
            if handle.in_flight.load(Ordering::Acquire) == 0 {
                precheck_sessions(&handle.state, part)?;
            }
        }
        let mut parts = Vec::new();
        for (shard, (indices, part)) in by_shard.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let handle = &inner.shards[shard];
            let (reply, rx) = oneshot::channel();
            handle.in_flight.fetch_add(1, Ordering::AcqRel);
            if handle.tx.send(Command::Write { signals: part, ack, reply }).is_err() {
                handle.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::Closed);
            }
            parts.push((indices, rx));
        }
        Ok(PendingWrite { len, parts })
    }

    /// Snapshots every shard now; returns the seq each snapshot covers.
    pub fn snapshot(&self) -> Result<Vec<u64>> {
        let mut pending = Vec::new();
        for shard in &self.inner.shards {
            let (reply, rx) = oneshot::channel();
            shard.tx.send(Command::Snapshot { reply }).map_err(|_| Error::Closed)?;
            pending.push(rx);
        }
        pending.into_iter().map(|rx| block_on(rx).map_err(|_| Error::Closed)?).collect()
    }

    /// Stops the writers after they finish queued writes; unless durability is `None`, the
    /// WAL is fsynced first. Other clones of this `Db` get [`Error::Closed`] afterwards.
    pub fn close(self) -> Result<()> {
        self.inner.shutdown()
    }

    /// What opening recovered.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Write-path counters and the fsync latency histogram.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The file system the store runs on.
    pub fn vfs(&self) -> &dyn Vfs {
        &*self.inner.options.vfs
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The parameters every shard is applied with, pinned at creation.
    pub fn params(&self) -> ShardParams {
        self.inner.manifest.params()
    }

    /// Each shard's [`StateDigest`](crate::shard::digest::StateDigest) (index = shard), each
    /// taken under that shard's read lock: what replicas compare.
    pub fn digests(&self) -> Vec<crate::shard::digest::StateDigest> {
        self.inner.shards.iter().map(|s| s.state.read().unwrap_or_else(|e| e.into_inner()).digest()).collect()
    }

    pub fn router(&self) -> ShardRouter {
        self.inner.router
    }

    pub fn clock(&self) -> &HybridClock {
        &self.inner.clock
    }
}

impl DbInner {
    fn shutdown(&self) -> Result<()> {
        let mut first_error = None;
        for shard in &self.shards {
            let Some(handle) = shard.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            if shard.tx.send(Command::Shutdown { reply }).is_ok()
                && let Ok(Err(e)) = block_on(rx)
            {
                first_error.get_or_insert(e);
            }
            let _ = handle.join();
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "closing the store");
        }
    }
}

fn recover_all(
    options: &Options,
    paths: &ShardPaths,
    params: &ShardParams,
    scoring: Scoring,
    clock: &HybridClock,
) -> Result<Vec<OpenedShard>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..params.shards)
            .map(|shard| scope.spawn(move || open_shard(options, paths, shard, (params, scoring), clock)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::InvalidState("shard recovery panicked".into()))))
            .collect()
    })
}

/// The store-wide ranking from every shard's decayed sums under the current weights.
fn build_index(opened: &[OpenedShard], weights: &Weights) -> ScoreIndex {
    ScoreIndex::from_parts(
        opened.iter().flat_map(|o| {
            o.state.items.iter_keys().map(|(_, item, entry)| (item, entry.decayed.score(weights)))
        }),
        opened.iter().map(|o| o.state.items.len()).sum(),
    )
}

fn start_writer(
    options: &Options,
    paths: &ShardPaths,
    opened: OpenedShard,
    params: &ShardParams,
    clock: &Arc<HybridClock>,
    (ranking, metrics): (&Arc<Ranking>, &Arc<Metrics>),
) -> Result<ShardHandle> {
    let OpenedShard { state, scan, recovery } = opened;
    let scoring = state.scoring;
    let shard = recovery.shard;
    let next_seq = scan.next_seq.max(state.applied_seq + 1);
    let wal = WalWriter::open(
        options.vfs.clone(),
        &paths.wal_dir,
        shard,
        next_seq,
        scan.tail_segment.clone(),
        options.segment_bytes_max,
    )?
    .with_origin_node(options.node_id);
    let applied = Arc::new(AppliedSeq::new(state.applied_seq));
    let state = Arc::new(RwLock::new(state));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(AtomicU64::new(u64::MAX));
    let tail = Arc::new(Mutex::new(crate::shard::tail::TailCache::default()));
    let writer = ShardWriter {
        node_id: options.node_id,
        in_flight: in_flight.clone(),
        ranking: ranking.clone(),
        applied: applied.clone(),
        metrics: metrics.clone(),
        shard,
        wal,
        state: state.clone(),
        clock: clock.clone(),
        snapshot_target: SnapshotTarget {
            shard,
            params: *params,
            vfs: options.vfs.clone(),
            snapshot_dir: paths.snapshot_dir.clone(),
            wal_dir: paths.wal_dir.clone(),
            archive_dir: options.wal_archive.then(|| paths.archive_dir.clone()),
            hold: hold.clone(),
            hold_bytes_max: options.wal_hold_bytes_max,
            tail: tail.clone(),
        },
        job: None,
        copying: None,
        copy_slice_entries: options.snapshot_copy_slice_entries,
        durability: options.durability,
        group_signals_max: options.group_signals_max,
        snapshot_every_signals: options.snapshot_every_signals,
        last_snapshot_seq: recovery.snapshot_seq.unwrap_or(0),
        last_sync: Instant::now(),
        unsynced: false,
        failed: None,
        role: ShardRole::Standalone,
        waiting: Default::default(),
        committed: 0,
        log_bytes: 0,
        reopen: Arc::new(crate::shard::set_aside::Reopen {
            options: options.clone(),
            paths: paths.clone(),
            params: *params,
            scoring,
            divergent_dir: divergent_dir(&paths.wal_dir),
        }),
        subscriber: None,
        syncer: None,
        tail: tail.clone(),
        index_ids: Vec::new(),
    };
    let (tx, rx) = sync_channel(options.write_queue_max);
    let thread = std::thread::Builder::new()
        .name(format!("tidal-shard-{shard}"))
        .spawn(move || writer.run(rx))
        .map_err(|e| WalError::io("spawn shard writer", &paths.wal_dir, e))?;
    Ok(ShardHandle {
        state,
        in_flight,
        applied,
        role: Mutex::new(ShardRole::Standalone),
        hold,
        tail,
        tx,
        thread: Mutex::new(Some(thread)),
    })
}

/// `divergent/` next to `wal/` in the data directory.
fn divergent_dir(wal_dir: &Path) -> PathBuf {
    wal_dir.parent().unwrap_or(wal_dir).join(crate::shard::set_aside::DIVERGENT_DIR)
}

/// Moves snapshots that failed their checks aside (`*.snap.damaged`, kept for forensics)
/// once every shard opened, so retention never counts one as a usable snapshot. A failed
/// open leaves every file as it was.
fn quarantine_damaged_snapshots(vfs: &dyn Vfs, dir: &Path, opened: &[OpenedShard]) -> Result<()> {
    let damaged: Vec<&PathBuf> =
        opened.iter().flat_map(|o| o.recovery.skipped_snapshots.iter().map(|(p, _)| p)).collect();
    for path in &damaged {
        let aside = path.with_extension("snap.damaged");
        vfs.rename(path, &aside).map_err(|e| WalError::io("move damaged snapshot aside", *path, e))?;
        tracing::warn!(from = %path.display(), to = %aside.display(), "damaged snapshot moved aside");
    }
    if !damaged.is_empty() {
        vfs.sync_dir(dir).map_err(|e| WalError::io("fsync snapshot directory", dir, e))?;
    }
    Ok(())
}

/// The refusal of a write to a shard whose role (as last set) does not take writes.
fn not_leader(shard: u32, role: &Mutex<ShardRole>) -> Option<Error> {
    match *role.lock().unwrap_or_else(|e| e.into_inner()) {
        ShardRole::Standalone | ShardRole::Leader { .. } => None,
        ShardRole::Follower { epoch, leader } => Some(Error::NotLeader { shard, epoch, leader }),
        ShardRole::Recovering { epoch } => Some(Error::NotLeader { shard, epoch, leader: None }),
    }
}

/// Rejects a shard's part of a batch whose session SeqNos skip ahead of the stored HWMs or
/// retry one so old that its ack is gone: either would be refused by the shard, and refusing
/// here keeps the whole batch unwritten. Only called when the shard has nothing in flight.
fn precheck_sessions(state: &SharedState, signals: &[Signal]) -> Result<()> {
    let state = state.read().unwrap_or_else(|e| e.into_inner());
    // Highest SeqNo this batch has reached per (user, session) so far.
    let mut seen: foldhash::HashMap<(&str, &str), u64> = foldhash::HashMap::default();
    for s in signals {
        let (Some(session), Some(n)) = (s.session.as_deref(), s.session_seq) else {
            continue;
        };
        // A known idempotency key answers the retry before any SeqNo rule, as in the writer.
        let known_key = s.idempotency_key.as_deref().map(|k| IdempotencyStore::scoped_key(&s.user, k));
        if known_key.is_some_and(|k| state.idempotency.get(&k).is_some()) {
            continue;
        }
        let key = (s.user.as_str(), session);
        let check = match seen.get(&key) {
            // Earlier signals of this batch: a repeat is an in-batch duplicate, which is fine.
            Some(hwm) if n <= *hwm => SeqCheck::Apply,
            Some(hwm) => check_seq(*hwm, &[], n),
            None => state.session_check(&s.user, session, n),
        };
        match check {
            SeqCheck::Gap { expected } => {
                let (user, session) = (s.user.clone(), session.to_owned());
                return Err(Error::SessionGap { user, session, expected, got: n });
            }
            SeqCheck::StaleDuplicate { hwm } => {
                let (user, session) = (s.user.clone(), session.to_owned());
                return Err(Error::StaleDuplicate { user, session, got: n, hwm });
            }
            SeqCheck::Apply | SeqCheck::Duplicate(_) => {
                let reached = seen.entry(key).or_insert(0);
                *reached = (*reached).max(n);
            }
        }
    }
    Ok(())
}
