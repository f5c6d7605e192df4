//! A shard's replication role as the store sees it, and the events it reports to a
//! replication runtime.
//!
//! The store itself knows nothing of peers or messages: a runtime (the `tidal-replication`
//! crate) tells each shard whether it leads (and in which epoch) or follows, feeds a
//! follower the leader's batches ([`crate::Db::apply_shipped`]), and releases quorum acks
//! ([`crate::Db::commit`]). A standalone store (the default) is its own leader without an
//! epoch: it writes v2 batch headers and acknowledges after its own fsync.

use serde::{Deserialize, Serialize};

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the leader's own fsync (per its durability mode): fast; a write the leader
    /// loses before shipping it is lost with it.
    Leader,
    /// After a majority of the shard's replicas made it durable: the default in a cluster.
    /// On a standalone store the same as `Leader`.
    #[default]
    Quorum,
}

impl std::str::FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<AckMode, String> {
        match s {
            "leader" => Ok(AckMode::Leader),
            "quorum" => Ok(AckMode::Quorum),
            other => Err(format!("ack mode must be `leader` or `quorum`, not `{other}`")),
        }
    }
}

/// What a shard does with writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ShardRole {
    /// Not replicated: accepts writes, acknowledges after its own fsync.
    #[default]
    Standalone,
    /// Leads the shard in `epoch`: accepts writes, stamps batches with the epoch (header
    /// v3), and holds quorum-mode acks until [`crate::Db::commit`] releases them.
    Leader { epoch: u64 },
    /// Follows `leader` (if known) in `epoch`: refuses writes with
    /// [`crate::Error::NotLeader`], applies what the leader ships.
    Follower { epoch: u64, leader: Option<u32> },
    /// A leader still recovering (learning its followers' logs): refuses writes for now.
    Recovering { epoch: u64 },
}

impl ShardRole {
    pub fn epoch(&self) -> u64 {
        match *self {
            ShardRole::Standalone => 0,
            ShardRole::Leader { epoch }
            | ShardRole::Follower { epoch, .. }
            | ShardRole::Recovering { epoch } => epoch,
        }
    }
}

/// A shard's log made durable through `seq` (sent to the replication runtime after every
/// fsync, so a leader ships only what it holds durably).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableEvent {
    pub shard: u32,
    pub seq: u64,
    /// Bytes this shard's writer has appended since the store opened (for lag in bytes).
    pub log_bytes: u64,
}

/// Where a follower shard stands after taking shipped batches ([`crate::Db::append_shipped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShippedPosition {
    /// Last seq applied (visible to reads; durable once reported by an fsync).
    pub applied_seq: u64,
    /// Bytes the writer has appended since the store opened, as in [`DurableEvent`]: the
    /// runtime waits for a [`DurableEvent`] with at least these before it claims them durable.
    pub log_bytes: u64,
}

/// A shard's replication-relevant position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ShardPosition {
    pub shard: u32,
    pub role: ShardRole,
    /// Seq the next appended record gets.
    pub next_seq: u64,
    /// Last seq applied to the state (visible to reads).
    pub applied_seq: u64,
}
