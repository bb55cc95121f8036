//! User-mode networking ("net=user"): a NAT in the VMM process, needing
//! no privileges, like QEMU's `-netdev user` (libslirp).
//!
//! The guest sees a router (the gateway, 10.0.2.2 by default) that also
//! serves DHCP, a DNS relay (10.0.2.3), and the whole IPv4 world behind
//! them. Guest TCP connections end in a smoltcp TCP/IP stack and are
//! carried on by host sockets; UDP datagrams and pings are relayed
//! through host sockets; host forwards bring host connections in.
//!
//! Everything runs on the NIC worker's thread, without locks: `rx_fd()`
//! and `tx_fd()` are one epoll fd holding every host socket, a timerfd
//! and a "frames queued for the guest" eventfd. It is readable whenever
//! there is NAT work; [`NetBackend::recv`] does that work and returns a
//! frame for the guest. [`NetBackend::send`] handles one guest frame at
//! once and never blocks. See `docs/backend-user.md`.

mod config;
mod device;
mod dhcp;
mod frames;
mod gso;
mod hostfwd;
mod icmp;
mod policy;
mod poll;
mod stats;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress,
    Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    TcpRepr, UdpPacket, UdpRepr,
};
use tapir_net_backend::hdr::{GSO_NONE, NEEDS_CSUM};
use tapir_net_backend::{guest_buf, offload, BackendStats, GuestBuf, NetBackend, NetHdr, Offloads};
use vmm_sys_util::epoll::{EpollEvent, EventSet};

pub use config::{HostFwd, HostFwdProto, Limits, UserConfigError, UserNetConfig};
pub use stats::UserNetStats;

use device::NatDevice;
use dhcp::DhcpServer;
use frames::L2;
use hostfwd::HostFwds;
use icmp::IcmpRelay;
use policy::Translator;
use poll::{untoken, Kind, Poller};
use stats::Warned;
use tcp::TcpNat;
use udp::UdpNat;

/// Why a user-mode backend could not be created. One line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserNetError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] UserConfigError),
    /// A host forward could not be bound,
    /// e.g. `hostfwd tcp 127.0.0.1:8080: cannot listen: Address already in use`.
    #[error("hostfwd {fwd}: cannot {action}: {reason}")]
    HostFwd {
        /// The forward's host side, e.g. `tcp 127.0.0.1:8080`.
        fwd: String,
        /// `listen` (TCP) or `bind` (UDP).
        action: &'static str,
        /// The system's reason.
        reason: String,
    },
    /// The epoll, timer or event fd could not be created.
    #[error("user network: cannot create {what}: {reason}")]
    Setup {
        /// What failed.
        what: &'static str,
        /// The system's reason.
        reason: String,
    },
}

/// An OS error's message without Rust's " (os error N)" suffix.
pub(crate) fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// How long a learned guest MAC is trusted before smoltcp is told again.
const RELEARN: Duration = Duration::from_secs(20);
/// How often flow timeouts are checked while any can expire.
const SWEEP: Duration = Duration::from_secs(1);
/// Largest frame `send` looks at.
const MAX_GUEST_FRAME: usize = 65_550;
/// Guest MSS entries kept (one per connection the guest opened or took).
const MAX_MSS_ENTRIES: usize = 4096;

/// What the guest may leave to the NAT: partial checksums and TCPv4
/// segmentation (a guest that sends 64 KiB super-frames instead of 1500-byte
/// frames spends far less CPU and causes far fewer exits per byte). Frames
/// toward the guest are always plain and fully checksummed.
const OFFLOADS: Offloads = Offloads {
    csum: true,
    tso4: true,
    tso6: false,
    tso_ecn: false,
};

