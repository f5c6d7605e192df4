//! Reading one shard's WAL back: recovery scans, segment listing, retention.
//!
//! This module owns the recovery rules (see `docs/wal-format.md`, "Recovery"):
//! - segments are read in seq order; those whose records all lie below `from_seq` are
//!   skipped unread; if the first segment starts above `from_seq`, the needed records are
//!   gone and the scan fails with [`WalError::Missing`];
//! - seqs are checked for continuity within and across segments, and v2 shard ids against
//!   the segment name; a break is corruption;
//! - only the last segment may end in damage that a cut-short write explains (short
//!   header, bad magic, bad header CRC, payload past EOF, bad payload CRC), and only if no
//!   valid batch header follows the damage: that is a torn tail, truncated (with
//!   [`Repair::Truncate`]) and reported. Every other failure is [`WalError::Corruption`]
//!   naming segment and offset; nothing is ever skipped silently;
//! - the last segment may end in zeros (the writer's reserve, left by a crash): the log ends
//!   where they start, and [`Repair::Truncate`] cuts them off; that is not a torn tail;
//! - records inside a batch whose CRC passed must decode and lie in the header's HLC range;
//!   if not, the writer wrote garbage, which is corruption, not a torn tail.

use std::io;
use std::path::{Path, PathBuf};

use crate::hlc::Hlc;
use crate::signal::SignalRef;
use crate::wal::WalError;
use crate::wal::header::{BATCH_MAGIC, BatchError, BatchHeader};
use crate::wal::record::{RECORD_BYTES_MIN, records};
use crate::wal::segment::{SegmentName, decode_batch};
use crate::wal::vfs::Vfs;

/// What a scan does with a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Truncate the last segment to its last whole batch (what opening a store does).
    Truncate,
    /// Change nothing; only report (inspection, verification). A writer must not append to
    /// a segment scanned this way: a torn tail, or the zeros of a reserve, may follow its
    /// last batch.
    ReadOnly,
}

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    /// The segments that were read, in seq order (skipped ones are not listed).
    pub segments: Vec<SegmentSummary>,
    /// Seq the next record will get: one past the last valid record, or `from_seq` when the
    /// WAL holds nothing at or after `from_seq - 1`.
    pub next_seq: u64,
    pub torn_tail: Option<TornTail>,
    /// Totals over the segments read: valid batches, their records, their bytes.
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// The segment a [`crate::wal::writer::WalWriter`] should append to, or `None` when it
    /// must create the first segment (named for `next_seq`).
    pub tail_segment: Option<PathBuf>,
}

/// Damage at the end of the last segment, explained by a write that was cut short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the damage starts: the end of the last whole batch.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file (removed with [`Repair::Truncate`]).
    pub bytes_dropped: u64,
    pub reason: String,
}

/// One segment as read by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub path: PathBuf,
    pub shard: u32,
    pub first_seq: u64,
    /// One past the seq of its last valid record (`first_seq` if it has none).
    pub next_seq: u64,
    pub batches: u64,
    pub records: u64,
    /// Bytes of valid batches (a torn tail is not counted).
    pub bytes: u64,
    /// Number of batches with a v1, a v2 and a v3 header (index `version - 1`).
    pub header_versions: [u64; 3],
    /// HLC range of its records; both zero if it has none.
    pub hlc_min: Hlc,
    pub hlc_max: Hlc,
}

/// Every segment in `dir`, of all shards, sorted by `(shard, first_seq)`. Files that are
/// not segments are ignored; a missing directory has no segments.
pub fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let names = match vfs.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(WalError::io("list WAL dir", dir, e)),
    };
    let mut segments: Vec<SegmentName> =
        names.iter().filter_map(|name| SegmentName::from_path(&dir.join(name))).collect();
    segments.sort();
    Ok(segments)
}

