//! One simulated replica: the protocol machine over the real WAL writer, the real shard
//! engine and a [`SimVfs`] disk, so a crash leaves exactly the image a power cut would.
//!
//! [`SimNode`] is the runtime the protocol assumes: it executes a machine's actions in
//! order, appends shipped batches with [`WalWriter::append_encoded`] (byte for byte),
//! applies them with [`apply_batch`] after the fsync, and counts every record it applies,
//! per signal id, for the checker. Setting a divergent tail aside rewrites the log into a
//! new generation directory (the kept batches, then a durable pointer to it) and rebuilds
//! the state from the kept batches; the set-aside batches are kept for the checker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidal::shard::engine::{BatchOutcome, apply_batch};
use tidal::shard::state::{ShardParams, ShardState};
use tidal::wal::sim_vfs::SimVfs;
use tidal::wal::vfs::Vfs;
use tidal::wal::{BatchHeader, Repair, WalWriter, decode_batch, records, scan_shard};
use tidal::{Hlc, Signal};

use crate::log::EpochHistory;
use crate::protocol::leader::LeaderConfig;
use crate::protocol::replica::Replica;
use crate::protocol::{Action, BatchSource, Message, SourceError};
use crate::transport::NodeId;

pub(crate) const SHARD: u32 = 0;
const SEGMENT_BYTES: u64 = 16 * 1024;

/// What the runtime tells the cluster loop after executing actions.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub sends: Vec<(NodeId, Message)>,
    /// Leader: writes through this seq are acknowledged (quorum mode).
    pub committed: Option<u64>,
    pub stepped_down: bool,
}

/// The durable log as a list of batches (what [`BatchSource`] reads).
#[derive(Debug, Default, Clone)]
pub(crate) struct Batches(pub Vec<(u64, Vec<u8>)>);

impl BatchSource for Batches {
    fn read_from(&self, from_seq: u64, max_bytes: u64) -> Result<Vec<Vec<u8>>, SourceError> {
        let start = self.0.partition_point(|(first, _)| *first < from_seq);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for (_, b) in &self.0[start..] {
            if !out.is_empty() && bytes + b.len() as u64 > max_bytes {
                break;
            }
            bytes += b.len() as u64;
            out.push(b.clone());
        }
        Ok(out)
    }
}

/// One replica of the simulated shard.
pub(crate) struct SimNode {
    pub id: NodeId,
    pub vfs: SimVfs,
    params: ShardParams,
    generation: u32,
    wal: WalWriter,
    pub state: ShardState,
    pub replica: Replica,
    pub log: Batches,
    unapplied: Vec<Vec<u8>>,
    /// Times each signal id was applied to the current state (rebuilt on restart).
    pub applied: BTreeMap<String, u32>,
    /// Batches set aside from a divergent tail, in order.
    pub aside: Vec<Vec<u8>>,
    pub serving: bool,
    /// The persisted epoch record: epoch, leader + 1 (0: none), leading (1) or not (0).
    epoch_meta: [u64; 3],
}

fn wal_dir(id: NodeId, generation: u32) -> PathBuf {
    PathBuf::from(format!("/{id}/wal-{generation}"))
}

fn meta_path(id: NodeId, name: &str) -> PathBuf {
    PathBuf::from(format!("/{id}/{name}"))
}

