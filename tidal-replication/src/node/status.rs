//! What `tidal cluster status` and the metrics show of a node's replicas.

use serde::Serialize;

use crate::protocol::ProtocolStats;

/// Every shard replica a node hosts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub node: u32,
    pub shards: Vec<ShardStatus>,
}

/// One shard replica.
#[derive(Clone, Debug, Serialize)]
pub struct ShardStatus {
    pub shard: u32,
    /// `leader`, `recovering` (a leader learning its followers' logs), `follower` or `failed`.
    pub role: &'static str,
    pub epoch: u64,
    /// The leader this replica knows of (itself when it leads).
    pub leader: Option<u32>,
    /// Last seq of its log, the seq through which it is durable, applied, and (leader) the
    /// quorum commit.
    pub end: u64,
    pub durable: u64,
    pub applied: u64,
    pub commit: u64,
    /// A leader's view of its followers.
    pub followers: Vec<FollowerStatus>,
    pub stats: ProtocolStats,
    /// The log's epoch history: `(epoch, first_seq)` where each epoch begins.
    pub history: Vec<(u64, u64)>,
    /// Records of a divergent tail this replica moved to `divergent/` (for reconciliation).
    pub set_aside_records: u64,
    /// Snapshots the leader shipped that failed their checks here.
    pub snapshots_refused: u64,
    /// Why this replica stopped, if it did.
    pub failed: Option<String>,
}

impl ShardStatus {
    /// The epoch of this replica's record at `seq` (`None` beyond its log).
    pub fn epoch_at(&self, seq: u64) -> Option<u64> {
        if seq == 0 || seq > self.end {
            return None;
        }
        let i = self.history.partition_point(|&(_, start)| start <= seq);
        Some(if i == 0 { 0 } else { self.history[i - 1].0 })
    }
}

/// A leader's view of one follower.
#[derive(Clone, Debug, Serialize)]
pub struct FollowerStatus {
    pub node: u32,
    pub durable: u64,
    pub applied: u64,
    /// How far behind the leader's durable seq: records, bytes, and milliseconds since the
    /// first record it lacks became durable on the leader (0 when caught up).
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub last_heard_ms_ago: Option<u64>,
    pub needs_snapshot: bool,
}
