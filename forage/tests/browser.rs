//! Browser test of the web UI (forage/ui/) in headless Chromium, driven through chromedriver
//! (W3C WebDriver, see `support_webdriver`). It runs the real `forage demo` binary on a temp
//! data dir with the lexical embedder, then checks, in one browser session:
//! - the feed renders cards; clicking Like gives the card its liked state, and the like is in
//!   Tidal (`GET /v1/items/{id}` counts it), and the stats strip updates in place;
//! - keyboard: `j` moves the selection, `s` skips the selected item (the card goes away and
//!   the skip is counted);
//! - the sources page draws one `svg.posterior` chart per source with a finite density path;
//! - the page never reloads (a marker set on `window` survives every step).
//!
//! Screenshots land in `<target>/test-artifacts/` (`forage-feed.png`, `forage-ui.png`).
//! The test fails, never skips, when Chromium is missing: run `scripts/test-all.sh`, which
//! installs it through `scripts/install-browser.sh`.

mod support_webdriver;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support_webdriver::{ChromeDriver, Session, WdResult, require_browser, wait_for};

/// The demo builds its catalog (about 222 items) before it listens; a debug build is slow.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(180);
const UI_TIMEOUT: Duration = Duration::from_secs(30);
/// The demo bundles six sample sources.
const DEMO_SOURCES_MIN: usize = 6;
const WINDOW: (u32, u32) = (1280, 1400);
/// A property set on `window` once; if the page reloads, it is gone.
const NO_RELOAD_MARKER: &str = "window.__forageNoReload";

/// A `forage demo` child process, killed on drop.
struct Forage {
    child: Child,
    base: String,
    log: PathBuf,
    token: Option<String>,
}

impl Forage {
    /// Starts `forage demo` in `dir`; with `token`, the API wants `Authorization: Bearer`.
    fn start(dir: &Path, token: Option<&str>) -> Forage {
        let log = dir.join("forage.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_forage"));
        command.arg("demo").arg("--data-dir").arg(dir.join("data"));
        command.args(["--listen", "127.0.0.1:0", "--embedder", "lexical"]).env_remove("FORAGE_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the server log"))
            .spawn()
            .expect("spawn forage demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after the URL line so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("Forage UI: ") {
                    let _ = tx.send(line[at + "Forage UI: ".len()..].trim().to_string());
                }
            }
        });
        let mut forage = Forage { child, base: String::new(), log, token: token.map(str::to_string) };
        match rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(url) => forage.base = url.trim_end_matches('/').to_string(),
            Err(_) => {
                panic!("forage demo printed no `Forage UI: http://…` line within {SERVER_START_TIMEOUT:?}")
            }
        }
        forage
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        response.body_mut().read_json().unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// Every `/ui/…` asset that index.html references is served (200, non-empty).
    fn assert_assets_served(&self) {
        let html = ureq::get(&format!("{}/", self.base)).call().expect("GET /").body_mut().read_to_string();
        let html = html.expect("index.html as text");
        let assets: Vec<&str> = html
            .split('"')
            .filter(|part| part.starts_with("/ui/") && !part.contains(char::is_whitespace))
            .collect();
        assert!(assets.len() >= 3, "index.html references too few assets: {assets:?}");
        for asset in assets {
            let url = format!("{}{asset}", self.base);
            let body = ureq::get(&url).call().and_then(|mut r| r.body_mut().read_to_string());
            let body =
                body.unwrap_or_else(|e| panic!("the server must serve {asset} (forage/ui/): GET {url}: {e}"));
            assert!(!body.is_empty(), "{asset} is empty");
        }
    }

    fn signal_count(&self, item: &str, kind: &str) -> u64 {
        let answer = self.get(&format!("/v1/items/{}", percent_encode(item)));
        answer["signals"][kind].as_u64().unwrap_or(0)
    }
}

impl Drop for Forage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- forage demo stderr (last lines) ---");
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `<target>/test-artifacts`: `CARGO_TARGET_DIR` if set, else three levels above the test
/// executable (`<target>/debug/deps/browser-…`).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test executable path");
        exe.ancestors().nth(3).expect("target dir above the test executable").to_path_buf()
    });
    target.join("test-artifacts")
}

fn script(browser: &Session, body: &str, args: Vec<Value>) -> WdResult<Value> {
    browser.execute(body, args)
}

/// The `data-item` of the selected feed card, if any.
fn selected_item(browser: &Session) -> WdResult<Option<String>> {
    let v = script(
        browser,
        "return document.querySelector('#feed-list .card.selected')?.dataset.item ?? null",
        vec![],
    )?;
    Ok(v.as_str().map(str::to_string))
}

fn card_state(browser: &Session, item: &str) -> WdResult<Value> {
    script(
        browser,
        "const c = [...document.querySelectorAll('#feed-list .card')].find(c => c.dataset.item === arguments[0]);
         return c ? {liked: c.classList.contains('liked'), leaving: c.classList.contains('leaving')} : null;",
        vec![json!(item)],
    )
}

