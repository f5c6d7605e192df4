//! Unit tests of the label tables: validation, conflicts, feedback, assignments, cascades and
//! the embedding-queue reads.

use super::*;
use crate::catalog::{CatalogErrorKind, NewItem};

fn spec(name: &str) -> LabelSpec {
    LabelSpec { name: name.into(), examples: vec!["an example".into()], threshold: Some(0.4), strict: false }
}

/// A catalog with one source and `n` items; returns it with the item ids in insertion order.
fn catalog_with_items(n: usize) -> (Catalog, i64, Vec<String>) {
    let mut cat = Catalog::open_in_memory().expect("open");
    let src = cat.add_source("file:///a", "file", 60, 0).expect("source");
    let items: Vec<NewItem> = (0..n)
        .map(|i| NewItem {
            guid: Some(format!("g{i}")),
            title: format!("Title {i}"),
            summary: if i == 0 { String::new() } else { format!("Summary {i}") },
            ..NewItem::default()
        })
        .collect();
    cat.upsert_items(src, &items, 1).expect("upsert");
    let mut ids: Vec<(i64, String)> = cat
        .conn
        .prepare("SELECT seq, id FROM items")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    ids.sort();
    (cat, src, ids.into_iter().map(|(_, id)| id).collect())
}

#[test]
fn create_get_list_update_delete() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let a = cat.create_label(&spec("rust"), 5).expect("create");
    let b = cat.create_label(&spec("space"), 6).expect("create");
    let got = cat.get_label(a).expect("get").expect("some");
    assert_eq!((got.name.as_str(), got.threshold, got.created_ms), ("rust", 0.4, 5));
    assert_eq!(got.examples, vec!["an example".to_string()]);
    assert_eq!(cat.list_labels().expect("list").iter().map(|l| l.id).collect::<Vec<_>>(), vec![a, b]);

    let patch = LabelPatch {
        threshold: Some(0.6),
        examples: Some(vec!["x".into(), "y".into()]),
        ..LabelPatch::default()
    };
    cat.update_label(a, &patch).expect("update");
    let got = cat.get_label(a).expect("get").expect("some");
    assert_eq!((got.name.as_str(), got.threshold, got.examples.len()), ("rust", 0.6, 2));

    assert!(cat.delete_label(a).expect("delete"));
    assert!(!cat.delete_label(a).expect("delete again"));
    assert_eq!(cat.get_label(a).expect("get"), None);
    let err = cat.update_label(a, &LabelPatch::default()).expect_err("gone");
    assert_eq!(err.kind(), CatalogErrorKind::NotFound);
}

#[test]
fn bad_specs_are_invalid_input_and_write_nothing() {
    let cat = Catalog::open_in_memory().expect("open");
    let long_example = "x".repeat(LABEL_EXAMPLE_BYTES_MAX + 1);
    let bad = [
        LabelSpec { name: String::new(), ..spec("") },
        LabelSpec { name: "   ".into(), ..spec("") },
        spec(&"n".repeat(LABEL_NAME_BYTES_MAX + 1)),
        LabelSpec { examples: vec![], ..spec("a") },
        LabelSpec { examples: vec!["e".into(); LABEL_EXAMPLES_MAX + 1], ..spec("a") },
        LabelSpec { examples: vec!["ok".into(), long_example], ..spec("a") },
        LabelSpec { examples: vec!["  ".into()], ..spec("a") },
        LabelSpec { threshold: Some(0.0), ..spec("a") },
        LabelSpec { threshold: Some(1.0), ..spec("a") },
        LabelSpec { threshold: Some(-0.5), ..spec("a") },
        LabelSpec { threshold: Some(f32::NAN), ..spec("a") },
    ];
    for (i, s) in bad.iter().enumerate() {
        let err = cat.create_label(s, 0).expect_err(&format!("spec {i} must be refused"));
        assert_eq!(err.kind(), CatalogErrorKind::InvalidInput, "spec {i}: {err}");
    }
    assert!(cat.list_labels().expect("list").is_empty());
    // The limits themselves are accepted.
    let edge = LabelSpec {
        name: "n".repeat(LABEL_NAME_BYTES_MAX),
        examples: vec!["e".repeat(LABEL_EXAMPLE_BYTES_MAX); LABEL_EXAMPLES_MAX],
        threshold: Some(0.99),
        strict: false,
    };
    cat.create_label(&edge, 0).expect("limits are inclusive");
}

