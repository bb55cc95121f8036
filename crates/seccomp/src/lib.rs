//! tapir's seccomp filters (docs/seccomp.md).
//!
//! Every thread of a running VM installs the filter of its kind on itself
//! ([`Filter::apply`], seccomp without TSYNC) before it touches anything
//! the guest controls: vCPU threads before their first KVM_RUN, NIC worker
//! threads before their first frame, the main thread before its event
//! loop runs. A filter allows the syscalls its [`ThreadKind`] needs
//! (`rules.rs`, some only with given arguments) and traps every other one:
//! the SIGSYS handler ([`install_handler`], installed by [`Filter::new`])
//! then writes one line naming the thread, its filter and the syscall,
//! and ends the process with status [`EXIT_STATUS`] (159). [`Filter::new`]
//! also keeps glibc's malloc from opening files later (`malloc.rs`).
//!
//! A filter is inherited by threads its thread creates, and filters only
//! add up; so tapir creates every thread from a thread that has none yet
//! (the NIC worker threads exist from the start, see
//! `tapir_nic::worker::WorkerThreads`).

#[cfg(not(target_arch = "x86_64"))]
compile_error!("tapir-seccomp knows the x86_64 syscall ABI only (numbers, siginfo, registers)");

mod malloc;
mod names;
mod rules;
mod sigsys;

use std::fmt;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

pub use malloc::MalloptError;
pub use rules::ioctls;
pub use sigsys::{install_handler, syscall_name, EXIT_STATUS};

/// The kinds of tapir threads, each with its own allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// A vCPU thread: KVM_RUN and port/MMIO dispatch to the devices.
    Vcpu,
    /// A NIC worker thread: frames between a NIC model and its backend.
    NicWorker,
    /// A disk worker thread: virtio-blk requests between guest memory and
    /// the disk image.
    DiskWorker,
    /// The main thread: the event loop (console, control socket, signals,
    /// INTx resampling) and teardown.
    Main,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Vcpu,
        ThreadKind::NicWorker,
        ThreadKind::DiskWorker,
        ThreadKind::Main,
    ];

    /// The kind's name in messages: `vcpu`, `nic-worker`, `disk-worker`,
    /// `main`.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::NicWorker => "nic-worker",
            ThreadKind::DiskWorker => "disk-worker",
            ThreadKind::Main => "main",
        }
    }
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules did not compile to BPF (a bug in the rules).
    #[error("building the {kind} seccomp filter: {source}")]
    Build {
        kind: ThreadKind,
        source: seccompiler::BackendError,
    },
    /// sigaction(SIGSYS) failed.
    #[error("installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    /// glibc's malloc could not be told to leave its files alone.
    #[error("preparing malloc for seccomp: {0}")]
    Malloc(MalloptError),
    /// prctl(PR_SET_NO_NEW_PRIVS) or seccomp(2) failed.
    #[error("thread '{thread}' could not install its {kind} seccomp filter: {source}")]
    Apply {
        thread: String,
        kind: ThreadKind,
        source: seccompiler::Error,
    },
}

/// What the process needs before its first filter, done once.
fn prepare() -> Result<(), SeccompError> {
    static MALLOC: OnceLock<Result<(), MalloptError>> = OnceLock::new();
    install_handler().map_err(SeccompError::Handler)?;
    (*MALLOC.get_or_init(malloc::tame)).map_err(SeccompError::Malloc)
}

/// A compiled filter for one kind of thread, ready to be installed by any
/// number of threads of that kind.
#[derive(Debug)]
pub struct Filter {
    kind: ThreadKind,
    program: BpfProgram,
    syscalls: usize,
}

impl Filter {
    /// Compiles the filter of `kind` and prepares the process for filters
    /// (once): the SIGSYS handler, and malloc settings that keep glibc from
    /// opening files later (see `malloc.rs`). Call it before any thread
    /// installs a filter.
    pub fn new(kind: ThreadKind) -> Result<Filter, SeccompError> {
        let build = |source| SeccompError::Build { kind, source };
        let rules = rules::rules(kind).map_err(build)?;
        let syscalls = rules.len();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(build)?;
        let program = BpfProgram::try_from(filter).map_err(build)?;
        prepare()?;
        Ok(Filter {
            kind,
            program,
            syscalls,
        })
    }

    /// The kind of thread this filter is for.
    pub fn kind(&self) -> ThreadKind {
        self.kind
    }

