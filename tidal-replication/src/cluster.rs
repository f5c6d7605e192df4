//! The static cluster file: who the nodes are, where they listen, which shards they hold.
//!
//! ```toml
//! cluster_id = "demo"
//! secret_file = "secret"          # or `secret = "..."` (at least 16 bytes)
//! shards = 4
//! replication_factor = 3
//! created_ms = 1764633600000      # the decay clock every replica pins
//! ack = "quorum"                  # default write acknowledgement (`leader` or `quorum`)
//!
//! [[nodes]]
//! id = 1
//! replication = "127.0.0.1:7401"  # peers connect here (TCP transport)
//! api = "127.0.0.1:7301"          # the HTTP API
//!
//! [[placement]]                   # optional; by default shard s starts on node s mod n
//! shard = 0
//! replicas = [1, 2, 3]            # the first one leads a new cluster
//! ```
//!
//! [`ClusterConfig::load`] reads and checks it; every problem is an error that names the key.
//! This build runs every shard on every node (`replication_factor` equal to the number of
//! nodes); a smaller factor is refused with a clear error rather than half served.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidal::shard::role::AckMode;

use crate::node::ShardPlacement;
use crate::transport::NodeId;

/// One node of the cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u32,
    pub replication: SocketAddr,
    pub api: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementEntry {
    pub shard: u32,
    pub replicas: Vec<u32>,
}

/// The file as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    pub shards: u32,
    pub replication_factor: usize,
    pub created_ms: u64,
    #[serde(default)]
    pub ack: AckMode,
    /// Records a leader ships ahead of a follower's acks (default 65,536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_records: Option<u64>,
    pub nodes: Vec<NodeEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementEntry>,
}

/// A checked cluster configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub file: ClusterFile,
    pub secret: Vec<u8>,
    pub placements: Vec<ShardPlacement>,
}

/// What is wrong with a cluster file.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cluster file: `{key}` {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid<T>(key: &'static str, reason: impl Into<String>) -> Result<T, ClusterError> {
    Err(ClusterError::Invalid { key, reason: reason.into() })
}

impl ClusterConfig {
    /// Reads and checks the cluster file at `path` (a relative `secret_file` is relative to
    /// the cluster file's directory).
    pub fn load(path: &Path) -> Result<ClusterConfig, ClusterError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClusterError::Read { path: path.into(), source })?;
        let file: ClusterFile = toml::from_str(&text)
            .map_err(|e| ClusterError::Parse { path: path.into(), reason: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ClusterConfig::from_file(file, base)
    }

    pub fn from_file(file: ClusterFile, base: &Path) -> Result<ClusterConfig, ClusterError> {
        let secret = match (&file.secret, &file.secret_file) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(p)) => {
                let p = base.join(p);
                let bytes = std::fs::read(&p).map_err(|source| ClusterError::Read { path: p, source })?;
                String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec()
            }
            _ => return invalid("secret", "give exactly one of `secret` and `secret_file`"),
        };
        if secret.len() < 16 {
            return invalid("secret", "must have at least 16 bytes");
        }
        check_nodes(&file)?;
        let placements = placements(&file)?;
        Ok(ClusterConfig { file, secret, placements })
    }

    pub fn node(&self, id: u32) -> Option<&NodeEntry> {
        self.file.nodes.iter().find(|n| n.id == id)
    }

    /// The shards `node` holds a replica of.
    pub fn placements_for(&self, node: u32) -> Vec<ShardPlacement> {
        self.placements.iter().filter(|p| p.replicas.contains(&NodeId(node))).cloned().collect()
    }
}

fn check_nodes(file: &ClusterFile) -> Result<(), ClusterError> {
    if file.cluster_id.is_empty() || file.cluster_id.len() > 255 {
        return invalid("cluster_id", "must have 1..=255 bytes");
    }
    if file.nodes.is_empty() {
        return invalid("nodes", "lists no node");
    }
    if file.window_records.is_some_and(|w| !(1..=1 << 24).contains(&w)) {
        return invalid("window_records", "must be 1..=16777216");
    }
    let ids: BTreeSet<u32> = file.nodes.iter().map(|n| n.id).collect();
    if ids.len() != file.nodes.len() || ids.contains(&0) {
        return invalid("nodes", "ids must be unique and at least 1");
    }
    let addrs: BTreeSet<SocketAddr> = file.nodes.iter().flat_map(|n| [n.api, n.replication]).collect();
    if addrs.len() != 2 * file.nodes.len() {
        return invalid("nodes", "every api and replication address must be different");
    }
    if !(1..=tidal::options::SHARDS_MAX).contains(&file.shards) {
        return invalid("shards", format!("must be 1..={}", tidal::options::SHARDS_MAX));
    }
    if file.replication_factor != file.nodes.len() {
        return invalid(
            "replication_factor",
            format!(
                "is {} but there are {} nodes: this build keeps every shard on every node",
                file.replication_factor,
                file.nodes.len()
            ),
        );
    }
    Ok(())
}

