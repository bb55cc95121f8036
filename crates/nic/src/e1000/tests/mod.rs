//! Tests of the e1000 driven through its PCI BARs the way Linux's `e1000`
//! driver drives it, with hand-built descriptor rings in guest memory and
//! the in-memory backend as the network.

mod init;
mod robust;
mod rx;
mod tx;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tapir_devices::LevelIrq;
use tapir_net_backend::offload::{be16, fold, sum_words};
use tapir_net_backend::{MemoryBackend, MemoryPeer, NetHdr, Offloads};
use tapir_pci::configuration::{
    PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
};
use tapir_pci::PciDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::regs::*;
use super::{BAR_IO, BAR_MMIO, E1000};
pub use crate::test_util::Driven;
use crate::worker::NetWorker;

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const MEM_SIZE: usize = 0x40_0000;
pub const TX_RING: u64 = 0x1_0000;
pub const RX_RING: u64 = 0x2_0000;
/// Descriptors per ring.
pub const RING: u32 = 16;
/// TX buffer `i` (64 KiB apart).
pub fn tx_buf(i: u32) -> u64 {
    0x10_0000 + u64::from(i) * 0x1_0000
}
/// RX buffer `i` (16 KiB apart).
pub fn rx_buf(i: u32) -> u64 {
    0x30_0000 + u64::from(i) * 0x4000
}

/// An INTx line that records its level.
#[derive(Default)]
pub struct Line {
    high: AtomicBool,
    edges: Mutex<Vec<bool>>,
}

impl LevelIrq for Line {
    fn set_level(&self, high: bool) -> io::Result<()> {
        self.high.store(high, Ordering::SeqCst);
        self.edges.lock().unwrap().push(high);
        Ok(())
    }
}

impl Line {
    pub fn high(&self) -> bool {
        self.high.load(Ordering::SeqCst)
    }
    pub fn rises(&self) -> usize {
        self.edges.lock().unwrap().iter().filter(|&&h| h).count()
    }
}

/// An e1000 with its guest memory, network peer and interrupt line.
pub struct Nic {
    pub dev: E1000,
    /// The NIC worker, driven on the test's thread ([`Nic::pump`]).
    pub worker: NetWorker,
    pub mem: GuestMemoryMmap,
    pub peer: MemoryPeer,
    pub line: Arc<Line>,
    pub tx_tail: u32,
    pub rx_tail: u32,
}

impl Nic {
    pub fn new(offloads: Offloads) -> Nic {
        Self::with_capacity(offloads, 64)
    }

    pub fn with_capacity(offloads: Offloads, capacity: usize) -> Nic {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (backend, peer) = MemoryBackend::new(capacity, offloads).unwrap();
        let line = Arc::new(Line::default());
        let (mut dev, worker) = E1000::new_manual(
            MAC,
            mem.clone(),
            line.clone(),
            Box::new(backend),
            None,
            "test-e1000".into(),
        )
        .unwrap();
        let cmd = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        dev.write_config(PCI_COMMAND, &cmd.to_le_bytes());
        Nic {
            dev,
            worker,
            mem,
            peer,
            line,
            tx_tail: 0,
            rx_tail: 0,
        }
    }

    pub fn r(&mut self, off: u32) -> u32 {
        let mut d = [0u8; 4];
        self.dev.read_bar(BAR_MMIO, u64::from(off), &mut d);
        u32::from_le_bytes(d)
    }

    pub fn w(&mut self, off: u32, v: u32) {
        self.dev
            .write_bar(BAR_MMIO, u64::from(off), &v.to_le_bytes());
    }

    pub fn io_r(&mut self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        self.dev.read_bar(BAR_IO, off, &mut d);
        u32::from_le_bytes(d)
    }

    pub fn io_w(&mut self, off: u64, v: u32) {
        self.dev.write_bar(BAR_IO, off, &v.to_le_bytes());
    }

