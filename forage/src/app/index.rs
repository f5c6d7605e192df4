//! The in-memory candidate index: every item's id, source, time and embedding, grouped by
//! source newest first, so a feed request ranks from memory instead of reading the catalog.
//! Rebuilt when the catalog changes: at once after a removal, in the background (serving the
//! previous index meanwhile) after additions and new embeddings; see [`IndexCache::get`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::catalog::{Catalog, CatalogError};

/// One item in the index.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: Arc<str>,
    pub time_ms: i64,
    pub embedding: Option<Arc<[f32]>>,
}

/// A built index.
#[derive(Default)]
pub struct CandidateIndex {
    /// Source id → its items, newest first.
    pub by_source: BTreeMap<i64, Vec<Entry>>,
    pub embeddings: HashMap<Arc<str>, Arc<[f32]>>,
    pub items: usize,
}

impl CandidateIndex {
    /// Builds the index from the catalog with the embeddings of `model`.
    pub fn build(catalog: &Catalog, model: &str) -> Result<CandidateIndex, CatalogError> {
        let embeddings: HashMap<Arc<str>, Arc<[f32]>> = catalog
            .all_embeddings(model)?
            .into_iter()
            .map(|(id, v)| (Arc::from(id.as_str()), Arc::from(v)))
            .collect();
        let mut by_source: BTreeMap<i64, Vec<Entry>> = BTreeMap::new();
        let stamps = catalog.item_stamps()?;
        let items = stamps.len();
        for s in stamps {
            let (id, embedding) = match embeddings.get_key_value(s.id.as_str()) {
                Some((id, e)) => (id.clone(), Some(e.clone())),
                None => (Arc::from(s.id.as_str()), None),
            };
            by_source.entry(s.source_id).or_default().push(Entry { id, time_ms: s.time_ms, embedding });
        }
        Ok(CandidateIndex { by_source, embeddings, items })
    }

    /// An item's embedding.
    pub fn embedding(&self, id: &str) -> Option<&Arc<[f32]>> {
        self.embeddings.get(id)
    }
}

/// What the index reflects: `(hard, soft)` change counters. A hard change (a source removed)
/// makes the cached index unusable; a soft one (new items, new embeddings) only makes it
/// incomplete, so it is served while a fresh one builds in the background.
pub type Generation = (u64, u64);

/// Where an index is built from: a second connection to the catalog file, so building
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
            items = index.items,
            ms = started.elapsed().as_millis() as u64,
            "candidate index built"
        );
        Ok(index)
    }
}

#[derive(Default)]
struct Slot {
    built: Option<(Generation, Arc<CandidateIndex>)>,
    rebuilding: bool,
}

/// The current index and the generation it was built at.
#[derive(Default)]
pub struct IndexCache {
    slot: Mutex<Slot>,
}

impl IndexCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index for `generation`: the cached one when current; the cached one while a
    /// background rebuild runs when only soft changes happened since; else built now.
    pub fn get(
        self: &Arc<Self>,
        generation: Generation,
        source: &IndexSource,
    ) -> Result<Arc<CandidateIndex>, CatalogError> {
        let mut slot = self.lock();
        if let Some((built_at, index)) = &slot.built {
            if *built_at == generation {
                return Ok(index.clone());
            }
            if built_at.0 == generation.0 {
                let index = index.clone();
                if !slot.rebuilding {
                    slot.rebuilding = true;
                    self.rebuild_in_background(generation, source.clone());
                }
                return Ok(index);
            }
        }
        drop(slot);
        let index = Arc::new(source.build()?);
        self.store(generation, index.clone());
        Ok(index)
    }

    fn rebuild_in_background(self: &Arc<Self>, generation: Generation, source: IndexSource) {
        let cache = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("forage-index".into()).spawn(move || {
            let built = source.build();
            cache.lock().rebuilding = false;
            match built {
                Ok(index) => cache.store(generation, Arc::new(index)),
                Err(e) => tracing::warn!(error = %e, "candidate index rebuild failed"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the index rebuild");
            self.lock().rebuilding = false;
        }
    }

    /// Keeps `index` unless a newer one is cached already.
    fn store(&self, generation: Generation, index: Arc<CandidateIndex>) {
        let mut slot = self.lock();
        if slot.built.as_ref().is_none_or(|(g, _)| *g <= generation) {
            slot.built = Some((generation, index));
        }
    }
}
