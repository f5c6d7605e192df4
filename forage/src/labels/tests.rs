//! Unit tests of labelling: prototype maths, thresholds, feedback forcing and refinement,
//! relabelling, label files and evaluation, on a tiny embedder whose vectors are known.

use super::eval::{EvalExample, evaluate, parse_examples};
use super::*;
use crate::catalog::{LabelPatch, NewItem};
use crate::embed::EmbedError;

/// Embeds a text as the normalised counts of the words "x", "y" and "z" (3 dims).
struct XyzEmbedder;

impl Embedder for XyzEmbedder {
    fn dims(&self) -> usize {
        3
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| xyz(t)).collect())
    }
    fn name(&self) -> &str {
        "xyz"
    }
}

fn xyz(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 3];
    for w in text.split_whitespace() {
        match w {
            "x" => v[0] += 1.0,
            "y" => v[1] += 1.0,
            "z" => v[2] += 1.0,
            _ => {}
        }
    }
    normalized(v).unwrap_or_else(|| vec![0.0; 3])
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

/// A catalog whose items have the given titles (embedded with [`XyzEmbedder`]); returns the
/// item ids in the order of `titles`.
fn catalog_with(titles: &[&str]) -> (Catalog, Vec<String>) {
    let mut cat = Catalog::open_in_memory().expect("open");
    let src = cat.add_source("file:///t", "file", 60, 0).expect("source");
    let items: Vec<NewItem> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| NewItem {
            guid: Some(format!("g{i}")),
            title: format!("{t} #{i}"),
            ..NewItem::default()
        })
        .collect();
    cat.upsert_items(src, &items, 1).expect("upsert");
    let ids: Vec<String> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pending = cat.items_without_embedding("xyz", i64::MIN, 1000).expect("pending");
            let (_, id, _) =
                pending.into_iter().find(|(_, _, text)| text == &format!("{t} #{i}")).expect("item");
            cat.put_embedding(&id, "xyz", &xyz(t)).expect("embed");
            id
        })
        .collect();
    (cat, ids)
}

fn label(cat: &Catalog, name: &str, examples: &[&str], threshold: f32) -> i64 {
    let spec = LabelSpec {
        name: name.into(),
        examples: examples.iter().map(|e| e.to_string()).collect(),
        threshold: Some(threshold),
        // These tests pin the threshold rule alone; the fallback has tests of its own.
        strict: true,
    };
    cat.create_label(&spec, 0).expect("create label")
}

/// [`relabel_all`] on a catalog the test owns (it takes a shared one).
fn relabel(cat: &mut Catalog) {
    let shared = Mutex::new(std::mem::replace(cat, Catalog::open_in_memory().expect("open")));
    relabel_all(&shared, &XyzEmbedder).expect("relabel");
    *cat = shared.into_inner().expect("lock");
}

fn labels_of(cat: &Catalog, id: &str) -> Vec<(String, f32)> {
    cat.item_labels(id).expect("labels").into_iter().map(|l| (l.name, l.score)).collect()
}

#[test]
fn prototype_is_the_unit_mean_of_positives() {
    let s = std::f32::consts::FRAC_1_SQRT_2;
    assert!(close(&prototype(&[vec![1.0, 0.0], vec![0.0, 1.0]], &[], &[]), &[s, s]));
    // Confirmed items count like examples.
    assert!(close(&prototype(&[vec![1.0, 0.0]], &[vec![0.0, 1.0]], &[]), &[s, s]));
    // Vectors of another length are ignored, not a panic.
    assert!(close(&prototype(&[vec![1.0, 0.0], vec![1.0, 2.0, 3.0]], &[], &[vec![9.0]]), &[1.0, 0.0]));
    assert!(prototype(&[], &[], &[vec![1.0, 0.0]]).is_empty(), "no positives: matches nothing");
    assert!(prototype(&[vec![0.0, 0.0]], &[], &[]).is_empty());
}

