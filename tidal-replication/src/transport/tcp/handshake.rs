//! The handshake: who is on the other end of a new connection, and can it prove it.
//!
//! Both sides exchange a hello, then each proves it knows the cluster's shared secret. The
//! dialer (D) opened the connection; the acceptor (A) accepted it:
//!
//! ```text
//! D -> A  hello(D, nonce_d)     A checks magic, version, cluster id, D in its peer set, D != A
//! A -> D  hello(A, nonce_a)     D checks the same, and that A is the node it dialed
//! D -> A  proof(mac_d)          A checks mac_d = HMAC(secret, transcript(DIAL))
//! A -> D  proof(mac_a)          D checks mac_a = HMAC(secret, transcript(ACCEPT))
//! ```
//!
//! Every step is one frame ([`super::frame`]) with a small body limit
//! ([`HANDSHAKE_FRAME_BYTES_MAX`]), so an unauthenticated peer can make us buffer only a few
//! hundred bytes. Hello body:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TDLH` |
//! | 4 | 2 | protocol version, `u16` LE |
//! | 6 | 4 | node id, `u32` LE |
//! | 10 | 32 | nonce (random) |
//! | 42 | 1 | cluster id length `n`, 1..=[`CLUSTER_ID_BYTES_MAX`] |
//! | 43 | n | cluster id, UTF-8 |
//!
//! Proof body: magic `TDLP` then the 32-byte HMAC-SHA256. The MAC covers (see [`proof_mac`])
//! a label, the direction, the protocol version, the cluster id, the dialer's and the
//! acceptor's node ids and both nonces. So the secret never travels, a proof recorded from one
//! handshake fails in any other (the verifier's nonce is new each time), and an acceptor's
//! proof cannot be reflected as a dialer's (the direction differs).
//!
//! Invariant: a connection carries data only after [`dial`] or [`accept`] returned `Ok`. What
//! the handshake does not do: encrypt or authenticate the frames after it. Someone who can
//! rewrite packets in flight can still hijack an authenticated connection; run the cluster on
//! a trusted network (or add TLS below this transport).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::frame::{FrameDecoder, encode_frame};
use crate::transport::NodeId;

/// The wire protocol of this transport and of the replication messages it carries: it moves
/// with `protocol::message::PROTOCOL_VERSION` (a test pins them equal), so a peer speaking
/// another message set is refused at the handshake, not message by message. 2: snapshot
/// installs.
pub const PROTOCOL_VERSION: u16 = 2;

/// Longest cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 255;

/// Largest handshake frame body (a hello with the longest cluster id fits).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 512;

/// Bytes of a nonce and of a MAC.
pub const NONCE_BYTES: usize = 32;
pub const MAC_BYTES: usize = 32;

const HELLO_MAGIC: [u8; 4] = *b"TDLH";
const PROOF_MAGIC: [u8; 4] = *b"TDLP";
const HELLO_FIXED_BYTES: usize = 43;
const MAC_LABEL: &[u8] = b"tidal-tcp-handshake-v1";

/// Which side a proof speaks for; part of the MAC input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// The dialer's proof, checked by the acceptor.
    Dial = 1,
    /// The acceptor's proof, checked by the dialer.
    Accept = 2,
}

/// One side's hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub node: NodeId,
    pub nonce: [u8; NONCE_BYTES],
    pub cluster_id: String,
}

/// Why a handshake failed. Each reason is its own counter in `TransportStats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// A handshake frame or hello that does not parse (bad magic, length, CRC, UTF-8).
    Malformed,
    /// The peer speaks another protocol version.
    ProtocolVersion,
    /// The peer belongs to another cluster.
    ClusterId,
    /// The peer's node id is not in the configured peer set.
    UnknownNode,
    /// The peer claims to be this node.
    SelfNode,
    /// The node dialed answered with another node id.
    WrongNode,
    /// The peer's proof does not match: it does not know the secret, or replayed a proof.
    BadMac,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The peer closed the connection (or it failed) during the handshake.
    Closed,
    /// Too many handshakes at once: the connection was closed before reading anything.
    Busy,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 10] = [
        RefuseReason::Malformed,
        RefuseReason::ProtocolVersion,
        RefuseReason::ClusterId,
        RefuseReason::UnknownNode,
        RefuseReason::SelfNode,
        RefuseReason::WrongNode,
        RefuseReason::BadMac,
        RefuseReason::Timeout,
        RefuseReason::Closed,
        RefuseReason::Busy,
    ];

    /// A stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Malformed => "malformed",
            RefuseReason::ProtocolVersion => "protocol_version",
            RefuseReason::ClusterId => "cluster_id",
            RefuseReason::UnknownNode => "unknown_node",
            RefuseReason::SelfNode => "self_node",
            RefuseReason::WrongNode => "wrong_node",
            RefuseReason::BadMac => "bad_mac",
            RefuseReason::Timeout => "timeout",
            RefuseReason::Closed => "closed",
            RefuseReason::Busy => "busy",
        }
    }

    /// Position in [`RefuseReason::ALL`] (the counter index).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed handshake: the reason (counted) and what exactly was wrong (logged).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("handshake refused ({reason}): {detail}")]
