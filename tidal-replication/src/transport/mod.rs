//! Transports: how a node's protocol runtime sends framed messages to another node.
//!
//! A message is opaque bytes to the transport (the protocol encodes and checks them); the
//! transport only promises what a network promises: a message sent may arrive once, late,
//! twice, out of order, or never. Sends never block and never buffer without bound: a full
//! queue is [`SendError::Full`] (backpressure; the sender retries later or drops).

pub mod channel;
pub mod rng;
pub mod sim;
pub mod tcp;

/// Largest message a transport carries: room for a 64 MiB payload plus the protocol's
/// envelope. The simulated network and TCP share it, so a protocol tested in simulation
/// meets the same limit in production.
pub const MESSAGE_BYTES_MAX: usize = (64 << 20) + (64 << 10);

/// A node of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Why a message was not accepted for sending. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The queue towards this peer is full: back off.
    #[error("send queue to {0} is full")]
    Full(NodeId),
    /// The peer is not part of this network.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The message is larger than the transport's frame limit.
    #[error("message of {len} bytes exceeds the frame limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The sending node is down (crashed in a simulation, shut down for real).
    #[error("node {0} is down")]
    Down(NodeId),
}

/// Sends framed messages from one node to its peers.
pub trait Transport: Send {
    /// This node.
    fn local(&self) -> NodeId;
    /// Queues `message` for `to`; returns at once. Delivery is not guaranteed.
    fn send(&mut self, to: NodeId, message: Vec<u8>) -> Result<(), SendError>;
}
