//! `tidal cluster`: a local cluster on loopback and its operation.
//!
//! - `up --nodes 3 --dir D` writes `D/cluster.toml` and `D/secret`, starts one
//!   `tidal serve --node N --cluster D/cluster.toml` process per node (data in `D/node-N`,
//!   logs in `D/node-N.log`), waits until each is ready, prints the endpoints, and runs until
//!   Ctrl-C or SIGTERM, which it passes on to the nodes. Run again on the same `D`, it reuses
//!   the cluster file, so the nodes come back with their data.
//! - `status --cluster FILE` prints, per shard, the leader, the epoch, the followers and
//!   their durable and applied seqs and lag in records, bytes and milliseconds.
//! - `promote SHARD NODE --cluster FILE` makes NODE the shard's leader (a new epoch; the
//!   old leader steps down when it hears of it).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tidal_replication::cluster::{ClusterConfig, ClusterFile, NodeEntry};

const READY_WAIT: Duration = Duration::from_secs(60);

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a local cluster of N processes on loopback and print its endpoints.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        shards: u32,
    },
    /// Print every shard's leader, epoch, followers, seqs and lag.
    Status {
        #[arg(long)]
        cluster: PathBuf,
        /// Print the nodes' JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Make NODE the leader of SHARD under a new epoch.
    Promote {
        shard: u32,
        node: u32,
        #[arg(long)]
        cluster: PathBuf,
    },
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Up { nodes, dir, shards } => up(nodes, &dir, shards),
        ClusterCommand::Status { cluster, json } => status(&cluster, json),
        ClusterCommand::Promote { shard, node, cluster } => promote(&cluster, shard, node),
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Writes `dir/cluster.toml` (and its secret) unless it exists.
pub(crate) fn cluster_file(nodes: u32, dir: &Path, shards: u32) -> Result<PathBuf> {
    let path = dir.join("cluster.toml");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let mut secret = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("secret"), hex)?;
    let nodes = (1..=nodes)
        .map(|id| Ok(NodeEntry { id, replication: free_port()?, api: free_port()? }))
        .collect::<Result<Vec<_>>>()?;
    let created_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let file = ClusterFile {
        cluster_id: format!("local-{created_ms}"),
        secret: None,
        secret_file: Some("secret".into()),
        shards,
        replication_factor: nodes.len(),
        created_ms,
        ack: Default::default(),
        window_records: None,
        nodes,
        placement: Vec::new(),
    };
    std::fs::write(&path, toml::to_string(&file)?)?;
    Ok(path)
}

fn up(nodes: u32, dir: &Path, shards: u32) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let path = cluster_file(nodes, dir, shards)?;
    let cluster = ClusterConfig::load(&path)?;
    let mut children = spawn_nodes(&cluster, &path, dir)?;
    let ready = wait_ready(&cluster);
    if let Err(e) = ready {
        stop_children(&mut children);
        return Err(e);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "cluster {} is up: {} nodes, {} shards",
        cluster.file.cluster_id, nodes, cluster.file.shards
    )?;
    for node in &cluster.file.nodes {
        writeln!(out, "  node {}: http://{}  (replication {})", node.id, node.api, node.replication)?;
    }
    writeln!(
        out,
        "cluster file: {}\nstatus: tidal cluster status --cluster {}",
        path.display(),
        path.display()
    )?;
    out.flush()?;
    drop(out);
    wait_for_signal(&mut children)
}

/// Starts one `tidal serve --node N` per node of the cluster file at `path` (data in
/// `dir/node-N`, logs in `dir/node-N.log`).
pub(crate) fn spawn_nodes(cluster: &ClusterConfig, path: &Path, dir: &Path) -> Result<Vec<(u32, Child)>> {
    let exe = std::env::current_exe()?;
    let mut children: Vec<(u32, Child)> = Vec::new();
    for node in &cluster.file.nodes {
        let log = std::fs::File::create(dir.join(format!("node-{}.log", node.id)))?;
        let spawned = Command::new(&exe)
            .args(["serve", "--node", &node.id.to_string(), "--cluster"])
            .arg(path)
            .arg("--data-dir")
            .arg(dir.join(format!("node-{}", node.id)))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        match spawned {
            Ok(child) => children.push((node.id, child)),
            Err(e) => {
                stop_children(&mut children);
                return Err(e).with_context(|| format!("starting node {}", node.id));
            }
        }
    }
    Ok(children)
}

