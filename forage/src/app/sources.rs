//! Source operations of the app: list with posteriors, add, remove, refresh (one, all, due)
//! and OPML import, plus the background schedule. Fetching never holds the catalog lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::views::SourceView;
use super::{AppError, Forage, SCHEDULE_TICK};
use crate::bandit;
use crate::catalog::{INTERVAL_S_DEFAULT, Source};
use crate::sources::refresh::{RefreshReport, apply_fetches, fetch_sources};
use crate::sources::{SourceKind, opml};

/// Most sources one OPML import may add.
pub const IMPORT_SOURCES_MAX: usize = 1000;

/// What refreshing one source did, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RefreshView {
    pub id: i64,
    pub new_items: usize,
    pub not_modified: bool,
    pub error: Option<String>,
}

impl From<RefreshReport> for RefreshView {
    fn from(r: RefreshReport) -> Self {
        RefreshView { id: r.source_id, new_items: r.new_items, not_modified: r.not_modified, error: r.error }
    }
}

impl Forage {
    /// Every source with its item count and its arm's posterior for `user`.
    pub fn sources(&self, user: Option<&str>) -> Result<Vec<SourceView>, AppError> {
        let user = self.user_or_default(user)?;
        let rows: Vec<(Source, usize)> = {
            let catalog = self.catalog();
            let sources = catalog.list_sources()?;
            let mut rows = Vec::with_capacity(sources.len());
            for s in sources {
                let n = catalog.count_items(Some(s.id))?;
                rows.push((s, n));
            }
            rows
        };
        let mut out = Vec::with_capacity(rows.len());
        for (source, items) in rows {
            let counts = bandit::read_counts(self.store.as_ref(), user, &source.id.to_string())?;
            out.push(SourceView::new(source, items, bandit::posterior_from_counts(counts)));
        }
        Ok(out)
    }

    /// One source's view.
    pub fn source(&self, id: i64) -> Result<SourceView, AppError> {
        self.sources(None)?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| AppError::NotFound(format!("no source {id}")))
    }

    /// Adds a source (`http(s)://`, `file://` or `folder://`) and fetches it at once; a fetch
    /// failure is recorded on the source, not returned.
    pub fn add_source(&self, url: &str, interval_s: Option<i64>) -> Result<SourceView, AppError> {
        let url = url.trim();
        let kind = SourceKind::of_url(url)?;
        let interval_s = interval_s.unwrap_or(INTERVAL_S_DEFAULT);
        if interval_s <= 0 {
            return Err(AppError::invalid("interval_s", "must be positive"));
        }
        let id = self.catalog().add_source(url, kind.name(), interval_s, super::now_ms())?;
        self.refresh(Some(id))?;
        self.source(id)
    }

    /// Removes a source and its items.
    pub fn remove_source(&self, id: i64) -> Result<(), AppError> {
        if !self.catalog().remove_source(id)? {
            return Err(AppError::NotFound(format!("no source {id}")));
        }
        self.touch_removed();
        Ok(())
    }

    /// Fetches one source (`Some(id)`) or all of them now.
    pub fn refresh(&self, id: Option<i64>) -> Result<Vec<RefreshView>, AppError> {
        let sources = {
            let catalog = self.catalog();
            match id {
                Some(id) => vec![
                    catalog.get_source(id)?.ok_or_else(|| AppError::NotFound(format!("no source {id}")))?,
                ],
                None => catalog.list_sources()?,
            }
        };
        Ok(self.refresh_sources(&sources))
    }

    /// Fetches the sources whose interval has passed.
    pub fn refresh_due(&self) -> Result<Vec<RefreshView>, AppError> {
        let sources = self.catalog().due_sources(super::now_ms())?;
        Ok(self.refresh_sources(&sources))
    }

    fn refresh_sources(&self, sources: &[Source]) -> Vec<RefreshView> {
        if sources.is_empty() {
            return Vec::new();
        }
        let fetches = fetch_sources(&self.fetcher, sources);
        let reports = apply_fetches(&mut self.catalog(), sources, fetches, super::now_ms());
        if reports.iter().any(|r| r.new_items > 0) {
            self.touch();
        }
        reports.into_iter().map(RefreshView::from).collect()
    }

    /// Imports the subscriptions of an OPML document (relative paths resolve against the
    /// data folder) and fetches them; returns the sources it names.
    pub fn import_opml(&self, bytes: &[u8]) -> Result<Vec<SourceView>, AppError> {
        self.import_opml_from(bytes, &self.config.data_dir)
    }

    /// [`Forage::import_opml`] with relative paths resolved against `base_dir`.
    pub fn import_opml_from(
        &self,
        bytes: &[u8],
        base_dir: &std::path::Path,
    ) -> Result<Vec<SourceView>, AppError> {
        let feeds = opml::parse_opml(bytes)?;
        if feeds.len() > IMPORT_SOURCES_MAX {
            return Err(AppError::invalid(
                "opml",
                format!("{} feeds, at most {IMPORT_SOURCES_MAX}", feeds.len()),
            ));
        }
        let ids = opml::import_opml(&self.catalog(), bytes, base_dir, INTERVAL_S_DEFAULT, super::now_ms())?;
        let sources: Vec<Source> = {
            let catalog = self.catalog();
            ids.iter().filter_map(|id| catalog.get_source(*id).ok().flatten()).collect()
        };
        self.refresh_sources(&sources);
        let all = self.sources(None)?;
        Ok(all.into_iter().filter(|s| ids.contains(&s.id)).collect())
    }
}

/// Starts the schedule thread: every [`SCHEDULE_TICK`] it refreshes the due sources, until
/// [`Forage::shutdown`]. It holds a weak reference, so it never keeps the app alive.
pub(super) fn start_schedule(forage: &Arc<Forage>) {
    let weak = Arc::downgrade(forage);
    let stop = forage.stop.clone();
    let handle = std::thread::Builder::new().name("forage-schedule".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Some(app) = weak.upgrade() else { break };
            match app.refresh_due() {
                Ok(done) if !done.is_empty() => tracing::info!(sources = done.len(), "scheduled refresh"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduled refresh failed"),
            }
            drop(app);
            std::thread::park_timeout(SCHEDULE_TICK);
        }
    });
    match handle {
        Ok(h) => *forage.scheduler.lock().unwrap_or_else(|p| p.into_inner()) = Some(h),
        Err(e) => tracing::error!(error = %e, "cannot start the refresh schedule"),
    }
}
