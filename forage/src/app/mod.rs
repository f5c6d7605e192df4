//! The Forage application: one [`Forage`] value owns the catalog, the Tidal access, the
//! embedder, the background embedding worker and the refresh schedule, and offers every
//! operation the HTTP API and the CLI need (feed, feedback, items, search, labels, sources,
//! stats, export, offline evaluation).
//!
//! Invariants:
//! - the catalog sits behind one mutex and is never held across network I/O or embedding:
//!   refresh fetches first and applies under the lock; the worker embeds outside it;
//! - every operation validates its input before it writes anything (to the catalog or to
//!   Tidal), and reports bad input as [`AppError::InvalidInput`] naming the field;
//! - all calls block: async callers run them on a blocking thread.
//!
//! Submodules: [`feed`] (ranking, bandit, impression logging), `index` (the candidate
//! index, caught up with the catalog on every request, its embeddings in a `slab`),
//! `seen_bits` (a user's touched items as a bitset over the index), [`users`] (every user's seen state,
//! taste and content-bandit posterior, rebuilt from Tidal), `contexts` (paging), `history`
//! (the saved list and the history view), `feedback`,
//! `sources` (add/remove/refresh/import and the schedule), `export` (preference rows with
//! texts and mined negatives), `stats`, `labels`, [`demo`] (bundled samples).

mod contexts;
pub mod demo;
mod export;
pub mod feed;
mod feedback;
mod history;
mod index;
mod items;
mod labels;
mod seen_bits;
mod slab;
mod sources;
mod stats;
pub mod users;
mod views;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::bandit::BanditError;
use crate::catalog::{Catalog, CatalogError, CatalogErrorKind};
use crate::embed::Embedder;
use crate::embed::worker::EmbedWorker;
use crate::labels::LabelError;
use crate::sources::SourceError;
use crate::sources::http::{FetchOptions, HttpFetcher};
use crate::store::{StoreError, TidalAccess};

pub use contexts::{CONTEXT_ITEMS_MAX, CONTEXTS_MAX};
pub use export::{ExportRequest, MINED_MARGIN, MINED_SIM_MIN};
pub use feed::{FeedItem, FeedPage, FeedRequest};
pub use feedback::{FeedbackAnswer, FeedbackRequest};
pub use history::{HISTORY_LIMIT_MAX, HistoryEntry, HistoryPage, SavedItem};
pub use items::{EvalSummary, ItemDetail, PolicyEstimate};
pub use labels::{LabelEdit, LabelView, NewLabel};
pub use sources::RefreshView;
pub use stats::{ArmStats, FeedbackTotals, Stats};
pub use views::{ItemLabelView, ItemView, SourceView};

/// The user a request is for when it names none.
pub const USER_DEFAULT: &str = "me";
/// Longest user id accepted.
pub const USER_BYTES_MAX: usize = 64;
/// Mixed into [`Config::seed`] to seed the propensity estimate's own generator.
const PROPENSITY_SEED_SALT: u64 = 0x1b5_d1ce;
/// How often the schedule looks for sources due for a refresh.
pub const SCHEDULE_TICK: Duration = Duration::from_secs(30);

/// What an operation can fail with; the HTTP layer maps each variant to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("invalid {field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Unavailable(String),
    /// The thing existed once and is gone for good (an expired feed cursor).
    #[error("{0}")]
    Gone(String),
}

impl AppError {
    pub fn invalid(field: &str, message: impl Into<String>) -> AppError {
        AppError::InvalidInput { field: field.to_owned(), message: message.into() }
    }
}

impl From<CatalogError> for AppError {
    fn from(e: CatalogError) -> Self {
        match (&e, e.kind()) {
            (CatalogError::InvalidInput { field, reason }, _) => AppError::invalid(field, reason.clone()),
            (_, CatalogErrorKind::NotFound) => AppError::NotFound(e.to_string()),
            (_, CatalogErrorKind::Conflict) => AppError::Conflict(e.to_string()),
            _ => AppError::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(m) => AppError::invalid("signal", m),
            StoreError::Unavailable(m) => AppError::Unavailable(m),
            StoreError::Unsupported(m) => AppError::Unsupported(m),
        }
    }
}

