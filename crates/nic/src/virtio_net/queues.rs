//! virtio-net's receive and transmit queues as a [`NicFrontend`].
//!
//! Everything here reads guest-controlled descriptors: every buffer is
//! checked to lie in guest RAM when its chain is taken (a chain of the
//! wrong direction, with a buffer outside RAM, looping, or empty is returned
//! to the guest with length 0 and counted), lengths are bounded, and chain
//! walking is bounded by the queue size.
//!
//! No copies in user space on the fast paths: a frame the guest sends is
//! handed to the backend as the list of its buffers in guest memory, and
//! frames are read from the backend straight into the guest's receive
//! buffers whenever the guest has posted room for the largest frame.
//!
//! Receive chains are taken from the ring ahead of need and kept
//! ("reserved") until a frame fills them, so one 64 KiB read can span many
//! small buffers. A frame merged over several chains is completed with one
//! update of the used index (see [`tapir_virtio::used`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapir_net_backend::guest_buf::{self, GuestBuf};
use tapir_net_backend::{NetHdr, NET_HDR_LEN};
use tapir_virtio::avail::{self, Popped};
use tapir_virtio::used::{self, Notifier};
use tapir_virtio::{VirtioInterrupt, VirtioInterruptType};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{RX_QUEUE, TX_QUEUE};
use crate::worker::{GuestEvent, GuestWork, NicFrontend, NicStats, RxPush, MAX_FRAME};

/// Largest guest TX chain accepted: header plus the largest frame.
const MAX_TX_CHAIN: usize = NET_HDR_LEN + MAX_FRAME;

/// Room a direct read needs: the header and the largest frame.
const DIRECT_RX_ROOM: usize = NET_HDR_LEN + MAX_FRAME;

/// At most this many buffers in one direct read (well below IOV_MAX); a
/// guest posting tinier buffers is served by copying.
const DIRECT_RX_MAX_BUFS: usize = 512;

/// One receive chain taken from the ring: its writable buffers, checked to
/// lie in guest RAM, and their total length.
struct RxChain {
    head: u16,
    bufs: Vec<GuestBuf>,
    cap: usize,
}

/// Appends the host mapping of the guest range `addr`..`addr + len` to
/// `out`, split at memory-region boundaries; false if any part of it is
/// outside guest RAM.
fn map_guest(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    out: &mut Vec<GuestBuf>,
) -> bool {
    for slice in mem.get_slices(addr, len) {
        let Ok(slice) = slice else {
            return false;
        };
        // SAFETY: the slice lies in one mapped region of `mem`. The regions
        // stay mapped as long as `mem` (reference counted) is alive, and
        // these queues hold it for as long as they exist; the buffers are
        // kept in the queues, or lent to the worker that owns the queues
        // for one backend call, so they are never used after `mem` is gone.
        out.push(unsafe { GuestBuf::new(slice.ptr_guard_mut().as_ptr(), slice.len()) });
    }
    true
}

/// Writes `data` into the buffers of `chains`, seen as one byte stream,
/// from `offset`; returns the bytes written.
fn write_chains<'a>(
    chains: impl Iterator<Item = &'a RxChain>,
    mut offset: usize,
    data: &[u8],
) -> usize {
    let mut done = 0;
    for c in chains {
        if done == data.len() {
            break;
        }
        if offset >= c.cap {
            offset -= c.cap;
            continue;
        }
        done += guest_buf::write_stream(&c.bufs, offset, &data[done..]);
        offset = 0;
    }
    done
}

/// Takes the next chain of `queue` (`what` names it). A ring whose
/// available index cannot be followed is reported once and left alone
/// from then on (`broken`): the driver has to reset the device, which makes
/// the queues anew.
fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    broken: &mut bool,
    what: &str,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    if *broken {
        return None;
    }
    match avail::pop(queue, mem) {
        Popped::Chain(c) => Some(c),
        Popped::Empty => None,
        Popped::Broken(e) => {
            ring_broken(broken, what, e);
            None
        }
    }
}

fn ring_broken(broken: &mut bool, what: &str, e: avail::RingError) {
    log::warn!("virtio-net {what} queue stopped until the driver resets the device: {e}");
    *broken = true;
}

