//! The two configuration mechanisms of bus 0: type-1 port I/O (0xCF8 /
//! 0xCFC) and PCIe ECAM (memory mapped).
//!
//! Both decode a (bus, device, function, register) address and forward to
//! the segment, which answers all-ones for anything that is not a present
//! function 0 on bus 0.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tapir_devices::BusDevice;

use crate::segment::SegmentState;

/// Type-1 configuration address port.
pub const PCI_CONFIG_ADDRESS_PORT: u64 = 0xcf8;
/// Type-1 configuration data port (0xCFC..=0xCFF).
pub const PCI_CONFIG_DATA_PORT: u64 = 0xcfc;
/// Size of the port range a [`PciConfigIo`] is registered over.
pub const PCI_CONFIG_IO_SIZE: u64 = 8;
/// Offset of the data port inside that range.
const CONFIG_DATA_OFFSET: u64 = PCI_CONFIG_DATA_PORT - PCI_CONFIG_ADDRESS_PORT;
/// Configuration address: enable bit.
pub const PCI_CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
/// Implemented bits of the configuration address (enable, bus, device,
/// function, dword-aligned register); reserved bits read as zero.
const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;

/// ECAM space of one bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
const ECAM_BUS_SHIFT: u32 = 20;
const ECAM_DEVICE_SHIFT: u32 = 15;
const ECAM_FUNCTION_SHIFT: u32 = 12;
const ECAM_REGISTER_MASK: u64 = 0xfff;

/// A configuration-space address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConfigAddress {
    pub(crate) bus: u8,
    pub(crate) device: u8,
    pub(crate) function: u8,
    pub(crate) register: u16,
}

impl ConfigAddress {
    /// Decodes a type-1 address latch value (None when not enabled).
    fn from_type1(latch: u32) -> Option<Self> {
        if latch & PCI_CONFIG_ADDRESS_ENABLE == 0 {
            return None;
        }
        Some(Self {
            bus: (latch >> 16) as u8,
            device: ((latch >> 11) & 0x1f) as u8,
            function: ((latch >> 8) & 0x7) as u8,
            register: (latch & 0xfc) as u16,
        })
    }

    /// Decodes an offset into an ECAM region.
    fn from_ecam(offset: u64) -> Option<Self> {
        Some(Self {
            bus: u8::try_from(offset >> ECAM_BUS_SHIFT).ok()?,
            device: ((offset >> ECAM_DEVICE_SHIFT) & 0x1f) as u8,
            function: ((offset >> ECAM_FUNCTION_SHIFT) & 0x7) as u8,
            register: (offset & ECAM_REGISTER_MASK) as u16,
        })
    }
}

/// Type-1 configuration mechanism, registered over
/// [`PCI_CONFIG_ADDRESS_PORT`]..+[`PCI_CONFIG_IO_SIZE`] on the I/O bus.
pub struct PciConfigIo {
    state: Arc<SegmentState>,
    address: AtomicU32,
}

impl PciConfigIo {
    pub(crate) fn new(state: Arc<SegmentState>) -> Self {
        Self {
            state,
            address: AtomicU32::new(0),
        }
    }

    /// The target of a data-port access of `len` bytes at byte lane
    /// `lane`, if the latch is enabled and the access stays in the port.
    fn data_target(&self, lane: u64, len: usize) -> Option<ConfigAddress> {
        if lane >= 4 || len as u64 > 4 - lane {
            return None;
        }
        let mut addr = ConfigAddress::from_type1(self.address.load(Ordering::SeqCst))?;
        addr.register += lane as u16;
        Some(addr)
    }
}

impl BusDevice for PciConfigIo {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.address.load(Ordering::SeqCst).to_le_bytes());
            return;
        }
        let target = offset
            .checked_sub(CONFIG_DATA_OFFSET)
            .and_then(|lane| self.data_target(lane, data.len()));
        match target {
            Some(a) => self
                .state
                .config_read(a.bus, a.device, a.function, a.register, data),
            None => data.fill(0xff),
        }
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        if offset < CONFIG_DATA_OFFSET {
            // Only full dword writes load the address latch.
            if let (0, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) {
                let latch = u32::from_le_bytes(bytes) & CONFIG_ADDRESS_MASK;
                self.address.store(latch, Ordering::SeqCst);
            }
            return;
        }
        if let Some(a) = self.data_target(offset - CONFIG_DATA_OFFSET, data.len()) {
            self.state
                .config_write(a.bus, a.device, a.function, a.register, data);
        }
    }
}

/// ECAM for bus 0, registered over `ecam_base`..+[`ECAM_BUS_SIZE`] on the
/// MMIO bus (offset = device << 15 | function << 12 | register).
pub struct PciConfigMmio {
    state: Arc<SegmentState>,
}

impl PciConfigMmio {
    pub(crate) fn new(state: Arc<SegmentState>) -> Self {
        Self { state }
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        match ConfigAddress::from_ecam(offset) {
            Some(a) => self
                .state
                .config_read(a.bus, a.device, a.function, a.register, data),
            None => data.fill(0xff),
        }
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        if let Some(a) = ConfigAddress::from_ecam(offset) {
            self.state
                .config_write(a.bus, a.device, a.function, a.register, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type1_decoding() {
        assert_eq!(ConfigAddress::from_type1(0x0000_1810), None);
        assert_eq!(
            ConfigAddress::from_type1(0x8001_1a3c),
            Some(ConfigAddress {
                bus: 1,
                device: 3,
                function: 2,
                register: 0x3c
            })
        );
        assert_eq!(
            ConfigAddress::from_type1(0x80ff_ffff),
            Some(ConfigAddress {
                bus: 0xff,
                device: 31,
                function: 7,
                register: 0xfc
            })
        );
    }

    #[test]
    fn ecam_decoding() {
        assert_eq!(
            ConfigAddress::from_ecam((5 << 15) | (1 << 12) | 0x104),
            Some(ConfigAddress {
                bus: 0,
                device: 5,
                function: 1,
                register: 0x104
            })
        );
        assert_eq!(ConfigAddress::from_ecam(1 << 20).unwrap().bus, 1);
        assert_eq!(ConfigAddress::from_ecam(256 << 20), None);
        assert_eq!(ConfigAddress::from_ecam(u64::MAX), None);
    }
}
