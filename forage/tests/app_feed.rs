//! The app in-process on an embedded Tidal: a feed request logs every shown item as an
//! impression with its propensities and context; feedback joins them as rewards; the
//! offline evaluation reads them back (older logs without item-level propensities too); the
//! seen state keeps every shown item out of later pages, across restarts; cursors survive
//! restarts; the saved list and the history.

use std::sync::Arc;

use forage::app::{Config, FeedRequest, FeedbackRequest, Forage, demo, tidal_dir};
use forage::bandit::{POLICY_THOMPSON, Shown, feedback_signals, log_impressions};
use forage::embed::LexicalEmbedder;
use tidal::SignalKind;

fn open(dir: &std::path::Path) -> Arc<Forage> {
    let options = tidal::Options { durability: tidal::Durability::None, ..Default::default() };
    let db = tidal::Db::open(tidal_dir(dir), options).expect("open tidal");
    let mut config = Config::new(dir);
    config.background = false;
    config.seed = Some(7);
    let app = Forage::open(config, Arc::new(db), Arc::new(LexicalEmbedder::new())).expect("open forage");
    demo::install_samples(&app).expect("samples");
    app.embed_pending(&|_| {}).expect("embed");
    app
}

/// Likes the items of `page` from `source` (at most `n`), in the page's context.
fn like_source(app: &Forage, page: &forage::app::FeedPage, source: i64, n: usize) {
    for item in page.items.iter().filter(|i| i.item.source_id == source).take(n) {
        let like = FeedbackRequest {
            item: item.item.id.clone(),
            kind: "like".into(),
            context: Some(page.context.clone()),
            ..FeedbackRequest::default()
        };
        app.feedback(&like).expect("like");
    }
}

#[test]
fn impressions_with_propensities_are_in_tidal_after_a_feed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let page = app.feed(&FeedRequest { limit: Some(10), ..FeedRequest::default() }).expect("feed");
    assert_eq!(page.items.len(), 10);
    let logs = app.store().read_logs().expect("logs");
    assert_eq!(logs.impressions.len(), 10);
    for log in &logs.impressions {
        assert_eq!(log.context, page.context);
        let probability = |p: f64| p > 0.0 && p <= 1.0;
        assert!(probability(log.propensity) && probability(log.arm_propensity) && log.item_level, "{log:?}");
        assert!(log.within_propensity.is_some_and(probability), "{log:?}");
        assert!(log.candidates.is_some_and(|n| n > 10) && log.greedy_propensity.is_some(), "{log:?}");
        assert_eq!(log.reward, 0.0);
    }
    let mut logged: Vec<(u32, &str, f64, f64)> = logs
        .impressions
        .iter()
        .map(|l| (l.position, l.item.as_str(), l.arm_propensity, l.propensity))
        .collect();
    logged.sort_by_key(|l| l.0);
    let shown: Vec<(u32, &str, f64, f64)> = page
        .items
        .iter()
        .map(|i| (i.position, i.item.id.as_str(), i.propensity, i.item_propensity))
        .collect();
    assert_eq!(logged, shown);

    let liked = &page.items[3];
    let like = FeedbackRequest {
        item: liked.item.id.clone(),
        kind: "like".into(),
        context: Some(page.context.clone()),
        ..FeedbackRequest::default()
    };
    assert!(!app.feedback(&like).expect("like").duplicate);
    let logs = app.store().read_logs().expect("logs");
    let rewarded: Vec<&str> =
        logs.impressions.iter().filter(|l| l.reward == 1.0).map(|l| l.item.as_str()).collect();
    assert_eq!(rewarded, [liked.item.id.as_str()]);
    let summary = app.evaluate_policies().expect("eval");
    assert_eq!(summary.impressions, 10);
    assert!((summary.logged_reward - 0.1).abs() < 1e-9, "{summary:?}");
    assert!(summary.estimates.iter().all(|e| e.ips.is_finite() && e.n > 0), "{summary:?}");
    assert_eq!(summary.source_level_only, 0);
    app.shutdown();
}

#[test]
fn older_logs_without_item_level_propensities_still_evaluate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let stamps = app.catalog().item_stamps().expect("stamps");
    // Logged as before the item-level attributes existed: the source's propensity only.
    let shown: Vec<Shown> = stamps
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, s)| Shown {
            item: s.id.clone(),
            source: s.source_id.to_string(),
            propensity: 0.5,
            position: i as u32,
            ..Shown::default()
        })
        .collect();
    let store = app.store().as_ref();
    log_impressions(store, "me", "ctx-old", POLICY_THOMPSON, &shown).expect("log");
    let like = &shown[2];
    let signals = feedback_signals("me", &like.item, &like.source, Some("ctx-old"), SignalKind::Like, None)
        .expect("feedback");
    store.write(signals).expect("write");
    let summary = app.evaluate_policies().expect("eval");
    assert_eq!((summary.impressions, summary.source_level_only), (8, 8), "{summary:?}");
    let by_name = |name: &str| summary.estimates.iter().find(|e| e.policy == name).expect(name);
    // The source's propensity stands in: the logging policy's estimate is its like rate.
    assert!((by_name("logging").ips - 0.125).abs() < 1e-12, "{summary:?}");
    assert_eq!(by_name("greedy-source").skipped, 0, "source-level policies still score them");
    assert_eq!(by_name("uniform-sources").n, 8);
    // Policies that need the newer attributes skip every record, and say so.
    for name in ["uniform-items", "content-greedy"] {
        assert_eq!((by_name(name).n, by_name(name).skipped), (0, 8), "{name}: {summary:?}");
    }
    app.shutdown();
}

