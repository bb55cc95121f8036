//! Unit tests of the virtio-net queues against hand-built split rings,
//! including malformed ones a hostile guest could write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tapir_net_backend::{NetHdr, NET_HDR_LEN};
use tapir_virtio::{ActiveQueue, VirtioInterrupt, VirtioInterruptType};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use tapir_net_backend::guest_buf;

use super::queues::VirtioNetQueues;
use crate::worker::{NicFrontend, NicStats, RxPush, WorkerThreads};

const MEM_SIZE: usize = 0x40_0000;
const QSIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

#[derive(Default)]
struct CountIrq(AtomicUsize);
impl VirtioInterrupt for CountIrq {
    fn trigger(&self, _k: VirtioInterruptType) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A split ring at `base`: descriptors, then avail, then used.
struct Ring {
    base: u64,
    avail_idx: u16,
}

impl Ring {
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 16 * QSIZE as u64
    }
    fn used(&self) -> u64 {
        self.base + 0x1000
    }
    fn set_desc(&self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(self.desc() + 16 * i as u64);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, a).unwrap();
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
    fn used_elem(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let a = self.used() + 4 + 8 * (n % QSIZE) as u64;
        (
            mem.read_obj(GuestAddress(a)).unwrap(),
            mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }
    fn queue(&self, mem: &GuestMemoryMmap, index: u16) -> ActiveQueue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.desc() as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail() as u32), Some(0));
        q.set_used_ring_address(Some(self.used() as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        ActiveQueue {
            index,
            queue: q,
            notify: EventFd::new(EFD_NONBLOCK).unwrap(),
        }
    }
}

struct Fixture {
    mem: GuestMemoryMmap,
    rx: Ring,
    tx: Ring,
    q: Option<VirtioNetQueues>,
    stats: Arc<NicStats>,
    irq: Arc<CountIrq>,
}

fn fixture(mrg: bool) -> Fixture {
    fixture_with_kicks(mrg).0
}

/// A fixture plus clones of its RX and TX kick eventfds.
fn fixture_with_kicks(mrg: bool) -> (Fixture, EventFd, EventFd) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let rx = Ring {
        base: 0x10000,
        avail_idx: 0,
    };
    let tx = Ring {
        base: 0x20000,
        avail_idx: 0,
    };
    let stats = Arc::new(NicStats::default());
    let irq = Arc::new(CountIrq::default());
    let (rxq, txq) = (rx.queue(&mem, 0), tx.queue(&mem, 1));
    let kicks = (
        rxq.notify.try_clone().unwrap(),
        txq.notify.try_clone().unwrap(),
    );
    let q = VirtioNetQueues::new(
        mem.clone(),
        rxq.queue,
        txq.queue,
        irq.clone(),
        mrg,
        stats.clone(),
    );
    (
        Fixture {
            mem,
            rx,
            tx,
            q: Some(q),
            stats,
            irq,
        },
        kicks.0,
        kicks.1,
    )
}

