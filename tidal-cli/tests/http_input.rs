//! Bad input at the HTTP boundary, against a real `tidal serve`: the cases an independent
//! run found (positional signals, malformed `min_seq`, over-long paths, byte limits stated
//! as characters), each answered 4xx with the JSON error body and writing nothing; and a
//! property-based run of schemathesis against the served `/openapi.json`, so this class of
//! bug is found by machine: no 5xx, every status documented, every body as its schema says.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::start;

/// Status, content type and body of one exchange (4xx/5xx included).
fn call(request: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> (u16, String, String) {
    finish(request.call())
}

fn finish(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String, String) {
    let mut response = response.expect("HTTP exchange");
    let status = response.status().as_u16();
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut text = String::new();
    response.body_mut().as_reader().read_to_string(&mut text).expect("read body");
    (status, ct, text)
}

fn post_json(a: &ureq::Agent, base: &str, body: &str) -> (u16, String, String) {
    finish(a.post(format!("{base}/v1/signals")).header("Content-Type", "application/json").send(body))
}

/// Asserts the JSON error answer `{error: {code, message, field}}`; returns (code, field).
fn error(reply: &(u16, String, String), status: u16) -> (String, Option<String>) {
    let (got, ct, text) = reply;
    assert_eq!(*got, status, "{text}");
    assert!(ct.starts_with("application/json"), "content type `{ct}`: {text}");
    let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e["field"].is_string() || e["field"].is_null(), "{body}");
    (e["code"].as_str().unwrap_or("").to_owned(), e["field"].as_str().map(str::to_owned))
}

/// Sum of applied seqs over shards: what the store has written.
fn written(a: &ureq::Agent, base: &str) -> u64 {
    let (status, _, text) = call(a.get(format!("{base}/v1/stats")));
    assert_eq!(status, 200, "{text}");
    let stats: Value = serde_json::from_str(&text).expect("stats JSON");
    stats["seqs"].as_array().expect("seqs").iter().filter_map(Value::as_u64).sum()
}

#[test]
fn positional_signals_are_refused_and_write_nothing() {
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let ok = r#"{"user":"u","item":"pos-ok","kind":"click"}"#;
    let positional = r#"["u",null,null,"pos-1","click"]"#;
    let cases = [
        (format!("[{positional}]"), "signals[0]"),
        (format!("[{ok},{positional}]"), "signals[1]"),
        (positional.to_owned(), "signals[0]"),
    ];
    for (body, field) in cases {
        assert_eq!(error(&post_json(&a, base, &body), 400), ("invalid_signal".into(), Some(field.into())));
    }
    let ndjson = format!("{ok}\n{positional}\n");
    let reply = finish(
        a.post(format!("{base}/v1/signals")).header("Content-Type", "application/x-ndjson").send(&ndjson),
    );
    assert_eq!(error(&reply, 400), ("invalid_signal".into(), Some("signals[1]".into())));
    assert_eq!(written(&a, base), 0, "a refused request wrote something");
    for item in ["pos-ok", "pos-1"] {
        assert_eq!(call(a.get(format!("{base}/v1/items/{item}"))).0, 404, "{item} was written");
    }
    assert_eq!(post_json(&a, base, &format!("[{ok}]")).0, 200, "the object form still works");
}

