//! Interrupt lines backed by KVM irqfds.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kvm_ioctls::VmFd;
use tapir_devices::{EdgeIrq, LevelIrq};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn kvm_err(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// An edge-triggered GSI: one eventfd write is one interrupt.
pub struct IrqfdEdge {
    fd: EventFd,
}

impl IrqfdEdge {
    /// Registers an irqfd for `gsi`.
    pub fn new(vm: &VmFd, gsi: u32) -> io::Result<Self> {
        let fd = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd(&fd, gsi).map_err(kvm_err)?;
        Ok(Self { fd })
    }
}

impl EdgeIrq for IrqfdEdge {
    fn trigger(&self) -> io::Result<()> {
        self.fd.write(1)
    }
}

/// A level-triggered GSI (PCI INTx) using an irqfd with a resample fd.
///
/// KVM asserts the line on an irqfd write and de-asserts it when the guest
/// EOIs, then signals the resample fd; the event loop calls
/// [`IrqfdLevel::resample`], which re-asserts while the device holds its
/// output high.
pub struct IrqfdLevel {
    trigger: EventFd,
    resample: EventFd,
    level: AtomicBool,
    /// Times the device raised the line (low to high).
    raised: Arc<AtomicU64>,
}

impl IrqfdLevel {
    /// Registers an irqfd with resampling for `gsi`.
    pub fn new(vm: &VmFd, gsi: u32) -> io::Result<Self> {
        let trigger = EventFd::new(EFD_NONBLOCK)?;
        let resample = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd_with_resample(&trigger, &resample, gsi)
            .map_err(kvm_err)?;
        Ok(Self {
            trigger,
            resample,
            level: AtomicBool::new(false),
            raised: Arc::default(),
        })
    }

    /// Counts the times the device raised the line (low to high; the
    /// re-assertions after an EOI are not counted).
    pub fn raised(&self) -> Arc<AtomicU64> {
        self.raised.clone()
    }

    /// The fd the event loop watches.
    pub fn resample_fd(&self) -> &EventFd {
        &self.resample
    }

    /// Handles a resample event.
    pub fn resample(&self) -> io::Result<()> {
        // Drain the counter; EAGAIN means a spurious wake-up.
        let _ = self.resample.read();
        if self.level.load(Ordering::SeqCst) {
            self.trigger.write(1)?;
        }
        Ok(())
    }
}

impl LevelIrq for IrqfdLevel {
    fn set_level(&self, high: bool) -> io::Result<()> {
        let was = self.level.swap(high, Ordering::SeqCst);
        if high && !was {
            self.raised.fetch_add(1, Ordering::Relaxed);
            self.trigger.write(1)?;
        }
        Ok(())
    }
}
