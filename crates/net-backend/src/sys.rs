//! Small Linux helpers shared by the tap and bridge backends: `struct ifreq`,
//! interface-name checks, interface flags and look-ups.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::BackendError;

/// `IFNAMSIZ`: interface names are at most 15 bytes plus the NUL.
pub(crate) const IFNAMSIZ: usize = 16;

/// `SIOCBRADDIF` (linux/sockios.h): enslave `ifr_ifindex` to the bridge `ifr_name`.
pub(crate) const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// `struct ifreq`: a name and a 24-byte union (the largest member is a
/// `struct ifmap` or a pointer-sized member, hence the 8-byte alignment).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    /// An all-zero request for `name` (which must have passed [`check_ifname`]
    /// or be empty; longer input is cut so that the NUL always fits).
    pub(crate) fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        let n = name.len().min(IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        req
    }

    /// The name the kernel wrote back (up to the first NUL).
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// `ifr_flags` (a `short`).
    pub(crate) fn flags(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    pub(crate) fn set_flags(&mut self, flags: i16) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    /// `ifr_ifindex` (an `int`).
    pub(crate) fn set_ifindex(&mut self, index: i32) {
        self.data[..4].copy_from_slice(&index.to_ne_bytes());
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut IfReq {
        self
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, so
/// that a bad name is reported as such rather than as an ioctl's EINVAL.
pub(crate) fn check_ifname(name: &str) -> Result<(), BackendError> {
    let bad = |reason: &'static str| {
        Err(BackendError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// The index of interface `name` in this network namespace, if it exists.
pub(crate) fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The tun/tap flags of interface `name` from sysfs (`tun_flags`): `None` when
/// the interface is not a tun/tap or sysfs cannot tell.
pub(crate) fn sysfs_tun_flags(name: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("tun_flags")).ok()?;
    let text = text.trim();
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

/// Whether sysfs shows interface `name` (false also when sysfs is absent).
pub(crate) fn sysfs_has_iface(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether sysfs shows `name` as a bridge.
pub(crate) fn sysfs_is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// An `AF_INET` datagram socket, the handle for interface ioctls.
pub(crate) fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Issues a socket ioctl that takes a `struct ifreq`.
pub(crate) fn ifreq_ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut IfReq,
) -> io::Result<()> {
    // SAFETY: every request passed here (SIOCGIFFLAGS, SIOCSIFFLAGS,
    // SIOCBRADDIF) reads and/or writes one `struct ifreq`, and `req` is a
    // valid, exclusively borrowed `struct ifreq` of the kernel's size.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears `IFF_UP` on interface `name`.
pub(crate) fn set_iface_up(name: &str, up: bool) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = IfReq::new(name);
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS as _, &mut req)?;
    let flags = req.flags();
    let up_flag = libc::IFF_UP as i16;
    let wanted = if up {
        flags | up_flag
    } else {
        flags & !up_flag
    };
    if wanted == flags {
        return Ok(());
    }
    req.set_flags(wanted);
    ifreq_ioctl(&sock, libc::SIOCSIFFLAGS as _, &mut req)
}

/// Whether interface `name` has `IFF_UP`.
pub(crate) fn iface_is_up(name: &str) -> io::Result<bool> {
    let sock = ioctl_socket()?;
    let mut req = IfReq::new(name);
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS as _, &mut req)?;
    Ok(req.flags() & libc::IFF_UP as i16 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_and_names() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let mut r = IfReq::new("tap0");
        assert_eq!(r.name(), "tap0");
        r.set_flags(-2);
        assert_eq!(r.flags(), -2);
        assert_eq!(IfReq::new("0123456789abcdefXYZ").name(), "0123456789abcde");
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("tap0").is_ok());
        assert!(check_ifname("tapir%d").is_ok());
        assert!(check_ifname("0123456789abcde").is_ok());
        for bad in ["", "0123456789abcdef", ".", "..", "a/b", "a:b", "a b"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(ifindex("lo").is_some());
        assert!(ifindex("no-such-if-xyz").is_none());
    }
}
