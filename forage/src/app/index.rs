//! The in-memory candidate index: every item's id, source and time by a dense item
//! number, each source's items newest first as lists of numbers, and the embeddings and
//! their content-bandit features in contiguous [`VectorSlab`]s by number (a build numbers
//! source by source, newest first, so the rows a feed ranks sit side by side), so a feed
//! request ranks from memory without reading the catalog, hashing ids or following one
//! pointer per item.
//!
//! Freshness: a feed request first brings the index up to the catalog's [`Watermark`]
//! ([`IndexCache::get`]): the items and embeddings added since the index's watermark are
//! read (two indexed range reads, under the catalog lock) and then applied in place under
//! the index's write lock, so a request never answers from an index that misses an item the
//! catalog holds, and an item is in the feed as soon as it is in the catalog (and ranked by
//! content as soon as its embedding is stored). Applying copies nothing already held: rows
//! are appended (the slab grows by whole blocks). Only a removal (a source removed) rebuilds
//! the whole index, under a new [`CandidateIndex::identity`].
//!
//! Invariants: an item appears once and keeps its number for the life of the index (merges
//! skip ids already held; numbers are never reused, which is what per-user bitsets over
//! numbers rely on, see `app::seen_bits`); an embedding is set once per item (a later
//! re-embedding of the same model is picked up by the next full rebuild); every embedding
//! has the slab's dimension count (another is ignored); entries of a source stay newest
//! first. Lock order: the [`IndexCache`] slot, then the catalog, then the index; a holder of
//! an index guard takes neither of the others.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::slab::VectorSlab;
use crate::bandit::linear::{DIMS, Projection};
use crate::catalog::{Catalog, CatalogError, ItemStamp, Watermark};

/// Rows read per range read while catching up.
pub const CATCH_UP_BATCH: usize = 4096;

/// Identities handed to built indexes (see [`CandidateIndex::identity`]).
static NEXT_IDENTITY: AtomicU64 = AtomicU64::new(1);

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A built index.
#[derive(Default)]
pub struct CandidateIndex {
    identity: u64,
    /// Item number → id and time.
    ids: Vec<Arc<str>>,
    times_ms: Vec<i64>,
    numbers: FastMap<Arc<str>, u32>,
    /// Source id → its item numbers, newest first.
    by_source: BTreeMap<i64, Vec<u32>>,
    vectors: VectorSlab,
    /// The content bandit's features of each embedding (its projection, [`DIMS`] each):
    /// ranking's first pass reads these, a sixth of the bytes of the embeddings.
    features: VectorSlab,
    projection: Option<Arc<Projection>>,
    watermark: Watermark,
    model: String,
}

/// What the catalog gained since a watermark, read under the catalog lock and applied
/// later under the index lock ([`CandidateIndex::apply`]).
#[derive(Default)]
pub struct Delta {
    stamps: Vec<(i64, ItemStamp)>,
    embeddings: Vec<(i64, String, Vec<f32>)>,
}

impl Delta {
    /// Reads everything `catalog` holds beyond `from` for `model`.
    pub fn read(catalog: &Catalog, from: Watermark, model: &str) -> Result<Delta, CatalogError> {
        let mut delta = Delta::default();
        let mut after = from.items;
        loop {
            let stamps = catalog.item_stamps_after(after, CATCH_UP_BATCH)?;
            let Some((last, _)) = stamps.last() else { break };
            after = *last;
            delta.stamps.extend(stamps);
        }
        let mut after = from.embeddings;
        loop {
            let rows = catalog.embeddings_after(model, after, CATCH_UP_BATCH)?;
            let Some((last, ..)) = rows.last() else { break };
            after = *last;
            delta.embeddings.extend(rows);
        }
        Ok(delta)
    }

