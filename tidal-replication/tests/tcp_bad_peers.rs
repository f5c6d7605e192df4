//! Bad peers against a real TCP transport: raw clients that get the handshake wrong, or send
//! a corrupt frame after a good one. Each is refused and counted under its reason, nothing of
//! theirs is delivered, and the transport keeps serving a good peer afterwards.

mod tcp_support;

use std::net::SocketAddr;
use std::time::Duration;

use tcp_support::*;
use tidal_replication::transport::tcp::RefuseReason;
use tidal_replication::transport::tcp::frame::FRAME_BYTES_MAX;
use tidal_replication::transport::tcp::handshake::{Direction, Hello, NONCE_BYTES, encode_proof, proof_mac};
use tidal_replication::transport::tcp::inbound_connections_max;
use tidal_replication::transport::{NodeId, Transport};

/// Node 1 (under test) and node 3 (a good peer); node 2 is configured but played by the raw
/// clients. `handshake_timeout` is short so the timeout case is quick.
struct Fixture {
    one: Node,
    three: Node,
    addr: SocketAddr,
}

impl Fixture {
    fn new() -> Fixture {
        let addrs = [reserve_addr(), reserve_addr(), reserve_addr()];
        let mut config_one = config(1, &addrs);
        config_one.handshake_timeout = Duration::from_millis(300);
        let one = start(config_one);
        let three = start(config(3, &addrs));
        Fixture { addr: one.transport.local_addr(), one, three }
    }

    fn refused(&self, reason: RefuseReason) -> u64 {
        self.one.transport.stats().refused(reason)
    }

    /// Waits until `reason` was counted `n` times, and checks that no other reason was.
    fn expect_refused(&self, reason: RefuseReason, n: u64) {
        wait_for(reason.as_str(), || self.refused(reason) == n);
        let stats = self.one.transport.stats();
        let others: u64 = stats.refused.iter().filter(|(r, _)| **r != reason).map(|(_, n)| n).sum();
        assert_eq!(others, 0, "{stats:?}");
    }

    /// The good peer still gets through, and the only deliveries ever made are `expected`
    /// (node 2's authenticated frames) followed by the good peer's message.
    fn assert_still_serving(mut self, expected: &[&[u8]]) {
        self.three.transport.send(NodeId(1), b"good".to_vec()).unwrap();
        let mut got = Vec::new();
        loop {
            let delivery = recv(&self.one.inbox);
            if delivery.0 == NodeId(3) {
                assert_eq!(delivery.1, b"good");
                break;
            }
            got.push(delivery);
        }
        let expected: Vec<(NodeId, Vec<u8>)> = expected.iter().map(|m| (NodeId(2), m.to_vec())).collect();
        assert_eq!(got, expected, "only authenticated frames are delivered");
    }
}

