//! The smoltcp device of the NAT: one guest frame in, a bounded queue of
//! frames out toward the guest. Every frame the backend builds itself
//! (DHCP, UDP, ICMP, RSTs) goes through the same queue.

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Largest Ethernet frame (no FCS) either side sends: MTU 1500 + header.
pub(crate) const MAX_FRAME: usize = 1514;
/// Buffers kept for reuse.
const POOL: usize = 64;
/// Bytes the NAT's own sending may queue (64 KiB GSO frames included).
const QUEUE_BYTES: usize = 4 << 20;
/// Replies (mostly ACKs of 54-66 bytes) built while taking in a burst of
/// guest frames may fill the queue up to this many times its cap: a guest
/// with 200 connections sending at once otherwise loses ACKs.
const REPLY_RESERVE: usize = 8;

/// Frames waiting for the guest, oldest first: at most `cap` from the
/// NAT's own sending (smoltcp egress, relays), and up to REPLY_RESERVE times that for
/// replies smoltcp builds while taking in a guest frame (ACKs, RSTs), so
/// that a guest sending a burst does not lose its ACKs to a full queue.
#[derive(Debug)]
pub(crate) struct GuestQueue {
    frames: VecDeque<Vec<u8>>,
    cap: usize,
    /// Bytes queued.
    bytes: usize,
    pool: Vec<Vec<u8>>,
    /// Frames dropped because the queue was full.
    pub dropped: u64,
}

impl GuestQueue {
    pub fn new(cap: usize) -> GuestQueue {
        GuestQueue {
            frames: VecDeque::new(),
            cap: cap.max(1),
            bytes: 0,
            pool: Vec::new(),
            dropped: 0,
        }
    }

    pub fn has_room(&self) -> bool {
        self.frames.len() < self.cap && self.bytes < QUEUE_BYTES
    }

    /// Whether `n` more frames fit.
    pub fn room_for(&self, n: usize) -> bool {
        self.frames.len() + n <= self.cap
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Queues a `len`-byte frame written by `fill` (given zeroed bytes);
    /// `false` (and counted) when the queue is full.
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if !self.has_room() {
            self.dropped += 1;
            return false;
        }
        self.push_reply_with(len, fill);
        true
    }

    /// Like `push_with` for a reply to a guest frame: may use the reserve
    /// (up to REPLY_RESERVE times the cap).
    fn push_reply_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        fill(&mut v);
        self.bytes += v.len();
        self.frames.push_back(v);
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let v = self.frames.pop_front()?;
        self.bytes -= v.len();
        Some(v)
    }

    /// Gives a popped frame's buffer back for reuse.
    pub fn recycle(&mut self, v: Vec<u8>) {
        if self.pool.len() < POOL && v.capacity() <= 2 * MAX_FRAME {
            self.pool.push(v);
        }
    }
}

/// The smoltcp device: `rx` holds the one guest frame being fed in.
#[derive(Debug)]
pub(crate) struct NatDevice {
    pub rx: Vec<u8>,
    pub rx_ready: bool,
    pub queue: GuestQueue,
    /// smoltcp wanted to send while the queue was full.
    pub exhausted: bool,
}

impl NatDevice {
    pub fn new(cap: usize) -> NatDevice {
        NatDevice {
            rx: Vec::with_capacity(MAX_FRAME),
            rx_ready: false,
            queue: GuestQueue::new(cap),
            exhausted: false,
        }
    }

    /// Makes `frame` the next frame smoltcp receives.
    pub fn set_rx(&mut self, frame: &[u8]) {
        self.rx.clear();
        self.rx.extend_from_slice(frame);
        self.rx_ready = true;
    }
}

pub(crate) struct RxToken<'a>(&'a [u8]);
pub(crate) struct TxToken<'a>(&'a mut GuestQueue);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Only a reply built during receive can find the queue full; it
        // may use the reserve up to REPLY_RESERVE times the cap (and twice
        // QUEUE_BYTES), then it is built and
        // dropped (and counted).
        if self.0.frames.len() >= REPLY_RESERVE * self.0.cap || self.0.bytes >= 2 * QUEUE_BYTES {
            self.0.dropped += 1;
            return f(&mut vec![0u8; len]);
        }
        let mut out = None;
        self.0.push_reply_with(len, |buf| out = Some(f(buf)));
        match out {
            Some(r) => r,
            None => unreachable!("push_with with room runs its filler"),
        }
    }
}

impl phy::Device for NatDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.rx_ready {
            return None;
        }
        self.rx_ready = false;
        Some((RxToken(&self.rx), TxToken(&mut self.queue)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.queue.has_room() {
            Some(TxToken(&mut self.queue))
        } else {
            self.exhausted = true;
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // Big, so that smoltcp may send 64 KiB TCP segments to a guest that
        // takes them (see gso.rs); to every other guest it sends at most its
        // MSS (1460 on Ethernet), and UDP/ICMP are built at 1500 elsewhere.
        caps.max_transmission_unit = crate::gso::GSO_FRAME;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, TxToken as _};

    #[test]
    fn bounded_queue_and_tokens() {
        let mut d = NatDevice::new(2);
        assert!(d.receive(Instant::ZERO).is_none());
        d.transmit(Instant::ZERO)
            .unwrap()
            .consume(3, |b| b.copy_from_slice(b"abc"));
        d.transmit(Instant::ZERO).unwrap().consume(1, |b| b[0] = 7);
        assert!(d.transmit(Instant::ZERO).is_none());
        assert!(d.exhausted);
        // Replies to guest frames may use the reserve (up to REPLY_RESERVE times the
        // cap); beyond it they are built, dropped and counted.
        let reserve = REPLY_RESERVE * 2;
        for i in 0..reserve - 1 {
            d.set_rx(b"in");
            let (_rx, tx) = d.receive(Instant::ZERO).unwrap();
            assert_eq!(tx.consume(4, |b| b.len()), 4, "reply {i}");
        }
        assert_eq!(d.queue.dropped, 1);
        assert!(d.transmit(Instant::ZERO).is_none(), "egress still capped");
        assert_eq!(d.queue.pop().unwrap(), b"abc");
        let v = d.queue.pop().unwrap();
        assert_eq!(v, [7]);
        d.queue.recycle(v);
        for _ in 0..reserve - 2 {
            assert_eq!(d.queue.pop().unwrap().len(), 4);
        }
        assert!(d.queue.is_empty());
        assert!(d.queue.push_with(2, |b| assert_eq!(b, [0, 0])));
    }
}
