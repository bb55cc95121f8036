//! The passthrough backend's direct attach: a macvtap of tapir's own on a
//! host NIC, used through its character device `/dev/tapN` as a tap.
//!
//! tapir names its macvtaps `tmv<pid>n<k>` and deletes them when the
//! backend is dropped (exit, signals, guest death). A macvtap outlives a
//! process killed with SIGKILL, so every open first deletes the `tmv*`
//! links whose process is gone.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::error::BackendError;
use crate::rtnl;
pub use crate::rtnl::Mode;
use crate::sys;
use crate::tap::{net_backend_over_tap, TapBackend, TapConfig};

/// The prefix of the macvtaps tapir creates.
pub const NAME_PREFIX: &str = "tmv";

/// The k-th macvtap of this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A macvtap tapir created, with the device node tapir made for it, if it
/// had to: deleted once, by [`MacvtapLink::delete`] or on the last drop.
#[derive(Debug)]
struct OwnedMacvtap {
    name: String,
    index: u32,
    node: Option<PathBuf>,
    deleted: AtomicBool,
}

impl OwnedMacvtap {
    fn delete(&self) {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = rtnl::delete_link(self.index) {
            log::warn!("macvtap {}: deleting it: {e}", self.name);
        }
        if let Some(node) = &self.node {
            let _ = fs::remove_file(node);
        }
    }
}

impl Drop for OwnedMacvtap {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A handle on a backend's macvtap, for the thread that may delete it:
/// a backend is dropped by whichever thread holds it last (a NIC worker,
/// a vCPU that reset the device), whose seccomp filter does not let it
/// speak rtnetlink, so tapir's main thread deletes the link at exit
/// instead; later drops then do nothing.
#[derive(Debug, Clone)]
pub struct MacvtapLink(Arc<OwnedMacvtap>);

impl MacvtapLink {
    /// Deletes the macvtap now (once; no-op afterwards).
    pub fn delete(&self) {
        self.0.delete();
    }
}

/// A NIC attached straight to a host NIC through a macvtap.
#[derive(Debug)]
pub struct MacvtapBackend {
    host: String,
    mode: Mode,
    // Declared before `link`, so dropped first: the fd is closed before
    // the link is deleted.
    tap: TapBackend,
    link: Arc<OwnedMacvtap>,
}

/// The macvtaps named like ours whose process is gone.
fn stale_links() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let Some(pid) = name
                .strip_prefix(NAME_PREFIX)
                .and_then(|rest| rest.split('n').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                return false;
            };
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
        .collect()
}

/// Deletes the macvtaps a tapir killed with SIGKILL left behind.
pub fn remove_stale() {
    for name in stale_links() {
        let Some(index) = sys::ifindex(&name) else {
            continue;
        };
        match rtnl::delete_link(index) {
            Ok(()) => log::info!("removed macvtap {name}, left by a tapir that is gone"),
            Err(e) => log::warn!("macvtap {name} (left by a tapir that is gone): deleting it: {e}"),
        }
    }
}

/// The device node to open for macvtap `name` (index `index`): `/dev/tapN`
/// when it is this macvtap's (the device number sysfs gives), else one
/// made here from that number. Interface indexes are per network
/// namespace, so `/dev/tapN`, made by udev in another namespace or left
/// over, may be another macvtap's; and without udev there is none.
/// Returns the path, and whether it was made here.
fn device_node(name: &str, index: u32) -> Result<(PathBuf, bool), BackendError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dev_file = format!("/sys/class/net/{name}/macvtap/tap{index}/dev");
    let dev = fs::read_to_string(&dev_file)
        .map_err(|e| BackendError::sys("reading the device number", &dev_file, e))?;
    let (major, minor) = dev
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            BackendError::sys(
                "reading the device number",
                &dev_file,
                io::Error::new(io::ErrorKind::InvalidData, format!("'{}'", dev.trim())),
            )
        })?;
    let rdev = libc::makedev(major, minor);
    let path = PathBuf::from(format!("/dev/tap{index}"));
    let ours = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rdev)
    };
    if ours(&path) {
        return Ok((path, false));
    }
    let path = if path.exists() {
        // Someone else's: a name of our own beside it.
        PathBuf::from(format!("/dev/tapir-tap{index}.{}", std::process::id()))
    } else {
        path
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| BackendError::sys("mknod", name, io::Error::other(e)))?;
    // SAFETY: mknod(2) reads the NUL-terminated path; no memory of ours is
    // written.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o600, rdev) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // Made meanwhile (udev): used if it is this macvtap's.
        if e.raw_os_error() == Some(libc::EEXIST) && ours(&path) {
            return Ok((path, false));
        }
        return Err(BackendError::sys_or_perm(
            "mknod",
            &path.to_string_lossy(),
            format!("making {}", path.display()),
            e,
        ));
    }
    Ok((path, true))
}

