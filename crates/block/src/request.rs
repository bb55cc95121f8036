//! One virtio-blk request: parsing a descriptor chain ([`Request::parse`])
//! and carrying it out against a [`DiskBackend`] ([`Request::execute`]).
//!
//! A chain is seen as two byte streams, as the virtio 1.x layout rules
//! say (the driver may split the request anywhere): what the device reads
//! (its descriptors without WRITE) and, after it, what the device writes.
//! The device-readable stream starts with the 16-byte header
//! (`virtio_blk_outhdr`); the device-writable stream ends with the status
//! byte. Between them lie the data: for writes, discards and the like
//! after the header in the readable stream; for reads and GET_ID before
//! the status in the writable stream.
//!
//! Everything here is guest-controlled and checked before the disk or
//! guest memory is touched: every buffer lies in guest RAM (the whole
//! chain is refused otherwise), the chain's length is bounded by the queue
//! (virtio-queue stops after queue-size descriptors; a chain still going
//! on then is refused), reads and writes are whole sectors inside the
//! disk, and data buffers go the right way. A chain without a usable
//! status byte (none, or one outside RAM) cannot be answered and is
//! returned with nothing written; a chain whose status byte is usable but
//! that is otherwise bad gets IOERR there.

use std::io;

use virtio_bindings::bindings::virtio_blk::{
    virtio_blk_discard_write_zeroes, virtio_blk_outhdr, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice};

use crate::backend::{DiskBackend, SECTOR_SIZE};

/// Size of the request header.
pub const HEADER_LEN: usize = std::mem::size_of::<virtio_blk_outhdr>();
/// Size of one discard segment.
pub const SEGMENT_LEN: usize = std::mem::size_of::<virtio_blk_discard_write_zeroes>();

/// How the disk is offered; fixed for the life of a device.
#[derive(Debug, Clone)]
pub struct DiskProps {
    /// Writes, discards fail with IOERR.
    pub read_only: bool,
    /// The GET_ID answer: up to 20 bytes, zero-padded.
    pub serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// At most this many segments in one discard request.
    pub max_discard_seg: u32,
    /// At most this many sectors in one discard segment.
    pub max_discard_sectors: u32,
}

/// A chain that cannot be served, as logged; the guest gets IOERR, or
/// nothing when the status byte is what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A descriptor points outside guest RAM.
    #[error("a buffer at {addr:#x} (+{len}) is outside guest RAM")]
    OutsideRam { addr: u64, len: u32 },
    /// A readable descriptor after a writable one.
    #[error("a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable,
    /// The chain still goes on after queue-size descriptors (a loop).
    #[error("the chain is longer than the queue (a descriptor loop)")]
    TooLong,
    /// The chain could not be walked (a bad indirect table, ...).
    #[error("the descriptor chain is malformed")]
    Malformed,
    /// No device-writable byte for the status.
    #[error("no device-writable status byte")]
    NoStatus,
    /// Fewer than 16 device-readable bytes.
    #[error("the header is {0} bytes, not 16")]
    ShortHeader(usize),
    /// Data buffers of the wrong direction for the request type.
    #[error("request type {kind}: {readable} readable and {writable} writable data bytes")]
    WrongDirection {
        kind: u32,
        readable: usize,
        writable: usize,
    },
    /// Read or write data that is not whole sectors.
    #[error("request type {kind}: {len} data bytes are not whole sectors")]
    NotSectors { kind: u32, len: usize },
    /// Sectors past the end of the disk.
    #[error("sectors {sector}+{count} are past the end of the disk ({size} sectors)")]
    OutOfRange { sector: u64, count: u64, size: u64 },
    /// A discard with a bad segment list.
    #[error("discard: {0}")]
    BadDiscard(&'static str),
}

/// One contiguous guest buffer, checked to lie in guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Buf {
    addr: GuestAddress,
    len: usize,
}

/// Buffers seen as one byte stream.
#[derive(Debug, Default, Clone)]
struct Stream {
    bufs: Vec<Buf>,
    len: usize,
}

impl Stream {
    fn push(&mut self, b: Buf) {
        self.len += b.len;
        self.bufs.push(b);
    }

