//! Unit tests of the virtio-blk request model against hand-built split
//! rings and an in-memory disk, including chains a hostile guest could
//! write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapir_virtio::{ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType};
use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::{DiskBackend, MemDisk, SECTOR_SIZE};
use crate::device::{serial_bytes, BlockConfig, VirtioBlk, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG};
use crate::queue::BlockQueue;
use crate::request::DiskProps;
use crate::worker::DiskThreads;

const MEM_SIZE: usize = 0x40_0000;
const QSIZE: u16 = 16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const RING: u64 = 0x10000;
/// Where tests put headers, data and status bytes.
const HDR: u64 = 0x20000;
const DATA: u64 = 0x30000;
const STATUS: u64 = 0x28000;
/// Sectors of the test disk.
const SECTORS: u64 = 64;
/// A status value no request ever gets: "not written".
const UNTOUCHED: u8 = 0xee;

#[derive(Default)]
struct CountIrq(AtomicUsize);
impl VirtioInterrupt for CountIrq {
    fn trigger(&self, _k: VirtioInterruptType) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A split ring at [`RING`]: descriptors, then avail, then used.
struct Ring {
    avail_idx: u16,
}

impl Ring {
    fn avail(&self) -> u64 {
        RING + 16 * QSIZE as u64
    }
    fn used(&self) -> u64 {
        RING + 0x1000
    }
    /// Writes descriptors `first..` as one chain of (addr, len, flags).
    fn chain(&mut self, mem: &GuestMemoryMmap, first: u16, descs: &[(u64, u32, u16)]) {
        for (k, &(addr, len, flags)) in descs.iter().enumerate() {
            let i = first + k as u16;
            let last = k + 1 == descs.len();
            let flags = if last { flags } else { flags | NEXT };
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&(i + 1).to_le_bytes());
            mem.write_slice(&d, GuestAddress(RING + 16 * i as u64))
                .unwrap();
        }
        self.publish(mem, first);
    }
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail() + 4 + 2 * (self.avail_idx % QSIZE) as u64;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2))
            .unwrap();
    }
    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used() + 2)).unwrap()
    }
    /// (head, len) of used entry `n`.
    fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let a = self.used() + 4 + 8 * (n % QSIZE) as u64;
        (
            mem.read_obj(GuestAddress(a)).unwrap(),
            mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }
    fn queue(&self, mem: &GuestMemoryMmap) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(RING as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail() as u32), Some(0));
        q.set_used_ring_address(Some(self.used() as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }
}

struct Fixture {
    mem: GuestMemoryMmap,
    ring: Ring,
    disk: Arc<MemDisk>,
    q: BlockQueue,
}

fn props(read_only: bool) -> DiskProps {
    DiskProps {
        read_only,
        serial: serial_bytes("tapir-test-serial-0123456789"),
        max_discard_seg: MAX_DISCARD_SEG,
        max_discard_sectors: MAX_DISCARD_SECTORS,
    }
}

fn fixture(read_only: bool) -> Fixture {
    fixture_in(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
        read_only,
    )
}

fn fixture_in(mem: GuestMemoryMmap, read_only: bool) -> Fixture {
    let ring = Ring { avail_idx: 0 };
    let disk = Arc::new(MemDisk::new(SECTORS));
    // Sector n is filled with byte n.
    for n in 0..SECTORS {
        disk.fill((n * SECTOR_SIZE) as usize, &[n as u8; SECTOR_SIZE as usize]);
    }
    let q = BlockQueue::new(
        "disk0".into(),
        mem.clone(),
        ring.queue(&mem),
        disk.clone(),
        props(read_only),
    );
    Fixture { mem, ring, disk, q }
}

impl Fixture {
    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(UNTOUCHED, GuestAddress(STATUS)).unwrap();
    }

    /// Submits `descs` as one chain, runs the queue; (status, used len).
    fn submit(&mut self, descs: &[(u64, u32, u16)]) -> (u8, u32) {
        let n = self.ring.used_idx(&self.mem);
        self.ring.chain(&self.mem, 0, descs);
        assert!(self.q.process(), "the driver is interrupted");
        assert_eq!(self.ring.used_idx(&self.mem), n + 1, "one chain completed");
        let (head, len) = self.ring.used_elem(&self.mem, n);
        assert_eq!(head, 0);
        (self.status(), len)
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// header(R) data(dir) status(W).
    fn request(&mut self, kind: u32, sector: u64, len: u32, data_flags: u16) -> (u8, u32) {
        self.header(kind, sector);
        self.submit(&[(HDR, 16, 0), (DATA, len, data_flags), (STATUS, 1, WRITE)])
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(DATA)).unwrap();
        v
    }
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

