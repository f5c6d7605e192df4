//! The replication messages and their encoding.
//!
//! A message is `PROTOCOL_VERSION u16 LE | postcard(Message)`. Batches travel as the exact
//! bytes of the leader's WAL (header and payload, both CRCs inside), so a follower verifies
//! what it appends with the same checks recovery uses, and a bit flipped on the way is
//! refused, never applied. Decoding is total: any input gives a message or a
//! [`DecodeError`], never a panic (fuzzed: `tidal/fuzz`, target `decode_message`).

use serde::{Deserialize, Serialize};

use crate::log::LogPos;

/// Version of the message set; a peer speaking another one is refused at the handshake.
/// 2: snapshot installs (`SnapshotChunk`, `SnapshotAck`).
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest encoded message a peer accepts (bounds the memory one message may take).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a follower refused a leader's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The sender's epoch is older than one the follower already knows: a deposed leader.
    StaleEpoch,
    /// The follower does not hold the seq the append continues from.
    Gap,
    /// The follower's record at the append's previous seq has another epoch.
    Mismatch,
    /// A shipped batch failed its checks (CRC, framing, shard, seq, epoch).
    BadBatch,
    /// The follower does not host the shard.
    UnknownShard,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StaleEpoch => "stale_epoch",
            Refusal::Gap => "gap",
            Refusal::Mismatch => "mismatch",
            Refusal::BadBatch => "bad_batch",
            Refusal::UnknownShard => "unknown_shard",
        }
    }
}

/// One replication message. Every message names its shard and the sender's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Leader -> replica: "I lead `shard` in `epoch`; where does your log end?"
    Probe { shard: u32, epoch: u64 },
    /// Replica -> leader, the answer to a probe: its log's end, what of it is durable, and
    /// the epoch history of its log (`(epoch, first_seq)` pairs).
    Position { shard: u32, epoch: u64, end: LogPos, durable: u64, history: Vec<(u64, u64)> },
    /// Leader -> follower: raw WAL batches that continue the log after `prev`. `commit` is
    /// the leader's quorum-durable seq (what reads may rely on).
    Append { shard: u32, epoch: u64, prev: LogPos, batches: Vec<Vec<u8>>, commit: u64 },
    /// Follower -> leader: durable (fsynced) and applied through these seqs.
    Ack { shard: u32, epoch: u64, durable: u64, applied: u64 },
    /// Follower -> leader: the append or probe was refused; `end` is the follower's log end.
    Refused { shard: u32, epoch: u64, reason: Refusal, end: LogPos },
    /// Recovering leader -> replica: "send me your batches from `from_seq`".
    Fetch { shard: u32, epoch: u64, from_seq: u64, max_bytes: u64 },
    /// Replica -> recovering leader: batches from the requested seq (empty: none beyond).
    Fetched { shard: u32, epoch: u64, from_seq: u64, batches: Vec<Vec<u8>> },
    /// Leader -> a follower its log no longer serves: `bytes` at `offset` of the leader's
    /// snapshot file that covers through `seq` (`len` bytes in all), with the epoch history
    /// of the log through `seq`.
    SnapshotChunk {
        shard: u32,
        epoch: u64,
        seq: u64,
        len: u64,
        history: Vec<(u64, u64)>,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Follower -> leader: of the snapshot through `seq` it holds the first `received`
    /// bytes; `installed` once it replaced its state and log with it.
    SnapshotAck { shard: u32, epoch: u64, seq: u64, received: u64, installed: bool },
}

impl Message {
    pub fn shard(&self) -> u32 {
        match self {
            Message::Probe { shard, .. }
            | Message::Position { shard, .. }
            | Message::Append { shard, .. }
            | Message::Ack { shard, .. }
            | Message::Refused { shard, .. }
            | Message::Fetch { shard, .. }
            | Message::Fetched { shard, .. }
            | Message::SnapshotChunk { shard, .. }
            | Message::SnapshotAck { shard, .. } => *shard,
        }
    }

    pub fn epoch(&self) -> u64 {
        match self {
            Message::Probe { epoch, .. }
            | Message::Position { epoch, .. }
            | Message::Append { epoch, .. }
            | Message::Ack { epoch, .. }
            | Message::Refused { epoch, .. }
            | Message::Fetch { epoch, .. }
            | Message::Fetched { epoch, .. }
            | Message::SnapshotChunk { epoch, .. }
            | Message::SnapshotAck { epoch, .. } => *epoch,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Probe { .. } => "probe",
            Message::Position { .. } => "position",
            Message::Append { .. } => "append",
            Message::Ack { .. } => "ack",
            Message::Refused { .. } => "refused",
            Message::Fetch { .. } => "fetch",
            Message::Fetched { .. } => "fetched",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
            Message::SnapshotAck { .. } => "snapshot_ack",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = PROTOCOL_VERSION.to_le_bytes().to_vec();
        // Serializing plain data into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("encode message");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (version, body) = bytes.split_first_chunk::<2>().ok_or(DecodeError::Short)?;
        let version = u16::from_le_bytes(*version);
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let (message, rest) =
            postcard::take_from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        Ok(message)
    }
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message shorter than its version field")]
    Short,
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("protocol version {0} is not {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("undecodable message body: {0}")]
    Body(String),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let pos = LogPos { epoch: 3, seq: 40 };
        vec![
            Message::Probe { shard: 1, epoch: 3 },
            Message::Position { shard: 1, epoch: 3, end: pos, durable: 39, history: vec![(1, 1), (3, 30)] },
            Message::Append {
                shard: 1,
                epoch: 3,
                prev: pos,
                batches: vec![vec![1, 2, 3], vec![]],
                commit: 38,
            },
            Message::Ack { shard: 1, epoch: 3, durable: 41, applied: 41 },
            Message::Refused { shard: 1, epoch: 4, reason: Refusal::StaleEpoch, end: pos },
            Message::Fetch { shard: 1, epoch: 3, from_seq: 41, max_bytes: 1 << 20 },
            Message::Fetched { shard: 1, epoch: 3, from_seq: 41, batches: vec![vec![9; 70]] },
            Message::SnapshotChunk {
                shard: 1,
                epoch: 3,
                seq: 900,
                len: 5000,
                history: vec![(1, 1), (3, 30)],
                offset: 1024,
                bytes: vec![7; 300],
            },
            Message::SnapshotAck { shard: 1, epoch: 3, seq: 900, received: 1324, installed: false },
        ]
    }

    #[test]
    fn the_handshake_refuses_peers_of_another_message_set() {
        assert_eq!(PROTOCOL_VERSION, crate::transport::tcp::handshake::PROTOCOL_VERSION);
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{}", m.kind());
            assert_eq!((m.shard(), m.epoch() >= 3), (1, true));
        }
    }

    #[test]
    fn damaged_messages_are_errors_not_panics() {
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes[..cut]).is_err(), "{} cut at {cut}", m.kind());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(DecodeError::Trailing(1)));
            let mut other = bytes;
            other[0] = 9;
            assert_eq!(Message::decode(&other), Err(DecodeError::Version(9)));
        }
    }
}
