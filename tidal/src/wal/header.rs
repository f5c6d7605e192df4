//! Batch headers: the fixed-size, checksummed prefix of every batch in a segment.
//!
//! This module owns the byte layout of [`BatchHeader`] v3 (written by a replica in a cluster:
//! v2 plus the leader epoch), v2 (written by a standalone store) and v1 (legacy, read-only),
//! and [`BatchError`], the reasons a batch fails its checks. The layout is
//! documented with a byte map in `docs/wal-format.md`; `tests_header.rs` pins every
//! offset so code and document cannot drift apart.
//!
//! ```text
//! v2, 64 bytes, little-endian
//!  0 magic u32 | 4 version u16 (=2) | 6 flags u16 | 8 shard_id u32 | 12 record_count u32
//! 16 first_seq u64 | 24 hlc_min u64 | 32 hlc_max u64 | 40 payload_len u32
//! 44 payload_crc32c u32 | 48 origin_node u32 | 52 reserved [u8; 8] (zero) | 60 header_crc32c u32 (of 0..60)
//!
//! v3, 64 bytes: as v2 with version 3, and bytes 52..60 hold leader_epoch u64 (at least 1)
//!
//! v1, 32 bytes, little-endian
//!  0 magic u32 | 4 version u16 (=1) | 6 flags u16 | 8 record_count u32 | 12 first_seq u64
//! 20 payload_len u32 | 24 payload_crc32c u32 | 28 header_crc32c u32 (of 0..28)
//! ```
//!
//! Invariants of a header that decodes: the magic matches, the version is known, the header
//! CRC matches, no unknown flag is set, the reserved bytes are zero, `record_count >= 1`,
//! `first_seq >= 1` and `first_seq + record_count` does not overflow, `hlc_min <= hlc_max`,
//! and `payload_len` is at most [`BATCH_PAYLOAD_BYTES_MAX`] and large enough to hold
//! `record_count` records. The version sits at offset 4 in both layouts, so a reader peeks
//! it before it knows the header's size.

use std::fmt;

use crate::hlc::Hlc;
use crate::wal::record::{RECORD_BYTES_MIN, RecordError};

/// `b"TDLB"` read as a little-endian u32: the first four bytes of every batch.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"TDLB");
/// Header version a replica in a cluster writes: v2 plus the leader epoch (KIP-101).
pub const HEADER_VERSION_V3: u16 = 3;
/// Header version a standalone store writes (no epoch), so a downgrade stays possible.
pub const HEADER_VERSION_V2: u16 = 2;
/// Legacy header version, still read.
pub const HEADER_VERSION_V1: u16 = 1;
/// Size of a v2 (and v3) header in bytes.
pub const HEADER_V2_BYTES: usize = 64;
/// Size of a v1 header in bytes.
pub const HEADER_V1_BYTES: usize = 32;
/// Bytes needed to learn a header's version (magic + version).
pub const HEADER_PEEK_BYTES: usize = 6;
/// Flags this code understands; none are defined yet, so any set bit is corruption.
pub const FLAGS_KNOWN: u16 = 0;
/// Largest payload of one batch. Bounds the memory a reader allocates for one batch and lets
/// recovery reject a nonsensical length before reading past it.
pub const BATCH_PAYLOAD_BYTES_MAX: u32 = 128 * 1024 * 1024;

// v2 field offsets (the byte map). Shared by encoder, decoder and the byte-map test.
pub(crate) const V2_MAGIC: usize = 0;
pub(crate) const V2_VERSION: usize = 4;
pub(crate) const V2_FLAGS: usize = 6;
pub(crate) const V2_SHARD: usize = 8;
pub(crate) const V2_RECORD_COUNT: usize = 12;
pub(crate) const V2_FIRST_SEQ: usize = 16;
pub(crate) const V2_HLC_MIN: usize = 24;
pub(crate) const V2_HLC_MAX: usize = 32;
pub(crate) const V2_PAYLOAD_LEN: usize = 40;
pub(crate) const V2_PAYLOAD_CRC: usize = 44;
pub(crate) const V2_ORIGIN_NODE: usize = 48;
pub(crate) const V2_RESERVED: usize = 52;
/// v3 only: where v2 keeps its reserved bytes.
pub(crate) const V3_EPOCH: usize = 52;
pub(crate) const V2_HEADER_CRC: usize = 60;

