//! Probe-time behaviour: PCI identity, reset, EEPROM, PHY and link,
//! interrupt registers, statistics.

use std::time::Duration;

use tapir_net_backend::Offloads;
use tapir_pci::configuration::{PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MEMORY};
use tapir_pci::{BarKind, PciDevice};

use super::*;
use crate::e1000::eeprom::CHECKSUM_SUM;

fn cfg_u16(n: &mut Nic, off: u16) -> u16 {
    let mut d = [0u8; 2];
    n.dev.read_config(off, &mut d);
    u16::from_le_bytes(d)
}

#[test]
fn pci_identity_bars_and_pin() {
    let mut n = Nic::new(Offloads::default());
    assert_eq!(cfg_u16(&mut n, 0), 0x8086);
    assert_eq!(cfg_u16(&mut n, 2), 0x100E);
    assert_eq!(cfg_u16(&mut n, 0x0A), 0x0200, "class 02, subclass 00");
    assert_eq!(cfg_u16(&mut n, 0x2C), 0x8086);
    assert_eq!(cfg_u16(&mut n, 0x2E), 0x001E);
    assert_eq!(cfg_u16(&mut n, 0x3C) >> 8, 1, "INTA");
    let b0 = n.dev.config().bar(0).unwrap();
    assert_eq!((b0.size, b0.kind), (128 * 1024, BarKind::Mem32));
    let b1 = n.dev.config().bar(1).unwrap();
    assert_eq!((b1.size, b1.kind), (64, BarKind::Io));
}

/// Reads EEPROM word `addr` by bit-banging EECD as `e1000_read_eeprom`.
fn microwire_read(n: &mut Nic, addr: u16) -> u16 {
    let mut eecd = n.r(EECD) | EECD_REQ;
    n.w(EECD, eecd);
    assert_ne!(n.r(EECD) & EECD_GNT, 0, "grant");
    eecd &= !(EECD_DI | EECD_SK);
    n.w(EECD, eecd);
    eecd |= EECD_CS;
    n.w(EECD, eecd);
    let mut out = |n: &mut Nic, data: u16, count: u32| {
        for i in (0..count).rev() {
            eecd = (eecd & !EECD_DI) | if data & (1 << i) != 0 { EECD_DI } else { 0 };
            n.w(EECD, eecd);
            n.w(EECD, eecd | EECD_SK);
            n.w(EECD, eecd);
        }
    };
    out(n, 0b110, 3);
    out(n, addr, 6);
    let mut v = 0u16;
    for _ in 0..16 {
        n.w(EECD, eecd | EECD_SK);
        v = (v << 1) | u16::from(n.r(EECD) & EECD_DO != 0);
        n.w(EECD, eecd);
    }
    n.w(EECD, eecd & !(EECD_CS | EECD_DI));
    n.w(EECD, eecd & !(EECD_CS | EECD_DI | EECD_REQ));
    v
}

fn eerd_read(n: &mut Nic, addr: u32) -> u16 {
    n.w(EERD, (addr << EERD_ADDR_SHIFT) | EERD_START);
    let v = n.r(EERD);
    assert_ne!(v & EERD_DONE, 0);
    (v >> EERD_DATA_SHIFT) as u16
}

#[test]
fn reset_through_io_bar_then_eeprom_by_microwire_and_eerd() {
    let mut n = Nic::new(Offloads::default());
    n.w(IMS, INT_LSC);
    n.w(CTRL, CTRL_SLU);
    n.reset_hw();
    assert_eq!(n.r(CTRL) & CTRL_RST, 0, "RST self-clears");
    assert_eq!(n.r(IMS), 0, "reset masks interrupts");
    assert_eq!(
        n.r(EECD) & (EECD_PRES | EECD_SIZE),
        EECD_PRES,
        "64-word EEPROM"
    );
    let mut sum = 0u16;
    for a in 0..64 {
        let w = microwire_read(&mut n, a);
        assert_eq!(w, eerd_read(&mut n, u32::from(a)), "word {a}");
        sum = sum.wrapping_add(w);
    }
    assert_eq!(sum, CHECKSUM_SUM, "e1000_validate_eeprom_checksum");
    let mut mac = [0u8; 6];
    for i in 0..3 {
        let w = microwire_read(&mut n, i as u16);
        mac[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    assert_eq!(mac, MAC);
    // Receive address 0 is loaded from the EEPROM with AV.
    assert_eq!(
        n.r(RA),
        u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]])
    );
    assert_eq!(n.r(RA + 4), 0x5634 | RAH_AV);
}