#[test]
fn malformed_min_seq_is_invalid_token_on_every_read() {
    let server = start(&["--shards", "2"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    assert_eq!(post_json(&a, base, r#"{"user":"u","item":"i","kind":"click","session":"s"}"#).0, 200);
    let reads =
        ["/v1/items/i", "/v1/top", "/v1/users/u", "/v1/users/u/sessions/s", "/v1/users/u/hard-negatives"];
    let reads = reads.iter().copied().chain(["/v1/stats"]);
    let tokens = ["", "0:1,", ",0:1", "0:1,,1:1", "0:", ":1", "0:1:2", "-1:2", "zzz", "%20", "9:1"];
    for path in reads {
        for token in tokens {
            let reply = call(a.get(format!("{base}{path}?min_seq={token}")));
            let expected = ("invalid_token".to_owned(), Some("min_seq".to_owned()));
            assert_eq!(error(&reply, 400), expected, "{path}?min_seq={token}");
        }
        assert_eq!(call(a.get(format!("{base}{path}?min_seq=0:0,1:0"))).0, 200, "{path} with a good token");
    }
}

/// Sends raw bytes on a fresh connection; returns the status and the answer's body.
fn raw(base: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let ct = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    let length =
        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok());
    assert_eq!(length, Some(body.len()), "content-length and body disagree: {head}");
    (status, ct, body.to_owned())
}

#[test]
fn hypers_own_answers_carry_the_json_error() {
    let server = start(&[]);
    let base = server.base.as_str();
    let long = format!("GET /v1/items/{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(70_000));
    let reply = raw(base, long.as_bytes());
    assert_eq!(error(&reply, 414), ("uri_too_long".into(), Some("path".into())));
    let bad_header = raw(base, b"GET /healthz HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n");
    assert_eq!(error(&bad_header, 400).0, "bad_request");
    // Just under hyper's limit the router answers (404 JSON for an unknown item).
    let near =
        format!("GET /v1/items/{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "x".repeat(60_000));
    assert_eq!(error(&raw(base, near.as_bytes()), 404).0, "not_found");
    let ok = raw(base, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((ok.0, ok.2.as_str()), (200, r#"{"status":"ok"}"#), "other answers pass unchanged");
}

/// Walks `v` and collects every (JSON pointer, value) of `key`.
fn find_key<'a>(v: &'a Value, key: &str, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == key {
                    out.push((at.clone(), child));
                }
                find_key(child, key, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_key(child, key, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn openapi_states_length_limits_in_bytes_as_the_server_counts() {
    use tidal::signal::{ATTR_KEY_BYTES_MAX, ATTR_VALUE_BYTES_MAX, ID_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX};
    let doc: Value = serde_json::from_str(tidal_server::handlers::OPENAPI_JSON).expect("openapi.json");
    let mut max_lengths = Vec::new();
    find_key(&doc, "maxLength", String::new(), &mut max_lengths);
    assert_eq!(max_lengths, vec![], "maxLength counts characters; the server counts bytes");
    let signal = &doc["components"]["schemas"]["Signal"]["properties"];
    let limit = |v: &Value| v["x-tidal-bytes-max"].as_u64().map(|n| n as usize);
    for field in ["user", "item", "session", "context", "source"] {
        assert_eq!(limit(&signal[field]), Some(ID_BYTES_MAX), "{field}");
        let text = signal[field]["description"].as_str().unwrap_or("");
        assert!(text.contains(&format!("{ID_BYTES_MAX} bytes")), "{field}: {text}");
    }
    assert_eq!(limit(&signal["idempotency_key"]), Some(IDEMPOTENCY_KEY_BYTES_MAX));
    assert_eq!(limit(&signal["attrs"]["additionalProperties"]), Some(ATTR_VALUE_BYTES_MAX));
    assert_eq!(limit(&signal["attrs"]["propertyNames"]), Some(ATTR_KEY_BYTES_MAX));
    assert_eq!(limit(&doc["components"]["parameters"]["Id"]["schema"]), Some(ID_BYTES_MAX));

    // And the server counts bytes: 2-byte characters hit the limit at half the characters.
    let server = start(&[]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    let fits = "é".repeat(ID_BYTES_MAX / 2);
    let over = "é".repeat(ID_BYTES_MAX / 2 + 1);
    let body = |item: &str| json!({"user": "u", "item": item, "kind": "click"}).to_string();
    assert_eq!(post_json(&a, base, &body(&fits)).0, 200, "{} bytes fit", fits.len());
    let reply = post_json(&a, base, &body(&over));
    assert_eq!(error(&reply, 400), ("invalid_signal".into(), Some("signals[0].item".into())));
    assert!(reply.2.contains("bytes"), "{}", reply.2);
    assert_eq!(written(&a, base), 1);
}

#[test]
fn every_documented_response_has_a_body_schema() {
    // Conformance checks mean something only where a body has a schema to conform to.
    let doc: Value = serde_json::from_str(tidal_server::handlers::OPENAPI_JSON).expect("openapi.json");
    let shared = &doc["components"]["responses"];
    let mut checked = 0;
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let response = match response["$ref"].as_str() {
                    Some(name) => &shared[name.rsplit('/').next().unwrap_or("")],
                    None => response,
                };
                let content = response["content"].as_object();
                let typed =
                    content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m["schema"].is_object()));
                assert!(typed, "{method} {path} {status} has no body schema");
                checked += 1;
            }
        }
    }
    assert!(checked >= tidal_server::routes().len() * 2, "only {checked} responses checked");
}

/// Runs `schemathesis run URL/openapi.json ARGS` in `cwd` (its example database stays off);
/// returns whether it passed and everything it printed. Fails, never skips, when
/// schemathesis is missing: `scripts/test-all.sh` installs it.
fn schemathesis(base: &str, args: &[&str], cwd: &std::path::Path) -> (bool, String) {
    let checks =
        "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance";
    let output = Command::new("schemathesis")
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--checks", checks, "--seed", "20261201", "--generation-database", "none"])
        .args(["--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "20"])
        .args(["--suppress-health-check", "all", "--no-color", "--no-shrink"])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("running schemathesis ({e}); install it: python3 -m pip install schemathesis")
        });
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn schemathesis_finds_no_5xx_no_undocumented_status_and_no_off_schema_body() {
    let server = start(&["--shards", "4"]);
    let (a, base) = (common::agent(Duration::from_secs(30)), server.base.as_str());
    // The documented `min_seq` example is `0:12,3:40`: reach it, so reads that use it
    // answer at once instead of a (documented, but 5xx) 503 `not_yet`.
    let seed: Vec<Value> =
        (0..400).map(|n| json!({"user": format!("seed-{n}"), "item": "seed", "kind": "click"})).collect();
    assert_eq!(post_json(&a, base, &Value::Array(seed).to_string()).0, 200);
    let (_, _, stats) = call(a.get(format!("{base}/v1/stats?min_seq=0:12,3:40&wait_ms=0")));
    assert!(stats.contains("\"seqs\""), "the example token is not yet applied: {stats}");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let started = Instant::now();

    // Only invalid ingest requests: every one must be refused and nothing written.
    let before = written(&a, base);
    let negative = ["--mode", "negative", "--include-path", "/v1/signals", "--max-examples", "60"];
    let (passed, output) = schemathesis(base, &negative, scratch.path());
    println!("{output}");
    assert!(passed, "schemathesis (negative ingest) failed:\n{output}");
    assert!(output.contains("Tested: 1\n"), "the ingest operation was not tested:\n{output}");
    assert_eq!(written(&a, base), before, "an invalid request wrote something:\n{output}");

    // Valid and invalid requests on every operation.
    let (passed, output) = schemathesis(base, &["--mode", "all", "--max-examples", "25"], scratch.path());
    println!("{output}");
    assert!(passed, "schemathesis (all operations) failed:\n{output}");
    // schemathesis leaves out the operation that serves the schema itself (/openapi.json).
    let operations = tidal_server::routes().len() - 1;
    let every = format!("Selected: {operations}/{operations}\n  Tested: {operations}\n");
    assert!(output.contains(&every), "not every operation was tested:\n{output}");
    assert!(written(&a, base) > before, "no generated signal was ever accepted:\n{output}");
    assert!(started.elapsed() < Duration::from_secs(120), "too slow: {:?}", started.elapsed());
}
