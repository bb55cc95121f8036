//! The modern (virtio 1.x) PCI transport.
//!
//! [`VirtioPciDevice`] presents any [`VirtioDevice`] to the guest as a
//! virtio-pci function with no legacy interface: vendor 0x1af4, device
//! 0x1040 + type, revision 1, one 32-bit memory BAR (see [`layout`] for
//! its map) described by vendor-specific capabilities, MSI-X when built
//! with vectors and INTA# always.
//!
//! # Using it from the VMM
//!
//! 1. Build it with [`VirtioPciDevice::new`], giving it the MSI sender,
//!    the INTx line of the slot it will occupy and the ioeventfd registry.
//! 2. Plug it into the segment with `PciSegment::add_device`, which assigns
//!    BAR 0 an address.
//! 3. Call [`VirtioPciDevice::register_ioevents`] so that KVM signals each
//!    queue's notify eventfd directly. Later BAR moves by the guest are
//!    followed automatically (`PciDevice::bar_moved`); dropping the
//!    transport unregisters everything.
//!
//! Notifications written through the BAR (e.g. before step 3, or at a
//! width KVM was not asked to match) still reach the same eventfds.
//!
//! # Locking
//!
//! The segment locks the transport for every guest access. Interrupt state
//! has its own lock (see the `interrupt` module), so device threads raise
//! interrupts without touching the transport, and the transport never
//! holds that lock while calling into the device.

pub mod layout;

