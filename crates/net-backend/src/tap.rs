//! The tap backend: frames go to and come from a Linux tap interface.
//!
//! With `IFF_VNET_HDR` every frame on the tap fd is preceded by a 12-byte
//! `virtio_net_hdr_v1` (we set `TUNSETVNETHDRSZ` to 12), which is exactly
//! [`NetHdr::to_bytes`], so offloads pass through untouched.
//!
//! Lifetime: tapir never sets `TUNSETPERSIST`. A tap it creates lives as
//! long as the fd, so it disappears however the process ends (exit,
//! SIGTERM, SIGKILL, guest poweroff). A persistent tap that existed before
//! is only attached to, and left as it was on close.

use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::BackendError;
use crate::guest_buf::{self, GuestBuf};
use crate::hdr::{DATA_VALID, NET_HDR_LEN};
use crate::sys::{self, IfReq};
use crate::{BackendStats, NetBackend, NetHdr, Offloads};

/// `TUN_TYPE_MASK` of the tun flags.
const TUN_TYPE_MASK: i32 = 0x000f;
/// The most iovecs one `writev` takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// How to open a tap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface: attached to if it exists, created otherwise. `None`
    /// or empty lets the kernel pick `tapN`; `%d` in the name is filled by
    /// the kernel too.
    pub ifname: Option<String>,
    /// An already open tap fd (e.g. inherited from a management process).
    /// An fd that turns out not to be a tap (or not the tap named in
    /// `ifname`) is left open and untouched; once verified, the backend owns
    /// it and closes it on drop (or if a later setup step fails).
    pub fd: Option<RawFd>,
    /// Carry offloads (`IFF_VNET_HDR`) when the kernel supports it.
    pub vnet_hdr: bool,
}

/// A tap interface as a [`NetBackend`].
#[derive(Debug)]
pub struct TapBackend {
    fd: OwnedFd,
    ifname: String,
    /// A 12-byte header precedes each frame on the fd.
    wire_hdr: bool,
    /// Offloads are offered (`wire_hdr` and asked for).
    offload_capable: bool,
    created: bool,
    enabled: Offloads,
    stats: BackendStats,
    link_down_drops: u64,
}

