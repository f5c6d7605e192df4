//! The replication runtime of one node: the protocol machines of every shard replica it
//! hosts, driven by real time, a real [`Transport`] and a real [`Db`].
//!
//! [`ReplicationNode::start`] runs one thread that owns every shard's [`Replica`](crate::protocol::replica::Replica). Events
//! reach it on one channel: messages from peers, fsync reports of the store's writers
//! (a leader ships only what its WAL holds durably), operator commands (promote, demote),
//! and a tick. It executes each machine's actions in order against the store
//! (`runtime.rs`), and publishes a [`NodeStatus`] after every step for `tidal cluster
//! status` and the metrics. A replica whose action fails stops (fail-stop) and says why in
//! its status; the others go on.

mod epoch_file;
mod outbox;
mod runtime;
mod staging;
mod status;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidal::Db;

pub use epoch_file::EpochRecord;
pub use status::{FollowerStatus, NodeStatus, ShardStatus};

use crate::protocol::leader::LeaderConfig;
use crate::transport::{NodeId, Transport};
use runtime::ShardRuntime;

/// Where one shard lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    pub shard: u32,
    /// Every replica, this node included.
    pub replicas: Vec<NodeId>,
    /// The leader when the cluster is new (later, the persisted epoch record decides).
    pub initial_leader: NodeId,
}

/// How a node replicates.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    /// The shards this node hosts a replica of.
    pub placements: Vec<ShardPlacement>,
    /// Where the per-shard epoch records live (`<data>/replication`).
    pub state_dir: PathBuf,
    pub tick: Duration,
    /// Tuning shared by every shard's leader.
    pub window_records: u64,
    pub message_bytes: u64,
    pub retransmit_ms: u64,
    pub recovery_grace_ms: u64,
}

impl NodeConfig {
    pub fn new(node: NodeId, placements: Vec<ShardPlacement>, state_dir: PathBuf) -> NodeConfig {
        let defaults = LeaderConfig::new(0, Vec::new());
        NodeConfig {
            node,
            placements,
            state_dir,
            tick: Duration::from_millis(10),
            window_records: defaults.window_records,
            message_bytes: defaults.message_bytes,
            retransmit_ms: defaults.retransmit_ms,
            recovery_grace_ms: defaults.recovery_grace_ms,
        }
    }

    fn leader_config(&self, p: &ShardPlacement) -> LeaderConfig {
        let followers = p.replicas.iter().copied().filter(|&n| n != self.node).collect();
        LeaderConfig {
            window_records: self.window_records,
            message_bytes: self.message_bytes,
            retransmit_ms: self.retransmit_ms,
            recovery_grace_ms: self.recovery_grace_ms,
            ..LeaderConfig::new(p.shard, followers)
        }
    }
}

/// Why the runtime could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("store: {0}")]
    Store(#[from] tidal::Error),
    #[error("replication state in {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error("this node hosts no replica of shard {0}")]
    UnknownShard(u32),
    #[error("the replication runtime stopped")]
    Stopped,
    #[error("{0}")]
    Refused(String),
}

enum Event {
    Inbound(NodeId, Vec<u8>),
    Durable(tidal::shard::role::DurableEvent),
    Promote(u32, Sender<Result<(), NodeError>>),
    Demote(u32, Sender<Result<(), NodeError>>),
    Stop,
}

