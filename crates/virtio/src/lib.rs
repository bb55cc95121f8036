//! virtio 1.x for tapir. A virtio device ([`VirtioDevice`]) knows nothing
//! of PCI; the PCI transport ([`pci::VirtioPciDevice`]) presents any device
//! to the guest as a modern virtio-pci function.

pub mod avail;
pub mod device;
pub mod pci;
pub mod used;

pub use device::{
    ActivateError, ActiveQueue, IoEventRegistry, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
pub use pci::{VirtioPciDevice, VirtioPciError};
