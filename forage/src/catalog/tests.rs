//! Unit tests of the catalog: migrations, dedup, search, embeddings, cascades.

use super::*;

fn item(guid: Option<&str>, url: Option<&str>, title: &str, summary: &str) -> NewItem {
    NewItem {
        guid: guid.map(str::to_owned),
        url: url.map(str::to_owned),
        title: title.to_owned(),
        summary: summary.to_owned(),
        ..NewItem::default()
    }
}

#[test]
fn old_schema_migrates_and_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    {
        let mut conn = Connection::open(&path).expect("open");
        assert_eq!(schema::migrate_to(&mut conn, 1).expect("v1"), 1);
        conn.execute(
            "INSERT INTO sources (url, kind, interval_s, added_ms) VALUES ('file:///a', 'file', 60, 1)",
            [],
        )
        .expect("insert");
        let no_labels = conn.query_row("SELECT COUNT(*) FROM labels", [], |r| r.get::<_, i64>(0));
        assert!(no_labels.is_err(), "v1 must not have labels yet");
    }
    let cat = Catalog::open(&path).expect("reopen");
    assert_eq!(cat.schema_version().expect("version"), schema::SCHEMA_VERSION);
    assert_eq!(cat.list_sources().expect("list").len(), 1);
    let n: i64 = cat.conn.query_row("SELECT COUNT(*) FROM labels", [], |r| r.get(0)).expect("labels");
    assert_eq!(n, 0);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    drop(Catalog::open(&path).expect("open"));
    let conn = Connection::open(&path).expect("raw");
    conn.execute("UPDATE schema_version SET version = 99", []).expect("bump");
    drop(conn);
    let err = Catalog::open(&path).err().expect("must refuse");
    assert_eq!(err.kind(), CatalogErrorKind::Corruption);
}

#[test]
fn dedup_by_guid_then_url_then_hash() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let a = cat.add_source("file:///a", "file", 60, 0).expect("a");
    let b = cat.add_source("file:///b", "file", 60, 0).expect("b");
    let first = vec![
        item(Some("g1"), Some("https://x/1"), "One", "first"),
        item(Some("g1"), Some("https://x/other"), "One again", "same guid"),
        item(Some("g2"), None, "Two", "second"),
    ];
    assert_eq!(cat.upsert_items(a, &first, 10).expect("up"), 2);
    assert_eq!(cat.upsert_items(a, &first, 20).expect("again"), 0, "refetch adds nothing");
    let second = vec![
        item(Some("g1"), Some("https://x/1"), "One elsewhere", "same url"),
        item(Some("z"), None, "  two ", "SECOND"),
        item(Some("g1"), None, "New", "guid g1 is only a duplicate within source a"),
    ];
    assert_eq!(cat.upsert_items(b, &second, 30).expect("b"), 1);
    assert_eq!(cat.count_items(None).expect("count"), 3);
    assert_eq!(cat.count_items(Some(b)).expect("count b"), 1);
}

#[test]
fn item_ids_are_stable_and_prefixed() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let a = cat.add_source("file:///a", "file", 60, 0).expect("a");
    cat.upsert_items(a, &[item(None, Some("https://x/1"), "T", "S")], 1).expect("up");
    let items = cat.list_items(None, 0, 10).expect("list");
    assert_eq!(items[0].id, item_id("url:https://x/1"));
    assert!(items[0].id.starts_with("it-") && items[0].id.len() == 19);
    assert_eq!(cat.get_item(&items[0].id).expect("get").expect("some").title, "T");
}

#[test]
fn search_is_safe_and_ranked() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let a = cat.add_source("file:///a", "file", 60, 0).expect("a");
    let items = vec![
        item(Some("1"), None, "Rust borrow checker", "lifetimes and borrow rules, borrow borrow"),
        item(Some("2"), None, "Gardening", "tomatoes mention borrow once"),
        item(Some("3"), None, "Databases", "b-trees"),
    ];
    cat.upsert_items(a, &items, 1).expect("up");
    let hits = cat.search("borrow", 10).expect("search");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].guid.as_deref(), Some("1"));
    for q in ["\"", "AND OR NOT", "b-trees", "title:x", "(*)", "NEAR(", ""] {
        cat.search(q, 10).unwrap_or_else(|e| panic!("query {q:?} failed: {e}"));
    }
    assert_eq!(cat.search("b-trees", 10).expect("dash").len(), 1);
}

#[test]
fn remove_source_cascades_to_items_and_fts() {
    let mut cat = Catalog::open_in_memory().expect("open");
    let a = cat.add_source("file:///a", "file", 60, 0).expect("a");
    cat.upsert_items(a, &[item(Some("1"), None, "Comet", "ice")], 1).expect("up");
    let id = cat.list_items(None, 0, 1).expect("list")[0].id.clone();
    cat.put_embedding(&id, "m", &[1.0, -2.5]).expect("emb");
    assert_eq!(cat.get_embedding(&id, "m").expect("get"), Some(vec![1.0, -2.5]));
    assert!(cat.remove_source(a).expect("remove"));
    assert_eq!(cat.count_items(None).expect("count"), 0);
    assert!(cat.search("comet", 10).expect("search").is_empty());
    assert_eq!(cat.get_embedding(&id, "m").expect("get"), None);
}

#[test]
fn due_sources_follow_interval_and_errors_are_recorded() {
    let cat = Catalog::open_in_memory().expect("open");
    let a = cat.add_source("file:///a", "file", 120, 0).expect("a");
    assert_eq!(cat.due_sources(0).expect("due").len(), 1, "never fetched is due");
    let rec = FetchRecord { fetched_ms: 1_000, error: Some("boom".into()), ..FetchRecord::default() };
    cat.record_fetch(a, &rec).expect("record");
    assert!(cat.due_sources(100_000).expect("due").is_empty());
    assert_eq!(cat.due_sources(121_000).expect("due").len(), 1);
    let s = cat.get_source(a).expect("get").expect("some");
    assert_eq!(s.last_error.as_deref(), Some("boom"));
    cat.record_fetch(a, &FetchRecord { fetched_ms: 2_000, ..FetchRecord::default() }).expect("ok");
    assert_eq!(cat.get_source(a).expect("get").expect("some").last_error, None);
}
