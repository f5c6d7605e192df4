//! The checker of a simulated run: convergence, exactly-once, equal logs and digests.

use super::cluster::{NODES, Sim};

impl Sim {
    /// Every replica is up and holds the serving leader's whole, committed log.
    pub(super) fn converged(&self) -> bool {
        let Some(leader) = NODES.iter().filter_map(|n| self.nodes[n].as_ref()).find(|x| x.serving) else {
            return false;
        };
        // Commit only advances through a record of the leader's epoch, so a log whose end is
        // older is complete when every replica holds it and no write waits for its ack.
        let end = leader.replica.end();
        self.pending.values().all(|p| p.is_empty())
            && NODES.iter().all(|n| self.nodes[n].as_ref().is_some_and(|x| x.replica.end() == end))
    }

    pub(super) fn check(&mut self) -> Result<(), String> {
        let nodes: Vec<_> = NODES.iter().map(|n| self.nodes[n].as_ref().expect("up at the end")).collect();
        let leader = nodes.iter().find(|x| x.serving).expect("converged has a leader");
        for node in &nodes {
            if node.log.0 != leader.log.0 {
                return Err(format!("{} and {} hold different logs", node.id, leader.id));
            }
            if node.state.digest() != leader.state.digest() {
                return Err(format!(
                    "{} digest {:?} != leader {} digest {:?}",
                    node.id,
                    node.state.digest(),
                    leader.id,
                    leader.state.digest()
                ));
            }
            if let Some((id, n)) = node.applied.iter().find(|(_, n)| **n > 1) {
                return Err(format!("{}: signal {id} applied {n} times", node.id));
            }
            if let Some(id) = self.acked.iter().find(|id| !node.applied.contains_key(*id)) {
                return Err(format!("{}: acknowledged signal {id} is missing", node.id));
            }
        }
        let r = &mut self.report;
        r.final_seq = leader.replica.end().0;
        r.final_epoch = leader.replica.epoch();
        r.set_asides = nodes.iter().map(|x| x.aside.len() as u64).sum();
        Ok(())
    }

    pub(super) fn describe(&self) -> String {
        NODES
            .iter()
            .map(|n| match &self.nodes[n] {
                None => format!("{n}: down"),
                Some(x) => format!(
                    "{n}: {} epoch {} end {:?} serving {}",
                    if x.replica.is_leader() { "leader" } else { "follower" },
                    x.replica.epoch(),
                    x.replica.end(),
                    x.serving
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