mod common;
mod interrupt;

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::{lock, LevelIrq};
use tapir_pci::configuration::PCI_STATUS;
use tapir_pci::{
    BarChange, BarKind, Intx, IntxPin, MsiSender, MsixConfig, MsixError, MsixRegion, PciBar,
    PciConfigError, PciConfiguration, PciDevice, PciHeader,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{
    ActivateError, ActiveQueue, IoEventRegistry, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use common::CommonConfig;
use interrupt::{InterruptState, VirtioPciInterrupt};
use layout::*;

/// Errors from building a virtio-pci function or registering its
/// notification addresses.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// The device type has no modern virtio-pci device ID.
    #[error("virtio device type {0} has no modern virtio-pci device ID")]
    DeviceType(u32),
    /// More queues than the notify region has addresses for.
    #[error("{0} queues requested; the notification region holds at most {MAX_QUEUES}")]
    TooManyQueues(usize),
    /// A queue's maximum size is not a power of two within 1..=32768.
    #[error("queue {index} has an invalid maximum size {size}")]
    QueueMaxSize {
        /// Queue index.
        index: usize,
        /// The rejected size.
        size: u16,
    },
    /// More MSI-X vectors than the table space in BAR 0 holds.
    #[error("{0} MSI-X vectors requested; BAR 0 holds at most {MAX_MSIX_VECTORS}")]
    TooManyVectors(u16),
    /// Describing the configuration space failed.
    #[error("configuration space: {0}")]
    Config(#[from] PciConfigError),
    /// Setting up MSI-X failed.
    #[error("MSI-X: {0}")]
    Msix(#[from] MsixError),
    /// A queue's notify eventfd could not be created.
    #[error("creating the notify eventfd of queue {queue}: {source}")]
    EventFd {
        /// Queue index.
        queue: u16,
        /// The OS error.
        source: io::Error,
    },
    /// The registry refused a notification address.
    #[error("registering notify address {addr:#x} of queue {queue}: {source}")]
    IoEvent {
        /// Queue index.
        queue: u16,
        /// Guest-physical address.
        addr: u64,
        /// The registry's error.
        source: io::Error,
    },
}

fn device_name(device_type: u32) -> String {
    match device_type {
        crate::device::DEVICE_TYPE_NET => "virtio-net".to_string(),
        DEVICE_TYPE_BLOCK => "virtio-blk".to_string(),
        DEVICE_TYPE_CONSOLE => "virtio-console".to_string(),
        t => format!("virtio-{t}"),
    }
}

/// A [`VirtioDevice`] behind a modern virtio-pci function. See the module
/// documentation.
pub struct VirtioPciDevice<D: VirtioDevice> {
    name: String,
    device: D,
    mem: GuestMemoryMmap,
    config: PciConfiguration,
    common: CommonConfig,
    irq: Arc<Mutex<InterruptState>>,
    interrupt: Arc<dyn VirtioInterrupt>,
    notify: Vec<EventFd>,
    ioevents: Arc<dyn IoEventRegistry>,
    /// The BAR 0 address the notification addresses are registered at.
    ioevent_base: Option<u64>,
    pci_cfg_cap: u16,
    activated: bool,
    activate_error: Option<ActivateError>,
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device`. `nr_vectors` MSI-X vectors (0: no MSI-X capability,
    /// INTx only) are sent through `msi_sender`; INTA# drives `intx_irq`
    /// (the line of the slot the function goes into). Notify addresses are
    /// registered with `ioevents` by [`Self::register_ioevents`].
    pub fn new(
        device: D,
        mem: GuestMemoryMmap,
        nr_vectors: u16,
        msi_sender: Arc<dyn MsiSender>,
        intx_irq: Arc<dyn LevelIrq>,
        ioevents: Arc<dyn IoEventRegistry>,
    ) -> Result<Self, VirtioPciError> {
        let device_type = device.device_type();
        if device_type > VIRTIO_PCI_MAX_DEVICE_TYPE {
            return Err(VirtioPciError::DeviceType(device_type));
        }
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.len() > MAX_QUEUES {
            return Err(VirtioPciError::TooManyQueues(max_sizes.len()));
        }
        if let Some((index, &size)) = max_sizes
            .iter()
            .enumerate()
            .find(|(_, &size)| Queue::new(size).is_err())
        {
            return Err(VirtioPciError::QueueMaxSize { index, size });
        }
        if nr_vectors > MAX_MSIX_VECTORS {
            return Err(VirtioPciError::TooManyVectors(nr_vectors));
        }

        let (class_code, subclass) = pci_class(device_type);
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            // Checked above: the type fits the 0x40 modern IDs.
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            revision_id: VIRTIO_PCI_REVISION_ID,
            class_code,
            subclass,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: VIRTIO_PCI_SUBSYSTEM_ID,
            multifunction: false,
        });
        let bar_size = if nr_vectors > 0 {
            BAR_SIZE_MSIX
        } else {
            BAR_SIZE_INTX_ONLY
        };
        config.add_bar(PciBar {
            index: VIRTIO_BAR,
            size: bar_size,
            kind: BarKind::Mem32,
        })?;

        let notify_len = u64::from(NOTIFY_OFF_MULTIPLIER) * max_sizes.len() as u64;
        let caps = [
            (
                VIRTIO_PCI_CAP_COMMON_CFG,
                COMMON_CFG_OFFSET,
                COMMON_CFG_SIZE,
                &[][..],
            ),
            (VIRTIO_PCI_CAP_ISR_CFG, ISR_CFG_OFFSET, ISR_CFG_SIZE, &[]),
            (
                VIRTIO_PCI_CAP_DEVICE_CFG,
                DEVICE_CFG_OFFSET,
                DEVICE_CFG_SIZE,
                &[],
            ),
            (
                VIRTIO_PCI_CAP_NOTIFY_CFG,
                NOTIFY_CFG_OFFSET,
                notify_len,
                &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
            ),
        ];
        for (cfg_type, offset, length, extra) in caps {
            config.add_capability(
                &virtio_cap_body(cfg_type, offset, length, extra),
                PCI_CAP_ID_VNDR,
            )?;
        }
        let pci_cfg_cap = config.add_capability_with_mask(
            &virtio_cap_body(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, &[0; 4]),
            PCI_CAP_ID_VNDR,
            &pci_cfg_cap_mask(),
        )?;

        let msix = if nr_vectors > 0 {
            let region = |offset| MsixRegion {
                bar: VIRTIO_BAR,
                offset,
            };
            let mut msix = MsixConfig::new(
                nr_vectors,
                region(MSIX_TABLE_OFFSET),
                region(MSIX_PBA_OFFSET),
                msi_sender,
            )?;
            msix.add_capability(&mut config)?;
            Some(msix)
        } else {
            None
        };
        let intx = Intx::new(intx_irq, IntxPin::IntA, &mut config);

        let notify = (0..max_sizes.len())
            .map(|queue| {
                EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioPciError::EventFd {
                    // Bounded by MAX_QUEUES.
                    queue: queue as u16,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let irq = Arc::new(Mutex::new(InterruptState::new(msix, intx, max_sizes.len())));
        let interrupt: Arc<dyn VirtioInterrupt> = Arc::new(VirtioPciInterrupt::new(irq.clone()));

        Ok(Self {
            name: device_name(device_type),
            common: CommonConfig::new(device.features(), &max_sizes),
            device,
            mem,
            config,
            irq,
            interrupt,
            notify,
            ioevents,
            ioevent_base: None,
            pci_cfg_cap,
            activated: false,
            activate_error: None,
        })
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The wrapped device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The interrupt object the device is given on activation (e.g. for the
    /// VMM to announce a configuration change).
    pub fn interrupt(&self) -> Arc<dyn VirtioInterrupt> {
        self.interrupt.clone()
    }

    /// The current `device_status`.
    pub fn device_status(&self) -> u8 {
        self.common.status()
    }

    /// Whether the device is running (activated and not reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Why the last activation failed, until the next reset.
    pub fn activate_error(&self) -> Option<&ActivateError> {
        self.activate_error.as_ref()
    }

    /// Failed INTx line updates on guest-driven paths (no caller to report
    /// them to) plus failed MSI-X sends recorded by the MSI-X state.
    pub fn interrupt_errors(&self) -> u64 {
        let irq = lock(&self.irq);
        irq.errors() + irq.msix().map_or(0, MsixConfig::delivery_errors)
    }

    /// Guest-physical notification address of `queue` for the current
    /// BAR 0 address (None if the queue does not exist or BAR 0 is not
    /// placed).
    pub fn notify_address(&self, queue: u16) -> Option<u64> {
        let base = self.config.bar_address(VIRTIO_BAR).filter(|a| *a != 0)?;
        (usize::from(queue) < self.notify.len()).then(|| notify_addr(base, queue))
    }

    /// Registers every queue's notification address for the address BAR 0
    /// has now (assigned by `PciSegment::add_device`), replacing a previous
    /// registration. Call once after `add_device`; guest BAR moves are
    /// followed without further calls. On error nothing stays registered
    /// and notifications keep working through the BAR.
    pub fn register_ioevents(&mut self) -> Result<(), VirtioPciError> {
        let base = self.config.bar_address(VIRTIO_BAR).unwrap_or(0);
        self.move_ioevents(base)
    }

    fn unregister_ioevents(&mut self) {
        let Some(base) = self.ioevent_base.take() else {
            return;
        };
        for (queue, fd) in (0u16..).zip(&self.notify) {
            // Nothing useful to do if the registry forgot the address.
            let _ = self
                .ioevents
                .unregister(fd, notify_addr(base, queue), NOTIFY_WRITE_LEN);
        }
    }

    fn move_ioevents(&mut self, base: u64) -> Result<(), VirtioPciError> {
        if self.ioevent_base == Some(base) {
            return Ok(());
        }
        self.unregister_ioevents();
        if base == 0 {
            return Ok(());
        }
        for (queue, fd) in (0u16..).zip(&self.notify) {
            let addr = notify_addr(base, queue);
            if let Err(source) = self.ioevents.register(fd, addr, NOTIFY_WRITE_LEN) {
                for (done, fd) in (0u16..queue).zip(&self.notify) {
                    let _ = self
                        .ioevents
                        .unregister(fd, notify_addr(base, done), NOTIFY_WRITE_LEN);
                }
                return Err(VirtioPciError::IoEvent {
                    queue,
                    addr,
                    source,
                });
            }
        }
        self.ioevent_base = Some(base);
        Ok(())
    }

    // ---- device status -------------------------------------------------------

    /// Applies a driver write of `device_status`.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.common.status();
        // Bits only accumulate until reset; NEEDS_RESET is the device's.
        let mut new = old | (value & !STATUS_NEEDS_RESET);
        let added = new & !old;
        if added & STATUS_FEATURES_OK != 0 && !self.common.features_acceptable() {
            new &= !STATUS_FEATURES_OK;
        }
        if added & STATUS_DRIVER_OK != 0 {
            if new & STATUS_FEATURES_OK == 0 || old & STATUS_NEEDS_RESET != 0 {
                new &= !STATUS_DRIVER_OK;
            } else {
                self.common.set_status(new);
                self.activate();
                return;
            }
        }
        self.common.set_status(new);
    }

    /// DRIVER_OK: hands the enabled queues to the device. On failure the
    /// device is marked NEEDS_RESET and the driver told through a config
    /// interrupt.
    fn activate(&mut self) {
        match self.try_activate() {
            Ok(()) => {
                self.activated = true;
                self.activate_error = None;
            }
            Err(e) => {
                self.activate_error = Some(e);
                self.common
                    .set_status(self.common.status() | STATUS_NEEDS_RESET);
                lock(&self.irq).trigger_or_count(VirtioInterruptType::Config);
            }
        }
    }

    fn try_activate(&mut self) -> Result<(), ActivateError> {
        let acked = self.common.acked_features();
        let event_idx = acked & FEATURE_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (index, (regs, &max)) in
            (0u16..).zip(self.common.queues().iter().zip(self.common.max_sizes()))
        {
            if !regs.enabled {
                continue;
            }
            let queue = regs.to_queue(index, max, event_idx, &self.mem)?;
            let notify = self.notify[usize::from(index)]
                .try_clone()
                .map_err(|e| ActivateError::Backend(format!("queue {index} eventfd: {e}")))?;
            queues.push(ActiveQueue {
                index,
                queue,
                notify,
            });
        }
        self.device
            .activate(self.mem.clone(), self.interrupt.clone(), acked, queues)
    }

    /// device_status written with 0: stops the device and returns every
    /// register to its initial value.
    fn reset(&mut self) {
        // First: the device stops its threads, which may still be raising
        // interrupts (they take only the interrupt lock, not held here).
        self.device.reset();
        self.activated = false;
        self.activate_error = None;
        self.common.reset();
        lock(&self.irq).reset();
        // Drop notifications the stopped device never consumed.
        for fd in &self.notify {
            let _ = fd.read();
        }
    }

    // ---- BAR 0 regions -------------------------------------------------------

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len();
        if within(offset, len, COMMON_CFG_OFFSET, COMMON_CFG_SIZE) {
            let irq = lock(&self.irq);
            self.common.read(offset - COMMON_CFG_OFFSET, data, &irq);
        } else if offset == ISR_CFG_OFFSET {
            data[0] = lock(&self.irq).read_isr();
        } else if within(offset, len, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE) {
            self.device.read_config(offset - DEVICE_CFG_OFFSET, data);
        } else if overlaps(offset, len, u64::from(MSIX_TABLE_OFFSET), MSIX_REGION_SIZE) {
            if let Some(msix) = lock(&self.irq).msix() {
                msix.read_bar(VIRTIO_BAR, offset, data);
            }
        }
    }

    fn write_bar0(&mut self, offset: u64, data: &[u8]) {
        let len = data.len();
        if within(offset, len, COMMON_CFG_OFFSET, COMMON_CFG_SIZE) {
            let status = {
                let mut irq = lock(&self.irq);
                self.common
                    .write(offset - COMMON_CFG_OFFSET, data, &mut irq)
            };
            if let Some(status) = status {
                self.write_status(status);
            }
        } else if within(offset, len, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE) {
            self.device.write_config(offset - DEVICE_CFG_OFFSET, data);
        } else if within(offset, len, NOTIFY_CFG_OFFSET, REGION_SIZE) {
            let rel = offset - NOTIFY_CFG_OFFSET;
            let slot = u64::from(NOTIFY_OFF_MULTIPLIER);
            // The multiplier is a power of two.
            if rel & (slot - 1) == 0 {
                if let Some(fd) = usize::try_from(rel / slot)
                    .ok()
                    .and_then(|q| self.notify.get(q))
                {
                    // A full counter already wakes the device; nothing lost.
                    let _ = fd.write(1);
                }
            }
        } else if overlaps(offset, len, u64::from(MSIX_TABLE_OFFSET), MSIX_REGION_SIZE) {
            if let Some(msix) = lock(&self.irq).msix_mut() {
                msix.write_bar(VIRTIO_BAR, offset, data);
            }
        }
    }

    // ---- VIRTIO_PCI_CAP_PCI_CFG window ---------------------------------------

    fn config_dword(&self, offset: u16) -> u32 {
        let mut b = [0u8; 4];
        self.config.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// The BAR 0 access the PCI_CFG capability currently describes: only
    /// BAR 0, 1/2/4 bytes, naturally aligned.
    fn pci_cfg_target(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap;
        let bar = self.config.read_u8(cap + VIRTIO_CAP_BAR);
        let offset = u64::from(self.config_dword(cap + VIRTIO_CAP_OFFSET));
        let len = self.config_dword(cap + VIRTIO_CAP_LENGTH);
        let len = match len {
            1 | 2 | 4 => len as usize,
            _ => return None,
        };
        (bar == VIRTIO_BAR && offset % len as u64 == 0).then_some((offset, len))
    }

    fn touches_pci_cfg_data(&self, offset: u16, len: usize) -> bool {
        let data = u64::from(self.pci_cfg_cap + VIRTIO_CAP_PCI_CFG_DATA);
        overlaps(u64::from(offset), len, data, 4)
    }
}

/// Notification address of `queue` when BAR 0 is at `base`.
fn notify_addr(base: u64, queue: u16) -> u64 {
    base + NOTIFY_CFG_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER)
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        let len = data.len();
        if overlaps(u64::from(offset), len, u64::from(PCI_STATUS), 2) {
            let asserted = lock(&self.irq).intx_asserted();
            self.config.set_interrupt_status(asserted);
        }
        if self.touches_pci_cfg_data(offset, len) {
            let mut window = [0u8; 4];
            if let Some((bar_offset, n)) = self.pci_cfg_target() {
                self.read_bar0(bar_offset, &mut window[..n]);
            }
            let at = self.pci_cfg_cap + VIRTIO_CAP_PCI_CFG_DATA;
            // The capability lies inside configuration space.
            let _ = self.config.set_raw(at, &window);
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let change = self.config.write(offset, data);
        lock(&self.irq).config_written(&self.config, offset, data.len());
        if self.touches_pci_cfg_data(offset, data.len()) {
            if let Some((bar_offset, n)) = self.pci_cfg_target() {
                let window = self
                    .config_dword(self.pci_cfg_cap + VIRTIO_CAP_PCI_CFG_DATA)
                    .to_le_bytes();
                self.write_bar0(bar_offset, &window[..n]);
            }
        }
        change
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if index != VIRTIO_BAR {
            data.fill(0xff);
        } else if !matches!(data.len(), 1 | 2 | 4 | 8) {
            data.fill(0);
        } else {
            self.read_bar0(offset, data);
        }
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        if index == VIRTIO_BAR && matches!(data.len(), 1 | 2 | 4 | 8) {
            self.write_bar0(offset, data);
        }
    }

    fn bar_moved(&mut self, change: &BarChange) {
        if change.index == VIRTIO_BAR {
            // On failure nothing stays registered and notifications go
            // through the BAR instead.
            let _ = self.move_ioevents(change.new);
        }
    }
}

impl<D: VirtioDevice> Drop for VirtioPciDevice<D> {
    fn drop(&mut self) {
        self.unregister_ioevents();
    }
}

#[cfg(test)]
mod tests;