#[test]
fn phy_over_mdic_gives_gigabit_full_duplex_link_and_lsc() {
    let mut n = Nic::new(Offloads::default());
    n.reset_hw();
    assert_eq!(n.r(STATUS) & STATUS_LU, 0, "no link before SLU");
    n.w(IMS, INT_LSC);
    n.setup_link();
    let st = n.r(STATUS);
    assert_eq!(st & (STATUS_LU | STATUS_FD), STATUS_LU | STATUS_FD);
    assert_eq!(st & (3 << 6), STATUS_SPEED_1000);
    assert_eq!(st & STATUS_TXOFF, 0);
    assert_eq!(
        n.phy_read(0x11) & 0xEC00,
        0xAC00,
        "M88 PSSR: 1000, FD, resolved, link"
    );
    assert_ne!(n.phy_read(1) & 0x0020, 0, "autoneg complete");
    assert_ne!(n.phy_read(0x0A) & 0x0800, 0, "partner 1000 FD");
    assert_ne!(n.r(ICR) & INT_LSC, 0, "link came up");
    assert!(!n.line.high(), "ICR read lowered the line");
    // A PHY at another address answers with an error.
    n.w(
        MDIC,
        (2 << MDIC_REG_SHIFT) | (5 << MDIC_PHY_SHIFT) | MDIC_OP_READ,
    );
    assert_ne!(n.r(MDIC) & MDIC_ERROR, 0);
    // MDIC completion interrupt.
    n.w(IMS, INT_MDAC);
    n.w(
        MDIC,
        (1 << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_READ | MDIC_INT_EN,
    );
    assert!(n.line.high());
    assert_eq!(n.r(ICR), INT_MDAC);
    // Power-down drops the link (LSC), PHY reset through CTRL restores it.
    n.phy_write(0, 0x0800);
    assert_eq!(n.r(STATUS) & STATUS_LU, 0);
    let ctrl = n.r(CTRL);
    n.w(CTRL, ctrl | CTRL_PHY_RST);
    n.w(CTRL, ctrl);
    assert_ne!(n.r(STATUS) & STATUS_LU, 0);
    assert_ne!(n.r(ICR) & INT_LSC, 0);
    // The cable: the link handle.
    let link = n.dev.link();
    assert!(link.set(false));
    assert_eq!(n.r(STATUS) & STATUS_LU, 0);
    assert_eq!(n.r(ICR) & INT_LSC, INT_LSC);
    // Linux's e1000 asks the PHY (e1000_check_for_link): no link there either.
    assert_eq!(n.phy_read(1) & 0x0004, 0, "MII status: link down");
    assert!(!link.set(false), "no change, no interrupt");
    assert_eq!(n.r(ICR) & INT_LSC, 0);
    assert!(link.set(true));
    assert_ne!(n.r(STATUS) & STATUS_LU, 0);
    assert_eq!(n.r(ICR) & INT_LSC, INT_LSC);
    assert_ne!(n.phy_read(1) & 0x0004, 0, "MII status: link up");
}

#[test]
fn icr_reads_clear_and_ims_masks_the_line() {
    let mut n = Nic::new(Offloads::default());
    n.reset_hw();
    n.w(ICS, INT_LSC | INT_RXT0);
    assert!(!n.line.high(), "masked");
    n.w(IMS, INT_RXT0);
    assert!(n.line.high());
    assert_eq!(n.r(IMS), INT_RXT0);
    n.w(IMC, INT_RXT0);
    assert!(!n.line.high());
    n.w(IMS, INT_LSC);
    assert!(n.line.high());
    assert_eq!(n.r(ICR), INT_LSC | INT_RXT0);
    assert!(!n.line.high());
    assert_eq!(n.r(ICR), 0, "read to clear");
    // Writing ICR clears the bits written (the line follows).
    n.w(ICS, INT_LSC);
    assert!(n.line.high());
    n.w(ICR, INT_LSC);
    assert!(!n.line.high());
    // ICS and IMC read as 0; reserved causes are ignored.
    n.w(ICS, 0x8000_0000);
    assert_eq!(n.r(ICS), 0);
    assert_eq!(n.r(ICR), 0);
}

#[test]
fn intx_disable_bit_and_status_register() {
    let mut n = Nic::new(Offloads::default());
    n.reset_hw();
    n.w(IMS, INT_LSC);
    n.w(ICS, INT_LSC);
    assert!(n.line.high());
    assert_ne!(cfg_u16(&mut n, 6) & (1 << 3), 0, "interrupt status");
    let cmd = PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE;
    n.dev.write_config(PCI_COMMAND, &cmd.to_le_bytes());
    assert!(!n.line.high(), "INTx disabled");
    assert_ne!(cfg_u16(&mut n, 6) & (1 << 3), 0, "still pending");
    n.dev
        .write_config(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    assert!(n.line.high(), "re-enabled with the cause pending");
    let _ = n.r(ICR);
    assert_eq!(cfg_u16(&mut n, 6) & (1 << 3), 0);
}

#[test]
fn itr_holds_interrupts_back_for_its_interval() {
    let mut n = Nic::new(Offloads::default());
    n.reset_hw();
    // 0xFFFF * 256 ns = 16.8 ms between interrupts.
    let interval = Duration::from_nanos(0xFFFF * 256);
    n.w(ITR, 0xFFFF);
    n.w(IMS, INT_LSC);
    let start = std::time::Instant::now();
    n.w(ICS, INT_LSC);
    assert!(n.line.high(), "the first one is not delayed");
    let _ = n.r(ICR);
    n.w(ICS, INT_LSC);
    n.w(ICS, INT_LSC);
    n.pump();
    if start.elapsed() < interval {
        assert!(!n.line.high(), "held back");
    }
    // The clock moves on by the interval (a fake one: nothing waits).
    n.advance(interval);
    assert!(n.line.high(), "the held-back interrupt");
    assert_eq!(n.line.rises(), 2, "coalesced into one");
    // ITR 0: no throttling.
    let _ = n.r(ICR);
    n.w(ITR, 0);
    n.w(ICS, INT_LSC);
    assert!(n.line.high());
}

#[test]
fn io_bar_is_an_indirect_window() {
    let mut n = Nic::new(Offloads::default());
    n.io_w(IOADDR, STATUS);
    assert_eq!(n.io_r(IOADDR), STATUS);
    assert_eq!(n.io_r(IODATA), n.r(STATUS));
    n.io_w(IOADDR, IMS);
    n.io_w(IODATA, INT_TXDW);
    assert_eq!(n.r(IMS), INT_TXDW);
    assert_eq!(n.io_r(0x20), 0, "reserved");
    n.io_w(IOADDR, 0xFFFF_FFFF);
    let _ = n.io_r(IODATA);
}

#[test]
fn odd_register_accesses_do_not_panic() {
    let mut n = Nic::new(Offloads::default());
    for off in [
        0u64,
        1,
        2,
        3,
        0x10,
        0xC0,
        0x1FFFC,
        0x1FFFD,
        0x1FFFF,
        0x20000,
        u64::MAX - 2,
    ] {
        for len in [1usize, 2, 3, 4, 8, 16] {
            let mut d = vec![0u8; len];
            n.dev.read_bar(BAR_MMIO, off, &mut d);
            n.dev.write_bar(BAR_MMIO, off, &d);
            n.dev.read_bar(BAR_IO, off, &mut d);
            n.dev.write_bar(BAR_IO, off, &d);
            n.dev.read_bar(5, off, &mut d);
        }
    }
    // A 2-byte read of STATUS sees its low half.
    let mut d = [0u8; 2];
    n.dev.read_bar(BAR_MMIO, u64::from(STATUS), &mut d);
    assert_eq!(u16::from_le_bytes(d), n.r(STATUS) as u16);
    // An 8-byte write is two register writes.
    let v = (u64::from(RX_RING as u32)) | (7u64 << 32);
    n.dev
        .write_bar(BAR_MMIO, u64::from(RDBAL), &v.to_le_bytes());
    assert_eq!((n.r(RDBAL), n.r(RDBAH)), (RX_RING as u32, 7));
}

#[test]
fn statistics_count_and_clear_on_read() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(4);
    n.send_legacy(&eth(PEER_MAC, 0x0800, &payload(100, 1)));
    n.take_frames(1);
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x0800, &payload(200, 2)))
        .unwrap();
    n.eventually("received", |n| n.r(RDH) == 1);
    n.eventually("transmit counted", |n| n.r(TDH) == 1);
    assert_eq!(n.r(GPTC), 1);
    assert_eq!(n.r(GPTC), 0, "cleared by the read");
    assert_eq!(n.r(GOTCL), 114 + 4);
    assert_eq!(n.r(GPRC), 1);
    assert_eq!(n.r(TPR), 1);
    assert_eq!(n.r(GORCL), 214 + 4);
    assert_eq!(n.r(GORCL + 4), 0);
    assert_eq!(n.r(PRC64 + 4 * 2), 1, "128-255 bytes");
    assert_eq!(n.r(GPRC), 0);
}
