//! The fuzzing harness of the virtio-blk request queue (the cargo-fuzz
//! target `virtio_blk` in fuzz/, and the seeded test below, which
//! `cargo test` runs on stable Rust): a guest that writes descriptors,
//! request headers, data and ring indexes of its choosing, kicking the
//! queue in between, against an in-memory disk.
//!
//! Whatever the input, the queue must not panic, must not complete more
//! requests than were made available, and must leave a read-only disk as
//! it was. Guest memory is one region; addresses the input makes up
//! may lie outside it (vm-memory refuses those accesses).

use std::sync::Arc;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::backend::{MemDisk, SECTOR_SIZE};
use crate::device::{serial_bytes, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG};
use crate::queue::BlockQueue;
use crate::request::DiskProps;

/// Guest RAM of the harness.
pub const MEM_SIZE: usize = 0x10_0000;
const QSIZE: u16 = 16;
/// The descriptor table; the available ring follows it, the used ring is
/// on the next page.
const RING: u64 = 0x1000;
const AVAIL: u64 = RING + 16 * QSIZE as u64;
const USED: u64 = RING + 0x1000;
/// Where made-up buffers usually point (inside RAM, away from the rings).
const BUFFERS: u64 = 0x8000;
/// Sectors of the disk.
const SECTORS: u64 = 32;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Requests completed with VIRTIO_BLK_S_OK.
    pub ok: u64,
    /// Requests completed otherwise.
    pub failed: u64,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
    /// A guest address: mostly in the buffer area, sometimes anywhere.
    fn addr(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => u64::from(self.u32()) << 8 | u64::from(self.u8()),
            1 => MEM_SIZE as u64 - u64::from(self.u8()),
            _ => BUFFERS + u64::from(self.u16()) * 8,
        }
    }
    /// A buffer length: mostly small multiples of a sector, sometimes odd.
    fn len(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => self.u32(),
            1 => u32::from(self.u8()),
            _ => u32::from(self.u8() % 9) * SECTOR_SIZE as u32 + 16,
        }
    }
}

