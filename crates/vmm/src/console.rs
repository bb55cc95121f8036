//! The serial console: where COM1's output goes, and stdin as its input.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use tapir_devices::serial::SerialDevice;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Ctrl-A, the escape prefix on an interactive console (Ctrl-A x quits).
pub const ESCAPE_BYTE: u8 = 0x01;

/// Unbuffered writer to standard output: every byte the guest sends is
/// written at once, so prompts without a newline show up.
pub struct StdoutWriter;

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = io::stdout();
        let mut f = fd.lock();
        f.write_all(buf)?;
        f.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// Opens `path` for the guest's console output (created or truncated).
pub fn file_writer(path: &Path) -> io::Result<File> {
    File::create(path)
}

/// Writes every byte to `out` and a copy to `log` (`--serial
/// stdio,logfile=`). The log gets the bytes even when `out` refuses them
/// (a closed stdout), so a CI job keeps the whole output; a failing log
/// is reported once and then left alone.
pub struct TeeWriter<W: Write, L: Write> {
    out: W,
    log: Option<L>,
}

impl<W: Write, L: Write> TeeWriter<W, L> {
    /// A writer to `out` with a copy to `log`.
    pub fn new(out: W, log: L) -> Self {
        Self {
            out,
            log: Some(log),
        }
    }
}

impl<W: Write, L: Write> Write for TeeWriter<W, L> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.write_all(buf).and_then(|_| log.flush()) {
                log::warn!("serial log file: {e}; no longer writing it");
                self.log = None;
            }
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Puts a terminal into raw input mode and restores it on drop.
pub struct RawTerminal {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawTerminal {
    /// Switches stdin to raw mode when it is a terminal; `None` otherwise.
    pub fn stdin() -> Option<Self> {
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
        // Keep the fd alive for the process lifetime (stdin is never closed).
        let fd: BorrowedFd<'static> = {
            let raw = fd.as_raw_fd();
            std::mem::forget(fd);
            // SAFETY: `raw` is an fd we just duplicated and intentionally leaked,
            // so it stays open for the rest of the process.
            unsafe { BorrowedFd::borrow_raw(raw) }
        };
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output post-processing so "\n" still returns the carriage.
        raw.output_flags = saved.output_flags;
        raw.local_flags &=
            !(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG | LocalFlags::IEXTEN);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// What the console asks of the VMM.
pub trait ConsoleControl: Send + Sync {
    /// The user typed the quit sequence (Ctrl-A x).
    fn quit(&self);
}

/// Feeds stdin to the UART's receive FIFO. When the FIFO is full it stops
/// watching stdin until the guest drains it (`space` is signalled), so no
/// typed byte is dropped.
pub struct ConsoleInput {
    serial: Arc<SerialDevice>,
    space: EventFd,
    pending: Vec<u8>,
    watching_stdin: bool,
    interactive: bool,
    saw_escape: bool,
    control: Arc<dyn ConsoleControl>,
}

impl ConsoleInput {
    /// `space` is the eventfd the serial device signals when its FIFO empties.
    pub fn new(
        serial: Arc<SerialDevice>,
        space: EventFd,
        interactive: bool,
        control: Arc<dyn ConsoleControl>,
    ) -> Self {
        Self {
            serial,
            space,
            pending: Vec::new(),
            watching_stdin: false,
            interactive,
            saw_escape: false,
            control,
        }
    }

    fn stdin_fd() -> i32 {
        libc::STDIN_FILENO
    }

    fn filter_escape(&mut self, input: &[u8]) -> Vec<u8> {
        if !self.interactive {
            return input.to_vec();
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.saw_escape {
                self.saw_escape = false;
                match b {
                    b'x' | b'X' => {
                        self.control.quit();
                        return out;
                    }
                    ESCAPE_BYTE => out.push(ESCAPE_BYTE),
                    other => {
                        out.push(ESCAPE_BYTE);
                        out.push(other);
                    }
                }
            } else if b == ESCAPE_BYTE {
                self.saw_escape = true;
            } else {
                out.push(b);
            }
        }
        out
    }

    /// Pushes pending bytes to the guest; returns true if all were taken.
    fn flush_pending(&mut self) -> bool {
        if !self.pending.is_empty() {
            let n = self.serial.enqueue_input(&self.pending).unwrap_or(0);
            self.pending.drain(..n);
        }
        self.pending.is_empty()
    }

    fn set_stdin_watch(&mut self, ops: &mut EventOps, on: bool) {
        if on == self.watching_stdin {
            return;
        }
        let ev = event_manager::Events::empty_raw(Self::stdin_fd());
        let res = if on {
            ops.add(Events::with_data_raw(Self::stdin_fd(), 0, EventSet::IN))
        } else {
            ops.remove(ev)
        };
        // Regular files and /dev/null cannot be polled: then there is no
        // console input, which is fine for a non-interactive run.
        self.watching_stdin = on && res.is_ok();
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.space, EventSet::IN));
        self.set_stdin_watch(ops, true);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.space.as_raw_fd() {
            let _ = self.space.read();
            if self.flush_pending() {
                self.set_stdin_watch(ops, true);
            }
            return;
        }
        if events.event_set().intersects(EventSet::IN) {
            let mut buf = [0u8; 64];
            let room = self.serial.input_capacity().clamp(1, buf.len());
            match io::stdin().lock().read(&mut buf[..room]) {
                Ok(0) => self.set_stdin_watch(ops, false), // EOF: no more input
                Ok(n) => {
                    let bytes = self.filter_escape(&buf[..n]);
                    self.pending.extend_from_slice(&bytes);
                    if !self.flush_pending() {
                        self.set_stdin_watch(ops, false);
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.set_stdin_watch(ops, false),
            }
        } else if events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR)
        {
            self.set_stdin_watch(ops, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then refuses.
    struct Limited {
        got: Vec<u8>,
        room: usize,
    }
    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.got.len() + buf.len() > self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.got.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tee_copies_every_byte_even_when_the_output_fails() {
        let out = Limited {
            got: Vec::new(),
            room: 3,
        };
        let mut t = TeeWriter::new(out, Vec::new());
        t.write_all(b"abc").unwrap();
        assert!(t.write_all(b"de").is_err());
        assert_eq!(t.out.got, b"abc");
        assert_eq!(t.log.as_deref(), Some(&b"abcde"[..]));
        // A failing log stops being written; the output goes on.
        let log = Limited {
            got: Vec::new(),
            room: 1,
        };
        let mut t = TeeWriter::new(Vec::new(), log);
        t.write_all(b"xy").unwrap();
        t.write_all(b"z").unwrap();
        assert_eq!(t.out, b"xyz");
        assert!(t.log.is_none());
    }
}
