//! The crate's error type: one enum callers can match on, plus a coarse [`ErrorKind`]
//! that servers map to status codes.

use crate::hlc::HlcError;
use crate::wal::WalError;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signal failed validation; nothing of its batch was written.
    #[error("invalid signal at index {index}: field `{field}`: {reason}")]
    InvalidSignal { index: usize, field: String, reason: String },
    /// A session write skipped ahead; the signal was not written.
    #[error("session gap for user `{user}` session `{session}`: expected session_seq {expected}, got {got}")]
    SessionGap { user: String, session: String, expected: u64, got: u64 },
    /// A duplicate so old that its original ack is no longer kept; it changed nothing.
    #[error(
        "session_seq {got} for user `{user}` session `{session}` was applied long ago (hwm {hwm}); original ack no longer kept"
    )]
    StaleDuplicate { user: String, session: String, got: u64, hwm: u64 },
    /// A batch larger than the configured limit.
    #[error("batch of {len} signals exceeds the limit of {max}")]
    BatchTooLarge { len: usize, max: usize },
    /// A batch whose encoded size exceeds the limit.
    #[error("batch of about {bytes} bytes exceeds the limit of {max} bytes")]
    BatchBytesTooLarge { bytes: usize, max: usize },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Clock(#[from] HlcError),
    /// A snapshot could not be written or none of them could be used.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The data directory's manifest is missing, damaged, or disagrees with the options.
    #[error("data directory {path}: {reason}")]
    Manifest { path: String, reason: crate::manifest::ManifestError },
    /// Options that cannot work together.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A shard stopped after an I/O error; its state on disk is intact up to its last ack.
    #[error("shard {shard} stopped after an I/O error and must be reopened: {reason}")]
    ShardFailed { shard: u32, reason: String },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// An operation that the current state does not allow.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A read's request is malformed (bad token, bad limit).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A read's `min_seq` was not applied within its wait: retry later or elsewhere.
    #[error("not yet: shard {shard} has applied seq {applied}, the read needs {wanted}")]
    NotYet { shard: u32, applied: u64, wanted: u64 },
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The shard is replicated and this node does not lead it: send the write to `leader`.
    #[error("shard {shard} is not led by this node (epoch {epoch}, leader {})", leader.map_or("unknown".to_string(), |l| l.to_string()))]
    NotLeader { shard: u32, epoch: u64, leader: Option<u32> },
}

/// The coarse class of an [`Error`], stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something wrong; retrying the same request fails again.
    InvalidInput,
    /// The request conflicts with the stored state (session gap).
    Conflict,
    /// Stored data failed its checks.
    Corruption,
    /// The store cannot serve now (I/O failure, closed, timeout).
    Unavailable,
    /// Another node leads the shard: retry there ([`Error::NotLeader`] names it).
    NotLeader,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSignal { .. }
            | Error::BatchTooLarge { .. }
            | Error::BatchBytesTooLarge { .. }
            | Error::InvalidOptions(_)
            | Error::InvalidRequest(_) => ErrorKind::InvalidInput,
            Error::Clock(_) => ErrorKind::InvalidInput,
            Error::SessionGap { .. } | Error::StaleDuplicate { .. } | Error::InvalidState(_) => {
                ErrorKind::Conflict
            }
            Error::Wal(WalError::Corruption { .. } | WalError::Missing { .. }) | Error::Snapshot(_) => {
                ErrorKind::Corruption
            }
            Error::Manifest { .. } => ErrorKind::Corruption,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            _ => ErrorKind::Unavailable,
        }
    }
}
