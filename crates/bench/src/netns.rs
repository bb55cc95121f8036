//! The benchmark's network namespaces: the VMMs' (with the tap of
//! `--net tap` and the macvtaps' parent veth of `--net passthrough`) and,
//! for passthrough, the "namespace host" at the veth's far end, where the
//! host side of the measurements runs (a macvtap guest reaches the
//! outside of its parent, not the host that owns it).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;

use crate::guest::{GUEST_MAC, HOST_IP, TAP};
use crate::plan::Net;
use crate::Error;

/// The macvtaps' parent (the VMMs' namespace), its veth peer (the
/// namespace host's, with [`HOST_IP`]) and the macvtap made for QEMU.
pub const PT_PARENT: &str = "tbv0";
pub const PT_PEER: &str = "tbv1";
pub const QEMU_MACVTAP: &str = "tbq0";

/// The benchmark's namespaces; deleted on drop.
pub struct Netns {
    pub name: String,
    /// The namespace host (`--net passthrough` only).
    pub host: Option<String>,
}

fn ip(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running ip", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            what: "setting up the network namespace",
            detail: format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// The interface names in `ip -o link show` output ("5: tbq0@tbv0: <...").
pub fn link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// "MAJOR:MINOR" as sysfs writes a device number.
pub fn dev_numbers(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The benchmark's namespaces in `ip netns list` output whose tapir has
/// gone (`alive` says whether a process id still runs): left by a
/// benchmark that was killed (SIGKILL, or Ctrl-C on a hardware host before
/// its destructors ran).
pub fn stale_namespaces(list: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            let pid = name
                .strip_prefix("tapir-bench-host-")
                .or_else(|| name.strip_prefix("tapir-bench-"));
            pid.and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p != std::process::id() && !alive(p))
        })
        .map(str::to_string)
        .collect()
}

/// Deletes what [`stale_namespaces`] finds (deleting a namespace deletes
/// its taps, veths and macvtaps with it), each with a note on stderr.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    for ns in stale_namespaces(&list, alive) {
        eprintln!(
            "tapir bench: removing network namespace {ns}, left by a benchmark that was killed"
        );
        if let Err(e) = ip(&["netns", "del", &ns]) {
            log::warn!("{e}");
        }
    }
}

impl Netns {
    /// The namespaces for the backends in `nets`: lo up; the tap
    /// (192.168.150.1/24) for tap; for passthrough the veth pair, the
    /// parent up without an address, the peer with 192.168.150.1/24 in
    /// the namespace host.
    pub fn create(nets: &[Net]) -> Result<Netns, Error> {
        remove_stale();
        let name = format!("tapir-bench-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let mut ns = Netns { name, host: None };
        let n = ns.name.clone();
        ip(&["-n", &n, "link", "set", "lo", "up"])?;
        let host_cidr = format!("{HOST_IP}/24");
        if nets.contains(&Net::Tap) {
            ip(&["-n", &n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
            ip(&["-n", &n, "addr", "add", &host_cidr, "dev", TAP])?;
            ip(&["-n", &n, "link", "set", TAP, "up"])?;
        }
        if nets.contains(&Net::Passthrough) {
            let h = format!("tapir-bench-host-{}", std::process::id());
            ip(&["netns", "add", &h])?;
            ns.host = Some(h.clone());
            ip(&["-n", &h, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &n, "link", "add", PT_PARENT, "type", "veth", "peer", "name", PT_PEER,
                "netns", &h,
            ])?;
            ip(&["-n", &n, "link", "set", PT_PARENT, "up"])?;
            ip(&["-n", &h, "addr", "add", &host_cidr, "dev", PT_PEER])?;
            ip(&["-n", &h, "link", "set", PT_PEER, "up"])?;
        }
        Ok(ns)
    }

    /// Where the host side of the measurements (iperf3, the
    /// request/response client, the power-off signal) runs for `net`.
    pub fn client(&self, net: Net) -> &str {
        match (net, &self.host) {
            (Net::Passthrough, Some(h)) => h,
            _ => &self.name,
        }
    }

    /// Runs `f` on a thread that has entered namespace `ns` (sockets it
    /// opens live there).
    pub fn run_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let path = PathBuf::from("/run/netns").join(ns);
        let handle = std::thread::spawn(move || {
            let fd = File::open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("entering the network namespace", e.into()))?;
            f()
        });
        handle.join().unwrap_or_else(|_| {
            Err(Error::Command {
                what: "a namespace thread",
                detail: "panicked".into(),
            })
        })
    }

    /// `ip netns exec NS PROG` (ARGS to add); `ip` execs PROG, so the
    /// child's pid is PROG's.
    pub fn command_in(ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }

    /// [`Self::command_in`] the VMMs' namespace.
    pub fn command(&self, prog: &str) -> Command {
        Self::command_in(&self.name, prog)
    }

    /// A macvtap for QEMU's `-netdev tap,fd=N` (tapir makes its own): on
    /// [`PT_PARENT`], mode bridge, the guest's MAC, IPv6 off on the host
    /// side (as tapir does on its own), its /dev/tapN open read-write and
    /// inheritable. Deletes any macvtap left in the namespace first
    /// (tapir's, after a kill: the same MAC would be refused).
    pub fn qemu_macvtap(&self) -> Result<Macvtap, Error> {
        let n = self.name.as_str();
        for l in link_names(&ip(&["-n", n, "-o", "link", "show", "type", "macvtap"])?) {
            let _ = ip(&["-n", n, "link", "del", &l]);
        }
        ip(&[
            "-n",
            n,
            "link",
            "add",
            "link",
            PT_PARENT,
            "name",
            QEMU_MACVTAP,
            "type",
            "macvtap",
            "mode",
            "bridge",
        ])?;
        // From here on the macvtap goes when the guard does.
        let mut guard = Macvtap {
            ns: self.name.clone(),
            file: None,
        };
        ip(&["-n", n, "link", "set", QEMU_MACVTAP, "address", GUEST_MAC])?;
        let sysctl = format!("net.ipv6.conf.{QEMU_MACVTAP}.disable_ipv6=1");
        let quiet = Self::command_in(n, "sysctl")
            .args(["-q", "-w", &sysctl])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !quiet.is_ok_and(|s| s.success()) {
            log::debug!("cannot turn IPv6 off on {QEMU_MACVTAP}");
        }
        ip(&["-n", n, "link", "set", QEMU_MACVTAP, "up"])?;
        // sysfs as the namespace sees it: through `ip netns exec`.
        let read = |rel: String| -> Result<String, Error> {
            let out = Self::command_in(n, "cat")
                .arg(format!("/sys/class/net/{QEMU_MACVTAP}/{rel}"))
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::io("reading the macvtap's sysfs", e))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let bad = |detail: String| Error::Command {
            what: "setting up QEMU's macvtap",
            detail,
        };
        let index = read("ifindex".into())?;
        let dev_text = read(format!("macvtap/tap{index}/dev"))?;
        let (major, minor) =
            dev_numbers(&dev_text).ok_or_else(|| bad(format!("no device number: '{dev_text}'")))?;
        let path = PathBuf::from(format!("/dev/tap{index}"));
        ensure_char_dev(&path, major, minor)?;
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // QEMU inherits it across `ip netns exec`.
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| Error::io(format!("{}: FD_CLOEXEC", path.display()), e.into()))?;
        guard.file = Some(file);
        Ok(guard)
    }
}