impl SimNode {
    /// Opens the node on `vfs` (fresh or a crash image): recovery, then its role.
    pub fn open(
        id: NodeId,
        vfs: SimVfs,
        cfg: LeaderConfig,
        params: ShardParams,
        now_ms: u64,
    ) -> (SimNode, Vec<Action>) {
        let generation = read_meta(&vfs, id, "generation").map_or(0, |v| v[0] as u32);
        let meta = read_meta(&vfs, id, "epoch").unwrap_or_else(|| vec![0, 0, 0]);
        let (epoch, leader, leading) =
            (meta[0], (meta[1] > 0).then(|| NodeId(meta[1] as u32 - 1)), meta[2] == 1);
        let dir = wal_dir(id, generation);
        let mut log = Batches::default();
        let report =
            scan_shard::<tidal::wal::WalError>(&vfs, &dir, SHARD, 1, Repair::Truncate, |h, payload| {
                log.0.push((h.first_seq, [h.encode(), payload.to_vec()].concat()));
                Ok(())
            })
            .expect("scan the simulated WAL");
        let arc: Arc<dyn Vfs> = Arc::new(vfs.clone());
        let wal =
            WalWriter::open(arc, &dir, SHARD, report.next_seq, report.tail_segment.clone(), SEGMENT_BYTES)
                .expect("open the simulated WAL")
                .with_origin_node(id.0);
        let mut history = EpochHistory::new();
        for (_, bytes) in &log.0 {
            let (h, _) = BatchHeader::decode(bytes).expect("scanned batch");
            history.observe(h.epoch, h.first_seq).expect("epochs grow along the log");
        }
        let end = report.next_seq - 1;
        let (replica, actions) = if leading {
            Replica::leader(id, cfg.clone(), epoch, history, end, now_ms)
        } else {
            (Replica::follower(id, cfg.clone(), epoch, leader, history, end), Vec::new())
        };
        let state = ShardState::with_params(SHARD, &params);
        let mut node = SimNode {
            id,
            vfs,
            params,
            generation,
            wal,
            state,
            replica,
            log,
            unapplied: Vec::new(),
            applied: BTreeMap::new(),
            aside: Vec::new(),
            serving: false,
            epoch_meta: [meta[0], meta[1], meta[2]],
        };
        node.rebuild_state();
        (node, actions)
    }

    fn rebuild_state(&mut self) {
        self.state = ShardState::with_params(SHARD, &self.params);
        self.applied.clear();
        for (_, bytes) in self.log.0.clone() {
            self.apply(&bytes);
        }
    }

    /// Applies one batch through the engine: it must continue the state exactly.
    fn apply(&mut self, bytes: &[u8]) {
        let (header, payload, _) = decode_batch(bytes).expect("a logged batch decodes");
        let before = self.state.applied_seq;
        match apply_batch(&mut self.state, &header, payload, self.id.0).expect("apply") {
            BatchOutcome::Applied(applied) => {
                assert_eq!(applied.applied_seq, header.next_seq() - 1, "{}: partial apply", self.id);
                assert_eq!(before + 1, header.first_seq, "{}: applied out of order", self.id);
            }
            other => {
                panic!("{}: batch {}.. applied twice or out of order: {other:?}", self.id, header.first_seq)
            }
        }
        for record in records(payload) {
            let (_, signal) = record.expect("verified record");
            *self.applied.entry(signal.item.to_string()).or_default() += 1;
        }
    }

    /// A client write on the serving leader: append (not yet durable) and apply.
    pub fn write(&mut self, signals: &[Signal], hlc: Hlc) -> (u64, u64) {
        let records: Vec<_> = signals.iter().map(|s| (hlc, s.as_ref())).collect();
        let info = self.wal.append(&records).expect("append");
        let bytes = self.wal.last_batch().to_vec();
        self.log.0.push((info.first_seq, bytes.clone()));
        self.apply(&bytes);
        let last = info.first_seq + u64::from(info.record_count) - 1;
        self.replica.on_local_append(info.first_seq, last);
        (info.first_seq, last)
    }

    /// The leader's group commit: fsync, then tell the machine.
    pub fn fsync(&mut self, now_ms: u64) -> Effects {
        self.wal.sync().expect("sync");
        let durable = self.wal.next_seq() - 1;
        let actions = self.replica.on_local_durable(durable, now_ms, &self.log);
        self.execute(actions)
    }

    pub fn handle(&mut self, from: NodeId, message: Message, now_ms: u64) -> Effects {
        let actions = self.replica.handle(from, message, now_ms, &self.log);
        self.execute(actions)
    }

    pub fn tick(&mut self, now_ms: u64) -> Effects {
        let actions = self.replica.tick(now_ms, &self.log);
        self.execute(actions)
    }

    pub fn promote(&mut self, now_ms: u64) -> Effects {
        let actions = self.replica.promote(now_ms);
        self.execute(actions)
    }

    pub fn demote(&mut self) -> Effects {
        let actions = self.replica.demote();
        self.execute(actions)
    }

