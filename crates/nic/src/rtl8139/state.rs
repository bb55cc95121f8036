//! The register file of the RTL8139C(L)+: a state machine driven by
//! register accesses (vCPU side) and by the NIC worker (frames, through
//! `normal.rs` and `cplus.rs`), shared behind one mutex.
//!
//! Accesses of any width are split into the registers they touch: each
//! touched register gets one read or one write carrying the written bytes'
//! mask, so a driver may use byte, word or dword accesses as it likes and
//! side effects (doorbells, write-1-to-clear) happen once per access.

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::eeprom::{default_contents, Eeprom93c46, EEPROM_MAC_WORD};
use super::regs::*;
use super::rings::RX_STALL_GRACE;
use crate::shell::{Doorbells, NicModel};

/// Largest value of the 24-bit missed packet counter.
const MPC_MAX: u32 = 0x00ff_ffff;
/// TCTR ticks per microsecond (the 33 MHz PCI clock).
const TCTR_TICKS_PER_US: u64 = 33;
/// Time TCTR takes to wrap around (2^32 ticks at 33 MHz).
const TCTR_PERIOD: Duration = Duration::from_nanos((1u64 << 32) * 1000 / TCTR_TICKS_PER_US);

/// The C+ tally counters (the 64-byte block DTCCR dumps).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Frames transmitted.
    pub tx_ok: u64,
    /// Frames received.
    pub rx_ok: u64,
    /// Frames not transmitted (bad descriptors, refused offloads).
    pub tx_err: u64,
    /// Frames not received (too long, DMA errors).
    pub rx_err: u32,
    /// Frames missed for lack of receive room.
    pub missed: u16,
    /// Transmit aborts (C-mode slots with a bad size or address).
    pub tx_abort: u16,
    /// Received frames to our address.
    pub rx_ok_phys: u64,
    /// Received broadcast frames.
    pub rx_ok_bcast: u64,
    /// Received multicast frames.
    pub rx_ok_mcast: u32,
}

impl Tally {
    /// The dump layout (little-endian, 64 bytes).
    pub fn to_bytes(self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.tx_ok.to_le_bytes());
        b[8..16].copy_from_slice(&self.rx_ok.to_le_bytes());
        b[16..24].copy_from_slice(&self.tx_err.to_le_bytes());
        b[24..28].copy_from_slice(&self.rx_err.to_le_bytes());
        b[28..30].copy_from_slice(&self.missed.to_le_bytes());
        // 30: frame alignment errors, 32: TX with one / 36: several
        // collisions: always 0.
        b[40..48].copy_from_slice(&self.rx_ok_phys.to_le_bytes());
        b[48..56].copy_from_slice(&self.rx_ok_bcast.to_le_bytes());
        b[56..60].copy_from_slice(&self.rx_ok_mcast.to_le_bytes());
        b[60..62].copy_from_slice(&self.tx_abort.to_le_bytes());
        // 62: TX underruns: always 0.
        b
    }
}