pub struct Refusal {
    pub reason: RefuseReason,
    pub detail: String,
}

fn refuse(reason: RefuseReason, detail: impl Into<String>) -> Refusal {
    Refusal { reason, detail: detail.into() }
}

/// What this node knows for a handshake.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub local: NodeId,
    pub cluster_id: &'a str,
    pub secret: &'a [u8],
    pub peers: &'a BTreeMap<NodeId, std::net::SocketAddr>,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let id = self.cluster_id.as_bytes();
        let mut out = Vec::with_capacity(HELLO_FIXED_BYTES + id.len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        // Invariant: TcpConfig::validate keeps cluster ids within 1..=CLUSTER_ID_BYTES_MAX (255).
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Hello, Refusal> {
        let malformed = |what: &str| refuse(RefuseReason::Malformed, format!("hello: {what}"));
        if body.len() < HELLO_FIXED_BYTES {
            return Err(malformed("too short"));
        }
        if body[0..4] != HELLO_MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        let node = NodeId(u32::from_le_bytes([body[6], body[7], body[8], body[9]]));
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&body[10..42]);
        let id_len = usize::from(body[42]);
        if id_len == 0 || body.len() != HELLO_FIXED_BYTES + id_len {
            return Err(malformed("cluster id length does not match the body"));
        }
        let cluster_id = std::str::from_utf8(&body[HELLO_FIXED_BYTES..])
            .map_err(|_| malformed("cluster id is not UTF-8"))?
            .to_owned();
        Ok(Hello { version, node, nonce, cluster_id })
    }
}

/// The proof frame body for `mac`.
pub fn encode_proof(mac: &[u8; MAC_BYTES]) -> Vec<u8> {
    let mut out = PROOF_MAGIC.to_vec();
    out.extend_from_slice(mac);
    out
}

fn decode_proof(body: &[u8]) -> Result<&[u8], Refusal> {
    if body.len() != 4 + MAC_BYTES || body[0..4] != PROOF_MAGIC {
        return Err(refuse(RefuseReason::Malformed, "proof: bad magic or length"));
    }
    Ok(&body[4..])
}

fn mac_input(mac: &mut Hmac<Sha256>, direction: Direction, dialer: &Hello, acceptor: &Hello) {
    mac.update(MAC_LABEL);
    mac.update(&[direction as u8]);
    mac.update(&PROTOCOL_VERSION.to_le_bytes());
    // Both hellos carry the same cluster id by now (checked); length-prefixed so that no two
    // transcripts concatenate to the same bytes.
    mac.update(&(dialer.cluster_id.len() as u32).to_le_bytes());
    mac.update(dialer.cluster_id.as_bytes());
    mac.update(&dialer.node.0.to_le_bytes());
    mac.update(&acceptor.node.0.to_le_bytes());
    mac.update(&dialer.nonce);
    mac.update(&acceptor.nonce);
}

fn new_mac(secret: &[u8]) -> Hmac<Sha256> {
    // Invariant: HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// HMAC-SHA256 with `secret` over the transcript of one handshake, for one direction.
pub fn proof_mac(secret: &[u8], direction: Direction, dialer: &Hello, acceptor: &Hello) -> [u8; MAC_BYTES] {
    let mut mac = new_mac(secret);
    mac_input(&mut mac, direction, dialer, acceptor);
    mac.finalize().into_bytes().into()
}

fn verify_mac(secret: &[u8], direction: Direction, dialer: &Hello, acceptor: &Hello, got: &[u8]) -> bool {
    let mut mac = new_mac(secret);
    mac_input(&mut mac, direction, dialer, acceptor);
    // verify_slice compares in constant time.
    mac.verify_slice(got).is_ok()
}

/// A fresh random nonce from the operating system.
pub fn new_nonce() -> Result<[u8; NONCE_BYTES], getrandom::Error> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)?;
    Ok(nonce)
}

