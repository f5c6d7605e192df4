//! The app in-process on an embedded Tidal: a feed request logs every shown item as an
//! impression with its propensity and context; feedback joins them as rewards; the offline
//! evaluation reads them back.

use std::sync::Arc;

use forage::app::{Config, FeedRequest, FeedbackRequest, Forage, demo, tidal_dir};
use forage::embed::LexicalEmbedder;

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
        assert!(log.propensity > 0.0 && log.propensity <= 1.0, "{log:?}");
        assert_eq!(log.reward, 0.0);
    }
    let mut logged: Vec<(u32, &str, f64)> =
        logs.impressions.iter().map(|l| (l.position, l.item.as_str(), l.propensity)).collect();
    logged.sort_by_key(|l| l.0);
    let shown: Vec<(u32, &str, f64)> =
        page.items.iter().map(|i| (i.position, i.item.id.as_str(), i.propensity)).collect();
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
fn a_new_feed_prefers_items_not_shown_lately() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = open(dir.path());
    let feed = || app.feed(&FeedRequest { limit: Some(20), ..FeedRequest::default() }).expect("feed");
    let ids = |page: &forage::app::FeedPage| page.items.iter().map(|i| i.item.id.clone()).collect::<Vec<_>>();
    let first = ids(&feed());
    let second = ids(&feed());
    assert_eq!(second.len(), 20);
    assert!(second.iter().all(|id| !first.contains(id)), "the second visit repeated the first page");
    // One source has about 40 items: once they were all shown lately, pages fall back to
    // them rather than come back short.
    let source = Some(app.sources(None).expect("sources")[0].id);
    for round in 0..4 {
        let page =
            app.feed(&FeedRequest { limit: Some(20), source, ..FeedRequest::default() }).expect("feed");
        assert_eq!(page.items.len(), 20, "round {round}: a page came back short");
    }
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
    let source = app.add_source(&format!("file://{}", feed_file.display()), None).expect("add").id;
    app.embed_pending(&|_| {}).expect("embed");
    // The index catches up in the background: the new source's items appear within seconds.
    let only_new = FeedRequest { limit: Some(5), source: Some(source), ..FeedRequest::default() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if !app.feed(&only_new).expect("feed").items.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new items never reached the feed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
