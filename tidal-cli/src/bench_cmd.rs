//! `tidal bench http`: durable ingest over the network, Tidal vs Redis, in the same run.
//!
//! Starts a `tidal serve` child (fsync durability unless `--durability` says otherwise) and, when `redis-server` is installed, a
//! Redis child with `appendonly yes` and `appendfsync always` (every write fsynced before the
//! reply), both on loopback with scratch directories. The same concurrent clients then send
//! the same signals: Tidal as JSON over HTTP (`POST /v1/signals`), Redis as pipelined
//! `XADD` (the signal) + `HINCRBY` (the item aggregate) per signal. Two shapes: batches of
//! `--batch` signals per request/pipeline, and one signal per request. Each line gives the
//! rate and the p50/p99 latency of one request (one pipeline for Redis). Ratios are what to
//! read: the machine is shared.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable ingest over loopback: tidal serve vs redis-server (AOF, appendfsync always).
    Http(HttpArgs),
    /// Replication over 3 `tidal serve` processes: follower lag at a steady rate, and
    /// cluster ingest (leader and quorum acks) next to a single node.
    Cluster(crate::bench_cluster::ClusterArgs),
}

#[derive(Args)]
pub struct HttpArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Signals per request (and per Redis pipeline) in the batched shape.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Skip Redis even if it is installed.
    #[arg(long)]
    no_redis: bool,
    /// Shards of the Tidal store (each shard fsyncs its own WAL).
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Durability of the Tidal store: `fsync` (the comparison with Redis), or `none` /
    /// `interval:MS` to see what the HTTP path costs without the disk.
    #[arg(long, default_value = "fsync")]
    durability: String,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Http(args) => http(&args),
        BenchCommand::Cluster(args) => crate::bench_cluster::run(&args),
    }
}

/// A child process killed when dropped.
pub(crate) struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(args: &HttpArgs) -> Result<()> {
    let scratch = tempfile_dir("tidal-bench-http")?;
    let (server, addr) = start_tidal(&scratch.join("tidal"), &args.durability, args.shards)?;
    let redis = if args.no_redis { None } else { start_redis(&scratch.join("redis"))? };
    println!(
        "durable ingest over loopback, {} clients, {} s per shape, tidal with {} shards, durability {}",
        args.clients, args.seconds, args.shards, args.durability
    );
    for batch in [args.batch, 1] {
        let tidal =
            measure(args.clients, args.seconds, |n| post_signals(&addr, "", n, batch).map(drop), batch)?;
        let line = format!("batch {batch:>5}: tidal {tidal}");
        match &redis {
            Some((_, port)) => {
                let redis = measure(args.clients, args.seconds, |n| redis_pipeline(*port, n, batch), batch)?;
                println!("{line}   redis {redis}   ratio {:>5.2}x", tidal.rate / redis.rate);
            }
            None if args.no_redis => println!("{line}"),
            None => println!("{line}   (redis-server not found: apt-get install redis-server)"),
        }
    }
    drop(server);
    drop(redis);
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}

pub(crate) fn tempfile_dir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// What one shape measured: signals per second and request latencies.
pub(crate) struct Measured {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(f, "{:>9.0} signals/s (p50 {:>6.2} ms, p99 {:>7.2} ms)", self.rate, ms(self.p50), ms(self.p99))
    }
}

/// Runs `send` from every client for `seconds`; returns the rate and latencies.
pub(crate) fn measure(
    clients: usize,
    seconds: u64,
    send: impl Fn(u64) -> Result<()> + Sync,
    per_call: usize,
) -> Result<Measured> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| -> Result<Vec<Duration>> {
        let workers: Vec<_> = (0..clients as u64)
            .map(|client| {
                let send = &send;
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut took = Vec::new();
                    while Instant::now() < until {
                        let call = took.len() as u64;
                        let sent = Instant::now();
                        send((client << 40) | (call * per_call as u64))?;
                        took.push(sent.elapsed());
                    }
                    Ok(took)
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.join().map_err(|_| anyhow::anyhow!("a client panicked"))??);
        }
        Ok(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
    };
    let rate = (latencies.len() * per_call) as f64 / elapsed;
    Ok(Measured {
        rate,
        p50: at(0.50).copied().unwrap_or_default(),
        p99: at(0.99).copied().unwrap_or_default(),
    })
}

/// The JSON array of `count` signals from `first`, formatted directly (a `serde_json::Value`
/// per signal cost the client more CPU than the server's parse).
fn signals_body(first: u64, count: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut body = String::with_capacity(count * 96 + 2);
    body.push('[');
    for n in first..first + count as u64 {
        if n != first {
            body.push(',');
        }
        let (user, item) = (n % 10_007, n % 100_003);
        let _ = write!(
            body,
            r#"{{"user":"user-{user}","item":"item-{item}","kind":"click","session":"sess-{user}","value":1.0}}"#
        );
    }
    body.push(']');
    body.into_bytes()
}

