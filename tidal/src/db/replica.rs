//! The store's side of replication: what a replication runtime calls on a [`Db`].
//!
//! Each shard has a [`ShardRole`]; a runtime sets it, feeds a follower the leader's batches
//! ([`Db::apply_shipped`]), releases a leader's quorum acks ([`Db::commit`]), learns of every
//! fsync ([`Db::subscribe_durable`]) and reads its log back for shipping
//! ([`Db::read_batches`]). All of it goes through the shard's single writer thread, so a
//! role change, a shipped batch and a local write never interleave inside one batch.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, channel};

use tokio::sync::oneshot;

use super::{Db, block_on};
use crate::error::{Error, Result};
use crate::history::{ARCHIVE_DIR, WAL_DIR};
use crate::shard::role::{DurableEvent, ShardPosition, ShardRole, ShippedPosition};
use crate::shard::set_aside::SetAsideReport;
use crate::shard::snapshot;
use crate::shard::writer::Command;
use crate::wal::WalError;
use crate::wal::ship::{BatchCursor, ShipError, read_batches};

/// A snapshot file a replica can ship (see [`Db::latest_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub shard: u32,
    /// The last seq it covers.
    pub seq: u64,
    /// Its size in bytes.
    pub len: u64,
}

/// Cursors kept per shard: one per reader that tails the log (a leader ships to each
/// follower from its own position).
const CURSORS_PER_SHARD: usize = 8;

/// Per-shard cursors of [`Db::read_batches`], so each tailing reader reads only new bytes.
#[derive(Default)]
pub(crate) struct ShipCursors(Mutex<Vec<Vec<BatchCursor>>>);

impl Db {
    fn shard_handle(&self, shard: u32) -> Result<&super::ShardHandle> {
        self.inner
            .shards
            .get(shard as usize)
            .ok_or_else(|| Error::InvalidRequest(format!("shard {shard} does not exist")))
    }

    /// Sets a shard's role. A follower refuses writes with [`Error::NotLeader`]; a leader
    /// stamps its batches with the epoch; leaving the leader role fails the writes still
    /// waiting for a quorum (their outcome is unknown to this node).
    pub fn set_role(&self, shard: u32, role: ShardRole) -> Result<()> {
        let handle = self.shard_handle(shard)?;
        let (reply, rx) = oneshot::channel();
        handle.tx.send(Command::SetRole { role, reply }).map_err(|_| Error::Closed)?;
        block_on(rx).map_err(|_| Error::Closed)??;
        *handle.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
        Ok(())
    }