/// State shared by the protocol modules: the smoltcp interface and its
/// device, the poller, the rules and the counters.
pub(crate) struct Core {
    pub name: String,
    pub cfg: UserNetConfig,
    pub xlate: Translator,
    pub iface: Interface,
    pub dev: NatDevice,
    pub sockets: SocketSet<'static>,
    pub poller: Poller,
    pub stats: UserNetStats,
    pub warned: Warned,
    /// The gateway's (and dns's) MAC.
    pub mac: EthernetAddress,
    start: Instant,
    /// Guest addresses seen, with their MAC and when smoltcp was told.
    guests: HashMap<Ipv4Addr, (EthernetAddress, Instant)>,
    last_guest: Option<EthernetAddress>,
    ident: u16,
    /// When smoltcp wants to be polled again.
    smol_at: Option<Instant>,
}

impl Core {
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    fn smol_time(&self, t: Instant) -> SmolInstant {
        SmolInstant::from_micros(t.saturating_duration_since(self.start).as_micros() as i64)
    }

    /// Hands one frame to smoltcp (answers it may send are queued).
    pub fn ingest(&mut self, frame: &[u8]) {
        let now = self.smol_time(Instant::now());
        self.dev.set_rx(frame);
        self.iface
            .poll_ingress_single(now, &mut self.dev, &mut self.sockets);
        self.dev.rx_ready = false;
    }

    /// Lets smoltcp send all it can (until the guest queue is full) and
    /// notes when it wants to run next.
    pub fn egress(&mut self) {
        let now = Instant::now();
        let t = self.smol_time(now);
        self.dev.exhausted = false;
        while self.dev.queue.has_room() {
            if self.iface.poll_egress(t, &mut self.dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        self.smol_at = match self.iface.poll_at(t, &self.sockets) {
            None => None,
            Some(at) => {
                let at = self.start + Duration::from_micros(at.total_micros().max(0) as u64);
                if at > now {
                    Some(at)
                } else if !self.dev.queue.has_room() {
                    // Draining the queue (recv) brings us back here.
                    None
                } else {
                    // smoltcp wants to run "now" but just ran: not a spin.
                    Some(now + Duration::from_millis(1))
                }
            }
        };
    }

    /// Frame addressing toward the guest at `ip`.
    pub fn l2_to(&self, ip: Ipv4Addr) -> L2 {
        let dst = self
            .guests
            .get(&ip)
            .map(|(m, _)| *m)
            .or(self.last_guest)
            .unwrap_or(EthernetAddress::BROADCAST);
        L2 { src: self.mac, dst }
    }

    /// Frame addressing of a reply to a guest frame from `mac`.
    pub fn l2_reply(&self, mac: EthernetAddress) -> L2 {
        L2 {
            src: self.mac,
            dst: mac,
        }
    }

    /// The next IP identification for fragmented UDP.
    pub fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Notes the guest's MAC for `ip` and tells smoltcp (as an ARP reply),
    /// so it never has to ask before answering.
    fn learn(&mut self, mac: EthernetAddress, ip: Ipv4Addr) {
        let c = &self.cfg;
        if !mac.is_unicast()
            || !c.in_subnet(ip)
            || ip == c.gateway
            || ip == c.dns
            || ip == c.broadcast()
            || ip == c.net
        {
            return;
        }
        self.last_guest = Some(mac);
        let now = Instant::now();
        if let Some((m, t)) = self.guests.get(&ip) {
            if *m == mac && now < *t + RELEARN {
                return;
            }
        }
        if self.guests.len() >= 64 && !self.guests.contains_key(&ip) {
            self.guests.clear();
        }
        self.guests.insert(ip, (mac, now));
        let arp = frames::arp_reply(mac, ip, self.mac, self.cfg.gateway);
        self.ingest(&arp);
    }
}

/// The user-mode NAT as a [`NetBackend`].
pub struct UserBackend {
    core: Core,
    tcp: TcpNat,
    udp: UdpNat,
    icmp: IcmpRelay,
    dhcp: DhcpServer,
    fwds: HostFwds,
    bstats: BackendStats,
    txbuf: Vec<u8>,
    events: Vec<EpollEvent>,
    sweep_at: Option<Instant>,
    /// The guest takes TCP segments above its MSS (GSO frames), see [`gso`].
    guest_tso: bool,
    /// The MSS each guest connection announced (before it was raised).
    guest_mss: HashMap<gso::FlowKey, u16>,
}

impl std::fmt::Debug for UserBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserBackend")
            .field("name", &self.core.name)
            .field("net", &self.core.cfg.net)
            .field("prefix_len", &self.core.cfg.prefix_len)
            .field("stats", &self.user_stats())
            .finish_non_exhaustive()
    }
}

