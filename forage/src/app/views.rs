//! The JSON shapes the API answers with (docs/forage-api.md, "Objects"), built from the
//! catalog.

use std::collections::HashMap;

use serde::Serialize;

use crate::bandit::Posterior;
use crate::catalog::{Catalog, CatalogError, Item, Source};

/// A label on an item.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ItemLabelView {
    pub id: i64,
    pub name: String,
    pub score: f32,
}

/// An item as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ItemView {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub url: Option<String>,
    pub source_id: i64,
    pub source_title: Option<String>,
    pub published_ms: Option<i64>,
    pub labels: Vec<ItemLabelView>,
}

/// A Beta posterior as the API shows it.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct PosteriorView {
    pub alpha: f64,
    pub beta: f64,
    pub mean: f64,
}

impl From<Posterior> for PosteriorView {
    fn from(p: Posterior) -> Self {
        PosteriorView { alpha: p.alpha, beta: p.beta, mean: p.mean() }
    }
}

/// A source as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceView {
    pub id: i64,
    pub url: String,
    pub kind: String,
    pub title: Option<String>,
    pub interval_s: i64,
    pub last_fetch_ms: Option<i64>,
    pub last_error: Option<String>,
    pub items: usize,
    pub posterior: PosteriorView,
}

impl SourceView {
    pub fn new(source: Source, items: usize, posterior: Posterior) -> SourceView {
        SourceView {
            id: source.id,
            url: source.url,
            kind: source.kind,
            title: source.title,
            interval_s: source.interval_s,
            last_fetch_ms: source.last_fetch_ms,
            last_error: source.last_error,
            items,
            posterior: posterior.into(),
        }
    }
}

/// Builds item views, caching source titles across items.
pub struct ItemViews<'a> {
    catalog: &'a Catalog,
    titles: HashMap<i64, Option<String>>,
}

impl<'a> ItemViews<'a> {
    pub fn new(catalog: &'a Catalog) -> Self {
        ItemViews { catalog, titles: HashMap::new() }
    }

    /// The view of one item, with its source title and labels.
    pub fn view(&mut self, item: Item) -> Result<ItemView, CatalogError> {
        let source_title = match self.titles.get(&item.source_id) {
            Some(t) => t.clone(),
            None => {
                let t = self.catalog.get_source(item.source_id)?.and_then(|s| s.title);
                self.titles.insert(item.source_id, t.clone());
                t
            }
        };
        let labels = self
            .catalog
            .item_labels(&item.id)?
            .into_iter()
            .map(|l| ItemLabelView { id: l.label_id, name: l.name, score: l.score })
            .collect();
        Ok(ItemView {
            id: item.id,
            title: item.title,
            summary: item.summary,
            url: item.url,
            source_id: item.source_id,
            source_title,
            published_ms: item.published_ms,
            labels,
        })
    }

    /// Views of the items with these ids, in order; unknown ids are left out.
    pub fn by_ids(&mut self, ids: &[&str]) -> Result<Vec<ItemView>, CatalogError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = self.catalog.get_item(id)? {
                out.push(self.view(item)?);
            }
        }
        Ok(out)
    }
}
