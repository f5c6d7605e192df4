//! A real three-process cluster over TCP on loopback: `tidal serve --node N --cluster FILE`.
//!
//! Under a steady writer: quorum and leader acks, a follower killed with SIGKILL and
//! restarted (it catches up and its digest equals the leader's), read-your-writes through a
//! follower with the ack's epoch token, a token from no history refused, and writes to a
//! follower answered with 421 naming the leader. Every acknowledged signal is then present
//! exactly once on every node (Jepsen's set check: nothing lost, nothing duplicated). A
//! follower down while the leader's retention drops the log it needs is caught up by a
//! snapshot install.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    id: u32,
    api: String,
    child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_cluster(dir: &Path) -> (PathBuf, Vec<(u32, String)>) {
    write_cluster_with(dir, "")
}

/// A three-node cluster file; `extra` adds top-level keys.
fn write_cluster_with(dir: &Path, extra: &str) -> (PathBuf, Vec<(u32, String)>) {
    let mut text = String::from(
        "cluster_id = \"test\"\nsecret = \"a-test-secret-of-24-bytes\"\nshards = 1\nreplication_factor = 3\ncreated_ms = 1764633600000\n",
    );
    text.push_str(extra);
    let mut apis = Vec::new();
    for id in 1..=3 {
        let api = format!("127.0.0.1:{}", free_port());
        text.push_str(&format!(
            "[[nodes]]\nid = {id}\nreplication = \"127.0.0.1:{}\"\napi = \"{api}\"\n",
            free_port()
        ));
        apis.push((id, api));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    (path, apis)
}

fn spawn(dir: &Path, cluster: &Path, id: u32) -> Child {
    spawn_with(dir, cluster, id, &[])
}

fn spawn_with(dir: &Path, cluster: &Path, id: u32, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(["serve", "--node", &id.to_string(), "--cluster"])
        .arg(cluster)
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tidal serve --node")
}

fn agent() -> ureq::Agent {
    common::agent(Duration::from_secs(20))
}

fn get(base: &str, path: &str) -> (u16, Value) {
    match agent().get(&format!("http://{base}{path}")).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    match agent().post(&format!("http://{base}{path}")).send_json(body) {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

/// SIGKILL, and reap: the process is gone (its directory lock with it) when this returns.
fn sigkill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A write marked as forwarded already: a follower must not forward it again.
fn post_forwarded(base: &str, body: &Value) -> (u16, Value) {
    let request = agent().post(&format!("http://{base}/v1/signals")).header("x-tidal-forwarded", "1");
    match request.send_json(body) {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shard0(status: &Value) -> Value {
    status["shards"][0].clone()
}

fn digest(base: &str) -> Value {
    get(base, "/v1/cluster/status").1["digests"].clone()
}

#[test]
fn three_processes_replicate_over_tcp_through_a_follower_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, apis) = write_cluster(dir.path());
    let mut nodes: Vec<Node> = apis
        .iter()
        .map(|(id, api)| Node { id: *id, api: api.clone(), child: Some(spawn(dir.path(), &cluster, *id)) })
        .collect();
    let leader = nodes[0].api.clone();
    eventually("node 1 leads", 60, || shard0(&get(&leader, "/v1/cluster/status").1)["role"] == "leader");

    // A steady writer: batches of 20 with quorum acks; it records every acked id.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, leader) = (acked.clone(), stop.clone(), leader.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..20).map(|i| format!("s{}", n * 20 + i)).collect();
                let body: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"user": format!("u{}", n % 9), "item": id, "kind": "like"}))
                    .collect();
                let ack = if n % 4 == 3 { "leader" } else { "quorum" };
                let (status, _) = post(&leader, &format!("/v1/signals?ack={ack}"), &Value::Array(body));
                if status == 200 {
                    acked.lock().unwrap().extend(ids);
                }
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(800));

    // A write to a follower is forwarded to the leader; one that was forwarded already (or
    // that cannot be) is refused with 421 naming the leader.
    let (status, body) =
        post(&nodes[1].api, "/v1/signals", &json!([{"user": "x", "item": "fwd", "kind": "like"}]));
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].as_str().unwrap().contains('@'), "{body}");
    let (status, body) = post_forwarded(&nodes[1].api, &json!([{"user": "x", "item": "x", "kind": "like"}]));
    assert_eq!(status, 421, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&leader), "{body}");

    // Read-your-writes through a follower with the ack's token (it carries the epoch).
    let (status, ack) =
        post(&leader, "/v1/signals", &json!([{"user": "ryw", "item": "ryw-item", "kind": "click"}]));
    assert_eq!(status, 200, "{ack}");
    let token = ack["token"].as_str().unwrap().to_string();
    assert!(token.contains('@'), "a cluster token names its epoch: {token}");
    let (status, item) = get(&nodes[2].api, &format!("/v1/items/ryw-item?min_seq={token}&wait_ms=5000"));
    assert_eq!(status, 200, "{item}");
    let (status, body) =
        get(&nodes[2].api, &format!("/v1/items/ryw-item?min_seq={}", token.replace("@1", "@7")));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("token_not_in_history")), "{body}");

    // SIGKILL a follower mid-stream; the cluster keeps acknowledging with two of three.
    let before = acked.lock().unwrap().len();
    sigkill(nodes[2].child.take().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(acked.lock().unwrap().len() > before + 20, "quorum writes go on with a follower down");
    nodes[2].child = Some(spawn(dir.path(), &cluster, 3));
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Everyone converges on the leader's log; digests agree.
    let target = digest(&leader)[0]["applied_seq"].as_u64().unwrap();
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(60);
        while shard0(&get(&node.api, "/v1/cluster/status").1)["applied"].as_u64() < Some(target) {
            if Instant::now() > deadline {
                for n in &nodes {
                    eprintln!("node {}: {}", n.id, get(&n.api, "/v1/cluster/status").1);
                }
                panic!("node {} did not apply the leader's log through {target}", node.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let reference = digest(&leader);
    for node in &nodes[1..] {
        eventually("equal digests", 30, || digest(&node.api) == reference);
    }
    // The set check, on the node that was killed: every acked signal exactly once.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 200, "only {} signals acknowledged", acked.len());
    for id in acked.iter().step_by(7) {
        let (status, item) = get(&nodes[2].api, &format!("/v1/items/{id}"));
        assert_eq!(status, 200, "{id}: {item}");
        assert_eq!(item["kinds"]["like"]["count"], 1, "{id}: {item}");
    }
    // The leader learns its followers' positions from their acks, a moment after they apply.
    eventually("the leader sees no lag", 30, || {
        let status = get(&leader, "/v1/cluster/status").1;
        shard0(&status)["followers"].as_array().is_some_and(|f| f.iter().all(|f| f["lag_records"] == 0))
    });
}

/// The leader is killed with SIGKILL and restarted: it recovers (new epoch, learns the
/// followers' logs) before it takes writes again, and nothing acknowledged is lost. Then
/// `tidal cluster promote` moves leadership to node 2 and the old leader follows.
#[test]
fn a_killed_leader_recovers_and_promotion_moves_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, apis) = write_cluster(dir.path());
    let mut nodes: Vec<Node> = apis
        .iter()
        .map(|(id, api)| Node { id: *id, api: api.clone(), child: Some(spawn(dir.path(), &cluster, *id)) })
        .collect();
    let leader = nodes[0].api.clone();
    eventually("node 1 leads", 60, || shard0(&get(&leader, "/v1/cluster/status").1)["role"] == "leader");
    let mut acked = Vec::new();
    let write_some = |base: &str, from: u64, n: u64, acked: &mut Vec<String>| {
        for k in from..from + n {
            let id = format!("k{k}");
            let (status, _) = post(
                base,
                "/v1/signals",
                &json!([{"user": format!("u{}", k % 5), "item": id, "kind": "like"}]),
            );
            if status == 200 {
                acked.push(id);
            }
        }
    };
    write_some(&leader, 0, 60, &mut acked);
    assert_eq!(acked.len(), 60);

    sigkill(nodes[0].child.take().unwrap());
    nodes[0].child = Some(spawn(dir.path(), &cluster, 1));
    eventually("the restarted leader serves again", 60, || {
        let s = shard0(&get(&leader, "/v1/cluster/status").1);
        s["role"] == "leader" && s["epoch"].as_u64() >= Some(2)
    });
    write_some(&leader, 60, 40, &mut acked);
    assert_eq!(acked.len(), 100, "the recovered leader takes writes");

    // Promotion with the command an operator uses.
    let out = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(["cluster", "promote", "0", "2", "--cluster"])
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_leader = nodes[1].api.clone();
    eventually("node 2 leads", 60, || shard0(&get(&new_leader, "/v1/cluster/status").1)["role"] == "leader");
    eventually("node 1 follows", 60, || shard0(&get(&leader, "/v1/cluster/status").1)["role"] == "follower");
    write_some(&new_leader, 100, 40, &mut acked);
    assert_eq!(acked.len(), 140);
    let (status, body) = post_forwarded(&leader, &json!([{"user": "z", "item": "z", "kind": "like"}]));
    assert_eq!(status, 421, "{body}");

    let target = digest(&new_leader)[0]["applied_seq"].as_u64().unwrap();
    for node in &nodes {
        eventually("every replica caught up", 60, || {
            digest(&node.api)[0]["applied_seq"].as_u64() >= Some(target)
        });
    }
    let reference = digest(&new_leader);
    for node in &nodes {
        eventually("equal digests", 30, || digest(&node.api) == reference);
        for id in &acked {
            let (status, item) = get(&node.api, &format!("/v1/items/{id}"));
            assert_eq!(
                (status, &item["kinds"]["like"]["count"]),
                (200, &json!(1)),
                "node {} {id}: {item}",
                node.id
            );
        }
    }
    // The status table names the new leader.
    let out = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(["cluster", "status", "--cluster"])
        .arg(&cluster)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("shard 0: leader node 2"), "{table}");
}

