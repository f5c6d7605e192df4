//! The in-memory candidate index: every item's id, source, time, embedding and bandit
//! features, grouped by source newest first, so a feed request ranks from memory instead
//! of reading the catalog.
//!
//! Freshness: a feed request first brings the index up to the catalog's [`Watermark`]
//! ([`IndexCache::get`]): the items and embeddings added since the index's watermark are
//! read (two indexed range reads) and merged in, so a request never answers from an index
//! that misses an item the catalog holds, and an item is in the feed as soon as it is in
//! the catalog (and ranked by content as soon as its embedding is stored). Only a removal
//! (a source removed) rebuilds the whole index.
//!
//! Invariants: an item appears once (merges skip ids already held); an embedding is set
//! once per item (a later re-embedding of the same model is picked up by the next full
//! rebuild); entries of a source stay newest first; the features are the embedding under
//! the index's one [`Projection`] (made from the first embedding's dimension).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::bandit::linear::Projection;
use crate::catalog::{Catalog, CatalogError, ItemStamp, Watermark};

/// Rows read per range read while catching up.
pub const CATCH_UP_BATCH: usize = 4096;

/// An item's vectors, set once its embedding is known.
#[derive(Debug)]
pub struct Vectors {
    pub embedding: Arc<[f32]>,
    /// The content bandit's features, `None` when the embedding has another dimension than
    /// the projection.
    pub features: Option<Arc<[f32]>>,
}

/// One item in the index.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: Arc<str>,
    pub time_ms: i64,
    /// Shared with the index's id map, so setting an embedding needs no search.
    pub vectors: Arc<OnceLock<Vectors>>,
}

impl Entry {
    pub fn embedding(&self) -> Option<&Arc<[f32]>> {
        self.vectors.get().map(|v| &v.embedding)
    }

    pub fn features(&self) -> Option<&Arc<[f32]>> {
        self.vectors.get().and_then(|v| v.features.as_ref())
    }
}

/// A built index.
#[derive(Clone, Default)]
pub struct CandidateIndex {
    /// Source id → its items, newest first.
    pub by_source: BTreeMap<i64, Vec<Entry>>,
    slots: HashMap<Arc<str>, Arc<OnceLock<Vectors>>>,
    projection: Option<Arc<Projection>>,
    watermark: Watermark,
    model: String,
}

impl CandidateIndex {
    /// Builds the index from the catalog with the embeddings of `model`.
    pub fn build(catalog: &Catalog, model: &str) -> Result<CandidateIndex, CatalogError> {
        let watermark = catalog.watermark(model)?;
        let mut index = CandidateIndex { model: model.to_owned(), ..CandidateIndex::default() };
        for s in catalog.item_stamps()? {
            let entry = Entry { id: Arc::from(s.id.as_str()), time_ms: s.time_ms, vectors: Arc::default() };
            index.slots.insert(entry.id.clone(), entry.vectors.clone());
            // item_stamps is newest first: pushing keeps each source's order.
            index.by_source.entry(s.source_id).or_default().push(entry);
        }
        for (id, vector) in catalog.all_embeddings(model)? {
            index.set_embedding(&id, vector);
        }
        // Rows written while building are merged again by the next catch-up (merges are
        // idempotent), so starting from the watermark read first loses nothing.
        index.watermark = watermark;
        index.catch_up(catalog)?;
        Ok(index)
    }

    fn set_embedding(&mut self, id: &str, vector: Vec<f32>) {
        let Some(slot) = self.slots.get(id) else { return };
        if slot.get().is_some() {
            return;
        }
        let projection = self.projection.get_or_insert_with(|| Arc::new(Projection::new(vector.len())));
        let features = projection.project(&vector).map(Arc::from);
        let _ = slot.set(Vectors { embedding: Arc::from(vector), features });
    }

    fn insert(&mut self, source_id: i64, stamp: ItemStamp) {
        if self.slots.contains_key(stamp.id.as_str()) {
            return;
        }
        let entry =
            Entry { id: Arc::from(stamp.id.as_str()), time_ms: stamp.time_ms, vectors: Arc::default() };
        self.slots.insert(entry.id.clone(), entry.vectors.clone());
        let entries = self.by_source.entry(source_id).or_default();
        // Newest first; a new item usually goes to the front.
        let at = entries.partition_point(|e| e.time_ms >= stamp.time_ms);
        entries.insert(at, entry);
    }

    /// Is the index behind `watermark`?
    pub fn is_behind(&self, watermark: Watermark) -> bool {
        watermark.items > self.watermark.items || watermark.embeddings > self.watermark.embeddings
    }

    /// Merges what the catalog gained since the index's watermark.
    pub fn catch_up(&mut self, catalog: &Catalog) -> Result<usize, CatalogError> {
        let mut merged = 0;
        loop {
            let stamps = catalog.item_stamps_after(self.watermark.items, CATCH_UP_BATCH)?;
            let Some((last, _)) = stamps.last() else { break };
            self.watermark.items = *last;
            merged += stamps.len();
            for (_, stamp) in stamps {
                self.insert(stamp.source_id, stamp);
            }
        }
        loop {
            let model = std::mem::take(&mut self.model);
            let rows = catalog.embeddings_after(&model, self.watermark.embeddings, CATCH_UP_BATCH);
            self.model = model;
            let rows = rows?;
            let Some((last, ..)) = rows.last() else { break };
            self.watermark.embeddings = *last;
            merged += rows.len();
            for (_, id, vector) in rows {
                self.set_embedding(&id, vector);
            }
        }
        Ok(merged)
    }

