//! A descriptor ring as the guest programmed it (base, length, head,
//! tail), checked before use.

use vm_memory::GuestAddress;

use super::regs::DESC_LEN;
use super::state::Regs;

/// A validated snapshot of one ring's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// Guest physical address of descriptor 0.
    pub base: u64,
    /// Number of descriptors (at least 1).
    pub count: u32,
    /// Next descriptor the device uses.
    pub head: u32,
    /// One past the last descriptor software handed over.
    pub tail: u32,
}

impl Ring {
    /// Reads the ring whose base-low register is at `bal` (then base high,
    /// length, head and tail at +4, +8, +0x10, +0x18). `None` for a ring
    /// the device cannot use: zero length, or head or tail beyond it.
    pub fn from_regs(regs: &Regs, bal: u32) -> Option<Ring> {
        let base = (u64::from(regs.get(bal + 4)) << 32) | u64::from(regs.get(bal));
        let count = regs.get(bal + 8) / DESC_LEN as u32;
        let head = regs.get(bal + 0x10);
        let tail = regs.get(bal + 0x18);
        (count > 0 && head < count && tail < count).then_some(Ring {
            base,
            count,
            head,
            tail,
        })
    }

    /// Address of descriptor `i`; `None` if it overflows the address space.
    pub fn desc(&self, i: u32) -> Option<GuestAddress> {
        u64::from(i)
            .checked_mul(DESC_LEN)
            .and_then(|o| self.base.checked_add(o))
            .map(GuestAddress)
    }

    /// The index after `i`.
    pub fn next(&self, i: u32) -> u32 {
        if i + 1 >= self.count {
            0
        } else {
            i + 1
        }
    }

    /// Descriptors from `from` up to the tail (owned by the device).
    pub fn pending_from(&self, from: u32) -> u32 {
        (self.tail + self.count - from) % self.count
    }
}
