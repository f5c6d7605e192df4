//! The durable replication record of one shard replica: the highest epoch it answered,
//! that epoch's leader, whether this node leads, and the log's epoch history.
//!
//! One small JSON file per shard (`replication/shard-NNNN.json` in the data directory),
//! replaced atomically (temp file, fsync, rename, directory fsync), so a crash leaves the
//! old record or the new one. The history in it is a hint: on start the runtime re-reads
//! the batch headers from the last recorded epoch start to the end of the log, so a batch
//! appended after the last write of this file is never missed. A replica that installed a
//! snapshot holds no batch headers up to it; the history through it comes from the record,
//! which names a pending install before the store performs it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is persisted per shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub leader: Option<u32>,
    pub leading: bool,
    pub history: Vec<(u64, u64)>,
    /// A snapshot install under way: its seq and the leader's history through it. Written
    /// before the store installs, cleared after; a restart that finds it adopts the history
    /// if the store holds the snapshot, else drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<PendingInstall>,
}

/// See [`EpochRecord::install`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInstall {
    pub seq: u64,
    pub history: Vec<(u64, u64)>,
}

pub(crate) fn path(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("shard-{shard:04}.json"))
}

/// The record of `shard`, or `None` for a replica that never persisted one.
pub fn load(dir: &Path, shard: u32) -> std::io::Result<Option<EpochRecord>> {
    match fs::read(path(dir, shard)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the record of `shard` durably.
pub fn store(dir: &Path, shard: u32, record: &EpochRecord) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let target = path(dir, shard);
    let tmp = target.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&tmp, &target)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 3).unwrap(), None);
        let record = EpochRecord {
            epoch: 4,
            leader: Some(2),
            leading: false,
            history: vec![(1, 1), (4, 90)],
            install: Some(PendingInstall { seq: 80, history: vec![(1, 1), (3, 50)] }),
        };
        store(dir.path(), 3, &record).unwrap();
        assert_eq!(load(dir.path(), 3).unwrap(), Some(record.clone()));
        let next = EpochRecord { epoch: 5, leading: true, ..record };
        store(dir.path(), 3, &next).unwrap();
        assert_eq!(load(dir.path(), 3).unwrap(), Some(next));
        fs::write(path(dir.path(), 3), b"{").unwrap();
        assert!(load(dir.path(), 3).is_err(), "a damaged record is an error, not a fresh start");
    }
}