    /// An item's embedding.
    pub fn embedding(&self, id: &str) -> Option<&Arc<[f32]>> {
        self.slots.get(id).and_then(|s| s.get()).map(|v| &v.embedding)
    }

    /// An item's bandit features.
    pub fn features(&self, id: &str) -> Option<&Arc<[f32]>> {
        self.slots.get(id).and_then(|s| s.get()).and_then(|v| v.features.as_ref())
    }

    /// Does the index hold the item?
    pub fn contains(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// Items in the index.
    pub fn items(&self) -> usize {
        self.slots.len()
    }

    /// An index of items of source 0 with the given embeddings (unit tests).
    #[cfg(test)]
    pub fn from_vectors(vectors: &[(&str, Vec<f32>)]) -> CandidateIndex {
        let mut index = CandidateIndex::default();
        for (id, v) in vectors {
            index.insert(0, ItemStamp { id: (*id).to_owned(), source_id: 0, time_ms: 0 });
            index.set_embedding(id, v.clone());
        }
        index
    }

    /// Every embedded item with its embedding.
    pub fn embeddings(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<[f32]>)> {
        self.slots.iter().filter_map(|(id, s)| s.get().map(|v| (id, &v.embedding)))
    }
}

/// Where a full index is built from: a second connection to the catalog file, so building
/// never holds the app's catalog lock.
#[derive(Clone)]
pub struct IndexSource {
    pub path: PathBuf,
    pub model: String,
}

impl IndexSource {
    fn build(&self) -> Result<CandidateIndex, CatalogError> {
        let started = std::time::Instant::now();
        let index = CandidateIndex::build(&Catalog::open(&self.path)?, &self.model)?;
        tracing::debug!(
            items = index.items(),
            ms = started.elapsed().as_millis() as u64,
            "candidate index built"
        );
        Ok(index)
    }
}

/// The current index and the removal generation it was built at.
#[derive(Default)]
pub struct IndexCache {
    slot: Mutex<Option<(u64, Arc<CandidateIndex>)>>,
}

impl IndexCache {
    /// The index for removal `generation`, caught up with `catalog` (see the module docs):
    /// built from `source` when there is none or items were removed since.
    pub fn get(
        &self,
        generation: u64,
        source: &IndexSource,
        catalog: &Mutex<Catalog>,
    ) -> Result<Arc<CandidateIndex>, CatalogError> {
        // One request at a time updates the index; the others wait for it (a catch-up is a
        // few range reads), then share the result.
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = match slot.take() {
            Some((g, index)) if g == generation => index,
            _ => Arc::new(source.build()?),
        };
        let catalog = catalog.lock().unwrap_or_else(|p| p.into_inner());
        if index.is_behind(catalog.watermark(&source.model)?) {
            let started = std::time::Instant::now();
            let merged = Arc::make_mut(&mut index).catch_up(&catalog)?;
            tracing::debug!(merged, us = started.elapsed().as_micros() as u64, "candidate index caught up");
        }
        drop(catalog);
        *slot = Some((generation, index.clone()));
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::NewItem;

    fn item(n: usize, ms: i64) -> NewItem {
        NewItem {
            guid: Some(format!("g{n}")),
            title: format!("item {n}"),
            published_ms: Some(ms),
            ..NewItem::default()
        }
    }

    #[test]
    fn catch_up_merges_new_items_and_embeddings_in_order() {
        let mut cat = Catalog::open_in_memory().expect("catalog");
        let src = cat.add_source("file:///a", "file", 60, 0).expect("source");
        cat.upsert_items(src, &[item(1, 100), item(2, 300)], 1).expect("upsert");
        let mut index = CandidateIndex::build(&cat, "m").expect("build");
        assert_eq!(index.items(), 2);
        assert!(!index.is_behind(cat.watermark("m").expect("watermark")));
        cat.upsert_items(src, &[item(3, 200), item(4, 400)], 1).expect("upsert");
        let ids: Vec<String> = cat.item_stamps().expect("stamps").into_iter().map(|s| s.id).collect();
        cat.put_embedding(&ids[0], "m", &[1.0, 0.0]).expect("embed");
        cat.put_embedding(&ids[1], "other", &[1.0, 0.0]).expect("embed");
        assert!(index.is_behind(cat.watermark("m").expect("watermark")));
        assert_eq!(index.catch_up(&cat).expect("catch up"), 3);
        let times: Vec<i64> = index.by_source[&src].iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [400, 300, 200, 100]);
        assert!(index.embedding(&ids[0]).is_some() && index.embedding(&ids[1]).is_none());
        assert!(index.features(&ids[0]).is_some_and(|f| f.len() == crate::bandit::linear::DIMS));
        assert_eq!(index.catch_up(&cat).expect("again"), 0);
        assert_eq!(index.items(), 4);
    }
}
