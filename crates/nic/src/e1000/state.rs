//! The register file and everything the guest reaches through BAR 0
//! without the data path: control and status, EEPROM, PHY, interrupt
//! causes and mask, statistics. The model ([`super::E1000Model`]) joins it
//! to the ring logic.

use std::time::{Duration, Instant};

use super::eeprom::{self, Eeprom};
use super::phy::{self, Phy};
use super::regs::*;
use super::{BAR_IO, BAR_MMIO};
use crate::shell::{Doorbells, NicModel};

/// Number of 32-bit registers in BAR 0.
const NUM_REGS: usize = (BAR0_SIZE / 4) as usize;

/// CTRL after reset: full duplex, auto speed detection, 1000 Mb/s; the
/// link is not forced up (drivers set SLU).
const CTRL_DEFAULT: u32 = CTRL_FD | CTRL_ASDE | CTRL_SPD_1000;
/// VET after reset: the 802.1Q TPID.
const VET_DEFAULT: u32 = 0x8100;
/// PBA after reset: 48 KB of the 64 KB packet buffer for receive.
const PBA_DEFAULT: u32 = 0x0030;
/// LEDCTL after reset (link/activity indications).
const LEDCTL_DEFAULT: u32 = 0x0706_8302;
/// RXCSUM after reset: IP and TCP/UDP checksum offload bits.
const RXCSUM_DEFAULT: u32 = 0x0000_0300;

/// The flat register file of BAR 0, indexed by byte offset.
#[derive(Debug, Clone)]
pub struct Regs(Box<[u32]>);

impl Regs {
    fn new() -> Self {
        Regs(vec![0; NUM_REGS].into_boxed_slice())
    }

    /// The register at byte offset `off` (dword aligned, inside BAR 0).
    pub fn get(&self, off: u32) -> u32 {
        self.0.get(off as usize / 4).copied().unwrap_or(0)
    }

    /// Sets the register at byte offset `off`.
    pub fn set(&mut self, off: u32, v: u32) {
        if let Some(r) = self.0.get_mut(off as usize / 4) {
            *r = v;
        }
    }

    fn or(&mut self, off: u32, v: u32) {
        self.set(off, self.get(off) | v);
    }
}

/// Which doorbells a register write rings: the worker must look at the
/// transmit ring, the receive ring, or both.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kick {
    /// Look at the transmit ring.
    pub tx: bool,
    /// Look at the receive ring (buffers may have been added).
    pub rx: bool,
}

/// Everything behind BAR 0 except the data path.
#[derive(Debug)]
pub struct E1000State {
    regs: Regs,
    eeprom: Eeprom,
    phy: Phy,
    /// The INTx level the model wants (the shell drives the line).
    irq_level: bool,
    /// Doorbells rung since the shell last looked (TDT, RDT, ...).
    doorbells: Doorbells,
    last_assert: Option<Instant>,
    /// When the current ITR interval ends, while an interrupt is held back
    /// (the shell arms its timer for it).
    itr_deadline: Option<Instant>,
    /// Bumped by every device reset: the worker drops what it had in flight.
    pub generation: u64,
    /// Bumped when the guest rewrites the transmit ring registers.
    pub tx_ring_gen: u64,
    /// Bumped when the guest rewrites the receive ring registers.
    pub rx_ring_gen: u64,
    bus_master: bool,
    carrier: bool,
    io_addr: u32,
}

impl E1000State {
    /// A device in its power-on state with `eeprom`.
    pub fn new(eeprom_words: [u16; eeprom::EEPROM_WORDS]) -> Self {
        let mut s = Self {
            regs: Regs::new(),
            eeprom: Eeprom::new(eeprom_words),
            phy: Phy::default(),
            irq_level: false,
            doorbells: Doorbells::default(),
            last_assert: None,
            itr_deadline: None,
            generation: 0,
            tx_ring_gen: 0,
            rx_ring_gen: 0,
            bus_master: false,
            carrier: true,
            io_addr: 0,
        };
        s.reset();
        s
    }

    /// The register file, for the data path.
    pub fn regs(&self) -> &Regs {
        &self.regs
    }

