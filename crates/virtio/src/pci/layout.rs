//! Register map of the modern virtio-pci function: its identity, the
//! layout of BAR 0 and the vendor-specific capabilities that describe it.
//!
//! BAR 0 is a 32-bit, non-prefetchable memory BAR. Every structure starts
//! on its own 4 KiB page:
//!
//! | offset | size | structure |
//! |---|---|---|
//! | 0x0000 | 0x38 | common configuration (`virtio_pci_common_cfg`) |
//! | 0x1000 | 1 | ISR status |
//! | 0x2000 | 0x1000 | device-specific configuration |
//! | 0x3000 | 4 per queue | notifications (queue `i` at `0x3000 + 4 * i`) |
//! | 0x4000 | 16 per vector | MSI-X table (only with MSI-X) |
//! | 0x6000 | 8 per 64 vectors | MSI-X PBA (only with MSI-X) |
//!
//! The BAR is 16 KiB without MSI-X and 32 KiB with it.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use crate::device::DEVICE_TYPE_NET;

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Device ID of a modern-only virtio device is this plus its device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Largest device type that has a modern device ID (0x1040..=0x107f).
pub const VIRTIO_PCI_MAX_DEVICE_TYPE: u32 = 0x3f;
/// Revision ID of a modern-only device (the driver checks for >= 1).
pub const VIRTIO_PCI_REVISION_ID: u8 = 1;
/// Subsystem ID presented by every tapir virtio function.
pub const VIRTIO_PCI_SUBSYSTEM_ID: u16 = 0x1100;

/// virtio device type of a block device.
pub const DEVICE_TYPE_BLOCK: u32 = 2;
/// virtio device type of a console.
pub const DEVICE_TYPE_CONSOLE: u32 = 3;
/// PCI class: network controller.
pub const PCI_CLASS_NETWORK: u8 = 0x02;
/// PCI sub-class: Ethernet controller.
pub const PCI_SUBCLASS_ETHERNET: u8 = 0x00;
/// PCI class: mass storage controller.
pub const PCI_CLASS_STORAGE: u8 = 0x01;
/// PCI sub-class: other mass storage controller.
pub const PCI_SUBCLASS_STORAGE_OTHER: u8 = 0x80;
/// PCI class: simple communication controller.
pub const PCI_CLASS_COMMUNICATION: u8 = 0x07;
/// PCI sub-class: other communication controller.
pub const PCI_SUBCLASS_COMMUNICATION_OTHER: u8 = 0x80;
/// PCI class: device does not fit any defined class.
pub const PCI_CLASS_UNCLASSIFIED: u8 = 0xff;

/// PCI (class, sub-class) presented for a virtio device type.
pub fn pci_class(device_type: u32) -> (u8, u8) {
    match device_type {
        DEVICE_TYPE_NET => (PCI_CLASS_NETWORK, PCI_SUBCLASS_ETHERNET),
        DEVICE_TYPE_BLOCK => (PCI_CLASS_STORAGE, PCI_SUBCLASS_STORAGE_OTHER),
        DEVICE_TYPE_CONSOLE => (PCI_CLASS_COMMUNICATION, PCI_SUBCLASS_COMMUNICATION_OTHER),
        _ => (PCI_CLASS_UNCLASSIFIED, 0),
    }
}

// ---- BAR 0 -----------------------------------------------------------------