#[test]
fn duplicate_names_conflict() {
    let mut cat = Catalog::open_in_memory().expect("open");
    cat.create_label(&spec("rust"), 0).expect("create");
    let err = cat.create_label(&spec("rust"), 0).expect_err("duplicate");
    assert_eq!(err.kind(), CatalogErrorKind::Conflict, "{err}");
    let other = cat.create_label(&spec("go"), 0).expect("create");
    let patch = LabelPatch { name: Some("rust".into()), ..LabelPatch::default() };
    let err = cat.update_label(other, &patch).expect_err("rename onto existing");
    assert_eq!(err.kind(), CatalogErrorKind::Conflict);
    let bad = LabelPatch { threshold: Some(2.0), ..LabelPatch::default() };
    assert_eq!(cat.update_label(other, &bad).expect_err("bad").kind(), CatalogErrorKind::InvalidInput);
    assert_eq!(cat.get_label(other).expect("get").expect("some").name, "go");
}

#[test]
fn corrupt_examples_are_reported_on_read() {
    let cat = Catalog::open_in_memory().expect("open");
    let id = cat.create_label(&spec("rust"), 0).expect("create");
    cat.conn.execute("UPDATE labels SET examples = 'not json' WHERE id = ?1", [id]).expect("damage");
    assert_eq!(cat.get_label(id).expect_err("corrupt").kind(), CatalogErrorKind::Corruption);
    cat.conn.execute("UPDATE labels SET examples = '[]' WHERE id = ?1", [id]).expect("damage");
    assert_eq!(cat.list_labels().expect_err("corrupt").kind(), CatalogErrorKind::Corruption);
}

#[test]
fn feedback_is_recorded_replaced_and_counted() {
    let (cat, _, ids) = catalog_with_items(3);
    let l = cat.create_label(&spec("rust"), 0).expect("create");
    cat.set_label_feedback(l, &ids[0], true, 1).expect("confirm");
    cat.set_label_feedback(l, &ids[1], false, 2).expect("reject");
    cat.set_label_feedback(l, &ids[2], true, 3).expect("confirm");
    cat.set_label_feedback(l, &ids[2], false, 4).expect("change of mind");
    let (confirmed, rejected) = cat.label_feedback(l).expect("feedback");
    assert_eq!(confirmed, vec![ids[0].clone()]);
    assert_eq!(rejected, vec![ids[1].clone(), ids[2].clone()]);
    let label = cat.get_label(l).expect("get").expect("some");
    assert_eq!((label.confirmed, label.rejected), (1, 2));
    let err = cat.set_label_feedback(l + 1, &ids[0], true, 5).expect_err("no label");
    assert_eq!(err.kind(), CatalogErrorKind::NotFound);
    let err = cat.set_label_feedback(l, "it-0000000000000000", true, 5).expect_err("no item");
    assert_eq!(err.kind(), CatalogErrorKind::NotFound);
}

#[test]
fn assignments_replace_add_and_count() {
    let (mut cat, _, ids) = catalog_with_items(3);
    let a = cat.create_label(&spec("a"), 0).expect("a");
    let b = cat.create_label(&spec("b"), 0).expect("b");
    cat.replace_label_assignments(a, &[(ids[0].clone(), 0.5), (ids[1].clone(), 0.7)]).expect("replace");
    cat.add_item_labels(&ids[0], &[(b, 0.9)]).expect("add");
    let labels = cat.item_labels(&ids[0]).expect("labels");
    assert_eq!(
        labels.iter().map(|l| (l.name.as_str(), l.score)).collect::<Vec<_>>(),
        [("b", 0.9), ("a", 0.5)]
    );
    cat.replace_label_assignments(a, &[(ids[2].clone(), 0.6), ("it-gone".into(), 0.9)]).expect("replace");
    assert!(cat.item_labels(&ids[1]).expect("labels").is_empty(), "replaced away");
    let counts = cat.label_item_counts().expect("counts");
    assert_eq!((counts.get(&a), counts.get(&b)), (Some(&1), Some(&1)), "the vanished item was skipped");
    let err = cat.replace_label_assignments(99, &[]).expect_err("no label");
    assert_eq!(err.kind(), CatalogErrorKind::NotFound);
    assert!(cat.remove_item_label(&ids[0], b).expect("remove"));
    assert!(!cat.remove_item_label(&ids[0], b).expect("remove again"));
}

