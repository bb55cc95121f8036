//! Buffers in guest memory, handed to a backend without copying.
//!
//! A NIC model that knows where a frame lies in guest RAM (virtio
//! descriptor chains) can give the backend [`GuestBuf`]s instead of a copy:
//! the tap backend then moves the bytes with one `writev`/`readv` straight
//! between the kernel and guest memory.

use std::io;

/// A byte range of guest RAM. The guest may write it at any moment, so it
/// is never turned into a Rust reference: it is only handed to the kernel
/// (as an `iovec`) or copied with raw copies, as `vm-memory` does.
#[derive(Debug, Clone, Copy)]
pub struct GuestBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a GuestBuf names an address range, it borrows nothing; sending it
// to another thread changes nothing about what its creator guaranteed (that
// the range stays mapped while it is used).
unsafe impl Send for GuestBuf {}

impl GuestBuf {
    /// A buffer of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be one mapped, readable and writable range
    /// that stays mapped for as long as this value, or any copy of it, is
    /// used (guest RAM: whoever creates it keeps the VM's memory alive at
    /// least that long).
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part from `offset` on (empty when `offset` is past the end).
    pub fn skip(&self, offset: usize) -> GuestBuf {
        let off = offset.min(self.len);
        // The result lies within `self`, so the creator's guarantee covers it.
        GuestBuf {
            ptr: self.ptr.wrapping_add(off),
            len: self.len - off,
        }
    }

    /// The buffer as an `iovec` for readv/writev.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        }
    }

    /// Copies from the buffer at `offset` into `dst`; returns the bytes
    /// copied (fewer when the buffer ends first).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let src = self.skip(offset);
        let n = dst.len().min(src.len);
        // SAFETY: `src` is mapped and readable for `src.len >= n` bytes (the
        // creator's guarantee) and `dst` is an exclusive buffer of at least
        // `n` bytes; guest RAM never overlaps a Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr, dst.as_mut_ptr(), n) };
        n
    }

    /// Copies `src` into the buffer at `offset`; returns the bytes copied
    /// (fewer when the buffer ends first).
    pub fn write_at(&self, offset: usize, src: &[u8]) -> usize {
        let dst = self.skip(offset);
        let n = src.len().min(dst.len);
        // SAFETY: `dst` is mapped and writable for `dst.len >= n` bytes (the
        // creator's guarantee); `src` is a live slice of at least `n` bytes
        // that cannot overlap guest RAM.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr, n) };
        n
    }
}

/// The total length of a gather list.
pub fn total_len(bufs: &[GuestBuf]) -> usize {
    bufs.iter().map(GuestBuf::len).sum()
}

/// Appends the bytes of `bufs`, in order, to `out`.
pub fn gather(bufs: &[GuestBuf], out: &mut Vec<u8>) {
    out.reserve(total_len(bufs));
    for b in bufs {
        let start = out.len();
        out.resize(start + b.len(), 0);
        b.read_at(0, &mut out[start..]);
    }
}

/// Copies `src` over `bufs` from their start; returns the bytes copied.
pub fn scatter(bufs: &[GuestBuf], src: &[u8]) -> usize {
    let mut done = 0;
    for b in bufs {
        if done == src.len() {
            break;
        }
        done += b.write_at(0, &src[done..]);
    }
    done
}

/// Copies into `dst` from `bufs` seen as one byte stream starting at
/// `offset`; returns the bytes copied.
pub fn read_stream(bufs: &[GuestBuf], mut offset: usize, dst: &mut [u8]) -> usize {
    let mut done = 0;
    for b in bufs {
        if done == dst.len() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        done += b.read_at(offset, &mut dst[done..]);
        offset = 0;
    }
    done
}

/// Copies `src` into `bufs` seen as one byte stream starting at `offset`;
/// returns the bytes copied.
pub fn write_stream(bufs: &[GuestBuf], mut offset: usize, src: &[u8]) -> usize {
    let mut done = 0;
    for b in bufs {
        if done == src.len() {
            break;
        }
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        done += b.write_at(offset, &src[done..]);
        offset = 0;
    }
    done
}

/// `bufs` without their first `offset` bytes, appended to `out`.
pub fn skip_into(bufs: &[GuestBuf], mut offset: usize, out: &mut Vec<GuestBuf>) {
    for b in bufs {
        if offset >= b.len() {
            offset -= b.len();
            continue;
        }
        out.push(b.skip(offset));
        offset = 0;
    }
}

/// The error a backend answers for a frame that does not fit the buffers
/// it was given to receive into.
pub fn too_small() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "receive buffers too small for the frame",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three buffers of 3, 0 and 5 bytes over one local array.
    fn bufs(mem: &mut [u8; 8]) -> Vec<GuestBuf> {
        let p = mem.as_mut_ptr();
        // SAFETY: all three lie within `mem`, which outlives their use in
        // each test.
        unsafe {
            vec![
                GuestBuf::new(p, 3),
                GuestBuf::new(p.add(3), 0),
                GuestBuf::new(p.add(3), 5),
            ]
        }
    }

    #[test]
    fn streams_span_buffers_and_stop_at_the_end() {
        let mut mem = [0u8; 8];
        let b = bufs(&mut mem);
        assert_eq!(total_len(&b), 8);
        assert_eq!(write_stream(&b, 2, &[1, 2, 3, 4, 5, 6, 7, 8]), 6);
        let mut out = [0u8; 4];
        assert_eq!(read_stream(&b, 1, &mut out), 4);
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(read_stream(&b, 7, &mut out), 1);
        assert_eq!(read_stream(&b, 9, &mut out), 0);
        let mut all = Vec::new();
        gather(&b, &mut all);
        assert_eq!(all, [0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(scatter(&b, &[9; 10]), 8);
        let mut skipped = Vec::new();
        skip_into(&b, 4, &mut skipped);
        assert_eq!(total_len(&skipped), 4);
        assert_eq!(skipped.len(), 1);
        assert!(b[0].skip(10).is_empty());
        drop(b);
        assert_eq!(mem, [9; 8]);
    }
}
