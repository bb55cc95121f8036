//! VFIO PCI device assignment: a host PCI function, bound to the vfio-pci
//! driver, shown to the guest as a function on tapir's PCI segment.
//!
//! - [`VfioPciDevice`] is the device model: a [`tapir_pci::PciDevice`]
//!   that passes configuration space through to the host function except
//!   what tapir must own (BARs, expansion ROM, interrupt line, MSI and
//!   MSI-X capabilities), maps the BARs into the guest where it can and
//!   traps the rest (the MSI-X table, which it emulates), and turns the
//!   guest's MSI/MSI-X programming into VFIO interrupt eventfds routed to
//!   KVM.
//! - It reaches the OS only through three small traits, so that unit
//!   tests use fakes: [`VfioBackend`] (the VFIO device fd: region reads
//!   and writes, interrupt set-up), [`MemoryMapper`] (guest memory slots
//!   for mapped BAR areas) and [`InterruptRoutes`] (GSIs, MSI routes and
//!   irqfds).
//! - [`host`] opens the real thing: checks sysfs (one clear error per
//!   mistake), opens the container, group and device, maps guest RAM for
//!   DMA and mmaps the BARs.

pub mod backend;
pub mod device;
pub mod host;
pub mod msi;
pub mod split;

use std::io;

use tapir_pci::MsiMessage;
use vmm_sys_util::eventfd::EventFd;

pub use backend::{RegionInfo, VfioBackend};
pub use device::{DeviceError, MappedArea, VfioPciDevice};
pub use host::{HostError, HostVfio, OpenedDevice};
pub use split::{split_bar, BarSplit, Span};

/// Guest memory slots for BAR areas mapped into the guest; the VMM
/// implements it with KVM user memory regions above guest RAM's slots.
pub trait MemoryMapper: Send + Sync {
    /// Maps `len` bytes of host memory at `host_addr` at guest physical
    /// address `guest_addr` and returns a handle (the slot) for
    /// [`Self::unmap`].
    ///
    /// # Safety
    ///
    /// The host range must stay mapped until [`Self::unmap`] or until the
    /// VM can no longer run: the guest reads and writes it.
    unsafe fn map(&self, guest_addr: u64, len: u64, host_addr: u64) -> io::Result<u32>;

    /// Removes a mapping made by [`Self::map`].
    fn unmap(&self, slot: u32) -> io::Result<()>;
}

/// Interrupt routing for MSI and INTx: implemented by the VMM with KVM
/// (GSI routing table, irqfds).
pub trait InterruptRoutes: Send + Sync {
    /// A free GSI for one MSI vector.
    fn allocate_gsi(&self) -> io::Result<u32>;

    /// Routes `gsi` to the MSI `msg` (adds or replaces its route).
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> io::Result<()>;

    /// Removes `gsi`'s route.
    fn remove_route(&self, gsi: u32) -> io::Result<()>;

    /// Signals `gsi` whenever `fd` is written (KVM irqfd).
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;

    /// Undoes [`Self::register_irqfd`].
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;

    /// A level-triggered irqfd: `fd` raises `gsi`, the guest's EOI
    /// lowers it and writes `resample`.
    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> io::Result<()>;
}