/// At exit, what the NAT refused or dropped is reported in one line, so
/// that nothing is lost without a word (IPv6 router solicitations from a
/// guest, for instance, show up as `dropped_ipv6`).
impl Drop for UserBackend {
    fn drop(&mut self) {
        let problems = self.user_stats().problems();
        if !problems.is_empty() {
            eprintln!(
                "tapir: note: {}: user network refused or dropped: {}",
                self.core.name,
                problems.join(" ")
            );
        }
    }
}

fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> UserNetError {
    move |e| UserNetError::Setup {
        what,
        reason: os_message(&e),
    }
}

impl UserBackend {
    /// Creates the backend: validates `cfg`, reads the host resolver from
    /// `cfg.resolv_conf`, and binds every host forward (an error names the
    /// forward that cannot be bound). `name` prefixes warnings.
    pub fn new(name: &str, cfg: UserNetConfig) -> Result<UserBackend, UserNetError> {
        Self::build(name, cfg, |_| {})
    }

    pub(crate) fn build(
        name: &str,
        cfg: UserNetConfig,
        tweak: impl FnOnce(&mut Translator),
    ) -> Result<UserBackend, UserNetError> {
        cfg.validate()?;
        let poller = Poller::new().map_err(setup("epoll, timer or event fd"))?;
        let g = cfg.gateway.octets();
        let mac = EthernetAddress([0x52, 0x55, g[0], g[1], g[2], g[3]]);
        let mut dev = NatDevice::new(cfg.limits.guest_queue);
        let mut icfg = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        icfg.random_seed = random_seed();
        let start = Instant::now();
        let mut iface = Interface::new(icfg, &mut dev, SmolInstant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.gateway), cfg.prefix_len));
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.dns), cfg.prefix_len));
        });
        // With any-IP and a default route through ourselves, smoltcp takes
        // TCP to every address (each socket listens on exactly one).
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        iface.set_any_ip(true);
        let mut xlate = Translator::new(&cfg);
        tweak(&mut xlate);
        let dhcp = DhcpServer::new(&cfg);
        let mut core = Core {
            name: name.to_string(),
            cfg,
            xlate,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            poller,
            stats: UserNetStats::default(),
            warned: Warned::default(),
            mac,
            start,
            guests: HashMap::new(),
            last_guest: None,
            ident: 0,
            smol_at: None,
        };
        let mut udp = UdpNat::default();
        let fwds = HostFwds::bind(&mut core, &mut udp)?;
        Ok(UserBackend {
            core,
            tcp: TcpNat::default(),
            udp,
            icmp: IcmpRelay::default(),
            dhcp,
            fwds,
            bstats: BackendStats::default(),
            txbuf: Vec::with_capacity(device::MAX_FRAME),
            events: vec![EpollEvent::default(); 64],
            sweep_at: None,
            guest_tso: false,
            guest_mss: HashMap::new(),
        })
    }

    /// NAT counters.
    pub fn user_stats(&self) -> UserNetStats {
        let mut s = self.core.stats;
        s.tcp_flows = self.tcp.len() as u64;
        s.udp_flows = self.udp.len() as u64;
        s.icmp_flows = self.icmp.len() as u64;
        s.dhcp_leases = self.dhcp.leases() as u64;
        s.dropped_queue_full = self.core.dev.queue.dropped;
        s
    }

    /// One frame from the guest. Never panics, whatever the bytes.
    fn guest_frame(&mut self, frame: &[u8]) {
        let st = &mut self.core.stats;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            st.dropped_malformed += 1;
            return;
        };
        let ethertype = eth.ethertype();
        if ethertype == EthernetProtocol::Ipv6 {
            st.dropped_ipv6 += 1;
            return;
        }
        let dst = eth.dst_addr();
        if (dst != self.core.mac && !dst.is_broadcast()) || !eth.src_addr().is_unicast() {
            st.dropped_other += 1;
            return;
        }
        match ethertype {
            EthernetProtocol::Arp => self.guest_arp(frame, eth.payload()),
            EthernetProtocol::Ipv4 => self.guest_ipv4(frame, eth.src_addr(), eth.payload()),
            _ => st.dropped_other += 1,
        }
    }

    /// ARP: smoltcp answers for the gateway and dns addresses only.
    fn guest_arp(&mut self, frame: &[u8], payload: &[u8]) {
        let parsed = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p));
        match parsed {
            Ok(ArpRepr::EthernetIpv4 {
                target_protocol_addr: t,
                ..
            }) if t == self.core.cfg.gateway || t == self.core.cfg.dns => self.core.ingest(frame),
            Ok(_) => self.core.stats.dropped_other += 1,
            Err(_) => self.core.stats.dropped_malformed += 1,
        }
    }

    fn guest_ipv4(&mut self, frame: &[u8], mac: EthernetAddress, payload: &[u8]) {
        let caps = ChecksumCapabilities::default();
        let Ok(p) = Ipv4Packet::new_checked(payload) else {
            self.core.stats.dropped_malformed += 1;
            return;
        };
        // Checks the header checksum, and refuses fragments.
        let Ok(ip) = Ipv4Repr::parse(&p, &caps) else {
            self.core.stats.dropped_malformed += 1;
            return;
        };
        let body = p.payload();
        if !ip.src_addr.is_unspecified() {
            self.core.learn(mac, ip.src_addr);
        }
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
        let c = &self.core.cfg;
        let bcast = ip.dst_addr.is_broadcast() || ip.dst_addr == c.broadcast();
        let unicast = !bcast && !ip.dst_addr.is_multicast() && !ip.dst_addr.is_unspecified();
        match ip.next_header {
            IpProtocol::Udp => {
                let parsed = UdpPacket::new_checked(body)
                    .and_then(|u| UdpRepr::parse(&u, &src, &dst, &caps).map(|r| (u, r)));
                let Ok((u, r)) = parsed else {
                    self.core.stats.dropped_malformed += 1;
                    return;
                };
                if r.dst_port == 67 && (bcast || ip.dst_addr == c.gateway) {
                    if self
                        .dhcp
                        .handle(self.core.mac, u.payload(), &mut self.core.dev.queue)
                        == dhcp::Outcome::Replied
                    {
                        self.core.stats.dhcp_replies += 1;
                    }
                } else if !unicast {
                    self.core.stats.dropped_other += 1;
                } else {
                    let l2 = self.core.l2_reply(mac);
                    let d = udp::Datagram {
                        ip: &ip,
                        udp: body,
                        src: SocketAddrV4::new(ip.src_addr, r.src_port),
                        dst: SocketAddrV4::new(ip.dst_addr, r.dst_port),
                        payload: u.payload(),
                    };
                    self.udp.on_guest(&mut self.core, l2, &d);
                }
            }
            IpProtocol::Tcp => {
                let Ok(t) = TcpPacket::new_checked(body) else {
                    self.core.stats.dropped_malformed += 1;
                    return;
                };
                let Ok(r) = TcpRepr::parse(&t, &src, &dst, &caps) else {
                    self.core.stats.dropped_malformed += 1;
                    return;
                };
                if !unicast || ip.src_addr.is_unspecified() {
                    self.core.stats.dropped_other += 1;
                    return;
                }
                self.tcp.on_guest(&mut self.core, frame, mac, &ip, &r);
            }
            IpProtocol::Icmp => {
                let Ok(pk) = Icmpv4Packet::new_checked(body) else {
                    self.core.stats.dropped_malformed += 1;
                    return;
                };
                let Ok(r) = Icmpv4Repr::parse(&pk, &caps) else {
                    self.core.stats.dropped_malformed += 1;
                    return;
                };
                match r {
                    Icmpv4Repr::EchoRequest { .. }
                        if ip.dst_addr == c.gateway || ip.dst_addr == c.dns =>
                    {
                        // smoltcp answers for its own addresses.
                        self.core.ingest(frame)
                    }
                    Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    } if unicast => self.icmp.on_echo(
                        &mut self.core,
                        ip.src_addr,
                        ip.dst_addr,
                        ident,
                        seq_no,
                        data,
                    ),
                    _ => self.core.stats.dropped_other += 1,
                }
            }
            _ => self.core.stats.dropped_other += 1,
        }
    }

    /// Host-side work: ready sockets, timers, flow timeouts.
    fn work(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        let n = self.core.poller.ready(&mut events);
        for ev in &events[..n] {
            let set = ev.event_set();
            let trouble = EventSet::ERROR | EventSet::HANG_UP;
            let readable = set.intersects(EventSet::IN | trouble);
            let writable = set.intersects(EventSet::OUT | trouble);
            let core = &mut self.core;
            match untoken(ev.data()) {
                Some((Kind::TcpFlow, i)) => self.tcp.on_ready(core, i, readable, writable),
                Some((Kind::TcpListener, i)) => self.fwds.on_ready(core, &mut self.tcp, i),
                Some((Kind::UdpFlow, i)) => self.udp.on_flow_ready(core, i),
                Some((Kind::UdpFwd, i)) => self.udp.on_fwd_ready(core, i),
                Some((Kind::Icmp, i)) => self.icmp.on_ready(core, i),
                None => {} // the timer and the queue eventfd: state is checked below
            }
        }
        self.events = events;
        let now = Instant::now();
        if self.sweep_at.is_some_and(|t| now >= t) {
            self.sweep_at = None;
            self.tcp.sweep(&mut self.core);
            self.udp.sweep(&mut self.core);
            self.icmp.sweep(&mut self.core);
            self.fwds.sweep(&mut self.core);
        }
        self.finish(true);
    }

    /// After any work: pump touched flows, let smoltcp send, and leave the
    /// eventfd and timer matching the state.
    fn finish(&mut self, exact: bool) {
        if self.core.poller.timer_due(Instant::now()) {
            // smoltcp's timers (retransmits, delayed ACKs, timeouts) run
            // in egress; then every flow looks at its socket's state
            // (whoever re-arms the timer below must have done this).
            self.core.egress();
            self.tcp.mark_all();
        }
        self.tcp.service_dirty(&mut self.core);
        self.core.egress();
        let now = Instant::now();
        let timed = self.tcp.needs_sweep
            || self.udp.len() > 0
            || self.icmp.len() > 0
            || self.fwds.needs_sweep();
        if !timed {
            self.sweep_at = None;
        } else if self.sweep_at.is_none() {
            self.sweep_at = Some(now + SWEEP);
        }
        let deadline = match (self.core.smol_at, self.sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.core.poller.arm(deadline, now, exact);
        let queued = !self.core.dev.queue.is_empty();
        self.core.poller.set_queued(queued);
    }
}

