//! The receive path: filtering a frame as the guest programmed the
//! receiver, then writing it into legacy receive descriptors.
//!
//! Deciding happens under the device lock ([`plan`]); copying into guest
//! buffers happens outside it ([`write_frame`]); descriptor write-back and
//! the head update happen under the lock again, after checking that the
//! guest did not reset the device or rewrite the ring meanwhile.

use tapir_net_backend::offload::be16;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::filter::{self, Cast};
use super::regs::*;
use super::ring::Ring;
use super::rx_csum;
use super::state::{E1000State, Regs};
use crate::crc;

/// Shortest frame on the wire without its FCS; shorter ones are padded.
pub const MIN_FRAME: usize = 60;
/// Longest frame without LPE (1518 with FCS), without FCS.
const MAX_STD_FRAME: usize = 1514;
/// Longest frame with LPE (16384 with FCS), without FCS.
const MAX_LONG_FRAME: usize = 16380;
/// Length of an FCS and of an 802.1Q tag.
const FCS_LEN: usize = 4;
const TAG_LEN: usize = 4;

/// How one accepted frame goes into the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Remove the 802.1Q tag into `special`.
    pub strip: bool,
    /// Tag control information of a stripped tag.
    pub tci: u16,
    /// Append the FCS.
    pub fcs: bool,
    /// Bytes written to the buffers.
    pub len: usize,
    /// Receive buffer size.
    pub buf_size: usize,
    /// Descriptors used.
    pub descs: u32,
    /// How the frame was addressed.
    pub cast: Cast,
    /// Frame length on the wire, FCS included (statistics).
    pub wire_len: usize,
    /// RXCSUM when the frame was planned (checksum offload).
    pub rxcsum: u32,
    /// Offset of the EtherType the IP header follows.
    pub etype_at: usize,
    /// The TCP/UDP checksum is known to be right.
    pub l4_valid: bool,
}

/// What the receiver does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Accept(Plan),
    /// Not for us (address or VLAN filters).
    Filtered,
    /// Longer than the receiver accepts.
    Oversize,
}

/// The receive buffer size RCTL selects.
pub fn buffer_size(rctl: u32) -> usize {
    let bsize = (rctl >> RCTL_BSIZE_SHIFT) & 3;
    match (rctl & RCTL_BSEX != 0, bsize) {
        (false, 0) | (true, 0) => 2048,
        (false, 1) => 1024,
        (false, 2) => 512,
        (false, _) => 256,
        (true, 1) => 16384,
        (true, 2) => 8192,
        (true, _) => 4096,
    }
}

/// Decides what happens to `frame` (at least [`MIN_FRAME`] bytes);
/// `l4_valid`: its TCP/UDP checksum is known to be right.
pub fn plan(regs: &Regs, frame: &[u8], l4_valid: bool) -> Verdict {
    let rctl = regs.get(RCTL);
    let tagged = be16(frame, 12) == regs.get(VET) as u16;
    let tci = if tagged { be16(frame, 14) } else { 0 };
    if tagged && !filter::accepts_vlan(regs, tci) {
        return Verdict::Filtered;
    }
    let dst: [u8; 6] = frame[..6].try_into().unwrap_or([0; 6]);
    if !filter::accepts_address(regs, &dst) {
        return Verdict::Filtered;
    }
    let max = if rctl & RCTL_LPE != 0 {
        MAX_LONG_FRAME
    } else {
        MAX_STD_FRAME + if tagged { TAG_LEN } else { 0 }
    };
    if frame.len() > max {
        return Verdict::Oversize;
    }
    let strip = tagged && regs.get(CTRL) & CTRL_VME != 0;
    let fcs = rctl & RCTL_SECRC == 0;
    let len = frame.len() - if strip { TAG_LEN } else { 0 } + if fcs { FCS_LEN } else { 0 };
    let buf_size = buffer_size(rctl);
    Verdict::Accept(Plan {
        strip,
        tci,
        fcs,
        len,
        buf_size,
        descs: len.div_ceil(buf_size) as u32,
        cast: Cast::of(&dst),
        wire_len: frame.len() + FCS_LEN,
        rxcsum: regs.get(RXCSUM),
        etype_at: if tagged { 12 + TAG_LEN } else { 12 },
        l4_valid,
    })
}

/// One descriptor's write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBack {
    /// Descriptor index.
    pub idx: u32,
    /// Bytes in its buffer.
    pub len: u16,
    /// Status (DD, EOP, IXSM, VP, IPCS, TCPCS).
    pub status: u8,
    /// Errors (RXE when the buffer could not be written; IPE, TCPE).
    pub errors: u8,
    /// VLAN tag control information.
    pub special: u16,
}

