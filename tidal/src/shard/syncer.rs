//! A follower shard's pipelined fsync: a thread that makes the shipped batches durable while
//! the writer thread goes on appending and applying the next ones.
//!
//! Owns [`Syncer`]. Without it, a follower's writer applied one group, then sat in its fsync
//! while the next group waited; on a disk whose fdatasync has a tail of 100 ms and more, that
//! tail became the replication lag of every batch behind it. With it, the writer hands each
//! group's end (`seq`, bytes appended) to this thread and returns; the thread merges the
//! requests waiting (one fsync covers them all), fsyncs the segment through a duplicated
//! handle ([`crate::wal::vfs::FileSync`]) and reports the durable position to the
//! replication runtime, which sends the acks that claim durability only then.
//!
//! Invariants:
//! - a position is reported durable only after an fsync that started after its batches were
//!   written (the writer wrote them before it sent the request);
//! - after the first failed fsync nothing more is reported and every later call sees the
//!   failure ([`Syncer::failure`]): the shard stops, as after an inline fsync failure;
//! - [`Syncer::settle`] returns once every request sent before it is durable (or failed), so
//!   the writer can change the log (set-aside, install, role change, shutdown) on a quiet
//!   disk.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::role::DurableEvent;
use crate::metrics::Metrics;
use crate::wal::vfs::FileSync;

/// One group's end, to be made durable.
pub(crate) struct SyncRequest {
    pub event: DurableEvent,
    pub file: Arc<dyn FileSync>,
    /// Where to report the fsync (the replication runtime), if anyone listens.
    pub report: Option<Sender<DurableEvent>>,
}

enum Job {
    Sync(SyncRequest),
    Settle(Sender<()>),
}

/// The handle the writer thread keeps.
pub(crate) struct Syncer {
    tx: Sender<Job>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Syncer {
    /// Starts the thread of `shard`.
    pub fn start(shard: u32, metrics: Arc<Metrics>) -> std::io::Result<Syncer> {
        let (tx, rx) = channel();
        let failed = Arc::new(Mutex::new(None));
        let shared = failed.clone();
        std::thread::Builder::new()
            .name(format!("tidal-sync-{shard}"))
            .spawn(move || run(shard, rx, &metrics, &shared))?;
        Ok(Syncer { tx, failed })
    }

    /// Queues a sync; false when the thread is gone (the caller syncs inline instead).
    pub fn request(&self, request: SyncRequest) -> bool {
        self.tx.send(Job::Sync(request)).is_ok()
    }

    /// Waits until every request sent before this call is done.
    pub fn settle(&self) {
        let (tx, rx) = channel();
        if self.tx.send(Job::Settle(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The first fsync failure, if there was one.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn run(shard: u32, rx: Receiver<Job>, metrics: &Metrics, failed: &Mutex<Option<String>>) {
    let mut pending: Option<SyncRequest> = None;
    let mut settles = Vec::new();
    while let Ok(job) = rx.recv() {
        take(job, &mut pending, &mut settles);
        // Merge what else is waiting: the newest request's fsync covers the older ones
        // (a rolled-over segment was synced when it was closed).
        while let Ok(job) = rx.try_recv() {
            take(job, &mut pending, &mut settles);
        }
        if let Some(request) = pending.take() {
            sync_one(shard, request, metrics, failed);
        }
        for settle in settles.drain(..) {
            let _ = settle.send(());
        }
    }
}

fn take(job: Job, pending: &mut Option<SyncRequest>, settles: &mut Vec<Sender<()>>) {
    match job {
        Job::Sync(request) => *pending = Some(request),
        Job::Settle(tx) => settles.push(tx),
    }
}

fn sync_one(shard: u32, request: SyncRequest, metrics: &Metrics, failed: &Mutex<Option<String>>) {
    // The lock is held only to read or set the failure, never across the fsync: the writer
    // reads it before every shipped group and must not wait for an fsync in flight. Only
    // this thread sets it, so nothing can fail in between.
    if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        return;
    }
    let started = Instant::now();
    match request.file.sync_data() {
        Ok(()) => {
            metrics.fsync.observe(started.elapsed());
            if let Some(report) = &request.report {
                let _ = report.send(request.event);
            }
        }
        Err(e) => {
            tracing::error!(shard, error = %e, "pipelined WAL fsync failed; the shard stops");
            *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("sync segment: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::wal::sim_vfs::{SimOp, SimVfs, TornWrite};
    use crate::wal::vfs::Vfs;

    fn event(seq: u64) -> DurableEvent {
        DurableEvent { shard: 0, seq, log_bytes: seq * 10 }
    }

    #[test]
    fn a_settled_request_is_durable_and_reported() {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new("/d")).unwrap();
        let mut file = vfs.create_new(Path::new("/d/f")).unwrap();
        vfs.sync_dir(Path::new("/d")).unwrap();
        file.write_all(b"abc").unwrap();
        let syncer = Syncer::start(0, Arc::new(Metrics::default())).unwrap();
        let (report, reports) = channel();
        let handle = file.sync_handle().unwrap();
        assert!(syncer.request(SyncRequest { event: event(3), file: handle, report: Some(report) }));
        syncer.settle();
        assert_eq!(reports.try_recv().unwrap(), event(3));
        assert_eq!(vfs.crash_image(TornWrite::None, 0).read_file(Path::new("/d/f")).unwrap(), b"abc");
        assert_eq!(syncer.failure(), None);
    }

    #[test]
    fn a_failed_fsync_reports_nothing_then_or_later() {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new("/d")).unwrap();
        let mut file = vfs.create_new(Path::new("/d/f")).unwrap();
        vfs.sync_dir(Path::new("/d")).unwrap();
        file.write_all(b"abc").unwrap();
        vfs.fail_next(SimOp::SyncData);
        let syncer = Syncer::start(0, Arc::new(Metrics::default())).unwrap();
        let (report, reports) = channel();
        for seq in [1, 2] {
            let request = SyncRequest { event: event(seq), file: file.sync_handle().unwrap(), report: None };
            assert!(syncer.request(SyncRequest { report: Some(report.clone()), ..request }));
            syncer.settle();
        }
        assert!(reports.try_recv().is_err(), "nothing may be reported durable after a failed fsync");
        assert!(syncer.failure().is_some_and(|f| f.contains("sync segment")));
        assert!(vfs.crash_image(TornWrite::None, 0).read_file(Path::new("/d/f")).unwrap().is_empty());
    }
}
