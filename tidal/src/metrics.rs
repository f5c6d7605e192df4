//! Store metrics: lock-free counters and a latency histogram that the shard writers update,
//! and their Prometheus text exposition. The server adds its own request metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync latency buckets, in microseconds.
pub const FSYNC_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

/// A cumulative histogram in the Prometheus sense.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of [`FSYNC_BUCKETS_US`], plus one for +Inf.
    buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let slot = FSYNC_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(FSYNC_BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram in Prometheus text format, in seconds.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in FSYNC_BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += self.buckets[FSYNC_BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Counters of the write path, shared by every shard writer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Signals appended to the WAL (not duplicates).
    pub signals_written: AtomicU64,
    /// Retries answered with their original ack.
    pub duplicates: AtomicU64,
    /// WAL batches appended (group commits).
    pub batches: AtomicU64,
    /// Bytes appended to the WAL since open.
    pub wal_bytes: AtomicU64,
    /// Duration of each WAL fsync.
    pub fsync: Histogram,
}

impl Metrics {
    /// The counters in Prometheus text format; `applied_seqs` labels per-shard seqs.
    pub fn render(&self, applied_seqs: &[u64], recovery: Duration) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "tidal_signals_written_total",
            "Signals appended to the WAL.",
            load(&self.signals_written),
        );
        counter(
            &mut out,
            "tidal_duplicates_total",
            "Retries answered with their original ack.",
            load(&self.duplicates),
        );
        counter(&mut out, "tidal_wal_batches_total", "WAL batches (group commits).", load(&self.batches));
        counter(
            &mut out,
            "tidal_wal_bytes_total",
            "Bytes appended to the WAL since open.",
            load(&self.wal_bytes),
        );
        self.fsync.render(&mut out, "tidal_fsync_seconds", "WAL fsync latency.");
        let _ = writeln!(
            out,
            "# HELP tidal_recovery_seconds Time the last open took to recover.\n# TYPE tidal_recovery_seconds gauge\ntidal_recovery_seconds {}",
            recovery.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP tidal_shard_applied_seq Last applied seq per shard.\n# TYPE tidal_shard_applied_seq gauge"
        );
        for (shard, seq) in applied_seqs.iter().enumerate() {
            let _ = writeln!(out, "tidal_shard_applied_seq{{shard=\"{shard}\"}} {seq}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_renders() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(3));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"));
    }

    #[test]
    fn render_lists_every_shard() {
        let m = Metrics::default();
        m.signals_written.fetch_add(5, Ordering::Relaxed);
        let out = m.render(&[3, 9], Duration::from_millis(1500));
        assert!(out.contains("tidal_signals_written_total 5\n"));
        assert!(out.contains("tidal_shard_applied_seq{shard=\"1\"} 9\n"));
        assert!(out.contains("tidal_recovery_seconds 1.5\n"));
    }
}