/// How writing a frame into the ring went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The frame is in the buffers; the index after the last descriptor.
    Done(u32),
    /// A buffer is outside guest memory: the descriptors up to it are
    /// written back (the last with RXE) and consumed, up to this index;
    /// the frame is dropped.
    BufferFault(u32),
    /// A descriptor could not be read: nothing can be written back.
    RingFault,
}

/// Copies `frame` as `plan` says into the descriptors from `head`,
/// appending the write-backs to `wb`. The checksum offload results go
/// on the last descriptor (where the driver reads them).
pub fn write_frame(
    mem: &GuestMemoryMmap,
    ring: &Ring,
    head: u32,
    frame: &[u8],
    plan: &Plan,
    wb: &mut Vec<WriteBack>,
) -> Written {
    let fcs = if plan.fcs { crc::fcs(&[frame]) } else { [0; 4] };
    let (a, b) = if plan.strip {
        (&frame[..12], &frame[12 + TAG_LEN..])
    } else {
        (&frame[..12], &frame[12..])
    };
    let c = &fcs[..if plan.fcs { FCS_LEN } else { 0 }];
    let mut parts = [a, b, c];
    let mut part = 0;
    let mut idx = head;
    let (csum, csum_err) = rx_csum::status(plan.rxcsum, frame, plan.etype_at, plan.l4_valid);
    let mut status = RXD_STAT_DD | (csum & RXD_STAT_IXSM);
    let special = if plan.strip {
        status |= RXD_STAT_VP;
        plan.tci
    } else {
        0
    };
    for n in 0..plan.descs {
        let last = n + 1 == plan.descs;
        let mut addr = [0u8; 8];
        if ring
            .desc(idx)
            .is_none_or(|d| mem.read_slice(&mut addr, d).is_err())
        {
            return Written::RingFault;
        }
        let addr = u64::from_le_bytes(addr);
        let mut written = 0usize;
        let mut failed = false;
        while written < plan.buf_size && part < parts.len() {
            let p = parts[part];
            if p.is_empty() {
                part += 1;
                continue;
            }
            let take = p.len().min(plan.buf_size - written);
            let ok = addr
                .checked_add(written as u64)
                .is_some_and(|a| mem.write_slice(&p[..take], GuestAddress(a)).is_ok());
            if !ok {
                failed = true;
                break;
            }
            parts[part] = &p[take..];
            written += take;
        }
        let next = ring.next(idx);
        if failed {
            wb.push(WriteBack {
                idx,
                len: 0,
                status: status | RXD_STAT_EOP,
                errors: RXD_ERR_RXE,
                special,
            });
            return Written::BufferFault(next);
        }
        wb.push(WriteBack {
            idx,
            len: written as u16,
            status: if last {
                status | RXD_STAT_EOP | csum
            } else {
                status
            },
            errors: if last { csum_err } else { 0 },
            special,
        });
        idx = next;
    }
    Written::Done(idx)
}

/// Writes the descriptors back (called under the device lock).
pub fn write_back(mem: &GuestMemoryMmap, ring: &Ring, wb: &[WriteBack]) {
    for w in wb {
        let mut d = [0u8; 8];
        d[..2].copy_from_slice(&w.len.to_le_bytes());
        d[4] = w.status;
        d[5] = w.errors;
        d[6..].copy_from_slice(&w.special.to_le_bytes());
        if let Some(a) = ring.desc(w.idx).and_then(|a| a.0.checked_add(8)) {
            let _ = mem.write_slice(&d, GuestAddress(a));
        }
    }
}

/// The packet size counter for a frame of `len` bytes (FCS included).
pub fn size_bucket(base: u32, len: usize) -> Option<u32> {
    let i = match len {
        0..=64 => 0,
        65..=127 => 1,
        128..=255 => 2,
        256..=511 => 3,
        512..=1023 => 4,
        1024..=1522 => 5,
        _ => return None,
    };
    Some(base + 4 * i)
}

/// Counts a delivered frame in the receive statistics.
pub fn count_good(s: &mut E1000State, plan: &Plan) {
    s.count(GPRC, 1);
    s.count64(GORCL, plan.wire_len as u64);
    match plan.cast {
        Cast::Broadcast => s.count(BPRC, 1),
        Cast::Multicast => s.count(MPRC, 1),
        Cast::Unicast => {}
    }
    if let Some(b) = size_bucket(PRC64, plan.wire_len) {
        s.count(b, 1);
    }
}

/// Counts any frame that reached the receiver.
pub fn count_total(s: &mut E1000State, frame_len: usize) {
    s.count(TPR, 1);
    s.count64(TORL, (frame_len + FCS_LEN) as u64);
}

/// Whether the free descriptors crossed the minimum threshold (RDMTS)
/// going from `before` to `after`.
pub fn below_threshold(rctl: u32, count: u32, before: u32, after: u32) -> bool {
    let shift = 1 + ((rctl >> RCTL_RDMTS_SHIFT) & 3).min(2);
    let threshold = count >> shift;
    before > threshold && after <= threshold
}
