//! The simulation's event loop, fault schedule and checker (see the module docs of
//! [`crate::sim`]).

use std::collections::{BTreeMap, BTreeSet};

use tidal::score::Decay;
use tidal::shard::state::{ShardParams, StateLimits};
use tidal::wal::sim_vfs::SimVfs;
use tidal::{Hlc, Signal, SignalKind};

use super::node::{Effects, SimNode};
use crate::protocol::Message;
use crate::protocol::leader::LeaderConfig;
use crate::transport::NodeId;
use crate::transport::rng::SimRng;
use crate::transport::sim::{Faults, SimNetwork};

/// Shape of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Simulated milliseconds with writes and faults.
    pub fault_ms: u64,
    /// Simulated milliseconds allowed for convergence after the faults stop.
    pub heal_ms: u64,
    /// Mean milliseconds between client writes.
    pub write_every_ms: u64,
    /// Mean milliseconds between fault events.
    pub fault_every_ms: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig { fault_ms: 1500, heal_ms: 20_000, write_every_ms: 3, fault_every_ms: 120 }
    }
}

/// What a passing run did (for the summary of many seeds).
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub writes: u64,
    pub acked: u64,
    pub crashes: u64,
    pub promotions: u64,
    pub partitions: u64,
    pub set_asides: u64,
    pub final_seq: u64,
    pub final_epoch: u64,
    pub messages: u64,
}

/// Why a run failed: the seed and what the checker saw.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub reason: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed: {}\n  replay: SIM_SEED={} cargo test -p tidal-replication --test sim -- --nocapture",
            self.seed, self.reason, self.seed
        )
    }
}

pub(super) const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const TICK_MS: u64 = 20;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Tick(NodeId),
    Fsync(NodeId),
    Write,
    Fault,
    Restart(NodeId),
    Heal,
    Elect,
}

/// Writes a leader appended and waits to acknowledge: (last seq, signal ids).
type Pending = Vec<(u64, Vec<String>)>;

pub(super) struct Sim {
    pub(super) cfg: SimConfig,
    pub(super) rng: SimRng,
    pub(super) net: SimNetwork,
    pub(super) faults: Faults,
    pub(super) nodes: BTreeMap<NodeId, Option<SimNode>>,
    /// Disks of crashed nodes, waiting for their restart.
    pub(super) disks: BTreeMap<NodeId, SimVfs>,
    pub(super) skew_ms: BTreeMap<NodeId, u64>,
    pub(super) timers: BTreeMap<(u64, u64), Timer>,
    pub(super) timer_order: u64,
    pub(super) pending: BTreeMap<NodeId, Pending>,
    pub(super) fsync_due: BTreeSet<NodeId>,
    pub(super) acked: BTreeSet<String>,
    pub(super) next_signal: u64,
    pub(super) report: SimReport,
    /// `SIM_TRACE=1`: print every delivered message and fault (for replaying one seed).
    pub(super) trace: bool,
    pub(super) params: ShardParams,
}

/// Runs one seed; `Err` names what broke.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |reason: String| SimFailure { seed, reason };
    let mut sim = Sim::new(seed, cfg.clone());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run_all()));
    match outcome {
        Ok(Ok(())) => Ok(sim.report.clone()),
        Ok(Err(reason)) => Err(fail(reason)),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(fail(format!("panic: {}", text.unwrap_or_default())))
        }
    }
}

