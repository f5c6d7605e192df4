//! Tidal: a store for user-feedback signals.
//!
//! Signals (clicks, likes, skips, dwell, ratings) are validated, routed to a shard by user
//! ([`shard::router::ShardRouter`]), stamped with a hybrid logical clock ([`hlc`]), appended
//! to the shard's write-ahead log with group commit ([`wal`]), and applied to CRDT state
//! ([`crdt`]) that every read sees the moment the write is acknowledged. Sessions' SeqNo
//! high-water marks and idempotency keys ([`session`]) make retries exactly-once, and both
//! are rebuilt from the WAL on recovery. Snapshots bound recovery time.
//!
//! ```no_run
//! use tidal::{Db, Options, Signal, SignalKind};
//! let db = Db::open("data", Options::default())?;
//! let ack = db.write(Signal::new("alice", "article-7", SignalKind::Like))?;
//! assert_eq!(db.item("article-7").unwrap().state.count(&SignalKind::Like), 1);
//! # Ok::<(), tidal::Error>(())
//! ```

pub mod crdt;
pub mod db;
pub mod error;
pub mod history;
pub mod hlc;
pub mod id_table;
pub mod intern;
pub mod manifest;
pub mod metrics;
pub mod options;
pub mod query;
pub mod ranking;
pub mod score;
pub mod session;
pub mod shard;
pub mod signal;
pub mod wal;

pub use db::{Db, PendingWrite, RecoveryReport, SnapshotFile};
pub use error::{Error, ErrorKind, Result};
pub use hlc::Hlc;
pub use options::{Durability, Options};
pub use session::Ack;
pub use signal::{Signal, SignalKind, SignalRef};
