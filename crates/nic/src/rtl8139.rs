//! Realtek RTL8139C(L)+ (PCI 10ec:8139, class 02/00, INTA): the 10/100 NIC
//! Linux drives with `8139too` (C mode: four transmit slots and a receive
//! ring) or `8139cp` (C+ mode: descriptor rings, checksum offload, large
//! send, VLAN tagging).
//!
//! # Revision
//!
//! Linux chooses the driver by PCI revision: `8139too` refuses revision
//! 0x20 and later ("an enhanced 8139C+ chip, use 8139cp") and `8139cp`
//! refuses anything older. [`Rtl8139::new`] takes the revision and the
//! chip follows it:
//! - below 0x20 it is an RTL8139C: TCR's HWVERID reads as RTL8139C (which
//!   8139too identifies), and the C+ registers (C+CR, TPPoll, RDSAR,
//!   IntrMitigate) do not exist: they read as plain storage and C+ mode
//!   cannot be entered;
//! - from 0x20 ([`DEFAULT_REVISION`]) it is an RTL8139C+: HWVERID reads as
//!   RTL8139C+, and C+ mode is entered per direction by C+CR's TX/RX enable
//!   bits. The C registers stay available, so either driver model works.
//!
//! # Seam
//!
//! [`Rtl8139`] is the vCPU side ([`PciDevice`]: configuration space and
//! the 256-byte register window in BAR 0 (I/O) and BAR 1 (memory)). The
//! register state (`state::State`, which holds no fd and no line: it says
//! which INTx level and which doorbells it wants) sits in a
//! [`crate::shell::Shell`] behind a mutex shared with the NIC worker's
//! frontend (`frontend.rs`), which alone walks the guest's buffers and
//! rings; the shell drives the line and rings the doorbell eventfds at the
//! end of every locked section. A TSD write (C mode) or TPPoll (C+) rings
//! the transmit doorbell; receive needs no doorbell, but while the worker
//! waits for room any register write rings it (see `frontend.rs` for what
//! happens when the guest has no room). The INTx level is (ISR & IMR) != 0.
//!
//! # Offloads at the backend seam
//!
//! The chip has no receive offloads, but the host side does not need to
//! do the chip's work: the NIC asks the backend for every offload it offers
//! (partial checksums, TSO) and finishes the work itself, once per frame,
//! where it is cheapest:
//! - from the host, a TSO frame (up to 64 KiB) is cut into MTU-sized
//!   segments with their checksums computed, and a partial checksum is
//!   completed, by the shell (the same for every model without receive
//!   offloads) before the frames enter the chip's receive path; so the
//!   guest sees only what the wire would carry, and one read from the
//!   backend brings many frames;
//! - to the host, a C+ TCP checksum request is checked as the chip would
//!   (`offload.rs`, every header length against the frame) and then handed
//!   to the backend as a partial checksum, which the host completes or
//!   trusts; IP header and UDP checksums and large send are done here.
//!   Frames looped back (TCR loopback) get every checksum done here.
//!
//! With a backend that offers no offloads all of this is done in software
//! here, and the frames are the same.
//!
//! # Interrupt timing
//!
//! - The worker sets ISR bits as events happen (a guest reading ISR sees
//!   them at once) but moves the INTx line at the end of its pass, or
//!   every `IRQ_BATCH` events: a burst of received frames or completed
//!   transmissions is one interrupt.
//! - A small frame (at most 128 bytes: a TCP ACK, typically) sent while
//!   the driver has its receive interrupts masked, i.e. from inside its
//!   receive poll, makes the vCPU wait (at most [`TX_SYNC_WAIT`]) for the
//!   worker to send it and raise TOK. The driver then handles the
//!   completion inside that poll, as it would with a chip that transmits
//!   a short frame in microseconds; with the completion arriving after the
//!   poll, every ACK started a poll of its own (2.3 times the interrupts
//!   per MB received, measured). Bulk data never waits.

mod cplus;
mod eeprom;
mod filter;
mod normal;
mod offload;
pub mod regs;
mod rings;
mod state;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use tapir_devices::{LevelIrq, Timer};
use tapir_net_backend::NetBackend;
use tapir_pci::{
    BarKind, Intx, IntxPin, PciBar, PciConfigError, PciConfiguration, PciDevice, PciHeader,
};
use vm_memory::GuestMemoryMmap;

use crate::shell::{PciNic, Shell, ShellLock};
use crate::worker::{NetWorker, NicStats, WorkerThreads};
pub use offload::OffloadReject;
pub use regs::{DEVICE_ID, REG_WINDOW, VENDOR_ID};
pub use rings::{Rtl8139Model, RX_STALL_GRACE};
use state::State;

