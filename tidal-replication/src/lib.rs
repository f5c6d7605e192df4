//! Tidal's replication (DESIGN.md section 8; the protocol is described in
//! `docs/replication.md`):
//!
//! - [`log`]: positions in a shard's log, epoch histories and where two logs stop agreeing;
//! - [`protocol`]: the WAL-shipping protocol as pure state machines (events in, actions out):
//!   the leader (recovery, per-follower shipping window, quorum commit), the follower
//!   (epoch checks, raw appends, duplicates skipped, divergent tails set aside) and the
//!   node's role per shard ([`protocol::replica::Replica`]);
//! - [`sim`]: the seeded deterministic simulation of three replicas over the real WAL
//!   writer, shard engine and power-cut disk images, with its exactly-once checker;
//! - [`transport`]: framed messages between [`transport::NodeId`]s: the seeded in-process
//!   [`transport::sim::SimNetwork`], in-process channels for tests of real threads, and
//!   [`transport::tcp::TcpTransport`] between processes (checksummed frames, an HMAC-SHA256
//!   challenge/response handshake on a shared secret, reconnects, bounded queues);
//! - [`node`]: the runtime of one node: every hosted shard's machine driven against a real
//!   [`tidal::Db`] over a transport, with durable epoch records and a status;
//! - [`cluster`]: the static cluster file (nodes, addresses, placement, secret).
//!
//! A follower behind what the leader's log still holds is caught up by a snapshot install
//! (`protocol::leader`'s install module, `node`'s staging). Still to come (later issues): the
//! `ControlPlane` on openraft (failure detection, automatic failover), reconciliation of
//! set-aside tails and the rolling-upgrade coordinator.

pub mod cluster;
pub mod log;
pub mod node;
pub mod protocol;
pub mod sim;
pub mod transport;
