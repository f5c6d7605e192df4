//! The sending side towards one peer: its bounded queue ([`Outbox`]) and the thread that dials
//! the peer, authenticates, and writes the queue out as frames ([`run_peer`]).
//!
//! Invariants:
//! - the queue holds at most `queue_max` messages and `queue_bytes_max` bytes (one message
//!   over the byte bound is still accepted into an empty queue, so no message that fits a
//!   frame is refused forever); [`Outbox::push`] never blocks;
//! - messages leave the queue only towards an authenticated connection that looked alive
//!   just before; those lost in a write that fails are counted (`messages_lost`), never
//!   retried: the transport promises no delivery, the protocol above retries;
//! - a message that waited longer than [`STALE_AFTER`] for a connection is dropped when one
//!   is made (counted in `messages_lost`): by then the protocol has sent what is still needed
//!   again, and a peer back from a long absence would otherwise first replay a full queue of
//!   stale appends and snapshot chunks;
//! - reconnects wait an exponential backoff with jitter between `connect_backoff_min` and
//!   `connect_backoff_max`, reset after each successful handshake.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::frame::{FRAME_HEADER_BYTES, FrameDecoder};
use super::handshake::{self, HANDSHAKE_FRAME_BYTES_MAX};
use super::shared::{Registered, Shared};
use super::stats::{PeerCounters, bump};
use crate::transport::NodeId;
use crate::transport::rng::SimRng;

/// Body bytes taken from the queue per write (more if one message is larger).
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Socket write buffer: small frames are gathered into one write, larger ones go straight out.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// Messages older than this when a connection is made are dropped (see the module docs).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5);

/// Why [`Outbox::push`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    /// The transport is shutting down.
    Closed,
}

/// The bounded queue of messages towards one peer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// Messages with the time they were queued.
    queue: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    closed: bool,
}

impl Outbox {
    fn state(&self) -> MutexGuard<'_, OutboxState> {
        // Each change to the state is complete before the lock is released: take over a poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`, or refuses it because the queue is full or closed.
    pub fn push(&self, message: Vec<u8>, messages_max: usize, bytes_max: usize) -> Result<(), Refused> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed);
        }
        let over_bytes = !state.queue.is_empty() && state.bytes + message.len() > bytes_max;
        if state.queue.len() >= messages_max || over_bytes {
            return Err(Refused::Full);
        }
        state.bytes += message.len();
        state.queue.push_back((Instant::now(), message));
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Drops the messages queued longer than `age` ago; returns how many.
    pub fn drop_older_than(&self, age: Duration) -> usize {
        let mut state = self.state();
        let mut dropped = 0;
        while state.queue.front().is_some_and(|(at, _)| at.elapsed() > age) {
            let (_, message) = state.queue.pop_front().expect("front");
            state.bytes -= message.len();
            dropped += 1;
        }
        dropped
    }

    /// Wakes the peer thread for good: it stops at its next check.
    pub fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }

    /// Waits until a message is queued; false once closed.
    fn wait_for_message(&self) -> bool {
        let mut state = self.state();
        while state.queue.is_empty() && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !state.closed
    }

    /// Sleeps for `delay` unless closed meanwhile; false once closed.
    fn sleep(&self, delay: Duration) -> bool {
        let state = self.state();
        let (state, _) =
            self.changed.wait_timeout_while(state, delay, |s| !s.closed).unwrap_or_else(|e| e.into_inner());
        !state.closed
    }

    /// Takes up to [`WRITE_BATCH_BYTES`] of messages (at least one if any is queued).
    fn take_batch(&self) -> Vec<Vec<u8>> {
        let mut state = self.state();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((_, message)) = state.queue.pop_front() {
            bytes += message.len();
            state.bytes -= message.len();
            batch.push(message);
            if bytes >= WRITE_BATCH_BYTES {
                break;
            }
        }
        batch
    }
}

/// Exponential backoff with jitter: the n-th delay is uniform in `[d/2, d]` with
/// `d = min(max, min * 2^n)`, so peers that lost a node together do not redial in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: SimRng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff { min, max, attempt: 0, rng: SimRng::new(seed) }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng.below(spread + 1))
    }
}

/// The peer thread: dial, authenticate, pump the queue out; on failure, back off and redial.
/// Returns when the outbox is closed.
pub(crate) fn run_peer(shared: &Shared, peer: NodeId, addr: SocketAddr, outbox: &Outbox) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.connect_backoff_min, config.connect_backoff_max, jitter_seed(peer));
    let counters = shared.counters.peer(peer);
    while !shared.stopping() {
        if let Some((stream, _registered)) = connect(shared, peer, addr, counters) {
            backoff.reset();
            bump(&counters.connects_out, 1);
            let stale = outbox.drop_older_than(STALE_AFTER);
            bump(&counters.messages_lost, stale as u64);
            debug!(%peer, %addr, stale, "connected");
            match pump(&stream, outbox, counters) {
                Ok(()) => return,
                Err(e) => debug!(%peer, error = %e, "connection lost"),
            }
            bump(&counters.disconnects_out, 1);
        }
        if !outbox.sleep(backoff.next_delay()) {
            return;
        }
    }
}

