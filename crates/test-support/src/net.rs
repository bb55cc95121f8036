//! Helpers for tests that need root and `/dev/net/tun`: interface names,
//! `ip`, and an `AF_PACKET` socket bound to one interface (the host's end
//! of a tap).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::skipped;

/// True when tap tests can run here; says why not otherwise (see
/// [`skipped`]).
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // The node can exist without a driver behind it: try to open it.
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    if !root || !tun {
        skipped(
            test,
            &format!("needs root and /dev/net/tun (root={root}, tun={tun})"),
        );
    }
    root && tun
}

/// A per-process, per-test interface name (at most 15 bytes).
pub fn unique(prefix: &str, tag: &str) -> String {
    let name = format!("{prefix}{}{tag}", std::process::id());
    assert!(name.len() < 16, "name too long: {name}");
    name
}

/// Whether the interface exists.
pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Waits up to `limit` until `name`'s operstate is `up`, then a little
/// longer, as the kernel starts the queue just after it sets the state.
/// `unknown` counts as up: a device that was up with its carrier on from
/// the start (a tap created by its reader) never changes state, and its
/// queue started when it was brought up.
pub fn wait_oper_up(name: &str, limit: Duration) -> bool {
    let path = Path::new("/sys/class/net").join(name).join("operstate");
    let end = Instant::now() + limit;
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|s| matches!(s.trim(), "up" | "unknown")) {
            std::thread::sleep(Duration::from_millis(10));
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `ip ARGS...`; true when it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Brings interface `name` up with `mtu`, IPv6 off so that the host sends
/// nothing on it by itself (no autoconfiguration, no MLD); panics on
/// failure.
pub fn up_quiet(name: &str, mtu: u32) {
    let ipv6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if Path::new(&ipv6).exists() {
        std::fs::write(&ipv6, "1").unwrap_or_else(|e| panic!("{ipv6}: {e}"));
    }
    let mtu = mtu.to_string();
    assert!(
        ip(&["link", "set", "dev", name, "mtu", &mtu, "up"]),
        "ip link set {name} mtu {mtu} up"
    );
}

/// A veth pair `a`-`b`, both up with `mtu` and IPv6 off ([`up_quiet`]),
/// returned once both carry frames: a frame sent out of one end before
/// the kernel has started its queue (just after the link comes up) is
/// dropped without an error. Deleted (both ends) when the guard drops;
/// panics on failure.
pub fn veth_pair(a: &str, b: &str, mtu: u32) -> LinkGuard {
    assert!(
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]),
        "ip link add {a} type veth peer name {b}"
    );
    let guard = LinkGuard(a.to_string());
    up_quiet(a, mtu);
    up_quiet(b, mtu);
    for end in [a, b] {
        assert!(
            wait_oper_up(end, Duration::from_secs(10)),
            "{end} did not come up"
        );
    }
    guard
}

/// Deletes an interface on drop (also when the test panics).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if iface_exists(&self.0) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

/// The interface's index; panics when there is none.
pub fn ifindex(name: &str) -> i32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated string, only read.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no interface {name}");
    i as i32
}

/// Waits up to `ms` for `fd` to be readable.
pub fn wait_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// Length of the `virtio_net_hdr` a packet socket with `PACKET_VNET_HDR`
/// puts before each frame (no `num_buffers`).
pub const PACKET_VNET_HDR_LEN: usize = 10;

/// An AF_PACKET socket bound to one interface: the host's end of the tap.
pub struct PacketSocket {
    fd: OwnedFd,
    vnet_hdr: bool,
    ifname: String,
    /// The interface was seen running: sends from here on are not dropped.
    running: std::cell::Cell<bool>,
}

/// What [`PacketSocket::recv_meta`] tells of a received frame besides its
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes received (with the `virtio_net_hdr` in front, if enabled).
    pub len: usize,
    /// The frame was sent out of the interface by this host, not received
    /// on it (`PACKET_OUTGOING`).
    pub outgoing: bool,
    /// The 802.1Q tag the kernel took out of the frame, as (TPID, TCI):
    /// a received frame's tag reaches packet sockets only this way.
    pub vlan: Option<(u16, u16)>,
}

fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option reads one int from a valid pointer of that size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PacketSocket {
    /// Bound to `ifname` for `protocol` (an EtherType; ETH_P_ALL = 3).
    /// With `vnet_hdr`, frames sent and received are preceded by a 10-byte
    /// virtio_net_hdr. `PACKET_AUXDATA` is on (see [`Self::recv_meta`]).
    pub fn bind(ifname: &str, protocol: u16, vnet_hdr: bool) -> io::Result<PacketSocket> {
        let proto = protocol.to_be();
        // Protocol 0: the socket receives nothing until bind(2) below
        // names both the protocol and the interface. Created with the
        // protocol, it would take frames of every interface in between
        // (a neighbouring test's tap among them).
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if vnet_hdr {
            setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR)?;
        }
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex(ifname);
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket {
            fd,
            vnet_hdr,
            ifname: ifname.to_string(),
            running: std::cell::Cell::new(false),
        })
    }

    /// The socket's fd, for polling.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Transmits one frame out of the interface (toward the tap's reader).
    /// `vnet_hdr` is sent in front of it when the socket has
    /// `PACKET_VNET_HDR` (ignored otherwise).
    ///
    /// The first send waits until the interface is operationally up: a
    /// tap's carrier comes on when its reader attaches, but its queue is
    /// started later by the kernel's link watch, and until then frames sent
    /// out of it are dropped while send(2) reports success.
    pub fn send(&self, vnet_hdr: &[u8], frame: &[u8]) -> io::Result<()> {
        if !self.running.get() {
            if !wait_oper_up(&self.ifname, Duration::from_secs(5)) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} is not operationally up after 5 s", self.ifname),
                ));
            }
            self.running.set(true);
        }
        let data = if self.vnet_hdr {
            [vnet_hdr, frame].concat()
        } else {
            frame.to_vec()
        };
        // SAFETY: `data` is a valid buffer of the given length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame received within `ms`, if any.
    pub fn recv(&self, ms: i32) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70000];
        let meta = self.recv_meta(&mut buf, ms).ok()??;
        buf.truncate(meta.len);
        Some(buf)
    }

    /// Receives the next frame into `buf` within `ms`: `None` when none
    /// came. A frame longer than `buf` is truncated (70000 bytes is always
    /// enough).
    pub fn recv_meta(&self, buf: &mut [u8], ms: i32) -> io::Result<Option<RecvMeta>> {
        if !wait_readable(self.fd.as_raw_fd(), ms) {
            return Ok(None);
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        // Room for one cmsg of tpacket_auxdata, u64-aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every pointer in `msg` points at a live local or `buf`,
        // with the lengths given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let mut vlan = None;
        // SAFETY: `msg` was filled in by recvmsg; the CMSG macros walk its
        // control buffer within msg_controllen.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: a non-null cmsg from CMSG_FIRSTHDR/NXTHDR lies
            // within the control buffer.
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::SOL_PACKET && c.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: a PACKET_AUXDATA cmsg carries one
                // tpacket_auxdata; read unaligned, as the buffer gives no
                // alignment promise for it.
                let aux: libc::tpacket_auxdata =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    vlan = Some((tpid, aux.tp_vlan_tci));
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR; returns null past the end.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        Ok(Some(RecvMeta {
            len: n as usize,
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
            vlan,
        }))
    }
}