    /// Rows in the delta.
    pub fn len(&self) -> usize {
        self.stamps.len() + self.embeddings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CandidateIndex {
    fn empty(model: &str) -> CandidateIndex {
        CandidateIndex {
            identity: NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed),
            model: model.to_owned(),
            ..CandidateIndex::default()
        }
    }

    /// Builds the index from the catalog with the embeddings of `model`.
    pub fn build(catalog: &Catalog, model: &str) -> Result<CandidateIndex, CatalogError> {
        let watermark = catalog.watermark(model)?;
        let mut index = CandidateIndex::empty(model);
        // Numbered source by source, newest first: a source's newest items (the ones a
        // feed ranks) then sit side by side in the slabs, and ranking streams through
        // memory. item_stamps is newest first and the sort is stable.
        let mut stamps = catalog.item_stamps()?;
        stamps.sort_by_key(|s| s.source_id);
        for s in stamps {
            index.insert(s);
        }
        catalog.scan_embeddings(model, &mut |id, vector| index.set_embedding(&id, &vector))?;
        // Rows written while building are merged again by the next catch-up (merges are
        // idempotent), so starting from the watermark read first loses nothing.
        index.watermark = watermark;
        let delta = Delta::read(catalog, watermark, model)?;
        index.apply(delta);
        Ok(index)
    }

    fn set_embedding(&mut self, id: &str, vector: &[f32]) {
        let Some(&n) = self.numbers.get(id) else { return };
        if !self.vectors.set(n, vector) {
            return;
        }
        let dims = self.vectors.dims();
        let projection = self.projection.get_or_insert_with(|| Arc::new(Projection::new(dims)));
        // A vector that does not project (not finite) keeps no features: ranked exactly.
        if let Some(z) = projection.project(vector) {
            self.features.set(n, &z);
        }
    }

    fn insert(&mut self, stamp: ItemStamp) {
        if self.numbers.contains_key(stamp.id.as_str()) {
            return;
        }
        // More than u32::MAX items would not fit in memory anyway (1.5 KiB each).
        let Ok(n) = u32::try_from(self.ids.len()) else { return };
        let id: Arc<str> = Arc::from(stamp.id);
        self.numbers.insert(id.clone(), n);
        self.ids.push(id);
        self.times_ms.push(stamp.time_ms);
        let numbers = self.by_source.entry(stamp.source_id).or_default();
        let times = &self.times_ms;
        // Newest first; a new item usually goes to the front, a build appends.
        let at = numbers.partition_point(|&m| times[m as usize] >= stamp.time_ms);
        numbers.insert(at, n);
    }

    /// Is the index behind `watermark`?
    pub fn is_behind(&self, watermark: Watermark) -> bool {
        watermark.items > self.watermark.items || watermark.embeddings > self.watermark.embeddings
    }

    /// The watermark the index has caught up to.
    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// Merges a delta read from the catalog; returns the rows it held.
    pub fn apply(&mut self, delta: Delta) -> usize {
        let rows = delta.len();
        for (seq, stamp) in delta.stamps {
            self.watermark.items = self.watermark.items.max(seq);
            self.insert(stamp);
        }
        for (rowid, id, vector) in delta.embeddings {
            self.watermark.embeddings = self.watermark.embeddings.max(rowid);
            self.set_embedding(&id, &vector);
        }
        rows
    }

    /// Merges what the catalog gained since the index's watermark.
    pub fn catch_up(&mut self, catalog: &Catalog) -> Result<usize, CatalogError> {
        let delta = Delta::read(catalog, self.watermark, &self.model)?;
        Ok(self.apply(delta))
    }

    /// This build of the index: item numbers mean the same items for as long as it stays.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// The number of an item.
    pub fn number(&self, id: &str) -> Option<u32> {
        self.numbers.get(id).copied()
    }

    /// The id of item number `n` (a number of this index).
    pub fn id(&self, n: u32) -> &Arc<str> {
        &self.ids[n as usize]
    }

    /// The time of item number `n`, ms (publication, else fetch).
    pub fn time_ms(&self, n: u32) -> i64 {
        self.times_ms[n as usize]
    }

    /// The embedding of item number `n`.
    #[inline]
    pub fn row(&self, n: u32) -> Option<&[f32]> {
        self.vectors.row(n)
    }

    /// Each source with its item numbers, newest first.
    pub fn sources(&self) -> impl Iterator<Item = (i64, &[u32])> {
        self.by_source.iter().map(|(s, v)| (*s, v.as_slice()))
    }

    /// The projection of the content bandit for this index's embeddings (`None` before
    /// the first embedding).
    pub fn projection(&self) -> Option<&Projection> {
        self.projection.as_deref()
    }

    /// An item's embedding.
    pub fn embedding(&self, id: &str) -> Option<&[f32]> {
        self.row(self.number(id)?)
    }

    /// An item's bandit features (its embedding under the projection, [`DIMS`] values).
    pub fn features(&self, id: &str) -> Option<&[f32]> {
        self.feature_row(self.number(id)?)
    }

    /// The features of item number `n`.
    #[inline]
    pub fn feature_row(&self, n: u32) -> Option<&[f32]> {
        self.features.row(n).filter(|z| z.len() == DIMS)
    }

    /// Does the index hold the item?
    pub fn contains(&self, id: &str) -> bool {
        self.numbers.contains_key(id)
    }

    /// Items in the index.
    pub fn items(&self) -> usize {
        self.ids.len()
    }

    /// The dimension count of the embeddings (0 before the first).
    pub fn dims(&self) -> usize {
        self.vectors.dims()
    }

    /// Items with an embedding.
    pub fn embedded(&self) -> usize {
        self.vectors.rows_set()
    }

    /// An index of items of source 0 with the given embeddings (unit tests).
    #[cfg(test)]
    pub fn from_vectors(vectors: &[(&str, Vec<f32>)]) -> CandidateIndex {
        let mut index = CandidateIndex::empty("test");
        for (id, v) in vectors {
            index.insert(ItemStamp { id: (*id).to_owned(), source_id: 0, time_ms: 0 });
            index.set_embedding(id, v);
        }
        index
    }

    /// Every embedded item with its embedding, in item-number order.
    pub fn embeddings(&self) -> impl Iterator<Item = (&Arc<str>, &[f32])> {
        (0..self.ids.len() as u32).filter_map(|n| Some((self.id(n), self.row(n)?)))
    }
}

/// A shared index: requests read it under the read lock, a catch-up applies under the
/// write lock (see the module docs for the lock order).
#[derive(Clone, Default)]
pub struct IndexHandle(Arc<RwLock<CandidateIndex>>);

impl IndexHandle {
    pub fn new(index: CandidateIndex) -> IndexHandle {
        IndexHandle(Arc::new(RwLock::new(index)))
    }