/// Register state of one RTL8139.
pub struct State {
    /// PCI revision: C+ registers exist from 0x20.
    pub revision: u8,
    /// Guest memory (DMA).
    pub mem: GuestMemoryMmap,
    /// Station address.
    pub idr: [u8; 6],
    /// Multicast hash.
    pub mar: [u8; 8],
    /// TSD0-3 (in C+ mode TSD0-1 hold DTCCR).
    pub tsd: [u32; 4],
    /// TSAD0-3 (in C+ mode TNPDS and THPDS).
    pub tsad: [u32; 4],
    /// Receive ring start.
    pub rbstart: u32,
    /// CR: RE and TE.
    pub cr: u8,
    /// CAPR.
    pub capr: u16,
    /// CBR (always a multiple of 4, below the ring length).
    pub cbr: u16,
    /// IMR.
    pub imr: u16,
    /// ISR.
    pub isr: u16,
    /// TCR (writable bits; HWVERID is added on read).
    pub tcr: u32,
    /// RCR.
    pub rcr: u32,
    tctr_epoch: Instant,
    /// Missed packet counter.
    pub mpc: u32,
    cfg9346: u8,
    /// The 93C46.
    pub eeprom: Eeprom93c46,
    config1: u8,
    config3: u8,
    config4: u8,
    config5: u8,
    /// TimerInt.
    pub timer_int: u32,
    timer_deadline: Option<Instant>,
    mulint: u16,
    bmcr: u16,
    anar: u16,
    cscr: u16,
    /// The cable is in (the VMM's link control).
    carrier: bool,
    /// The link changed and CSCR was not read since.
    link_change: bool,
    /// C+ command register.
    pub cpcr: u16,
    intr_mitigate: u16,
    /// Worker events whose ISR bits are not on the line yet.
    irq_deferred: u32,
    /// C+ receive ring start.
    pub rdsar: u64,
    /// TPPoll queues rung and not yet drained (NPQ, HPQ).
    pub tppoll: u8,
    scratch: [u8; 256],
    /// Next C-mode TX slot (round robin).
    pub tx_next: usize,
    /// Next C+ TX descriptor index (normal, high priority).
    pub cp_tx: [u16; 2],
    /// Next C+ RX descriptor index.
    pub cp_rx: u16,
    /// Bumped by every reset: work started before it is not written back.
    pub gen: u64,
    /// The worker waits for receive room: the next register write kicks it.
    pub rx_waiting: bool,
    /// The last doorbell was for a small frame, rung with receive
    /// interrupts masked (a driver acknowledging from its receive poll):
    /// the model transmits it at once (see `rings.rs`).
    pub tx_now: bool,
    /// The PCI command register allows DMA.
    pub bus_master: bool,
    /// C+ tally counters.
    pub tally: Tally,
    /// How long the worker holds a frame while the guest has no receive
    /// room before dropping (see `frontend.rs`).
    pub rx_stall_grace: Duration,
    /// When the current receive stall began (the worker holds a frame for
    /// lack of room), and whether its grace period is over.
    rx_stall: Option<(Instant, bool)>,
    /// The INTx level the model wants (the shell drives the line).
    irq_level: bool,
    /// Doorbells rung for the worker since the shell last looked: TSD
    /// written (C mode) or TPPoll rung (C+); any register write while the
    /// worker waits for receive room.
    doorbells: Doorbells,
}

/// `(register base, width)` of the register holding byte `off`.
fn reg_span(off: u8) -> (u8, u8) {
    match off {
        0x10..=0x33
        | 0x40..=0x4f
        | 0x54..=0x57
        | 0x78..=0x7f
        | 0xd4..=0xd7
        | 0xe4..=0xeb
        | 0xf0..=0xff => (off & !3, 4),
        0x34..=0x35 | 0x38..=0x3f | 0x5c..=0x5d | 0x60..=0x77 | 0xe0..=0xe3 => (off & !1, 2),
        _ => (off, 1),
    }
}

/// Merges the masked bytes of a write into `old`.
fn merge(old: u32, val: u32, mask: u32) -> u32 {
    (old & !mask) | (val & mask)
}

/// Largest frame whose transmission a vCPU may wait for (see
/// `State::tx_doorbell`): control frames, not bulk data.
pub const SYNC_TX_MAX: usize = 128;

/// Worker events (frames received, transmissions completed) at most
/// between two updates of the interrupt line.
pub const IRQ_BATCH: u32 = 32;

