//! Dispatch of guest accesses to the BARs that decode them.
//!
//! The VMM registers one [`PciBarWindow`] over the whole PCI I/O window
//! and one (the same object may be used twice) over each MMIO window. The
//! segment keeps a map from decoded address ranges to devices, rebuilt for
//! one device whenever the guest writes its command register or its BARs,
//! so an access costs a map lookup and the lock of the target device only.

use std::collections::BTreeMap;
use std::sync::Arc;

use tapir_devices::{lock, BusDevice};

use crate::configuration::PciConfiguration;
use crate::device::SharedPciDevice;
use crate::segment::SegmentState;

/// Which address space a BAR window serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarSpace {
    /// Port I/O (I/O BARs, decoded when the command register's I/O space
    /// bit is set).
    Io,
    /// Memory (32- and 64-bit memory BARs, decoded when the memory space
    /// bit is set).
    Memory,
}

/// Largest single access a window forwards (a 64-bit MMIO access).
const MAX_ACCESS_SIZE: usize = 8;

#[derive(Clone)]
struct Decoder {
    size: u64,
    device: SharedPciDevice,
}

/// The BAR that decodes an access.
pub(crate) struct BarTarget {
    pub(crate) device: SharedPciDevice,
    /// The slot of the device (for its access counters).
    pub(crate) slot: u8,
    pub(crate) index: u8,
    /// Offset of the access inside the BAR.
    pub(crate) offset: u64,
}

/// The BARs that currently decode, keyed by (address, slot, BAR index).
#[derive(Default)]
pub(crate) struct BarMap {
    io: BTreeMap<(u64, u8, u8), Decoder>,
    memory: BTreeMap<(u64, u8, u8), Decoder>,
}

impl BarMap {
    /// Replaces the entries of `slot` with the BARs `config` decodes now.
    pub(crate) fn update_slot(
        &mut self,
        slot: u8,
        config: &PciConfiguration,
        device: &SharedPciDevice,
    ) {
        self.io.retain(|k, _| k.1 != slot);
        self.memory.retain(|k, _| k.1 != slot);
        for bar in config.bars() {
            let Some(address) = config.bar_address(bar.index) else {
                continue;
            };
            let (map, enabled) = if bar.kind.is_io() {
                (&mut self.io, config.io_space_enabled())
            } else {
                (&mut self.memory, config.memory_space_enabled())
            };
            if enabled {
                let decoder = Decoder {
                    size: bar.size,
                    device: device.clone(),
                };
                map.insert((address, slot, bar.index), decoder);
            }
        }
    }

    /// The device BAR that decodes all of `[addr, addr + len)`, with the
    /// offset of `addr` inside it. Overlapping BARs (a guest error) resolve
    /// to the one with the highest base.
    pub(crate) fn lookup(&self, space: BarSpace, addr: u64, len: usize) -> Option<BarTarget> {
        let map = match space {
            BarSpace::Io => &self.io,
            BarSpace::Memory => &self.memory,
        };
        let len = len as u64;
        map.range(..=(addr, u8::MAX, u8::MAX))
            .rev()
            .find_map(|(&(base, slot, index), d)| {
                let offset = addr - base;
                (offset < d.size && len <= d.size - offset).then(|| BarTarget {
                    device: d.device.clone(),
                    slot,
                    index,
                    offset,
                })
            })
    }

    /// Number of decoding BARs (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.io.len() + self.memory.len()
    }
}

/// A bus front-end forwarding accesses to device BARs. See the module
/// documentation.
pub struct PciBarWindow {
    state: Arc<SegmentState>,
    space: BarSpace,
}

impl PciBarWindow {
    pub(crate) fn new(state: Arc<SegmentState>, space: BarSpace) -> Self {
        Self { state, space }
    }

    /// The address space this window serves.
    pub fn space(&self) -> BarSpace {
        self.space
    }

    fn target(&self, base: u64, offset: u64, len: usize) -> Option<BarTarget> {
        if len == 0 || len > MAX_ACCESS_SIZE {
            return None;
        }
        let addr = base.checked_add(offset)?;
        self.state.bar_lookup(self.space, addr, len)
    }
}

impl BusDevice for PciBarWindow {
    fn read(&self, base: u64, offset: u64, data: &mut [u8]) {
        match self.target(base, offset, data.len()) {
            Some(t) => {
                self.state.counters(t.slot).bar(false);
                lock(&t.device).read_bar(t.index, t.offset, data)
            }
            None => data.fill(0xff),
        }
    }

    fn write(&self, base: u64, offset: u64, data: &[u8]) {
        if let Some(t) = self.target(base, offset, data.len()) {
            self.state.counters(t.slot).bar(true);
            lock(&t.device).write_bar(t.index, t.offset, data);
        }
    }
}
