//! An in-memory [`Vfs`] that knows what is durable, for crash-image tests (in the style of
//! redb's crash-consistency tests).
//!
//! [`SimVfs`] owns a model of files and directories:
//! - a file (an inode) holds the bytes written to it and its *durable prefix*: the length as
//!   of its last `sync_data` (or `truncate`, which is durable by the [`Vfs`] contract). Files
//!   are only appended to or truncated, so "durable" is always a prefix;
//! - a directory holds its *live* entries (name -> inode) and its *durable* entries: the
//!   live ones as of its last `sync_dir`. Creates, renames and removes change only the live
//!   entries until the directory is synced.
//!
//! [`SimVfs::crash_image`] builds what a power cut would leave: every directory as of its
//! last sync (an unsynced create vanishes, an unsynced rename or remove is undone), and each
//! surviving file's durable bytes plus, per [`TornWrite`], none, all, or a random prefix of
//! its unsynced bytes (optionally followed by garbage). The model is deliberately simple:
//! directories themselves are durable as soon as they are created, and unsynced bytes reach
//! the disk in order (a prefix), which is what the WAL's recovery rules assume of a torn
//! append. It is deterministic for a given seed, and never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::wal::vfs::{FileSync, Vfs, VfsFile};

/// What happens to bytes that were written but not synced when the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TornWrite {
    /// They are all lost.
    None,
    /// They all made it.
    All,
    /// A random prefix made it.
    RandomPrefix,
    /// A random prefix made it, followed by random garbage up to (at most) the length that
    /// was written: sectors that were allocated but never filled.
    RandomPrefixGarbage,
}

impl TornWrite {
    /// Every policy, for tests that loop over them.
    pub const ALL: [TornWrite; 4] =
        [TornWrite::None, TornWrite::All, TornWrite::RandomPrefix, TornWrite::RandomPrefixGarbage];
}

/// An operation [`SimVfs::fail_next`] can make fail once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimOp {
    Write,
    SyncData,
    SyncDir,
    Create,
}

/// How many syncs were issued (since creation or since the crash image was built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub sync_data: u64,
    pub sync_dir: u64,
}

/// The in-memory file system. Clones share one state.
#[derive(Clone, Debug, Default)]
pub struct SimVfs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    syncs: SyncCounts,
    fail_next: BTreeSet<SimOp>,
    /// Operations of a kind to let succeed before one fails.
    fail_after: BTreeMap<SimOp, u64>,
}

#[derive(Clone, Debug, Default)]
struct Dir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable_len: usize,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| not_found(path))?;
    Ok((path.parent().unwrap_or(Path::new("")).to_path_buf(), name.to_owned()))
}

impl SimState {
    fn take_failure(&mut self, op: SimOp) -> io::Result<()> {
        if self.fail_next.remove(&op) {
            return Err(io::Error::other(format!("injected failure of {op:?}")));
        }
        if let Some(left) = self.fail_after.get_mut(&op) {
            if *left == 0 {
                self.fail_after.remove(&op);
                return Err(io::Error::other(format!("injected failure of {op:?}")));
            }
            *left -= 1;
        }
        Ok(())
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs.get(&dir).and_then(|d| d.live.get(&name)).copied().ok_or_else(|| not_found(path))
    }

    fn inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let id = self.lookup(path)?;
        self.inodes.get_mut(&id).ok_or_else(|| not_found(path))
    }
}

impl SimVfs {
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock (in a test) must not hide the state from others.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state a power cut would leave now, as a new, independent file system.
    pub fn crash_image(&self, policy: TornWrite, seed: u64) -> SimVfs {
        let state = self.lock();
        let mut rng = SplitMix64(seed);
        let mut image = SimState { next_inode: state.next_inode, ..SimState::default() };
        for (path, dir) in &state.dirs {
            let durable = dir.durable.clone();
            for id in durable.values() {
                if let (Some(inode), false) = (state.inodes.get(id), image.inodes.contains_key(id)) {
                    let data = crashed_bytes(inode, policy, &mut rng);
                    image.inodes.insert(*id, Inode { durable_len: data.len(), data });
                }
            }
            image.dirs.insert(path.clone(), Dir { live: durable.clone(), durable });
        }
        SimVfs { state: Arc::new(Mutex::new(image)) }
    }