#[test]
fn liked_topics_rise_in_the_ranking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    // Like five items of one source; its other items should then rank above the rest
    // inside the feed's candidates (similarity to liked items).
    let page = app.feed(&FeedRequest { limit: Some(40), ..FeedRequest::default() }).expect("feed");
    let source = page.items[0].item.source_id;
    like_source(&app, &page, source, 5);
    let next = app.feed(&FeedRequest { limit: Some(30), ..FeedRequest::default() }).expect("feed");
    let mean = |same: bool| {
        let scores: Vec<f64> =
            next.items.iter().filter(|i| (i.item.source_id == source) == same).map(|i| i.score).collect();
        scores.iter().sum::<f64>() / scores.len().max(1) as f64
    };
    assert!(mean(true) > mean(false), "liked source {} vs others {}", mean(true), mean(false));
    app.shutdown();
}

#[test]
fn a_shown_item_never_returns_and_running_dry_is_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let feed =
        |source| app.feed(&FeedRequest { limit: Some(20), source, ..FeedRequest::default() }).expect("feed");
    let ids = |page: &forage::app::FeedPage| page.items.iter().map(|i| i.item.id.clone()).collect::<Vec<_>>();
    let first = ids(&feed(None));
    let second = ids(&feed(None));
    assert_eq!(second.len(), 20);
    assert!(second.iter().all(|id| !first.contains(id)), "the second visit repeated the first page");
    // One source's items run out: pages come back short and say so, never recycled.
    let source = app.sources(None).expect("sources")[0].clone();
    let mut shown: std::collections::HashSet<String> = first.into_iter().chain(second).collect();
    let mut pages = 0;
    loop {
        let page = feed(Some(source.id));
        for id in ids(&page) {
            assert!(shown.insert(id.clone()), "{id} was shown twice");
        }
        pages += 1;
        if page.exhausted {
            assert!(page.items.len() < 20 || feed(Some(source.id)).items.is_empty());
            assert!(page.next_cursor.is_none(), "an exhausted page offers no next page");
            break;
        }
        assert!(pages <= source.items / 20 + 1, "the source never ran dry");
    }
    let empty = feed(Some(source.id));
    assert!(empty.items.is_empty() && empty.exhausted, "{empty:?}");
    assert_eq!(empty.seen, shown.len());
    app.shutdown();
}

#[test]
fn seen_items_and_cursors_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let page = app.feed(&FeedRequest { limit: Some(10), ..FeedRequest::default() }).expect("feed");
    let cursor = page.next_cursor.clone().expect("cursor");
    let liked = page.items[0].item.id.clone();
    let like = FeedbackRequest { item: liked.clone(), kind: "like".into(), ..FeedbackRequest::default() };
    app.feedback(&like).expect("like");
    let before: Vec<String> = page.items.iter().map(|i| i.item.id.clone()).collect();
    app.shutdown();
    drop(app);

    let app = open(dir.path());
    let next = FeedRequest { limit: Some(10), cursor: Some(cursor), ..FeedRequest::default() };
    let next = app.feed(&next).expect("the old cursor continues after a restart");
    assert_eq!(next.items.first().map(|i| i.position), Some(10), "positions continue");
    let fresh = app.feed(&FeedRequest { limit: Some(50), ..FeedRequest::default() }).expect("feed");
    for id in next.items.iter().chain(&fresh.items).map(|i| &i.item.id) {
        assert!(!before.contains(id), "{id} was shown before the restart and again after it");
    }
    let history = app.history(None, 0, 200).expect("history");
    assert_eq!(history.shown, 70);
    let entry =
        history.entries.iter().find(|e| e.item.id == liked).expect("the liked item is in the history");
    assert!(entry.marks.liked && entry.marks.shown);
    let gone = FeedRequest { cursor: Some("ctx-never-issued".into()), ..FeedRequest::default() };
    assert!(matches!(app.feed(&gone), Err(forage::app::AppError::Gone(_))));
    app.shutdown();
}