    /// The guest pieces of bytes `offset..offset + len` of the stream.
    fn pieces(&self, mut offset: usize, mut len: usize) -> impl Iterator<Item = Buf> + '_ {
        self.bufs.iter().filter_map(move |b| {
            if len == 0 {
                return None;
            }
            if offset >= b.len {
                offset -= b.len;
                return None;
            }
            let n = (b.len - offset).min(len);
            // A buffer the guest placed at the top of the address space
            // wraps: such a piece gets an address that is never RAM (the
            // access then fails) instead of a wrapped one that may be.
            let piece = Buf {
                addr: GuestAddress(b.addr.0.saturating_add(offset as u64)),
                len: n,
            };
            offset = 0;
            len -= n;
            Some(piece)
        })
    }

    /// Copies stream bytes from `offset` into `out` (in RAM: checked).
    fn read(&self, mem: &GuestMemoryMmap, offset: usize, out: &mut [u8]) -> bool {
        let mut done = 0;
        for p in self.pieces(offset, out.len()) {
            if mem
                .read_slice(&mut out[done..done + p.len], p.addr)
                .is_err()
            {
                return false;
            }
            done += p.len;
        }
        done == out.len()
    }

    /// The guest memory of stream bytes `offset..offset + len`, split at
    /// buffer and memory-region boundaries (in RAM: checked).
    fn slices<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
        offset: usize,
        len: usize,
    ) -> Option<Vec<VolatileSlice<'m>>> {
        let mut out = Vec::new();
        for p in self.pieces(offset, len) {
            for s in vm_memory::GuestMemoryBackend::get_slices(mem, p.addr, p.len) {
                out.push(s.ok()?);
            }
        }
        Some(out)
    }

    /// Copies `data` into the stream from `offset`.
    fn write(&self, mem: &GuestMemoryMmap, offset: usize, data: &[u8]) -> bool {
        let mut done = 0;
        for p in self.pieces(offset, data.len()) {
            if mem.write_slice(&data[done..done + p.len], p.addr).is_err() {
                return false;
            }
            done += p.len;
        }
        done == data.len()
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read sectors into the guest.
    Read,
    /// Write guest data to sectors.
    Write,
    /// Make written data durable.
    Flush,
    /// The serial number.
    GetId,
    /// Deallocate sector ranges.
    Discard,
    /// Anything else: answered VIRTIO_BLK_S_UNSUPP.
    Unsupported(u32),
}

/// A parsed request, ready to run.
#[derive(Debug)]
pub struct Request {
    kind: Kind,
    sector: u64,
    readable: Stream,
    writable: Stream,
    /// Where the status byte goes.
    status: GuestAddress,
}

/// What became of a chain: the status to write (if it has a place) and
/// the used length to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// VIRTIO_BLK_S_*.
    pub status: u8,
    /// Bytes the device wrote into the chain.
    pub used_len: u32,
}

impl Completion {
    /// A request that failed before it ran: IOERR, only the status written.
    pub const IOERR: Completion = Completion {
        status: VIRTIO_BLK_S_IOERR as u8,
        used_len: 1,
    };
    /// An unsupported request.
    const UNSUPP: Completion = Completion {
        status: VIRTIO_BLK_S_UNSUPP as u8,
        used_len: 1,
    };
}

/// Splits a chain into its readable and writable streams. A chain with a
/// buffer outside guest RAM is refused with the place of its status byte
/// when that byte itself lies in RAM (the guest then gets IOERR).
fn walk<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
) -> Result<(Stream, Stream), (ChainError, Option<GuestAddress>)>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let mut readable = Stream::default();
    let mut writable = Stream::default();
    let mut last_has_next = false;
    let mut outside = None;
    let mut chain = chain;
    for desc in &mut chain {
        last_has_next = desc.has_next();
        let (addr, len) = (desc.addr(), desc.len());
        let need = if desc.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if len > 0 && !mem.check_range(addr, len as usize, need) && outside.is_none() {
            outside = Some(ChainError::OutsideRam { addr: addr.0, len });
        }
        let b = Buf {
            addr,
            len: len as usize,
        };
        if desc.is_write_only() {
            writable.push(b);
        } else if !writable.bufs.is_empty() {
            return Err((ChainError::ReadableAfterWritable, None));
        } else {
            readable.push(b);
        }
    }
    if last_has_next {
        return Err((ChainError::TooLong, None));
    }
    if readable.bufs.is_empty() && writable.bufs.is_empty() {
        return Err((ChainError::Malformed, None));
    }
    if let Some(e) = outside {
        let status =
            last_writable_byte(&writable).filter(|&at| mem.check_range(at, 1, Permissions::Write));
        return Err((e, status));
    }
    Ok((readable, writable))
}

