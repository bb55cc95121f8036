//! The VM's PCI root complex (bus 0) wired to the I/O and MMIO buses.

use std::sync::Arc;

use tapir_arch::acpi::PciRootAcpi;
use tapir_arch::layout;
use tapir_devices::Bus;
use tapir_pci::{PciSegment, PciSegmentConfig};

/// Bus 0 and its front-ends on the buses.
pub struct PciPlatform {
    segment: PciSegment,
}

impl PciPlatform {
    /// Creates bus 0 with the windows from the memory map and registers its
    /// configuration mechanisms and BAR windows.
    pub fn new(pio: &mut Bus, mmio: &mut Bus) -> Result<Self, String> {
        let config = PciSegmentConfig {
            io_window: (layout::PCI_IO_START, layout::PCI_IO_SIZE),
            mmio32_window: (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            mmio64_window: (layout::PCI_MMIO64_START, layout::PCI_MMIO64_SIZE),
            ecam_base: layout::PCI_ECAM_START,
        };
        let segment = PciSegment::new(config).map_err(|e| format!("PCI: {e}"))?;
        let bus_err = |e: tapir_devices::BusError| format!("PCI: {e}");
        pio.insert(
            layout::PCI_CONFIG_IO_START,
            layout::PCI_CONFIG_IO_SIZE,
            segment.config_io(),
        )
        .map_err(bus_err)?;
        pio.insert(
            layout::PCI_IO_START,
            layout::PCI_IO_SIZE,
            segment.io_bar_window(),
        )
        .map_err(bus_err)?;
        let (ecam, ecam_len) = segment.ecam_window();
        mmio.insert(ecam, ecam_len, segment.config_mmio())
            .map_err(bus_err)?;
        let window: Arc<_> = segment.mmio_bar_window();
        mmio.insert(
            layout::PCI_MMIO32_START,
            layout::PCI_MMIO32_SIZE,
            window.clone(),
        )
        .map_err(bus_err)?;
        mmio.insert(layout::PCI_MMIO64_START, layout::PCI_MMIO64_SIZE, window)
            .map_err(bus_err)?;
        Ok(Self { segment })
    }

    /// What the DSDT says about the root bridge.
    pub fn acpi_info(&self) -> PciRootAcpi {
        PciRootAcpi {
            io: (layout::PCI_IO_START, layout::PCI_IO_SIZE),
            mmio32: (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            mmio64: (layout::PCI_MMIO64_START, layout::PCI_MMIO64_SIZE),
            ecam_base: layout::PCI_ECAM_START,
            prt: self.segment.prt_entries(),
        }
    }

    /// The segment, for adding devices.
    pub fn segment(&mut self) -> &mut PciSegment {
        &mut self.segment
    }
}
