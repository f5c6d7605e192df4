//! The appending side of one shard's WAL.
//!
//! [`WalWriter`] is owned by the shard's single writer thread. It owns the current (last)
//! segment file, the next seq, and the reusable buffer each batch is encoded into.
//!
//! Invariants:
//! - every batch is written with exactly one `write_all` of header + payload, so a crash
//!   leaves at most one batch torn, and only at the end of the last segment;
//! - seqs are contiguous: batch `n + 1` starts where batch `n` ended, across segments too;
//! - a segment is rolled over only after the old one was `sync_data`ed, and the new one's
//!   directory entry is made durable (`sync_dir`) before any batch goes into it, so a crash
//!   can never leave a durable batch in a segment whose name vanished, nor unsynced bytes in
//!   any segment but the last (which is what lets recovery repair only the last one);
//! - after any I/O error the writer is poisoned: every later call fails. What reached the
//!   file is unknown after such an error, so the shard must fail-stop and recover by scanning.
//!   (One exception: a failed zero-fill of the reserve, which lies past every batch, only
//!   ends reserving for the segment; a failed sync of it poisons like any other.)
//! - the current segment may end in a durable zero-filled reserve ([`WalWriter::reserve_slice`]):
//!   batches overwrite it, so their fdatasync changes no file size (`cargo bench -p tidal
//!   --bench fsync` on this project's ext4 disk, 20 KB per batch, four files syncing at
//!   once: 0.36 ms mean instead of 0.56 ms). A rolled-over segment and a cleanly closed one are cut back to their last
//!   batch first ([`WalWriter::release`]); after a crash the reader takes a zero tail of the
//!   last segment for the log's end, and truncates it when repairing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hlc::Hlc;
use crate::signal::SignalRef;
use crate::wal::segment::{SegmentName, decode_batch, encode_batch_into};
use crate::wal::vfs::{FileSync, Vfs, VfsFile};
use crate::wal::{BatchHeader, Refusal, WalError};

/// What one [`WalWriter::append`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub first_seq: u64,
    pub record_count: u32,
    pub hlc_min: Hlc,
    pub hlc_max: Hlc,
    /// Bytes of the batch on disk, header included.
    pub bytes: u64,
}

/// Appends batches to one shard's segments. See the module docs for its invariants.
#[derive(Debug)]
pub struct WalWriter {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    shard: u32,
    file: Box<dyn VfsFile>,
    segment: SegmentName,
    next_seq: u64,
    segment_bytes_max: u64,
    /// Written into every batch header (0 = not recorded).
    origin_node: u32,
    /// Leader epoch written into every batch (v3); 0 writes v2 (a standalone store).
    epoch: u64,
    /// The last batch exactly as written; reused for the next one.
    buf: Vec<u8>,
    /// Set by the first I/O error; the writer refuses all work afterwards.
    poisoned: bool,
    /// The current segment's [`FileSync`], made on first use (see [`Self::sync_handle`]).
    sync_handle: Option<Arc<dyn FileSync>>,
    /// The current segment's next reserve step (doubling from [`RESERVE_STEP_MIN`]; 0 after
    /// a zero-fill failed: no more reserving in this segment).
    reserve_step: u64,
    /// Where the step being reserved ends (at most the reserve's end when none is under way).
    reserve_target: u64,
    /// A new step starts once no more than this is left (half the last step; 0 at first).
    reserve_low: u64,
}

/// The first zero-filled reserve of a segment: small, so a store with little traffic (and
/// every test store) writes little; each later step doubles, up to [`RESERVE_STEP_MAX`].
pub const RESERVE_STEP_MIN: u64 = 64 << 10;
/// The largest reserve step (filled a slice at a time, see [`RESERVE_SLICE`]).
pub const RESERVE_STEP_MAX: u64 = 4 << 20;
/// The most one [`WalWriter::reserve_slice`] zero-fills: its fdatasync (the zeros and the new
/// size) takes about a millisecond on this project's disk, the longest a write that arrives
/// meanwhile waits.
pub const RESERVE_SLICE: u64 = 128 << 10;

