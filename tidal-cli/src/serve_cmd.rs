//! `tidal serve`: opens the store, serves the HTTP API (`tidal_server`) until SIGTERM or
//! SIGINT, then finishes in-flight requests, snapshots, closes (fsync) and exits 0.
//!
//! Configuration: flags over environment (`TIDAL_*`) over a TOML file (`--config` or
//! `TIDAL_CONFIG`) over defaults; see `docs/http-api.md`. Once bound it prints
//! `listening on http://ADDR` on stdout (with the real port when `--listen` asks for 0).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;
use tidal::Db;

use tidal_replication::cluster::ClusterConfig;
use tidal_server::cluster::ClusterView;
use tidal_server::{ConfigLayer, Server, ServerConfig};

/// How long stopping waits for the runtime's remaining tasks.
const RUNTIME_STOP_WAIT: Duration = Duration::from_secs(2);

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Data directory [env: TIDAL_DATA_DIR] [default: tidal-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to bind, IP:PORT; port 0 picks a free port [env: TIDAL_LISTEN] [default: 127.0.0.1:7390]
    #[arg(long)]
    listen: Option<String>,
    /// Bearer token every endpoint but /healthz and /readyz requires [env: TIDAL_TOKEN]
    #[arg(long)]
    token: Option<String>,
    /// TOML file with the same keys (data_dir, listen, token, ...) [env: TIDAL_CONFIG]
    #[arg(long)]
    config: Option<PathBuf>,
    /// fsync, none or interval:MS [env: TIDAL_DURABILITY] [default: fsync]
    #[arg(long)]
    durability: Option<String>,
    /// Shards of a new store; an existing store keeps its count [env: TIDAL_SHARDS]
    #[arg(long)]
    shards: Option<u32>,
    /// Largest request body in bytes [env: TIDAL_BODY_BYTES_MAX] [default: 16 MiB]
    #[arg(long)]
    body_bytes_max: Option<usize>,
    /// Most signals per ingest request [env: TIDAL_BATCH_SIGNALS_MAX] [default: 10000]
    #[arg(long)]
    batch_signals_max: Option<usize>,
    /// API requests served at once [env: TIDAL_REQUESTS_IN_FLIGHT_MAX] [default: 512]
    #[arg(long)]
    requests_in_flight_max: Option<usize>,
    /// Time limit of an API request, ms [env: TIDAL_REQUEST_TIMEOUT_MS] [default: 60000]
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Longest shutdown waits for requests in flight, ms [env: TIDAL_SHUTDOWN_GRACE_MS] [default: 30000]
    #[arg(long)]
    shutdown_grace_ms: Option<u64>,
    /// Custom signal kinds to accept, comma-separated [env: TIDAL_CUSTOM_KINDS]
    #[arg(long, value_delimiter = ',')]
    custom_kinds: Option<Vec<String>>,
    /// Run as this node of the cluster in --cluster (its API address is the default --listen)
    #[arg(long, requires = "cluster")]
    node: Option<u32>,
    /// The cluster file (TOML: nodes, addresses, shards, secret; see docs/replication.md)
    #[arg(long, requires = "node")]
    cluster: Option<PathBuf>,
}

impl ServeArgs {
    /// Defaults (and the environment) for everything but the data directory.
    pub fn for_data_dir(data_dir: PathBuf) -> ServeArgs {
        ServeArgs { data_dir: Some(data_dir), ..ServeArgs::default() }
    }
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            token: self.token.clone(),
            durability: self.durability.clone(),
            shards: self.shards,
            body_bytes_max: self.body_bytes_max,
            batch_signals_max: self.batch_signals_max,
            requests_in_flight_max: self.requests_in_flight_max,
            request_timeout_ms: self.request_timeout_ms,
            shutdown_grace_ms: self.shutdown_grace_ms,
            custom_kinds: self.custom_kinds.clone(),
            ..ConfigLayer::default()
        }
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut config = ServerConfig::load(args.layer(), args.config.clone(), |key| std::env::var(key).ok())
        .context("configuration")?;
    let cluster = match (&args.cluster, args.node) {
        (Some(file), Some(node)) => {
            let cluster =
                ClusterConfig::load(file).with_context(|| format!("cluster file {}", file.display()))?;
            let me =
                cluster.node(node).with_context(|| format!("node {node} is not in {}", file.display()))?;
            if args.listen.is_none() {
                config.listen = me.api;
            }
            Some((cluster, node))
        }
        _ => None,
    };
    let options = match &cluster {
        Some((c, node)) => crate::node_cmd::options(c, *node, config.options()),
        None => config.options(),
    };
    let db = crate::open_with_progress(&config.data_dir, options)?;
    let view = match cluster {
        Some((c, node)) => match crate::node_cmd::start(&db, c, node, &config.data_dir) {
            Ok(view) => Some(view),
            Err(e) => {
                let _ = stop(db);
                return Err(e);
            }
        },
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidal-http")
        .build()
        .context("starting the async runtime")?;
    let cluster_view = view.clone().map(|v| v as Arc<dyn ClusterView>);
    let served = runtime.block_on(serve(db.clone(), &config, cluster_view));
    runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
    // Replication stops before the store closes (it writes through the store).
    if let Some(view) = view {
        match Arc::try_unwrap(view) {
            Ok(view) => view.node.stop(),
            Err(_) => {
                tracing::warn!("the replication runtime is still referenced; it stops with the process")
            }
        }
    }
    // Stop the store even when serving failed, so acknowledged writes are synced.
    let stopped = stop(db);
    served?;
    stopped?;
    tracing::info!(data_dir = %config.data_dir.display(), "stopped");
    Ok(())
}

async fn serve(db: Db, config: &ServerConfig, cluster: Option<Arc<dyn ClusterView>>) -> Result<()> {
    let shutdown = tidal_server::shutdown_signal().context("installing signal handlers")?;
    let server =
        Server::bind_node(db, config, cluster).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = server.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "tidal serve started");
    server.run(shutdown).await.context("serving HTTP")
}

/// Snapshots every shard, then closes the store (which fsyncs every WAL).
fn stop(db: Db) -> Result<()> {
    let snapshot = db.snapshot();
    if let Err(error) = &snapshot {
        tracing::error!(%error, "snapshot at shutdown failed; closing anyway");
    }
    db.close().context("closing the store")?;
    let seqs = snapshot.context("snapshot at shutdown")?;
    tracing::info!(?seqs, "snapshot written and store closed");
    Ok(())
}