/// One `POST /v1/signals{query}` on this thread's keep-alive connection to `addr`, written
/// and read by hand
/// as the Redis side writes RESP: the request goes out in one write and the answer is read
/// by its `Content-Length`, then checked (status 200, one ack per signal). A general client
/// (`tidal_client::Client`, ureq) costs more CPU per request than the server's whole
/// handling of it, and on a shared 2-core machine that would measure the client. Returns
/// the answer's `min_seq` token.
pub(crate) fn post_signals(addr: &str, query: &str, first: u64, count: usize) -> Result<String> {
    thread_local! {
        static CONN: std::cell::RefCell<Option<(String, BufReader<TcpStream>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let body = signals_body(first, count);
    let mut request = format!(
        "POST /v1/signals{query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    CONN.with(|cell| -> Result<String> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(to, _)| to != addr) {
            let stream = TcpStream::connect(addr).context("connecting to tidal serve")?;
            stream.set_nodelay(true)?;
            *slot = Some((addr.to_owned(), BufReader::new(stream)));
        }
        let (_, conn) = slot.as_mut().context("tidal connection")?;
        conn.get_mut().write_all(&request)?;
        let (status, answer) = read_answer(conn)?;
        if status != 200 {
            bail!("POST /v1/signals answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let answer: tidal_client::wire::IngestAnswer = serde_json::from_slice(&answer)?;
        if answer.acks.len() != count {
            bail!("{} acks for {count} signals", answer.acks.len());
        }
        Ok(answer.token)
    })
}

/// Reads one HTTP/1.1 answer framed by `Content-Length`: its status and body.
pub(crate) fn read_answer(conn: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status =
        line.get(9..12).and_then(|s| s.parse().ok()).with_context(|| format!("status line {line:?}"))?;
    let mut length = None;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            bail!("the connection closed inside an answer's head");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    let mut body = vec![0; length.context("an answer without Content-Length")?];
    conn.read_exact(&mut body)?;
    Ok((status, body))
}

pub(crate) fn start_tidal(dir: &std::path::Path, durability: &str, shards: u32) -> Result<(Reaped, String)> {
    let exe = std::env::current_exe().context("locating the tidal binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "--durability", durability, "--listen", "127.0.0.1:0"])
        .args(["--shards", &shards.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tidal serve")?;
    let stdout = child.stdout.take().context("tidal serve stdout")?;
    let child = Reaped(child);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(addr) = line.split("http://").nth(1) {
            return Ok((child, addr.trim().to_owned()));
        }
    }
    bail!("tidal serve exited before listening")
}

fn start_redis(dir: &std::path::Path) -> Result<Option<(Reaped, u16)>> {
    std::fs::create_dir_all(dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes"])
        .args(["--appendfsync", "always", "--save", "", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(child) => Reaped(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("starting redis-server"),
    };
    for _ in 0..100 {
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
            conn.write_all(b"*1\r\n$4\r\nPING\r\n")?;
            let mut reply = [0u8; 7];
            if conn.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n" {
                return Ok(Some((child, port)));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not answer PING")
}

/// One pipeline: XADD + HINCRBY per signal, then every reply read.
fn redis_pipeline(port: u16, first: u64, count: usize) -> Result<()> {
    thread_local! {
        static CONN: std::cell::RefCell<Option<BufReader<TcpStream>>> = const { std::cell::RefCell::new(None) };
    }
    let mut out = Vec::with_capacity(count * 160);
    for n in first..first + count as u64 {
        let (user, item) = (format!("user-{}", n % 10_007), format!("item-{}", n % 100_003));
        resp(
            &mut out,
            &["XADD", "signals", "*", "user", &user, "item", &item, "kind", "click", "value", "1"],
        );
        resp(&mut out, &["HINCRBY", &format!("agg:{item}"), "click", "1"]);
    }
    CONN.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(BufReader::new(TcpStream::connect(("127.0.0.1", port))?));
        }
        let conn = slot.as_mut().context("redis connection")?;
        conn.get_mut().write_all(&out)?;
        let mut line = String::new();
        for _ in 0..count * 2 {
            line.clear();
            conn.read_line(&mut line)?;
            match line.as_bytes().first() {
                Some(b'$') => {
                    // A bulk reply (the stream entry id): skip its payload line too.
                    line.clear();
                    conn.read_line(&mut line)?;
                }
                Some(b':' | b'+') => {}
                _ => bail!("redis error: {}", line.trim()),
            }
        }
        Ok(())
    })
}

fn resp(out: &mut Vec<u8>, parts: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
    }
}
