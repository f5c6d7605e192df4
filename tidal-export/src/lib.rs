//! Preference export (DESIGN §9): the store's signal history as DPO, KTO or reward rows
//! with hard negatives, in JSON Lines or Parquet. `docs/export.md` is the full reference:
//! the rules, the row schemas and the hooks.
//!
//! - **Contexts.** Signals are grouped by `(user, session)`, or `(user, session, context
//!   id)` with [`ExportOptions::by_context_id`]; `"-"` stands for a missing id. A context
//!   closes when it has been idle for `session_gap_ms` of HLC time.
//! - **Chosen** items of a context: those with a positive signal in it
//!   ([`SignalKind::is_positive`](tidal::SignalKind::is_positive)).
//! - **Hard negatives** of a user: the union over their whole history of explicit negatives
//!   ([`SignalKind::is_negative`](tidal::SignalKind::is_negative)) and implicit ones (an
//!   impression with no engagement on the item in the same context within
//!   `implicit_window_ms`), minus every item whose last positive is later than its last
//!   negative (add-wins on the positive), plus optionally [`MinedNegatives`].
//! - **Rejected** items of a context: its own negatives, then the user's other hard
//!   negatives (`history`), then mined ones; never a chosen item of the context. Each row
//!   records its `negative_source`.
//! - **Split** by a stable hash of (seed, user, session); **provenance** columns on every row.
//!
//! The export streams: each shard is read twice with [`scan_history`](tidal::history::scan_history)
//! (pass 1 builds per-user negative maps, memory ∝ distinct user-item pairs; pass 2 writes
//! rows as contexts close, memory ∝ open contexts), shards one after another, each cut at
//! the seq applied when the export started. Rows are written as they are made.
//!
//! ```no_run
//! use tidal_export::{ExportFormat, ExportOptions, Hooks, export};
//! let db = tidal::Db::open("data", tidal::Options::default())?;
//! let options = ExportOptions { format: ExportFormat::Dpo, ..ExportOptions::default() };
//! let report = export(&db, "prefs.parquet".as_ref(), &options, &Hooks::default())?;
//! println!("{} rows", report.rows);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod contexts;
mod hooks;
mod jsonl;
mod negatives;
mod parquet;
mod rows;
mod run;
pub mod stream;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use contexts::NO_ID;
pub use hooks::{
    DefaultPrompt, ExportProgress, Hooks, ItemTextProvider, MinedNegatives, PROGRESS_EVERY_SIGNALS,
    PromptBuilder, PromptContext,
};
pub use negatives::NegativeSource;
pub use rows::{ExportFormat, MARGIN_MIN, Split};

use rows::RowSink;
use run::{Exporter, Source};
use tidal::Db;
use tidal::error::{Error, ErrorKind};
use tidal::manifest::Manifest;
use tidal::score::Weights;
use tidal::wal::vfs::{StdVfs, Vfs};

/// Default for [`ExportOptions::implicit_window_ms`]: one minute.
pub const IMPLICIT_WINDOW_MS_DEFAULT: u64 = 60_000;
/// Default for [`ExportOptions::session_gap_ms`]: thirty minutes.
pub const SESSION_GAP_MS_DEFAULT: u64 = 30 * 60_000;
/// Default for [`ExportOptions::pairs_per_context_max`].
pub const PAIRS_PER_CONTEXT_MAX_DEFAULT: usize = 64;
/// Default for [`ExportOptions::history_negatives_per_context_max`].
pub const HISTORY_NEGATIVES_PER_CONTEXT_MAX_DEFAULT: usize = 16;
/// Default for [`ExportOptions::mined_negatives_per_context_max`].
pub const MINED_NEGATIVES_PER_CONTEXT_MAX_DEFAULT: usize = 8;
/// Default for [`ExportOptions::prompt_items_max`].
pub const PROMPT_ITEMS_MAX_DEFAULT: usize = 5;
/// Default for [`ExportOptions::test_fraction`].
pub const TEST_FRACTION_DEFAULT: f64 = 0.1;
/// Default for [`ExportOptions::open_contexts_max`].
pub const OPEN_CONTEXTS_MAX_DEFAULT: usize = 1_000_000;
/// Default for [`ExportOptions::context_items_max`].
pub const CONTEXT_ITEMS_MAX_DEFAULT: usize = 10_000;
/// Largest accepted `pairs_per_context_max` (and per-context caps in general).
pub const PER_CONTEXT_LIMIT: usize = 100_000;