#[test]
fn rejections_push_the_prototype_away() {
    let s = std::f32::consts::FRAC_1_SQRT_2;
    let p = prototype(&[vec![1.0, 0.0], vec![0.0, 1.0]], &[], &[vec![0.0, 1.0]]);
    // (s, s) - 0.5 * (0, 1), renormalised.
    let (a, b) = (s, s - REJECT_WEIGHT);
    let n = (a * a + b * b).sqrt();
    assert!(close(&p, &[a / n, b / n]), "{p:?}");
    assert!((p.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5, "unit length");
    assert!(
        cosine(&p, &[0.0, 1.0])
            < cosine(&prototype(&[vec![1.0, 0.0], vec![0.0, 1.0]], &[], &[]), &[0.0, 1.0])
    );
}

#[test]
fn assign_uses_each_labels_threshold() {
    let (cat, _) = catalog_with(&[]);
    label(&cat, "x", &["x"], 0.7);
    label(&cat, "y", &["y"], 0.75);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    let ids = |v: Vec<(i64, f32)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let (lx, ly) = (p.labels[0].id, p.labels[1].id);
    assert_eq!(ids(p.assign("a", &xyz("x"))), vec![lx]);
    // cos = 0.707: passes 0.7, not 0.75.
    assert_eq!(ids(p.assign("a", &xyz("x y"))), vec![lx]);
    assert_eq!(ids(p.assign("a", &xyz("y y y x"))), vec![ly]);
    assert!(p.assign("a", &xyz("z")).is_empty());
    assert!(p.assign("a", &[1.0, 0.0]).is_empty(), "wrong dims score nothing");
}

#[test]
fn feedback_forces_and_refines() {
    let (mut cat, ids) = catalog_with(&["x y", "y x", "z", "x x y"]);
    let l = label(&cat, "x", &["x"], 0.5);
    relabel(&mut cat);
    assert_eq!(labels_of(&cat, &ids[1]).len(), 1, "cos 0.707 passes 0.5");
    assert!(labels_of(&cat, &ids[2]).is_empty());

    // Reject "x y": it loses the label at once, and the prototype moves away from y, so its
    // twin "y x" (same vector, cos now 0.28) drops out on relabelling while "x x y" (cos 0.57)
    // keeps the label.
    set_feedback(&mut cat, l, &ids[0], false, 1).expect("reject");
    assert!(labels_of(&cat, &ids[0]).is_empty());
    relabel(&mut cat);
    assert!(labels_of(&cat, &ids[0]).is_empty(), "rejected never has it");
    assert!(labels_of(&cat, &ids[1]).is_empty(), "the twin of a rejected item drops out");
    assert_eq!(labels_of(&cat, &ids[3]).len(), 1);

    // Confirm "z": it gets the label at once, with a score of 1, though its cosine is 0.
    set_feedback(&mut cat, l, &ids[2], true, 2).expect("confirm");
    assert_eq!(labels_of(&cat, &ids[2]), vec![("x".to_string(), CONFIRMED_SCORE)]);
    relabel(&mut cat);
    assert_eq!(labels_of(&cat, &ids[2]), vec![("x".to_string(), CONFIRMED_SCORE)], "confirmed always has it");
    assert!(labels_of(&cat, &ids[0]).is_empty(), "still rejected");
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    assert!(p.labels[0].vector[2] > 0.5, "the confirmed z item pulls the prototype towards z");
    assert!(p.labels[0].vector[1] < 0.0, "the rejected x-y item pushes it away from y");
}

#[test]
fn confirmations_widen_a_label() {
    let (mut cat, ids) = catalog_with(&["x y", "y y x", "z"]);
    let l = label(&cat, "x", &["x"], 0.72);
    relabel(&mut cat);
    assert!(labels_of(&cat, &ids[0]).is_empty(), "cos 0.707 < 0.72");
    assert!(labels_of(&cat, &ids[1]).is_empty(), "cos 0.447 < 0.72");
    set_feedback(&mut cat, l, &ids[0], true, 1).expect("confirm");
    relabel(&mut cat);
    // Prototype (1.707, 0.707)/1.848: cos with (1, 2)/sqrt(5) is about 0.755.
    let got = labels_of(&cat, &ids[1]);
    assert_eq!(got.len(), 1, "the confirmation widened the label");
    assert!((got[0].1 - 0.755).abs() < 0.01, "{got:?}");
    assert!(labels_of(&cat, &ids[2]).is_empty());
}

fn calibrated(cat: &Catalog, name: &str, examples: &[&str], strict: bool) -> i64 {
    let spec = LabelSpec {
        name: name.into(),
        examples: examples.iter().map(|e| e.to_string()).collect(),
        threshold: None,
        strict,
    };
    cat.create_label(&spec, 0).expect("create label")
}

#[test]
fn calibrated_thresholds_come_from_the_examples_and_the_nearest_label_fills_in() {
    let (mut cat, ids) = catalog_with(&["x x x y", "z", "x y y y", "x y"]);
    calibrated(&cat, "x", &["x", "x x y", "x x z"], false);
    calibrated(&cat, "y", &["y", "y y x", "y y z"], false);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    assert!(p.labels.iter().all(|l| l.rule.calibrated), "{:?}", p.labels);
    // Leave-one-out cosines of the x examples sit near 0.9, the y examples near 0.5-0.6 to
    // the x prototype: the threshold lands between, above the fixed default's spread.
    for l in &p.labels {
        assert!(l.threshold > 0.6 && l.threshold < 0.95, "{}: {}", l.name, l.threshold);
    }
    relabel(&mut cat);
    let names = |id: &str| labels_of(&cat, id).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&ids[0]), ["x"]);
    assert_eq!(names(&ids[2]), ["y"]);
    // "z" is below both thresholds and equally far from both: too close to call, no label.
    assert!(names(&ids[1]).is_empty());
    // "x y" is exactly between and above both thresholds: both labels (co-label margin).
    let mut both = names(&ids[3]);
    both.sort();
    assert_eq!(both, ["x", "y"]);
    // Mostly z with a little x: below every threshold, but x is clearly nearest.
    let nudged = xyz("x z z z");
    let given = p.assign("free", &nudged);
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0].0, p.labels[0].id);
    assert!(given[0].1 < p.labels[0].threshold, "given by the fallback, not the threshold");
}

