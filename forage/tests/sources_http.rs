//! Source tests over a local HTTP server: real-world feed variants, dedup, conditional GET,
//! timeouts, retries, the per-host limit, size caps, OPML import, folders, search, and the
//! bundled samples.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use forage::catalog::{Catalog, Item};
use forage::sources::SourceKind;
use forage::sources::http::{FetchOptions, HttpFetcher};
use forage::sources::opml::{import_opml, parse_opml};
use forage::sources::refresh::{refresh_all, refresh_due, refresh_one};
use support::TestServer;

const NOW_MS: i64 = 1_700_000_000_000;

/// Far beyond any stall of a loaded machine: a test that is not about timeouts must not
/// see one. (With 500 ms, a stall of the test server under load turned the malformed feed's
/// single request into a timeout and a retry, and "parse errors are not retried" failed.)
const TIMEOUT_MS: u64 = 60_000;
/// The timeout test's: far below the `/slow` route's sleep, so that every attempt times out.
const SHORT_TIMEOUT_MS: u64 = 500;

fn fetcher() -> HttpFetcher {
    fetcher_with_timeout(TIMEOUT_MS)
}

fn fetcher_with_timeout(timeout_ms: u64) -> HttpFetcher {
    HttpFetcher::new(FetchOptions {
        timeout_ms,
        retries: 2,
        backoff_ms: 20,
        per_host_max: 2,
        ..FetchOptions::default()
    })
}

fn add(cat: &Catalog, url: &str) -> i64 {
    let kind = SourceKind::of_url(url).expect("kind");
    cat.add_source(url, kind.name(), 3600, 0).expect("add source")
}

fn items_of(cat: &Catalog, source_id: i64) -> Vec<Item> {
    let mut items = cat.list_items(Some(source_id), 0, 100).expect("list");
    items.sort_by(|a, b| a.title.cmp(&b.title));
    items
}

fn by_title<'a>(items: &'a [Item], title: &str) -> &'a Item {
    items.iter().find(|i| i.title == title).unwrap_or_else(|| panic!("no item {title:?} in {items:#?}"))
}

#[test]
fn rss_with_cdata_html_and_missing_dates() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/feeds/rss_cdata_html.xml"));
    let report = refresh_one(&mut cat, &fetcher(), id, NOW_MS).expect("refresh");
    assert_eq!(report.error, None);
    assert_eq!(report.new_items, 3);
    let items = items_of(&cat, id);
    let a = by_title(&items, "Why borrowing beats cloning");
    assert_eq!(a.summary, "Clones are cheap until they are not — a story.");
    assert_eq!(a.guid.as_deref(), Some("kc-1"));
    assert_eq!(a.url.as_deref(), Some("https://kitchen.example/borrowing"));
    assert_eq!(a.published_ms, Some(1_672_653_600_000));
    let b = by_title(&items, "Escaped HTML in a title");
    assert_eq!(b.summary, "Entity-escaped & markup link");
    let c = by_title(&items, "No guid, no date");
    assert_eq!(c.published_ms, None, "a missing date must stay missing");
    assert!(c.guid.is_some(), "feed-rs derives a stable id when the guid is missing");
    let source = cat.get_source(id).expect("get").expect("source");
    assert_eq!(source.title.as_deref(), Some("Kitchen & Code"));
}

#[test]
fn atom_with_xhtml_content() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/feeds/atom_xhtml.atom"));
    let report = refresh_one(&mut cat, &fetcher(), id, NOW_MS).expect("refresh");
    assert_eq!((report.new_items, report.error), (2, None));
    let items = items_of(&cat, id);
    let sparse = by_title(&items, "Sparse indexes");
    assert_eq!(sparse.summary, "Sparse indexes skip most keys. fast small");
    assert_eq!(sparse.url.as_deref(), Some("https://atom.example/sparse"), "alternate link preferred");
    assert_eq!(sparse.published_ms, Some(1_709_294_400_000));
    let updated = by_title(&items, "Only updated");
    assert_eq!(updated.summary, "Summary wins over content.");
    assert_eq!(updated.published_ms, Some(1_706_745_600_000), "updated stands in for published");
}

#[test]
fn json_feed_1_1() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/feeds/jsonfeed_11.json"));
    let report = refresh_one(&mut cat, &fetcher(), id, NOW_MS).expect("refresh");
    assert_eq!((report.new_items, report.error), (2, None));
    let items = items_of(&cat, id);
    let b = by_title(&items, "Bandits in practice");
    assert_eq!(b.summary, "Thompson sampling explores by sampling.");
    assert_eq!(b.published_ms, Some(1_714_545_000_000));
    let untitled = items.iter().find(|i| i.guid.as_deref() == Some("j-2")).expect("j-2");
    assert_eq!(untitled.title, "An item without a title or a date.", "title falls back to the text");
    assert_eq!(untitled.published_ms, None);
    let parsed = forage::sources::feed::parse_feed(&support::fixture("jsonfeed_11.json")).expect("parse");
    assert_eq!(parsed.items[0].authors, ["Lin Writer"]);
}

