//! C+ mode (the RTL8139C+ programming model 8139cp drives): 16-byte
//! descriptors `{opts1, opts2, addr lo, addr hi}` in rings at TNPDS
//! (normal-priority TX), THPDS (high-priority TX) and RDSAR (RX).
//!
//! Bounds on what the guest controls:
//! - a ring ends at the descriptor with EOR, or after 64 descriptors
//!   (1 KiB, the most a C+ ring holds) when none has it;
//! - a TX frame is gathered from at most 64 descriptors and 64 KiB (plus
//!   headers); a chain without LS within 64 descriptors, or longer than
//!   that, is handed back with the error bit and counted;
//! - a received frame spans at most 64 descriptors;
//! - descriptor and buffer addresses go through guest-memory accessors: a
//!   range outside RAM fails that DMA (SERR), nothing is read or written.

use vm_memory::{Address, Bytes, GuestAddress};

use super::normal::RxResult;
use super::regs::*;
use super::state::State;

/// Most descriptors in a ring (and in one frame).
pub const MAX_RING_DESCS: u16 = 64;
/// Size of a descriptor.
const DESC_SIZE: u64 = 16;
/// Longest TX frame gathered: a 64 KiB IP datagram with its MAC header and
/// a VLAN tag.
pub const MAX_TX_FRAME: usize = 65_535 + 18;
/// Longest frame (without CRC) received in C+ mode: the descriptor length
/// field holds 13 bits, CRC included.
pub const MAX_RX_FRAME: usize = RXD_LEN_MASK as usize - 4;
/// Normal-priority TX ring.
pub const RING_NORMAL: usize = 0;
/// High-priority TX ring.
pub const RING_HIGH: usize = 1;

/// One descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Command / status word.
    pub opts1: u32,
    /// VLAN word.
    pub opts2: u32,
    /// Buffer address.
    pub addr: u64,
}

impl Desc {
    /// Decodes the little-endian layout.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Desc {
            opts1: u32_at(0),
            opts2: u32_at(4),
            addr: u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32),
        }
    }

    /// Encodes the little-endian layout.
    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.opts1.to_le_bytes());
        b[4..8].copy_from_slice(&self.opts2.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b
    }
}

/// Address of descriptor `idx` of the ring at `base` (None if it wraps).
fn desc_addr(base: u64, idx: u16) -> Option<GuestAddress> {
    base.checked_add(u64::from(idx) * DESC_SIZE)
        .filter(|a| a.checked_add(DESC_SIZE - 1).is_some())
        .map(GuestAddress)
}

/// The index after `idx` (whose first word is `opts1`).
fn next_idx(idx: u16, opts1: u32) -> u16 {
    if opts1 & DESC_EOR != 0 || idx + 1 >= MAX_RING_DESCS {
        0
    } else {
        idx + 1
    }
}

/// Why a TX chain was handed back unsent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxFault {
    /// No LS within the descriptor limit.
    #[error("no last-segment descriptor within {MAX_RING_DESCS} descriptors")]
    NoLastSegment,
    /// More than [`MAX_TX_FRAME`] bytes.
    #[error("frame longer than {MAX_TX_FRAME} bytes")]
    TooLong,
    /// A buffer outside guest RAM.
    #[error("buffer outside guest memory")]
    Dma,
}

/// A TX frame taken from a ring: what to write back once it is sent.
#[derive(Debug, Clone, Default)]
pub struct TxChain {
    /// Ring base when the frame was taken.
    pub base: u64,
    /// Reset generation when the frame was taken.
    pub gen: u64,
    /// `(index, opts1)` of each descriptor, in order.
    pub descs: Vec<(u16, u32)>,
    /// First descriptor's command word (offload requests).
    pub opts1: u32,
    /// First descriptor's VLAN word.
    pub opts2: u32,
}

/// What the TX rings hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpTx {
    /// Nothing to send (rings drained, not polled, or TX off).
    Empty,
    /// A frame's first descriptors are owned, the rest not yet: wait.
    Wait,
    /// A frame is in the buffer.
    Frame,
    /// A chain was consumed but cannot be sent.
    Bad(TxFault),
}

