//! The generic NIC worker: one thread per NIC that moves frames between a
//! model's guest-facing rings ([`NicFrontend`]) and a [`NetBackend`].
//!
//! Backpressure, both ways, without busy loops:
//! - guest → world: a frame the backend refuses with WouldBlock stays
//!   pending; the worker waits for the backend's `tx_fd` to become
//!   writable and sends it then, before taking the next one from the guest.
//! - world → guest: when the guest has no receive buffers, the frame read
//!   from the backend stays pending, the worker stops reading the backend
//!   and waits for the guest's "buffers added" notification.
//!
//! The worker runs until its [`WorkerHandle`] stops it, which it logs at
//! debug level, or until waiting for events fails, which it logs as an
//! error: the NIC then moves no more frames. Backend errors do not stop
//! it: a frame the backend fails to send is dropped and counted; after a
//! failed receive the worker stops reading the backend for a while
//! ([`RX_RETRY_FIRST`], doubling up to [`RX_RETRY_MAX`]), so that a backend
//! whose fd stays readable while every read fails (a deleted tap) cannot
//! keep it spinning. The first failure of a run of them is logged as a
//! warning (later ones at debug level), and the recovery at info level.

mod thread;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tapir_devices::Timer;
use tapir_net_backend::guest_buf::{self, GuestBuf};
use tapir_net_backend::{NetBackend, NetHdr};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::link::Carrier;
use crate::vlan;

pub use thread::{ThreadStart, WorkerHandle, WorkerThread, WorkerThreads};

/// Largest Ethernet frame (with a VLAN tag) the worker moves: 64 KiB GSO
/// frames plus headers.
pub const MAX_FRAME: usize = 65_562;

/// Result of handing a received frame to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxPush {
    /// The frame is in guest memory.
    Delivered,
    /// The guest has no (or not enough) receive buffers: retry later.
    NoBuffers,
    /// The frame cannot be delivered (too big for the buffers, bad
    /// descriptors): it was dropped and counted.
    Dropped,
}

/// Which guest-side event woke the worker (it has consumed the event's fd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// The transmit doorbell: a virtio kick, a TDT, TSD or TPPoll write.
    Tx,
    /// The receive doorbell: buffers were added, or a register write asks
    /// for a retry.
    Rx,
    /// The NIC's timer fired.
    Timer,
}

/// The fds behind a NIC's guest events. The worker waits on them and
/// drains the doorbells itself, so that a frontend needs no fd of its own.
#[derive(Debug)]
pub struct GuestFds {
    /// Signalled by the transmit doorbell.
    pub tx: EventFd,
    /// Signalled by the receive doorbell.
    pub rx: EventFd,
    /// The NIC's timerfd, if it has one; it stays owned by the NIC's shell,
    /// which reads it when told of [`GuestEvent::Timer`].
    pub timer: Option<RawFd>,
}

/// What a guest-side event asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWork {
    /// Nothing.
    None,
    /// The guest queued frames to send.
    Tx,
    /// The guest added receive buffers.
    Rx,
}

