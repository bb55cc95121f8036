//! An in-memory backend for unit tests and fuzzing of NIC models.
//!
//! [`MemoryBackend::new`] gives the backend (handed to the NIC model) and a
//! [`MemoryPeer`] (kept by the test): the peer plays the host network,
//! injecting frames toward the guest and taking the frames the guest sent.
//! Each direction is a queue of at most `capacity` frames.
//!
//! Readiness, as with a tap, through file descriptors:
//! - `rx_fd` is an eventfd that is readable exactly while frames wait for
//!   the guest.
//! - `tx_fd` is an eventfd that is *writable* (`EPOLLOUT`) exactly while the
//!   guest→host queue has room: when it fills, its counter is raised to
//!   `u64::MAX - 1`, the value at which the kernel stops reporting an
//!   eventfd writable, and reset to 0 when the peer takes a frame. (It is
//!   also readable while full; poll it for `EPOLLOUT`, as one polls a tap.)
//! - [`MemoryPeer::sent_fd`] is readable while frames from the guest wait
//!   for the peer.
//!
//! The peer stands for the host: it should inject only offloads the model
//! enabled ([`MemoryPeer::enabled_offloads`]); nothing is checked, so a
//! fuzzer may inject any header.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{BackendStats, NetBackend, NetHdr, Offloads};

/// The counter value at which an eventfd stops being writable.
const EVENTFD_FULL: u64 = u64::MAX - 1;

/// One queued frame.
pub type Frame = (NetHdr, Vec<u8>);

#[derive(Debug)]
struct Queues {
    to_guest: VecDeque<Frame>,
    from_guest: VecDeque<Frame>,
    enabled: Offloads,
    send_error: Option<io::ErrorKind>,
    recv_error: Option<io::ErrorKind>,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    capacity: usize,
    /// Readable while `to_guest` is not empty.
    rx_evt: EventFd,
    /// Writable while `from_guest` has room.
    tx_evt: EventFd,
    /// Readable while `from_guest` is not empty.
    sent_evt: EventFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panicking test thread leaves consistent queues behind.
        tapir_devices::lock(&self.queues)
    }
}

/// Drains an eventfd to 0 (no-op when already 0).
fn drain(evt: &EventFd) {
    let _ = evt.read();
}

/// Makes an eventfd readable (counter 1 or more).
fn signal(evt: &EventFd) {
    // Cannot fail: the counter never gets near its limit on these fds.
    let _ = evt.write(1);
}

/// The guest side: implements [`NetBackend`].
#[derive(Debug)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
    offloads: Offloads,
    stats: BackendStats,
}

/// The host side, for tests: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct MemoryPeer {
    shared: Arc<Shared>,
}

impl MemoryBackend {
    /// A backend whose queues hold `capacity` frames each (at least 1)
    /// and that offers `offloads`.
    pub fn new(capacity: usize, offloads: Offloads) -> io::Result<(MemoryBackend, MemoryPeer)> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                to_guest: VecDeque::new(),
                from_guest: VecDeque::new(),
                enabled: Offloads::default(),
                send_error: None,
                recv_error: None,
            }),
            capacity: capacity.max(1),
            rx_evt: EventFd::new(EFD_NONBLOCK)?,
            tx_evt: EventFd::new(EFD_NONBLOCK)?,
            sent_evt: EventFd::new(EFD_NONBLOCK)?,
        });
        let peer = MemoryPeer {
            shared: shared.clone(),
        };
        Ok((
            MemoryBackend {
                shared,
                offloads,
                stats: BackendStats::default(),
            },
            peer,
        ))
    }
}

impl NetBackend for MemoryBackend {
    fn describe(&self) -> String {
        format!("memory (capacity {})", self.shared.capacity)
    }

