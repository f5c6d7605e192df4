//! The Forage catalog: sources, items, labels and embeddings in one SQLite file.
//!
//! Owns the database connection and its schema (see [`schema`] for migrations). Invariants:
//! - every item belongs to exactly one source; removing a source removes its items (and their
//!   labels and embeddings) through `ON DELETE CASCADE`;
//! - `items_fts` mirrors `items.title`/`items.summary`; triggers keep it in sync, so no code
//!   path writes it directly;
//! - an item's id (`"it-" + 16 hex digits`) is a pure function of its dedup key and never
//!   changes, because Tidal signals refer to items by it;
//! - the connection is used from one thread (`Catalog` is `Send`, not `Sync`); refresh fetches
//!   in parallel but writes here sequentially.

mod items;
mod labels;
mod saved;
pub mod schema;
mod stamps;

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

pub use items::{Item, NewItem, UPSERT_ITEMS_MAX, content_hash, item_id};
pub use labels::{
    EmbeddedItem, ItemLabel, LABEL_EXAMPLE_BYTES_MAX, LABEL_EXAMPLES_MAX, LABEL_NAME_BYTES_MAX, LABELS_MAX,
    Label, LabelPatch, LabelSpec, PENDING_ITEMS_MAX,
};
pub use saved::SAVED_PER_USER_MAX;
pub use stamps::{ItemStamp, Watermark};

/// Default refresh interval of a new source.
pub const INTERVAL_S_DEFAULT: i64 = 3600;
/// Shortest refresh interval a source may ask for (politeness towards remote hosts).
pub const INTERVAL_S_MIN: i64 = 60;
/// Longest source URL accepted.
pub const URL_BYTES_MAX: usize = 4096;
/// Longest stored error message of a source.
pub const ERROR_BYTES_MAX: usize = 2048;
/// Most items returned by one list or search call.
pub const PAGE_ITEMS_MAX: usize = 500;

/// A catalog error. [`CatalogError::kind`] gives the coarse class.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog schema version {found} is newer than this build supports ({supported})")]
    TooNew { found: u32, supported: u32 },
    #[error("catalog is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("no such source: {id}")]
    NoSuchSource { id: i64 },
    #[error("no such label: {id}")]
    NoSuchLabel { id: i64 },
    #[error("no such item: {id}")]
    NoSuchItem { id: String },
    #[error("conflict: {what}")]
    Conflict { what: String },
}

/// A coarse class of [`CatalogError`], for callers that act on it (the HTTP layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogErrorKind {
    InvalidInput,
    NotFound,
    Conflict,
    Corruption,
    Unavailable,
}

impl CatalogError {
    /// The coarse class of this error.
    pub fn kind(&self) -> CatalogErrorKind {
        match self {
            CatalogError::InvalidInput { .. } => CatalogErrorKind::InvalidInput,
            CatalogError::NoSuchSource { .. }
            | CatalogError::NoSuchLabel { .. }
            | CatalogError::NoSuchItem { .. } => CatalogErrorKind::NotFound,
            CatalogError::Conflict { .. } => CatalogErrorKind::Conflict,
            CatalogError::Corrupt { .. } | CatalogError::TooNew { .. } => CatalogErrorKind::Corruption,
            CatalogError::Sqlite(_) => CatalogErrorKind::Unavailable,
        }
    }
}

/// A source row: where items come from, and the state of its last fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    /// `http(s)://…`, `file://…` or `folder://…`.
    pub url: String,
    /// `"http"`, `"file"` or `"folder"` (see `sources::SourceKind`).
    pub kind: String,
    pub title: Option<String>,
    pub interval_s: i64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub last_fetch_ms: Option<i64>,
    /// The error of the last fetch, `None` after a success.
    pub last_error: Option<String>,
    pub added_ms: i64,
}

/// The outcome of one fetch of a source, recorded by [`Catalog::record_fetch`].
#[derive(Debug, Clone, Default)]
pub struct FetchRecord {
    pub fetched_ms: i64,
    /// `Some` replaces the stored title.
    pub title: Option<String>,
    /// Conditional-GET state; `None` keeps the stored value.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `None` marks success and clears the previous error.
    pub error: Option<String>,
}

/// The catalog handle.
pub struct Catalog {
    pub(crate) conn: Connection,
}

const SOURCE_COLUMNS: &str =
    "id, url, kind, title, interval_s, etag, last_modified, last_fetch_ms, last_error, added_ms";

