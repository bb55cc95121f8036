//! The allow lists, one per kind of thread (docs/seccomp.md says why each
//! entry is there). A syscall that is not listed traps (SIGSYS); a syscall
//! listed with conditions is allowed only when one of them holds.
//!
//! The lists were found by reading what each thread does and confirmed
//! with `strace -f` on tapir's tests (tiny-kernel, data path with every
//! model and backend, control socket) and its Linux guest.

use std::collections::BTreeMap;

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use crate::ThreadKind;

/// One allow-list entry: a syscall and the conditions under which it is
/// allowed (none: always).
type Entry = (i64, Vec<SeccompRule>);

/// `ioctl` requests, by the kernel's `_IOC` encoding (`asm-generic/ioctl.h`).
pub mod ioctls {
    const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
    }
    const NONE: u64 = 0;
    const WRITE: u64 = 1;
    const READ: u64 = 2;
    const KVMIO: u64 = 0xae;

    /// `KVM_RUN`: enter the guest.
    pub const KVM_RUN: u64 = ioc(NONE, KVMIO, 0x80, 0);
    /// `KVM_GET_REGS`: the register dump of a dead guest.
    pub const KVM_GET_REGS: u64 = ioc(
        READ,
        KVMIO,
        0x81,
        std::mem::size_of::<kvm_bindings::kvm_regs>(),
    );
    /// `KVM_GET_SREGS`: likewise.
    pub const KVM_GET_SREGS: u64 = ioc(
        READ,
        KVMIO,
        0x83,
        std::mem::size_of::<kvm_bindings::kvm_sregs>(),
    );
    /// `KVM_SIGNAL_MSI`: an MSI-X interrupt (virtio-net).
    pub const KVM_SIGNAL_MSI: u64 = ioc(
        WRITE,
        KVMIO,
        0xa5,
        std::mem::size_of::<kvm_bindings::kvm_msi>(),
    );
    /// `KVM_IOEVENTFD`: (un)registering virtio notify addresses when the
    /// guest moves a BAR, and at teardown.
    pub const KVM_IOEVENTFD: u64 = ioc(
        WRITE,
        KVMIO,
        0x79,
        std::mem::size_of::<kvm_bindings::kvm_ioeventfd>(),
    );
    /// `KVM_SET_USER_MEMORY_REGION`: an assigned device's BAR areas
    /// mapped into the guest, moved or unmapped when the guest moves a
    /// BAR or turns memory decode on or off.
    pub const KVM_SET_USER_MEMORY_REGION: u64 = ioc(
        WRITE,
        KVMIO,
        0x46,
        std::mem::size_of::<kvm_bindings::kvm_userspace_memory_region>(),
    );
    /// `KVM_SET_GSI_ROUTING`: an assigned device's MSI/MSI-X vector
    /// routes, set when the guest programs a vector.
    pub const KVM_SET_GSI_ROUTING: u64 = ioc(
        WRITE,
        KVMIO,
        0x6a,
        std::mem::size_of::<kvm_bindings::kvm_irq_routing>(),
    );
    /// `KVM_IRQ_LINE`: pc-testdev's interrupt-line ports (a vCPU's port
    /// write sets a line's level).
    pub const KVM_IRQ_LINE: u64 = ioc(
        WRITE,
        KVMIO,
        0x61,
        std::mem::size_of::<kvm_bindings::kvm_irq_level>(),
    );
    /// `KVM_IRQFD`: an assigned device's vector irqfd, (un)registered
    /// when the guest (un)masks it.
    pub const KVM_IRQFD: u64 = ioc(
        WRITE,
        KVMIO,
        0x76,
        std::mem::size_of::<kvm_bindings::kvm_irqfd>(),
    );
    /// `VFIO_DEVICE_SET_IRQS` (`_IO(';', 100 + 10)`): an assigned device's
    /// interrupts switched between INTx, MSI and MSI-X as the guest
    /// enables them.
    pub const VFIO_DEVICE_SET_IRQS: u64 = ioc(NONE, 0x3b, 100 + 10, 0);
    /// `TUNSETOFFLOAD`: the offloads a virtio-net driver negotiated, set on
    /// a tap when the device is activated.
    pub const TUNSETOFFLOAD: u64 = libc::TUNSETOFFLOAD;
    /// `FIONBIO`: what std's `set_nonblocking` does on a socket.
    pub const FIONBIO: u64 = libc::FIONBIO;
    /// `TCGETS` / `TCSETS`: the terminal's mode, restored on exit.
    pub const TCGETS: u64 = libc::TCGETS;
    /// See [`TCGETS`].
    pub const TCSETS: u64 = libc::TCSETS;
}

