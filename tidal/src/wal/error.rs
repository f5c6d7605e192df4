//! Errors of the WAL layer: I/O with the path and operation, corruption with segment and offset.

use std::io;
use std::path::PathBuf;

/// What went wrong reading or writing a write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An operating-system call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// Bytes that fail their checks anywhere but a repairable tail.
    #[error("corrupt WAL segment {} at offset {offset}: {reason}", segment.display())]
    Corruption { segment: PathBuf, offset: u64, reason: String },
    /// Recovery needs records that are no longer on disk (removed segments).
    #[error("WAL of shard {shard} starts at seq {first_available}, but seq {needed} is needed")]
    Missing { shard: u32, first_available: u64, needed: u64 },
    /// A record or batch too large for the format's length fields.
    #[error("{0}")]
    TooLarge(String),
    /// An encoded batch refused by [`crate::wal::WalWriter::append_encoded`]; nothing was
    /// written and the writer stays usable.
    #[error("batch refused: {0}")]
    Refused(#[from] Refusal),
}

/// Why an encoded batch cannot continue a shard's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes fail their checks (header or payload CRC, framing).
    #[error("damaged batch: {0}")]
    Damaged(#[from] crate::wal::BatchError),
    #[error("{0} bytes follow the batch")]
    TrailingBytes(usize),
    /// The batch belongs to another shard (or, as a v1 batch, names none).
    #[error("batch of shard {got:?}, this log is shard {expected}")]
    WrongShard { expected: u32, got: Option<u32> },
    /// The batch does not start at the log's next seq.
    #[error("batch starts at seq {got}, the log's next seq is {expected}")]
    NotNext { expected: u64, got: u64 },
    #[error("empty batch")]
    Empty,
}

impl WalError {
    /// Wraps an I/O error with the operation and the path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io { op, path: path.into(), source }
    }
}
