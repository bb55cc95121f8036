//! C mode (the RTL8139 programming model 8139too drives): four transmit
//! slots (TSD/TSAD) used round robin, and one receive ring (RBSTART) the
//! chip fills with `[status, length]` headers and frames, 4-byte aligned,
//! while the driver follows with CAPR.
//!
//! Guest-controlled values and what bounds them:
//! - TSD size: 1..=1792 bytes, anything else aborts the slot (TABT, TER);
//! - TSAD / RBSTART: every access goes through guest-memory accessors, a
//!   range outside RAM fails the DMA (SERR) and nothing is transferred;
//! - CAPR: read modulo the ring length, so any value is a position;
//! - RCR.WRAP: a packet written past the ring end is at most 1540 bytes
//!   (longer frames are refused), inside the 1.5 KiB the datasheet asks
//!   drivers to reserve after the ring.

use vm_memory::{Bytes, GuestAddress};

use super::regs::*;
use super::state::State;

/// Longest frame (without CRC) received in C mode: longer ones would make
/// 8139too reset its receiver, and with WRAP set could run past the
/// padding drivers reserve after the ring.
pub const MAX_RX_FRAME: usize = 1536;

/// What the next transmit slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTx {
    /// The next slot in turn is not queued (or TX is off).
    Empty,
    /// The slot was bad (size, address) and has been completed with TABT.
    Aborted,
    /// The slot's frame is in the buffer.
    Frame(usize),
}

/// Outcome of writing a received frame into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxResult {
    /// Written; the guest was told.
    Delivered,
    /// No room now (ring full / no descriptor owned by the chip).
    NoRoom,
    /// Refused (receiver off, filtered, too long, DMA error).
    Dropped,
}

/// Ring bytes a frame of `len` bytes (CRC included) takes: header, frame,
/// rounded up to 4.
pub fn ring_need(len: usize) -> u32 {
    ((4 + len as u32) + 3) & !3
}

impl State {
    /// Takes the frame of the next slot in turn into `buf`.
    pub fn normal_pop_tx(&mut self, buf: &mut Vec<u8>) -> SlotTx {
        if !self.tx_enabled() {
            return SlotTx::Empty;
        }
        let slot = self.tx_next;
        let tsd = self.tsd[slot];
        if tsd & TSD_OWN != 0 {
            return SlotTx::Empty;
        }
        self.tx_next = (slot + 1) % 4;
        let size = (tsd & TSD_SIZE_MASK) as usize;
        if size == 0 || size > TSD_MAX_SIZE {
            self.abort_slot(slot, false);
            return SlotTx::Aborted;
        }
        buf.clear();
        buf.resize(size, 0);
        let addr = GuestAddress(u64::from(self.tsad[slot]));
        if self.mem.read_slice(buf, addr).is_err() {
            buf.clear();
            self.abort_slot(slot, true);
            return SlotTx::Aborted;
        }
        SlotTx::Frame(slot)
    }

    fn abort_slot(&mut self, slot: usize, dma: bool) {
        self.tsd[slot] |= TSD_OWN | TSD_TABT;
        self.tally.tx_err += 1;
        self.tally.tx_abort = self.tally.tx_abort.saturating_add(1);
        self.raise_deferred(if dma { INT_TER | INT_SERR } else { INT_TER });
    }

    /// The frame of `slot` (taken in reset generation `gen`) was sent.
    pub fn normal_complete_tx(&mut self, slot: usize, gen: u64) {
        if gen != self.gen || slot >= 4 {
            return;
        }
        self.tsd[slot] |= TSD_OWN | TSD_TOK;
        self.tally.tx_ok += 1;
        self.raise_deferred(INT_TOK);
    }

    /// Whether a frame of `len` bytes (CRC included) fits in the ring now.
    pub fn normal_room(&self, len: usize) -> bool {
        ring_need(len) < self.ring_free()
    }

    /// Writes `frame` (CRC included, at most `MAX_RX_FRAME` + 4 bytes) at
    /// CBR with its header, moves CBR and raises ROK.
    pub fn normal_rx(&mut self, frame: &[u8], status: u16) -> RxResult {
        if !self.normal_room(frame.len()) {
            return RxResult::NoRoom;
        }
        let len = self.ring_len();
        let off = u32::from(self.cbr) % len;
        let base = u64::from(self.rbstart);
        let at = |o: u32| GuestAddress(base + u64::from(o));
        let data = off + 4;
        let ok = if self.rcr & RCR_WRAP != 0 && len < 65536 {
            // WRAP set: the frame continues past the ring end.
            self.mem.write_slice(frame, at(data)).is_ok()
        } else {
            let first = ((len - data) as usize).min(frame.len());
            let rest = &frame[first..];
            (first == 0 || self.mem.write_slice(&frame[..first], at(data)).is_ok())
                && (rest.is_empty() || self.mem.write_slice(rest, at(0)).is_ok())
        };
        let mut header = [0u8; 4];
        header[..2].copy_from_slice(&(status | RXH_ROK).to_le_bytes());
        header[2..].copy_from_slice(&(frame.len() as u16).to_le_bytes());
        if !ok || self.mem.write_slice(&header, at(off)).is_err() {
            self.tally.rx_err += 1;
            self.raise_deferred(INT_SERR);
            return RxResult::Dropped;
        }
        self.cbr = ((off + ring_need(frame.len())) % len) as u16;
        self.raise_deferred(INT_ROK);
        RxResult::Delivered
    }
}
