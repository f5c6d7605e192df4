//! A partition between real hosts: three `tidal serve --node` processes, each in its own
//! network namespace (veth pairs on a bridge), cut apart with `iptables -j DROP`.
//!
//! The leader is isolated from its followers. Quorum writes to it are not acknowledged;
//! leader-mode writes are (they exist only on it). Node 2 is promoted and takes quorum writes
//! with node 3. When the partition heals, the old leader learns of the new epoch, steps down,
//! sets its leader-only writes aside (kept in `divergent/`, not applied) and follows; then
//! every quorum-acknowledged signal is on every node exactly once and the digests agree.
//!
//! Needs root, iproute2 and iptables (`scripts/install-netns-tools.sh`; CI runs as root). A
//! developer without root may set `TIDAL_SKIP_NETNS=1` to skip it; CI never does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Runs a command and insists that it worked.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Three namespaces `<tag>-1..3` with 10.<net>.0.1..3 on a bridge, the test at 10.<net>.0.254.
struct Hosts {
    tag: String,
    net: u32,
}

impl Hosts {
    fn new() -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts { tag: format!("tdl{}", pid % 100_000), net: 100 + pid % 100 };
        let bridge = hosts.bridge();
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&["ip", "addr", "add", &format!("10.{}.0.254/24", hosts.net), "dev", &bridge]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        for i in 1..=3 {
            let (ns, outer, inner) =
                (hosts.ns(i), format!("{}o{i}", hosts.tag), format!("{}i{i}", hosts.tag));
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "master", &bridge]);
            sh(&["ip", "link", "set", &outer, "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", hosts.ip(i)),
                "dev",
                &inner,
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        hosts
    }
    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    fn ns(&self, i: u32) -> String {
        format!("{}-{i}", self.tag)
    }
    fn ip(&self, i: u32) -> String {
        format!("10.{}.0.{i}", self.net)
    }
    /// Drops everything between node `i` and the other nodes (both ways); the test host
    /// still reaches every API.
    fn isolate(&self, i: u32) {
        for j in (1..=3).filter(|&j| j != i) {
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &self.ip(j),
                "-j",
                "DROP",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                &self.ip(j),
                "-j",
                "DROP",
            ]);
        }
    }
    fn heal(&self, i: u32) {
        sh(&["ip", "netns", "exec", &self.ns(i), "iptables", "-F"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=3 {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).status();
    }
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_cluster(dir: &Path, hosts: &Hosts) -> PathBuf {
    let mut text = String::from(
        "cluster_id = \"netns\"\nsecret = \"a-test-secret-of-24-bytes\"\nshards = 1\nreplication_factor = 3\ncreated_ms = 1764633600000\n",
    );
    for i in 1..=3 {
        let ip = hosts.ip(i);
        text.push_str(&format!("[[nodes]]\nid = {i}\nreplication = \"{ip}:7401\"\napi = \"{ip}:7301\"\n"));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(hosts: &Hosts, dir: &Path, cluster: &Path, i: u32) -> Node {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts.ns(i),
            env!("CARGO_BIN_EXE_tidal"),
            "serve",
            "--node",
            &i.to_string(),
            "--cluster",
        ])
        .arg(cluster)
        .arg("--data-dir")
        .arg(dir.join(format!("node-{i}")))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tidal serve in a namespace");
    Node(child)
}

fn call(method: &str, url: &str, body: Option<&Value>, timeout: Duration) -> (u16, Value) {
    let agent = common::agent(timeout);
    let result = match body {
        Some(b) => agent.post(url).send_json(b),
        None if method == "POST" => agent.post(url).send_empty(),
        None => agent.get(url).call(),
    };
    match result {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn status(hosts: &Hosts, i: u32) -> Value {
    call("GET", &format!("http://{}:7301/v1/cluster/status", hosts.ip(i)), None, Duration::from_secs(5)).1
}

fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(hosts: &Hosts, i: u32, id: &str, ack: &str, timeout: Duration) -> u16 {
    let url = format!("http://{}:7301/v1/signals?ack={ack}", hosts.ip(i));
    call("POST", &url, Some(&json!([{"user": format!("u-{id}"), "item": id, "kind": "like"}])), timeout).0
}

#[test]
fn a_partitioned_leader_is_deposed_and_its_unreplicated_writes_are_set_aside() {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if !root && std::env::var_os("TIDAL_SKIP_NETNS").is_some() {
        eprintln!("skipped: not root and TIDAL_SKIP_NETNS is set");
        return;
    }
    assert!(
        root,
        "the partition test needs root (network namespaces); set TIDAL_SKIP_NETNS=1 to skip it by hand"
    );
    let hosts = Hosts::new();
    let dir = tempfile::tempdir().unwrap();
    let cluster = write_cluster(dir.path(), &hosts);
    let _nodes: Vec<Node> = (1..=3).map(|i| spawn(&hosts, dir.path(), &cluster, i)).collect();
    eventually("node 1 leads", 60, || status(&hosts, 1)["shards"][0]["role"] == "leader");
    let mut acked = Vec::new();
    for k in 0..30 {
        let id = format!("before-{k}");
        assert_eq!(write(&hosts, 1, &id, "quorum", Duration::from_secs(10)), 200);
        acked.push(id);
    }

    hosts.isolate(1);
    // A quorum write to the isolated leader is never acknowledged.
    let quorum_on_minority = write(&hosts, 1, "minority-quorum", "quorum", Duration::from_secs(2));
    assert_ne!(quorum_on_minority, 200, "a leader cut off from every follower acknowledged a quorum write");
    // Leader-mode writes are acknowledged by it alone: they will be set aside.
    let leader_only: Vec<String> = (0..5).map(|k| format!("leader-only-{k}")).collect();
    for id in &leader_only {
        assert_eq!(write(&hosts, 1, id, "leader", Duration::from_secs(5)), 200);
    }
    let promote = format!("http://{}:7301/v1/cluster/shards/0/promote", hosts.ip(2));
    assert_eq!(call("POST", &promote, None, Duration::from_secs(10)).0, 200);
    eventually("node 2 leads on the majority side", 60, || {
        status(&hosts, 2)["shards"][0]["role"] == "leader"
    });
    for k in 0..30 {
        let id = format!("after-{k}");
        assert_eq!(write(&hosts, 2, &id, "quorum", Duration::from_secs(10)), 200, "{id}");
        acked.push(id);
    }

    hosts.heal(1);
    eventually("the old leader follows", 60, || {
        let s = status(&hosts, 1);
        s["shards"][0]["role"] == "follower" && s["shards"][0]["set_aside_records"].as_u64() >= Some(5)
    });
    let target = status(&hosts, 2)["digests"][0]["applied_seq"].as_u64().unwrap();
    for i in 1..=3 {
        eventually("caught up", 60, || {
            status(&hosts, i)["digests"][0]["applied_seq"].as_u64() >= Some(target)
        });
    }
    let reference = status(&hosts, 2)["digests"].clone();
    for i in 1..=3 {
        eventually("equal digests", 30, || status(&hosts, i)["digests"] == reference);
        for id in &acked {
            let url = format!("http://{}:7301/v1/items/{id}", hosts.ip(i));
            let (code, item) = call("GET", &url, None, Duration::from_secs(5));
            assert_eq!((code, &item["kinds"]["like"]["count"]), (200, &json!(1)), "node {i} {id}: {item}");
        }
        for id in leader_only.iter().chain(std::iter::once(&"minority-quorum".to_string())) {
            let url = format!("http://{}:7301/v1/items/{id}", hosts.ip(i));
            assert_eq!(
                call("GET", &url, None, Duration::from_secs(5)).0,
                404,
                "node {i}: {id} was set aside"
            );
        }
    }
    let divergent = std::fs::read_dir(dir.path().join("node-1/divergent")).unwrap().count();
    assert!(divergent >= 1, "the set-aside records are kept");
}
