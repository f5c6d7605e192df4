//! [`TcpTransport`]: the [`Transport`] between real processes, over TCP with std threads and
//! blocking sockets.
//!
//! This module owns the transport's configuration and its lifetime (start, threads,
//! shutdown); the wire format is in [`frame`] (frames) and [`handshake`] (the authenticated
//! greeting), the sending side in `peer`, the receiving side in `inbound`. The byte layouts
//! are also in `docs/replication.md`, "Transport (TCP)".
//!
//! **Connections.** Every node dials every peer, and uses that outbound connection only to
//! send; the connections its peers dial to it are used only to receive. So each pair of nodes
//! has two connections, one per direction, and there is no tie-break for simultaneous dials,
//! no shared socket state between a sender and a receiver, and a failed direction heals on its
//! own. Each connection starts with the handshake; the acceptor never sends anything after it.
//!
//! **Threads.** One per peer (dial, handshake, write its queue), one accept loop, one per
//! inbound connection (handshake, read, deliver). [`TcpTransport::shutdown`] (or drop) stops
//! and joins all of them: it closes the queues, shuts every socket down (which wakes blocked
//! reads and writes) and wakes the accept loop with a connection of its own.
//!
//! **Invariants.**
//! - No message from a peer that did not complete the handshake is ever delivered; every
//!   delivered message names the authenticated sender.
//! - Memory is bounded: per peer at most `queue_max` messages and `queue_bytes_max` bytes
//!   queued ([`SendError::Full`] beyond: backpressure); at most `receive_queue_max` messages
//!   waiting for the runtime; one frame buffered per connection, at most [`FRAME_BYTES_MAX`]
//!   plus a read chunk, and only a few hundred bytes before authentication.
//! - A message to this node itself is delivered through its own channel, without a socket
//!   (as in the simulated network).
//! - Delivery is what a network gives: a message may be lost when a connection breaks (never
//!   duplicated or reordered on one connection, but the protocol must not rely on that).

pub mod frame;
pub mod handshake;
mod inbound;
mod peer;
mod shared;
pub mod stats;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::warn;

pub use frame::FRAME_BYTES_MAX;
pub use handshake::{PROTOCOL_VERSION, RefuseReason};
pub use inbound::{Delivery, HANDSHAKES_MAX, inbound_connections_max};
pub use stats::{PeerStats, TransportStats};

use self::handshake::{CLUSTER_ID_BYTES_MAX, Identity};
use self::peer::{Outbox, Refused};
use self::shared::Shared;
use super::{NodeId, SendError, Transport};

/// Default messages queued per peer.
pub const QUEUE_MAX_DEFAULT: usize = 4096;
/// Default bytes queued per peer.
pub const QUEUE_BYTES_MAX_DEFAULT: usize = 256 << 20;
/// Default messages received and not yet taken by the runtime.
pub const RECEIVE_QUEUE_MAX_DEFAULT: usize = 4096;
pub const CONNECT_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(50);
pub const CONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Shortest shared secret accepted.
pub const SECRET_BYTES_MIN: usize = 16;

/// How a [`TcpTransport`] runs.
#[derive(Clone)]
pub struct TcpConfig {
    pub local: NodeId,
    /// Where to listen; port 0 picks a free port ([`TcpTransport::local_addr`] tells which).
    pub listen: SocketAddr,
    /// Every other node of the cluster and where it listens (not this node).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// 1..=255 bytes; nodes of another cluster are refused.
    pub cluster_id: String,
    /// The shared secret peers prove they know; at least [`SECRET_BYTES_MIN`] bytes.
    pub secret: Vec<u8>,
    /// Messages queued per peer before `send` answers `Full`.
    pub queue_max: usize,
    /// Bytes queued per peer before `send` answers `Full`.
    pub queue_bytes_max: usize,
    /// Messages received and waiting for the runtime; when full, receiving stops.
    pub receive_queue_max: usize,
    pub connect_backoff_min: Duration,
    pub connect_backoff_max: Duration,
    /// Time a dial has to connect, and then the handshake (either side) to complete.
    pub handshake_timeout: Duration,
}

impl TcpConfig {
    /// A configuration with the default limits.
    pub fn new(
        local: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        cluster_id: impl Into<String>,
        secret: impl Into<Vec<u8>>,
    ) -> TcpConfig {
        TcpConfig {
            local,
            listen,
            peers,
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            queue_max: QUEUE_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            receive_queue_max: RECEIVE_QUEUE_MAX_DEFAULT,
            connect_backoff_min: CONNECT_BACKOFF_MIN_DEFAULT,
            connect_backoff_max: CONNECT_BACKOFF_MAX_DEFAULT,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<(), TcpError> {
        let invalid = |field: &'static str, reason: String| Err(TcpError::Config { field, reason });
        if self.peers.contains_key(&self.local) {
            return invalid("peers", format!("lists this node ({}) itself", self.local));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return invalid("cluster_id", format!("must have 1..={CLUSTER_ID_BYTES_MAX} bytes"));
        }
        if self.secret.len() < SECRET_BYTES_MIN {
            return invalid("secret", format!("must have at least {SECRET_BYTES_MIN} bytes"));
        }
        let bounds = [
            ("queue_max", self.queue_max),
            ("queue_bytes_max", self.queue_bytes_max),
            ("receive_queue_max", self.receive_queue_max),
        ];
        if let Some((field, _)) = bounds.iter().find(|(_, bound)| *bound == 0) {
            return invalid(field, "must be at least 1".into());
        }
        if self.connect_backoff_min.is_zero() || self.connect_backoff_min > self.connect_backoff_max {
            return invalid("connect_backoff_min", "must be positive and at most connect_backoff_max".into());
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout", "must be positive".into());
        }
        Ok(())
    }

    fn identity(&self) -> Identity<'_> {
        Identity { local: self.local, cluster_id: &self.cluster_id, secret: &self.secret, peers: &self.peers }
    }
}

/// Everything but the secret, which must not reach logs.
impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("local", &self.local)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("cluster_id", &self.cluster_id)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("queue_max", &self.queue_max)
            .field("queue_bytes_max", &self.queue_bytes_max)
            .field("receive_queue_max", &self.receive_queue_max)
            .field("connect_backoff_min", &self.connect_backoff_min)
            .field("connect_backoff_max", &self.connect_backoff_max)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    #[error("invalid TCP transport config: {field} {reason}")]
    Config { field: &'static str, reason: String },
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("start a transport thread: {0}")]
    Spawn(std::io::Error),
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
}

