//! virtio-blk for tapir: a disk image offered to the guest as a virtio
//! 1.x block device on tapir's virtio-pci transport (tapir-virtio).
//!
//! - [`request`]: one request, parsed from its descriptor chain and run
//!   against a backend; pure (guest memory and a backend in, status out).
//! - [`queue`]: the request queue: takes, runs and completes chains and
//!   decides interrupts; pure.
//! - [`backend`]: where sectors live ([`DiskBackend`]): a raw image file,
//!   an in-memory disk for tests.
//! - [`device`]: the [`tapir_virtio::VirtioDevice`] (features, config
//!   space, activation).
//! - [`worker`]: the event glue, the one place with a thread and fds.

pub mod backend;
pub mod device;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod queue;
pub mod request;
pub mod worker;

pub use backend::{DiskBackend, MemDisk, OpenError, RawFile, SECTOR_SIZE};
pub use device::{BlockConfig, VirtioBlk};
pub use worker::{DiskThreads, ThreadStart};

#[cfg(test)]
mod tests;
