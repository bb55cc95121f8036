//! Base address registers of a type 0 header.
//!
//! A BAR's writable mask covers exactly its address bits above its size,
//! so the standard sizing sequence (write all-ones, read back) returns the
//! size mask with the read-only type bits, and a 64-bit BAR's upper half is
//! a plain register in the next slot.
//!
//! The configuration remembers the address each BAR was last programmed
//! to. A guest write that changes it is reported as a [`BarChange`]; the
//! all-ones sizing write (and the restore that follows it) is not.

use crate::configuration::{PciConfigError, PciConfiguration, PCI_BAR0};

/// Number of BARs in a type 0 header.
pub const NUM_BARS: usize = 6;
/// BAR bit 0: the BAR maps I/O space.
pub const PCI_BAR_IO: u32 = 1 << 0;
/// Memory BAR bits 2:1 = 0b10: 64-bit BAR.
pub const PCI_BAR_MEM_TYPE_64: u32 = 1 << 2;
/// Memory BAR bit 3: prefetchable.
pub const PCI_BAR_MEM_PREFETCH: u32 = 1 << 3;
/// Address bits of a memory BAR's low dword.
pub const PCI_BAR_MEM_ADDR_MASK: u32 = !0xf;
/// Address bits of an I/O BAR.
pub const PCI_BAR_IO_ADDR_MASK: u32 = !0x3;
/// Smallest memory BAR.
pub const MIN_MEM_BAR_SIZE: u64 = 16;
/// Smallest I/O BAR.
pub const MIN_IO_BAR_SIZE: u64 = 4;
/// Largest I/O BAR we accept (the whole x86 port space).
pub const MAX_IO_BAR_SIZE: u64 = 1 << 16;
/// Largest 32-bit memory BAR.
pub const MAX_MEM32_BAR_SIZE: u64 = 1 << 31;

/// The address space and width of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory, non-prefetchable.
    Mem32,
    /// 64-bit memory; takes this BAR slot and the next.
    Mem64 {
        /// The prefetchable bit.
        prefetchable: bool,
    },
}

impl BarKind {
    /// Whether the BAR decodes I/O space (as opposed to memory space).
    pub fn is_io(self) -> bool {
        matches!(self, BarKind::Io)
    }

    fn type_bits(self) -> u32 {
        match self {
            BarKind::Io => PCI_BAR_IO,
            BarKind::Mem32 => 0,
            BarKind::Mem64 { prefetchable } => {
                PCI_BAR_MEM_TYPE_64
                    | if prefetchable {
                        PCI_BAR_MEM_PREFETCH
                    } else {
                        0
                    }
            }
        }
    }

    fn addr_mask(self) -> u32 {
        if self.is_io() {
            PCI_BAR_IO_ADDR_MASK
        } else {
            PCI_BAR_MEM_ADDR_MASK
        }
    }
}

/// A BAR a device declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBar {
    /// BAR slot, 0..=5 (0..=4 for a 64-bit BAR).
    pub index: u8,
    /// Size in bytes, a power of two.
    pub size: u64,
    /// Address space and width.
    pub kind: BarKind,
}

/// A guest write moved a BAR from `old` to `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarChange {
    /// BAR index (the lower slot for a 64-bit BAR).
    pub index: u8,
    /// Previous address.
    pub old: u64,
    /// New address.
    pub new: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarSlot {
    Unused,
    /// A BAR starts here; `address` is the last programmed (non-sizing)
    /// address.
    Bar {
        bar: PciBar,
        address: u64,
    },
    /// Upper half of the 64-bit BAR in the previous slot.
    Upper,
}

fn bar_reg(index: usize) -> usize {
    usize::from(PCI_BAR0 / 4) + index
}

impl PciConfiguration {
    /// Declares a BAR. Its address is zero until [`Self::set_bar_address`]
    /// or the guest programs it.
    pub fn add_bar(&mut self, bar: PciBar) -> Result<(), PciConfigError> {
        let index = usize::from(bar.index);
        let is64 = matches!(bar.kind, BarKind::Mem64 { .. });
        if index >= NUM_BARS || (is64 && index + 1 >= NUM_BARS) {
            return Err(PciConfigError::BarIndex(bar.index));
        }
        let (min, max) = match bar.kind {
            BarKind::Io => (MIN_IO_BAR_SIZE, MAX_IO_BAR_SIZE),
            BarKind::Mem32 => (MIN_MEM_BAR_SIZE, MAX_MEM32_BAR_SIZE),
            BarKind::Mem64 { .. } => (MIN_MEM_BAR_SIZE, 1 << 63),
        };
        if !bar.size.is_power_of_two() || bar.size < min || bar.size > max {
            return Err(PciConfigError::BarSize {
                index: bar.index,
                size: bar.size,
            });
        }
        if self.bars[index] != BarSlot::Unused {
            return Err(PciConfigError::BarInUse(bar.index));
        }
        if is64 && self.bars[index + 1] != BarSlot::Unused {
            return Err(PciConfigError::BarInUse(bar.index + 1));
        }

        let size_mask = !(bar.size - 1);
        let reg = bar_reg(index);
        self.regs[reg] = bar.kind.type_bits();
        self.writable[reg] = bar.kind.addr_mask() & size_mask as u32;
        self.bars[index] = BarSlot::Bar { bar, address: 0 };
        if is64 {
            self.regs[reg + 1] = 0;
            self.writable[reg + 1] = (size_mask >> 32) as u32;
            self.bars[index + 1] = BarSlot::Upper;
        }
        Ok(())
    }

