//! Tests of the embedding worker, with the lexical embedder so they run fast.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::catalog::{LabelSpec, NewItem};
use crate::embed::LexicalEmbedder;

const WAIT: Duration = Duration::from_secs(30);

/// Adds `n` items to a source, alternating a Rust topic and a bread topic.
fn add_items(cat: &mut Catalog, source: &str, n: usize) {
    let src = cat.add_source(source, "file", 60, 0).expect("source");
    let items: Vec<NewItem> = (0..n)
        .map(|i| {
            let (title, summary) = if i % 2 == 0 {
                (
                    format!("Rust borrow checker and cargo crates, {source} part {i}"),
                    "rust ownership lifetimes cargo",
                )
            } else {
                (format!("Sourdough bread baking, {source} loaf {i}"), "flour starter oven crust")
            };
            NewItem {
                guid: Some(format!("{source}-{i}")),
                title,
                summary: summary.into(),
                ..NewItem::default()
            }
        })
        .collect();
    cat.upsert_items(src, &items, 1).expect("upsert");
}

fn rust_label(cat: &Catalog) -> i64 {
    let spec = LabelSpec {
        name: "rust".into(),
        examples: vec!["rust borrow checker ownership".into(), "cargo crates and rust lifetimes".into()],
        threshold: Some(0.3),
        strict: false,
    };
    cat.create_label(&spec, 0).expect("label")
}

/// Checks, on every call, that the catalog is not locked while the model runs.
struct SpyEmbedder {
    catalog: Arc<Mutex<Catalog>>,
    calls: AtomicUsize,
    locked_calls: AtomicUsize,
}

impl Embedder for SpyEmbedder {
    fn dims(&self) -> usize {
        LexicalEmbedder::new().dims()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.catalog.try_lock().is_err() {
            self.locked_calls.fetch_add(1, Ordering::Relaxed);
        }
        LexicalEmbedder::new().embed(texts)
    }
    fn name(&self) -> &str {
        "spy"
    }
}

struct FailingEmbedder;

impl Embedder for FailingEmbedder {
    fn dims(&self) -> usize {
        3
    }
    fn embed(&self, _texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Err(EmbedError::Model("boom".into()))
    }
    fn name(&self) -> &str {
        "failing"
    }
}

#[test]
fn embed_pending_embeds_everything_in_batches_and_labels_it() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let n = BATCH_TEXTS_MAX * 3 + 5;
    add_items(&mut cat, "file:///a", n);
    let label = rust_label(&cat);
    let catalog = Arc::new(Mutex::new(cat));
    let spy = SpyEmbedder {
        catalog: Arc::clone(&catalog),
        calls: AtomicUsize::new(0),
        locked_calls: AtomicUsize::new(0),
    };
    let seen = Mutex::new(Vec::new());
    let report = embed_pending(&catalog, &spy, &|p| seen.lock().expect("seen").push(p)).expect("embed");

    assert_eq!((report.embedded, report.batches, report.model.as_str()), (n, 4, "spy"));
    let seen = seen.into_inner().expect("seen");
    assert_eq!(seen.len(), 4);
    assert!(seen.windows(2).all(|w| w[0].done < w[1].done), "{seen:?}");
    assert_eq!(seen.last().copied(), Some(EmbedProgress { done: n, total: n }));
    assert!(spy.calls.load(Ordering::Relaxed) >= 4);
    assert_eq!(spy.locked_calls.load(Ordering::Relaxed), 0, "the catalog was locked while embedding");

    let cat = catalog.lock().expect("lock");
    assert_eq!(cat.count_items_without_embedding("spy").expect("count"), 0);
    let counts = cat.label_item_counts().expect("counts");
    assert_eq!(counts.get(&label), Some(&n.div_ceil(2)), "exactly the Rust half is labelled");
    assert_eq!(report.labelled, n.div_ceil(2));
    drop(cat);
    let again = embed_pending(&catalog, &spy, &|_| {}).expect("again");
    assert_eq!((again.embedded, again.batches), (0, 0), "nothing left to do");
}