fn ethernet(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn tx_frame_is_read_from_a_two_descriptor_chain() {
    let mut f = fixture(true);
    let hdr = NetHdr {
        flags: 1,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    let frame = ethernet(100);
    f.mem
        .write_slice(&hdr.to_bytes(), GuestAddress(0x30000))
        .unwrap();
    f.mem.write_slice(&frame, GuestAddress(0x31000)).unwrap();
    f.tx.set_desc(&f.mem, 0, 0x30000, NET_HDR_LEN as u32, F_NEXT, 1);
    f.tx.set_desc(&f.mem, 1, 0x31000, 100, 0, 0);
    f.tx.publish(&f.mem, 0);
    let (mut h, mut buf) = (NetHdr::default(), Vec::new());
    assert!(f.q.as_mut().unwrap().pop_tx(&mut h, &mut buf));
    assert_eq!(h, hdr);
    assert_eq!(buf, frame);
    assert_eq!(f.tx.used_idx(&f.mem), 0, "not returned before completion");
    f.q.as_mut().unwrap().complete_tx();
    assert_eq!(f.tx.used_idx(&f.mem), 1);
    assert!(!f.q.as_mut().unwrap().pop_tx(&mut h, &mut buf));
    f.q.as_mut().unwrap().flush();
    assert_eq!(f.irq.0.load(Ordering::SeqCst), 1);
}

#[test]
fn malformed_tx_chains_are_returned_and_counted() {
    let mut f = fixture(true);
    // 1: write-only descriptor in a TX chain.
    f.tx.set_desc(&f.mem, 0, 0x30000, 64, F_WRITE, 0);
    f.tx.publish(&f.mem, 0);
    // 2: buffer outside guest memory.
    f.tx.set_desc(&f.mem, 1, MEM_SIZE as u64 + 0x1000, 64, 0, 0);
    f.tx.publish(&f.mem, 1);
    // 3: a chain that loops on itself.
    f.tx.set_desc(&f.mem, 2, 0x30000, 64, F_NEXT, 2);
    f.tx.publish(&f.mem, 2);
    // 4: zero-length (shorter than the header).
    f.tx.set_desc(&f.mem, 3, 0x30000, 0, 0, 0);
    f.tx.publish(&f.mem, 3);
    // 5: oversized: 16 descriptors of 64 KiB.
    for i in 4..15u16 {
        f.tx.set_desc(
            &f.mem,
            i,
            0x100000,
            0x10000,
            if i < 14 { F_NEXT } else { 0 },
            i + 1,
        );
    }
    f.tx.publish(&f.mem, 4);
    // 6: an index beyond the queue.
    f.tx.publish(&f.mem, 200);
    let (mut h, mut buf) = (NetHdr::default(), Vec::new());
    assert!(
        !f.q.as_mut().unwrap().pop_tx(&mut h, &mut buf),
        "no frame is produced from bad chains"
    );
    assert!(
        f.stats.tx_dropped.load(Ordering::SeqCst) >= 5,
        "{:?}",
        f.stats
    );
    assert!(
        f.tx.used_idx(&f.mem) >= 5,
        "bad chains are given back to the guest"
    );
}

/// CVE-2016-5403 class: an available index further ahead than the queue
/// has entries. virtio-queue refuses it, yet its re-arm reports "more
/// arrived"; the transmit path must end, leave the ring alone from then on
/// (until a reset makes new queues), and move nothing.
#[test]
fn a_tx_avail_index_too_far_ahead_stops_the_ring_instead_of_spinning() {
    let mut f = fixture(true);
    f.tx.set_desc(&f.mem, 0, 0x30000, 64, 0, 0);
    f.tx.publish(&f.mem, 0);
    f.mem
        .write_obj(QSIZE + 5, GuestAddress(f.tx.avail() + 2))
        .unwrap();
    let (mut h, mut buf) = (NetHdr::default(), Vec::new());
    let q = f.q.as_mut().unwrap();
    assert!(!q.pop_tx(&mut h, &mut buf), "nothing is taken");
    // Even once the index is sane again, the ring stays stopped.
    f.mem
        .write_obj(1u16, GuestAddress(f.tx.avail() + 2))
        .unwrap();
    assert!(!q.pop_tx(&mut h, &mut buf), "stopped until reset");
    assert_eq!(f.tx.used_idx(&f.mem), 0);
    assert_eq!(f.stats.tx_frames.load(Ordering::SeqCst), 0);
}

/// The same on the receive side: no frame is placed, and the worker is not
/// told to come back ("buffers again") for a ring it may not use.
#[test]
fn an_rx_avail_index_too_far_ahead_stops_the_ring_instead_of_spinning() {
    let mut f = fixture(true);
    f.rx.set_desc(&f.mem, 0, 0x30000, 2048, F_WRITE, 0);
    f.rx.publish(&f.mem, 0);
    f.mem
        .write_obj(QSIZE + 1, GuestAddress(f.rx.avail() + 2))
        .unwrap();
    let q = f.q.as_mut().unwrap();
    assert_eq!(
        q.push_rx(&NetHdr::default(), &ethernet(60)),
        RxPush::NoBuffers
    );
    assert!(!q.rx_wait_buffers(), "a broken ring is not waited on");
    assert_eq!(f.rx.used_idx(&f.mem), 0);
}

#[test]
fn rx_waits_for_buffers_then_delivers_with_the_header() {
    let mut f = fixture(false);
    let frame = ethernet(60);
    let hdr = NetHdr {
        flags: 2,
        ..Default::default()
    };
    assert_eq!(
        f.q.as_mut().unwrap().push_rx(&hdr, &frame),
        RxPush::NoBuffers
    );
    f.rx.set_desc(&f.mem, 0, 0x40000, 2048, F_WRITE, 0);
    f.rx.publish(&f.mem, 0);
    assert_eq!(
        f.q.as_mut().unwrap().push_rx(&hdr, &frame),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_elem(&f.mem, 0), (0, (NET_HDR_LEN + 60) as u32));
    let mut got = vec![0u8; NET_HDR_LEN + 60];
    f.mem.read_slice(&mut got, GuestAddress(0x40000)).unwrap();
    let gh = NetHdr::from_bytes(&got[..NET_HDR_LEN]);
    assert_eq!((gh.flags, gh.num_buffers), (2, 1));
    assert_eq!(&got[NET_HDR_LEN..], &frame[..]);
}

#[test]
fn rx_merges_buffers_and_rolls_back_when_short() {
    let mut f = fixture(true);
    let frame = ethernet(3000);
    f.rx.set_desc(&f.mem, 0, 0x40000, 1536, F_WRITE, 0);
    f.rx.publish(&f.mem, 0);
    f.rx.set_desc(&f.mem, 1, 0x41000, 1536, F_WRITE, 0);
    f.rx.publish(&f.mem, 1);
    // Two 1536-byte buffers hold the 3000-byte frame and its header, not 3100 bytes.
    let big = ethernet(3100);
    assert_eq!(
        f.q.as_mut().unwrap().push_rx(&NetHdr::default(), &big),
        RxPush::NoBuffers
    );
    assert_eq!(f.rx.used_idx(&f.mem), 0, "nothing consumed on rollback");
    assert_eq!(
        f.q.as_mut().unwrap().push_rx(&NetHdr::default(), &frame),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_idx(&f.mem), 2);
    let mut h = [0u8; NET_HDR_LEN];
    f.mem.read_slice(&mut h, GuestAddress(0x40000)).unwrap();
    assert_eq!(NetHdr::from_bytes(&h).num_buffers, 2);
    let mut tail = vec![0u8; 3000 + NET_HDR_LEN - 1536];
    f.mem.read_slice(&mut tail, GuestAddress(0x41000)).unwrap();
    assert_eq!(&tail[..], &frame[1536 - NET_HDR_LEN..]);
}

#[test]
fn rx_without_mrg_drops_frames_too_big_for_one_buffer() {
    let mut f = fixture(false);
    f.rx.set_desc(&f.mem, 0, 0x40000, 100, F_WRITE, 0);
    f.rx.publish(&f.mem, 0);
    assert_eq!(
        f.q.as_mut()
            .unwrap()
            .push_rx(&NetHdr::default(), &ethernet(1500)),
        RxPush::Dropped
    );
    assert_eq!(f.rx.used_elem(&f.mem, 0), (0, 0));
}

#[test]
fn rx_skips_read_only_unmapped_and_looping_buffers() {
    let mut f = fixture(false);
    f.rx.set_desc(&f.mem, 0, 0x40000, 2048, 0, 0); // read-only
    f.rx.publish(&f.mem, 0);
    f.rx.set_desc(&f.mem, 1, MEM_SIZE as u64 - 8, 2048, F_WRITE, 0); // runs off RAM
    f.rx.publish(&f.mem, 1);
    f.rx.set_desc(&f.mem, 2, 0x40000, 2048, F_WRITE | F_NEXT, 2); // loops
    f.rx.publish(&f.mem, 2);
    f.rx.publish(&f.mem, 200); // a head index beyond the queue
                               // All are counted and returned unused (the bad index cannot be), and
                               // none takes the frame.
    assert_eq!(
        f.q.as_mut()
            .unwrap()
            .push_rx(&NetHdr::default(), &ethernet(60)),
        RxPush::NoBuffers
    );
    assert_eq!(f.stats.rx_bad_buffers.load(Ordering::SeqCst), 4);
    assert_eq!(f.rx.used_idx(&f.mem), 3);
    for n in 0..3 {
        assert_eq!(f.rx.used_elem(&f.mem, n), (n as u32, 0));
    }
    // A good buffer after them takes the frame.
    f.rx.set_desc(&f.mem, 3, 0x40000, 2048, F_WRITE, 0);
    f.rx.publish(&f.mem, 3);
    assert_eq!(
        f.q.as_mut()
            .unwrap()
            .push_rx(&NetHdr::default(), &ethernet(60)),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_elem(&f.mem, 3), (3, (NET_HDR_LEN + 60) as u32));
}

#[test]
fn rx_waits_for_new_buffers_instead_of_retrying_the_same() {
    let mut f = fixture(true);
    f.rx.set_desc(&f.mem, 0, 0x40000, 1024, F_WRITE, 0);
    f.rx.publish(&f.mem, 0);
    let q = f.q.as_mut().unwrap();
    let frame = ethernet(1500);
    assert_eq!(q.push_rx(&NetHdr::default(), &frame), RxPush::NoBuffers);
    // The guest added nothing since: no point in retrying (no busy loop).
    assert!(!q.rx_wait_buffers());
    f.rx.set_desc(&f.mem, 1, 0x41000, 1024, F_WRITE, 0);
    f.rx.publish(&f.mem, 1);
    let q = f.q.as_mut().unwrap();
    assert!(q.rx_wait_buffers(), "a buffer was added: retry");
    assert_eq!(q.push_rx(&NetHdr::default(), &frame), RxPush::Delivered);
    assert_eq!(f.rx.used_idx(&f.mem), 2);
    assert_eq!(f.rx.used_elem(&f.mem, 0), (0, 1024));
    assert_eq!(
        f.rx.used_elem(&f.mem, 1),
        (1, (NET_HDR_LEN + 1500 - 1024) as u32)
    );
}

#[test]
fn tx_frame_is_left_in_guest_memory_with_a_split_header() {
    let mut f = fixture(true);
    let hdr = NetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 7,
    };
    let frame = ethernet(3000);
    let mut bytes = hdr.to_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    // Header split 5 + 7, then the frame over two more descriptors.
    f.mem
        .write_slice(&bytes[..5], GuestAddress(0x30000))
        .unwrap();
    f.mem
        .write_slice(&bytes[5..20], GuestAddress(0x31000))
        .unwrap();
    f.mem
        .write_slice(&bytes[20..], GuestAddress(0x32000))
        .unwrap();
    f.tx.set_desc(&f.mem, 0, 0x30000, 5, F_NEXT, 1);
    f.tx.set_desc(&f.mem, 1, 0x31000, 15, F_NEXT, 2);
    f.tx.set_desc(&f.mem, 2, 0x32000, (bytes.len() - 20) as u32, 0, 0);
    f.tx.publish(&f.mem, 0);
    let (mut h, mut buf, mut guest) = (NetHdr::default(), Vec::new(), Vec::new());
    let q = f.q.as_mut().unwrap();
    assert!(q.pop_tx_guest(&mut h, &mut buf, &mut guest));
    assert_eq!(
        h,
        NetHdr {
            num_buffers: 0,
            ..hdr
        }
    );
    assert!(buf.is_empty(), "not copied");
    assert_eq!(guest.len(), 2, "the frame part of descriptors 1 and 2");
    assert_eq!(guest_buf::total_len(&guest), 3000);
    let mut got = Vec::new();
    guest_buf::gather(&guest, &mut got);
    assert_eq!(got, frame);
    q.complete_tx();
    assert_eq!(f.tx.used_elem(&f.mem, 0), (0, 0));
}

/// Posts `n` receive chains of one `len`-byte buffer each, from slot `first`.
fn post_rx_buffers(f: &mut Fixture, first: u16, n: u16, len: u32) {
    for i in first..first + n {
        f.rx.set_desc(&f.mem, i, 0x100000 + 0x10000 * i as u64, len, F_WRITE, 0);
        f.rx.publish(&f.mem, i);
    }
}

#[test]
fn rx_direct_reads_span_reserved_chains_and_keep_the_rest() {
    let mut f = fixture(true);
    // 10 chains of 8 KiB: room for the largest frame (65574 bytes with its
    // header) and some left.
    post_rx_buffers(&mut f, 0, 10, 8192);
    let q = f.q.as_mut().unwrap();
    let frame = ethernet(20000);
    let bufs = q.rx_direct().expect("room for a direct read").to_vec();
    assert!(guest_buf::total_len(&bufs) >= crate::worker::MAX_FRAME);
    assert_eq!(guest_buf::scatter(&bufs, &frame), frame.len());
    let hdr = NetHdr {
        flags: 2,
        ..Default::default()
    };
    assert_eq!(q.rx_direct_done(&hdr, frame.len()), RxPush::Delivered);
    // 20012 bytes: chains 0, 1 full, chain 2 with the rest, in one update.
    assert_eq!(f.rx.used_idx(&f.mem), 3);
    assert_eq!(f.rx.used_elem(&f.mem, 0), (0, 8192));
    assert_eq!(f.rx.used_elem(&f.mem, 1), (1, 8192));
    assert_eq!(f.rx.used_elem(&f.mem, 2), (2, 20012 - 2 * 8192));
    let mut got = vec![0u8; 8192];
    f.mem.read_slice(&mut got, GuestAddress(0x100000)).unwrap();
    let gh = NetHdr::from_bytes(&got[..NET_HDR_LEN]);
    assert_eq!((gh.flags, gh.num_buffers), (2, 3));
    assert_eq!(&got[NET_HDR_LEN..], &frame[..8192 - NET_HDR_LEN]);
    // The 7 chains left (56 KiB) are not enough for another direct read,
    // but a copied frame goes into the first of them, chain 3.
    let q = f.q.as_mut().unwrap();
    assert!(q.rx_direct().is_none());
    assert_eq!(
        q.push_rx(&NetHdr::default(), &ethernet(100)),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_elem(&f.mem, 3), (3, (NET_HDR_LEN + 100) as u32));
    // Once the guest posts more, direct reads resume.
    post_rx_buffers(&mut f, 10, 4, 8192);
    assert!(f.q.as_mut().unwrap().rx_direct().is_some());
}

#[test]
fn rx_direct_needs_one_big_chain_without_mrg() {
    let mut f = fixture(false);
    post_rx_buffers(&mut f, 0, 4, 8192);
    let q = f.q.as_mut().unwrap();
    assert!(q.rx_direct().is_none(), "no chain holds the largest frame");
    assert_eq!(
        q.push_rx(&NetHdr::default(), &ethernet(1000)),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_elem(&f.mem, 0), (0, (NET_HDR_LEN + 1000) as u32));
    // One chain of 12 x 8 KiB descriptors, as Linux's "big packets" mode
    // posts without MRG_RXBUF.
    for d in 0..12u16 {
        let flags = F_WRITE | if d < 11 { F_NEXT } else { 0 };
        f.rx.set_desc(
            &f.mem,
            4 + d,
            0x200000 + 0x2000 * d as u64,
            8192,
            flags,
            5 + d,
        );
    }
    f.rx.publish(&f.mem, 4);
    let q = f.q.as_mut().unwrap();
    // Chains 1-3 are taken one at a time and are too small for a direct
    // read; the copy path fills them first.
    for _ in 0..3 {
        assert!(q.rx_direct().is_none());
        assert_eq!(
            q.push_rx(&NetHdr::default(), &ethernet(60)),
            RxPush::Delivered
        );
    }
    let bufs = q.rx_direct().expect("the 96 KiB chain").to_vec();
    assert_eq!(guest_buf::total_len(&bufs), 12 * 8192 - NET_HDR_LEN);
    assert_eq!(
        q.rx_direct_done(&NetHdr::default(), 70000),
        RxPush::Delivered
    );
    assert_eq!(f.rx.used_elem(&f.mem, 4), (4, (NET_HDR_LEN + 70000) as u32));
}

// ---- The generic worker end to end, over the in-memory backend ----

use tapir_net_backend::{MemoryBackend, Offloads};

use crate::worker::NetWorker;

/// Runs worker `w` (on the test's thread) until it has nothing left to
/// do, then checks `f`; again, for a check that gives it more work, a few
/// rounds. Deterministic: nothing waits for time to pass.
fn eventually(w: &mut NetWorker, what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..8 {
        w.pump().expect("the worker's event wait");
        if f() {
            return;
        }
    }
    panic!("not reached after the worker ran out of work: {what}");
}

/// Queues `frame` (with a zero header) for transmission at descriptor `i`.
fn guest_send(f: &mut Fixture, i: u16, frame: &[u8]) {
    let base = 0x100000 + 0x10000 * i as u64;
    f.mem
        .write_slice(&NetHdr::default().to_bytes(), GuestAddress(base))
        .unwrap();
    f.mem
        .write_slice(frame, GuestAddress(base + NET_HDR_LEN as u64))
        .unwrap();
    f.tx.set_desc(&f.mem, i, base, (NET_HDR_LEN + frame.len()) as u32, 0, 0);
    f.tx.publish(&f.mem, i);
}

fn guest_post_rx(f: &mut Fixture, i: u16) {
    f.rx.set_desc(&f.mem, i, 0x200000 + 0x1000 * i as u64, 2048, F_WRITE, 0);
    f.rx.publish(&f.mem, i);
}

type WorkerFixture = (
    Fixture,
    tapir_net_backend::MemoryPeer,
    EventFd,
    EventFd,
    NetWorker,
);

/// A fixture whose queues are handed to a worker over the in-memory
/// backend, driven on the test's thread; returns the backend's peer and
/// the kick fds.
fn start_worker(capacity: usize, vlan: Option<u16>) -> WorkerFixture {
    start_worker_with(capacity, vlan, crate::link::Carrier::new())
}

/// [`start_worker`] with the cable state given.
fn start_worker_with(
    capacity: usize,
    vlan: Option<u16>,
    carrier: Arc<crate::link::Carrier>,
) -> WorkerFixture {
    let (mut f, rx_kick, tx_kick) = fixture_with_kicks(true);
    let (backend, peer) = MemoryBackend::new(capacity, Offloads::default()).unwrap();
    let front = f.q.take().unwrap();
    let guest = crate::worker::GuestFds {
        tx: tx_kick.try_clone().unwrap(),
        rx: rx_kick.try_clone().unwrap(),
        timer: None,
    };
    let w = NetWorker::manual(
        "test",
        Box::new(front),
        guest,
        Box::new(backend),
        vlan,
        f.stats.clone(),
        carrier,
    )
    .unwrap();
    (f, peer, rx_kick, tx_kick, w)
}

#[test]
fn worker_moves_frames_both_ways_and_applies_the_vlan_rule() {
    let (mut f, peer, rx_kick, tx_kick, mut w) = start_worker(16, Some(100));
    let frame = ethernet(60);
    guest_send(&mut f, 0, &frame);
    tx_kick.write(1).unwrap();
    eventually(&mut w, "tagged frame at the backend", || {
        peer.pending_from_guest() == 1
    });
    let (_, sent) = peer.take().unwrap();
    assert_eq!(
        &sent[12..16],
        &[0x81, 0x00, 0x00, 100],
        "tagged with VLAN 100"
    );
    assert_eq!(sent.len(), 64);

    guest_post_rx(&mut f, 0);
    guest_post_rx(&mut f, 1);
    rx_kick.write(1).unwrap();
    // Untagged and other-VLAN frames are dropped; VLAN 100 arrives untagged.
    peer.inject(NetHdr::default(), &frame).unwrap();
    let mut other = frame.clone();
    other.splice(12..12, [0x81, 0x00, 0x00, 200]);
    peer.inject(NetHdr::default(), &other).unwrap();
    let mut ours = frame.clone();
    ours.splice(12..12, [0x81, 0x00, 0x00, 100]);
    peer.inject(NetHdr::default(), &ours).unwrap();
    eventually(&mut w, "one frame delivered", || f.rx.used_idx(&f.mem) == 1);
    assert_eq!(
        f.rx.used_elem(&f.mem, 0).1 as usize,
        NET_HDR_LEN + frame.len()
    );
    let mut got = vec![0u8; frame.len()];
    f.mem
        .read_slice(&mut got, GuestAddress(0x200000 + NET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, frame);
    eventually(&mut w, "two dropped by the VLAN rule", || {
        f.stats.rx_dropped.load(Ordering::SeqCst) == 2
    });
    assert!(
        f.irq.0.load(Ordering::SeqCst) >= 1,
        "the guest was interrupted"
    );
}

#[test]
fn worker_holds_frames_under_backpressure_and_loses_none() {
    let (mut f, peer, _rx_kick, tx_kick, mut w) = start_worker(1, None);
    for i in 0..4u16 {
        guest_send(&mut f, i, &ethernet(60 + i as usize));
    }
    tx_kick.write(1).unwrap();
    let mut got = Vec::new();
    eventually(&mut w, "all four frames, one at a time", || {
        if let Some((_, fr)) = peer.take() {
            got.push(fr.len());
        }
        got.len() == 4
    });
    assert_eq!(got, vec![60, 61, 62, 63], "in order, none lost");
    assert!(
        f.stats.tx_stalls.load(Ordering::SeqCst) >= 1,
        "the backend pushed back"
    );
    eventually(&mut w, "all TX buffers returned", || {
        f.tx.used_idx(&f.mem) == 4
    });
}

#[test]
fn worker_holds_tagged_frames_under_backpressure_tagged_once() {
    let (mut f, peer, _rx_kick, tx_kick, mut w) = start_worker(1, Some(7));
    for i in 0..4u16 {
        guest_send(&mut f, i, &ethernet(60 + i as usize));
    }
    tx_kick.write(1).unwrap();
    let mut got = Vec::new();
    eventually(&mut w, "all four frames, one at a time", || {
        if let Some((_, fr)) = peer.take() {
            got.push(fr);
        }
        got.len() == 4
    });
    for (i, fr) in got.iter().enumerate() {
        assert_eq!(
            fr.len(),
            64 + i,
            "one tag, however often the frame was held"
        );
        let frame = ethernet(60 + i);
        assert_eq!(&fr[12..16], &[0x81, 0x00, 0x00, 7]);
        assert_eq!((&fr[..12], &fr[16..]), (&frame[..12], &frame[12..]));
    }
    assert!(f.stats.tx_stalls.load(Ordering::SeqCst) >= 1);
}

#[test]
fn worker_pauses_rx_without_buffers_and_resumes_on_kick() {
    let (mut f, peer, rx_kick, _tx_kick, mut w) = start_worker(8, None);
    peer.inject(NetHdr::default(), &ethernet(70)).unwrap();
    peer.inject(NetHdr::default(), &ethernet(71)).unwrap();
    eventually(&mut w, "the worker noticed there are no buffers", || {
        f.stats.rx_stalls.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(f.rx.used_idx(&f.mem), 0);
    guest_post_rx(&mut f, 0);
    guest_post_rx(&mut f, 1);
    rx_kick.write(1).unwrap();
    eventually(&mut w, "both frames delivered after the kick", || {
        f.rx.used_idx(&f.mem) == 2
    });
    assert_eq!(f.rx.used_elem(&f.mem, 0).1 as usize, NET_HDR_LEN + 70);
    assert_eq!(f.rx.used_elem(&f.mem, 1).1 as usize, NET_HDR_LEN + 71);
    assert_eq!(f.stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn worker_reads_large_frames_straight_into_guest_buffers() {
    let (mut f, peer, rx_kick, _tx_kick, mut w) = start_worker(8, None);
    post_rx_buffers(&mut f, 0, 10, 8192);
    rx_kick.write(1).unwrap();
    let big = ethernet(30000);
    peer.inject(NetHdr::default(), &big).unwrap();
    peer.inject(NetHdr::default(), &ethernet(80)).unwrap();
    // 30012 bytes fill chains 0-3; the small frame goes to chain 4.
    eventually(&mut w, "both frames delivered", || {
        f.rx.used_idx(&f.mem) == 5
    });
    let mut got = vec![0u8; 4 * 8192];
    for i in 0..4u64 {
        f.mem
            .read_slice(
                &mut got[i as usize * 8192..(i as usize + 1) * 8192],
                GuestAddress(0x100000 + 0x10000 * i),
            )
            .unwrap();
    }
    assert_eq!(NetHdr::from_bytes(&got[..NET_HDR_LEN]).num_buffers, 4);
    assert_eq!(&got[NET_HDR_LEN..NET_HDR_LEN + 30000], &big[..]);
    assert_eq!(f.rx.used_elem(&f.mem, 3), (3, (30012 - 3 * 8192) as u32));
    assert_eq!(f.rx.used_elem(&f.mem, 4), (4, (NET_HDR_LEN + 80) as u32));
    assert_eq!(f.stats.rx_frames.load(Ordering::SeqCst), 2);
    assert_eq!(f.stats.rx_dropped.load(Ordering::SeqCst), 0);
}

/// Records every interrupt the device raises.
#[derive(Default)]
struct RecIrq(std::sync::Mutex<Vec<VirtioInterruptType>>);
impl VirtioInterrupt for RecIrq {
    fn trigger(&self, k: VirtioInterruptType) -> std::io::Result<()> {
        self.0.lock().unwrap().push(k);
        Ok(())
    }
}

struct NullLink;
impl crate::link::LinkNotify for NullLink {
    fn link_changed(&self, _up: bool) {}
}

#[test]
fn worker_drops_and_counts_frames_both_ways_while_the_cable_is_out() {
    let carrier = crate::link::Carrier::new();
    let link = crate::link::LinkHandle::new(carrier.clone(), Arc::new(NullLink));
    let (mut f, peer, rx_kick, tx_kick, mut w) = start_worker_with(8, None, carrier);
    assert!(link.set(false));
    guest_post_rx(&mut f, 0);
    rx_kick.write(1).unwrap();
    peer.inject(NetHdr::default(), &ethernet(70)).unwrap();
    eventually(&mut w, "the backend frame dropped", || {
        f.stats.rx_link_down.load(Ordering::SeqCst) == 1
    });
    assert_eq!(f.rx.used_idx(&f.mem), 0, "the guest buffer was not used");
    guest_send(&mut f, 0, &ethernet(60));
    tx_kick.write(1).unwrap();
    eventually(&mut w, "the guest frame returned", || {
        f.tx.used_idx(&f.mem) == 1
    });
    assert_eq!(f.stats.tx_link_down.load(Ordering::SeqCst), 1);
    assert_eq!(peer.pending_from_guest(), 0, "nothing reached the backend");
    let losses = f.stats.losses();
    assert_eq!(losses, vec!["tx_link_down=1", "rx_link_down=1"]);

    // The cable back in: frames pass both ways.
    assert!(link.set(true));
    peer.inject(NetHdr::default(), &ethernet(71)).unwrap();
    eventually(&mut w, "delivered", || f.rx.used_idx(&f.mem) == 1);
    assert_eq!(f.rx.used_elem(&f.mem, 0).1 as usize, NET_HDR_LEN + 71);
    guest_send(&mut f, 1, &ethernet(61));
    tx_kick.write(1).unwrap();
    eventually(&mut w, "sent", || peer.pending_from_guest() == 1);
    assert_eq!(peer.take().unwrap().1.len(), 61);
}

#[test]
fn link_status_follows_the_cable_with_a_config_interrupt() {
    use tapir_virtio::VirtioDevice;
    use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_STATUS;

    let (backend, _peer) = MemoryBackend::new(8, Offloads::default()).unwrap();
    let mut dev = super::VirtioNet::new(
        "t".into(),
        [2, 0, 0, 0, 0, 1],
        None,
        Box::new(backend),
        &WorkerThreads::default(),
    )
    .unwrap();
    assert_ne!(dev.features() & (1 << VIRTIO_NET_F_STATUS), 0);
    let status = |dev: &super::VirtioNet| {
        let mut b = [0u8; 2];
        dev.read_config(super::CONFIG_STATUS_OFFSET as u64, &mut b);
        u16::from_le_bytes(b)
    };
    assert_eq!(status(&dev), 1, "VIRTIO_NET_S_LINK_UP");
    let link = dev.link();
    // Before DRIVER_OK: the status changes, no interrupt is possible.
    assert!(link.set(false));
    assert_eq!(status(&dev), 0);
    assert!(link.set(true));

    let f = fixture(true);
    let q = f.q.unwrap();
    drop(q);
    let (rx, tx) = (f.rx.queue(&f.mem, 0), f.tx.queue(&f.mem, 1));
    let irq = Arc::new(RecIrq::default());
    dev.activate(f.mem.clone(), irq.clone(), dev.features(), vec![rx, tx])
        .unwrap();
    assert!(link.set(false));
    assert_eq!(status(&dev), 0);
    assert!(!link.set(false));
    assert!(link.set(true));
    assert_eq!(status(&dev), 1);
    assert_eq!(
        *irq.0.lock().unwrap(),
        vec![VirtioInterruptType::Config, VirtioInterruptType::Config],
        "one configuration interrupt per change"
    );
    // After a reset the old interrupt is not used any more.
    dev.reset();
    assert!(link.set(false));
    assert_eq!(irq.0.lock().unwrap().len(), 2);
}
