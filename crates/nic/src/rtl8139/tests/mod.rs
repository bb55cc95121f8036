//! Tests of the RTL8139 driven through `PciDevice::write_bar`/`read_bar`
//! the way Linux's 8139too and 8139cp drive the chip, with hand-built rings
//! in guest memory and the in-memory backend standing for the network.

mod cplus;
mod normal;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapir_devices::LevelIrq;
use tapir_net_backend::offload::checksum;
use tapir_net_backend::{MemoryBackend, MemoryPeer, NetHdr, Offloads};
use tapir_pci::configuration::{
    PCI_CLASS_CODE, PCI_COMMAND, PCI_DEVICE_ID, PCI_INTERRUPT_PIN, PCI_REVISION_ID, PCI_STATUS,
    PCI_STATUS_INTERRUPT, PCI_SUBCLASS, PCI_VENDOR_ID,
};
use tapir_pci::{BarKind, PciDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::regs::*;
use super::{Rtl8139, DEFAULT_REVISION, REVISION_8139C};
pub use crate::test_util::Driven;
use crate::worker::{NetWorker, WorkerThreads};

pub const MEM_SIZE: usize = 0x40_0000;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];

/// An INTx line that records its level.
#[derive(Default)]
pub struct Line {
    high: AtomicBool,
    changes: Mutex<Vec<bool>>,
}

impl LevelIrq for Line {
    fn set_level(&self, high: bool) -> io::Result<()> {
        self.high.store(high, Ordering::SeqCst);
        self.changes.lock().unwrap().push(high);
        Ok(())
    }
}

impl Line {
    pub fn high(&self) -> bool {
        self.high.load(Ordering::SeqCst)
    }
}

pub struct Nic {
    pub dev: Rtl8139,
    /// The NIC worker, driven on the test's thread ([`Nic::pump`]).
    pub worker: NetWorker,
    pub peer: MemoryPeer,
    pub mem: GuestMemoryMmap,
    pub line: Arc<Line>,
    /// BAR used for register accesses (0: I/O, 1: memory).
    pub bar: u8,
}

pub fn nic(revision: u8) -> Nic {
    nic_with(revision, 64)
}

pub fn nic_with(revision: u8, capacity: usize) -> Nic {
    nic_offloads(revision, capacity, Offloads::default())
}

/// A NIC on a memory backend that offers `offloads`.
pub fn nic_offloads(revision: u8, capacity: usize, offloads: Offloads) -> Nic {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let (backend, peer) = MemoryBackend::new(capacity, offloads).unwrap();
    let line = Arc::new(Line::default());
    let (mut dev, worker) = Rtl8139::new_manual(
        MAC,
        revision,
        mem.clone(),
        line.clone(),
        Box::new(backend),
        None,
        "rtl-test".into(),
    )
    .unwrap();
    // What the PCI core does for the driver: I/O, memory, bus master.
    dev.write_config(PCI_COMMAND, &7u16.to_le_bytes());
    Nic {
        dev,
        worker,
        peer,
        mem,
        line,
        bar: 0,
    }
}

