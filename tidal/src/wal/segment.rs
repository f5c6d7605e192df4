//! Segments and the batches inside them.
//!
//! This module owns segment names (`s{shard:04}-{first_seq:020}.wal`) and the batch framing
//! a segment is made of: a segment is a plain sequence of `header | payload` batches with no
//! file header. [`encode_batch_into`] is what the writer uses; [`encode_batch_v1`] writes
//! legacy batches for compatibility fixtures only; [`decode_batch`] checks one batch and is
//! the entry point for recovery, replication and the fuzz targets.
//!
//! Invariants of a batch that decodes: the header checks of [`BatchHeader::decode`] pass,
//! the payload is all there and matches its CRC, and the payload splits into exactly
//! `record_count` framed records with no byte left over.

use std::path::{Path, PathBuf};

use crate::hlc::Hlc;
use crate::signal::SignalRef;
use crate::wal::WalError;
use crate::wal::header::{
    BATCH_PAYLOAD_BYTES_MAX, BatchError, BatchHeader, HEADER_V1_BYTES, HEADER_V2_BYTES, HEADER_VERSION_V1,
    HEADER_VERSION_V2, HEADER_VERSION_V3,
};
use crate::wal::record::{encode_record, peek_hlc, record_bodies};

/// File extension of segments.
pub const SEGMENT_EXT: &str = ".wal";
/// Digits of the first seq in a segment name.
const SEQ_DIGITS: usize = 20;
/// Least digits of the shard in a segment name (more are allowed for shards >= 10000).
const SHARD_DIGITS_MIN: usize = 4;

/// A parsed segment file name, with the path it was found at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub shard: u32,
    /// Seq of the segment's first record (of the record its first batch will hold, if empty).
    pub first_seq: u64,
    pub path: PathBuf,
}

impl SegmentName {
    /// The segment of `shard` starting at `first_seq` in `dir`.
    pub fn new(dir: &Path, shard: u32, first_seq: u64) -> SegmentName {
        SegmentName { shard, first_seq, path: dir.join(segment_file_name(shard, first_seq)) }
    }

    /// Parses a path whose file name is a segment name; `None` for anything else.
    pub fn from_path(path: &Path) -> Option<SegmentName> {
        let name = path.file_name()?.to_str()?;
        let (shard, first_seq) = parse_segment_file_name(name)?;
        Some(SegmentName { shard, first_seq, path: path.to_path_buf() })
    }
}

/// `s{shard:04}-{first_seq:020}.wal`.
pub fn segment_file_name(shard: u32, first_seq: u64) -> String {
    format!("s{shard:04}-{first_seq:020}{SEGMENT_EXT}")
}

/// Parses a segment file name into `(shard, first_seq)`. Only the canonical form is
/// accepted (the one [`segment_file_name`] produces), so two names never mean one segment.
pub fn parse_segment_file_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_prefix('s')?.strip_suffix(SEGMENT_EXT)?;
    let (shard, seq) = stem.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(shard) || !digits(seq) || shard.len() < SHARD_DIGITS_MIN || seq.len() != SEQ_DIGITS {
        return None;
    }
    let (shard, seq) = (shard.parse::<u32>().ok()?, seq.parse::<u64>().ok()?);
    (segment_file_name(shard, seq) == name).then_some((shard, seq))
}

/// Decodes and checks the batch at the start of `bytes`: header (magic, version, flags,
/// header CRC, field sanity), payload length and CRC, and record framing. Returns the
/// header, the payload, and the batch's total length. For v1 batches the HLC range is
/// computed from the records. Never panics.
pub fn decode_batch(bytes: &[u8]) -> Result<(BatchHeader, &[u8], usize), BatchError> {
    let (mut header, header_len) = BatchHeader::decode(bytes)?;
    let total = header_len + header.payload_len as usize;
    let Some(payload) = bytes.get(header_len..total) else {
        return Err(BatchError::ShortPayload { have: bytes.len() - header_len, need: total - header_len });
    };
    let actual = crc32c::crc32c(payload);
    if actual != header.payload_crc32c {
        return Err(BatchError::PayloadCrc { stored: header.payload_crc32c, actual });
    }
    let (hlc_min, hlc_max) = check_framing(&header, payload)?;
    if header.version == HEADER_VERSION_V1 {
        header.hlc_min = hlc_min;
        header.hlc_max = hlc_max;
    }
    Ok((header, payload, total))
}

