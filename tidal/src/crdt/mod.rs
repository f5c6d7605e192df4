//! Conflict-free replicated data types: the state every shard keeps per item and per user,
//! and the merge that turns per-shard and per-replica copies into one view.
//!
//! Every type here is a state-based CRDT (a join semilattice): `merge` is commutative,
//! associative and idempotent, so replicas converge whatever order, grouping or repetition
//! anti-entropy delivers states in. `proptests.rs` checks these laws for each type.
//!
//! Identity: a *replica* is one shard of one node, named by [`replica_id`]. Two shards of one
//! node are two replicas, so merging the per-shard states of an item *sums* their counts;
//! two copies of the same shard's state (same replica id) merge by *max*, so re-delivering or
//! re-merging a state never double counts. The corollary the write path must respect: a
//! replica id may only ever issue one history. Whoever applies a signal on behalf of a
//! replica (a follower replaying a shipped WAL batch) must use the *originating* replica id,
//! never its own, or the follower's copy would be counted as extra signals.
//!
//! - [`PnCounter`]: positive/negative counter, one slot per replica, inline when there is one.
//! - [`LwwRegister`]: last-writer-wins register ordered by `(Hlc, ReplicaId, value)`.
//! - [`AddWinsSet`]: observed-remove set with dots and a version vector; add wins.
//! - [`CrdtSignalState`]: the per-item aggregate of signals built from the three above, its
//!   kinds named by 8-byte [`KindRef`]s (one process-wide copy of each custom name).

mod aw_set;
mod kind_ref;
mod lww;
mod pn_counter;
mod signal_state;

#[cfg(test)]
mod proptests;

pub use aw_set::{AddWinsSet, Dot};
pub use kind_ref::KindRef;
pub use lww::{LwwRegister, LwwValue};
pub use pn_counter::PnCounter;
pub use signal_state::{CrdtSignalState, KindCounters};

/// Names one replica: one shard of one node. The node is in the high 32 bits, the shard in
/// the low 32, so ids sort by node first and never collide across nodes.
pub type ReplicaId = u64;

/// The replica id of `shard` on `node`.
pub const fn replica_id(node: u32, shard: u32) -> ReplicaId {
    ((node as u64) << 32) | shard as u64
}

/// The node half of a replica id.
pub const fn replica_node(replica: ReplicaId) -> u32 {
    (replica >> 32) as u32
}

/// The shard half of a replica id.
pub const fn replica_shard(replica: ReplicaId) -> u32 {
    replica as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_id_puts_node_high_and_round_trips() {
        let id = replica_id(3, 7);
        assert_eq!(id, (3u64 << 32) | 7);
        assert_eq!(replica_node(id), 3);
        assert_eq!(replica_shard(id), 7);
        assert_eq!(replica_id(u32::MAX, u32::MAX), u64::MAX);
        assert!(replica_id(1, 0) > replica_id(0, u32::MAX));
    }
}
