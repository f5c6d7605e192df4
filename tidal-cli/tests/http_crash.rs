//! Crash test over HTTP: a real `tidal serve` (fsync durability) takes writes from several
//! concurrent HTTP clients and is killed with SIGKILL at random moments, [`CYCLES`] times.
//!
//! Clients write batches of clicks, one request at a time each; a 200 answer is an ack. A
//! request cut off by the kill is "unknown": it may or may not have been written. After each
//! restart, per item: `acked <= count <= acked + unknown` (every acked signal present, nothing
//! extra); then the unknown batches are retried with the same keys and every count must equal
//! exactly the signals sent (each present once). Every signal has a unique idempotency key;
//! client 0's signals also carry session SeqNos, so a retry meets the session rules too.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CYCLES: usize = 20;
const CLIENTS: usize = 4;
/// Items each client spreads its clicks over.
const ITEMS_PER_CLIENT: u64 = 6;
/// Largest batch; session batches stay within the acks a session keeps for retries (8).
const BATCH_MAX: u64 = 8;

fn start(dir: &Path) -> (Child, String) {
    common::start_serve(dir, &["--shards", "4"], &[])
}

/// What one client sent and what it knows about it.
struct Client {
    id: usize,
    next: u64,
    /// Per item: signals acknowledged.
    acked: BTreeMap<String, i64>,
    /// The batch in flight when the server died, if any.
    unknown: Option<Vec<Value>>,
    requests: u64,
    /// Retried signals the store answered as duplicates (written before the kill, unacked).
    retried_duplicates: u64,
}

impl Client {
    fn new(id: usize) -> Client {
        Client { id, next: 0, acked: BTreeMap::new(), unknown: None, requests: 0, retried_duplicates: 0 }
    }

    fn item(&self, n: u64) -> String {
        format!("c{}-i{}", self.id, n % ITEMS_PER_CLIENT)
    }

    fn signal(&self, n: u64) -> Value {
        if self.id == 0 {
            let key = format!("c0-k{n}");
            json!({ "user": "c0-user", "session": "main", "session_seq": n + 1, "item": self.item(n), "kind": "click", "idempotency_key": key })
        } else {
            let user = format!("c{}-u{}", self.id, n % 5);
            json!({ "user": user, "item": self.item(n), "kind": "click", "idempotency_key": format!("c{}-k{n}", self.id) })
        }
    }

    fn items(&self) -> Vec<String> {
        (0..ITEMS_PER_CLIENT.min(self.next)).map(|n| self.item(n)).collect()
    }

