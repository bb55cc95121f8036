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
//!   completed, before the frames enter the chip's receive path; so the
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
mod frontend;
mod normal;
mod offload;
pub mod regs;
mod state;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use tapir_devices::{LevelIrq, Timer};
use tapir_net_backend::NetBackend;
use tapir_pci::{
    BarChange, BarKind, Intx, IntxPin, PciBar, PciConfigError, PciConfiguration, PciDevice,
    PciHeader,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::link::LinkHandle;
use crate::worker::NicStats;
pub use frontend::RX_STALL_GRACE;
use frontend::{Rtl8139Frontend, TxSync};
pub use offload::OffloadReject;
pub use regs::{DEVICE_ID, REG_WINDOW, VENDOR_ID};
use state::State;

use crate::shell::{DoorbellFds, PciNic, Shell, ShellLock};

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

/// An RTL8139 NIC: tapir's PCI NIC shell around the RTL8139 register
/// file, plus the wait for small frames sent from a receive poll (see the
/// module documentation).
pub struct Rtl8139 {
    nic: PciNic<State>,
    tx_sync: Arc<TxSync>,
    tx_sync_wait: std::time::Duration,
}

/// The longest a vCPU waits for the worker's transmit pass (by default;
/// see [`Rtl8139::set_tx_sync_wait`]).
pub const TX_SYNC_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

impl Rtl8139 {
    /// A NIC with station address `mac` and PCI `revision` (see the module
    /// documentation), DMA into `mem`, INTA on `intx`, frames to and from
    /// `backend`; `vlan` makes it an 802.1Q access port. Its worker thread
    /// (`{name}-net`) starts at once; dropping the NIC stops it.
    pub fn new(
        mac: [u8; 6],
        revision: u8,
        mem: GuestMemoryMmap,
        intx: Arc<dyn LevelIrq>,
        mut backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        name: String,
    ) -> io::Result<Self> {
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
        let tx_csum =
            crate::rx_offloads::enable(backend.as_mut()).map_err(Rtl8139Error::Backend)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(Rtl8139Error::Fds);
        let (tx, rx) = (evt()?, evt()?);
        let clone = |e: &EventFd| e.try_clone().map_err(Rtl8139Error::Fds);
        let doorbells = DoorbellFds {
            tx: clone(&tx)?,
            rx: clone(&rx)?,
        };
        let model = State::new(mac, revision, mem);
        let timer = Timer::new().map_err(Rtl8139Error::Fds)?;
        let state = ShellLock::new(Shell::new(model, intx, Some(timer)), Some(doorbells));
        let stats = Arc::new(NicStats::default());
        let tx_sync = Arc::new(TxSync::default());
        let frontend = Rtl8139Frontend::new(
            state.clone(),
            tx,
            rx,
            stats.clone(),
            tx_csum,
            tx_sync.clone(),
        )
        .map_err(Rtl8139Error::Fds)?;
        let nic = PciNic::start(
            name,
            config,
            state,
            Box::new(frontend),
            backend,
            vlan,
            stats,
        )
        .map_err(Rtl8139Error::Worker)?;
        Ok(Self {
            nic,
            tx_sync,
            tx_sync_wait: TX_SYNC_WAIT,
        })
    }

    /// The handle that connects and disconnects the cable.
    pub fn link(&self) -> LinkHandle {
        self.nic.link()
    }

    /// The NIC's counters.
    pub fn stats(&self) -> Arc<NicStats> {
        self.nic.stats()
    }

    /// The PCI revision.
    pub fn revision(&self) -> u8 {
        self.nic
            .config()
            .read_u8(tapir_pci::configuration::PCI_REVISION_ID)
    }

    /// The station address the chip filters on now (IDR0-5).
    pub fn mac(&self) -> [u8; 6] {
        self.nic.model().idr
    }

    /// Sets how long received frames wait (the backend paused) for the
    /// guest to make receive room before the NIC drops them as hardware
    /// does ([`RX_STALL_GRACE`] by default), from the start of the current stall.
    pub fn set_rx_stall_grace(&self, grace: std::time::Duration) {
        self.nic.model().rx_stall_grace = grace;
    }

    /// Sets the longest a vCPU waits, after ringing the transmit doorbell
    /// for a small frame from inside the driver's receive poll, for the
    /// worker to send it ([`TX_SYNC_WAIT`] by default; zero: never wait).
    pub fn set_tx_sync_wait(&mut self, wait: std::time::Duration) {
        self.tx_sync_wait = wait;
    }

    /// Stops the worker and returns the backend (`None` if the worker is
    /// gone or its thread panicked). The NIC keeps answering register
    /// accesses but moves no more frames.
    pub fn stop(&mut self) -> Option<Box<dyn NetBackend>> {
        self.nic.stop()
    }
}

impl PciDevice for Rtl8139 {
    fn name(&self) -> &str {
        self.nic.name()
    }

    fn config(&self) -> &PciConfiguration {
        self.nic.config()
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        self.nic.config_mut()
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.nic.read_config(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        self.nic.write_config(offset, data)
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        self.nic.read_bar(index, offset, data);
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.nic.write_bar(index, offset, data);
        let wait = self.nic.model().tx_wait.take();
        if let (Some(doorbell), true) = (wait, self.nic.running()) {
            self.tx_sync.wait_for(doorbell, self.tx_sync_wait);
        }
    }
}
