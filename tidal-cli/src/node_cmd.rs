//! `tidal serve --node N --cluster FILE`: one node of a static cluster. Opens the store with
//! the cluster's pinned parameters, starts the TCP transport and the replication runtime
//! for the shards the node hosts, and serves the HTTP API with the cluster routes
//! (`/v1/cluster/...`), `not_leader` answers and epoch-carrying tokens.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tidal::shard::role::AckMode;
use tidal::{Db, Options};
use tidal_replication::cluster::ClusterConfig;
use tidal_replication::node::{NodeConfig, ReplicationNode};
use tidal_replication::transport::NodeId;
use tidal_replication::transport::tcp::{StatsHandle, TcpConfig, TcpTransport};
use tidal_server::cluster::ClusterView;

/// A running node: the replication runtime and what the HTTP server asks of it.
pub struct NodeView {
    pub node: ReplicationNode,
    db: Db,
    cluster: ClusterConfig,
    transport: StatsHandle,
}

/// The store options a node of `cluster` must open with (the pinned, shared parameters).
pub fn options(cluster: &ClusterConfig, node: u32, mut base: Options) -> Options {
    base.shards = Some(cluster.file.shards);
    base.node_id = node;
    base.created_ms = Some(cluster.file.created_ms);
    base
}

/// Starts the transport and the replication runtime of node `id` over `db`.
pub fn start(db: &Db, cluster: ClusterConfig, id: u32, data_dir: &Path) -> Result<Arc<NodeView>> {
    let me = cluster.node(id).with_context(|| format!("node {id} is not in the cluster file"))?.clone();
    let peers: BTreeMap<NodeId, _> =
        cluster.file.nodes.iter().filter(|n| n.id != id).map(|n| (NodeId(n.id), n.replication)).collect();
    let config = TcpConfig::new(
        NodeId(id),
        me.replication,
        peers,
        cluster.file.cluster_id.clone(),
        cluster.secret.clone(),
    );
    let (transport, inbound) = TcpTransport::start(config).context("starting the replication transport")?;
    let stats = transport.stats_handle();
    let placements = cluster.placements_for(id);
    if placements.is_empty() {
        bail!("node {id} hosts no shard");
    }
    let mut cfg = NodeConfig::new(NodeId(id), placements, data_dir.join("replication"));
    if let Some(window) = cluster.file.window_records {
        cfg.window_records = window;
    }
    let node = ReplicationNode::start(db.clone(), cfg, Box::new(transport), inbound)
        .context("starting replication")?;
    tracing::info!(node = id, replication = %me.replication, api = %me.api, "cluster node started");
    Ok(Arc::new(NodeView { node, db: db.clone(), cluster, transport: stats }))
}

impl ClusterView for NodeView {
    fn status(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self.node.status()).unwrap_or_default();
        let transport: BTreeMap<String, serde_json::Value> = self
            .transport
            .stats()
            .peers
            .iter()
            .map(|(peer, s)| {
                let v = serde_json::json!({
                    "frames_sent": s.frames_sent, "bytes_sent": s.bytes_sent,
                    "frames_received": s.frames_received, "bytes_received": s.bytes_received,
                    "connects_out": s.connects_out, "disconnects_out": s.disconnects_out,
                    "frames_corrupt": s.frames_corrupt, "sends_full": s.sends_full,
                });
                (peer.0.to_string(), v)
            })
            .collect();
        value["transport"] = serde_json::to_value(transport).unwrap_or_default();
        value["cluster_id"] = self.cluster.file.cluster_id.clone().into();
        // What replicas compare: equal digests at equal applied seqs mean equal state.
        value["digests"] = serde_json::to_value(
            self.db.digests().iter().map(|d| serde_json::json!({"applied_seq": d.applied_seq, "elements": d.elements, "lanes": d.lanes})).collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        value
    }

    fn api_of(&self, node: u32) -> Option<String> {
        self.cluster.node(node).map(|n| n.api.to_string())
    }

    fn promote(&self, shard: u32) -> Result<(), String> {
        self.node.promote(shard).map_err(|e| e.to_string())
    }

    fn epoch_at(&self, shard: u32, seq: u64) -> Option<u64> {
        self.node.with_status(|status| status.shards.iter().find(|s| s.shard == shard)?.epoch_at(seq))
    }

    fn leading_epoch(&self, shard: u32) -> Option<u64> {
        self.node.with_status(|status| {
            let s = status.shards.iter().find(|s| s.shard == shard)?;
            (s.role == "leader").then_some(s.epoch)
        })
    }

    fn default_ack(&self) -> AckMode {
        self.cluster.file.ack
    }

    fn metrics_text(&self) -> String {
        metrics_text(&self.node, &self.transport)
    }
}

/// Replication metrics in Prometheus text.
fn metrics_text(node: &ReplicationNode, transport: &StatsHandle) -> String {
    let status = node.status();
    let mut out = String::new();
    out.push_str(
        "# TYPE tidal_replication_epoch gauge\n# TYPE tidal_replication_follower_lag_records gauge\n",
    );
    for s in &status.shards {
        let shard = s.shard;
        let leading = u8::from(s.role == "leader");
        let _ = writeln!(out, "tidal_replication_epoch{{shard=\"{shard}\"}} {}", s.epoch);
        let _ = writeln!(out, "tidal_replication_leader{{shard=\"{shard}\"}} {leading}");
        let _ = writeln!(out, "tidal_replication_durable_seq{{shard=\"{shard}\"}} {}", s.durable);
        let _ = writeln!(out, "tidal_replication_commit_seq{{shard=\"{shard}\"}} {}", s.commit);
        let st = &s.stats;
        for (name, v) in [
            ("shipped_batches_total", st.batches_shipped),
            ("shipped_bytes_total", st.bytes_shipped),
            ("appended_batches_total", st.batches_appended),
            ("duplicate_batches_total", st.batches_duplicate),
            ("fetched_batches_total", st.fetched_batches),
            ("set_asides_total", st.set_asides),
            ("snapshot_installs_total", st.snapshot_installs),
            ("snapshot_bytes_shipped_total", st.snapshot_bytes_shipped),
            ("retransmits_total", st.retransmits),
        ] {
            let _ = writeln!(out, "tidal_replication_{name}{{shard=\"{shard}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "tidal_replication_snapshots_refused_total{{shard=\"{shard}\"}} {}",
            s.snapshots_refused
        );
        for (reason, v) in &st.refused {
            let _ =
                writeln!(out, "tidal_replication_refused_total{{shard=\"{shard}\",reason=\"{reason}\"}} {v}");
        }
        for f in &s.followers {
            let labels = format!("shard=\"{shard}\",follower=\"{}\"", f.node);
            let _ = writeln!(out, "tidal_replication_follower_lag_records{{{labels}}} {}", f.lag_records);
            let _ = writeln!(out, "tidal_replication_follower_lag_bytes{{{labels}}} {}", f.lag_bytes);
            let _ = writeln!(out, "tidal_replication_follower_lag_ms{{{labels}}} {}", f.lag_ms);
        }
    }
    let stats = transport.stats();
    for (reason, v) in &stats.refused {
        let _ =
            writeln!(out, "tidal_replication_handshakes_refused_total{{reason=\"{}\"}} {v}", reason.as_str());
    }
    for (peer, p) in &stats.peers {
        let _ = writeln!(
            out,
            "tidal_replication_frames_corrupt_total{{peer=\"{}\"}} {}",
            peer.0, p.frames_corrupt
        );
        let _ = writeln!(out, "tidal_replication_bytes_sent_total{{peer=\"{}\"}} {}", peer.0, p.bytes_sent);
    }
    out
}