    fn send(&mut self, hdr: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        let sh = &*self.shared;
        let mut q = sh.lock();
        if let Some(kind) = q.send_error {
            self.stats.tx_errors += 1;
            return Err(io::Error::new(kind, "memory backend: injected send error"));
        }
        if q.from_guest.len() >= sh.capacity {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let bytes: Vec<u8> = frame.iter().flat_map(|s| s.iter().copied()).collect();
        let len = bytes.len();
        q.from_guest.push_back((*hdr, bytes));
        if q.from_guest.len() == 1 {
            signal(&sh.sent_evt);
        }
        if q.from_guest.len() >= sh.capacity {
            drain(&sh.tx_evt);
            // Cannot fail: the counter was just drained to 0.
            let _ = sh.tx_evt.write(EVENTFD_FULL);
        }
        self.stats.tx_frames += 1;
        Ok(len)
    }

    /// Pops the next frame for the guest; a frame longer than `buf` is
    /// truncated to it, as a tap does.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)> {
        let sh = &*self.shared;
        let mut q = sh.lock();
        if let Some(kind) = q.recv_error {
            return Err(io::Error::new(
                kind,
                "memory backend: injected receive error",
            ));
        }
        let (hdr, bytes) = q.to_guest.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        if q.to_guest.is_empty() {
            drain(&sh.rx_evt);
        }
        drop(q);
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.stats.rx_frames += 1;
        Ok((hdr, n))
    }

    fn rx_fd(&self) -> RawFd {
        self.shared.rx_evt.as_raw_fd()
    }

    fn tx_fd(&self) -> RawFd {
        self.shared.tx_evt.as_raw_fd()
    }

    fn offloads(&self) -> Offloads {
        self.offloads
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        offloads.check_against(&self.offloads)?;
        self.shared.lock().enabled = offloads;
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }
}

