//! A tiny local HTTP/1.1 test server for the source tests (std::net only, 127.0.0.1:0).
//!
//! Routes:
//! - `/feeds/<fixture>`: the fixture with an ETag and Last-Modified; answers 304 to a matching
//!   If-None-Match or If-Modified-Since.
//! - `/lm/<fixture>`: the same with only Last-Modified (tests If-Modified-Since alone).
//! - `/slow`: sleeps past any client timeout used by the tests, then serves a feed.
//! - `/flaky/<n>/<fixture>`: 500 for the first `n` requests, then the fixture.
//! - `/status/<code>`: an empty response with that status.
//! - `/limited/<k>`: a one-item feed after a pause, tracking how many requests are in flight.
//! - `/big`: a body larger than the tests' size cap.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SLOW_SLEEP_MS: u64 = 3_000;
pub const LIMITED_PAUSE_MS: u64 = 150;
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

#[derive(Default)]
pub struct Stats {
    /// Requests per path.
    pub hits: HashMap<String, usize>,
    /// 200 responses with a body, per path.
    pub bodies: HashMap<String, usize>,
    /// 304 responses per path.
    pub not_modified: HashMap<String, usize>,
    pub limited_in_flight: usize,
    pub limited_peak: usize,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Mutex<Stats>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Mutex::new(Stats::default()));
        let s = stats.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || handle(stream, &s));
            }
        });
        TestServer { addr, stats }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stat(&self, f: impl FnOnce(&Stats) -> usize) -> usize {
        f(&self.stats.lock().expect("stats"))
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn handle(mut stream: TcpStream, stats: &Mutex<Stats>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let hits = {
        let mut st = stats.lock().expect("stats");
        let n = st.hits.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let (status, extra, body) = route(&path, &headers, hits, stats);
    let mut st = stats.lock().expect("stats");
    match status {
        200 => *st.bodies.entry(path).or_insert(0) += 1,
        304 => *st.not_modified.entry(path).or_insert(0) += 1,
        _ => {}
    }
    drop(st);
    let head =
        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn route(
    path: &str,
    headers: &HashMap<String, String>,
    hits: usize,
    stats: &Mutex<Stats>,
) -> (u16, String, Vec<u8>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["feeds", name] => conditional(headers, name, true),
        ["lm", name] => conditional(headers, name, false),
        ["slow"] => {
            std::thread::sleep(Duration::from_millis(SLOW_SLEEP_MS));
            (200, String::new(), fixture("rss_cdata_html.xml"))
        }
        ["flaky", n, name] => {
            if hits <= n.parse::<usize>().unwrap_or(0) {
                (500, String::new(), b"oops".to_vec())
            } else {
                (200, String::new(), fixture(name))
            }
        }
        ["status", code] => (code.parse().unwrap_or(500), String::new(), Vec::new()),
        ["limited", k] => limited(k, stats),
        ["big"] => (200, String::new(), vec![b' '; 64 * 1024]),
        _ => (404, String::new(), Vec::new()),
    }
}

fn conditional(headers: &HashMap<String, String>, name: &str, with_etag: bool) -> (u16, String, Vec<u8>) {
    let body = fixture(name);
    let etag = format!("\"{}-{}\"", name.len(), body.len());
    let fresh = if with_etag {
        headers.get("if-none-match") == Some(&etag)
    } else {
        headers.get("if-modified-since").map(String::as_str) == Some(LAST_MODIFIED)
    };
    let mut extra = format!("Last-Modified: {LAST_MODIFIED}\r\n");
    if with_etag {
        extra.push_str(&format!("ETag: {etag}\r\n"));
    }
    if fresh { (304, extra, Vec::new()) } else { (200, extra, body) }
}

fn limited(k: &str, stats: &Mutex<Stats>) -> (u16, String, Vec<u8>) {
    {
        let mut st = stats.lock().expect("stats");
        st.limited_in_flight += 1;
        st.limited_peak = st.limited_peak.max(st.limited_in_flight);
    }
    std::thread::sleep(Duration::from_millis(LIMITED_PAUSE_MS));
    stats.lock().expect("stats").limited_in_flight -= 1;
    let body = format!(
        "<rss version=\"2.0\"><channel><title>L{k}</title><item><title>Limited {k}</title>\
         <guid>l-{k}</guid><description>item {k}</description></item></channel></rss>"
    );
    (200, String::new(), body.into_bytes())
}