/// `nr`, always allowed.
fn allow(nr: libc::c_long) -> Entry {
    (nr, vec![])
}

/// `nr`, allowed when its argument `arg` (compared as 32 bits, as the
/// kernel reads an `int` or an ioctl request) is one of `values`.
fn allow_arg(nr: libc::c_long, arg: u8, values: &[u64]) -> Result<Entry, BackendError> {
    let rules = values
        .iter()
        .map(|&v| {
            SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                v,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((nr, rules))
}

/// What every tapir thread does: allocate (glibc's malloc maps, trims and
/// grows arenas), lock (futex), read clocks (the vDSO falls back to the
/// syscalls on some clocksources), sleep, read and write the fds it was
/// given (eventfds, logging to stderr), close fds, return from signal
/// handlers (SIGTERM/SIGINT may land on any thread; the vCPU kick), end
/// (std unmaps its signal stack, glibc advises the stack away and exits),
/// and abort (a panic in a release build raises SIGABRT with tgkill).
fn common() -> Result<Vec<Entry>, BackendError> {
    let mut v: Vec<Entry> = [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_getrandom,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ]
    .into_iter()
    .map(allow)
    .collect();
    // Duplicating an fd (EventFd::try_clone) and std's/socket2's
    // non-blocking and close-on-exec flags; not F_SETOWN, F_SETSIG, locks.
    v.push(allow_arg(
        libc::SYS_fcntl,
        1,
        &[
            libc::F_DUPFD_CLOEXEC as u64,
            libc::F_GETFD as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
        ],
    )?);
    Ok(v)
}

/// A vCPU thread: KVM_RUN and the device models it drives on port and
/// MMIO exits. A virtio-net driver's DRIVER_OK builds the NIC's worker
/// (epoll set, eventfds, timerfd) on this thread and hands it to the NIC's
/// worker thread; a register write may arm a NIC timer or raise an MSI.
/// An assigned (VFIO) device's configuration space and trapped BAR areas
/// are read and written with pread64/pwrite64 on its device fd; the
/// guest's MSI/MSI-X programming and BAR moves become the VFIO and KVM
/// ioctls below.
fn vcpu() -> Result<Vec<Entry>, BackendError> {
    use ioctls::*;
    let mut v = common()?;
    v.extend(
        [
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_eventfd2,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_timerfd_create,
            libc::SYS_timerfd_settime,
        ]
        .map(allow),
    );
    v.push(allow_arg(
        libc::SYS_ioctl,
        1,
        &[
            KVM_RUN,
            KVM_GET_REGS,
            KVM_GET_SREGS,
            KVM_SIGNAL_MSI,
            KVM_IOEVENTFD,
            TUNSETOFFLOAD,
            KVM_SET_USER_MEMORY_REGION,
            KVM_SET_GSI_ROUTING,
            KVM_IRQFD,
            VFIO_DEVICE_SET_IRQS,
            KVM_IRQ_LINE,
        ],
    )?);
    Ok(v)
}

/// A NIC worker thread: waits on its epoll set, moves frames between guest
/// memory and the backend (tap: readv/writev; user-mode NAT: host sockets
/// it opens, connects and closes at run time, for TCP, UDP, DNS and ping),
/// raises interrupts (irqfd writes, KVM_SIGNAL_MSI) and arms timers. With
/// `pcap=` it writes the capture file it was given open, and with
/// `pcap_max=` rotates it without opening anything: the older file of the
/// two it holds is emptied (ftruncate) and the two names are swapped
/// (renameat2 with RENAME_EXCHANGE only; docs/pcap.md).
fn nic_worker() -> Result<Vec<Entry>, BackendError> {
    use ioctls::*;
    let mut v = common()?;
    v.extend(
        [
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_timerfd_settime,
            // net=user's flows.
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_accept4,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_getpeername,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_shutdown,
        ]
        .map(allow),
    );
    // IPv4 only (TCP, UDP, ICMP datagram sockets): no netlink, packet or
    // Unix sockets.
    v.push(allow_arg(libc::SYS_socket, 0, &[libc::AF_INET as u64])?);
    v.push(allow_arg(libc::SYS_ioctl, 1, &[KVM_SIGNAL_MSI, FIONBIO])?);
    // pcap_max='s rotation.
    v.push(allow(libc::SYS_ftruncate));
    v.push(allow_arg(
        libc::SYS_renameat2,
        4,
        &[u64::from(libc::RENAME_EXCHANGE)],
    )?);
    Ok(v)
}

/// A disk worker thread: waits on its epoll set (the queue's kick and its
/// stop; made, like the eventfds, by the vCPU thread whose DRIVER_OK
/// activates the disk), moves request data between guest memory and the image with
/// pread64/pwrite64, makes it durable with fdatasync (a flush request),
/// punches holes with fallocate (a discard request: only
/// PUNCH_HOLE|KEEP_SIZE) and raises interrupts (irqfd writes,
/// KVM_SIGNAL_MSI).
fn disk_worker() -> Result<Vec<Entry>, BackendError> {
    use ioctls::*;
    let mut v = common()?;
    v.extend(
        [
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_fdatasync,
        ]
        .map(allow),
    );
    v.push(allow_arg(
        libc::SYS_fallocate,
        1,
        &[(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64],
    )?);
    v.push(allow_arg(libc::SYS_ioctl, 1, &[KVM_SIGNAL_MSI])?);
    Ok(v)
}

/// The main thread: the event loop (stop and signal eventfds, INTx
/// resampling, console input, the control socket's clients), then
/// teardown (kicking and joining the vCPUs, unregistering ioeventfds,
/// removing the control socket's file, restoring the terminal).
fn main_thread() -> Result<Vec<Entry>, BackendError> {
    use ioctls::*;
    let mut v = common()?;
    v.extend(
        [
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_timerfd_settime,
            // The control socket's clients (std's UnixStream reads with
            // recv, writes with send; a client turned away gets a write
            // timeout).
            libc::SYS_accept4,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_setsockopt,
            // The control socket's clients pass a capture file's descriptor
            // with `pcap NAME start` (SCM_RIGHTS): reads are recvmsg.
            libc::SYS_recvmsg,
            // Removing the control socket's file, only if it is still ours
            // (std's symlink_metadata: statx, or newfstatat without it).
            libc::SYS_statx,
            libc::SYS_newfstatat,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
        ]
        .map(allow),
    );
    v.push(allow_arg(
        libc::SYS_ioctl,
        1,
        &[KVM_SIGNAL_MSI, KVM_IOEVENTFD, FIONBIO, TCGETS, TCSETS],
    )?);
    // Deleting passthrough's macvtaps at the end: one rtnetlink request
    // each (socket, then sendto and recvfrom above). Netlink only.
    v.push(allow_arg(libc::SYS_socket, 0, &[libc::AF_NETLINK as u64])?);
    Ok(v)
}

/// The entries of `kind`'s list, in list order.
pub(crate) fn entries(kind: ThreadKind) -> Result<Vec<Entry>, BackendError> {
    match kind {
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::NicWorker => nic_worker(),
        ThreadKind::DiskWorker => disk_worker(),
        ThreadKind::Main => main_thread(),
    }
}

/// The rules of `kind`, keyed by syscall number (each list names a
/// syscall once: a test checks it).
pub(crate) fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    Ok(entries(kind)?.into_iter().collect())
}
