//! What a transport's threads share: the configuration, the counters, the stop flag, and the
//! registry of open sockets that shutdown closes.
//!
//! Invariant: once [`Shared::stop`] has run, no socket stays open and none can be registered
//! (registration and stop take the same lock, so a socket opened during shutdown is refused
//! and closed by its owner). Shutting a socket down wakes a thread blocked reading or writing
//! it, which is how threads blocked in I/O learn about the stop.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::TcpConfig;
use super::stats::Counters;
use crate::transport::NodeId;

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: TcpConfig,
    pub counters: Counters,
    stopping: AtomicBool,
    sockets: Mutex<Sockets>,
}

#[derive(Debug, Default)]
struct Sockets {
    next_id: u64,
    open: BTreeMap<u64, TcpStream>,
    /// The inbound connection each authenticated peer currently uses.
    inbound: BTreeMap<NodeId, u64>,
    closed: bool,
}

/// A socket in the registry; dropping the guard removes it (the socket itself is closed by
/// its owner dropping the stream).
pub(crate) struct Registered<'s> {
    shared: &'s Shared,
    id: u64,
}

impl Shared {
    pub fn new(config: TcpConfig) -> Shared {
        let counters = Counters::new(config.peers.keys().copied());
        Shared { config, counters, stopping: AtomicBool::new(false), sockets: Mutex::default() }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn sockets(&self) -> MutexGuard<'_, Sockets> {
        // A panicking thread cannot leave the registry inconsistent (each change is one
        // insert or remove), so a poisoned lock is taken over.
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `stream` for shutdown; `None` if the transport is stopping (or the socket
    /// cannot be cloned): the caller then drops the stream.
    pub fn register(&self, stream: &TcpStream) -> Option<Registered<'_>> {
        let clone = stream.try_clone().ok()?;
        let mut sockets = self.sockets();
        if sockets.closed {
            return None;
        }
        let id = sockets.next_id;
        sockets.next_id += 1;
        sockets.open.insert(id, clone);
        Some(Registered { shared: self, id })
    }

    /// Makes `registered` the inbound connection of `peer`, closing the one it replaces: a
    /// peer that reconnects has given up its old connection, which may be half-open forever.
    pub fn claim_inbound(&self, peer: NodeId, registered: &Registered<'_>) {
        let mut sockets = self.sockets();
        if let Some(old) = sockets.inbound.insert(peer, registered.id)
            && let Some(stream) = sockets.open.get(&old)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Sets the stop flag and shuts every registered socket down.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut sockets = self.sockets();
        sockets.closed = true;
        for stream in sockets.open.values() {
            // Fails only if the socket is already disconnected, which is the goal anyway.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut sockets = self.shared.sockets();
        sockets.open.remove(&self.id);
        sockets.inbound.retain(|_, id| *id != self.id);
    }
}