/// The activated queues of one virtio-net device.
pub struct VirtioNetQueues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<dyn VirtioInterrupt>,
    mrg_rxbuf: bool,
    stats: Arc<NicStats>,
    /// The TX chain being sent.
    tx_head: Option<u16>,
    /// Scratch: the buffers of the TX chain being read.
    tx_bufs: Vec<GuestBuf>,
    rx_notifier: Notifier,
    tx_notifier: Notifier,
    /// The RX avail index up to which the guest's chains were taken when
    /// they ran out: the worker waits for the guest to add more.
    rx_seen_avail: u16,
    /// RX chains taken from the ring, in ring order, not filled yet.
    rx_reserved: VecDeque<RxChain>,
    /// Total capacity of `rx_reserved`.
    rx_reserved_cap: usize,
    /// Scratch: the reserved buffers past the header, for a direct read.
    rx_iov: Vec<GuestBuf>,
    /// Scratch: (head, length) of RX chains to complete together.
    rx_done: Vec<(u16, u32)>,
    /// The receive ring's index could not be followed: it is not used
    /// until the driver resets the device.
    rx_broken: bool,
    /// As `rx_broken`, for the transmit ring.
    tx_broken: bool,
}

impl VirtioNetQueues {
    /// Wraps the two queues handed over at DRIVER_OK (their notification
    /// fds go to the worker).
    pub fn new(
        mem: GuestMemoryMmap,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn VirtioInterrupt>,
        mrg_rxbuf: bool,
        stats: Arc<NicStats>,
    ) -> Self {
        Self {
            rx_notifier: Notifier::new(&rx),
            tx_notifier: Notifier::new(&tx),
            rx_seen_avail: rx.next_avail(),
            mem,
            rx,
            tx,
            interrupt,
            mrg_rxbuf,
            stats,
            tx_head: None,
            tx_bufs: Vec::new(),
            rx_reserved: VecDeque::new(),
            rx_reserved_cap: 0,
            rx_iov: Vec::new(),
            rx_done: Vec::new(),
            rx_broken: false,
            tx_broken: false,
        }
    }

    /// Takes the next RX chain. `None` when the ring is empty;
    /// `Some(Err(head))` for a chain that cannot take data (a read-only
    /// descriptor, a buffer outside RAM, a loop, no room at all).
    fn pop_rx_chain(&mut self) -> Option<Result<RxChain, u16>> {
        let chain = pop_chain(&mut self.rx, &self.mem, &mut self.rx_broken, "receive")?;
        let head = chain.head_index();
        let mut bufs = Vec::new();
        let mut cap = 0usize;
        // The chain iterator stops quietly after queue-size descriptors: a
        // chain whose last descriptor still has NEXT loops or overruns.
        let mut last_has_next = false;
        for desc in chain {
            last_has_next = desc.has_next();
            let len = desc.len() as usize;
            if !desc.is_write_only() || !map_guest(&self.mem, desc.addr(), len, &mut bufs) {
                return Some(Err(head));
            }
            cap += len;
        }
        if cap == 0 || last_has_next {
            return Some(Err(head));
        }
        Some(Ok(RxChain { head, bufs, cap }))
    }

    /// Takes chains from the ring until the reserved ones hold `need`
    /// bytes (with MRG_RXBUF; without it one chain takes a whole frame, so
    /// one chain is enough). Unusable chains are returned to the guest at
    /// once, empty, and counted. False when the ring ran out first: what
    /// was taken stays reserved and the position is noted for
    /// [`NicFrontend::rx_wait_buffers`].
    fn reserve_rx(&mut self, need: usize) -> bool {
        let mut bad = std::mem::take(&mut self.rx_done);
        bad.clear();
        let ok = loop {
            let enough = if self.mrg_rxbuf {
                self.rx_reserved_cap >= need
            } else {
                !self.rx_reserved.is_empty()
            };
            if enough {
                break true;
            }
            match self.pop_rx_chain() {
                None => {
                    self.rx_seen_avail = self.rx.next_avail();
                    break false;
                }
                Some(Err(head)) => bad.push((head, 0)),
                Some(Ok(c)) => {
                    self.rx_reserved_cap += c.cap;
                    self.rx_reserved.push_back(c);
                }
            }
        };
        if !bad.is_empty() {
            self.stats
                .rx_bad_buffers
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            self.complete_rx(&bad);
        }
        self.rx_done = bad;
        ok
    }

