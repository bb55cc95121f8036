//! The device side of the transport seam.

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// virtio device type of a network card.
pub const DEVICE_TYPE_NET: u32 = 1;

/// Which interrupt a device raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device configuration changed (e.g. link status).
    Config,
    /// A used buffer was added to queue N.
    Queue(u16),
}

/// How a device signals the driver; the transport implements it (MSI-X
/// vector lookup, or ISR bits + INTx). Callable from any thread.
pub trait VirtioInterrupt: Send + Sync {
    /// Raises the interrupt.
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()>;
}

/// Registers queue-notify addresses with the hypervisor so that a guest's
/// notify write signals an eventfd without leaving the kernel (KVM
/// ioeventfd). Implemented by the VMM; a fake in tests.
pub trait IoEventRegistry: Send + Sync {
    /// Makes a `len`-byte MMIO write at `addr` signal `fd`.
    fn register(&self, fd: &EventFd, addr: u64, len: u32) -> io::Result<()>;
    /// Undoes [`IoEventRegistry::register`].
    fn unregister(&self, fd: &EventFd, addr: u64, len: u32) -> io::Result<()>;
}

/// A queue handed to the device when the driver sets DRIVER_OK.
pub struct ActiveQueue {
    /// Queue index.
    pub index: u16,
    /// The queue as the driver configured it (addresses validated).
    pub queue: Queue,
    /// Signalled on every driver notification of this queue.
    pub notify: EventFd,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// Wrong number of queues or bad queue state.
    #[error("bad queue configuration: {0}")]
    BadQueues(String),
    /// The device's back end could not start (e.g. a worker thread).
    #[error("device back end: {0}")]
    Backend(String),
}

/// A virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// virtio device type (1 = net).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (including VIRTIO_F_VERSION_1).
    fn features(&self) -> u64;
    /// Reads device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: start using the queues.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// The driver reset the device: stop using the queues and return to the
    /// initial state. Returns once nothing touches guest memory any more.
    fn reset(&mut self);
}
