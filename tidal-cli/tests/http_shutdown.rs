//! Graceful shutdown of a real `tidal serve`: on SIGTERM (or SIGINT) it stops accepting
//! connections, lets the requests in flight finish, snapshots, closes the store (fsync) and
//! exits 0. Reopening the store in-process then finds every acknowledged signal, and a
//! snapshot of every shard that covers the whole WAL (nothing left to replay). A request
//! that outlasts `--shutdown-grace-ms` does not hold the shutdown up.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidal::{Db, Options, SignalKind};

/// Starts `tidal serve` on a free loopback port; returns the child and `http://ADDR`.
fn start(dir: &Path, flags: &[&str]) -> (Child, String) {
    common::start_serve(dir, flags, &[])
}

/// Status and body of a request, or the transport error.
fn exchange(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, Value), String> {
    let mut response = response.map_err(|e| e.to_string())?;
    let mut text = String::new();
    response.body_mut().as_reader().read_to_string(&mut text).map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok((response.status().as_u16(), value))
}

fn signal(process: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &process.id().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tidal serve did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `batches` batches of 10 clicks on items `item-0..item-9`; returns the acks' count.
fn write(base: &str, batches: usize) -> usize {
    let a = common::agent(Duration::from_secs(30));
    let mut acked = 0;
    for b in 0..batches {
        let body: Vec<Value> = (0..10)
            .map(|n| json!({ "user": format!("user-{b}-{n}"), "item": format!("item-{n}"), "kind": "click" }))
            .collect();
        let (status, answer) =
            exchange(a.post(format!("{base}/v1/signals")).send_json(&body)).expect("write");
        assert_eq!(status, 200, "{answer}");
        acked += answer["acks"].as_array().map_or(0, Vec::len);
    }
    acked
}

/// True once the server reports exactly one API request in flight.
fn in_flight_is_one(base: &str) -> bool {
    let response = common::agent(Duration::from_secs(30)).get(format!("{base}/metrics")).call();
    let text = response.ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default();
    text.contains("tidal_http_requests_in_flight 1\n")
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

#[test]
fn sigterm_finishes_requests_in_flight_snapshots_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = start(dir.path(), &["--shards", "3"]);
    assert_eq!(write(&base, 20), 200);
    // A read that waits for a seq the store will never reach: in flight during shutdown.
    let slow_url = format!("{base}/v1/stats?min_seq=0:1000000&wait_ms=1500");
    let slow =
        std::thread::spawn(move || exchange(common::agent(Duration::from_secs(30)).get(&slow_url).call()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_flight_is_one(&base) {
        assert!(Instant::now() < deadline, "the slow read never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().expect("try_wait").is_none(), "exited before the request in flight finished");
    assert!(TcpStream::connect(addr_of(&base)).is_err(), "still accepting connections after SIGTERM");
    let (status, body) = slow.join().expect("slow reader").expect("the request in flight was cut off");
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("not_yet")), "{body}");
    let exit = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "{exit:?}");

    let db = Db::open(dir.path(), Options::default()).expect("reopen after shutdown");
    for n in 0..10 {
        let item = db.item(&format!("item-{n}")).expect("item survived");
        assert_eq!(item.state.count(&SignalKind::Click), 20, "item-{n}");
    }
    let report = db.recovery_report();
    assert_eq!(report.records_replayed(), 0, "the shutdown snapshot covers the whole WAL");
    let applied = db.applied_seqs();
    assert_eq!(applied.iter().sum::<u64>(), 200);
    let snapshots: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
        .expect("snapshot directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for (shard, seq) in applied.iter().enumerate() {
        let name = format!("snap-s{shard:04}-{seq:020}.snap");
        assert!(snapshots.contains(&name), "no {name} in {snapshots:?}");
    }
    db.close().expect("close");
}

#[test]
fn sigint_also_stops_cleanly_and_a_restart_serves_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = start(dir.path(), &[]);
    assert_eq!(write(&base, 3), 30);
    signal(&child, "INT");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)).code(), Some(0));
    let (mut child, base) = start(dir.path(), &[]);
    let (status, item) =
        exchange(common::agent(Duration::from_secs(30)).get(format!("{base}/v1/items/item-3")).call())
            .expect("read");
    assert_eq!((status, item["kinds"]["click"]["count"].as_i64()), (200, Some(3)), "{item}");
    let (status, ready) =
        exchange(common::agent(Duration::from_secs(30)).get(format!("{base}/readyz")).call())
            .expect("readyz");
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn the_grace_period_bounds_how_long_shutdown_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = start(dir.path(), &["--shutdown-grace-ms", "300"]);
    assert_eq!(write(&base, 1), 10);
    let slow_url = format!("{base}/v1/stats?min_seq=0:1000000&wait_ms=20000");
    let _slow =
        std::thread::spawn(move || exchange(common::agent(Duration::from_secs(30)).get(&slow_url).call()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_flight_is_one(&base) {
        assert!(Instant::now() < deadline, "the slow read never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)).code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(8), "waited {:?} for a 20 s read", started.elapsed());
    let db = Db::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(db.applied_seqs().iter().sum::<u64>(), 10);
    assert_eq!(db.recovery_report().records_replayed(), 0, "snapshotted despite the cut-off read");
    db.close().expect("close");
}
