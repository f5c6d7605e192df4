//! Reading a shard's log back as whole batches, from any seq: what a leader ships.
//!
//! [`read_batches`] finds the segment that holds `from_seq` (in the WAL directory or the
//! archive), walks batch headers to it, and returns the exact bytes of the batches from
//! there, up to a byte budget. A [`BatchCursor`] remembers where the read stopped, so a
//! leader tailing its own log reads only new bytes (ranged reads, never the whole segment).
//! A batch still being written (a short or failing tail of the last segment) ends the read:
//! only what decodes whole is returned.

use std::path::{Path, PathBuf};

use crate::wal::WalError;
use crate::wal::header::{BatchHeader, HEADER_V2_BYTES};
use crate::wal::reader::list_segments;
use crate::wal::segment::{SegmentName, decode_batch};
use crate::wal::vfs::Vfs;

/// Where the next batch after a read begins: seq, segment and byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchCursor {
    pub seq: u64,
    pub segment: PathBuf,
    pub offset: u64,
}

/// Why a read could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The log no longer holds `seq` (retention removed it); the oldest seq held is given.
    #[error("seq {seq} is older than the log holds (oldest {oldest})")]
    Behind { seq: u64, oldest: u64 },
    /// `seq` is not where a batch starts.
    #[error("seq {0} is not at a batch boundary")]
    NotABoundary(u64),
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// Batches of `shard` from `from_seq` (a batch boundary), about `max_bytes` in all (at least
/// one batch if the log holds `from_seq`), from the segments in `dirs` (the WAL directory
/// first, then the archive). Returns the batches and the cursor after the last one;
/// `hint` (a cursor from an earlier read) skips the search when it points at `from_seq`.
pub fn read_batches(
    vfs: &dyn Vfs,
    dirs: &[&Path],
    shard: u32,
    from_seq: u64,
    max_bytes: u64,
    hint: Option<&BatchCursor>,
) -> Result<(Vec<Vec<u8>>, Option<BatchCursor>), ShipError> {
    let segments = shard_segments(vfs, dirs, shard)?;
    let Some(oldest) = segments.first() else { return Ok((Vec::new(), None)) };
    if from_seq < oldest.first_seq {
        return Err(ShipError::Behind { seq: from_seq, oldest: oldest.first_seq });
    }
    let start = match hint.filter(|c| c.seq == from_seq && segments.iter().any(|s| s.path == c.segment)) {
        Some(cursor) => cursor.clone(),
        None => {
            let i = segments.partition_point(|s| s.first_seq <= from_seq) - 1;
            match seek(vfs, &segments[i].path, segments[i].first_seq, from_seq)? {
                Some(cursor) => cursor,
                // A hole (a replica that installed a snapshot keeps its older segments):
                // the log resumes above `from_seq`, so a reader needs a snapshot.
                None if i + 1 < segments.len() => {
                    return Err(ShipError::Behind { seq: from_seq, oldest: segments[i + 1].first_seq });
                }
                None => return Ok((Vec::new(), None)),
            }
        }
    };
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let mut cursor = start;
    let mut index = segments.iter().position(|s| s.path == cursor.segment).unwrap_or(0);
    loop {
        let more = read_segment(vfs, &mut cursor, max_bytes, &mut bytes, &mut out)?;
        if !more || bytes >= max_bytes {
            break;
        }
        // This segment ended; the next one continues the seqs (if it exists).
        index += 1;
        match segments.get(index) {
            Some(next) if next.first_seq == cursor.seq => {
                cursor = BatchCursor { seq: next.first_seq, segment: next.path.clone(), offset: 0 };
            }
            _ => break,
        }
    }
    Ok((out, Some(cursor)))
}

/// The epoch of every batch of `shard` from `from_seq` (a batch boundary; 1 for the whole
/// log) to the end, walking headers only: `(epoch, first_seq)` where the epoch changes, and
/// the last seq held. What a replica's epoch history is rebuilt from.
pub fn scan_epochs(
    vfs: &dyn Vfs,
    dirs: &[&Path],
    shard: u32,
    from_seq: u64,
) -> Result<(Vec<(u64, u64)>, u64), ShipError> {
    let segments = shard_segments(vfs, dirs, shard)?;
    let mut starts: Vec<(u64, u64)> = Vec::new();
    let mut end = from_seq.saturating_sub(1);
    let first = segments.partition_point(|s| s.first_seq <= from_seq).saturating_sub(1);
    for segment in segments.iter().skip(first) {
        let path = &segment.path;
        let io = |e| WalError::io("read segment", path, e);
        let len = vfs.file_len(path).map_err(io)?;
        let (mut offset, mut seq) = (0u64, segment.first_seq);
        while offset < len {
            let head = vfs.read_range(path, offset, HEADER_V2_BYTES).map_err(io)?;
            let Ok((header, _)) = BatchHeader::decode(&head) else { break };
            if offset + header.batch_len() as u64 > len {
                break;
            }
            if seq >= from_seq && starts.last().is_none_or(|&(e, _)| e < header.epoch) {
                starts.push((header.epoch, header.first_seq));
            }
            offset += header.batch_len() as u64;
            seq = header.next_seq();
            end = end.max(seq - 1);
        }
    }
    Ok((starts, end))
}

