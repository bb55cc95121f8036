//! Why a VM stopped, and the process exit status for it.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | the guest powered off or rebooted, or the user quit (Ctrl-A x, `quit` on the control socket) |
//! | 1 | tapir's own error (bad input, host failure, a thread that could not install its seccomp filter) |
//! | 2 | the guest died (triple fault, KVM internal error, failed entry) |
//! | 128+N | tapir was stopped by signal N (SIGINT 130, SIGTERM 143) |
//! | (V << 1) \| 1 | the guest wrote V to `--device isa-debug-exit` (low 8 bits: 1, 3, ..., 255) |
//! | 124 | `--timeout` ran out |
//! | 159 | a thread made a syscall its seccomp filter refuses (not an [`ExitReason`]: tapir-seccomp's SIGSYS handler exits at once) |

use std::fmt::Write as _;

use kvm_ioctls::VcpuFd;

/// The end of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// ACPI S5.
    PowerOff,
    /// ACPI reset register or i8042 reset.
    Reset,
    /// The guest can no longer run.
    GuestDied {
        /// The vCPU that saw it.
        vcpu: u8,
        /// What happened.
        reason: String,
        /// Register dump of that vCPU.
        registers: String,
    },
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// The user typed Ctrl-A x on the console.
    Quit,
    /// `quit` on the control socket.
    ControlQuit,
    /// A thread could not install its seccomp filter (the message says
    /// which and why); it stopped before touching guest input.
    Seccomp(String),
    /// The guest wrote this value to the isa-debug-exit ports.
    DebugExit(u32),
    /// `--timeout` ran out (the duration as the user wrote it).
    Timeout(String),
}

impl ExitReason {
    /// Process exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff
            | ExitReason::Reset
            | ExitReason::Quit
            | ExitReason::ControlQuit => 0,
            ExitReason::GuestDied { .. } => 2,
            ExitReason::Seccomp(_) => 1,
            ExitReason::Signal(s) => 128 + s,
            ExitReason::DebugExit(v) => tapir_devices::debug_exit::exit_status(*v) as i32,
            ExitReason::Timeout(_) => tapir_config::TIMEOUT_EXIT_STATUS,
        }
    }

    /// One-line description for the user.
    pub fn describe(&self) -> String {
        match self {
            ExitReason::PowerOff => "guest powered off".into(),
            ExitReason::Reset => "guest rebooted (tapir exits on reset)".into(),
            ExitReason::GuestDied { vcpu, reason, .. } => {
                format!("guest died on vCPU {vcpu}: {reason}")
            }
            ExitReason::Signal(s) => format!("stopped by signal {s}"),
            ExitReason::Quit => "quit from the console (Ctrl-A x)".into(),
            ExitReason::ControlQuit => "stopped by 'quit' on the control socket".into(),
            ExitReason::Seccomp(msg) => msg.clone(),
            ExitReason::DebugExit(v) => format!(
                "guest wrote {v:#x} to isa-debug-exit (exit status {})",
                self.exit_code()
            ),
            ExitReason::Timeout(d) => format!("guest stopped after --timeout {d}"),
        }
    }
}

/// Formats the general-purpose and system registers of a vCPU.
pub fn dump_registers(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    match vcpu.get_regs() {
        Ok(r) => {
            let _ = writeln!(
                s,
                "  rip={:#018x} rsp={:#018x} rbp={:#018x} rflags={:#x}",
                r.rip, r.rsp, r.rbp, r.rflags
            );
            let _ = writeln!(
                s,
                "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
                r.rax, r.rbx, r.rcx, r.rdx
            );
            let _ = writeln!(
                s,
                "  rsi={:#018x} rdi={:#018x} r8 ={:#018x} r9 ={:#018x}",
                r.rsi, r.rdi, r.r8, r.r9
            );
            let _ = writeln!(
                s,
                "  r10={:#018x} r11={:#018x} r12={:#018x} r13={:#018x}",
                r.r10, r.r11, r.r12, r.r13
            );
            let _ = writeln!(s, "  r14={:#018x} r15={:#018x}", r.r14, r.r15);
        }
        Err(e) => {
            let _ = writeln!(s, "  (registers unavailable: {e})");
        }
    }
    match vcpu.get_sregs() {
        Ok(sr) => {
            let _ = writeln!(
                s,
                "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
            );
            let _ = writeln!(
                s,
                "  cs={:#x} (base {:#x}, l={}) ss={:#x} ds={:#x} gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                sr.cs.selector,
                sr.cs.base,
                sr.cs.l,
                sr.ss.selector,
                sr.ds.selector,
                sr.gdt.base,
                sr.gdt.limit,
                sr.idt.base,
                sr.idt.limit
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  (system registers unavailable: {e})");
        }
    }
    s
}