impl State {
    /// Power-on state.
    pub fn new(mac: [u8; 6], revision: u8, mem: GuestMemoryMmap) -> Self {
        let mut s = Self {
            revision,
            mem,
            idr: mac,
            mar: [0; 8],
            tsd: [TSD_OWN; 4],
            tsad: [0; 4],
            rbstart: 0,
            cr: 0,
            capr: 0xfff0,
            cbr: 0,
            imr: 0,
            isr: 0,
            tcr: 0,
            rcr: 0,
            tctr_epoch: Instant::now(),
            mpc: 0,
            cfg9346: 0,
            eeprom: Eeprom93c46::new(default_contents(mac, VENDOR_ID, DEVICE_ID)),
            config1: CONFIG1_DEFAULT,
            config3: 0,
            config4: 0,
            config5: 0,
            timer_int: 0,
            timer_deadline: None,
            mulint: 0,
            bmcr: BMCR_DEFAULT,
            anar: ANAR_DEFAULT,
            cscr: 0,
            carrier: true,
            link_change: false,
            cpcr: 0,
            intr_mitigate: 0,
            irq_deferred: 0,
            rdsar: 0,
            tppoll: 0,
            scratch: [0; 256],
            tx_next: 0,
            cp_tx: [0; 2],
            cp_rx: 0,
            gen: 0,
            rx_waiting: false,
            bus_master: false,
            tally: Tally::default(),
            tx_now: false,
            rx_stall_grace: RX_STALL_GRACE,
            rx_stall: None,
            irq_level: false,
            doorbells: Doorbells::default(),
        };
        s.soft_reset();
        s
    }

    /// Whether the chip has the C+ registers (revision 0x20 and later).
    pub fn cplus_capable(&self) -> bool {
        self.revision >= 0x20
    }

    /// C+ transmit mode.
    pub fn cplus_tx(&self) -> bool {
        self.cplus_capable() && self.cpcr & CPCR_TX != 0
    }

    /// C+ receive mode.
    pub fn cplus_rx(&self) -> bool {
        self.cplus_capable() && self.cpcr & CPCR_RX != 0
    }

    /// The receiver runs and may DMA.
    pub fn rx_enabled(&self) -> bool {
        self.cr & CR_RE != 0 && self.bus_master
    }

    /// The transmitter runs and may DMA.
    pub fn tx_enabled(&self) -> bool {
        self.cr & CR_TE != 0 && self.bus_master
    }

    /// TCR selects loopback: transmitted frames are received, not sent.
    pub fn loopback(&self) -> bool {
        self.tcr & TCR_LBK == TCR_LBK
    }

    fn config_unlocked(&self) -> bool {
        self.cfg9346 & CFG9346_EEM_MASK == EEM_CONFIG_WRITE
    }

    fn hwverid(&self) -> u32 {
        if self.cplus_capable() {
            HWVERID_8139CPLUS
        } else {
            HWVERID_8139C
        }
    }

    /// Software reset (CR.RST): everything but the station address, the
    /// multicast hash, the buffer addresses and the configuration registers.
    pub fn soft_reset(&mut self) {
        self.cr = 0;
        self.isr = 0;
        self.imr = 0;
        self.tsd = [TSD_OWN; 4];
        self.tx_next = 0;
        self.capr = 0xfff0;
        self.cbr = 0;
        self.tcr = 0;
        self.rcr = 0;
        self.mpc = 0;
        self.timer_int = 0;
        self.tctr_epoch = Instant::now();
        self.schedule_timer();
        self.cpcr = 0;
        self.tppoll = 0;
        self.cp_tx = [0; 2];
        self.cp_rx = 0;
        self.gen = self.gen.wrapping_add(1);
        self.update_irq();
    }

    // ---- Interrupts ----

    /// Drives INTx from (ISR & IMR).
    pub fn update_irq(&mut self) {
        self.irq_level = self.isr & self.imr != 0;
    }

    /// Sets ISR bits (and the line at once: for events of the vCPU and
    /// control threads).
    pub fn raise(&mut self, bits: u16) {
        self.isr |= bits & INT_MASK;
        self.update_irq();
    }

    /// Sets ISR bits for an event of the NIC worker; the line follows at
    /// the end of the worker's pass ([`State::flush_irq`]) or after
    /// [`IRQ_BATCH`] such events, whichever comes first. So a burst of
    /// frames (up to 44 from one TSO read) costs the guest one interrupt,
    /// not one per frame, and no event waits longer than the pass that
    /// produced it. A guest reading ISR meanwhile sees the bits at once.
    pub fn raise_deferred(&mut self, bits: u16) {
        self.isr |= bits & INT_MASK;
        self.irq_deferred += 1;
        if self.irq_deferred >= IRQ_BATCH {
            self.flush_irq();
        }
    }

