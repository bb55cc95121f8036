//! Open-time errors of the tap and bridge backends.

use std::io;
use std::os::fd::RawFd;

/// Why a backend could not be opened. The messages are meant to be shown to
/// the person who configured the VM as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// `/dev/net/tun` is missing or the tun driver is not available.
    #[error("no such device: /dev/net/tun is not available (is the tun module loaded?): {source}")]
    NoTunDevice {
        /// The error from opening `/dev/net/tun`.
        source: io::Error,
    },
    /// EPERM/EACCES from the kernel: the process lacks CAP_NET_ADMIN.
    #[error("{action} needs CAP_NET_ADMIN (run as root or grant cap_net_admin)")]
    PermissionDenied {
        /// What was attempted, e.g. `creating a tap`.
        action: String,
    },
    /// The named interface exists but is not a tap (maybe a tun, or a NIC).
    #[error("'{name}' is not a tap")]
    NotATap {
        /// The interface name.
        name: String,
    },
    /// The file descriptor handed over is not an attached tap.
    #[error("fd {fd} is not an open tap: {reason}")]
    FdNotATap {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        reason: String,
    },
    /// The descriptor is a tap, but not the one named in the configuration.
    #[error("fd {fd} is tap '{actual}', not '{expected}'")]
    FdNameMismatch {
        /// The descriptor.
        fd: RawFd,
        /// The name asked for.
        expected: String,
        /// The name of the tap behind the descriptor.
        actual: String,
    },
    /// Another process holds the (single-queue) tap.
    #[error("tap '{name}' is in use by another process")]
    Busy {
        /// The interface name.
        name: String,
    },
    /// The interface name cannot be a Linux interface name.
    #[error("invalid interface name '{name}': {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The bridge named does not exist.
    #[error("bridge '{name}' does not exist")]
    NoSuchBridge {
        /// The bridge name.
        name: String,
    },
    /// The interface named as bridge exists but is not a bridge.
    #[error("'{name}' is not a bridge")]
    NotABridge {
        /// The interface name.
        name: String,
    },
    /// A bridge backend creates its own tap; the name asked for is taken.
    #[error("interface '{name}' already exists (a bridge backend creates its own tap; use the tap backend to attach to an existing one)")]
    AlreadyExists {
        /// The interface name.
        name: String,
    },
    /// The host NIC to attach to does not exist.
    #[error("host NIC '{name}' does not exist")]
    NoSuchInterface {
        /// The interface name.
        name: String,
    },
    /// The host NIC is enslaved to a bridge: its frames go to the bridge.
    #[error("'{name}' is a bridge port: a macvtap on it would see nothing (attach to the bridge with net=bridge,br=NAME)")]
    BridgePort {
        /// The interface name.
        name: String,
    },
    /// The interface cannot carry a macvtap.
    #[error("'{name}' is {what}")]
    NotAHostNic {
        /// The interface name.
        name: String,
        /// What it is instead, and what to do.
        what: &'static str,
    },
    /// The kernel refused to create the macvtap in that mode.
    #[error("the kernel refused a macvtap in mode {mode} on '{name}': {source}")]
    ModeRefused {
        /// The host NIC.
        name: String,
        /// The mode asked for.
        mode: &'static str,
        /// What the kernel answered.
        source: io::Error,
    },
    /// Any other failure of a system call, with the call and the interface.
    #[error("{op} on '{name}' failed: {source}")]
    Sys {
        /// The operation, e.g. `TUNSETIFF`.
        op: &'static str,
        /// The interface (or device) it was for.
        name: String,
        /// The error.
        source: io::Error,
    },
}

impl BackendError {
    pub(crate) fn sys(op: &'static str, name: &str, source: io::Error) -> BackendError {
        BackendError::Sys {
            op,
            name: name.to_string(),
            source,
        }
    }

    /// EPERM/EACCES become [`BackendError::PermissionDenied`], anything else `Sys`.
    pub(crate) fn sys_or_perm(
        op: &'static str,
        name: &str,
        action: impl Into<String>,
        source: io::Error,
    ) -> BackendError {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => BackendError::PermissionDenied {
                action: action.into(),
            },
            _ => BackendError::sys(op, name, source),
        }
    }
}