/// The guest-facing half of a NIC as the worker sees it (virtio queues,
/// e1000 descriptor rings, ...). Implementations own their guest memory
/// access and interrupts, and no fd: the worker waits on the fds of
/// [`GuestFds`] and tells the frontend what happened. All
/// guest-controlled data is validated in the frontend.
pub trait NicFrontend: Send {
    /// Says what the guest event `ev` (its fd already drained) asks for.
    fn guest_event(&mut self, ev: GuestEvent) -> GuestWork;
    /// Takes the next frame the guest transmits into `buf` (cleared first)
    /// with its offload header. `false` when there is none (and the
    /// frontend has re-armed its "frames queued" notification).
    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool;
    /// Like [`NicFrontend::pop_tx`], but a frontend that knows where the
    /// frame lies in guest memory may leave it there and list its buffers
    /// in `frame` instead of copying it into `buf` (the worker passes both
    /// empty; a frame in `frame` is used when `frame` is not empty). The
    /// default copies with `pop_tx`.
    fn pop_tx_guest(
        &mut self,
        hdr: &mut NetHdr,
        buf: &mut Vec<u8>,
        frame: &mut Vec<GuestBuf>,
    ) -> bool {
        frame.clear();
        self.pop_tx(hdr, buf)
    }
    /// Returns the last popped frame's buffers to the guest (sent or dropped).
    fn complete_tx(&mut self);
    /// Delivers one received frame.
    fn push_rx(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush;
    /// Guest buffers the next received frame may be read into directly,
    /// with room for the largest frame ([`MAX_FRAME`]); `None` (the
    /// default) when the frontend cannot offer that now: the worker then
    /// reads into its own buffer and calls [`NicFrontend::push_rx`].
    fn rx_direct(&mut self) -> Option<&[GuestBuf]> {
        None
    }
    /// A frame of `len` bytes was read into the buffers of the last
    /// [`NicFrontend::rx_direct`]: hand it to the guest with `hdr`.
    fn rx_direct_done(&mut self, _hdr: &NetHdr, _len: usize) -> RxPush {
        RxPush::Dropped
    }
    /// Arms the "receive buffers added" notification; `true` means buffers
    /// are already available again (the worker retries at once).
    fn rx_wait_buffers(&mut self) -> bool;
    /// The frame last answered with [`RxPush::NoBuffers`] will not be
    /// offered again (the worker dropped it, e.g. the cable went out): a
    /// frontend that delivered part of it (segments of a GSO frame) forgets
    /// the rest. The default does nothing.
    fn rx_discard(&mut self) {}
    /// Raises the interrupts that completed work calls for.
    fn flush(&mut self);
}

/// Per-NIC counters, readable while the NIC runs.
#[derive(Debug, Default)]
pub struct NicStats {
    /// Frames sent to the backend.
    pub tx_frames: AtomicU64,
    /// Bytes sent to the backend.
    pub tx_bytes: AtomicU64,
    /// Guest frames dropped (malformed, or the backend failed hard).
    pub tx_dropped: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest.
    pub rx_bytes: AtomicU64,
    /// Frames from the backend dropped (VLAN filter, undeliverable).
    pub rx_dropped: AtomicU64,
    /// Guest receive buffers returned unused because they were unusable
    /// (read-only or empty descriptor chains).
    pub rx_bad_buffers: AtomicU64,
    /// Times the guest had no receive buffers (backend reading paused).
    pub rx_stalls: AtomicU64,
    /// Times the backend would block on send (frame held).
    pub tx_stalls: AtomicU64,
    /// Guest frames dropped because the link was down (cable out).
    pub tx_link_down: AtomicU64,
    /// Backend frames dropped because the link was down (cable out).
    pub rx_link_down: AtomicU64,
}

impl NicStats {
    /// Every counter with its name, in a fixed order.
    pub fn snapshot(&self) -> [(&'static str, u64); 11] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tx_frames", g(&self.tx_frames)),
            ("tx_bytes", g(&self.tx_bytes)),
            ("tx_dropped", g(&self.tx_dropped)),
            ("tx_stalls", g(&self.tx_stalls)),
            ("tx_link_down", g(&self.tx_link_down)),
            ("rx_frames", g(&self.rx_frames)),
            ("rx_bytes", g(&self.rx_bytes)),
            ("rx_dropped", g(&self.rx_dropped)),
            ("rx_bad_buffers", g(&self.rx_bad_buffers)),
            ("rx_stalls", g(&self.rx_stalls)),
            ("rx_link_down", g(&self.rx_link_down)),
        ]
    }

