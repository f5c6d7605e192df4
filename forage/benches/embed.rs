//! Embedding throughput of [`BertEmbedder`] (all-MiniLM-L6-v2 in candle) against the same
//! model run by a numpy forward pass in the same run (`benches/embed_reference_bench.py`),
//! plus the lexical fallback.
//!
//! `cargo bench -p forage --bench embed` (env `EMBED_BENCH_TEXTS` changes the text count,
//! `EMBED_BENCH_ROUNDS` the timed rounds per row; the best round is reported).
//!
//! The texts are feed-item-like (a title and a summary, 20 to 80 words), made by a seeded
//! generator. Both implementations embed every text at batch sizes 1, 8 and 32. candle's
//! figure includes tokenization (that is what `embed` does); numpy gets the token ids from
//! [`BertEmbedder::token_ids`], so its figure is the forward pass alone (tokenization alone
//! is printed as its own row). Before timing anything the bench checks that numpy's vectors
//! agree with candle's (cosine at least [`COSINE_MIN`]): a fast peer that computes something
//! else would make the ratio meaningless. Read the ratios; the machine is shared.
//!
//! The model comes from `FORAGE_MODEL_DIR`, else the default cache folder, installed there
//! when missing. Needs `python3` with numpy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use forage::embed::{BertEmbedder, Embedder, LexicalEmbedder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TEXTS_DEFAULT: usize = 512;
const ROUNDS_DEFAULT: usize = 2;
const BATCH_SIZES: [usize; 3] = [1, 8, 32];
const SEED: u64 = 7;
/// Texts whose numpy vectors are checked against candle's.
const CHECKED_TEXTS: usize = 8;
/// Least cosine accepted between the two implementations' vectors of a text.
const COSINE_MIN: f32 = 0.999;
/// Words per text (title and summary together).
const WORDS_MIN: usize = 20;
const WORDS_MAX: usize = 80;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

fn model_dir() -> PathBuf {
    forage::embed::model_dir_or_install().unwrap_or_else(|e| panic!("no usable sentence model: {e}"))
}

const TOPICS: [&str; 12] = [
    "Rust compiler",
    "sourdough baking",
    "central bank policy",
    "solar storage",
    "trail running",
    "open-source databases",
    "jazz reissues",
    "urban cycling",
    "protein folding",
    "indie game design",
    "coastal erosion",
    "vintage synthesizers",
];
const TITLE_VERBS: [&str; 8] =
    ["rethinks", "ships", "explains", "revisits", "questions", "maps", "benchmarks", "celebrates"];
const TITLE_OBJECTS: [&str; 8] = [
    "a decade of lessons",
    "the hidden costs",
    "what comes next",
    "its biggest release yet",
    "an overlooked idea",
    "the numbers behind the hype",
    "a practical guide",
    "the debate so far",
];
const SUMMARY_SENTENCES: [&str; 16] = [
    "The authors walk through the trade-offs with concrete examples from production systems.",
    "Early readers say the argument holds up, though the data set is still small.",
    "A new release cuts memory use by a third and makes cold starts noticeably faster.",
    "Critics point out that the benchmark leaves out the workloads that matter most.",
    "The piece ends with a checklist for teams that want to try it this quarter.",
    "Interviews with practitioners show how uneven adoption has been across regions.",
    "Prices fell again in October, which surprised most analysts.",
    "It includes a short history, a glossary, and links to the original papers.",
    "The community response was mixed, with strong opinions on both sides.",
    "Several photos document the process from the first sketch to the finished result.",
    "A follow-up post will cover the failure cases and how they were fixed.",
    "The dataset and the scripts used for the charts are published under an open licence.",
    "Experts caution against reading too much into a single season of results.",
    "What started as a weekend experiment is now used by thousands of people every day.",
    "The change is small on paper but shifts how newcomers learn the basics.",
    "Readers in the comments shared their own, sometimes contradictory, experiences.",
];