impl Sim {
    fn new(seed: u64, cfg: SimConfig) -> Sim {
        let mut rng = SimRng::new(seed);
        let faults = Faults {
            drop: [0.0, 0.01, 0.05, 0.2][rng.below(4) as usize],
            duplicate: [0.0, 0.02, 0.1][rng.below(3) as usize],
            delay_min_ms: 0,
            delay_max_ms: [1, 5, 30][rng.below(3) as usize],
            link_queue_max: 256,
        };
        let net = SimNetwork::new(rng.next_u64(), NODES, faults);
        let skew_ms = NODES.iter().map(|&n| (n, rng.below(500))).collect();
        let params = ShardParams {
            shards: 1,
            limits: StateLimits::default(),
            decay: Decay { t_ref_ms: 0, half_life_ms: 3_600_000 },
        };
        let mut sim = Sim {
            cfg,
            rng,
            net,
            faults,
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            skew_ms,
            timers: BTreeMap::new(),
            timer_order: 0,
            pending: BTreeMap::new(),
            fsync_due: BTreeSet::new(),
            acked: BTreeSet::new(),
            next_signal: 0,
            report: SimReport::default(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            params,
        };
        for &id in &NODES {
            let vfs = SimVfs::new();
            if id == NODES[0] {
                // Node 1 starts as the leader: its persisted record names itself.
                super::node::write_meta(&vfs, id, "epoch", &[0, u64::from(id.0) + 1, 1]);
            }
            let (node, actions) = SimNode::open(id, vfs, leader_cfg(id), sim.params, 0);
            sim.nodes.insert(id, Some(node));
            let effects = sim.node_mut(id).expect("up").execute(actions);
            sim.apply_effects(id, effects);
            sim.at(1 + u64::from(id.0), Timer::Tick(id));
        }
        sim.at(1, Timer::Write);
        sim.at(sim.cfg.fault_every_ms, Timer::Fault);
        sim.at(sim.cfg.fault_ms, Timer::Heal);
        sim
    }

    pub(super) fn at(&mut self, t: u64, timer: Timer) {
        self.timer_order += 1;
        self.timers.insert((t, self.timer_order), timer);
    }

    pub(super) fn node_mut(&mut self, id: NodeId) -> Option<&mut SimNode> {
        self.nodes.get_mut(&id).and_then(Option::as_mut)
    }

    pub(super) fn local_ms(&self, id: NodeId) -> u64 {
        self.net.now_ms() + self.skew_ms[&id]
    }

    fn run_all(&mut self) -> Result<(), String> {
        let deadline = self.cfg.fault_ms + self.cfg.heal_ms;
        loop {
            let next_timer = self.timers.first_key_value().map(|((t, _), _)| *t);
            let next_net = self.net.next_delivery_ms();
            let now = match (next_timer, next_net) {
                (None, None) => return Err("nothing left to run".into()),
                (Some(t), Some(n)) => t.min(n),
                (Some(t), None) | (None, Some(t)) => t,
            };
            if now > deadline {
                return Err(format!("no convergence by {deadline} ms: {}", self.describe()));
            }
            if now >= self.cfg.fault_ms + self.cfg.fault_ms / 2 && self.converged() {
                return self.check();
            }
            if next_net == Some(now) && next_timer.is_none_or(|t| t > now) {
                // A message to a crashed or cut-off node is lost on arrival: nothing to deliver.
                if let Some(envelope) = self.net.next_delivery() {
                    self.report.messages += 1;
                    self.deliver(envelope.from, envelope.to, &envelope.message);
                }
            } else {
                let ((t, _), timer) = self.timers.pop_first().expect("due timer");
                self.net.advance(t);
                self.fire(timer);
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, bytes: &[u8]) {
        let message = Message::decode(bytes).expect("the sim network does not corrupt");
        let now = self.local_ms(to);
        if self.trace {
            eprintln!("{:>6} {from}->{to} {}", self.net.now_ms(), summary(&message));
        }
        if let Some(node) = self.node_mut(to) {
            let effects = node.handle(from, message, now);
            self.apply_effects(to, effects);
        }
    }

    fn fire(&mut self, timer: Timer) {
        let now = self.net.now_ms();
        match timer {
            Timer::Tick(id) => {
                let local = self.local_ms(id);
                if let Some(node) = self.node_mut(id) {
                    let effects = node.tick(local);
                    self.apply_effects(id, effects);
                    self.at(now + TICK_MS, Timer::Tick(id));
                }
            }
            Timer::Fsync(id) => {
                self.fsync_due.remove(&id);
                let local = self.local_ms(id);
                if let Some(node) = self.node_mut(id) {
                    let effects = node.fsync(local);
                    self.apply_effects(id, effects);
                }
            }
            Timer::Write => {
                // Writes go on for a while after the faults stop, as they would for real.
                if now < self.cfg.fault_ms + self.cfg.fault_ms / 2 {
                    self.client_write();
                    let gap = 1 + self.rng.below(2 * self.cfg.write_every_ms);
                    self.at(now + gap, Timer::Write);
                }
            }
            Timer::Fault => {
                if now < self.cfg.fault_ms {
                    self.fault();
                    let gap = 1 + self.rng.below(2 * self.cfg.fault_every_ms);
                    self.at(now + gap, Timer::Fault);
                }
            }
            Timer::Restart(id) => self.restart(id),
            Timer::Heal => self.heal(),
            Timer::Elect => self.elect_if_leaderless(),
        }
    }

    pub(super) fn apply_effects(&mut self, id: NodeId, effects: Effects) {
        if self.trace && (effects.stepped_down || effects.committed.is_some()) {
            eprintln!(
                "{:>6} {id} effects: commit {:?} stepped down {}",
                self.net.now_ms(),
                effects.committed,
                effects.stepped_down
            );
        }
        for (to, message) in effects.sends {
            let _ = self.net.send(id, to, message.encode());
        }
        if let Some(seq) = effects.committed {
            let pending = self.pending.entry(id).or_default();
            let done = pending.partition_point(|(last, _)| *last <= seq);
            for (_, ids) in pending.drain(..done) {
                self.report.acked += ids.len() as u64;
                self.acked.extend(ids);
            }
        }
        if effects.stepped_down {
            // Outcome unknown to the client: neither acked nor counted.
            self.pending.remove(&id);
        }
    }
}

/// One line per message for the trace.
fn summary(m: &Message) -> String {
    match m {
        Message::Append { epoch, prev, batches, commit, .. } => {
            format!("append e{epoch} prev {prev:?} {} batches commit {commit}", batches.len())
        }
        Message::Fetched { epoch, from_seq, batches, .. } => {
            format!("fetched e{epoch} from {from_seq} {} batches", batches.len())
        }
        Message::Position { epoch, end, durable, history, .. } => {
            format!("position e{epoch} end {end:?} durable {durable} history {history:?}")
        }
        other => format!("{other:?}"),
    }
}

pub(super) fn leader_cfg(id: NodeId) -> LeaderConfig {
    let followers = NODES.iter().copied().filter(|&n| n != id).collect();
    LeaderConfig {
        window_records: 256,
        message_bytes: 16 * 1024,
        retransmit_ms: 60,
        recovery_grace_ms: 400,
        ..LeaderConfig::new(0, followers)
    }
}

/// One client write of 1..=4 signals with unique ids, to the serving leader if any.
impl Sim {
    fn client_write(&mut self) {
        let Some(id) = NODES.iter().copied().find(|&n| self.nodes[&n].as_ref().is_some_and(|x| x.serving))
        else {
            return;
        };
        let n = 1 + self.rng.below(4);
        let signals: Vec<Signal> = (0..n)
            .map(|_| {
                self.next_signal += 1;
                let s = self.next_signal;
                let kind =
                    [SignalKind::Click, SignalKind::Like, SignalKind::Impression][(s % 3) as usize].clone();
                Signal::new(format!("u{}", s % 7), format!("s{s}"), kind)
            })
            .collect();
        let hlc = Hlc::new(self.local_ms(id), 0);
        let ids: Vec<String> = signals.iter().map(|s| s.item.clone()).collect();
        let node = self.node_mut(id).expect("serving");
        let (_, last) = node.write(&signals, hlc);
        self.report.writes += n;
        if self.trace {
            eprintln!(
                "{:>6} {id} write {:?} ..={last}",
                self.net.now_ms(),
                signals.iter().map(|s| &s.item).collect::<Vec<_>>()
            );
        }
        self.pending.entry(id).or_default().push((last, ids));
        if self.fsync_due.insert(id) {
            let delay = self.rng.below(3);
            self.at(self.net.now_ms() + delay, Timer::Fsync(id));
        }
    }
}