fn shard_segments(vfs: &dyn Vfs, dir: &Path, shard: u32) -> Result<Vec<SegmentName>, WalError> {
    let mut segments = list_segments(vfs, dir)?;
    segments.retain(|s| s.shard == shard);
    Ok(segments)
}

/// Removes the segments of `shard` all of whose records lie below `seq` (those whose
/// successor starts at or below `seq`), oldest first, and syncs the directory once if any
/// went. Never removes the last segment. Returns the removed paths.
///
/// If a crash undoes only some of the removals, the survivors are still below `seq`, and a
/// scan from any `from_seq >= seq` skips them unread, so no gap is ever seen.
pub fn remove_segments_before(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    seq: u64,
) -> Result<Vec<PathBuf>, WalError> {
    let segments = shard_segments(vfs, dir, shard)?;
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        if pair[1].first_seq > seq {
            break;
        }
        vfs.remove_file(&pair[0].path).map_err(|e| WalError::io("remove segment", &pair[0].path, e))?;
        removed.push(pair[0].path.clone());
    }
    if !removed.is_empty() {
        vfs.sync_dir(dir).map_err(|e| WalError::io("sync dir", dir, e))?;
    }
    Ok(removed)
}

/// Scans every segment of `shard` in `dir` in seq order and calls `on_batch(header,
/// payload)` for each valid batch that holds a record with seq >= `from_seq` (the caller
/// skips records below `from_seq` inside a batch). Every record of every batch read is
/// decoded once to verify it; use [`scan_shard_records`] to decode only once when replaying.
///
/// On error, whatever `on_batch` received must be discarded: the WAL is not usable as is.
pub fn scan_shard<E: From<WalError>>(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    from_seq: u64,
    repair: Repair,
    mut on_batch: impl FnMut(&BatchHeader, &[u8]) -> Result<(), E>,
) -> Result<ScanReport, E> {
    let from_seq = from_seq.max(1);
    let mut process = |header: &BatchHeader, payload: &[u8]| {
        verify_records(header, payload, |_, _, _| Ok(()))?;
        if header.next_seq() > from_seq {
            on_batch(header, payload).map_err(Fault::User)?;
        }
        Ok(())
    };
    Scanner { vfs, shard, from_seq, repair }.run(dir, &mut process)
}