    /// Sends one batch; Ok(Some(duplicates)) when acked, Ok(None) when the transport failed.
    fn send(&mut self, agent: &ureq::Agent, base: &str, batch: Vec<Value>) -> Result<Option<u64>, String> {
        self.requests += 1;
        let response = agent.post(format!("{base}/v1/signals")).send_json(&batch);
        let answer = response.and_then(|mut r| {
            let status = r.status().as_u16();
            let mut text = String::new();
            r.body_mut().as_reader().read_to_string(&mut text).map_err(ureq::Error::Io)?;
            Ok((status, text))
        });
        let Ok((status, text)) = answer else {
            self.unknown = Some(batch);
            return Ok(None);
        };
        if status != 200 {
            return Err(format!("client {}: status {status}: {text}", self.id));
        }
        let acks: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if acks["acks"].as_array().map(Vec::len) != Some(batch.len()) || !acks["token"].is_string() {
            return Err(format!("client {}: bad answer {text}", self.id));
        }
        for signal in &batch {
            *self.acked.entry(signal["item"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        self.unknown = None;
        let acks = acks["acks"].as_array().map_or(&[][..], Vec::as_slice);
        Ok(Some(acks.iter().filter(|a| a["duplicate"] == true).count() as u64))
    }

    /// Writes batches until the server goes away.
    fn run(mut self, base: String, seed: u64) -> Result<Client, String> {
        let agent = common::agent(Duration::from_secs(20));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        loop {
            let len = rng.random_range(1..=BATCH_MAX);
            let batch: Vec<Value> = (self.next..self.next + len).map(|n| self.signal(n)).collect();
            self.next += len;
            if self.send(&agent, &base, batch)?.is_none() {
                return Ok(self);
            }
        }
    }
}

/// Clicks the store holds on `item` (0 when it has none).
fn count(agent: &ureq::Agent, base: &str, item: &str) -> i64 {
    let mut response = agent.get(format!("{base}/v1/items/{item}")).call().expect("read item");
    let status = response.status().as_u16();
    let body: Value = response.body_mut().read_json().expect("JSON");
    match status {
        200 => body["kinds"]["click"]["count"].as_i64().unwrap_or(0),
        404 => 0,
        other => panic!("GET /v1/items/{item}: {other} {body}"),
    }
}

/// After a restart: acked signals all there and nothing beyond the unknown batch; then the
/// unknown batch is retried and every signal sent must be there exactly once.
fn check_and_retry(base: &str, clients: &mut [Client], cycle: usize) {
    let agent = common::agent(Duration::from_secs(20));
    for client in clients.iter_mut() {
        let mut unknown: BTreeMap<String, i64> = BTreeMap::new();
        for signal in client.unknown.iter().flatten() {
            *unknown.entry(signal["item"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        for item in client.items() {
            let (acked, maybe) =
                (client.acked.get(&item).copied().unwrap_or(0), unknown.get(&item).copied().unwrap_or(0));
            let have = count(&agent, base, &item);
            assert!(have >= acked, "cycle {cycle}: {item} lost acked signals: {have} < {acked}");
            assert!(
                have <= acked + maybe,
                "cycle {cycle}: {item} has {have} > {acked} acked + {maybe} unknown"
            );
        }
        if let Some(batch) = client.unknown.take() {
            let duplicates = client.send(&agent, base, batch).expect("retry answered");
            client.retried_duplicates += duplicates.unwrap_or_else(|| panic!("cycle {cycle}: retry failed"));
        }
        for item in client.items() {
            let acked = client.acked.get(&item).copied().unwrap_or(0);
            assert_eq!(
                count(&agent, base, &item),
                acked,
                "cycle {cycle}: {item} after retry, not exactly once"
            );
        }
    }
}

#[test]
fn acknowledged_http_writes_survive_sigkill_exactly_once() {
    let seed = std::env::var("TIDAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64));
    println!("seed {seed} (set TIDAL_CRASH_SEED to replay the kill timing)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut clients: Vec<Client> = (0..CLIENTS).map(Client::new).collect();
    let started = Instant::now();
    let mut cycles_with_acks = 0;
    for cycle in 0..CYCLES {
        let (mut child, base) = start(dir.path());
        check_and_retry(&base, &mut clients, cycle);
        let acked_before: i64 = clients.iter().flat_map(|c| c.acked.values()).sum();
        let threads: Vec<_> = std::mem::take(&mut clients)
            .into_iter()
            .map(|client| {
                let (base, seed) = (base.clone(), rng.random());
                std::thread::spawn(move || client.run(base, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.random_range(60..400)));
        child.kill().expect("SIGKILL tidal serve");
        child.wait().expect("reap tidal serve");
        for thread in threads {
            clients
                .push(thread.join().expect("client thread").unwrap_or_else(|e| panic!("cycle {cycle}: {e}")));
        }
        let acked_after: i64 = clients.iter().flat_map(|c| c.acked.values()).sum();
        cycles_with_acks += usize::from(acked_after > acked_before);
    }
    let (mut child, base) = start(dir.path());
    check_and_retry(&base, &mut clients, CYCLES);
    child.kill().expect("kill");
    let _ = child.wait();
    let total: i64 = clients.iter().flat_map(|c| c.acked.values()).sum();
    let requests: u64 = clients.iter().map(|c| c.requests).sum();
    let duplicates: u64 = clients.iter().map(|c| c.retried_duplicates).sum();
    println!(
        "{CYCLES} kills, {requests} requests, {total} signals acked, {duplicates} retried signals were \
         already written, {:?}",
        started.elapsed()
    );
    assert!(cycles_with_acks * 2 >= CYCLES, "too few cycles wrote anything ({cycles_with_acks} of {CYCLES})");
}
