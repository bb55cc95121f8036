//! Per-slot counts of the guest accesses that reached the VMM: each one is
//! a VM exit to user space (port I/O or MMIO), so they show what a device
//! model costs in exits. Accesses KVM completes itself (ioeventfd kicks)
//! never get here and are not counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one slot.
#[derive(Debug, Default)]
pub struct AccessCounters {
    bar_reads: AtomicU64,
    bar_writes: AtomicU64,
    config_reads: AtomicU64,
    config_writes: AtomicU64,
}

/// A copy of [`AccessCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AccessSnapshot {
    /// Reads of the device's BARs (register reads).
    pub bar_reads: u64,
    /// Writes to the device's BARs (register writes).
    pub bar_writes: u64,
    /// Configuration-space reads.
    pub config_reads: u64,
    /// Configuration-space writes.
    pub config_writes: u64,
}

impl AccessSnapshot {
    /// Every counter with its name, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("bar_reads", self.bar_reads),
            ("bar_writes", self.bar_writes),
            ("config_reads", self.config_reads),
            ("config_writes", self.config_writes),
        ]
    }
}

impl AccessCounters {
    pub(crate) fn bar(&self, write: bool) {
        let c = if write {
            &self.bar_writes
        } else {
            &self.bar_reads
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn config(&self, write: bool) {
        let c = if write {
            &self.config_writes
        } else {
            &self.config_reads
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> AccessSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AccessSnapshot {
            bar_reads: g(&self.bar_reads),
            bar_writes: g(&self.bar_writes),
            config_reads: g(&self.config_reads),
            config_writes: g(&self.config_writes),
        }
    }
}
