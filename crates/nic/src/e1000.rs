//! Intel 82540EM (e1000): the gigabit NIC that Linux's `e1000` driver,
//! most other operating systems and firmware bind without extra drivers.
//!
//! # Shape
//!
//! [`E1000`] is the PCI function (8086:100E, class 02/00, INTA): BAR 0 is
//! the 128 KiB register space, BAR 1 a 64-byte I/O window giving indirect
//! access to the same registers (IOADDR/IODATA). The VMM builds it with
//! [`E1000::new`] and adds it to its PCI segment; nothing else is needed:
//! the NIC worker thread moving frames between the descriptor rings and
//! the backend starts at once and stops when the device is dropped.
//!
//! The register file (`state::E1000State`) is a state machine without
//! fds, lines or locks: it says which INTx level it wants and when a
//! held-back interrupt is due, and [`crate::shell::Shell`] makes the line and the
//! timerfd follow at the end of every locked section. Two halves share that
//! shell behind one mutex:
//! - the PCI device (vCPU threads): register accesses, EEPROM and PHY,
//!   interrupt causes and mask. A write to TDT or RDT signals an eventfd
//!   and returns: rings are never processed on a vCPU thread.
//! - `frontend::E1000Frontend` (the worker thread): the only code that
//!   touches the rings in guest memory.
//!
//! # Interrupts and ITR
//!
//! The INTx level is `(ICR & IMS) != 0`, driven through [`tapir_pci::Intx`]
//! so that the command register's INTx-disable bit is honoured. With
//! ITR > 0 an assertion is held back until `ITR * 256 ns` after the
//! previous one: the model sets a deadline, the shell arms a timerfd the
//! worker polls ([`tapir_devices::Timer`]); when it fires the model
//! re-evaluates the line, so causes that arrived
//! meanwhile are coalesced into one interrupt. RDTR, RADV, TIDV and TADV
//! are accepted and not modelled: causes are raised as soon as the work is
//! done, and ITR is the coalescing.
//!
//! # Offloads
//!
//! Transmit offloads (context descriptors: IP and TCP/UDP checksums, TSO)
//! are always correct in software; when the backend carries offloads the
//! common cases are handed to it as `NEEDS_CSUM` or one GSO frame instead
//! (module `tx_offload`).
//!
//! The chip has receive checksum offload (RXCSUM, module `rx_csum`) but
//! no receive segmentation. The backend is still asked for checksum
//! offload and TSO: its partial checksums are completed and its TCP frames
//! of up to 64 KiB segmented here (one backend read instead of 44), and
//! those checksums, like the ones the backend vouches for (`DATA_VALID`),
//! are reported good without being summed again.
//!
//! # Robustness
//!
//! Rings, buffers, lengths and offsets come from the guest: rings with a
//! zero length or a head or tail beyond the end are not used, every guest
//! memory access is checked, a packet is bounded in descriptors and bytes,
//! a transmit ring that fills without an end of packet is consumed, bad
//! offload offsets drop the packet, and loopback delivers each transmitted
//! frame once to the receive ring (dropping it when there is no room).
//! Drops are counted in [`NicStats`] and in the device's statistics
//! registers.

mod eeprom;
mod filter;
mod frontend;
mod phy;
pub mod regs;
mod ring;
mod rx;
mod rx_csum;
mod state;
mod tx;
mod tx_offload;

