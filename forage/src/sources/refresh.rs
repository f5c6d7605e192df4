//! Refreshing sources: fetch, parse, upsert into the catalog, record the outcome per source.
//!
//! Owns the refresh loop and the schedule. Fetching (network and disk reads, the slow part)
//! runs on a bounded pool of scoped threads sharing one [`HttpFetcher`], so its per-host limit
//! holds; the catalog is written afterwards on the caller's thread, one source at a time.
//! Invariants: every refreshed source gets its outcome recorded (success clears `last_error`,
//! failure sets it); one failing source never stops the others; a 304 changes no items and
//! keeps the stored validators; time comes in as `now_ms`, never from the system clock here.

use std::fs::File;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::feed::{FEED_BYTES_MAX, parse_feed};
use super::folder::load_folder;
use super::http::{Fetched, HttpFetcher, Validators};
use super::{SourceError, SourceKind};
use crate::catalog::{Catalog, CatalogError, FetchRecord, NewItem, Source};

/// Most sources fetched at the same time (the per-host limit applies within this).
pub const REFRESH_THREADS_MAX: usize = 8;

/// What one refresh of one source did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub source_id: i64,
    pub url: String,
    /// Items that were not in the catalog before.
    pub new_items: usize,
    /// The server answered 304 Not Modified.
    pub not_modified: bool,
    /// The error recorded on the source, `None` on success.
    pub error: Option<String>,
}

/// A fetched and parsed source, before it touches the catalog.
enum Outcome {
    NotModified,
    Items { title: Option<String>, items: Vec<NewItem>, validators: Validators },
}

/// Refreshes every source.
pub fn refresh_all(
    catalog: &mut Catalog,
    fetcher: &HttpFetcher,
    now_ms: i64,
) -> Result<Vec<RefreshReport>, CatalogError> {
    let sources = catalog.list_sources()?;
    Ok(refresh_sources(catalog, fetcher, &sources, now_ms))
}

/// Refreshes the sources whose interval has passed at `now_ms` (the scheduled refresh).
pub fn refresh_due(
    catalog: &mut Catalog,
    fetcher: &HttpFetcher,
    now_ms: i64,
) -> Result<Vec<RefreshReport>, CatalogError> {
    let sources = catalog.due_sources(now_ms)?;
    Ok(refresh_sources(catalog, fetcher, &sources, now_ms))
}

/// Refreshes one source on demand.
pub fn refresh_one(
    catalog: &mut Catalog,
    fetcher: &HttpFetcher,
    source_id: i64,
    now_ms: i64,
) -> Result<RefreshReport, CatalogError> {
    let source = catalog.get_source(source_id)?.ok_or(CatalogError::NoSuchSource { id: source_id })?;
    let mut reports = refresh_sources(catalog, fetcher, &[source], now_ms);
    reports.pop().ok_or(CatalogError::NoSuchSource { id: source_id })
}

/// Fetches `sources` in parallel, then applies each result to the catalog in order.
pub fn refresh_sources(
    catalog: &mut Catalog,
    fetcher: &HttpFetcher,
    sources: &[Source],
    now_ms: i64,
) -> Vec<RefreshReport> {
    let fetches = fetch_sources(fetcher, sources);
    apply_fetches(catalog, sources, fetches, now_ms)
}

/// The result of fetching one source, not yet applied to the catalog.
pub struct FetchResult(Result<Outcome, SourceError>);

/// Fetches and parses `sources` in parallel without touching the catalog, so a caller that
/// shares the catalog can fetch without holding it and then [`apply_fetches`] under its lock.
pub fn fetch_sources(fetcher: &HttpFetcher, sources: &[Source]) -> Vec<FetchResult> {
    fetch_all(fetcher, sources).into_iter().map(FetchResult).collect()
}

/// Applies fetch results (from [`fetch_sources`] of the same `sources`, in order) to the
/// catalog: new items, the fetch time, validators and the source's error.
pub fn apply_fetches(
    catalog: &mut Catalog,
    sources: &[Source],
    fetches: Vec<FetchResult>,
    now_ms: i64,
) -> Vec<RefreshReport> {
    sources.iter().zip(fetches).map(|(source, fetch)| apply(catalog, source, fetch.0, now_ms)).collect()
}

fn fetch_all(fetcher: &HttpFetcher, sources: &[Source]) -> Vec<Result<Outcome, SourceError>> {
    let slots: Vec<Mutex<Option<Result<Outcome, SourceError>>>> =
        sources.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = sources.len().min(REFRESH_THREADS_MAX);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = sources.get(i) else { break };
                    let result = fetch_source(fetcher, source);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            let taken = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            // A worker that panicked leaves its slot empty; report it rather than propagate.
            taken.unwrap_or_else(|| Err(SourceError::Parse { reason: "fetch worker failed".into() }))
        })
        .collect()
}

fn fetch_source(fetcher: &HttpFetcher, source: &Source) -> Result<Outcome, SourceError> {
    match SourceKind::of_url(&source.url)? {
        SourceKind::Http => {
            let validators =
                Validators { etag: source.etag.clone(), last_modified: source.last_modified.clone() };
            match fetcher.fetch(&source.url, &validators)? {
                Fetched::NotModified => Ok(Outcome::NotModified),
                Fetched::Body { bytes, validators } => {
                    let feed = parse_feed(&bytes)?;
                    Ok(Outcome::Items { title: feed.title, items: feed.items, validators })
                }
            }
        }
        SourceKind::File(path) => {
            let file = File::open(&path).map_err(|e| SourceError::io("open feed", &path, e))?;
            let mut bytes = Vec::new();
            file.take(FEED_BYTES_MAX as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| SourceError::io("read feed", &path, e))?;
            let feed = parse_feed(&bytes)?;
            Ok(Outcome::Items { title: feed.title, items: feed.items, validators: Validators::default() })
        }
        SourceKind::Folder(path) => {
            let title = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let items = load_folder(&path)?;
            Ok(Outcome::Items { title, items, validators: Validators::default() })
        }
    }
}

fn apply(
    catalog: &mut Catalog,
    source: &Source,
    result: Result<Outcome, SourceError>,
    now_ms: i64,
) -> RefreshReport {
    let mut report = RefreshReport {
        source_id: source.id,
        url: source.url.clone(),
        new_items: 0,
        not_modified: false,
        error: None,
    };
    let mut record = FetchRecord { fetched_ms: now_ms, ..FetchRecord::default() };
    match result {
        Ok(Outcome::NotModified) => report.not_modified = true,
        Ok(Outcome::Items { title, items, validators }) => {
            match catalog.upsert_items(source.id, &items, now_ms) {
                Ok(n) => report.new_items = n,
                Err(e) => record.error = Some(e.to_string()),
            }
            record.title = title;
            record.etag = validators.etag;
            record.last_modified = validators.last_modified;
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    if let Some(err) = &record.error {
        tracing::warn!(source = %source.url, error = %err, "source refresh failed");
    }
    report.error = record.error.clone();
    if let Err(e) = catalog.record_fetch(source.id, &record) {
        report.error = Some(format!("recording fetch: {e}"));
    }
    report
}