impl UserBackend {
    /// Takes in one guest frame with complete checksums; first raises the
    /// MSS of a SYN when the guest takes GSO frames (see [`gso`]).
    fn plain_guest_frame(&mut self, f: &mut [u8]) {
        if self.guest_tso {
            if let Some((key, mss)) = gso::raise_syn_mss(f) {
                if self.guest_mss.len() >= MAX_MSS_ENTRIES {
                    self.guest_mss.clear(); // forget old flows: they fall back to 1460
                }
                self.guest_mss.insert(key, mss);
            }
        }
        self.guest_frame(f);
    }
}

impl UserBackend {
    /// Takes in one guest frame of `len` bytes, gathered in `buf` (which
    /// goes back to `txbuf`); returns `len`.
    fn take_in(&mut self, hdr: &NetHdr, mut buf: Vec<u8>, len: usize) -> usize {
        self.bstats.tx_frames += 1;
        if len > MAX_GUEST_FRAME {
            self.core.stats.dropped_malformed += 1;
        } else if hdr.flags & NEEDS_CSUM != 0 || hdr.gso_type != GSO_NONE {
            // The guest left the checksum, or the segmentation of a TCP
            // super-frame, to us (OFFLOADS): do it here, on the host, where
            // it is cheap, and take in the resulting plain frames.
            match offload::segment(hdr, &buf) {
                Ok(frames) => {
                    for mut f in frames {
                        self.plain_guest_frame(&mut f);
                    }
                }
                Err(_) => self.core.stats.dropped_malformed += 1,
            }
        } else {
            self.plain_guest_frame(&mut buf);
        }
        self.txbuf = buf;
        self.finish(false);
        len
    }