#[test]
fn reads_sectors_into_the_guest() {
    let mut f = fixture(false);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 3, 1024, WRITE), (OK, 1025));
    let d = f.data(1024);
    assert!(d[..512].iter().all(|&b| b == 3) && d[512..].iter().all(|&b| b == 4));
}

#[test]
fn a_read_split_over_several_buffers_and_its_header_split_too() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 10);
    let (s, len) = f.submit(&[
        (HDR, 4, 0),
        (HDR + 4, 12, 0),
        (DATA, 100, WRITE),
        (DATA + 100, 412, WRITE),
        (STATUS, 1, WRITE),
    ]);
    assert_eq!((s, len), (OK, 513));
    assert!(f.data(512).iter().all(|&b| b == 10));
}

/// Guest RAM in two regions (two host mappings): a buffer across the
/// seam is read and written whole.
#[test]
fn a_buffer_across_two_memory_regions() {
    let half = MEM_SIZE / 2;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), half),
        (GuestAddress(half as u64), half),
    ])
    .unwrap();
    let mut f = fixture_in(mem, false);
    let at = half as u64 - 512;
    f.header(VIRTIO_BLK_T_IN, 7);
    let r = f.submit(&[(HDR, 16, 0), (at, 1024, WRITE), (STATUS, 1, WRITE)]);
    assert_eq!(r, (OK, 1025));
    let mut d = vec![0u8; 1024];
    f.mem.read_slice(&mut d, GuestAddress(at)).unwrap();
    assert!(d[..512].iter().all(|&b| b == 7) && d[512..].iter().all(|&b| b == 8));
    f.mem.write_slice(&[0x42; 1024], GuestAddress(at)).unwrap();
    f.header(VIRTIO_BLK_T_OUT, 1);
    let r = f.submit(&[(HDR, 16, 0), (at, 1024, 0), (STATUS, 1, WRITE)]);
    assert_eq!(r, (OK, 1));
    let s = SECTOR_SIZE as usize;
    assert!(f.disk.bytes()[s..3 * s].iter().all(|&b| b == 0x42));
}

#[test]
fn writes_guest_data_to_the_disk() {
    let mut f = fixture(false);
    f.mem
        .write_slice(&[0x5a; 1024], GuestAddress(DATA))
        .unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, SECTORS - 2, 1024, 0), (OK, 1));
    let b = f.disk.bytes();
    let at = ((SECTORS - 2) * SECTOR_SIZE) as usize;
    assert!(b[at..].iter().all(|&x| x == 0x5a));
    assert!(
        b[at - 1] == (SECTORS - 3) as u8,
        "the sector before is kept"
    );
}

#[test]
fn requests_past_the_end_fail_and_touch_nothing() {
    let mut f = fixture(false);
    let before = f.disk.bytes();
    f.mem
        .write_slice(&[0x77; 1024], GuestAddress(DATA))
        .unwrap();
    // One sector over the end, a sector far beyond, and one whose end
    // overflows u64.
    for sector in [SECTORS - 1, SECTORS, u64::MAX - 1] {
        assert_eq!(f.request(VIRTIO_BLK_T_OUT, sector, 1024, 0), (IOERR, 1));
        assert_eq!(f.request(VIRTIO_BLK_T_IN, sector, 1024, WRITE), (IOERR, 1));
        assert_eq!(f.data(1024), vec![0x77; 1024], "guest data untouched");
    }
    assert_eq!(f.disk.bytes(), before);
    assert_eq!(f.q.stats().failed, 6);
}

#[test]
fn data_that_is_not_whole_sectors_fails() {
    let mut f = fixture(false);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, 511, WRITE), (IOERR, 1));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, 513, 0), (IOERR, 1));
}

