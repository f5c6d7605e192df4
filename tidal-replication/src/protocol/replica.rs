//! A node's role for one shard (`NodeRole`): leader or follower, and the moves between them.
//!
//! [`Replica`] routes events to the role's machine. A leader that meets a newer epoch (a
//! probe, an append or a fetch from another leader, or a refusal naming one) steps down:
//! it becomes a follower of that epoch with its own log as it stands, and the message that
//! deposed it is handled by the follower. [`Replica::promote`] makes a follower the leader
//! under a new epoch (it recovers first, as every new leader does); [`Replica::demote`]
//! makes a leader a follower without waiting for a newer epoch.

use super::follower::Follower;
use super::leader::{Leader, LeaderConfig};
use super::message::Message;
use super::{Action, BatchSource, ProtocolStats};
use crate::log::EpochHistory;
use crate::transport::NodeId;

/// The role of a node for one shard.
#[derive(Clone, Debug)]
pub enum Role {
    Leader(Leader),
    Follower(Follower),
}

/// One shard's replica on this node. See the module docs.
#[derive(Clone, Debug)]
pub struct Replica {
    node: NodeId,
    cfg: LeaderConfig,
    role: Role,
}

impl Replica {
    /// A follower (after recovery found its log ending at `end` with `history`, and its
    /// persisted epoch and leader).
    pub fn follower(
        node: NodeId,
        cfg: LeaderConfig,
        epoch: u64,
        leader: Option<NodeId>,
        history: EpochHistory,
        end: u64,
    ) -> Replica {
        let follower = Follower::new(cfg.shard, epoch, leader, history, end);
        Replica { node, cfg, role: Role::Follower(follower) }
    }

    /// A leader starting up (recovery first), with its first actions.
    pub fn leader(
        node: NodeId,
        cfg: LeaderConfig,
        epoch: u64,
        history: EpochHistory,
        end: u64,
        now_ms: u64,
    ) -> (Replica, Vec<Action>) {
        let (leader, mut out) = Leader::start(cfg.clone(), epoch, history, end, now_ms);
        mark_self(node, &mut out);
        (Replica { node, cfg, role: Role::Leader(leader) }, out)
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    pub fn node(&self) -> NodeId {
        self.node
    }
    pub fn role(&self) -> &Role {
        &self.role
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
    /// A leader that finished recovery and accepts writes.
    pub fn is_serving(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.is_serving())
    }
    pub fn epoch(&self) -> u64 {
        match &self.role {
            Role::Leader(l) => l.epoch(),
            Role::Follower(f) => f.epoch(),
        }
    }
    /// Last seq of the own log and the seq through which it is durable.
    pub fn end(&self) -> (u64, u64) {
        match &self.role {
            Role::Leader(l) => (l.end(), l.durable()),
            Role::Follower(f) => (f.end(), f.durable()),
        }
    }
    pub fn history(&self) -> &EpochHistory {
        match &self.role {
            Role::Leader(l) => l.history(),
            Role::Follower(f) => f.history(),
        }
    }
    pub fn stats(&self) -> &ProtocolStats {
        match &self.role {
            Role::Leader(l) => l.stats(),
            Role::Follower(f) => f.stats(),
        }
    }

    /// Handles a message, stepping down first if it comes from a newer leader.
    pub fn handle(
        &mut self,
        from: NodeId,
        message: Message,
        now_ms: u64,
        log: &dyn BatchSource,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Role::Leader(leader) = &self.role {
            let from_a_leader =
                matches!(message, Message::Probe { .. } | Message::Append { .. } | Message::Fetch { .. });
            if from_a_leader && message.epoch() > leader.epoch() {
                out.push(Action::StepDown { epoch: message.epoch() });
                self.become_follower(message.epoch(), &mut out);
            }
        }
        let actions = match &mut self.role {
            Role::Leader(leader) => leader.handle(from, message, now_ms, log),
            Role::Follower(follower) => follower.handle(from, message),
        };
        self.absorb(actions, &mut out);
        out
    }

    /// Time passed (leaders retransmit and probe; followers wait).
    pub fn tick(&mut self, now_ms: u64, log: &dyn BatchSource) -> Vec<Action> {
        let mut out = Vec::new();
        if let Role::Leader(leader) = &mut self.role {
            let actions = leader.tick(now_ms, log);
            self.absorb(actions, &mut out);
        }
        out
    }

    /// The own writer appended `first_seq..=last_seq` (leaders only).
    pub fn on_local_append(&mut self, first_seq: u64, last_seq: u64) {
        if let Role::Leader(leader) = &mut self.role {
            leader.on_local_append(first_seq, last_seq);
        }
    }

    /// The own WAL is durable through `seq` (leaders ship and commit).
    pub fn on_local_durable(&mut self, seq: u64, now_ms: u64, log: &dyn BatchSource) -> Vec<Action> {
        let mut out = Vec::new();
        if let Role::Leader(leader) = &mut self.role {
            let actions = leader.on_local_durable(seq, now_ms, log);
            self.absorb(actions, &mut out);
        }
        out
    }

    /// Makes this follower the leader under a new epoch (recovery first).
    pub fn promote(&mut self, now_ms: u64) -> Vec<Action> {
        let Role::Follower(f) = &self.role else { return Vec::new() };
        let (leader, mut out) =
            Leader::start(self.cfg.clone(), f.epoch(), f.history().clone(), f.end(), now_ms);
        mark_self(self.node, &mut out);
        self.role = Role::Leader(leader);
        out
    }

    /// Makes this leader a follower in its current epoch (it answers the next leader).
    pub fn demote(&mut self) -> Vec<Action> {
        let Role::Leader(leader) = &self.role else { return Vec::new() };
        let epoch = leader.epoch();
        let mut out = vec![Action::StepDown { epoch }];
        self.become_follower(epoch, &mut out);
        out
    }

    /// Leader to follower of `epoch`. In its own epoch it keeps itself as that epoch's
    /// leader (nobody else may lead it); in a newer one it waits for that epoch's leader.
    /// The runtime records on `StepDown` that this node no longer leads.
    fn become_follower(&mut self, epoch: u64, out: &mut Vec<Action>) {
        if let Role::Leader(leader) = &self.role {
            // The runtime syncs its WAL on StepDown, so the whole log counts as durable.
            let (history, end) = (leader.history().clone(), leader.end());
            let own = epoch == leader.epoch();
            let follower = Follower::new(self.cfg.shard, epoch, own.then_some(self.node), history, end);
            self.role = Role::Follower(follower);
            if !own {
                out.push(Action::PersistEpoch { epoch, leader: None });
            }
        }
    }

    /// Appends `actions` to `out`, turning a leader's `StepDown` into the role change.
    fn absorb(&mut self, actions: Vec<Action>, out: &mut Vec<Action>) {
        for action in actions {
            if let (Action::StepDown { epoch }, Role::Leader(_)) = (&action, &self.role) {
                let epoch = *epoch;
                out.push(action);
                self.become_follower(epoch, out);
                continue;
            }
            out.push(action);
        }
    }
}

/// A leader's own epoch record names itself.
fn mark_self(node: NodeId, out: &mut [Action]) {
    for action in out {
        if let Action::PersistEpoch { leader, .. } = action {
            *leader = Some(node);
        }
    }
}
