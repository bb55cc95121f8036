//! vCPU threads: the KVM_RUN loop and its explicit run state.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use tapir_devices::Bus;
use tapir_seccomp::Filter;

use crate::exit::dump_registers;
use crate::{ExitReason, VmControl};

/// The run state of a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Created, not yet entered the guest.
    Created = 0,
    /// In (or about to enter) KVM_RUN.
    Running = 1,
    /// Left the run loop; the thread is finishing.
    Exited = 2,
}

/// State shared between a vCPU thread and the VMM.
pub struct VcpuHandle {
    /// vCPU index.
    pub id: u8,
    state: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// The current run state.
    pub fn state(&self) -> VcpuState {
        match self.state.load(Ordering::SeqCst) {
            0 => VcpuState::Created,
            1 => VcpuState::Running,
            _ => VcpuState::Exited,
        }
    }

    /// Sends the kick signal so that a blocked KVM_RUN returns.
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the pthread_t comes from a JoinHandle we still own, so
            // the thread has not been joined or detached; the signal has a
            // no-op handler installed by `signals::install`.
            unsafe { libc::pthread_kill(t.as_pthread_t(), crate::signals::kick_signal()) };
        }
    }

    /// Joins the thread once it has exited.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Buses the vCPUs dispatch exits to.
pub struct Buses {
    /// Port I/O.
    pub pio: Bus,
    /// MMIO.
    pub mmio: Bus,
}

/// Legacy ports that Linux probes on every PC and that tapir leaves
/// unclaimed on purpose: POST/delay (0x80, 0xed), DMA page registers (0x81-0x8f),
/// Super I/O configuration (0x2e/0x2f, 0x4e/0x4f), system control port B (0x61),
/// the COM2-COM4 UARTs (0x2e8, 0x2f8, 0x3e8) that the 8250 driver probes, and
/// the CMOS index/data ports (0x70/0x71) where Linux writes the warm-reset
/// code while starting secondary CPUs (there is no RTC: the FADT says so).
fn expected_probe(port: u16) -> bool {
    matches!(port, 0x2e | 0x2f | 0x4e | 0x4f | 0x61 | 0x70 | 0x71 | 0x80..=0x8f | 0xed | 0x2e8..=0x2ff | 0x3e8..=0x3ef)
}

/// How many unclaimed accesses are reported before going quiet.
const UNCLAIMED_REPORT_LIMIT: u32 = 10;

static UNCLAIMED_REPORTS: AtomicU32 = AtomicU32::new(0);

fn report_unclaimed(vcpu: u8, what: &str, addr: u64, len: usize) {
    let n = UNCLAIMED_REPORTS.fetch_add(1, Ordering::Relaxed);
    if n < UNCLAIMED_REPORT_LIMIT {
        eprintln!(
            "tapir: warning: vCPU {vcpu}: {what} {addr:#x} ({len} bytes) hits no device; ignored"
        );
    } else if n == UNCLAIMED_REPORT_LIMIT {
        eprintln!("tapir: warning: more unclaimed accesses; no longer reporting them");
    }
}

/// Starts the thread that runs `vcpu` until the VM stops. With a
/// `filter`, the thread installs it before it enters the guest; if it
/// cannot, it stops the VM instead.
pub fn spawn(
    id: u8,
    mut vcpu: VcpuFd,
    buses: Arc<Buses>,
    control: Arc<VmControl>,
    filter: Option<Arc<Filter>>,
) -> std::io::Result<VcpuHandle> {
    let state = Arc::new(AtomicU8::new(VcpuState::Created as u8));
    let st = state.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            st.store(VcpuState::Running as u8, Ordering::SeqCst);
            match filter.as_deref().map(Filter::apply) {
                Some(Err(e)) => control.stop(ExitReason::Seccomp(e.to_string())),
                _ => run_loop(id, &mut vcpu, &buses, &control),
            }
            st.store(VcpuState::Exited as u8, Ordering::SeqCst);
        })?;
    Ok(VcpuHandle {
        id,
        state,
        thread: Some(thread),
    })
}

/// The vCPUs' exits to user space, by kind, summed over the vCPUs (the
/// control socket's `info --json`). Exits KVM handles itself are not seen.
#[derive(Debug, Default)]
pub struct ExitCounters {
    io_in: AtomicU64,
    io_out: AtomicU64,
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    other: AtomicU64,
}