#[test]
fn three_calibrated_labels_are_compared_around_their_centre() {
    let (cat, _) = catalog_with(&[]);
    calibrated(&cat, "x", &["x", "x x y"], false);
    calibrated(&cat, "y", &["y", "y y z"], false);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    assert!(p.centre.is_none(), "two labels are never centred");
    calibrated(&cat, "z", &["z", "z z x"], false);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    let centre = p.centre.clone().expect("three calibrated labels are centred");
    assert!(centre.iter().all(|c| *c > 0.2), "the mean of the examples: {centre:?}");
    // The similarities are those of the centred, renormalised vectors.
    let sims = p.similarities(&xyz("x"));
    let e = shifted(Some(&centre), &xyz("x"));
    assert!((sims[0] - cosine(&p.labels[0].vector, &e)).abs() < 1e-6);
    assert!(sims[0] > sims[1] && sims[0] > sims[2], "{sims:?}");
    // A hand-set threshold keeps raw cosines for everyone.
    label(&cat, "w", &["x y z"], 0.5);
    assert!(Prototypes::build(&cat, &XyzEmbedder).expect("build").centre.is_none());
}

#[test]
fn strict_labels_get_no_fallback() {
    let (cat, _) = catalog_with(&[]);
    calibrated(&cat, "x", &["x", "x x y", "x x z"], true);
    calibrated(&cat, "y", &["y", "y y x", "y y z"], true);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    assert!(p.assign("free", &xyz("x z z z")).is_empty());
    assert_eq!(p.assign("free", &xyz("x")).len(), 1);
}

#[test]
fn new_items_are_labelled_and_stored_together() {
    let (mut cat, _) = catalog_with(&[]);
    label(&cat, "x", &["x"], 0.6);
    let src = cat.add_source("file:///u", "file", 60, 0).expect("source");
    let item = NewItem { guid: Some("n".into()), title: "fresh".into(), ..NewItem::default() };
    cat.upsert_items(src, &[item], 2).expect("upsert");
    let (_, id, _) = cat.items_without_embedding("xyz", i64::MIN, 1).expect("pending").remove(0);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    let n = label_new_items(&mut cat, &p, &[(id.clone(), xyz("x x z"))]).expect("label");
    assert_eq!(n, 1);
    assert_eq!(cat.get_embedding(&id, "xyz").expect("get"), Some(xyz("x x z")));
    assert_eq!(labels_of(&cat, &id).len(), 1);
}

#[test]
fn label_files_load_with_default_threshold_and_errors_classify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("labels.json");
    std::fs::write(
        &path,
        r#"[{"name": "a", "examples": ["x"]}, {"name": "b", "examples": ["y"], "threshold": 0.5}]"#,
    )
    .expect("write");
    let specs = load_label_specs(&path).expect("load");
    assert_eq!((specs[0].threshold, specs[1].threshold), (None, Some(0.5)));
    std::fs::write(&path, r#"[{"name": "a", "exemples": ["x"]}]"#).expect("write");
    assert_eq!(load_label_specs(&path).expect_err("typo").kind(), LabelErrorKind::InvalidInput);
    let missing = load_label_specs(&dir.path().join("nope.json")).expect_err("missing");
    assert_eq!(missing.kind(), LabelErrorKind::NotFound);
    let cat = Catalog::open_in_memory().expect("open");
    cat.create_label(&specs[0], 0).expect("create");
    let dup = LabelError::from(cat.create_label(&specs[0], 0).expect_err("dup"));
    assert_eq!(dup.kind(), LabelErrorKind::Conflict);
    let mut cat = cat;
    let gone = LabelError::from(cat.update_label(42, &LabelPatch::default()).expect_err("gone"));
    assert_eq!(gone.kind(), LabelErrorKind::NotFound);
}

