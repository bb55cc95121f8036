//! The bridge backend: a tap of tapir's own, enslaved to a host bridge.
//!
//! The tap is created non-persistent, so it disappears when the backend is
//! dropped (or the process dies), and the kernel then also removes it from
//! the bridge: nothing is left behind.

use std::io;

use crate::error::BackendError;
use crate::sys::{self, IfReq};
use crate::tap::{net_backend_over_tap, TapBackend, TapConfig};

/// The tap name pattern when none is given; the kernel fills `%d`.
pub const DEFAULT_TAP_NAME: &str = "tapir%d";

/// A tap created for and enslaved to a bridge.
#[derive(Debug)]
pub struct BridgeBackend {
    bridge: String,
    tap: TapBackend,
}

impl BridgeBackend {
    /// Creates a tap (`ifname`, default `tapir%d`), adds it to bridge `br`
    /// and brings it up. `ifname` must not name an existing interface.
    pub fn open(br: &str, ifname: Option<&str>) -> Result<BridgeBackend, BackendError> {
        sys::check_ifname(br)?;
        if sys::ifindex(br).is_none() {
            return Err(BackendError::NoSuchBridge { name: br.into() });
        }
        if !sys::sysfs_is_bridge(br) {
            return Err(BackendError::NotABridge { name: br.into() });
        }
        let name = ifname.filter(|n| !n.is_empty()).unwrap_or(DEFAULT_TAP_NAME);
        sys::check_ifname(name)?;
        if !name.contains('%') && sys::ifindex(name).is_some() {
            return Err(BackendError::AlreadyExists { name: name.into() });
        }
        let tap = TapBackend::open(TapConfig {
            ifname: Some(name.into()),
            fd: None,
            vnet_hdr: true,
        })?;
        // Not ours after all (created by someone else in a race): refuse it.
        if !tap.created() {
            return Err(BackendError::AlreadyExists {
                name: tap.ifname().into(),
            });
        }
        // On any error below, dropping `tap` removes the interface again.
        let index = sys::ifindex(tap.ifname()).ok_or_else(|| {
            BackendError::sys(
                "if_nametoindex",
                tap.ifname(),
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        let sock = sys::ioctl_socket().map_err(|e| BackendError::sys("socket", br, e))?;
        let mut req = IfReq::new(br);
        req.set_ifindex(index as i32);
        sys::ifreq_ioctl(&sock, sys::SIOCBRADDIF, &mut req).map_err(|e| {
            BackendError::sys_or_perm(
                "SIOCBRADDIF",
                br,
                format!("adding a tap to bridge '{br}'"),
                e,
            )
        })?;
        tap.bring_up()
            .map_err(|e| BackendError::sys("SIOCSIFFLAGS", tap.ifname(), e))?;
        Ok(BridgeBackend {
            bridge: br.into(),
            tap,
        })
    }

    /// The bridge name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The tap's interface name.
    pub fn ifname(&self) -> &str {
        self.tap.ifname()
    }

    /// The underlying tap.
    pub fn tap(&self) -> &TapBackend {
        &self.tap
    }
}

net_backend_over_tap!(BridgeBackend, |b| format!(
    "bridge {} (tap {})",
    b.bridge,
    b.tap.ifname()
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bridge_and_non_bridge() {
        let e = BridgeBackend::open("nosuchbr0", None).unwrap_err();
        assert_eq!(e.to_string(), "bridge 'nosuchbr0' does not exist");
        let e = BridgeBackend::open("lo", None).unwrap_err();
        assert_eq!(e.to_string(), "'lo' is not a bridge");
        let e = BridgeBackend::open("bad/name", None).unwrap_err();
        assert!(matches!(e, BackendError::InvalidName { .. }), "{e}");
    }
}