impl MemoryPeer {
    /// Queues a frame toward the guest; WouldBlock when the queue is full.
    pub fn inject(&self, hdr: NetHdr, frame: &[u8]) -> io::Result<()> {
        let sh = &*self.shared;
        let mut q = sh.lock();
        if q.to_guest.len() >= sh.capacity {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        q.to_guest.push_back((hdr, frame.to_vec()));
        if q.to_guest.len() == 1 {
            signal(&sh.rx_evt);
        }
        Ok(())
    }

    /// Takes the oldest frame the guest sent.
    pub fn take(&self) -> Option<Frame> {
        let sh = &*self.shared;
        let mut q = sh.lock();
        let was_full = q.from_guest.len() >= sh.capacity;
        let f = q.from_guest.pop_front()?;
        if q.from_guest.is_empty() {
            drain(&sh.sent_evt);
        }
        if was_full {
            drain(&sh.tx_evt);
        }
        Some(f)
    }

    /// Takes every frame the guest sent, oldest first.
    pub fn take_all(&self) -> Vec<Frame> {
        std::iter::from_fn(|| self.take()).collect()
    }

    /// Frames waiting for the guest.
    pub fn pending_to_guest(&self) -> usize {
        self.shared.lock().to_guest.len()
    }

    /// Frames the guest sent that were not taken yet.
    pub fn pending_from_guest(&self) -> usize {
        self.shared.lock().from_guest.len()
    }

    /// The capacity of each queue.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The offloads the NIC model enabled.
    pub fn enabled_offloads(&self) -> Offloads {
        self.shared.lock().enabled
    }

    /// Makes every `send` fail with `kind` (counted in `tx_errors`) until
    /// called again with `None`: for testing a model's error paths.
    pub fn fail_sends(&self, kind: Option<io::ErrorKind>) {
        self.shared.lock().send_error = kind;
    }

    /// Makes every `recv` fail with `kind` (frames toward the guest stay
    /// queued) until called again with `None`.
    pub fn fail_recvs(&self, kind: Option<io::ErrorKind>) {
        self.shared.lock().recv_error = kind;
    }

    /// Readable while frames from the guest wait to be taken.
    pub fn sent_fd(&self) -> RawFd {
        self.shared.sent_evt.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdr::NEEDS_CSUM;

    /// `(readable, writable)` of `fd` right now.
    fn readiness(fd: RawFd) -> (bool, bool) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        assert!(n >= 0);
        (
            p.revents & libc::POLLIN != 0,
            p.revents & libc::POLLOUT != 0,
        )
    }

    #[test]
    fn frames_both_ways_with_readiness() {
        let (mut be, peer) = MemoryBackend::new(2, Offloads::default()).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            be.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(!readiness(be.rx_fd()).0);
        let h = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 14,
            csum_offset: 6,
            ..Default::default()
        };
        peer.inject(h, b"hello").unwrap();
        peer.inject(NetHdr::default(), b"world!").unwrap();
        assert_eq!(
            peer.inject(NetHdr::default(), b"x").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(readiness(be.rx_fd()).0);
        assert_eq!(be.recv(&mut buf).unwrap(), (h, 5));
        assert_eq!(&buf[..5], b"hello");
        assert!(readiness(be.rx_fd()).0);
        assert_eq!(be.recv(&mut buf[..3]).unwrap(), (NetHdr::default(), 3)); // truncated
        assert_eq!(&buf[..3], b"wor");
        assert!(!readiness(be.rx_fd()).0);

        assert!(readiness(be.tx_fd()).1);
        assert!(!readiness(peer.sent_fd()).0);
        assert_eq!(
            be.send(&h, &[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
                .unwrap(),
            4
        );
        assert!(readiness(peer.sent_fd()).0);
        assert!(readiness(be.tx_fd()).1);
        be.send(&NetHdr::default(), &[IoSlice::new(b"2")]).unwrap();
        assert!(!readiness(be.tx_fd()).1, "full: tx_fd must not be writable");
        assert_eq!(
            be.send(&NetHdr::default(), &[IoSlice::new(b"3")])
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(peer.take(), Some((h, b"abcd".to_vec())));
        assert!(readiness(be.tx_fd()).1, "room again: tx_fd writable");
        be.send(&NetHdr::default(), &[IoSlice::new(b"3")]).unwrap();
        assert_eq!(peer.pending_from_guest(), 2);
        let all = peer.take_all();
        assert_eq!(
            all.iter().map(|f| f.1.clone()).collect::<Vec<_>>(),
            vec![b"2".to_vec(), b"3".to_vec()]
        );
        assert!(!readiness(peer.sent_fd()).0);
        assert!(readiness(be.tx_fd()).1);
        assert_eq!(
            be.stats(),
            BackendStats {
                tx_frames: 3,
                rx_frames: 2,
                tx_errors: 0
            }
        );
    }

    #[test]
    fn offloads_and_errors() {
        let offered = Offloads {
            csum: true,
            tso4: true,
            ..Default::default()
        };
        let (mut be, peer) = MemoryBackend::new(0, offered).unwrap();
        assert_eq!(peer.capacity(), 1);
        assert_eq!(be.offloads(), offered);
        assert_eq!(
            be.set_offloads(Offloads::ALL).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let tso_only = Offloads {
            tso4: true,
            ..Default::default()
        };
        assert_eq!(
            be.set_offloads(tso_only).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        be.set_offloads(offered).unwrap();
        assert_eq!(peer.enabled_offloads(), offered);

        peer.fail_sends(Some(io::ErrorKind::BrokenPipe));
        assert_eq!(
            be.send(&NetHdr::default(), &[]).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert_eq!(be.stats().tx_errors, 1);
        peer.fail_sends(None);
        assert_eq!(be.send(&NetHdr::default(), &[]).unwrap(), 0);
        assert!(be.describe().starts_with("memory"));

        peer.inject(NetHdr::default(), &[7; 60]).unwrap();
        peer.fail_recvs(Some(io::ErrorKind::BrokenPipe));
        let mut buf = [0u8; 64];
        assert_eq!(
            be.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        peer.fail_recvs(None);
        assert_eq!(be.recv(&mut buf).unwrap().1, 60, "the frame stayed queued");
    }

    #[test]
    fn peer_from_another_thread() {
        let (mut be, peer) = MemoryBackend::new(4, Offloads::default()).unwrap();
        let p2 = peer.clone();
        std::thread::spawn(move || {
            for i in 0..4u8 {
                p2.inject(NetHdr::default(), &[i; 60]).unwrap();
            }
        })
        .join()
        .unwrap();
        let mut buf = [0u8; 100];
        for i in 0..4u8 {
            let (_, n) = be.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 60]);
        }
    }
}
