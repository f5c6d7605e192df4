//! The export driver: for each shard in turn, two passes of [`scan_history`] up to the
//! shard's cut, pass 1 folding closed contexts into a [`NegativeIndex`], pass 2 turning
//! closed contexts into rows for the sink.
//!
//! Invariants: both passes read exactly the same records (same `until_seq`; the record
//! counts are compared, a mismatch stops the export); one shard's index is dropped before
//! the next shard starts, so memory holds one shard's pairs and open contexts at a time.

use std::path::Path;

use super::contexts::{ClosedContext, ContextTracker, TrackerConfig};
use super::hooks::{ExportProgress, Hooks, PROGRESS_EVERY_SIGNALS};
use super::negatives::{NegativeIndex, NegativeSource, SelectLimits, select};
use super::rows::{Provenance, RowSink, Split, emit};
use super::{ExportError, ExportOptions, ExportReport, ShardExport};
use tidal::error::Error;
use tidal::history::scan_history;
use tidal::score::Weights;
use tidal::wal::vfs::Vfs;

/// Where the signals come from, and where each shard's history is cut.
pub(crate) struct Source<'a> {
    pub vfs: &'a dyn Vfs,
    pub dir: &'a Path,
    pub shards: u32,
    /// Per shard, the first seq not exported; `None`: whatever pass 1 finds on disk.
    pub until_seqs: Option<Vec<u64>>,
}

/// One export in progress.
pub(crate) struct Exporter<'a> {
    pub options: &'a ExportOptions,
    pub hooks: &'a Hooks<'a>,
    pub weights: Weights,
    pub sink: &'a mut dyn RowSink,
    pub report: &'a mut ExportReport,
    pub signals_read: u64,
}

impl Exporter<'_> {
    pub fn run(&mut self, source: &Source<'_>) -> Result<(), ExportError> {
        for shard in 0..source.shards {
            let until = source.until_seqs.as_ref().and_then(|seqs| seqs.get(shard as usize).copied());
            let done = self.shard(source, shard, until)?;
            self.report.shards.push(done);
        }
        Ok(())
    }

    fn tracker_config(&self) -> TrackerConfig {
        let o = self.options;
        TrackerConfig {
            by_context_id: o.by_context_id,
            session_gap_ms: o.session_gap_ms,
            implicit_window_ms: o.implicit_window_ms,
            weights: self.weights,
            open_contexts_max: o.open_contexts_max,
            context_items_max: o.context_items_max,
        }
    }

    fn progress(&mut self, pass: u8, shard: u32, shards: u32, force: bool) {
        if let Some(report) = self.hooks.progress
            && (force || self.signals_read.is_multiple_of(PROGRESS_EVERY_SIGNALS))
        {
            report(ExportProgress { pass, shard, shards, signals_read: self.signals_read });
        }
    }

    /// Pass 1 over one shard: every user's positives and negatives.
    fn collect(
        &mut self,
        source: &Source<'_>,
        shard: u32,
        until: u64,
    ) -> Result<(NegativeIndex, u64, u64), Error> {
        let mut index = NegativeIndex::default();
        let mut tracker = ContextTracker::new(self.tracker_config());
        let weights = self.weights;
        let mut fold = |ctx: ClosedContext| -> Result<(), Error> {
            index.fold(&ctx, &weights);
            Ok(())
        };
        let scanned = scan_history(source.vfs, source.dir, shard, until, |seq, hlc, signal| {
            self.signals_read += 1;
            self.progress(1, shard, source.shards, false);
            tracker.push(seq, hlc, &signal, &mut fold)
        })?;
        tracker.finish(&mut fold)?;
        self.progress(1, shard, source.shards, true);
        index.finalize();
        Ok((index, scanned.next_seq, scanned.records))
    }

    /// Both passes over one shard.
    fn shard(
        &mut self,
        source: &Source<'_>,
        shard: u32,
        until: Option<u64>,
    ) -> Result<ShardExport, ExportError> {
        let (index, next_seq, pass1_records) = self.collect(source, shard, until.unwrap_or(u64::MAX))?;
        let until = until.unwrap_or(next_seq);
        let mut tracker = ContextTracker::new(self.tracker_config());
        let mut stopped: Option<ExportError> = None;
        let scanned = {
            let (options, hooks, weights) = (self.options, self.hooks, self.weights);
            let (sink, report) = (&mut *self.sink, &mut *self.report);
            let mut write = |ctx: ClosedContext| {
                write_context(&ctx, shard, &index, (options, hooks, &weights), sink, report)
            };
            let mut signals_read = self.signals_read;
            let scanned = scan_history(source.vfs, source.dir, shard, until, |seq, hlc, signal| {
                signals_read += 1;
                if signals_read.is_multiple_of(PROGRESS_EVERY_SIGNALS)
                    && let Some(progress) = hooks.progress
                {
                    progress(ExportProgress { pass: 2, shard, shards: source.shards, signals_read });
                }
                tracker.push(seq, hlc, &signal, &mut write).map_err(|e| {
                    stopped = Some(e);
                    Error::InvalidState("export stopped".into())
                })
            });
            if let Some(e) = stopped.take() {
                return Err(e);
            }
            let scanned = scanned?;
            tracker.finish(&mut write)?;
            self.signals_read = signals_read;
            scanned
        };
        self.progress(2, shard, source.shards, true);
        if scanned.records != pass1_records {
            return Err(Error::InvalidState(format!(
                "shard {shard} changed during the export: pass 1 read {pass1_records} signals, pass 2 read {}",
                scanned.records
            ))
            .into());
        }
        self.report.contexts_forced_closed += tracker.forced_closes;
        self.report.open_contexts_peak = self.report.open_contexts_peak.max(tracker.open_peak as u64);
        Ok(ShardExport {
            shard,
            until_seq: until,
            first_seq: scanned.first_seq,
            hole: scanned.hole,
            signals_read: scanned.records,
            users: index.users(),
            pairs: index.pairs(),
        })
    }
}

/// Pass 2's work for one closed context: select, split, emit, count.
fn write_context(
    ctx: &ClosedContext,
    shard: u32,
    index: &NegativeIndex,
    (options, hooks, weights): (&ExportOptions, &Hooks<'_>, &Weights),
    sink: &mut dyn RowSink,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    let limits = SelectLimits {
        items_max: options.pairs_per_context_max,
        history_max: options.history_negatives_per_context_max,
        mined_max: options.mined_negatives_per_context_max,
    };
    let selection = select(ctx, index.user(&ctx.user), limits, hooks.mined, weights);
    let split = Split::of(&ctx.user, &ctx.session, options.test_fraction, options.seed);
    let prov =
        Provenance { ctx, shard, split, format: options.format, exported_at_ms: options.exported_at_ms };
    let emitted =
        emit(&selection, &prov, hooks, (options.pairs_per_context_max, options.prompt_items_max), sink)?;
    report.contexts += 1;
    report.items_dropped += ctx.items_dropped;
    if emitted.rows > 0 {
        report.contexts_with_rows += 1;
    }
    report.rows += emitted.rows;
    match split {
        Split::Train => report.rows_train += emitted.rows,
        Split::Test => report.rows_test += emitted.rows,
    }
    let counts = &mut report.rows_by_source;
    for (source, n) in NegativeSource::ALL.into_iter().zip(emitted.by_source) {
        *match source {
            NegativeSource::Explicit => &mut counts.explicit,
            NegativeSource::Implicit => &mut counts.implicit,
            NegativeSource::History => &mut counts.history,
            NegativeSource::Mined => &mut counts.mined,
        } += n;
    }
    Ok(())
}