fn assert_no_reload(browser: &Session, step: &str) {
    let marker =
        script(browser, &format!("return {NO_RELOAD_MARKER} === true"), vec![]).expect("read marker");
    assert_eq!(marker, json!(true), "the page reloaded during {step}; the UI must update in place");
}

#[test]
fn web_ui_feedback_reaches_tidal_and_sources_draw_posteriors() {
    require_browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let forage = Forage::start(dir.path(), None);
    let driver = ChromeDriver::start();
    let browser =
        driver.session(&dir.path().join("chromium-profile"), WINDOW).expect("start a Chromium session");
    let artifacts = artifacts_dir();
    forage.assert_assets_served();

    // The feed renders.
    browser.goto(&format!("{}/#/feed", forage.base)).expect("open the feed");
    let cards = wait_for("feed cards", UI_TIMEOUT, || {
        Ok(browser.find_all("#feed-list .card")?.len()).map(|n| (n >= 3).then_some(n))
    });
    assert!(cards >= 3, "the feed showed {cards} cards");
    script(&browser, &format!("{NO_RELOAD_MARKER} = true"), vec![]).expect("set marker");

    // Like the first item: the card shows it, and Tidal counts it.
    let like = browser.find("#feed-list .card button.like[data-action=\"like\"]").expect("a Like button");
    let liked = browser.attribute(&like, "data-item").expect("read data-item").expect("Like has data-item");
    assert_eq!(forage.signal_count(&liked, "like"), 0, "{liked} was liked before the test clicked");
    browser.click(&like).expect("click Like");
    wait_for("the liked state on the card", UI_TIMEOUT, || {
        Ok(card_state(&browser, &liked)?["liked"].as_bool().unwrap_or(false).then_some(()))
    });
    assert_eq!(forage.signal_count(&liked, "like"), 1, "the like of {liked} must reach Tidal exactly once");
    wait_for("a toast confirming the like", UI_TIMEOUT, || {
        let toasts = browser.find_all("#toasts .toast")?;
        let texts: Vec<String> = toasts.iter().filter_map(|t| browser.text(t).ok()).collect();
        Ok(texts.iter().any(|t| t.starts_with("Liked")).then_some(()))
    });
    wait_for("the stats strip to count the like", UI_TIMEOUT, || {
        let rate = browser.text(&browser.find("#stat-like-rate")?)?;
        Ok((!rate.is_empty() && rate != "0.0%").then_some(()))
    });

    // Keyboard: the liked card is selected; `j` moves down, `s` skips the selected item.
    assert_eq!(selected_item(&browser).expect("selection").as_deref(), Some(liked.as_str()));
    browser.press_key("j").expect("press j");
    let skipped = wait_for("j to move the selection", UI_TIMEOUT, || {
        Ok(selected_item(&browser)?.filter(|item| *item != liked))
    });
    browser.press_key("s").expect("press s");
    wait_for("the skipped card to disappear", UI_TIMEOUT, || {
        Ok(card_state(&browser, &skipped)?.is_null().then_some(()))
    });
    assert_eq!(
        forage.signal_count(&skipped, "skip"),
        1,
        "the skip of {skipped} must reach Tidal exactly once"
    );
    assert_eq!(
        card_state(&browser, &liked).expect("liked card")["liked"],
        json!(true),
        "liked card lost its state"
    );
    assert_no_reload(&browser, "feedback");
    let feed_png = browser.screenshot(&artifacts.join("forage-feed.png")).expect("feed screenshot");

    // The sources page draws one posterior chart per source.
    browser
        .click(&browser.find("nav a[data-route=\"sources\"]").expect("Sources link"))
        .expect("open sources");
    let sources = forage.get("/v1/sources")["sources"].as_array().cloned().expect("sources list");
    assert!(sources.len() >= DEMO_SOURCES_MIN, "the demo has {} sources", sources.len());
    let charts = wait_for("a posterior chart per source", UI_TIMEOUT, || {
        let charts = script(
            &browser,
            "return [...document.querySelectorAll('svg.posterior')].map(svg => ({
               source: svg.dataset.source,
               d: [...svg.querySelectorAll('path')].map(p => p.getAttribute('d') || '').join(' '),
             }));",
            vec![],
        )?;
        let charts = charts.as_array().cloned().unwrap_or_default();
        Ok((charts.len() >= sources.len()).then_some(charts))
    });
    for chart in &charts {
        let d = chart["d"].as_str().unwrap_or_default();
        assert!(d.len() > 20 && !d.contains("NaN") && !d.contains("Infinity"), "bad chart path: {chart}");
    }
    let mut drawn: Vec<String> =
        charts.iter().map(|c| c["source"].as_str().unwrap_or_default().to_string()).collect();
    let mut listed: Vec<String> =
        sources.iter().map(|s| s["id"].to_string().trim_matches('"').to_string()).collect();
    drawn.sort();
    listed.sort();
    assert_eq!(drawn, listed, "one chart per source, tagged with its id");
    assert_no_reload(&browser, "navigation to #/sources");
    let ui_png = browser.screenshot(&artifacts.join("forage-ui.png")).expect("sources screenshot");
    for png in [&feed_png, &ui_png] {
        let bytes = std::fs::read(png).expect("read screenshot");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is not a real PNG", png.display());
    }
    eprintln!("screenshots: {} {}", feed_png.display(), ui_png.display());
}

