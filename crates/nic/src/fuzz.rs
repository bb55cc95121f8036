//! Drives a PCI NIC model with input that a fuzzer chooses: register
//! accesses, guest memory contents (descriptor rings and buffers), frames
//! from the network, runs of the NIC worker, the clock and the cable, in the
//! order the input says. The cargo-fuzz targets in `fuzz/` call [`run`];
//! so do the seeded tests below, which `cargo test` runs on stable Rust.
//!
//! What a run checks is what a hostile guest must never achieve: a panic,
//! a worker that stops, a read or write outside guest RAM (the model only
//! reaches guest memory through `GuestMemoryMmap`, which refuses it), or
//! unbounded growth (the frames the model sends are drained and counted).
//!
//! The first bytes choose the backend's offloads and whether the device is
//! first set up as its driver would (rings in RAM, units enabled), so that
//! random descriptors reach the ring logic instead of dying at the enable
//! bits.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapir_devices::LevelIrq;
use tapir_net_backend::hdr::{DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use tapir_net_backend::{MemoryBackend, MemoryPeer, NetHdr, Offloads};
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::PciDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::shell::{PciNic, PciNicModel};
use crate::worker::NetWorker;
use crate::{e1000, rtl8139};

/// Guest RAM of a run: rings and buffers live here; everything above is
/// outside RAM.
pub const MEM_SIZE: usize = 1 << 20;
/// Where the set-up puts the receive ring (or buffer) and the transmit
/// ring; [`Op::Ring`] writes are relative to these.
const RX_AREA: u64 = 0x1_0000;
const TX_AREA: u64 = 0x3_0000;
/// Where the set-up's descriptors point: 256 buffers of 2 KiB.
const BUF_AREA: u64 = 0x4_0000;
/// Operations one run performs at most.
const MAX_OPS: usize = 2048;
/// Largest frame injected from the network.
const MAX_INJECT: usize = 65_550;

/// The model a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Intel 82540EM.
    E1000,
    /// RTL8139C (8139too's normal mode).
    Rtl8139,
    /// RTL8139C+ in C+ mode (8139cp).
    Rtl8139CPlus,
}

/// Reads the fuzzer's bytes; past the end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
}

/// An interrupt line that goes nowhere.
struct NoLine;

impl LevelIrq for NoLine {
    fn set_level(&self, _high: bool) -> io::Result<()> {
        Ok(())
    }
}

/// One device under test, whatever its model.
struct Rig<M: PciNicModel + 'static> {
    target: Target,
    dev: PciNic<M>,
    worker: NetWorker,
    peer: MemoryPeer,
    mem: GuestMemoryMmap,
    /// The BARs' sizes, by index.
    bars: [u64; 2],
}

/// What a run moved, for a check that the input reached the rings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Frames the model handed to the backend.
    pub to_network: u64,
    /// Frames the model put into guest memory.
    pub to_guest: u64,
}

/// Runs `target` on `data`. Panics on what a guest must never cause.
pub fn run(target: Target, data: &[u8]) -> Moved {
    let mut input = Input(data);
    let flags = input.u8();
    let offloads = if flags & 1 != 0 {
        Offloads::ALL
    } else {
        Offloads::default()
    };
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    let (backend, peer) = MemoryBackend::new(16, offloads).expect("memory backend");
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let line = Arc::new(NoLine);
    let name = "fuzz".to_string();
    let setup = flags & 2 != 0;
    match target {
        Target::E1000 => {
            let (dev, worker) =
                e1000::E1000::new_manual(mac, mem.clone(), line, Box::new(backend), None, name)
                    .expect("e1000");
            let mut rig = Rig {
                target,
                dev,
                worker,
                peer,
                mem,
                bars: [e1000::regs::BAR0_SIZE, e1000::regs::BAR1_SIZE],
            };
            rig.enable();
            if setup {
                rig.e1000_driver_setup();
            }
            rig.drive(&mut input)
        }
        Target::Rtl8139 | Target::Rtl8139CPlus => {
            let cplus = target == Target::Rtl8139CPlus;
            let revision = if cplus {
                rtl8139::DEFAULT_REVISION
            } else {
                rtl8139::REVISION_8139C
            };
            let (dev, worker) = rtl8139::Rtl8139::new_manual(
                mac,
                revision,
                mem.clone(),
                line,
                Box::new(backend),
                None,
                name,
            )
            .expect("rtl8139");
            let window = rtl8139::REG_WINDOW;
            let mut rig = Rig {
                target,
                dev,
                worker,
                peer,
                mem,
                bars: [window, window],
            };
            rig.enable();
            if setup {
                rig.rtl8139_driver_setup(cplus);
            }
            rig.drive(&mut input)
        }
    }
}

