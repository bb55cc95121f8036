//! The configuration space of one PCI function (type 0 header).
//!
//! [`PciConfiguration`] is a 4 KiB register file (the 256-byte conventional
//! space followed by the PCIe extended space) with two masks per dword:
//! which bits the guest may write, and which bits are write-1-to-clear.
//! Devices describe themselves once (header, BARs, capabilities) and then
//! hand every guest access to [`PciConfiguration::read`] and
//! [`PciConfiguration::write`], which enforce those masks.
//!
//! BAR handling lives in [`crate::bar`]; this module holds the register
//! file, the header fields and the capability list.

use crate::bar::{BarChange, BarSlot, NUM_BARS};
use crate::intx::IntxPin;

/// Size of the whole configuration space of a PCIe function.
pub const PCI_CONFIG_SPACE_SIZE: usize = 4096;
/// Size of the conventional (PCI 3.0) part of the configuration space.
pub const PCI_CONVENTIONAL_CONFIG_SIZE: usize = 256;
/// Number of dword registers in the configuration space.
pub const NUM_CONFIG_REGISTERS: usize = PCI_CONFIG_SPACE_SIZE / 4;

/// Vendor ID (16 bits).
pub const PCI_VENDOR_ID: u16 = 0x00;
/// Device ID (16 bits).
pub const PCI_DEVICE_ID: u16 = 0x02;
/// Command register (16 bits).
pub const PCI_COMMAND: u16 = 0x04;
/// Status register (16 bits).
pub const PCI_STATUS: u16 = 0x06;
/// Revision ID (8 bits).
pub const PCI_REVISION_ID: u16 = 0x08;
/// Programming interface (8 bits).
pub const PCI_CLASS_PROG: u16 = 0x09;
/// Sub-class code (8 bits).
pub const PCI_SUBCLASS: u16 = 0x0a;
/// Base class code (8 bits).
pub const PCI_CLASS_CODE: u16 = 0x0b;
/// Cache line size (8 bits).
pub const PCI_CACHE_LINE_SIZE: u16 = 0x0c;
/// Latency timer (8 bits).
pub const PCI_LATENCY_TIMER: u16 = 0x0d;
/// Header type (8 bits, bit 7 = multi-function).
pub const PCI_HEADER_TYPE: u16 = 0x0e;
/// First base address register.
pub const PCI_BAR0: u16 = 0x10;
/// Subsystem vendor ID (16 bits).
pub const PCI_SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Subsystem ID (16 bits).
pub const PCI_SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM base address (not implemented: reads as zero).
pub const PCI_ROM_ADDRESS: u16 = 0x30;
/// Pointer to the first capability (8 bits).
pub const PCI_CAPABILITY_LIST: u16 = 0x34;
/// Interrupt line (8 bits, written by software).
pub const PCI_INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin (8 bits, 0 = none, 1..4 = INTA..INTD).
pub const PCI_INTERRUPT_PIN: u16 = 0x3d;
/// Where the capability list starts (first byte after the header).
pub const PCI_CAPABILITY_START: u16 = 0x40;

/// Command: respond to I/O space accesses.
pub const PCI_COMMAND_IO: u16 = 1 << 0;
/// Command: respond to memory space accesses.
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
/// Command: the function may master the bus (DMA, MSI).
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// Command: parity error response.
pub const PCI_COMMAND_PARITY: u16 = 1 << 6;
/// Command: SERR# enable.
pub const PCI_COMMAND_SERR: u16 = 1 << 8;
/// Command: INTx emulation disable.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The command bits a guest can change.
const COMMAND_WRITABLE: u16 = PCI_COMMAND_IO
    | PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_PARITY
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE;