    /// The next frame for the guest with its header (doing the host-side
    /// work first when none is queued), or WouldBlock.
    fn next_for_guest(&mut self) -> io::Result<(NetHdr, Vec<u8>)> {
        if self.core.dev.queue.is_empty() || self.core.poller.timer_due(Instant::now()) {
            self.work();
        }
        let Some(f) = self.core.dev.queue.pop() else {
            self.core.poller.set_queued(false);
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut hdr = NetHdr::default();
        if f.len() > device::MAX_FRAME {
            // Only a guest that takes GSO frames gets segments this big.
            let mss = gso::egress_key(&f)
                .and_then(|k| self.guest_mss.get(&k).copied())
                .unwrap_or(1460);
            hdr = gso::gso_header(&f, mss).unwrap_or_default();
        }
        if self.core.dev.queue.is_empty() {
            self.core.poller.set_queued(false);
        }
        self.bstats.rx_frames += 1;
        Ok((hdr, f))
    }
}

impl NetBackend for UserBackend {
    fn describe(&self) -> String {
        format!("user {}/{}", self.core.cfg.net, self.core.cfg.prefix_len)
    }

    /// Handles one guest frame at once; never WouldBlock (what cannot be
    /// handled is dropped and counted; TCP's own windows do flow control).
    fn send(&mut self, hdr: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.txbuf);
        buf.clear();
        for s in frame {
            if buf.len() + s.len() > MAX_GUEST_FRAME {
                break;
            }
            buf.extend_from_slice(s);
        }
        let len: usize = frame.iter().map(|s| s.len()).sum();
        Ok(self.take_in(hdr, buf, len))
    }

    fn send_guest(&mut self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        let len = guest_buf::total_len(frame);
        let mut buf = std::mem::take(&mut self.txbuf);
        buf.clear();
        if len <= MAX_GUEST_FRAME {
            guest_buf::gather(frame, &mut buf);
        }
        Ok(self.take_in(hdr, buf, len))
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)> {
        let (hdr, f) = self.next_for_guest()?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        self.core.dev.queue.recycle(f);
        Ok((hdr, n))
    }

    fn recv_guest(&mut self, bufs: &[GuestBuf]) -> io::Result<(NetHdr, usize)> {
        let (hdr, f) = self.next_for_guest()?;
        let n = guest_buf::scatter(bufs, &f);
        let whole = n == f.len();
        self.core.dev.queue.recycle(f);
        if !whole {
            return Err(guest_buf::too_small());
        }
        Ok((hdr, n))
    }

    fn rx_fd(&self) -> RawFd {
        self.core.poller.fd()
    }

    fn tx_fd(&self) -> RawFd {
        self.core.poller.fd()
    }

    fn offloads(&self) -> Offloads {
        OFFLOADS
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        offloads.check_against(&OFFLOADS)?;
        self.guest_tso = offloads.csum && offloads.tso4;
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.bstats
    }
}