/// What one input byte asks for.
enum Op {
    /// A register write: BAR, offset, width, value.
    Write,
    /// A register read.
    Read,
    /// Bytes into guest memory at any address (most land outside RAM
    /// only when the fuzzer wants them to).
    Mem,
    /// Bytes into the receive or transmit area (descriptors, slots).
    Ring,
    /// The transmit doorbell as a driver rings it (TDT, a TSD, TPPoll
    /// with a descriptor handed over).
    Doorbell,
    /// A frame from the network, with an offload header.
    Inject,
    /// The worker runs until it has nothing left to do.
    Pump,
    /// The model's clock moves on.
    Advance,
    /// The PCI command register.
    Command,
    /// The cable goes out or in.
    Cable,
}

impl Op {
    fn of(b: u8) -> Op {
        match b % 16 {
            0 | 1 => Op::Write,
            2 => Op::Read,
            3 => Op::Mem,
            4 | 5 => Op::Ring,
            6..=8 => Op::Inject,
            9 | 10 => Op::Pump,
            11 | 12 => Op::Doorbell,
            13 => Op::Advance,
            14 => Op::Command,
            _ => Op::Cable,
        }
    }
}

impl<M: PciNicModel + 'static> Rig<M> {
    /// I/O, memory and bus mastering on, as the PCI core does for a driver.
    fn enable(&mut self) {
        self.dev.write_config(PCI_COMMAND, &7u16.to_le_bytes());
    }

    fn w(&mut self, bar: u8, off: u64, v: &[u8]) {
        self.dev.write_bar(bar, off, v);
    }

    fn drive(&mut self, input: &mut Input<'_>) -> Moved {
        let link = self.dev.link();
        let mut cable = true;
        for _ in 0..MAX_OPS {
            if input.done() {
                break;
            }
            match Op::of(input.u8()) {
                Op::Write => {
                    let bar = input.u8() & 1;
                    let off = u64::from(input.u32()) % self.bars[usize::from(bar)];
                    let width = 1usize << (input.u8() % 3);
                    let v = input.u32().to_le_bytes();
                    self.w(bar, off, &v[..width]);
                }
                Op::Read => {
                    let bar = input.u8() & 1;
                    let off = u64::from(input.u32()) % self.bars[usize::from(bar)];
                    let mut d = [0u8; 4];
                    let width = 1usize << (input.u8() % 3);
                    self.dev.read_bar(bar, off, &mut d[..width]);
                }
                Op::Mem => {
                    let addr = u64::from(input.u32()) % (2 * MEM_SIZE as u64);
                    let len = usize::from(input.u8());
                    let bytes = input.take(len).to_vec();
                    // Outside RAM the write is refused, as for the guest.
                    let _ = self.mem.write_slice(&bytes, GuestAddress(addr));
                }
                Op::Ring => {
                    let area = if input.u8() & 1 == 0 {
                        RX_AREA
                    } else {
                        TX_AREA
                    };
                    let off = u64::from(input.u16()) & !3;
                    let len = usize::from(input.u8() % 64);
                    let bytes = input.take(len).to_vec();
                    let _ = self.mem.write_slice(&bytes, GuestAddress(area + off));
                }
                Op::Inject => {
                    let kind = input.u8();
                    let len = usize::from(input.u16()) % MAX_INJECT;
                    let mut frame = input.take(len.min(256)).to_vec();
                    // Long frames: the fuzzer's bytes, then a pattern.
                    frame.resize(len, 0x5a);
                    let hdr = NetHdr {
                        flags: [0, NEEDS_CSUM, DATA_VALID][usize::from(kind % 3)],
                        gso_type: [0, GSO_TCPV4, GSO_TCPV6, GSO_TCPV4 | GSO_ECN]
                            [usize::from((kind >> 2) % 4)],
                        hdr_len: input.u16(),
                        gso_size: input.u16(),
                        csum_start: input.u16(),
                        csum_offset: input.u16(),
                        num_buffers: 0,
                    };
                    // A full backend queue refuses: the network drops it.
                    let _ = self.peer.inject(hdr, &frame);
                }
                Op::Doorbell => {
                    let v = input.u32();
                    self.doorbell(v);
                }
                Op::Pump => self.pump(),
                Op::Advance => {
                    let by = Duration::from_micros(u64::from(input.u16()) * 16);
                    self.dev.model().timer_expired(Instant::now() + by);
                }
                Op::Command => {
                    let cmd = input.u16();
                    self.dev.write_config(PCI_COMMAND, &cmd.to_le_bytes());
                }
                Op::Cable => {
                    cable = !cable;
                    link.set(cable);
                }
            }
        }
        link.set(true);
        self.pump();
        let stats = self.dev.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Moved {
            to_network: get(&stats.tx_frames),
            to_guest: get(&stats.rx_frames),
        }
    }

    /// Runs the worker and drains what the model sent, so that a run's
    /// memory stays bounded by its input.
    fn pump(&mut self) {
        self.worker
            .pump()
            .expect("the worker's event wait never fails");
        while self.peer.take().is_some() {}
    }

    fn put(&self, addr: u64, bytes: &[u8]) {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("the set-up writes inside RAM");
    }

    /// A descriptor of 16 bytes: two 32-bit words, then a 64-bit address
    /// (rtl8139 C+), or an address then two words (e1000).
    fn desc(&self, at: u64, addr_first: bool, w0: u32, w1: u32, addr: u64) {
        let mut d = [0u8; 16];
        let (a, w) = if addr_first { (0, 8) } else { (8, 0) };
        d[a..a + 8].copy_from_slice(&addr.to_le_bytes());
        d[w..w + 4].copy_from_slice(&w0.to_le_bytes());
        d[w + 4..w + 8].copy_from_slice(&w1.to_le_bytes());
        self.put(at, &d);
    }

    /// Rings the transmit doorbell as a driver does, `v` choosing which
    /// descriptor or slot and how long its frame is.
    fn doorbell(&mut self, v: u32) {
        let len = 14 + v % 1500;
        match self.target {
            Target::E1000 => {
                let tdt = (v >> 16) % 256;
                self.w(
                    e1000::BAR_MMIO,
                    u64::from(e1000::regs::TDT),
                    &tdt.to_le_bytes(),
                );
            }
            Target::Rtl8139 => {
                use rtl8139::regs::TSD0;
                let slot = ((v >> 16) % 4) as u8;
                self.w(0, u64::from(TSD0 + 4 * slot), &len.to_le_bytes());
            }
            Target::Rtl8139CPlus => {
                use rtl8139::regs::*;
                let i = u64::from((v >> 16) % 64);
                let eor = if i == 63 { DESC_EOR } else { 0 };
                let opts1 = DESC_OWN | DESC_FS | DESC_LS | eor | len;
                self.desc(TX_AREA + 16 * i, false, opts1, 0, BUF_AREA + 2048 * i);
                self.w(0, u64::from(TPPOLL), &[TPPOLL_NPQ]);
            }
        }
    }

    /// What Linux's e1000 driver sets up: link, rings of 256 descriptors
    /// at the set-up areas (receive buffers given, transmit descriptors
    /// filled but not handed over), both units on, every interrupt cause
    /// unmasked.
    fn e1000_driver_setup(&mut self) {
        use e1000::regs::*;
        for i in 0..256u64 {
            let buf = BUF_AREA + 2048 * i;
            self.desc(RX_AREA + 16 * i, true, 0, 0, buf);
            let len = 60 + (i as u32 * 37) % 1400;
            let cmd = TXD_CMD_EOP | TXD_CMD_RS | 0x02;
            self.desc(TX_AREA + 16 * i, true, len | (u32::from(cmd) << 24), 0, buf);
        }
        let mut w = |off: u32, v: u32| self.w(e1000::BAR_MMIO, u64::from(off), &v.to_le_bytes());
        w(CTRL, CTRL_SLU);
        w(RDBAL, RX_AREA as u32);
        w(RDLEN, 256 * 16);
        w(RDH, 0);
        w(RDT, 255);
        w(TDBAL, TX_AREA as u32);
        w(TDLEN, 256 * 16);
        w(TDH, 0);
        w(TDT, 0);
        w(RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_LPE);
        w(TCTL, TCTL_EN | TCTL_PSP);
        w(IMS, !0);
    }

    /// What 8139too (normal mode) or 8139cp (C+ mode) sets up: the receive
    /// ring or descriptors and the transmit slots or descriptors at the
    /// set-up areas, both units on, every interrupt cause unmasked.
    fn rtl8139_driver_setup(&mut self, cplus: bool) {
        use rtl8139::regs::*;
        if cplus {
            for i in 0..64u64 {
                let eor = if i == 63 { DESC_EOR } else { 0 };
                let buf = BUF_AREA + 2048 * i;
                self.desc(RX_AREA + 16 * i, false, DESC_OWN | eor | 2048, 0, buf);
            }
        }
        let bar = 0;
        let mut w = |off: u8, v: &[u8]| self.w(bar, u64::from(off), v);
        if cplus {
            w(CPCR, &(CPCR_TX | CPCR_RX).to_le_bytes());
            w(RDSAR, &(RX_AREA as u32).to_le_bytes());
            w(RDSAR + 4, &0u32.to_le_bytes());
            w(TNPDS, &(TX_AREA as u32).to_le_bytes());
            w(TNPDS + 4, &0u32.to_le_bytes());
        } else {
            w(RBSTART, &(RX_AREA as u32).to_le_bytes());
            for i in 0..4u8 {
                let slot = TX_AREA as u32 + u32::from(i) * 0x800;
                w(TSAD0 + 4 * i, &slot.to_le_bytes());
            }
        }
        w(CR, &[CR_RE | CR_TE]);
        w(
            RCR,
            &(RCR_AAP | RCR_AB | RCR_WRAP | (7 << 13)).to_le_bytes(),
        );
        w(IMR, &0xffffu16.to_le_bytes());
    }
}

