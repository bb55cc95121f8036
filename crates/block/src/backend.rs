//! Where a disk's sectors live: the [`DiskBackend`] seam, a raw image file
//! ([`RawFile`]) and an in-memory disk for tests ([`MemDisk`]).
//!
//! Backends see byte offsets that the request model has already checked
//! against the disk's size; they never see guest addresses.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vm_memory::VolatileSlice;

/// Bytes in a virtio-blk sector (the unit of sector numbers, whatever the
/// image's own block size).
pub const SECTOR_SIZE: u64 = 512;

/// The storage behind one disk. Calls come from the disk's worker thread
/// only, one at a time; `&self` so that a stopped worker leaves nothing to
/// hand back.
pub trait DiskBackend: Send + Sync {
    /// The disk's size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn size(&self) -> u64;
    /// Fills `bufs` (guest memory), in order, from `offset`.
    fn read_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()>;
    /// Writes all of `bufs` (guest memory), in order, at `offset`.
    fn write_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()>;
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

/// At most this many buffers in one preadv/pwritev (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;

/// A raw disk image: sector N is bytes N*512.. of the file. Data moves
/// between the file and guest memory with preadv/pwritev, without a copy
/// in tapir.
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

impl RawFile {
    /// preadv (`write` false) or pwritev of all of `bufs` at `offset`,
    /// going on after short transfers.
    fn transfer(&self, mut offset: u64, bufs: &[VolatileSlice<'_>], write: bool) -> io::Result<()> {
        let mut iov: Vec<libc::iovec> = bufs
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| libc::iovec {
                iov_base: s.ptr_guard_mut().as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        let mut idx = 0;
        while idx < iov.len() {
            let batch = &iov[idx..iov.len().min(idx + IOV_MAX)];
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: every iovec describes a VolatileSlice of `bufs`, memory
            // that stays mapped while the slices live (they borrow the guest
            // memory for this call); the kernel reads or writes only within
            // them. `batch` holds at most IOV_MAX entries.
            let n = unsafe {
                if write {
                    libc::pwritev(
                        self.file.as_raw_fd(),
                        batch.as_ptr(),
                        batch.len() as i32,
                        off,
                    )
                } else {
                    libc::preadv(
                        self.file.as_raw_fd(),
                        batch.as_ptr(),
                        batch.len() as i32,
                        off,
                    )
                }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                }));
            }
            let mut n = n as usize;
            offset += n as u64;
            while n > 0 {
                let cur = &mut iov[idx];
                if n >= cur.iov_len {
                    n -= cur.iov_len;
                    idx += 1;
                } else {
                    // SAFETY: stays within the same iovec (n < its length).
                    cur.iov_base = unsafe { cur.iov_base.cast::<u8>().add(n) }.cast();
                    cur.iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(())
    }
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        self.transfer(offset, bufs, false)
    }

    fn write_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        self.transfer(offset, bufs, true)
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

    fn read_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len() as u64).sum();
        let r = self.check(offset, total)?;
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = r.start;
        for b in bufs {
            b.copy_from(&data[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len() as u64).sum();
        let r = self.check(offset, total)?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = r.start;
        for b in bufs {
            b.copy_to(&mut data[at..at + b.len()]);
            at += b.len();
        }
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

    fn slice(b: &mut [u8]) -> VolatileSlice<'_> {
        VolatileSlice::from(b)
    }

    #[test]
    fn raw_file_reads_writes_and_punches_holes() {
        let p = temp("rw", &[0xaa; 4096]);
        let d = RawFile::open(&p, false).unwrap();
        assert_eq!(d.size(), 4096);
        let (mut w1, mut w2) = ([1u8; 300], [2u8; 212]);
        d.write_at(512, &[slice(&mut w1), slice(&mut w2)]).unwrap();
        let (mut a, mut b) = ([0u8; 700], [0u8; 324]);
        d.read_at(0, &[slice(&mut a), slice(&mut b)]).unwrap();
        assert_eq!(&a[..512], &[0xaa; 512]);
        assert_eq!(&a[512..700], &[1; 188]);
        assert_eq!(&b[..112], &[1; 112]);
        assert_eq!(&b[112..], &[2; 212]);
        // Past the end: an error, not a short read.
        assert!(d.read_at(4096 - 512, &[slice(&mut a)]).is_err());
        d.flush().unwrap();
        d.discard(0, 4096).unwrap();
        d.read_at(0, &[slice(&mut a), slice(&mut b)]).unwrap();
        assert_eq!((a, b), ([0; 700], [0; 324]));
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