/// What to export and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// Key contexts by (user, session, context id) instead of (user, session).
    pub by_context_id: bool,
    /// An impression with no engagement on its item in its context within this much HLC
    /// time is an implicit negative.
    pub implicit_window_ms: u64,
    /// A context closes once idle this long (HLC time); at least `implicit_window_ms`.
    pub session_gap_ms: u64,
    /// Most pairs (DPO, reward) per context; also caps chosen and rejected items (KTO rows).
    pub pairs_per_context_max: usize,
    /// Most `history` negatives added to one context.
    pub history_negatives_per_context_max: usize,
    /// Most `mined` negatives added to one context.
    pub mined_negatives_per_context_max: usize,
    /// Most earlier chosen items a prompt names.
    pub prompt_items_max: usize,
    /// Share of (user, session)s in the test split, within 0..=1.
    pub test_fraction: f64,
    /// Seed of the split hash.
    pub seed: u64,
    /// Written into every row's `exported_at_ms` (an argument so outputs are reproducible).
    pub exported_at_ms: u64,
    /// Weights of the reward margin; `None`: the store's score weights.
    pub weights: Option<Weights>,
    /// Most contexts open at once; beyond it the least recently active closes early.
    pub open_contexts_max: usize,
    /// Most distinct items tracked in one context; signals on further items are counted
    /// in [`ExportReport::items_dropped`] and otherwise ignored.
    pub context_items_max: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: ExportFormat::Dpo,
            by_context_id: false,
            implicit_window_ms: IMPLICIT_WINDOW_MS_DEFAULT,
            session_gap_ms: SESSION_GAP_MS_DEFAULT,
            pairs_per_context_max: PAIRS_PER_CONTEXT_MAX_DEFAULT,
            history_negatives_per_context_max: HISTORY_NEGATIVES_PER_CONTEXT_MAX_DEFAULT,
            mined_negatives_per_context_max: MINED_NEGATIVES_PER_CONTEXT_MAX_DEFAULT,
            prompt_items_max: PROMPT_ITEMS_MAX_DEFAULT,
            test_fraction: TEST_FRACTION_DEFAULT,
            seed: 0,
            exported_at_ms: 0,
            weights: None,
            open_contexts_max: OPEN_CONTEXTS_MAX_DEFAULT,
            context_items_max: CONTEXT_ITEMS_MAX_DEFAULT,
        }
    }
}

impl ExportOptions {
    /// Rejects options that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), ExportError> {
        let bad = |msg: String| Err(ExportError::InvalidOptions(msg));
        if !(0.0..=1.0).contains(&self.test_fraction) {
            return bad(format!("test_fraction must be within 0..=1, got {}", self.test_fraction));
        }
        if self.session_gap_ms < self.implicit_window_ms {
            return bad(format!(
                "session_gap_ms ({}) must be at least implicit_window_ms ({}): a context must stay open \
                 while its impressions can still be engaged with",
                self.session_gap_ms, self.implicit_window_ms
            ));
        }
        let caps = [
            ("pairs_per_context_max", self.pairs_per_context_max, 1),
            ("history_negatives_per_context_max", self.history_negatives_per_context_max, 0),
            ("mined_negatives_per_context_max", self.mined_negatives_per_context_max, 0),
            ("prompt_items_max", self.prompt_items_max, 0),
            ("context_items_max", self.context_items_max, 1),
        ];
        for (name, value, min) in caps {
            if !(min..=PER_CONTEXT_LIMIT).contains(&value) {
                return bad(format!("{name} must be within {min}..={PER_CONTEXT_LIMIT}, got {value}"));
            }
        }
        if self.open_contexts_max == 0 {
            return bad("open_contexts_max must be positive".into());
        }
        if self.weights.is_some_and(|w| w.0.iter().any(|x| !x.is_finite())) {
            return bad("weights must be finite".into());
        }
        Ok(())
    }
}

