//! The control socket (`tapir run --control-socket PATH`): a Unix stream
//! socket served by the VMM's event loop, speaking the line protocol of
//! [`command`]; `tapir ctl PATH COMMAND...` is its client.
//!
//! Everything is non-blocking and bounded: at most [`MAX_CONNECTIONS`]
//! clients, lines of at most [`command::MAX_LINE`] bytes, at most
//! [`MAX_PENDING_OUTPUT`] bytes of unread replies per client. A client
//! that breaks a limit gets an `error:` line and is disconnected; the VM
//! never waits for a client.
//!
//! The socket file is created with mode 0600 and removed when the VMM
//! exits. A stale socket left by a killed tapir (nobody accepts on it) is
//! replaced; a live one is an error.

pub mod command;
pub mod json;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use crate::VmControl;
use command::{NicEntry, MAX_LINE};

/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Unread reply bytes after which a client is dropped.
pub const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// Descriptors a client may have passed and not used yet (`pcap NAME
/// start` takes one, or three with a size limit); more are closed.
pub const MAX_FDS: usize = 4;

/// Room for the control message of one `recvmsg`: [`MAX_FDS`]
/// descriptors (CMSG_SPACE(16) is 32 bytes on 64-bit Linux), 8-aligned.
type CmsgBuf = [u64; 8];

/// `recvmsg(2)` on `s` into `buf`; descriptors passed with the bytes
/// (SCM_RIGHTS, close-on-exec) are appended to `fds`. Those that do not
/// fit the control buffer are closed by the kernel.
fn recv_with_fds(s: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut cmsg: CmsgBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<CmsgBuf>();
    // SAFETY: `msg` points at `iov` (over `buf`) and `cmsg`, all live and
    // exclusively ours for the call, with their true lengths.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `msg`'s control part within `cmsg`; the
    // CMSG_* macros walk it within `msg_controllen`.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR give a header inside `cmsg`.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is arithmetic.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (h.cmsg_len as usize).saturating_sub(head) / std::mem::size_of::<RawFd>();
            // SAFETY: the data of this header, inside `cmsg`.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `count` descriptors lie at `data` (maybe
                // unaligned); each is a new descriptor the kernel gave
                // this process, owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(data.add(i).read_unaligned()) };
                if fds.len() < MAX_FDS {
                    fds.push(fd);
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; `c` is a header of `msg`.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok(n as usize)
}

/// `sendmsg(2)` of all of `bytes` on `s`, with `fds` (at most
/// [`MAX_FDS`]) passed (SCM_RIGHTS) along with them.
fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one command",
        ));
    }
    let mut cmsg: CmsgBuf = [0; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let size = (fds.len() * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: plain data, as in `recv_with_fds`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size) } as usize;
    // SAFETY: the buffer has room for one header with MAX_FDS descriptors
    // (CMSG_SPACE(16) = 32 <= 64 bytes); CMSG_FIRSTHDR is inside it, and
    // the descriptors are written within CMSG_LEN(size) of it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size) as usize;
        let data = libc::CMSG_DATA(c).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: `msg` points at live buffers with their true lengths; the
    // kernel only reads them.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest, if any, plainly.
    (&*s).write_all(&bytes[n as usize..])
}

/// Errors opening the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another tapir answers on that path.
    #[error("--control-socket {0}: in use by a running process")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("--control-socket {0}: exists and is not a socket (not removed)")]
    NotASocket(PathBuf),
    /// bind/listen/chmod failed.
    #[error("--control-socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Binds `path`, replacing a stale socket file.
fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            match UnixStream::connect(path) {
                Ok(_) => return Err(ControlError::InUse(path.to_path_buf())),
                // Nobody listens: left over from a tapir that was killed.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io_err)?
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(_) => return Err(ControlError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

/// Event tokens of the control server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Listener,
    Client(RawFd),
}

impl Token {
    fn data(self) -> u32 {
        match self {
            Token::Listener => 0,
            Token::Client(fd) => fd as u32 + 1,
        }
    }
    fn from_data(d: u32) -> Token {
        match d {
            0 => Token::Listener,
            n => Token::Client((n - 1) as RawFd),
        }
    }
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    /// Descriptors passed and not used yet (closed with the client).
    fds: Vec<OwnedFd>,
    output: Vec<u8>,
    /// The client closed its side or broke a limit: close once the output
    /// is written.
    closing: bool,
    /// Whether EPOLLOUT is registered.
    want_out: bool,
}

/// The control socket server, an event-loop subscriber.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we created.
    id: (u64, u64),
    nics: Vec<NicEntry>,
    vm: Arc<VmControl>,
    clients: HashMap<RawFd, Client>,
}

