//! The common configuration structure (`struct virtio_pci_common_cfg`):
//! feature negotiation, device status and per-queue setup registers.
//!
//! Every field is accepted only at its natural width and offset (64-bit
//! addresses also as two 32-bit halves); any other access reads as zero
//! and is dropped on write, as is any write to a read-only field. Status
//! transitions need the device, so [`CommonConfig::write`] only reports a
//! device_status write and leaves it to the transport.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::interrupt::InterruptState;
use super::layout::*;
use crate::device::ActivateError;

/// The driver-programmed setup of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueRegs {
    /// `queue_size` as last written (validated only on activation).
    pub size: u16,
    /// `queue_enable`.
    pub enabled: bool,
    /// `queue_desc`.
    pub desc: u64,
    /// `queue_driver` (available ring).
    pub driver: u64,
    /// `queue_device` (used ring).
    pub device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        Self {
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// The queue as the device will use it, after checking it against the
    /// spec (size a power of two within the maximum, ring alignment) and
    /// against guest memory.
    pub(crate) fn to_queue(
        self,
        index: u16,
        max_size: u16,
        event_idx: bool,
        mem: &GuestMemoryMmap,
    ) -> Result<Queue, ActivateError> {
        let bad = |what: String| ActivateError::BadQueues(format!("queue {index}: {what}"));
        let mut q = Queue::new(max_size).map_err(|e| bad(e.to_string()))?;
        q.try_set_size(self.size)
            .map_err(|_| bad(format!("invalid size {} (maximum {max_size})", self.size)))?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(|e| bad(e.to_string()))?;
        q.try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(|e| bad(e.to_string()))?;
        q.try_set_used_ring_address(GuestAddress(self.device))
            .map_err(|e| bad(e.to_string()))?;
        q.set_event_idx(event_idx);
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err(bad("rings are not inside guest memory".into()));
        }
        Ok(q)
    }
}

/// Which half of a 64-bit register an access hits.
#[derive(Clone, Copy)]
enum Part {
    Low,
    High,
    Whole,
}

fn read_part(reg: u64, part: Part) -> u64 {
    match part {
        Part::Low => reg & 0xffff_ffff,
        Part::High => reg >> 32,
        Part::Whole => reg,
    }
}

fn write_part(reg: &mut u64, part: Part, value: u64) {
    *reg = match part {
        Part::Low => (*reg & !0xffff_ffff) | (value & 0xffff_ffff),
        Part::High => (*reg & 0xffff_ffff) | (value << 32),
        Part::Whole => value,
    };
}

/// The 64-bit queue address register, and which part, an access hits.
fn address_field(offset: u64, len: usize) -> Option<(u64, Part)> {
    let base = offset & !7;
    if !matches!(
        base,
        COMMON_QUEUE_DESC | COMMON_QUEUE_DRIVER | COMMON_QUEUE_DEVICE
    ) {
        return None;
    }
    match (offset - base, len) {
        (0, 8) => Some((base, Part::Whole)),
        (0, 4) => Some((base, Part::Low)),
        (4, 4) => Some((base, Part::High)),
        _ => None,
    }
}

/// State of the common configuration structure. See the module
/// documentation.
#[derive(Debug)]
pub(crate) struct CommonConfig {
    offered: u64,
    acked: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    status: u8,
    queue_select: u16,
    max_sizes: Vec<u16>,
    queues: Vec<QueueRegs>,
}

impl CommonConfig {
    /// Reset state for a device offering `features` with queues of the
    /// given maximum sizes.
    pub(crate) fn new(features: u64, max_sizes: &[u16]) -> Self {
        Self {
            offered: features,
            acked: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            status: 0,
            queue_select: 0,
            max_sizes: max_sizes.to_vec(),
            queues: max_sizes.iter().map(|m| QueueRegs::new(*m)).collect(),
        }
    }

