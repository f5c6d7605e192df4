//! End to end, as a user would: `forage demo` starts with an embedded Tidal and the bundled
//! samples; refresh the sources, get a feed, send feedback, export DPO rows over HTTP; stop
//! it; then `forage export` on the same data folder writes a file whose rows are checked.

mod support_forage;

use std::process::Command;

use serde_json::{Value, json};
use support_forage::ForageProcess;

fn rows(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect()
}

#[test]
fn demo_flow_from_start_to_dpo_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ForageProcess::demo(dir.path(), &[]);

    let (status, refreshed) = app.post("/v1/refresh", &json!({}));
    assert_eq!(status, 200, "{refreshed}");
    let reports = refreshed["sources"].as_array().expect("reports");
    assert_eq!(reports.len(), 6);
    assert!(reports.iter().all(|r| r["error"].is_null()), "a sample source failed: {refreshed}");
    let (_, stats) = app.get("/v1/stats");
    assert!(stats["items"].as_u64().is_some_and(|n| n >= 200), "{stats}");

    // Two feed pages: like the first item of each, skip the second, open the third. Likes
    // and opens are positive, so either may be a row's chosen item.
    let mut chosen = Vec::new();
    for _ in 0..2 {
        let (status, page) = app.get("/v1/feed?limit=8");
        assert_eq!(status, 200, "{page}");
        let context = page["context"].as_str().expect("context").to_owned();
        let shown = page["items"].as_array().expect("items");
        assert_eq!(shown.len(), 8);
        for (i, kind) in [(0, "like"), (1, "skip"), (2, "open")] {
            let body = json!({"item": shown[i]["id"], "kind": kind, "context": context});
            assert_eq!(app.post("/v1/feedback", &body).0, 200);
        }
        chosen.push(shown[0]["id"].as_str().expect("id").to_owned());
        chosen.push(shown[2]["id"].as_str().expect("id").to_owned());
    }

    let (status, text) = app.get_text("/v1/export?format=dpo&test_fraction=0");
    assert_eq!(status, 200, "{text}");
    let over_http = rows(&text);
    assert!(over_http.len() >= 2, "{text}");
    app.stop();

    // The CLI exports the same store to a file once the server has stopped.
    let out = dir.path().join("prefs.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_forage"))
        .args(["export", "--embedder", "lexical", "--test-fraction", "0", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run forage export");
    assert!(status.success());
    let file = std::fs::read_to_string(&out).expect("export file");
    let in_file = rows(&file);
    assert!(
        in_file.len() >= over_http.len(),
        "file has {} rows, http had {}",
        in_file.len(),
        over_http.len()
    );
    for row in &in_file {
        for key in ["prompt", "chosen", "rejected", "chosen_id", "rejected_id", "split", "negative_source"] {
            assert!(row[key].is_string(), "row lacks {key}: {row}");
        }
        assert_ne!(row["chosen"], row["chosen_id"], "chosen is an id, not a text: {row}");
        assert!(
            chosen.contains(&row["chosen_id"].as_str().expect("id").to_owned()),
            "unexpected chosen: {row}"
        );
        assert_ne!(row["chosen_id"], row["rejected_id"]);
    }
    let sources: Vec<&str> = in_file.iter().filter_map(|r| r["negative_source"].as_str()).collect();
    assert!(sources.contains(&"explicit"), "no explicit negative (the skips): {sources:?}");
    assert!(sources.contains(&"mined"), "no mined negative: {sources:?}");
}
