//! API tests against the real `forage demo` process over TCP: every endpoint, bad input
//! (a 4xx JSON error naming the problem, nothing stored) and auth.

mod support_forage;

use serde_json::{Value, json};
use support_forage::{Client, ForageProcess, code};

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items array")
}

fn like_count(app: &Client, item: &str) -> u64 {
    let (status, v) = app.get(&format!("/v1/items/{item}"));
    assert_eq!(status, 200, "{v}");
    v["signals"]["like"].as_u64().unwrap_or(0)
}

#[test]
fn probes_metrics_openapi_and_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &[]);
    assert_eq!(app.get("/healthz"), (200, json!({"status": "ok"})));
    let (status, doc) = app.get("/openapi.json");
    assert_eq!(status, 200);
    for path in ["/v1/feed", "/v1/feedback", "/v1/items/{id}", "/v1/labels/{id}/feedback", "/v1/export"] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    let (status, html) = app.get_text("/");
    assert_eq!(status, 200);
    assert!(html.contains("<html") && html.contains("/ui/app.js"), "{html}");
    assert_eq!(app.get_text("/ui/app.js").0, 200);
    assert_eq!(app.get_text("/ui/style.css").0, 200);
    let count = |text: &str| {
        let line = text.lines().find(|l| l.starts_with("forage_feed_requests_total ")).expect("feed counter");
        line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).expect("a number")
    };
    let before = count(&app.get_text("/metrics").1);
    app.get("/v1/feed?limit=3");
    let (status, metrics) = app.get_text("/metrics");
    assert_eq!(status, 200);
    assert_eq!(count(&metrics), before + 1, "{metrics}");
    let (status, v) = app.get("/v1/nope");
    assert_eq!((status, code(&v)), (404, "not_found"));
}

#[test]
fn feed_pages_filters_and_impressions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &[]);
    // The demo logged its own first page when it started.
    let impressions =
        |app: &Client| app.get("/v1/stats").1["feedback"]["impressions"].as_u64().expect("impressions");
    let baseline = impressions(&app);
    let (status, page) = app.get("/v1/feed?limit=10");
    assert_eq!(status, 200, "{page}");
    let first = items(&page);
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|i| i["propensity"].as_f64().is_some_and(|p| p > 0.0 && p <= 1.0)));
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (status, second) = app.get(&format!("/v1/feed?limit=10&cursor={cursor}"));
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["context"], page["context"]);
    let positions: Vec<u64> = items(&second).iter().map(|i| i["position"].as_u64().expect("pos")).collect();
    assert_eq!(positions, (10..20).collect::<Vec<u64>>());
    let ids =
        |v: &Value| items(v).iter().map(|i| i["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>();
    let (a, b) = (ids(&page), ids(&second));
    assert!(a.iter().all(|id| !b.contains(id)), "a page repeated an item");
    // No more than two in a row from one source.
    let sources: Vec<i64> = items(&page).iter().map(|i| i["source_id"].as_i64().expect("source")).collect();
    assert!(sources.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])), "{sources:?}");

    // Impressions with propensities are in Tidal: the arms count them.
    assert_eq!(impressions(&app), baseline + 20);

    // Source filter, exclude list.
    let source = sources[0];
    let (status, only) = app.get(&format!("/v1/feed?limit=5&source={source}&exclude={}", a[0]));
    assert_eq!(status, 200);
    assert!(items(&only).iter().all(|i| i["source_id"].as_i64() == Some(source) && i["id"] != a[0].as_str()));
    // Label filter.
    let (_, labels) = app.get("/v1/labels");
    let label = &labels["labels"][0];
    let (status, labelled) = app.get(&format!("/v1/feed?limit=5&label={}", label["id"]));
    assert_eq!(status, 200, "{labelled}");
    for item in items(&labelled) {
        let names: Vec<&str> =
            item["labels"].as_array().expect("labels").iter().filter_map(|l| l["name"].as_str()).collect();
        assert!(names.contains(&label["name"].as_str().expect("name")), "{item}");
    }

    // Bad input.
    let (status, v) = app.get("/v1/feed?cursor=ctx-unknown");
    assert_eq!(
        (status, code(&v), v["error"]["field"].as_str()),
        (410, "cursor_expired", Some("cursor")),
        "{v}"
    );
    for (query, field) in [("limit=0", "limit"), ("limit=101", "limit")] {
        let (status, v) = app.get(&format!("/v1/feed?{query}"));
        assert_eq!(
            (status, code(&v), v["error"]["field"].as_str()),
            (400, "invalid_input", Some(field)),
            "{v}"
        );
    }
    let (status, v) = app.get("/v1/feed?limit=many");
    assert_eq!((status, code(&v)), (400, "invalid_query"));
    let (status, v) = app.get("/v1/feed?label=999999");
    assert_eq!((status, code(&v)), (404, "not_found"));
    assert_eq!(impressions(&app), baseline + 30, "bad requests logged impressions");
}