/// `path` as the character device MAJOR:MINOR, made where no devtmpfs or
/// udev made it (a namespace's macvtap, in the nested L1).
fn ensure_char_dev(path: &Path, major: u64, minor: u64) -> Result<(), Error> {
    let want = nix::sys::stat::makedev(major, minor);
    if let Ok(m) = std::fs::metadata(path) {
        if m.file_type().is_char_device() && m.rdev() == want {
            return Ok(());
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing a stale {}", path.display()), e))?;
    }
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        want,
    )
    .map_err(|e| Error::io(format!("mknod {}", path.display()), e.into()))
}

/// QEMU's macvtap: deleted on drop (after QEMU is gone), its /dev/tapN
/// open until [`Macvtap::close`] (once QEMU has its copy).
pub struct Macvtap {
    ns: String,
    file: Option<File>,
}

impl Macvtap {
    /// The descriptor number for `-netdev tap,fd=`.
    pub fn fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes this process's copy: the next VMM must not inherit it.
    pub fn close(&mut self) {
        self.file = None;
    }
}

impl Drop for Macvtap {
    fn drop(&mut self) {
        self.file = None;
        if let Err(e) = ip(&["-n", &self.ns, "link", "del", QEMU_MACVTAP]) {
            log::warn!("{e}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in [TAP, PT_PARENT] {
            if ip(&["-n", &self.name, "link", "del", link]).is_err() {
                log::debug!("no {link} to delete in {}", self.name);
            }
        }
        for ns in std::iter::once(&self.name).chain(self.host.iter()) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                log::warn!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_from_ip_o() {
        let text = "7: macvtap3@tbv0: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noop\n\
                    9: tbq0@tbv0: <BROADCAST> mtu 1500\n";
        assert_eq!(link_names(text), ["macvtap3", "tbq0"]);
        assert!(link_names("").is_empty());
    }

    #[test]
    fn stale_namespaces_are_those_of_dead_benchmarks_only() {
        let list = "tapir-bench-100 (id: 3)\ntapir-bench-host-100 (id: 4)\ntapir-bench-200\n\
                    tapir-net_tap\ntapir-bench-x\nother-300\n";
        let me = format!("tapir-bench-{}", std::process::id());
        let list = format!("{list}{me}\n");
        assert_eq!(
            stale_namespaces(&list, |p| p == 200),
            ["tapir-bench-100", "tapir-bench-host-100"]
        );
        assert!(stale_namespaces(&list, |_| true).is_empty());
    }

    #[test]
    fn device_numbers() {
        assert_eq!(dev_numbers("241:3\n"), Some((241, 3)));
        assert_eq!(dev_numbers("241"), None);
        assert_eq!(dev_numbers("a:3"), None);
    }

    #[test]
    fn clients_of_passthrough_run_in_the_namespace_host() {
        // Not created: only the names (dropping would run ip).
        let ns = std::mem::ManuallyDrop::new(Netns {
            name: "a".into(),
            host: Some("h".into()),
        });
        assert_eq!(ns.client(Net::Passthrough), "h");
        assert_eq!(ns.client(Net::Tap), "a");
        assert_eq!(ns.client(Net::User), "a");
    }
}