    /// The non-zero counters of frames that did not get through, as
    /// `name=value` pairs (empty when nothing was lost).
    pub fn losses(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|(k, v)| {
                *v > 0
                    && matches!(
                        *k,
                        "tx_dropped" | "tx_link_down" | "rx_dropped" | "rx_link_down"
                    )
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// Frames read and dropped per wake-up while the link is down.
const LINK_DOWN_BATCH: usize = 256;

const TOKEN_KILL: u64 = 0;
const TOKEN_BACKEND_RX: u64 = 1;
const TOKEN_BACKEND_TX: u64 = 2;
const TOKEN_GUEST_TX: u64 = 3;
const TOKEN_GUEST_RX: u64 = 4;
const TOKEN_TIMER: u64 = 5;
const TOKEN_RX_RETRY: u64 = 6;

/// How long the worker stops reading a backend after a failed receive;
/// doubled on each failure in a row, up to [`RX_RETRY_MAX`].
pub const RX_RETRY_FIRST: Duration = Duration::from_millis(10);
/// Times in a row the worker retries a frame that found no buffers because
/// the frontend says buffers were added meanwhile.
const RX_RECHECKS: usize = 8;
/// The longest pause between two receive attempts on a failing backend.
pub const RX_RETRY_MAX: Duration = Duration::from_secs(1);

/// Events one [`NetWorker::pump`] handles at most: a backend that stays
/// ready cannot keep the caller there for ever.
const PUMP_LIMIT: usize = 10_000;

/// Moves frames between one frontend and one backend.
pub struct NetWorker {
    /// The NIC's name, for log messages.
    name: String,
    frontend: Box<dyn NicFrontend>,
    guest: GuestFds,
    backend: Box<dyn NetBackend>,
    vlan: Option<u16>,
    stats: Arc<NicStats>,
    carrier: Arc<Carrier>,
    epoll: Epoll,
    kill: EventFd,
    tx_hdr: NetHdr,
    tx_buf: Vec<u8>,
    /// The frame being sent when it is left in guest memory.
    tx_guest: Vec<GuestBuf>,
    tx_pending: bool,
    rx_buf: Vec<u8>,
    rx_pending: Option<(NetHdr, usize)>,
    rx_blocked: bool,
    backend_interest: (bool, bool),
    shared_backend_fd: bool,
    /// The last send failed hard (logged once until one works again).
    tx_failing: bool,
    /// The last receive failed hard (likewise).
    rx_failing: bool,
    /// Brings the worker back to a backend it stopped reading.
    rx_retry: Timer,
    /// Reading the backend is paused after a failed receive.
    rx_paused: bool,
    /// The last pause, while receives keep failing (`None` once one works).
    rx_backoff: Option<Duration>,
}

impl NetWorker {
    /// Runs this worker on a new thread of its own (`<name>-net`, with
    /// nothing run first: see [`WorkerThreads`]) until the handle stops
    /// it; the thread ends with the worker.
    pub fn start(self) -> io::Result<WorkerHandle> {
        WorkerThreads::default().spawn(&self.name)?.run_owned(self)
    }

    /// A worker that runs on the caller's thread, one [`NetWorker::pump`]
    /// at a time: for tests and fuzzing, which then drive a NIC in one
    /// thread, without sleeps.
    pub fn manual(
        name: &str,
        frontend: Box<dyn NicFrontend>,
        guest: GuestFds,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        stats: Arc<NicStats>,
        carrier: Arc<Carrier>,
    ) -> io::Result<NetWorker> {
        let kill = EventFd::new(EFD_NONBLOCK)?;
        NetWorker::new(name, frontend, guest, backend, vlan, stats, carrier, &kill)
    }

    /// Handles every event that is ready now, and what they lead to, until
    /// none is left (or [`PUMP_LIMIT`] of them); never waits.
    pub fn pump(&mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::default(); 16];
        let mut handled = 0;
        while handled < PUMP_LIMIT {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            handled += n;
            self.dispatch(&events[..n]);
        }
        Ok(())
    }

    /// The backend, for a caller that drives the worker.
    pub fn backend_mut(&mut self) -> &mut dyn NetBackend {
        self.backend.as_mut()
    }

    /// A worker, registered with its epoll set, that `kill` stops.
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        frontend: Box<dyn NicFrontend>,
        guest: GuestFds,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        stats: Arc<NicStats>,
        carrier: Arc<Carrier>,
        kill: &EventFd,
    ) -> io::Result<NetWorker> {
        let epoll = Epoll::new()?;
        let shared_backend_fd = backend.rx_fd() == backend.tx_fd();
        let mut w = NetWorker {
            name: name.to_string(),
            frontend,
            guest,
            backend,
            vlan,
            stats,
            carrier,
            epoll,
            kill: kill.try_clone()?,
            tx_hdr: NetHdr::default(),
            tx_buf: Vec::with_capacity(MAX_FRAME),
            tx_guest: Vec::new(),
            tx_pending: false,
            rx_buf: vec![0u8; MAX_FRAME],
            rx_pending: None,
            rx_blocked: false,
            backend_interest: (false, false),
            shared_backend_fd,
            tx_failing: false,
            rx_failing: false,
            rx_retry: Timer::new()?,
            rx_paused: false,
            rx_backoff: None,
        };
        w.register()?;
        Ok(w)
    }

    fn register(&mut self) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            self.kill.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_KILL),
        )?;
        let guest = [
            (Some(self.guest.tx.as_raw_fd()), TOKEN_GUEST_TX),
            (Some(self.guest.rx.as_raw_fd()), TOKEN_GUEST_RX),
            (self.guest.timer, TOKEN_TIMER),
            (Some(self.rx_retry.as_raw_fd()), TOKEN_RX_RETRY),
        ];
        for (fd, token) in guest {
            if let Some(fd) = fd {
                self.epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )?;
            }
        }
        let empty = EpollEvent::new(EventSet::empty(), TOKEN_BACKEND_RX);
        self.epoll
            .ctl(ControlOperation::Add, self.backend.rx_fd(), empty)?;
        if !self.shared_backend_fd {
            let empty = EpollEvent::new(EventSet::empty(), TOKEN_BACKEND_TX);
            self.epoll
                .ctl(ControlOperation::Add, self.backend.tx_fd(), empty)?;
        }
        self.update_backend_interest()
    }

    /// Watches the backend for reading unless the guest has no buffers, and
    /// for writing only while a frame is held.
    fn update_backend_interest(&mut self) -> io::Result<()> {
        let want = (!self.rx_blocked && !self.rx_paused, self.tx_pending);
        if want == self.backend_interest {
            return Ok(());
        }
        self.backend_interest = want;
        let (rx, tx) = want;
        if self.shared_backend_fd {
            let mut set = EventSet::empty();
            if rx {
                set |= EventSet::IN;
            }
            if tx {
                set |= EventSet::OUT;
            }
            return self.epoll.ctl(
                ControlOperation::Modify,
                self.backend.rx_fd(),
                EpollEvent::new(set, TOKEN_BACKEND_RX),
            );
        }
        let rx_set = if rx { EventSet::IN } else { EventSet::empty() };
        self.epoll.ctl(
            ControlOperation::Modify,
            self.backend.rx_fd(),
            EpollEvent::new(rx_set, TOKEN_BACKEND_RX),
        )?;
        let tx_set = if tx { EventSet::OUT } else { EventSet::empty() };
        self.epoll.ctl(
            ControlOperation::Modify,
            self.backend.tx_fd(),
            EpollEvent::new(tx_set, TOKEN_BACKEND_TX),
        )
    }

    /// Runs until stopped and says why it stopped.
    fn run_logged(&mut self) {
        match self.run() {
            Ok(()) => log::debug!("NIC {}: worker stopped", self.name),
            Err(e) => log::error!(
                "NIC {}: worker stopped: waiting for events failed: {e}; the NIC moves no more \
                 frames",
                self.name
            ),
        }
    }

    /// Moves frames until the handle stops it (`Ok`) or waiting for events
    /// fails.
    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::default(); 16];
        // Frames may already be queued on either side.
        self.process_tx();
        self.process_rx();
        self.frontend.flush();
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if !self.dispatch(&events[..n]) {
                return Ok(());
            }
        }
    }

    /// Handles `events`; `false` when the worker is to stop.
    fn dispatch(&mut self, events: &[EpollEvent]) -> bool {
        for ev in events {
            let set = ev.event_set();
            let guest = match ev.data() {
                TOKEN_KILL => return false,
                TOKEN_BACKEND_RX => {
                    if set.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
                        self.process_rx();
                    }
                    if set.contains(EventSet::OUT) {
                        self.process_tx();
                    }
                    continue;
                }
                TOKEN_BACKEND_TX => {
                    self.process_tx();
                    continue;
                }
                TOKEN_GUEST_TX => {
                    // Drained: one pass serves every ring of the doorbell.
                    let _ = self.guest.tx.read();
                    GuestEvent::Tx
                }
                TOKEN_GUEST_RX => {
                    let _ = self.guest.rx.read();
                    GuestEvent::Rx
                }
                TOKEN_TIMER => GuestEvent::Timer,
                TOKEN_RX_RETRY => {
                    self.rx_retry.drain();
                    self.rx_retry_due();
                    continue;
                }
                _ => continue,
            };
            match self.frontend.guest_event(guest) {
                GuestWork::Tx => self.process_tx(),
                GuestWork::Rx => {
                    self.rx_blocked = false;
                    self.process_rx();
                }
                GuestWork::None => {}
            }
        }
        self.frontend.flush();
        if let Err(e) = self.update_backend_interest() {
            // Not repeated: the wanted interest is recorded either way.
            log::warn!("NIC {}: watching the backend's fds: {e}", self.name);
        }
        true
    }

    /// Sends what the guest queued, holding a frame the backend refuses.
    fn process_tx(&mut self) {
        loop {
            if !self.tx_pending {
                self.tx_buf.clear();
                self.tx_guest.clear();
                if !self.frontend.pop_tx_guest(
                    &mut self.tx_hdr,
                    &mut self.tx_buf,
                    &mut self.tx_guest,
                ) {
                    break;
                }
                if let Some(vid) = self.vlan {
                    if !self.tx_guest.is_empty() {
                        // Tagging inserts bytes: work on a copy.
                        guest_buf::gather(&self.tx_guest, &mut self.tx_buf);
                        self.tx_guest.clear();
                    }
                    // Tagged once: a frame the backend refuses is held tagged.
                    let tci = vid & 0x0fff;
                    vlan::insert(&mut self.tx_buf, vlan::TPID_8021Q, tci, &mut self.tx_hdr);
                }
                self.tx_pending = true;
            }
            let hdr = self.tx_hdr;
            let in_guest = !self.tx_guest.is_empty();
            let frame: &[u8] = &self.tx_buf;
            let len = if in_guest {
                guest_buf::total_len(&self.tx_guest)
            } else {
                frame.len()
            };
            if len < vlan::ETHERTYPE_OFFSET + 2 {
                // Not even an Ethernet header: a guest bug; drop and count.
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
            } else if !self.carrier.is_up() {
                // The cable is out: the frame goes nowhere.
                self.stats.tx_link_down.fetch_add(1, Ordering::Relaxed);
            } else {
                let sent = if in_guest {
                    self.backend.send_guest(&hdr, &self.tx_guest)
                } else {
                    self.backend.send(&hdr, &[io::IoSlice::new(frame)])
                };
                match sent {
                    Ok(n) => {
                        self.backend_ok(true);
                        self.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                        self.stats.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.stats.tx_stalls.fetch_add(1, Ordering::Relaxed);
                        break; // keep the frame; resume when tx_fd is writable
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.backend_failed(true, &e);
                        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.tx_pending = false;
            self.frontend.complete_tx();
        }
    }

    /// Delivers frames from the backend while the guest has buffers.
    fn process_rx(&mut self) {
        if !self.carrier.is_up() {
            self.drain_rx_link_down();
            return;
        }
        let mut rechecks = 0;
        loop {
            if self.rx_paused && self.rx_pending.is_none() {
                // After a failed receive: the retry timer brings us back.
                break;
            }
            // A held frame was already filtered; a fresh one goes through the VLAN rule.
            if self.rx_pending.is_none() && self.vlan.is_none() {
                // Straight into guest memory when the guest has the room.
                if let Some(bufs) = self.frontend.rx_direct() {
                    match self.backend.recv_guest(bufs) {
                        Ok((hdr, len)) => {
                            self.backend_ok(false);
                            let done = self.frontend.rx_direct_done(&hdr, len);
                            self.count_rx(done, len);
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // WouldBlock, or a backend error: wait for readiness.
                            self.recv_failed(&e);
                            break;
                        }
                    }
                }
            }
            let (mut hdr, mut len, fresh) = match self.rx_pending.take() {
                Some((h, l)) => (h, l, false),
                None => match self.backend.recv(&mut self.rx_buf) {
                    Ok((h, l)) => {
                        self.backend_ok(false);
                        (h, l, true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // WouldBlock, or a backend error: wait for readiness.
                        self.recv_failed(&e);
                        break;
                    }
                },
            };
            if let (true, Some(vid)) = (fresh, self.vlan) {
                match vlan::untag(&mut hdr, &mut self.rx_buf, len, vid) {
                    Some(l) => len = l,
                    None => {
                        self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            match self.frontend.push_rx(&hdr, &self.rx_buf[..len]) {
                RxPush::NoBuffers => {
                    self.rx_pending = Some((hdr, len));
                    // "Buffers again" is believed a bounded number of times
                    // in a row: a ring that keeps saying so and keeps
                    // refusing (an avail index the queue rejects) stalls
                    // its own NIC, not the worker.
                    if self.frontend.rx_wait_buffers() && rechecks < RX_RECHECKS {
                        rechecks += 1;
                        continue;
                    }
                    self.stats.rx_stalls.fetch_add(1, Ordering::Relaxed);
                    self.rx_blocked = true;
                    break;
                }
                done => self.count_rx(done, len),
            }
        }
    }

    /// With the cable out: reads everything the backend has and drops it,
    /// counted, without touching guest receive buffers.
    fn drain_rx_link_down(&mut self) {
        if self.rx_pending.take().is_some() {
            self.frontend.rx_discard();
            self.stats.rx_link_down.fetch_add(1, Ordering::Relaxed);
        }
        // Keep reading the backend even if the guest had no buffers; a
        // bounded batch, so that a flood cannot starve the other events
        // (the backend's fd stays readable and brings the worker back).
        self.rx_blocked = false;
        for _ in 0..LINK_DOWN_BATCH {
            if self.rx_paused {
                break;
            }
            match self.backend.recv(&mut self.rx_buf) {
                Ok(_) => {
                    self.backend_ok(false);
                    self.stats.rx_link_down.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.recv_failed(&e);
                    break;
                }
            }
        }
    }

    /// The pause after a failed receive is over: try again (a new failure
    /// pauses again, for longer).
    fn rx_retry_due(&mut self) {
        self.rx_paused = false;
        self.process_rx();
    }

    /// A receive returned `e`: nothing to say for WouldBlock.
    fn recv_failed(&mut self, e: &io::Error) {
        if e.kind() == io::ErrorKind::WouldBlock {
            return;
        }
        self.backend_failed(false, e);
        // Its fd may stay readable: stop reading it for a while.
        let pause = self
            .rx_backoff
            .map_or(RX_RETRY_FIRST, |d| (d * 2).min(RX_RETRY_MAX));
        self.rx_backoff = Some(pause);
        self.rx_paused = self.rx_retry.arm(pause).is_ok();
    }

    /// Logs a hard backend error: the first of a run as a warning.
    fn backend_failed(&mut self, tx: bool, e: &io::Error) {
        let (failing, what) = if tx {
            (&mut self.tx_failing, "send")
        } else {
            (&mut self.rx_failing, "receive")
        };
        if std::mem::replace(failing, true) {
            log::debug!("NIC {}: backend {what} failed again: {e}", self.name);
        } else {
            log::warn!(
                "NIC {}: backend {what} failed: {e} (further failures are logged at debug level)",
                self.name
            );
        }
    }

    /// A backend send (`tx`) or receive worked: ends a run of failures.
    fn backend_ok(&mut self, tx: bool) {
        let (failing, what) = if tx {
            (&mut self.tx_failing, "send")
        } else {
            (&mut self.rx_failing, "receive")
        };
        if std::mem::take(failing) {
            log::info!("NIC {}: backend {what} works again", self.name);
        }
        if !tx {
            self.rx_backoff = None;
        }
    }

    fn count_rx(&self, result: RxPush, len: usize) {
        match result {
            RxPush::Delivered => {
                self.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                self.stats.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            RxPush::Dropped | RxPush::NoBuffers => {
                self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
