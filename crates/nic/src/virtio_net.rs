//! virtio-net (virtio 1.x): the device a Linux guest's `virtio_net` driver
//! binds. It owns a backend while idle and hands it, with the activated
//! queues, to a [`NetWorker`] when the driver sets DRIVER_OK.

mod queues;
pub use queues::VirtioNetQueues as Queues;

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::lock;
use tapir_net_backend::{NetBackend, Offloads};
use tapir_virtio::device::DEVICE_TYPE_NET;
use tapir_virtio::{
    ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::*;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use vm_memory::GuestMemoryMmap;

use crate::link::{Carrier, LinkHandle, LinkNotify};
use crate::worker::{GuestFds, NetWorker, NicStats, WorkerHandle, WorkerThread, WorkerThreads};
use queues::VirtioNetQueues;

/// Receive queue index.
pub const RX_QUEUE: u16 = 0;
/// Transmit queue index.
pub const TX_QUEUE: u16 = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Device configuration: `mac` (6 bytes) then `status` (le16).
pub const CONFIG_MAC_OFFSET: usize = 0;
/// Offset of `status` in the device configuration.
pub const CONFIG_STATUS_OFFSET: usize = 6;
/// Size of the device configuration tapir exposes.
pub const CONFIG_SIZE: usize = 8;

fn bit(b: u32) -> u64 {
    1u64 << b
}

/// The features offered for a backend with `offloads`.
pub fn offered_features(offloads: Offloads) -> u64 {
    let mut f = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_RING_F_INDIRECT_DESC);
    if offloads.csum {
        f |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM);
        if offloads.tso4 {
            f |= bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO4);
        }
        if offloads.tso6 {
            f |= bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_GUEST_TSO6);
        }
        if offloads.tso_ecn && (offloads.tso4 || offloads.tso6) {
            f |= bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_ECN);
        }
    }
    f
}

/// The offloads the backend may use toward the guest, from the features
/// the driver acked.
pub fn guest_offloads(acked: u64) -> Offloads {
    let has = |b| acked & bit(b) != 0;
    let csum = has(VIRTIO_NET_F_GUEST_CSUM);
    Offloads {
        csum,
        tso4: csum && has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: csum && has(VIRTIO_NET_F_GUEST_TSO6),
        tso_ecn: csum && has(VIRTIO_NET_F_GUEST_ECN),
    }
}

/// A virtio-net device.
pub struct VirtioNet {
    name: String,
    mac: [u8; 6],
    vlan: Option<u16>,
    features: u64,
    queue_sizes: [u16; 2],
    backend: Option<Box<dyn NetBackend>>,
    worker: Option<WorkerHandle>,
    stats: Arc<NicStats>,
    carrier: Arc<Carrier>,
    link: Arc<VirtioLink>,
    /// Where the worker runs, from the start (see `worker::thread`).
    /// After `worker`: fields drop in order, and the thread ends only once
    /// its worker is stopped.
    thread: WorkerThread,
}

/// Tells an active driver that `status` changed: a configuration
/// interrupt (the transport bumps `config_generation`).
struct VirtioLink {
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
}

impl LinkNotify for VirtioLink {
    fn link_changed(&self, _up: bool) {
        let irq = lock(&self.interrupt).clone();
        // Before DRIVER_OK the driver reads `status` when it starts.
        if let Some(irq) = irq {
            let _ = irq.trigger(VirtioInterruptType::Config);
        }
    }
}

impl VirtioLink {
    fn set_interrupt(&self, irq: Option<Arc<dyn VirtioInterrupt>>) {
        *lock(&self.interrupt) = irq;
    }
}

impl VirtioNet {
    /// A device named `name` (thread names, messages) with `mac`, feeding
    /// `backend`; `vlan` makes it an 802.1Q access port. Its worker thread
    /// (from `threads`) starts now and waits for DRIVER_OK.
    pub fn new(
        name: String,
        mac: [u8; 6],
        vlan: Option<u16>,
        backend: Box<dyn NetBackend>,
        threads: &WorkerThreads,
    ) -> io::Result<Self> {
        let features = offered_features(backend.offloads());
        let thread = threads.spawn(&name)?;
        Ok(Self {
            name,
            mac,
            vlan,
            features,
            queue_sizes: [QUEUE_SIZE; 2],
            backend: Some(backend),
            worker: None,
            stats: Arc::new(NicStats::default()),
            carrier: Carrier::new(),
            link: Arc::new(VirtioLink {
                interrupt: Mutex::new(None),
            }),
            thread,
        })
    }

    /// The handle that connects and disconnects the cable.
    pub fn link(&self) -> LinkHandle {
        LinkHandle::new(self.carrier.clone(), self.link.clone())
    }

    /// The NIC's counters.
    pub fn stats(&self) -> Arc<NicStats> {
        self.stats.clone()
    }

    fn config_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        c[CONFIG_MAC_OFFSET..CONFIG_MAC_OFFSET + 6].copy_from_slice(&self.mac);
        let status = if self.carrier.is_up() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        c[CONFIG_STATUS_OFFSET..CONFIG_STATUS_OFFSET + 2].copy_from_slice(&status.to_le_bytes());
        c
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| c.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // With VIRTIO_F_VERSION_1 the MAC is read-only; nothing is writable.
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::BadQueues("already active".into()));
        }
        let mut rx = None;
        let mut tx = None;
        for q in queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                i => return Err(ActivateError::BadQueues(format!("unexpected queue {i}"))),
            }
        }
        let (Some(rx), Some(tx)) = (rx, tx) else {
            return Err(ActivateError::BadQueues(
                "virtio-net needs both the receive and transmit queue".into(),
            ));
        };
        let mut backend = self
            .backend
            .take()
            .ok_or_else(|| ActivateError::Backend("backend lost by an earlier failure".into()))?;
        let want = guest_offloads(acked_features);
        if let Err(e) = backend.set_offloads(want) {
            self.backend = Some(backend);
            return Err(ActivateError::Backend(format!("setting offloads: {e}")));
        }
        let mrg = acked_features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0;
        let guest = GuestFds {
            tx: tx.notify,
            rx: rx.notify,
            timer: None,
        };
        let frontend = VirtioNetQueues::new(
            mem,
            rx.queue,
            tx.queue,
            interrupt.clone(),
            mrg,
            self.stats.clone(),
        );
        let worker = NetWorker::manual(
            &self.name,
            Box::new(frontend),
            guest,
            backend,
            self.vlan,
            self.stats.clone(),
            self.carrier.clone(),
        );
        match worker.and_then(|w| self.thread.run(w)) {
            Ok(h) => {
                self.worker = Some(h);
                if acked_features & bit(VIRTIO_NET_F_STATUS) != 0 {
                    self.link.set_interrupt(Some(interrupt));
                }
                Ok(())
            }
            Err(e) => Err(ActivateError::Backend(format!(
                "starting the worker thread: {e}"
            ))),
        }
    }

    fn reset(&mut self) {
        self.link.set_interrupt(None);
        if let Some(w) = self.worker.take() {
            // The worker returns the backend when it stops.
            self.backend = w.stop();
        }
    }
}

#[cfg(test)]
mod tests;
