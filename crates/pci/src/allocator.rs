//! A bump allocator for BAR addresses inside one window.
//!
//! Devices are only ever added (there is no hot-unplug), so a bump pointer
//! is enough. Each allocation is naturally aligned (aligned to its size, as
//! BAR decoding requires); the segment allocates a device's BARs largest
//! first so that alignment padding stays small.

/// Hands out naturally aligned ranges of `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RangeAllocator {
    /// First address not yet handed out (`None`: the window is used up
    /// to the top of the 64-bit space).
    next: Option<u64>,
    /// One past the last address of the window (`None`: the window ends
    /// at the top of the 64-bit space).
    end: Option<u64>,
}

impl RangeAllocator {
    /// An allocator for `size` bytes at `base`. The caller has checked the
    /// window does not wrap.
    pub(crate) fn new(base: u64, size: u64) -> Self {
        Self {
            next: Some(base),
            end: base.checked_add(size),
        }
    }

    /// Allocates `size` bytes aligned to `size` (a power of two).
    pub(crate) fn allocate(&mut self, size: u64) -> Option<u64> {
        if !size.is_power_of_two() {
            return None;
        }
        let addr = self.next?.checked_next_multiple_of(size)?;
        let last = addr.checked_add(size - 1)?;
        if self.end.is_some_and(|end| last >= end) {
            return None;
        }
        self.next = last.checked_add(1);
        Some(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_alignment_and_exhaustion() {
        let mut a = RangeAllocator::new(0xc000_0000, 0x10_0000);
        assert_eq!(a.allocate(0x1000), Some(0xc000_0000));
        assert_eq!(a.allocate(0x10), Some(0xc000_1000));
        // Padding to the next 64 KiB boundary.
        assert_eq!(a.allocate(0x1_0000), Some(0xc001_0000));
        assert_eq!(a.allocate(0x4_0000), Some(0xc004_0000));
        assert_eq!(a.allocate(0x8_0000), Some(0xc008_0000));
        // The window is used up exactly.
        assert_eq!(a.allocate(0x8_0000), None);
        assert_eq!(a.allocate(0x10), None);
        assert_eq!(a.allocate(0), None);
        assert_eq!(a.allocate(24), None);
    }

    #[test]
    fn unaligned_base_and_empty_window() {
        let mut a = RangeAllocator::new(0xc010, 0x3ff0);
        assert_eq!(a.allocate(0x100), Some(0xc100));
        assert_eq!(a.allocate(0x1000), Some(0xd000));
        let mut empty = RangeAllocator::new(0x1000, 0);
        assert_eq!(empty.allocate(4), None);
    }

    #[test]
    fn top_of_address_space() {
        let mut a = RangeAllocator::new(u64::MAX - 0xfff, 0x1000);
        assert_eq!(a.allocate(0x1000), Some(u64::MAX - 0xfff));
        assert_eq!(a.allocate(0x10), None);
        assert_eq!(a.allocate(1), None);
        let mut b = RangeAllocator::new(1 << 63, 1 << 63);
        assert_eq!(b.allocate(1 << 62), Some(1 << 63));
        assert_eq!(b.allocate(1 << 62), Some(3 << 62));
        assert_eq!(b.allocate(16), None);
    }
}