/// Status: the function's INTx is asserted (read-only to the guest).
pub const PCI_STATUS_INTERRUPT: u16 = 1 << 3;
/// Status: a capability list is present at [`PCI_CAPABILITY_LIST`].
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
/// Status: master data parity error (write-1-to-clear).
pub const PCI_STATUS_MASTER_PARITY: u16 = 1 << 8;
/// Status: signaled target abort (write-1-to-clear).
pub const PCI_STATUS_SIG_TARGET_ABORT: u16 = 1 << 11;
/// Status: received target abort (write-1-to-clear).
pub const PCI_STATUS_REC_TARGET_ABORT: u16 = 1 << 12;
/// Status: received master abort (write-1-to-clear).
pub const PCI_STATUS_REC_MASTER_ABORT: u16 = 1 << 13;
/// Status: signaled system error (write-1-to-clear).
pub const PCI_STATUS_SIG_SYSTEM_ERROR: u16 = 1 << 14;
/// Status: detected parity error (write-1-to-clear).
pub const PCI_STATUS_DETECTED_PARITY: u16 = 1 << 15;
/// The status bits a guest clears by writing ones.
const STATUS_W1C: u16 = PCI_STATUS_MASTER_PARITY
    | PCI_STATUS_SIG_TARGET_ABORT
    | PCI_STATUS_REC_TARGET_ABORT
    | PCI_STATUS_REC_MASTER_ABORT
    | PCI_STATUS_SIG_SYSTEM_ERROR
    | PCI_STATUS_DETECTED_PARITY;

/// Header type 0 (a normal function).
pub const PCI_HEADER_TYPE_NORMAL: u8 = 0x00;
/// Header type bit 7: the device has more than one function.
pub const PCI_HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;
/// Interrupt line value meaning "not connected / unknown".
pub const PCI_INTERRUPT_LINE_NONE: u8 = 0xff;

/// Errors while describing a function's configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    /// BAR index beyond 5 (or beyond 4 for a 64-bit BAR).
    #[error("BAR index {0} is out of range (a 64-bit BAR needs two of the six slots)")]
    BarIndex(u8),
    /// BAR size is not a power of two, or outside the limits of its kind.
    #[error("invalid size {size:#x} for BAR {index}")]
    BarSize {
        /// BAR index.
        index: u8,
        /// Requested size.
        size: u64,
    },
    /// The BAR slot (or the upper half of a 64-bit BAR) is already used.
    #[error("BAR {0} is already in use")]
    BarInUse(u8),
    /// No BAR was declared at this index.
    #[error("BAR {0} is not declared")]
    BarNotDeclared(u8),
    /// The address is not aligned to the BAR size or does not fit the BAR.
    #[error("address {addr:#x} is invalid for BAR {index}")]
    BarAddress {
        /// BAR index.
        index: u8,
        /// Rejected address.
        addr: u64,
    },
    /// The capability does not fit in the conventional configuration space.
    #[error("no room for a {len}-byte capability in configuration space")]
    CapabilitySpace {
        /// Capability length including its 2-byte header.
        len: usize,
    },
    /// The writable mask of a capability is not the size of its body.
    #[error("capability mask has {mask} bytes but the body has {body}")]
    CapabilityMask {
        /// Mask length.
        mask: usize,
        /// Body length.
        body: usize,
    },
    /// A raw (device-side) access falls outside configuration space.
    #[error("configuration access at {offset:#x}+{len} is out of range")]
    OutOfRange {
        /// Byte offset.
        offset: usize,
        /// Access length.
        len: usize,
    },
}

/// The identity of a function: what goes into its type 0 header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// Base class code.
    pub class_code: u8,
    /// Sub-class code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Sets the multi-function bit of the header type.
    pub multifunction: bool,
}

/// Splits a guest access into (dword index, byte-enable mask, shift) if it
/// is 1, 2 or 4 bytes long, inside one dword and inside configuration space.
pub(crate) fn decode_access(offset: usize, len: usize) -> Option<(usize, u32, u32)> {
    if !matches!(len, 1 | 2 | 4) || offset % 4 + len > 4 || offset >= PCI_CONFIG_SPACE_SIZE {
        return None;
    }
    let shift = (offset % 4) as u32 * 8;
    let bytes = if len == 4 {
        u32::MAX
    } else {
        (1u32 << (len * 8)) - 1
    };
    Some((offset / 4, bytes << shift, shift))
}

/// Configuration space of one PCI function. See the module documentation.
#[derive(Clone)]
pub struct PciConfiguration {
    pub(crate) regs: Box<[u32; NUM_CONFIG_REGISTERS]>,
    pub(crate) writable: Box<[u32; NUM_CONFIG_REGISTERS]>,
    w1c: Box<[u32; NUM_CONFIG_REGISTERS]>,
    pub(crate) bars: [BarSlot; NUM_BARS],
    /// Per BAR register: the last guest write to it was the all-ones
    /// sizing pattern.
    pub(crate) sizing: [bool; NUM_BARS],
    last_capability: Option<u16>,
    next_capability: u16,
}