    pub fn phy_read(&mut self, reg: u32) -> u16 {
        self.w(
            MDIC,
            (reg << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_READ,
        );
        let v = self.r(MDIC);
        assert_ne!(v & MDIC_READY, 0);
        assert_eq!(v & MDIC_ERROR, 0);
        v as u16
    }

    pub fn phy_write(&mut self, reg: u32, data: u16) {
        self.w(
            MDIC,
            u32::from(data) | (reg << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_WRITE,
        );
        assert_ne!(self.r(MDIC) & MDIC_READY, 0);
    }

    /// `e1000_reset_hw` for the 82540: mask, stop, reset through the I/O BAR.
    pub fn reset_hw(&mut self) {
        self.w(IMC, !0);
        self.w(RCTL, 0);
        self.w(TCTL, TCTL_PSP);
        let ctrl = self.r(CTRL);
        self.io_w(IOADDR, CTRL);
        self.io_w(IODATA, ctrl | CTRL_RST);
        self.w(IMC, !0);
        let _ = self.r(ICR);
    }

    /// Copper link set-up as `e1000_setup_copper_link` does it.
    pub fn setup_link(&mut self) {
        let ctrl = self.r(CTRL);
        self.w(CTRL, (ctrl | CTRL_SLU) & !((1 << 11) | (1 << 12)));
        let id = (u32::from(self.phy_read(2)) << 16) | u32::from(self.phy_read(3) & 0xFFF0);
        assert_eq!(id, 0x0141_0C20);
        let pscr = self.phy_read(0x10);
        self.phy_write(0x10, pscr | 0x0800 | 0x0060);
        let ctl = self.phy_read(0);
        self.phy_write(0, ctl | 0x8000);
        self.phy_write(4, 0x0DE1);
        self.phy_write(9, 0x0200);
        let ctl = self.phy_read(0);
        self.phy_write(0, ctl | 0x1000 | 0x0200);
        let _ = self.phy_read(1);
        assert_ne!(self.phy_read(1) & 0x0004, 0, "PHY link");
    }

    /// Configures both rings, enables both units and interrupts, as
    /// `e1000_configure` + `e1000_irq_enable` do.
    pub fn up(&mut self) {
        self.reset_hw();
        self.setup_link();
        for i in 0..RING {
            self.rx_desc_init(i);
        }
        self.w(TDBAL, TX_RING as u32);
        self.w(TDBAH, 0);
        self.w(TDLEN, RING * 16);
        self.w(TDH, 0);
        self.w(TDT, 0);
        self.w(TCTL, TCTL_EN | TCTL_PSP);
        self.w(RDBAL, RX_RING as u32);
        self.w(RDBAH, 0);
        self.w(RDLEN, RING * 16);
        self.w(RDH, 0);
        self.w(RDT, 0);
        self.w(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        self.w(IMS, INT_RXT0 | INT_TXDW | INT_RXDMT0 | INT_LSC);
        self.tx_tail = 0;
        self.rx_tail = 0;
    }

    /// Hands RX descriptors to the device up to (not including) `tail`.
    pub fn rx_give(&mut self, n: u32) {
        for _ in 0..n {
            self.rx_desc_init(self.rx_tail);
            self.rx_tail = (self.rx_tail + 1) % RING;
        }
        self.w(RDT, self.rx_tail);
    }

    pub fn rx_desc_init(&mut self, i: u32) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&rx_buf(i).to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(RX_RING + 16 * u64::from(i)))
            .unwrap();
    }

    /// (length, status, errors, special) of RX descriptor `i`.
    pub fn rx_desc(&self, i: u32) -> (u16, u8, u8, u16) {
        let mut d = [0u8; 16];
        self.mem
            .read_slice(&mut d, GuestAddress(RX_RING + 16 * u64::from(i)))
            .unwrap();
        (
            u16::from_le_bytes([d[8], d[9]]),
            d[12],
            d[13],
            u16::from_le_bytes([d[14], d[15]]),
        )
    }

    pub fn rx_data(&self, i: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(rx_buf(i)))
            .unwrap();
        v
    }

    /// Writes descriptors at the TX tail and moves TDT past them.
    pub fn tx_push(&mut self, descs: &[[u8; 16]]) {
        for d in descs {
            let a = TX_RING + 16 * u64::from(self.tx_tail);
            self.mem.write_slice(d, GuestAddress(a)).unwrap();
            self.tx_tail = (self.tx_tail + 1) % RING;
        }
        self.w(TDT, self.tx_tail);
    }

    /// Status byte of TX descriptor `i`.
    pub fn tx_status(&self, i: u32) -> u8 {
        self.mem
            .read_obj(GuestAddress(TX_RING + 16 * u64::from(i) + 12))
            .unwrap()
    }

    /// Puts `data` in TX buffer `i` and returns its address.
    pub fn tx_data(&self, i: u32, data: &[u8]) -> u64 {
        self.mem.write_slice(data, GuestAddress(tx_buf(i))).unwrap();
        tx_buf(i)
    }

    /// Sends `frame` with one legacy descriptor (EOP, IFCS, RS).
    pub fn send_legacy(&mut self, frame: &[u8]) {
        let slot = self.tx_tail;
        let a = self.tx_data(slot, frame);
        let cmd = TXD_CMD_EOP | 0x02 | TXD_CMD_RS;
        self.tx_push(&[legacy(a, frame.len(), cmd, 0, 0, 0)]);
    }

    pub fn wait_tx_head(&mut self, head: u32) {
        self.eventually(&format!("TDH = {head}"), |s| s.r(TDH) == head);
    }

    pub fn take_frames(&mut self, n: usize) -> Vec<(NetHdr, Vec<u8>)> {
        let mut got = Vec::new();
        self.eventually(&format!("{n} frames at the backend"), |s| {
            while let Some(f) = s.peer.take() {
                got.push(f);
            }
            got.len() >= n
        });
        got
    }
}