fn placements(file: &ClusterFile) -> Result<Vec<ShardPlacement>, ClusterError> {
    let ids: Vec<u32> = file.nodes.iter().map(|n| n.id).collect();
    let mut out = Vec::new();
    for shard in 0..file.shards {
        let replicas: Vec<u32> = match file.placement.iter().find(|p| p.shard == shard) {
            Some(p) => p.replicas.clone(),
            None => (0..file.replication_factor).map(|k| ids[(shard as usize + k) % ids.len()]).collect(),
        };
        let unique: BTreeSet<u32> = replicas.iter().copied().collect();
        if unique.len() != replicas.len() || replicas.len() != file.replication_factor {
            return invalid(
                "placement",
                format!("shard {shard}: {} distinct replicas needed", file.replication_factor),
            );
        }
        if let Some(unknown) = replicas.iter().find(|r| !ids.contains(r)) {
            return invalid("placement", format!("shard {shard} names node {unknown}, which `nodes` lacks"));
        }
        let replicas: Vec<NodeId> = replicas.into_iter().map(NodeId).collect();
        out.push(ShardPlacement { shard, initial_leader: replicas[0], replicas });
    }
    if let Some(p) = file.placement.iter().find(|p| p.shard >= file.shards) {
        return invalid("placement", format!("shard {} does not exist (shards = {})", p.shard, file.shards));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        cluster_id = "t"
        secret = "0123456789abcdef"
        shards = 4
        replication_factor = 3
        created_ms = 1
        [[nodes]]
        id = 1
        replication = "127.0.0.1:7401"
        api = "127.0.0.1:7301"
        [[nodes]]
        id = 2
        replication = "127.0.0.1:7402"
        api = "127.0.0.1:7302"
        [[nodes]]
        id = 3
        replication = "127.0.0.1:7403"
        api = "127.0.0.1:7303"
    "#;

    fn parse(text: &str) -> Result<ClusterConfig, ClusterError> {
        let file: ClusterFile = toml::from_str(text)
            .map_err(|e| ClusterError::Parse { path: "t".into(), reason: e.to_string() })?;
        ClusterConfig::from_file(file, Path::new("."))
    }

    #[test]
    fn default_placement_spreads_the_leaders() {
        let cfg = parse(GOOD).unwrap();
        let leaders: Vec<u32> = cfg.placements.iter().map(|p| p.initial_leader.0).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1]);
        assert_eq!(cfg.placements_for(2).len(), 4);
        assert_eq!(cfg.file.ack, AckMode::Quorum);
    }

    #[test]
    fn every_mistake_names_its_key() {
        let cases = [
            (GOOD.replace("0123456789abcdef", "short"), "secret"),
            (GOOD.replace("replication_factor = 3", "replication_factor = 2"), "replication_factor"),
            (GOOD.replace("id = 3", "id = 2"), "nodes"),
            (GOOD.replace("7403", "7402"), "nodes"),
            (GOOD.replace("shards = 4", "shards = 0"), "shards"),
            (format!("{GOOD}\n[[placement]]\nshard = 0\nreplicas = [1, 1, 2]\n"), "placement"),
            (format!("{GOOD}\n[[placement]]\nshard = 9\nreplicas = [1, 2, 3]\n"), "placement"),
            (format!("{GOOD}\n[[placement]]\nshard = 1\nreplicas = [1, 2, 7]\n"), "placement"),
        ];
        for (text, key) in cases {
            match parse(&text) {
                Err(ClusterError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(&GOOD.replace("shards = 4", "shards = 4\nbogus = 1")),
            Err(ClusterError::Parse { .. })
        ));
    }
}