#[test]
fn duplicate_guids_urls_and_content_are_deduplicated() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/feeds/duplicate_guids.xml"));
    let f = fetcher();
    assert_eq!(refresh_one(&mut cat, &f, id, NOW_MS).expect("refresh").new_items, 2);
    let titles: Vec<String> = items_of(&cat, id).into_iter().map(|i| i.title).collect();
    assert_eq!(titles, ["First", "Third"]);
    // The same feed from another URL: GUIDs are scoped to a source, so the item dropped above
    // as a same-GUID duplicate is new here; the others are duplicates by URL or content hash.
    let other = add(&cat, &server.url("/lm/duplicate_guids.xml"));
    let report = refresh_one(&mut cat, &f, other, NOW_MS).expect("refresh");
    assert_eq!((report.new_items, report.error), (1, None));
    assert_eq!(items_of(&cat, other)[0].title, "Second, same guid");
    assert_eq!(cat.count_items(None).expect("count"), 3);
}

#[test]
fn conditional_get_etag_304_downloads_nothing_new() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let path = "/feeds/rss_cdata_html.xml";
    let id = add(&cat, &server.url(path));
    let f = fetcher();
    assert_eq!(refresh_one(&mut cat, &f, id, NOW_MS).expect("first").new_items, 3);
    let before = items_of(&cat, id);
    let source = cat.get_source(id).expect("get").expect("source");
    assert!(source.etag.as_deref().is_some_and(|e| e.starts_with('"')), "etag stored: {source:?}");
    assert!(source.last_modified.is_some());
    let again = refresh_one(&mut cat, &f, id, NOW_MS + 1).expect("second");
    assert!(again.not_modified, "{again:?}");
    assert_eq!((again.new_items, again.error), (0, None));
    assert_eq!(server.stat(|s| s.bodies.get(path).copied().unwrap_or(0)), 1, "body sent once");
    assert_eq!(server.stat(|s| s.not_modified.get(path).copied().unwrap_or(0)), 1);
    assert_eq!(items_of(&cat, id), before, "items unchanged by a 304");
    let after = cat.get_source(id).expect("get").expect("source");
    assert_eq!((after.etag, after.last_fetch_ms), (source.etag, Some(NOW_MS + 1)));
}

#[test]
fn conditional_get_if_modified_since_alone() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/lm/atom_xhtml.atom"));
    let f = fetcher();
    refresh_one(&mut cat, &f, id, NOW_MS).expect("first");
    assert_eq!(cat.get_source(id).expect("get").expect("source").etag, None);
    assert!(refresh_one(&mut cat, &f, id, NOW_MS).expect("second").not_modified);
}

#[test]
fn timeout_is_recorded_and_others_still_refresh() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let slow = add(&cat, &server.url("/slow"));
    let good = add(&cat, &server.url("/feeds/atom_xhtml.atom"));
    let missing = add(&cat, "file:///nonexistent/forage/feed.xml");
    let reports = refresh_all(&mut cat, &fetcher_with_timeout(SHORT_TIMEOUT_MS), NOW_MS).expect("refresh");
    assert_eq!(reports.len(), 3);
    let slow_src = cat.get_source(slow).expect("get").expect("slow");
    assert!(slow_src.last_error.as_deref().is_some_and(|e| e.contains("timed out")), "{slow_src:?}");
    assert_eq!(slow_src.last_fetch_ms, Some(NOW_MS));
    assert_eq!(server.stat(|s| s.hits["/slow"]), 3, "a timeout is retried");
    assert_eq!(cat.get_source(good).expect("get").expect("good").last_error, None);
    assert_eq!(cat.count_items(Some(good)).expect("count"), 2);
    let missing_src = cat.get_source(missing).expect("get").expect("missing");
    assert!(missing_src.last_error.is_some_and(|e| e.contains("open feed")));
}

#[test]
fn malformed_xml_is_recorded_as_a_source_error() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let bad = add(&cat, &server.url("/feeds/malformed.xml"));
    let report = refresh_one(&mut cat, &fetcher(), bad, NOW_MS).expect("refresh");
    let err = report.error.expect("malformed XML must be an error");
    assert!(err.contains("cannot parse feed"), "{err}");
    assert_eq!(cat.get_source(bad).expect("get").expect("src").last_error, Some(err));
    assert_eq!(cat.count_items(None).expect("count"), 0);
    assert_eq!(server.stat(|s| s.hits["/feeds/malformed.xml"]), 1, "parse errors are not retried");
}

