//! The leader's side of a snapshot install: a follower needs seqs the log no longer holds
//! (retention removed them), so it gets the leader's newest snapshot file, then the log
//! after it.
//!
//! The file is streamed in chunks of at most `message_bytes`, with at most
//! [`SNAPSHOT_WINDOW_CHUNKS`] chunks unacknowledged. The follower acks the bytes it holds
//! contiguously; chunks lost or reordered are sent again from its ack after a retransmit
//! timeout (go-back-N), and an ack below an earlier one (the follower restarted and lost its
//! staged copy) restarts from there. When the file is whole the follower installs it and
//! says so; shipping then continues from the snapshot's seq + 1. A snapshot replaced by a
//! newer one while it streams is abandoned and the install starts over with the newest.

use super::{Install, Leader};
use crate::protocol::{Action, BatchSource, Message, SourceError};
use crate::transport::NodeId;

/// Chunks of a snapshot in flight to one follower.
pub const SNAPSHOT_WINDOW_CHUNKS: u64 = 4;

impl Leader {
    /// Starts an install on `id`, which needs seqs below `oldest` (the log's first). Without
    /// a snapshot that the log continues right after, nothing is sent and a later tick tries
    /// again.
    pub(super) fn start_install(
        &mut self,
        id: NodeId,
        oldest: u64,
        now_ms: u64,
        log: &dyn BatchSource,
        out: &mut Vec<Action>,
    ) {
        let peer = self.peers.get_mut(&id).expect("peer");
        peer.needs_snapshot = true;
        peer.install = None;
        peer.last_sent_ms = now_ms;
        match log.latest_snapshot() {
            Ok(Some(meta)) if meta.seq + 1 >= oldest && meta.len > 0 => {
                peer.install = Some(Install { seq: meta.seq, len: meta.len, sent: 0, acked: 0 });
                self.stats.snapshot_installs += 1;
                self.send_snapshot(id, now_ms, log, out);
            }
            // No snapshot, or one the log does not continue: nothing to send yet.
            Ok(_) | Err(_) => {}
        }
    }

    /// Sends the next chunks of the install on `id`, within the window.
    pub(super) fn send_snapshot(
        &mut self,
        id: NodeId,
        now_ms: u64,
        log: &dyn BatchSource,
        out: &mut Vec<Action>,
    ) {
        let chunk = self.cfg.message_bytes.max(1);
        let window = chunk * SNAPSHOT_WINDOW_CHUNKS;
        loop {
            let peer = self.peers.get_mut(&id).expect("peer");
            let Some(install) = peer.install.clone() else { return };
            if install.sent >= install.len || install.sent - install.acked >= window {
                return;
            }
            let want = chunk.min(install.len - install.sent);
            let bytes = match log.read_snapshot(install.seq, install.sent, want) {
                Ok(bytes) if !bytes.is_empty() => bytes,
                // Gone (a newer snapshot replaced it): the next tick starts over.
                Ok(_) | Err(SourceError::Io(_)) | Err(SourceError::Behind { .. }) => {
                    peer.install = None;
                    return;
                }
            };
            let sent = bytes.len() as u64;
            if let Some(i) = peer.install.as_mut() {
                i.sent += sent;
            }
            peer.last_sent_ms = now_ms;
            self.stats.snapshot_bytes_shipped += sent;
            let history = self.history.starts().iter().copied().filter(|&(_, s)| s <= install.seq).collect();
            let message = Message::SnapshotChunk {
                shard: self.cfg.shard,
                epoch: self.epoch,
                seq: install.seq,
                len: install.len,
                history,
                offset: install.sent,
                bytes,
            };
            out.push(Action::Send { to: id, message });
        }
    }

    pub(super) fn on_snapshot_ack(
        &mut self,
        from: NodeId,
        seq: u64,
        received: u64,
        installed: bool,
        out: &mut Vec<Action>,
    ) {
        let peer = self.peers.get_mut(&from).expect("peer");
        let Some(install) = peer.install.as_mut().filter(|i| i.seq == seq) else { return };
        if installed {
            peer.install = None;
            peer.needs_snapshot = false;
            // Its log holds the snapshot and may be past it (it answered from its log).
            peer.durable = peer.durable.max(seq);
            peer.next = peer.durable + 1;
            peer.streaming = true;
            self.advance_commit(out);
            return;
        }
        if received < install.acked {
            // It lost what it had staged: from its ack on.
            install.sent = received;
        }
        install.acked = received.min(install.len);
        install.sent = install.sent.max(install.acked);
    }

    /// Retransmits from the follower's ack when an install went silent, and starts over an
    /// install that has no snapshot (none yet, or it was replaced). A follower silent for
    /// long is probed instead: chunks are not queued for a node that is down.
    pub(super) fn tick_installs(&mut self, now_ms: u64, log: &dyn BatchSource, out: &mut Vec<Action>) {
        let rto = self.cfg.retransmit_ms;
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let peer = self.peers.get_mut(&id).expect("peer");
            let last = peer.last_sent_ms.max(peer.last_heard_ms.unwrap_or(0));
            if !peer.needs_snapshot || !peer.streaming || now_ms.saturating_sub(last) < rto {
                continue;
            }
            if !super::heard_within(peer, now_ms, super::SILENT_RTOS * rto) {
                peer.install = None;
                self.probe(id, now_ms, out);
                continue;
            }
            match peer.install.as_mut() {
                Some(install) => {
                    install.sent = install.acked;
                    self.stats.retransmits += 1;
                    self.send_snapshot(id, now_ms, log, out);
                }
                None => {
                    let next = peer.next;
                    match log.read_from(next, 1) {
                        Err(SourceError::Behind { oldest, .. }) => {
                            self.start_install(id, oldest, now_ms, log, out)
                        }
                        // The log serves it (a hold kept its segments, or it moved on).
                        Ok(_) => self.peers.get_mut(&id).expect("peer").needs_snapshot = false,
                        Err(SourceError::Io(_)) => {
                            self.peers.get_mut(&id).expect("peer").last_sent_ms = now_ms
                        }
                    }
                }
            }
        }
    }
}