/// A running TCP transport; see the module docs.
#[derive(Debug)]
pub struct TcpTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    outboxes: BTreeMap<NodeId, Arc<Outbox>>,
    /// For messages to this node itself, delivered without a socket; `None` once shut down.
    loopback: Option<SyncSender<Delivery>>,
    threads: Vec<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
}

impl TcpTransport {
    /// Binds `config.listen`, starts the threads and dials every peer. Messages from peers
    /// arrive on the returned receiver as `(from, message)`.
    pub fn start(config: TcpConfig) -> Result<(TcpTransport, Receiver<Delivery>), TcpError> {
        config.validate()?;
        handshake::new_nonce().map_err(TcpError::Random)?;
        let listener = TcpListener::bind(config.listen)
            .map_err(|source| TcpError::Listen { addr: config.listen, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| TcpError::Listen { addr: config.listen, source })?;
        let (deliver, receiver) = mpsc::sync_channel(config.receive_queue_max);
        let peers = config.peers.clone();
        let local = config.local;
        let shared = Arc::new(Shared::new(config));
        let mut transport = TcpTransport {
            shared: Arc::clone(&shared),
            local_addr,
            outboxes: BTreeMap::new(),
            loopback: Some(deliver.clone()),
            threads: Vec::new(),
            listener: None,
        };
        let listening = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("tidal-tcp-accept-{}", local.0))
            .spawn(move || inbound::run_listener(listening, listener, deliver));
        // On an error below, dropping `transport` stops and joins what was started.
        transport.listener = Some(spawned.map_err(TcpError::Spawn)?);
        for (peer, addr) in peers {
            let outbox = Arc::new(Outbox::default());
            let (shared, queue) = (Arc::clone(&shared), Arc::clone(&outbox));
            let handle = thread::Builder::new()
                .name(format!("tidal-tcp-{}-to-{}", local.0, peer.0))
                .spawn(move || peer::run_peer(&shared, peer, addr, &queue))
                .map_err(TcpError::Spawn)?;
            transport.outboxes.insert(peer, outbox);
            transport.threads.push(handle);
        }
        Ok((transport, receiver))
    }

    /// The address the transport listens on (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// A handle that reads the counters after the transport moved elsewhere (into a runtime).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared))
    }

    /// Stops every thread and closes every connection; messages still queued are dropped.
    /// Idempotent; drop calls it.
    pub fn shutdown(&mut self) {
        self.shared.stop();
        self.loopback = None;
        for outbox in self.outboxes.values() {
            outbox.close();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let Some(listener) = self.listener.take() else { return };
        // The accept loop is blocked in accept(): a connection of our own wakes it, and it
        // sees the stop flag. Without a wake-up it cannot be joined, so it is left to end
        // with the process rather than hang the caller.
        match TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1)) {
            Ok(_) => {
                let _ = listener.join();
            }
            Err(e) => {
                warn!(addr = %self.local_addr, error = %e, "could not wake the accept loop; not joining it")
            }
        }
    }
}

/// Reads a transport's counters from anywhere (see [`TcpTransport::stats_handle`]).
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    pub fn stats(&self) -> TransportStats {
        self.0.counters.snapshot()
    }
}

/// Where to connect to reach our own listener (an unspecified address means loopback).
fn wake_addr(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    addr
}

impl Transport for TcpTransport {
    fn local(&self) -> NodeId {
        self.shared.config.local
    }

    fn send(&mut self, to: NodeId, message: Vec<u8>) -> Result<(), SendError> {
        let local = self.shared.config.local;
        if message.len() > FRAME_BYTES_MAX {
            return Err(SendError::TooLarge { len: message.len(), max: FRAME_BYTES_MAX });
        }
        if to == local {
            return self.send_to_self(message);
        }
        let Some(outbox) = self.outboxes.get(&to) else { return Err(SendError::UnknownPeer(to)) };
        let config = &self.shared.config;
        match outbox.push(message, config.queue_max, config.queue_bytes_max) {
            Ok(()) => Ok(()),
            Err(Refused::Full) => {
                stats::bump(&self.shared.counters.peer(to).sends_full, 1);
                Err(SendError::Full(to))
            }
            Err(Refused::Closed) => Err(SendError::Down(local)),
        }
    }
}

impl TcpTransport {
    /// A message to this node goes straight into its own delivery channel, as the simulated
    /// network delivers a node's messages to itself.
    fn send_to_self(&mut self, message: Vec<u8>) -> Result<(), SendError> {
        let local = self.shared.config.local;
        let Some(loopback) = &self.loopback else { return Err(SendError::Down(local)) };
        match loopback.try_send((local, message)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Full(local)),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Down(local)),
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