    /// Flips one bit of a file's bytes (durable or not). False if there is no such byte.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) -> bool {
        let mut state = self.lock();
        let Ok(inode) = state.inode_mut(path) else {
            return false;
        };
        match usize::try_from(byte_offset).ok().and_then(|at| inode.data.get_mut(at)) {
            Some(byte) => {
                *byte ^= 1 << (bit % 8);
                true
            }
            None => false,
        }
    }

    /// Every byte of a file, durable or not.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let mut state = self.lock();
        state.inode_mut(path).ok().map(|inode| inode.data.clone())
    }

    /// The bytes of a file that would survive a crash now (if its name does).
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let mut state = self.lock();
        state.inode_mut(path).ok().map(|inode| inode.data[..inode.durable_len.min(inode.data.len())].to_vec())
    }

    /// Does `path` exist now (not necessarily durably)?
    pub fn exists(&self, path: &Path) -> bool {
        self.lock().lookup(path).is_ok()
    }

    /// The syncs issued so far.
    pub fn sync_counts(&self) -> SyncCounts {
        self.lock().syncs
    }

    /// Makes the next `op` fail with an I/O error (once). A failed write writes nothing.
    pub fn fail_next(&self, op: SimOp) {
        self.lock().fail_next.insert(op);
    }

    /// Lets `n` more operations of kind `op` succeed, then fails the next one: a sweep over
    /// `n` stops a multi-step change at each of its durable steps.
    pub fn fail_after(&self, op: SimOp, n: u64) {
        self.lock().fail_after.insert(op, n);
    }
}

/// A surviving file's bytes after a crash under `policy`.
fn crashed_bytes(inode: &Inode, policy: TornWrite, rng: &mut SplitMix64) -> Vec<u8> {
    let durable_len = inode.durable_len.min(inode.data.len());
    let (durable, unsynced) = inode.data.split_at(durable_len);
    let mut out = durable.to_vec();
    match policy {
        TornWrite::None => {}
        TornWrite::All => out.extend_from_slice(unsynced),
        TornWrite::RandomPrefix => out.extend_from_slice(&unsynced[..rng.below(unsynced.len() + 1)]),
        TornWrite::RandomPrefixGarbage => {
            let kept = rng.below(unsynced.len() + 1);
            out.extend_from_slice(&unsynced[..kept]);
            let garbage = rng.below(unsynced.len() - kept + 1);
            out.extend((0..garbage).map(|_| rng.next_u64() as u8));
        }
    }
    out
}

/// A tiny deterministic generator, so the image depends only on the seed (and the crate
/// needs no random-number dependency outside tests).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// An open file of a [`SimVfs`].
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    path: PathBuf,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl VfsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.take_failure(SimOp::Write)?;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        inode.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        FileSync::sync_data(self)
    }

    fn len(&self) -> u64 {
        self.lock().inodes.get(&self.inode).map_or(0, |inode| inode.data.len() as u64)
    }

    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>> {
        Ok(Arc::new(SimFile { state: self.state.clone(), inode: self.inode, path: self.path.clone() }))
    }
}

impl FileSync for SimFile {
    /// Everything written to the inode so far becomes durable, as fdatasync would make it.
    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.take_failure(SimOp::SyncData)?;
        state.syncs.sync_data += 1;
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        inode.durable_len = inode.data.len();
        Ok(())
    }
}

impl Vfs for SimVfs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            state.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        let entries = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(entries.live.keys().cloned().collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let (dir, name) = split(path)?;
        let mut state = self.lock();
        state.take_failure(SimOp::Create)?;
        let id = state.next_inode;
        let entries = state.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        if entries.live.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        entries.live.insert(name, id);
        state.next_inode += 1;
        state.inodes.insert(id, Inode::default());
        Ok(Box::new(SimFile { state: self.state.clone(), inode: id, path: path.to_path_buf() }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let inode = self.lock().lookup(path)?;
        Ok(Box::new(SimFile { state: self.state.clone(), inode, path: path.to_path_buf() }))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock().inode_mut(path)?.data.clone())
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        let data = &state.inode_mut(path)?.data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        Ok(data[start..start.saturating_add(len).min(data.len())].to_vec())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.lock().inode_mut(path)?.data.len() as u64)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        let mut state = self.lock();
        let inode = state.inode_mut(path)?;
        inode.data.resize(len, 0);
        inode.durable_len = len;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut state = self.lock();
        let entries = state.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        entries.live.remove(&name).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let ((from_dir, from_name), (to_dir, to_name)) = (split(from)?, split(to)?);
        let mut state = self.lock();
        if !state.dirs.contains_key(&to_dir) {
            return Err(not_found(&to_dir));
        }
        let entries = state.dirs.get_mut(&from_dir).ok_or_else(|| not_found(from))?;
        let id = entries.live.remove(&from_name).ok_or_else(|| not_found(from))?;
        if let Some(target) = state.dirs.get_mut(&to_dir) {
            target.live.insert(to_name, id);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.take_failure(SimOp::SyncDir)?;
        state.syncs.sync_dir += 1;
        // A directory the model does not track (a parent of the store) has nothing to sync.
        if let Some(entries) = state.dirs.get_mut(dir) {
            entries.durable = entries.live.clone();
        }
        Ok(())
    }
}
