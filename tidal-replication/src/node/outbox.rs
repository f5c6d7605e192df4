//! A replica's outgoing messages, held until the shipped batches before them are durable.
//!
//! Owns [`Outbox`]. A follower's store appends and applies shipped batches at once and
//! fsyncs them on its syncer thread ([`tidal::Db::append_shipped`]). A message the machine
//! sends after appending may claim those batches durable (an ack) or describe a log that
//! holds them (a position), so no message leaves before every batch appended ahead of it is
//! durable: each is held with the bytes appended at the time it was sent
//! ([`tidal::shard::role::ShippedPosition::log_bytes`]), and leaves, in the order sent, once
//! an fsync report ([`tidal::shard::role::DurableEvent`]) reaches that count. Messages with
//! nothing ahead of them leave at once. The counts only grow while the store is open (a
//! set-aside or an install does not lower them), so a late report never releases a message
//! early.

use std::collections::VecDeque;

use crate::protocol::Message;
use crate::transport::{NodeId, Transport};

/// Messages waiting for durability, in the order the machine sent them.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Bytes the store had appended when the last shipped batches were handed to it.
    appended: u64,
    /// Bytes the store has reported durable.
    durable: u64,
    held: VecDeque<(u64, NodeId, Message)>,
    /// When `durable` last moved, or the outbox last had nothing to wait for (ms; set by
    /// [`Outbox::stalled`]).
    progress_ms: Option<u64>,
}

/// Waiting this long for an fsync report with no progress counts as stalled.
pub(super) const STALL_MS: u64 = 500;

impl Outbox {
    /// Sends `message` now if nothing appended is waiting for its fsync, else holds it.
    pub fn send(&mut self, transport: &mut dyn Transport, to: NodeId, message: Message) {
        if self.held.is_empty() && self.durable >= self.appended {
            // A full queue or a dead peer: the protocol retries.
            let _ = transport.send(to, message.encode());
        } else {
            self.held.push_back((self.appended, to, message));
        }
    }

    /// The store has appended through `log_bytes` (not yet durable).
    pub fn appended(&mut self, log_bytes: u64) {
        self.appended = self.appended.max(log_bytes);
    }

    /// The store made everything through `log_bytes` durable: send what waited for it.
    pub fn durable(&mut self, transport: &mut dyn Transport, log_bytes: u64) {
        if log_bytes > self.durable {
            self.progress_ms = None;
        }
        self.durable = self.durable.max(log_bytes);
        while self.held.front().is_some_and(|(needs, _, _)| *needs <= self.durable) {
            let (_, to, message) = self.held.pop_front().expect("front");
            let _ = transport.send(to, message.encode());
        }
    }

    /// Whether appended batches still wait for their fsync.
    pub fn waiting(&self) -> bool {
        self.durable < self.appended
    }

    /// Whether batches have waited for an fsync report for [`STALL_MS`] with none coming
    /// (checked on every tick, at `now_ms`).
    pub fn stalled(&mut self, now_ms: u64) -> bool {
        if !self.waiting() {
            self.progress_ms = None;
            return false;
        }
        let since = *self.progress_ms.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= STALL_MS
    }

    /// Drops every held message (the replica stopped: they would claim too much).
    pub fn clear(&mut self) {
        self.held.clear();
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::transport::SendError;

    #[derive(Default)]
    struct Sent(Vec<(NodeId, Vec<u8>)>);

    impl Transport for Sent {
        fn local(&self) -> NodeId {
            NodeId(9)
        }

        fn send(&mut self, to: NodeId, frame: Vec<u8>) -> Result<(), SendError> {
            self.0.push((to, frame));
            Ok(())
        }
    }

    fn ack(durable: u64) -> Message {
        Message::Ack { shard: 0, epoch: 1, durable, applied: durable }
    }

    #[test]
    fn messages_wait_for_the_fsync_of_what_was_appended_before_them_and_keep_their_order() {
        let (mut out, mut net) = (Outbox::default(), Sent::default());
        out.send(&mut net, NodeId(1), ack(0));
        assert_eq!(net.0.len(), 1, "nothing appended: sent at once");
        out.appended(100);
        out.send(&mut net, NodeId(1), ack(10));
        out.appended(200);
        out.send(&mut net, NodeId(1), ack(20));
        assert!(out.waiting() && out.held() == 2 && net.0.len() == 1);
        out.durable(&mut net, 150);
        assert_eq!(net.0.len(), 2, "the first ack's batches are durable");
        // A late report of less changes nothing.
        out.durable(&mut net, 120);
        assert_eq!((net.0.len(), out.held()), (2, 1));
        out.durable(&mut net, 200);
        assert!(!out.waiting() && out.held() == 0);
        let sent: BTreeMap<usize, Message> =
            net.0.iter().enumerate().map(|(i, (_, f))| (i, Message::decode(f).unwrap())).collect();
        assert_eq!(sent.values().cloned().collect::<Vec<_>>(), vec![ack(0), ack(10), ack(20)]);
    }

    #[test]
    fn waiting_without_reports_is_a_stall_and_progress_resets_it() {
        let (mut out, mut net) = (Outbox::default(), Sent::default());
        assert!(!out.stalled(0), "nothing appended");
        out.appended(10);
        assert!(!out.stalled(1000));
        assert!(!out.stalled(1000 + STALL_MS - 1));
        out.durable(&mut net, 5);
        assert!(!out.stalled(1000 + STALL_MS), "a report moved durable: the clock restarts");
        assert!(out.stalled(1000 + 2 * STALL_MS));
        out.durable(&mut net, 10);
        assert!(!out.stalled(5000), "nothing left to wait for");
    }

    #[test]
    fn a_message_behind_a_held_one_waits_even_with_nothing_new_appended() {
        let (mut out, mut net) = (Outbox::default(), Sent::default());
        out.appended(50);
        out.send(&mut net, NodeId(2), ack(5));
        out.durable(&mut net, 10);
        out.send(&mut net, NodeId(2), ack(6));
        assert_eq!((net.0.len(), out.held()), (0, 2), "order is kept");
        out.clear();
        out.durable(&mut net, 50);
        assert!(net.0.is_empty(), "a cleared outbox sends nothing");
    }
}
