//! The tapir VMM core: builds a KVM VM from a [`tapir_config::VmConfig`],
//! runs its vCPU threads and its device event loop, and tears it all down
//! when the guest powers off, resets, dies, or tapir is signalled.
//!
//! Threads: the caller's thread runs the event loop (console input, irqfd
//! resampling, termination signals); one thread per vCPU runs KVM_RUN and
//! dispatches port/MMIO exits to the buses; one worker thread per NIC
//! (tapir-nic). Each installs its seccomp filter (tapir-seccomp) before
//! it touches guest input, unless `--seccomp=off`.

pub mod console;
pub mod control;
pub mod disk;
pub mod exit;
pub mod host;
pub mod irq;
pub mod kvm_irq;
pub mod net;
pub mod pci;
pub mod signals;
pub mod vcpu;
pub mod vfio;
mod vm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tapir_devices::debug_exit::DebugExitSink;
use tapir_devices::{PowerEvent, PowerSink};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use exit::ExitReason;
pub use host::{kvm_kind, KvmKind};
pub use net::{open_backend, BackendOpener, OpenedBackend};
pub use vm::{run, run_with_backends, VmmError};

/// VM-wide stop control shared by vCPUs, devices and the event loop. The
/// first reason recorded wins.
pub struct VmControl {
    reason: Mutex<Option<ExitReason>>,
    stopping: AtomicBool,
    exit_evt: EventFd,
    /// The vCPUs' exits to user space.
    pub exits: vcpu::ExitCounters,
}

impl VmControl {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            exit_evt: EventFd::new(EFD_NONBLOCK)?,
            exits: vcpu::ExitCounters::default(),
        })
    }

    /// Records why the VM stops (if nothing else did first) and wakes the
    /// event loop.
    pub fn stop(&self, reason: ExitReason) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.exit_evt.write(1);
    }

    /// Whether the VM is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The guest asked for soft-off.
    pub fn power_off(&self) {
        self.stop(ExitReason::PowerOff)
    }

    /// The guest asked for a reset.
    pub fn reset(&self) {
        self.stop(ExitReason::Reset)
    }

    /// A vCPU can no longer run.
    pub fn guest_died(&self, vcpu: u8, reason: String, registers: String) {
        self.stop(ExitReason::GuestDied {
            vcpu,
            reason,
            registers,
        })
    }

    fn reason(&self) -> Option<ExitReason> {
        self.reason.lock().unwrap().clone()
    }
}

impl PowerSink for VmControl {
    fn power_event(&self, event: PowerEvent) {
        match event {
            PowerEvent::PowerOff => self.power_off(),
            PowerEvent::Reset => self.reset(),
        }
    }
}

impl DebugExitSink for VmControl {
    fn debug_exit(&self, value: u32) {
        self.stop(ExitReason::DebugExit(value))
    }
}

impl console::ConsoleControl for VmControl {
    fn quit(&self) {
        self.stop(ExitReason::Quit)
    }
}