/// A feed item's text: "Title. Summary", `WORDS_MIN..=WORDS_MAX` words.
fn item_text(rng: &mut StdRng) -> String {
    let topic = TOPICS[rng.random_range(0..TOPICS.len())];
    let verb = TITLE_VERBS[rng.random_range(0..TITLE_VERBS.len())];
    let object = TITLE_OBJECTS[rng.random_range(0..TITLE_OBJECTS.len())];
    let mut text = format!("{topic} {verb} {object}.");
    let target = rng.random_range(WORDS_MIN..=WORDS_MAX);
    loop {
        let sentence = SUMMARY_SENTENCES[rng.random_range(0..SUMMARY_SENTENCES.len())];
        let words = text.split_whitespace().count();
        if words + sentence.split_whitespace().count() > target {
            // Fill up to the target with the start of one more sentence.
            let rest: Vec<&str> = sentence.split_whitespace().take(target.saturating_sub(words)).collect();
            if !rest.is_empty() {
                text.push(' ');
                text.push_str(&rest.join(" "));
            }
            return text;
        }
        text.push(' ');
        text.push_str(sentence);
    }
}

/// Best seconds over `rounds` to run `work` once.
fn best_of(rounds: usize, mut work: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[derive(serde::Deserialize)]
struct NumpyResult {
    /// Batch size → best seconds to embed every text.
    seconds: std::collections::BTreeMap<String, f64>,
    embeddings: Vec<Vec<f32>>,
}

fn run_numpy(dir: &Path, token_ids: &[Vec<u32>], rounds: usize) -> NumpyResult {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("embed_reference_bench.py");
    let job = serde_json::json!({
        "model_dir": dir,
        "token_ids": token_ids,
        "batch_sizes": BATCH_SIZES,
        "rounds": rounds,
        "check": CHECKED_TEXTS,
    });
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(job.to_string().as_bytes()).expect("send the job to numpy");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for numpy");
    assert!(output.status.success(), "the numpy peer failed (it needs python3 with numpy)");
    serde_json::from_slice(&output.stdout).expect("the numpy peer prints its JSON result")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn row(implementation: &str, batch: &str, items_per_s: f64, ratio: Option<f64>) {
    let ratio = ratio.map_or_else(String::new, |r| format!("{r:.2}"));
    println!("{implementation:<22} {batch:>6} {items_per_s:>12.1} {ratio:>12}");
}

fn main() {
    let texts_n = env_usize("EMBED_BENCH_TEXTS", TEXTS_DEFAULT);
    let rounds = env_usize("EMBED_BENCH_ROUNDS", ROUNDS_DEFAULT);
    let mut rng = StdRng::seed_from_u64(SEED);
    let texts: Vec<String> = (0..texts_n).map(|_| item_text(&mut rng)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = model_dir();
    let model = BertEmbedder::load(&dir).expect("load the model");
    let token_ids = model.token_ids(&refs).expect("tokenize");
    let tokens: usize = token_ids.iter().map(Vec::len).sum();
    println!(
        "{texts_n} texts, {:.1} tokens per text on average, best of {rounds} rounds, {} CPUs, model {}",
        tokens as f64 / texts_n as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.display()
    );

    let check = model.embed(&refs[..CHECKED_TEXTS.min(texts_n)]).expect("embed"); // also the warm-up
    let numpy = run_numpy(&dir, &token_ids, rounds);
    for (i, (a, b)) in check.iter().zip(&numpy.embeddings).enumerate() {
        let c = cosine(a, b);
        assert!(c >= COSINE_MIN, "text {i}: numpy and candle disagree (cosine {c}); the peer is wrong");
    }
    assert_eq!(numpy.embeddings.len(), check.len(), "numpy returned every checked vector");

    println!("{:<22} {:>6} {:>12} {:>12}", "implementation", "batch", "items/s", "rust/numpy");
    for size in BATCH_SIZES {
        let rust_s = best_of(rounds, || {
            for chunk in refs.chunks(size) {
                model.embed(chunk).expect("embed");
            }
        });
        let numpy_s = numpy.seconds[&size.to_string()];
        let (rust, peer) = (texts_n as f64 / rust_s, texts_n as f64 / numpy_s);
        row("candle (Rust)", &size.to_string(), rust, Some(rust / peer));
        row("numpy (f32, BLAS)", &size.to_string(), peer, None);
    }
    let tokenize_s = best_of(rounds, || {
        for chunk in refs.chunks(32) {
            model.token_ids(chunk).expect("tokenize");
        }
    });
    row("tokenizer alone", "32", texts_n as f64 / tokenize_s, None);
    let lexical = LexicalEmbedder::new();
    for size in [1, 32] {
        let lexical_s = best_of(rounds, || {
            for chunk in refs.chunks(size) {
                lexical.embed(chunk).expect("lexical embed");
            }
        });
        row("lexical fallback", &size.to_string(), texts_n as f64 / lexical_s, None);
    }
}
