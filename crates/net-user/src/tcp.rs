//! TCP NAT: each guest connection is a smoltcp socket on the guest side
//! and a host socket on the other, with data pumped between them.
//!
//! Outbound (guest → world): the guest's SYN is held while a non-blocking
//! host `connect()` runs; only when it succeeds does a smoltcp socket
//! listen on exactly the destination the guest asked for and take the
//! SYN, so the guest sees a SYN-ACK only for a reachable service, and an
//! RST otherwise. Forwarded (world → guest, `hostfwd`): the accepted host
//! socket is paired with a smoltcp socket connecting from the gateway.
//!
//! Flow control: host → guest is read only while the smoltcp send buffer
//! has room; guest → host data stays in the smoltcp receive buffer until
//! the host socket takes it, so the guest's window closes. Interest in
//! the host fd is kept exact (see [`Interest`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, IpListenEndpoint, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr,
};

use crate::policy::Proto;
use crate::poll::{token, Interest, Kind, Slab};
use crate::stats::warn_once;
use crate::Core;

/// How long a host connect may take before the guest gets an RST.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forwarded connection waits for the guest to answer.
const GUEST_CONNECT_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(30);
/// smoltcp gives up on a guest that acknowledges nothing for this long.
const IDLE_ABORT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(300);
/// A flow whose host side is done is forgotten after this long in
/// TIME-WAIT (the final ACK is out by then), or after `CLOSE_LIMIT` in any
/// closing state.
const TIME_WAIT: Duration = Duration::from_secs(1);
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

/// (guest address, the address the guest talks to).
type Key = (SocketAddrV4, SocketAddrV4);

enum Phase {
    /// Host connect in progress; the guest's SYN frame is held.
    Connecting {
        sock: socket2::Socket,
        syn: Vec<u8>,
        deadline: Instant,
    },
    /// Both sides exist.
    Open,
    /// The host side is gone; smoltcp finishes with the guest.
    Closing { since: Instant },
}

struct Flow {
    key: Key,
    phase: Phase,
    handle: Option<SocketHandle>,
    host: Option<TcpStream>,
    reg: Interest,
    /// A read may find data (no EAGAIN since the last readiness).
    read_ready: bool,
    /// A write may be accepted (no EAGAIN since the last readiness).
    write_ready: bool,
    host_eof: bool,
    host_wr_shut: bool,
    forwarded: bool,
    established: bool,
}

/// All TCP flows of one backend.
#[derive(Default)]
pub(crate) struct TcpNat {
    flows: Slab<Flow>,
    by_key: HashMap<Key, usize>,
    dirty: Vec<usize>,
    next_port: u16,
    /// Some flow is connecting or closing: the sweep must run.
    pub needs_sweep: bool,
}

