//! Helpers shared by the WAL tests: deterministic signals, writing and reading back batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hlc::Hlc;
use crate::signal::{Signal, SignalKind};
use crate::wal::WalError;
use crate::wal::reader::{Repair, ScanReport, scan_shard_records};
use crate::wal::vfs::Vfs;
use crate::wal::writer::WalWriter;

/// Records read back: seq, HLC, owned signal.
pub type Replayed = Vec<(u64, Hlc, Signal)>;

/// A varied, deterministic signal: kind, optional fields and attrs depend on `n`.
pub fn signal(n: u64) -> Signal {
    let kinds = SignalKind::BUILTIN;
    let kind = if n % 11 == 10 {
        SignalKind::Custom("bookmark".into())
    } else {
        kinds[n as usize % kinds.len()].clone()
    };
    let mut s = Signal::new(format!("user-{}", n % 17), format!("item-{n}"), kind);
    s.value = n as f64 * 0.5;
    if n.is_multiple_of(2) {
        s.session = Some(format!("sess-{}", n % 5));
        s.session_seq = Some(n + 1);
    }
    if n.is_multiple_of(3) {
        s.context = Some(format!("ctx-{n}"));
        s.source = Some("rss".into());
    }
    if n.is_multiple_of(4) {
        s.idempotency_key = Some(format!("key-{n}"));
    }
    if n.is_multiple_of(5) {
        s.attrs = BTreeMap::from([("label".into(), format!("l{n}")), ("ui".into(), "grid".into())]);
    }
    s
}

/// The HLC the tests give record `seq`: increasing, with a logical part.
pub fn hlc_of(seq: u64) -> Hlc {
    Hlc::new(1_700_000_000_000 + seq / 3, (seq % 3) as u16)
}

/// Appends one batch holding seqs `first..first + count` (signals `signal(seq)`).
pub fn append_seqs(writer: &mut WalWriter, count: u64) -> Result<(), WalError> {
    let first = writer.next_seq();
    let owned: Vec<Signal> = (first..first + count).map(signal).collect();
    let records: Vec<_> =
        owned.iter().enumerate().map(|(i, s)| (hlc_of(first + i as u64), s.as_ref())).collect();
    let info = writer.append(&records)?;
    assert_eq!(info.first_seq, first);
    Ok(())
}

/// Opens a fresh writer for shard `shard` in `dir`.
pub fn new_writer(vfs: Arc<dyn Vfs>, dir: &Path, shard: u32, segment_bytes_max: u64) -> WalWriter {
    WalWriter::open(vfs, dir, shard, 1, None, segment_bytes_max).expect("open writer")
}

/// Scans and returns every record (seq, hlc, owned signal) at or after `from_seq`.
pub fn read_all(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    from_seq: u64,
    repair: Repair,
) -> Result<(ScanReport, Replayed), WalError> {
    let mut out = Vec::new();
    let report = scan_shard_records(vfs, dir, shard, from_seq, repair, |seq, hlc, s| {
        out.push((seq, hlc, s.to_owned_signal()));
        Ok::<(), WalError>(())
    })?;
    Ok((report, out))
}

/// Asserts that `records` are exactly seqs `from..to`, each with the signal and HLC the
/// helpers above wrote for it.
pub fn assert_seqs(records: &[(u64, Hlc, Signal)], from: u64, to: u64) {
    assert_eq!(records.len() as u64, to.saturating_sub(from), "record count");
    for (i, (seq, hlc, s)) in records.iter().enumerate() {
        let want = from + i as u64;
        assert_eq!(*seq, want);
        assert_eq!(*hlc, hlc_of(want), "hlc of seq {want}");
        assert_eq!(*s, signal(want), "signal of seq {want}");
    }
}

/// The segment paths of `shard` in `dir`, in order.
pub fn segment_paths(vfs: &dyn Vfs, dir: &Path, shard: u32) -> Vec<PathBuf> {
    crate::wal::reader::list_segments(vfs, dir)
        .expect("list")
        .into_iter()
        .filter(|s| s.shard == shard)
        .map(|s| s.path)
        .collect()
}

/// The corruption's segment and offset, or a panic naming what came instead.
pub fn corruption_at(err: WalError) -> (PathBuf, u64, String) {
    match err {
        WalError::Corruption { segment, offset, reason } => (segment, offset, reason),
        other => panic!("expected corruption, got {other:?}"),
    }
}
