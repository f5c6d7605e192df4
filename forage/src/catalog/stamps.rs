//! Bulk reads for the in-memory candidate index and the feed's filters: every item's id,
//! source and time, the items of a label, and the increments since a watermark (items by
//! their `seq`, embeddings by their rowid: both only grow, and a replaced embedding gets a
//! new rowid), so the index catches up without a rebuild.

use rusqlite::OptionalExtension;

use super::{Catalog, CatalogError};

/// How far the catalog has grown: see [`Catalog::watermark`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark {
    pub items: i64,
    pub embeddings: i64,
}

/// An item's place in the candidate index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStamp {
    pub id: String,
    pub source_id: i64,
    /// Publication time, or the fetch time when the item has none.
    pub time_ms: i64,
}

impl Catalog {
    /// Every item, newest first.
    pub fn item_stamps(&self) -> Result<Vec<ItemStamp>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, source_id, COALESCE(published_ms, fetched_ms) AS t FROM items ORDER BY t DESC, seq DESC",
        )?;
        let rows = stmt
            .query_map([], |r| Ok(ItemStamp { id: r.get(0)?, source_id: r.get(1)?, time_ms: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The watermark of the catalog for `model`: the highest item `seq` and the highest
    /// embedding rowid of that model (0 when there are none).
    pub fn watermark(&self, model: &str) -> Result<Watermark, CatalogError> {
        let items: i64 = self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM items", [], |r| r.get(0))?;
        // Walks rowids from the top and stops at the first row of the model (the newest rows
        // are of the model in use): MAX(rowid) with a WHERE would scan the whole table,
        // vectors included, on every feed request.
        let embeddings: i64 = self
            .conn
            .query_row(
                "SELECT rowid FROM embeddings WHERE model = ?1 ORDER BY rowid DESC LIMIT 1",
                [model],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(Watermark { items, embeddings })
    }

    /// The items added after item `seq` `after` (at most `limit`), oldest first, with their seq.
    pub fn item_stamps_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ItemStamp)>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, source_id, COALESCE(published_ms, fetched_ms) FROM items
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
            Ok((r.get(0)?, ItemStamp { id: r.get(1)?, source_id: r.get(2)?, time_ms: r.get(3)? }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The embeddings of `model` stored after rowid `after` (at most `limit`), in rowid
    /// order: `(rowid, item id, vector)`.
    pub fn embeddings_after(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, Vec<f32>)>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, item_id, dims, vector FROM embeddings WHERE model = ?1 AND rowid > ?2
             ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(rusqlite::params![model, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rowid, item_id, dims, blob) = row?;
            let (item_id, vector) = super::labels::decode_vector(&item_id, dims, &blob)?;
            out.push((rowid, item_id, vector));
        }
        Ok(out)
    }

    /// Ids of the items that carry label `label_id`.
    pub fn items_with_label(&self, label_id: i64) -> Result<std::collections::HashSet<String>, CatalogError> {
        let mut stmt = self.conn.prepare("SELECT item_id FROM item_labels WHERE label_id = ?1")?;
        let rows = stmt.query_map([label_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
