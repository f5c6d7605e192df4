//! Read-your-writes: a [`SeqToken`] names, per shard, a seq a client saw acknowledged; a read
//! that carries it first waits (bounded) until this store has applied that seq, or answers
//! "not yet" ([`crate::Error::NotYet`]). Followers will honour the same tokens.
//!
//! Each shard publishes its applied seq ([`crate::shard::applied::AppliedSeq`]) after a batch is applied and
//! before it is acknowledged, so an ack's own token never waits on the node that acked it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
        if s.trim().is_empty() {
            return Err("an empty token; omit min_seq instead".to_owned());
        }
        for part in s.split(',').map(str::trim) {
            let parsed = part.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let (shard, seq) = parsed.ok_or_else(|| format!("`{part}` is not SHARD:SEQ"))?;
            token.require(shard, seq);
        }
        Ok(token)
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
        for bad in ["", " ", "0:1,", ",0:1", "0:1,,2:3", "0:", ":1", "0:1:2", "-1:2"] {
            assert!(bad.parse::<SeqToken>().is_err(), "`{bad}` must be refused");
        }
    }
}