/// Sends `hello`, then a data frame a careless transport might deliver; expects a hang-up.
fn send_bad_hello(fixture: &Fixture, hello: Hello) {
    let mut raw = RawPeer::connect(fixture.addr);
    raw.write_frame(&hello.encode());
    raw.write_frame(b"must not be delivered");
    assert!(raw.closed_by_transport(), "a refused peer is hung up on");
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let fixture = Fixture::new();
    send_bad_hello(&fixture, Hello { version: 99, ..hello(2, CLUSTER, [1; NONCE_BYTES]) });
    fixture.expect_refused(RefuseReason::ProtocolVersion, 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn a_wrong_cluster_id_is_refused() {
    let fixture = Fixture::new();
    send_bad_hello(&fixture, hello(2, "another-cluster", [1; NONCE_BYTES]));
    fixture.expect_refused(RefuseReason::ClusterId, 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn unknown_node_ids_and_our_own_are_refused() {
    let fixture = Fixture::new();
    send_bad_hello(&fixture, hello(99, CLUSTER, [1; NONCE_BYTES]));
    fixture.expect_refused(RefuseReason::UnknownNode, 1);
    send_bad_hello(&fixture, hello(1, CLUSTER, [1; NONCE_BYTES]));
    wait_for("self_node", || fixture.refused(RefuseReason::SelfNode) == 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn garbage_instead_of_a_hello_is_refused_as_malformed() {
    let fixture = Fixture::new();
    let mut raw = RawPeer::connect(fixture.addr);
    raw.write_frame(b"GET / HTTP/1.1\r\n\r\n");
    assert!(raw.closed_by_transport());
    fixture.expect_refused(RefuseReason::Malformed, 1);
    // A handshake frame longer than the handshake limit: refused before the body is read.
    let mut raw = RawPeer::connect(fixture.addr);
    raw.write_raw(&(FRAME_BYTES_MAX as u32).to_le_bytes());
    raw.write_raw(&[0; 4]);
    assert!(raw.closed_by_transport());
    fixture.expect_refused(RefuseReason::Malformed, 2);
    fixture.assert_still_serving(&[]);
}

#[test]
fn a_wrong_secret_is_a_bad_mac() {
    let fixture = Fixture::new();
    let (mut raw, _, _) = raw_handshake(fixture.addr, 2, b"not the cluster's secret");
    raw.write_frame(b"must not be delivered");
    assert!(raw.closed_by_transport(), "no proof comes back, the connection is closed");
    fixture.expect_refused(RefuseReason::BadMac, 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn a_replayed_handshake_is_a_bad_mac() {
    let fixture = Fixture::new();
    // Record a genuine dialer's hello and proof...
    let (mut first, ours, theirs) = raw_handshake(fixture.addr, 2, SECRET);
    let recorded = encode_proof(&proof_mac(SECRET, Direction::Dial, &ours, &theirs));
    assert!(first.read_frame().is_some(), "the genuine handshake succeeds");
    drop(first);
    // ...and replay them on a new connection: the acceptor's nonce is new, the proof stale.
    let mut replay = RawPeer::connect(fixture.addr);
    replay.write_frame(&ours.encode());
    let fresh = Hello::decode(&replay.read_frame().unwrap()).unwrap();
    assert_ne!(fresh.nonce, theirs.nonce, "a nonce is never reused");
    replay.write_frame(&recorded);
    replay.write_frame(b"must not be delivered");
    assert!(replay.closed_by_transport());
    fixture.expect_refused(RefuseReason::BadMac, 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn a_silent_peer_times_out() {
    let fixture = Fixture::new();
    let mut raw = RawPeer::connect(fixture.addr);
    assert!(raw.closed_by_transport(), "hung up on after the handshake timeout");
    fixture.expect_refused(RefuseReason::Timeout, 1);
    fixture.assert_still_serving(&[]);
}

#[test]
fn a_corrupt_frame_after_a_valid_handshake_closes_the_connection() {
    let fixture = Fixture::new();
    let (mut raw, _, _) = raw_handshake(fixture.addr, 2, SECRET);
    assert!(raw.read_frame().is_some(), "the acceptor's proof");
    raw.write_frame(b"before");
    let mut corrupt = Vec::new();
    tidal_replication::transport::tcp::frame::encode_frame(b"flipped", &mut corrupt);
    corrupt[9] ^= 0x01;
    raw.write_raw(&corrupt);
    raw.write_frame(b"after the corruption");
    assert!(raw.closed_by_transport());
    wait_for("the corrupt frame to be counted", || fixture.one.transport.stats().frames_corrupt() == 1);
    let stats = fixture.one.transport.stats();
    assert_eq!(stats.peer(NodeId(2)).frames_corrupt, 1);
    assert_eq!(stats.refused.values().sum::<u64>(), 0, "the handshake itself was fine");

    // An oversize length from an authenticated peer is corruption too.
    let (mut raw, _, _) = raw_handshake(fixture.addr, 2, SECRET);
    assert!(raw.read_frame().is_some());
    raw.write_raw(&(FRAME_BYTES_MAX as u32 + 1).to_le_bytes());
    raw.write_raw(&[0; 4]);
    assert!(raw.closed_by_transport());
    wait_for("the oversize frame to be counted", || fixture.one.transport.stats().frames_corrupt() == 2);
    fixture.assert_still_serving(&[b"before"]);
}

#[test]
fn connections_beyond_the_limit_are_refused_as_busy() {
    let fixture = Fixture::new();
    // Node 1 has two peers.
    let limit = inbound_connections_max(2);
    // Node 3 holds one of them; silent raw clients take the rest and wait out the handshake
    // timeout (300 ms), so the one after them finds every slot taken.
    wait_for("node 3's connection", || fixture.one.transport.stats().peer(NodeId(3)).connects_in == 1);
    let silent: Vec<RawPeer> = (1..limit).map(|_| RawPeer::connect(fixture.addr)).collect();
    let mut extra = RawPeer::connect(fixture.addr);
    assert!(extra.closed_by_transport());
    assert_eq!(fixture.refused(RefuseReason::Busy), 1);
    drop(silent);
    wait_for("the silent clients' timeouts", || {
        fixture.refused(RefuseReason::Timeout) + fixture.refused(RefuseReason::Closed) == limit as u64 - 1
    });
    fixture.assert_still_serving(&[]);
}