/// Small segments, frequent snapshots, no archive and a small hold: a follower down for more
/// signals than the leader ships ahead to a silent follower (its window, here 2,000 records,
/// which the transport queues for the peer) is behind what the leader keeps and must be
/// caught up by a snapshot.
const SMALL_RETENTION: [(&str, &str); 4] = [
    ("TIDAL_WAL_ARCHIVE", "false"),
    ("TIDAL_SEGMENT_BYTES_MAX", "16384"),
    ("TIDAL_SNAPSHOT_EVERY_SIGNALS", "2000"),
    ("TIDAL_WAL_HOLD_BYTES_MAX", "32768"),
];

/// Writes `batches` requests of `BATCH` signals, quorum-acked, from batch number `from`.
fn write_batches(base: &str, from: u64, batches: u64, acked: &mut Vec<String>) {
    const BATCH: u64 = 500;
    for b in from..from + batches {
        let ids: Vec<String> = (0..BATCH).map(|i| format!("r{}", b * BATCH + i)).collect();
        let body: Vec<Value> = ids
            .iter()
            .map(|id| json!({"user": format!("u{}", b % 11), "item": id, "kind": "like"}))
            .collect();
        let (status, answer) = post(base, "/v1/signals?ack=quorum", &Value::Array(body));
        assert_eq!(status, 200, "{answer}");
        acked.extend(ids);
    }
}