// v1 field offsets.
pub(crate) const V1_FLAGS: usize = 6;
pub(crate) const V1_RECORD_COUNT: usize = 8;
pub(crate) const V1_FIRST_SEQ: usize = 12;
pub(crate) const V1_PAYLOAD_LEN: usize = 20;
pub(crate) const V1_PAYLOAD_CRC: usize = 24;
pub(crate) const V1_HEADER_CRC: usize = 28;

/// A decoded batch header, either version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// 1 (legacy), 2 (standalone) or 3 (replica in a cluster).
    pub version: u16,
    pub flags: u16,
    /// The shard that wrote the batch. `None` for v1, whose shard is the segment's.
    pub shard_id: Option<u32>,
    /// Node that wrote the batch (0 = not recorded, as in v1). A replica that applies
    /// shipped batches credits this node's CRDT slot, never its own.
    pub origin_node: u32,
    /// Records in the payload, at least 1.
    pub record_count: u32,
    /// Seq of the first record; record `i` has seq `first_seq + i`.
    pub first_seq: u64,
    /// Smallest and greatest HLC of the records. Stored in v2; for v1 computed from the
    /// records by [`crate::wal::segment::decode_batch`] (zero when only the header was read).
    pub hlc_min: Hlc,
    pub hlc_max: Hlc,
    pub payload_len: u32,
    pub payload_crc32c: u32,
    /// Epoch of the shard leader that wrote the batch: at least 1 in v3, 0 in v1 and v2
    /// (written before the shard had epochs).
    pub epoch: u64,
}

impl BatchHeader {
    /// Size of this header on disk.
    pub fn encoded_len(&self) -> usize {
        if self.version == HEADER_VERSION_V1 { HEADER_V1_BYTES } else { HEADER_V2_BYTES }
    }

    /// Size of the whole batch (header + payload) on disk.
    pub fn batch_len(&self) -> usize {
        self.encoded_len() + self.payload_len as usize
    }