pub use eeprom::Ids;

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::{LevelIrq, Timer};
use tapir_net_backend::NetBackend;
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::{
    BarChange, BarKind, Intx, IntxPin, PciBar, PciConfiguration, PciDevice, PciHeader,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::link::{Carrier, LinkHandle, LinkNotify};
use crate::shell::{lock, NicModel, SharedShell, Shell};
use crate::worker::{NetWorker, NicStats, WorkerHandle};
use frontend::E1000Frontend;
use regs::{BAR0_SIZE, BAR1_SIZE};
use state::{E1000State, Kick};

/// The shell the PCI device and the frontend share.
type Shared = SharedShell<E1000State>;

/// PCI identity of the 82540EM (subsystem: PRO/1000 MT Desktop).
pub const IDS: Ids = Ids {
    vendor: 0x8086,
    device: 0x100E,
    subsystem_vendor: 0x8086,
    subsystem: 0x001E,
};
/// PCI class: network controller, Ethernet.
const CLASS_NETWORK: u8 = 0x02;
/// BAR 0: the register space.
pub const BAR_MMIO: u8 = 0;
/// BAR 1: the IOADDR/IODATA window.
pub const BAR_IO: u8 = 1;

/// An emulated Intel 82540EM on PCI.
pub struct E1000 {
    name: String,
    config: PciConfiguration,
    shared: Shared,
    tx_evt: EventFd,
    rx_evt: EventFd,
    stats: Arc<NicStats>,
    carrier: Arc<Carrier>,
    _worker: WorkerHandle,
}

/// The cable as the e1000 shows it: STATUS.LU and a link status change
/// interrupt.
struct E1000Link {
    shared: Shared,
}

impl LinkNotify for E1000Link {
    fn link_changed(&self, up: bool) {
        lock(&self.shared).set_carrier(up);
    }
}

impl E1000 {
    /// An e1000 named `name` (thread names, messages) with `mac` in its
    /// EEPROM, DMA into `mem`, INTA driving `intx` (the GSI of its slot),
    /// frames to and from `backend`; `vlan` makes it an 802.1Q access port.
    /// The worker thread starts at once; it idles until the guest enables
    /// the transmitter or receiver.
    pub fn new(
        mac: [u8; 6],
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        mut backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
    ) -> io::Result<Self> {
        // Large and partially checksummed frames from the backend are
        // finished here (see the module documentation).
        crate::rx_offloads::enable(backend.as_mut())?;
        let offloads = backend.offloads();
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: IDS.vendor,
            device_id: IDS.device,
            revision_id: 0,
            class_code: CLASS_NETWORK,
            subclass: 0,
            prog_if: 0,
            subsystem_vendor_id: IDS.subsystem_vendor,
            subsystem_id: IDS.subsystem,
            multifunction: false,
        });
        let bars = [
            PciBar {
                index: BAR_MMIO,
                size: BAR0_SIZE,
                kind: BarKind::Mem32,
            },
            PciBar {
                index: BAR_IO,
                size: BAR1_SIZE,
                kind: BarKind::Io,
            },
        ];
        for bar in bars {
            config
                .add_bar(bar)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let line = Intx::new(intx, IntxPin::IntA, &mut config);
        let words = eeprom::image(mac, IDS);
        let shell = Shell::new(E1000State::new(words), line, Some(Timer::new()?), None);
        let shared: Shared = Arc::new(Mutex::new(shell));
        let tx_evt = EventFd::new(EFD_NONBLOCK)?;
        let rx_evt = EventFd::new(EFD_NONBLOCK)?;
        let stats = Arc::new(NicStats::default());
        let carrier = Carrier::new();
        let frontend = E1000Frontend::new(
            shared.clone(),
            mem,
            tx_evt.try_clone()?,
            rx_evt.try_clone()?,
            stats.clone(),
            offloads,
        );
        let worker = NetWorker::spawn(
            &name,
            Box::new(frontend),
            backend,
            vlan,
            stats.clone(),
            carrier.clone(),
        )?;
        Ok(Self {
            name,
            config,
            shared,
            tx_evt,
            rx_evt,
            stats,
            carrier,
            _worker: worker,
        })
    }

    /// The NIC's counters.
    pub fn stats(&self) -> Arc<NicStats> {
        self.stats.clone()
    }

    /// The handle that connects and disconnects the cable: the link
    /// follows and the guest gets a link status change interrupt.
    pub fn link(&self) -> LinkHandle {
        LinkHandle::new(
            self.carrier.clone(),
            Arc::new(E1000Link {
                shared: self.shared.clone(),
            }),
        )
    }

    fn ring(&self, kick: Kick) {
        if kick.tx {
            let _ = self.tx_evt.write(1);
        }
        if kick.rx {
            let _ = self.rx_evt.write(1);
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
}

impl PciDevice for E1000 {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        // The status register shares the command register's dword.
        if offset & !3 == PCI_COMMAND {
            let asserted = lock(&self.shared).irq_level();
            self.config.set_interrupt_status(asserted);
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let change = self.config.write(offset, data);
        if offset & !3 == PCI_COMMAND {
            let (command, master) = (self.config.command(), self.config.bus_master_enabled());
            lock(&self.shared).command_written(command, master);
            // Bus mastering may have been turned on: look at the rings.
            self.ring(Kick { tx: true, rx: true });
        }
        change
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        let mut s = lock(&self.shared);
        match index {
            BAR_MMIO => Self::read_dwords(offset, data, BAR0_SIZE, |o| s.read(o as u32)),
            BAR_IO => Self::read_dwords(offset, data, BAR1_SIZE, |o| s.io_read(o)),
            _ => data.fill(0xFF),
        }
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        let mut kick = Kick::default();
        {
            let mut s = lock(&self.shared);
            let size = match index {
                BAR_MMIO => BAR0_SIZE,
                BAR_IO => BAR1_SIZE,
                _ => return,
            };
            for (o, v) in Self::dword_writes(offset, data, size) {
                let k = if index == BAR_MMIO {
                    s.write(o as u32, v)
                } else {
                    s.io_write(o, v)
                };
                kick.tx |= k.tx;
                kick.rx |= k.rx;
            }
        }
        self.ring(kick);
    }
}

#[cfg(test)]
mod tests;
