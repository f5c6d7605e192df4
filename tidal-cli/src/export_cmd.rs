//! `tidal export`: a data directory's signal history as DPO, KTO or reward rows, in JSON
//! Lines or Parquet (by the output's extension), with a progress bar of signals read.
//!
//! The command does not open the store: it reads `MANIFEST.json` and each shard's archive
//! and WAL read-only through [`tidal_export::export_dir`], takes no lock and runs no
//! recovery. So it works on a store no process has open, and also beside a running
//! `tidal serve` (each shard is then cut where the first pass found its end). The engine
//! logic lives in the library; this file only maps flags to [`ExportOptions`].

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use tidal_export::{
    ExportFormat, ExportOptions, ExportProgress, Hooks, IMPLICIT_WINDOW_MS_DEFAULT,
    PAIRS_PER_CONTEXT_MAX_DEFAULT, SESSION_GAP_MS_DEFAULT, TEST_FRACTION_DEFAULT, export_dir,
};

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, env = "TIDAL_DATA_DIR", default_value = "tidal-data")]
    pub data_dir: PathBuf,
    /// Rows to write: dpo, kto or reward.
    #[arg(long, value_parser = parse_format)]
    pub format: ExportFormat,
    /// Output file; `.jsonl` (or `.ndjson`) or `.parquet` picks the file format.
    #[arg(long)]
    pub output: PathBuf,
    /// Share of (user, session)s in the test split.
    #[arg(long, default_value_t = TEST_FRACTION_DEFAULT)]
    pub test_fraction: f64,
    /// Seed of the split hash.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Key contexts by (user, session, context id) instead of (user, session).
    #[arg(long)]
    pub by_context_id: bool,
    /// An impression not engaged with within this many ms is an implicit negative.
    #[arg(long, default_value_t = IMPLICIT_WINDOW_MS_DEFAULT)]
    pub implicit_window_ms: u64,
    /// A context closes after this many ms without a signal.
    #[arg(long, default_value_t = SESSION_GAP_MS_DEFAULT)]
    pub session_gap_ms: u64,
    /// Most pairs per context (also caps chosen and rejected items).
    #[arg(long, default_value_t = PAIRS_PER_CONTEXT_MAX_DEFAULT)]
    pub pairs_per_context_max: usize,
    /// Value of the `exported_at_ms` column (default: now); fix it for reproducible files.
    #[arg(long)]
    pub exported_at_ms: Option<u64>,
}

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    match s {
        "dpo" => Ok(ExportFormat::Dpo),
        "kto" => Ok(ExportFormat::Kto),
        "reward" => Ok(ExportFormat::Reward),
        other => Err(format!("`{other}`: expected dpo, kto or reward")),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn run(args: &ExportArgs) -> Result<()> {
    if !args.data_dir.join(tidal::manifest::MANIFEST_FILE).exists() {
        bail!("{} holds no Tidal store", args.data_dir.display());
    }
    let options = ExportOptions {
        format: args.format,
        by_context_id: args.by_context_id,
        implicit_window_ms: args.implicit_window_ms,
        session_gap_ms: args.session_gap_ms,
        pairs_per_context_max: args.pairs_per_context_max,
        test_fraction: args.test_fraction,
        seed: args.seed,
        exported_at_ms: args.exported_at_ms.unwrap_or_else(now_ms),
        ..ExportOptions::default()
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {human_pos} signals read ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let progress = |p: ExportProgress| {
        let what = if p.pass == 1 { "collecting negatives" } else { "writing rows" };
        bar.set_message(format!("shard {}/{} {what}", p.shard + 1, p.shards));
        bar.set_position(p.signals_read);
    };
    let hooks = Hooks { progress: Some(&progress), ..Hooks::default() };
    let report = export_dir(&args.data_dir, &args.output, &options, &hooks);
    bar.finish_and_clear();
    let report = report.with_context(|| format!("exporting {}", args.data_dir.display()))?;
    for shard in &report.shards {
        if let Some((from, to)) = shard.hole {
            eprintln!("warning: shard {}: seqs {from}..{to} are missing from the history", shard.shard);
        }
    }
    println!(
        "exported {} {} rows ({} train, {} test) from {} contexts to {} in {} ms",
        report.rows,
        report.format.as_str(),
        report.rows_train,
        report.rows_test,
        report.contexts,
        args.output.display(),
        report.elapsed_ms
    );
    eprintln!("{}", serde_json::to_string_pretty(&report).context("encoding the report")?);
    Ok(())
}
