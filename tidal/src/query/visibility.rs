//! Read-your-writes: a [`SeqToken`] names, per shard, a seq a client saw acknowledged; a read
//! that carries it first waits (bounded) until this store has applied that seq, or answers
//! "not yet" ([`Error::NotYet`]). Followers will honour the same tokens.
//!
//! Each shard publishes its applied seq (`AppliedSeq`) after a batch is applied and
//! before it is acknowledged, so an ack's own token never waits on the node that acked it.

use std::fmt;
use std::str::FromStr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::session::Ack;

/// Longest a read may wait for its token.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// Per shard, the seq a read must reflect: `"0:12,3:40"` in text form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqToken(pub Vec<(u32, u64)>);

impl SeqToken {
    /// The token that covers every given ack (the highest seq per shard).
    pub fn from_acks<'a>(acks: impl IntoIterator<Item = &'a Ack>) -> SeqToken {
        let mut token = SeqToken::default();
        for ack in acks {
            token.require(ack.shard, ack.seq);
        }
        token
    }

    /// Raises the requirement for `shard` to at least `seq`.
    pub fn require(&mut self, shard: u32, seq: u64) {
        match self.0.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, have)) => *have = (*have).max(seq),
            None => {
                self.0.push((shard, seq));
                self.0.sort_unstable();
            }
        }
    }
}

impl fmt::Display for SeqToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(shard, seq)| format!("{shard}:{seq}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for SeqToken {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut token = SeqToken::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = part.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let (shard, seq) = parsed.ok_or_else(|| format!("`{part}` is not SHARD:SEQ"))?;
            token.require(shard, seq);
        }
        Ok(token)
    }
}

/// A shard's applied seq, with a condition variable readers wait on.
#[derive(Debug, Default)]
pub(crate) struct AppliedSeq {
    seq: Mutex<u64>,
    changed: Condvar,
}

impl AppliedSeq {
    pub fn new(seq: u64) -> Self {
        AppliedSeq { seq: Mutex::new(seq), changed: Condvar::new() }
    }

    pub fn get(&self) -> u64 {
        *self.seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, seq: u64) {
        *self.seq.lock().unwrap_or_else(|e| e.into_inner()) = seq;
        self.changed.notify_all();
    }

    /// Waits until the seq reaches `target` or `deadline` passes; returns the seq seen last.
    fn wait(&self, target: u64, deadline: Instant) -> u64 {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        while *seq < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            seq = self.changed.wait_timeout(seq, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        *seq
    }
}

impl Db {
    /// Waits until every shard in `token` has applied its seq, for at most `timeout`
    /// (capped at [`WAIT_MAX`]). Reads made afterwards reflect at least the token.
    pub fn wait_for(&self, token: &SeqToken, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout.min(WAIT_MAX);
        for &(shard, seq) in &token.0 {
            let handle = self.inner.shards.get(shard as usize).ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "min_seq names shard {shard}; the store has {}",
                    self.inner.shards.len()
                ))
            })?;
            let seen = handle.applied.wait(seq, deadline);
            if seen < seq {
                return Err(Error::NotYet { shard, applied: seen, wanted: seq });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_round_trip_keeps_highest_per_shard() {
        let token: SeqToken = "3:40, 0:12,3:7".parse().unwrap();
        assert_eq!(token.0, vec![(0, 12), (3, 40)]);
        assert_eq!(token.to_string(), "0:12,3:40");
        assert!("0:x".parse::<SeqToken>().is_err());
        assert!("12".parse::<SeqToken>().is_err());
        assert_eq!("".parse::<SeqToken>().unwrap(), SeqToken::default());
    }

    #[test]
    fn wait_returns_when_published_or_at_deadline() {
        let applied = std::sync::Arc::new(AppliedSeq::new(5));
        let waiter = {
            let applied = applied.clone();
            std::thread::spawn(move || applied.wait(9, Instant::now() + Duration::from_secs(5)))
        };
        std::thread::sleep(Duration::from_millis(20));
        applied.publish(9);
        assert_eq!(waiter.join().unwrap(), 9);
        let started = Instant::now();
        assert_eq!(applied.wait(10, Instant::now() + Duration::from_millis(30)), 9);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
