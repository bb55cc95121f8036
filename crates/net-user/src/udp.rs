//! UDP NAT: one connected host socket per (guest address, destination),
//! and UDP forwards (a bound host socket; each host peer appears to the
//! guest as its own gateway port).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smoltcp::wire::Ipv4Repr;

use crate::frames::{self, L2};
use crate::policy::Proto;
use crate::poll::{token, Interest, Kind, Slab};
use crate::stats::warn_once;
use crate::Core;

/// Idle time after which a flow is forgotten.
const IDLE: Duration = Duration::from_secs(60);
/// Idle time of DNS flows (one query, one answer).
const DNS_IDLE: Duration = Duration::from_secs(10);
/// Idle time of a DNS flow once an answer came back (most resolvers use a
/// new port per query, so answered flows go quickly).
const DNS_ANSWERED: Duration = Duration::from_secs(1);
/// Datagrams read from one socket per wake-up (fairness between flows).
const BURST: usize = 32;

/// (guest address, the address the guest talks to).
type Key = (SocketAddrV4, SocketAddrV4);

enum Route {
    /// Guest → world: a connected host socket.
    Out(UdpSocket),
    /// A peer of forward `fwd`.
    Fwd { fwd: usize, peer: SocketAddrV4 },
}

struct Flow {
    key: Key,
    route: Route,
    last: Instant,
    idle: Duration,
    reg: Interest,
}

/// A guest datagram, parsed.
pub(crate) struct Datagram<'a> {
    /// Its IP header.
    pub ip: &'a Ipv4Repr,
    /// The whole UDP packet (quoted in ICMP errors).
    pub udp: &'a [u8],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
}

/// A UDP forward: a bound host socket and where its datagrams go.
pub(crate) struct UdpFwd {
    pub sock: UdpSocket,
    pub guest: SocketAddrV4,
}

/// All UDP flows of one backend.
#[derive(Default)]
pub(crate) struct UdpNat {
    flows: Slab<Flow>,
    by_key: HashMap<Key, usize>,
    peers: HashMap<(usize, SocketAddrV4), usize>,
    pub fwds: Vec<UdpFwd>,
    next_port: u16,
    buf: Vec<u8>,
}

impl UdpNat {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn refuse_limit(core: &mut Core) {
        core.stats.udp_refused_limit += 1;
        let (name, max) = (core.name.clone(), core.cfg.limits.max_udp_flows);
        warn_once(&mut core.warned.udp_limit, &name, || {
            format!("user network reached {max} UDP flows; dropping new ones")
        });
    }

    /// Adds a forward's socket (already bound) and watches it.
    pub fn add_fwd(
        &mut self,
        core: &mut Core,
        sock: UdpSocket,
        guest: SocketAddrV4,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        let idx = self.fwds.len();
        let mut reg = Interest::NONE;
        core.poller.set(
            sock.as_raw_fd(),
            token(Kind::UdpFwd, idx),
            &mut reg,
            Interest::READ,
        )?;
        // Registered for the socket's life (closing it leaves the set).
        self.fwds.push(UdpFwd { sock, guest });
        Ok(())
    }

    /// A datagram from the guest.
    pub fn on_guest(&mut self, core: &mut Core, l2: L2, d: &Datagram<'_>) {
        let (ip, udp_bytes, payload) = (d.ip, d.udp, d.payload);
        let (src, dst) = (d.src, d.dst);
        let key = (src, dst);
        let now = core.now();
        if let Some(&idx) = self.by_key.get(&key) {
            if let Some(f) = self.flows.get_mut(idx) {
                f.last = now;
                match &f.route {
                    Route::Out(s) => {
                        let _ = s.send(payload);
                    }
                    Route::Fwd { fwd, peer } => {
                        if let Some(fw) = self.fwds.get(*fwd) {
                            let _ = fw.sock.send_to(payload, *peer);
                        }
                    }
                }
            }
            return;
        }
        let target = match core.xlate.outbound(Proto::Udp, dst) {
            Ok(t) => t,
            Err(_) => {
                core.stats.udp_refused_policy += 1;
                frames::port_unreachable(&mut core.dev.queue, l2, ip, udp_bytes);
                return;
            }
        };
        if self.flows.len() >= core.cfg.limits.max_udp_flows {
            return Self::refuse_limit(core);
        }
        let sock = match UdpSocket::bind(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(target).map(|_| s))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
        {
            Ok(s) => s,
            Err(e) => {
                let name = core.name.clone();
                warn_once(&mut core.warned.fds, &name, || {
                    format!("user network cannot open a host UDP socket: {e}")
                });
                core.stats.dropped_other += 1;
                return;
            }
        };
        let _ = sock.send(payload);
        let idle = if dst.port() == 53 { DNS_IDLE } else { IDLE };
        let idx = self.flows.insert(Flow {
            key,
            route: Route::Out(sock),
            last: now,
            idle,
            reg: Interest::NONE,
        });
        self.by_key.insert(key, idx);
        if let Some(f) = self.flows.get_mut(idx) {
            if let Route::Out(s) = &f.route {
                let fd = s.as_raw_fd();
                if core
                    .poller
                    .set(fd, token(Kind::UdpFlow, idx), &mut f.reg, Interest::READ)
                    .is_err()
                {
                    self.remove(core, idx);
                }
            }
        }
    }