#[test]
fn server_errors_are_retried_with_backoff_and_client_errors_are_not() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let flaky = add(&cat, &server.url("/flaky/2/atom_xhtml.atom"));
    let gone = add(&cat, &server.url("/status/404"));
    let hopeless = add(&cat, &server.url("/flaky/9/atom_xhtml.atom"));
    let start = Instant::now();
    let f = fetcher();
    let report = refresh_one(&mut cat, &f, flaky, NOW_MS).expect("refresh");
    assert!(start.elapsed().as_millis() >= 60, "backoff 20 ms then 40 ms");
    assert_eq!((report.new_items, report.error), (2, None));
    assert_eq!(server.stat(|s| s.hits["/flaky/2/atom_xhtml.atom"]), 3);
    let report = refresh_one(&mut cat, &f, gone, NOW_MS).expect("refresh");
    assert!(report.error.is_some_and(|e| e.contains("404")));
    assert_eq!(server.stat(|s| s.hits["/status/404"]), 1, "4xx is not retried");
    let report = refresh_one(&mut cat, &f, hopeless, NOW_MS).expect("refresh");
    assert!(report.error.is_some_and(|e| e.contains("500")));
    assert_eq!(server.stat(|s| s.hits["/flaky/9/atom_xhtml.atom"]), 3, "1 try + 2 retries");
}

#[test]
fn per_host_concurrency_is_limited() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    for k in 0..6 {
        add(&cat, &server.url(&format!("/limited/{k}")));
    }
    let start = Instant::now();
    let reports = refresh_all(&mut cat, &fetcher(), NOW_MS).expect("refresh");
    assert!(reports.iter().all(|r| r.error.is_none() && r.new_items == 1), "{reports:#?}");
    let peak = server.stat(|s| s.limited_peak);
    assert!((1..=2).contains(&peak), "peak {peak} in flight, limit 2");
    let floor_ms = 3 * u128::from(support::LIMITED_PAUSE_MS);
    assert!(start.elapsed().as_millis() >= floor_ms, "6 requests, 2 at a time, take 3 pauses");
}

#[test]
fn oversized_response_is_refused() {
    let server = TestServer::start();
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let id = add(&cat, &server.url("/big"));
    let f =
        HttpFetcher::new(FetchOptions { response_bytes_max: 1024, retries: 0, ..FetchOptions::default() });
    let report = refresh_one(&mut cat, &f, id, NOW_MS).expect("refresh");
    assert!(report.error.is_some_and(|e| e.contains("larger than 1024")));
}

#[test]
fn opml_import_folder_source_and_search() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("notes")).expect("mkdir");
    std::fs::write(dir.path().join("notes/ideas.md"), "# Compaction ideas\nTiered compaction saves writes.")
        .expect("write");
    let opml = String::from_utf8(support::fixture("real_world.opml")).expect("utf8");
    let opml = opml.replace("HTTP_BASE", &server.url(""));
    assert_eq!(parse_opml(opml.as_bytes()).expect("parse").len(), 3);
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let ids = import_opml(&cat, opml.as_bytes(), dir.path(), 600, NOW_MS).expect("import");
    assert_eq!(ids.len(), 3);
    let sources = cat.list_sources().expect("sources");
    assert_eq!(sources[0].title.as_deref(), Some("Kitchen & Code"));
    assert_eq!(sources[2].kind, "folder");
    assert_eq!(import_opml(&cat, opml.as_bytes(), dir.path(), 600, NOW_MS).expect("again"), ids);
    let reports = refresh_due(&mut cat, &fetcher(), NOW_MS).expect("refresh");
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:#?}");
    assert!(refresh_due(&mut cat, &fetcher(), NOW_MS + 1000).expect("not due").is_empty());
    let note = &items_of(&cat, ids[2])[0];
    assert_eq!((note.title.as_str(), note.guid.as_deref()), ("Compaction ideas", Some("ideas.md")));
    let hits = cat.search("tiered compaction", 10).expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, note.id);
    assert_eq!(cat.search("thompson", 10).expect("search")[0].title, "Bandits in practice");
}

#[test]
fn catalog_on_disk_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.db");
    let server = TestServer::start();
    {
        let mut cat = Catalog::open(&path).expect("open");
        let id = add(&cat, &server.url("/feeds/rss_cdata_html.xml"));
        refresh_one(&mut cat, &fetcher(), id, NOW_MS).expect("refresh");
    }
    let cat = Catalog::open(&path).expect("reopen");
    assert_eq!(cat.count_items(None).expect("count"), 3);
    assert_eq!(cat.search("borrowing", 5).expect("search").len(), 1);
}

#[test]
fn bundled_samples_load_without_network() {
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples");
    let opml = std::fs::read(samples.join("sources.opml")).expect("sources.opml");
    let mut cat = Catalog::open_in_memory().expect("catalog");
    let ids = import_opml(&cat, &opml, Path::new(&samples), 3600, NOW_MS).expect("import");
    assert!(ids.len() >= 5, "{} sources", ids.len());
    // A fetcher that can reach nothing: the samples must not need it.
    let offline = HttpFetcher::new(FetchOptions { timeout_ms: 1, retries: 0, ..FetchOptions::default() });
    let reports = refresh_all(&mut cat, &offline, NOW_MS).expect("refresh");
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:#?}");
    let total = cat.count_items(None).expect("count");
    assert!(total >= 200, "{total} items");
    assert_eq!(reports.iter().map(|r| r.new_items).sum::<usize>(), total);
    for id in ids {
        assert!(cat.count_items(Some(id)).expect("count") >= 10, "source {id} is nearly empty");
    }
    assert!(!cat.search("compaction", 5).expect("search").is_empty());
}
