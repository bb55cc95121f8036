//! Process signals: SIGINT/SIGTERM become an event for the event loop, and a
//! real-time signal kicks vCPU threads out of KVM_RUN.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

static TERM_EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static TERM_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_terminate(
    signo: libc::c_int,
    _info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    TERM_SIGNAL.store(signo, Ordering::SeqCst);
    let fd = TERM_EVENT_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid u64 on
        // our stack and the fd is an eventfd kept open for the process's life.
        unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

extern "C" fn on_kick(_signo: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the handlers. `term_evt` is signalled on SIGINT/SIGTERM; it must
/// stay open for the life of the process (the VMM keeps it in a static-lived
/// owner: the event loop).
pub fn install(term_evt: &EventFd) -> io::Result<()> {
    TERM_EVENT_FD.store(term_evt.as_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        register_signal_handler(sig, on_terminate)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    }
    register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    Ok(())
}

/// Stops forwarding termination signals to the event fd (before it closes).
pub fn detach() {
    TERM_EVENT_FD.store(-1, Ordering::SeqCst);
}

/// The last termination signal received, if any.
pub fn received() -> Option<i32> {
    match TERM_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
