//! The HTTP API against a real `tidal serve` process on a loopback port: every endpoint,
//! bad input (each gets a 4xx JSON error and writes nothing), the bearer token, the limits,
//! read-your-writes with `min_seq`, probes, metrics, configuration sources, and the
//! OpenAPI document's coverage of the router.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Server, start};

/// A response, its body parsed as JSON when it is JSON.
struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts a JSON error answer and returns its (code, field).
    fn error(&self, status: u16) -> (String, Option<String>) {
        assert_eq!(self.status, status, "{}", self.text);
        let ct = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(ct.starts_with("application/json"), "content type {ct}");
        let e = &self.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        (e["code"].as_str().unwrap_or("").to_owned(), e["field"].as_str().map(str::to_owned))
    }
}

fn finish(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = response.expect("HTTP exchange");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut text = String::new();
    response.body_mut().as_reader().read_to_string(&mut text).expect("read body");
    Reply { status, headers, text }
}

fn get(a: &ureq::Agent, url: &str, token: Option<&str>) -> Reply {
    let mut request = a.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    finish(request.call())
}

fn post(a: &ureq::Agent, url: &str, content_type: Option<&str>, body: &[u8], token: Option<&str>) -> Reply {
    let mut request = a.post(url);
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    finish(request.send(body))
}

fn post_json(a: &ureq::Agent, base: &str, body: &Value) -> Reply {
    post(a, &format!("{base}/v1/signals"), Some("application/json"), body.to_string().as_bytes(), None)
}

fn sig(user: &str, item: &str, kind: &str) -> Value {
    json!({ "user": user, "item": item, "kind": kind })
}

