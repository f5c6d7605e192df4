//! The write-ahead log of one shard.
//!
//! Every signal a shard accepts is appended here (in batches, one `write_all` per batch)
//! before it is applied, so recovery can rebuild the shard's state and followers can be fed
//! the exact bytes. The on-disk format is documented with a byte map in
//! `docs/wal-format.md`.
//!
//! - [`header`]: the 64-byte v2 batch header (and the 32-byte legacy v1 one);
//! - [`record`]: one record (an HLC and a signal) inside a batch payload;
//! - [`segment`]: segment names, batch encoding and [`decode_batch`];
//! - [`writer`]: [`WalWriter`], owned by the shard's writer thread;
//! - [`reader`]: recovery scans ([`scan_shard`]), segment listing and retention;
//! - [`ship`]: whole batches read back from any seq, for a leader to ship;
//! - [`vfs`] and [`sim_vfs`]: the file-system seam and its crash-image simulator.

pub mod error;
pub mod header;
pub mod reader;
pub mod record;
pub mod segment;
pub mod ship;
pub mod sim_vfs;
pub mod vfs;
pub mod writer;

pub use error::{Refusal, WalError};
pub use header::{BatchError, BatchHeader};
pub use reader::{
    Repair, ScanReport, SegmentSummary, TornTail, list_segments, remove_segments_before, scan_shard,
    scan_shard_origin_batches, scan_shard_records,
};
pub use record::{RecordError, decode_record, encode_record, records};
pub use segment::{SegmentName, decode_batch, encode_batch_v1, segment_file_name};
pub use writer::{BatchInfo, WalWriter};

#[cfg(test)]
mod tests_crash;
#[cfg(test)]
mod tests_header;
#[cfg(test)]
mod tests_reader;
#[cfg(test)]
mod tests_record;
#[cfg(test)]
mod tests_reserve;
#[cfg(test)]
mod tests_support;
#[cfg(test)]
mod tests_writer;
