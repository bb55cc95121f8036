//! virtio-net's receive and transmit queues as a [`NicFrontend`].
//!
//! Everything here reads guest-controlled descriptors: lengths are bounded,
//! addresses are checked by guest-memory accessors, a chain of the wrong
//! direction or with unmapped buffers is returned to the guest with length 0
//! and counted, and chain walking is bounded by the queue size (loops end).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapir_net_backend::{NetHdr, NET_HDR_LEN};
use tapir_virtio::{ActiveQueue, VirtioInterrupt, VirtioInterruptType};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::worker::{GuestWork, NicFrontend, NicStats, RxPush, MAX_FRAME};

const TOKEN_RX: u32 = 0;
const TOKEN_TX: u32 = 1;

/// Largest guest TX chain accepted: header plus the largest frame.
const MAX_TX_CHAIN: usize = NET_HDR_LEN + MAX_FRAME;

/// Writable segments (address, length) of one receive descriptor chain.
type Segments = Vec<(GuestAddress, usize)>;

/// The activated queues of one virtio-net device.
pub struct VirtioNetQueues {
    mem: GuestMemoryMmap,
    rx: ActiveQueue,
    tx: ActiveQueue,
    interrupt: Arc<dyn VirtioInterrupt>,
    mrg_rxbuf: bool,
    stats: Arc<NicStats>,
    tx_head: Option<u16>,
    rx_used: bool,
    tx_used: bool,
    /// Scratch: (head, writable segments) of the chains taken for one frame.
    rx_chains: Vec<(u16, Segments)>,
}

impl VirtioNetQueues {
    /// Wraps the two queues handed over at DRIVER_OK.
    pub fn new(
        mem: GuestMemoryMmap,
        rx: ActiveQueue,
        tx: ActiveQueue,
        interrupt: Arc<dyn VirtioInterrupt>,
        mrg_rxbuf: bool,
        stats: Arc<NicStats>,
    ) -> Self {
        Self {
            mem,
            rx,
            tx,
            interrupt,
            mrg_rxbuf,
            stats,
            tx_head: None,
            rx_used: false,
            tx_used: false,
            rx_chains: Vec::new(),
        }
    }

    /// Pops one RX chain and lists its writable segments. `None` when the
    /// ring is empty; `Some(Err(head))` for a chain that cannot take data.
    fn pop_rx_chain(&mut self) -> Option<Result<(u16, Segments), u16>> {
        let chain = self.rx.queue.pop_descriptor_chain(&self.mem)?;
        let head = chain.head_index();
        let mut segs = Vec::new();
        let mut last_has_next = false;
        for desc in chain {
            last_has_next = desc.has_next();
            if !desc.is_write_only() {
                return Some(Err(head));
            }
            if desc.len() > 0 {
                segs.push((desc.addr(), desc.len() as usize));
            }
        }
        if segs.is_empty() || last_has_next {
            return Some(Err(head));
        }
        Some(Ok((head, segs)))
    }

    /// Writes `parts` (concatenated) across `segs`; false if guest memory
    /// refused a write (an address outside RAM).
    fn write_segments(
        &self,
        segs: &[(GuestAddress, usize)],
        parts: &mut Parts<'_>,
    ) -> Result<usize, ()> {
        let mut written = 0;
        for &(addr, len) in segs {
            let mut off = 0;
            while off < len {
                let Some(chunk) = parts.next_chunk(len - off) else {
                    return Ok(written);
                };
                let a = addr.checked_add(off as u64).ok_or(())?;
                self.mem.write_slice(chunk, a).map_err(|_| ())?;
                off += chunk.len();
                written += chunk.len();
            }
        }
        Ok(written)
    }

    fn return_rx(&mut self, head: u16, len: u32) {
        let _ = self.rx.queue.add_used(&self.mem, head, len);
        self.rx_used = true;
    }
}

/// The header and frame as one byte stream, consumed in chunks.
struct Parts<'a> {
    parts: [&'a [u8]; 2],
    idx: usize,
}

impl<'a> Parts<'a> {
    fn next_chunk(&mut self, max: usize) -> Option<&'a [u8]> {
        while self.idx < 2 && self.parts[self.idx].is_empty() {
            self.idx += 1;
        }
        if self.idx == 2 {
            return None;
        }
        let p = self.parts[self.idx];
        let n = p.len().min(max);
        self.parts[self.idx] = &p[n..];
        Some(&p[..n])
    }
}

impl NicFrontend for VirtioNetQueues {
    fn guest_fds(&self) -> Vec<(RawFd, u32)> {
        vec![
            (self.rx.notify.as_raw_fd(), TOKEN_RX),
            (self.tx.notify.as_raw_fd(), TOKEN_TX),
        ]
    }

