//! Interrupt lines as seen by a device model.
//!
//! The VMM implements these with KVM irqfds; tests implement them with
//! counters. A device never knows which.

use std::io;

/// An edge-triggered interrupt line (ISA devices such as the UART, MSI).
pub trait EdgeIrq: Send + Sync {
    /// Sends one interrupt edge.
    fn trigger(&self) -> io::Result<()>;
}

/// A level-triggered interrupt line (PCI INTx).
///
/// The device sets the level of its output; the implementation takes care
/// of re-asserting the line after the guest's EOI while the level stays
/// high (KVM irqfd resampling).
pub trait LevelIrq: Send + Sync {
    /// Drives the line high (`true`) or low (`false`).
    fn set_level(&self, high: bool) -> io::Result<()>;
}