/// The file format of an export, chosen by the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// `.jsonl` (or `.ndjson`): one JSON object per line.
    Jsonl,
    /// `.parquet`: Apache Parquet, SNAPPY-compressed.
    Parquet,
}

impl FileFormat {
    /// The format an output path asks for by its extension.
    pub fn from_path(path: &Path) -> Result<FileFormat, ExportError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson") => Ok(FileFormat::Jsonl),
            Some("parquet") => Ok(FileFormat::Parquet),
            _ => Err(ExportError::InvalidOptions(format!(
                "output {}: the extension must be .jsonl, .ndjson or .parquet",
                path.display()
            ))),
        }
    }
}

/// Rows per negative source (rows whose `negative_source` is that source).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    pub explicit: u64,
    pub implicit: u64,
    pub history: u64,
    pub mined: u64,
}

/// What one shard contributed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardExport {
    pub shard: u32,
    /// The cut: seqs below this were exported.
    pub until_seq: u64,
    /// Seq of the first signal in the shard's history (1 when nothing was lost).
    pub first_seq: u64,
    /// Seqs `from..to` missing from the history (segments removed while archiving was off).
    pub hole: Option<(u64, u64)>,
    /// Signals read per pass.
    pub signals_read: u64,
    pub users: u64,
    /// Distinct (user, item) pairs with a positive or a negative.
    pub pairs: u64,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExportReport {
    pub format: ExportFormat,
    pub file_format: FileFormat,
    pub rows: u64,
    pub rows_train: u64,
    pub rows_test: u64,
    pub rows_by_source: SourceCounts,
    pub contexts: u64,
    pub contexts_with_rows: u64,
    /// Contexts closed early because `open_contexts_max` was reached.
    pub contexts_forced_closed: u64,
    /// Signals ignored because their context held `context_items_max` items.
    pub items_dropped: u64,
    /// Most contexts open at once (memory of pass 2 is bounded by it).
    pub open_contexts_peak: u64,
    pub shards: Vec<ShardExport>,
    pub elapsed_ms: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the store failed (damaged WAL, unreadable manifest, ...).
    #[error(transparent)]
    Store(#[from] Error),
    #[error("invalid export options: {0}")]
    InvalidOptions(String),
    /// The output could not be written.
    #[error("{op} {}: {source}", path.display())]
    Output { op: &'static str, path: PathBuf, source: std::io::Error },
    /// Writing to the output failed (the path is added by [`export`] when it knows it).
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl ExportError {
    /// The coarse class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExportError::Store(e) => e.kind(),
            ExportError::InvalidOptions(_) => ErrorKind::InvalidInput,
            _ => ErrorKind::Unavailable,
        }
    }
}

/// Exports the history of an open store to `output` (JSON Lines or Parquet by extension),
/// cut at the seqs every shard had applied when the call started; later writes are not
/// exported. The rows go to a temporary file beside `output` that replaces it only when
/// the export succeeded, so a failed export leaves no partial file.
pub fn export(
    db: &Db,
    output: &Path,
    options: &ExportOptions,
    hooks: &Hooks<'_>,
) -> Result<ExportReport, ExportError> {
    let until_seqs = db.applied_seqs().iter().map(|seq| seq.saturating_add(1)).collect();
    let source =
        Source { vfs: db.vfs(), dir: db.dir(), shards: db.manifest().shards, until_seqs: Some(until_seqs) };
    export_file(&source, output, options, options.weights.unwrap_or(db.options().score_weights), hooks)
}

/// Exports a data directory without opening it as a store: no lock, no recovery, nothing
/// modified. It reads `MANIFEST.json` and each shard's history read-only, so it may run
/// beside a process that has the store open; each shard is then cut where pass 1 found its
/// end. The margin weights are `options.weights` or [`Weights::default`].
pub fn export_dir(
    data_dir: &Path,
    output: &Path,
    options: &ExportOptions,
    hooks: &Hooks<'_>,
) -> Result<ExportReport, ExportError> {
    let vfs = StdVfs;
    let manifest = read_manifest(&vfs, data_dir)?;
    let source = Source { vfs: &vfs, dir: data_dir, shards: manifest.shards, until_seqs: None };
    export_file(&source, output, options, options.weights.unwrap_or_default(), hooks)
}

/// Like [`export`], into any writer (an HTTP response, a pipe). The writer may hold a
/// partial output if the export fails.
pub fn export_to_writer<W: Write + Send>(
    db: &Db,
    out: W,
    file_format: FileFormat,
    options: &ExportOptions,
    hooks: &Hooks<'_>,
) -> Result<ExportReport, ExportError> {
    options.validate()?;
    let until_seqs = db.applied_seqs().iter().map(|seq| seq.saturating_add(1)).collect();
    let source =
        Source { vfs: db.vfs(), dir: db.dir(), shards: db.manifest().shards, until_seqs: Some(until_seqs) };
    let weights = options.weights.unwrap_or(db.options().score_weights);
    run_export(&source, sink(out, file_format, options.format)?, file_format, options, weights, hooks)
}

/// Reads a data directory's manifest without creating or changing anything.
fn read_manifest(vfs: &dyn Vfs, dir: &Path) -> Result<Manifest, ExportError> {
    Ok(tidal::manifest::read(vfs, dir)?)
}

fn sink<'w, W: Write + Send + 'w>(
    out: W,
    file_format: FileFormat,
    format: ExportFormat,
) -> Result<Box<dyn RowSink + 'w>, ExportError> {
    Ok(match file_format {
        FileFormat::Jsonl => Box::new(jsonl::JsonlSink::new(out, format)),
        FileFormat::Parquet => Box::new(parquet::ParquetSink::new(out, format)?),
    })
}

