//! `tidal bench http`: durable ingest over the network, Tidal vs Redis, in the same run.
//!
//! Starts a `tidal serve` child (fsync durability) and, when `redis-server` is installed, a
//! Redis child with `appendonly yes` and `appendfsync always` (every write fsynced before the
//! reply), both on loopback with scratch directories. The same concurrent clients then send
//! the same signals: Tidal as JSON over HTTP (`POST /v1/signals`), Redis as pipelined
//! `XADD` (the signal) + `HINCRBY` (the item aggregate) per signal. Two shapes: batches of
//! `--batch` signals per request/pipeline, and one signal per request. Ratios are what to
//! read: the machine is shared.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable ingest over loopback: tidal serve vs redis-server (AOF, appendfsync always).
    Http(HttpArgs),
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
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Http(args) => http(&args),
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(args: &HttpArgs) -> Result<()> {
    let scratch = tempfile_dir("tidal-bench-http")?;
    let (server, addr) = start_tidal(&scratch.join("tidal"), args.shards)?;
    let redis = if args.no_redis { None } else { start_redis(&scratch.join("redis"))? };
    println!(
        "durable ingest over loopback, {} clients, {} s per shape, tidal with {} shards",
        args.clients, args.seconds, args.shards
    );
    for batch in [args.batch, 1] {
        let tidal = measure(args, |n| post_signals(&addr, n, batch), batch)?;
        let line = format!("batch {batch:>5}: tidal {tidal:>10.0} signals/s");
        match &redis {
            Some((_, port)) => {
                let redis_rate = measure(args, |n| redis_pipeline(*port, n, batch), batch)?;
                println!("{line}   redis {redis_rate:>10.0} signals/s   ratio {:>5.2}x", tidal / redis_rate);
            }
            None => println!("{line}   (redis-server not found: apt-get install redis-server)"),
        }
    }
    drop(server);
    drop(redis);
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}

fn tempfile_dir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `send` from every client for the configured time; returns signals per second.
fn measure(args: &HttpArgs, send: impl Fn(u64) -> Result<()> + Sync, per_call: usize) -> Result<f64> {
    let done = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.clients as u64)
            .map(|client| {
                let (send, done) = (&send, &done);
                scope.spawn(move || -> Result<()> {
                    let mut call = 0u64;
                    while Instant::now() < until {
                        send((client << 40) | (call * per_call as u64))?;
                        done.fetch_add(per_call as u64, Ordering::Relaxed);
                        call += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| anyhow::anyhow!("a client panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn signal_json(n: u64) -> serde_json::Value {
    serde_json::json!({
        "user": format!("user-{}", n % 10_007), "item": format!("item-{}", n % 100_003),
        "kind": "click", "session": format!("sess-{}", n % 10_007), "value": 1.0,
    })
}

fn post_signals(addr: &str, first: u64, count: usize) -> Result<()> {
    thread_local! {
        // One client per bench thread: keep-alive connections, as the Redis side has.
        static CLIENT: std::cell::OnceCell<tidal_client::Client> = const { std::cell::OnceCell::new() };
    }
    let body: Vec<serde_json::Value> = (first..first + count as u64).map(signal_json).collect();
    CLIENT.with(|cell| {
        let client = match cell.get() {
            Some(client) => client,
            None => {
                let client = tidal_client::Client::new(&format!("http://{addr}"), None)?;
                cell.get_or_init(|| client)
            }
        };
        client.ingest(&body).map(|_| ()).context("POST /v1/signals")
    })
}

fn start_tidal(dir: &std::path::Path, shards: u32) -> Result<(Reaped, String)> {
    let exe = std::env::current_exe().context("locating the tidal binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "--durability", "fsync", "--listen", "127.0.0.1:0", "--shards", &shards.to_string()])
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