    /// How many syscalls the filter names (some only with given arguments).
    pub fn syscalls(&self) -> usize {
        self.syscalls
    }

    /// Installs the filter on the calling thread (and the threads it will
    /// create); for good: a filter cannot be removed. Logged at debug
    /// level with the thread's name.
    pub fn apply(&self) -> Result<(), SeccompError> {
        let current = std::thread::current();
        let thread = current.name().unwrap_or("unnamed");
        // Before the filter: after it, a refusal must already find it.
        sigsys::set_label(thread, self.kind);
        seccompiler::apply_filter(&self.program).map_err(|source| SeccompError::Apply {
            thread: thread.to_string(),
            kind: self.kind,
            source,
        })?;
        log::debug!(
            "thread '{thread}' installed the {} seccomp filter ({} syscalls allowed, {} BPF \
             instructions)",
            self.kind,
            self.syscalls,
            self.program.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_filter_compiles() {
        for kind in ThreadKind::ALL {
            let f = Filter::new(kind).unwrap();
            assert_eq!(f.kind(), kind);
            assert!(f.syscalls() > 20, "{kind}: {}", f.syscalls());
        }
    }

    #[test]
    fn each_list_names_a_syscall_once() {
        for kind in ThreadKind::ALL {
            let entries = rules::entries(kind).unwrap();
            let mut seen = HashSet::new();
            for (nr, _) in &entries {
                assert!(
                    seen.insert(*nr),
                    "{kind}: {} listed twice",
                    syscall_name(*nr).unwrap_or("?")
                );
            }
        }
    }

    #[test]
    fn what_no_thread_may_do() {
        let forbidden = [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_kill,
            libc::SYS_rt_sigaction,
            libc::SYS_seccomp,
            libc::SYS_prctl,
            libc::SYS_io_uring_setup,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_link,
            libc::SYS_linkat,
        ];
        for kind in ThreadKind::ALL {
            let rules = rules::rules(kind).unwrap();
            for nr in forbidden {
                assert!(
                    !rules.contains_key(&nr),
                    "{kind} allows {}",
                    syscall_name(nr).unwrap()
                );
            }
        }
        // NIC workers open IPv4 sockets (net=user's flows), the main thread
        // netlink ones (deleting macvtaps at the end), vCPUs none: one
        // condition each, on the domain.
        for kind in [ThreadKind::NicWorker, ThreadKind::Main] {
            assert!(rules::rules(kind)
                .unwrap()
                .get(&libc::SYS_socket)
                .is_some_and(|r| r.len() == 1));
        }
        assert!(!rules::rules(ThreadKind::Vcpu)
            .unwrap()
            .contains_key(&libc::SYS_socket));
        // pcap_max='s rotation: NIC workers swap two names, nothing else.
        assert!(rules::rules(ThreadKind::NicWorker)
            .unwrap()
            .get(&libc::SYS_renameat2)
            .is_some_and(|r| r.len() == 1));
        for kind in [ThreadKind::Vcpu, ThreadKind::DiskWorker, ThreadKind::Main] {
            assert!(!rules::rules(kind)
                .unwrap()
                .contains_key(&libc::SYS_renameat2));
        }
        // Disk workers open nothing and make no sockets.
        assert!(!rules::rules(ThreadKind::DiskWorker)
            .unwrap()
            .contains_key(&libc::SYS_socket));
        // fallocate only punches holes (discard): it never grows or
        // shrinks an image.
        assert!(rules::rules(ThreadKind::DiskWorker)
            .unwrap()
            .get(&libc::SYS_fallocate)
            .is_some_and(|r| r.len() == 1));
    }

    #[test]
    fn ioctl_requests_are_the_kernels() {
        // Values from the kernel's headers (as strace shows them).
        assert_eq!(ioctls::KVM_RUN, 0xae80);
        assert_eq!(ioctls::KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(ioctls::KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(ioctls::KVM_SIGNAL_MSI, 0x4020_aea5);
        assert_eq!(ioctls::KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(ioctls::TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(ioctls::FIONBIO, 0x5421);
        assert_eq!(ioctls::KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(ioctls::KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(ioctls::KVM_IRQFD, 0x4020_ae76);
        assert_eq!(ioctls::VFIO_DEVICE_SET_IRQS, 0x3b6e);
    }
}