/// `ioctl(fd, request, &mut arg)` for the tun requests, which take a pointer
/// to an `int`-sized value or to a `struct ifreq`.
///
/// # Safety
/// `request` must read and/or write at most one `T` through its argument.
unsafe fn tun_ioctl<T>(fd: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: the caller guarantees the request accesses one `T`, and `arg`
    // is a valid exclusive reference for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(fd, request, value)` for tun requests that take an `int` by value.
fn tun_ioctl_val(fd: &OwnedFd, request: libc::c_ulong, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (no pointer is
    // dereferenced); the fd is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, value) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an int by value and touches no memory.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn offload_flags(o: &Offloads) -> libc::c_ulong {
    let mut f = 0;
    if o.csum {
        f |= libc::TUN_F_CSUM;
    }
    if o.tso4 {
        f |= libc::TUN_F_TSO4;
    }
    if o.tso6 {
        f |= libc::TUN_F_TSO6;
    }
    if o.tso_ecn {
        f |= libc::TUN_F_TSO_ECN;
    }
    f as libc::c_ulong
}

impl TapBackend {
    /// Opens a tap: adopts `cfg.fd`, or opens `/dev/net/tun` and attaches to
    /// or creates `cfg.ifname`. A tap created here is brought up and
    /// vanishes when the backend is dropped. Offloads start disabled (plain
    /// frames from the kernel) until [`NetBackend::set_offloads`].
    pub fn open(cfg: TapConfig) -> Result<TapBackend, BackendError> {
        match cfg.fd {
            Some(fd) => Self::adopt(fd, cfg.ifname.as_deref(), cfg.vnet_hdr),
            None => Self::create(cfg.ifname.as_deref().unwrap_or(""), cfg.vnet_hdr),
        }
    }

    fn create(name: &str, vnet_hdr: bool) -> Result<TapBackend, BackendError> {
        if !name.is_empty() {
            sys::check_ifname(name)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => BackendError::PermissionDenied {
                    action: "opening /dev/net/tun".into(),
                },
                _ => BackendError::NoTunDevice { source: e },
            })?;
        let fd = OwnedFd::from(file);

        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one `unsigned int`.
        unsafe { tun_ioctl(&fd, libc::TUNGETFEATURES as _, &mut features) }
            .map_err(|e| BackendError::sys("TUNGETFEATURES", "/dev/net/tun", e))?;
        let wire_hdr = vnet_hdr && features & libc::IFF_VNET_HDR as libc::c_uint != 0;

        // A name with a format ("tap%d") or no name always makes a new one.
        let existed = !name.is_empty() && !name.contains('%') && sys::ifindex(name).is_some();
        if existed {
            match sys::sysfs_tun_flags(name) {
                Some(f) if f as i32 & TUN_TYPE_MASK == libc::IFF_TAP => {}
                Some(_) => return Err(BackendError::NotATap { name: name.into() }),
                None if sys::sysfs_has_iface(name) => {
                    return Err(BackendError::NotATap { name: name.into() })
                }
                None => {} // no sysfs: let TUNSETIFF tell
            }
        }

        let mut req = IfReq::new(name);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if wire_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        req.set_flags(flags as i16);
        // SAFETY: TUNSETIFF reads and writes back one `struct ifreq`.
        if let Err(e) = unsafe { tun_ioctl(&fd, libc::TUNSETIFF as _, &mut req) } {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => BackendError::PermissionDenied {
                    action: if existed {
                        format!("attaching to tap '{name}'")
                    } else {
                        "creating a tap".into()
                    },
                },
                Some(libc::EBUSY) => BackendError::Busy { name: name.into() },
                Some(libc::EINVAL) if existed => BackendError::NotATap { name: name.into() },
                _ => BackendError::sys("TUNSETIFF", name, e),
            });
        }
        let ifname = req.name();
        let mut tap = TapBackend {
            fd,
            ifname,
            wire_hdr,
            offload_capable: wire_hdr,
            created: !existed,
            enabled: Offloads::default(),
            stats: BackendStats::default(),
            link_down_drops: 0,
        };
        tap.setup_hdr_and_offloads()?;
        if tap.created {
            tap.bring_up()
                .map_err(|e| BackendError::sys("SIOCSIFFLAGS", &tap.ifname, e))?;
        }
        Ok(tap)
    }

    fn adopt(raw: RawFd, name: Option<&str>, vnet_hdr: bool) -> Result<TapBackend, BackendError> {
        let not_tap = |reason: String| BackendError::FdNotATap { fd: raw, reason };
        // SAFETY: F_GETFD only checks that `raw` is open; no memory is touched.
        if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(not_tap(io::Error::last_os_error().to_string()));
        }
        let mut req = IfReq::new("");
        // SAFETY: `raw` is open (checked above) and TUNGETIFF writes one
        // `struct ifreq`; on a non-tun fd the kernel answers an error and
        // writes nothing.
        let rc = unsafe { libc::ioctl(raw, libc::TUNGETIFF as _, req.as_mut_ptr()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(not_tap(match e.raw_os_error() {
                Some(libc::EBADFD) => "a tun fd not attached to any interface".into(),
                Some(libc::ENOTTY) | Some(libc::EINVAL) => "not a tun/tap device".into(),
                _ => e.to_string(),
            }));
        }
        let flags = req.flags() as i32;
        if flags & TUN_TYPE_MASK != libc::IFF_TAP {
            return Err(not_tap(format!(
                "'{}' is a tun (layer 3), not a tap",
                req.name()
            )));
        }
        let ifname = req.name();
        if let Some(want) = name.filter(|n| !n.is_empty()) {
            if want != ifname {
                return Err(BackendError::FdNameMismatch {
                    fd: raw,
                    expected: want.into(),
                    actual: ifname,
                });
            }
        }
        // SAFETY: `raw` is an open tap fd that the configuration hands over
        // to us; from here on it is owned (and closed) only by this backend.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_nonblocking(&fd).map_err(|e| BackendError::sys("F_SETFL O_NONBLOCK", &ifname, e))?;
        let wire_hdr = flags & libc::IFF_VNET_HDR != 0;
        let mut tap = TapBackend {
            fd,
            ifname,
            wire_hdr,
            offload_capable: wire_hdr && vnet_hdr,
            created: false,
            enabled: Offloads::default(),
            stats: BackendStats::default(),
            link_down_drops: 0,
        };
        tap.setup_hdr_and_offloads()?;
        Ok(tap)
    }

    /// Sets the 12-byte header size and disables offloads.
    fn setup_hdr_and_offloads(&mut self) -> Result<(), BackendError> {
        if self.wire_hdr {
            let mut size = NET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one `int`.
            unsafe { tun_ioctl(&self.fd, libc::TUNSETVNETHDRSZ as _, &mut size) }
                .map_err(|e| BackendError::sys("TUNSETVNETHDRSZ", &self.ifname, e))?;
        }
        tun_ioctl_val(&self.fd, libc::TUNSETOFFLOAD as _, 0)
            .map_err(|e| BackendError::sys("TUNSETOFFLOAD", &self.ifname, e))
    }

    /// The interface name (as the kernel named it).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether this backend created the interface (it then vanishes on drop).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Whether frames on the fd carry the 12-byte offload header.
    pub fn vnet_hdr(&self) -> bool {
        self.wire_hdr
    }

    /// The offloads last enabled with [`NetBackend::set_offloads`].
    pub fn enabled_offloads(&self) -> Offloads {
        self.enabled
    }

    /// Frames dropped because the interface was down (also in `tx_errors`).
    pub fn link_down_drops(&self) -> u64 {
        self.link_down_drops
    }

    /// Sets `IFF_UP` on the interface (done by [`TapBackend::open`] for taps it creates).
    pub fn bring_up(&self) -> io::Result<()> {
        sys::set_iface_up(&self.ifname, true)
    }

    /// Clears `IFF_UP`; frames sent meanwhile are dropped (see [`NetBackend::send`]).
    pub fn bring_down(&self) -> io::Result<()> {
        sys::set_iface_up(&self.ifname, false)
    }

    /// Whether the interface is administratively up.
    pub fn is_up(&self) -> io::Result<bool> {
        sys::iface_is_up(&self.ifname)
    }

    fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        retry_eintr(|| {
            // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on
            // Unix, the slices borrow live buffers for the whole call, and
            // the count is at most IOV_MAX (callers ensure it).
            unsafe {
                libc::writev(
                    self.fd.as_raw_fd(),
                    bufs.as_ptr().cast(),
                    bufs.len() as libc::c_int,
                )
            }
        })
    }

    fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        retry_eintr(|| {
            // SAFETY: `IoSliceMut` is ABI-compatible with `struct iovec`; the
            // buffers are exclusively borrowed for the call; 2 iovecs at most.
            unsafe {
                libc::readv(
                    self.fd.as_raw_fd(),
                    bufs.as_ptr().cast(),
                    bufs.len() as libc::c_int,
                )
            }
        })
    }

    /// writev over raw iovecs (at most IOV_MAX; callers ensure it).
    ///
    /// # Safety
    /// Every iovec must describe mapped, readable memory for the call.
    unsafe fn writev_raw(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller guarantees the iovecs; the count fits an int.
        retry_eintr(|| unsafe {
            libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int)
        })
    }

    /// readv over raw iovecs (at most IOV_MAX; callers ensure it).
    ///
    /// # Safety
    /// Every iovec must describe mapped, writable memory that nothing else
    /// reads as a Rust reference during the call.
    unsafe fn readv_raw(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller guarantees the iovecs; the count fits an int.
        retry_eintr(|| unsafe {
            libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int)
        })
    }

    /// The header iovec (empty without a vnet header) and guest buffers,
    /// in `iov`; false when there are too many for one call.
    fn guest_iovecs(
        &self,
        head: libc::iovec,
        bufs: &[GuestBuf],
        iov: &mut Vec<libc::iovec>,
    ) -> bool {
        if bufs.len() >= IOV_MAX {
            return false;
        }
        iov.clear();
        iov.push(head);
        iov.extend(bufs.iter().filter(|b| !b.is_empty()).map(GuestBuf::iovec));
        true
    }

    fn send_guest_inner(&self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        if !self.wire_hdr && !hdr.is_plain() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame needs checksum/segmentation offload but the tap has no vnet header",
            ));
        }
        let mut hdr_bytes = hdr.to_bytes();
        let hdr_len = if self.wire_hdr { NET_HDR_LEN } else { 0 };
        let head = libc::iovec {
            iov_base: hdr_bytes.as_mut_ptr().cast(),
            iov_len: hdr_len,
        };
        let mut iov = Vec::with_capacity(frame.len() + 1);
        if !self.guest_iovecs(head, frame, &mut iov) {
            let mut flat = Vec::new();
            guest_buf::gather(frame, &mut flat);
            return self.send_inner(hdr, &[IoSlice::new(&flat)]);
        }
        // SAFETY: the header is a live local array; the guest buffers are
        // mapped for as long as they are used (GuestBuf's contract); the
        // kernel only reads them.
        let written = unsafe { self.writev_raw(&iov)? };
        Ok(written.saturating_sub(hdr_len))
    }

    fn send_inner(&self, hdr: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        let hdr_bytes = hdr.to_bytes();
        let hdr_len = if self.wire_hdr { NET_HDR_LEN } else { 0 };
        if !self.wire_hdr && !hdr.is_plain() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame needs checksum/segmentation offload but the tap has no vnet header",
            ));
        }
        let head = IoSlice::new(&hdr_bytes[..hdr_len]);
        // The kernel takes one frame per write: the whole gather list must
        // go in one writev. Few slices: on the stack; too many: coalesce.
        const INLINE: usize = 8;
        let written = if frame.len() < INLINE {
            let mut bufs = [IoSlice::new(&[]); INLINE];
            bufs[0] = head;
            bufs[1..=frame.len()].copy_from_slice(frame);
            self.writev(&bufs[..=frame.len()])?
        } else if frame.len() < IOV_MAX {
            let mut bufs = Vec::with_capacity(frame.len() + 1);
            bufs.push(head);
            bufs.extend_from_slice(frame);
            self.writev(&bufs)?
        } else {
            let flat: Vec<u8> = frame.iter().flat_map(|s| s.iter().copied()).collect();
            self.writev(&[head, IoSlice::new(&flat)])?
        };
        Ok(written.saturating_sub(hdr_len))
    }
}

