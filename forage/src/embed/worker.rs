//! The background embedding worker: embeds catalog items that have no vector yet, in batches,
//! off the request path, and labels them as they are stored.
//!
//! Owns the batching loop ([`embed_pending`]) and the thread that runs it on demand
//! ([`EmbedWorker`]). Invariants:
//! - the catalog lock is held only for SQL (reading a batch, writing its results), never
//!   while the model runs, so requests keep being served during a long embedding pass;
//! - a batch's embeddings and labels are written in one transaction: an item either has its
//!   vector and its labels, or neither, and so is picked up again by the next pass;
//! - prototypes are rebuilt once per pass, so a pass labels with the labels as they were when
//!   it started (a label created later is applied by `labels::relabel_all`);
//! - notifications coalesce: any number of [`EmbedWorker::notify`] calls while a pass runs
//!   cause exactly one more pass; [`EmbedWorker::shutdown`] (or drop) stops after the current
//!   batch and joins the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{BATCH_TEXTS_MAX, EmbedError, Embedder};
use crate::catalog::{Catalog, EmbeddedItem};
use crate::labels::{LabelError, Prototypes};

/// Progress of one [`embed_pending`] pass, reported after every stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedProgress {
    /// Items embedded so far in this pass.
    pub done: usize,
    /// Items that were pending when the pass started plus any that arrived since (an estimate
    /// for a progress bar: it can grow).
    pub total: usize,
}

/// The outcome of one [`embed_pending`] pass.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedReport {
    /// The embedder's name.
    pub model: String,
    /// Items embedded and stored.
    pub embedded: usize,
    /// Label assignments made to those items.
    pub labelled: usize,
    /// Batches run.
    pub batches: usize,
    pub elapsed: Duration,
}

/// Embeds every item that has no vector for `embedder.name()`, [`BATCH_TEXTS_MAX`] at a time,
/// stores the vectors and labels the items with the current prototypes. Calls `progress` after
/// each batch. Returns when nothing is pending.
pub fn embed_pending(
    catalog: &Mutex<Catalog>,
    embedder: &dyn Embedder,
    progress: &dyn Fn(EmbedProgress),
) -> Result<EmbedReport, LabelError> {
    embed_pending_until(catalog, embedder, progress, &AtomicBool::new(false))
}

fn lock(catalog: &Mutex<Catalog>) -> MutexGuard<'_, Catalog> {
    // A panic elsewhere while holding the lock leaves SQLite consistent (transactions roll
    // back on drop), so the catalog is taken over rather than the panic spread.
    catalog.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pending items read at once: sorted by text length and cut into batches of
/// [`BATCH_TEXTS_MAX`], so each batch holds texts of similar length (less padding).
pub const WINDOW_ITEMS: usize = 8 * BATCH_TEXTS_MAX;

/// [`embed_pending`] that stops after the current batch once `stop` is set.
fn embed_pending_until(
    catalog: &Mutex<Catalog>,
    embedder: &dyn Embedder,
    progress: &dyn Fn(EmbedProgress),
    stop: &AtomicBool,
) -> Result<EmbedReport, LabelError> {
    let start = Instant::now();
    let model = embedder.name().to_owned();
    let pending_at_start = lock(catalog).count_items_without_embedding(&model)?;
    let mut report = EmbedReport { model, embedded: 0, labelled: 0, batches: 0, elapsed: Duration::ZERO };
    if pending_at_start == 0 {
        return Ok(report);
    }
    let prototypes = Prototypes::build_shared(catalog, embedder)?;
    let mut total = pending_at_start;
    let mut after_seq = i64::MIN;
    'window: while !stop.load(Ordering::Relaxed) {
        let mut window = lock(catalog).items_without_embedding(&report.model, after_seq, WINDOW_ITEMS)?;
        let Some((last_seq, _, _)) = window.last() else { break };
        after_seq = *last_seq;
        // Texts of similar length batch together, so a batch pads little.
        window.sort_by_key(|(_, _, text)| text.len());
        for batch in window.chunks(BATCH_TEXTS_MAX) {
            if stop.load(Ordering::Relaxed) {
                break 'window;
            }
            let texts: Vec<&str> = batch.iter().map(|(_, _, text)| text.as_str()).collect();
            let vectors = embedder.embed(&texts)?;
            if vectors.len() != batch.len() {
                let reason = format!("{} vectors for {} texts", vectors.len(), batch.len());
                return Err(LabelError::Embed(EmbedError::Model(reason)));
            }
            let rows: Vec<EmbeddedItem> = batch
                .iter()
                .zip(vectors)
                .map(|((_, item_id, _), vector)| {
                    let labels = prototypes.assign(item_id, &vector);
                    EmbeddedItem { item_id: item_id.clone(), vector, labels }
                })
                .collect();
            let stored = lock(catalog).put_embeddings_with_labels(&report.model, &rows)?;
            report.batches += 1;
            report.embedded += stored;
            report.labelled += rows.iter().map(|r| r.labels.len()).sum::<usize>();
            total = total.max(report.embedded);
            progress(EmbedProgress { done: report.embedded, total });
            if stored < rows.len() {
                tracing::debug!(batch = rows.len(), stored, "items removed while they were embedded");
            }
        }
    }
    report.elapsed = start.elapsed();
    tracing::info!(
        model = %report.model, embedded = report.embedded, labelled = report.labelled,
        elapsed_ms = report.elapsed.as_millis() as u64, "embedding pass done"
    );
    Ok(report)
}

