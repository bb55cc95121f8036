//! NIC models of tapir and the generic worker that joins any model to any
//! backend.
//!
//! A model exposes its guest-facing rings through [`worker::NicFrontend`];
//! [`worker::NetWorker`] moves frames between that and a
//! [`tapir_net_backend::NetBackend`], applying the per-NIC 802.1Q access-port
//! rule on the way. The model never sees the backend, the backend never
//! sees the model.

mod crc;
pub mod e1000;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod link;
pub mod mac;
pub mod rtl8139;
mod rx_offloads;
pub mod shell;
#[cfg(test)]
mod test_util;
pub mod virtio_net;
pub mod vlan;
pub mod worker;

pub use link::{Carrier, LinkHandle, LinkNotify};
pub use mac::default_mac;
pub use virtio_net::VirtioNet;
