//! Readiness plumbing: the one epoll fd the NIC worker watches (host
//! sockets, a timerfd and a "frames queued" eventfd inside), per-fd
//! interest kept exact so that nothing stays ready without being acted
//! on, and a small slab for flow tables.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

/// Token of the timerfd.
pub(crate) const TOKEN_TIMER: u64 = 1;
/// Token of the "frames queued" eventfd.
pub(crate) const TOKEN_QUEUED: u64 = 2;

/// Kinds of socket tokens (the high 16 bits of a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TcpFlow = 1,
    TcpListener = 2,
    UdpFlow = 3,
    UdpFwd = 4,
    Icmp = 5,
}

/// A socket token: kind and slot index.
pub(crate) fn token(kind: Kind, idx: usize) -> u64 {
    ((kind as u64) << 48) | idx as u64
}

/// Splits a socket token.
pub(crate) fn untoken(t: u64) -> Option<(Kind, usize)> {
    let idx = (t & 0xffff_ffff_ffff) as usize;
    let kind = match t >> 48 {
        1 => Kind::TcpFlow,
        2 => Kind::TcpListener,
        3 => Kind::UdpFlow,
        4 => Kind::UdpFwd,
        5 => Kind::Icmp,
        _ => return None,
    };
    Some((kind, idx))
}

/// What an fd is registered for; `NONE` means not in the epoll set at all
/// (epoll reports errors and hang-ups even for an empty event mask, which
/// would wake the worker for nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };

    fn events(self) -> EventSet {
        let mut e = EventSet::empty();
        if self.read {
            e |= EventSet::IN;
        }
        if self.write {
            e |= EventSet::OUT;
        }
        e
    }
}

/// The backend's epoll set, timer and queue eventfd.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: Epoll,
    timer: TimerFd,
    queued: EventFd,
    queued_set: bool,
    /// When the timer fires (None: disarmed).
    armed: Option<Instant>,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        let epoll = Epoll::new()?;
        let timer = TimerFd::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let queued = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            timer.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_TIMER),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            queued.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_QUEUED),
        )?;
        Ok(Poller {
            epoll,
            timer,
            queued,
            queued_set: false,
            armed: None,
        })
    }

    /// The fd the NIC worker watches.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Moves `fd` from interest `cur` to `want` (adding, modifying or
    /// deleting it in the set).
    pub fn set(&self, fd: RawFd, tok: u64, cur: &mut Interest, want: Interest) -> io::Result<()> {
        if *cur == want {
            return Ok(());
        }
        let ev = EpollEvent::new(want.events(), tok);
        let r = match (*cur == Interest::NONE, want == Interest::NONE) {
            (true, _) => self.epoll.ctl(ControlOperation::Add, fd, ev),
            (false, true) => self.epoll.ctl(ControlOperation::Delete, fd, ev),
            (false, false) => self.epoll.ctl(ControlOperation::Modify, fd, ev),
        };
        if r.is_ok() {
            *cur = want;
        }
        r
    }

    /// Takes the fd out of the set (before it is closed).
    pub fn remove(&self, fd: RawFd, cur: &mut Interest) {
        let _ = self.set(fd, 0, cur, Interest::NONE);
        *cur = Interest::NONE;
    }

    /// Ready events, without waiting.
    pub fn ready(&self, events: &mut [EpollEvent]) -> usize {
        loop {
            match self.epoll.wait(0, events) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            }
        }
    }

    /// Makes the eventfd readable exactly when `queued`.
    pub fn set_queued(&mut self, queued: bool) {
        if queued == self.queued_set {
            return;
        }
        if queued {
            // Cannot fail: the counter is 0 here.
            let _ = self.queued.write(1);
        } else {
            // Drains the counter to 0; WouldBlock when already 0.
            let _ = self.queued.read();
        }
        self.queued_set = queued;
    }

    /// Whether the timer's deadline has passed.
    pub fn timer_due(&self, now: Instant) -> bool {
        self.armed.is_some_and(|at| at <= now)
    }

    /// Arms the timer for `at` (None: disarm). An already armed earlier
    /// deadline is kept unless `exact`: firing early only costs a wake-up.
    pub fn arm(&mut self, at: Option<Instant>, now: Instant, exact: bool) {
        if !exact {
            if let (Some(cur), Some(want)) = (self.armed, at) {
                if cur > now && cur <= want {
                    return;
                }
            }
            if at.is_none() && self.armed.is_some_and(|cur| cur > now) {
                return;
            }
        }
        if at == self.armed && at.is_none_or(|a| a > now) {
            return;
        }
        let dur = match at {
            // timerfd_settime with 0 disarms; 1 µs is "at once".
            Some(at) => at
                .saturating_duration_since(now)
                .max(Duration::from_micros(1)),
            None => Duration::ZERO,
        };
        // Re-arming also resets the expiration count (not readable any more).
        if self.timer.reset(dur, None).is_ok() {
            self.armed = at;
        }
    }
}

/// A slab: stable indices for flows, reused after removal.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(v);
                i
            }
            None => {
                self.slots.push(Some(v));
                self.slots.len() - 1
            }
        }
    }

    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        self.free.push(i);
        Some(v)
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i)?.as_ref()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Indices in use.
    pub fn indices(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (i, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLIN != 0
    }

    #[test]
    fn tokens_round_trip() {
        for k in [
            Kind::TcpFlow,
            Kind::TcpListener,
            Kind::UdpFlow,
            Kind::UdpFwd,
            Kind::Icmp,
        ] {
            assert_eq!(untoken(token(k, 12345)), Some((k, 12345)));
        }
        assert_eq!(untoken(TOKEN_TIMER), None);
        assert_eq!(untoken(TOKEN_QUEUED), None);
    }

    #[test]
    fn queued_and_timer_readiness() {
        let mut p = Poller::new().unwrap();
        assert!(!readable(p.fd()));
        p.set_queued(true);
        assert!(readable(p.fd()));
        p.set_queued(false);
        assert!(!readable(p.fd()));
        let now = Instant::now();
        p.arm(Some(now), now, true);
        std::thread::sleep(Duration::from_millis(5));
        assert!(readable(p.fd()));
        assert!(p.timer_due(Instant::now()));
        p.arm(None, Instant::now(), true);
        assert!(!readable(p.fd()), "re-arming clears the expiration");
        p.arm(
            Some(Instant::now() + Duration::from_secs(60)),
            Instant::now(),
            true,
        );
        assert!(!readable(p.fd()));
    }

    #[test]
    fn interest_add_modify_delete() {
        let p = Poller::new().unwrap();
        let e = EventFd::new(EFD_NONBLOCK).unwrap();
        e.write(1).unwrap();
        let mut cur = Interest::NONE;
        p.set(e.as_raw_fd(), 99, &mut cur, Interest::READ).unwrap();
        assert!(readable(p.fd()));
        let mut evs = [EpollEvent::default(); 4];
        assert_eq!(p.ready(&mut evs), 1);
        assert_eq!(evs[0].data(), 99);
        p.set(e.as_raw_fd(), 99, &mut cur, Interest::WRITE).unwrap();
        p.set(e.as_raw_fd(), 99, &mut cur, Interest::NONE).unwrap();
        assert!(!readable(p.fd()));
        p.remove(e.as_raw_fd(), &mut cur);
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.insert("c"), a);
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.indices(), vec![0, 1]);
    }
}
