//! Labels: named topics an item gets when its embedding is close enough to the label's
//! prototype.
//!
//! Owns the similarity side of labelling; the catalog (`catalog::labels`) stores the results.
//! A label is a name, example texts and a threshold. Its prototype is a Rocchio update:
//! the normalised mean of the embeddings of its examples and of the items the user confirmed
//! (plus [`NAME_WEIGHT`] times the embedding of the label's name, when the names help the
//! examples find their own labels leave-one-out: [`name_weight`]), minus [`REJECT_WEIGHT`]
//! times the normalised mean of the items the user rejected, renormalised
//! ([`prototype_named`]). Similarity is cosine (a dot product: embeddings are unit
//! length). A label's threshold is set by hand or calibrated from its examples, its
//! feedback and the other labels, and an item with no label above threshold still gets the
//! nearest label when that one is clearly best, unless the label is strict ([`mod@calibrate`]).
//! Confirmations and rejections move the prototype and, for a calibrated label, the
//! threshold (they join its positives and negatives).
//!
//! Invariants:
//! - user feedback wins over similarity: an item the user confirmed for a label always has it
//!   (with score [`CONFIRMED_SCORE`]), one the user rejected never has it, whatever the
//!   prototype says; [`Prototypes::assign`], [`relabel_all`] and [`set_feedback`] all apply it;
//! - prototypes and item embeddings come from the same embedder: item vectors are looked up
//!   under [`crate::embed::Embedder::name`], so switching models never mixes vector spaces;
//! - a vector whose length differs from the prototype's scores nothing (never a panic).

pub mod calibrate;
pub mod eval;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::catalog::{Catalog, CatalogError, CatalogErrorKind, EmbeddedItem, Label, LabelSpec};
use crate::embed::{EmbedError, Embedder, embed_batched};

pub use calibrate::{Rule, calibrate, decide};
pub use eval::{EvalReport, LabelScore, evaluate_file};

/// Threshold of a calibrated label that has nothing to calibrate from (one example, no
/// confirmations), and the value stored for calibrated labels.
pub const THRESHOLD_DEFAULT: f32 = 0.35;
/// Fewest labels for centring ([`Prototypes::centre`]): with two, the centred prototypes
/// point in opposite directions, so every text is similar to exactly one of them and
/// "neither" or "both" can no longer be told.
pub const CENTRE_LABELS_MIN: usize = 3;
/// Most positives (examples and confirmed items) a calibration scores leave-one-out.
pub const CALIBRATION_POSITIVES_MAX: usize = 256;
/// Weight of the label's name in its prototype, against 1 for the mean of its examples
/// ([`prototype_named`]). Used only when it helps the examples find their own label
/// ([`name_weight`]).
pub const NAME_WEIGHT: f32 = 0.5;
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
    prototype_named(examples, confirmed, rejected, None)
}

/// [`prototype`] with the label's name as evidence too: the positive side is the
/// normalised sum of the normalised mean of the examples and confirmed items and
/// `name` (the name's embedding, already scaled by its weight).
pub fn prototype_named(
    examples: &[Vec<f32>],
    confirmed: &[Vec<f32>],
    rejected: &[Vec<f32>],
    name: Option<&[f32]>,
) -> Vec<f32> {
    let Some(dims) = examples.iter().chain(confirmed).map(Vec::len).find(|&n| n > 0) else {
        return Vec::new();
    };
    let Some(mut positive) = unit_mean(examples.iter().chain(confirmed), dims) else {
        return Vec::new();
    };
    if let Some(name) = name.filter(|n| n.len() == dims) {
        let named: Vec<f32> = positive.iter().zip(name).map(|(p, n)| p + n).collect();
        positive = normalized(named).unwrap_or(positive);
    }
    let Some(negative) = unit_mean(rejected.iter(), dims) else { return positive };
    let moved: Vec<f32> = positive.iter().zip(&negative).map(|(p, n)| p - REJECT_WEIGHT * n).collect();
    // Rejections identical to the examples would cancel out only with a weight of 1; keep the
    // positive mean if the update ever degenerates.
    normalized(moved).unwrap_or(positive)
}

