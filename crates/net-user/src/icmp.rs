//! ICMP echo relay: a guest ping to the world goes out through an
//! unprivileged ICMP socket (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`),
//! one per (guest, destination, identifier). The kernel picks the
//! identifier on the wire; replies get the guest's back. Where the host
//! forbids these sockets (`net.ipv4.ping_group_range`), pings are dropped
//! and counted, with one warning.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};

use crate::frames;
use crate::policy::Proto;
use crate::poll::{token, Interest, Kind, Slab};
use crate::stats::warn_once;
use crate::Core;

/// Idle time after which a relay is forgotten.
const IDLE: Duration = Duration::from_secs(10);
/// Replies read from one socket per wake-up.
const BURST: usize = 16;

/// (guest, destination, guest's identifier).
type Key = (Ipv4Addr, Ipv4Addr, u16);

struct Flow {
    key: Key,
    sock: socket2::Socket,
    last: Instant,
    reg: Interest,
}

/// All echo relays of one backend.
#[derive(Default)]
pub(crate) struct IcmpRelay {
    flows: Slab<Flow>,
    by_key: HashMap<Key, usize>,
    /// The host refused an ICMP socket: stop trying.
    unavailable: bool,
    buf: Vec<u8>,
}

fn open(dst: Ipv4Addr) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::ICMPV4),
    )?;
    s.set_nonblocking(true)?;
    s.connect(&SocketAddrV4::new(dst, 0).into())?;
    Ok(s)
}

impl IcmpRelay {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// A guest echo request to `dst` (not the gateway or dns: smoltcp
    /// answers those).
    pub fn on_echo(
        &mut self,
        core: &mut Core,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
        seq_no: u16,
        data: &[u8],
    ) {
        let target = match core.xlate.outbound(Proto::Icmp, SocketAddrV4::new(dst, 0)) {
            Ok(t) => *t.ip(),
            Err(_) => {
                core.stats.dropped_other += 1;
                return;
            }
        };
        if self.unavailable {
            core.stats.icmp_unavailable += 1;
            return;
        }
        let key = (src, dst, ident);
        let idx = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                if self.flows.len() >= core.cfg.limits.max_icmp_flows {
                    core.stats.icmp_refused_limit += 1;
                    let (name, max) = (core.name.clone(), core.cfg.limits.max_icmp_flows);
                    warn_once(&mut core.warned.icmp_limit, &name, || {
                        format!("user network reached {max} ICMP echo relays; dropping pings")
                    });
                    return;
                }
                let sock = match open(target) {
                    Ok(s) => s,
                    Err(e) => {
                        core.stats.icmp_unavailable += 1;
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EPROTONOSUPPORT)
                        ) {
                            self.unavailable = true;
                            let name = core.name.clone();
                            warn_once(&mut core.warned.icmp_unavailable, &name, || {
                                format!(
                                    "pings to the world are dropped: the host forbids \
                                     unprivileged ICMP sockets ({e}; see net.ipv4.ping_group_range)"
                                )
                            });
                        }
                        return;
                    }
                };
                let i = self.flows.insert(Flow {
                    key,
                    sock,
                    last: core.now(),
                    reg: Interest::NONE,
                });
                self.by_key.insert(key, i);
                if let Some(f) = self.flows.get_mut(i) {
                    let fd = f.sock.as_raw_fd();
                    if core
                        .poller
                        .set(fd, token(Kind::Icmp, i), &mut f.reg, Interest::READ)
                        .is_err()
                    {
                        self.remove(core, i);
                        return;
                    }
                }
                i
            }
        };
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        f.last = core.now();
        let req = Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        };
        let mut buf = vec![0u8; req.buffer_len()];
        req.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
            &ChecksumCapabilities::default(),
        );
        if f.sock.send(&buf).is_ok() {
            core.stats.icmp_relayed += 1;
        }
    }

    /// Replies from the world.
    pub fn on_ready(&mut self, core: &mut Core, idx: usize) {
        if self.buf.len() < 65_536 {
            self.buf.resize(65_536, 0);
        }
        let Some(f) = self.flows.get_mut(idx) else {
            return;
        };
        let (guest, dst, ident) = f.key;
        for _ in 0..BURST {
            let n = match (&f.sock).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors queued on the socket: consumed by the read.
                Err(_) => continue,
            };
            let Ok(pkt) = Icmpv4Packet::new_checked(&self.buf[..n]) else {
                continue;
            };
            // The kernel rewrote the identifier: the checksum is not ours to check.
            let Ok(Icmpv4Repr::EchoReply { seq_no, data, .. }) =
                Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::ignored())
            else {
                continue;
            };
            f.last = core.now();
            let reply = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let l2 = core.l2_to(guest);
            frames::icmp(&mut core.dev.queue, l2, dst, guest, &reply);
        }
    }

    fn remove(&mut self, core: &mut Core, idx: usize) {
        if let Some(mut f) = self.flows.remove(idx) {
            core.poller.remove(f.sock.as_raw_fd(), &mut f.reg);
            self.by_key.remove(&f.key);
        }
    }

    /// Forgets idle relays.
    pub fn sweep(&mut self, core: &mut Core) {
        let now = core.now();
        let idle: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| now >= f.last + IDLE)
            .map(|(i, _)| i)
            .collect();
        for i in idle {
            self.remove(core, i);
        }
    }
}
