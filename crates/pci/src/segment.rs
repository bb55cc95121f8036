//! The PCI segment: bus 0 of a root complex, its devices, BAR allocation
//! and INTx routing.
//!
//! Only function 0 of each slot is populated; accesses to other functions,
//! other buses and empty slots read as all-ones (no device).

use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tapir_devices::lock;

use crate::allocator::RangeAllocator;
use crate::bar::BarKind;
use crate::bar_window::{BarMap, BarSpace, BarTarget, PciBarWindow};
use crate::config_access::{PciConfigIo, PciConfigMmio, ECAM_BUS_SIZE};
use crate::configuration::{
    decode_access, PciConfigError, PCI_BAR0, PCI_COMMAND, PCI_INTERRUPT_LINE_NONE,
};
use crate::counters::AccessCounters;
use crate::device::SharedPciDevice;
use crate::host_bridge::PciHostBridge;
use crate::intx::IntxPin;

/// Device slots on a bus.
pub const PCI_NUM_SLOTS: u8 = 32;
/// The host bridge's slot.
pub const HOST_BRIDGE_SLOT: u8 = 0;
/// First GSI used for INTx (IOAPIC pin 16).
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// Number of GSIs the INTx pins are swizzled over.
pub const PCI_INTX_GSI_COUNT: u32 = 8;
/// End of the x86 I/O port space.
const IO_SPACE_END: u64 = 1 << 16;
/// End of the 32-bit memory space.
const MEM32_SPACE_END: u64 = 1 << 32;

/// The GSI INTx `pin` of `slot` is wired to: the usual swizzle over the
/// eight IOAPIC pins 16..23. This is what the ACPI `_PRT` describes.
pub fn intx_gsi(slot: u8, pin: IntxPin) -> u32 {
    PCI_INTX_GSI_BASE + (u32::from(slot) + u32::from(pin.index())) % PCI_INTX_GSI_COUNT
}

/// Every `(slot, pin, gsi)` routing entry for the ACPI `_PRT`: slots 0..31,
/// pins 0 (INTA) ..3 (INTD).
pub fn prt_entries() -> Vec<(u8, u8, u32)> {
    (0..PCI_NUM_SLOTS)
        .flat_map(|slot| IntxPin::ALL.map(|pin| (slot, pin.index(), intx_gsi(slot, pin))))
        .collect()
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Errors from building a segment or adding devices to it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// Slot beyond 31.
    #[error("PCI slot {0} is out of range (bus 0 has slots 0 to 31)")]
    SlotOutOfRange(u8),
    /// Slot 0 was requested.
    #[error("PCI slot 0 is reserved for the host bridge")]
    HostBridgeSlot,
    /// The slot is reserved or holds a device.
    #[error("PCI slot {0} is already in use")]
    SlotInUse(u8),
    /// Slots 1..31 are all taken.
    #[error("no free PCI slot: all 31 device slots of bus 0 are in use")]
    NoFreeSlot,
    /// A window wraps around or exceeds its address space.
    #[error("invalid PCI {name} window {base:#x}+{size:#x}: {reason}")]
    InvalidWindow {
        /// "I/O", "MMIO32", "MMIO64" or "ECAM".
        name: &'static str,
        /// Window base.
        base: u64,
        /// Window size.
        size: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A BAR does not fit the window it must come from.
    #[error("no room in the PCI {window} window for BAR {index} ({size:#x} bytes) of slot {slot}")]
    BarAllocation {
        /// Device slot.
        slot: u8,
        /// BAR index.
        index: u8,
        /// BAR size.
        size: u64,
        /// Window name.
        window: &'static str,
    },
    /// Writing an allocated address into the device's BAR failed.
    #[error("programming a BAR: {0}")]
    Config(#[from] PciConfigError),
}

/// The address windows of a segment, as the VMM's memory map defines them.
/// Each window is `(base, size)`; a size of zero means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciSegmentConfig {
    /// I/O ports for I/O BARs (below 64 KiB).
    pub io_window: (u64, u64),
    /// Memory below 4 GiB for 32-bit BARs.
    pub mmio32_window: (u64, u64),
    /// Memory for 64-bit BARs.
    pub mmio64_window: (u64, u64),
    /// Base of the 1 MiB ECAM region of bus 0 (1 MiB aligned).
    pub ecam_base: u64,
}

/// Where a BAR of a newly added device was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarAllocation {
    /// BAR index.
    pub index: u8,
    /// BAR kind.
    pub kind: BarKind,
    /// Guest address (port number for I/O BARs).
    pub address: u64,
    /// BAR size.
    pub size: u64,
}