    fn guest_event(&mut self, token: u32) -> GuestWork {
        match token {
            TOKEN_RX => {
                let _ = self.rx.notify.read();
                GuestWork::Rx
            }
            TOKEN_TX => {
                let _ = self.tx.notify.read();
                // Kicks are not needed while the worker drains the ring.
                let _ = self.tx.queue.disable_notification(&self.mem);
                GuestWork::Tx
            }
            _ => GuestWork::None,
        }
    }

    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        loop {
            let Some(chain) = self.tx.queue.pop_descriptor_chain(&self.mem) else {
                // Re-arm kicks; if the guest queued more meanwhile, go on.
                match self.tx.queue.enable_notification(&self.mem) {
                    Ok(true) => {
                        let _ = self.tx.queue.disable_notification(&self.mem);
                        continue;
                    }
                    _ => return false,
                }
            };
            let head = chain.head_index();
            buf.clear();
            let mut ok = true;
            // The chain iterator stops quietly after queue-size descriptors:
            // a chain whose last descriptor still has NEXT loops or overruns.
            let mut last_has_next = false;
            for desc in chain {
                last_has_next = desc.has_next();
                let len = desc.len() as usize;
                if desc.is_write_only() || buf.len() + len > MAX_TX_CHAIN {
                    ok = false;
                    break;
                }
                let start = buf.len();
                buf.resize(start + len, 0);
                if self.mem.read_slice(&mut buf[start..], desc.addr()).is_err() {
                    ok = false;
                    break;
                }
            }
            if !ok || last_has_next || buf.len() < NET_HDR_LEN {
                // Malformed: give the buffers back, count, and go on.
                let _ = self.tx.queue.add_used(&self.mem, head, 0);
                self.tx_used = true;
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            *hdr = NetHdr::from_bytes(&buf[..NET_HDR_LEN]);
            hdr.num_buffers = 0;
            buf.drain(..NET_HDR_LEN);
            self.tx_head = Some(head);
            return true;
        }
    }

    fn complete_tx(&mut self) {
        if let Some(head) = self.tx_head.take() {
            let _ = self.tx.queue.add_used(&self.mem, head, 0);
            self.tx_used = true;
        }
    }

    fn push_rx(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush {
        let total = NET_HDR_LEN + frame.len();
        let mut chains = std::mem::take(&mut self.rx_chains);
        chains.clear();
        let mut capacity = 0usize;
        while capacity < total {
            match self.pop_rx_chain() {
                None => {
                    // Not enough buffers: put back what we took, in order.
                    for _ in 0..chains.len() {
                        self.rx.queue.go_to_previous_position();
                    }
                    self.rx_chains = chains;
                    return RxPush::NoBuffers;
                }
                Some(Err(head)) => {
                    // A chain that cannot hold data: return it empty.
                    self.return_rx(head, 0);
                    self.stats.rx_bad_buffers.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok((head, segs))) => {
                    capacity += segs.iter().map(|s| s.1).sum::<usize>();
                    chains.push((head, segs));
                    if !self.mrg_rxbuf {
                        break;
                    }
                }
            }
        }
        if capacity < total {
            // Without MRG_RXBUF one chain must hold the frame: drop it.
            for (head, _) in chains.drain(..) {
                self.return_rx(head, 0);
            }
            self.rx_chains = chains;
            return RxPush::Dropped;
        }
        let mut h = *hdr;
        h.num_buffers = chains.len() as u16;
        let hdr_bytes = h.to_bytes();
        let mut parts = Parts {
            parts: [&hdr_bytes, frame],
            idx: 0,
        };
        let mut result = RxPush::Delivered;
        let mut lens = Vec::with_capacity(chains.len());
        for (_, segs) in &chains {
            match self.write_segments(segs, &mut parts) {
                Ok(n) => lens.push(n as u32),
                Err(()) => {
                    result = RxPush::Dropped;
                    lens.push(0);
                }
            }
        }
        if result == RxPush::Dropped {
            lens.iter_mut().for_each(|l| *l = 0);
        }
        for ((head, _), len) in chains.drain(..).zip(lens) {
            self.return_rx(head, len);
        }
        self.rx_chains = chains;
        result
    }

    fn rx_wait_buffers(&mut self) -> bool {
        matches!(self.rx.queue.enable_notification(&self.mem), Ok(true))
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.rx_used)
            && self.rx.queue.needs_notification(&self.mem).unwrap_or(true)
        {
            let _ = self
                .interrupt
                .trigger(VirtioInterruptType::Queue(self.rx.index));
        }
        if std::mem::take(&mut self.tx_used)
            && self.tx.queue.needs_notification(&self.mem).unwrap_or(true)
        {
            let _ = self
                .interrupt
                .trigger(VirtioInterruptType::Queue(self.tx.index));
        }
    }
}
