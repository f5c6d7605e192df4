//! Labels: named topics an item gets when its embedding is close enough to the label's
//! prototype.
//!
//! Owns the similarity side of labelling; the catalog (`catalog::labels`) stores the results.
//! A label is a name, example texts and a threshold. Its prototype is a Rocchio update:
//! the normalised mean of the embeddings of its examples and of the items the user confirmed,
//! minus [`REJECT_WEIGHT`] times the normalised mean of the items the user rejected,
//! renormalised ([`prototype`]). An item gets every label whose cosine similarity (a dot
//! product: embeddings are unit length) reaches the label's threshold.
//!
//! Invariants:
//! - user feedback wins over similarity: an item the user confirmed for a label always has it
//!   (with score [`CONFIRMED_SCORE`]), one the user rejected never has it, whatever the
//!   prototype says; [`Prototypes::assign`], [`relabel_all`] and [`set_feedback`] all apply it;
//! - prototypes and item embeddings come from the same embedder: item vectors are looked up
//!   under [`crate::embed::Embedder::name`], so switching models never mixes vector spaces;
//! - a vector whose length differs from the prototype's scores nothing (never a panic).

pub mod eval;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::catalog::{Catalog, CatalogError, CatalogErrorKind, EmbeddedItem, Label, LabelSpec};
use crate::embed::{EmbedError, Embedder, embed_batched};

pub use eval::{EvalReport, LabelScore, evaluate_file};

/// Threshold of a label created without one.
pub const THRESHOLD_DEFAULT: f32 = 0.35;
/// Weight of the rejected items' mean subtracted from the positive mean (Rocchio's gamma).
pub const REJECT_WEIGHT: f32 = 0.5;
/// Score recorded for an item the user confirmed for a label.
pub const CONFIRMED_SCORE: f32 = 1.0;
/// Largest label definition file read by [`load_label_specs`].
pub const LABEL_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// A labelling error. [`LabelError::kind`] gives the coarse class.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("embedder: {0}")]
    Embed(#[from] EmbedError),
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// A coarse class of [`LabelError`]: 400, 404, 409, 500 and 503 for an HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelErrorKind {
    InvalidInput,
    NotFound,
    Conflict,
    Corruption,
    Unavailable,
}

impl LabelError {
    /// The coarse class of this error.
    pub fn kind(&self) -> LabelErrorKind {
        match self {
            LabelError::Catalog(e) => match e.kind() {
                CatalogErrorKind::InvalidInput => LabelErrorKind::InvalidInput,
                CatalogErrorKind::NotFound => LabelErrorKind::NotFound,
                CatalogErrorKind::Conflict => LabelErrorKind::Conflict,
                CatalogErrorKind::Corruption => LabelErrorKind::Corruption,
                _ => LabelErrorKind::Unavailable,
            },
            LabelError::Embed(_) => LabelErrorKind::Unavailable,
            LabelError::InvalidInput { .. } => LabelErrorKind::InvalidInput,
            LabelError::NotFound(_) => LabelErrorKind::NotFound,
            LabelError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                LabelErrorKind::NotFound
            }
            LabelError::Io { .. } => LabelErrorKind::Unavailable,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        LabelError::InvalidInput { field, reason: reason.into() }
    }
}

/// Dot product of two vectors; 0 when their lengths differ (different vector spaces).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean of the vectors of length `dims` (others are skipped), scaled to unit length; `None`
/// when no vector is usable or the mean is zero.
fn unit_mean<'a>(vectors: impl Iterator<Item = &'a Vec<f32>>, dims: usize) -> Option<Vec<f32>> {
    let mut sum = vec![0.0f32; dims];
    for v in vectors.filter(|v| v.len() == dims) {
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
    }
    normalized(sum)
}