    /// How many reserved chains, from the front, a header and frame of
    /// `total` bytes fill (always 1 without MRG_RXBUF); `None` if they do
    /// not hold it.
    fn chains_for(&self, total: usize) -> Option<usize> {
        let mut cap = 0;
        for (i, c) in self.rx_reserved.iter().enumerate() {
            cap += c.cap;
            if cap >= total {
                return Some(i + 1);
            }
            if !self.mrg_rxbuf {
                break;
            }
        }
        None
    }

    /// Completes the first `n` reserved chains as holding a header and
    /// frame of `total` bytes: writes `hdr` (with `num_buffers`) at the
    /// start and publishes the chains with one used-index update.
    fn fill_rx(&mut self, hdr: &NetHdr, n: usize, total: usize) {
        let mut h = *hdr;
        h.num_buffers = n as u16;
        write_chains(self.rx_reserved.iter(), 0, &h.to_bytes());
        let mut done = std::mem::take(&mut self.rx_done);
        done.clear();
        let mut left = total;
        for c in self.rx_reserved.drain(..n) {
            let len = left.min(c.cap);
            left -= len;
            self.rx_reserved_cap -= c.cap;
            done.push((c.head, len as u32));
        }
        self.complete_rx(&done);
        self.rx_done = done;
    }

    /// Publishes finished RX chains with one update of the used index (a
    /// merged frame appears whole).
    fn complete_rx(&mut self, done: &[(u16, u32)]) {
        // A head index beyond the queue (a guest bug) cannot be named in
        // the used ring: such an entry is left out.
        let size = self.rx.size();
        if done.iter().all(|&(head, _)| head < size) {
            let _ = used::add_used(&mut self.rx, &self.mem, done);
        } else {
            let valid: Vec<_> = done.iter().copied().filter(|&(h, _)| h < size).collect();
            let _ = used::add_used(&mut self.rx, &self.mem, &valid);
        }
    }

    /// Completes one TX chain (sent, or dropped with length 0); a head
    /// index beyond the queue cannot be, and is left out.
    fn complete_tx_chain(&mut self, head: u16) {
        if head < self.tx.size() {
            let _ = used::add_used(&mut self.tx, &self.mem, &[(head, 0)]);
        }
    }

    /// Interrupts the guest for used RX buffers if it asked for that.
    fn signal_rx(&mut self) {
        if self.rx_notifier.needs_notification(&self.rx, &self.mem) {
            let _ = self.interrupt.trigger(VirtioInterruptType::Queue(RX_QUEUE));
        }
    }

    /// Interrupts the guest for used TX buffers if it asked for that.
    fn signal_tx(&mut self) {
        if self.tx_notifier.needs_notification(&self.tx, &self.mem) {
            let _ = self.interrupt.trigger(VirtioInterruptType::Queue(TX_QUEUE));
        }
    }
}