/// A legacy transmit descriptor.
pub fn legacy(addr: u64, len: usize, cmd: u8, cso: u8, css: u8, special: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..10].copy_from_slice(&(len as u16).to_le_bytes());
    d[10] = cso;
    d[11] = cmd;
    d[13] = css;
    d[14..].copy_from_slice(&special.to_le_bytes());
    d
}

/// A context descriptor.
#[allow(clippy::too_many_arguments)]
pub fn context(
    ip: (u8, u8, u16),
    tu: (u8, u8, u16),
    paylen: u32,
    tucmd: u8,
    hdrlen: u8,
    mss: u16,
) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = ip.0;
    d[1] = ip.1;
    d[2..4].copy_from_slice(&ip.2.to_le_bytes());
    d[4] = tu.0;
    d[5] = tu.1;
    d[6..8].copy_from_slice(&tu.2.to_le_bytes());
    let dw =
        (paylen & 0xF_FFFF) | (TXD_DTYP_CONTEXT << 20) | (u32::from(tucmd | TXD_CMD_DEXT) << 24);
    d[8..12].copy_from_slice(&dw.to_le_bytes());
    d[13] = hdrlen;
    d[14..].copy_from_slice(&mss.to_le_bytes());
    d
}

/// An extended data descriptor.
pub fn data(addr: u64, len: usize, dcmd: u8, popts: u8, special: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    let dw =
        (len as u32 & 0xF_FFFF) | (TXD_DTYP_DATA << 20) | (u32::from(dcmd | TXD_CMD_DEXT) << 24);
    d[8..12].copy_from_slice(&dw.to_le_bytes());
    d[13] = popts;
    d[14..].copy_from_slice(&special.to_le_bytes());
    d
}

// ---- frames -------------------------------------------------------------------

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// An Ethernet frame to `dst` from the NIC with `ethertype` and `body`.
pub fn eth(dst: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// IPv4/TCP to the peer. `tot_len_zero` prepares it for TSO the way
/// Linux does (IP length and checksum 0, TCP checksum = pseudo-header sum
/// without the length); otherwise the TCP checksum field holds the
/// pseudo-header sum with the length (CHECKSUM_PARTIAL).
pub fn ipv4_tcp(data: &[u8], tso: bool, flags: u8) -> Vec<u8> {
    let tcp_len = 20 + data.len();
    let mut ip = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    if !tso {
        ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        let c = !fold(sum_words(&ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let len_part = if tso { 0 } else { tcp_len as u64 };
    let pseudo = fold(sum_words(&ip[12..20], 6 + len_part));
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    let mut body = ip;
    body.extend_from_slice(&tcp);
    body.extend_from_slice(data);
    eth(PEER_MAC, 0x0800, &body)
}

/// IPv6/TCP to the peer, prepared like [`ipv4_tcp`].
pub fn ipv6_tcp(data: &[u8], tso: bool) -> Vec<u8> {
    let tcp_len = 20 + data.len();
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
    ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    if !tso {
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    }
    let mut tcp = vec![0u8; 20];
    tcp[4..8].copy_from_slice(&7000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    let len_part = if tso { 0 } else { tcp_len as u64 };
    let pseudo = fold(sum_words(&ip[8..40], 6 + len_part));
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    let mut body = ip;
    body.extend_from_slice(&tcp);
    body.extend_from_slice(data);
    eth(PEER_MAC, 0x86DD, &body)
}

/// Checks the IPv4 header checksum, total length and TCP checksum of a
/// frame; returns (IP id, TCP seq, TCP flags, payload length).
pub fn check_ipv4_tcp(f: &[u8]) -> (u16, u32, u8, usize) {
    let ip = &f[14..34];
    assert_eq!(fold(sum_words(ip, 0)), 0xFFFF, "IP header checksum");
    let tot = usize::from(be16(ip, 2));
    // Short frames carry Ethernet padding after the datagram.
    let end = if f.len() == 60 { 14 + tot } else { f.len() };
    assert_eq!(tot, end - 14, "IP total length");
    let tcp = &f[34..end];
    let pseudo = sum_words(&ip[12..20], 6 + tcp.len() as u64);
    assert_eq!(fold(sum_words(tcp, pseudo)), 0xFFFF, "TCP checksum");
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    (be16(ip, 4), seq, tcp[13], tcp.len() - 20)
}

/// Like [`check_ipv4_tcp`] for IPv6: (TCP seq, flags, payload length).
pub fn check_ipv6_tcp(f: &[u8]) -> (u32, u8, usize) {
    let ip = &f[14..54];
    assert_eq!(
        usize::from(be16(ip, 4)),
        f.len() - 54,
        "IPv6 payload length"
    );
    let tcp = &f[54..];
    let pseudo = sum_words(&ip[8..40], 6 + tcp.len() as u64);
    assert_eq!(fold(sum_words(tcp, pseudo)), 0xFFFF, "TCP checksum");
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    (seq, tcp[13], tcp.len() - 20)
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
