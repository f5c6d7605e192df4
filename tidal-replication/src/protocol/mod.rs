//! The replication protocol of one shard, as pure state machines: events in, actions out.
//!
//! - [`message`]: the messages replicas exchange and their encoding;
//! - [`follower`]: [`follower::Follower`], a replica that appends and applies what the leader
//!   ships, exactly once, and refuses stale epochs;
//! - [`leader`]: [`leader::Leader`], the shard leader: recovery before serving (learn the
//!   followers' positions, fetch what it lacks), per-follower shipping with a bounded window,
//!   quorum commit;
//! - [`replica`]: [`replica::Replica`], the role of a node for a shard (`NodeRole`), which
//!   steps a leader down when a newer epoch appears and promotes or demotes on command.
//!
//! None of them touches a clock, a socket or a file: time comes in as `now_ms`, the log is
//! read through [`BatchSource`], and every effect is an [`Action`] the runtime executes in
//! order (the deterministic simulation in [`crate::sim`], a node's replication thread in
//! production). The runtime must execute the actions of one call in the order given and must
//! fail-stop (crash) if one of them fails: the machines assume an action they emitted
//! happened once the next event arrives.

pub mod follower;
pub mod leader;
pub mod message;
pub mod replica;

use crate::transport::NodeId;
pub use message::{Message, Refusal};

/// An effect the runtime carries out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message (best effort; the protocol retries).
    Send { to: NodeId, message: Message },
    /// Make the replica's highest known epoch and its leader durable before anything that
    /// follows. A replica that has answered a leader of epoch `e` never answers an older one,
    /// nor another leader of `e`. `leader` naming this node means it leads: a restart comes
    /// back as the leader (and recovers under a new epoch).
    PersistEpoch { epoch: u64, leader: Option<NodeId> },
    /// Move the own log's batches from `from_seq` on aside, intact (for reconciliation), and
    /// cut the log and the state back to `from_seq - 1`. `from_seq` is a batch boundary.
    SetAside { from_seq: u64 },
    /// Append these exact bytes (one batch, verified) to the own WAL.
    Append(Vec<u8>),
    /// Apply every batch appended since the last `Sync` through the shard engine and fsync
    /// the WAL (the store applies first, so reads see the batches during the fsync; they are
    /// durable on the leader already). Done when both are.
    Sync,
    /// Read the own log's batches from `from_seq` (at most about `max_bytes`) and send them
    /// to `to` as [`Message::Fetched`] in `epoch`.
    SendBatches { to: NodeId, epoch: u64, from_seq: u64, max_bytes: u64 },
    /// Leader: every seq through this one is durable on a quorum of the shard's replicas.
    Commit(u64),
    /// Leader: recovery is over; accept writes and stamp them with `epoch`.
    Serve { epoch: u64 },
    /// This replica stopped leading (it saw epoch `epoch`, or was demoted); pending writes
    /// get no ack. The runtime syncs its WAL and records durably that it no longer leads,
    /// so a restart comes back as a follower.
    StepDown { epoch: u64 },
    /// Follower: a snapshot (through `seq`, `len` bytes) is coming; stage it from empty.
    SnapshotBegin { seq: u64, len: u64 },
    /// Follower: append these bytes (at `offset`, the staged length so far) to the staged
    /// snapshot.
    SnapshotWrite { offset: u64, bytes: Vec<u8> },
    /// Follower: the staged snapshot is whole. Set aside the own records after
    /// `keep_through` (the leader never had them), then replace the shard's state and log by
    /// the snapshot (verified as a local snapshot is); the log continues at `seq + 1`.
    SnapshotInstall { seq: u64, keep_through: u64 },
}

/// A snapshot file the leader can ship (see [`BatchSource::latest_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last seq it covers.
    pub seq: u64,
    pub len: u64,
}

/// Why a [`BatchSource`] cannot serve a read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The seq is older than the log still holds (retention removed it).
    #[error("seq {seq} is below the oldest seq the log holds ({oldest})")]
    Behind { seq: u64, oldest: u64 },
    #[error("reading the log failed: {0}")]
    Io(String),
}

/// Read access to the own log's durable batches, exactly as on disk.
pub trait BatchSource {
    /// Whole batches starting at `from_seq` (a batch boundary) in seq order, about
    /// `max_bytes` in all but at least one if the log holds `from_seq`; empty if the log
    /// ends before `from_seq`.
    fn read_from(&self, from_seq: u64, max_bytes: u64) -> Result<Vec<Vec<u8>>, SourceError>;

    /// The newest snapshot of the shard, if the store has one (a log that retires segments
    /// always has one covering up to where the log begins).
    fn latest_snapshot(&self) -> Result<Option<SnapshotMeta>, SourceError> {
        Ok(None)
    }

    /// Up to `max_bytes` of the snapshot through `seq` from `offset`; an error when that
    /// snapshot is gone (a newer one replaced it).
    fn read_snapshot(&self, seq: u64, offset: u64, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
        let _ = (offset, max_bytes);
        Err(SourceError::Io(format!("no snapshot through seq {seq}")))
    }
}

/// Counters a protocol machine keeps (exported as metrics by the runtime).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProtocolStats {
    pub batches_appended: u64,
    pub batches_duplicate: u64,
    pub batches_shipped: u64,
    pub bytes_shipped: u64,
    pub set_asides: u64,
    pub fetched_batches: u64,
    /// Leader: installs started; follower: snapshots installed.
    pub snapshot_installs: u64,
    pub snapshot_bytes_shipped: u64,
    pub retransmits: u64,
    /// Refusals sent (follower) or received (leader), by reason.
    pub refused: std::collections::BTreeMap<&'static str, u64>,
}

impl ProtocolStats {
    pub(crate) fn refuse(&mut self, reason: Refusal) {
        *self.refused.entry(reason.as_str()).or_default() += 1;
    }
}

#[cfg(test)]
mod install_tests;
#[cfg(test)]
pub(crate) mod test_batches;
