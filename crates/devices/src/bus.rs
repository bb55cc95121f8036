//! Address-range dispatch for port I/O and MMIO exits.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A device that decodes accesses to a range of the I/O or memory space.
///
/// Methods take `&self` so that a device can be reached from several vCPU
/// threads and from the event loop; each device keeps its own lock.
pub trait BusDevice: Send + Sync {
    /// Guest read of `data.len()` bytes at `offset` from the start of the
    /// range the device was registered with (whose start is `base`).
    fn read(&self, base: u64, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` into the range starting at `base`.
    fn write(&self, base: u64, offset: u64, data: &[u8]);
}

/// Errors when registering a device on a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range has zero length or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange { base: u64, len: u64 },
    /// The range overlaps one that is already registered.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<dyn BusDevice>,
}

/// A set of non-overlapping address ranges, each served by one device.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `device` for `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        if let Some((b, e)) = self.ranges.range(..end).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the device registered at exactly `base`.
    pub fn remove(&mut self, base: u64) -> bool {
        self.ranges.remove(&base).is_some()
    }

    fn lookup(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(size as u64)? <= entry.len).then_some((*base, entry))
    }

    /// Dispatches a read. Returns false (and fills `data` with all-ones, as
    /// an unclaimed bus does) when no device decodes the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((base, e)) => {
                e.device.read(base, addr - base, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write. Returns false when no device decodes the address
    /// (the write is dropped, as on real hardware).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.lookup(addr, data.len()) {
            Some((base, e)) => {
                e.device.write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, u64, Vec<u8>)>>);
    impl BusDevice for Recorder {
        fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, base: u64, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::new();
        let dev = Arc::new(Recorder::default());
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert_eq!(
            bus.insert(0x3f0, 9, dev.clone()),
            Err(BusError::Overlap {
                base: 0x3f0,
                len: 9
            })
        );
        assert_eq!(
            bus.insert(0x3ff, 1, dev.clone()),
            Err(BusError::Overlap {
                base: 0x3ff,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(0x10, 0, dev.clone()),
            Err(BusError::InvalidRange { base: 0x10, len: 0 })
        );
        assert!(bus.insert(u64::MAX, 2, dev.clone()).is_err());
        bus.insert(0x400, 1, dev.clone()).unwrap();

        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f9, &[7]));
        assert_eq!(dev.0.lock().unwrap()[0], (0x3f8, 1, vec![7]));
        // Unclaimed: all-ones, and an access straddling the end of a range.
        assert!(!bus.read(0x500, &mut b));
        assert_eq!(b, [0xff]);
        let mut w = [0u8; 4];
        assert!(!bus.read(0x3fe, &mut w));
        assert_eq!(w, [0xff; 4]);
        assert!(bus.remove(0x3f8));
        assert!(!bus.write(0x3f8, &[1]));
    }
}