    /// One past the seq of the last record. Cannot overflow for a decoded header.
    pub fn next_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.record_count))
    }

    /// Encodes this header in the v2 layout, header CRC included. `shard_id` must be set
    /// (a writer always knows its shard); `None` is written as shard 0. The epoch is not
    /// written (v2 has none).
    pub fn encode_v2(&self) -> [u8; HEADER_V2_BYTES] {
        self.encode_64(HEADER_VERSION_V2, 0)
    }

    /// Encodes this header in the v3 layout: v2's fields plus [`Self::epoch`], which must be
    /// at least 1 (a v3 header with epoch 0 does not decode).
    pub fn encode_v3(&self) -> [u8; HEADER_V2_BYTES] {
        self.encode_64(HEADER_VERSION_V3, self.epoch)
    }

    /// Encodes in the layout [`Self::version`] names (v1, v2 or v3).
    pub fn encode(&self) -> Vec<u8> {
        match self.version {
            HEADER_VERSION_V1 => self.encode_v1().to_vec(),
            HEADER_VERSION_V3 => self.encode_v3().to_vec(),
            _ => self.encode_v2().to_vec(),
        }
    }

    fn encode_64(&self, version: u16, epoch: u64) -> [u8; HEADER_V2_BYTES] {
        let mut b = [0u8; HEADER_V2_BYTES];
        put_u32(&mut b, V2_MAGIC, BATCH_MAGIC);
        put_u16(&mut b, V2_VERSION, version);
        put_u16(&mut b, V2_FLAGS, self.flags);
        put_u32(&mut b, V2_SHARD, self.shard_id.unwrap_or(0));
        put_u32(&mut b, V2_RECORD_COUNT, self.record_count);
        put_u64(&mut b, V2_FIRST_SEQ, self.first_seq);
        put_u64(&mut b, V2_HLC_MIN, self.hlc_min.0);
        put_u64(&mut b, V2_HLC_MAX, self.hlc_max.0);
        put_u32(&mut b, V2_PAYLOAD_LEN, self.payload_len);
        put_u32(&mut b, V2_PAYLOAD_CRC, self.payload_crc32c);
        put_u32(&mut b, V2_ORIGIN_NODE, self.origin_node);
        // v2: reserved bytes 52..60 stay zero; v3: the epoch.
        put_u64(&mut b, V3_EPOCH, epoch);
        let crc = crc32c::crc32c(&b[..V2_HEADER_CRC]);
        put_u32(&mut b, V2_HEADER_CRC, crc);
        b
    }

    /// Encodes this header in the legacy v1 layout (no shard, no HLC range). Only for
    /// compatibility fixtures: the writer never produces v1.
    pub fn encode_v1(&self) -> [u8; HEADER_V1_BYTES] {
        let mut b = [0u8; HEADER_V1_BYTES];
        put_u32(&mut b, V2_MAGIC, BATCH_MAGIC);
        put_u16(&mut b, V2_VERSION, HEADER_VERSION_V1);
        put_u16(&mut b, V1_FLAGS, self.flags);
        put_u32(&mut b, V1_RECORD_COUNT, self.record_count);
        put_u64(&mut b, V1_FIRST_SEQ, self.first_seq);
        put_u32(&mut b, V1_PAYLOAD_LEN, self.payload_len);
        put_u32(&mut b, V1_PAYLOAD_CRC, self.payload_crc32c);
        let crc = crc32c::crc32c(&b[..V1_HEADER_CRC]);
        put_u32(&mut b, V1_HEADER_CRC, crc);
        b
    }

    /// Decodes and checks the header at the start of `bytes` (either version). Does not look
    /// at the payload. Returns the header and its size.
    pub fn decode(bytes: &[u8]) -> Result<(BatchHeader, usize), BatchError> {
        if bytes.len() < HEADER_PEEK_BYTES {
            return Err(BatchError::ShortHeader { have: bytes.len(), need: HEADER_PEEK_BYTES });
        }
        let magic = get_u32(bytes, V2_MAGIC);
        if magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic(magic));
        }
        let version = get_u16(bytes, V2_VERSION);
        let (need, crc_at) = match version {
            HEADER_VERSION_V2 | HEADER_VERSION_V3 => (HEADER_V2_BYTES, V2_HEADER_CRC),
            HEADER_VERSION_V1 => (HEADER_V1_BYTES, V1_HEADER_CRC),
            other => return Err(BatchError::UnknownVersion(other)),
        };
        if bytes.len() < need {
            return Err(BatchError::ShortHeader { have: bytes.len(), need });
        }
        let stored = get_u32(bytes, crc_at);
        let actual = crc32c::crc32c(&bytes[..crc_at]);
        if stored != actual {
            return Err(BatchError::HeaderCrc { stored, actual });
        }
        let header = match version {
            HEADER_VERSION_V1 => parse_v1(bytes),
            _ => parse_64(bytes, version)?,
        };
        header.check()?;
        Ok((header, need))
    }

    /// Field checks that hold for every header a writer produces. Runs after the CRC passed,
    /// so a failure here means the writer (or a newer one) wrote it: never a torn write.
    fn check(&self) -> Result<(), BatchError> {
        if self.flags & !FLAGS_KNOWN != 0 {
            return Err(BatchError::UnknownFlags(self.flags));
        }
        let invalid = |what: &'static str| Err(BatchError::InvalidHeader(what));
        if self.record_count == 0 {
            return invalid("record_count is 0");
        }
        if self.first_seq == 0 {
            return invalid("first_seq is 0 (seqs start at 1)");
        }
        if self.first_seq.checked_add(u64::from(self.record_count)).is_none() {
            return invalid("first_seq + record_count overflows");
        }
        if self.payload_len > BATCH_PAYLOAD_BYTES_MAX {
            return invalid("payload_len exceeds BATCH_PAYLOAD_BYTES_MAX");
        }
        if u64::from(self.payload_len) < u64::from(self.record_count) * RECORD_BYTES_MIN as u64 {
            return invalid("payload_len too small for record_count records");
        }
        if self.hlc_min > self.hlc_max {
            return invalid("hlc_min > hlc_max");
        }
        if self.version == HEADER_VERSION_V3 && self.epoch == 0 {
            return invalid("v3 leader_epoch is 0 (epochs start at 1)");
        }
        Ok(())
    }
}

/// Parses a v2 or v3 header (same 64-byte layout; v3 keeps its epoch where v2 is reserved).
fn parse_64(b: &[u8], version: u16) -> Result<BatchHeader, BatchError> {
    let epoch = if version == HEADER_VERSION_V3 {
        get_u64(b, V3_EPOCH)
    } else if b[V2_RESERVED..V2_HEADER_CRC].iter().any(|&x| x != 0) {
        return Err(BatchError::InvalidHeader("reserved bytes are not zero"));
    } else {
        0
    };
    Ok(BatchHeader {
        version,
        flags: get_u16(b, V2_FLAGS),
        shard_id: Some(get_u32(b, V2_SHARD)),
        origin_node: get_u32(b, V2_ORIGIN_NODE),
        record_count: get_u32(b, V2_RECORD_COUNT),
        first_seq: get_u64(b, V2_FIRST_SEQ),
        hlc_min: Hlc(get_u64(b, V2_HLC_MIN)),
        hlc_max: Hlc(get_u64(b, V2_HLC_MAX)),
        payload_len: get_u32(b, V2_PAYLOAD_LEN),
        payload_crc32c: get_u32(b, V2_PAYLOAD_CRC),
        epoch,
    })
}