fn normalized(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm <= f32::EPSILON {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// A label's prototype (Rocchio): unit mean of `examples` ∪ `confirmed`, minus
/// [`REJECT_WEIGHT`] × unit mean of `rejected`, renormalised. The dimension is that of the
/// first positive vector; vectors of another length are ignored. Returns an empty vector when
/// there is no usable positive vector (it then matches nothing, see [`cosine`]).
pub fn prototype(examples: &[Vec<f32>], confirmed: &[Vec<f32>], rejected: &[Vec<f32>]) -> Vec<f32> {
    let Some(dims) = examples.iter().chain(confirmed).map(Vec::len).find(|&n| n > 0) else {
        return Vec::new();
    };
    let Some(positive) = unit_mean(examples.iter().chain(confirmed), dims) else {
        return Vec::new();
    };
    let Some(negative) = unit_mean(rejected.iter(), dims) else { return positive };
    let moved: Vec<f32> = positive.iter().zip(&negative).map(|(p, n)| p - REJECT_WEIGHT * n).collect();
    // Rejections identical to the examples would cancel out only with a weight of 1; keep the
    // positive mean if the update ever degenerates.
    normalized(moved).unwrap_or(positive)
}

/// One label's prototype and the feedback that overrides it.
#[derive(Debug, Clone)]
pub struct LabelPrototype {
    pub id: i64,
    pub name: String,
    pub threshold: f32,
    /// Unit vector, or empty when the label has no usable positive vector.
    pub vector: Vec<f32>,
    pub confirmed: HashSet<String>,
    pub rejected: HashSet<String>,
}

/// What building a prototype needs from the catalog, read in one go so a caller can release
/// the catalog before the (slow) embedding of the examples.
struct LabelInputs {
    label: Label,
    confirmed: Vec<String>,
    rejected: Vec<String>,
    confirmed_vectors: Vec<Vec<f32>>,
    rejected_vectors: Vec<Vec<f32>>,
}

/// The prototypes of every label, for one embedder.
#[derive(Debug, Clone, Default)]
pub struct Prototypes {
    /// The embedder's name: item vectors are read under it.
    pub model: String,
    pub labels: Vec<LabelPrototype>,
}

impl Prototypes {
    /// Builds the prototypes of every label in `catalog`: embeds the examples and looks the
    /// confirmed and rejected items' embeddings up under `embedder.name()` (items not embedded
    /// yet still count for the forced rules, not for the mean).
    pub fn build(catalog: &Catalog, embedder: &dyn Embedder) -> Result<Prototypes, LabelError> {
        let inputs = read_inputs(catalog, embedder.name())?;
        Self::from_inputs(inputs, embedder)
    }

    /// [`Prototypes::build`] for a shared catalog: the lock is held only while reading.
    pub fn build_shared(catalog: &Mutex<Catalog>, embedder: &dyn Embedder) -> Result<Prototypes, LabelError> {
        let inputs = {
            let catalog = catalog.lock().unwrap_or_else(|e| e.into_inner());
            read_inputs(&catalog, embedder.name())?
        };
        Self::from_inputs(inputs, embedder)
    }

    fn from_inputs(inputs: Vec<LabelInputs>, embedder: &dyn Embedder) -> Result<Prototypes, LabelError> {
        let texts: Vec<&str> =
            inputs.iter().flat_map(|i| i.label.examples.iter().map(String::as_str)).collect();
        let mut vectors = embed_batched(embedder, &texts)?.into_iter();
        let mut labels = Vec::with_capacity(inputs.len());
        for input in inputs {
            let examples: Vec<Vec<f32>> = vectors.by_ref().take(input.label.examples.len()).collect();
            let vector = prototype(&examples, &input.confirmed_vectors, &input.rejected_vectors);
            labels.push(LabelPrototype {
                id: input.label.id,
                name: input.label.name,
                threshold: input.label.threshold,
                vector,
                confirmed: input.confirmed.into_iter().collect(),
                rejected: input.rejected.into_iter().collect(),
            });
        }
        Ok(Prototypes { model: embedder.name().to_owned(), labels })
    }

    /// The labels `item_id` gets from its embedding: every label whose cosine reaches its
    /// threshold, plus the ones the user confirmed for it (score [`CONFIRMED_SCORE`]), minus
    /// the ones the user rejected.
    pub fn assign(&self, item_id: &str, embedding: &[f32]) -> Vec<(i64, f32)> {
        let mut out = Vec::new();
        for label in &self.labels {
            if label.rejected.contains(item_id) {
                continue;
            }
            if label.confirmed.contains(item_id) {
                out.push((label.id, CONFIRMED_SCORE));
                continue;
            }
            let score = cosine(&label.vector, embedding);
            if score >= label.threshold {
                out.push((label.id, score));
            }
        }
        out
    }

    /// The indices (into `labels`) of the labels a free text gets; no feedback applies.
    pub(crate) fn matching(&self, embedding: &[f32]) -> Vec<usize> {
        let hit = |l: &LabelPrototype| cosine(&l.vector, embedding) >= l.threshold;
        self.labels.iter().enumerate().filter(|(_, l)| hit(l)).map(|(i, _)| i).collect()
    }
}

fn read_inputs(catalog: &Catalog, model: &str) -> Result<Vec<LabelInputs>, LabelError> {
    let mut out = Vec::new();
    for label in catalog.list_labels()? {
        let (confirmed, rejected) = catalog.label_feedback(label.id)?;
        let lookup = |ids: &[String]| -> Result<Vec<Vec<f32>>, CatalogError> {
            let mut vectors = Vec::with_capacity(ids.len());
            for id in ids {
                vectors.extend(catalog.get_embedding(id, model)?);
            }
            Ok(vectors)
        };
        let confirmed_vectors = lookup(&confirmed)?;
        let rejected_vectors = lookup(&rejected)?;
        out.push(LabelInputs { label, confirmed, rejected, confirmed_vectors, rejected_vectors });
    }
    Ok(out)
}

/// Recomputes the assignments of every label from every stored embedding of `embedder`'s
/// model (after a label was created or edited, or feedback moved a prototype). Confirmed
/// items without an embedding keep their label. The lock is not held while the examples are
/// embedded. Returns the number of assignments.
pub fn relabel_all(catalog: &Mutex<Catalog>, embedder: &dyn Embedder) -> Result<usize, LabelError> {
    let prototypes = Prototypes::build_shared(catalog, embedder)?;
    let mut catalog = catalog.lock().unwrap_or_else(|e| e.into_inner());
    let embeddings = catalog.all_embeddings(&prototypes.model)?;
    let mut total = 0;
    for label in &prototypes.labels {
        let assignments = label_assignments(label, &embeddings);
        total += assignments.len();
        catalog.replace_label_assignments(label.id, &assignments)?;
    }
    tracing::info!(
        labels = prototypes.labels.len(),
        items = embeddings.len(),
        assignments = total,
        "relabelled"
    );
    Ok(total)
}

/// Every item one label gets, feedback applied.
fn label_assignments(label: &LabelPrototype, embeddings: &[(String, Vec<f32>)]) -> Vec<(String, f32)> {
    let mut assignments: Vec<(String, f32)> = Vec::new();
    let mut seen = HashSet::new();
    for (item_id, vector) in embeddings {
        if label.rejected.contains(item_id) {
            continue;
        }
        let forced = label.confirmed.contains(item_id);
        let score = if forced { CONFIRMED_SCORE } else { cosine(&label.vector, vector) };
        if forced || score >= label.threshold {
            seen.insert(item_id.as_str());
            assignments.push((item_id.clone(), score));
        }
    }
    for item_id in label.confirmed.iter().filter(|id| !seen.contains(id.as_str())) {
        assignments.push((item_id.clone(), CONFIRMED_SCORE));
    }
    assignments
}

/// Labels freshly embedded items with `prototypes` (their embeddings already stored) and
/// stores the assignments in one transaction. Returns the number of assignments.
pub fn label_new_items(
    catalog: &mut Catalog,
    prototypes: &Prototypes,
    items: &[(String, Vec<f32>)],
) -> Result<usize, LabelError> {
    let batch: Vec<EmbeddedItem> = items
        .iter()
        .map(|(id, v)| EmbeddedItem {
            item_id: id.clone(),
            vector: v.clone(),
            labels: prototypes.assign(id, v),
        })
        .collect();
    let total = batch.iter().map(|b| b.labels.len()).sum();
    catalog.put_embeddings_with_labels(&prototypes.model, &batch)?;
    Ok(total)
}

/// Records the user's answer for (label, item) and applies it to the item at once: a
/// confirmation adds the label with [`CONFIRMED_SCORE`], a rejection removes it. The prototype
/// moves on the next [`Prototypes::build`] (call [`relabel_all`] to re-score other items).
pub fn set_feedback(
    catalog: &mut Catalog,
    label_id: i64,
    item_id: &str,
    confirm: bool,
    now_ms: i64,
) -> Result<(), LabelError> {
    catalog.set_label_feedback(label_id, item_id, confirm, now_ms)?;
    if confirm {
        catalog.add_item_labels(item_id, &[(label_id, CONFIRMED_SCORE)])?;
    } else {
        catalog.remove_item_label(item_id, label_id)?;
    }
    Ok(())
}

/// One entry of a label definition file, a JSON array of
/// `{"name", "examples", "threshold"?}` objects.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelFileEntry {
    name: String,
    examples: Vec<String>,
    threshold: Option<f32>,
}

/// Reads label definitions (see `samples/labels/labels.json`); a missing threshold is
/// [`THRESHOLD_DEFAULT`]. The specs are checked when created in the catalog.
pub fn load_label_specs(path: &Path) -> Result<Vec<LabelSpec>, LabelError> {
    let bytes = read_bounded(path, LABEL_FILE_BYTES_MAX)?;
    let entries: Vec<LabelFileEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| LabelError::invalid("label file", format!("{}: {e}", path.display())))?;
    Ok(entries
        .into_iter()
        .map(|l| LabelSpec {
            name: l.name,
            examples: l.examples,
            threshold: l.threshold.unwrap_or(THRESHOLD_DEFAULT),
        })
        .collect())
}

/// Reads a whole file, refusing one larger than `bytes_max` before reading it.
pub(crate) fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>, LabelError> {
    let io = |op, e| LabelError::Io { op, path: path.to_path_buf(), source: e };
    let len = std::fs::metadata(path).map_err(|e| io("stat", e))?.len();
    if len > bytes_max {
        let reason = format!("{}: {len} bytes, at most {bytes_max}", path.display());
        return Err(LabelError::invalid("file", reason));
    }
    std::fs::read(path).map_err(|e| io("read", e))
}

#[cfg(test)]
mod tests;
