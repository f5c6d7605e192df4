//! The one-shot `forage` commands on a data folder the demo set up (lexical embedder, so
//! it runs in seconds): sources, refresh, labels (with eval), eval (on no logs, then on a
//! few pages read in-process), export, and clear errors for bad input.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use forage::app::{FeedRequest, FeedbackRequest};

fn forage(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_forage"));
    command.args(args).arg("--data-dir").arg(dir).args(["--embedder", "lexical"]);
    command.output().expect("run forage")
}

/// Three feed pages of 10 in-process on the folder, liking two items of each, so that
/// `forage eval` has logs to score.
fn read_a_few_pages(dir: &Path) {
    let db = tidal::Db::open(forage::app::tidal_dir(dir), tidal::Options::default()).expect("tidal");
    let mut config = forage::app::Config::new(dir);
    config.background = false;
    config.seed = Some(3);
    let embedder = Arc::new(forage::embed::LexicalEmbedder::new());
    let app = forage::app::Forage::open(config, Arc::new(db), embedder).expect("open");
    for _ in 0..3 {
        let page = app.feed(&FeedRequest { limit: Some(10), ..FeedRequest::default() }).expect("feed");
        for item in &page.items[..2] {
            let like = FeedbackRequest {
                item: item.item.id.clone(),
                kind: "like".into(),
                context: Some(page.context.clone()),
                ..FeedbackRequest::default()
            };
            app.feedback(&like).expect("like");
        }
    }
    app.shutdown();
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = forage(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "forage {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn one_shot_commands_on_a_demo_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let demo = ok(data, &["demo", "--no-serve"]);
    assert!(demo.contains("222 items from 6 sample sources"), "{demo}");

    let sources = ok(data, &["sources", "list"]);
    assert_eq!(sources.lines().count(), 7, "a header and six sources: {sources}");
    assert!(sources.contains("Rust Systems Weekly"), "{sources}");

    let refresh = ok(data, &["refresh"]);
    assert_eq!(refresh.matches("0 new items").count(), 6, "{refresh}");

    let labels = ok(data, &["labels", "list"]);
    assert!(labels.contains("databases") && labels.contains("space"), "{labels}");
    let added = ok(data, &["labels", "add", "tides", "-e", "ocean tides and the moon", "--threshold", "0.3"]);
    assert!(added.contains("`tides` created"), "{added}");

    let eval_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/labels/eval.jsonl");
    let report = ok(data, &["labels", "eval", eval_file.to_str().expect("utf-8")]);
    assert!(report.to_lowercase().contains("precision") && report.contains("databases"), "{report}");

    // The demo's terminal preview is not a feed page: it logged no impressions.
    let eval = ok(data, &["eval"]);
    assert!(eval.contains("0 logged impressions") && eval.contains("uniform"), "{eval}");
    read_a_few_pages(data);
    let eval = ok(data, &["eval"]);
    assert!(eval.contains("30 logged impressions, like rate as logged 0.2000"), "{eval}");
    assert!(!eval.contains("of them are older logs"), "every impression has item-level propensities: {eval}");
    for policy in ["logging", "uniform-items", "uniform-sources", "greedy-source", "content-greedy"] {
        let line = eval.lines().find(|l| l.starts_with(&format!("{policy} "))).expect(policy);
        let n: usize = line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).expect("n");
        assert_eq!(n, 30, "{policy} scored every impression: {eval}");
    }

    let out = data.join("kto.jsonl");
    ok(data, &["export", "--format", "kto", "--out", out.to_str().expect("utf-8")]);
    assert!(out.exists());

    let feed = data.join("extra.xml");
    std::fs::write(&feed, "<rss version=\"2.0\"><channel><title>X</title><item><guid>1</guid><title>One</title></item></channel></rss>")
        .expect("write");
    let opml = data.join("subs.opml");
    std::fs::write(
        &opml,
        "<opml version=\"2.0\"><body><outline text=\"X\" xmlUrl=\"extra.xml\"/></body></opml>",
    )
    .expect("write");
    let imported = ok(data, &["sources", "import", opml.to_str().expect("utf-8")]);
    assert!(imported.contains("1 sources imported"), "{imported}");
    assert!(
        ok(data, &["sources", "list"]).contains("extra.xml")
            || ok(data, &["sources", "list"]).contains(" X ")
    );

    for (args, needle) in [
        (&["sources", "add", "gopher://nope"][..], "unsupported source url"),
        (&["export", "--format", "csv", "--out", "x.jsonl"][..], "not one of dpo, kto, reward"),
        (&["labels", "rm", "9999"][..], "no label 9999"),
        (&["labels", "add", "", "-e", "x"][..], "name"),
    ] {
        let out = forage(data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "forage {args:?} should fail");
        assert!(stderr.contains(needle), "forage {args:?}: {stderr}");
    }
}
