//! `tidal ingest` and `tidal demo`: NDJSON in, acks counted, with a progress bar.
//!
//! A line that does not parse or validate stops the ingest with its line number; the batch
//! it belongs to is not written, earlier batches are. Lines that carry an idempotency key or
//! SeqNo make a re-run resumable: what was already written is acknowledged as a duplicate.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use tidal::options::Durability;
use tidal::{Db, Error, Options, PendingWrite, Signal};

/// The sample signals `tidal demo` ingests.
const SAMPLE: &str = include_str!("../samples/signals.ndjson");

#[derive(Args)]
pub struct IngestArgs {
    /// NDJSON file, one signal per line; `-` reads standard input.
    file: PathBuf,
    #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
    data_dir: PathBuf,
    /// Shards for a new store (an existing store keeps its count).
    #[arg(long)]
    shards: Option<u32>,
    /// Signals per write batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// fsync (default), none, or interval:MS.
    #[arg(long, default_value = "fsync", value_parser = parse_durability)]
    durability: Durability,
}

pub fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "fsync" => Ok(Durability::Fsync),
        "none" => Ok(Durability::None),
        other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) => Ok(Durability::Interval(std::time::Duration::from_millis(ms))),
            _ => Err(format!("`{other}`: expected fsync, none or interval:MS")),
        },
    }
}

/// Counts of one ingest.
#[derive(Debug, Default)]
pub struct Ingested {
    pub lines: u64,
    pub written: u64,
    pub duplicates: u64,
}

pub fn run(args: &IngestArgs) -> Result<()> {
    let options = Options { shards: args.shards, durability: args.durability, ..Options::default() };
    let db = crate::open_with_progress(&args.data_dir, options)?;
    let (reader, len): (Box<dyn Read>, u64) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    let bar = progress_bar(len);
    let counts = ingest(&db, BufReader::new(bar.wrap_read(reader)), args.batch.max(1));
    bar.finish_and_clear();
    let counts = counts?;
    println!(
        "ingested {} lines into {}: {} written, {} duplicates",
        counts.lines,
        args.data_dir.display(),
        counts.written,
        counts.duplicates
    );
    db.close().context("closing the store")?;
    Ok(())
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = if len > 0 { indicatif::ProgressBar::new(len) } else { indicatif::ProgressBar::new_spinner() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Reads NDJSON lines and writes them in batches of `batch`, keeping one batch in flight
/// while the next is parsed (the store commits one while we read the other).
pub fn ingest(db: &Db, reader: impl BufRead, batch: usize) -> Result<Ingested> {
    let mut counts = Ingested::default();
    let mut pending: Vec<Signal> = Vec::with_capacity(batch);
    let mut in_flight: Option<(u64, PendingWrite)> = None;
    let mut first_line = 1u64;
    for (index, line) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Signal>(&line);
        let signal = match parsed {
            Ok(signal) => signal,
            Err(e) => {
                settle(in_flight.take(), &mut counts)?;
                let written_before = if pending.is_empty() { number } else { first_line };
                bail!("line {number}: not a valid signal: {e} (lines before {written_before} were written)");
            }
        };
        if pending.is_empty() {
            first_line = number;
        }
        pending.push(signal);
        counts.lines += 1;
        if pending.len() == batch {
            let submitted =
                submit(db, std::mem::take(&mut pending), first_line, &mut in_flight, &mut counts)?;
            settle(in_flight.replace((first_line, submitted)), &mut counts)?;
        }
    }
    if !pending.is_empty() {
        let submitted = submit(db, pending, first_line, &mut in_flight, &mut counts)?;
        settle(in_flight.replace((first_line, submitted)), &mut counts)?;
    }
    settle(in_flight, &mut counts)?;
    Ok(counts)
}

/// Validates and enqueues a batch; on a bad signal, lets the batch in flight finish first.
fn submit(
    db: &Db,
    signals: Vec<Signal>,
    first_line: u64,
    in_flight: &mut Option<(u64, PendingWrite)>,
    counts: &mut Ingested,
) -> Result<PendingWrite> {
    match db.submit(signals) {
        Ok(pending) => Ok(pending),
        Err(Error::InvalidSignal { index, field, reason }) => {
            settle(in_flight.take(), counts)?;
            bail!(
                "line {}: field `{field}`: {reason} (this batch was not written)",
                first_line + index as u64
            )
        }
        Err(e) => {
            settle(in_flight.take(), counts)?;
            Err(e).context(format!("writing the batch that starts at line {first_line}"))
        }
    }
}

/// Waits for a batch in flight and counts its acks.
fn settle(in_flight: Option<(u64, PendingWrite)>, counts: &mut Ingested) -> Result<()> {
    let Some((first_line, pending)) = in_flight else {
        return Ok(());
    };
    let acks =
        pending.wait().with_context(|| format!("writing the batch that starts at line {first_line}"))?;
    for ack in acks {
        if ack.duplicate {
            counts.duplicates += 1;
        } else {
            counts.written += 1;
        }
    }
    Ok(())
}

pub fn demo(data_dir: &Path) -> Result<()> {
    let db = crate::open_with_progress(data_dir, Options::default())?;
    let counts = ingest(&db, SAMPLE.as_bytes(), 500)?;
    println!(
        "Tidal demo: {} sample signals into {} ({} new, {} already there: re-runs are exactly-once)",
        counts.lines,
        data_dir.display(),
        counts.written,
        counts.duplicates
    );
    for stats in db.stats() {
        println!(
            "  shard {}: seq {}, {} items, {} users, {} sessions",
            stats.shard, stats.applied_seq, stats.items, stats.users, stats.sessions
        );
    }
    if let Some(view) = db.item("article-1") {
        let kinds: Vec<String> = view.state.kinds().map(|(k, n, _)| format!("{k}={n}")).collect();
        println!("  item article-1: {}", kinds.join(", "));
    }
    if let Some(user) = db.user("user-1") {
        println!("  user-1 hard negatives: {:?}", user.hard_negatives);
    }
    println!("Also: tidal wal inspect {0} | tidal item article-2 --data-dir {0}", data_dir.display());
    db.close()?;
    Ok(())
}
