//! Interrupt delivery of the virtio-pci transport.
//!
//! Everything an interrupt needs (the MSI-X state, the INTx line, the ISR
//! byte and the vector the driver chose for each source) lives in one
//! [`InterruptState`] behind its own mutex, shared between the transport
//! and the [`VirtioPciInterrupt`] handed to the device. A device worker
//! thread raising an interrupt therefore takes only that small lock, never
//! the transport's (which the PCI segment holds while a vCPU is inside the
//! transport), so the two cannot deadlock. The transport never calls into
//! the device while holding this lock.

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::lock;
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::{Intx, MsixConfig, PciConfiguration};

use super::layout::{overlaps, ISR_CONFIG, ISR_QUEUE, VIRTIO_MSI_NO_VECTOR};
use crate::device::{VirtioInterrupt, VirtioInterruptType};

/// The interrupt half of the transport. See the module documentation.
pub(crate) struct InterruptState {
    msix: Option<MsixConfig>,
    /// The line, which keeps the INTx-disable bit itself: raising INTx never
    /// needs the transport's configuration space. The transport shows its
    /// condition as the status register's interrupt bit on reads.
    intx: Intx,
    isr: u8,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    config_generation: u8,
    /// Failed INTx line updates on guest-driven paths.
    errors: u64,
}

impl InterruptState {
    /// State with every vector unassigned and the line low.
    pub(crate) fn new(msix: Option<MsixConfig>, intx: Intx, num_queues: usize) -> Self {
        Self {
            msix,
            intx,
            isr: 0,
            config_vector: VIRTIO_MSI_NO_VECTOR,
            queue_vectors: vec![VIRTIO_MSI_NO_VECTOR; num_queues],
            config_generation: 0,
            errors: 0,
        }
    }

    /// The MSI-X state, if the function has the capability.
    pub(crate) fn msix(&self) -> Option<&MsixConfig> {
        self.msix.as_ref()
    }

    /// The MSI-X state, mutably.
    pub(crate) fn msix_mut(&mut self) -> Option<&mut MsixConfig> {
        self.msix.as_mut()
    }

    fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(MsixConfig::enabled)
    }

    /// `vector` if the table has it, otherwise NO_VECTOR (what the driver
    /// reads back after asking for a vector the device cannot use).
    fn checked_vector(&self, vector: u16) -> u16 {
        let count = self.msix.as_ref().map_or(0, MsixConfig::num_vectors);
        if vector < count {
            vector
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    /// `msix_config`.
    pub(crate) fn config_vector(&self) -> u16 {
        self.config_vector
    }

    /// Driver write of `msix_config`.
    pub(crate) fn set_config_vector(&mut self, vector: u16) {
        self.config_vector = self.checked_vector(vector);
    }

    /// `queue_msix_vector` of `queue` (NO_VECTOR for a queue that does not
    /// exist).
    pub(crate) fn queue_vector(&self, queue: u16) -> u16 {
        self.queue_vectors
            .get(usize::from(queue))
            .copied()
            .unwrap_or(VIRTIO_MSI_NO_VECTOR)
    }

    /// Driver write of `queue_msix_vector`; ignored for a queue that does
    /// not exist.
    pub(crate) fn set_queue_vector(&mut self, queue: u16, vector: u16) {
        let vector = self.checked_vector(vector);
        if let Some(v) = self.queue_vectors.get_mut(usize::from(queue)) {
            *v = vector;
        }
    }

    /// `config_generation`.
    pub(crate) fn config_generation(&self) -> u8 {
        self.config_generation
    }

    /// Whether the device's INTx condition is asserted.
    pub(crate) fn intx_asserted(&self) -> bool {
        self.intx.asserted()
    }

    /// Failed line updates that could not be reported to a caller.
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    /// Drives INTx: asserted while an ISR bit is set and MSI-X is off.
    fn sync_intx(&mut self) -> io::Result<()> {
        let level = self.isr != 0 && !self.msix_enabled();
        self.intx.set_level(level)
    }

    fn sync_intx_or_count(&mut self) {
        if self.sync_intx().is_err() {
            self.errors += 1;
        }
    }

    /// Raises `kind`: through its MSI-X vector when the driver enabled
    /// MSI-X (nothing for NO_VECTOR), otherwise by setting the ISR bit and
    /// asserting INTx.
    pub(crate) fn trigger(&mut self, kind: VirtioInterruptType) -> io::Result<()> {
        let vector = match kind {
            VirtioInterruptType::Config => {
                self.config_generation = self.config_generation.wrapping_add(1);
                self.isr |= ISR_CONFIG;
                self.config_vector
            }
            VirtioInterruptType::Queue(q) => {
                let Some(v) = self.queue_vectors.get(usize::from(q)) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("virtio queue {q} does not exist"),
                    ));
                };
                *v
            }
        };
        if let Some(msix) = self.msix.as_mut().filter(|m| m.enabled()) {
            if vector == VIRTIO_MSI_NO_VECTOR {
                return Ok(());
            }
            return msix.notify(vector).map_err(io::Error::other);
        }
        if let VirtioInterruptType::Queue(_) = kind {
            self.isr |= ISR_QUEUE;
        }
        self.sync_intx()
    }

    /// [`Self::trigger`] on a guest-driven path, where a failure can only
    /// be counted.
    pub(crate) fn trigger_or_count(&mut self, kind: VirtioInterruptType) {
        if self.trigger(kind).is_err() {
            self.errors += 1;
        }
    }

    /// Driver read of the ISR byte: returns it, clears it and lowers INTx.
    pub(crate) fn read_isr(&mut self) -> u8 {
        let isr = std::mem::take(&mut self.isr);
        self.sync_intx_or_count();
        isr
    }

    /// After a guest configuration write of `len` bytes at `offset`: picks
    /// up MSI-X enable / function mask and the INTx disable bit.
    pub(crate) fn config_written(&mut self, config: &PciConfiguration, offset: u16, len: usize) {
        if let Some(msix) = self.msix.as_mut() {
            msix.config_written(config, offset, len);
        }
        if overlaps(u64::from(offset), len, u64::from(PCI_COMMAND), 2)
            && self.intx.command_written(config.command()).is_err()
        {
            self.errors += 1;
        }
        // MSI-X may have been switched on or off.
        self.sync_intx_or_count();
    }

    /// Device reset: vectors back to NO_VECTOR, ISR cleared, line low.
    /// The MSI-X table and enable bit belong to PCI and are kept.
    pub(crate) fn reset(&mut self) {
        self.config_vector = VIRTIO_MSI_NO_VECTOR;
        self.queue_vectors.fill(VIRTIO_MSI_NO_VECTOR);
        self.isr = 0;
        self.sync_intx_or_count();
    }
}

/// The [`VirtioInterrupt`] a virtio-pci transport hands to its device.
pub(crate) struct VirtioPciInterrupt {
    state: Arc<Mutex<InterruptState>>,
}

impl VirtioPciInterrupt {
    pub(crate) fn new(state: Arc<Mutex<InterruptState>>) -> Self {
        Self { state }
    }
}

impl VirtioInterrupt for VirtioPciInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()> {
        lock(&self.state).trigger(kind)
    }
}