/// A seed for the backoff jitter, different in every process. Jitter needs no cryptographic
/// quality: if the random source fails, the peer id alone still spreads the nodes apart.
fn jitter_seed(peer: NodeId) -> u64 {
    let random = handshake::new_nonce().map(|n| n[..8].iter().fold(0u64, |a, b| a << 8 | u64::from(*b)));
    random.unwrap_or(0) ^ u64::from(peer.0)
}

/// Dials and authenticates `peer`; `None` after a failure (logged and counted). The socket is
/// registered from before the handshake on, so that shutdown can interrupt any step.
fn connect<'s>(
    shared: &'s Shared,
    peer: NodeId,
    addr: SocketAddr,
    counters: &PeerCounters,
) -> Option<(TcpStream, Registered<'s>)> {
    let config = &shared.config;
    let mut stream = match TcpStream::connect_timeout(&addr, config.handshake_timeout) {
        Ok(stream) => stream,
        Err(e) => {
            bump(&counters.connect_failures, 1);
            debug!(%peer, %addr, error = %e, "dial failed");
            return None;
        }
    };
    let registered = shared.register(&stream)?;
    let nonce = match handshake::new_nonce() {
        Ok(nonce) => nonce,
        Err(e) => {
            warn!(%peer, error = %e, "no random nonce for a handshake");
            return None;
        }
    };
    let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let result =
        handshake::dial(&mut stream, &mut decoder, &config.identity(), peer, nonce, config.handshake_timeout);
    if let Err(refusal) = result {
        shared.counters.refused(refusal.reason);
        warn!(%peer, %addr, reason = %refusal.reason, detail = %refusal.detail, "outbound handshake refused");
        return None;
    }
    let untimed = stream.set_read_timeout(None).and_then(|()| stream.set_write_timeout(None));
    let ready = untimed.and_then(|()| stream.set_nodelay(true));
    ready.map_err(|e| debug!(%peer, error = %e, "socket options")).ok()?;
    Some((stream, registered))
}

/// Writes queued messages to the authenticated `stream` until the outbox closes (`Ok`) or
/// the connection fails (`Err`).
fn pump(stream: &TcpStream, outbox: &Outbox, counters: &PeerCounters) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, stream);
    loop {
        if !outbox.wait_for_message() {
            return Ok(());
        }
        // Check before taking messages, so that those queued while the peer restarted go out
        // on the next connection instead of into a dead one.
        check_alive(stream)?;
        let batch = outbox.take_batch();
        let bytes: usize = batch.iter().map(Vec::len).sum();
        if let Err(e) = write_batch(&mut writer, &batch) {
            bump(&counters.messages_lost, batch.len() as u64);
            return Err(e);
        }
        bump(&counters.frames_sent, batch.len() as u64);
        bump(&counters.bytes_sent, bytes as u64);
    }
}

fn write_batch(writer: &mut BufWriter<&TcpStream>, batch: &[Vec<u8>]) -> io::Result<()> {
    for message in batch {
        // Header and body written separately: a large body bypasses the buffer, uncopied.
        // Invariant: `send` refused messages above FRAME_BYTES_MAX, far below u32::MAX.
        let len = u32::try_from(message.len()).expect("message length checked against FRAME_BYTES_MAX");
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32c::crc32c(message).to_le_bytes());
        writer.write_all(&header)?;
        writer.write_all(message)?;
    }
    writer.flush()
}

/// Fails if the peer has closed the connection. The acceptor never sends after the
/// handshake, so readable bytes are a protocol violation and end the connection too.
fn check_alive(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false)?;
    match peeked {
        Ok(0) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "peer closed the connection")),
        Ok(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "peer sent data on an outbound connection")),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100), 3);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (n, delay) in delays.iter().enumerate() {
            let ceiling = Duration::from_millis(10 * (1 << n)).min(Duration::from_millis(100));
            assert!(*delay >= ceiling / 2 && *delay <= ceiling, "delay {n} = {delay:?}");
        }
        assert!(delays[7] >= Duration::from_millis(50), "the cap is reached: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn outbox_refuses_beyond_its_message_and_byte_bounds() {
        let outbox = Outbox::default();
        outbox.push(vec![0; 10], 2, 15).unwrap();
        assert_eq!(outbox.push(vec![0; 10], 2, 15), Err(Refused::Full), "bytes bound");
        outbox.push(vec![0; 5], 2, 15).unwrap();
        assert_eq!(outbox.push(vec![], 2, 15), Err(Refused::Full), "message bound");
        assert_eq!(outbox.take_batch().len(), 2);
        outbox.push(vec![0; 100], 2, 15).expect("an oversized message fits an empty queue");
        outbox.close();
        assert_eq!(outbox.push(vec![], 2, 15), Err(Refused::Closed));
        assert!(!outbox.wait_for_message());
    }

    #[test]
    fn stale_messages_are_dropped_and_their_bytes_released() {
        let outbox = Outbox::default();
        outbox.push(vec![0; 10], 8, 100).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        outbox.push(vec![1; 10], 8, 100).unwrap();
        assert_eq!(outbox.drop_older_than(Duration::from_millis(20)), 1);
        assert_eq!(outbox.drop_older_than(Duration::from_secs(60)), 0);
        assert_eq!(outbox.take_batch(), vec![vec![1; 10]]);
        assert_eq!(outbox.state().bytes, 0);
    }
}