impl ExitCounters {
    fn count(&self, exit: &Result<VcpuExit<'_>, kvm_ioctls::Error>) {
        let c = match exit {
            Ok(VcpuExit::IoIn(..)) => &self.io_in,
            Ok(VcpuExit::IoOut(..)) => &self.io_out,
            Ok(VcpuExit::MmioRead(..)) => &self.mmio_read,
            Ok(VcpuExit::MmioWrite(..)) => &self.mmio_write,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter with its name, in a fixed order.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("io_in", g(&self.io_in)),
            ("io_out", g(&self.io_out)),
            ("mmio_read", g(&self.mmio_read)),
            ("mmio_write", g(&self.mmio_write)),
            ("other", g(&self.other)),
        ]
    }
}

fn run_loop(id: u8, vcpu: &mut VcpuFd, buses: &Buses, control: &VmControl) {
    while !control.stopping() {
        let exit = vcpu.run();
        control.exits.count(&exit);
        let mut string_io = false;
        let died = match exit {
            // `rep ins`/`rep outs`: several accesses in one exit.
            Ok(VcpuExit::IoIn(_, data)) if data.len() > MAX_PIO_SIZE => {
                string_io = true;
                None
            }
            Ok(VcpuExit::IoOut(_, data)) if data.len() > MAX_PIO_SIZE => {
                string_io = true;
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if !buses.pio.read(port.into(), data) && !expected_probe(port) {
                    report_unclaimed(id, "port read", port.into(), data.len());
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if !buses.pio.write(port.into(), data) && !expected_probe(port) {
                    report_unclaimed(id, "port write", port.into(), data.len());
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !buses.mmio.read(addr, data) {
                    report_unclaimed(id, "MMIO read", addr, data.len());
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !buses.mmio.write(addr, data) {
                    report_unclaimed(id, "MMIO write", addr, data.len());
                }
                None
            }
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => None,
            Ok(VcpuExit::Hlt) => Some("halted with interrupts off (HLT exit)".to_string()),
            Ok(VcpuExit::Shutdown) => Some("triple fault (KVM_EXIT_SHUTDOWN)".to_string()),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(format!(
                "VM entry failed (hardware reason {reason:#x}, host cpu {cpu})"
            )),
            Ok(VcpuExit::InternalError) => {
                Some("KVM internal error (emulation failure)".to_string())
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => control.power_off(),
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => control.reset(),
                    _ => {}
                }
                None
            }
            Ok(other) => Some(format!("unexpected VM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(format!("KVM_RUN failed: {e}")),
        };
        if string_io {
            string_pio(id, vcpu, buses);
        }
        if let Some(reason) = died {
            control.guest_died(id, reason, dump_registers(vcpu));
            break;
        }
    }
}

/// The widest single port access (`in`/`out` of a dword).
const MAX_PIO_SIZE: usize = 4;

/// A string instruction's port I/O (`rep insb`, `rep outsw`, ...): KVM
/// hands over `count` accesses of `size` bytes in one exit, which kvm-ioctls
/// shows as one slice; each access goes to the bus on its own, as the
/// instruction made them.
fn string_pio(id: u8, vcpu: &mut VcpuFd, buses: &Buses) {
    let run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_IO (this is only called for one),
    // so `io` is the union's active member; it is plain data.
    let io = unsafe { run.__bindgen_anon_1.io };
    let (size, count) = (usize::from(io.size), io.count as usize);
    if !matches!(size, 1 | 2 | 4) {
        return;
    }
    let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
    // SAFETY: KVM placed `count` accesses of `size` bytes at `data_offset`
    // inside the vCPU's kvm_run mapping, which lives as long as `vcpu`
    // (kvm-ioctls builds the same slice for VcpuExit::IoIn/IoOut); nothing
    // else refers to it until the next KVM_RUN.
    let data =
        unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), size * count) };
    let port = u64::from(io.port);
    for access in data.chunks_mut(size) {
        let claimed = if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
            buses.pio.read(port, access)
        } else {
            buses.pio.write(port, access)
        };
        if !claimed && !expected_probe(io.port) {
            report_unclaimed(id, "string port access", port, size);
        }
    }
}
