//! Integration tests: a second smoltcp interface plays the guest, joined
//! to a [`UserBackend`] through its `send()`/`recv()` frames, with real
//! host sockets on 127.0.0.1 as the world. Nothing leaves the machine:
//! "world" addresses other than the gateway are remapped to 127.0.0.1
//! through the test-only `Translator::remap`.

mod flows;
mod frames;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use tapir_net_backend::{GuestBuf, NetBackend, NetHdr};

use crate::policy::Translator;
use crate::{UserBackend, UserNetConfig};

pub(crate) const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
pub(crate) const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub(crate) const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub(crate) const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// A documentation address the tests remap to 127.0.0.1.
pub(crate) const WORLD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// The guest's NIC: frames to and from the backend.
#[derive(Default)]
pub(crate) struct GuestDev {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

pub(crate) struct Rx(Vec<u8>);
pub(crate) struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0u8; len];
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

impl Device for GuestDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// The guest: a smoltcp interface with its sockets.
pub(crate) struct Guest {
    pub iface: Interface,
    pub dev: GuestDev,
    pub sockets: SocketSet<'static>,
    start: Instant,
}

impl Guest {
    /// A guest with no address (for DHCP) or 10.0.2.15/24 via 10.0.2.2.
    pub fn new(configured: bool) -> Guest {
        let mut dev = GuestDev::default();
        let mut cfg = Config::new(HardwareAddress::Ethernet(GUEST_MAC));
        cfg.random_seed = 0x1234_5678;
        let mut iface = Interface::new(cfg, &mut dev, SmolInstant::ZERO);
        if configured {
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::Ipv4(GUEST_IP), 24)).unwrap();
            });
            iface.routes_mut().add_default_ipv4_route(GW).unwrap();
        }
        Guest {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    pub fn tcp_socket(&mut self, buf: usize) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buf]),
            tcp::SocketBuffer::new(vec![0; buf]),
        );
        self.sockets.add(s)
    }

    pub fn udp_socket(&mut self, port: u16) -> SocketHandle {
        let mk = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 65536]);
        let mut s = udp::Socket::new(mk(), mk());
        s.bind(port).unwrap();
        self.sockets.add(s)
    }

    pub fn connect(&mut self, h: SocketHandle, to: (Ipv4Addr, u16), local_port: u16) {
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(to.0), to.1), local_port)
            .unwrap();
    }

    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }
}

/// Waits up to `ms` for `fd` to be readable.
pub(crate) fn wait_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// A backend and its guest, pumped by the test.
pub(crate) struct Net {
    pub be: UserBackend,
    pub guest: Guest,
    buf: Vec<u8>,
    /// Frames the backend gave the guest.
    pub to_guest: u64,
    /// Copies of the frames the guest got, when the test asks.
    pub capture: Option<Vec<Vec<u8>>>,
    /// Send the guest's TCP frames as a guest using checksum offload does:
    /// the TCP checksum field holds only the pseudo-header sum, and the
    /// header says NEEDS_CSUM.
    pub partial_csum: bool,
    /// With `partial_csum`: still send them as plain frames (a checksum
    /// that is simply wrong), to show that the completion matters.
    pub partial_csum_unflagged: bool,
    /// GSO frames the backend gave the guest.
    pub gso_frames: u64,
    /// Move frames with send_guest/recv_guest (scattered buffers).
    pub guest_bufs: bool,
}

/// Rewrites an Ethernet/IPv4/TCP frame (no VLAN, no IP options) the way a
/// guest with checksum offload sends it; `None` for other frames.
pub(crate) fn as_partial_csum(f: &mut [u8]) -> Option<NetHdr> {
    use tapir_net_backend::{hdr, offload};
    if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 6 {
        return None;
    }
    let tcp_len = f.len() - 34;
    let pseudo = offload::sum_words(&f[26..34], 6 + tcp_len as u64);
    f[50..52].copy_from_slice(&offload::fold(pseudo).to_be_bytes());
    Some(NetHdr {
        flags: hdr::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..NetHdr::default()
    })
}

impl Net {
    pub fn new(cfg: UserNetConfig, configured: bool) -> Net {
        Net::with(cfg, configured, |_| {})
    }