impl std::fmt::Debug for PciConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfiguration")
            .field(
                "vendor_id",
                &format_args!("{:#06x}", self.read_u16(PCI_VENDOR_ID)),
            )
            .field(
                "device_id",
                &format_args!("{:#06x}", self.read_u16(PCI_DEVICE_ID)),
            )
            .field("command", &format_args!("{:#06x}", self.command()))
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl PciConfiguration {
    /// A configuration space with the given header, no BARs, no
    /// capabilities and no interrupt pin.
    pub fn new(header: &PciHeader) -> Self {
        let mut cfg = Self {
            regs: Box::new([0; NUM_CONFIG_REGISTERS]),
            writable: Box::new([0; NUM_CONFIG_REGISTERS]),
            w1c: Box::new([0; NUM_CONFIG_REGISTERS]),
            bars: [BarSlot::Unused; NUM_BARS],
            sizing: [false; NUM_BARS],
            last_capability: None,
            next_capability: PCI_CAPABILITY_START,
        };
        let header_type = if header.multifunction {
            PCI_HEADER_TYPE_NORMAL | PCI_HEADER_TYPE_MULTIFUNCTION
        } else {
            PCI_HEADER_TYPE_NORMAL
        };
        cfg.set_u16(PCI_VENDOR_ID, header.vendor_id);
        cfg.set_u16(PCI_DEVICE_ID, header.device_id);
        cfg.set_u8(PCI_REVISION_ID, header.revision_id);
        cfg.set_u8(PCI_CLASS_PROG, header.prog_if);
        cfg.set_u8(PCI_SUBCLASS, header.subclass);
        cfg.set_u8(PCI_CLASS_CODE, header.class_code);
        cfg.set_u8(PCI_HEADER_TYPE, header_type);
        cfg.set_u16(PCI_SUBSYSTEM_VENDOR_ID, header.subsystem_vendor_id);
        cfg.set_u16(PCI_SUBSYSTEM_ID, header.subsystem_id);
        cfg.set_u8(PCI_INTERRUPT_LINE, PCI_INTERRUPT_LINE_NONE);

        cfg.set_mask_u16(PCI_COMMAND, COMMAND_WRITABLE);
        let status_reg = usize::from(PCI_STATUS / 4);
        cfg.w1c[status_reg] = u32::from(STATUS_W1C) << 16;
        // Cache line size and latency timer are plain read/write bytes.
        cfg.set_mask_u16(PCI_CACHE_LINE_SIZE, 0xffff);
        cfg.set_mask_u8(PCI_INTERRUPT_LINE, 0xff);
        cfg
    }

    // ---- raw, device-side helpers (no masks) ------------------------------

    fn set_u8(&mut self, offset: u16, v: u8) {
        self.set_raw(offset, &[v]).expect("header offset in range");
    }

    fn set_u16(&mut self, offset: u16, v: u16) {
        self.set_raw(offset, &v.to_le_bytes())
            .expect("header offset in range");
    }

    fn set_mask_u8(&mut self, offset: u16, mask: u8) {
        set_bytes(&mut self.writable[..], usize::from(offset), &[mask]);
    }

    fn set_mask_u16(&mut self, offset: u16, mask: u16) {
        set_bytes(
            &mut self.writable[..],
            usize::from(offset),
            &mask.to_le_bytes(),
        );
    }

    /// Device-side write of any bytes, bypassing the guest masks (e.g. to
    /// update a read-only field of a capability).
    pub fn set_raw(&mut self, offset: u16, data: &[u8]) -> Result<(), PciConfigError> {
        let start = usize::from(offset);
        if start
            .checked_add(data.len())
            .is_none_or(|end| end > PCI_CONFIG_SPACE_SIZE)
        {
            return Err(PciConfigError::OutOfRange {
                offset: start,
                len: data.len(),
            });
        }
        set_bytes(&mut self.regs[..], start, data);
        Ok(())
    }

    /// Reads the byte at `offset` (all-ones beyond configuration space).
    pub fn read_u8(&self, offset: u16) -> u8 {
        let mut b = [0u8; 1];
        self.read(offset, &mut b);
        b[0]
    }

    /// Reads the 16-bit value at `offset` (all-ones if the access is invalid).
    pub fn read_u16(&self, offset: u16) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// Reads dword register `reg` (register index, not byte offset: the
    /// register at byte offset `4 * reg`). All-ones beyond 4 KiB.
    pub fn read_dword(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    // ---- guest accesses ----------------------------------------------------

    /// Guest read of 1, 2 or 4 bytes at `offset`, within one dword. Any
    /// other access (bad size, crossing a dword, beyond 4 KiB) reads as
    /// all-ones.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        match decode_access(usize::from(offset), data.len()) {
            Some((reg, _, shift)) => {
                let v = (self.regs[reg] >> shift).to_le_bytes();
                data.copy_from_slice(&v[..data.len()]);
            }
            None => data.fill(0xff),
        }
    }

    /// Guest write of 1, 2 or 4 bytes at `offset`, within one dword.
    ///
    /// Read-only bits keep their value, write-1-to-clear bits are cleared
    /// where the guest writes ones, invalid accesses are ignored. Returns
    /// the change when the write moved a BAR (see [`BarChange`]).
    pub fn write(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let (reg, bytes, shift) = decode_access(usize::from(offset), data.len())?;
        let mut buf = [0u8; 4];
        buf[..data.len()].copy_from_slice(data);
        let val = u32::from_le_bytes(buf) << shift;

        let old = self.regs[reg];
        let writable = self.writable[reg] & bytes;
        let clear = self.w1c[reg] & bytes & val;
        self.regs[reg] = (old & !writable & !clear) | (val & writable);

        let bar_reg = reg.checked_sub(usize::from(PCI_BAR0 / 4))?;
        if bar_reg < NUM_BARS {
            self.sizing[bar_reg] = data.iter().all(|b| *b == 0xff);
            return self.bar_register_written(bar_reg);
        }
        None
    }

    // ---- command / status / interrupt --------------------------------------

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(PCI_COMMAND)
    }

    /// Whether the I/O space enable bit is set.
    pub fn io_space_enabled(&self) -> bool {
        self.command() & PCI_COMMAND_IO != 0
    }

    /// Whether the memory space enable bit is set.
    pub fn memory_space_enabled(&self) -> bool {
        self.command() & PCI_COMMAND_MEMORY != 0
    }

    /// Whether the bus master enable bit is set.
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & PCI_COMMAND_MASTER != 0
    }

    /// Whether the guest disabled INTx assertion.
    pub fn intx_disabled(&self) -> bool {
        self.command() & PCI_COMMAND_INTX_DISABLE != 0
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        self.read_u16(PCI_STATUS)
    }

    /// Sets or clears the status register's interrupt status bit (device
    /// side; the guest cannot write it).
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let status = if asserted {
            self.status() | PCI_STATUS_INTERRUPT
        } else {
            self.status() & !PCI_STATUS_INTERRUPT
        };
        self.set_u16(PCI_STATUS, status);
    }

    /// Whether the interrupt status bit is set.
    pub fn interrupt_status(&self) -> bool {
        self.status() & PCI_STATUS_INTERRUPT != 0
    }

    /// Sets the (read-only) interrupt pin register.
    pub fn set_interrupt_pin(&mut self, pin: Option<IntxPin>) {
        self.set_u8(PCI_INTERRUPT_PIN, pin.map_or(0, IntxPin::register_value));
    }

    /// The interrupt pin the function uses, if any.
    pub fn interrupt_pin(&self) -> Option<IntxPin> {
        IntxPin::from_register_value(self.read_u8(PCI_INTERRUPT_PIN))
    }

    /// Sets the interrupt line register (the GSI, as firmware would).
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.set_u8(PCI_INTERRUPT_LINE, line);
    }

    /// The interrupt line register.
    pub fn interrupt_line(&self) -> u8 {
        self.read_u8(PCI_INTERRUPT_LINE)
    }

    // ---- capabilities ------------------------------------------------------

    /// Appends a read-only capability with ID `cap_id` whose bytes after
    /// the 2-byte header (ID, next pointer) are `body`. Returns the
    /// capability's offset in configuration space.
    pub fn add_capability(&mut self, body: &[u8], cap_id: u8) -> Result<u16, PciConfigError> {
        self.add_capability_with_mask(body, cap_id, &vec![0; body.len()])
    }

    /// Like [`Self::add_capability`], with `writable` (same length as
    /// `body`) giving the bits of the body the guest may change.
    pub fn add_capability_with_mask(
        &mut self,
        body: &[u8],
        cap_id: u8,
        writable: &[u8],
    ) -> Result<u16, PciConfigError> {
        if writable.len() != body.len() {
            return Err(PciConfigError::CapabilityMask {
                mask: writable.len(),
                body: body.len(),
            });
        }
        let len = body.len() + 2;
        let offset = self.next_capability;
        let end = usize::from(offset) + len;
        if end > PCI_CONVENTIONAL_CONFIG_SIZE {
            return Err(PciConfigError::CapabilitySpace { len });
        }
        let start = usize::from(offset);
        set_bytes(&mut self.regs[..], start, &[cap_id, 0]);
        set_bytes(&mut self.regs[..], start + 2, body);
        set_bytes(&mut self.writable[..], start + 2, writable);

        // Cap offsets are < 0x100, so they fit the 8-bit pointers.
        let pointer = match self.last_capability {
            Some(prev) => prev + 1,
            None => PCI_CAPABILITY_LIST,
        };
        self.set_u8(pointer, offset as u8);
        self.set_u16(PCI_STATUS, self.status() | PCI_STATUS_CAP_LIST);
        self.last_capability = Some(offset);
        // Keep the next capability dword aligned.
        self.next_capability = (end.div_ceil(4) * 4) as u16;
        Ok(offset)
    }

    /// Offset of the first capability with ID `cap_id`, walking the list
    /// as a guest would (bounded, so a corrupt list cannot loop).
    pub fn find_capability(&self, cap_id: u8) -> Option<u16> {
        if self.status() & PCI_STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut ptr = u16::from(self.read_u8(PCI_CAPABILITY_LIST) & !3);
        for _ in 0..48 {
            if ptr < PCI_CAPABILITY_START {
                return None;
            }
            if self.read_u8(ptr) == cap_id {
                return Some(ptr);
            }
            ptr = u16::from(self.read_u8(ptr + 1) & !3);
        }
        None
    }
}

