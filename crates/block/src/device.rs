//! virtio-blk (virtio 1.x) as a [`VirtioDevice`]: features, the
//! configuration space, and handing the request queue to the disk's
//! thread at DRIVER_OK.

use std::io;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

use tapir_virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};
use virtio_bindings::bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vm_memory::GuestMemoryMmap;

use crate::backend::{DiskBackend, SECTOR_SIZE};
use crate::queue::BlockQueue;
use crate::request::DiskProps;
use crate::worker::{DiskThread, DiskThreads, WorkerHandle};

/// The request queue's index (one queue).
pub const REQUEST_QUEUE: u16 = 0;
/// Its largest size.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: the queue less the header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Segments per discard request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Sectors per discard segment (2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Discards in units of 4 KiB (holes are punched in file system blocks).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;

fn bit(b: u32) -> u64 {
    1u64 << b
}

/// A disk as the guest is to see it.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Name in messages and thread names (`disk0`, or the `id=`).
    pub name: String,
    /// Read-only (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// The serial number GET_ID answers (at most 20 bytes are used).
    pub serial: String,
}

/// The serial number field: `serial`'s first 20 bytes, zero-padded.
pub fn serial_bytes(serial: &str) -> [u8; VIRTIO_BLK_ID_BYTES as usize] {
    let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
    let n = serial.len().min(id.len());
    id[..n].copy_from_slice(&serial.as_bytes()[..n]);
    id
}

/// A virtio-blk device.
pub struct VirtioBlk {
    name: String,
    disk: Arc<dyn DiskBackend>,
    props: DiskProps,
    features: u64,
    config: Vec<u8>,
    queue_sizes: [u16; 1],
    worker: Option<WorkerHandle>,
    /// After `worker` (fields drop in order): the thread ends only once
    /// its worker is stopped.
    thread: DiskThread,
}

impl VirtioBlk {
    /// A device for `disk` as `config` says; its thread (from `threads`)
    /// starts now and waits for DRIVER_OK.
    pub fn new(
        config: BlockConfig,
        disk: Arc<dyn DiskBackend>,
        threads: &DiskThreads,
    ) -> io::Result<VirtioBlk> {
        let props = DiskProps {
            read_only: config.read_only,
            serial: serial_bytes(&config.serial),
            max_discard_seg: MAX_DISCARD_SEG,
            max_discard_sectors: MAX_DISCARD_SECTORS,
        };
        let mut features = bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_BLK_F_FLUSH)
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_RING_F_EVENT_IDX)
            | bit(VIRTIO_RING_F_INDIRECT_DESC);
        if config.read_only {
            features |= bit(VIRTIO_BLK_F_RO);
        } else {
            features |= bit(VIRTIO_BLK_F_DISCARD);
        }
        let thread = threads.spawn(&config.name)?;
        Ok(VirtioBlk {
            config: config_space(disk.size() / SECTOR_SIZE),
            name: config.name,
            disk,
            props,
            features,
            queue_sizes: [QUEUE_SIZE],
            worker: None,
            thread,
        })
    }
}

/// The device configuration (`virtio_blk_config`, little-endian) of a disk
/// of `sectors` sectors, as far as the discard fields.
pub fn config_space(sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; offset_of!(virtio_blk_config, max_write_zeroes_sectors)];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    put(
        offset_of!(virtio_blk_config, capacity),
        &sectors.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, seg_max),
        &SEG_MAX.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_discard_sectors),
        &MAX_DISCARD_SECTORS.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_discard_seg),
        &MAX_DISCARD_SEG.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, discard_sector_alignment),
        &DISCARD_SECTOR_ALIGNMENT.to_le_bytes(),
    );
    debug_assert!(c.len() <= size_of::<virtio_blk_config>());
    c
}

impl VirtioDevice for VirtioBlk {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // No writable field is offered (no VIRTIO_BLK_F_CONFIG_WCE).
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        _acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::BadQueues("already active".into()));
        }
        let mut queues = queues.into_iter();
        let q = match (queues.next(), queues.next()) {
            (Some(q), None) if q.index == REQUEST_QUEUE => q,
            _ => {
                return Err(ActivateError::BadQueues(
                    "virtio-blk has exactly one request queue".into(),
                ))
            }
        };
        let queue = BlockQueue::new(
            self.name.clone(),
            mem,
            q.queue,
            self.disk.clone(),
            self.props.clone(),
        );
        let handle = self
            .thread
            .run(queue, q.index, q.notify, interrupt)
            .map_err(|e| ActivateError::Backend(format!("starting the disk worker: {e}")))?;
        self.worker = Some(handle);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

impl Drop for VirtioBlk {
    fn drop(&mut self) {
        self.reset();
    }
}