/// How much the labels' names count in their prototypes: [`NAME_WEIGHT`] when that makes
/// more of the examples nearest to their own label, each left out of its own label's
/// prototype (leave-one-out over the examples only, never over items to be labelled);
/// else 0 (names that say little, such as "misc" or "label 2", then change nothing).
pub fn name_weight(examples: &[Vec<Vec<f32>>], names: &[Vec<f32>]) -> f32 {
    let hits = |w: f32| -> usize {
        let name = |k: usize| -> Option<Vec<f32>> {
            (w > 0.0).then(|| names.get(k).map(|n| n.iter().map(|x| x * w).collect())).flatten()
        };
        let full: Vec<Vec<f32>> = examples
            .iter()
            .enumerate()
            .map(|(k, e)| prototype_named(e, &[], &[], name(k).as_deref()))
            .collect();
        let mut hits = 0;
        for (k, own) in examples.iter().enumerate() {
            for i in 0..own.len() {
                let rest: Vec<Vec<f32>> =
                    own.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| v.clone()).collect();
                let loo = prototype_named(&rest, &[], &[], name(k).as_deref());
                let sims: Vec<f32> = full
                    .iter()
                    .enumerate()
                    .map(|(m, p)| cosine(if m == k { &loo } else { p }, &own[i]))
                    .collect();
                let best = (0..sims.len()).max_by(|a, b| sims[*a].total_cmp(&sims[*b]).then(b.cmp(a)));
                hits += usize::from(best == Some(k) && !loo.is_empty());
            }
        }
        hits
    };
    if examples.len() >= 2 && names.len() == examples.len() && hits(NAME_WEIGHT) > hits(0.0) {
        NAME_WEIGHT
    } else {
        0.0
    }
}

/// One label's prototype and the feedback that overrides it.
#[derive(Debug, Clone)]
pub struct LabelPrototype {
    pub id: i64,
    pub name: String,
    /// The threshold in use (hand-set, or calibrated when `rule.calibrated`).
    pub threshold: f32,
    /// How the label is decided (see [`calibrate::decide`]).
    pub rule: Rule,
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
    /// The mean of every label's examples, subtracted from every vector before comparing
    /// (then renormalised) when there are at least [`CENTRE_LABELS_MIN`] labels and all
    /// are calibrated:
    /// sentence embeddings share a large common direction ("a news headline"), and
    /// removing it separates topics better (on the news evaluation set, the nearest
    /// prototype is right for 94% of texts instead of 92%). Hand-set thresholds keep raw
    /// cosines, so with any of them there is no centre.
    pub centre: Option<Vec<f32>>,
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
        let texts: Vec<&str> = inputs
            .iter()
            .map(|i| i.label.name.as_str())
            .chain(inputs.iter().flat_map(|i| i.label.examples.iter().map(String::as_str)))
            .collect();
        let mut vectors = embed_batched(embedder, &texts)?.into_iter();
        let names: Vec<Vec<f32>> = vectors.by_ref().take(inputs.len()).collect();
        let examples: Vec<Vec<Vec<f32>>> =
            inputs.iter().map(|i| vectors.by_ref().take(i.label.examples.len()).collect()).collect();
        let centre = centre_of(&inputs, &examples);
        let shift =
            |vs: &[Vec<f32>]| -> Vec<Vec<f32>> { vs.iter().map(|v| shifted(centre.as_deref(), v)).collect() };
        let examples: Vec<Vec<Vec<f32>>> = examples.iter().map(|e| shift(e)).collect();
        let names = shift(&names);
        let weight = name_weight(&examples, &names);
        let names: Vec<Option<Vec<f32>>> =
            names.iter().map(|n| (weight > 0.0).then(|| n.iter().map(|x| x * weight).collect())).collect();
        let mut inputs = inputs;
        for input in &mut inputs {
            input.confirmed_vectors = shift(&input.confirmed_vectors);
            input.rejected_vectors = shift(&input.rejected_vectors);
        }
        let mut labels = Vec::with_capacity(inputs.len());
        for (n, input) in inputs.iter().enumerate() {
            let name = names[n].as_deref();
            let vector =
                prototype_named(&examples[n], &input.confirmed_vectors, &input.rejected_vectors, name);
            let mut threshold = input.label.threshold;
            if input.label.calibrated {
                let others: Vec<&Vec<f32>> =
                    examples.iter().enumerate().filter(|(m, _)| *m != n).flat_map(|(_, e)| e).collect();
                threshold = calibrated_threshold(&examples[n], input, &vector, &others, name);
            }
            let rule = Rule { threshold, calibrated: input.label.calibrated, strict: input.label.strict };
            labels.push(LabelPrototype {
                id: input.label.id,
                name: input.label.name.clone(),
                threshold,
                rule,
                vector,
                confirmed: input.confirmed.iter().cloned().collect(),
                rejected: input.rejected.iter().cloned().collect(),
            });
        }
        Ok(Prototypes { model: embedder.name().to_owned(), labels, centre })
    }

    /// The rules of every label, in order.
    fn rules(&self) -> Vec<Rule> {
        self.labels.iter().map(|l| l.rule).collect()
    }

    /// The similarity of `embedding` to every label's prototype, in order (after the
    /// centre is taken out, when there is one).
    pub fn similarities(&self, embedding: &[f32]) -> Vec<f32> {
        let e = shifted(self.centre.as_deref(), embedding);
        self.labels.iter().map(|l| cosine(&l.vector, &e)).collect()
    }

    /// The labels `item_id` gets from its embedding (the rule of [`calibrate::decide`]),
    /// plus the ones the user confirmed for it (score [`CONFIRMED_SCORE`]), minus the ones
    /// the user rejected.
    pub fn assign(&self, item_id: &str, embedding: &[f32]) -> Vec<(i64, f32)> {
        let sims = self.similarities(embedding);
        let given = decide(&self.rules(), &sims);
        let mut out = Vec::new();
        for (i, label) in self.labels.iter().enumerate() {
            if label.rejected.contains(item_id) {
                continue;
            }
            if label.confirmed.contains(item_id) {
                out.push((label.id, CONFIRMED_SCORE));
            } else if given.contains(&i) {
                out.push((label.id, sims[i]));
            }
        }
        out
    }

    /// The indices (into `labels`) of the labels a free text gets; no feedback applies.
    pub(crate) fn matching(&self, embedding: &[f32]) -> Vec<usize> {
        decide(&self.rules(), &self.similarities(embedding))
    }
}