/// Like [`scan_shard`], but decodes each record once and calls `on_record(seq, hlc,
/// signal)` for every record with seq >= `from_seq`, in seq order (a batch's records once all
/// of them are verified).
pub fn scan_shard_records<E: From<WalError>>(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    from_seq: u64,
    repair: Repair,
    mut on_record: impl FnMut(u64, Hlc, SignalRef<'_>) -> Result<(), E>,
) -> Result<ScanReport, E> {
    scan_shard_origin_batches(vfs, dir, shard, from_seq, repair, |_, first_seq, records| {
        (first_seq..).zip(records).try_for_each(|(seq, (hlc, signal))| on_record(seq, hlc, signal))
    })
}

/// Like [`scan_shard_records`], a batch at a time and with the batch's origin: `on_batch`
/// gets the node that wrote the batch (`None` for a v1 header, which has none: the store's
/// own node wrote it), the seq of the first record it hands over and the batch's records from
/// there (those at or after `from_seq`), all decoded and verified before any is handed over
/// (replay applies them as a group, see `shard::apply_group`).
pub fn scan_shard_origin_batches<E: From<WalError>>(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    from_seq: u64,
    repair: Repair,
    mut on_batch: impl FnMut(Option<u32>, u64, Vec<(Hlc, SignalRef<'_>)>) -> Result<(), E>,
) -> Result<ScanReport, E> {
    let from_seq = from_seq.max(1);
    let mut process = |header: &BatchHeader, payload: &[u8]| {
        let origin = (header.version != super::header::HEADER_VERSION_V1).then_some(header.origin_node);
        let mut batch = Vec::with_capacity(header.record_count as usize);
        verify_records(header, payload, |seq, hlc, signal| {
            if seq >= from_seq {
                batch.push((hlc, signal));
            }
            Ok(())
        })?;
        let first = header.next_seq() - batch.len() as u64;
        if batch.is_empty() { Ok(()) } else { on_batch(origin, first, batch).map_err(Fault::User) }
    };
    Scanner { vfs, shard, from_seq, repair }.run(dir, &mut process)
}

/// Why processing a valid batch stopped: bad records (located inside the payload) or an
/// error of the caller's callback.
enum Fault<E> {
    Corrupt { payload_offset: usize, reason: String },
    User(E),
}

/// Decodes every record of a batch, checks each HLC against the header's range and that the
/// range is exact, and hands each record with its seq to `each`.
fn verify_records<'p, E>(
    header: &BatchHeader,
    payload: &'p [u8],
    mut each: impl FnMut(u64, Hlc, SignalRef<'p>) -> Result<(), Fault<E>>,
) -> Result<(), Fault<E>> {
    let corrupt = |payload_offset, reason| Fault::Corrupt { payload_offset, reason };
    let mut iter = records(payload);
    let (mut min, mut max) = (Hlc(u64::MAX), Hlc::ZERO);
    let mut seq = header.first_seq;
    loop {
        let at = iter.offset();
        let Some(item) = iter.next() else { break };
        let (hlc, signal) = item.map_err(|e| corrupt(at, format!("record seq {seq}: {e}")))?;
        if hlc < header.hlc_min || hlc > header.hlc_max {
            let range = format!("{}..={}", header.hlc_min, header.hlc_max);
            return Err(corrupt(at, format!("record seq {seq}: hlc {hlc} outside the batch range {range}")));
        }
        (min, max) = (min.min(hlc), max.max(hlc));
        each(seq, hlc, signal)?;
        seq = seq.saturating_add(1);
    }
    if seq != header.next_seq() || min != header.hlc_min || max != header.hlc_max {
        return Err(corrupt(0, "batch header's record count or HLC range disagrees with its records".into()));
    }
    Ok(())
}

type Process<'p, E> = dyn FnMut(&BatchHeader, &[u8]) -> Result<(), Fault<E>> + 'p;

/// One scan of one shard's segments.
struct Scanner<'v> {
    vfs: &'v dyn Vfs,
    shard: u32,
    from_seq: u64,
    repair: Repair,
}

fn corruption(segment: &Path, offset: u64, reason: String) -> WalError {
    WalError::Corruption { segment: segment.to_path_buf(), offset, reason }
}

impl Scanner<'_> {
    fn run<E: From<WalError>>(&self, dir: &Path, process: &mut Process<'_, E>) -> Result<ScanReport, E> {
        let segments = shard_segments(self.vfs, dir, self.shard)?;
        let mut report = ScanReport {
            segments: Vec::new(),
            next_seq: self.from_seq,
            torn_tail: None,
            batches: 0,
            records: 0,
            bytes: 0,
            tail_segment: None,
        };
        let Some(last) = segments.last() else {
            return Ok(report);
        };
        // The segment holding from_seq: the last one starting at or below it. Everything
        // before it lies wholly below from_seq.
        let Some(start) = segments.iter().rposition(|s| s.first_seq <= self.from_seq) else {
            let first_available = segments[0].first_seq;
            return Err(
                WalError::Missing { shard: self.shard, first_available, needed: self.from_seq }.into()
            );
        };
        let mut expected = segments[start].first_seq;
        // One buffer for every segment: a fresh one per 64 MiB segment cost a page fault
        // per 4 KiB on every read, and its unmapping a TLB flush.
        let mut bytes = Vec::new();
        for (i, segment) in segments.iter().enumerate().skip(start) {
            if segment.first_seq != expected {
                let reason = format!(
                    "segment starts at seq {} but the one before it ends before seq {expected} (missing segment?)",
                    segment.first_seq
                );
                return Err(corruption(&segment.path, 0, reason).into());
            }
            let is_last = i + 1 == segments.len();
            let summary = self.scan_segment(segment, is_last, &mut bytes, &mut report, process)?;
            expected = summary.next_seq;
            report.batches += summary.batches;
            report.records += summary.records;
            report.bytes += summary.bytes;
            report.segments.push(summary);
        }
        report.next_seq = expected;
        report.tail_segment = Some(last.path.clone());
        if expected < self.from_seq {
            // The WAL ends before what the caller already has (a snapshot taken of records
            // that never became durable, with durability off). Appending to the old tail
            // would leave a seq gap inside a segment; a fresh segment named for from_seq
            // keeps every segment contiguous, and the old ones age out by retention.
            tracing::warn!(
                shard = self.shard,
                wal_next_seq = expected,
                from_seq = self.from_seq,
                "WAL ends before from_seq; a new segment will start at from_seq"
            );
            report.next_seq = self.from_seq;
            report.tail_segment = None;
        }
        Ok(report)
    }

    /// Reads one segment, hands its valid batches to `process`, and handles its end.
    fn scan_segment<E: From<WalError>>(
        &self,
        segment: &SegmentName,
        is_last: bool,
        bytes: &mut Vec<u8>,
        report: &mut ScanReport,
        process: &mut Process<'_, E>,
    ) -> Result<SegmentSummary, E> {
        let path = &segment.path;
        self.vfs.read_file_into(path, bytes).map_err(|e| WalError::io("read segment", path, e))?;
        let bytes = &bytes[..];
        let mut summary = SegmentSummary {
            path: path.clone(),
            shard: segment.shard,
            first_seq: segment.first_seq,
            next_seq: segment.first_seq,
            batches: 0,
            records: 0,
            bytes: 0,
            header_versions: [0; 3],
            hlc_min: Hlc::ZERO,
            hlc_max: Hlc::ZERO,
        };
        let mut offset = 0usize;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let (header, payload, total) = match decode_batch(rest) {
                Ok(batch) => batch,
                Err(_) if is_last && rest.iter().all(|&b| b == 0) => {
                    self.zero_tail(path, offset as u64, rest.len())?;
                    break;
                }
                Err(error) => {
                    let at = offset as u64;
                    report.torn_tail =
                        Some(self.torn_tail(segment, bytes, at, summary.next_seq, is_last, &error)?);
                    break;
                }
            };
            self.check_sequence(segment, offset as u64, &header, summary.next_seq)?;
            let payload_at = offset + header.encoded_len();
            process(&header, payload).map_err(|fault| match fault {
                Fault::Corrupt { payload_offset, reason } => {
                    corruption(path, (payload_at + payload_offset) as u64, reason).into()
                }
                Fault::User(e) => e,
            })?;
            summary.add(&header, total as u64);
            offset += total;
        }
        Ok(summary)
    }

    fn check_sequence(
        &self,
        segment: &SegmentName,
        offset: u64,
        header: &BatchHeader,
        expected: u64,
    ) -> Result<(), WalError> {
        if header.first_seq != expected {
            let reason = format!("batch starts at seq {} but seq {expected} was expected", header.first_seq);
            return Err(corruption(&segment.path, offset, reason));
        }
        if let Some(shard) = header.shard_id.filter(|&s| s != segment.shard) {
            return Err(corruption(
                &segment.path,
                offset,
                format!("batch of shard {shard} in a segment of shard {}", segment.shard),
            ));
        }
        Ok(())
    }

    /// The last segment ends in zeros from `offset`: the writer's reserve (see
    /// `wal::writer`), left by a crash, or the unwritten part of a torn batch whose bytes
    /// never reached the disk. Either way the log ends at `offset`; nothing is torn, so
    /// nothing is reported. Repairing cuts the zeros off.
    fn zero_tail(&self, path: &Path, offset: u64, zeros: usize) -> Result<(), WalError> {
        tracing::debug!(segment = %path.display(), offset, zeros, "WAL segment ends in reserved space");
        if self.repair == Repair::Truncate {
            self.vfs.truncate(path, offset).map_err(|e| WalError::io("truncate reserve", path, e))?;
        }
        Ok(())
    }

    /// Decides whether `error` at `offset` is a torn tail (and repairs it) or corruption.
    fn torn_tail(
        &self,
        segment: &SegmentName,
        bytes: &[u8],
        offset: u64,
        expected: u64,
        is_last: bool,
        error: &BatchError,
    ) -> Result<TornTail, WalError> {
        let path = &segment.path;
        if !error.is_tail_damage() {
            return Err(corruption(path, offset, error.to_string()));
        }
        if !is_last {
            return Err(corruption(
                path,
                offset,
                format!("{error} (not the last segment, so not a torn write)"),
            ));
        }
        if let Some(at) = valid_header_after(bytes, offset as usize, error, expected, segment.shard) {
            let reason =
                format!("{error}; a valid batch follows at offset {at}, so this is not a torn write");
            return Err(corruption(path, offset, reason));
        }
        let torn = TornTail {
            segment: path.clone(),
            offset,
            bytes_dropped: bytes.len() as u64 - offset,
            reason: error.to_string(),
        };
        if self.repair == Repair::Truncate {
            self.vfs.truncate(path, offset).map_err(|e| WalError::io("truncate torn tail", path, e))?;
        }
        tracing::warn!(
            segment = %path.display(), offset, bytes_dropped = torn.bytes_dropped, reason = %torn.reason,
            truncated = self.repair == Repair::Truncate, "torn WAL tail"
        );
        Ok(torn)
    }
}

