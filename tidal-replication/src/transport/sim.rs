//! [`SimNetwork`]: a seeded, in-process network for deterministic simulations.
//!
//! Every message sent gets a delivery time (`now + delay`, the delay drawn from the fault
//! plan), may be dropped or duplicated, and is delivered in (time, send order) order, so
//! random delays reorder messages. Links can be blocked one way or both ways (partitions);
//! a message is checked against the partitions when it is sent *and* when it would arrive,
//! as on a real network where a cable is cut while packets are in flight. A crashed node
//! sends nothing and receives nothing; what was in flight to it is lost. The caller owns the
//! clock: [`SimNetwork::next_delivery`] jumps to the next message, [`SimNetwork::advance`]
//! to a time. All randomness comes from one [`SimRng`] seeded at construction, so one seed
//! replays one run exactly (the simulation prints its seed when it fails).
//!
//! A crash here is the network half of a node crash; the node's disk half is
//! `tidal::wal::sim_vfs::SimVfs::crash`, which keeps exactly what a power cut would.

use std::collections::{BTreeMap, BTreeSet};

use super::rng::SimRng;
use super::{NodeId, SendError, Transport};

/// Largest message the simulated network carries: the limit of every transport (TCP too).
pub const FRAME_BYTES_MAX: usize = super::MESSAGE_BYTES_MAX;

/// What can go wrong with messages, as probabilities and a delay range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice (the copy with its own delay).
    pub duplicate: f64,
    /// Delay of a message, uniform in `delay_min_ms..=delay_max_ms`; a wide range reorders.
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// Messages in flight per directed link before sends are refused with `Full`.
    pub link_queue_max: usize,
}

impl Faults {
    /// A perfect network: 1 ms, in order, nothing lost.
    pub fn none() -> Faults {
        Faults { drop: 0.0, duplicate: 0.0, delay_min_ms: 1, delay_max_ms: 1, link_queue_max: 1024 }
    }
}

/// A message on its way, or delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Vec<u8>,
    pub sent_ms: u64,
    pub deliver_ms: u64,
}

/// What the network did, for checkers and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    /// Lost by the fault plan, a partition or a crash.
    pub dropped: u64,
    pub duplicated: u64,
    /// Refused at send time (full queue, partition-free but down sender, unknown peer).
    pub refused: u64,
}

/// The seeded network of one simulation.
#[derive(Debug)]
pub struct SimNetwork {
    now_ms: u64,
    rng: SimRng,
    faults: Faults,
    nodes: BTreeSet<NodeId>,
    down: BTreeSet<NodeId>,
    /// Directed links that lose every message: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Keyed by (delivery time, send order): the delivery order.
    in_flight: BTreeMap<(u64, u64), Envelope>,
    per_link: BTreeMap<(NodeId, NodeId), usize>,
    next_order: u64,
    stats: NetStats,
}

impl SimNetwork {
    pub fn new(seed: u64, nodes: impl IntoIterator<Item = NodeId>, faults: Faults) -> SimNetwork {
        SimNetwork {
            now_ms: 0,
            rng: SimRng::new(seed),
            faults,
            nodes: nodes.into_iter().collect(),
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            per_link: BTreeMap::new(),
            next_order: 0,
            stats: NetStats::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The simulation's generator, for the caller's own random choices (one stream, one seed).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Queues a message from `from` to `to` under the fault plan.
    pub fn send(&mut self, from: NodeId, to: NodeId, message: Vec<u8>) -> Result<(), SendError> {
        let refused = self.check_send(from, to, message.len());
        if let Err(e) = refused {
            self.stats.refused += 1;
            return Err(e);
        }
        self.stats.sent += 1;
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.faults.drop) {
            self.stats.dropped += 1;
            return Ok(());
        }
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            self.enqueue(from, to, message.clone());
        }
        self.enqueue(from, to, message);
        Ok(())
    }

    fn check_send(&self, from: NodeId, to: NodeId, len: usize) -> Result<(), SendError> {
        if !self.nodes.contains(&to) {
            return Err(SendError::UnknownPeer(to));
        }
        if self.down.contains(&from) {
            return Err(SendError::Down(from));
        }
        if len > FRAME_BYTES_MAX {
            return Err(SendError::TooLarge { len, max: FRAME_BYTES_MAX });
        }
        if self.per_link.get(&(from, to)).copied().unwrap_or(0) >= self.faults.link_queue_max {
            return Err(SendError::Full(to));
        }
        Ok(())
    }

    fn enqueue(&mut self, from: NodeId, to: NodeId, message: Vec<u8>) {
        let spread = self.faults.delay_max_ms.saturating_sub(self.faults.delay_min_ms);
        let deliver_ms = self.now_ms + self.faults.delay_min_ms + self.rng.below(spread + 1);
        let order = self.next_order;
        self.next_order += 1;
        *self.per_link.entry((from, to)).or_insert(0) += 1;
        let envelope = Envelope { from, to, message, sent_ms: self.now_ms, deliver_ms };
        self.in_flight.insert((deliver_ms, order), envelope);
    }

    /// The next message that arrives, with the clock moved to its arrival; `None` when
    /// nothing is in flight. Messages whose link was cut or whose receiver crashed meanwhile
    /// are lost on the way.
    pub fn next_delivery(&mut self) -> Option<Envelope> {
        while let Some((_, envelope)) = self.in_flight.pop_first() {
            self.now_ms = self.now_ms.max(envelope.deliver_ms);
            self.leave_link(envelope.from, envelope.to);
            if self.down.contains(&envelope.to) || self.blocked.contains(&(envelope.from, envelope.to)) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(envelope);
        }
        None
    }

    /// When the next message would arrive, if any is in flight.
    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight.first_key_value().map(|((t, _), _)| *t)
    }

    /// Moves the clock forward to `t_ms` (never back); deliveries due earlier stay queued
    /// for [`SimNetwork::next_delivery`].
    pub fn advance(&mut self, t_ms: u64) {
        self.now_ms = self.now_ms.max(t_ms);
    }

    fn leave_link(&mut self, from: NodeId, to: NodeId) {
        if let Some(n) = self.per_link.get_mut(&(from, to)) {
            *n = n.saturating_sub(1);
        }
    }

    /// Loses every message from `from` to `to` from now on (one way).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Takes `node` down: it sends nothing, and what is in flight to or from it is lost.
    pub fn crash(&mut self, node: NodeId) {
        self.down.insert(node);
        let lost: Vec<(u64, u64)> =
            self.in_flight.iter().filter(|(_, e)| e.to == node || e.from == node).map(|(k, _)| *k).collect();
        for key in lost {
            if let Some(e) = self.in_flight.remove(&key) {
                self.leave_link(e.from, e.to);
                self.stats.dropped += 1;
            }
        }
    }

    /// Brings `node` back (its process restarted; its state is the caller's business).
    pub fn restart(&mut self, node: NodeId) {
        self.down.remove(&node);
    }

    pub fn is_down(&self, node: NodeId) -> bool {
        self.down.contains(&node)
    }

    /// `node`'s view of the network as a [`Transport`].
    pub fn endpoint(&mut self, node: NodeId) -> SimEndpoint<'_> {
        SimEndpoint { network: self, node }
    }
}

/// One node's sending side of a [`SimNetwork`].
pub struct SimEndpoint<'n> {
    network: &'n mut SimNetwork,
    node: NodeId,
}

impl Transport for SimEndpoint<'_> {
    fn local(&self) -> NodeId {
        self.node
    }

    fn send(&mut self, to: NodeId, message: Vec<u8>) -> Result<(), SendError> {
        self.network.send(self.node, to, message)
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