/// A running replication runtime. Dropping it stops the thread.
pub struct ReplicationNode {
    events: Sender<Event>,
    status: Arc<Mutex<NodeStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl ReplicationNode {
    /// Starts replicating `db`'s hosted shards over `transport`; `inbound` yields what peers
    /// send this node.
    pub fn start(
        db: Db,
        cfg: NodeConfig,
        transport: Box<dyn Transport>,
        inbound: Receiver<(NodeId, Vec<u8>)>,
    ) -> Result<ReplicationNode, NodeError> {
        let started = Instant::now();
        let (events, rx) = channel();
        forward(inbound, events.clone(), |(from, bytes)| Event::Inbound(from, bytes), "tidal-repl-in")?;
        forward(db.subscribe_durable()?, events.clone(), Event::Durable, "tidal-repl-fsync")?;
        let mut shards = Vec::new();
        for placement in &cfg.placements {
            shards.push(ShardRuntime::open(&db, &cfg, placement, 0)?);
        }
        let status = Arc::new(Mutex::new(NodeStatus::default()));
        let mut worker = Worker { db, cfg, transport, shards, started, status: status.clone() };
        worker.kick_off();
        let thread = std::thread::Builder::new()
            .name("tidal-replication".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| NodeError::State { path: PathBuf::from("<thread>"), source: e })?;
        Ok(ReplicationNode { events, status, thread: Some(thread) })
    }

    /// The latest status of every hosted shard.
    pub fn status(&self) -> NodeStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `f` of the last published status, without copying it (the request paths look up an
    /// epoch per shard on every request).
    pub fn with_status<R>(&self, f: impl FnOnce(&NodeStatus) -> R) -> R {
        f(&self.status.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes this node the leader of `shard` under a new epoch (it recovers first).
    pub fn promote(&self, shard: u32) -> Result<(), NodeError> {
        self.ask(|reply| Event::Promote(shard, reply))
    }

    /// Makes this node a follower of `shard`.
    pub fn demote(&self, shard: u32) -> Result<(), NodeError> {
        self.ask(|reply| Event::Demote(shard, reply))
    }

    fn ask(&self, event: impl FnOnce(Sender<Result<(), NodeError>>) -> Event) -> Result<(), NodeError> {
        let (reply, rx) = channel();
        self.events.send(event(reply)).map_err(|_| NodeError::Stopped)?;
        rx.recv().map_err(|_| NodeError::Stopped)?
    }

    /// Stops the runtime thread (the store stays open).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.events.send(Event::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReplicationNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Moves every item of `rx` onto the event channel, on its own thread.
fn forward<T: Send + 'static>(
    rx: Receiver<T>,
    events: Sender<Event>,
    wrap: impl Fn(T) -> Event + Send + 'static,
    name: &str,
) -> Result<(), NodeError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for item in rx {
                if events.send(wrap(item)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| NodeError::State { path: PathBuf::from("<thread>"), source: e })
}

/// Events taken before one group fsync of the shipped batches they carry.
const EVENTS_PER_FLUSH: usize = 64;

/// The runtime thread's state.
struct Worker {
    db: Db,
    cfg: NodeConfig,
    transport: Box<dyn Transport>,
    shards: Vec<ShardRuntime>,
    started: Instant,
    status: Arc<Mutex<NodeStatus>>,
}

impl Worker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The first actions of every replica (a leader's recovery probes).
    fn kick_off(&mut self) {
        for shard in &mut self.shards {
            shard.start(&self.db, &mut *self.transport);
        }
        self.flush();
        self.publish();
    }

    fn run(mut self, rx: Receiver<Event>) {
        let mut next_tick = Instant::now() + self.cfg.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return self.flush(),
                Ok(event) => {
                    self.on_event(event);
                    // Take what is already waiting, then one fsync for all of it.
                    for _ in 1..EVENTS_PER_FLUSH {
                        match rx.try_recv() {
                            Ok(Event::Stop) => return self.flush(),
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                    self.flush();
                    self.publish();
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                let now = self.now_ms();
                for shard in &mut self.shards {
                    shard.tick(&self.db, &mut *self.transport, now);
                }
                self.flush();
                next_tick = Instant::now() + self.cfg.tick;
                self.publish();
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.now_ms();
        match event {
            Event::Inbound(from, bytes) => match crate::protocol::Message::decode(&bytes) {
                Ok(message) => match self.shards.iter_mut().find(|s| s.shard == message.shard()) {
                    Some(shard) => shard.handle(&self.db, &mut *self.transport, from, message, now),
                    None => runtime::refuse_unknown_shard(&mut *self.transport, from, &message),
                },
                Err(error) => tracing::warn!(%from, %error, "undecodable replication message dropped"),
            },
            Event::Durable(e) => {
                if let Some(shard) = self.shards.iter_mut().find(|s| s.shard == e.shard) {
                    shard.on_durable(&self.db, &mut *self.transport, e, now);
                }
            }
            Event::Promote(shard, reply) => {
                let result = self.with_shard(shard, |s, db, t| s.promote(db, t, now));
                let _ = reply.send(result);
            }
            Event::Demote(shard, reply) => {
                let result = self.with_shard(shard, |s, db, t| s.demote(db, t));
                let _ = reply.send(result);
            }
            Event::Stop => {}
        }
    }

    /// Runs every shard's held-back sync and messages (see `ShardRuntime::flush`).
    fn flush(&mut self) {
        for shard in &mut self.shards {
            shard.flush(&self.db, &mut *self.transport);
        }
    }

    fn with_shard(
        &mut self,
        shard: u32,
        f: impl FnOnce(&mut ShardRuntime, &Db, &mut dyn Transport) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let runtime =
            self.shards.iter_mut().find(|s| s.shard == shard).ok_or(NodeError::UnknownShard(shard))?;
        f(runtime, &self.db, &mut *self.transport)
    }

    fn publish(&mut self) {
        let node = self.cfg.node;
        let shards = self.shards.iter().map(|s| s.status(&self.db)).collect();
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = NodeStatus { node: node.0, shards };
    }
}
