//! Where a disk's sectors live: the [`DiskBackend`] seam, a raw image file
//! ([`RawFile`]) and an in-memory disk for tests ([`MemDisk`]).
//!
//! Backends see byte offsets that the request model has already checked
//! against the disk's size; they never see guest addresses.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes in a virtio-blk sector (the unit of sector numbers, whatever the
/// image's own block size).
pub const SECTOR_SIZE: u64 = 512;

/// The storage behind one disk. Calls come from the disk's worker thread
/// only, one at a time; `&self` so that a stopped worker leaves nothing to
/// hand back.
pub trait DiskBackend: Send + Sync {
    /// The disk's size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn flush(&self) -> io::Result<()>;
    /// Deallocates `len` bytes at `offset`; they then read as zeroes.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// Why an image cannot be a disk; each is one line naming the path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file cannot be opened (missing, no permission, ...).
    #[error("cannot open '{}': {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The path names a directory.
    #[error("'{}' is a directory, not a disk image", .path.display())]
    Directory { path: PathBuf },
    /// Its size is not whole sectors.
    #[error("'{}' is {size} bytes, not a multiple of 512: a raw disk image holds whole sectors", .path.display())]
    Unaligned { path: PathBuf, size: u64 },
    /// A read-only file opened for writing.
    #[error("'{}' is read-only for tapir: add ,ro to give it to the guest read-only", .path.display())]
    ReadOnly { path: PathBuf },
    /// stat failed.
    #[error("cannot read the size of '{}': {source}", .path.display())]
    Stat { path: PathBuf, source: io::Error },
}

/// A raw disk image: sector N is bytes N*512.. of the file.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
}

impl RawFile {
    /// Opens `path`, for reading only when `read_only`. Refuses a
    /// directory, a size that is not whole sectors, and a file this process
    /// may only read when `read_only` is not set.
    pub fn open(path: &Path, read_only: bool) -> Result<RawFile, OpenError> {
        let owned = || path.to_path_buf();
        // A directory opens read-only: look first, for a clear message.
        if path.is_dir() {
            return Err(OpenError::Directory { path: owned() });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| {
                // Readable but not writable: no write permission, or a
                // read-only file system.
                let read_only_file = (source.kind() == io::ErrorKind::PermissionDenied
                    && File::open(path).is_ok())
                    || source.raw_os_error() == Some(libc::EROFS);
                if !read_only && read_only_file {
                    OpenError::ReadOnly { path: owned() }
                } else {
                    OpenError::Open {
                        path: owned(),
                        source,
                    }
                }
            })?;
        let meta = file.metadata().map_err(|source| OpenError::Stat {
            path: owned(),
            source,
        })?;
        if meta.is_dir() {
            return Err(OpenError::Directory { path: owned() });
        }
        let size = meta.len();
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(OpenError::Unaligned {
                path: owned(),
                size,
            });
        }
        Ok(RawFile { file, size })
    }
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate on a file descriptor this struct owns; no
        // memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A disk in memory, for tests: counts flushes and can be made to fail.
#[derive(Debug, Default)]
pub struct MemDisk {
    data: Mutex<Vec<u8>>,
    flushes: Mutex<u32>,
    fail: Mutex<bool>,
}

impl MemDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> MemDisk {
        MemDisk {
            data: Mutex::new(vec![0; (sectors * SECTOR_SIZE) as usize]),
            ..Default::default()
        }
    }

    /// A copy of its bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces bytes from `offset`.
    pub fn fill(&self, offset: usize, bytes: &[u8]) {
        self.data.lock().unwrap_or_else(|e| e.into_inner())[offset..offset + bytes.len()]
            .copy_from_slice(bytes);
    }

    /// How many flushes it got.
    pub fn flushes(&self) -> u32 {
        *self.flushes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every later call fail (`true`) or work again.
    pub fn set_failing(&self, fail: bool) {
        *self.fail.lock().unwrap_or_else(|e| e.into_inner()) = fail;
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        if *self.fail.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(io::Error::other("MemDisk set to fail"));
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.size())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(offset as usize..end as usize)
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.check(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap_or_else(|e| e.into_inner())[r]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let r = self.check(offset, buf.len() as u64)?;
        self.data.lock().unwrap_or_else(|e| e.into_inner())[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.check(0, 0)?;
        *self.flushes.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.check(offset, len)?;
        self.data.lock().unwrap_or_else(|e| e.into_inner())[r].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tapir-block-{}-{name}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    #[test]
    fn raw_file_reads_writes_and_punches_holes() {
        let p = temp("rw", &[0xaa; 4096]);
        let d = RawFile::open(&p, false).unwrap();
        assert_eq!(d.size(), 4096);
        d.write_at(512, &[1; 512]).unwrap();
        let mut b = [0u8; 1024];
        d.read_at(0, &mut b).unwrap();
        assert_eq!(&b[..512], &[0xaa; 512]);
        assert_eq!(&b[512..], &[1; 512]);
        d.flush().unwrap();
        d.discard(0, 4096).unwrap();
        d.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0; 1024]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096, "size kept");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn bad_images_are_refused_with_one_line() {
        let p = temp("odd", &[0; 1000]);
        let e = RawFile::open(&p, true).unwrap_err().to_string();
        assert!(e.contains("1000 bytes, not a multiple of 512"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let dir = std::env::temp_dir();
        assert!(matches!(
            RawFile::open(&dir, false),
            Err(OpenError::Directory { .. })
        ));
        assert!(matches!(
            RawFile::open(Path::new("/nonexistent/tapir.img"), false),
            Err(OpenError::Open { .. })
        ));
    }
}