impl AsFd for TapBackend {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl NetBackend for TapBackend {
    fn describe(&self) -> String {
        format!("tap {}", self.ifname)
    }

    /// Writes one frame. Errors other than WouldBlock mean the kernel
    /// refused the frame (it is consumed; `tx_errors` counts it).
    ///
    /// An interface that is administratively down answers EIO: the frame is
    /// counted in `tx_errors` (and [`TapBackend::link_down_drops`]) and
    /// `Ok` is returned, as a NIC on real hardware with its link down
    /// discards frames instead of stalling the guest's queue.
    fn send(&mut self, hdr: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.send_inner(hdr, frame) {
            Ok(n) => {
                self.stats.tx_frames += 1;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                self.stats.tx_errors += 1;
                self.link_down_drops += 1;
                Ok(frame.iter().map(|s| s.len()).sum())
            }
            Err(e) => {
                self.stats.tx_errors += 1;
                Err(e)
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)> {
        let (mut hdr, len) = if self.wire_hdr {
            let mut hdr_bytes = [0u8; NET_HDR_LEN];
            let mut bufs = [IoSliceMut::new(&mut hdr_bytes), IoSliceMut::new(buf)];
            let n = self.readv(&mut bufs)?;
            if n < NET_HDR_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "tap read shorter than its vnet header",
                ));
            }
            (NetHdr::from_bytes(&hdr_bytes), n - NET_HDR_LEN)
        } else {
            let n = self.readv(&mut [IoSliceMut::new(buf)])?;
            (NetHdr::default(), n)
        };
        if !self.enabled.csum {
            // The kernel marks checksum-verified frames DATA_VALID even with
            // offloads off; a guest that did not negotiate it must not see it.
            hdr.flags &= !DATA_VALID;
        }
        self.stats.rx_frames += 1;
        Ok((hdr, len))
    }