    /// Sets a register from the data path (ring heads).
    pub fn set_reg(&mut self, off: u32, v: u32) {
        self.regs.set(off, v);
    }

    /// Device reset (CTRL.RST): registers to their defaults, interrupts
    /// masked and cleared, receive address 0 reloaded from the EEPROM. The
    /// PHY and PCI configuration are untouched.
    fn reset(&mut self) {
        self.regs.0.fill(0);
        self.regs.set(CTRL, CTRL_DEFAULT);
        self.regs.set(VET, VET_DEFAULT);
        self.regs.set(PBA, PBA_DEFAULT);
        self.regs.set(LEDCTL, LEDCTL_DEFAULT);
        self.regs.set(RXCSUM, RXCSUM_DEFAULT);
        self.load_ra0();
        self.eeprom.reset();
        self.last_assert = None;
        self.itr_deadline = None;
        self.irq_level = false;
        self.generation += 1;
        self.tx_ring_gen += 1;
        self.rx_ring_gen += 1;
    }

    /// Rings the worker's doorbells for `kick` (the shell signals them).
    fn ring(&mut self, kick: Kick) {
        self.doorbells.tx |= kick.tx;
        self.doorbells.rx |= kick.rx;
    }

    fn load_ra0(&mut self) {
        let m = self.eeprom.mac();
        self.regs
            .set(RA, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.regs
            .set(RA + 4, u32::from(u16::from_le_bytes([m[4], m[5]])) | RAH_AV);
    }

    // ---- link -----------------------------------------------------------------

    /// Whether the MAC sees a link: forced up by the driver (SLU), PHY out
    /// of reset and powered, cable (backend) connected.
    pub fn link_up(&self) -> bool {
        let ctrl = self.regs.get(CTRL);
        ctrl & CTRL_SLU != 0 && ctrl & CTRL_PHY_RST == 0 && self.phy.link_up() && self.carrier
    }

    fn status(&self) -> u32 {
        let mut s = STATUS_FD | STATUS_SPEED_1000;
        if self.link_up() {
            s |= STATUS_LU;
        }
        s
    }

    /// Raises LSC if the link changed since `before`.
    fn link_changed(&mut self, before: bool) {
        if before != self.link_up() {
            self.raise(INT_LSC);
            self.update_irq();
        }
    }

    /// Whether transmitted frames loop back to the receiver (MAC loopback
    /// in RCTL, or the PHY's loopback).
    pub fn loopback(&self) -> bool {
        self.regs.get(RCTL) & RCTL_LBM_MASK == RCTL_LBM_MAC || self.phy.loopback()
    }

    // ---- PCI side ----------------------------------------------------------------

    /// Whether the function may master the bus (DMA).
    pub fn bus_master(&self) -> bool {
        self.bus_master
    }

    // ---- interrupts -----------------------------------------------------------------

    /// Latches interrupt causes in ICR (the line follows on [`Self::update_irq`]).
    pub fn raise(&mut self, causes: u32) {
        self.regs.or(ICR, causes & INT_MASK);
    }

    /// Re-evaluates the line: `(ICR & IMS) != 0`, assertion throttled by ITR.
    pub fn update_irq(&mut self) {
        self.update_irq_at(Instant::now());
    }

    /// [`Self::update_irq`] at time `now`.
    pub fn update_irq_at(&mut self, now: Instant) {
        let pending = self.regs.get(ICR) & self.regs.get(IMS) != 0;
        if !pending {
            self.irq_level = false;
            return;
        }
        if self.irq_level {
            return;
        }
        let interval = Duration::from_nanos(u64::from(self.regs.get(ITR) & 0xFFFF) * 256);
        // ITR 0: nothing is held back, whatever the clock said before.
        if let Some(last) = self.last_assert.filter(|_| !interval.is_zero()) {
            let due = last + interval;
            if now < due {
                if self.itr_deadline.is_none() {
                    self.itr_deadline = Some(due);
                }
                return;
            }
        }
        self.irq_level = true;
        self.last_assert = Some(now);
    }

    // ---- statistics -----------------------------------------------------------------

    /// Adds `n` to the 32-bit counter at `off` (counters saturate).
    pub fn count(&mut self, off: u32, n: u32) {
        self.regs.set(off, self.regs.get(off).saturating_add(n));
    }

    /// Adds `n` to the 64-bit counter whose low half is at `off`.
    pub fn count64(&mut self, off: u32, n: u64) {
        let v = (u64::from(self.regs.get(off + 4)) << 32) | u64::from(self.regs.get(off));
        let v = v.wrapping_add(n);
        self.regs.set(off, v as u32);
        self.regs.set(off + 4, (v >> 32) as u32);
    }

    // ---- guest register accesses ---------------------------------------------------------

    /// A guest read of the register at `off`.
    pub fn read(&mut self, off: u32) -> u32 {
        let off = off & !3;
        match off {
            STATUS => self.status(),
            EECD => self.eeprom.eecd_read(),
            EERD => self.eeprom.eerd_read(),
            ICR => {
                let v = self.regs.get(ICR);
                self.regs.set(ICR, 0);
                self.update_irq();
                v
            }
            ICS | IMC => 0,
            STATS_START..=STATS_END => {
                let v = self.regs.get(off);
                self.regs.set(off, 0);
                v
            }
            _ => self.regs.get(off),
        }
    }

    /// A guest write of the register at `off`; says which rings to look at.
    pub fn write(&mut self, off: u32, v: u32) -> Kick {
        let off = off & !3;
        let mut kick = Kick::default();
        match off {
            CTRL => self.write_ctrl(v, &mut kick),
            STATUS | STATS_START..=STATS_END => {}
            EECD => self.eeprom.eecd_write(v),
            EERD => self.eeprom.eerd_write(v),
            CTRL_EXT => {
                if v & CTRL_EXT_EE_RST != 0 {
                    self.load_ra0();
                }
                self.regs.set(CTRL_EXT, v & !CTRL_EXT_EE_RST);
            }
            MDIC => self.write_mdic(v),
            ICR => {
                self.regs.set(ICR, self.regs.get(ICR) & !v);
                self.update_irq();
            }
            ICS => {
                self.raise(v);
                self.update_irq();
            }
            IMS => {
                self.regs.or(IMS, v & INT_MASK);
                self.update_irq();
            }
            IMC => {
                self.regs.set(IMS, self.regs.get(IMS) & !v);
                self.update_irq();
            }
            ITR => self.regs.set(ITR, v & 0xFFFF),
            VET => self.regs.set(VET, v & 0xFFFF),
            RCTL => {
                let before = self.loopback();
                self.regs.set(RCTL, v);
                kick.rx = true;
                kick.tx = before != self.loopback();
            }
            TCTL => {
                self.regs.set(TCTL, v);
                kick.tx = true;
            }
            RDBAL | TDBAL => self.set_ring(off, v & !0xF, &mut kick),
            RDBAH | TDBAH => self.set_ring(off, v, &mut kick),
            RDLEN | TDLEN => self.set_ring(off, v & 0x000F_FF80, &mut kick),
            RDH | TDH => self.set_ring(off, v & 0xFFFF, &mut kick),
            RDT => {
                self.regs.set(RDT, v & 0xFFFF);
                kick.rx = true;
            }
            TDT => {
                self.regs.set(TDT, v & 0xFFFF);
                kick.tx = true;
            }
            o if (RA..RA + 16 * 8).contains(&o) && o % 8 == 4 => {
                self.regs.set(o, v & (RAH_AV | RAH_AS_MASK | 0xFFFF));
                kick.rx = true;
            }
            _ => self.regs.set(off, v),
        }
        kick
    }

    /// A write that redefines a ring: what the worker had in flight on it
    /// is abandoned.
    fn set_ring(&mut self, off: u32, v: u32, kick: &mut Kick) {
        self.regs.set(off, v);
        if off >= TDBAL {
            self.tx_ring_gen += 1;
            kick.tx = true;
        } else {
            self.rx_ring_gen += 1;
            kick.rx = true;
        }
    }

    fn write_ctrl(&mut self, v: u32, kick: &mut Kick) {
        if v & CTRL_RST != 0 {
            self.reset();
            *kick = Kick { tx: true, rx: true };
            return;
        }
        let before = self.link_up();
        let old = self.regs.get(CTRL);
        if (v ^ old) & v & CTRL_PHY_RST != 0 {
            self.phy.hw_reset();
        }
        self.regs.set(CTRL, v);
        // VME changes how both directions treat tags.
        kick.tx = true;
        kick.rx = true;
        self.link_changed(before);
    }

    fn write_mdic(&mut self, v: u32) {
        let reg = ((v >> MDIC_REG_SHIFT) & 0x1F) as usize;
        let addr = (v >> MDIC_PHY_SHIFT) & 0x1F;
        let op = v & (MDIC_OP_READ | MDIC_OP_WRITE);
        let mut result = v & !(MDIC_READY | MDIC_ERROR);
        if addr != phy::PHY_ADDR {
            result |= MDIC_ERROR;
        } else if op == MDIC_OP_READ {
            result = (result & !MDIC_DATA_MASK) | u32::from(self.phy.read(reg));
        } else if op == MDIC_OP_WRITE {
            let before = self.link_up();
            self.phy.write(reg, (v & MDIC_DATA_MASK) as u16);
            self.link_changed(before);
        }
        self.regs.set(MDIC, result | MDIC_READY);
        if v & MDIC_INT_EN != 0 {
            self.raise(INT_MDAC);
            self.update_irq();
        }
    }

    /// A guest read of the I/O BAR at `off`.
    pub fn io_read(&mut self, off: u64) -> u32 {
        match off {
            IOADDR => self.io_addr,
            IODATA => self.read(self.io_addr),
            _ => 0,
        }
    }

    /// A guest write of the I/O BAR at `off`.
    pub fn io_write(&mut self, off: u64, v: u32) -> Kick {
        match off {
            IOADDR => {
                self.io_addr = v & (BAR0_SIZE as u32 - 1) & !3;
                Kick::default()
            }
            IODATA => self.write(self.io_addr, v),
            _ => Kick::default(),
        }
    }
}

impl NicModel for E1000State {
    fn irq_level(&self) -> bool {
        self.irq_level
    }