#[test]
fn worker_runs_on_start_and_on_notify_then_shuts_down() {
    let mut cat = Catalog::open_in_memory().expect("open");
    add_items(&mut cat, "file:///a", 40);
    rust_label(&cat);
    let catalog = Arc::new(Mutex::new(cat));
    let worker = EmbedWorker::spawn(Arc::clone(&catalog), Arc::new(LexicalEmbedder::new()));
    assert!(worker.wait_idle(WAIT), "first pass did not finish");
    assert_eq!(worker.status().embedded_total, 40);

    add_items(&mut catalog.lock().expect("lock"), "file:///b", 70);
    for _ in 0..5 {
        worker.notify();
    }
    assert!(worker.wait_idle(WAIT), "notified pass did not finish");
    let status = worker.status();
    assert_eq!(
        status,
        WorkerStatus { pending_hint: 0, embedded_total: 110, last_error: None, running: false }
    );
    let cat = catalog.lock().expect("lock");
    assert_eq!(cat.count_items_without_embedding("lexical").expect("count"), 0);
    assert_eq!(cat.label_item_counts().expect("counts").values().sum::<usize>(), 55);
    drop(cat);
    worker.shutdown();
    assert_eq!(Arc::strong_count(&catalog), 1, "the worker thread was joined and released the catalog");
}

#[test]
fn a_failing_pass_is_reported_in_status() {
    let mut cat = Catalog::open_in_memory().expect("open");
    add_items(&mut cat, "file:///a", 3);
    let catalog = Arc::new(Mutex::new(cat));
    let worker = EmbedWorker::spawn(Arc::clone(&catalog), Arc::new(FailingEmbedder));
    assert!(worker.wait_idle(WAIT));
    let status = worker.status();
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("boom")), "{status:?}");
    assert_eq!(status.embedded_total, 0);
    drop(worker);
    assert_eq!(Arc::strong_count(&catalog), 1, "drop joins the thread");
    assert_eq!(catalog.lock().expect("lock").count_items_without_embedding("failing").expect("count"), 3);
}

/// Records the text lengths of every batch it is given.
#[derive(Default)]
struct LengthRecorder {
    batches: Mutex<Vec<Vec<usize>>>,
}

impl Embedder for LengthRecorder {
    fn dims(&self) -> usize {
        LexicalEmbedder::new().dims()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batches.lock().expect("batches").push(texts.iter().map(|t| t.len()).collect());
        LexicalEmbedder::new().embed(texts)
    }
    fn name(&self) -> &str {
        "lengths"
    }
}

#[test]
fn batches_hold_texts_of_similar_length() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let src = cat.add_source("file:///lengths", "file", 60, 0).expect("source");
    // Lengths jump around in insertion order: 7 * i mod 97 words.
    let n = BATCH_TEXTS_MAX * 4;
    let items: Vec<NewItem> = (0..n)
        .map(|i| NewItem {
            guid: Some(format!("l-{i}")),
            title: format!("item {i}"),
            summary: "word ".repeat(1 + (7 * i) % 97),
            ..NewItem::default()
        })
        .collect();
    cat.upsert_items(src, &items, 1).expect("upsert");
    let catalog = Mutex::new(cat);
    let recorder = LengthRecorder::default();
    let report = embed_pending(&catalog, &recorder, &|_| {}).expect("embed");
    assert_eq!(report.embedded, n);
    let batches = recorder.batches.into_inner().expect("batches");
    assert_eq!(batches.len(), 4);
    for pair in batches.windows(2) {
        let (longest, shortest) = (pair[0].iter().max(), pair[1].iter().min());
        assert!(longest <= shortest, "batches overlap in length: {:?} then {:?}", pair[0], pair[1]);
    }
}
