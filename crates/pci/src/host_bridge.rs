//! The host bridge at 00:00.0.

use crate::configuration::{PciConfiguration, PciHeader};
use crate::device::PciDevice;

/// Red Hat, Inc., the PCI vendor QEMU uses for its paravirtual devices.
pub const PCI_VENDOR_ID_REDHAT: u16 = 0x1b36;
/// Red Hat's "QEMU PCIe Host bridge" (the generic ECAM host, `gpex`).
///
/// A host bridge's ID only matters to the guest through quirks: Linux has
/// chipset fixups keyed on real Intel/AMD/VIA host bridge IDs (i440FX,
/// Q35, ...) that poke chipset registers we do not emulate. This ID names
/// a purely virtual, spec-compliant ECAM host bridge, for which Linux has
/// no quirk and binds no driver, and `lspci` prints a sensible name.
pub const PCI_DEVICE_ID_REDHAT_HOST_BRIDGE: u16 = 0x0008;
/// Base class: bridge device.
pub const PCI_CLASS_BRIDGE: u8 = 0x06;
/// Sub-class: host bridge.
pub const PCI_SUBCLASS_BRIDGE_HOST: u8 = 0x00;

/// The root complex's own function: a class 06/00/00 device with no BARs
/// and no interrupt.
#[derive(Debug)]
pub struct PciHostBridge {
    config: PciConfiguration,
}

impl PciHostBridge {
    /// A host bridge with the IDs above.
    pub fn new() -> Self {
        Self {
            config: PciConfiguration::new(&PciHeader {
                vendor_id: PCI_VENDOR_ID_REDHAT,
                device_id: PCI_DEVICE_ID_REDHAT_HOST_BRIDGE,
                class_code: PCI_CLASS_BRIDGE,
                subclass: PCI_SUBCLASS_BRIDGE_HOST,
                subsystem_vendor_id: PCI_VENDOR_ID_REDHAT,
                subsystem_id: 0x1100,
                ..Default::default()
            }),
        }
    }
}

impl Default for PciHostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for PciHostBridge {
    fn name(&self) -> &str {
        "host-bridge"
    }

    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{PCI_BAR0, PCI_HEADER_TYPE};

    #[test]
    fn identity_and_no_bars() {
        let mut hb = PciHostBridge::new();
        assert_eq!(hb.name(), "host-bridge");
        assert_eq!(hb.config().read_dword(0), 0x0008_1b36);
        // Class 06/00/00, revision 0.
        assert_eq!(hb.config().read_dword(2), 0x0600_0000);
        assert_eq!(hb.config().read_u8(PCI_HEADER_TYPE), 0);
        assert_eq!(hb.config().bars().count(), 0);
        for i in 0..6u16 {
            assert_eq!(hb.write_config(PCI_BAR0 + 4 * i, &[0xff; 4]), None);
            let mut d = [0u8; 4];
            hb.read_config(PCI_BAR0 + 4 * i, &mut d);
            assert_eq!(d, [0; 4]);
        }
        assert_eq!(hb.config().interrupt_pin(), None);
        let mut d = [0u8; 4];
        hb.read_bar(0, 0, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