    /// Reads the index (poisoning is ignored: `apply` leaves the index whole at every step).
    pub fn read(&self) -> RwLockReadGuard<'_, CandidateIndex> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, delta: Delta) -> usize {
        self.0.write().unwrap_or_else(|p| p.into_inner()).apply(delta)
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
    slot: Mutex<Option<(u64, IndexHandle)>>,
}

impl IndexCache {
    /// Whether an index is built and not being built or updated right now.
    pub fn is_built(&self) -> bool {
        self.slot.try_lock().is_ok_and(|slot| slot.is_some())
    }

    /// The index for removal `generation`, caught up with `catalog` (see the module docs):
    /// built from `source` when there is none or items were removed since.
    pub fn get(
        &self,
        generation: u64,
        source: &IndexSource,
        catalog: &Mutex<Catalog>,
    ) -> Result<IndexHandle, CatalogError> {
        // One request at a time updates the index; the others wait for it (a catch-up is a
        // few range reads), then share the result.
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let handle = match slot.as_ref() {
            Some((g, handle)) if *g == generation => handle.clone(),
            _ => {
                *slot = None;
                let handle = IndexHandle::new(source.build()?);
                *slot = Some((generation, handle.clone()));
                handle
            }
        };
        let held = handle.read().watermark();
        let delta = {
            let catalog = catalog.lock().unwrap_or_else(|p| p.into_inner());
            let watermark = catalog.watermark(&source.model)?;
            let behind = watermark.items > held.items || watermark.embeddings > held.embeddings;
            if behind { Some(Delta::read(&catalog, held, &source.model)?) } else { None }
        };
        if let Some(delta) = delta {
            let started = std::time::Instant::now();
            let merged = handle.apply(delta);
            tracing::debug!(merged, us = started.elapsed().as_micros() as u64, "candidate index caught up");
        }
        Ok(handle)
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
        let times: Vec<i64> = index.by_source[&src].iter().map(|&n| index.time_ms(n)).collect();
        assert_eq!(times, [400, 300, 200, 100]);
        assert!(index.embedding(&ids[0]).is_some() && index.embedding(&ids[1]).is_none());
        assert!(index.features(&ids[0]).is_some_and(|f| f.len() == crate::bandit::linear::DIMS));
        for id in &ids {
            let n = index.number(id).expect("every item has a number");
            assert_eq!(&**index.id(n), id.as_str());
        }
        assert_eq!(index.catch_up(&cat).expect("again"), 0);
        assert_eq!(index.items(), 4);
    }

    #[test]
    fn the_cache_catches_up_in_place_and_rebuilds_after_a_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.sqlite");
        let mut cat = Catalog::open(&path).expect("catalog");
        let src = cat.add_source("file:///a", "file", 60, 0).expect("source");
        cat.upsert_items(src, &[item(1, 100)], 1).expect("upsert");
        let catalog = Mutex::new(cat);
        let (cache, source) = (IndexCache::default(), IndexSource { path, model: "m".into() });
        let first = cache.get(0, &source, &catalog).expect("build");
        let identity = first.read().identity();
        // A reader holds the index while the catalog grows: the catch-up waits for it, then
        // lands in the same index (no copy), which the reader's handle then sees too.
        let guard = first.read();
        catalog.lock().expect("lock").upsert_items(src, &[item(2, 200)], 1).expect("upsert");
        assert_eq!(guard.items(), 1);
        drop(guard);
        let again = cache.get(0, &source, &catalog).expect("catch up");
        let held = again.read();
        assert_eq!((held.identity(), held.items()), (identity, 2));
        drop(held);
        assert_eq!(first.read().items(), 2, "caught up in place");
        let rebuilt = cache.get(1, &source, &catalog).expect("rebuild");
        assert_ne!(rebuilt.read().identity(), identity, "a new generation builds a new index");
        assert_eq!(rebuilt.read().items(), 2);
    }
}
