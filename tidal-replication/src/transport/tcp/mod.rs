//! The TCP transport's wire format: [`frame`] cuts a byte stream into checksummed frames,
//! [`handshake`] authenticates the node on the other end of a new connection. The byte maps
//! are also in `docs/replication.md`, "Transport (TCP)". The transport that runs them on
//! sockets comes next.

pub mod frame;
pub mod handshake;

pub use frame::FRAME_BYTES_MAX;
pub use handshake::{PROTOCOL_VERSION, RefuseReason};