/// Cuts `shard`'s log back so it ends at `from_seq - 1` (a batch boundary), in every dir:
/// the segment holding `from_seq` is truncated there (or removed when it starts there),
/// later ones are removed, and each directory is synced. The caller saved the bytes first.
/// Returns the segment a writer appends to next (`None`: create one named `from_seq`).
pub fn cut_log(
    vfs: &dyn Vfs,
    dirs: &[&Path],
    shard: u32,
    from_seq: u64,
) -> Result<Option<PathBuf>, ShipError> {
    let mut tail = None;
    for dir in dirs {
        let segments: Vec<SegmentName> =
            list_segments(vfs, dir)?.into_iter().filter(|s| s.shard == shard).collect();
        let mut changed = false;
        for (i, segment) in segments.iter().enumerate() {
            let next_first = segments.get(i + 1).map(|s| s.first_seq);
            let io = |e| WalError::io("cut segment", &segment.path, e);
            if segment.first_seq >= from_seq {
                vfs.remove_file(&segment.path).map_err(io)?;
                changed = true;
            } else if next_first.is_none_or(|n| n >= from_seq) {
                // The segment holding from_seq - 1 (and maybe from_seq): cut after that.
                let cursor = seek(vfs, &segment.path, segment.first_seq, from_seq)?;
                let len = vfs.file_len(&segment.path).map_err(io)?;
                let at = cursor.map_or(len, |c| c.offset);
                if at < len {
                    vfs.truncate(&segment.path, at).map_err(io)?;
                }
                tail = Some(segment.path.clone());
            }
        }
        if changed {
            vfs.sync_dir(dir).map_err(|e| WalError::io("sync dir", dir, e))?;
        }
    }
    // Only a segment of the WAL directory (the first dir) can be appended to.
    Ok(tail.filter(|t| t.starts_with(dirs[0])))
}