impl WalWriter {
    /// Opens the writer after recovery.
    ///
    /// With `tail = Some(path)` it appends to that segment, which must be the shard's last
    /// one, already verified and truncated to its last whole batch by
    /// [`crate::wal::reader::scan_shard`] with `Repair::Truncate`, ending at `next_seq - 1`.
    /// With `None` it creates the first segment, named for `next_seq`, and syncs the
    /// directory. `dir` is created if missing (its own entry is made durable by syncing its
    /// parent, best effort).
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shard: u32,
        next_seq: u64,
        tail: Option<PathBuf>,
        segment_bytes_max: u64,
    ) -> Result<Self, WalError> {
        if next_seq == 0 {
            return Err(misfit(dir, "next_seq must be at least 1".into()));
        }
        let (segment, file) = match tail {
            Some(path) => open_tail(vfs.as_ref(), path, shard, next_seq)?,
            None => {
                vfs.create_dir_all(dir).map_err(|e| WalError::io("create WAL dir", dir, e))?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    vfs.sync_dir(parent).map_err(|e| WalError::io("sync dir", parent, e))?;
                }
                create_segment(vfs.as_ref(), dir, shard, next_seq)?
            }
        };
        Ok(WalWriter {
            vfs,
            dir: dir.to_path_buf(),
            shard,
            file,
            segment,
            next_seq,
            segment_bytes_max,
            origin_node: 0,
            epoch: 0,
            buf: Vec::new(),
            poisoned: false,
            sync_handle: None,
            reserve_step: RESERVE_STEP_MIN,
            reserve_target: 0,
            reserve_low: 0,
        })
    }

    /// Encodes one batch of `records` (header v2 + payload, first seq = [`Self::next_seq`])
    /// and writes it with one `write_all`. Rolls over to a new segment first when the current
    /// one is non-empty and at least `segment_bytes_max` long. Does not fsync the batch: the
    /// caller decides by its durability mode (see [`Self::sync`]).
    ///
    /// An empty `records` is a no-op: nothing is written, the returned info has
    /// `record_count == 0` and `bytes == 0`, and [`Self::last_batch`] becomes empty.
    /// Encoding errors ([`WalError::TooLarge`]) happen before any I/O and leave the writer
    /// usable; an I/O error poisons it.
    pub fn append(&mut self, records: &[(Hlc, SignalRef<'_>)]) -> Result<BatchInfo, WalError> {
        self.check_usable()?;
        if records.is_empty() {
            self.buf.clear();
            return Ok(BatchInfo {
                first_seq: self.next_seq,
                record_count: 0,
                hlc_min: Hlc::ZERO,
                hlc_max: Hlc::ZERO,
                bytes: 0,
            });
        }
        let header = match encode_batch_into(
            &mut self.buf,
            self.shard,
            self.origin_node,
            self.epoch,
            self.next_seq,
            records,
        ) {
            Ok(header) => header,
            Err(e) => {
                self.buf.clear();
                return Err(e);
            }
        };
        self.commit_buf(&header)
    }

    /// Appends one batch exactly as encoded elsewhere (a leader's batch shipped to a
    /// follower): checks the header and payload CRCs and the framing, that the bytes are one
    /// whole batch of this shard, and that it starts at [`Self::next_seq`]; then writes the
    /// bytes unchanged with one `write_all` (rolling over first like [`Self::append`]). Does
    /// not fsync. A refused batch ([`WalError::Refused`]) writes nothing and leaves the
    /// writer usable; an I/O error poisons it.
    pub fn append_encoded(&mut self, bytes: &[u8]) -> Result<BatchInfo, WalError> {
        self.check_usable()?;
        let (header, _, len) = decode_batch(bytes).map_err(Refusal::Damaged)?;
        if len != bytes.len() {
            return Err(Refusal::TrailingBytes(bytes.len() - len).into());
        }
        if header.shard_id != Some(self.shard) {
            return Err(Refusal::WrongShard { expected: self.shard, got: header.shard_id }.into());
        }
        if header.first_seq != self.next_seq {
            return Err(Refusal::NotNext { expected: self.next_seq, got: header.first_seq }.into());
        }
        if header.record_count == 0 {
            return Err(Refusal::Empty.into());
        }
        self.buf.clear();
        self.buf.extend_from_slice(bytes);
        self.commit_buf(&header)
    }

    /// Writes the batch in `buf` (whose header is `header`) and advances the next seq; an
    /// I/O error poisons the writer.
    fn commit_buf(&mut self, header: &BatchHeader) -> Result<BatchInfo, WalError> {
        if let Err(e) = self.write_buf() {
            self.poisoned = true;
            self.buf.clear();
            return Err(e);
        }
        self.next_seq = header.next_seq();
        Ok(BatchInfo {
            first_seq: header.first_seq,
            record_count: header.record_count,
            hlc_min: header.hlc_min,
            hlc_max: header.hlc_max,
            bytes: self.buf.len() as u64,
        })
    }

    /// Records `node` as the writer of every batch appended from now on.
    pub fn with_origin_node(mut self, node: u32) -> Self {
        self.origin_node = node;
        self
    }

    /// Stamps every batch appended from now on with leader epoch `epoch` (header v3); 0
    /// goes back to v2 headers without an epoch. A replica sets it when it becomes the
    /// shard's leader; batches appended raw ([`Self::append_encoded`]) keep their own.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// The epoch [`Self::append`] writes (0: none, v2 headers).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Makes every appended batch durable (`sync_data` of the current segment; earlier
    /// segments were synced when they were rolled over).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.file.sync_data();
        self.poison_on("sync segment", result)
    }

    /// An I/O result of the current segment: an error poisons the writer.
    fn poison_on(&mut self, what: &'static str, result: io::Result<()>) -> Result<(), WalError> {
        result.map_err(|e| {
            self.poisoned = true;
            WalError::io(what, &self.segment.path, e)
        })
    }

    /// A handle that fsyncs the current segment from another thread (a pipelined sync: the
    /// caller goes on appending meanwhile). It covers every batch appended so far: earlier
    /// segments were synced when they were rolled over.
    pub fn sync_handle(&mut self) -> Result<Arc<dyn FileSync>, WalError> {
        self.check_usable()?;
        if let Some(handle) = &self.sync_handle {
            return Ok(handle.clone());
        }
        let handle = (self.file.sync_handle())
            .map_err(|e| WalError::io("duplicate segment handle", &self.segment.path, e))?;
        self.sync_handle = Some(handle.clone());
        Ok(handle)
    }

    /// Whether the current segment wants more zero-filled reserve (see the module docs):
    /// a step is under way, or less than half a step is left before the segment's end. A
    /// cheap check, no I/O: the shard writer asks it between groups.
    pub fn reserve_wanted(&self) -> bool {
        let len = self.file.len();
        let reserved = self.file.reserved().max(len);
        let next_target = (len + self.reserve_step).min(self.segment_bytes_max);
        !self.poisoned
            && (self.reserve_target > reserved
                || (self.reserve_step > 0 && reserved - len <= self.reserve_low && next_target > reserved))
    }

    /// Zero-fills at most [`RESERVE_SLICE`] more of the reserve and makes it durable; returns
    /// whether more is wanted. The shard writer calls it only while no command waits, a slice
    /// at a time, so a write that arrives meanwhile waits for one slice at most, not for a
    /// whole step. A step starts when at most half the last one is left, reaches one step past
    /// the last batch, and never past `segment_bytes_max`; steps double from
    /// [`RESERVE_STEP_MIN`] to [`RESERVE_STEP_MAX`].
    ///
    /// A failed zero-fill (a full disk, say) ends reserving for this segment and is not an
    /// error: the zeros lie past every batch. A failed sync poisons the writer: the kernel
    /// may have dropped dirty pages of the file, un-synced batches among them.
    pub fn reserve_slice(&mut self) -> Result<bool, WalError> {
        self.check_usable()?;
        if !self.reserve_wanted() {
            return Ok(false);
        }
        let len = self.file.len();
        let reserved = self.file.reserved().max(len);
        if self.reserve_target <= reserved {
            let step = self.reserve_step;
            self.reserve_target = (len + step).min(self.segment_bytes_max);
            (self.reserve_low, self.reserve_step) = (step / 2, (step * 2).min(RESERVE_STEP_MAX));
        }
        let upto = (reserved + RESERVE_SLICE).min(self.reserve_target);
        match self.file.reserve(upto) {
            // A file that keeps no reserve (an in-memory one) would be asked forever.
            Ok(()) if self.file.reserved() < upto => {
                (self.reserve_step, self.reserve_target) = (0, 0);
                Ok(false)
            }
            Ok(()) => Ok(self.reserve_wanted()),
            Err(e) if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {
                tracing::warn!(shard = self.shard, segment = %self.segment.path.display(), error = %e,
                    "could not reserve WAL space; appending without a reserve");
                (self.reserve_step, self.reserve_target) = (0, 0);
                Ok(false)
            }
            Err(e) => self.poison_on("reserve segment space", Err(e)).map(|()| false),
        }
    }

    /// Reserves a whole step now ([`Self::reserve_slice`] until nothing more is wanted).
    #[cfg(test)]
    pub fn reserve_ahead(&mut self) -> Result<(), WalError> {
        while self.reserve_slice()? {}
        Ok(())
    }

    /// Cuts the current segment back to its last batch (drops the reserve), durably: for a
    /// clean close, so the store's files end at their last batch.
    pub fn release(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.file.release();
        self.poison_on("release segment reserve", result)
    }

    /// Seq the next appended record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The exact bytes of the last appended batch: the unit of replication shipping.
    /// Empty before the first append and after an empty or failed one.
    pub fn last_batch(&self) -> &[u8] {
        &self.buf
    }

    /// Path of the segment batches are appended to.
    pub fn current_segment(&self) -> &Path {
        &self.segment.path
    }

    /// Bytes in the current segment, durable or not.
    pub fn current_segment_len(&self) -> u64 {
        self.file.len()
    }

    /// The shard this writer belongs to.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            let e = io::Error::other("WAL writer failed earlier; the shard must be reopened");
            return Err(WalError::io("use poisoned writer", &self.segment.path, e));
        }
        Ok(())
    }

    /// Rolls over if the current segment is full, then writes the encoded batch.
    fn write_buf(&mut self) -> Result<(), WalError> {
        if !self.file.is_empty() && self.file.len() >= self.segment_bytes_max {
            self.roll_over()?;
        }
        self.file.write_all(&self.buf).map_err(|e| WalError::io("append batch", &self.segment.path, e))
    }

    /// Closes the current segment and starts one named for `next_seq`. Order matters:
    /// old data durable first, then the new name, then the directory entry durable.
    fn roll_over(&mut self) -> Result<(), WalError> {
        self.file.sync_data().map_err(|e| WalError::io("sync segment", &self.segment.path, e))?;
        // Only the last segment may end in zeros (the reader's rule): cut the reserve off,
        // durably, before a later segment exists.
        self.file.release().map_err(|e| WalError::io("release segment reserve", &self.segment.path, e))?;
        let (segment, file) = create_segment(self.vfs.as_ref(), &self.dir, self.shard, self.next_seq)?;
        tracing::debug!(shard = self.shard, segment = %segment.path.display(), "WAL segment rolled over");
        self.segment = segment;
        self.file = file;
        self.sync_handle = None;
        (self.reserve_step, self.reserve_target, self.reserve_low) = (RESERVE_STEP_MIN, 0, 0);
        Ok(())
    }
}

