//! The in-memory candidate index: every item's id, source, time and embedding, grouped by
//! source newest first, so a feed request ranks from memory instead of reading the catalog.
//! Rebuilt from the catalog when its generation (app changes, worker embeddings) moves on.

use std::collections::{BTreeMap, HashMap};
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

/// What the index was built from: the app's change counter and the worker's embedded count.
pub type Generation = (u64, u64);

/// The current index and the generation it was built at.
#[derive(Default)]
pub struct IndexCache {
    slot: Mutex<Option<(Generation, Arc<CandidateIndex>)>>,
}

impl IndexCache {
    /// The index for `generation`, rebuilt with `build` when the cached one is older.
    pub fn get(
        &self,
        generation: Generation,
        build: impl FnOnce() -> Result<CandidateIndex, CatalogError>,
    ) -> Result<Arc<CandidateIndex>, CatalogError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, index)) = slot.as_ref()
            && *g == generation
        {
            return Ok(index.clone());
        }
        let started = std::time::Instant::now();
        let index = Arc::new(build()?);
        tracing::debug!(
            items = index.items,
            ms = started.elapsed().as_millis() as u64,
            "candidate index built"
        );
        *slot = Some((generation, index.clone()));
        Ok(index)
    }
}
