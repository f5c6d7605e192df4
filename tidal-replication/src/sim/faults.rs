//! The fault schedule of a simulated run: partitions, crashes with power-cut images,
//! restarts, promotions, and the healing at the end.

use tidal::wal::sim_vfs::TornWrite;

use super::cluster::{NODES, Sim, Timer};
use super::node::SimNode;
use crate::transport::NodeId;

impl Sim {
    /// One random fault.
    pub(super) fn fault(&mut self) {
        let now = self.net.now_ms();
        match self.rng.below(10) {
            0..=2 => {
                // Isolate one node (both ways, or only its sends, or only what it receives).
                let victim = NODES[self.rng.below(3) as usize];
                let others: Vec<NodeId> = NODES.iter().copied().filter(|&n| n != victim).collect();
                match self.rng.below(3) {
                    0 => self.net.partition(&[victim], &others),
                    1 => others.iter().for_each(|&o| self.net.block(victim, o)),
                    _ => others.iter().for_each(|&o| self.net.block(o, victim)),
                }
                self.report.partitions += 1;
            }
            3 => self.net.heal(),
            4..=6 => {
                let victim = NODES[self.rng.below(3) as usize];
                self.crash(victim, now);
            }
            7 | 8 => self.promote_random(now),
            _ => {}
        }
    }

    /// Power cut on `id`: its disk becomes a crash image; it restarts a little later.
    pub(super) fn crash(&mut self, id: NodeId, now: u64) {
        let Some(node) = self.nodes.get_mut(&id).and_then(Option::take) else { return };
        let policy = TornWrite::ALL[self.rng.below(4) as usize];
        let image = node.vfs.crash_image(policy, self.rng.next_u64());
        self.disks.insert(id, image);
        self.net.crash(id);
        self.pending.remove(&id);
        self.fsync_due.remove(&id);
        self.report.crashes += 1;
        if self.trace {
            eprintln!("{now:>6} crash {id} ({policy:?})");
        }
        let after = 10 + self.rng.below(300);
        self.at(now + after, Timer::Restart(id));
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let Some(vfs) = self.disks.remove(&id) else { return };
        self.net.restart(id);
        let local = self.local_ms(id);
        let (node, actions) = SimNode::open(id, vfs, super::cluster::leader_cfg(id), self.params, local);
        self.nodes.insert(id, Some(node));
        let effects = self.node_mut(id).expect("restarted").execute(actions);
        self.apply_effects(id, effects);
        self.at(self.net.now_ms() + 1, Timer::Tick(id));
    }

    /// The operator's explicit promotion: demote the leader (if up), promote a follower.
    pub(super) fn promote_random(&mut self, now: u64) {
        let up: Vec<NodeId> = NODES.iter().copied().filter(|n| self.nodes[n].is_some()).collect();
        let followers: Vec<NodeId> = up
            .iter()
            .copied()
            .filter(|n| !self.nodes[n].as_ref().is_some_and(|x| x.replica.is_leader()))
            .collect();
        if followers.is_empty() {
            return;
        }
        let chosen = followers[self.rng.below(followers.len() as u64) as usize];
        self.promote(chosen, now);
    }

    pub(super) fn promote(&mut self, chosen: NodeId, now: u64) {
        if self.trace {
            eprintln!("{now:>6} promote {chosen}");
        }
        for id in NODES {
            if id != chosen && self.nodes[&id].as_ref().is_some_and(|x| x.replica.is_leader()) {
                let effects = self.node_mut(id).expect("up").demote();
                self.apply_effects(id, effects);
            }
        }
        let local = self.local_ms(chosen);
        let effects = self.node_mut(chosen).expect("up").promote(local);
        self.apply_effects(chosen, effects);
        self.report.promotions += 1;
    }

    /// The end of the faults: the network heals, crashed nodes come back, and if no
    /// replica leads the operator promotes the one with the longest log.
    pub(super) fn heal(&mut self) {
        self.net.heal();
        self.net.set_faults(crate::transport::sim::Faults { drop: 0.0, duplicate: 0.0, ..self.faults });
        let down: Vec<NodeId> = self.disks.keys().copied().collect();
        for id in down {
            self.restart(id);
        }
        self.at(self.net.now_ms() + 500, Timer::Elect);
    }

    /// Without a leader after the heal, promote the replica with the longest log.
    pub(super) fn elect_if_leaderless(&mut self) {
        let leaders =
            NODES.iter().filter(|n| self.nodes[n].as_ref().is_some_and(|x| x.replica.is_leader())).count();
        if leaders == 0 {
            let best = NODES
                .iter()
                .copied()
                .max_by_key(|n| {
                    self.nodes[n].as_ref().map(|x| (x.replica.end().0, u64::MAX - u64::from(n.0)))
                })
                .expect("nodes");
            let now = self.net.now_ms();
            self.promote(best, now);
        }
        self.at(self.net.now_ms() + 1000, Timer::Elect);
    }
}
