//! PCI for the tapir VMM: one root complex (segment 0, bus 0) with
//! conventional and ECAM configuration access, BAR allocation and
//! dispatch, INTx routing and MSI-X.
//!
//! # The seam: transports vs devices
//!
//! A device model implements [`PciDevice`]. It owns a [`PciConfiguration`]
//! (declaring its header, BARs and capabilities), answers accesses to its
//! BARs by BAR index and offset, and raises interrupts through injected
//! objects: an [`Intx`] wrapping a [`tapir_devices::LevelIrq`] and/or an
//! [`MsixConfig`] sending through an [`MsiSender`]. It never sees guest
//! addresses, ports or KVM.
//!
//! The transports are the [`PciSegment`]'s bus front-ends, which the VMM
//! registers on its buses as [`tapir_devices::BusDevice`]s:
//!
//! | front-end | bus | range |
//! |---|---|---|
//! | [`PciConfigIo`] | I/O | 0xCF8, 8 ports |
//! | [`PciConfigMmio`] | MMIO | [`PciSegment::ecam_window`] (1 MiB) |
//! | [`PciBarWindow`] (I/O) | I/O | the I/O window |
//! | [`PciBarWindow`] (memory) | MMIO | the MMIO32 and MMIO64 windows |
//!
//! They decode configuration addresses and BAR addresses (as the guest
//! programmed them, honouring the command register's decode enables) and
//! lock only the device an access targets.
//!
//! # Example (VMM side)
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tapir_pci::{PciSegment, PciSegmentConfig, PciDevice};
//! # use tapir_pci::{PciConfiguration, PciHeader};
//! # struct Nic(PciConfiguration);
//! # impl PciDevice for Nic {
//! #     fn name(&self) -> &str { "nic" }
//! #     fn config(&self) -> &PciConfiguration { &self.0 }
//! #     fn config_mut(&mut self) -> &mut PciConfiguration { &mut self.0 }
//! # }
//! let mut segment = PciSegment::new(PciSegmentConfig {
//!     io_window: (0xc000, 0x4000),
//!     mmio32_window: (0xc000_0000, 0x2000_0000),
//!     mmio64_window: (0x40_0000_0000, 0x10_0000_0000),
//!     ecam_base: 0xe000_0000,
//! })?;
//! let slot = segment.reserve_slot(None)?;
//! assert_eq!(slot, 1);
//! // ... build the device with the line for tapir_pci::intx_gsi(slot, pin) ...
//! # let nic = Nic(PciConfiguration::new(&PciHeader::default()));
//! let bars = segment.add_device(slot, Arc::new(Mutex::new(nic)))?;
//! # assert!(bars.is_empty());
//! let prt = segment.prt_entries();
//! assert_eq!(prt.len(), 32 * 4);
//! # Ok::<(), tapir_pci::PciError>(())
//! ```

mod allocator;
pub mod bar;
pub mod bar_window;
pub mod config_access;
pub mod configuration;
pub mod counters;
pub mod device;
pub mod host_bridge;
pub mod intx;
pub mod msix;
pub mod segment;

pub use bar::{BarChange, BarKind, PciBar};
pub use bar_window::{BarSpace, PciBarWindow};
pub use config_access::{
    PciConfigIo, PciConfigMmio, ECAM_BUS_SIZE, PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_IO_SIZE,
};
pub use configuration::{PciConfigError, PciConfiguration, PciHeader};
pub use counters::{AccessCounters, AccessSnapshot};
pub use device::{PciDevice, SharedPciDevice};
pub use host_bridge::PciHostBridge;
pub use intx::{Intx, IntxPin};
pub use msix::{MsiMessage, MsiSender, MsixConfig, MsixError, MsixRegion};
pub use segment::{intx_gsi, prt_entries, BarAllocation, PciError, PciSegment, PciSegmentConfig};