impl NicFrontend for VirtioNetQueues {
    fn guest_event(&mut self, ev: GuestEvent) -> GuestWork {
        match ev {
            GuestEvent::Rx => GuestWork::Rx,
            GuestEvent::Tx => {
                // Kicks are not needed while the worker drains the ring.
                let _ = self.tx.disable_notification(&self.mem);
                GuestWork::Tx
            }
            GuestEvent::Timer => GuestWork::None,
        }
    }

    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        let mut frame = Vec::new();
        if !self.pop_tx_guest(hdr, buf, &mut frame) {
            return false;
        }
        buf.clear();
        guest_buf::gather(&frame, buf);
        true
    }

    fn pop_tx_guest(
        &mut self,
        hdr: &mut NetHdr,
        _buf: &mut Vec<u8>,
        frame: &mut Vec<GuestBuf>,
    ) -> bool {
        loop {
            let Some(chain) = pop_chain(&mut self.tx, &self.mem, &mut self.tx_broken, "transmit")
            else {
                if self.tx_broken {
                    return false;
                }
                // Re-arm kicks; if the guest queued more meanwhile, go on
                // (the next pop takes a chain or finds the ring broken).
                match avail::enable_notification(&mut self.tx, &self.mem) {
                    Ok(true) => {
                        let _ = self.tx.disable_notification(&self.mem);
                        continue;
                    }
                    Ok(false) => return false,
                    Err(e) => {
                        ring_broken(&mut self.tx_broken, "transmit", e);
                        return false;
                    }
                }
            };
            let head = chain.head_index();
            self.tx_bufs.clear();
            let mut total = 0usize;
            let mut ok = true;
            // As for RX: a chain whose last descriptor has NEXT loops.
            let mut last_has_next = false;
            for desc in chain {
                last_has_next = desc.has_next();
                let len = desc.len() as usize;
                if desc.is_write_only()
                    || total + len > MAX_TX_CHAIN
                    || !map_guest(&self.mem, desc.addr(), len, &mut self.tx_bufs)
                {
                    ok = false;
                    break;
                }
                total += len;
            }
            if !ok || last_has_next || total < NET_HDR_LEN {
                // Malformed: give the buffers back, count, and go on.
                self.complete_tx_chain(head);
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut hdr_bytes = [0u8; NET_HDR_LEN];
            guest_buf::read_stream(&self.tx_bufs, 0, &mut hdr_bytes);
            *hdr = NetHdr::from_bytes(&hdr_bytes);
            hdr.num_buffers = 0;
            frame.clear();
            guest_buf::skip_into(&self.tx_bufs, NET_HDR_LEN, frame);
            self.tx_head = Some(head);
            return true;
        }
    }

    fn complete_tx(&mut self) {
        if let Some(head) = self.tx_head.take() {
            self.complete_tx_chain(head);
        }
    }

    fn push_rx(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush {
        let total = NET_HDR_LEN + frame.len();
        if !self.reserve_rx(total) {
            return RxPush::NoBuffers;
        }
        let Some(n) = self.chains_for(total) else {
            // Without MRG_RXBUF one chain must hold the frame: drop it.
            if let Some(c) = self.rx_reserved.pop_front() {
                self.rx_reserved_cap -= c.cap;
                self.complete_rx(&[(c.head, 0)]);
            }
            return RxPush::Dropped;
        };
        write_chains(self.rx_reserved.iter(), NET_HDR_LEN, frame);
        self.fill_rx(hdr, n, total);
        RxPush::Delivered
    }

    fn rx_direct(&mut self) -> Option<&[GuestBuf]> {
        if !self.reserve_rx(DIRECT_RX_ROOM) {
            return None;
        }
        let n = self.chains_for(DIRECT_RX_ROOM)?;
        // The header is written afterwards, with num_buffers: the frame
        // goes in past it.
        self.rx_iov.clear();
        let mut skip = NET_HDR_LEN;
        for c in self.rx_reserved.iter().take(n) {
            if self.rx_iov.len() + c.bufs.len() > DIRECT_RX_MAX_BUFS {
                return None;
            }
            for b in &c.bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                self.rx_iov.push(b.skip(skip));
                skip = 0;
            }
        }
        Some(&self.rx_iov)
    }

    fn rx_direct_done(&mut self, hdr: &NetHdr, len: usize) -> RxPush {
        let total = NET_HDR_LEN + len;
        match self.chains_for(total) {
            Some(n) => {
                self.fill_rx(hdr, n, total);
                RxPush::Delivered
            }
            // Cannot happen (the read had room for the largest frame).
            None => RxPush::Dropped,
        }
    }

    fn rx_wait_buffers(&mut self) -> bool {
        if self.rx_broken {
            return false;
        }
        used::enable_notification_after(&mut self.rx, &self.mem, self.rx_seen_avail)
    }

    fn flush(&mut self) {
        self.signal_rx();
        self.signal_tx();
    }
}