/// Where the status byte of a chain with writable stream `w` goes.
fn last_writable_byte(w: &Stream) -> Option<GuestAddress> {
    let last = w.len.checked_sub(1)?;
    w.pieces(last, 1).next().map(|p| p.addr)
}

impl Request {
    /// Parses `chain`. `Err` with the place of the status byte (when the
    /// chain has one) for a chain that is answered IOERR without running.
    pub fn parse<M>(
        chain: DescriptorChain<M>,
        mem: &GuestMemoryMmap,
        disk_sectors: u64,
    ) -> Result<Request, (ChainError, Option<GuestAddress>)>
    where
        M: std::ops::Deref,
        M::Target: GuestMemory,
    {
        let (readable, mut writable) = walk(chain, mem)?;
        // The status is the last device-writable byte.
        let status = last_writable_byte(&writable).ok_or((ChainError::NoStatus, None))?;
        writable.len -= 1;
        let fail = |e| (e, Some(status));
        if readable.len < HEADER_LEN {
            return Err(fail(ChainError::ShortHeader(readable.len)));
        }
        let mut hdr = [0u8; HEADER_LEN];
        if !readable.read(mem, 0, &mut hdr) {
            return Err(fail(ChainError::Malformed));
        }
        // virtio_blk_outhdr: type (le32), ioprio (le32), sector (le64).
        let kind_raw = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        let data_in = readable.len - HEADER_LEN;
        let data_out = writable.len;
        let kind = match kind_raw {
            VIRTIO_BLK_T_IN => Kind::Read,
            VIRTIO_BLK_T_OUT => Kind::Write,
            VIRTIO_BLK_T_FLUSH => Kind::Flush,
            VIRTIO_BLK_T_GET_ID => Kind::GetId,
            VIRTIO_BLK_T_DISCARD => Kind::Discard,
            other => Kind::Unsupported(other),
        };
        let wrong = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(fail(ChainError::WrongDirection {
                    kind: kind_raw,
                    readable: data_in,
                    writable: data_out,
                }))
            }
        };
        let len = match kind {
            Kind::Read | Kind::GetId => {
                wrong(data_in == 0)?;
                data_out
            }
            Kind::Write | Kind::Discard => {
                wrong(data_out == 0)?;
                data_in
            }
            Kind::Flush | Kind::Unsupported(_) => 0,
        };
        if matches!(kind, Kind::Read | Kind::Write) {
            if !(len as u64).is_multiple_of(SECTOR_SIZE) {
                return Err(fail(ChainError::NotSectors {
                    kind: kind_raw,
                    len,
                }));
            }
            check_range(sector, len as u64 / SECTOR_SIZE, disk_sectors).map_err(fail)?;
        }
        Ok(Request {
            kind,
            sector,
            readable,
            writable,
            status,
        })
    }

    /// What the request asks for.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where its status byte goes.
    pub fn status_addr(&self) -> GuestAddress {
        self.status
    }

    /// Runs the request against `disk`, data going straight between guest
    /// memory `mem` and the disk, and says what to report, with the
    /// failure to log, if any.
    pub fn execute(
        &self,
        mem: &GuestMemoryMmap,
        disk: &dyn DiskBackend,
        props: &DiskProps,
    ) -> (Completion, Option<ExecError>) {
        let ok = |written: usize| Completion {
            status: VIRTIO_BLK_S_OK as u8,
            used_len: (written + 1) as u32,
        };
        let ioerr = |e| (Completion::IOERR, Some(e));
        match self.kind {
            Kind::Read => match self.read(mem, disk) {
                Ok(n) => (ok(n), None),
                Err(e) => ioerr(e),
            },
            Kind::Write if props.read_only => ioerr(ExecError::ReadOnly),
            Kind::Write => match self.write(mem, disk) {
                Ok(()) => (ok(0), None),
                Err(e) => ioerr(e),
            },
            Kind::Flush if props.read_only => (ok(0), None),
            Kind::Flush => match disk.flush() {
                Ok(()) => (ok(0), None),
                Err(e) => ioerr(ExecError::Disk(e.kind())),
            },
            Kind::GetId => {
                let n = self.writable.len.min(props.serial.len());
                if self.writable.write(mem, 0, &props.serial[..n]) {
                    (ok(n), None)
                } else {
                    ioerr(ExecError::Memory)
                }
            }
            Kind::Discard if props.read_only => ioerr(ExecError::ReadOnly),
            Kind::Discard => match self.discard(mem, disk, props) {
                Ok(()) => (ok(0), None),
                Err(ExecError::Unsupported) => (Completion::UNSUPP, None),
                Err(e) => ioerr(e),
            },
            Kind::Unsupported(_) => (Completion::UNSUPP, None),
        }
    }

    fn read(&self, mem: &GuestMemoryMmap, disk: &dyn DiskBackend) -> Result<usize, ExecError> {
        let total = self.writable.len;
        let bufs = self
            .writable
            .slices(mem, 0, total)
            .ok_or(ExecError::Memory)?;
        disk.read_at(self.sector * SECTOR_SIZE, &bufs)
            .map_err(|e| ExecError::Disk(e.kind()))?;
        Ok(total)
    }

    fn write(&self, mem: &GuestMemoryMmap, disk: &dyn DiskBackend) -> Result<(), ExecError> {
        let total = self.readable.len - HEADER_LEN;
        let bufs = self
            .readable
            .slices(mem, HEADER_LEN, total)
            .ok_or(ExecError::Memory)?;
        disk.write_at(self.sector * SECTOR_SIZE, &bufs)
            .map_err(|e| ExecError::Disk(e.kind()))
    }

    fn discard(
        &self,
        mem: &GuestMemoryMmap,
        disk: &dyn DiskBackend,
        props: &DiskProps,
    ) -> Result<(), ExecError> {
        let total = self.readable.len - HEADER_LEN;
        if total == 0 || !total.is_multiple_of(SEGMENT_LEN) {
            return Err(ExecError::Chain(ChainError::BadDiscard(
                "the data is not whole 16-byte segments",
            )));
        }
        let count = total / SEGMENT_LEN;
        if count > props.max_discard_seg as usize {
            return Err(ExecError::Chain(ChainError::BadDiscard(
                "more segments than max_discard_seg",
            )));
        }
        let disk_sectors = disk.size() / SECTOR_SIZE;
        // Every segment is checked before any is carried out.
        let mut segs = Vec::with_capacity(count);
        for i in 0..count {
            let mut s = [0u8; SEGMENT_LEN];
            if !self
                .readable
                .read(mem, HEADER_LEN + i * SEGMENT_LEN, &mut s)
            {
                return Err(ExecError::Memory);
            }
            // virtio_blk_discard_write_zeroes: sector (le64),
            // num_sectors (le32), flags (le32).
            let sector = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
            let num = u32::from_le_bytes(s[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(s[12..16].try_into().unwrap_or_default());
            if flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
                // The unmap flag means nothing for discard: not supported.
                return Err(ExecError::Unsupported);
            }
            if flags != 0 {
                return Err(ExecError::Chain(ChainError::BadDiscard(
                    "reserved flags are set",
                )));
            }
            if num > props.max_discard_sectors {
                return Err(ExecError::Chain(ChainError::BadDiscard(
                    "a segment is larger than max_discard_sectors",
                )));
            }
            check_range(sector, u64::from(num), disk_sectors).map_err(ExecError::Chain)?;
            segs.push((sector, num));
        }
        for (sector, num) in segs {
            disk.discard(sector * SECTOR_SIZE, u64::from(num) * SECTOR_SIZE)
                .map_err(|e| ExecError::Disk(e.kind()))?;
        }
        Ok(())
    }
}

/// Why a well-formed request failed (the guest gets IOERR, or UNSUPP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// A write or discard to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// The disk failed.
    #[error("disk I/O failed: {0}")]
    Disk(io::ErrorKind),
    /// Guest memory could not be accessed (checked before; a hot-unplugged
    /// region would do it).
    #[error("guest memory access failed")]
    Memory,
    /// The request's contents are bad.
    #[error("{0}")]
    Chain(ChainError),
    /// A request variant the device does not do.
    #[error("unsupported")]
    Unsupported,
}

/// `count` sectors from `sector` must lie on a disk of `disk_sectors`.
fn check_range(sector: u64, count: u64, disk_sectors: u64) -> Result<(), ChainError> {
    match sector.checked_add(count) {
        Some(end) if end <= disk_sectors => Ok(()),
        _ => Err(ChainError::OutOfRange {
            sector,
            count,
            size: disk_sectors,
        }),
    }
}

/// Writes the status byte of a finished chain.
pub fn write_status(mem: &GuestMemoryMmap, at: GuestAddress, status: u8) -> bool {
    mem.write_obj(status, at).is_ok()
}