#[test]
fn data_buffers_of_the_wrong_direction_fail() {
    let mut f = fixture(false);
    let before = f.disk.bytes();
    // A read whose data the device would have to read, a write whose
    // data the device would have to write.
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, 512, 0), (IOERR, 1));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, 512, WRITE), (IOERR, 1));
    assert_eq!(f.disk.bytes(), before);
    // A readable buffer after a writable one: not a virtio chain.
    f.header(VIRTIO_BLK_T_OUT, 0);
    let (s, len) = f.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE), (DATA, 512, 0)]);
    assert_eq!((s, len), (UNTOUCHED, 0));
}

#[test]
fn a_chain_without_a_status_byte_is_returned_untouched() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_OUT, 0);
    let before = f.disk.bytes();
    assert_eq!(f.submit(&[(HDR, 16, 0), (DATA, 512, 0)]), (UNTOUCHED, 0));
    assert_eq!(
        f.submit(&[(HDR, 16, 0), (STATUS, 0, WRITE)]),
        (UNTOUCHED, 0)
    );
    assert_eq!(f.disk.bytes(), before);
}

#[test]
fn a_short_header_fails() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        f.submit(&[(HDR, 8, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]),
        (IOERR, 1)
    );
    assert_eq!(f.data(512), vec![0; 512]);
}

#[test]
fn buffers_outside_guest_ram_are_refused() {
    let mut f = fixture(false);
    let outside = MEM_SIZE as u64 - 256;
    f.header(VIRTIO_BLK_T_IN, 0);
    // Data crossing the end of RAM, or far beyond it: IOERR in the
    // status byte, nothing else written.
    assert_eq!(
        f.submit(&[(HDR, 16, 0), (outside, 512, WRITE), (STATUS, 1, WRITE)]),
        (IOERR, 1)
    );
    let mut tail = [0u8; 256];
    f.mem.read_slice(&mut tail, GuestAddress(outside)).unwrap();
    assert_eq!(tail, [0; 256], "the part inside RAM is not written");
    assert_eq!(
        f.submit(&[(HDR, 16, 0), (1 << 40, 512, WRITE), (STATUS, 1, WRITE)]),
        (IOERR, 1)
    );
    // A header outside RAM.
    assert_eq!(
        f.submit(&[(1 << 40, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]),
        (IOERR, 1)
    );
    // The status byte outside RAM: nothing can be said.
    f.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        f.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (u64::MAX, 1, WRITE)]),
        (UNTOUCHED, 0)
    );
    assert_eq!(f.data(512), vec![0; 512]);
}

#[test]
fn a_descriptor_loop_is_refused() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 0);
    f.ring.chain(&f.mem, 0, &[(HDR, 16, 0), (DATA, 512, WRITE)]);
    // Descriptor 1 points back to 0.
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&DATA.to_le_bytes());
    d[8..12].copy_from_slice(&512u32.to_le_bytes());
    d[12..14].copy_from_slice(&(WRITE | NEXT).to_le_bytes());
    d[14..16].copy_from_slice(&0u16.to_le_bytes());
    f.mem.write_slice(&d, GuestAddress(RING + 16)).unwrap();
    f.q.process();
    assert_eq!(f.ring.used_idx(&f.mem), 1);
    assert_eq!(f.ring.used_elem(&f.mem, 0), (0, 0));
}

#[test]
fn a_read_only_disk_refuses_writes_and_discards() {
    let mut f = fixture(true);
    let before = f.disk.bytes();
    f.mem.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, 512, 0), (IOERR, 1));
    discard_segment(&f, 0, 8, 0);
    assert_eq!(f.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (IOERR, 1));
    assert_eq!(f.disk.bytes(), before);
    // Reads and flushes work.
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 1, 512, WRITE), (OK, 513));
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]), (OK, 1));
}

#[test]
fn flush_syncs_the_disk() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]), (OK, 1));
    assert_eq!(f.disk.flushes(), 1);
    f.disk.set_failing(true);
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]), (IOERR, 1));
}

#[test]
fn disk_errors_are_ioerr() {
    let mut f = fixture(false);
    f.disk.set_failing(true);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, 512, WRITE), (IOERR, 1));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, 512, 0), (IOERR, 1));
}

#[test]
fn get_id_answers_the_serial_number() {
    let mut f = fixture(false);
    assert_eq!(f.request(VIRTIO_BLK_T_GET_ID, 0, 20, WRITE), (OK, 21));
    assert_eq!(
        f.data(20),
        b"tapir-test-serial-01".to_vec(),
        "20 bytes at most"
    );
    // A shorter buffer gets what fits.
    f.mem.write_slice(&[0; 20], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_GET_ID, 0, 5, WRITE), (OK, 6));
    assert_eq!(f.data(6), b"tapir\0".to_vec());
    assert_eq!(&serial_bytes("ab")[..3], b"ab\0");
}

