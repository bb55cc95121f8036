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
//! of up to 64 KiB segmented by the shell (one backend read instead of
//! 44; the segments of one frame enter the ring together or not at all), and
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
mod phy;
pub mod regs;
mod ring;
mod rings;
mod rx;
mod rx_csum;
mod state;
mod tx;
mod tx_offload;

pub use eeprom::Ids;

use std::io;
use std::sync::Arc;

use tapir_devices::{LevelIrq, Timer};
use tapir_net_backend::NetBackend;
use tapir_pci::{BarKind, Intx, IntxPin, PciBar, PciConfiguration, PciHeader};
use vm_memory::GuestMemoryMmap;

use crate::shell::{PciNic, Shell, ShellLock};
use crate::worker::{NetWorker, NicStats, WorkerThreads};
use regs::{BAR0_SIZE, BAR1_SIZE};
pub use rings::E1000Model;
pub use state::E1000State;

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

/// An emulated Intel 82540EM on PCI: tapir's PCI NIC shell around the
/// e1000 model.
pub type E1000 = PciNic<E1000Model>;

impl PciNic<E1000Model> {
    /// An e1000 named `name` (thread names, messages) with `mac` in its
    /// EEPROM, DMA into `mem`, INTA driving `intx` (the GSI of its slot),
    /// frames to and from `backend`; `vlan` makes it an 802.1Q access port.
    /// The worker thread (from `threads`) starts at once; it idles until
    /// the guest enables the transmitter or receiver.
    pub fn new(
        mac: [u8; 6],
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
        threads: &WorkerThreads,
    ) -> io::Result<Self> {
        let (mut nic, worker) = Self::new_manual(mac, mem, intx, backend, vlan, name)?;
        nic.start_worker(worker, threads)?;
        Ok(nic)
    }

    /// [`E1000::new`] with the worker left to the caller (tests, fuzzing:
    /// [`NetWorker::pump`]).
    pub fn new_manual(
        mac: [u8; 6],
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        mut backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
    ) -> io::Result<(Self, NetWorker)> {
        // Large and partially checksummed frames from the backend are
        // finished here (see the module documentation).
        let offloads = crate::rx_offloads::enable(backend.as_mut())?;
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
        let stats = Arc::new(NicStats::default());
        let model = E1000Model::new(E1000State::new(words), mem, stats.clone(), offloads);
        let shell = ShellLock::new(Shell::new(model, line, Some(Timer::new()?)))?;
        PciNic::manual(name, config, shell, backend, vlan, stats)
    }
}

#[cfg(test)]
mod tests;
