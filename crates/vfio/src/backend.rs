//! The VFIO device as the device model sees it: regions to read and
//! write, interrupts to wire. [`crate::HostVfio`] is the real one; unit
//! tests use a fake.

use std::io;

use vmm_sys_util::eventfd::EventFd;

use crate::split::Span;

/// VFIO region index of BAR 0 (BAR n is region n).
pub const BAR0_REGION: u32 = 0;
/// VFIO region index of the expansion ROM.
pub const ROM_REGION: u32 = 6;
/// VFIO region index of configuration space.
pub const CONFIG_REGION: u32 = 7;
/// VFIO interrupt index of INTx.
pub const INTX_IRQ: u32 = 0;
/// VFIO interrupt index of MSI.
pub const MSI_IRQ: u32 = 1;
/// VFIO interrupt index of MSI-X.
pub const MSIX_IRQ: u32 = 2;

/// What VFIO says about one region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes (0: the region does not exist).
    pub size: u64,
    /// The areas userspace may mmap: the whole region, the sparse-mmap
    /// areas, or none.
    pub mmappable: Vec<Span>,
}

/// The device-fd side of a VFIO device.
pub trait VfioBackend: Send + Sync {
    /// Region `index` (a BAR, the ROM, configuration space).
    fn region(&self, index: u32) -> RegionInfo;

    /// Reads `data.len()` bytes at `offset` in region `index`. Callers
    /// keep the access inside the region.
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()>;

    /// Writes `data` at `offset` in region `index`.
    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()>;

    /// How many interrupts of VFIO interrupt index `index` the device has.
    fn irq_count(&self, index: u32) -> u32;

    /// Wires `fds` to the first `fds.len()` interrupts of `index`
    /// (VFIO_IRQ_SET_ACTION_TRIGGER, DATA_EVENTFD).
    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> io::Result<()>;

    /// Turns interrupt index `index` off.
    fn disable_irq(&self, index: u32) -> io::Result<()>;

    /// INTx: a write to `fd` unmasks the line (VFIO_IRQ_SET_ACTION_UNMASK,
    /// DATA_EVENTFD).
    fn set_intx_unmask_fd(&self, fd: &EventFd) -> io::Result<()>;

    /// Resets the function, if it can be reset; returns whether it was.
    fn reset(&self) -> bool;
}