#[test]
fn eval_counts_match_a_hand_computed_case() {
    let (cat, _) = catalog_with(&[]);
    label(&cat, "X", &["x"], 0.6);
    label(&cat, "Y", &["y"], 0.6);
    let p = Prototypes::build(&cat, &XyzEmbedder).expect("build");
    let ex = |text: &str, labels: &[&str]| EvalExample {
        text: text.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let examples =
        [ex("x", &["X"]), ex("y", &["Y"]), ex("x y", &["X"]), ex("z", &["X", "cooking"]), ex("y y y x", &[])];
    let r = evaluate(&examples, &p, &XyzEmbedder).expect("eval");
    let (x, y) = (&r.per_label[0], &r.per_label[1]);
    assert_eq!((x.true_positives, x.false_positives, x.false_negatives, x.support), (2, 0, 1, 3));
    assert_eq!((y.true_positives, y.false_positives, y.false_negatives, y.support), (1, 2, 0, 1));
    assert!(
        (x.precision - 1.0).abs() < 1e-9 && (x.recall - 2.0 / 3.0).abs() < 1e-9 && (x.f1 - 0.8).abs() < 1e-9
    );
    assert!(
        (y.precision - 1.0 / 3.0).abs() < 1e-9 && (y.recall - 1.0).abs() < 1e-9 && (y.f1 - 0.5).abs() < 1e-9
    );
    assert!((r.micro.precision - 0.6).abs() < 1e-9 && (r.micro.recall - 0.75).abs() < 1e-9);
    assert!((r.micro.f1 - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(r.unknown.get("cooking"), Some(&1));
    assert_eq!(r.examples, 5);
    let table = r.to_table();
    assert!(table.contains("micro avg") && table.contains("cooking (1)"), "{table}");
}

#[test]
fn eval_files_are_parsed_strictly() {
    let good = "{\"text\": \"x\", \"labels\": [\"X\"], \"id\": 7}\n\n{\"text\": \"y\"}\n";
    let parsed = parse_examples(good).expect("parse");
    assert_eq!(parsed.len(), 2);
    assert!(parsed[1].labels.is_empty());
    let bad = "{\"text\": \"x\", \"labels\": []}\n\n{\"text\": \"x\", \"labels\": \"X\"}\n";
    let err = parse_examples(bad).expect_err("labels must be a list").to_string();
    assert!(err.contains("line 3"), "{err}");
    let err = parse_examples("{\"text\": \"  \"}").expect_err("empty text").to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(parse_examples("not json").is_err());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eval.jsonl");
    std::fs::write(&path, "{\"text\": \"x\", \"labels\": [\"X\"]}\n{\"text\": \"y\", \"labels\": []}\n")
        .expect("write");
    let (cat, _) = catalog_with(&[]);
    let none = evaluate_file(&path, &cat, &XyzEmbedder).expect_err("no labels");
    assert_eq!(none.kind(), LabelErrorKind::NotFound);
    label(&cat, "X", &["x"], 0.6);
    let r = evaluate_file(&path, &cat, &XyzEmbedder).expect("eval");
    assert_eq!((r.micro.true_positives, r.micro.false_positives, r.micro.false_negatives), (1, 0, 0));
}

#[test]
fn names_count_only_when_they_help_the_examples_find_their_label() {
    let unit = |v: [f32; 3]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let examples = vec![
        vec![unit([1.3, -0.8, 0.2]), unit([-1.0, 0.7, 0.5]), unit([-0.1, 0.1, -1.0])],
        vec![unit([0.8, -0.5, -0.9]), unit([0.7, 2.7, -2.2]), unit([-0.5, 1.8, -0.6])],
    ];
    // Names along each label's axis: leave-one-out finds 2 of 6 examples instead of 1.
    let telling = vec![unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0])];
    assert_eq!(name_weight(&examples, &telling), NAME_WEIGHT);
    // The same name for both ("misc", "misc"): no better, so names count for nothing.
    let alike = vec![unit([0.0, 0.0, 1.0]), unit([0.0, 0.0, 1.0])];
    assert_eq!(name_weight(&examples, &alike), 0.0);
    assert_eq!(name_weight(&examples[..1], &telling[..1]), 0.0, "one label: nothing to tell apart");
    // The name pulls the prototype towards itself.
    let named: Vec<f32> = telling[0].iter().map(|x| x * NAME_WEIGHT).collect();
    let with = prototype_named(&examples[0], &[], &[], Some(&named));
    assert!(cosine(&with, &telling[0]) > cosine(&prototype(&examples[0], &[], &[]), &telling[0]));
}