/// Size of the output file's write buffer.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

/// Writes to `<output>.partial`, then renames it over `output`. The output is a file the
/// caller names outside the store, so it is written with `std::fs`, not the store's `Vfs`.
fn export_file(
    source: &Source<'_>,
    output: &Path,
    options: &ExportOptions,
    weights: Weights,
    hooks: &Hooks<'_>,
) -> Result<ExportReport, ExportError> {
    options.validate()?;
    let file_format = FileFormat::from_path(output)?;
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial).map_err(output_error("create", &partial))?;
    let result = sink(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, &file), file_format, options.format)
        .and_then(|sink| run_export(source, sink, file_format, options, weights, hooks))
        .and_then(|report| {
            file.sync_all().map_err(output_error("fsync", &partial))?;
            std::fs::rename(&partial, output).map_err(output_error("rename into place", output))?;
            Ok(report)
        });
    if result.is_err() {
        // Best effort: the export already failed; a leftover `.partial` is harmless.
        let _ = std::fs::remove_file(&partial);
    }
    result.map_err(|e| match e {
        ExportError::Io(source) => ExportError::Output { op: "write", path: partial, source },
        other => other,
    })
}

fn output_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |source| ExportError::Output { op, path, source }
}

fn run_export(
    source: &Source<'_>,
    mut sink: Box<dyn RowSink + '_>,
    file_format: FileFormat,
    options: &ExportOptions,
    weights: Weights,
    hooks: &Hooks<'_>,
) -> Result<ExportReport, ExportError> {
    let started = Instant::now();
    let mut report = ExportReport {
        format: options.format,
        file_format,
        rows: 0,
        rows_train: 0,
        rows_test: 0,
        rows_by_source: SourceCounts::default(),
        contexts: 0,
        contexts_with_rows: 0,
        contexts_forced_closed: 0,
        items_dropped: 0,
        open_contexts_peak: 0,
        shards: Vec::new(),
        elapsed_ms: 0,
    };
    let mut exporter =
        Exporter { options, hooks, weights, sink: &mut *sink, report: &mut report, signals_read: 0 };
    exporter.run(source)?;
    sink.finish()?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