    fn send_guest(&mut self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        match self.send_guest_inner(hdr, frame) {
            Ok(n) => {
                self.stats.tx_frames += 1;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                self.stats.tx_errors += 1;
                self.link_down_drops += 1;
                Ok(guest_buf::total_len(frame))
            }
            Err(e) => {
                self.stats.tx_errors += 1;
                Err(e)
            }
        }
    }

    /// Reads one frame straight into guest memory. The kernel drops a frame
    /// that does not fit (the read fails with EFAULT or EINVAL): callers
    /// give room for the largest one.
    fn recv_guest(&mut self, bufs: &[GuestBuf]) -> io::Result<(NetHdr, usize)> {
        let mut hdr_bytes = [0u8; NET_HDR_LEN];
        let hdr_len = if self.wire_hdr { NET_HDR_LEN } else { 0 };
        let head = libc::iovec {
            iov_base: hdr_bytes.as_mut_ptr().cast(),
            iov_len: hdr_len,
        };
        let mut iov = Vec::with_capacity(bufs.len() + 1);
        if !self.guest_iovecs(head, bufs, &mut iov) {
            return Err(guest_buf::too_small());
        }
        // SAFETY: the header is a live local array; the guest buffers are
        // mapped and writable for as long as they are used (GuestBuf's
        // contract) and are never Rust references.
        let n = unsafe { self.readv_raw(&iov)? };
        if n < hdr_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tap read shorter than its vnet header",
            ));
        }
        let mut hdr = if self.wire_hdr {
            NetHdr::from_bytes(&hdr_bytes)
        } else {
            NetHdr::default()
        };
        if !self.enabled.csum {
            hdr.flags &= !DATA_VALID;
        }
        self.stats.rx_frames += 1;
        Ok((hdr, n - hdr_len))
    }

    fn rx_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn tx_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn offloads(&self) -> Offloads {
        if self.offload_capable {
            Offloads::ALL
        } else {
            Offloads::default()
        }
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        offloads.check_against(&self.offloads())?;
        tun_ioctl_val(&self.fd, libc::TUNSETOFFLOAD as _, offload_flags(&offloads))?;
        self.enabled = offloads;
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }
}