impl Nic {
    pub fn w8(&mut self, off: u8, v: u8) {
        self.dev.write_bar(self.bar, u64::from(off), &[v]);
    }
    pub fn w16(&mut self, off: u8, v: u16) {
        self.dev
            .write_bar(self.bar, u64::from(off), &v.to_le_bytes());
    }
    pub fn w32(&mut self, off: u8, v: u32) {
        self.dev
            .write_bar(self.bar, u64::from(off), &v.to_le_bytes());
    }
    pub fn r8(&mut self, off: u8) -> u8 {
        let mut b = [0u8; 1];
        self.dev.read_bar(self.bar, u64::from(off), &mut b);
        b[0]
    }
    pub fn r16(&mut self, off: u8) -> u16 {
        let mut b = [0u8; 2];
        self.dev.read_bar(self.bar, u64::from(off), &mut b);
        u16::from_le_bytes(b)
    }
    pub fn r32(&mut self, off: u8) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_bar(self.bar, u64::from(off), &mut b);
        u32::from_le_bytes(b)
    }
    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    /// rtl8139_chip_reset / cp_reset_hw: RST, then poll until it clears.
    pub fn reset(&mut self) {
        self.w8(CR, CR_RST);
        for _ in 0..1000 {
            if self.r8(CR) & CR_RST == 0 {
                return;
            }
        }
        panic!("reset did not complete");
    }

    /// Linux's read_eeprom (8139too flavour: two leading zero bits).
    pub fn read_eeprom(&mut self, loc: u32, addr_len: u32) -> u16 {
        const EE_ENB: u8 = 0x80 | CFG9346_EECS;
        let cmd = loc | (6 << addr_len);
        self.w8(CFG9346, EE_ENB & !CFG9346_EECS);
        self.w8(CFG9346, EE_ENB);
        for i in (0..=4 + addr_len).rev() {
            let d = if cmd & (1 << i) != 0 { CFG9346_EEDI } else { 0 };
            self.w8(CFG9346, EE_ENB | d);
            self.w8(CFG9346, EE_ENB | d | CFG9346_EESK);
        }
        self.w8(CFG9346, EE_ENB);
        let mut v = 0u16;
        for _ in 0..16 {
            self.w8(CFG9346, EE_ENB | CFG9346_EESK);
            v = (v << 1) | u16::from(self.r8(CFG9346) & CFG9346_EEDO);
            self.w8(CFG9346, EE_ENB);
        }
        self.w8(CFG9346, 0);
        v
    }

    /// The MAC the way both drivers read it at probe.
    pub fn probe_mac(&mut self) -> [u8; 6] {
        let addr_len = if self.read_eeprom(0, 8) == 0x8129 {
            8
        } else {
            6
        };
        let mut mac = [0u8; 6];
        for i in 0..3 {
            let w = self.read_eeprom(7 + i as u32, addr_len).to_le_bytes();
            mac[2 * i..2 * i + 2].copy_from_slice(&w);
        }
        mac
    }
}

// ---- Frames ----

pub fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A TCP/IPv4 frame with zero checksums.
pub fn tcp_frame(dst: [u8; 6], payload: &[u8], seq: u32) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let total = (20 + 20 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut tcp = vec![0x04, 0xd2, 0x00, 0x50];
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    ip.extend_from_slice(&tcp);
    ip.extend_from_slice(payload);
    eth(dst, 0x0800, &ip)
}

