//! Batches for the protocol tests: real WAL batches as the writer encodes them.

use tidal::wal::segment::encode_batch_into;
use tidal::{Hlc, Signal, SignalKind};

use super::{BatchSource, SourceError};

/// One batch of `n` records (seqs `first_seq..first_seq + n`) of `shard`, epoch `epoch`.
pub fn batch(shard: u32, epoch: u64, first_seq: u64, n: u64) -> Vec<u8> {
    let signals: Vec<Signal> =
        (0..n).map(|i| Signal::new("u", format!("item-{}", first_seq + i), SignalKind::Click)).collect();
    let records: Vec<_> =
        signals.iter().enumerate().map(|(i, s)| (Hlc(1000 + i as u64), s.as_ref())).collect();
    let mut buf = Vec::new();
    encode_batch_into(&mut buf, shard, 1, epoch, first_seq, &records).expect("encode");
    buf
}

/// An in-memory log of whole batches.
#[derive(Default)]
pub struct MemLog(pub Vec<(u64, Vec<u8>)>);

impl MemLog {
    pub fn push(&mut self, first_seq: u64, bytes: Vec<u8>) {
        self.0.push((first_seq, bytes));
    }
}

impl BatchSource for MemLog {
    fn read_from(&self, from_seq: u64, max_bytes: u64) -> Result<Vec<Vec<u8>>, SourceError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (first, b) in self.0.iter().filter(|(first, _)| *first >= from_seq) {
            if !out.is_empty() && (bytes + b.len() as u64 > max_bytes || *first < from_seq) {
                break;
            }
            bytes += b.len() as u64;
            out.push(b.clone());
        }
        Ok(out)
    }
}