/// virtio-net's queue path: the split rings of the receive and transmit
/// queues (descriptor tables, avail and used rings, all in guest memory the
/// fuzzer writes), their kicks, frames from the network with offload
/// headers, and worker runs. The first byte chooses the backend's offloads
/// (bit 0), whether the rings start filled as Linux's driver fills them
/// (bit 1) and mergeable receive buffers (bit 2).
pub fn run_virtio(data: &[u8]) -> Moved {
    use tapir_virtio::{VirtioInterrupt, VirtioInterruptType};
    use virtio_queue::{Queue, QueueT};

    use crate::link::{Carrier, LinkHandle, LinkNotify};
    use crate::virtio_net::Queues;
    use crate::worker::{GuestFds, NicStats};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// Queue size of both queues.
    const QSIZE: u16 = 64;
    /// Descriptor flags.
    const F_WRITE: u16 = 2;

    /// The virtio device's part of a cable change (a config interrupt)
    /// is not this target's.
    struct NoNotify;
    impl LinkNotify for NoNotify {
        fn link_changed(&self, _up: bool) {}
    }

    struct NoIrq;
    impl VirtioInterrupt for NoIrq {
        fn trigger(&self, _kind: VirtioInterruptType) -> io::Result<()> {
            Ok(())
        }
    }

    /// A split ring at `base`: descriptors, avail at +16*QSIZE, used at
    /// +0x1000.
    fn queue(mem: &GuestMemoryMmap, base: u64) -> Queue {
        let mut q = Queue::new(QSIZE).expect("queue size");
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(base as u32), Some(0));
        q.set_avail_ring_address(Some((base + 16 * u64::from(QSIZE)) as u32), Some(0));
        q.set_used_ring_address(Some((base + 0x1000) as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem), "the set-up's rings are valid");
        q
    }

    fn put(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
        let _ = mem.write_slice(bytes, GuestAddress(addr));
    }

    /// Makes descriptor `head` of the ring at `base` available.
    fn publish(mem: &GuestMemoryMmap, base: u64, idx: &mut u16, head: u16) {
        let avail = base + 16 * u64::from(QSIZE);
        let slot = avail + 4 + 2 * u64::from(*idx % QSIZE);
        put(mem, slot, &head.to_le_bytes());
        *idx = idx.wrapping_add(1);
        put(mem, avail + 2, &idx.to_le_bytes());
    }

    fn desc(mem: &GuestMemoryMmap, base: u64, i: u16, addr: u64, len: u32, flags: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        put(mem, base + 16 * u64::from(i), &d);
    }

    let mut input = Input(data);
    let flags = input.u8();
    let offloads = if flags & 1 != 0 {
        Offloads::ALL
    } else {
        Offloads::default()
    };
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    let (backend, peer) = MemoryBackend::new(16, offloads).expect("memory backend");
    let stats = Arc::new(NicStats::default());
    let (rxq, txq) = (queue(&mem, RX_AREA), queue(&mem, TX_AREA));
    let (mut rx_idx, mut tx_idx) = (0u16, 0u16);
    if flags & 2 != 0 {
        for i in 0..QSIZE {
            let buf = BUF_AREA + 2048 * u64::from(i);
            desc(&mem, RX_AREA, i, buf, 2048, F_WRITE);
            publish(&mem, RX_AREA, &mut rx_idx, i);
            // 12-byte header, then a frame of 60 to 1500 bytes.
            let len = 12 + 60 + (u32::from(i) * 23) % 1440;
            desc(&mem, TX_AREA, i, buf + 0x800 * 64, len, 0);
        }
    }
    let kick = || EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let (tx_kick, rx_kick) = (kick(), kick());
    let guest = GuestFds {
        tx: tx_kick.try_clone().expect("eventfd"),
        rx: rx_kick.try_clone().expect("eventfd"),
        timer: None,
    };
    let queues = Queues::new(
        mem.clone(),
        rxq,
        txq,
        Arc::new(NoIrq),
        flags & 4 != 0,
        stats.clone(),
    );
    let carrier = Carrier::new();
    let link = LinkHandle::new(carrier.clone(), Arc::new(NoNotify));
    let mut worker = NetWorker::manual(
        "fuzz",
        Box::new(queues),
        guest,
        Box::new(backend),
        None,
        stats.clone(),
        carrier,
    )
    .expect("worker");
    let pump = |w: &mut NetWorker| {
        w.pump().expect("the worker's event wait never fails");
        while peer.take().is_some() {}
    };
    for _ in 0..MAX_OPS {
        if input.done() {
            break;
        }
        match input.u8() % 8 {
            0 => {
                let addr = u64::from(input.u32()) % (2 * MEM_SIZE as u64);
                let len = usize::from(input.u8());
                let bytes = input.take(len).to_vec();
                put(&mem, addr, &bytes);
            }
            1 => {
                let area = if input.u8() & 1 == 0 {
                    RX_AREA
                } else {
                    TX_AREA
                };
                let off = u64::from(input.u16()) % 0x2000;
                let len = usize::from(input.u8() % 32);
                let bytes = input.take(len).to_vec();
                put(&mem, area + off, &bytes);
            }
            2 => {
                publish(&mem, TX_AREA, &mut tx_idx, input.u16() % QSIZE);
                let _ = tx_kick.write(1);
            }
            3 => {
                publish(&mem, RX_AREA, &mut rx_idx, input.u16() % QSIZE);
                let _ = rx_kick.write(1);
            }
            4 | 5 => {
                let kind = input.u8();
                let len = usize::from(input.u16()) % MAX_INJECT;
                let mut frame = input.take(len.min(256)).to_vec();
                frame.resize(len, 0x5a);
                let hdr = NetHdr {
                    flags: [0, NEEDS_CSUM, DATA_VALID][usize::from(kind % 3)],
                    gso_type: [0, GSO_TCPV4, GSO_TCPV6, GSO_TCPV4 | GSO_ECN]
                        [usize::from((kind >> 2) % 4)],
                    hdr_len: input.u16(),
                    gso_size: input.u16(),
                    csum_start: input.u16(),
                    csum_offset: input.u16(),
                    num_buffers: 0,
                };
                let _ = peer.inject(hdr, &frame);
            }
            6 => pump(&mut worker),
            _ => {
                link.set(input.u8() & 1 == 0);
            }
        }
    }
    link.set(true);
    pump(&mut worker);
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Moved {
        to_network: get(&stats.tx_frames),
        to_guest: get(&stats.rx_frames),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: the same inputs on every run.
    fn inputs(seed: u64, n: usize, len: usize) -> Vec<Vec<u8>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        s ^= s >> 12;
                        s ^= s << 25;
                        s ^= s >> 27;
                        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                    })
                    .collect()
            })
            .collect()
    }

    /// 64 runs of 4 KiB of pseudo-random input; they must also move
    /// frames both ways, or the harness would not be reaching the rings.
    fn seeded(target: Target) {
        let mut total = Moved::default();
        for (i, mut data) in inputs(0x7a91_0c3e ^ target as u64, 64, 4096)
            .into_iter()
            .enumerate()
        {
            // Half of the runs start from a driver's set-up.
            data[0] = (data[0] & !2) | (((i & 1) as u8) << 1);
            let m = run(target, &data);
            total.to_network += m.to_network;
            total.to_guest += m.to_guest;
        }
        assert!(total.to_network > 0 && total.to_guest > 0, "{total:?}");
    }

    #[test]
    fn e1000_survives_seeded_garbage() {
        seeded(Target::E1000);
    }

    #[test]
    fn rtl8139_survives_seeded_garbage() {
        seeded(Target::Rtl8139);
    }

    #[test]
    fn rtl8139_cplus_survives_seeded_garbage() {
        seeded(Target::Rtl8139CPlus);
    }

    #[test]
    fn virtio_net_survives_seeded_garbage() {
        let mut total = Moved::default();
        for (i, mut data) in inputs(0x5eed_0f00, 64, 4096).into_iter().enumerate() {
            data[0] = (data[0] & !2) | (((i & 1) as u8) << 1);
            let m = run_virtio(&data);
            total.to_network += m.to_network;
            total.to_guest += m.to_guest;
        }
        assert!(total.to_network > 0 && total.to_guest > 0, "{total:?}");
    }

    #[test]
    fn an_empty_input_is_a_run() {
        assert_eq!(run(Target::E1000, &[]), Moved::default());
        assert_eq!(run(Target::Rtl8139CPlus, &[2]), Moved::default());
    }
}
