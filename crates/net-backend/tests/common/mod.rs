//! Helpers for the tests that need root and /dev/net/tun.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;

/// A local experimental EtherType, so that stray host traffic is ignored.
pub const ETH_P_TEST: u16 = 0x88b5;

/// True when tap tests can run here; prints why not otherwise.
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
        tapir_test_support::skipped(
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

pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The interface's index, if it exists.
pub fn ifindex_of(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the interface that had `ifindex` under `name` is gone. A
/// kernel-chosen name (tapN, tapirN) may be reused at once by a test running
/// in parallel, so the name alone does not tell.
/// Whether the interface `name` that had `ifindex` is gone, waiting up to
/// 5 s: a process another test thread is starting may hold a copy of the
/// tap's fd between its fork and its exec (O_CLOEXEC closes it only then).
pub fn iface_gone(name: &str, ifindex: Option<u32>) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if ifindex.is_some() && ifindex_of(name) != ifindex {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
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

/// An AF_PACKET socket bound to one interface: the host's end of the tap.
pub struct PacketSocket {
    fd: OwnedFd,
    vnet_hdr: bool,
}

impl PacketSocket {
    /// Bound to `ifname` for `protocol` (an EtherType; ETH_P_ALL = 3).
    /// With `vnet_hdr`, frames sent are preceded by a 10-byte virtio_net_hdr.
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
            let one: libc::c_int = 1;
            // SAFETY: PACKET_VNET_HDR (15) reads one int from a valid pointer.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    15,
                    (&one as *const libc::c_int).cast(),
                    4,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
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
        Ok(PacketSocket { fd, vnet_hdr })
    }

    /// Transmits one frame out of the interface (toward the tap's reader).
    pub fn send(&self, vnet_hdr: &[u8], frame: &[u8]) -> io::Result<()> {
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
        if !wait_readable(self.fd.as_raw_fd(), ms) {
            return None;
        }
        let mut buf = vec![0u8; 70000];
        // SAFETY: `buf` is a valid writable buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }
}

/// A test frame of EtherType [`ETH_P_TEST`].
pub fn test_frame(marker: u8, len: usize) -> Vec<u8> {
    let mut f = vec![
        0x52, 0x54, 0x00, 0x11, 0x22, 0x33, 0x52, 0x54, 0x00, 0x44, 0x55, marker,
    ];
    f.extend_from_slice(&ETH_P_TEST.to_be_bytes());
    f.extend((0..len.saturating_sub(14)).map(|i| (i as u8) ^ marker));
    f
}

/// Runs `f` on a thread whose effective capabilities lack CAP_NET_ADMIN
/// (capabilities are per thread for the raw capset syscall).
pub fn without_net_admin<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget with a v3 header writes two Data structs into `data`.
        let rc =
            unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
        const CAP_NET_ADMIN: u32 = 12;
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        // SAFETY: capset with a v3 header reads two Data structs; it only
        // changes this thread's capabilities.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}
