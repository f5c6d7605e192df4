//! Helpers shared by the TCP transport tests: loopback clusters, waiting on conditions, and a
//! raw client that speaks the wire format by hand (to play a bad peer).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tidal_replication::transport::NodeId;
use tidal_replication::transport::tcp::frame::{FrameDecoder, encode_frame};
use tidal_replication::transport::tcp::handshake::{
    Direction, HANDSHAKE_FRAME_BYTES_MAX, Hello, NONCE_BYTES, PROTOCOL_VERSION, encode_proof, proof_mac,
};
use tidal_replication::transport::tcp::{Delivery, TcpConfig, TcpTransport};

pub const CLUSTER: &str = "test-cluster";
pub const SECRET: &[u8] = b"the test cluster's shared secret";
/// Long enough for a loaded CI machine; conditions are polled, so a pass takes much less.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A free loopback address: bound to port 0, then released for a transport to bind.
pub fn reserve_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Node `local`'s config in a cluster where node `i + 1` listens on `addrs[i]`, with fast
/// reconnects for tests.
pub fn config(local: u32, addrs: &[SocketAddr]) -> TcpConfig {
    let peers: BTreeMap<NodeId, SocketAddr> = (1..=addrs.len() as u32)
        .filter(|n| *n != local)
        .map(|n| (NodeId(n), addrs[n as usize - 1]))
        .collect();
    let mut config = TcpConfig::new(NodeId(local), addrs[local as usize - 1], peers, CLUSTER, SECRET);
    config.connect_backoff_min = Duration::from_millis(5);
    config.connect_backoff_max = Duration::from_millis(100);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

pub struct Node {
    pub transport: TcpTransport,
    pub inbox: Receiver<Delivery>,
}

pub fn start(config: TcpConfig) -> Node {
    let (transport, inbox) = TcpTransport::start(config).unwrap();
    Node { transport, inbox }
}

/// `n` nodes on loopback, all peers of each other.
pub fn cluster(n: usize) -> (Vec<Node>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| reserve_addr()).collect();
    let nodes = (1..=n as u32).map(|local| start(config(local, &addrs))).collect();
    (nodes, addrs)
}

/// The next delivery, failing the test if none comes within [`PATIENCE`].
pub fn recv(inbox: &Receiver<Delivery>) -> Delivery {
    match inbox.recv_timeout(PATIENCE) {
        Ok(delivery) => delivery,
        Err(RecvTimeoutError::Timeout) => panic!("nothing delivered within {PATIENCE:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the transport stopped delivering"),
    }
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A hand-driven client connection: writes and reads frames of the wire format.
pub struct RawPeer {
    pub stream: TcpStream,
    decoder: FrameDecoder,
}

impl RawPeer {
    pub fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        RawPeer { stream, decoder: FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX) }
    }

    /// Writes raw bytes; errors are ignored (the transport may already have hung up).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn write_frame(&mut self, body: &[u8]) {
        let mut frame = Vec::new();
        encode_frame(body, &mut frame);
        self.write_raw(&frame);
    }

    /// The next frame, or `None` when the transport closed the connection.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(body) = self.decoder.next_frame().unwrap() {
                return Some(body);
            }
            match self.decoder.read_from(&mut self.stream) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// True once the transport closed the connection (reads see the end of the stream).
    pub fn closed_by_transport(&mut self) -> bool {
        self.read_frame().is_none()
    }
}

pub fn hello(node: u32, cluster: &str, nonce: [u8; NONCE_BYTES]) -> Hello {
    Hello { version: PROTOCOL_VERSION, node: NodeId(node), nonce, cluster_id: cluster.into() }
}

/// Dials `addr` as `node` and completes the handshake with `secret` by hand; returns the
/// connection, authenticated, and the two hellos (dialer's, acceptor's).
pub fn raw_handshake(addr: SocketAddr, node: u32, secret: &[u8]) -> (RawPeer, Hello, Hello) {
    let mut peer = RawPeer::connect(addr);
    let ours = hello(node, CLUSTER, [node as u8; NONCE_BYTES]);
    peer.write_frame(&ours.encode());
    let theirs = Hello::decode(&peer.read_frame().expect("the acceptor's hello")).unwrap();
    peer.write_frame(&encode_proof(&proof_mac(secret, Direction::Dial, &ours, &theirs)));
    (peer, ours, theirs)
}