    /// When a held-back interrupt is due (ITR).
    fn timer_deadline(&self) -> Option<Instant> {
        self.itr_deadline
    }

    /// The ITR interval ended: deliver what was held back.
    fn timer_expired(&mut self, now: Instant) {
        self.itr_deadline = None;
        self.update_irq_at(now);
    }

    /// Bus mastering may have been turned on: the worker looks at the rings.
    fn command_written(&mut self, bus_master: bool) {
        self.bus_master = bus_master;
        self.ring(Kick { tx: true, rx: true });
    }

    fn take_doorbells(&mut self) -> Doorbells {
        std::mem::take(&mut self.doorbells)
    }
}

/// The guest's side of the register file (the model forwards its
/// [`crate::shell::PciNicModel`] calls here).
impl E1000State {
    /// BAR 0 is the register space, BAR 1 the IOADDR/IODATA window; both
    /// are read in dwords.
    pub fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        match index {
            BAR_MMIO => read_dwords(offset, data, BAR0_SIZE, |o| self.read(o as u32)),
            BAR_IO => read_dwords(offset, data, BAR1_SIZE, |o| self.io_read(o)),
            _ => data.fill(0xFF),
        }
    }

    /// A guest write to BAR `index`.
    pub fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        let size = match index {
            BAR_MMIO => BAR0_SIZE,
            BAR_IO => BAR1_SIZE,
            _ => return,
        };
        for (o, v) in dword_writes(offset, data, size) {
            let kick = if index == BAR_MMIO {
                self.write(o as u32, v)
            } else {
                self.io_write(o, v)
            };
            self.ring(kick);
        }
    }

    /// Connects or disconnects the cable (the VMM's view of the backend).
    pub fn set_carrier(&mut self, up: bool) {
        let before = self.link_up();
        self.carrier = up;
        self.phy.set_cable(up);
        self.link_changed(before);
    }
}

