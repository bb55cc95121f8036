//! Configuration of a tapir VM: the validated form of the command line.
//!
//! The binary's CLI parses flags into strings; this crate turns them into
//! typed values with one clear error per mistake, so the VMM never sees a
//! malformed request.

pub mod nic;
pub mod size;

use std::path::PathBuf;

pub use nic::{BackendSpec, MacAddr, MacvtapMode, NicArg, NicModel, NicSpec, NicSpecError};
pub use size::{parse_size, SizeError};

/// Where the guest's COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialConfig {
    /// The VMM's stdin/stdout (raw mode when stdin is a terminal).
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Output discarded.
    None,
}

/// Errors in `--serial`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialError {
    /// Unknown form.
    #[error("invalid --serial '{0}': expected stdio, file:PATH or none")]
    Invalid(String),
}

impl std::str::FromStr for SerialConfig {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdio" => Ok(Self::Stdio),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
                _ => Err(SerialError::Invalid(s.to_string())),
            },
        }
    }
}

/// Largest vCPU count tapir accepts (LAPIC ids stay below the IOAPIC id).
pub const MAX_VCPUS: u8 = 254;

/// A fully validated VM configuration.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image (bzImage or ELF).
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// COM1 routing.
    pub serial: SerialConfig,
    /// Network interfaces.
    pub nics: Vec<NicSpec>,
    /// Run guests that PVM can only emulate (Linux bzImages) anyway.
    pub allow_emulation: bool,
    /// Where to serve the control socket (`tapir ctl`), if anywhere.
    pub control_socket: Option<PathBuf>,
}
