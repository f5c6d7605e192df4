//! Items in the catalog: dedup on insert, reads, full-text search and embeddings.
//!
//! Dedup order (the rule): an incoming item is a duplicate if its source already holds
//! the same GUID, else if any item has the same URL, else if any item has the same content
//! hash. The UNIQUE constraints on `(source_id, guid)`, `url` and `content_hash` enforce the
//! same rule in the schema, so a bug here fails loudly instead of storing duplicates.

use rusqlite::{OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::{Catalog, CatalogError, PAGE_ITEMS_MAX, truncate_str};

/// Longest stored title.
pub const TITLE_BYTES_MAX: usize = 1024;
/// Longest stored summary.
pub const SUMMARY_BYTES_MAX: usize = 8192;
/// Most search terms taken from one query; the rest are ignored.
pub const SEARCH_TERMS_MAX: usize = 16;
/// Most items accepted by one upsert call.
pub const UPSERT_ITEMS_MAX: usize = 10_000;
/// Most dimensions of a stored embedding.
pub const EMBEDDING_DIMS_MAX: usize = 4096;

/// An item as a source produced it, before dedup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewItem {
    pub guid: Option<String>,
    pub url: Option<String>,
    pub title: String,
    /// Plain text.
    pub summary: String,
    pub published_ms: Option<i64>,
    pub authors: Vec<String>,
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stable id, `"it-"` + 16 hex digits; Tidal signals use it.
    pub id: String,
    pub source_id: i64,
    pub guid: Option<String>,
    pub url: Option<String>,
    pub title: String,
    pub summary: String,
    pub content_hash: String,
    pub published_ms: Option<i64>,
    pub fetched_ms: i64,
}

/// The content hash of an item: sha256 over the trimmed, lower-cased title and summary.
pub fn content_hash(title: &str, summary: &str) -> String {
    let mut h = Sha256::new();
    h.update(title.trim().to_lowercase().as_bytes());
    h.update([0u8]);
    h.update(summary.trim().to_lowercase().as_bytes());
    hex(&h.finalize())
}

/// The stable item id for a dedup key: `"it-"` + the first 16 hex digits of its sha256.
pub fn item_id(dedup_key: &str) -> String {
    let digest = Sha256::digest(dedup_key.as_bytes());
    // A sha256 digest is 32 bytes, so its hex form has 64 characters and the slice is in range.
    format!("it-{}", &hex(&digest)[..16])
}

