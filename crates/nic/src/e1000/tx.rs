//! The transmit descriptor ring: gathering one packet's descriptors
//! (legacy, context and data) and its buffers from guest memory.
//!
//! Every descriptor and buffer address comes from the guest and is read
//! through the checked guest-memory accessors. A packet is bounded to
//! [`MAX_PACKET_DESCS`] descriptors and [`MAX_PACKET_BYTES`] bytes; a ring
//! that is full without an end of packet, a buffer outside RAM, or a packet
//! over the bounds is consumed and dropped (counted), never waited on.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::regs::*;
use super::ring::Ring;
use super::tx_offload::TxContext;

/// Most descriptors (context ones included) one packet may use.
pub const MAX_PACKET_DESCS: u32 = 256;
/// Most bytes one packet may gather: a 64 KiB TSO payload plus headers.
pub const MAX_PACKET_BYTES: usize = 64 * 1024 + 1024;

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// A descriptor lies outside guest memory.
    #[error("descriptor {0} is outside guest memory")]
    DescriptorOutsideRam(u32),
    /// A buffer lies outside guest memory.
    #[error("buffer of descriptor {0} is outside guest memory")]
    BufferOutsideRam(u32),
    /// More descriptors than a packet may use.
    #[error("packet spans more than {MAX_PACKET_DESCS} descriptors")]
    TooManyDescriptors,
    /// More bytes than a packet may hold.
    #[error("packet exceeds {MAX_PACKET_BYTES} bytes")]
    TooLong,
    /// The ring is full and holds no end of packet.
    #[error("the ring is full and no descriptor ends a packet")]
    NoEndOfPacket,
    /// A data descriptor type the 82540 does not define.
    #[error("descriptor {0} has an unknown type")]
    UnknownType(u32),
}

/// How the packet asks for offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Legacy descriptors: an optional checksum from `css` to the end, at `cso`.
    Legacy {
        /// Insert the checksum.
        ic: bool,
        /// Checksum start.
        css: usize,
        /// Checksum offset.
        cso: usize,
    },
    /// Extended data descriptors: POPTS and TSE of the first one.
    Data {
        /// IXSM / TXSM.
        popts: u8,
        /// TCP segmentation.
        tse: bool,
    },
}

/// One packet's worth of descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Index after the packet's last descriptor.
    pub end: u32,
    /// Descriptors with RS: index and status byte as read.
    pub report: Vec<(u32, u8)>,
    /// Offload request.
    pub offload: Offload,
    /// Insert a VLAN tag (VLE of the last descriptor).
    pub vle: bool,
    /// The tag control information for VLE.
    pub special: u16,
}

/// What the descriptors from the head hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gather {
    /// Nothing complete yet: wait for the guest to add descriptors.
    Wait,
    /// A packet whose data is in the buffer.
    Packet(Packet),
    /// Descriptors up to `end` form a packet that must be dropped.
    Drop {
        /// Index after the dropped descriptors.
        end: u32,
        /// Descriptors with RS among them.
        report: Vec<(u32, u8)>,
        /// Why.
        error: TxError,
    },
}

/// Reads descriptors from `ring.head` up to the first end of packet,
/// appending the buffers to `data` (cleared first) and applying context
/// descriptors to `ctx`.
pub fn gather(
    mem: &GuestMemoryMmap,
    ring: &Ring,
    ctx: &mut TxContext,
    data: &mut Vec<u8>,
) -> Gather {
    data.clear();
    let pending = ring.pending_from(ring.head);
    let mut report = Vec::new();
    let mut offload = None;
    let mut error = None;
    let mut idx = ring.head;
    for n in 0..pending {
        let mut d = [0u8; 16];
        let read = ring
            .desc(idx)
            .is_some_and(|a| mem.read_slice(&mut d, a).is_ok());
        let next = ring.next(idx);
        if !read {
            // Without the descriptor there is no telling where the packet
            // ends: drop what was gathered, this descriptor included.
            return Gather::Drop {
                end: next,
                report,
                error: TxError::DescriptorOutsideRam(idx),
            };
        }
        let dword2 = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        let cmd = d[11];
        if cmd & TXD_CMD_RS != 0 {
            report.push((idx, d[12]));
        }
        let ext = cmd & TXD_CMD_DEXT != 0;
        let dtyp = (dword2 >> 20) & 0xF;
        if ext && dtyp == TXD_DTYP_CONTEXT {
            *ctx = TxContext::parse(&d);
        } else if ext && dtyp != TXD_DTYP_DATA {
            error.get_or_insert(TxError::UnknownType(idx));
        } else {
            let len = if ext {
                (dword2 & 0xF_FFFF) as usize
            } else {
                (dword2 & 0xFFFF) as usize
            };
            let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            if error.is_none() {
                if let Err(e) = append(mem, GuestAddress(addr), len, data, idx) {
                    error = Some(e);
                }
            }
            let first = *offload.get_or_insert(if ext {
                Offload::Data {
                    popts: d[13],
                    tse: cmd & TXD_CMD_TSE != 0,
                }
            } else {
                Offload::Legacy {
                    ic: false,
                    css: 0,
                    cso: 0,
                }
            });
            if cmd & TXD_CMD_EOP != 0 {
                let offload = match first {
                    // Legacy checksum fields are taken from the last descriptor.
                    Offload::Legacy { .. } => Offload::Legacy {
                        ic: !ext && cmd & TXD_CMD_IC != 0,
                        css: usize::from(d[13]),
                        cso: usize::from(d[10]),
                    },
                    o => o,
                };
                if let Some(error) = error {
                    return Gather::Drop {
                        end: next,
                        report,
                        error,
                    };
                }
                return Gather::Packet(Packet {
                    end: next,
                    report,
                    offload,
                    vle: cmd & TXD_CMD_VLE != 0,
                    special: u16::from_le_bytes([d[14], d[15]]),
                });
            }
        }
        if n + 1 >= MAX_PACKET_DESCS {
            return Gather::Drop {
                end: next,
                report,
                error: TxError::TooManyDescriptors,
            };
        }
        idx = next;
    }
    if pending > 0 && pending + 1 >= ring.count {
        // The guest cannot add more: this packet will never end.
        return Gather::Drop {
            end: ring.tail,
            report,
            error: TxError::NoEndOfPacket,
        };
    }
    Gather::Wait
}

/// Appends `len` bytes at `addr` to `data`.
fn append(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    data: &mut Vec<u8>,
    idx: u32,
) -> Result<(), TxError> {
    if len == 0 {
        return Ok(());
    }
    let start = data.len();
    if start + len > MAX_PACKET_BYTES {
        return Err(TxError::TooLong);
    }
    data.resize(start + len, 0);
    mem.read_slice(&mut data[start..], addr).map_err(|_| {
        data.truncate(start);
        TxError::BufferOutsideRam(idx)
    })
}

/// Writes DD into the status byte of each reported descriptor.
pub fn report_done(mem: &GuestMemoryMmap, ring: &Ring, report: &[(u32, u8)]) {
    for &(idx, status) in report {
        if let Some(a) = ring.desc(idx).and_then(|a| a.0.checked_add(12)) {
            let _ = mem.write_obj(status | TXD_STAT_DD, GuestAddress(a));
        }
    }
}
