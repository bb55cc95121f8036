//! The interface between a PCI device model and the transports that reach
//! it (configuration mechanisms and BAR windows).

use std::sync::{Arc, Mutex};

use crate::bar::BarChange;
use crate::configuration::PciConfiguration;

/// How the segment holds a device: shared with the VMM (which may keep a
/// typed handle to the same object) and locked per access.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// A PCI function as seen by the segment.
///
/// The segment holds devices as `Arc<Mutex<dyn PciDevice>>` and locks only
/// the device an access targets, so methods take `&mut self`. Offsets and
/// sizes come straight from the guest; the configuration-space defaults
/// validate them, and implementations of the BAR methods must not panic on
/// any offset or length.
pub trait PciDevice: Send {
    /// A short name for diagnostics.
    fn name(&self) -> &str;

    /// The function's configuration space.
    fn config(&self) -> &PciConfiguration;

    /// The function's configuration space, mutably.
    fn config_mut(&mut self) -> &mut PciConfiguration;

    /// Guest configuration read (1, 2 or 4 bytes within one dword; the
    /// transports only pass such accesses).
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// Guest configuration write. Devices override this to react to
    /// writes to their capabilities (e.g. the MSI-X message control) or
    /// to the command register, calling [`PciConfiguration::write`] first.
    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        self.config_mut().write(offset, data)
    }

    /// Guest read at `offset` inside BAR `index`. The default reads as an
    /// unclaimed bus: all-ones.
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        let _ = (index, offset);
        data.fill(0xff);
    }

    /// Guest write at `offset` inside BAR `index`. The default drops it.
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        let _ = (index, offset, data);
    }

    /// The guest moved a BAR (called after [`Self::write_config`] returned
    /// the change). Devices with ioeventfds in the BAR re-register them.
    fn bar_moved(&mut self, change: &BarChange) {
        let _ = change;
    }
}