/// Walks the length prefixes: exactly `record_count` records, no byte left over. For v1
/// headers it also peeks every record's HLC (v1 stores no range); for v2 it returns the
/// header's range untouched (the reader checks it against the decoded records).
fn check_framing(header: &BatchHeader, payload: &[u8]) -> Result<(Hlc, Hlc), BatchError> {
    let v1 = header.version == HEADER_VERSION_V1;
    let (mut min, mut max) = (Hlc(u64::MAX), Hlc::ZERO);
    let mut count: u32 = 0;
    for body in record_bodies(payload) {
        let error = |error| BatchError::Record { index: count, error };
        let body = body.map_err(error)?;
        if v1 {
            let hlc = peek_hlc(body).map_err(error)?;
            min = min.min(hlc);
            max = max.max(hlc);
        }
        count = count.saturating_add(1);
        if count > header.record_count {
            break;
        }
    }
    if count != header.record_count {
        return Err(BatchError::InvalidHeader("record_count does not match the payload's records"));
    }
    Ok(if v1 { (min, max) } else { (header.hlc_min, header.hlc_max) })
}

/// Encodes one v2 batch of `records` into `buf` (cleared first): header then payload, ready
/// for a single write. Returns the header. On error `buf` holds nothing useful but keeps its
/// capacity.
pub fn encode_batch_v2_into(
    buf: &mut Vec<u8>,
    shard: u32,
    origin_node: u32,
    first_seq: u64,
    records: &[(Hlc, SignalRef<'_>)],
) -> Result<BatchHeader, WalError> {
    encode_batch_into(buf, shard, origin_node, 0, first_seq, records)
}

/// Encodes one batch as [`encode_batch_v2_into`] does, in v3 (with `epoch` in the header)
/// when `epoch >= 1`, in v2 when `epoch == 0` (a store that has no leader epoch).
pub fn encode_batch_into(
    buf: &mut Vec<u8>,
    shard: u32,
    origin_node: u32,
    epoch: u64,
    first_seq: u64,
    records: &[(Hlc, SignalRef<'_>)],
) -> Result<BatchHeader, WalError> {
    let mut header = encode_payload(buf, HEADER_V2_BYTES, first_seq, records)?;
    header.version = if epoch == 0 { HEADER_VERSION_V2 } else { HEADER_VERSION_V3 };
    header.shard_id = Some(shard);
    header.origin_node = origin_node;
    header.epoch = epoch;
    buf[..HEADER_V2_BYTES].copy_from_slice(&header.encode());
    Ok(header)
}

/// Encodes one legacy v1 batch (32-byte header, no shard, no HLC range). This is the v1
/// *fixture writer*: it exists so tests can build the segments an old version wrote and
/// check that they stay readable. The store itself never writes v1.
pub fn encode_batch_v1(first_seq: u64, records: &[(Hlc, SignalRef<'_>)]) -> Result<Vec<u8>, WalError> {
    let mut buf = Vec::new();
    let mut header = encode_payload(&mut buf, HEADER_V1_BYTES, first_seq, records)?;
    header.version = HEADER_VERSION_V1;
    buf[..HEADER_V1_BYTES].copy_from_slice(&header.encode_v1());
    Ok(buf)
}

/// Writes `header_len` placeholder bytes and then the records into `buf`; returns a header
/// with every field but version and shard filled in.
fn encode_payload(
    buf: &mut Vec<u8>,
    header_len: usize,
    first_seq: u64,
    records: &[(Hlc, SignalRef<'_>)],
) -> Result<BatchHeader, WalError> {
    let record_count = u32::try_from(records.len()).ok().filter(|&n| n >= 1).ok_or_else(|| {
        WalError::TooLarge(format!("a batch holds 1..=u32::MAX records, not {}", records.len()))
    })?;
    if first_seq == 0 || first_seq.checked_add(u64::from(record_count)).is_none() {
        return Err(WalError::TooLarge(format!("seq range {first_seq}+{record_count} is not valid")));
    }
    buf.clear();
    buf.resize(header_len, 0);
    let (mut hlc_min, mut hlc_max) = (Hlc(u64::MAX), Hlc::ZERO);
    for (hlc, signal) in records {
        encode_record(buf, *hlc, signal)?;
        hlc_min = hlc_min.min(*hlc);
        hlc_max = hlc_max.max(*hlc);
        if buf.len() - header_len > BATCH_PAYLOAD_BYTES_MAX as usize {
            return Err(WalError::TooLarge(format!(
                "batch payload exceeds BATCH_PAYLOAD_BYTES_MAX ({BATCH_PAYLOAD_BYTES_MAX} bytes)"
            )));
        }
    }
    let payload = &buf[header_len..];
    Ok(BatchHeader {
        version: 0,
        flags: 0,
        shard_id: None,
        origin_node: 0,
        record_count,
        first_seq,
        hlc_min,
        hlc_max,
        // Checked against BATCH_PAYLOAD_BYTES_MAX (< u32::MAX) above.
        payload_len: payload.len() as u32,
        payload_crc32c: crc32c::crc32c(payload),
        epoch: 0,
    })
}
