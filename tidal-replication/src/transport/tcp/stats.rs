//! Counters of the TCP transport, for metrics.
//!
//! The threads of a transport bump atomic counters (`Counters`);
//! [`TcpTransport::stats`](super::TcpTransport::stats) copies them into a plain
//! [`TransportStats`]. Counters only grow. Per-peer counters exist for configured peers only: bytes from an unauthenticated
//! connection are never attributed to a node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::handshake::RefuseReason;
use crate::transport::NodeId;

/// What happened between this node and one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Data frames written to the peer's socket, and their body bytes.
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// Data frames received from the peer and delivered, and their body bytes.
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Dials that failed before a handshake began (refused, unreachable, connect timeout).
    pub connect_failures: u64,
    /// Authenticated connections we dialed, and how many of them were lost.
    pub connects_out: u64,
    pub disconnects_out: u64,
    /// Authenticated connections the peer dialed, and how many of them ended.
    pub connects_in: u64,
    pub disconnects_in: u64,
    /// Sends refused with `SendError::Full`.
    pub sends_full: u64,
    /// Messages taken from the queue but lost with a broken connection, or dropped as stale
    /// when a connection was made (queued longer than 5 s before).
    pub messages_lost: u64,
    /// Frames from this (authenticated) peer with a bad length or CRC; each closed its connection.
    pub frames_corrupt: u64,
}

/// A snapshot of a transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Handshakes refused, by reason (every reason present, zeros included), on either side.
    pub refused: BTreeMap<RefuseReason, u64>,
}

impl TransportStats {
    /// Handshakes refused for `reason`.
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused.get(&reason).copied().unwrap_or(0)
    }

    /// Corrupt frames from all peers.
    pub fn frames_corrupt(&self) -> u64 {
        self.peers.values().map(|p| p.frames_corrupt).sum()
    }

    /// Counters of one peer (zeros for an unknown one).
    pub fn peer(&self, node: NodeId) -> PeerStats {
        self.peers.get(&node).copied().unwrap_or_default()
    }
}

/// The live counters of one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub connect_failures: AtomicU64,
    pub connects_out: AtomicU64,
    pub disconnects_out: AtomicU64,
    pub connects_in: AtomicU64,
    pub disconnects_in: AtomicU64,
    pub sends_full: AtomicU64,
    pub messages_lost: AtomicU64,
    pub frames_corrupt: AtomicU64,
}

/// Adds `n` to a counter. Relaxed: counters order nothing, they are read for metrics only.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl PeerCounters {
    fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            connect_failures: get(&self.connect_failures),
            connects_out: get(&self.connects_out),
            disconnects_out: get(&self.disconnects_out),
            connects_in: get(&self.connects_in),
            disconnects_in: get(&self.disconnects_in),
            sends_full: get(&self.sends_full),
            messages_lost: get(&self.messages_lost),
            frames_corrupt: get(&self.frames_corrupt),
        }
    }
}

/// All live counters of a transport.
#[derive(Debug)]
pub(crate) struct Counters {
    pub peers: BTreeMap<NodeId, PeerCounters>,
    refused: [AtomicU64; RefuseReason::ALL.len()],
}

impl Counters {
    pub fn new(peers: impl IntoIterator<Item = NodeId>) -> Counters {
        Counters {
            peers: peers.into_iter().map(|n| (n, PeerCounters::default())).collect(),
            refused: Default::default(),
        }
    }

    /// The counters of a configured peer. Callers only pass configured peers (the handshake
    /// refuses others), so a miss is a bug; it is absorbed by a shared dummy rather than a panic.
    pub fn peer(&self, node: NodeId) -> &PeerCounters {
        static NONE: PeerCounters = PeerCounters {
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            connects_out: AtomicU64::new(0),
            disconnects_out: AtomicU64::new(0),
            connects_in: AtomicU64::new(0),
            disconnects_in: AtomicU64::new(0),
            sends_full: AtomicU64::new(0),
            messages_lost: AtomicU64::new(0),
            frames_corrupt: AtomicU64::new(0),
        };
        debug_assert!(self.peers.contains_key(&node), "counters asked for unconfigured {node}");
        self.peers.get(&node).unwrap_or(&NONE)
    }

    pub fn refused(&self, reason: RefuseReason) {
        bump(&self.refused[reason.index()], 1);
    }

    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            peers: self.peers.iter().map(|(n, c)| (*n, c.snapshot())).collect(),
            refused: RefuseReason::ALL
                .iter()
                .map(|r| (*r, self.refused[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}