#[test]
fn feedback_is_exactly_once_and_bad_input_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &[]);
    let (_, page) = app.get("/v1/feed?limit=3");
    let context = page["context"].as_str().expect("context");
    let item = items(&page)[0]["id"].as_str().expect("id").to_owned();
    let like = json!({"item": item, "kind": "like", "context": context});
    let (status, v) = app.post("/v1/feedback", &like);
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(false)), "{v}");
    let (status, v) = app.post("/v1/feedback", &like);
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "a retried like counted twice: {v}");
    assert_eq!(like_count(&app, &item), 1);

    let bad = [
        (json!({"item": item, "kind": "love"}), 400, "invalid_input"),
        (json!({"item": item, "kind": "dwell"}), 400, "invalid_input"),
        (json!({"item": item, "kind": "like", "dwell_ms": 5}), 400, "invalid_input"),
        (json!({"item": item, "kind": "like", "context": ""}), 400, "invalid_input"),
        (json!({"item": item, "kind": "like", "user": ""}), 400, "invalid_input"),
        (json!({"item": item, "kind": "like", "extra": 1}), 400, "invalid_json"),
        (json!({"item": "it-0000000000000000", "kind": "like"}), 404, "not_found"),
        (json!({"kind": "like"}), 400, "invalid_json"),
    ];
    for (body, status, expected) in bad {
        let (got, v) = app.post("/v1/feedback", &body);
        assert_eq!((got, code(&v)), (status, expected), "{body} -> {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, v) = app.post_raw("/v1/feedback", "application/json", b"{not json");
    assert_eq!((status, code(&v)), (400, "invalid_json"));
    assert_eq!(like_count(&app, &item), 1, "bad input was stored");

    for kind in ["open", "skip", "dislike"] {
        let (status, v) = app.post("/v1/feedback", &json!({"item": item, "kind": kind, "context": context}));
        assert_eq!(status, 200, "{kind}: {v}");
    }
    let (status, v) = app.post("/v1/feedback", &json!({"item": item, "kind": "dwell", "dwell_ms": 4200}));
    assert_eq!(status, 200, "{v}");
    let (_, detail) = app.get(&format!("/v1/items/{item}"));
    assert_eq!(detail["signals"]["click"].as_u64(), Some(1), "{detail}");
    assert_eq!(detail["signals"]["dwell"].as_u64(), Some(1), "{detail}");
    // A disliked item never comes back.
    for _ in 0..3 {
        let (_, page) = app.get("/v1/feed?limit=100");
        assert!(
            items(&page).iter().all(|i| i["id"].as_str() != Some(item.as_str())),
            "dismissed item shown again"
        );
    }
    let (_, stats) = app.get("/v1/stats");
    assert_eq!(stats["feedback"]["likes"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["feedback"]["dislikes"].as_u64(), Some(1), "{stats}");
    assert!(stats["arms"].as_array().is_some_and(|a| a.len() >= 6));
}

#[test]
fn items_search_labels_and_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &[]);
    let (status, found) = app.get("/v1/search?q=async&limit=5");
    assert_eq!(status, 200, "{found}");
    assert!(!items(&found).is_empty());
    let id = items(&found)[0]["id"].as_str().expect("id").to_owned();
    let (status, item) = app.get(&format!("/v1/items/{id}"));
    assert_eq!((status, item["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(app.get("/v1/items/it-0000000000000000").0, 404);
    assert_eq!(code(&app.get("/v1/search?q=").1), "invalid_input");
    assert_eq!(code(&app.get("/v1/search").1), "invalid_query");
    assert_eq!(code(&app.get("/v1/search?q=x&limit=0").1), "invalid_input");

    // Labels: create, conflict, bad input, edit, confirm, delete.
    let new = json!({"name": "orbits", "examples": ["satellite orbit transfer", "rocket launch to orbit"], "threshold": 0.2});
    let (status, label) = app.post("/v1/labels", &new);
    assert_eq!(status, 201, "{label}");
    let label_id = label["id"].as_i64().expect("id");
    assert_eq!(app.post("/v1/labels", &new).0, 409);
    let (status, v) = app.post("/v1/labels", &json!({"name": "x", "examples": ["a"], "threshold": 1.5}));
    assert_eq!((status, code(&v)), (400, "invalid_input"), "{v}");
    let (status, v) = app.post("/v1/labels", &json!({"name": "", "examples": ["a"]}));
    assert_eq!((status, code(&v)), (400, "invalid_input"), "{v}");
    let (status, edited) = app.put(&format!("/v1/labels/{label_id}"), &json!({"threshold": 0.25}));
    assert_eq!(status, 200, "{edited}");
    assert!((edited["threshold"].as_f64().expect("threshold") - 0.25).abs() < 1e-6);
    let (status, v) =
        app.post(&format!("/v1/labels/{label_id}/feedback"), &json!({"item": id, "confirm": true}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["confirmed"].as_u64(), Some(1), "{v}");
    let (_, item) = app.get(&format!("/v1/items/{id}"));
    assert!(
        item["labels"].as_array().expect("labels").iter().any(|l| l["id"].as_i64() == Some(label_id)),
        "{item}"
    );
    assert_eq!(
        app.post(&format!("/v1/labels/{label_id}/feedback"), &json!({"item": "it-nope", "confirm": true})).0,
        404
    );
    assert_eq!(app.delete(&format!("/v1/labels/{label_id}")).0, 200);
    assert_eq!(app.delete(&format!("/v1/labels/{label_id}")).0, 404);
    assert_eq!(app.put("/v1/labels/abc", &json!({})).0, 400);

    // Sources: list, add (file), add a missing file (error recorded), bad scheme, refresh, remove, import.
    let (_, stats) = app.get("/v1/stats");
    assert_eq!(stats["embedded"], stats["items"], "the demo embeds every item before serving: {stats}");
    let (_, list) = app.get("/v1/sources");
    let sources = list["sources"].as_array().expect("sources").clone();
    assert!(sources.len() >= 6 && sources.iter().all(|s| s["posterior"]["alpha"].as_f64() == Some(1.0)));
    let feed = dir.path().join("extra.xml");
    std::fs::write(&feed, EXTRA_FEED).expect("write feed");
    let (status, added) = app.post("/v1/sources", &json!({"url": format!("file://{}", feed.display())}));
    assert_eq!((status, added["items"].as_u64()), (201, Some(2)), "{added}");
    let added_id = added["id"].as_i64().expect("id");
    let (status, missing) = app.post("/v1/sources", &json!({"url": "file:///nonexistent/feed.xml"}));
    assert_eq!(status, 201);
    assert!(missing["last_error"].as_str().is_some_and(|e| e.contains("nonexistent")), "{missing}");
    let (status, v) = app.post("/v1/sources", &json!({"url": "gopher://x"}));
    assert_eq!((status, code(&v), v["error"]["field"].as_str()), (400, "invalid_input", Some("url")));
    let (status, v) = app.post(&format!("/v1/sources/{added_id}/refresh"), &json!({}));
    assert_eq!((status, v["sources"][0]["new_items"].as_u64()), (200, Some(0)), "{v}");
    let (status, v) = app.post("/v1/refresh", &json!({}));
    assert_eq!(status, 200);
    assert!(v["sources"].as_array().is_some_and(|s| s.iter().any(|r| r["error"].is_string())), "{v}");
    assert_eq!(app.delete(&format!("/v1/sources/{added_id}")).0, 200);
    assert_eq!(app.delete(&format!("/v1/sources/{added_id}")).0, 404);
    assert_eq!(app.post("/v1/sources/999999/refresh", &json!({})).0, 404);
    let opml = format!(
        r#"<opml version="2.0"><body><outline text="Extra" xmlUrl="file://{}"/></body></opml>"#,
        feed.display()
    );
    let (status, v) = app.post_raw("/v1/sources/import", "text/xml", opml.as_bytes());
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["added"][0]["items"].as_u64(), Some(2), "{v}");
    let (status, v) = app.post_raw("/v1/sources/import", "text/xml", b"<opml><outline");
    assert_eq!((status, code(&v)), (400, "invalid_input"), "{v}");
}

#[test]
fn auth_body_limit_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &["--token", "s3cret"]);
    assert_eq!(app.get("/healthz").0, 200);
    let anonymous = app.with_token(None);
    let (status, v) = anonymous.get("/v1/feed");
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let wrong = app.with_token(Some("nope"));
    assert_eq!(wrong.get("/v1/stats").0, 401);
    assert_eq!(anonymous.get_text("/").0, 200, "the UI page itself is open");

    let big = vec![b' '; 5 * 1024 * 1024];
    let (status, v) = app.post_raw("/v1/feedback", "application/json", &big);
    assert_eq!((status, code(&v)), (413, "body_too_large"), "{v}");

    // A liked and a skipped item in one feed context give a DPO row with texts.
    let (_, page) = app.get("/v1/feed?limit=6");
    let context = page["context"].as_str().expect("context");
    let shown = items(&page);
    let (chosen, rejected) = (shown[0]["id"].as_str().expect("id"), shown[1]["id"].as_str().expect("id"));
    app.post("/v1/feedback", &json!({"item": chosen, "kind": "like", "context": context}));
    app.post("/v1/feedback", &json!({"item": rejected, "kind": "skip", "context": context}));
    // More likes from the page, so some liked item has neighbours to mine negatives from
    // (the bandit may put an item of the small notes source first, which has none).
    for item in shown.iter().skip(2) {
        app.post("/v1/feedback", &json!({"item": item["id"], "kind": "like", "context": context}));
    }
    let (status, text) = app.get_text("/v1/export?format=dpo&test_fraction=0");
    assert_eq!(status, 200, "{text}");
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    let row = rows
        .iter()
        .find(|r| r["rejected_id"] == rejected && r["chosen_id"] == chosen)
        .expect("a row rejecting the skipped item");
    assert_eq!(row["chosen_id"], chosen);
    assert_eq!(
        row["chosen"],
        format!("{}. {}", shown[0]["title"].as_str().unwrap(), shown[0]["summary"].as_str().unwrap())
            .chars()
            .take(1000)
            .collect::<String>()
    );
    assert_eq!(row["negative_source"], "explicit");
    assert!(rows.iter().any(|r| r["negative_source"] == "mined"), "no mined negatives: {text}");
    let (status, v) = app.get("/v1/export?format=csv");
    assert_eq!((status, code(&v)), (400, "invalid_input"));
    let (status, v) = app.get("/v1/export?test_fraction=2");
    assert_eq!(
        (status, code(&v), v["error"]["field"].as_str()),
        (400, "invalid_input", Some("test_fraction"))
    );
}

const EXTRA_FEED: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Extra</title>
<item><guid>x-1</guid><title>Tide tables and the moon</title><description>Why tides follow the moon.</description></item>
<item><guid>x-2</guid><title>Kelp forests</title><description>Underwater forests along cold coasts.</description></item>
</channel></rss>"#;