fn shard_segments(vfs: &dyn Vfs, dirs: &[&Path], shard: u32) -> Result<Vec<SegmentName>, WalError> {
    let mut segments: Vec<SegmentName> = Vec::new();
    for dir in dirs {
        for s in list_segments(vfs, dir)?.into_iter().filter(|s| s.shard == shard) {
            if !segments.iter().any(|known| known.first_seq == s.first_seq) {
                segments.push(s);
            }
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Walks the headers of `path` (which starts at `first_seq`) to the batch at `seq`.
fn seek(vfs: &dyn Vfs, path: &Path, first_seq: u64, seq: u64) -> Result<Option<BatchCursor>, ShipError> {
    let io = |e| WalError::io("read segment", path, e);
    let (mut offset, mut at) = (0u64, first_seq);
    loop {
        if at == seq {
            return Ok(Some(BatchCursor { seq, segment: path.to_path_buf(), offset }));
        }
        if at > seq {
            return Err(ShipError::NotABoundary(seq));
        }
        let head = vfs.read_range(path, offset, HEADER_V2_BYTES).map_err(io)?;
        let Ok((header, _)) = BatchHeader::decode(&head) else { return Ok(None) };
        offset += header.batch_len() as u64;
        at = header.next_seq();
    }
}

/// Reads whole batches from `cursor` to the end of its segment or the budget. Returns
/// whether the segment ended cleanly (the caller moves on to the next one).
fn read_segment(
    vfs: &dyn Vfs,
    cursor: &mut BatchCursor,
    max_bytes: u64,
    bytes: &mut u64,
    out: &mut Vec<Vec<u8>>,
) -> Result<bool, ShipError> {
    let path = cursor.segment.clone();
    let io = |e| WalError::io("read segment", &path, e);
    let len = vfs.file_len(&path).map_err(io)?;
    while cursor.offset < len && (*bytes < max_bytes || out.is_empty()) {
        let head = vfs.read_range(&path, cursor.offset, HEADER_V2_BYTES).map_err(io)?;
        let Ok((header, _)) = BatchHeader::decode(&head) else { return Ok(false) };
        let batch = vfs.read_range(&path, cursor.offset, header.batch_len()).map_err(io)?;
        // A batch still being written (or damaged): stop before it.
        if decode_batch(&batch).is_err() || header.first_seq != cursor.seq {
            return Ok(false);
        }
        cursor.offset += batch.len() as u64;
        cursor.seq = header.next_seq();
        *bytes += batch.len() as u64;
        out.push(batch);
    }
    Ok(cursor.offset >= len)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hlc::Hlc;
    use crate::signal::{Signal, SignalKind};
    use crate::wal::sim_vfs::SimVfs;
    use crate::wal::writer::WalWriter;

    fn write_log(vfs: &SimVfs, dir: &Path, batches: u64, segment_bytes: u64) -> Vec<Vec<u8>> {
        let mut w = WalWriter::open(Arc::new(vfs.clone()), dir, 2, 1, None, segment_bytes).unwrap();
        let mut written = Vec::new();
        for b in 0..batches {
            let signals: Vec<Signal> =
                (0..3).map(|i| Signal::new("u", format!("i{b}-{i}"), SignalKind::Click)).collect();
            let records: Vec<_> = signals.iter().map(|s| (Hlc(b + 1), s.as_ref())).collect();
            w.append(&records).unwrap();
            written.push(w.last_batch().to_vec());
        }
        w.sync().unwrap();
        written
    }

    #[test]
    fn reads_from_any_boundary_across_segments_with_and_without_a_cursor() {
        let vfs = SimVfs::new();
        let dir = Path::new("/db/wal");
        let written = write_log(&vfs, dir, 40, 1024);
        assert!(list_segments(&vfs, dir).unwrap().len() > 3, "the log must span segments");
        let (all, cursor) = read_batches(&vfs, &[dir], 2, 1, u64::MAX, None).unwrap();
        assert_eq!(all, written);
        assert_eq!(cursor.unwrap().seq, 121);
        // From the middle, in small steps, following the cursor.
        let (mut got, mut hint, mut seq) = (Vec::new(), None, 31);
        while seq < 121 {
            let (batches, cursor) = read_batches(&vfs, &[dir], 2, seq, 200, hint.as_ref()).unwrap();
            assert!(!batches.is_empty());
            got.extend(batches);
            hint = cursor;
            seq = hint.as_ref().unwrap().seq;
        }
        assert_eq!(got, written[10..].to_vec());
        assert!(matches!(read_batches(&vfs, &[dir], 2, 32, 10, None), Err(ShipError::NotABoundary(32))));
        assert!(read_batches(&vfs, &[dir], 2, 121, 10, None).unwrap().0.is_empty());
        assert!(read_batches(&vfs, &[dir], 7, 1, 10, None).unwrap().0.is_empty());
    }

    #[test]
    fn epochs_are_scanned_from_headers() {
        let vfs = SimVfs::new();
        let dir = Path::new("/db/wal");
        let mut w = WalWriter::open(Arc::new(vfs.clone()), dir, 2, 1, None, 512).unwrap();
        let s = Signal::new("u", "i", SignalKind::Click);
        for epoch in [0, 0, 3, 3, 3, 5] {
            w.set_epoch(epoch);
            w.append(&[(Hlc(1), s.as_ref()), (Hlc(2), s.as_ref())]).unwrap();
        }
        w.sync().unwrap();
        assert_eq!(scan_epochs(&vfs, &[dir], 2, 1).unwrap(), (vec![(0, 1), (3, 5), (5, 11)], 12));
        assert_eq!(scan_epochs(&vfs, &[dir], 2, 7).unwrap(), (vec![(3, 7), (5, 11)], 12));
    }

    /// At every batch boundary (segment boundaries among them): the prefix stays, and a
    /// writer continues the cut log.
    #[test]
    fn cutting_the_log_keeps_exactly_the_prefix() {
        for kept_batches in 1..40u64 {
            let vfs = SimVfs::new();
            let dir = Path::new("/db/wal");
            let written = write_log(&vfs, dir, 40, 1024);
            let from = kept_batches * 3 + 1;
            let tail = cut_log(&vfs, &[dir], 2, from).unwrap();
            let (kept, cursor) = read_batches(&vfs, &[dir], 2, 1, u64::MAX, None).unwrap();
            assert_eq!(kept, written[..kept_batches as usize].to_vec(), "cut at {from}");
            assert_eq!(cursor.unwrap().seq, from);
            let mut w = WalWriter::open(Arc::new(vfs.clone()), dir, 2, from, tail, 1024).unwrap();
            let s = Signal::new("u", "new", SignalKind::Like);
            w.append(&[(Hlc(9), s.as_ref())]).unwrap();
            w.sync().unwrap();
            let (after, _) = read_batches(&vfs, &[dir], 2, 1, u64::MAX, None).unwrap();
            assert_eq!(after.len() as u64, kept_batches + 1, "cut at {from}");
        }
    }

    #[test]
    fn a_removed_prefix_is_behind_and_a_torn_tail_ends_the_read() {
        let vfs = SimVfs::new();
        let dir = Path::new("/db/wal");
        let written = write_log(&vfs, dir, 40, 1024);
        let segments = list_segments(&vfs, dir).unwrap();
        vfs.remove_file(&segments[0].path).unwrap();
        let err = read_batches(&vfs, &[dir], 2, 1, u64::MAX, None).unwrap_err();
        assert!(
            matches!(err, ShipError::Behind { seq: 1, oldest } if oldest == segments[1].first_seq),
            "{err}"
        );
        // Half a batch at the end of the last segment: everything before it is read.
        let last = segments.last().unwrap();
        let mut f = vfs.open_append(&last.path).unwrap();
        f.write_all(&written[0][..40]).unwrap();
        let (batches, _) = read_batches(&vfs, &[dir], 2, last.first_seq, u64::MAX, None).unwrap();
        assert_eq!(batches.last(), written.last());
    }
}