/// Revision the VMM uses by default: an RTL8139C+ (driven by 8139cp).
pub const DEFAULT_REVISION: u8 = 0x20;
/// First revision with the C+ registers; Linux's 8139too takes older ones.
pub const CPLUS_MIN_REVISION: u8 = 0x20;
/// A revision 8139too binds (an RTL8139C).
pub const REVISION_8139C: u8 = 0x10;

/// Why an RTL8139 could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Rtl8139Error {
    /// Describing the configuration space failed.
    #[error("PCI configuration: {0}")]
    Config(#[from] PciConfigError),
    /// The backend refused even to turn its offloads off.
    #[error("setting the backend's offloads: {0}")]
    Backend(io::Error),
    /// Creating the eventfds or timers failed.
    #[error("creating notification fds: {0}")]
    Fds(io::Error),
    /// The worker thread could not start.
    #[error("starting the worker thread: {0}")]
    Worker(io::Error),
}

impl From<Rtl8139Error> for io::Error {
    fn from(e: Rtl8139Error) -> io::Error {
        match e {
            Rtl8139Error::Backend(ref inner)
            | Rtl8139Error::Fds(ref inner)
            | Rtl8139Error::Worker(ref inner) => io::Error::new(inner.kind(), e.to_string()),
            Rtl8139Error::Config(_) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        }
    }
}

/// An RTL8139 NIC: tapir's PCI NIC shell around the RTL8139 model.
pub type Rtl8139 = PciNic<Rtl8139Model>;

impl PciNic<Rtl8139Model> {
    /// A NIC with station address `mac` and PCI `revision` (see the module
    /// documentation), DMA into `mem`, INTA on `intx`, frames to and from
    /// `backend`; `vlan` makes it an 802.1Q access port. Its worker thread
    /// (`{name}-net`, from `threads`) starts at once; dropping the NIC
    /// stops it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mac: [u8; 6],
        revision: u8,
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
        threads: &WorkerThreads,
    ) -> io::Result<Self> {
        let (mut nic, worker) = Self::new_manual(mac, revision, mem, intx, backend, vlan, name)?;
        nic.start_worker(worker, threads)
            .map_err(Rtl8139Error::Worker)?;
        Ok(nic)
    }

    /// [`Rtl8139::new`] with the worker left to the caller (tests,
    /// fuzzing: [`NetWorker::pump`]).
    pub fn new_manual(
        mac: [u8; 6],
        revision: u8,
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        mut backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
    ) -> io::Result<(Self, NetWorker)> {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VENDOR_ID,
            device_id: DEVICE_ID,
            revision_id: revision,
            class_code: 0x02,
            subclass: 0x00,
            prog_if: 0,
            subsystem_vendor_id: VENDOR_ID,
            subsystem_id: DEVICE_ID,
            multifunction: false,
        });
        for (index, kind) in [(0, BarKind::Io), (1, BarKind::Mem32)] {
            config
                .add_bar(PciBar {
                    index,
                    size: REG_WINDOW,
                    kind,
                })
                .map_err(Rtl8139Error::from)?;
        }
        let intx = Intx::new(intx, IntxPin::IntA, &mut config);
        let offloads =
            crate::rx_offloads::enable(backend.as_mut()).map_err(Rtl8139Error::Backend)?;
        let stats = Arc::new(NicStats::default());
        let model = Rtl8139Model::new(State::new(mac, revision, mem), stats.clone(), offloads);
        let timer = Timer::new().map_err(Rtl8139Error::Fds)?;
        let shell =
            ShellLock::new(Shell::new(model, intx, Some(timer))).map_err(Rtl8139Error::Fds)?;
        Ok(PciNic::manual(name, config, shell, backend, vlan, stats)
            .map_err(Rtl8139Error::Worker)?)
    }

    /// The PCI revision.
    pub fn revision(&self) -> u8 {
        self.config()
            .read_u8(tapir_pci::configuration::PCI_REVISION_ID)
    }

    /// The station address the chip filters on now (IDR0-5).
    pub fn mac(&self) -> [u8; 6] {
        self.model().state.idr
    }

    /// Sets how long received frames wait (the backend paused) for the
    /// guest to make receive room before the NIC drops them as hardware
    /// does ([`RX_STALL_GRACE`] by default), from the start of the current stall.
    pub fn set_rx_stall_grace(&self, grace: std::time::Duration) {
        self.model().state.rx_stall_grace = grace;
    }
}