impl Catalog {
    /// Opens (or creates) the catalog at `path`, in WAL mode, migrated to the newest schema.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        Self::from_connection(Connection::open(path)?)
    }

    /// An in-memory catalog (tests and demos).
    pub fn open_in_memory() -> Result<Catalog, CatalogError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Catalog, CatalogError> {
        // journal_mode returns a row, so it cannot go through execute_batch.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;")?;
        schema::migrate_to(&mut conn, schema::SCHEMA_VERSION)?;
        Ok(Catalog { conn })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        schema::version(&self.conn)
    }

    /// Adds a source, or returns the id of the existing source with the same URL.
    pub fn add_source(
        &self,
        url: &str,
        kind: &str,
        interval_s: i64,
        now_ms: i64,
    ) -> Result<i64, CatalogError> {
        if url.is_empty() || url.len() > URL_BYTES_MAX {
            let reason = format!("length {} not in 1..={URL_BYTES_MAX}", url.len());
            return Err(CatalogError::InvalidInput { field: "url", reason });
        }
        let interval_s = interval_s.max(INTERVAL_S_MIN);
        self.conn.execute(
            "INSERT INTO sources (url, kind, interval_s, added_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(url) DO NOTHING",
            params![url, kind, interval_s, now_ms],
        )?;
        let id = self.conn.query_row("SELECT id FROM sources WHERE url = ?1", [url], |r| r.get(0))?;
        Ok(id)
    }

    /// All sources, oldest first.
    pub fn list_sources(&self) -> Result<Vec<Source>, CatalogError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], source_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One source by id.
    pub fn get_source(&self, id: i64) -> Result<Option<Source>, CatalogError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], source_from_row).optional()?)
    }

    /// Removes a source and, by cascade, its items. Returns whether it existed.
    pub fn remove_source(&self, id: i64) -> Result<bool, CatalogError> {
        Ok(self.conn.execute("DELETE FROM sources WHERE id = ?1", [id])? > 0)
    }

    /// Sets how often a source is refreshed (clamped to [`INTERVAL_S_MIN`]).
    pub fn set_interval(&self, id: i64, interval_s: i64) -> Result<(), CatalogError> {
        let n = self.conn.execute(
            "UPDATE sources SET interval_s = ?2 WHERE id = ?1",
            params![id, interval_s.max(INTERVAL_S_MIN)],
        )?;
        if n == 0 { Err(CatalogError::NoSuchSource { id }) } else { Ok(()) }
    }

    /// Sets a source's title unless it already has one (OPML import names sources early).
    pub fn set_title_if_missing(&self, id: i64, title: &str) -> Result<(), CatalogError> {
        self.conn
            .execute("UPDATE sources SET title = ?2 WHERE id = ?1 AND title IS NULL", params![id, title])?;
        Ok(())
    }

    /// Sources due for a refresh at `now_ms`: never fetched, or fetched at least `interval_s` ago.
    pub fn due_sources(&self, now_ms: i64) -> Result<Vec<Source>, CatalogError> {
        let sql = format!(
            "SELECT {SOURCE_COLUMNS} FROM sources
             WHERE last_fetch_ms IS NULL OR last_fetch_ms + interval_s * 1000 <= ?1 ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([now_ms], source_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the outcome of a fetch: time, error (or its absence), title, conditional-GET state.
    pub fn record_fetch(&self, id: i64, rec: &FetchRecord) -> Result<(), CatalogError> {
        let error = rec.error.as_deref().map(|e| truncate_str(e, ERROR_BYTES_MAX));
        let n = self.conn.execute(
            "UPDATE sources SET last_fetch_ms = ?2, last_error = ?3,
                 title = COALESCE(?4, title), etag = COALESCE(?5, etag),
                 last_modified = COALESCE(?6, last_modified)
             WHERE id = ?1",
            params![id, rec.fetched_ms, error, rec.title, rec.etag, rec.last_modified],
        )?;
        if n == 0 { Err(CatalogError::NoSuchSource { id }) } else { Ok(()) }
    }
}

fn source_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: r.get(0)?,
        url: r.get(1)?,
        kind: r.get(2)?,
        title: r.get(3)?,
        interval_s: r.get(4)?,
        etag: r.get(5)?,
        last_modified: r.get(6)?,
        last_fetch_ms: r.get(7)?,
        last_error: r.get(8)?,
        added_ms: r.get(9)?,
    })
}

/// Cuts `s` to at most `bytes_max` bytes on a character boundary.
pub(crate) fn truncate_str(s: &str, bytes_max: usize) -> &str {
    if s.len() <= bytes_max {
        return s;
    }
    let mut end = bytes_max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