/// Checks the fields both sides check in the other's hello.
fn check_hello(identity: &Identity<'_>, hello: &Hello) -> Result<(), Refusal> {
    if hello.version != PROTOCOL_VERSION {
        return Err(refuse(
            RefuseReason::ProtocolVersion,
            format!("peer speaks version {}, we speak {PROTOCOL_VERSION}", hello.version),
        ));
    }
    if hello.cluster_id != identity.cluster_id {
        return Err(refuse(
            RefuseReason::ClusterId,
            format!("peer is in cluster {:?}, we are in {:?}", hello.cluster_id, identity.cluster_id),
        ));
    }
    if hello.node == identity.local {
        return Err(refuse(RefuseReason::SelfNode, format!("peer claims to be this node ({})", hello.node)));
    }
    Ok(())
}

/// Runs the dialer's side on a fresh connection to `expected`.
pub fn dial(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    identity: &Identity<'_>,
    expected: NodeId,
    nonce: [u8; NONCE_BYTES],
    timeout: Duration,
) -> Result<(), Refusal> {
    let deadline = Instant::now() + timeout;
    let ours = Hello {
        version: PROTOCOL_VERSION,
        node: identity.local,
        nonce,
        cluster_id: identity.cluster_id.into(),
    };
    write_frame(stream, &ours.encode(), deadline)?;
    let theirs = Hello::decode(&read_frame(stream, decoder, deadline)?)?;
    check_hello(identity, &theirs)?;
    if theirs.node != expected {
        return Err(refuse(RefuseReason::WrongNode, format!("dialed {expected}, {} answered", theirs.node)));
    }
    write_frame(
        stream,
        &encode_proof(&proof_mac(identity.secret, Direction::Dial, &ours, &theirs)),
        deadline,
    )?;
    let body = read_frame(stream, decoder, deadline)?;
    if !verify_mac(identity.secret, Direction::Accept, &ours, &theirs, decode_proof(&body)?) {
        return Err(refuse(RefuseReason::BadMac, format!("{expected} does not prove the secret")));
    }
    Ok(())
}

/// Runs the acceptor's side on a fresh inbound connection; returns the authenticated peer.
pub fn accept(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    identity: &Identity<'_>,
    nonce: [u8; NONCE_BYTES],
    timeout: Duration,
) -> Result<NodeId, Refusal> {
    let deadline = Instant::now() + timeout;
    let theirs = Hello::decode(&read_frame(stream, decoder, deadline)?)?;
    check_hello(identity, &theirs)?;
    if !identity.peers.contains_key(&theirs.node) {
        return Err(refuse(RefuseReason::UnknownNode, format!("{} is not a configured peer", theirs.node)));
    }
    let ours = Hello {
        version: PROTOCOL_VERSION,
        node: identity.local,
        nonce,
        cluster_id: identity.cluster_id.into(),
    };
    write_frame(stream, &ours.encode(), deadline)?;
    let body = read_frame(stream, decoder, deadline)?;
    if !verify_mac(identity.secret, Direction::Dial, &theirs, &ours, decode_proof(&body)?) {
        return Err(refuse(RefuseReason::BadMac, format!("{} does not prove the secret", theirs.node)));
    }
    write_frame(
        stream,
        &encode_proof(&proof_mac(identity.secret, Direction::Accept, &theirs, &ours)),
        deadline,
    )?;
    Ok(theirs.node)
}

fn remaining(deadline: Instant) -> Result<Duration, Refusal> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(refuse(RefuseReason::Timeout, "handshake timed out"));
    }
    Ok(left)
}

fn io_refusal(e: io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            refuse(RefuseReason::Timeout, "handshake timed out")
        }
        _ => refuse(RefuseReason::Closed, format!("connection failed during the handshake: {e}")),
    }
}

fn write_frame(stream: &mut TcpStream, body: &[u8], deadline: Instant) -> Result<(), Refusal> {
    stream.set_write_timeout(Some(remaining(deadline)?)).map_err(io_refusal)?;
    let mut frame = Vec::new();
    encode_frame(body, &mut frame);
    stream.write_all(&frame).map_err(io_refusal)
}

fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    deadline: Instant,
) -> Result<Vec<u8>, Refusal> {
    loop {
        match decoder.next_frame() {
            Ok(Some(body)) => return Ok(body),
            Ok(None) => {}
            Err(e) => return Err(refuse(RefuseReason::Malformed, format!("handshake frame: {e}"))),
        }
        stream.set_read_timeout(Some(remaining(deadline)?)).map_err(io_refusal)?;
        match decoder.read_from(stream) {
            Ok(0) => {
                return Err(refuse(RefuseReason::Closed, "peer closed the connection during the handshake"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_refusal(e)),
        }
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