impl From<BanditError> for AppError {
    fn from(e: BanditError) -> Self {
        match e {
            BanditError::InvalidInput { field, reason } => AppError::InvalidInput { field, message: reason },
            BanditError::Store(s) => s.into(),
        }
    }
}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Catalog(c) => c.into(),
            SourceError::UnsupportedUrl { .. } => AppError::invalid("url", e.to_string()),
            SourceError::Opml { .. } => AppError::invalid("opml", e.to_string()),
            other => AppError::Unavailable(other.to_string()),
        }
    }
}

impl From<LabelError> for AppError {
    fn from(e: LabelError) -> Self {
        match e {
            LabelError::Catalog(c) => c.into(),
            LabelError::InvalidInput { field, reason } => AppError::invalid(field, reason),
            LabelError::NotFound(m) => AppError::NotFound(m),
            other => AppError::Unavailable(other.to_string()),
        }
    }
}

/// How to build a [`Forage`].
pub struct Config {
    /// Folder for the catalog (and, with an embedded store, Tidal's data).
    pub data_dir: PathBuf,
    /// The user requests are for unless they name one.
    pub user: String,
    /// Start the background work at once: the refresh schedule and the embedding worker.
    /// Off for one-shot CLI commands, which embed in the foreground with a progress bar, and
    /// for set-up that embeds in the foreground first ([`Forage::start_background`] later).
    pub background: bool,
    /// Options of the HTTP feed fetcher.
    pub fetch: FetchOptions,
    /// Seed of the bandit's random draws (`None`: from the OS).
    pub seed: Option<u64>,
    /// The diversity rule across sources of one page.
    pub diversity: crate::rank::Diversity,
    /// Rank with the content bandit's draw (linear Thompson sampling on the items'
    /// embeddings); off, the feed ranks by taste and freshness only.
    pub content_bandit: bool,
    /// Posterior scale of the content bandit's draw (more explores more).
    pub exploration: f64,
}

impl Config {
    /// Defaults for a data folder: user `me`, schedule on, default fetch options.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            user: USER_DEFAULT.to_owned(),
            background: true,
            fetch: FetchOptions::default(),
            seed: None,
            diversity: crate::rank::Diversity::default(),
            content_bandit: true,
            exploration: crate::bandit::linear::EXPLORATION_DEFAULT,
        }
    }
}

/// The catalog file inside a data folder.
pub fn catalog_path(data_dir: &Path) -> PathBuf {
    data_dir.join("catalog.sqlite")
}

/// The embedded Tidal store's folder inside a data folder.
pub fn tidal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tidal")
}

/// The application. Share it behind an `Arc`; every method takes `&self`.
pub struct Forage {
    config: Config,
    catalog: Arc<Mutex<Catalog>>,
    store: Arc<dyn TidalAccess>,
    embedder: Arc<dyn Embedder>,
    fetcher: HttpFetcher,
    worker: OnceLock<EmbedWorker>,
    index: index::IndexCache,
    users: users::Users,
    contexts: contexts::Contexts,
    rng: Mutex<StdRng>,
    /// The draws behind item-level propensities only (`bandit::item_choice`): apart from
    /// `rng`, so that estimating propensities never changes what the feed shows.
    propensity_rng: Mutex<StdRng>,
    /// Bumped when items leave the catalog (the candidate index is rebuilt before use).
    generation: Arc<AtomicU64>,
    index_source: index::IndexSource,
    metrics: stats::Metrics,
    stop: Arc<AtomicBool>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
}

impl Forage {
    /// Opens the catalog in `config.data_dir`, starts the embedding worker (and the refresh
    /// schedule when `config.schedule`).
    pub fn open(
        config: Config,
        store: Arc<dyn TidalAccess>,
        embedder: Arc<dyn Embedder>,
    ) -> Result<Arc<Forage>, AppError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            AppError::Unavailable(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        check_user(&config.user)?;
        let catalog = Arc::new(Mutex::new(Catalog::open(&catalog_path(&config.data_dir))?));
        let (rng, propensity_rng) = match config.seed {
            Some(seed) => (StdRng::seed_from_u64(seed), StdRng::seed_from_u64(seed ^ PROPENSITY_SEED_SALT)),
            None => (StdRng::from_os_rng(), StdRng::from_os_rng()),
        };
        let fetcher = HttpFetcher::new(config.fetch.clone());
        let index_source =
            index::IndexSource { path: catalog_path(&config.data_dir), model: embedder.name().to_owned() };
        let forage = Arc::new(Forage {
            config,
            catalog,
            store,
            embedder,
            fetcher,
            worker: OnceLock::new(),
            index: index::IndexCache::default(),
            users: users::Users::default(),
            contexts: contexts::Contexts::default(),
            rng: Mutex::new(rng),
            propensity_rng: Mutex::new(propensity_rng),
            generation: Arc::new(AtomicU64::new(0)),
            index_source,
            metrics: stats::Metrics::default(),
            stop: Arc::new(AtomicBool::new(false)),
            scheduler: Mutex::new(None),
        });
        let contexts = &forage.contexts;
        forage.users.rebuild(forage.store.as_ref(), &mut |e| {
            if let (Some(context), Some(position)) = (e.context, e.position) {
                contexts.note(context, e.user, position);
            }
        })?;
        if forage.config.background {
            forage.start_background();
        }
        Ok(forage)
    }