/// What the worker is doing, for a status endpoint or the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Items still to embed in the current pass (0 when idle; an estimate).
    pub pending_hint: usize,
    /// Items embedded since the worker started.
    pub embedded_total: u64,
    /// The error of the last pass, `None` after a successful one.
    pub last_error: Option<String>,
    /// Whether a pass is running.
    pub running: bool,
}

#[derive(Default)]
struct State {
    /// A pass was asked for and has not started yet.
    requested: bool,
    shutdown: bool,
    status: WorkerStatus,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A background thread running [`embed_pending`] whenever it is notified.
pub struct EmbedWorker {
    shared: Arc<Shared>,
    /// `None` once joined, or when the thread could not be started.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EmbedWorker {
    /// Starts the worker thread. It runs one pass at once (to catch up on items stored while
    /// no worker ran), then one per [`EmbedWorker::notify`]. If the OS refuses a thread, the
    /// worker never runs and says so in [`WorkerStatus::last_error`] (no panic).
    pub fn spawn(catalog: Arc<Mutex<Catalog>>, embedder: Arc<dyn Embedder>) -> EmbedWorker {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { requested: true, ..State::default() }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("forage-embed".into())
            .spawn(move || run(&thread_shared, &catalog, embedder.as_ref()));
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the embedding worker thread");
                let mut state = shared.state();
                state.requested = false;
                state.status.last_error = Some(format!("cannot start the worker thread: {e}"));
                None
            }
        };
        EmbedWorker { shared, thread: Mutex::new(thread) }
    }

    /// Asks for a pass (new items were stored). Cheap; calls while a pass is queued coalesce.
    pub fn notify(&self) {
        self.shared.state().requested = true;
        self.shared.changed.notify_all();
    }

    /// A snapshot of the worker's status.
    pub fn status(&self) -> WorkerStatus {
        self.shared.state().status.clone()
    }

    /// Waits until no pass is running or queued; returns `false` on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let state = self.shared.state();
        let (_state, result) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| !s.shutdown && (s.requested || s.status.running))
            .unwrap_or_else(|e| e.into_inner());
        !result.timed_out()
    }

    /// Stops the worker after its current batch and joins the thread. Later calls, and
    /// [`EmbedWorker::notify`] after it, do nothing.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.state().shutdown = true;
        self.shared.changed.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the embedding worker thread panicked");
        }
    }
}

impl Drop for EmbedWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(shared: &Shared, catalog: &Mutex<Catalog>, embedder: &dyn Embedder) {
    loop {
        let embedded_before = {
            let mut state = shared.state();
            while !state.requested && !state.shutdown {
                state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            state.requested = false;
            state.status.running = true;
            state.status.embedded_total
        };
        let progress = |p: EmbedProgress| {
            let mut state = shared.state();
            state.status.pending_hint = p.total.saturating_sub(p.done);
            state.status.embedded_total = embedded_before + p.done as u64;
        };
        let result = embed_pending_until(catalog, embedder, &progress, &shared.stop);
        let mut state = shared.state();
        state.status.running = false;
        state.status.pending_hint = 0;
        match result {
            Ok(report) => {
                state.status.embedded_total = embedded_before + report.embedded as u64;
                state.status.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "embedding pass failed");
                state.status.last_error = Some(e.to_string());
            }
        }
        drop(state);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
