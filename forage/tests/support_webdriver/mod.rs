//! A thin W3C WebDriver client for the browser test, over `ureq` and `serde_json` only (no TLS
//! stack, no async runtime). It owns two things:
//! - [`ChromeDriver`]: a `chromedriver` child process on a free loopback port, killed on drop;
//! - [`Session`]: one headless Chromium session on it, deleted on drop, with the few commands
//!   the test needs (navigate, find by CSS, click, text, attribute, script, keys, screenshot).
//!
//! Invariant: every command goes to the session it was created for; a failed command returns
//! the driver's `error: message` text, so a failing test says what the browser saw.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM_PATH: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER_PATH: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer `/status` after start.
const DRIVER_START_MS_MAX: u64 = 20_000;
/// One WebDriver command (page loads included) may take this long.
const COMMAND_TIMEOUT_MS: u64 = 60_000;
/// The W3C key that marks a JSON object as an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub type WdResult<T> = Result<T, String>;

/// Panics with the install hint when Chromium or chromedriver is missing: the test must fail,
/// not skip, on a machine that was not set up.
pub fn require_browser() {
    for path in [CHROMIUM_PATH, CHROMEDRIVER_PATH] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser test needs Debian's chromium and chromium-driver. \
             Run scripts/test-all.sh (it calls scripts/install-browser.sh) or \
             scripts/install-browser.sh directly."
        );
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(COMMAND_TIMEOUT_MS)))
        .build()
        .new_agent()
}

pub struct ChromeDriver {
    child: Child,
    pub url: String,
    agent: ureq::Agent,
}

impl ChromeDriver {
    pub fn start() -> ChromeDriver {
        require_browser();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER_PATH)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = ChromeDriver { child, url: format!("http://127.0.0.1:{port}"), agent: agent() };
        let deadline = Instant::now() + Duration::from_millis(DRIVER_START_MS_MAX);
        loop {
            let ready = driver
                .agent
                .get(format!("{}/status", driver.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new headless session; `profile_dir` keeps Chromium's profile out of $HOME.
    pub fn session(&self, profile_dir: &Path, window: (u32, u32)) -> WdResult<Session> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile_dir.display()),
            &format!("--window-size={},{}", window.0, window.1),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM_PATH, "args": args},
        }}});
        let value = send(&self.agent, "POST", &format!("{}/session", self.url), Some(caps))?;
        let id = value["sessionId"].as_str().ok_or_else(|| format!("no sessionId in {value}"))?;
        Ok(Session { base: format!("{}/session/{id}", self.url), agent: self.agent.clone() })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one WebDriver command and returns its `value`, or the driver's error text.
fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> WdResult<Value> {
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent.post(url).send_json(body.unwrap_or_else(|| json!({}))),
    };
    let mut response = response.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let mut answer: Value =
        response.body_mut().read_json().map_err(|e| format!("{method} {url}: bad JSON answer: {e}"))?;
    let value = answer["value"].take();
    if status >= 400 {
        return Err(format!("{method} {url}: {status} {}: {}", value["error"], value["message"]));
    }
    Ok(value)
}

pub struct Session {
    base: String,
    agent: ureq::Agent,
}

#[derive(Clone, Debug)]
pub struct Element(String);

impl Session {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> WdResult<Value> {
        send(&self.agent, method, &format!("{}{path}", self.base), body)
    }

    pub fn goto(&self, url: &str) -> WdResult<()> {
        self.cmd("POST", "/url", Some(json!({"url": url}))).map(drop)
    }

    pub fn find(&self, css: &str) -> WdResult<Element> {
        let value = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})))?;
        element_of(&value)
    }

    pub fn find_all(&self, css: &str) -> WdResult<Vec<Element>> {
        let value = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})))?;
        value.as_array().ok_or_else(|| format!("not a list: {value}"))?.iter().map(element_of).collect()
    }

    pub fn click(&self, element: &Element) -> WdResult<()> {
        self.cmd("POST", &format!("/element/{}/click", element.0), Some(json!({}))).map(drop)
    }

    /// Types `text` into an element (`\n` is sent as Enter by Chromium only in inputs that
    /// submit; in a textarea it is a new line).
    pub fn send_keys(&self, element: &Element, text: &str) -> WdResult<()> {
        self.cmd("POST", &format!("/element/{}/value", element.0), Some(json!({"text": text}))).map(drop)
    }

    pub fn text(&self, element: &Element) -> WdResult<String> {
        let value = self.cmd("GET", &format!("/element/{}/text", element.0), None)?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    pub fn attribute(&self, element: &Element, name: &str) -> WdResult<Option<String>> {
        let value = self.cmd("GET", &format!("/element/{}/attribute/{name}", element.0), None)?;
        Ok(value.as_str().map(str::to_string))
    }

    /// Runs `script` as a function body in the page (`arguments[i]` are `args`).
    pub fn execute(&self, script: &str, args: Vec<Value>) -> WdResult<Value> {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// Presses and releases one key (a W3C key action on whatever has focus).
    pub fn press_key(&self, key: &str) -> WdResult<()> {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
        ]}]});
        self.cmd("POST", "/actions", Some(actions)).map(drop)
    }

    /// Saves a PNG screenshot of the viewport to `path` (parent directories are created).
    pub fn screenshot(&self, path: &Path) -> WdResult<PathBuf> {
        let value = self.cmd("GET", "/screenshot", None)?;
        let png = base64_decode(value.as_str().ok_or("screenshot is not a string")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = send(&self.agent, "DELETE", &self.base, None);
    }
}

fn element_of(value: &Value) -> WdResult<Element> {
    value[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_string()))
        .ok_or_else(|| format!("not an element: {value}"))
}

/// Polls `probe` every 100 ms until it answers `Some`, or fails with `what` and the last error.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> WdResult<Option<T>>) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        match probe() {
            Ok(Some(found)) => return found,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what} (last: {last})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Standard base64 (RFC 4648, with padding), enough for WebDriver screenshots.
fn base64_decode(text: &str) -> WdResult<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c).ok_or_else(|| format!("bad base64 byte {c:#x}"))? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[test]
fn base64_decodes_padded_and_unpadded() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(base64_decode("aA==").unwrap(), b"h");
    assert!(base64_decode("a$==").is_err());
}