/// A UDP/IPv4 frame with zero checksums.
pub fn udp_frame(dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let total = (20 + 8 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let udp_len = (8 + payload.len()) as u16;
    ip.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    eth(dst, 0x0800, &ip)
}

/// Offsets of the IP and L4 headers (untagged IPv4 frames only).
fn l3_l4(f: &[u8]) -> (usize, usize, usize) {
    let l3 = 14;
    let ihl = usize::from(f[l3] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    (l3, l3 + ihl, l3 + total)
}

fn pseudo_and_segment(f: &[u8]) -> Vec<u8> {
    let (l3, l4, end) = l3_l4(f);
    let mut p = f[l3 + 12..l3 + 20].to_vec();
    p.extend_from_slice(&[0, f[l3 + 9]]);
    p.extend_from_slice(&((end - l4) as u16).to_be_bytes());
    p.extend_from_slice(&f[l4..end]);
    p
}

/// Fills in valid IP and TCP/UDP checksums.
pub fn fill_checksums(f: &mut [u8]) {
    let (l3, l4, _) = l3_l4(f);
    let field = if f[l3 + 9] == 6 { 16 } else { 6 };
    f[l4 + field..l4 + field + 2].fill(0);
    let c = checksum(&pseudo_and_segment(f));
    f[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
    f[l3 + 10..l3 + 12].fill(0);
    let c = checksum(&f[l3..l4]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// A TSO frame as the host's stack hands it to a tap with offloads on:
/// one TCP/IPv4 frame with `data`, a partial checksum (the pseudo-header
/// sum in the field) and `mss`-byte segments asked for.
pub fn tso_frame(dst: [u8; 6], data: &[u8], seq: u32, mss: u16) -> (NetHdr, Vec<u8>) {
    let mut f = tcp_frame(dst, data, seq);
    let (l3, l4, end) = l3_l4(&f);
    let mut p = f[l3 + 12..l3 + 20].to_vec();
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&((end - l4) as u16).to_be_bytes());
    // The folded pseudo-header sum is the complement of its checksum.
    let c = !checksum(&p);
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    f[l3 + 10..l3 + 12].fill(0);
    let c = checksum(&f[l3..l4]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    let hdr = NetHdr {
        flags: tapir_net_backend::hdr::NEEDS_CSUM,
        gso_type: tapir_net_backend::hdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    };
    (hdr, f)
}

/// (IP header checksum valid, L4 checksum valid).
pub fn checksums_ok(f: &[u8]) -> (bool, bool) {
    let (l3, l4, _) = l3_l4(f);
    (
        checksum(&f[l3..l4]) == 0,
        checksum(&pseudo_and_segment(f)) == 0,
    )
}

pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 7) as u8).collect()
}

// ---- General tests ----

#[test]
fn pci_identity_bars_and_pin() {
    let n = nic(DEFAULT_REVISION);
    let c = n.dev.config();
    assert_eq!(c.read_u16(PCI_VENDOR_ID), 0x10ec);
    assert_eq!(c.read_u16(PCI_DEVICE_ID), 0x8139);
    assert_eq!(c.read_u8(PCI_REVISION_ID), 0x20);
    assert_eq!((c.read_u8(PCI_CLASS_CODE), c.read_u8(PCI_SUBCLASS)), (2, 0));
    assert_eq!(c.read_u8(PCI_INTERRUPT_PIN), 1, "INTA");
    let bars: Vec<_> = c.bars().map(|b| (b.index, b.size, b.kind)).collect();
    assert_eq!(bars, vec![(0, 256, BarKind::Io), (1, 256, BarKind::Mem32)]);
    assert_eq!(n.dev.revision(), 0x20);
    assert_eq!(nic(REVISION_8139C).dev.revision(), 0x10);
}

#[test]
fn both_bars_reach_the_same_registers() {
    let mut n = nic(DEFAULT_REVISION);
    n.w32(RBSTART, 0x1234_5678);
    n.bar = 1;
    assert_eq!(n.r32(RBSTART), 0x1234_5678);
    // Unaligned and odd-sized accesses are split into registers.
    let mut b = [0u8; 3];
    n.dev.read_bar(1, u64::from(RBSTART) + 1, &mut b);
    assert_eq!(b, [0x56, 0x34, 0x12]);
    // Beyond the window and other BARs: all-ones, writes ignored.
    let mut b = [0u8; 4];
    n.dev.read_bar(1, 254, &mut b);
    assert_eq!(&b[2..], &[0xff, 0xff]);
    n.dev.read_bar(2, 0, &mut b);
    assert_eq!(b, [0xff; 4]);
    n.dev.write_bar(3, 0, &[1, 2, 3, 4]);
    n.dev.write_bar(0, u64::MAX - 1, &[1, 2, 3, 4]);
}

#[test]
fn eeprom_bit_bang_gives_signature_and_mac() {
    for rev in [REVISION_8139C, DEFAULT_REVISION] {
        let mut n = nic(rev);
        assert_ne!(n.read_eeprom(0, 8), 0x8129, "a 93C46 takes 6 address bits");
        assert_eq!(n.read_eeprom(0, 6), 0x8129);
        assert_eq!(n.read_eeprom(2, 6), 0x8139);
        assert_eq!(n.probe_mac(), MAC);
        assert_eq!(n.r8(CFG9346), 0, "back in normal mode");
    }
}

#[test]
fn hwverid_and_cplus_registers_follow_the_revision() {
    let mut old = nic(REVISION_8139C);
    // 8139too: RTL_R32(TxConfig) & HW_REVID_MASK identifies an RTL-8139C.
    assert_eq!(old.r32(TCR) & TCR_HWVERID_MASK, 0x7400_0000);
    assert_eq!(old.r8(RERID), 0x10);
    let mut new = nic(DEFAULT_REVISION);
    assert_eq!(new.r32(TCR) & TCR_HWVERID_MASK, 0x7480_0000, "RTL8139C+");
    new.w16(CPCR, CPCR_TX | CPCR_RX);
    assert_eq!(new.r16(CPCR), CPCR_TX | CPCR_RX);
    // HWVERID is read-only.
    new.w32(TCR, 0xffff_ffff);
    assert_eq!(new.r32(TCR) & TCR_HWVERID_MASK, 0x7480_0000);
    assert_eq!(new.r32(TCR) & !TCR_HWVERID_MASK, TCR_WRITABLE);
}

#[test]
fn reset_self_clears_and_restores_defaults() {
    let mut n = nic(DEFAULT_REVISION);
    n.w16(IMR, 0xffff);
    n.w8(CR, CR_RE | CR_TE);
    n.w16(CAPR, 0x100);
    n.w32(RCR, RCR_AB);
    n.w8(CFG9346, EEM_CONFIG_WRITE);
    n.w32(IDR0, 0x0403_0201);
    n.w8(CFG9346, 0);
    n.reset();
    assert_eq!(n.r8(CR), CR_BUFE, "RST cleared, RX/TX off, ring empty");
    assert_eq!((n.r16(IMR), n.r16(ISR)), (0, 0));
    assert_eq!(n.r16(CAPR), 0xfff0);
    assert_eq!(n.r16(CBR), 0);
    assert_eq!(n.r32(RCR), 0);
    for i in 0..4 {
        assert_eq!(n.r32(TSD0 + 4 * i) & TSD_OWN, TSD_OWN);
    }
    assert_eq!(n.r16(TSAD) & 0xf, 0xf, "all slots host-owned");
    assert_eq!(n.r32(IDR0), 0x0403_0201, "IDR survives a reset");
    assert_eq!(n.r16(CPCR), 0);
}

#[test]
fn isr_is_write_one_to_clear_and_imr_gates_the_line() {
    let mut n = nic(DEFAULT_REVISION);
    n.reset();
    n.w8(TPPOLL, TPPOLL_FSWINT);
    assert_eq!(n.r16(ISR), INT_SWINT);
    assert!(!n.line.high(), "masked");
    n.w16(IMR, INT_SWINT);
    assert!(n.line.high());
    let status = |n: &mut Nic| {
        let mut b = [0u8; 2];
        n.dev.read_config(PCI_STATUS, &mut b);
        u16::from_le_bytes(b) & PCI_STATUS_INTERRUPT != 0
    };
    assert!(status(&mut n));
    // PCI INTx disable lowers the line but not the status bit.
    n.dev
        .write_config(PCI_COMMAND, &(7u16 | 1 << 10).to_le_bytes());
    assert!(!n.line.high());
    assert!(status(&mut n));
    n.dev.write_config(PCI_COMMAND, &7u16.to_le_bytes());
    assert!(n.line.high());
    // Writing 0 bits clears nothing; writing the bit clears it.
    n.w16(ISR, !INT_SWINT);
    assert_eq!(n.r16(ISR), INT_SWINT);
    n.w16(ISR, INT_SWINT);
    assert_eq!(n.r16(ISR), 0);
    assert!(!n.line.high());
    assert!(!status(&mut n));
    // Masking a pending bit lowers the line, unmasking raises it again.
    n.w8(TPPOLL, TPPOLL_FSWINT);
    assert!(n.line.high());
    n.w16(IMR, 0);
    assert!(!n.line.high());
    n.w16(IMR, INT_SWINT);
    assert!(n.line.high());
}

#[test]
fn config_registers_and_idr_need_the_unlock() {
    let mut n = nic(REVISION_8139C);
    n.w32(IDR0, 0xdead_beef);
    assert_eq!(&n.r32(IDR0).to_le_bytes()[..], &MAC[..4], "locked");
    n.w8(CFG9346, EEM_CONFIG_WRITE);
    assert_eq!(n.r8(CFG9346), EEM_CONFIG_WRITE);
    n.w32(IDR0, 0x0403_0201);
    n.w32(IDR0 + 4, 0x0605);
    n.w8(CONFIG1, 0x00);
    n.w16(BMCR, 0x2100);
    n.w8(CFG9346, 0);
    assert_eq!(n.dev.mac(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(n.r8(CONFIG1), 0x0c, "IOMAP/MEMMAP are read-only");
    assert_eq!(n.r16(BMCR), 0x2100);
    n.w16(BMCR, 0x3100);
    assert_eq!(n.r16(BMCR), 0x2100, "locked again");
    // Auto-load brings the EEPROM's MAC back.
    n.w8(CFG9346, EEM_AUTOLOAD);
    assert_eq!(n.r8(CFG9346), 0);
    assert_eq!(n.dev.mac(), MAC);
}

#[test]
fn media_and_mii_registers_report_link_up_100_full() {
    let mut n = nic(REVISION_8139C);
    let msr = n.r8(MSR);
    assert_eq!(msr & 0x04, 0, "LINKB clear: link up");
    assert_eq!(msr & 0x08, 0, "SPEED_10 clear: 100 Mb/s");
    assert_eq!(n.r16(BMCR), 0x3100);
    let bmsr = n.r16(BMSR);
    assert_ne!(bmsr & 0x0004, 0, "link");
    assert_ne!(bmsr & 0x0020, 0, "autoneg complete");
    assert_ne!(
        n.r16(ANLPAR) & n.r16(ANAR) & 0x0100,
        0,
        "100 full both ways"
    );
    assert_ne!(n.r16(CSCR) & 0x0400, 0);
    n.w16(BMSR, 0);
    assert_eq!(n.r16(BMSR), bmsr, "read-only");
}

#[test]
fn missed_packet_counter_clears_on_write_and_timer_counts() {
    let mut n = nic(REVISION_8139C);
    n.w32(MPC, 0x1234);
    assert_eq!(n.r32(MPC), 0);
    n.w32(TCTR, 0);
    let a = n.r32(TCTR);
    std::thread::sleep(Duration::from_millis(2));
    let b = n.r32(TCTR);
    assert!(b > a && b - a >= 33 * 1000, "33 MHz: {a} -> {b}");
}

#[test]
fn timer_interrupt_fires_when_tctr_reaches_timerint() {
    let mut n = nic(REVISION_8139C);
    n.reset();
    n.w16(IMR, INT_TIMEOUT);
    n.w32(TCTR, 0);
    n.w32(TIMER_INT, 33 * 3000); // 3 ms
    n.pump();
    assert!(!n.line.high(), "not before its time");
    n.advance(Duration::from_millis(4));
    assert!(n.line.high(), "TimeOut");
    assert_ne!(n.r16(ISR) & INT_TIMEOUT, 0);
    n.w16(ISR, INT_TIMEOUT);
    n.w32(TIMER_INT, 0);
    n.pump();
    assert_eq!(n.r16(ISR), 0, "disabled");
}

#[test]
fn dropping_the_nic_stops_its_worker() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let (backend, peer) = MemoryBackend::new(4, Offloads::default()).unwrap();
    let line = Arc::new(Line::default());
    let dev = Rtl8139::new(
        MAC,
        DEFAULT_REVISION,
        mem,
        line,
        Box::new(backend),
        None,
        "rtl-drop".into(),
        &WorkerThreads::default(),
    )
    .unwrap();
    assert!(dev.running());
    // Dropping joins the worker's thread: nothing takes frames any more.
    drop(dev);
    peer.inject(NetHdr::default(), &eth(MAC, 0x0800, &[0; 50]))
        .unwrap();
    assert_eq!(peer.pending_to_guest(), 1);
}

#[test]
fn hostile_register_and_memory_garbage_never_panics_or_hangs() {
    for rev in [REVISION_8139C, DEFAULT_REVISION] {
        let mut n = nic_with(rev, 8);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(rev);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Garbage where rings and buffers could point.
        let junk: Vec<u8> = (0..0x10000).map(|_| next() as u8).collect();
        for base in (0..MEM_SIZE as u64).step_by(0x40000) {
            n.write_mem(base, &junk);
        }
        for i in 0..20_000u32 {
            let r = next();
            let off = r % 256;
            let len = [1usize, 2, 4][((r >> 8) % 3) as usize];
            let mut val = (r >> 16).to_le_bytes();
            // Keep most DMA addresses inside guest RAM.
            if r & (1 << 12) != 0 {
                val[2] &= 0x3f;
                val[3] = 0;
            }
            let bar = ((r >> 13) & 1) as u8;
            n.dev.write_bar(bar, off, &val[..len]);
            let mut rd = [0u8; 4];
            n.dev.read_bar(bar, (r >> 20) % 256, &mut rd[..len]);
            if i % 16 == 0 {
                let _ = n
                    .peer
                    .inject(NetHdr::default(), &junk[..60 + (i as usize % 1500)]);
                let _ = n.peer.take_all();
            }
        }
        // After a reset the chip works.
        n.reset();
        n.w32(TSAD0, 0x1000);
        let f = eth(PEER, 0x88b5, &[0xa5; 100]);
        n.write_mem(0x1000, &f);
        n.w8(CR, CR_TE);
        n.w32(TSD0, f.len() as u32);
        let mut seen = false;
        n.eventually("a frame after the garbage", |n| {
            seen |= n.peer.take_all().iter().any(|(_, s)| s == &f);
            seen
        });
    }
}

impl Driven for Nic {
    fn worker(&mut self) -> &mut NetWorker {
        &mut self.worker
    }
    fn expire_timer(&mut self, at: std::time::Instant) {
        use crate::shell::NicModel;
        self.dev.model().timer_expired(at);
    }
}