/// The dedup key that names an item: its URL when it has one (global), else the source URL
/// plus its GUID, else its content hash.
fn dedup_key(source_url: &str, item: &NewItem, hash: &str) -> String {
    match (&item.url, &item.guid) {
        (Some(url), _) => format!("url:{url}"),
        (None, Some(guid)) => format!("guid:{source_url}\n{guid}"),
        (None, None) => format!("hash:{hash}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const ITEM_COLUMNS: &str =
    "i.id, i.source_id, i.guid, i.url, i.title, i.summary, i.content_hash, i.published_ms, i.fetched_ms";

impl Catalog {
    /// Inserts the items of one fetch of `source_id`, skipping duplicates; returns how many
    /// were new. All or nothing: one transaction.
    pub fn upsert_items(
        &mut self,
        source_id: i64,
        items: &[NewItem],
        fetched_ms: i64,
    ) -> Result<usize, CatalogError> {
        if items.len() > UPSERT_ITEMS_MAX {
            let reason = format!("{} items, at most {UPSERT_ITEMS_MAX}", items.len());
            return Err(CatalogError::InvalidInput { field: "items", reason });
        }
        let source_url: String = self
            .conn
            .query_row("SELECT url FROM sources WHERE id = ?1", [source_id], |r| r.get(0))
            .optional()?
            .ok_or(CatalogError::NoSuchSource { id: source_id })?;
        let tx = self.conn.transaction()?;
        let mut new = 0;
        for item in items {
            if insert_one(&tx, source_id, &source_url, item, fetched_ms)? {
                new += 1;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// One item by id.
    pub fn get_item(&self, id: &str) -> Result<Option<Item>, CatalogError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items i WHERE i.id = ?1");
        Ok(self.conn.query_row(&sql, [id], item_from_row).optional()?)
    }

    /// Items newest first (by published time, then fetch order), optionally of one source.
    pub fn list_items(
        &self,
        source_id: Option<i64>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Item>, CatalogError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items i WHERE (?1 IS NULL OR i.source_id = ?1)
             ORDER BY COALESCE(i.published_ms, i.fetched_ms) DESC, i.seq DESC LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let limit = limit.min(PAGE_ITEMS_MAX) as i64;
        let rows = stmt.query_map(params![source_id, limit, offset as i64], item_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Full-text search over titles and summaries, best match first (bm25). Every term of
    /// `query` is quoted, so no input can be an FTS syntax error; all terms must match.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Item>, CatalogError> {
        let Some(fts_query) = fts_query(query) else { return Ok(Vec::new()) };
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items_fts f JOIN items i ON i.seq = f.rowid
             WHERE items_fts MATCH ?1 ORDER BY bm25(items_fts) LIMIT ?2"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![fts_query, limit.min(PAGE_ITEMS_MAX) as i64], item_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of items, optionally of one source.
    pub fn count_items(&self, source_id: Option<i64>) -> Result<usize, CatalogError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM items WHERE (?1 IS NULL OR source_id = ?1)",
            [source_id],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Stores an item's embedding for `model` (little-endian f32), replacing an older one.
    pub fn put_embedding(&self, item_id: &str, model: &str, vector: &[f32]) -> Result<(), CatalogError> {
        if vector.is_empty() || vector.len() > EMBEDDING_DIMS_MAX {
            let reason = format!("{} dims, want 1..={EMBEDDING_DIMS_MAX}", vector.len());
            return Err(CatalogError::InvalidInput { field: "vector", reason });
        }
        let blob: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.conn.execute(
            "INSERT OR REPLACE INTO embeddings (item_id, model, dims, vector) VALUES (?1, ?2, ?3, ?4)",
            params![item_id, model, vector.len() as i64, blob],
        )?;
        Ok(())
    }

    /// An item's embedding for `model`; a blob whose length disagrees with `dims` is corruption.
    pub fn get_embedding(&self, item_id: &str, model: &str) -> Result<Option<Vec<f32>>, CatalogError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT dims, vector FROM embeddings WHERE item_id = ?1 AND model = ?2",
                [item_id, model],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((dims, blob)) = row else { return Ok(None) };
        if dims < 0 || blob.len() != dims as usize * 4 {
            let reason = format!("embedding of {item_id}: {} bytes for {dims} dims", blob.len());
            return Err(CatalogError::Corrupt { reason });
        }
        // chunks_exact(4) yields 4-byte slices only, so indexing 0..4 cannot fail.
        let v = blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Some(v))
    }
}

/// Inserts one item unless it is a duplicate; returns whether it was new.
fn insert_one(
    tx: &Transaction<'_>,
    source_id: i64,
    source_url: &str,
    item: &NewItem,
    fetched_ms: i64,
) -> Result<bool, CatalogError> {
    let title = truncate_str(item.title.trim(), TITLE_BYTES_MAX);
    let summary = truncate_str(item.summary.trim(), SUMMARY_BYTES_MAX);
    let guid = item.guid.as_deref().filter(|g| !g.is_empty());
    let url = item.url.as_deref().filter(|u| !u.is_empty());
    let hash = content_hash(title, summary);
    let exists: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM items WHERE (source_id = ?1 AND guid = ?2) OR url = ?3 OR content_hash = ?4
             LIMIT 1",
            params![source_id, guid, url, hash],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(false);
    }
    let normalized =
        NewItem { guid: guid.map(str::to_owned), url: url.map(str::to_owned), ..NewItem::default() };
    let id = item_id(&dedup_key(source_url, &normalized, &hash));
    // An id collision with a different dedup key is astronomically unlikely; OR IGNORE makes it
    // a skipped item rather than a failed refresh.
    let n = tx.execute(
        "INSERT OR IGNORE INTO items
            (id, source_id, guid, url, title, summary, content_hash, published_ms, fetched_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![id, source_id, guid, url, title, summary, hash, item.published_ms, fetched_ms],
    )?;
    Ok(n == 1)
}

/// Builds a safe FTS5 query: each whitespace-separated term is double-quoted (inner quotes
/// doubled), so operators and punctuation are matched as text. `None` if there are no terms.
pub(crate) fn fts_query(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split_whitespace()
        .take(SEARCH_TERMS_MAX)
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    if terms.is_empty() { None } else { Some(terms.join(" ")) }
}

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: r.get(0)?,
        source_id: r.get(1)?,
        guid: r.get(2)?,
        url: r.get(3)?,
        title: r.get(4)?,
        summary: r.get(5)?,
        content_hash: r.get(6)?,
        published_ms: r.get(7)?,
        fetched_ms: r.get(8)?,
    })
}
