//! Schema migrations for the catalog.
//!
//! Owns the `schema_version` table and the ordered list of migration steps. Invariants: steps
//! are append-only (never edit a released step, add a new one); each step runs inside one
//! transaction together with the version bump, so a database is always at exactly one version;
//! a database newer than this code is refused rather than guessed at.

use rusqlite::{Connection, Transaction};

use super::CatalogError;

/// One migration step: takes the schema from version `index` to `index + 1`.
type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// The migration steps in order; `STEPS[n]` migrates version `n` to `n + 1`.
const STEPS: &[Step] = &[
    step_1_sources_items_fts,
    step_2_labels_embeddings,
    step_3_label_feedback,
    step_4_saved,
    step_5_label_calibration,
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = STEPS.len() as u32;

/// Reads the current schema version (0 for an empty database).
pub fn version(conn: &Connection) -> Result<u32, CatalogError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let v: Option<i64> = conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    let v = v.unwrap_or(0);
    u32::try_from(v).map_err(|_| CatalogError::Corrupt { reason: format!("schema version {v}") })
}

/// Migrates the database up to `target` (at most [`SCHEMA_VERSION`]).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, CatalogError> {
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(CatalogError::TooNew { found: current, supported: SCHEMA_VERSION });
    }
    let target = target.min(SCHEMA_VERSION);
    for v in current..target {
        let tx = conn.transaction()?;
        STEPS[v as usize](&tx)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [v + 1])?;
        tx.commit()?;
        tracing::info!(version = v + 1, "catalog migrated");
    }
    version(conn)
}

fn step_1_sources_items_fts(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            title TEXT,
            interval_s INTEGER NOT NULL,
            etag TEXT,
            last_modified TEXT,
            last_fetch_ms INTEGER,
            last_error TEXT,
            added_ms INTEGER NOT NULL
        );
        CREATE TABLE items (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            guid TEXT,
            url TEXT,
            title TEXT NOT NULL,
            summary TEXT NOT NULL,
            content_hash TEXT NOT NULL UNIQUE,
            published_ms INTEGER,
            fetched_ms INTEGER NOT NULL,
            UNIQUE (source_id, guid)
        );
        CREATE UNIQUE INDEX items_url ON items(url) WHERE url IS NOT NULL;
        CREATE INDEX items_source ON items(source_id, published_ms);
        CREATE VIRTUAL TABLE items_fts USING fts5(
            title, summary, content='items', content_rowid='seq'
        );
        CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
            INSERT INTO items_fts(rowid, title, summary) VALUES (new.seq, new.title, new.summary);
        END;
        CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, title, summary)
                VALUES ('delete', old.seq, old.title, old.summary);
        END;
        CREATE TRIGGER items_au AFTER UPDATE ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, title, summary)
                VALUES ('delete', old.seq, old.title, old.summary);
            INSERT INTO items_fts(rowid, title, summary) VALUES (new.seq, new.title, new.summary);
        END;",
    )
}

fn step_2_labels_embeddings(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE labels (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            examples TEXT NOT NULL DEFAULT '[]',
            threshold REAL NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE item_labels (
            item_id TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            label_id INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
            score REAL NOT NULL,
            PRIMARY KEY (item_id, label_id)
        );
        CREATE TABLE embeddings (
            item_id TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            dims INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (item_id, model)
        );",
    )
}

fn step_3_label_feedback(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE label_feedback (
            label_id INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
            item_id TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            confirm INTEGER NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (label_id, item_id)
        );
        CREATE INDEX label_feedback_item ON label_feedback(item_id);
        CREATE INDEX item_labels_label ON item_labels(label_id);",
    )
}

fn step_4_saved(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE saved (
            user TEXT NOT NULL,
            item_id TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            saved_ms INTEGER NOT NULL,
            PRIMARY KEY (user, item_id)
        );
        CREATE INDEX saved_user_time ON saved(user, saved_ms);",
    )
}

fn step_5_label_calibration(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    // Labels made before calibration keep the threshold they were given (calibrated = 0).
    tx.execute_batch(
        "ALTER TABLE labels ADD COLUMN calibrated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE labels ADD COLUMN strict INTEGER NOT NULL DEFAULT 0;",
    )
}