/// Whether the RX ring can take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Enough descriptors are owned by the chip.
    Yes,
    /// Not now.
    No,
    /// Never as the ring is (too small, or outside RAM): drop the frame.
    Never,
}

impl State {
    fn read_desc(&mut self, at: Option<GuestAddress>) -> Option<Desc> {
        let mut b = [0u8; 16];
        match at.map(|a| self.mem.read_slice(&mut b, a)) {
            Some(Ok(())) => Some(Desc::from_bytes(&b)),
            _ => {
                self.raise_deferred(INT_SERR);
                None
            }
        }
    }

    /// Whether the head of TX ring `ring` is one whole frame of at most
    /// `max` bytes in a single descriptor the chip owns. No side effects:
    /// an unreadable descriptor is simply `false` (the worker reports it).
    pub fn cp_small_frame_queued(&self, ring: usize, max: usize) -> bool {
        let Some(at) = desc_addr(self.cp_ring_base(ring), self.cp_tx[ring]) else {
            return false;
        };
        let mut b = [0u8; 16];
        if self.mem.read_slice(&mut b, at).is_err() {
            return false;
        }
        let d = Desc::from_bytes(&b);
        let whole = DESC_OWN | DESC_FS | DESC_LS;
        d.opts1 & whole == whole && (d.opts1 & TXD_LEN_MASK) as usize <= max
    }

    /// Start of TX ring `ring`.
    pub fn cp_ring_base(&self, ring: usize) -> u64 {
        let (lo, hi) = if ring == RING_HIGH { (2, 3) } else { (0, 1) };
        u64::from(self.tsad[lo]) | (u64::from(self.tsad[hi]) << 32)
    }

    /// Takes the next frame from the polled TX rings (high priority first).
    pub fn cp_pop_tx(&mut self, buf: &mut Vec<u8>, chain: &mut TxChain) -> CpTx {
        if !self.tx_enabled() {
            return CpTx::Empty;
        }
        for (ring, flag) in [(RING_HIGH, TPPOLL_HPQ), (RING_NORMAL, TPPOLL_NPQ)] {
            if self.tppoll & flag == 0 {
                continue;
            }
            match self.cp_gather(ring, buf, chain) {
                CpTx::Empty => {
                    self.tppoll &= !flag;
                    if ring == RING_NORMAL {
                        self.raise_deferred(INT_TDU);
                    }
                }
                other => return other,
            }
        }
        CpTx::Empty
    }

    fn cp_gather(&mut self, ring: usize, buf: &mut Vec<u8>, chain: &mut TxChain) -> CpTx {
        let base = self.cp_ring_base(ring);
        let mut idx = self.cp_tx[ring];
        buf.clear();
        chain.descs.clear();
        chain.base = base;
        chain.gen = self.gen;
        let mut fault = None;
        for k in 0..MAX_RING_DESCS {
            let Some(d) = self.read_desc(desc_addr(base, idx)) else {
                return CpTx::Empty;
            };
            if d.opts1 & DESC_OWN == 0 {
                return if k == 0 { CpTx::Empty } else { CpTx::Wait };
            }
            if k == 0 {
                chain.opts1 = d.opts1;
                chain.opts2 = d.opts2;
            }
            chain.descs.push((idx, d.opts1));
            let len = (d.opts1 & TXD_LEN_MASK) as usize;
            if fault.is_none() && buf.len() + len > MAX_TX_FRAME {
                fault = Some(TxFault::TooLong);
            }
            if fault.is_none() && len > 0 {
                let start = buf.len();
                buf.resize(start + len, 0);
                if self
                    .mem
                    .read_slice(&mut buf[start..], GuestAddress(d.addr))
                    .is_err()
                {
                    fault = Some(TxFault::Dma);
                    self.raise_deferred(INT_SERR);
                }
            }
            idx = next_idx(idx, d.opts1);
            if d.opts1 & DESC_LS != 0 {
                self.cp_tx[ring] = idx;
                return fault.map_or(CpTx::Frame, CpTx::Bad);
            }
        }
        self.cp_tx[ring] = idx;
        CpTx::Bad(TxFault::NoLastSegment)
    }