#[test]
fn saved_items_are_listed_and_marked_in_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let page = app.feed(&FeedRequest { limit: Some(5), ..FeedRequest::default() }).expect("feed");
    let (a, b) = (&page.items[1].item.id, &page.items[3].item.id);
    app.save(None, a).expect("save a");
    app.save(None, b).expect("save b");
    let saved: Vec<String> = app.saved(None, 0, 10).expect("saved").into_iter().map(|s| s.item.id).collect();
    assert_eq!(saved.len(), 2);
    assert!(saved.contains(a) && saved.contains(b));
    app.unsave(None, a).expect("unsave");
    assert!(app.unsave(None, a).is_err(), "unsaving twice is a 404");
    let history = app.history(None, 0, 10).expect("history");
    let saved_marks: Vec<(&str, bool)> =
        history.entries.iter().map(|e| (e.item.id.as_str(), e.saved)).filter(|(_, s)| *s).collect();
    assert_eq!(saved_marks, [(b.as_str(), true)]);
    assert!(app.save(None, "it-missing").is_err());
    app.shutdown();
}

#[test]
fn no_page_has_three_in_a_row_from_one_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    // Skew the arms: like everything from one source, so Thompson sampling favours it.
    let page = app.feed(&FeedRequest { limit: Some(40), ..FeedRequest::default() }).expect("feed");
    let favourite = page.items[0].item.source_id;
    like_source(&app, &page, favourite, usize::MAX);
    for limit in [3, 5, 10, 20] {
        for _ in 0..10 {
            let page = app.feed(&FeedRequest { limit: Some(limit), ..FeedRequest::default() }).expect("feed");
            let sources: Vec<i64> = page.items.iter().map(|i| i.item.source_id).collect();
            assert!(
                sources.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
                "limit {limit}: {sources:?}"
            );
        }
    }
    app.shutdown();
}

#[test]
fn new_items_reach_the_feed_and_removed_ones_leave_it_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    app.feed(&FeedRequest { limit: Some(5), ..FeedRequest::default() }).expect("feed builds the index");
    let feed_file = dir.path().join("tides.xml");
    let items: String = (0..12)
        .map(|i| format!("<item><guid>t{i}</guid><title>Tide table {i}</title><description>Moon and ocean tides {i}.</description></item>"))
        .collect();
    std::fs::write(
        &feed_file,
        format!("<rss version=\"2.0\"><channel><title>Tides</title>{items}</channel></rss>"),
    )
    .expect("write feed");
    let added = std::time::Instant::now();
    let source = app.add_source(&format!("file://{}", feed_file.display()), None).expect("add").id;
    // The very next request catches the index up with the catalog: no waiting.
    let only_new = FeedRequest { limit: Some(5), source: Some(source), ..FeedRequest::default() };
    let page = app.feed(&only_new).expect("feed");
    println!("source added to its items in the feed: {:.1} ms", added.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(page.items.len(), 5, "the first request after adding a source showed none of its items");
    app.embed_pending(&|_| {}).expect("embed");
    let page = app.feed(&only_new).expect("feed");
    assert!(page.items.iter().all(|i| i.score.is_finite()) && page.items.len() == 5);
    // Removal is seen by the very next feed.
    let removed = app.sources(None).expect("sources")[0].id;
    app.remove_source(removed).expect("remove");
    let page = app.feed(&FeedRequest { limit: Some(100), ..FeedRequest::default() }).expect("feed");
    assert!(!page.items.is_empty());
    assert!(page.items.iter().all(|i| i.item.source_id != removed), "a removed source's item was shown");
    app.shutdown();
}

#[test]
fn concurrent_pages_of_one_cursor_log_every_impression() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let first = app.feed(&FeedRequest { limit: Some(5), ..FeedRequest::default() }).expect("feed");
    let cursor = first.next_cursor.clone().expect("cursor");
    let pages: Vec<forage::app::FeedPage> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let req =
                    FeedRequest { limit: Some(5), cursor: Some(cursor.clone()), ..FeedRequest::default() };
                let app = &app;
                s.spawn(move || app.feed(&req).expect("page"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut positions: Vec<u32> = pages.iter().flat_map(|p| p.items.iter().map(|i| i.position)).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 20, "two pages shared positions");
    assert!(positions.iter().all(|p| (5..25).contains(p)), "{positions:?}");
    let logs = app.store().read_logs().expect("logs");
    assert_eq!(logs.impressions.len(), 25, "an impression was lost to a key collision");
    app.shutdown();
}

#[test]
fn the_candidate_index_is_built_at_start_up_before_any_feed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    assert!(!app.index_ready(), "no request and no background work yet");
    app.start_background();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app.index_ready() {
        assert!(std::time::Instant::now() < deadline, "the index was not built in the background");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let page = app.feed(&FeedRequest { limit: Some(5), ..FeedRequest::default() }).expect("feed");
    assert_eq!(page.items.len(), 5);
    app.shutdown();
}