/// The centre of the label space (see [`Prototypes::centre`]): the mean of all examples,
/// when there are [`CENTRE_LABELS_MIN`] labels or more and every one is calibrated.
fn centre_of(inputs: &[LabelInputs], examples: &[Vec<Vec<f32>>]) -> Option<Vec<f32>> {
    if inputs.len() < CENTRE_LABELS_MIN || inputs.iter().any(|i| !i.label.calibrated) {
        return None;
    }
    let dims = examples.iter().flatten().map(Vec::len).find(|n| *n > 0)?;
    let mut sum = vec![0.0f32; dims];
    let mut n = 0usize;
    for v in examples.iter().flatten().filter(|v| v.len() == dims) {
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|x| x / n as f32).collect())
}

/// `v` minus `centre`, renormalised (`v` itself without a centre, or when the lengths differ
/// or nothing is left).
fn shifted(centre: Option<&[f32]>, v: &[f32]) -> Vec<f32> {
    match centre {
        Some(c) if c.len() == v.len() => {
            normalized(v.iter().zip(c).map(|(x, m)| x - m).collect()).unwrap_or_else(|| v.to_vec())
        }
        _ => v.to_vec(),
    }
}

/// A calibrated label's threshold: its positives are the leave-one-out similarities of its
/// examples and confirmed items, its negatives the other labels' examples and its rejected
/// items against its prototype (see [`calibrate`]).
fn calibrated_threshold(
    examples: &[Vec<f32>],
    input: &LabelInputs,
    vector: &[f32],
    others: &[&Vec<f32>],
    name: Option<&[f32]>,
) -> f32 {
    let positives: Vec<&Vec<f32>> =
        examples.iter().chain(&input.confirmed_vectors).take(CALIBRATION_POSITIVES_MAX).collect();
    let loo: Vec<f32> = (0..positives.len())
        .filter_map(|i| {
            let rest: Vec<Vec<f32>> =
                positives.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| (*v).clone()).collect();
            let proto = prototype_named(&rest, &[], &input.rejected_vectors, name);
            (!proto.is_empty()).then(|| cosine(&proto, positives[i]))
        })
        .collect();
    let negatives: Vec<f32> =
        others.iter().copied().chain(&input.rejected_vectors).map(|v| cosine(vector, v)).collect();
    calibrate::calibrate(&loo, &negatives).unwrap_or(THRESHOLD_DEFAULT)
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
    let mut per_label: Vec<Vec<(String, f32)>> = vec![Vec::new(); prototypes.labels.len()];
    let mut seen: Vec<HashSet<&str>> = vec![HashSet::new(); prototypes.labels.len()];
    for (item_id, vector) in &embeddings {
        let assigned = prototypes.assign(item_id, vector);
        for (n, label) in prototypes.labels.iter().enumerate() {
            if let Some((_, score)) = assigned.iter().find(|(id, _)| *id == label.id) {
                per_label[n].push((item_id.clone(), *score));
                seen[n].insert(item_id);
            }
        }
    }
    let mut total = 0;
    for (n, label) in prototypes.labels.iter().enumerate() {
        // Confirmed items without an embedding keep their label.
        let missing: Vec<String> =
            label.confirmed.iter().filter(|id| !seen[n].contains(id.as_str())).cloned().collect();
        per_label[n].extend(missing.into_iter().map(|id| (id, CONFIRMED_SCORE)));
        total += per_label[n].len();
        catalog.replace_label_assignments(label.id, &per_label[n])?;
    }
    tracing::info!(
        labels = prototypes.labels.len(),
        items = embeddings.len(),
        assignments = total,
        "relabelled"
    );
    Ok(total)
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
    #[serde(default)]
    strict: bool,
}

/// Reads label definitions (see `samples/labels/labels.json`); a label without a
/// threshold is calibrated. The specs are checked when created in the catalog.
pub fn load_label_specs(path: &Path) -> Result<Vec<LabelSpec>, LabelError> {
    let bytes = read_bounded(path, LABEL_FILE_BYTES_MAX)?;
    let entries: Vec<LabelFileEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| LabelError::invalid("label file", format!("{}: {e}", path.display())))?;
    Ok(entries
        .into_iter()
        .map(|l| LabelSpec { name: l.name, examples: l.examples, threshold: l.threshold, strict: l.strict })
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
