//! Interrupt delivery: the INTx line (through [`tapir_pci::Intx`]) and the
//! interrupt throttling timer.
//!
//! # The line and ITR
//!
//! The line's level is `(ICR & IMS) != 0`, re-evaluated on every change
//! of either register, with one refinement: with ITR > 0 a new assertion
//! is held back until `ITR * 256 ns` have passed since the previous one
//! (deassertion is never delayed). A held-back assertion arms a timerfd
//! that the NIC worker polls with the guest's doorbells; when it fires the
//! worker re-evaluates, so causes that arrived meanwhile are coalesced into
//! one interrupt and no extra thread is needed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tapir_devices::LevelIrq;
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::{Intx, IntxPin, PciConfiguration, PciHeader};

/// The function's INTx line, usable away from its configuration space.
///
/// [`Intx`] keeps the line consistent with the command register's
/// INTx-disable bit, which it reads from a configuration space. The PCI
/// device object owns the real configuration space while interrupts are
/// also raised from the NIC worker, so the line keeps a shadow of the
/// command register here; the device copies every command register write
/// into it ([`IrqLine::command_written`]) and reflects [`IrqLine::asserted`]
/// into its interrupt status bit when the guest reads configuration space.
pub struct IrqLine {
    intx: Intx,
    shadow: PciConfiguration,
}

impl std::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IrqLine").field("intx", &self.intx).finish()
    }
}

impl IrqLine {
    /// Drives `irq` as INTA of the function described by `config` (its
    /// interrupt pin register is set).
    pub fn new(irq: Arc<dyn LevelIrq>, config: &mut PciConfiguration) -> Self {
        let intx = Intx::new(irq, IntxPin::IntA, config);
        Self {
            intx,
            shadow: PciConfiguration::new(&PciHeader::default()),
        }
    }

    /// Sets the interrupt condition. A failure to drive the line is retried
    /// on the next change (see [`Intx`]); there is nobody to report it to.
    pub fn set(&mut self, high: bool) {
        if high != self.intx.asserted() {
            let _ = self.intx.set_level(&mut self.shadow, high);
        }
    }

    /// The interrupt condition (the status register's interrupt bit).
    pub fn asserted(&self) -> bool {
        self.intx.asserted()
    }

    /// The guest wrote the command register: `command` is its new value.
    pub fn command_written(&mut self, command: u16) {
        self.shadow.write(PCI_COMMAND, &command.to_le_bytes());
        let _ = self.intx.command_written(&self.shadow);
    }
}

/// A one-shot, non-blocking monotonic timerfd.
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
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line(Mutex<Vec<bool>>);
    impl LevelIrq for Line {
        fn set_level(&self, high: bool) -> io::Result<()> {
            self.0.lock().unwrap().push(high);
            Ok(())
        }
    }

    #[test]
    fn line_honours_intx_disable() {
        let line = Arc::new(Line::default());
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        let mut l = IrqLine::new(line.clone(), &mut cfg);
        assert_eq!(cfg.interrupt_pin(), Some(IntxPin::IntA));
        l.set(true);
        l.set(true);
        l.command_written(tapir_pci::configuration::PCI_COMMAND_INTX_DISABLE);
        assert!(l.asserted());
        l.command_written(0);
        l.set(false);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false, true, false]);
    }

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
}