impl SegmentSummary {
    fn add(&mut self, header: &BatchHeader, bytes: u64) {
        if self.batches == 0 {
            (self.hlc_min, self.hlc_max) = (header.hlc_min, header.hlc_max);
        } else {
            self.hlc_min = self.hlc_min.min(header.hlc_min);
            self.hlc_max = self.hlc_max.max(header.hlc_max);
        }
        self.batches += 1;
        self.records += u64::from(header.record_count);
        self.bytes += bytes;
        // A decoded header's version is 1, 2 or 3.
        let slot = usize::from(header.version.clamp(1, 3)) - 1;
        self.header_versions[slot] += 1;
        self.next_seq = header.next_seq();
    }
}

/// Offset of the first valid batch header after damage at `offset`, if any. A valid header
/// has the magic, a matching header CRC, sane fields, the segment's shard (v2), and a
/// plausible first seq: at or above `expected` (the one the damaged batch would have had),
/// and at most one record per [`RECORD_BYTES_MIN`] bytes beyond it, since the batches in
/// between can hold no more. The bounds keep a header-lookalike in user data (a string
/// field may hold any bytes) from turning a torn tail into an unopenable log.
///
/// Where the search starts matters: if the damaged batch's own header is valid (only its
/// payload is short or fails its CRC), its payload is user data that may contain anything,
/// including bytes that look like a header, so the search starts after that payload.
fn valid_header_after(
    bytes: &[u8],
    offset: usize,
    error: &BatchError,
    expected: u64,
    shard: u32,
) -> Option<usize> {
    let start = if error.is_header_damage() {
        offset + 1
    } else {
        let (header, _) = BatchHeader::decode(bytes.get(offset..)?).ok()?;
        offset.checked_add(header.batch_len())?
    };
    let magic = BATCH_MAGIC.to_le_bytes();
    (start..bytes.len().saturating_sub(magic.len() - 1)).find(|&at| {
        bytes[at..].starts_with(&magic)
            && BatchHeader::decode(&bytes[at..]).is_ok_and(|(h, _)| {
                let records_between_max = ((at - offset) / RECORD_BYTES_MIN) as u64;
                let plausible = h.first_seq.checked_sub(expected).is_some_and(|d| d <= records_between_max);
                plausible && h.shard_id.is_none_or(|s| s == shard)
            })
    })
}