#[test]
fn deletes_cascade_to_assignments_and_feedback() {
    let (mut cat, src, ids) = catalog_with_items(2);
    let a = cat.create_label(&spec("a"), 0).expect("a");
    let b = cat.create_label(&spec("b"), 0).expect("b");
    for l in [a, b] {
        cat.replace_label_assignments(l, &[(ids[0].clone(), 0.5), (ids[1].clone(), 0.5)]).expect("assign");
        cat.set_label_feedback(l, &ids[0], true, 1).expect("feedback");
    }
    let count = |cat: &Catalog, table: &str| -> i64 {
        cat.conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
    };
    assert_eq!((count(&cat, "item_labels"), count(&cat, "label_feedback")), (4, 2));
    assert!(cat.delete_label(a).expect("delete"));
    assert_eq!((count(&cat, "item_labels"), count(&cat, "label_feedback")), (2, 1));
    assert!(cat.remove_source(src).expect("remove source"));
    assert_eq!((count(&cat, "item_labels"), count(&cat, "label_feedback")), (0, 0));
    assert_eq!(cat.get_label(b).expect("get").expect("label stays").confirmed, 0);
}

#[test]
fn pending_items_embeddings_and_batched_writes() {
    let (mut cat, src, ids) = catalog_with_items(5);
    assert_eq!(cat.count_items_without_embedding("m").expect("count"), 5);
    let pending = cat.items_without_embedding("m", i64::MIN, 3).expect("pending");
    assert_eq!(pending.len(), 3);
    assert_eq!((&pending[0].1, &pending[0].2), (&ids[0], &"Title 0".to_string()), "no summary: title alone");
    assert_eq!((&pending[1].1, &pending[1].2), (&ids[1], &"Title 1. Summary 1".to_string()));
    // Keyset paging: after the second item's seq, the third comes first.
    let rest = cat.items_without_embedding("m", pending[1].0, 3).expect("pending");
    assert_eq!(rest[0].1, ids[2]);
    let l = cat.create_label(&spec("a"), 0).expect("label");
    let batch: Vec<EmbeddedItem> = ids
        .iter()
        .take(3)
        .chain(std::iter::once(&"it-vanished00000000".to_string()))
        .enumerate()
        .map(|(i, id)| EmbeddedItem {
            item_id: id.clone(),
            vector: vec![i as f32, 1.0],
            labels: vec![(l, 0.5)],
        })
        .collect();
    assert_eq!(cat.put_embeddings_with_labels("m", &batch).expect("put"), 3, "vanished item skipped");
    assert_eq!(cat.count_items_without_embedding("m").expect("count"), 2);
    assert_eq!(cat.count_items_without_embedding("other").expect("count"), 5, "per model");
    assert_eq!(cat.items_without_embedding("m", i64::MIN, 10).expect("pending")[0].1, ids[3]);
    let all = cat.all_embeddings("m").expect("all");
    assert_eq!(all.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[..3].to_vec());
    assert_eq!(all[2].1, vec![2.0, 1.0]);
    assert_eq!(cat.label_item_counts().expect("counts").get(&l), Some(&3));
    let empty = [EmbeddedItem { item_id: ids[4].clone(), vector: vec![], labels: vec![] }];
    assert_eq!(
        cat.put_embeddings_with_labels("m", &empty).expect_err("empty").kind(),
        CatalogErrorKind::InvalidInput
    );
    cat.remove_source(src).expect("remove");
    assert!(cat.all_embeddings("m").expect("all").is_empty());
}