    pub fn with(cfg: UserNetConfig, configured: bool, tweak: impl FnOnce(&mut Translator)) -> Net {
        Net {
            be: UserBackend::build("test", cfg, tweak).unwrap(),
            guest: Guest::new(configured),
            buf: vec![0; 65550],
            to_guest: 0,
            capture: None,
            partial_csum: false,
            partial_csum_unflagged: false,
            gso_frames: 0,
            guest_bufs: false,
        }
    }

    /// Sends one raw frame as the guest.
    pub fn send_raw(&mut self, f: &[u8]) {
        let n = if self.guest_bufs {
            let mut copy = f.to_vec();
            let (a, b) = copy.split_at_mut(f.len() / 2);
            // SAFETY: both ranges lie in `copy`, alive until send_guest returns.
            let bufs = unsafe {
                [
                    GuestBuf::new(a.as_mut_ptr(), a.len()),
                    GuestBuf::new(b.as_mut_ptr(), b.len()),
                ]
            };
            self.be.send_guest(&NetHdr::default(), &bufs).unwrap()
        } else {
            self.be
                .send(&NetHdr::default(), &[IoSlice::new(f)])
                .unwrap()
        };
        assert_eq!(n, f.len());
    }

    /// One frame from the backend into `self.buf`, through `recv` or, with
    /// `guest_bufs`, through `recv_guest` into two pieces of it.
    fn recv_one(&mut self) -> io::Result<(NetHdr, usize)> {
        if !self.guest_bufs {
            return self.be.recv(&mut self.buf);
        }
        let (a, b) = self.buf.split_at_mut(100);
        // SAFETY: both ranges lie in self.buf, alive across the call.
        let bufs = unsafe {
            [
                GuestBuf::new(a.as_mut_ptr(), a.len()),
                GuestBuf::new(b.as_mut_ptr(), b.len()),
            ]
        };
        self.be.recv_guest(&bufs)
    }

    /// Takes every frame the backend has now.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.recv_one() {
                Ok((h, n)) if h == NetHdr::default() => out.push(self.buf[..n].to_vec()),
                Ok((h, n)) => {
                    // Only a guest that asked for TSO frames gets them: cut
                    // them as the guest's kernel would take them.
                    assert_eq!(h.gso_type, tapir_net_backend::hdr::GSO_TCPV4, "{h:?}");
                    self.gso_frames += 1;
                    let segs = tapir_net_backend::offload::segment(&h, &self.buf[..n]).unwrap();
                    assert!(segs.len() > 1, "{h:?} {n}");
                    out.extend(segs);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// One round: guest polls, its frames go out, the backend's come in;
    /// waits (at most `wait_ms`) for the backend when nothing moved.
    pub fn step(&mut self, wait_ms: i32) {
        let now = self.guest.now();
        let g = &mut self.guest;
        g.iface.poll(now, &mut g.dev, &mut g.sockets);
        let mut moved = false;
        while let Some(mut f) = self.guest.dev.tx.pop_front() {
            match self.partial_csum.then(|| as_partial_csum(&mut f)).flatten() {
                Some(h) if !self.partial_csum_unflagged => {
                    let n = self.be.send(&h, &[IoSlice::new(&f)]).unwrap();
                    assert_eq!(n, f.len());
                }
                _ => self.send_raw(&f),
            }
            moved = true;
        }
        for f in self.drain() {
            self.to_guest += 1;
            moved = true;
            if let Some(c) = &mut self.capture {
                c.push(f.clone());
            }
            self.guest.dev.rx.push_back(f);
        }
        if !moved {
            let g = &mut self.guest;
            let delay = g
                .iface
                .poll_delay(g.now(), &g.sockets)
                .map(|d| d.total_millis() as i32)
                .unwrap_or(wait_ms);
            wait_readable(self.be.rx_fd(), delay.clamp(0, wait_ms));
        }
    }

    /// Pumps until `done` or `secs` pass; false on timeout.
    pub fn run_until(&mut self, secs: u64, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            self.step(5);
        }
        done(self)
    }

    /// Pumps for `ms` milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            self.step(5);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub(crate) fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test pattern: byte `i` of a stream.
pub(crate) fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 13) as u8
}

/// Fills `buf` with the pattern from offset `off`.
pub(crate) fn fill(buf: &mut [u8], off: usize) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(off + k);
    }
}

/// Checks `buf` against the pattern from offset `off`.
pub(crate) fn check(buf: &[u8], off: usize) -> bool {
    buf.iter().enumerate().all(|(k, b)| *b == pattern(off + k))
}
