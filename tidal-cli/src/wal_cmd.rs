//! `tidal wal inspect` and `tidal wal verify`: read-only looks at a data directory's WAL and
//! snapshots. Neither repairs anything (opening the store does that).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use tidal::manifest::{MANIFEST_FILE, Manifest};
use tidal::shard::snapshot;
use tidal::wal::vfs::StdVfs;
use tidal::wal::{Repair, ScanReport, WalError, list_segments, scan_shard_records};

#[derive(Subcommand)]
pub enum WalCommand {
    /// Print every segment (seq range, batches, records, bytes, HLC range) and snapshot.
    Inspect {
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every batch and record, and every snapshot; exit 1 if anything is unsound.
    Verify { data_dir: PathBuf },
}

pub fn run(command: WalCommand) -> Result<ExitCode> {
    match command {
        WalCommand::Inspect { data_dir, json } => inspect(&data_dir, json),
        WalCommand::Verify { data_dir } => verify(&data_dir),
    }
}

fn manifest(data_dir: &Path) -> Result<Manifest> {
    let path = data_dir.join(MANIFEST_FILE);
    let bytes =
        std::fs::read(&path).with_context(|| format!("{} holds no Tidal store", data_dir.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

/// Scans one shard's WAL read-only, from its first segment on.
fn scan(wal_dir: &Path, shard: u32) -> Result<ScanReport, WalError> {
    let first =
        list_segments(&StdVfs, wal_dir)?.into_iter().find(|s| s.shard == shard).map_or(1, |s| s.first_seq);
    scan_shard_records::<WalError>(&StdVfs, wal_dir, shard, first, Repair::ReadOnly, |_, _, _| Ok(()))
}

fn inspect(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let manifest = manifest(data_dir)?;
    let wal_dir = data_dir.join("wal");
    let mut shards = Vec::new();
    for shard in 0..manifest.shards {
        let report = scan(&wal_dir, shard).with_context(|| format!("shard {shard}"))?;
        let snapshots = snapshot::list(&StdVfs, &data_dir.join("snapshots"), shard)?;
        shards.push((shard, report, snapshots));
    }
    if json {
        let value: Vec<_> = shards
            .iter()
            .map(|(shard, r, snaps)| {
                serde_json::json!({
                    "shard": shard, "next_seq": r.next_seq, "batches": r.batches, "records": r.records,
                    "bytes": r.bytes, "torn_tail": r.torn_tail.as_ref().map(|t| format!("{t:?}")),
                    "segments": r.segments.iter().map(|s| serde_json::json!({
                        "path": s.path, "first_seq": s.first_seq, "next_seq": s.next_seq, "batches": s.batches,
                        "records": s.records, "bytes": s.bytes, "v1_batches": s.header_versions[0],
                        "v2_batches": s.header_versions[1],
                        "v3_batches": s.header_versions[2], "hlc_min": s.hlc_min.0, "hlc_max": s.hlc_max.0,
                    })).collect::<Vec<_>>(),
                    "snapshots": snaps.iter().map(|(seq, p)| serde_json::json!({"seq": seq, "path": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "manifest": manifest, "shards": value }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {} shards, node {}", data_dir.display(), manifest.shards, manifest.node_id);
    for (shard, report, snapshots) in &shards {
        match report.records {
            0 => println!("shard {shard}: empty"),
            _ => println!(
                "shard {shard}: seq {}..{} | {} batches, {} records, {} bytes",
                report.segments.first().map_or(1, |s| s.first_seq),
                report.next_seq.saturating_sub(1),
                report.batches,
                report.records,
                report.bytes
            ),
        }
        for s in &report.segments {
            let name = s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            println!(
                "  {name}  seq {}..{}  {} batches (v1 {}, v2 {}, v3 {})  {} records  {} bytes  hlc {}..{}",
                s.first_seq,
                s.next_seq.saturating_sub(1),
                s.batches,
                s.header_versions[0],
                s.header_versions[1],
                s.header_versions[2],
                s.records,
                s.bytes,
                s.hlc_min,
                s.hlc_max
            );
        }
        for (seq, path) in snapshots {
            println!("  snapshot at seq {seq}: {}", path.display());
        }
        if let Some(torn) = &report.torn_tail {
            println!(
                "  torn tail: {} at offset {} ({} bytes): {}",
                torn.segment.display(),
                torn.offset,
                torn.bytes_dropped,
                torn.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(data_dir: &Path) -> Result<ExitCode> {
    let manifest = manifest(data_dir)?;
    let wal_dir = data_dir.join("wal");
    // Snapshots must carry exactly the parameters the store pinned.
    let params = manifest.params();
    let mut problems = Vec::new();
    let mut records = 0;
    for shard in 0..manifest.shards {
        match scan(&wal_dir, shard) {
            Ok(report) => {
                records += report.records;
                if let Some(t) = report.torn_tail {
                    problems.push(format!(
                        "shard {shard}: torn tail in {} at offset {} ({} bytes; opening the store truncates it): {}",
                        t.segment.display(),
                        t.offset,
                        t.bytes_dropped,
                        t.reason
                    ));
                }
            }
            Err(e) => problems.push(format!("shard {shard}: {e}")),
        }
        for (_, path) in snapshot::list(&StdVfs, &data_dir.join("snapshots"), shard)? {
            let checked = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| snapshot::decode(&b, shard, &params).map(|_| ()).map_err(|e| e.to_string()));
            if let Err(reason) = checked {
                problems.push(format!("snapshot {}: {reason}", path.display()));
            }
        }
    }
    if problems.is_empty() {
        println!(
            "ok: {} shards, {records} records, every batch, record and snapshot checks out",
            manifest.shards
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
