//! [`AppliedSeq`]: a shard's applied seq, published by whoever applies records (the writer
//! thread, later a follower) and awaited by `min_seq` readers.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// A shard's applied seq, with a condition variable readers wait on.
#[derive(Debug, Default)]
pub struct AppliedSeq {
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
    pub fn wait(&self, target: u64, deadline: Instant) -> u64 {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