    /// Starts the embedding worker and the refresh schedule (once; later calls do nothing).
    pub fn start_background(self: &Arc<Self>) {
        let mut started = false;
        self.worker.get_or_init(|| {
            started = true;
            EmbedWorker::spawn(self.catalog.clone(), self.embedder.clone())
        });
        if started {
            sources::start_schedule(self);
            self.warm_index();
        }
    }

    /// Whether the candidate index is built (at start-up by [`Forage::start_background`], or
    /// by the first feed request) and not being updated at this moment.
    pub fn index_ready(&self) -> bool {
        self.index.is_built()
    }

    /// Builds the candidate index on a thread of its own right away, so that the first feed
    /// request of a large catalog (about 15 s at a million items) does not wait for all of
    /// it: a request that comes sooner waits for the same build, never starts a second one.
    fn warm_index(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("forage-index".into()).spawn(move || {
            let Some(app) = app.upgrade() else { return };
            let started = std::time::Instant::now();
            match app.candidate_index() {
                Ok(index) => tracing::info!(
                    items = index.read().items(),
                    ms = started.elapsed().as_millis() as u64,
                    "candidate index ready"
                ),
                Err(error) => {
                    tracing::warn!(%error, "candidate index not built at start-up; the first feed builds it")
                }
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread for the candidate index; the first feed builds it");
        }
    }

    /// The default user.
    pub fn user(&self) -> &str {
        &self.config.user
    }

    /// The Tidal access in use.
    pub fn store(&self) -> &Arc<dyn TidalAccess> {
        &self.store
    }

    /// The embedder in use.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Locks the catalog (poisoning is ignored: every catalog write is one transaction).
    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Embeds every item that has no embedding yet, now, on this thread (the CLI wraps it in
    /// a progress bar); the worker does the same in the background.
    pub fn embed_pending(
        &self,
        progress: &dyn Fn(crate::embed::worker::EmbedProgress),
    ) -> Result<crate::embed::worker::EmbedReport, AppError> {
        let report = crate::embed::worker::embed_pending(&self.catalog, self.embedder.as_ref(), progress)?;
        self.touch();
        Ok(report)
    }

    /// The embedding worker's state (the default state without background work).
    pub fn worker_status(&self) -> crate::embed::worker::WorkerStatus {
        self.worker.get().map(EmbedWorker::status).unwrap_or_default()
    }

    fn notify_worker(&self) {
        if let Some(worker) = self.worker.get() {
            worker.notify();
        }
    }

    /// Stops the schedule and the worker, waiting for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.scheduler.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
        if let Some(worker) = self.worker.get() {
            worker.shutdown();
        }
    }

    /// Wakes the embedding worker after items were added (the candidate index catches up
    /// with the catalog by itself on the next request).
    fn touch(&self) {
        self.notify_worker();
    }

    /// Marks items as removed: the next feed waits for a fresh candidate index.
    fn touch_removed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn user_or_default<'a>(&'a self, user: Option<&'a str>) -> Result<&'a str, AppError> {
        let user = user.unwrap_or(&self.config.user);
        check_user(user)?;
        Ok(user)
    }
}

fn check_user(user: &str) -> Result<(), AppError> {
    if user.is_empty() || user.len() > USER_BYTES_MAX {
        return Err(AppError::invalid("user", format!("must be 1..={USER_BYTES_MAX} bytes")));
    }
    if user.starts_with(crate::bandit::COUNTER_USER_PREFIX) {
        return Err(AppError::invalid("user", "names starting with `forage-arms:` are reserved"));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