/// The BAR that holds every virtio structure and the MSI-X table.
pub const VIRTIO_BAR: u8 = 0;
/// Size of each structure's page in BAR 0.
pub const REGION_SIZE: u64 = 0x1000;
/// Offset of the common configuration structure.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Length of the common configuration structure (virtio 1.1).
pub const COMMON_CFG_SIZE: u64 = 0x38;
/// Offset of the ISR status byte.
pub const ISR_CFG_OFFSET: u64 = 0x1000;
/// Length of the ISR structure.
pub const ISR_CFG_SIZE: u64 = 1;
/// Offset of the device-specific configuration.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Length advertised for the device-specific configuration.
pub const DEVICE_CFG_SIZE: u64 = REGION_SIZE;
/// Offset of the notification structure.
pub const NOTIFY_CFG_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Width of the notification write KVM is asked to match (the 16-bit
/// queue index a driver writes).
pub const NOTIFY_WRITE_LEN: u32 = 2;
/// Most queues whose notification addresses fit the notify page.
pub const MAX_QUEUES: usize = (REGION_SIZE / NOTIFY_OFF_MULTIPLIER as u64) as usize;
/// Offset of the MSI-X table.
pub const MSIX_TABLE_OFFSET: u32 = 0x4000;
/// Offset of the MSI-X pending-bit array.
pub const MSIX_PBA_OFFSET: u32 = 0x6000;
/// Bytes of BAR 0 given to MSI-X (table and PBA).
pub const MSIX_REGION_SIZE: u64 = BAR_SIZE_MSIX - MSIX_TABLE_OFFSET as u64;
/// Most MSI-X vectors: the table must end before the PBA.
pub const MAX_MSIX_VECTORS: u16 = ((MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) / 16) as u16;
/// Size of BAR 0 without MSI-X.
pub const BAR_SIZE_INTX_ONLY: u64 = 0x4000;
/// Size of BAR 0 with MSI-X.
pub const BAR_SIZE_MSIX: u64 = 0x8000;

// ---- common configuration (struct virtio_pci_common_cfg) -------------------

/// le32, read-write: which 32 feature bits `device_feature` shows.
pub const COMMON_DEVICE_FEATURE_SELECT: u64 = 0x00;
/// le32, read-only: offered feature bits.
pub const COMMON_DEVICE_FEATURE: u64 = 0x04;
/// le32, read-write: which 32 feature bits `driver_feature` shows.
pub const COMMON_DRIVER_FEATURE_SELECT: u64 = 0x08;
/// le32, read-write: accepted feature bits.
pub const COMMON_DRIVER_FEATURE: u64 = 0x0c;
/// le16, read-write: MSI-X vector of configuration changes.
pub const COMMON_MSIX_CONFIG: u64 = 0x10;
/// le16, read-only: number of queues.
pub const COMMON_NUM_QUEUES: u64 = 0x12;
/// u8, read-write: device status.
pub const COMMON_DEVICE_STATUS: u64 = 0x14;
/// u8, read-only: configuration generation.
pub const COMMON_CONFIG_GENERATION: u64 = 0x15;
/// le16, read-write: the queue the queue fields below refer to.
pub const COMMON_QUEUE_SELECT: u64 = 0x16;
/// le16, read-write: queue size.
pub const COMMON_QUEUE_SIZE: u64 = 0x18;
/// le16, read-write: MSI-X vector of the queue.
pub const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;
/// le16, read-write: queue enabled.
pub const COMMON_QUEUE_ENABLE: u64 = 0x1c;
/// le16, read-only: the queue's notification offset (in multipliers).
pub const COMMON_QUEUE_NOTIFY_OFF: u64 = 0x1e;
/// le64, read-write: descriptor table address.
pub const COMMON_QUEUE_DESC: u64 = 0x20;
/// le64, read-write: driver (available) ring address.
pub const COMMON_QUEUE_DRIVER: u64 = 0x28;
/// le64, read-write: device (used) ring address.
pub const COMMON_QUEUE_DEVICE: u64 = 0x30;

// The status bits all fit the 8-bit register.
/// Device status: the guest found the device.
pub const STATUS_ACKNOWLEDGE: u8 = VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = VIRTIO_CONFIG_S_DRIVER as u8;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
/// Device status: the driver is ready; the device may run.
pub const STATUS_DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
/// Device status: the device hit an error and must be reset.
pub const STATUS_NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;
/// Feature: virtio 1.x (required: there is no legacy interface).
pub const FEATURE_VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
/// Feature: used/available event indices.
pub const FEATURE_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

/// "No MSI-X vector" in `msix_config` / `queue_msix_vector`.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;
/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1 << 0;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 1 << 1;

// ---- vendor-specific capabilities (struct virtio_pci_cap) ------------------

/// Capability ID of vendor-specific capabilities.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// `cfg_type`: common configuration.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type`: notifications.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type`: ISR status.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type`: device-specific configuration.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type`: BAR access window in configuration space.
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// Offset of `cap_len` from the capability start.
pub const VIRTIO_CAP_LEN: u16 = 2;
/// Offset of `cfg_type`.
pub const VIRTIO_CAP_CFG_TYPE: u16 = 3;
/// Offset of `bar`.
pub const VIRTIO_CAP_BAR: u16 = 4;
/// Offset of `offset` (le32).
pub const VIRTIO_CAP_OFFSET: u16 = 8;
/// Offset of `length` (le32).
pub const VIRTIO_CAP_LENGTH: u16 = 12;
/// Offset of the notify capability's `notify_off_multiplier` (le32).
pub const VIRTIO_CAP_NOTIFY_MULTIPLIER: u16 = 16;
/// Offset of the PCI_CFG capability's `pci_cfg_data` (4 bytes).
pub const VIRTIO_CAP_PCI_CFG_DATA: u16 = 16;
/// Length of `struct virtio_pci_cap`.
pub const VIRTIO_CAP_SIZE: usize = 16;

/// The body (everything after the ID and next pointer) of a virtio
/// capability pointing at `length` bytes at `offset` in BAR 0, followed by
/// `extra` type-specific bytes.
pub fn virtio_cap_body(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let cap_len = VIRTIO_CAP_SIZE + extra.len();
    // The BAR layout keeps offsets and lengths far below 4 GiB, and the
    // capability a few dozen bytes long.
    let mut body = vec![cap_len as u8, cfg_type, VIRTIO_BAR, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

/// The guest-writable mask of the PCI_CFG capability body: `bar`,
/// `offset`, `length` and `pci_cfg_data`.
pub fn pci_cfg_cap_mask() -> Vec<u8> {
    let mut mask = vec![0u8; VIRTIO_CAP_SIZE + 4 - 2];
    let body = |field: u16| usize::from(field) - 2;
    mask[body(VIRTIO_CAP_BAR)] = 0xff;
    for field in [
        VIRTIO_CAP_OFFSET,
        VIRTIO_CAP_LENGTH,
        VIRTIO_CAP_PCI_CFG_DATA,
    ] {
        mask[body(field)..body(field) + 4].fill(0xff);
    }
    mask
}

/// Whether `[offset, offset + len)` lies entirely inside
/// `[start, start + size)`.
pub fn within(offset: u64, len: usize, start: u64, size: u64) -> bool {
    offset >= start
        && (offset - start)
            .checked_add(len as u64)
            .is_some_and(|end| end <= size)
}

/// Whether `[offset, offset + len)` and `[start, start + size)` overlap.
pub fn overlaps(offset: u64, len: usize, start: u64, size: u64) -> bool {
    // In u128 so that ranges reaching the top of the address space do not
    // wrap.
    let (offset, start) = (u128::from(offset), u128::from(start));
    len != 0 && size != 0 && offset < start + u128::from(size) && start < offset + len as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_the_bar() {
        const {
            assert!(NOTIFY_CFG_OFFSET + REGION_SIZE <= BAR_SIZE_INTX_ONLY);
            assert!(MSIX_TABLE_OFFSET as u64 == BAR_SIZE_INTX_ONLY);
            assert!(MAX_MSIX_VECTORS == 512);
            assert!(MAX_QUEUES == 1024);
            assert!(BAR_SIZE_MSIX.is_power_of_two() && BAR_SIZE_INTX_ONLY.is_power_of_two());
        }
        let pba_end = u64::from(MSIX_PBA_OFFSET) + u64::from(MAX_MSIX_VECTORS).div_ceil(64) * 8;
        assert!(pba_end <= BAR_SIZE_MSIX);
    }

    #[test]
    fn cap_body_and_mask() {
        let body = virtio_cap_body(VIRTIO_PCI_CAP_NOTIFY_CFG, 0x3000, 8, &4u32.to_le_bytes());
        assert_eq!(body.len() + 2, 20);
        assert_eq!(body[0], 20);
        assert_eq!(body[1], VIRTIO_PCI_CAP_NOTIFY_CFG);
        assert_eq!(&body[6..10], &0x3000u32.to_le_bytes());
        assert_eq!(&body[10..14], &8u32.to_le_bytes());
        assert_eq!(&body[14..18], &4u32.to_le_bytes());
        let mask = pci_cfg_cap_mask();
        assert_eq!(mask.len(), 18);
        assert_eq!(mask[..6], [0, 0, 0xff, 0, 0, 0]);
        assert!(mask[6..].iter().all(|b| *b == 0xff));
    }

    #[test]
    fn range_helpers() {
        assert!(within(0x10, 4, 0x10, 4));
        assert!(!within(0x11, 4, 0x10, 4));
        assert!(!within(0xf, 1, 0x10, 4));
        assert!(!within(u64::MAX, 8, 0, u64::MAX));
        assert!(overlaps(0x12, 4, 0x10, 4));
        assert!(!overlaps(0x14, 4, 0x10, 4));
        assert!(!overlaps(0x10, 0, 0x10, 4));
        assert!(overlaps(u64::MAX, 8, u64::MAX - 1, 8));
    }

    #[test]
    fn classes() {
        assert_eq!(pci_class(DEVICE_TYPE_NET), (0x02, 0x00));
        assert_eq!(pci_class(DEVICE_TYPE_BLOCK), (0x01, 0x80));
        assert_eq!(pci_class(0x3f), (0xff, 0x00));
    }
}