fn count(a: &ureq::Agent, base: &str, item: &str, kind: &str) -> i64 {
    let reply = get(a, &format!("{base}/v1/items/{item}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["kinds"][kind]["count"].as_i64().unwrap_or(0)
}

/// Sum of applied seqs over shards: what the store has written.
fn written(a: &ureq::Agent, base: &str) -> u64 {
    let stats = get(a, &format!("{base}/v1/stats"), None).json();
    stats["seqs"].as_array().expect("seqs").iter().filter_map(Value::as_u64).sum()
}

#[test]
fn every_read_endpoint_answers_with_its_shape() {
    let server = start(&["--shards", "4"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    assert_eq!(get(&a, &format!("{base}/healthz"), None).json()["status"], "ok");
    assert_eq!(get(&a, &format!("{base}/readyz"), None).json()["status"], "ready");
    let mut rating = sig("bob", "song-2", "rating");
    rating["value"] = json!(8.5);
    let mut seq1 = sig("bob", "song-1", "click");
    seq1["session"] = json!("s1");
    seq1["session_seq"] = json!(1);
    let batch = json!([
        sig("ann", "song-1", "click"),
        sig("ann", "song-1", "like"),
        sig("bob", "song-3", "dislike"),
        rating,
        seq1
    ]);
    let answer = post_json(&a, base, &batch).json();
    let acks = answer["acks"].as_array().expect("acks");
    assert_eq!(acks.len(), 5);
    assert!(acks.iter().all(|k| k["duplicate"] == false && k["seq"].as_u64() > Some(0) && k["hlc"].is_u64()));
    let token = answer["token"].as_str().expect("token").to_owned();
    assert!(token.contains(':'), "{token}");

    let item = get(&a, &format!("{base}/v1/items/song-1?min_seq={token}"), None).json();
    let kinds = &item["kinds"];
    assert_eq!((kinds["click"]["count"].as_i64(), kinds["like"]["count"].as_i64()), (Some(2), Some(1)));
    assert_eq!(item["seqs"].as_array().map(Vec::len), Some(4));
    assert!(item["score"].as_f64().is_some_and(|s| s > 0.0) && item["token"].is_string());
    let song2 = get(&a, &format!("{base}/v1/items/song-2"), None).json();
    assert_eq!(song2["last_rating"].as_f64(), Some(8.5));
    let top = get(&a, &format!("{base}/v1/top?k=2&offset=0"), None).json();
    assert_eq!(top["items"][0]["item"], "song-1", "{top}");
    assert_eq!(top["items"].as_array().map(Vec::len), Some(2));
    let second = get(&a, &format!("{base}/v1/top?k=1&offset=1"), None).json();
    assert_eq!(second["items"][0]["item"], top["items"][1]["item"], "scores decay; names must agree");
    let bob = get(&a, &format!("{base}/v1/users/bob"), None).json();
    assert_eq!(bob["hard_negatives"], json!(["song-3"]));
    assert_eq!(bob["history"].as_array().map(Vec::len), Some(3));
    assert!(bob["seq"].as_u64() > Some(0) && bob["shard"].is_u64());
    let session = get(&a, &format!("{base}/v1/users/bob/sessions/s1"), None).json();
    assert_eq!((session["hwm"].as_u64(), session["entries"].as_array().map(Vec::len)), (Some(1), Some(1)));
    let negatives = get(&a, &format!("{base}/v1/users/bob/hard-negatives"), None).json();
    assert_eq!(negatives["hard_negatives"], json!(["song-3"]));
    let stats = get(&a, &format!("{base}/v1/stats"), None).json();
    assert_eq!(stats["shards"].as_array().map(Vec::len), Some(4));
    assert!(stats["recovery"]["elapsed_ms"].is_u64());
    assert_eq!(written(&a, base), 5);
    let served = get(&a, &format!("{base}/openapi.json"), None);
    assert_eq!(served.json(), serde_json::from_str::<Value>(tidal_server::handlers::OPENAPI_JSON).unwrap());
}

#[test]
fn ingest_takes_one_object_or_ndjson_and_retries_count_once() {
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let mut keyed = sig("cat", "song-4", "skip");
    keyed["idempotency_key"] = json!("k-1");
    let first = post_json(&a, base, &keyed).json();
    let again = post_json(&a, base, &keyed).json();
    assert_eq!(
        (first["acks"][0]["duplicate"].as_bool(), again["acks"][0]["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(again["acks"][0]["seq"], first["acks"][0]["seq"]);
    let ndjson = format!("{}\n\n{}\r\n", sig("dan", "song-4", "click"), sig("eve", "song-4", "click"));
    let reply =
        post(&a, &format!("{base}/v1/signals"), Some("application/x-ndjson"), ndjson.as_bytes(), None);
    assert_eq!(reply.json()["acks"].as_array().map(Vec::len), Some(2), "{}", reply.text);
    let mut in_session = sig("bob", "song-1", "click");
    in_session["session"] = json!("s1");
    in_session["session_seq"] = json!(1);
    let batch = json!([in_session]);
    assert_eq!(post_json(&a, base, &batch).json()["acks"][0]["duplicate"], false);
    assert_eq!(post_json(&a, base, &batch).json()["acks"][0]["duplicate"], true);
    assert_eq!(count(&a, base, "song-4", "click"), 2);
    assert_eq!(count(&a, base, "song-4", "skip"), 1, "the key retry changed nothing");
    assert_eq!(count(&a, base, "song-1", "click"), 1, "the SeqNo retry changed nothing");
    assert_eq!(written(&a, base), 4);
    let charset =
        post(&a, &format!("{base}/v1/signals"), Some("Application/JSON; charset=utf-8"), b"[]", None);
    assert_eq!((charset.status, charset.json()["acks"].as_array().map(Vec::len)), (200, Some(0)));
}

#[test]
fn unknown_ids_paths_methods_and_queries_are_json_errors() {
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    assert_eq!(post_json(&a, base, &sig("bob", "song-1", "click")).status, 200);
    let not_found = get(&a, &format!("{base}/v1/items/nope"), None).error(404);
    assert_eq!(not_found, ("not_found".into(), Some("id".into())));
    assert_eq!(get(&a, &format!("{base}/v1/users/nope"), None).error(404).0, "not_found");
    assert_eq!(get(&a, &format!("{base}/v1/users/bob/sessions/nope"), None).error(404).0, "not_found");
    assert_eq!(get(&a, &format!("{base}/v1/users/nope/hard-negatives"), None).error(404).0, "not_found");
    assert_eq!(get(&a, &format!("{base}/v2/anything"), None).error(404).0, "not_found");
    assert_eq!(finish(a.delete(format!("{base}/v1/stats")).call()).error(405).0, "method_not_allowed");
    let too_many = get(&a, &format!("{base}/v1/top?k=100000"), None).error(400);
    assert_eq!(too_many, ("invalid_query".into(), Some("k".into())));
    assert_eq!(get(&a, &format!("{base}/v1/top?kk=1"), None).error(400).0, "invalid_query");
}

/// Asserts that nothing was written beyond `before` and the named items do not exist.
fn assert_nothing_written(a: &ureq::Agent, base: &str, before: u64, items: &[&str]) {
    assert_eq!(written(a, base), before, "a rejected request wrote something");
    for item in items {
        assert_eq!(get(a, &format!("{base}/v1/items/{item}"), None).status, 404, "{item} was written");
    }
}

#[test]
fn bad_signals_get_a_4xx_json_error_naming_the_field_and_write_nothing() {
    let server = start(&["--batch-signals-max", "5"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let seq = |item: &str, n: u64| {
        let mut s = sig("gap-user", item, "click");
        s["session"] = json!("s");
        s["session_seq"] = json!(n);
        s
    };
    assert_eq!(post_json(&a, base, &seq("g-0", 1)).status, 200);
    let before = written(&a, base);
    let ok = sig("u", "bad-1", "click");
    let with = |key: &str, value: Value| {
        let mut s = sig("u", "bad-3", "click");
        s[key] = value;
        s
    };
    let mut high = sig("u", "bad-3", "rating");
    high["value"] = json!(11);
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!([ok, {"user": "u", "item": "bad-4"}]), 400, "invalid_signal", Some("signals[1].kind")),
        (json!([ok, ok, sig("u", "bad-5", "teleport")]), 400, "invalid_signal", Some("signals[2].kind")),
        (json!([with("colour", json!("red"))]), 400, "invalid_signal", Some("signals[0].colour")),
        (json!([with("value", json!("high"))]), 400, "invalid_signal", Some("signals[0].value")),
        (json!([ok, sig("", "bad-6", "click")]), 400, "invalid_signal", Some("signals[1].user")),
        (json!([ok, sig("u", &"x".repeat(300), "click")]), 400, "invalid_signal", Some("signals[1].item")),
        (
            json!([with("idempotency_key", json!("k".repeat(200)))]),
            400,
            "invalid_signal",
            Some("signals[0].idempotency_key"),
        ),
        (json!([ok, high]), 400, "invalid_signal", Some("signals[1].value")),
        (json!([ok, ok, ok, ok, ok, ok]), 413, "batch_too_large", Some("signals")),
        (json!([seq("bad-2", 2), seq("bad-2", 4)]), 409, "session_gap", Some("signals[1].session_seq")),
        (json!(42), 400, "malformed_json", None),
    ];
    for (body, status, code, field) in cases {
        let reply = post_json(&a, base, &body);
        assert_eq!(reply.error(status), (code.to_owned(), field.map(str::to_owned)), "{body}");
    }
    assert_nothing_written(&a, base, before, &["bad-1", "bad-2", "bad-3", "bad-4", "bad-5", "bad-6"]);
    assert_eq!(get(&a, &format!("{base}/v1/users/gap-user/sessions/s"), None).json()["hwm"], 1);
    let metrics = get(&a, &format!("{base}/metrics"), None).text;
    assert!(metrics.contains("tidal_http_ingest_signals_total{result=\"written\"} 1\n"), "{metrics}");
    assert!(metrics.contains("tidal_signals_written_total 1\n"), "{metrics}");
}

#[test]
fn bad_bodies_get_a_4xx_json_error_and_write_nothing() {
    let server = start(&["--batch-signals-max", "5", "--body-bytes-max", "65536"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let url = format!("{base}/v1/signals");
    let ok = sig("u", "bad-1", "click");
    let big = json!([{ "user": "u", "item": "bad-7", "kind": "click", "context": "c".repeat(100_000) }]);
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (Some("application/json"), br#"[{"user": "u", "item": "#.to_vec(), 400, "malformed_json"),
        (Some("application/json"), b"".to_vec(), 400, "malformed_json"),
        (Some("application/json"), b"\xff\xfe".to_vec(), 400, "malformed_json"),
        (Some("application/x-ndjson"), format!("{ok}\n{{\"user\":\n").into_bytes(), 400, "malformed_json"),
        (Some("application/x-ndjson"), format!("{ok}\n").repeat(6).into_bytes(), 413, "batch_too_large"),
        (Some("text/plain"), ok.to_string().into_bytes(), 415, "unsupported_media_type"),
        (None, ok.to_string().into_bytes(), 415, "unsupported_media_type"),
        (Some("application/json"), big.to_string().into_bytes(), 413, "body_too_large"),
    ];
    for (content_type, body, status, code) in cases {
        let reply = post(&a, &url, content_type, &body, None);
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        assert_eq!(reply.error(status).0, code, "{content_type:?} {shown}");
    }
    let malformed = post(&a, &url, Some("application/json"), b"[\n{\"user\": }]", None);
    let message = malformed.json()["error"]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("line 2 column"), "{message}");
    let lines = format!("{ok}\n{ok}\n{{\"user\":\"u\",\"item\":\"bad-8\"}}\n");
    let ndjson = post(&a, &url, Some("application/x-ndjson"), lines.as_bytes(), None);
    assert_eq!(ndjson.error(400), ("invalid_signal".into(), Some("signals[2].kind".into())));
    assert!(ndjson.text.contains("line 3"), "{}", ndjson.text);
    assert_nothing_written(&a, base, 0, &["bad-1", "bad-7", "bad-8"]);
}

#[test]
fn token_guards_every_endpoint_but_health() {
    let server = start(&["--token", "s3cret"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let mut keyed = sig("u", "t-1", "click");
    keyed["idempotency_key"] = json!("once");
    let body = json!([keyed]).to_string();
    let url = format!("{base}/v1/signals");
    for token in [None, Some("wrong"), Some("s3cret2"), Some("s3cre"), Some("")] {
        let reply = post(&a, &url, Some("application/json"), body.as_bytes(), token);
        assert_eq!(reply.error(401).0, "unauthorized");
        assert_eq!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    }
    let basic = finish(a.get(format!("{base}/v1/stats")).header("Authorization", "Basic czNjcmV0").call());
    assert_eq!(basic.error(401).0, "unauthorized");
    let lower = finish(a.get(format!("{base}/v1/stats")).header("Authorization", "bearer s3cret").call());
    assert_eq!(lower.status, 200, "the scheme is case-insensitive: {}", lower.text);
    for (method, path) in tidal_server::routes() {
        let path = path.replace("{id}", "u").replace("{session}", "s");
        let url = format!("{base}{path}");
        let open = path == "/healthz" || path == "/readyz";
        let status = |token| match method.as_str() {
            "POST" => post(&a, &url, Some("application/json"), body.as_bytes(), token).status,
            _ => get(&a, &url, token).status,
        };
        assert_eq!(status(None) == 401, !open, "{method} {path} without a token");
        assert_eq!(status(Some("wrong")) == 401, !open, "{method} {path} with a wrong token");
        assert_ne!(status(Some("s3cret")), 401, "{method} {path} with the token");
    }
    let stats = get(&a, &format!("{base}/v1/stats"), Some("s3cret")).json();
    let seqs: u64 = stats["seqs"].as_array().expect("seqs").iter().filter_map(Value::as_u64).sum();
    assert_eq!(seqs, 1, "only the one authorised write landed");
}

#[test]
fn min_seq_from_the_ack_always_sees_the_write_and_the_future_times_out() {
    let server = start(&["--shards", "4"]);
    let (writer, reader, base) = (
        common::agent(Duration::from_secs(30)),
        common::agent(Duration::from_secs(30)),
        server.base.as_str(),
    );
    for n in 0..60 {
        let item = format!("v-{}", n % 7);
        let before = if n < 7 { 0 } else { count(&reader, base, &item, "like") };
        let token =
            post_json(&writer, base, &sig(&format!("user-{n}"), &item, "like")).json()["token"].clone();
        let token = token.as_str().expect("token").to_owned();
        let seen = get(&reader, &format!("{base}/v1/items/{item}?min_seq={token}&wait_ms=0"), None);
        assert_eq!(seen.status, 200, "write {n} not visible with its token: {}", seen.text);
        assert_eq!(seen.json()["kinds"]["like"]["count"].as_i64(), Some(before + 1));
        let user = get(&reader, &format!("{base}/v1/users/user-{n}?min_seq={token}&wait_ms=0"), None);
        assert_eq!(user.status, 200, "{}", user.text);
    }
    // A token the store has not reached: wait_ms, then 503 not_yet with Retry-After.
    let started = Instant::now();
    let future = get(&reader, &format!("{base}/v1/items/v-1?min_seq=0:1000000&wait_ms=300"), None);
    let waited = started.elapsed();
    assert_eq!(future.error(503), ("not_yet".into(), Some("min_seq".into())));
    assert_eq!(future.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let message = future.json()["error"]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("applied seq") && message.contains("1000000"), "{message}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
    let now = get(&reader, &format!("{base}/v1/top?min_seq=0:1000000&wait_ms=0"), None);
    assert_eq!(now.error(503).0, "not_yet");
    for (query, code, field) in [
        ("min_seq=zzz", "invalid_token", "min_seq"),
        ("min_seq=99:1", "invalid_token", "min_seq"),
        ("min_seq=0:1&wait_ms=999999", "invalid_query", "wait_ms"),
        ("wait_ms=soon", "invalid_query", "wait_ms"),
    ] {
        let reply = get(&reader, &format!("{base}/v1/stats?{query}"), None);
        assert_eq!(reply.error(400), (code.into(), Some(field.into())), "{query}");
    }
    // A read waiting on the next seq of a shard returns once a write reaches it.
    let ack = post_json(&writer, base, &sig("waiter", "w-1", "click")).json()["acks"][0].clone();
    let next = format!("{}:{}", ack["shard"], ack["seq"].as_u64().unwrap_or(0) + 1);
    let url = format!("{base}/v1/users/waiter?min_seq={next}&wait_ms=10000");
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        (get(&common::agent(Duration::from_secs(30)), &url, None), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(post_json(&writer, base, &sig("waiter", "w-2", "click")).status, 200);
    let (reply, took) = waiting.join().expect("reader thread");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["history"].as_array().map(Vec::len), Some(2));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Waits until the server reports `n` API requests in flight.
fn wait_in_flight(a: &ureq::Agent, base: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = format!("tidal_http_requests_in_flight {n}\n");
    while !get(a, &format!("{base}/metrics"), None).text.contains(&line) {
        assert!(Instant::now() < deadline, "never saw {n} requests in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn in_flight_limit_and_request_timeout_answer_503() {
    let server = start(&["--requests-in-flight-max", "1", "--request-timeout-ms", "600"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.clone());
    let url = format!("{base}/v1/stats?min_seq=0:1000000&wait_ms=5000");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        (get(&common::agent(Duration::from_secs(30)), &url, None), started.elapsed())
    });
    wait_in_flight(&a, &base, 1);
    let busy = get(&a, &format!("{base}/v1/top"), None);
    assert_eq!(busy.error(503).0, "overloaded");
    assert!(busy.headers.contains_key("retry-after"));
    assert_eq!(get(&a, &format!("{base}/healthz"), None).status, 200, "probes are not limited");
    assert_eq!(get(&a, &format!("{base}/metrics"), None).status, 200);
    let (reply, took) = slow.join().expect("slow reader");
    assert_eq!(reply.error(503).0, "timeout");
    assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(get(&a, &format!("{base}/v1/top"), None).status, 200, "the permit came back");
}

#[test]
fn metrics_expose_store_and_request_counters() {
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    for n in 0..3 {
        assert_eq!(
            post_json(&a, base, &json!([sig("m", &format!("m-{n}"), "click"), sig("n", "m-x", "like")]))
                .status,
            200
        );
    }
    assert_eq!(post(&a, &format!("{base}/v1/signals"), Some("text/plain"), b"x", None).status, 415);
    let reply = get(&a, &format!("{base}/metrics"), None);
    assert_eq!(reply.status, 200);
    let ct = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("text/plain"), "{ct}");
    let m = reply.text;
    for needle in [
        "tidal_signals_written_total 6\n",
        "tidal_fsync_seconds_bucket{le=\"+Inf\"}",
        "tidal_fsync_seconds_count",
        "tidal_recovery_seconds ",
        "tidal_shard_applied_seq{shard=\"0\"}",
        "tidal_http_requests_total{method=\"POST\",route=\"/v1/signals\",status=\"200\"} 3\n",
        "tidal_http_requests_total{method=\"POST\",route=\"/v1/signals\",status=\"415\"} 1\n",
        "tidal_http_ingest_signals_total{result=\"written\"} 6\n",
        "tidal_http_ingest_rejected_total 1\n",
        "tidal_http_ready 1\n",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
    let wal_bytes =
        m.lines().find_map(|l| l.strip_prefix("tidal_wal_bytes_total ")).and_then(|v| v.parse::<u64>().ok());
    assert!(wal_bytes.is_some_and(|b| b > 0), "{m}");
    let fsyncs = m
        .lines()
        .find_map(|l| l.strip_prefix("tidal_fsync_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(fsyncs.is_some_and(|n| n >= 1), "acked writes were fsynced: {m}");
}

#[test]
fn config_file_and_environment_configure_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidal.toml");
    std::fs::write(&file, "batch_signals_max = 2\ntoken = \"from-file\"\nlisten = \"127.0.0.1:1\"\n")
        .expect("write config");
    let data = dir.path().join("data");
    let env = [("TIDAL_CONFIG", file.to_str().expect("utf-8 path")), ("TIDAL_TOKEN", "from-env")];
    let (child, base) = common::start_serve(&data, &[], &env);
    let _server = Server { child, base: base.clone(), dir: None };
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":1"),
        "--listen beats the file: {base}"
    );
    let a = common::agent(Duration::from_secs(30));
    let body =
        json!([sig("u", "c-1", "click"), sig("u", "c-2", "click"), sig("u", "c-3", "click")]).to_string();
    let url = format!("{base}/v1/signals");
    assert_eq!(
        post(&a, &url, Some("application/json"), body.as_bytes(), Some("from-file")).status,
        401,
        "env beats file"
    );
    let reply = post(&a, &url, Some("application/json"), body.as_bytes(), Some("from-env"));
    assert_eq!(reply.error(413).0, "batch_too_large", "the file's limit applies");
}

#[test]
fn openapi_document_matches_the_router() {
    let doc: Value = serde_json::from_str(tidal_server::handlers::OPENAPI_JSON).expect("openapi.json parses");
    assert_eq!(doc["openapi"], "3.1.0");
    let methods = ["get", "post", "put", "delete", "patch", "head", "options"];
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            let ops = ops.as_object().cloned().unwrap_or_default();
            ops.keys()
                .filter(|m| methods.contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let routed: BTreeSet<(String, String)> =
        tidal_server::routes().into_iter().map(|(m, p)| (m.as_str().to_owned(), p.to_owned())).collect();
    assert_eq!(documented, routed, "openapi.json and the router disagree");
    // Every reference resolves inside the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => out.push(r.clone()),
                _ => refs(v, out),
            }),
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn export_streams_dpo_rows_as_jsonl_and_parquet() {
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), &server.base);
    let mut session = Vec::new();
    for (n, (item, kind)) in
        [("liked", "like"), ("shown", "impression"), ("hated", "dislike")].iter().enumerate()
    {
        session
            .push(json!({"user": "ann", "session": "s1", "session_seq": n + 1, "item": item, "kind": kind}));
    }
    assert_eq!(post_json(&a, base, &Value::Array(session)).status, 200);
    let jsonl = get(&a, &format!("{base}/v1/export?format=dpo&file=jsonl&test_fraction=0"), None);
    assert_eq!(jsonl.status, 200, "{}", jsonl.text);
    assert_eq!(jsonl.headers["content-type"], "application/x-ndjson");
    assert!(jsonl.headers.contains_key("x-tidal-seqs"));
    let rows: Vec<Value> = jsonl.text.lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect();
    assert!(!rows.is_empty(), "no rows");
    assert!(
        rows.iter().all(|r| r["chosen"].as_str() == Some("liked") && r["rejected"].as_str() != Some("liked"))
    );
    assert!(rows.iter().any(|r| r["rejected"].as_str() == Some("hated")), "{rows:?}");
    assert!(rows.iter().all(|r| r["exported_at_ms"].as_u64().is_some_and(|t| t > 0)), "stamped with now");
    let mut parquet = a.get(&format!("{base}/v1/export?file=parquet")).call().expect("export parquet");
    assert_eq!(parquet.status().as_u16(), 200);
    let bytes = parquet.body_mut().read_to_vec().expect("body");
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "a whole Parquet file");
    let (code, field) = get(&a, &format!("{base}/v1/export?format=sft"), None).error(400);
    assert_eq!((code.as_str(), field.as_deref()), ("invalid_query", Some("format")));
}