    /// Brings the line up to date with ISR bits raised by the worker.
    pub fn flush_irq(&mut self) {
        if self.irq_deferred > 0 {
            self.irq_deferred = 0;
            self.update_irq();
        }
    }

    /// Counts a frame missed for lack of room and raises the overflow bits
    /// of the current receive mode.
    pub fn count_missed(&mut self) {
        self.mpc = (self.mpc + 1).min(MPC_MAX);
        self.tally.missed = self.tally.missed.saturating_add(1);
        let bits = if self.cplus_rx() {
            INT_FOVW | INT_RXOVW
        } else {
            INT_RXOVW
        };
        self.raise_deferred(bits);
    }

    fn kick_rx_waiter(&mut self) {
        if self.rx_waiting {
            self.rx_waiting = false;
            self.doorbells.rx = true;
        }
    }

    // ---- The C-mode receive ring ----

    /// Receive ring length (RCR.RBLEN): 8, 16, 32 or 64 KiB.
    pub fn ring_len(&self) -> u32 {
        8192 << ((self.rcr >> RCR_RBLEN_SHIFT) & 3)
    }

    /// Ring offset the driver reads next (CAPR + 16).
    fn ring_read(&self) -> u32 {
        (u32::from(self.capr) + 16) % self.ring_len()
    }

    /// Bytes the chip may still write (the whole ring when empty).
    pub fn ring_free(&self) -> u32 {
        let len = self.ring_len();
        let used = (u32::from(self.cbr) % len + len - self.ring_read()) % len;
        len - used
    }

    /// The driver has read everything (CR.BUFE).
    pub fn ring_empty(&self) -> bool {
        u32::from(self.cbr) % self.ring_len() == self.ring_read()
    }

    /// IMR re-enabled ROK while C-mode packets are still unread: ROK is
    /// raised again. 8139too acknowledges ROK after every packet it reads
    /// and, when its NAPI budget runs out, only polls again if ISR still
    /// shows a receive bit; packets left in the ring would otherwise wait
    /// for the next frame to arrive, which in a TCP transfer may be never
    /// (the stranded packets are the ACKs the peer's sender waits on).
    fn reassert_rok(&mut self, old_imr: u16) {
        let enabled = self.imr & !old_imr & INT_ROK != 0;
        if enabled && !self.cplus_rx() && self.rx_enabled() && !self.ring_empty() {
            self.isr |= INT_ROK;
        }
    }

    // ---- Receive stalls (see frontend.rs) ----

    /// The worker holds a frame for lack of room: starts the grace period
    /// unless one runs or has run out. In C+ mode a new stall raises RDU
    /// ("refill your ring").
    pub fn begin_rx_stall(&mut self, now: Instant) {
        if self.rx_stall.is_none() {
            self.rx_stall = Some((now, false));
            if self.cplus_rx() {
                self.raise_deferred(INT_RXOVW);
            }
        }
    }

    /// A frame went through, or could not wait: the stall is over.
    pub fn end_rx_stall(&mut self) {
        self.rx_stall = None;
    }

    /// The grace period ran out: frames without room are dropped now, as
    /// hardware does.
    pub fn rx_overflow(&self) -> bool {
        matches!(self.rx_stall, Some((_, true)))
    }

    fn rx_stall_deadline(&self) -> Option<Instant> {
        match self.rx_stall {
            Some((since, false)) => Some(since + self.rx_stall_grace),
            _ => None,
        }
    }

    // ---- Timer ----

    fn tctr(&self) -> u32 {
        let us = self.tctr_epoch.elapsed().as_nanos() / 1000;
        (us * u128::from(TCTR_TICKS_PER_US)) as u32
    }

