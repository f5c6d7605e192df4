//! The `tidal` command line: a thin layer over the library (ingest, reads, WAL tools).

mod bench_cluster;
mod bench_cmd;
mod cluster_cmd;
mod export_cmd;
mod ingest;
mod node_cmd;
mod serve_cmd;
mod wal_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tidal::{Db, Options};

#[derive(Parser)]
#[command(name = "tidal", version, about = "A store for user-feedback signals")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (JSON; /metrics, /healthz, /readyz, /openapi.json) until SIGTERM.
    Serve(serve_cmd::ServeArgs),
    /// Ingest signals from an NDJSON file (one signal per line), with a progress bar.
    Ingest(ingest::IngestArgs),
    /// Ingest the bundled sample signals, show what the store holds, then serve the HTTP API
    /// on 127.0.0.1:7390 until Ctrl-C (the main job until Forage exists).
    Demo {
        #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
        data_dir: PathBuf,
        /// Ingest and report only; do not serve.
        #[arg(long)]
        no_serve: bool,
    },
    /// Show an item's aggregate, merged across shards.
    Item {
        id: String,
        #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
        data_dir: PathBuf,
    },
    /// Show a user's hard negatives, recent history and sessions.
    User {
        id: String,
        #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
        data_dir: PathBuf,
    },
    /// Per-shard counters and what opening recovered.
    Stats {
        #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
        data_dir: PathBuf,
    },
    /// Export preference data (DPO, KTO or reward rows; JSON Lines or Parquet) with hard negatives.
    Export(export_cmd::ExportArgs),
    /// Inspect or verify the write-ahead log of a data directory (read-only).
    Wal {
        #[command(subcommand)]
        command: wal_cmd::WalCommand,
    },
    /// A local cluster on loopback (`up`), its status, and explicit promotion.
    Cluster {
        #[command(subcommand)]
        command: cluster_cmd::ClusterCommand,
    },
    /// Benchmarks against a running server: `tidal bench http` (Tidal vs Redis, durable).
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Ingest(args) => ingest::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Demo { data_dir, no_serve } => {
            ingest::demo(&data_dir)?;
            if !no_serve {
                println!("Serving it over HTTP (Ctrl-C stops, snapshots and exits). Try:");
                println!("  curl 'http://127.0.0.1:7390/v1/top?k=5'");
                println!("  curl http://127.0.0.1:7390/v1/users/user-1/hard-negatives");
                println!("  curl http://127.0.0.1:7390/metrics");
                serve_cmd::run(serve_cmd::ServeArgs::for_data_dir(data_dir))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Item { id, data_dir } => {
            let db = open_for_reading(&data_dir)?;
            print_json(&db.item(&id).with_context(|| format!("no item `{id}`"))?)
        }
        Command::User { id, data_dir } => {
            let db = open_for_reading(&data_dir)?;
            print_json(&db.user(&id).with_context(|| format!("no user `{id}`"))?)
        }
        Command::Stats { data_dir } => {
            let db = open_for_reading(&data_dir)?;
            print_json(&serde_json::json!({ "shards": db.stats(), "recovery": db.recovery_report() }))
        }
        Command::Export(args) => export_cmd::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Wal { command } => wal_cmd::run(command),
        Command::Bench { command } => bench_cmd::run(command).map(|()| ExitCode::SUCCESS),
        Command::Cluster { command } => cluster_cmd::run(command).map(|()| ExitCode::SUCCESS),
    }
}

/// Opens an existing store (with a progress bar for long recoveries).
pub(crate) fn open_for_reading(data_dir: &std::path::Path) -> Result<Db> {
    if !data_dir.join(tidal::manifest::MANIFEST_FILE).exists() {
        anyhow::bail!("{} holds no Tidal store", data_dir.display());
    }
    open_with_progress(data_dir, Options::default())
}

/// Opens a store, drawing a progress bar while recovery replays the WAL.
pub(crate) fn open_with_progress(data_dir: &std::path::Path, mut options: Options) -> Result<Db> {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} recovering: {pos} records replayed ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let progress_bar = bar.clone();
    options.progress = Some(std::sync::Arc::new(move |_: tidal::options::RecoveryProgress| {
        // Drawn only once recovery is long enough to need it; shards report in turn.
        if progress_bar.is_hidden() {
            progress_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        progress_bar.inc(tidal::options::PROGRESS_EVERY_RECORDS);
    }));
    let db = Db::open(data_dir, options).with_context(|| format!("opening {}", data_dir.display()))?;
    bar.finish_and_clear();
    Ok(db)
}

fn print_json(value: &impl serde::Serialize) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}
