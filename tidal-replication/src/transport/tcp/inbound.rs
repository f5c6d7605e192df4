//! The receiving side: the accept loop ([`run_listener`]) and one thread per inbound
//! connection that authenticates the dialer and delivers its frames ([`serve`]).
//!
//! Invariants:
//! - nothing read from a connection is delivered before [`handshake::accept`] returned the
//!   peer's node id, and every delivery names that peer;
//! - the handshake reads with a body limit of [`HANDSHAKE_FRAME_BYTES_MAX`]; only an
//!   authenticated connection may send frames up to [`FRAME_BYTES_MAX`];
//! - a bad length or CRC closes the connection (the stream is out of sync) and is counted;
//! - at most [`inbound_connections_max`] connections are served at once; more are closed at
//!   once and counted as refused (`busy`);
//! - deliveries go through the bounded channel: while it is full, the connection stops
//!   reading, so TCP pushes back on the sender, whose queue fills and answers `Full`.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::{debug, warn};

use super::frame::{FRAME_BYTES_MAX, FrameDecoder};
use super::handshake::{self, HANDSHAKE_FRAME_BYTES_MAX, RefuseReason};
use super::shared::Shared;
use super::stats::{PeerCounters, bump};
use crate::transport::NodeId;

/// Connections in handshake at once, on top of two per peer (its current connection and one
/// replacing it).
pub const HANDSHAKES_MAX: usize = 16;

/// How long to wait after `accept` failed (out of file descriptors, say) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Longest wait between two attempts to deliver into a full channel.
const DELIVER_RETRY_DELAY_MAX: Duration = Duration::from_millis(20);

/// What a receiving connection hands to the runtime: the authenticated sender and the message.
pub type Delivery = (NodeId, Vec<u8>);

/// Connections served at once.
pub fn inbound_connections_max(peers: usize) -> usize {
    2 * peers + HANDSHAKES_MAX
}

/// Accepts connections until the transport stops, then joins the connection threads.
pub(crate) fn run_listener(shared: Arc<Shared>, listener: TcpListener, deliver: SyncSender<Delivery>) {
    let limit = inbound_connections_max(shared.config.peers.len());
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    for incoming in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "accept failed");
                thread::sleep(ACCEPT_RETRY_DELAY);
                continue;
            }
        };
        connections.retain(|c| !c.is_finished());
        if connections.len() >= limit {
            shared.counters.refused(RefuseReason::Busy);
            warn!(limit, "too many inbound connections: closing a new one");
            continue;
        }
        let (shared, deliver) = (Arc::clone(&shared), deliver.clone());
        let spawned = thread::Builder::new()
            .name(format!("tidal-tcp-in-{}", shared.config.local.0))
            .spawn(move || serve(&shared, stream, &deliver));
        match spawned {
            Ok(handle) => connections.push(handle),
            Err(e) => warn!(error = %e, "could not spawn a connection thread"),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Serves one inbound connection: handshake, then frames until it closes or fails.
fn serve(shared: &Shared, mut stream: TcpStream, deliver: &SyncSender<Delivery>) {
    let Some(registered) = shared.register(&stream) else { return };
    let config = &shared.config;
    let nonce = match handshake::new_nonce() {
        Ok(nonce) => nonce,
        Err(e) => {
            warn!(error = %e, "no random nonce for a handshake");
            return;
        }
    };
    let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let peer = match handshake::accept(
        &mut stream,
        &mut decoder,
        &config.identity(),
        nonce,
        config.handshake_timeout,
    ) {
        Ok(peer) => peer,
        Err(refusal) => {
            shared.counters.refused(refusal.reason);
            let addr = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            warn!(%addr, reason = %refusal.reason, detail = %refusal.detail, "inbound handshake refused");
            return;
        }
    };
    if let Err(e) = stream.set_read_timeout(None).and_then(|()| stream.set_write_timeout(None)) {
        debug!(%peer, error = %e, "socket options");
        return;
    }
    shared.claim_inbound(peer, &registered);
    let counters = shared.counters.peer(peer);
    bump(&counters.connects_in, 1);
    decoder.set_body_bytes_max(FRAME_BYTES_MAX);
    receive(shared, peer, &mut stream, decoder, counters, deliver);
    bump(&counters.disconnects_in, 1);
}

/// Reads and delivers frames from an authenticated peer until the connection ends.
fn receive(
    shared: &Shared,
    peer: NodeId,
    stream: &mut TcpStream,
    mut decoder: FrameDecoder,
    counters: &PeerCounters,
    deliver: &SyncSender<Delivery>,
) {
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(message)) => {
                    let len = message.len() as u64;
                    if !deliver_one(shared, deliver, (peer, message)) {
                        return;
                    }
                    bump(&counters.frames_received, 1);
                    bump(&counters.bytes_received, len);
                }
                Ok(None) => break,
                Err(e) => {
                    bump(&counters.frames_corrupt, 1);
                    warn!(%peer, error = %e, "corrupt frame: closing the connection");
                    return;
                }
            }
        }
        match decoder.read_from(stream) {
            Ok(0) => {
                debug!(%peer, "peer closed its connection");
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(%peer, error = %e, "connection failed");
                return;
            }
        }
    }
}

/// Hands one message to the runtime, waiting while the channel is full; false if the
/// runtime dropped its receiver or the transport is stopping.
fn deliver_one(shared: &Shared, deliver: &SyncSender<Delivery>, mut delivery: Delivery) -> bool {
    // Polls rather than blocks: a blocked `send` could not notice a shutdown.
    let mut delay = Duration::from_millis(1);
    loop {
        match deliver.try_send(delivery) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if shared.stopping() {
                    return false;
                }
                delivery = back;
                thread::sleep(delay);
                delay = (delay * 2).min(DELIVER_RETRY_DELAY_MAX);
            }
        }
    }
}
