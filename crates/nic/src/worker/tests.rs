//! The worker's stop and error reporting, driven on the test thread.

use std::collections::VecDeque;
use std::sync::{Mutex, Once};

use log::{Level, Log, Metadata, Record};
use tapir_net_backend::{MemoryBackend, MemoryPeer, Offloads};

use super::*;

/// Records every log line of this test binary.
struct Capture(Mutex<Vec<(Level, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        let line = (record.level(), record.args().to_string());
        tapir_devices::lock(&self.0).push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// Makes [`CAPTURE`] the logger of this test binary.
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The lines logged so far that name NIC `nic` (tests run in parallel:
/// each uses its own NIC name).
fn logged(nic: &str) -> Vec<(Level, String)> {
    let prefix = format!("NIC {nic}: ");
    tapir_devices::lock(&CAPTURE.0)
        .iter()
        .filter(|(_, m)| m.starts_with(&prefix))
        .cloned()
        .collect()
}

/// A guest that sends `tx` and takes every frame.
#[derive(Default)]
struct Guest {
    tx: VecDeque<Vec<u8>>,
}

impl NicFrontend for Guest {
    fn guest_event(&mut self, _ev: GuestEvent) -> GuestWork {
        GuestWork::None
    }
    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        let Some(f) = self.tx.pop_front() else {
            return false;
        };
        *hdr = NetHdr::default();
        buf.extend_from_slice(&f);
        true
    }
    fn complete_tx(&mut self) {}
    fn push_rx(&mut self, _hdr: &NetHdr, _frame: &[u8]) -> RxPush {
        RxPush::Delivered
    }
    fn rx_wait_buffers(&mut self) -> bool {
        false
    }
    fn flush(&mut self) {}
}

/// A worker for NIC `nic` over the in-memory backend, not started, with
/// `frames` queued by the guest; its log lines are captured.
fn worker(nic: &str, frames: usize) -> (NetWorker, MemoryPeer, EventFd) {
    capture_logs();
    let (backend, peer) = MemoryBackend::new(16, Offloads::default()).unwrap();
    let guest = Guest {
        tx: (0..frames).map(|_| vec![0x5a; 60]).collect(),
    };
    let kill = EventFd::new(EFD_NONBLOCK).unwrap();
    let fds = GuestFds {
        tx: EventFd::new(EFD_NONBLOCK).unwrap(),
        rx: EventFd::new(EFD_NONBLOCK).unwrap(),
        timer: None,
    };
    let w = NetWorker::new(
        nic,
        Box::new(guest),
        fds,
        Box::new(backend),
        None,
        Arc::new(NicStats::default()),
        Carrier::new(),
        &kill,
    )
    .unwrap();
    (w, peer, kill)
}

#[test]
fn a_failed_event_wait_stops_the_worker_with_an_error() {
    let (mut w, _peer, _kill) = worker("epollfail", 0);
    let not_epoll = EventFd::new(EFD_NONBLOCK).unwrap();
    let fd = w.epoll.as_raw_fd();
    // SAFETY: `fd` is the worker's epoll descriptor, owned by `w.epoll`
    // and used by nothing else. dup2 atomically makes that number refer
    // to a duplicate of an eventfd (closing the epoll instance), so the
    // worker's next epoll_wait fails with EINVAL; `w.epoll` closes the
    // duplicate when dropped. No pointers are passed.
    assert_eq!(unsafe { libc::dup2(not_epoll.as_raw_fd(), fd) }, fd);
    assert_eq!(
        w.run().unwrap_err().kind(),
        io::ErrorKind::InvalidInput,
        "epoll_wait on an eventfd"
    );
    w.run_logged();
    let lines = logged("epollfail");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, Level::Error);
    assert!(
        lines[0]
            .1
            .contains("worker stopped: waiting for events failed"),
        "{lines:?}"
    );
}

#[test]
fn a_stopped_worker_says_so_at_debug_level() {
    let (mut w, _peer, kill) = worker("stopped", 0);
    kill.write(1).unwrap();
    w.run_logged();
    assert_eq!(
        logged("stopped"),
        vec![(Level::Debug, "NIC stopped: worker stopped".to_string())]
    );
}

#[test]
fn backend_failures_are_logged_once_per_run() {
    let (mut w, peer, _kill) = worker("failing", 3);
    peer.fail_sends(Some(io::ErrorKind::BrokenPipe));
    w.process_tx();
    assert_eq!(w.stats.tx_dropped.load(Ordering::Relaxed), 3);
    peer.fail_recvs(Some(io::ErrorKind::BrokenPipe));
    peer.inject(NetHdr::default(), &[1; 60]).unwrap();
    // Each failure pauses reading; the retry timer's end is played here.
    w.process_rx();
    w.rx_retry_due();
    peer.fail_recvs(None);
    w.rx_retry_due();
    assert_eq!(w.stats.rx_frames.load(Ordering::Relaxed), 1);
    let lines = logged("failing");
    let levels: Vec<Level> = lines.iter().map(|l| l.0).collect();
    assert_eq!(
        levels,
        [
            Level::Warn,
            Level::Debug,
            Level::Debug,
            Level::Warn,
            Level::Debug,
            Level::Info
        ],
        "{lines:?}"
    );
    assert!(lines[0].1.contains("backend send failed"), "{lines:?}");
    assert!(lines[3].1.contains("backend receive failed"), "{lines:?}");
    assert!(lines[5].1.contains("receive works again"), "{lines:?}");
}

#[test]
fn a_backend_that_stays_readable_while_every_receive_fails_does_not_spin_the_worker() {
    let (mut w, peer, _kill) = worker("deadbackend", 0);
    peer.fail_recvs(Some(io::ErrorKind::BrokenPipe));
    // Readable (a frame waits), and every read fails.
    peer.inject(NetHdr::default(), &[1; 60]).unwrap();
    w.pump().unwrap();
    w.pump().unwrap();
    // One attempt, then the backend is not read until the retry timer:
    // one warning, no stream of "failed again".
    let lines = logged("deadbackend");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, Level::Warn);
    assert!(w.rx_paused);
    assert_eq!(w.rx_backoff, Some(RX_RETRY_FIRST));
    // The backend works again, and the retry timer's end (played here
    // without waiting for it) brings the worker back.
    peer.fail_recvs(None);
    w.rx_retry_due();
    assert_eq!(w.stats.rx_frames.load(Ordering::Relaxed), 1);
    assert!(!w.rx_paused);
    assert_eq!(w.rx_backoff, None);
    assert!(logged("deadbackend")
        .iter()
        .any(|(l, m)| *l == Level::Info && m.contains("receive works again")));
}