    /// The BAR declared at `index`, if any (None for the upper half of a
    /// 64-bit BAR and for indices beyond 5).
    pub fn bar(&self, index: u8) -> Option<PciBar> {
        match self.bars.get(usize::from(index))? {
            BarSlot::Bar { bar, .. } => Some(*bar),
            _ => None,
        }
    }

    /// All declared BARs, in index order.
    pub fn bars(&self) -> impl Iterator<Item = PciBar> + '_ {
        self.bars.iter().filter_map(|slot| match slot {
            BarSlot::Bar { bar, .. } => Some(*bar),
            _ => None,
        })
    }

    /// The address BAR `index` decodes: the one last programmed by
    /// [`Self::set_bar_address`] or by the guest. While the guest is in
    /// the middle of sizing the BAR, this is still the previous address.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        match self.bars.get(usize::from(index))? {
            BarSlot::Bar { address, .. } => Some(*address),
            _ => None,
        }
    }

    /// Programs BAR `index` (device/VMM side, e.g. at allocation time).
    /// The address must be aligned to the BAR size and, for I/O and
    /// 32-bit BARs, fit below 4 GiB.
    pub fn set_bar_address(&mut self, index: u8, addr: u64) -> Result<(), PciConfigError> {
        let bar = self
            .bar(index)
            .ok_or(PciConfigError::BarNotDeclared(index))?;
        let limit = match bar.kind {
            BarKind::Mem64 { .. } => u64::MAX,
            _ => u64::from(u32::MAX),
        };
        let fits = addr
            .checked_add(bar.size - 1)
            .is_some_and(|last| last <= limit);
        if addr & (bar.size - 1) != 0 || !fits {
            return Err(PciConfigError::BarAddress { index, addr });
        }
        let i = usize::from(index);
        let reg = bar_reg(i);
        self.regs[reg] = bar.kind.type_bits() | (addr as u32 & bar.kind.addr_mask());
        if matches!(bar.kind, BarKind::Mem64 { .. }) {
            self.regs[reg + 1] = (addr >> 32) as u32;
            self.sizing[i + 1] = false;
        }
        self.sizing[i] = false;
        self.bars[i] = BarSlot::Bar { bar, address: addr };
        Ok(())
    }

    /// The address currently held in the BAR registers, whatever state
    /// the guest left them in.
    fn decoded_bar_address(&self, index: usize, bar: &PciBar) -> u64 {
        let reg = bar_reg(index);
        let lo = u64::from(self.regs[reg] & bar.kind.addr_mask());
        match bar.kind {
            BarKind::Mem64 { .. } => lo | (u64::from(self.regs[reg + 1]) << 32),
            _ => lo,
        }
    }

    /// Called after a guest write to BAR register `bar_index` (0..6).
    pub(crate) fn bar_register_written(&mut self, bar_index: usize) -> Option<BarChange> {
        let index = match self.bars.get(bar_index)? {
            BarSlot::Bar { .. } => bar_index,
            BarSlot::Upper => bar_index.checked_sub(1)?,
            BarSlot::Unused => return None,
        };
        let BarSlot::Bar { bar, address } = self.bars[index] else {
            return None;
        };
        let is64 = matches!(bar.kind, BarKind::Mem64 { .. });
        // While either half still holds the sizing pattern, the BAR is not
        // at a real address: wait for the restore.
        if self.sizing[index] || (is64 && self.sizing[index + 1]) {
            return None;
        }
        let new = self.decoded_bar_address(index, &bar);
        if new == address {
            return None;
        }
        self.bars[index] = BarSlot::Bar { bar, address: new };
        Some(BarChange {
            index: bar.index,
            old: address,
            new,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::PciHeader;

    fn cfg() -> PciConfiguration {
        PciConfiguration::new(&PciHeader {
            vendor_id: 0x1234,
            device_id: 0x5678,
            ..Default::default()
        })
    }

    fn write32(c: &mut PciConfiguration, index: u8, v: u32) -> Option<BarChange> {
        c.write(PCI_BAR0 + 4 * u16::from(index), &v.to_le_bytes())
    }

    fn read32(c: &PciConfiguration, index: u8) -> u32 {
        c.read_dword(bar_reg(usize::from(index)))
    }

    #[test]
    fn mem32_sizing_and_programming() {
        let mut c = cfg();
        c.add_bar(PciBar {
            index: 0,
            size: 0x1000,
            kind: BarKind::Mem32,
        })
        .unwrap();
        assert_eq!(read32(&c, 0), 0);
        c.set_bar_address(0, 0xc000_0000).unwrap();
        assert_eq!(read32(&c, 0), 0xc000_0000);
        // Linux sizing: all-ones, read, restore. No move is reported.
        assert_eq!(write32(&mut c, 0, u32::MAX), None);
        assert_eq!(read32(&c, 0), 0xffff_f000);
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        assert_eq!(write32(&mut c, 0, 0xc000_0000), None);
        // A real move.
        assert_eq!(
            write32(&mut c, 0, 0xc010_0000),
            Some(BarChange {
                index: 0,
                old: 0xc000_0000,
                new: 0xc010_0000
            })
        );
        assert_eq!(c.bar_address(0), Some(0xc010_0000));
        // Bits below the size are not writable.
        assert_eq!(
            write32(&mut c, 0, 0xc020_0abc),
            Some(BarChange {
                index: 0,
                old: 0xc010_0000,
                new: 0xc020_0000
            })
        );
        assert_eq!(read32(&c, 0), 0xc020_0000);
    }

    #[test]
    fn io_bar_sizing() {
        let mut c = cfg();
        c.add_bar(PciBar {
            index: 2,
            size: 0x40,
            kind: BarKind::Io,
        })
        .unwrap();
        assert_eq!(read32(&c, 2), 1);
        write32(&mut c, 2, u32::MAX);
        assert_eq!(read32(&c, 2), 0xffff_ffc1);
        assert_eq!(
            write32(&mut c, 2, 0xc040),
            Some(BarChange {
                index: 2,
                old: 0,
                new: 0xc040
            })
        );
        assert_eq!(read32(&c, 2), 0xc041);
        // Sub-dword writes work too.
        assert_eq!(
            c.write(PCI_BAR0 + 8, &0xc080u16.to_le_bytes()),
            Some(BarChange {
                index: 2,
                old: 0xc040,
                new: 0xc080
            })
        );
    }

    #[test]
    fn mem64_sizing_both_halves() {
        let mut c = cfg();
        let kind = BarKind::Mem64 { prefetchable: true };
        c.add_bar(PciBar {
            index: 2,
            size: 0x4000,
            kind,
        })
        .unwrap();
        assert_eq!(read32(&c, 2), 0xc);
        c.set_bar_address(2, 0x40_0000_4000).unwrap();
        assert_eq!((read32(&c, 2), read32(&c, 3)), (0x400c, 0x40));
        // Size low, restore, size high, restore: no move.
        assert_eq!(write32(&mut c, 2, u32::MAX), None);
        assert_eq!(read32(&c, 2), 0xffff_c00c);
        assert_eq!(write32(&mut c, 2, 0x4000), None);
        assert_eq!(write32(&mut c, 3, u32::MAX), None);
        assert_eq!(read32(&c, 3), u32::MAX);
        assert_eq!(write32(&mut c, 3, 0x40), None);
        // Both halves sized before either is restored: still no move.
        write32(&mut c, 2, u32::MAX);
        write32(&mut c, 3, u32::MAX);
        assert_eq!(write32(&mut c, 2, 0x4000), None);
        assert_eq!(write32(&mut c, 3, 0x40), None);
        assert_eq!(c.bar_address(2), Some(0x40_0000_4000));
        // Moving the upper half is reported against the lower index.
        assert_eq!(
            write32(&mut c, 3, 0x41),
            Some(BarChange {
                index: 2,
                old: 0x40_0000_4000,
                new: 0x41_0000_4000
            })
        );
        assert_eq!(c.bar(3), None);
        assert_eq!(c.bar_address(3), None);
    }

    #[test]
    fn huge_mem64_bar_masks() {
        let mut c = cfg();
        let kind = BarKind::Mem64 {
            prefetchable: false,
        };
        c.add_bar(PciBar {
            index: 0,
            size: 1 << 33,
            kind,
        })
        .unwrap();
        write32(&mut c, 0, u32::MAX);
        write32(&mut c, 1, u32::MAX);
        assert_eq!((read32(&c, 0), read32(&c, 1)), (0x4, 0xffff_fffe));
        write32(&mut c, 0, 0);
        write32(&mut c, 1, 0);
        assert_eq!(
            write32(&mut c, 1, 0x42),
            Some(BarChange {
                index: 0,
                old: 0,
                new: 0x42_0000_0000
            })
        );
    }

    #[test]
    fn add_bar_validation() {
        let mut c = cfg();
        let io = |index, size| PciBar {
            index,
            size,
            kind: BarKind::Io,
        };
        let m64 = |index, size| PciBar {
            index,
            size,
            kind: BarKind::Mem64 {
                prefetchable: false,
            },
        };
        assert_eq!(c.add_bar(io(6, 16)), Err(PciConfigError::BarIndex(6)));
        assert_eq!(c.add_bar(io(255, 16)), Err(PciConfigError::BarIndex(255)));
        assert_eq!(c.add_bar(m64(5, 16)), Err(PciConfigError::BarIndex(5)));
        assert_eq!(
            c.add_bar(io(0, 24)),
            Err(PciConfigError::BarSize { index: 0, size: 24 })
        );
        assert_eq!(
            c.add_bar(io(0, 0)),
            Err(PciConfigError::BarSize { index: 0, size: 0 })
        );
        assert_eq!(
            c.add_bar(io(0, 2)),
            Err(PciConfigError::BarSize { index: 0, size: 2 })
        );
        assert!(c.add_bar(io(0, 1 << 17)).is_err());
        assert!(c
            .add_bar(PciBar {
                index: 0,
                size: 8,
                kind: BarKind::Mem32
            })
            .is_err());
        assert!(c
            .add_bar(PciBar {
                index: 0,
                size: 1 << 32,
                kind: BarKind::Mem32
            })
            .is_err());
        c.add_bar(m64(1, 0x1000)).unwrap();
        assert_eq!(c.add_bar(io(1, 16)), Err(PciConfigError::BarInUse(1)));
        assert_eq!(c.add_bar(io(2, 16)), Err(PciConfigError::BarInUse(2)));
        assert_eq!(c.add_bar(m64(0, 16)), Err(PciConfigError::BarInUse(1)));
        c.add_bar(io(0, 16)).unwrap();
        let all: Vec<_> = c.bars().collect();
        assert_eq!(all, vec![io(0, 16), m64(1, 0x1000)]);
    }

    #[test]
    fn set_bar_address_validation() {
        let mut c = cfg();
        c.add_bar(PciBar {
            index: 0,
            size: 0x1000,
            kind: BarKind::Mem32,
        })
        .unwrap();
        c.add_bar(PciBar {
            index: 1,
            size: 0x100,
            kind: BarKind::Io,
        })
        .unwrap();
        assert_eq!(
            c.set_bar_address(2, 0),
            Err(PciConfigError::BarNotDeclared(2))
        );
        assert_eq!(
            c.set_bar_address(9, 0),
            Err(PciConfigError::BarNotDeclared(9))
        );
        assert!(c.set_bar_address(0, 0x800).is_err());
        assert!(c.set_bar_address(0, 0x1_0000_0000).is_err());
        assert!(c.set_bar_address(0, 0xffff_f000).is_ok());
        assert!(c.set_bar_address(1, 0xc100).is_ok());
        assert_eq!(read32(&c, 1), 0xc101);
        let mut big = cfg();
        let kind = BarKind::Mem64 {
            prefetchable: false,
        };
        big.add_bar(PciBar {
            index: 0,
            size: 0x1000,
            kind,
        })
        .unwrap();
        assert!(big.set_bar_address(0, u64::MAX - 0xfff).is_ok());
        assert!(big.set_bar_address(0, u64::MAX).is_err());
    }

    #[test]
    fn writes_to_undeclared_bars_are_ignored() {
        let mut c = cfg();
        for i in 0..6 {
            assert_eq!(write32(&mut c, i, u32::MAX), None);
            assert_eq!(read32(&c, i), 0);
        }
    }

    #[test]
    fn sizing_with_byte_writes() {
        let mut c = cfg();
        c.add_bar(PciBar {
            index: 0,
            size: 0x100,
            kind: BarKind::Mem32,
        })
        .unwrap();
        c.set_bar_address(0, 0xd000_0000).unwrap();
        for i in 0..4 {
            assert_eq!(c.write(PCI_BAR0 + i, &[0xff]), None);
        }
        assert_eq!(read32(&c, 0), 0xffff_ff00);
        assert_eq!(write32(&mut c, 0, 0xd000_0000), None);
        assert_eq!(c.bar_address(0), Some(0xd000_0000));
    }
}
