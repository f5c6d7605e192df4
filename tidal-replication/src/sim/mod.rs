//! The deterministic simulation of one shard with three replicas.
//!
//! One seed drives everything: the network's faults (drops, duplicates, reordering, delays,
//! one-way and two-way partitions), crashes with power-cut disk images ([`SimVfs`] crash
//! images under a random torn-write policy) and restarts, leader restarts, explicit
//! promotions, clock skew between the nodes, and the client's writes. The replicas run the
//! real protocol machines over the real WAL writer and shard engine. After the faults stop
//! and the network heals, the run waits for the replicas to converge and then checks:
//!
//! - every write a leader acknowledged (quorum commit) is applied exactly once on every
//!   replica;
//! - no signal is applied twice anywhere, and no replica ever applied a batch twice or out
//!   of order (the runtime asserts it on every apply);
//! - the replicas' logs are byte for byte the same and their state digests are equal.
//!
//! A failing seed is printed with the command that replays it:
//! `SIM_SEED=<seed> cargo test -p tidal-replication --test sim -- --nocapture`.
//!
//! [`SimVfs`]: tidal::wal::sim_vfs::SimVfs

mod checks;
mod cluster;
mod faults;
mod node;

pub use cluster::{SimConfig, SimFailure, SimReport, run};