/// Reads `data.len()` bytes at `off` of a 32-bit register space
/// through `read32` (an access within one or two dwords).
fn read_dwords(off: u64, data: &mut [u8], size: u64, mut read32: impl FnMut(u64) -> u32) {
    let len = data.len() as u64;
    if !matches!(len, 1 | 2 | 4 | 8) || off.checked_add(len).is_none_or(|e| e > size) {
        data.fill(0xFF);
        return;
    }
    let first = off & !3;
    let mut bytes = [0u8; 12];
    let dwords = (off + len - first).div_ceil(4);
    for i in 0..dwords {
        let v = read32(first + 4 * i);
        bytes[4 * i as usize..4 * i as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    let s = (off - first) as usize;
    data.copy_from_slice(&bytes[s..s + data.len()]);
}

/// The dword writes that `data` at `off` makes: aligned 4- and 8-byte
/// accesses only (the registers are 32 bits wide; others are dropped).
fn dword_writes(off: u64, data: &[u8], size: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
    let ok = matches!(data.len(), 4 | 8)
        && off.is_multiple_of(4)
        && off
            .checked_add(data.len() as u64)
            .is_some_and(|e| e <= size);
    let chunks = if ok {
        data.chunks_exact(4)
    } else {
        [].chunks_exact(4)
    };
    chunks.enumerate().map(move |(i, c)| {
        (
            off + 4 * i as u64,
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        )
    })
}

#[cfg(test)]
mod tests {
    //! The model alone, on a fake clock: no thread, no fd, no sleep.
    use super::*;

    fn model() -> E1000State {
        E1000State::new(eeprom::image([2, 0, 0, 0, 0, 1], crate::e1000::IDS))
    }

    #[test]
    fn itr_holds_an_interrupt_back_until_its_deadline() {
        let mut s = model();
        let t0 = Instant::now();
        let us = Duration::from_micros;
        // ITR counts 256 ns units: 1000 is 256 us between two assertions.
        s.write(ITR, 1000);
        s.write(IMS, INT_TXDW | INT_RXT0);
        s.raise(INT_TXDW);
        s.update_irq_at(t0);
        assert!(s.irq_level());
        assert_eq!(s.timer_deadline(), None);

        // The driver reads ICR: causes cleared, the line drops at once.
        assert_eq!(s.read(ICR), INT_TXDW);
        assert!(!s.irq_level());

        // A new cause 100 us later waits for the interval's end...
        s.raise(INT_RXT0);
        s.update_irq_at(t0 + us(100));
        assert!(!s.irq_level());
        assert_eq!(s.timer_deadline(), Some(t0 + us(256)));
        // ...and causes arriving meanwhile share that one interrupt.
        s.raise(INT_TXDW);
        s.update_irq_at(t0 + us(200));
        assert_eq!(s.timer_deadline(), Some(t0 + us(256)));
        assert!(!s.irq_level());

        s.timer_expired(t0 + us(256));
        assert!(s.irq_level());
        assert_eq!(s.timer_deadline(), None);
        assert_eq!(s.read(ICR), INT_TXDW | INT_RXT0);
    }

    #[test]
    fn without_itr_every_cause_asserts_at_once() {
        let mut s = model();
        let t0 = Instant::now();
        s.write(IMS, INT_RXT0);
        for i in 0..3 {
            s.raise(INT_RXT0);
            s.update_irq_at(t0 + Duration::from_nanos(i));
            assert!(s.irq_level());
            assert_eq!(s.timer_deadline(), None);
            s.read(ICR);
            assert!(!s.irq_level());
        }
    }

    #[test]
    fn reset_drops_the_line_and_the_deadline() {
        let mut s = model();
        let t0 = Instant::now();
        s.write(ITR, 0xFFFF);
        s.write(IMS, INT_RXT0);
        s.raise(INT_RXT0);
        s.update_irq_at(t0);
        s.read(ICR);
        s.raise(INT_RXT0);
        s.update_irq_at(t0 + Duration::from_micros(1));
        assert!(s.timer_deadline().is_some());
        s.write(CTRL, CTRL_RST);
        assert!(!s.irq_level());
        assert_eq!(s.timer_deadline(), None);
    }
}
