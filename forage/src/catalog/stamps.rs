//! Bulk reads for the in-memory candidate index and the feed's filters: every item's id,
//! source and time, and the items of a label. (Embeddings come from `all_embeddings`.)

use super::{Catalog, CatalogError};

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

    /// Ids of the items that carry label `label_id`.
    pub fn items_with_label(&self, label_id: i64) -> Result<std::collections::HashSet<String>, CatalogError> {
        let mut stmt = self.conn.prepare("SELECT item_id FROM item_labels WHERE label_id = ?1")?;
        let rows = stmt.query_map([label_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
