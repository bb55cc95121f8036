//! A one-shot timer as a file descriptor, for device models whose worker
//! waits on fds (epoll) rather than sleeping: interrupt throttling
//! (e1000 ITR), chip timers (rtl8139 TCTR/TimerInt) and grace periods.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A one-shot, non-blocking, close-on-exec `CLOCK_MONOTONIC` timerfd.
/// It owns its descriptor, which is closed on drop; it is readable (an
/// epoll `IN` event) from expiry until [`Timer::drain`].
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    fn set(&self, after: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec that outlives the call; a
        // null old-value pointer is allowed; the fd is ours.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fires once after `after` (at least 1 ns: zero would disarm).
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        self.set(after.max(Duration::from_nanos(1)))
    }

    /// Cancels a pending expiry.
    pub fn disarm(&self) -> io::Result<()> {
        self.set(Duration::ZERO)
    }

    /// Consumes an expiry; `false` if none was pending.
    pub fn drain(&self) -> bool {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`, which is 8 bytes long;
        // the fd is non-blocking.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        r == 8
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_fires_once_and_disarms() {
        let t = Timer::new().unwrap();
        assert!(!t.drain());
        t.arm(Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.drain());
        assert!(!t.drain());
        t.arm(Duration::from_millis(1)).unwrap();
        t.disarm().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        assert!(!t.drain());
    }

    #[test]
    fn a_zero_delay_still_fires() {
        let t = Timer::new().unwrap();
        t.arm(Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(t.drain());
    }
}
