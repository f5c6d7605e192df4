//! Hidden `tidal crash-writer`: the child process of the kill -9 crash tests.
//!
//! It writes fsync-acknowledged batches forever and prints one line per ack, flushed:
//! `ACK <first_n> <last_n> <session_seq>`: signals `first_n..=last_n` (item `i{n}`,
//! idempotency key `k{n}`) and the session signal with that SeqNo are durable. Started again
//! with `--from`, it retries from there with the same keys, so a retry of a signal that was
//! durable but not acknowledged must not count twice.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tidal::{Db, Options, Signal, SignalKind};

/// User of the sequenced session signals.
pub const SESSION_USER: &str = "session-user";
/// Session of the sequenced session signals.
pub const SESSION: &str = "main";

#[derive(Args)]
pub struct CrashWriterArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// First signal number to write.
    #[arg(long, default_value_t = 0)]
    from: u64,
    #[arg(long, default_value_t = 64)]
    batch_max: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: &CrashWriterArgs) -> Result<()> {
    let db = Db::open(&args.data_dir, Options { shards: Some(4), ..Options::default() })?;
    let mut session_seq = db.session_hwm(SESSION_USER, SESSION).unwrap_or(0);
    let mut rng = args.seed.max(1);
    let mut n = args.from;
    let stdout = std::io::stdout();
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let count = 1 + rng % args.batch_max.max(1);
        let mut batch: Vec<Signal> = (n..n + count).map(signal).collect();
        session_seq += 1;
        let mut sequenced = Signal::new(SESSION_USER, format!("sess-{session_seq}"), SignalKind::Click);
        sequenced.session = Some(SESSION.into());
        sequenced.session_seq = Some(session_seq);
        batch.push(sequenced);
        db.write_batch(batch)?;
        let mut out = stdout.lock();
        writeln!(out, "ACK {} {} {}", n, n + count - 1, session_seq)?;
        out.flush()?;
        n += count;
    }
}

fn signal(n: u64) -> Signal {
    let mut s = Signal::new(format!("u{}", n % 97), format!("i{n}"), SignalKind::Like);
    s.idempotency_key = Some(format!("k{n}"));
    s.value = (n % 5) as f64;
    s
}