/// Runs a read/write-style system call until it is not interrupted by a signal.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Implements [`NetBackend`](crate::NetBackend) for a backend that is a
/// tap of tapir's own (field `tap`) plus what it was made for (a bridge
/// port, a macvtap): everything goes to the tap but `describe`, whose body
/// is given with `self` named by the caller.
macro_rules! net_backend_over_tap {
    ($ty:ty, |$this:ident| $describe:expr) => {
        impl $crate::NetBackend for $ty {
            fn describe(&self) -> String {
                let $this = self;
                $describe
            }

            fn send(
                &mut self,
                hdr: &$crate::NetHdr,
                frame: &[std::io::IoSlice<'_>],
            ) -> std::io::Result<usize> {
                self.tap.send(hdr, frame)
            }

            fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<($crate::NetHdr, usize)> {
                self.tap.recv(buf)
            }

            fn send_guest(
                &mut self,
                hdr: &$crate::NetHdr,
                frame: &[$crate::GuestBuf],
            ) -> std::io::Result<usize> {
                self.tap.send_guest(hdr, frame)
            }

            fn recv_guest(
                &mut self,
                bufs: &[$crate::GuestBuf],
            ) -> std::io::Result<($crate::NetHdr, usize)> {
                self.tap.recv_guest(bufs)
            }

            fn rx_fd(&self) -> std::os::fd::RawFd {
                self.tap.rx_fd()
            }

            fn tx_fd(&self) -> std::os::fd::RawFd {
                self.tap.tx_fd()
            }

            fn offloads(&self) -> $crate::Offloads {
                self.tap.offloads()
            }

            fn set_offloads(&mut self, offloads: $crate::Offloads) -> std::io::Result<()> {
                self.tap.set_offloads(offloads)
            }

            fn stats(&self) -> $crate::BackendStats {
                self.tap.stats()
            }
        }
    };
}
pub(crate) use net_backend_over_tap;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flag_bits() {
        assert_eq!(offload_flags(&Offloads::default()), 0);
        assert_eq!(offload_flags(&Offloads::ALL), 0x0f);
        assert_eq!(
            offload_flags(&Offloads {
                csum: true,
                tso6: true,
                ..Default::default()
            }),
            0x05
        );
    }

    #[test]
    fn bad_fd_is_left_alone() {
        let e = TapBackend::open(TapConfig {
            fd: Some(-1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, BackendError::FdNotATap { fd: -1, .. }), "{e}");
        // A real non-tap fd: the error names it and the fd stays open.
        let f = std::fs::File::open("/dev/null").unwrap();
        let raw = f.as_raw_fd();
        let e = TapBackend::open(TapConfig {
            fd: Some(raw),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("is not an open tap"), "{e}");
        // SAFETY: F_GETFD on a descriptor number touches no memory.
        assert!(unsafe { libc::fcntl(raw, libc::F_GETFD) } >= 0);
        drop(f);
    }

    #[test]
    fn invalid_name_is_reported() {
        let e = TapBackend::open(TapConfig {
            ifname: Some("much-too-long-name".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid interface name 'much-too-long-name': longer than 15 bytes"
        );
    }
}