/// With `--token`, the UI asks for the token once, keeps it in `localStorage`, and sends it on
/// every call: the feed loads after the prompt, a label chip confirmed on a card (in the feed
/// filtered by that label) counts as a confirmation, and a label created on the labels page
/// reaches the API.
#[test]
fn web_ui_asks_for_the_token_and_manages_labels() {
    const TOKEN: &str = "browser-test-token";
    const LABEL: &str = "browser-test-label";
    require_browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let forage = Forage::start(dir.path(), Some(TOKEN));
    forage.assert_assets_served(); // `/` and `/ui/*` stay open with a token
    let driver = ChromeDriver::start();
    let browser =
        driver.session(&dir.path().join("chromium-profile"), WINDOW).expect("start a Chromium session");

    browser.goto(&format!("{}/#/feed", forage.base)).expect("open the feed");
    let input = wait_for("the token prompt", UI_TIMEOUT, || {
        Ok(browser.find_all("dialog#token-dialog[open] #token-input")?.into_iter().next())
    });
    assert!(browser.find_all("#feed-list .card").expect("cards").is_empty(), "cards shown without the token");
    browser.send_keys(&input, TOKEN).expect("type the token");
    browser.click(&browser.find("#token-form button[type=submit]").expect("Save")).expect("save the token");
    wait_for("feed cards after the token", UI_TIMEOUT, || {
        Ok((!browser.find_all("#feed-list .card")?.is_empty()).then_some(()))
    });
    let stored =
        script(&browser, "return localStorage.getItem('forage.token')", vec![]).expect("read storage");
    assert_eq!(stored, json!(TOKEN), "the token is kept in localStorage `forage.token`");

    // Confirm a label chip on a card of the feed filtered by that label.
    let labels = forage.get("/v1/labels")["labels"].as_array().cloned().expect("labels list");
    let label = labels.iter().find(|l| l["items"].as_u64() > Some(0)).expect("a demo label carried by items");
    let id = label["id"].to_string();
    browser.goto(&format!("{}/#/feed?label={id}", forage.base)).expect("open the filtered feed");
    let chip = wait_for("a chip of the filtered label", UI_TIMEOUT, || {
        Ok(browser.find_all(&format!("#feed-list .card .chip[data-label=\"{id}\"]"))?.into_iter().next())
    });
    browser.click(&chip).expect("click the chip");
    browser.click(&browser.find(".chip-menu button.confirm").expect("the Yes button")).expect("confirm");
    wait_for("the confirmed chip", UI_TIMEOUT, || {
        Ok((!browser.find_all(&format!(".chip.confirmed[data-label=\"{id}\"]"))?.is_empty()).then_some(()))
    });
    let after = forage.get("/v1/labels")["labels"].as_array().cloned().expect("labels list");
    let confirmed = after.iter().find(|l| l["id"] == label["id"]).expect("label")["confirmed"].as_u64();
    assert_eq!(
        confirmed,
        Some(label["confirmed"].as_u64().unwrap_or(0) + 1),
        "the confirmation reached the API"
    );

    browser.click(&browser.find("nav a[data-route=\"labels\"]").expect("Labels link")).expect("open labels");
    let name =
        wait_for("the label form", UI_TIMEOUT, || Ok(browser.find_all("#label-name")?.into_iter().next()));
    browser.send_keys(&name, LABEL).expect("type a name");
    let examples = browser.find("#label-examples").expect("examples field");
    browser.send_keys(&examples, "orbits and rockets\nspace telescopes").expect("type examples");
    browser.click(&browser.find("#label-save").expect("Create button")).expect("create the label");
    wait_for("the new label in the list", UI_TIMEOUT, || {
        let rows = browser.find_all("#label-list .label-row h2")?;
        let texts: Vec<String> = rows.iter().filter_map(|r| browser.text(r).ok()).collect();
        Ok(texts.iter().any(|t| t.starts_with(LABEL)).then_some(()))
    });
    let labels = forage.get("/v1/labels")["labels"].as_array().cloned().expect("labels list");
    let created = labels.iter().find(|l| l["name"] == json!(LABEL)).expect("the label reached the API");
    assert_eq!(
        created["examples"],
        json!(["orbits and rockets", "space telescopes"]),
        "one example per line"
    );
}