#[test]
fn the_pause_after_failed_receives_doubles_up_to_its_limit() {
    let (mut w, _peer, _kill) = worker("backoff", 0);
    let e = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
    let mut pauses = Vec::new();
    for _ in 0..10 {
        w.recv_failed(&e);
        pauses.push(w.rx_backoff.unwrap());
    }
    assert_eq!(pauses[0], RX_RETRY_FIRST);
    assert_eq!(pauses[1], RX_RETRY_FIRST * 2);
    assert_eq!(*pauses.last().unwrap(), RX_RETRY_MAX);
    // WouldBlock is no failure.
    let (mut w, _peer, _kill) = worker("wouldblock", 0);
    w.recv_failed(&io::Error::from(io::ErrorKind::WouldBlock));
    assert!(!w.rx_paused);
}

/// A guest whose ring keeps saying "buffers added" and keeps refusing.
struct Liar;

impl NicFrontend for Liar {
    fn guest_event(&mut self, _ev: GuestEvent) -> GuestWork {
        GuestWork::Rx
    }
    fn pop_tx(&mut self, _hdr: &mut NetHdr, _buf: &mut Vec<u8>) -> bool {
        false
    }
    fn complete_tx(&mut self) {}
    fn push_rx(&mut self, _hdr: &NetHdr, _frame: &[u8]) -> RxPush {
        RxPush::NoBuffers
    }
    fn rx_wait_buffers(&mut self) -> bool {
        true
    }
    fn flush(&mut self) {}
}

