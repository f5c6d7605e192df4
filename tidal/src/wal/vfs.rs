//! The file-system seam. Every byte the WAL and the snapshots write goes through [`Vfs`], so
//! tests can swap in [`super::sim_vfs::SimVfs`], which knows what was fsynced and what was
//! only written, and builds the image a power cut would leave.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
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
    /// [`Vfs::read_file`] into `buf` (replacing what it held), so a reader of many files
    /// keeps one buffer and its pages.
    fn read_file_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read_file(path)?;
        Ok(())
    }
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
///
/// A file may keep zero-filled space past its end ([`VfsFile::reserve`]): appends overwrite
/// it, so an fdatasync flushes only their blocks and not also the file's size (on ext4 and
/// XFS a size change is a journal commit, which doubled the fsync's latency here). Readers
/// of such a file see the zeros after the last batch; the WAL reader takes them for the
/// log's end.
pub trait VfsFile: Send + fmt::Debug {
    /// Writes `buf` at the end of what was appended so far (not past the reserve).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Bytes appended to the file, durable or not (the reserve not counted).
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where the file's durable zero-filled space ends (at least [`VfsFile::len`]).
    fn reserved(&self) -> u64 {
        self.len()
    }
    /// Zero-fills the file from its end (or its reserve's end) to `upto` bytes and makes
    /// that durable, so later appends up to `upto` change no metadata. The zeros lie past
    /// everything appended: an error leaves the appended bytes as they were. File systems
    /// without the notion may ignore it (the default does).
    fn reserve(&mut self, _upto: u64) -> io::Result<()> {
        Ok(())
    }
    /// Drops the reserve (the file ends at [`VfsFile::len`] again) and makes that durable:
    /// a segment that is done, or a store closing, leaves no zeros behind.
    fn release(&mut self) -> io::Result<()> {
        Ok(())
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
    /// Bytes appended.
    len: u64,
    /// Where the durable zeros from `len` on end (== `len` without a reserve).
    reserved: u64,
    /// How long the file may be: a zero-fill that failed midway left it anywhere up to here.
    physical: u64,
}

impl VfsFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, self.len)?;
        self.len += buf.len() as u64;
        self.reserved = self.reserved.max(self.len);
        self.physical = self.physical.max(self.len);
        Ok(())
    }

    fn reserved(&self) -> u64 {
        self.reserved
    }

    fn reserve(&mut self, upto: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = self.reserved.max(self.len);
        self.physical = self.physical.max(upto);
        while at < upto {
            let n = (upto - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        // fdatasync, not fsync: the new size is what a data sync must make durable
        // anyway; nothing else of the inode matters to the log.
        self.file.sync_data()?;
        self.reserved = at.max(self.reserved);
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        if self.physical > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            (self.reserved, self.physical) = (self.len, self.len);
        }
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
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile { file, len: 0, reserved: 0, physical: 0 }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        // Writes go at `len` (positioned), not O_APPEND: a reserve lies past the end.
        let file = OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(StdFile { file, len, reserved: len, physical: len }))
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_file_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read;
        let mut file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
        buf.clear();
        buf.reserve(len);
        file.read_to_end(buf)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_into_a_buffer_replaces_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let (long, short) = (dir.path().join("long"), dir.path().join("short"));
        fs::write(&long, vec![7u8; 10_000]).unwrap();
        fs::write(&short, b"abc").unwrap();
        let mut buf = Vec::new();
        StdVfs.read_file_into(&long, &mut buf).unwrap();
        assert_eq!(buf, vec![7u8; 10_000]);
        StdVfs.read_file_into(&short, &mut buf).unwrap();
        assert_eq!(buf, b"abc", "a shorter file leaves nothing of the longer one");
        assert!(buf.capacity() >= 10_000, "the buffer keeps its pages");
        assert!(StdVfs.read_file_into(&dir.path().join("missing"), &mut buf).is_err());
    }
}
