//! The staged copy of a snapshot a follower receives from its leader, chunk by chunk:
//! `shard-NNNN.snap.part` in the replication state directory, grown only at its end (the
//! protocol hands chunks in order), read back whole once complete. A restart leaves a
//! partial file the next install truncates; the leader restarts the stream from the
//! follower's ack. Limits: the leader names the length up front, and a chunk beyond it is
//! refused by the protocol before it reaches here.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) struct Staging {
    path: PathBuf,
    /// (seq, len, open file, bytes written) of the snapshot being staged.
    current: Option<(u64, u64, File, u64)>,
}

impl Staging {
    pub fn new(state_dir: &Path, shard: u32) -> Staging {
        Staging { path: state_dir.join(format!("shard-{shard:04}.snap.part")), current: None }
    }

    pub fn begin(&mut self, seq: u64, len: u64) -> Result<(), String> {
        let err = |e: std::io::Error| format!("stage snapshot {}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file =
            OpenOptions::new().create(true).write(true).truncate(true).open(&self.path).map_err(err)?;
        self.current = Some((seq, len, file, 0));
        Ok(())
    }

    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let path = self.path.display().to_string();
        let Some((_, len, file, written)) = self.current.as_mut() else {
            return Err(format!("snapshot bytes at {offset} with no staged snapshot ({path})"));
        };
        if offset != *written || offset + bytes.len() as u64 > *len {
            return Err(format!("snapshot bytes at {offset} do not continue the staged {written} of {len}"));
        }
        file.write_all(bytes).map_err(|e| format!("stage snapshot {path}: {e}"))?;
        *written += bytes.len() as u64;
        Ok(())
    }

    /// The whole staged snapshot through `seq`; the staging file is removed.
    pub fn finish(&mut self, seq: u64) -> Result<Vec<u8>, String> {
        let path = self.path.display().to_string();
        match self.current.take() {
            Some((s, len, file, written)) if s == seq && written == len => {
                drop(file);
                let bytes = fs::read(&self.path).map_err(|e| format!("read staged snapshot {path}: {e}"))?;
                let _ = fs::remove_file(&self.path);
                Ok(bytes)
            }
            other => Err(format!(
                "install of the snapshot through seq {seq}, but the staged one is {:?}",
                other.map(|(s, len, _, written)| (s, len, written))
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_staged_in_order_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = Staging::new(dir.path(), 2);
        staging.begin(90, 6).unwrap();
        staging.write(0, b"abc").unwrap();
        assert!(staging.write(5, b"x").is_err(), "a hole is refused");
        staging.write(3, b"def").unwrap();
        assert!(staging.finish(91).is_err(), "another seq is refused");
        staging.begin(90, 6).unwrap();
        staging.write(0, b"abcdef").unwrap();
        assert!(staging.write(6, b"g").is_err(), "beyond the length is refused");
        assert_eq!(staging.finish(90).unwrap(), b"abcdef");
        assert!(!dir.path().join("shard-0002.snap.part").exists());
    }
}
