//! Tidal's replication (DESIGN.md section 8), built in the order the issues give:
//!
//! - [`transport`]: framed messages between [`transport::NodeId`]s. The [`transport::Transport`]
//!   trait is what protocol runtimes send through; [`transport::sim::SimNetwork`] is the
//!   seeded in-process network the deterministic simulations drive (delays, drops,
//!   duplicates, reordering, one-way partitions, crashed nodes), where one seed replays one
//!   run exactly. [`transport::tcp::TcpTransport`] carries the same messages between real
//!   processes: checksummed frames, an HMAC-SHA256 challenge/response handshake on a shared
//!   secret (protocol version, cluster id and node id checked; unauthenticated peers are
//!   never served), reconnects with backoff and jitter, bounded queues and counters.
//!
//! Still to come, each in its own module: the leader's `WalShipper`
//! (`shipper.rs`), `FollowerDb` and `NodeRole` (`follower.rs`), the cluster configuration, the
//! `ControlPlane` on openraft, reconciliation and the rolling-upgrade coordinator. Protocol
//! logic stays pure (events in, actions out); the shard engine it applies batches with is
//! `tidal::shard::engine`.

pub mod cluster;
pub mod log;
pub mod node;
pub mod protocol;
pub mod sim;
pub mod transport;