/// A tail that cannot be continued at `next_seq`: the caller handed over the wrong segment
/// or seq, so appending would break the log's continuity.
fn misfit(path: &Path, reason: String) -> WalError {
    WalError::Corruption { segment: path.to_path_buf(), offset: 0, reason }
}

/// Opens the recovered last segment for appending, after checking that it can continue the
/// log at `next_seq`.
fn open_tail(
    vfs: &dyn Vfs,
    path: PathBuf,
    shard: u32,
    next_seq: u64,
) -> Result<(SegmentName, Box<dyn VfsFile>), WalError> {
    let segment = SegmentName::from_path(&path)
        .ok_or_else(|| misfit(&path, "tail is not a segment file name".into()))?;
    if segment.shard != shard || segment.first_seq > next_seq {
        let reason = format!("tail does not fit shard {shard} at next seq {next_seq}");
        return Err(misfit(&path, reason));
    }
    let file = vfs.open_append(&path).map_err(|e| WalError::io("open segment", &path, e))?;
    if file.is_empty() && segment.first_seq != next_seq {
        let reason = format!("empty tail segment cannot continue at seq {next_seq}");
        return Err(misfit(&path, reason));
    }
    Ok((segment, file))
}

/// Creates the segment of `shard` starting at `first_seq` and makes its name durable.
fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    first_seq: u64,
) -> Result<(SegmentName, Box<dyn VfsFile>), WalError> {
    let segment = SegmentName::new(dir, shard, first_seq);
    let file = vfs.create_new(&segment.path).map_err(|e| WalError::io("create segment", &segment.path, e))?;
    vfs.sync_dir(dir).map_err(|e| WalError::io("sync dir", dir, e))?;
    Ok((segment, file))
}
