//! What happens when a filter refuses a syscall: the kernel sends SIGSYS
//! to the thread that made it, and this handler writes one line that
//! names the thread, its filter and the syscall, then ends the process
//! with [`EXIT_STATUS`].
//!
//! The handler runs in the middle of whatever the thread was doing, so it
//! only uses async-signal-safe means: a line built in a stack buffer from
//! a const-initialized thread-local label and a static name table, one
//! write(2), and _exit(2). Both syscalls are in every allow list.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use crate::names::NAMES;
use crate::ThreadKind;

/// The exit status after a refused syscall: 128 + SIGSYS, as a shell
/// reports a process killed by that signal.
pub const EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// `si_code` of a SIGSYS sent by seccomp (`SYS_SECCOMP` in the kernel's
/// `siginfo.h`; the libc crate does not name it).
const SYS_SECCOMP: i32 = 1;

/// Longest thread name kept for the message (Linux keeps 15 bytes).
const NAME_MAX: usize = 32;

/// The thread and filter a message names; set by [`set_label`] when the
/// thread installs its filter.
#[derive(Clone, Copy)]
struct Label {
    name: [u8; NAME_MAX],
    len: usize,
    kind: Option<ThreadKind>,
}

impl Label {
    const EMPTY: Label = Label {
        name: [0; NAME_MAX],
        len: 0,
        kind: None,
    };
}

thread_local! {
    // Const-initialized and without a destructor: reading it is a plain
    // thread-local load, with no lazy initialization, which is what makes
    // it usable from the signal handler.
    static LABEL: Cell<Label> = const { Cell::new(Label::EMPTY) };
}

/// Records the calling thread's name and filter for the message.
pub(crate) fn set_label(name: &str, kind: ThreadKind) {
    let mut label = Label::EMPTY;
    let n = name.len().min(NAME_MAX);
    label.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    label.len = n;
    label.kind = Some(kind);
    LABEL.with(|l| l.set(label));
}

/// A fixed buffer that a line is appended to, silently cut at its end.
pub(crate) struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line {
            buf: [0; 320],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, mut v: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The name of x86_64 syscall `nr`, if it has one.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    usize::try_from(nr)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

/// Writes the message for a refused syscall into `line`:
/// `tapir: seccomp: thread 'vcpu0' (vcpu filter) made syscall 41 (socket,
/// args 0x2 0x80001 0x0), which its filter does not allow; stopping (run
/// with --seccomp=off to debug)`. No allocation: the handler calls it.
pub(crate) fn format_refusal(
    line: &mut Line,
    thread: &[u8],
    kind: Option<ThreadKind>,
    nr: i64,
    args: [u64; 3],
) {
    line.push(b"tapir: seccomp: thread '");
    line.push(if thread.is_empty() { b"?" } else { thread });
    line.push(b"' (");
    line.push(kind.map_or("unknown", ThreadKind::name).as_bytes());
    line.push(b" filter) made syscall ");
    if nr < 0 {
        line.push(b"-");
    }
    line.push_dec(nr.unsigned_abs());
    line.push(b" (");
    line.push(syscall_name(nr).unwrap_or("unknown").as_bytes());
    line.push(b", args");
    for a in args {
        line.push(b" ");
        line.push_hex(a);
    }
    line.push(b"), which its filter does not allow; stopping (run with --seccomp=off to debug)\n");
}

/// The SIGSYS handler (SA_SIGINFO).
extern "C" fn on_sigsys(_signo: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let mut line = Line::new();
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code == SYS_SECCOMP {
        // SAFETY: for SIGSYS with si_code SYS_SECCOMP the kernel fills the
        // `_sigsys` member of the siginfo union: `void *_call_addr; int
        // _syscall; unsigned int _arch;`. On x86_64 the union starts at
        // byte 16 (after si_signo, si_errno, si_code and 4 bytes of
        // padding that align it to 8), so `_syscall` is the i32 at byte
        // 16 + 8 = 24. The libc crate has no accessor for it. The read is
        // within the 128-byte siginfo_t and aligned.
        let nr = unsafe { (info as *const u8).add(24).cast::<i32>().read() };
        // SAFETY: the third argument of an SA_SIGINFO handler is the
        // interrupted thread's ucontext_t; its general registers hold the
        // syscall's arguments (rdi, rsi, rdx for the first three).
        let args = unsafe {
            let gregs = &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs;
            [
                gregs[libc::REG_RDI as usize] as u64,
                gregs[libc::REG_RSI as usize] as u64,
                gregs[libc::REG_RDX as usize] as u64,
            ]
        };
        let label = LABEL.with(Cell::get);
        format_refusal(
            &mut line,
            &label.name[..label.len],
            label.kind,
            i64::from(nr),
            args,
        );
    } else {
        line.push(b"tapir: SIGSYS (not from a seccomp filter); stopping\n");
    }
    let bytes = line.as_bytes();
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is
    // valid for its length. A short write is not retried: nothing better
    // can be done from here.
    unsafe {
        libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(EXIT_STATUS);
    }
}

static INSTALL: Once = Once::new();
/// The errno of a failed installation (0: installed).
static INSTALL_ERROR: AtomicI32 = AtomicI32::new(0);

/// Installs the process-wide SIGSYS handler (once; later calls return the
/// first call's result). Done before any filter, while sigaction is still
/// allowed.
pub fn install_handler() -> io::Result<()> {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the
        // handler is an `extern "C"` function of the SA_SIGINFO signature.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigsys as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL);
            INSTALL_ERROR.store(errno, Ordering::SeqCst);
        }
    });
    match INSTALL_ERROR.load(Ordering::SeqCst) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(thread: &str, kind: Option<ThreadKind>, nr: i64, args: [u64; 3]) -> String {
        let mut line = Line::new();
        format_refusal(&mut line, thread.as_bytes(), kind, nr, args);
        String::from_utf8(line.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_message_names_thread_filter_and_syscall() {
        assert_eq!(
            refusal("net0-net", Some(ThreadKind::NicWorker), 41, [2, 0x80001, 0]),
            "tapir: seccomp: thread 'net0-net' (nic-worker filter) made syscall 41 (socket, args \
             0x2 0x80001 0x0), which its filter does not allow; stopping (run with --seccomp=off \
             to debug)\n"
        );
        assert_eq!(
            refusal("", None, 100_000, [0, 0, u64::MAX]),
            "tapir: seccomp: thread '?' (unknown filter) made syscall 100000 (unknown, args 0x0 \
             0x0 0xffffffffffffffff), which its filter does not allow; stopping (run with \
             --seccomp=off to debug)\n"
        );
    }

    #[test]
    fn a_long_line_is_cut_not_overflowed() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.push(b"0123456789");
        }
        assert_eq!(line.as_bytes().len(), 320);
    }

    #[test]
    fn syscall_names_match_libc() {
        assert_eq!(syscall_name(libc::SYS_read), Some("read"));
        assert_eq!(syscall_name(libc::SYS_socket), Some("socket"));
        assert_eq!(syscall_name(libc::SYS_ioctl), Some("ioctl"));
        assert_eq!(syscall_name(libc::SYS_execve), Some("execve"));
        assert_eq!(syscall_name(libc::SYS_openat), Some("openat"));
        assert_eq!(
            syscall_name(libc::SYS_io_uring_setup),
            Some("io_uring_setup")
        );
        assert_eq!(syscall_name(libc::SYS_futex_waitv), Some("futex_waitv"));
        assert_eq!(syscall_name(-1), None);
        assert_eq!(syscall_name(335), None, "a gap in the numbering");
    }
}