impl ControlServer {
    /// Binds `path` (see the module documentation).
    pub fn bind(
        path: &Path,
        nics: Vec<NicEntry>,
        vm: Arc<VmControl>,
    ) -> Result<Self, ControlError> {
        let listener = bind(path)?;
        let m = std::fs::symlink_metadata(path).map_err(|source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
            nics,
            vm,
            clients: HashMap::new(),
        })
    }

    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock, or a transient accept error
            };
            if self.clients.len() >= MAX_CONNECTIONS {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(10)));
                let _ = (&stream).write_all(b"error: too many control connections\n");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            let ev = Events::with_data(&stream, Token::Client(fd).data(), EventSet::IN);
            if ops.add(ev).is_err() {
                continue;
            }
            self.clients.insert(
                fd,
                Client {
                    stream,
                    input: Vec::new(),
                    fds: Vec::new(),
                    output: Vec::new(),
                    closing: false,
                    want_out: false,
                },
            );
        }
    }

    /// Reads what the client sent and answers every complete line.
    fn read_client(&mut self, fd: RawFd) {
        let Some(c) = self.clients.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match recv_with_fds(&c.stream, &mut buf, &mut c.fds) {
                Ok(0) => {
                    c.closing = true;
                    break;
                }
                Ok(n) => c.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.closing = true;
                    c.output.clear();
                    break;
                }
            }
            if c.input.len() > MAX_LINE + 1 && !c.input.contains(&b'\n') {
                break;
            }
        }
        while let Some(pos) = c.input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.input.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let reply = if line.len() > MAX_LINE {
                format!("error: command longer than {MAX_LINE} bytes\n")
            } else {
                match std::str::from_utf8(line) {
                    Ok(text) => command::execute(text, &self.nics, &self.vm, &mut c.fds),
                    Err(_) => "error: command is not UTF-8\n".to_string(),
                }
            };
            c.output.extend_from_slice(reply.as_bytes());
        }
        if c.input.len() > MAX_LINE + 1 {
            c.output.extend_from_slice(
                format!("error: command longer than {MAX_LINE} bytes; disconnecting\n").as_bytes(),
            );
            c.input.clear();
            c.closing = true;
        }
        if c.output.len() > MAX_PENDING_OUTPUT {
            // The client does not read its replies.
            c.output.clear();
            c.closing = true;
        }
    }

    /// Writes pending output; closes a finished client. Returns whether the
    /// client is still there.
    fn flush_client(&mut self, fd: RawFd, ops: &mut EventOps) -> bool {
        let Some(c) = self.clients.get_mut(&fd) else {
            return false;
        };
        while !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(0) => {
                    c.output.clear();
                    c.closing = true;
                }
                Ok(n) => {
                    c.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.output.clear();
                    c.closing = true;
                }
            }
        }
        if c.closing && c.output.is_empty() {
            let _ = ops.remove(Events::empty(&c.stream));
            self.clients.remove(&fd);
            return false;
        }
        let want_out = !c.output.is_empty();
        if want_out != c.want_out {
            let mut set = EventSet::IN;
            if want_out {
                set |= EventSet::OUT;
            }
            let ev = Events::with_data(&c.stream, Token::Client(fd).data(), set);
            if ops.modify(ev).is_ok() {
                c.want_out = want_out;
            }
        }
        true
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Only our own socket file: not one that replaced it since.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl MutEventSubscriber for ControlServer {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(
            &self.listener,
            Token::Listener.data(),
            EventSet::IN,
        ));
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match Token::from_data(events.data()) {
            Token::Listener => self.accept(ops),
            Token::Client(fd) => {
                let set = events.event_set();
                if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) {
                    self.read_client(fd);
                }
                if set.contains(EventSet::ERROR) {
                    if let Some(c) = self.clients.get_mut(&fd) {
                        c.output.clear();
                        c.closing = true;
                    }
                }
                self.flush_client(fd, ops);
            }
        }
    }
}

/// The client side: sends `command` to the socket at `path` and returns
/// the data lines of the reply, or the error message of its status line.
pub fn request(path: &Path, command: &str, timeout: Duration) -> Result<Vec<String>, String> {
    request_with_fds(path, command, &[], timeout)
}

/// [`request`], with `fds` passed along with the command (SCM_RIGHTS):
/// `pcap NAME start FILE [MAX]` needs FILE (and FILE.1 and their
/// directory) open.
pub fn request_with_fds(
    path: &Path,
    command: &str,
    fds: &[BorrowedFd<'_>],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    if command.contains('\n') || command.len() > MAX_LINE {
        return Err(format!("a command is one line of at most {MAX_LINE} bytes"));
    }
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to control socket '{}': {e} (is tapir running with --control-socket?)",
            path.display()
        )
    })?;
    let to = |e: io::Error| format!("control socket '{}': {e}", path.display());
    s.set_read_timeout(Some(timeout)).map_err(to)?;
    s.set_write_timeout(Some(timeout)).map_err(to)?;
    let line = format!("{command}\n");
    if fds.is_empty() {
        s.write_all(line.as_bytes()).map_err(to)?;
    } else {
        send_with_fds(&s, line.as_bytes(), fds).map_err(to)?;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            format!(
                "control socket '{}': no reply within {timeout:?}",
                path.display()
            )
        } else {
            to(e)
        }
    })?;
    let mut lines: Vec<String> = reply.lines().map(str::to_string).collect();
    match lines.pop() {
        Some(l) if l == "ok" => Ok(lines),
        Some(l) if l.starts_with("error: ") => Err(l["error: ".len()..].to_string()),
        _ => Err(format!(
            "control socket '{}': incomplete reply (did the VM stop?)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests;