    pub fn role(&self, shard: u32) -> Result<ShardRole> {
        Ok(*self.shard_handle(shard)?.role.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends a leader's batches to a follower shard byte for byte, applies them (readers see
    /// them at once: the leader ships only what it made durable), then fsyncs; returns after
    /// the fsync.
    /// Returns the shard's applied seq. A batch that does not continue the log is refused
    /// ([`crate::wal::WalError::Refused`]) and nothing of it is written.
    pub fn apply_shipped(&self, shard: u32, batches: Vec<Vec<u8>>) -> Result<u64> {
        Ok(self.shipped(shard, batches, false)?.applied_seq)
    }

    /// [`Db::apply_shipped`] with the fsync pipelined: returns once the batches are appended
    /// and applied, while a syncer thread of the shard makes them durable. Durability is
    /// reported only through [`Db::subscribe_durable`]: an event whose `log_bytes` reaches the
    /// returned `log_bytes` covers these batches. [`Db::sync_shipped`] waits for it. A failed
    /// fsync stops the shard: no event reports it, and the next call returns the failure.
    pub fn append_shipped(&self, shard: u32, batches: Vec<Vec<u8>>) -> Result<ShippedPosition> {
        self.shipped(shard, batches, true)
    }

    fn shipped(&self, shard: u32, batches: Vec<Vec<u8>>, pipelined: bool) -> Result<ShippedPosition> {
        let handle = self.shard_handle(shard)?;
        let (reply, rx) = oneshot::channel();
        handle.tx.send(Command::Shipped { batches, pipelined, reply }).map_err(|_| Error::Closed)?;
        block_on(rx).map_err(|_| Error::Closed)?
    }

    /// Waits until every batch [`Db::append_shipped`] took is durable; returns the durable
    /// position (also reported to [`Db::subscribe_durable`]).
    pub fn sync_shipped(&self, shard: u32) -> Result<DurableEvent> {
        let handle = self.shard_handle(shard)?;
        let (reply, rx) = oneshot::channel();
        handle.tx.send(Command::SyncShipped { reply }).map_err(|_| Error::Closed)?;
        block_on(rx).map_err(|_| Error::Closed)?
    }

    /// Moves `shard`'s log from `from_seq` on aside (kept in `divergent/`, never replayed),
    /// and rebuilds the shard from what is left: what a replica does with records its new
    /// leader never had. Readers then see the state at `from_seq - 1`.
    pub fn set_aside(&self, shard: u32, from_seq: u64) -> Result<SetAsideReport> {
        let handle = self.shard_handle(shard)?;
        let (reply, rx) = oneshot::channel();
        handle.tx.send(Command::SetAside { from_seq, reply }).map_err(|_| Error::Closed)?;
        block_on(rx).map_err(|_| Error::Closed)?
    }

    /// A quorum of the shard's replicas holds everything through `seq`: quorum-mode writes
    /// up to it are acknowledged.
    pub fn commit(&self, shard: u32, seq: u64) -> Result<()> {
        let handle = self.shard_handle(shard)?;
        handle.tx.send(Command::Commit { seq }).map_err(|_| Error::Closed)
    }

    /// Every shard reports each fsync of its log here from now on.
    pub fn subscribe_durable(&self) -> Result<Receiver<DurableEvent>> {
        let (tx, rx) = channel();
        for handle in &self.inner.shards {
            handle.tx.send(Command::Subscribe { tx: tx.clone() }).map_err(|_| Error::Closed)?;
        }
        Ok(rx)
    }

    /// Whole batches of `shard`'s log from `from_seq` (a batch boundary), about `max_bytes`,
    /// exactly as on disk, from the WAL or the archive. [`ShipError::Behind`] when the log no
    /// longer holds `from_seq` (the follower needs a snapshot).
    pub fn read_batches(
        &self,
        shard: u32,
        from_seq: u64,
        max_bytes: u64,
    ) -> std::result::Result<Vec<Vec<u8>>, ShipError> {
        // The newest batches come from memory (what a leader ships to followers that keep up).
        let tail =
            self.inner.shards.get(shard as usize).map(|h| h.tail.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(batches) = tail.and_then(|mut t| t.read(from_seq, max_bytes)) {
            return Ok(batches);
        }
        let dir = &self.inner.dir;
        let (wal, archive) = (dir.join(WAL_DIR), dir.join(ARCHIVE_DIR));
        let dirs: [&Path; 2] = [&wal, &archive];
        let mut cursors = self.inner.ship_cursors.0.lock().unwrap_or_else(|e| e.into_inner());
        if cursors.len() < self.inner.shards.len() {
            cursors.resize(self.inner.shards.len(), Vec::new());
        }
        let slot = &mut cursors[shard as usize % self.inner.shards.len().max(1)];
        let hint = slot.iter().position(|c| c.seq == from_seq).map(|i| slot.remove(i));
        let (batches, cursor) =
            read_batches(&*self.inner.options.vfs, &dirs, shard, from_seq, max_bytes, hint.as_ref())?;
        if let Some(cursor) = cursor.or(hint) {
            if slot.len() >= CURSORS_PER_SHARD {
                slot.remove(0);
            }
            slot.push(cursor);
        }
        Ok(batches)
    }

    /// The epoch starts `(epoch, first_seq)` of `shard`'s log from `from_seq` on, and the
    /// last seq it holds, from batch headers (see [`crate::wal::ship::scan_epochs`]).
    pub fn scan_epochs(
        &self,
        shard: u32,
        from_seq: u64,
    ) -> std::result::Result<(Vec<(u64, u64)>, u64), ShipError> {
        let dir = &self.inner.dir;
        let (wal, archive) = (dir.join(WAL_DIR), dir.join(ARCHIVE_DIR));
        crate::wal::ship::scan_epochs(&*self.inner.options.vfs, &[&wal, &archive], shard, from_seq)
    }

    /// Replaces `shard`'s state and log by a snapshot another replica shipped (the exact
    /// bytes of its snapshot file), verified as a local snapshot is; the log continues at
    /// the snapshot's seq + 1. The own records after `keep_through` (where the own log and
    /// the sender's part) are set aside first, in whole batches. Returns the snapshot's seq
    /// and what was set aside. Refused when the snapshot is not ahead of the log kept.
    pub fn install_snapshot(
        &self,
        shard: u32,
        bytes: Vec<u8>,
        keep_through: u64,
    ) -> Result<(u64, SetAsideReport)> {
        let handle = self.shard_handle(shard)?;
        let (reply, rx) = oneshot::channel();
        let command = Command::InstallSnapshot { bytes, keep_through, reply };
        handle.tx.send(command).map_err(|_| Error::Closed)?;
        block_on(rx).map_err(|_| Error::Closed)?
    }

    /// The newest snapshot file of `shard` on disk, if any: what a leader ships to a replica
    /// its log no longer serves (with the log after it, a complete history).
    pub fn latest_snapshot(&self, shard: u32) -> Result<Option<SnapshotFile>> {
        self.shard_handle(shard)?;
        let dir = self.inner.dir.join(crate::shard::SNAPSHOT_DIR);
        let vfs = &*self.inner.options.vfs;
        let Some((seq, path)) = snapshot::list(vfs, &dir, shard)?.into_iter().next() else { return Ok(None) };
        let len = vfs.file_len(&path).map_err(|e| WalError::io("stat snapshot", &path, e))?;
        Ok(Some(SnapshotFile { shard, seq, len }))
    }

    /// Up to `len` bytes at `offset` of `shard`'s snapshot at `seq`;
    /// [`Error::InvalidRequest`] when that snapshot is gone (a newer one replaced it).
    pub fn read_snapshot(&self, shard: u32, seq: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.shard_handle(shard)?;
        let dir = self.inner.dir.join(crate::shard::SNAPSHOT_DIR);
        let path = dir.join(snapshot::file_name(shard, seq));
        let vfs = &*self.inner.options.vfs;
        let total = vfs.file_len(&path).map_err(|_| {
            Error::InvalidRequest(format!("shard {shard} has no snapshot at seq {seq} any more"))
        })?;
        let len = len.min(total.saturating_sub(offset) as usize);
        vfs.read_range(&path, offset, len).map_err(|e| Error::Wal(WalError::io("read snapshot", &path, e)))
    }

    /// Keep `shard`'s WAL from `from_seq` on when snapshots retire segments (`u64::MAX`:
    /// nothing held), within [`crate::Options::wal_hold_bytes_max`]: a leader holds what a
    /// lagging follower still needs. Only matters with archiving off (the archive keeps all).
    pub fn hold_log(&self, shard: u32, from_seq: u64) -> Result<()> {
        self.shard_handle(shard)?.hold.store(from_seq, Ordering::Release);
        Ok(())
    }

    /// Where a shard's log and state stand.
    pub fn position(&self, shard: u32) -> Result<ShardPosition> {
        let handle = self.shard_handle(shard)?;
        let applied_seq = handle.applied.get();
        let role = *handle.role.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ShardPosition { shard, role, next_seq: applied_seq + 1, applied_seq })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.inner.shards.len() as u32
    }
}