fn parse_v1(b: &[u8]) -> BatchHeader {
    BatchHeader {
        version: HEADER_VERSION_V1,
        flags: get_u16(b, V1_FLAGS),
        shard_id: None,
        origin_node: 0,
        record_count: get_u32(b, V1_RECORD_COUNT),
        first_seq: get_u64(b, V1_FIRST_SEQ),
        hlc_min: Hlc::ZERO,
        hlc_max: Hlc::ZERO,
        payload_len: get_u32(b, V1_PAYLOAD_LEN),
        payload_crc32c: get_u32(b, V1_PAYLOAD_CRC),
        epoch: 0,
    }
}

/// Why the bytes at some offset are not a whole, valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a header needs.
    ShortHeader {
        have: usize,
        need: usize,
    },
    BadMagic(u32),
    /// The magic matched but the version is not one this code reads. Could be a torn write
    /// (magic written, version not) or a newer format.
    UnknownVersion(u16),
    HeaderCrc {
        stored: u32,
        actual: u32,
    },
    /// The header CRC passed but a flag this code does not know is set.
    UnknownFlags(u16),
    /// The header CRC passed but a field is impossible.
    InvalidHeader(&'static str),
    /// The header claims more payload than the bytes hold.
    ShortPayload {
        have: usize,
        need: usize,
    },
    PayloadCrc {
        stored: u32,
        actual: u32,
    },
    /// The payload CRC passed but the record framing or a record is wrong.
    Record {
        index: u32,
        error: RecordError,
    },
}

impl BatchError {
    /// Could this damage come from a write that was cut short (or a bit flip in bytes whose
    /// checksum therefore fails)? Only such damage may be repaired as a torn tail; a header
    /// whose CRC passed but whose content is wrong was written that way and is corruption.
    pub fn is_tail_damage(&self) -> bool {
        matches!(
            self,
            BatchError::ShortHeader { .. }
                | BatchError::BadMagic(_)
                | BatchError::UnknownVersion(_)
                | BatchError::HeaderCrc { .. }
                | BatchError::ShortPayload { .. }
                | BatchError::PayloadCrc { .. }
        )
    }

    /// Did the header itself fail (as opposed to its payload)?
    pub fn is_header_damage(&self) -> bool {
        matches!(
            self,
            BatchError::ShortHeader { .. }
                | BatchError::BadMagic(_)
                | BatchError::UnknownVersion(_)
                | BatchError::HeaderCrc { .. }
        )
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::ShortHeader { have, need } => {
                write!(f, "short batch header: {have} of {need} bytes")
            }
            BatchError::BadMagic(m) => write!(f, "bad batch magic {m:#010x}"),
            BatchError::UnknownVersion(v) => write!(f, "unknown batch header version {v}"),
            BatchError::HeaderCrc { stored, actual } => {
                write!(f, "batch header CRC mismatch: stored {stored:#010x}, computed {actual:#010x}")
            }
            BatchError::UnknownFlags(flags) => write!(f, "unknown batch flags {flags:#06x}"),
            BatchError::InvalidHeader(what) => write!(f, "invalid batch header: {what}"),
            BatchError::ShortPayload { have, need } => {
                write!(f, "short batch payload: {have} of {need} bytes")
            }
            BatchError::PayloadCrc { stored, actual } => {
                write!(f, "batch payload CRC mismatch: stored {stored:#010x}, computed {actual:#010x}")
            }
            BatchError::Record { index, error } => write!(f, "record {index} of batch: {error}"),
        }
    }
}

impl std::error::Error for BatchError {}

// Fixed-offset little-endian accessors. Callers have checked the length, and every offset
// used is a constant inside the header, so the slicing below cannot fail for them; the
// `get` fallbacks keep this panic-free even if that ever changed.
fn get_u16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map_or(0, u16::from_le_bytes)
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
