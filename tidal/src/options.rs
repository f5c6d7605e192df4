//! [`Options`] for opening a store: durability, limits, and the injected clock and file
//! system. Every limit has a named default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hlc::{Clock, MAX_SKEW_MS_DEFAULT, SystemClock};
use crate::score::Weights;
use crate::shard::state::StateLimits;
use crate::signal::{CUSTOM_KINDS_MAX, KIND_NAME_BYTES_MAX, SignalKind};
use crate::wal::vfs::{StdVfs, Vfs};

/// Shards a new store gets unless told otherwise.
pub const SHARDS_DEFAULT: u32 = 4;
/// Most shards a store may have.
pub const SHARDS_MAX: u32 = 1024;
/// A new segment starts once the current one reaches this size.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// A shard snapshots itself after this many signals since its last snapshot.
pub const SNAPSHOT_EVERY_SIGNALS_DEFAULT: u64 = 1_000_000;
/// Default of [`Options::snapshot_copy_slice_entries`]: about 1 ms of copying per group.
pub const SNAPSHOT_COPY_SLICE_ENTRIES_DEFAULT: usize = 2048;
/// WAL bytes retirement keeps for replicas that still need them (archiving off).
pub const WAL_HOLD_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Signals one group commit may gather.
pub const GROUP_SIGNALS_MAX_DEFAULT: usize = 16_384;
/// Pending requests per shard before writers block (backpressure).
pub const WRITE_QUEUE_MAX_DEFAULT: usize = 4_096;
/// Recent history entries kept per user.
pub const USER_HISTORY_MAX_DEFAULT: usize = 16;
/// Sessions kept per user; the least recently active goes first.
pub const USER_SESSIONS_MAX_DEFAULT: usize = 32;

/// When an acknowledged write is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged means fsynced (default).
    Fsync,
    /// fsync at most this often; a crash may lose the last interval of acked writes.
    Interval(Duration),
    /// Never fsync: tests and benchmarks only.
    None,
}

/// A recovery progress report: records one shard has replayed so far.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryProgress {
    pub shard: u32,
    pub records_done: u64,
}

/// Records replayed between two progress reports.
pub const PROGRESS_EVERY_RECORDS: u64 = 65_536;

/// Called from recovery threads as replay proceeds.
pub type ProgressFn = Arc<dyn Fn(RecoveryProgress) + Send + Sync>;