    /// Recomputes when TCTR next reaches TimerInt (after a write to either);
    /// the shell's timer follows.
    fn schedule_timer(&mut self) {
        self.timer_deadline = (self.timer_int != 0).then(|| {
            let ticks = match self.timer_int.wrapping_sub(self.tctr()) {
                0 => 1u64 << 32,
                t => u64::from(t),
            };
            Instant::now() + Duration::from_nanos(ticks * 1000 / TCTR_TICKS_PER_US)
        });
    }

    // ---- Register access ----

    /// A guest read of `data.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut i = 0;
        while i < data.len() {
            let Some(off) = offset
                .checked_add(i as u64)
                .filter(|&o| o < REG_WINDOW)
                .map(|o| o as u8)
            else {
                data[i..].fill(0xff);
                return;
            };
            let (base, width) = reg_span(off);
            let value = self.read_reg(base).to_le_bytes();
            let mut b = off - base;
            while b < width && i < data.len() {
                data[i] = value[usize::from(b)];
                b += 1;
                i += 1;
            }
        }
    }

    /// A guest write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let Some(off) = offset
                .checked_add(i as u64)
                .filter(|&o| o < REG_WINDOW)
                .map(|o| o as u8)
            else {
                break;
            };
            let (base, width) = reg_span(off);
            let (mut val, mut mask) = (0u32, 0u32);
            let mut b = off - base;
            while b < width && i < data.len() {
                val |= u32::from(data[i]) << (8 * b);
                mask |= 0xff << (8 * b);
                b += 1;
                i += 1;
            }
            self.write_reg(base, val, mask);
        }
        // Whatever the driver wrote may have made receive room.
        self.kick_rx_waiter();
    }

    fn scratch_u32(&self, base: u8) -> u32 {
        let b = usize::from(base);
        let mut v = [0u8; 4];
        for (k, x) in v.iter_mut().enumerate() {
            *x = self.scratch.get(b + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(v)
    }

    fn read_reg(&mut self, base: u8) -> u32 {
        let cp = self.cplus_capable();
        match base {
            0x00..=0x05 => u32::from(self.idr[usize::from(base)]),
            0x06 | 0x07 => 0,
            0x08..=0x0f => u32::from(self.mar[usize::from(base - MAR0)]),
            0x10..=0x1c => self.tsd[usize::from((base - TSD0) / 4)],
            0x20..=0x2c => self.tsad[usize::from((base - TSAD0) / 4)],
            RBSTART => self.rbstart,
            ERBCR | ERSR => 0,
            CR => u32::from(self.cr | if self.ring_empty() { CR_BUFE } else { 0 }),
            CAPR => u32::from(self.capr),
            CBR => u32::from(self.cbr),
            IMR => u32::from(self.imr),
            ISR => u32::from(self.isr),
            TCR => self.tcr | self.hwverid(),
            RCR => self.rcr,
            TCTR => self.tctr(),
            MPC => self.mpc,
            CFG9346 => {
                let mut v = self.cfg9346;
                if v & CFG9346_EEM_MASK == EEM_PROGRAM && self.eeprom.dout() {
                    v |= CFG9346_EEDO;
                }
                u32::from(v)
            }
            CONFIG0 => 0,
            CONFIG1 => u32::from(self.config1),
            TIMER_INT => self.timer_int,
            MSR => u32::from(if self.carrier {
                MSR_VALUE
            } else {
                MSR_VALUE | MSR_LINKB
            }),
            CONFIG3 => u32::from(self.config3),
            CONFIG4 => u32::from(self.config4),
            MULINT => u32::from(self.mulint),
            RERID => u32::from(self.revision),
            TSAD => u32::from(self.tsd_summary()),
            BMCR => u32::from(self.bmcr),
            BMSR => u32::from(if self.carrier {
                BMSR_VALUE
            } else {
                BMSR_VALUE & !BMSR_LINK
            }),
            ANAR => u32::from(self.anar),
            ANLPAR => u32::from(ANLPAR_VALUE),
            ANER => u32::from(ANER_VALUE),
            CSCR => {
                let mut v = self.cscr & !(CSCR_LINK_OK | CSCR_LINK_CHANGE);
                if self.carrier {
                    v |= CSCR_LINK_OK;
                }
                if std::mem::take(&mut self.link_change) {
                    v |= CSCR_LINK_CHANGE;
                }
                u32::from(v)
            }
            CONFIG5 => u32::from(self.config5),
            TPPOLL if cp => u32::from(self.tppoll),
            CPCR if cp => u32::from(self.cpcr),
            INTR_MITIGATE if cp => u32::from(self.intr_mitigate),
            0xe4 if cp => self.rdsar as u32,
            0xe8 if cp => (self.rdsar >> 32) as u32,
            _ => self.scratch_u32(base),
        }
    }

    fn tsd_summary(&self) -> u16 {
        let mut v = 0u16;
        for (i, &t) in self.tsd.iter().enumerate() {
            let bit = |set: bool, shift: usize| u16::from(set) << (shift + i);
            v |= bit(t & TSD_TOK != 0, 12)
                | bit(t & TSD_TUN != 0, 8)
                | bit(t & TSD_TABT != 0, 4)
                | bit(t & TSD_OWN != 0, 0);
        }
        v
    }

    fn write_reg(&mut self, base: u8, val: u32, mask: u32) {
        let cp = self.cplus_capable();
        let val8 = val as u8;
        match base {
            0x00..=0x05 => {
                if self.config_unlocked() {
                    self.idr[usize::from(base)] = val8;
                }
            }
            0x08..=0x0f => self.mar[usize::from(base - MAR0)] = val8,
            0x10..=0x1c => self.write_tsd(usize::from((base - TSD0) / 4), val, mask),
            0x20..=0x2c => {
                let i = usize::from((base - TSAD0) / 4);
                self.tsad[i] = merge(self.tsad[i], val, mask);
                if self.cplus_tx() {
                    // A new ring address restarts that ring.
                    self.cp_tx[usize::from(i >= 2)] = 0;
                }
            }
            RBSTART => self.rbstart = merge(self.rbstart, val, mask),
            CR => self.write_cr(val8),
            CAPR => self.capr = merge(u32::from(self.capr), val, mask) as u16,
            IMR => {
                let old = self.imr;
                self.imr = merge(u32::from(self.imr), val, mask) as u16 & INT_MASK;
                self.reassert_rok(old);
                self.update_irq();
            }
            ISR => {
                self.isr &= !((val & mask) as u16);
                self.update_irq();
            }
            TCR => self.tcr = merge(self.tcr, val, mask) & TCR_WRITABLE,
            RCR => self.rcr = merge(self.rcr, val, mask) & RCR_WRITABLE,
            TCTR => {
                self.tctr_epoch = Instant::now();
                self.schedule_timer();
            }
            MPC => self.mpc = 0,
            CFG9346 => self.write_cfg9346(val8),
            CONFIG1 if self.config_unlocked() => {
                self.config1 = (self.config1 & !CONFIG1_WRITABLE) | (val8 & CONFIG1_WRITABLE);
            }
            CONFIG3 if self.config_unlocked() => self.config3 = val8,
            CONFIG4 if self.config_unlocked() => self.config4 = val8,
            CONFIG0 | CONFIG1 | CONFIG3 | CONFIG4 | MSR | RERID | TSAD | BMSR | ANLPAR | ANER
            | ERBCR | ERSR | CBR => {}
            TIMER_INT => {
                self.timer_int = merge(self.timer_int, val, mask);
                self.schedule_timer();
            }
            MULINT => self.mulint = merge(u32::from(self.mulint), val, mask) as u16,
            BMCR => {
                if self.config_unlocked() {
                    let v = merge(u32::from(self.bmcr), val, mask) as u16;
                    self.bmcr = if v & BMCR_RESET != 0 {
                        BMCR_DEFAULT
                    } else {
                        v & !BMCR_RESTART_AN
                    };
                }
            }
            ANAR => self.anar = merge(u32::from(self.anar), val, mask) as u16,
            CSCR => self.cscr = merge(u32::from(self.cscr), val, mask) as u16,
            CONFIG5 => self.config5 = val8,
            TPPOLL if cp => self.write_tppoll(val8),
            CPCR if cp => self.write_cpcr(merge(u32::from(self.cpcr), val, mask) as u16),
            INTR_MITIGATE if cp => {
                self.intr_mitigate = merge(u32::from(self.intr_mitigate), val, mask) as u16;
            }
            0xe4 | 0xe8 if cp => {
                let shift = if base == 0xe4 { 0 } else { 32 };
                let old = (self.rdsar >> shift) as u32;
                let v = u64::from(merge(old, val, mask));
                self.rdsar = (self.rdsar & !(0xffff_ffffu64 << shift)) | (v << shift);
                self.cp_rx = 0;
            }
            _ => {
                let b = usize::from(base);
                for k in 0..4 {
                    if mask & (0xff << (8 * k)) != 0 {
                        if let Some(x) = self.scratch.get_mut(b + k) {
                            *x = (val >> (8 * k)) as u8;
                        }
                    }
                }
            }
        }
    }

    fn write_tsd(&mut self, i: usize, val: u32, mask: u32) {
        if self.cplus_capable() && self.cpcr & (CPCR_TX | CPCR_RX) != 0 {
            // DTCCR (64-bit over TSD0-1); TSD2-3 are unused in C+ mode.
            self.tsd[i] = merge(self.tsd[i], val, mask);
            if i == 0 && self.tsd[0] & DTCCR_CMD != 0 {
                self.dump_tally();
            }
            return;
        }
        self.tsd[i] = merge(self.tsd[i], val, mask) & TSD_WRITABLE;
        if mask & TSD_OWN != 0 && self.tsd[i] & TSD_OWN == 0 {
            let small = (self.tsd[i] & TSD_SIZE_MASK) as usize <= SYNC_TX_MAX;
            self.tx_doorbell(small);
        }
    }

    fn write_cr(&mut self, val: u8) {
        if val & CR_RST != 0 {
            self.soft_reset();
        }
        let old = self.cr;
        self.cr = val & (CR_RE | CR_TE);
        let rose = self.cr & !old;
        if old & CR_RE != 0 && self.cr & CR_RE == 0 {
            // Disabling the receiver restarts the ring (8139too relies on
            // this when it recovers from a receive error).
            self.cbr = 0;
            self.capr = 0xfff0;
        }
        if rose & CR_RE != 0 {
            self.cp_rx = 0;
        }
        if rose & CR_TE != 0 {
            self.cp_tx = [0; 2];
            self.doorbells.tx = true;
        }
    }

    fn write_cfg9346(&mut self, val: u8) {
        match val & CFG9346_EEM_MASK {
            EEM_AUTOLOAD => {
                for i in 0..3 {
                    let w = self.eeprom.word(EEPROM_MAC_WORD + i).to_le_bytes();
                    self.idr[2 * i..2 * i + 2].copy_from_slice(&w);
                }
                self.eeprom.set_pins(false, false, false);
                self.cfg9346 = EEM_NORMAL;
            }
            EEM_PROGRAM => {
                self.cfg9346 =
                    val & (CFG9346_EEM_MASK | CFG9346_EECS | CFG9346_EESK | CFG9346_EEDI);
                self.eeprom.set_pins(
                    val & CFG9346_EECS != 0,
                    val & CFG9346_EESK != 0,
                    val & CFG9346_EEDI != 0,
                );
            }
            mode => {
                self.cfg9346 = mode;
                self.eeprom.set_pins(false, false, false);
            }
        }
    }

    /// Rings the worker for transmission. One `small` frame sent from
    /// inside the driver's receive poll (receive interrupts masked: a TCP
    /// ACK, typically) is also transmitted at once, on the vCPU (see
    /// `rings.rs`).
    fn tx_doorbell(&mut self, small: bool) {
        self.tx_now |= small && self.imr & INT_ROK == 0;
        self.doorbells.tx = true;
    }

    fn write_tppoll(&mut self, val: u8) {
        if val & TPPOLL_FSWINT != 0 {
            self.raise(INT_SWINT);
        }
        let queues = val & (TPPOLL_NPQ | TPPOLL_HPQ);
        if queues != 0 {
            self.tppoll |= queues;
            let small = queues == TPPOLL_NPQ
                && self.cp_small_frame_queued(super::cplus::RING_NORMAL, SYNC_TX_MAX);
            self.tx_doorbell(small);
        }
    }

    fn write_cpcr(&mut self, v: u16) {
        let old = self.cpcr;
        self.cpcr = v & CPCR_WRITABLE;
        let rose = self.cpcr & !old;
        if rose & CPCR_TX != 0 {
            self.cp_tx = [0; 2];
            self.doorbells.tx = true;
        }
        if rose & CPCR_RX != 0 {
            self.cp_rx = 0;
        }
    }

    /// DTCCR: writes the tally counters to the 64-byte aligned address in
    /// DTCCR and clears the command bit.
    fn dump_tally(&mut self) {
        let addr = ((u64::from(self.tsd[1]) << 32) | u64::from(self.tsd[0])) & !0x3f;
        self.tsd[0] &= !DTCCR_CMD;
        if !self.bus_master {
            return;
        }
        let bytes = self.tally.to_bytes();
        if self.mem.write_slice(&bytes, GuestAddress(addr)).is_err() {
            self.raise(INT_SERR);
        }
    }
}

/// The guest's side of the register file (the model forwards its
/// [`crate::shell::PciNicModel`] calls here).
impl State {
    /// BAR 0 (I/O) and BAR 1 (memory) decode the same registers.
    pub fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if index > 1 {
            data.fill(0xff);
            return;
        }
        self.read(offset, data);
    }

    /// A guest write to BAR `index`.
    pub fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        if index <= 1 {
            self.write(offset, data);
        }
    }

    /// Connects or disconnects the cable: the link bits follow and a
    /// change raises PUN/LinkChg (with CSCR's link-change bit for 8139too).
    pub fn set_carrier(&mut self, up: bool) {
        if self.carrier == up {
            return;
        }
        self.carrier = up;
        self.link_change = true;
        self.raise(INT_PUN_LINKCHG);
        // A frame held for lack of room is lost with the cable: wake the
        // worker so that it drops it now, not after the cable is back.
        self.kick_rx_waiter();
    }
}