    /// Datagrams from the world for an outbound flow.
    pub fn on_flow_ready(&mut self, core: &mut Core, idx: usize) {
        if self.buf.len() < 65_536 {
            self.buf.resize(65_536, 0);
        }
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        let Route::Out(sock) = &f.route else {
            return;
        };
        let (guest, remote) = f.key;
        for _ in 0..BURST {
            match sock.recv(&mut self.buf) {
                Ok(n) => {
                    f.last = core.now();
                    if remote.port() == 53 {
                        f.idle = DNS_ANSWERED;
                    }
                    let l2 = core.l2_to(*guest.ip());
                    let id = core.next_ident();
                    frames::udp(&mut core.dev.queue, l2, remote, guest, &self.buf[..n], id);
                }
                // An ICMP error for an earlier datagram: nothing to read.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// Datagrams from host peers of forward `fwd`.
    pub fn on_fwd_ready(&mut self, core: &mut Core, fwd: usize) {
        if self.buf.len() < 65_536 {
            self.buf.resize(65_536, 0);
        }
        for _ in 0..BURST {
            let Some(fw) = self.fwds.get(fwd) else {
                return;
            };
            let (n, peer) = match fw.sock.recv_from(&mut self.buf) {
                Ok((n, SocketAddr::V4(p))) => (n, p),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return,
            };
            let guest = fw.guest;
            let now = core.now();
            let idx = match self.peers.get(&(fwd, peer)) {
                Some(&i) => i,
                None => {
                    if self.flows.len() >= core.cfg.limits.max_udp_flows {
                        Self::refuse_limit(core);
                        continue;
                    }
                    let Some(port) = self.alloc_port(guest, core) else {
                        continue;
                    };
                    let key = (guest, SocketAddrV4::new(core.cfg.gateway, port));
                    let i = self.flows.insert(Flow {
                        key,
                        route: Route::Fwd { fwd, peer },
                        last: now,
                        idle: IDLE,
                        reg: Interest::NONE,
                    });
                    self.by_key.insert(key, i);
                    self.peers.insert((fwd, peer), i);
                    i
                }
            };
            let Some(f) = self.flows.get_mut(idx) else {
                continue;
            };
            f.last = now;
            let (guest, gw) = f.key;
            let l2 = core.l2_to(*guest.ip());
            let id = core.next_ident();
            frames::udp(&mut core.dev.queue, l2, gw, guest, &self.buf[..n], id);
        }
    }

    fn alloc_port(&mut self, guest: SocketAddrV4, core: &Core) -> Option<u16> {
        for _ in 0..16384 {
            self.next_port = if (49152..65535).contains(&self.next_port) {
                self.next_port + 1
            } else {
                49152
            };
            let key = (guest, SocketAddrV4::new(core.cfg.gateway, self.next_port));
            if !self.by_key.contains_key(&key) {
                return Some(self.next_port);
            }
        }
        None
    }

    fn remove(&mut self, core: &mut Core, idx: usize) {
        let Some(mut f) = self.flows.remove(idx) else {
            return;
        };
        match &f.route {
            Route::Out(s) => core.poller.remove(s.as_raw_fd(), &mut f.reg),
            Route::Fwd { fwd, peer } => {
                self.peers.remove(&(*fwd, *peer));
            }
        }
        if self.by_key.get(&f.key) == Some(&idx) {
            self.by_key.remove(&f.key);
        }
    }

    /// Forgets idle flows.
    pub fn sweep(&mut self, core: &mut Core) {
        let now = core.now();
        let idle: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| now >= f.last + f.idle)
            .map(|(i, _)| i)
            .collect();
        for i in idle {
            self.remove(core, i);
        }
    }
}