/// How to open a store.
#[derive(Clone)]
pub struct Options {
    /// Shard count for a new store; an existing store must agree or leave it `None`.
    pub shards: Option<u32>,
    /// This node's id; part of every CRDT replica id.
    pub node_id: u32,
    pub durability: Durability,
    pub segment_bytes_max: u64,
    /// 0 turns automatic snapshots off.
    pub snapshot_every_signals: u64,
    /// Entries (items, users, idempotency keys) a shard's writer copies for a snapshot after
    /// each group (about 0.5 µs each): the most a write waits for a snapshot's copy, against
    /// how long the copy takes under load. Positive.
    pub snapshot_copy_slice_entries: usize,
    /// Limits that shape shard state (history ring, sessions per user, idempotency window and
    /// count) for a new store; an existing store pins its own, and must agree or leave it `None`.
    pub state_limits: Option<StateLimits>,
    /// Names of the custom signal kinds this store accepts.
    pub custom_kinds: Vec<String>,
    pub clock_skew_max_ms: u64,
    pub group_signals_max: usize,
    pub write_queue_max: usize,
    pub clock: Arc<dyn Clock>,
    pub vfs: Arc<dyn Vfs>,
    pub progress: Option<ProgressFn>,
    /// Move WAL segments that snapshots cover to `archive/` instead of deleting them, so
    /// the whole history stays available for export (default on).
    pub wal_archive: bool,
    /// With `wal_archive` off: bytes of WAL segments that retirement keeps, beyond what
    /// snapshots cover, for a replica that still needs them ([`crate::Db::hold_log`]). A
    /// replica further behind gets a snapshot instead.
    pub wal_hold_bytes_max: u64,
    /// Half-life of a signal's weight in rankings, for a new store (fixed at creation).
    pub score_half_life_ms: Option<u64>,
    /// The ranking decay's reference time (ms since the epoch) for a new store, fixed at
    /// creation (default: the creation time). Replicas of one shard must share it, so a
    /// cluster passes its own (`created_ms` in the cluster file).
    pub created_ms: Option<u64>,
    /// Per-kind weights of the ranking score; may change from one open to the next.
    pub score_weights: Weights,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: None,
            node_id: 1,
            durability: Durability::Fsync,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            snapshot_every_signals: SNAPSHOT_EVERY_SIGNALS_DEFAULT,
            snapshot_copy_slice_entries: SNAPSHOT_COPY_SLICE_ENTRIES_DEFAULT,
            state_limits: None,
            custom_kinds: Vec::new(),
            clock_skew_max_ms: MAX_SKEW_MS_DEFAULT,
            group_signals_max: GROUP_SIGNALS_MAX_DEFAULT,
            write_queue_max: WRITE_QUEUE_MAX_DEFAULT,
            clock: Arc::new(SystemClock),
            vfs: Arc::new(StdVfs),
            progress: None,
            wal_archive: true,
            wal_hold_bytes_max: WAL_HOLD_BYTES_MAX_DEFAULT,
            score_half_life_ms: None,
            created_ms: None,
            score_weights: Weights::default(),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("shards", &self.shards)
            .field("node_id", &self.node_id)
            .field("durability", &self.durability)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("snapshot_every_signals", &self.snapshot_every_signals)
            .field("snapshot_copy_slice_entries", &self.snapshot_copy_slice_entries)
            .field("wal_archive", &self.wal_archive)
            .field("wal_hold_bytes_max", &self.wal_hold_bytes_max)
            .field("custom_kinds", &self.custom_kinds)
            .field("created_ms", &self.created_ms)
            .field("vfs", &self.vfs)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Rejects combinations that cannot work, naming the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidOptions(msg));
        if let Some(n) = self.shards
            && !(1..=SHARDS_MAX).contains(&n)
        {
            return bad(format!("shards must be within 1..={SHARDS_MAX}, got {n}"));
        }
        if self.segment_bytes_max < 4096 {
            return bad(format!("segment_bytes_max must be at least 4096, got {}", self.segment_bytes_max));
        }
        if self.custom_kinds.len() > CUSTOM_KINDS_MAX {
            return bad(format!("at most {CUSTOM_KINDS_MAX} custom kinds"));
        }
        for name in &self.custom_kinds {
            let builtin = !matches!(SignalKind::from_name(name), SignalKind::Custom(_));
            if name.is_empty() || name.len() > KIND_NAME_BYTES_MAX || builtin {
                return bad(format!(
                    "custom kind `{name}` must be 1..={KIND_NAME_BYTES_MAX} bytes and not a built-in kind"
                ));
            }
        }
        if self.group_signals_max == 0 || self.write_queue_max == 0 {
            return bad("group_signals_max and write_queue_max must be positive".into());
        }
        if self.snapshot_copy_slice_entries == 0 {
            return bad("snapshot_copy_slice_entries must be positive".into());
        }
        if let Some(limits) = self.state_limits
            && (limits.idempotency_keys_max == 0 || limits.user_sessions_max == 0)
        {
            return bad("idempotency_keys_max and user_sessions_max must be positive".into());
        }
        if self.score_half_life_ms == Some(0) {
            return bad("score_half_life_ms must be positive".into());
        }
        if self.score_weights.0.iter().any(|w| !w.is_finite()) {
            return bad("score_weights must be finite".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_bound_is_refused_naming_the_option() {
        assert!(Options::default().validate().is_ok());
        let cases = [
            ("snapshot_copy_slice_entries", Options { snapshot_copy_slice_entries: 0, ..Options::default() }),
            ("group_signals_max", Options { group_signals_max: 0, ..Options::default() }),
            ("segment_bytes_max", Options { segment_bytes_max: 10, ..Options::default() }),
        ];
        for (name, options) in cases {
            match options.validate() {
                Err(Error::InvalidOptions(message)) => assert!(message.contains(name), "{message}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