/// Runs the queue on `data`; see the module documentation.
pub fn run(data: &[u8]) -> Served {
    let mut input = Input(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let disk = Arc::new(MemDisk::new(SECTORS));
    for n in 0..SECTORS {
        disk.fill((n * SECTOR_SIZE) as usize, &[n as u8; SECTOR_SIZE as usize]);
    }
    let before = disk.bytes();
    let read_only = input.u8() & 1 == 1;
    let props = DiskProps {
        read_only,
        serial: serial_bytes("fuzz"),
        max_discard_seg: MAX_DISCARD_SEG,
        max_discard_sectors: MAX_DISCARD_SECTORS,
    };
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(RING as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    let mut queue = BlockQueue::new("fuzz".into(), mem.clone(), q, disk.clone(), props);
    let mut avail_idx: u16 = 0;
    let kinds = [
        VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
        VIRTIO_BLK_T_FLUSH,
        VIRTIO_BLK_T_GET_ID,
        VIRTIO_BLK_T_DISCARD,
    ];
    while !input.done() {
        match input.u8() % 7 {
            // A descriptor.
            0 | 1 => {
                let i = u64::from(input.u8() % QSIZE as u8);
                let (addr, len) = (input.addr(), input.len());
                let (flags, next) = (input.u16() & 7, input.u16() % (QSIZE + 2));
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..].copy_from_slice(&next.to_le_bytes());
                let _ = mem.write_slice(&d, GuestAddress(RING + 16 * i));
            }
            // A request header at a buffer address.
            2 => {
                let at = BUFFERS + u64::from(input.u16()) * 8;
                let kind = kinds[usize::from(input.u8()) % kinds.len()];
                let sector = match input.u8() % 4 {
                    0 => u64::from(input.u32()) << 32 | u64::from(input.u32()),
                    _ => u64::from(input.u8()) % (SECTORS + 4),
                };
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&kind.to_le_bytes());
                h[8..].copy_from_slice(&sector.to_le_bytes());
                let _ = mem.write_slice(&h, GuestAddress(at));
            }
            // Raw bytes somewhere (discard segments, ring fields).
            3 => {
                let at = input.addr();
                let n = usize::from(input.u8() % 32);
                let bytes = input.take(n).to_vec();
                let _ = mem.write_slice(&bytes, GuestAddress(at));
            }
            // A well-formed chain at descriptors i..i+2 (header, data,
            // status) that the other operations may then spoil.
            4 => {
                let i = u16::from(input.u8()) % (QSIZE - 2);
                let base = BUFFERS + u64::from(input.u8()) * 0x1000;
                let kind = kinds[usize::from(input.u8()) % kinds.len()];
                let sector = u64::from(input.u8()) % SECTORS;
                let sectors = u64::from(input.u8() % 4) + 1;
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&kind.to_le_bytes());
                h[8..].copy_from_slice(&sector.to_le_bytes());
                let _ = mem.write_slice(&h, GuestAddress(base));
                let data_len = match kind {
                    VIRTIO_BLK_T_FLUSH => 0,
                    VIRTIO_BLK_T_GET_ID => 20,
                    VIRTIO_BLK_T_DISCARD => 16,
                    _ => sectors * SECTOR_SIZE,
                };
                if kind == VIRTIO_BLK_T_DISCARD {
                    let mut seg = [0u8; 16];
                    seg[..8].copy_from_slice(&sector.to_le_bytes());
                    seg[8..12].copy_from_slice(&(sectors as u32).to_le_bytes());
                    let _ = mem.write_slice(&seg, GuestAddress(base + 0x100));
                }
                let device_writes = matches!(kind, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
                let mut descs = vec![(base, 16u32, 0u16)];
                if data_len > 0 {
                    descs.push((
                        base + 0x100,
                        data_len as u32,
                        if device_writes { 2 } else { 0 },
                    ));
                }
                descs.push((base + 0xff0, 1, 2));
                for (k, &(addr, len, flags)) in descs.iter().enumerate() {
                    let idx = i + k as u16;
                    let last = k + 1 == descs.len();
                    let mut d = [0u8; 16];
                    d[..8].copy_from_slice(&addr.to_le_bytes());
                    d[8..12].copy_from_slice(&len.to_le_bytes());
                    d[12..14].copy_from_slice(&(flags | if last { 0 } else { 1 }).to_le_bytes());
                    d[14..].copy_from_slice(&(idx + 1).to_le_bytes());
                    let _ = mem.write_slice(&d, GuestAddress(RING + 16 * u64::from(idx)));
                }
                let slot = AVAIL + 4 + 2 * u64::from(avail_idx % QSIZE);
                let _ = mem.write_obj(i, GuestAddress(slot));
                avail_idx = avail_idx.wrapping_add(1);
            }
            // Make a head available, or jump the index, then kick.
            _ => {
                if input.u8() % 16 == 0 {
                    avail_idx = avail_idx.wrapping_add(input.u16());
                } else {
                    let head = u16::from(input.u8()) % (QSIZE + 1);
                    let slot = AVAIL + 4 + 2 * u64::from(avail_idx % QSIZE);
                    let _ = mem.write_obj(head, GuestAddress(slot));
                    avail_idx = avail_idx.wrapping_add(1);
                }
                let _ = mem.write_obj(avail_idx, GuestAddress(AVAIL + 2));
                let used_before: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
                queue.process();
                let used: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
                // Never more completions than a full queue per pass... and
                // budgeted passes keep it bounded.
                assert!(used.wrapping_sub(used_before) <= QSIZE * 4);
            }
        }
    }
    if read_only {
        assert!(disk.bytes() == before, "a read-only disk changed");
    }
    let s = queue.stats();
    Served {
        ok: s.ok,
        failed: s.failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random inputs (a 64-bit LCG).
    fn inputs(seed: u64, n: usize, len: usize) -> Vec<Vec<u8>> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 56) as u8
                    })
                    .collect()
            })
            .collect()
    }

    /// Found by the fuzzer in CI (artifacts/virtio_blk/crash-95b62a69...).
    #[test]
    fn fuzz_regression_1() {
        run(&[
            0, 14, 0, 5, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            91, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 27, 0, 0, 0, 255, 255, 4, 8,
            2, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 122, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 1, 4, 7, 2, 2, 18, 0, 5, 26, 0, 5, 26, 0, 5,
        ]);
    }

    #[test]
    fn virtio_blk_survives_seeded_garbage_and_serves_requests() {
        let mut total = Served::default();
        for data in inputs(0x0074_6170_6972, 256, 4096) {
            let s = run(&data);
            total.ok += s.ok;
            total.failed += s.failed;
        }
        // The harness reaches the request path both ways: some requests
        // succeed, some fail.
        assert!(total.ok > 0 && total.failed > 0, "{total:?}");
    }
}