/// Writes `data` as little-endian bytes into a dword array at byte `offset`.
/// The caller guarantees the range is inside the array.
pub(crate) fn set_bytes(regs: &mut [u32], offset: usize, data: &[u8]) {
    for (i, b) in data.iter().enumerate() {
        let pos = offset + i;
        let shift = (pos % 4) * 8;
        let r = &mut regs[pos / 4];
        *r = (*r & !(0xff << shift)) | (u32::from(*b) << shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            revision_id: 1,
            class_code: 0x02,
            subclass: 0x00,
            prog_if: 0x00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x0001,
            multifunction: false,
        }
    }

    #[test]
    fn header_fields() {
        let cfg = PciConfiguration::new(&header());
        assert_eq!(cfg.read_dword(0), 0x1041_1af4);
        assert_eq!(cfg.read_dword(2), 0x0200_0001);
        assert_eq!(cfg.read_u8(PCI_HEADER_TYPE), 0);
        assert_eq!(cfg.read_dword(0x2c / 4), 0x0001_1af4);
        assert_eq!(cfg.interrupt_line(), PCI_INTERRUPT_LINE_NONE);
        assert_eq!(cfg.interrupt_pin(), None);
        assert_eq!(cfg.read_u8(PCI_CAPABILITY_LIST), 0);
        let mf = PciConfiguration::new(&PciHeader {
            multifunction: true,
            ..header()
        });
        assert_eq!(mf.read_u8(PCI_HEADER_TYPE), 0x80);
    }

    #[test]
    fn sub_dword_reads() {
        let cfg = PciConfiguration::new(&header());
        let mut b = [0u8; 1];
        cfg.read(1, &mut b);
        assert_eq!(b, [0x1a]);
        let mut w = [0u8; 2];
        cfg.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1041);
        // A word at offset 1 stays inside the dword: allowed.
        cfg.read(1, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x411a);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut cfg = PciConfiguration::new(&header());
        assert_eq!(cfg.write(PCI_VENDOR_ID, &[0, 0, 0, 0]), None);
        assert_eq!(cfg.read_dword(0), 0x1041_1af4);
        cfg.write(PCI_CLASS_PROG, &[0x55]);
        cfg.write(PCI_HEADER_TYPE, &[0x81]);
        cfg.write(PCI_INTERRUPT_PIN, &[3]);
        cfg.write(PCI_ROM_ADDRESS, &u32::MAX.to_le_bytes());
        assert_eq!(cfg.read_u8(PCI_CLASS_PROG), 0);
        assert_eq!(cfg.read_u8(PCI_HEADER_TYPE), 0);
        assert_eq!(cfg.interrupt_pin(), None);
        assert_eq!(cfg.read_dword(usize::from(PCI_ROM_ADDRESS / 4)), 0);
        // Extended space is read-only zero.
        cfg.write(0x100, &u32::MAX.to_le_bytes());
        assert_eq!(cfg.read_dword(0x40), 0);
    }

    #[test]
    fn command_register_mask() {
        let mut cfg = PciConfiguration::new(&header());
        cfg.write(PCI_COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(cfg.command(), COMMAND_WRITABLE);
        assert!(cfg.io_space_enabled());
        assert!(cfg.memory_space_enabled());
        assert!(cfg.bus_master_enabled());
        assert!(cfg.intx_disabled());
        cfg.write(PCI_COMMAND, &[0x02]);
        // Only the low byte was written: SERR and INTx disable stay set.
        assert_eq!(
            cfg.command(),
            PCI_COMMAND_MEMORY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE
        );
        // A dword write at 0x04 touches command and status at once.
        cfg.write(PCI_COMMAND, &0x0000_0001u32.to_le_bytes());
        assert_eq!(cfg.command(), PCI_COMMAND_IO);
    }

    #[test]
    fn status_write_one_to_clear() {
        let mut cfg = PciConfiguration::new(&header());
        cfg.set_raw(
            PCI_STATUS,
            &(PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_DETECTED_PARITY).to_le_bytes(),
        )
        .unwrap();
        cfg.set_interrupt_status(true);
        // Writing zeros changes nothing; ones clear only W1C bits.
        cfg.write(PCI_STATUS, &[0, 0]);
        assert_ne!(cfg.status() & PCI_STATUS_REC_MASTER_ABORT, 0);
        cfg.write(PCI_STATUS, &PCI_STATUS_REC_MASTER_ABORT.to_le_bytes());
        assert_eq!(cfg.status() & PCI_STATUS_REC_MASTER_ABORT, 0);
        assert_ne!(cfg.status() & PCI_STATUS_DETECTED_PARITY, 0);
        // The interrupt status bit is not W1C and not writable.
        cfg.write(PCI_STATUS, &0xffffu16.to_le_bytes());
        assert_eq!(cfg.status(), PCI_STATUS_INTERRUPT);
        assert!(cfg.interrupt_status());
        // A command write with the status bytes zero leaves status alone.
        cfg.set_raw(PCI_STATUS, &PCI_STATUS_REC_TARGET_ABORT.to_le_bytes())
            .unwrap();
        cfg.write(PCI_COMMAND, &0x0000_0002u32.to_le_bytes());
        assert_eq!(cfg.status(), PCI_STATUS_REC_TARGET_ABORT);
        cfg.set_interrupt_status(false);
        assert!(!cfg.interrupt_status());
    }

    #[test]
    fn interrupt_line_and_pin() {
        let mut cfg = PciConfiguration::new(&header());
        cfg.set_interrupt_pin(Some(IntxPin::IntB));
        assert_eq!(cfg.read_u8(PCI_INTERRUPT_PIN), 2);
        assert_eq!(cfg.interrupt_pin(), Some(IntxPin::IntB));
        cfg.write(PCI_INTERRUPT_LINE, &[17]);
        assert_eq!(cfg.interrupt_line(), 17);
        cfg.write(PCI_INTERRUPT_LINE, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cfg.interrupt_line(), 0xff);
        assert_eq!(cfg.interrupt_pin(), Some(IntxPin::IntB));
    }

    #[test]
    fn cache_line_and_latency_are_writable() {
        let mut cfg = PciConfiguration::new(&header());
        cfg.write(PCI_CACHE_LINE_SIZE, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cfg.read_dword(3), 0x0000_ffff);
    }

    #[test]
    fn invalid_accesses_do_not_panic() {
        let mut cfg = PciConfiguration::new(&header());
        let before = cfg.regs.clone();
        for len in [0usize, 3, 5, 8] {
            let mut buf = vec![0u8; len];
            cfg.read(0, &mut buf);
            assert!(buf.iter().all(|b| *b == 0xff), "len {len}");
            assert_eq!(cfg.write(PCI_COMMAND, &vec![0xff; len]), None);
        }
        // Crossing a dword boundary.
        let mut w = [0u8; 2];
        cfg.read(3, &mut w);
        assert_eq!(w, [0xff; 2]);
        cfg.write(PCI_COMMAND + 1, &[0xff; 4]);
        cfg.write(PCI_COMMAND + 3, &[0xff; 2]);
        // Beyond 4 KiB.
        let mut d = [0u8; 4];
        cfg.read(0x1000, &mut d);
        assert_eq!(d, [0xff; 4]);
        cfg.read(u16::MAX, &mut d);
        assert_eq!(d, [0xff; 4]);
        cfg.write(0x1000, &[1, 2, 3, 4]);
        cfg.write(u16::MAX, &[1]);
        assert_eq!(cfg.read_dword(NUM_CONFIG_REGISTERS), u32::MAX);
        assert_eq!(cfg.read_dword(usize::MAX), u32::MAX);
        assert_eq!(cfg.regs, before);
        // The last byte of the space is addressable.
        cfg.read(0xfff, &mut d[..1]);
        assert_eq!(d[0], 0);
        assert!(cfg.set_raw(0xffe, &[1, 2, 3]).is_err());
        assert!(cfg.set_raw(0xffc, &[1, 2, 3, 4]).is_ok());
    }

    #[test]
    fn capability_chain() {
        let mut cfg = PciConfiguration::new(&header());
        assert_eq!(cfg.status() & PCI_STATUS_CAP_LIST, 0);
        assert_eq!(cfg.find_capability(0x09), None);
        let a = cfg.add_capability(&[1, 2, 3], 0x09).unwrap();
        assert_eq!(a, 0x40);
        assert_ne!(cfg.status() & PCI_STATUS_CAP_LIST, 0);
        assert_eq!(cfg.read_u8(PCI_CAPABILITY_LIST), 0x40);
        // 5 bytes rounded up to 8: next one is dword aligned.
        let b = cfg.add_capability(&[0xaa; 6], 0x11).unwrap();
        assert_eq!(b, 0x48);
        assert_eq!(cfg.read_dword(0x40 / 4), 0x0201_4809);
        assert_eq!(cfg.read_u8(0x44), 3);
        assert_eq!(cfg.read_u8(0x49), 0);
        assert_eq!(cfg.find_capability(0x11), Some(0x48));
        assert_eq!(cfg.find_capability(0x09), Some(0x40));
        assert_eq!(cfg.find_capability(0x05), None);
        // Read-only: header and body ignore writes.
        cfg.write(0x40, &[0xff; 4]);
        cfg.write(0x48, &[0; 4]);
        assert_eq!(cfg.read_dword(0x40 / 4), 0x0201_4809);
        assert_eq!(cfg.read_dword(0x48 / 4), 0xaaaa_0011);
    }

    #[test]
    fn capability_writable_mask() {
        let mut cfg = PciConfiguration::new(&header());
        let off = cfg
            .add_capability_with_mask(&[0x00, 0x00, 0x12], 0x05, &[0xf0, 0x00, 0x01])
            .unwrap();
        cfg.write(off, &[0xff; 4]);
        assert_eq!(cfg.read_dword(usize::from(off / 4)), 0x00f0_0005);
        cfg.write(off + 4, &[0xff]);
        assert_eq!(cfg.read_u8(off + 4), 0x13);
        assert_eq!(
            cfg.add_capability_with_mask(&[0; 2], 0x05, &[0]),
            Err(PciConfigError::CapabilityMask { mask: 1, body: 2 })
        );
    }

    #[test]
    fn capability_space_runs_out() {
        let mut cfg = PciConfiguration::new(&header());
        // 0x40..0x100 holds 192 bytes: three 64-byte capabilities.
        for _ in 0..3 {
            cfg.add_capability(&[0; 62], 0x09).unwrap();
        }
        assert_eq!(
            cfg.add_capability(&[], 0x09),
            Err(PciConfigError::CapabilitySpace { len: 2 })
        );
        let mut other = PciConfiguration::new(&header());
        assert!(other.add_capability(&[0; 300], 0x09).is_err());
        assert_eq!(other.read_u8(PCI_CAPABILITY_LIST), 0);
    }

    #[test]
    fn find_capability_survives_a_loop() {
        let mut cfg = PciConfiguration::new(&header());
        let off = cfg.add_capability(&[0, 0], 0x09).unwrap();
        // Corrupt the list into a self-loop (device side).
        cfg.set_raw(off + 1, &[off as u8]).unwrap();
        assert_eq!(cfg.find_capability(0x10), None);
    }
}