/// State shared between the segment and its bus front-ends.
pub(crate) struct SegmentState {
    devices: RwLock<Vec<Option<SharedPciDevice>>>,
    bars: RwLock<BarMap>,
    /// One per slot, whether populated or not.
    counters: Vec<Arc<AccessCounters>>,
}

/// Whether a config write of `len` bytes at `offset` touches the command
/// register or a BAR, i.e. may change what the device decodes.
fn touches_decode(offset: u16, len: usize) -> bool {
    let (start, end) = (usize::from(offset), usize::from(offset) + len);
    let overlaps = |lo: u16, hi: u16| start < usize::from(hi) && end > usize::from(lo);
    overlaps(PCI_COMMAND, PCI_COMMAND + 2) || overlaps(PCI_BAR0, PCI_BAR0 + 24)
}

impl SegmentState {
    /// The access counters of `slot` (which is below [`PCI_NUM_SLOTS`]).
    pub(crate) fn counters(&self, slot: u8) -> &AccessCounters {
        &self.counters[usize::from(slot)]
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<(u8, SharedPciDevice)> {
        if bus != 0 || function != 0 {
            return None;
        }
        let dev = read(&self.devices).get(usize::from(device))?.clone()?;
        Some((device, dev))
    }

    pub(crate) fn config_read(
        &self,
        bus: u8,
        device: u8,
        function: u8,
        offset: u16,
        data: &mut [u8],
    ) {
        let target = self.function(bus, device, function);
        match target {
            Some((slot, dev)) if decode_access(usize::from(offset), data.len()).is_some() => {
                self.counters(slot).config(false);
                lock(&dev).read_config(offset, data);
            }
            _ => data.fill(0xff),
        }
    }

    pub(crate) fn config_write(&self, bus: u8, device: u8, function: u8, offset: u16, data: &[u8]) {
        let Some((slot, dev)) = self.function(bus, device, function) else {
            return;
        };
        if decode_access(usize::from(offset), data.len()).is_none() {
            return;
        }
        self.counters(slot).config(true);
        let mut d = lock(&dev);
        let change = d.write_config(offset, data);
        if let Some(change) = &change {
            d.bar_moved(change);
        }
        if change.is_some() || touches_decode(offset, data.len()) {
            // Updated under the device lock so that concurrent writes to
            // the same device cannot leave a stale map behind.
            write(&self.bars).update_slot(slot, d.config(), &dev);
        }
    }

    pub(crate) fn bar_lookup(&self, space: BarSpace, addr: u64, len: usize) -> Option<BarTarget> {
        read(&self.bars).lookup(space, addr, len)
    }
}

/// Bus 0 of the root complex. See the module documentation.
pub struct PciSegment {
    config: PciSegmentConfig,
    state: Arc<SegmentState>,
    /// Bit n set: slot n is reserved or populated.
    reserved: u32,
    io: RangeAllocator,
    mmio32: RangeAllocator,
    mmio64: RangeAllocator,
    config_io: Arc<PciConfigIo>,
    config_mmio: Arc<PciConfigMmio>,
    io_window: Arc<PciBarWindow>,
    mmio_window: Arc<PciBarWindow>,
}

fn check_window(name: &'static str, (base, size): (u64, u64), limit: u64) -> Result<(), PciError> {
    let err = |reason| PciError::InvalidWindow {
        name,
        base,
        size,
        reason,
    };
    let end = base.checked_add(size).ok_or(err("wraps around"))?;
    if end > limit {
        return Err(err("exceeds its address space"));
    }
    Ok(())
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 != 0 && b.1 != 0 && a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

impl PciSegment {
    /// A segment with the host bridge in slot 0 and the given windows.
    pub fn new(config: PciSegmentConfig) -> Result<Self, PciError> {
        check_window("I/O", config.io_window, IO_SPACE_END)?;
        check_window("MMIO32", config.mmio32_window, MEM32_SPACE_END)?;
        check_window("MMIO64", config.mmio64_window, u64::MAX)?;
        let ecam = (config.ecam_base, ECAM_BUS_SIZE);
        check_window("ECAM", ecam, u64::MAX)?;
        let ecam_err = |reason| PciError::InvalidWindow {
            name: "ECAM",
            base: ecam.0,
            size: ecam.1,
            reason,
        };
        if config.ecam_base & (ECAM_BUS_SIZE - 1) != 0 {
            return Err(ecam_err("not 1 MiB aligned"));
        }
        if overlap(ecam, config.mmio32_window) || overlap(ecam, config.mmio64_window) {
            return Err(ecam_err("overlaps a BAR window"));
        }
        if overlap(config.mmio32_window, config.mmio64_window) {
            let (base, size) = config.mmio64_window;
            return Err(PciError::InvalidWindow {
                name: "MMIO64",
                base,
                size,
                reason: "overlaps the MMIO32 window",
            });
        }

        let host_bridge: SharedPciDevice = Arc::new(Mutex::new(PciHostBridge::new()));
        let mut devices = vec![None; usize::from(PCI_NUM_SLOTS)];
        devices[usize::from(HOST_BRIDGE_SLOT)] = Some(host_bridge);
        let state = Arc::new(SegmentState {
            devices: RwLock::new(devices),
            bars: RwLock::new(BarMap::default()),
            counters: (0..PCI_NUM_SLOTS)
                .map(|_| Arc::new(AccessCounters::default()))
                .collect(),
        });
        Ok(Self {
            config,
            reserved: 1 << HOST_BRIDGE_SLOT,
            io: RangeAllocator::new(config.io_window.0, config.io_window.1),
            mmio32: RangeAllocator::new(config.mmio32_window.0, config.mmio32_window.1),
            mmio64: RangeAllocator::new(config.mmio64_window.0, config.mmio64_window.1),
            config_io: Arc::new(PciConfigIo::new(state.clone())),
            config_mmio: Arc::new(PciConfigMmio::new(state.clone())),
            io_window: Arc::new(PciBarWindow::new(state.clone(), BarSpace::Io)),
            mmio_window: Arc::new(PciBarWindow::new(state.clone(), BarSpace::Memory)),
            state,
        })
    }

    /// The windows the segment was built with.
    pub fn config(&self) -> &PciSegmentConfig {
        &self.config
    }

    /// `(base, size)` of the ECAM region to register [`Self::config_mmio`]
    /// over.
    pub fn ecam_window(&self) -> (u64, u64) {
        (self.config.ecam_base, ECAM_BUS_SIZE)
    }

    /// The type-1 front-end, for ports 0xCF8..=0xCFF.
    pub fn config_io(&self) -> Arc<PciConfigIo> {
        self.config_io.clone()
    }

    /// The ECAM front-end, for [`Self::ecam_window`].
    pub fn config_mmio(&self) -> Arc<PciConfigMmio> {
        self.config_mmio.clone()
    }

    /// The BAR front-end for the I/O window.
    pub fn io_bar_window(&self) -> Arc<PciBarWindow> {
        self.io_window.clone()
    }

    /// The BAR front-end for the MMIO32 and MMIO64 windows (register the
    /// same object over both).
    pub fn mmio_bar_window(&self) -> Arc<PciBarWindow> {
        self.mmio_window.clone()
    }

    /// The `_PRT` entries for this segment (see [`prt_entries`]).
    pub fn prt_entries(&self) -> Vec<(u8, u8, u32)> {
        prt_entries()
    }

    /// The device in `slot`, if any.
    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        read(&self.state.devices).get(usize::from(slot))?.clone()
    }

    /// The counters of the guest's accesses to `slot` (configuration space
    /// and BARs), `None` for a slot number beyond the bus.
    pub fn access_counters(&self, slot: u8) -> Option<Arc<AccessCounters>> {
        self.state.counters.get(usize::from(slot)).cloned()
    }

    fn check_slot(slot: u8) -> Result<(), PciError> {
        if slot >= PCI_NUM_SLOTS {
            Err(PciError::SlotOutOfRange(slot))
        } else if slot == HOST_BRIDGE_SLOT {
            Err(PciError::HostBridgeSlot)
        } else {
            Ok(())
        }
    }

    /// Reserves a slot: `Some(n)` asks for slot n, `None` takes the lowest
    /// free slot from 1. Reserve first when a device needs to know its
    /// slot (e.g. for its INTx GSI) before it is built.
    pub fn reserve_slot(&mut self, slot: Option<u8>) -> Result<u8, PciError> {
        let slot = match slot {
            Some(s) => {
                Self::check_slot(s)?;
                if self.reserved & (1 << s) != 0 {
                    return Err(PciError::SlotInUse(s));
                }
                s
            }
            None => (1..PCI_NUM_SLOTS)
                .find(|s| self.reserved & (1 << s) == 0)
                .ok_or(PciError::NoFreeSlot)?,
        };
        self.reserved |= 1 << slot;
        Ok(slot)
    }

    /// Plugs `device` into `slot` (reserved by [`Self::reserve_slot`], or
    /// free). Allocates every BAR its configuration declares, largest
    /// first and naturally aligned: I/O BARs from the I/O window, 32-bit
    /// BARs from MMIO32, 64-bit BARs from MMIO64, or from MMIO32 when
    /// MMIO64 is absent or full. Writes the addresses into the BARs and
    /// sets the interrupt line to the GSI of its interrupt pin. Decoding
    /// stays off until the guest sets the command register, as after a
    /// firmware scan that leaves enabling to the OS driver.
    pub fn add_device(
        &mut self,
        slot: u8,
        device: SharedPciDevice,
    ) -> Result<Vec<BarAllocation>, PciError> {
        Self::check_slot(slot)?;
        if self.device(slot).is_some() {
            return Err(PciError::SlotInUse(slot));
        }

        let mut dev = lock(&device);
        let mut bars: Vec<_> = dev.config().bars().collect();
        bars.sort_by(|a, b| b.size.cmp(&a.size).then(a.index.cmp(&b.index)));

        let (mut io, mut mmio32, mut mmio64) = (self.io, self.mmio32, self.mmio64);
        let mut allocations = Vec::with_capacity(bars.len());
        for bar in &bars {
            let (address, window) = match bar.kind {
                BarKind::Io => (io.allocate(bar.size), "I/O"),
                BarKind::Mem32 => (mmio32.allocate(bar.size), "MMIO32"),
                BarKind::Mem64 { .. } => (
                    mmio64
                        .allocate(bar.size)
                        .or_else(|| mmio32.allocate(bar.size)),
                    "MMIO64",
                ),
            };
            let address = address.ok_or(PciError::BarAllocation {
                slot,
                index: bar.index,
                size: bar.size,
                window,
            })?;
            allocations.push(BarAllocation {
                index: bar.index,
                kind: bar.kind,
                address,
                size: bar.size,
            });
        }
        let config = dev.config_mut();
        for a in &allocations {
            config.set_bar_address(a.index, a.address)?;
        }
        let line = config
            .interrupt_pin()
            .map_or(PCI_INTERRUPT_LINE_NONE, |pin| {
                // GSIs 16..23 fit the 8-bit register.
                intx_gsi(slot, pin) as u8
            });
        config.set_interrupt_line(line);

        (self.io, self.mmio32, self.mmio64) = (io, mmio32, mmio64);
        self.reserved |= 1 << slot;
        write(&self.state.bars).update_slot(slot, dev.config(), &device);
        drop(dev);
        write(&self.state.devices)[usize::from(slot)] = Some(device);
        allocations.sort_by_key(|a| a.index);
        Ok(allocations)
    }
}

#[cfg(test)]
mod tests;
