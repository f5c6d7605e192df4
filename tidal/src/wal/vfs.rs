//! The file-system seam. Every byte the WAL and the snapshots write goes through [`Vfs`], so
//! tests can swap in [`super::sim_vfs::SimVfs`], which knows what was fsynced and what was
//! only written, and builds the image a power cut would leave.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// File-system operations the store needs, nothing more.
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files in `dir`, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a file that must not exist yet, opened for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes of the file from `offset` (fewer at its end, none past it), so a
    /// reader can tail a segment without reading the whole file.
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Shortens a file to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes a file; durable once the parent directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`; durable once the parent directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir` for this process, held while the guard lives.
    /// In-memory file systems have no other processes to exclude.
    fn lock_dir(&self, _dir: &Path) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        Ok(None)
    }
}

/// An open file that is only ever appended to.
pub trait VfsFile: Send + fmt::Debug {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Bytes in the file, durable or not.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A handle that makes this file's written bytes durable from another thread, while
    /// this one goes on appending (a pipelined fsync).
    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>>;
}

/// The fsync side of an open file, shareable with another thread: [`FileSync::sync_data`]
/// makes durable at least every byte written before the call.
pub trait FileSync: Send + Sync + fmt::Debug {
    fn sync_data(&self) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdVfs;

#[derive(Debug)]
struct StdFile {
    file: File,
    len: u64,
}

impl VfsFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>> {
        Ok(Arc::new(StdSync(self.file.try_clone()?)))
    }
}

/// A duplicated descriptor of a [`StdFile`]: fdatasync through it covers the same file.
#[derive(Debug)]
struct StdSync(File);

impl FileSync for StdSync {
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Vfs for StdVfs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new().append(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile { file, len: 0 }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(StdFile { file, len }))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = File::open(path)?;
        let available = file.metadata()?.len().saturating_sub(offset);
        let mut buf = vec![0u8; len.min(usize::try_from(available).unwrap_or(usize::MAX))];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another process", dir.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