/// The first seq of the oldest WAL segment in `wal_dir` (names are `sSSSS-FIRSTSEQ.wal`).
fn oldest_segment(wal_dir: &Path) -> u64 {
    std::fs::read_dir(wal_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.split_once('-')?.1.parse().ok()
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn a_follower_behind_the_leaders_retention_is_caught_up_by_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, apis) = write_cluster_with(dir.path(), "window_records = 2000\n");
    let mut nodes: Vec<Node> = apis
        .iter()
        .map(|(id, api)| Node {
            id: *id,
            api: api.clone(),
            child: Some(spawn_with(dir.path(), &cluster, *id, &SMALL_RETENTION)),
        })
        .collect();
    let leader = nodes[0].api.clone();
    eventually("node 1 leads", 60, || shard0(&get(&leader, "/v1/cluster/status").1)["role"] == "leader");
    let mut acked = Vec::new();
    write_batches(&leader, 0, 2, &mut acked);
    eventually("node 3 has the first writes", 30, || {
        shard0(&get(&nodes[2].api, "/v1/cluster/status").1)["applied"].as_u64() >= Some(1000)
    });

    sigkill(nodes[2].child.take().unwrap());
    write_batches(&leader, 2, 24, &mut acked);
    // The leader's log no longer holds what node 3 needs after the window shipped ahead.
    let needed = 1000 + 2000 + 1;
    eventually("the leader retires what node 3 needs", 60, || {
        oldest_segment(&dir.path().join("node-1/wal")) > needed
    });
    nodes[2].child = Some(spawn_with(dir.path(), &cluster, 3, &SMALL_RETENTION));
    write_batches(&leader, 26, 4, &mut acked);

    let target = digest(&leader)[0]["applied_seq"].as_u64().unwrap();
    eventually("node 3 caught up", 90, || digest(&nodes[2].api)[0]["applied_seq"].as_u64() >= Some(target));
    let reference = digest(&leader);
    for node in &nodes[1..] {
        eventually("equal digests", 30, || digest(&node.api) == reference);
    }
    let lead = shard0(&get(&leader, "/v1/cluster/status").1);
    let caught = shard0(&get(&nodes[2].api, "/v1/cluster/status").1);
    assert!(lead["stats"]["snapshot_installs"].as_u64() >= Some(1), "{lead}");
    assert!(lead["stats"]["snapshot_bytes_shipped"].as_u64() > Some(0), "{lead}");
    assert!(caught["stats"]["snapshot_installs"].as_u64() >= Some(1), "{caught}");
    // The set check on the node that was caught up: every acked signal exactly once.
    for id in acked.iter().step_by(37) {
        let (status, item) = get(&nodes[2].api, &format!("/v1/items/{id}"));
        assert_eq!((status, &item["kinds"]["like"]["count"]), (200, &json!(1)), "{id}: {item}");
    }
}