    /// Executes actions in order, as the protocol requires.
    pub fn execute(&mut self, actions: Vec<Action>) -> Effects {
        let mut effects = Effects::default();
        for action in actions {
            match action {
                Action::Send { to, message } => effects.sends.push((to, message)),
                Action::PersistEpoch { epoch, leader } => {
                    let leading = u64::from(leader == Some(self.id));
                    let leader = leader.map_or(0, |n| u64::from(n.0) + 1);
                    self.epoch_meta = [epoch, leader, leading];
                    write_meta(&self.vfs, self.id, "epoch", &self.epoch_meta);
                }
                Action::SetAside { from_seq } => {
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!(
                            "       {} set aside from {from_seq} (end {:?})",
                            self.id,
                            self.replica.end()
                        );
                    }
                    self.set_aside(from_seq)
                }
                Action::Append(bytes) => {
                    let info = self.wal.append_encoded(&bytes).expect("the machine verified the batch");
                    self.log.0.push((info.first_seq, bytes.clone()));
                    self.unapplied.push(bytes);
                }
                Action::Sync => {
                    self.wal.sync().expect("sync");
                    for bytes in std::mem::take(&mut self.unapplied) {
                        self.apply(&bytes);
                    }
                }
                Action::SendBatches { to, epoch, from_seq, max_bytes } => {
                    let batches = self.log.read_from(from_seq, max_bytes).unwrap_or_default();
                    let message = Message::Fetched { shard: SHARD, epoch, from_seq, batches };
                    effects.sends.push((to, message));
                }
                Action::Commit(seq) => effects.committed = Some(seq),
                Action::Serve { epoch } => {
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!("       {} serves epoch {epoch} end {:?}", self.id, self.replica.end());
                    }
                    self.wal.set_epoch(epoch);
                    self.serving = true;
                }
                Action::StepDown { .. } => {
                    self.wal.sync().expect("sync on step-down");
                    self.epoch_meta[2] = 0;
                    write_meta(&self.vfs, self.id, "epoch", &self.epoch_meta);
                    self.serving = false;
                    effects.stepped_down = true;
                }
                Action::SnapshotBegin { .. }
                | Action::SnapshotWrite { .. }
                | Action::SnapshotInstall { .. } => {
                    panic!("{}: a snapshot install, but the simulated logs keep everything", self.id)
                }
            }
        }
        effects
    }

    /// Moves batches from `from_seq` on aside: the kept ones go to a new generation of the
    /// log, made current by a durable pointer; the state is rebuilt from them.
    fn set_aside(&mut self, from_seq: u64) {
        let cut = self.log.0.partition_point(|(first, _)| *first < from_seq);
        assert!(
            self.log.0.get(cut).is_none_or(|(first, _)| *first == from_seq),
            "{}: set-aside point {from_seq} is not a batch boundary",
            self.id
        );
        self.aside.extend(self.log.0.drain(cut..).map(|(_, b)| b));
        self.unapplied.clear();
        self.generation += 1;
        let dir = wal_dir(self.id, self.generation);
        let arc: Arc<dyn Vfs> = Arc::new(self.vfs.clone());
        let mut wal = WalWriter::open(arc, &dir, SHARD, 1, None, SEGMENT_BYTES)
            .expect("new generation")
            .with_origin_node(self.id.0);
        for (_, bytes) in &self.log.0 {
            wal.append_encoded(bytes).expect("kept batch");
        }
        wal.sync().expect("sync new generation");
        wal.set_epoch(self.wal.epoch());
        write_meta(&self.vfs, self.id, "generation", &[u64::from(self.generation)]);
        self.wal = wal;
        self.rebuild_state();
    }
}

fn read_meta(vfs: &SimVfs, id: NodeId, name: &str) -> Option<Vec<u64>> {
    let bytes = vfs.read_file(&meta_path(id, name)).ok()?;
    Some(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Writes a small metadata file durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_meta(vfs: &SimVfs, id: NodeId, name: &str, values: &[u64]) {
    let path = meta_path(id, name);
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    vfs.create_dir_all(&dir).expect("meta dir");
    let tmp = meta_path(id, &format!("{name}.tmp"));
    let _ = vfs.remove_file(&tmp);
    let mut file = vfs.create_new(&tmp).expect("create meta");
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    file.write_all(&bytes).expect("write meta");
    file.sync_data().expect("sync meta");
    vfs.rename(&tmp, &path).expect("rename meta");
    vfs.sync_dir(&dir).expect("sync meta dir");
}