fn discard_segment(f: &Fixture, sector: u64, num: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&num.to_le_bytes());
    s[12..].copy_from_slice(&flags.to_le_bytes());
    f.mem.write_slice(&s, GuestAddress(DATA)).unwrap();
}

#[test]
fn discard_zeroes_the_range_and_checks_it() {
    let mut f = fixture(false);
    discard_segment(&f, 2, 3, 0);
    assert_eq!(f.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (OK, 1));
    let b = f.disk.bytes();
    let s = SECTOR_SIZE as usize;
    assert!(b[2 * s..5 * s].iter().all(|&x| x == 0));
    assert!(b[5 * s..6 * s].iter().all(|&x| x == 5), "only the range");
    let before = f.disk.bytes();
    discard_segment(&f, SECTORS - 1, 2, 0);
    assert_eq!(f.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (IOERR, 1));
    discard_segment(&f, 8, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    assert_eq!(f.request(VIRTIO_BLK_T_DISCARD, 0, 16, 0), (UNSUPP, 1));
    discard_segment(&f, 8, 1, 0);
    assert_eq!(f.request(VIRTIO_BLK_T_DISCARD, 0, 15, 0), (IOERR, 1));
    assert_eq!(f.disk.bytes(), before);
}

/// A pass ends at its budget with requests left (the worker then looks
/// for its stop before the next pass); the next pass goes on without a
/// kick.
#[test]
fn a_pass_stops_at_its_budget_and_the_next_goes_on() {
    let mut f = fixture(false);
    f.q.set_budget(2);
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    f.ring.chain(&f.mem, 0, &[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    for _ in 0..4 {
        f.ring.publish(&f.mem, 0);
    }
    let mut passes = vec![];
    loop {
        f.q.process();
        passes.push((f.ring.used_idx(&f.mem), f.q.has_more()));
        if !f.q.has_more() {
            break;
        }
    }
    assert_eq!(passes, vec![(2, true), (4, true), (5, false)]);
    assert_eq!(f.disk.flushes(), 5);
}

#[test]
fn unknown_requests_are_unsupported() {
    let mut f = fixture(false);
    f.header(0x1234, 0);
    assert_eq!(f.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]), (UNSUPP, 1));
}

/// The device end to end: config space, activation on its thread, a
/// kick served and interrupted, reset.
#[test]
fn the_device_serves_kicks_on_its_thread() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let disk = Arc::new(MemDisk::new(SECTORS));
    disk.fill(0, &[9; 512]);
    let mut dev = VirtioBlk::new(
        BlockConfig {
            name: "disk0".into(),
            read_only: false,
            serial: "s".into(),
        },
        disk.clone(),
        &DiskThreads::default(),
    )
    .unwrap();
    assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    let mut ring = Ring { avail_idx: 0 };
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(CountIrq::default());
    dev.activate(
        mem.clone(),
        irq.clone(),
        0,
        vec![ActiveQueue {
            index: 0,
            queue: ring.queue(&mem),
            notify: kick.try_clone().unwrap(),
        }],
    )
    .unwrap();
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    ring.chain(
        &mem,
        0,
        &[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)],
    );
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while irq.0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no interrupt");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ring.used_idx(&mem), 1);
    let mut d = [0u8; 512];
    mem.read_slice(&mut d, GuestAddress(DATA)).unwrap();
    assert_eq!(d, [9; 512]);
    dev.reset();
    // Reset, it activates again.
    dev.activate(
        mem.clone(),
        irq,
        0,
        vec![ActiveQueue {
            index: 0,
            queue: ring.queue(&mem),
            notify: kick,
        }],
    )
    .unwrap();
}

#[test]
fn a_read_only_device_offers_ro_and_no_discard() {
    let dev = VirtioBlk::new(
        BlockConfig {
            name: "disk1".into(),
            read_only: true,
            serial: "s".into(),
        },
        Arc::new(MemDisk::new(1)),
        &DiskThreads::default(),
    )
    .unwrap();
    assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(dev.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(DiskBackend::size(&MemDisk::new(1)), SECTOR_SIZE);
}