/// The guest has sent its FIN.
fn guest_fin(s: State) -> bool {
    matches!(
        s,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

/// Parses a held guest frame back into its headers (it parsed before).
fn parse_tcp_frame(frame: &[u8]) -> Option<(EthernetAddress, Ipv4Repr, TcpRepr<'_>)> {
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ipp = Ipv4Packet::new_checked(&frame[crate::frames::ETH_HDR..]).ok()?;
    let ip = Ipv4Repr::parse(&ipp, &caps).ok()?;
    let tp = TcpPacket::new_checked(ipp.payload()).ok()?;
    let tcp = TcpRepr::parse(&tp, &ip.src_addr.into(), &ip.dst_addr.into(), &caps).ok()?;
    Some((eth.src_addr(), ip, tcp))
}

/// Answers a held guest SYN with an RST.
fn rst_frame(core: &mut Core, frame: &[u8]) {
    if let Some((mac, ip, tcp)) = parse_tcp_frame(frame) {
        let l2 = core.l2_reply(mac);
        crate::frames::tcp_rst(&mut core.dev.queue, l2, &ip, &tcp);
    }
}

/// `Ok(true)`: connected at once; `Ok(false)`: in progress.
fn start_connect(to: SocketAddrV4) -> io::Result<(socket2::Socket, bool)> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    let _ = s.set_tcp_nodelay(true);
    match s.connect(&to.into()) {
        Ok(()) => Ok((s, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((s, false)),
        Err(e) => Err(e),
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

impl TcpNat {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn new_socket(core: &Core) -> tcp::Socket<'static> {
        let n = core.cfg.limits.tcp_buffer;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; n]),
            tcp::SocketBuffer::new(vec![0u8; n]),
        );
        s.set_nagle_enabled(false);
        s.set_timeout(Some(IDLE_ABORT));
        s
    }

    fn refuse_limit(core: &mut Core) {
        core.stats.tcp_refused_limit += 1;
        let (name, max) = (core.name.clone(), core.cfg.limits.max_tcp_flows);
        warn_once(&mut core.warned.tcp_limit, &name, || {
            format!("user network reached {max} TCP flows; refusing new connections")
        });
    }

    /// A TCP segment from the guest (`frame` is the whole Ethernet frame).
    pub fn on_guest(
        &mut self,
        core: &mut Core,
        frame: &[u8],
        mac: EthernetAddress,
        ip: &Ipv4Repr,
        seg: &TcpRepr<'_>,
    ) {
        let key = (
            SocketAddrV4::new(ip.src_addr, seg.src_port),
            SocketAddrV4::new(ip.dst_addr, seg.dst_port),
        );
        let is_syn = seg.control == TcpControl::Syn && seg.ack_number.is_none();
        if let Some(&idx) = self.by_key.get(&key) {
            let closing_syn = match self.flows.get(idx).map(|f| &f.phase) {
                Some(Phase::Connecting { .. }) => {
                    if seg.control == TcpControl::Rst {
                        self.remove(core, idx);
                    }
                    return; // duplicate SYN while connecting
                }
                Some(Phase::Closing { .. }) => is_syn,
                _ => false,
            };
            if closing_syn {
                // The guest reuses the port: forget the old flow.
                self.remove(core, idx);
            } else {
                core.ingest(frame);
                self.dirty.push(idx);
                return;
            }
        }
        if !is_syn {
            // No flow: smoltcp answers with an RST (or ignores an RST).
            core.ingest(frame);
            return;
        }
        let l2 = core.l2_reply(mac);
        let target = match core.xlate.outbound(Proto::Tcp, key.1) {
            Ok(t) => t,
            Err(_) => {
                core.stats.tcp_refused_policy += 1;
                crate::frames::tcp_rst(&mut core.dev.queue, l2, ip, seg);
                return;
            }
        };
        if self.flows.len() >= core.cfg.limits.max_tcp_flows {
            Self::refuse_limit(core);
            crate::frames::tcp_rst(&mut core.dev.queue, l2, ip, seg);
            return;
        }
        let (sock, done) = match start_connect(target) {
            Ok(r) => r,
            Err(e) => {
                core.stats.connect_failed += 1;
                if is_fd_exhaustion(&e) {
                    let name = core.name.clone();
                    warn_once(&mut core.warned.fds, &name, || {
                        format!("user network cannot open host sockets: {e}")
                    });
                }
                crate::frames::tcp_rst(&mut core.dev.queue, l2, ip, seg);
                return;
            }
        };
        let idx = self.flows.insert(Flow {
            key,
            phase: Phase::Connecting {
                sock,
                syn: frame.to_vec(),
                deadline: core.now() + CONNECT_TIMEOUT,
            },
            handle: None,
            host: None,
            reg: Interest::NONE,
            read_ready: true,
            write_ready: true,
            host_eof: false,
            host_wr_shut: false,
            forwarded: false,
            established: false,
        });
        self.by_key.insert(key, idx);
        self.needs_sweep = true;
        if done {
            self.connected(core, idx);
        } else if let Some(f) = self.flows.get_mut(idx) {
            if let Phase::Connecting { sock, .. } = &f.phase {
                let fd = sock.as_raw_fd();
                if core
                    .poller
                    .set(fd, token(Kind::TcpFlow, idx), &mut f.reg, Interest::WRITE)
                    .is_err()
                {
                    self.fail_connect(core, idx);
                }
            }
        }
    }

    /// The host connect finished (writable): hand the SYN to smoltcp, or
    /// refuse the guest.
    fn connected(&mut self, core: &mut Core, idx: usize) {
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        let Phase::Connecting { sock, .. } = &f.phase else {
            return;
        };
        match sock.take_error() {
            Ok(None) => {}
            _ => return self.fail_connect(core, idx),
        }
        // A writable socket with no error may still be unconnected (a
        // spurious wake-up): it has a peer only when connected.
        if sock.peer_addr().is_err() {
            return self.fail_connect(core, idx);
        }
        let Phase::Connecting { sock, syn, .. } = std::mem::replace(&mut f.phase, Phase::Open)
        else {
            return;
        };
        let mut s = Self::new_socket(core);
        let dst = f.key.1;
        if s.listen(IpListenEndpoint {
            addr: Some((*dst.ip()).into()),
            port: dst.port(),
        })
        .is_err()
        {
            f.host = Some(sock.into());
            return self.abort(core, idx);
        }
        let handle = core.sockets.add(s);
        f.handle = Some(handle);
        f.host = Some(sock.into());
        core.ingest(&syn);
        let st = core.sockets.get::<tcp::Socket>(handle).state();
        if st != State::SynReceived {
            // The SYN did not reach the listener (cannot happen with a
            // frame that parsed before): nothing may stay listening.
            return self.abort(core, idx);
        }
        self.dirty.push(idx);
    }

    fn fail_connect(&mut self, core: &mut Core, idx: usize) {
        core.stats.connect_failed += 1;
        if let Some(Flow {
            phase: Phase::Connecting { syn, .. },
            ..
        }) = self.flows.get(idx)
        {
            let syn = syn.clone();
            rst_frame(core, &syn);
        }
        self.remove(core, idx);
    }

    /// A connection accepted on a forward: connect to the guest from the
    /// gateway.
    pub fn add_forwarded(&mut self, core: &mut Core, host: TcpStream, guest: SocketAddrV4) {
        if self.flows.len() >= core.cfg.limits.max_tcp_flows {
            Self::refuse_limit(core);
            return; // dropping `host` closes it
        }
        if host.set_nonblocking(true).is_err() {
            return;
        }
        let _ = host.set_nodelay(true);
        let gw = core.cfg.gateway;
        let Some(port) = self.alloc_port(guest, gw) else {
            return;
        };
        let mut s = Self::new_socket(core);
        s.set_timeout(Some(GUEST_CONNECT_TIMEOUT));
        let local = IpListenEndpoint {
            addr: Some(gw.into()),
            port,
        };
        if s.connect(core.iface.context(), (*guest.ip(), guest.port()), local)
            .is_err()
        {
            return;
        }
        let handle = core.sockets.add(s);
        let key = (guest, SocketAddrV4::new(gw, port));
        let idx = self.flows.insert(Flow {
            key,
            phase: Phase::Open,
            handle: Some(handle),
            host: Some(host),
            reg: Interest::NONE,
            read_ready: true,
            write_ready: true,
            host_eof: false,
            host_wr_shut: false,
            forwarded: true,
            established: false,
        });
        self.by_key.insert(key, idx);
        core.stats.hostfwd_accepted += 1;
        self.dirty.push(idx);
    }

    /// A gateway port for a forwarded flow to `guest`.
    fn alloc_port(&mut self, guest: SocketAddrV4, gw: Ipv4Addr) -> Option<u16> {
        for _ in 0..16384 {
            self.next_port = if (49152..65535).contains(&self.next_port) {
                self.next_port + 1
            } else {
                49152
            };
            let key = (guest, SocketAddrV4::new(gw, self.next_port));
            if !self.by_key.contains_key(&key) {
                return Some(self.next_port);
            }
        }
        None
    }

    /// Readiness of a flow's host fd.
    pub fn on_ready(&mut self, core: &mut Core, idx: usize, readable: bool, writable: bool) {
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        if let Phase::Connecting { .. } = f.phase {
            return self.connected(core, idx);
        }
        f.read_ready |= readable;
        f.write_ready |= writable;
        self.dirty.push(idx);
    }

    /// Pumps the flows touched since the last call.
    pub fn service_dirty(&mut self, core: &mut Core) {
        while let Some(idx) = self.dirty.pop() {
            self.service(core, idx);
        }
    }

    /// Marks every flow for service (after smoltcp timers ran).
    pub fn mark_all(&mut self) {
        self.dirty = self.flows.indices();
    }

    /// Moves data both ways, propagates FIN and RST, updates interest.
    fn service(&mut self, core: &mut Core, idx: usize) {
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        let Some(handle) = f.handle else {
            return;
        };
        if let Phase::Connecting { .. } = f.phase {
            return;
        }
        let now = core.now();
        let sock = core.sockets.get_mut::<tcp::Socket>(handle);
        if f.forwarded && !f.established && sock.state() == State::Established {
            f.established = true;
            sock.set_timeout(Some(IDLE_ABORT));
        }
        let mut failed = false;
        if let Some(host) = f.host.as_ref() {
            // Guest → host, as much as the host takes.
            while f.write_ready && sock.recv_queue() > 0 {
                let r = sock.recv(|buf| match (&*host).write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => f.write_ready = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        failed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !failed && !f.host_wr_shut && guest_fin(sock.state()) && sock.recv_queue() == 0 {
                let _ = host.shutdown(Shutdown::Write);
                f.host_wr_shut = true;
            }
            // Host → guest, as much as smoltcp's send buffer holds.
            while !failed
                && f.read_ready
                && !f.host_eof
                && sock.may_send()
                && sock.send_queue() < sock.send_capacity()
            {
                let r = sock.send(|buf| {
                    if buf.is_empty() {
                        return (0, Err(io::ErrorKind::WouldBlock.into()));
                    }
                    match (&*host).read(buf) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    }
                });
                match r {
                    Ok(Ok(0)) => {
                        f.host_eof = true;
                        sock.close(); // FIN after the buffered data
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => f.read_ready = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => failed = true,
                    Err(_) => break,
                }
            }
        }
        let st = sock.state();
        if f.host.is_some() {
            let done = f.host_eof && f.host_wr_shut;
            if failed {
                // Host reset or error: reset the guest.
                sock.abort();
                drop_host(&core.poller, f, false);
            } else if done {
                drop_host(&core.poller, f, false);
            } else if st == State::Closed || st == State::Listen {
                // Guest reset (or smoltcp gave up): reset the host peer.
                if st == State::Listen {
                    sock.abort();
                }
                drop_host(&core.poller, f, true);
            }
        }
        match f.host.as_ref() {
            Some(host) => {
                let want = Interest {
                    read: !f.host_eof
                        && !f.read_ready
                        && sock.may_send()
                        && sock.send_queue() < sock.send_capacity(),
                    write: !f.write_ready && sock.recv_queue() > 0 && !f.host_wr_shut,
                };
                let fd = host.as_raw_fd();
                if core
                    .poller
                    .set(fd, token(Kind::TcpFlow, idx), &mut f.reg, want)
                    .is_err()
                {
                    sock.abort();
                    drop_host(&core.poller, f, true);
                }
            }
            None => {
                if !matches!(f.phase, Phase::Closing { .. }) {
                    f.phase = Phase::Closing { since: now };
                    self.needs_sweep = true;
                }
            }
        }
        let sock = core.sockets.get::<tcp::Socket>(handle);
        let (st, gone) = (sock.state(), sock.remote_endpoint().is_none());
        if let Phase::Closing { since } = f.phase {
            let reap = (st == State::Closed && gone)
                || (st == State::TimeWait && now >= since + TIME_WAIT)
                || now >= since + CLOSE_LIMIT;
            if reap {
                self.remove(core, idx);
            }
        }
    }

    /// Resets both sides of a flow.
    fn abort(&mut self, core: &mut Core, idx: usize) {
        if let Some(f) = self.flows.get_mut(idx) {
            if let Some(h) = f.handle {
                core.sockets.get_mut::<tcp::Socket>(h).abort();
            }
            drop_host(&core.poller, f, true);
            f.phase = Phase::Closing { since: core.now() };
            self.needs_sweep = true;
            self.dirty.push(idx);
        }
    }

    /// Forgets a flow: its host socket, smoltcp socket and key.
    fn remove(&mut self, core: &mut Core, idx: usize) {
        let Some(mut f) = self.flows.remove(idx) else {
            return;
        };
        if let Phase::Connecting { sock, .. } = &f.phase {
            core.poller.remove(sock.as_raw_fd(), &mut f.reg);
        }
        drop_host(&core.poller, &mut f, false);
        if let Some(h) = f.handle {
            core.sockets.remove(h);
        }
        if self.by_key.get(&f.key) == Some(&idx) {
            self.by_key.remove(&f.key);
        }
    }

    /// Connect timeouts and closing flows; returns whether it must run again.
    pub fn sweep(&mut self, core: &mut Core) {
        let now = core.now();
        let mut again = false;
        for idx in self.flows.indices() {
            match self.flows.get(idx).map(|f| &f.phase) {
                Some(Phase::Connecting { deadline, .. }) => {
                    if now >= *deadline {
                        self.fail_connect(core, idx);
                    } else {
                        again = true;
                    }
                }
                Some(Phase::Closing { .. }) => {
                    self.service(core, idx);
                    again |= self.flows.get(idx).is_some();
                }
                _ => {}
            }
        }
        self.needs_sweep = again;
    }

    /// Counts for the stats (open flows of each kind).
    #[cfg(test)]
    pub fn states(&self, core: &Core) -> Vec<State> {
        self.flows
            .iter()
            .filter_map(|(_, f)| f.handle)
            .map(|h| core.sockets.get::<tcp::Socket>(h).state())
            .collect()
    }
}

/// Closes a flow's host socket (with an RST to the peer when `reset`).
fn drop_host(poller: &crate::poll::Poller, f: &mut Flow, reset: bool) {
    if let Some(host) = f.host.take() {
        poller.remove(host.as_raw_fd(), &mut f.reg);
        if reset {
            let s = socket2::SockRef::from(&host);
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    }
}