impl NicModel for State {
    fn irq_level(&self) -> bool {
        self.irq_level
    }

    /// The earlier of: TCTR reaching TimerInt, the end of a receive
    /// stall's grace period.
    fn timer_deadline(&self) -> Option<Instant> {
        match (self.timer_deadline, self.rx_stall_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Raises TimeOut if TCTR has reached TimerInt by `now` (and schedules
    /// the next time it will, a full TCTR period later); ends a receive
    /// stall's grace period that is over.
    fn timer_expired(&mut self, now: Instant) {
        if let Some(dl) = self.timer_deadline {
            if now >= dl {
                self.raise(INT_TIMEOUT);
                self.timer_deadline = Some(dl + TCTR_PERIOD);
            }
        }
        if let Some(dl) = self.rx_stall_deadline() {
            if now >= dl {
                // Still no room after the grace period: drop from now on.
                self.rx_stall = self.rx_stall.map(|(since, _)| (since, true));
                self.rx_waiting = false;
                // The worker retries, and now drops.
                self.doorbells.rx = true;
            }
        }
    }

    fn take_doorbells(&mut self) -> Doorbells {
        std::mem::take(&mut self.doorbells)
    }

    /// Bus mastering turned on: the transmit ring may have work; any write
    /// wakes a worker waiting for receive room.
    fn command_written(&mut self, bus_master: bool) {
        let was = self.bus_master;
        self.bus_master = bus_master;
        if self.bus_master && !was {
            self.doorbells.tx = true;
        }
        self.kick_rx_waiter();
    }
}