impl MacvtapBackend {
    /// Creates a macvtap on host NIC `host` with the NIC's `mac` and
    /// `mode`, brings it up and opens it.
    pub fn open(host: &str, mac: [u8; 6], mode: Mode) -> Result<MacvtapBackend, BackendError> {
        sys::check_ifname(host)?;
        let parent = sys::ifindex(host)
            .ok_or_else(|| BackendError::NoSuchInterface { name: host.into() })?;
        let sysfs = Path::new("/sys/class/net").join(host);
        if sysfs.join("brport").exists() {
            return Err(BackendError::BridgePort { name: host.into() });
        }
        if sysfs.join("bridge").exists() {
            return Err(BackendError::NotAHostNic {
                name: host.into(),
                what: "a bridge (use net=bridge,br=NAME)",
            });
        }
        if sysfs.join("macvtap").exists() {
            return Err(BackendError::NotAHostNic {
                name: host.into(),
                what: "a macvtap (name the host NIC it sits on)",
            });
        }
        remove_stale();
        let name = format!(
            "{NAME_PREFIX}{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        rtnl::create_macvtap(&name, parent, mac, mode).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => BackendError::PermissionDenied {
                action: format!("creating a macvtap on '{host}'"),
            },
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EBUSY) => {
                BackendError::ModeRefused {
                    name: host.into(),
                    mode: mode.name(),
                    source: e,
                }
            }
            _ => BackendError::sys("creating a macvtap", host, e),
        })?;
        let index = sys::ifindex(&name).ok_or_else(|| {
            BackendError::sys(
                "if_nametoindex",
                &name,
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        let mut link = OwnedMacvtap {
            name: name.clone(),
            index,
            node: None,
            deleted: AtomicBool::new(false),
        };
        let (path, made) = device_node(&name, index)?;
        if made {
            link.node = Some(path.clone());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                BackendError::sys_or_perm(
                    "open",
                    &path.to_string_lossy(),
                    format!("opening {}", path.display()),
                    e,
                )
            })?;
        // A macvtap's fd speaks the tap ioctls (TUNGETIFF, TUNSETVNETHDRSZ,
        // TUNSETOFFLOAD); the tap backend takes it over and owns it.
        let tap = TapBackend::open(TapConfig {
            ifname: Some(name.clone()),
            fd: Some(file.into_raw_fd()),
            vnet_hdr: true,
        })?;
        // The interface is the guest's, not the host's: the host must not
        // send its own IPv6 autoconfiguration from it, with the guest's MAC.
        let ipv6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if Path::new(&ipv6).exists() {
            if let Err(e) = fs::write(&ipv6, "1") {
                log::warn!("macvtap {name}: turning the host's IPv6 off on it: {e}");
            }
        }
        sys::set_iface_up(&name, true).map_err(|e| BackendError::sys("SIOCSIFFLAGS", &name, e))?;
        Ok(MacvtapBackend {
            host: host.into(),
            mode,
            tap,
            link: Arc::new(link),
        })
    }

    /// The macvtap's name.
    pub fn ifname(&self) -> &str {
        &self.link.name
    }

    /// The handle that deletes the macvtap.
    pub fn link(&self) -> MacvtapLink {
        MacvtapLink(self.link.clone())
    }

    /// The host NIC it sits on.
    pub fn host(&self) -> &str {
        &self.host
    }
}

net_backend_over_tap!(MacvtapBackend, |m| format!(
    "macvtap {} on {} (mode {})",
    m.link.name,
    m.host,
    m.mode.name()
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unsuitable_host_nic_is_one_clear_error() {
        let mac = [0x02, 0, 0, 0, 0, 1];
        let e = MacvtapBackend::open("nosuchnic0", mac, Mode::Bridge).unwrap_err();
        assert_eq!(e.to_string(), "host NIC 'nosuchnic0' does not exist");
        let e = MacvtapBackend::open("bad/name", mac, Mode::Bridge).unwrap_err();
        assert!(matches!(e, BackendError::InvalidName { .. }), "{e}");
    }
}