    /// Hands `chain` back to the driver (OWN cleared, status written: the
    /// error summary bit on the last descriptor unless `ok`) and raises TOK
    /// or TER.
    pub fn cp_complete_tx(&mut self, chain: &TxChain, ok: bool) {
        if chain.gen != self.gen {
            return;
        }
        let n = chain.descs.len();
        for (k, &(idx, opts1)) in chain.descs.iter().enumerate() {
            // The status word replaces the command bits (MSS, offload
            // requests); ring end, segment marks and length stay.
            let mut v = opts1 & (DESC_EOR | DESC_FS | DESC_LS | TXD_LEN_MASK);
            if !ok && k + 1 == n {
                v |= TXD_ERROR;
            }
            if let Some(a) = desc_addr(chain.base, idx) {
                // The descriptor was readable a moment ago; a guest that
                // unplugged its memory since only loses the status.
                let _ = self.mem.write_slice(&v.to_le_bytes(), a);
            }
        }
        if ok {
            self.tally.tx_ok += 1;
            self.raise_deferred(INT_TOK);
        } else {
            self.tally.tx_err += 1;
            self.raise_deferred(INT_TER);
        }
    }

    /// Whether the RX ring can take `len` bytes (CRC included) now.
    pub fn cp_rx_room(&mut self, len: usize) -> Room {
        let mut idx = self.cp_rx;
        let mut cap = 0usize;
        for _ in 0..MAX_RING_DESCS {
            let Some(d) = self.read_desc(desc_addr(self.rdsar, idx)) else {
                return Room::Never;
            };
            if d.opts1 & DESC_OWN == 0 {
                return Room::No;
            }
            cap += (d.opts1 & RXD_LEN_MASK) as usize;
            if cap >= len {
                return Room::Yes;
            }
            idx = next_idx(idx, d.opts1);
        }
        Room::Never
    }

    /// Writes `frame` (CRC included, at most 8191 bytes) into the
    /// descriptors at the RX position, hands them back with `status`
    /// (protocol and address-match bits) and `opts2`, and raises ROK.
    pub fn cp_rx(&mut self, frame: &[u8], status: u32, opts2: u32) -> RxResult {
        match self.cp_rx_room(frame.len()) {
            Room::Yes => {}
            Room::No => return RxResult::NoRoom,
            Room::Never => {
                self.tally.rx_err += 1;
                return RxResult::Dropped;
            }
        }
        // (index, opts1, bytes taken) of each descriptor used.
        let mut used: Vec<(u16, Desc, usize)> = Vec::with_capacity(4);
        let mut idx = self.cp_rx;
        let mut off = 0usize;
        while off < frame.len() || used.is_empty() {
            let Some(d) = self.read_desc(desc_addr(self.rdsar, idx)) else {
                return RxResult::Dropped;
            };
            if d.opts1 & DESC_OWN == 0 || used.len() >= usize::from(MAX_RING_DESCS) {
                // The guest took a descriptor back since the room check.
                return RxResult::NoRoom;
            }
            let take = ((d.opts1 & RXD_LEN_MASK) as usize).min(frame.len() - off);
            if take > 0
                && self
                    .mem
                    .write_slice(&frame[off..off + take], GuestAddress(d.addr))
                    .is_err()
            {
                self.tally.rx_err += 1;
                self.raise_deferred(INT_SERR);
                return RxResult::Dropped;
            }
            used.push((idx, d, take));
            off += take;
            idx = next_idx(idx, d.opts1);
        }
        let n = used.len();
        for (k, &(i, d, take)) in used.iter().enumerate().rev() {
            let mut v = d.opts1 & DESC_EOR;
            if k == 0 {
                v |= DESC_FS;
            }
            v |= if k + 1 == n {
                DESC_LS | status | frame.len() as u32
            } else {
                take as u32
            };
            if let Some(a) = desc_addr(self.rdsar, i) {
                // opts2 before opts1, which hands the descriptor back.
                // Readable a moment ago; see cp_complete_tx.
                let _ = self
                    .mem
                    .write_slice(&opts2.to_le_bytes(), a.unchecked_add(4));
                let _ = self.mem.write_slice(&v.to_le_bytes(), a);
            }
        }
        self.cp_rx = idx;
        self.raise_deferred(INT_ROK);
        RxResult::Delivered
    }
}
