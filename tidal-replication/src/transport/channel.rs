//! An in-process transport over channels, for tests of real threads without sockets: each
//! node's messages land in the receiver of the node they are sent to. Bounded (a full
//! receiver is [`SendError::Full`]); a node can be cut off (its messages dropped both ways)
//! to stand in for a dead peer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::{NodeId, SendError, Transport};

/// What a receiver yields: the sender and the message.
pub type Delivery = (NodeId, Vec<u8>);

/// The shared switchboard of a channel network.
#[derive(Clone, Default)]
pub struct ChannelNet {
    inner: Arc<Mutex<Switchboard>>,
}

#[derive(Default)]
struct Switchboard {
    inboxes: BTreeMap<NodeId, SyncSender<Delivery>>,
    cut: BTreeSet<NodeId>,
}

impl ChannelNet {
    pub fn new() -> ChannelNet {
        ChannelNet::default()
    }

    /// Joins (or re-joins, after a restart) `node`; its messages arrive on the receiver.
    pub fn join(&self, node: NodeId, queue_max: usize) -> (ChannelTransport, Receiver<Delivery>) {
        let (tx, rx) = sync_channel(queue_max);
        let mut board = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        board.inboxes.insert(node, tx);
        board.cut.remove(&node);
        (ChannelTransport { net: self.clone(), local: node }, rx)
    }

    /// Drops every message to and from `node` until it joins again or is restored.
    pub fn cut(&self, node: NodeId) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cut.insert(node);
    }

    /// Ends a [`ChannelNet::cut`].
    pub fn restore(&self, node: NodeId) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cut.remove(&node);
    }
}

/// One node's sending side.
pub struct ChannelTransport {
    net: ChannelNet,
    local: NodeId,
}

impl Transport for ChannelTransport {
    fn local(&self) -> NodeId {
        self.local
    }

    fn send(&mut self, to: NodeId, message: Vec<u8>) -> Result<(), SendError> {
        let board = self.net.inner.lock().unwrap_or_else(|e| e.into_inner());
        if board.cut.contains(&self.local) || board.cut.contains(&to) {
            return Ok(());
        }
        let inbox = board.inboxes.get(&to).ok_or(SendError::UnknownPeer(to))?;
        match inbox.try_send((self.local, message)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Full(to)),
        }
    }
}