pub(crate) fn wait_ready(cluster: &ClusterConfig) -> Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    for node in &cluster.file.nodes {
        let url = format!("http://{}/readyz", node.api);
        loop {
            if ureq::get(&url).call().is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {} is not ready after {READY_WAIT:?}; see its log", node.id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM (passed to the nodes) or until a node exits.
fn wait_for_signal(children: &mut [(u32, Child)]) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let signal = runtime.block_on(async { tidal_server::shutdown_signal() })?;
    let stopped = runtime.block_on(async {
        tokio::select! {
            () = signal => None,
            id = watch_children(children) => Some(id),
        }
    });
    if let Some(id) = stopped {
        eprintln!("node {id} exited; stopping the others");
    }
    stop_children(children);
    Ok(())
}

async fn watch_children(children: &mut [(u32, Child)]) -> u32 {
    loop {
        for (id, child) in children.iter_mut() {
            if child.try_wait().ok().flatten().is_some() {
                return *id;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn stop_children(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter_mut() {
        // SIGTERM: each node finishes requests, snapshots and closes.
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    for (id, child) in children.iter_mut() {
        match child.wait() {
            Ok(status) => eprintln!("node {id} stopped ({status})"),
            Err(e) => eprintln!("node {id}: {e}"),
        }
    }
}

fn get_json(url: &str) -> Result<serde_json::Value> {
    let mut response = ureq::get(url).call().with_context(|| format!("GET {url}"))?;
    Ok(response.body_mut().read_json()?)
}

fn status(path: &Path, json: bool) -> Result<()> {
    let cluster = ClusterConfig::load(path)?;
    let mut out = std::io::stdout().lock();
    let mut statuses = Vec::new();
    for node in &cluster.file.nodes {
        match get_json(&format!("http://{}/v1/cluster/status", node.api)) {
            Ok(s) => statuses.push((node.id, Some(s))),
            Err(e) => {
                writeln!(out, "node {}: unreachable ({e:#})", node.id)?;
                statuses.push((node.id, None));
            }
        }
    }
    if json {
        let all: Vec<_> = statuses.iter().filter_map(|(_, s)| s.clone()).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    for shard in 0..cluster.file.shards {
        print_shard(&mut out, shard, &statuses)?;
    }
    Ok(())
}

fn print_shard(
    out: &mut impl Write,
    shard: u32,
    statuses: &[(u32, Option<serde_json::Value>)],
) -> Result<()> {
    let replica =
        |s: &serde_json::Value| s["shards"].as_array()?.iter().find(|x| x["shard"] == shard).cloned();
    let leader = statuses
        .iter()
        .filter_map(|(id, s)| Some((*id, replica(s.as_ref()?)?)))
        .find(|(_, r)| r["role"] == "leader");
    let Some((leader_id, r)) = leader else {
        writeln!(out, "shard {shard}: no serving leader")?;
        return Ok(());
    };
    writeln!(
        out,
        "shard {shard}: leader node {leader_id}, epoch {}, durable {}, commit {}",
        r["epoch"], r["durable"], r["commit"]
    )?;
    for f in r["followers"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  follower node {}: durable {} applied {}  lag {} records, {} bytes, {} ms",
            f["node"], f["durable"], f["applied"], f["lag_records"], f["lag_bytes"], f["lag_ms"]
        )?;
    }
    Ok(())
}

fn promote(path: &Path, shard: u32, node: u32) -> Result<()> {
    let cluster = ClusterConfig::load(path)?;
    let entry = cluster.node(node).with_context(|| format!("node {node} is not in the cluster file"))?;
    let url = format!("http://{}/v1/cluster/shards/{shard}/promote", entry.api);
    let mut response = ureq::post(&url).send_empty().with_context(|| format!("POST {url}"))?;
    let body = response.body_mut().read_to_string()?;
    println!("{body}");
    Ok(())
}
