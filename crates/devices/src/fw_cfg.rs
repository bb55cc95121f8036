//! QEMU's firmware configuration interface (fw_cfg), traditional I/O-port
//! form only: a 16-bit selector at 0x510 and an 8-bit data port at 0x511.
//! tapir offers the few items tiny test kernels read (kvm-unit-tests' SMP
//! and memory set-up): the signature, the interface ID (no DMA), RAM size,
//! and the CPU counts. Reading past an item's end, or an unknown item,
//! gives 0, as QEMU does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{lock, BusDevice};

/// The selector port (first port of the range).
pub const PORT_BASE: u16 = 0x510;
/// Ports decoded: selector (offset 0) and data (offset 1).
pub const PORT_LEN: u16 = 2;
/// Offset of the 16-bit selector register.
pub const SELECTOR_OFFSET: u64 = 0;
/// Offset of the 8-bit data register.
pub const DATA_OFFSET: u64 = 1;

/// Item: the 4-byte signature "QEMU".
pub const KEY_SIGNATURE: u16 = 0x0000;
/// Item: interface feature bits (u32).
pub const KEY_ID: u16 = 0x0001;
/// Item: guest RAM in bytes (u64).
pub const KEY_RAM_SIZE: u16 = 0x0003;
/// Item: number of boot CPUs (u16).
pub const KEY_NB_CPUS: u16 = 0x0005;
/// Item: most CPUs the machine can have (u16).
pub const KEY_MAX_CPUS: u16 = 0x000f;

/// The signature's bytes.
pub const SIGNATURE: &[u8; 4] = b"QEMU";
/// FW_CFG_ID bit 0: the traditional (port) interface.
pub const ID_TRADITIONAL: u32 = 1 << 0;
/// FW_CFG_ID bit 1: the DMA interface (not offered).
pub const ID_DMA: u32 = 1 << 1;

/// What the machine tells the guest through fw_cfg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwCfgInfo {
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// vCPUs started.
    pub nb_cpus: u16,
    /// vCPUs the machine can have (tapir: the same, no hotplug).
    pub max_cpus: u16,
}

#[derive(Default)]
struct Cursor {
    key: u16,
    offset: usize,
}

/// The fw_cfg device.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    cursor: Mutex<Cursor>,
}

impl FwCfg {
    /// A device offering `info`.
    pub fn new(info: FwCfgInfo) -> Self {
        let items = BTreeMap::from([
            (KEY_SIGNATURE, SIGNATURE.to_vec()),
            (KEY_ID, ID_TRADITIONAL.to_le_bytes().to_vec()),
            (KEY_RAM_SIZE, info.ram_size.to_le_bytes().to_vec()),
            (KEY_NB_CPUS, info.nb_cpus.to_le_bytes().to_vec()),
            (KEY_MAX_CPUS, info.max_cpus.to_le_bytes().to_vec()),
        ]);
        Self {
            items,
            cursor: Mutex::new(Cursor::default()),
        }
    }

    fn next_byte(&self, c: &mut Cursor) -> u8 {
        let b = self
            .items
            .get(&c.key)
            .and_then(|item| item.get(c.offset))
            .copied()
            .unwrap_or(0);
        c.offset = c.offset.saturating_add(1);
        b
    }
}

impl BusDevice for FwCfg {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        if offset != DATA_OFFSET {
            data.fill(0);
            return;
        }
        let mut c = lock(&self.cursor);
        for b in data.iter_mut() {
            *b = self.next_byte(&mut c);
        }
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        // Writes to the data port are ignored (QEMU dropped them too).
        if offset != SELECTOR_OFFSET || data.is_empty() || data.len() > 2 {
            return;
        }
        let key = match data {
            [lo] => *lo as u16,
            [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
            [] => return,
        };
        *lock(&self.cursor) = Cursor { key, offset: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> FwCfg {
        FwCfg::new(FwCfgInfo {
            ram_size: 0x2000_0000,
            nb_cpus: 3,
            max_cpus: 3,
        })
    }

    fn read_item(d: &FwCfg, key: u16, len: usize) -> Vec<u8> {
        d.write(0x510, SELECTOR_OFFSET, &key.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut b = [0u8];
                d.read(0x510, DATA_OFFSET, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn items_read_byte_by_byte() {
        let d = dev();
        assert_eq!(read_item(&d, KEY_SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&d, KEY_ID, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&d, KEY_RAM_SIZE, 8), 0x2000_0000u64.to_le_bytes());
        assert_eq!(read_item(&d, KEY_NB_CPUS, 2), [3, 0]);
        assert_eq!(read_item(&d, KEY_MAX_CPUS, 2), [3, 0]);
        assert_eq!(ID_TRADITIONAL & ID_DMA, 0);
    }

    #[test]
    fn past_the_end_and_unknown_keys_read_zero() {
        let d = dev();
        assert_eq!(read_item(&d, KEY_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&d, 0x0019, 4), [0; 4]); // no file directory
        assert_eq!(read_item(&d, 0xffff, 2), [0; 2]);
    }

    #[test]
    fn selecting_again_restarts_and_other_ports_are_inert() {
        let d = dev();
        assert_eq!(read_item(&d, KEY_SIGNATURE, 2), b"QE");
        // An 8-bit selector write selects the low byte's key.
        d.write(0x510, SELECTOR_OFFSET, &[KEY_SIGNATURE as u8]);
        let mut b = [0u8; 2];
        d.read(0x510, DATA_OFFSET, &mut b[..1]);
        assert_eq!(b[0], b'Q');
        // Data-port writes and selector reads change nothing.
        d.write(0x510, DATA_OFFSET, &[0x55]);
        d.read(0x510, SELECTOR_OFFSET, &mut b);
        assert_eq!(b, [0, 0]);
        d.read(0x510, DATA_OFFSET, &mut b[..1]);
        assert_eq!(b[0], b'E');
        // A 4-byte selector write is not the selector's width: ignored.
        d.write(0x510, SELECTOR_OFFSET, &[5, 0, 0, 0]);
        d.read(0x510, DATA_OFFSET, &mut b[..1]);
        assert_eq!(b[0], b'M');
    }
}