    /// Back to the reset state (device_status written with 0).
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.offered, &self.max_sizes);
    }

    /// Feature bits the driver accepted.
    pub(crate) fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the accepted features may be confirmed with FEATURES_OK:
    /// they include VERSION_1 (no legacy interface here) and only offered
    /// bits.
    pub(crate) fn features_acceptable(&self) -> bool {
        self.acked & FEATURE_VERSION_1 != 0 && self.acked & !self.offered == 0
    }

    /// `device_status`.
    pub(crate) fn status(&self) -> u8 {
        self.status
    }

    /// Sets `device_status` (the transport decides the value).
    pub(crate) fn set_status(&mut self, status: u8) {
        self.status = status;
    }

    /// Each queue's maximum size.
    pub(crate) fn max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    /// Each queue's driver setup.
    pub(crate) fn queues(&self) -> &[QueueRegs] {
        &self.queues
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The selected queue, if it exists and may still be reconfigured:
    /// not enabled yet, and the device not running.
    fn selected_for_setup(&mut self) -> Option<&mut QueueRegs> {
        let driver_ok = self.status & STATUS_DRIVER_OK != 0;
        self.queues
            .get_mut(usize::from(self.queue_select))
            .filter(|q| !q.enabled && !driver_ok)
    }

    fn features_ok(&self) -> bool {
        self.status & STATUS_FEATURES_OK != 0
    }

    fn feature_window(features: u64, select: u32) -> u32 {
        match select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        }
    }

    /// Driver read of `data.len()` bytes at `offset` in the structure.
    pub(crate) fn read(&self, offset: u64, data: &mut [u8], irq: &InterruptState) {
        let queue = self.selected();
        let value: u64 = match (offset, data.len()) {
            (COMMON_DEVICE_FEATURE_SELECT, 4) => self.device_feature_select.into(),
            (COMMON_DEVICE_FEATURE, 4) => {
                Self::feature_window(self.offered, self.device_feature_select).into()
            }
            (COMMON_DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select.into(),
            (COMMON_DRIVER_FEATURE, 4) => {
                Self::feature_window(self.acked, self.driver_feature_select).into()
            }
            (COMMON_MSIX_CONFIG, 2) => irq.config_vector().into(),
            // MAX_QUEUES bounds the count well below u16::MAX.
            (COMMON_NUM_QUEUES, 2) => self.queues.len() as u64,
            (COMMON_DEVICE_STATUS, 1) => self.status.into(),
            (COMMON_CONFIG_GENERATION, 1) => irq.config_generation().into(),
            (COMMON_QUEUE_SELECT, 2) => self.queue_select.into(),
            (COMMON_QUEUE_SIZE, 2) => queue.map_or(0, |q| q.size).into(),
            (COMMON_QUEUE_MSIX_VECTOR, 2) => match queue {
                Some(_) => irq.queue_vector(self.queue_select).into(),
                None => 0,
            },
            (COMMON_QUEUE_ENABLE, 2) => queue.is_some_and(|q| q.enabled).into(),
            (COMMON_QUEUE_NOTIFY_OFF, 2) => match queue {
                Some(_) => self.queue_select.into(),
                None => 0,
            },
            (o, len) => match (address_field(o, len), queue) {
                (Some((COMMON_QUEUE_DESC, part)), Some(q)) => read_part(q.desc, part),
                (Some((COMMON_QUEUE_DRIVER, part)), Some(q)) => read_part(q.driver, part),
                (Some((COMMON_QUEUE_DEVICE, part)), Some(q)) => read_part(q.device, part),
                _ => 0,
            },
        };
        let bytes = value.to_le_bytes();
        match data.len() {
            n @ 1..=8 => data.copy_from_slice(&bytes[..n]),
            _ => data.fill(0),
        }
    }

    /// Driver write of `data` at `offset` in the structure. Returns the
    /// value written to `device_status`, which the transport applies.
    pub(crate) fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        irq: &mut InterruptState,
    ) -> Option<u8> {
        if data.is_empty() || data.len() > 8 {
            return None;
        }
        let mut buf = [0u8; 8];
        buf[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(buf);
        // Narrowing below keeps exactly the bytes of the (matched) width.
        match (offset, data.len()) {
            (COMMON_DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (COMMON_DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (COMMON_DRIVER_FEATURE, 4) => self.write_driver_features(value as u32),
            (COMMON_MSIX_CONFIG, 2) => irq.set_config_vector(value as u16),
            (COMMON_DEVICE_STATUS, 1) => return Some(value as u8),
            (COMMON_QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (COMMON_QUEUE_SIZE, 2) => {
                if let Some(q) = self.selected_for_setup() {
                    q.size = value as u16;
                }
            }
            (COMMON_QUEUE_MSIX_VECTOR, 2) => irq.set_queue_vector(self.queue_select, value as u16),
            (COMMON_QUEUE_ENABLE, 2) => {
                // Writing 0 is not allowed to the driver; ignore it.
                if value == 1 {
                    if let Some(q) = self.selected_for_setup() {
                        q.enabled = true;
                    }
                }
            }
            (o, len) => {
                let (field, part) = address_field(o, len)?;
                if let Some(q) = self.selected_for_setup() {
                    let reg = match field {
                        COMMON_QUEUE_DESC => &mut q.desc,
                        COMMON_QUEUE_DRIVER => &mut q.driver,
                        _ => &mut q.device,
                    };
                    write_part(reg, part, value);
                }
            }
        }
        None
    }

    /// The driver accepts feature bits: only offered bits stick, and only
    /// before FEATURES_OK.
    fn write_driver_features(&mut self, bits: u32) {
        if self.features_ok() {
            return;
        }
        let (shift, mask) = match self.driver_feature_select {
            0 => (0, 0xffff_ffffu64),
            1 => (32, 0xffff_ffff_0000_0000u64),
            _ => return,
        };
        let bits = (u64::from(bits) << shift) & self.offered;
        self.acked = (self.acked & !mask) | bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_field_decoding() {
        assert!(matches!(
            address_field(COMMON_QUEUE_DESC, 8),
            Some((COMMON_QUEUE_DESC, Part::Whole))
        ));
        assert!(matches!(
            address_field(COMMON_QUEUE_DRIVER + 4, 4),
            Some((COMMON_QUEUE_DRIVER, Part::High))
        ));
        assert!(address_field(COMMON_QUEUE_DEVICE + 4, 8).is_none());
        assert!(address_field(COMMON_QUEUE_DEVICE + 2, 2).is_none());
        assert!(address_field(COMMON_QUEUE_NOTIFY_OFF, 4).is_none());
        assert!(address_field(COMMON_CFG_SIZE, 8).is_none());
    }

    #[test]
    fn parts() {
        let mut r = 0x1111_2222_3333_4444u64;
        assert_eq!(read_part(r, Part::Low), 0x3333_4444);
        assert_eq!(read_part(r, Part::High), 0x1111_2222);
        write_part(&mut r, Part::High, 0xaaaa_bbbb);
        assert_eq!(r, 0xaaaa_bbbb_3333_4444);
        write_part(&mut r, Part::Low, 0xcccc_dddd);
        assert_eq!(r, 0xaaaa_bbbb_cccc_dddd);
        write_part(&mut r, Part::Whole, 5);
        assert_eq!(r, 5);
    }

    #[test]
    fn features_acceptable_needs_version_1_and_subset() {
        let v1 = 1u64 << 32;
        let mut c = CommonConfig::new(v1 | 1, &[16]);
        assert!(!c.features_acceptable());
        c.acked = 1;
        assert!(!c.features_acceptable());
        c.acked = v1 | 1;
        assert!(c.features_acceptable());
        c.acked = v1 | 2;
        assert!(!c.features_acceptable());
    }
}