#[test]
fn a_ring_that_always_claims_new_buffers_cannot_hold_the_worker() {
    let (backend, peer) = MemoryBackend::new(16, Offloads::default()).unwrap();
    let kill = EventFd::new(EFD_NONBLOCK).unwrap();
    let fds = GuestFds {
        tx: EventFd::new(EFD_NONBLOCK).unwrap(),
        rx: EventFd::new(EFD_NONBLOCK).unwrap(),
        timer: None,
    };
    let mut w = NetWorker::new(
        "liar",
        Box::new(Liar),
        fds,
        Box::new(backend),
        None,
        Arc::new(NicStats::default()),
        Carrier::new(),
        &kill,
    )
    .unwrap();
    peer.inject(NetHdr::default(), &[1; 60]).unwrap();
    // Returns: the frame is held and the backend no longer read.
    w.process_rx();
    assert!(w.rx_blocked);
    assert!(w.rx_pending.is_some());
    assert_eq!(w.stats.rx_stalls.load(Ordering::Relaxed), 1);
}

/// Waits (bounded) until `peer` has seen `n` frames from the guest.
fn wait_sent(peer: &MemoryPeer, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while peer.pending_from_guest() < n {
        assert!(std::time::Instant::now() < deadline, "frames not sent");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_worker_thread_runs_its_start_first_then_workers_one_after_another() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let threads = WorkerThreads::new(Arc::new(move || {
        let name = std::thread::current().name().map(str::to_string);
        tapir_devices::lock(&seen).push(name);
        Ok(())
    }));
    let thread = threads.spawn("seq").unwrap();
    // The first worker sends 2 frames, the second (given the first's
    // backend back) 3 more: both ran, on the one thread, started once.
    let (w, peer, _kill) = worker("seq", 2);
    let backend = thread.run(w).unwrap();
    wait_sent(&peer, 2);
    let backend = backend.stop().expect("the backend comes back");
    let guest = Guest {
        tx: (0..3).map(|_| vec![0x5a; 60]).collect(),
    };
    let fds = GuestFds {
        tx: EventFd::new(EFD_NONBLOCK).unwrap(),
        rx: EventFd::new(EFD_NONBLOCK).unwrap(),
        timer: None,
    };
    let w = NetWorker::manual(
        "seq",
        Box::new(guest),
        fds,
        backend,
        None,
        Arc::new(NicStats::default()),
        Carrier::new(),
    )
    .unwrap();
    let handle = thread.run(w).unwrap();
    wait_sent(&peer, 5);
    assert!(handle.stop().is_some());
    drop(thread);
    assert_eq!(
        *tapir_devices::lock(&starts),
        vec![Some("seq-net".to_string())]
    );
}

#[test]
fn a_thread_whose_start_fails_runs_no_worker() {
    let threads = WorkerThreads::new(Arc::new(|| Err("no filter for you".into())));
    let thread = threads.spawn("startfail").unwrap();
    let (w, peer, _kill) = worker("startfail", 1);
    // Whether the thread has ended yet or not, the worker never runs.
    match thread.run(w) {
        Ok(handle) => assert!(handle.stop().is_none()),
        Err(e) => assert!(e.to_string().contains("has ended"), "{e}"),
    }
    drop(thread);
    assert_eq!(peer.pending_from_guest(), 0);
    assert_eq!(
        logged("startfail"),
        vec![(
            Level::Error,
            "NIC startfail: its thread could not start: no filter for you; the NIC moves no \
             frames"
                .to_string()
        )]
    );
}
