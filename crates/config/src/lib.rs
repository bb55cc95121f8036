//! Configuration of a tapir VM: the validated form of the command line.
//!
//! The binary's CLI parses flags into strings; this crate turns them into
//! typed values with one clear error per mistake, so the VMM never sees a
//! malformed request.

pub mod device;
pub mod disk;
pub mod duration;
pub mod nic;
pub mod size;

use std::path::PathBuf;

pub use device::{
    check_devices, DebugExitSpec, DeviceArg, DeviceSpec, DeviceSpecError, PciAddress, VfioPciSpec,
    DEVICE_KINDS,
};
pub use disk::{check_disks, DiskArg, DiskSpec, DiskSpecError, DISK_HELP};
pub use duration::{DurationError, UserDuration};
pub use nic::{
    BackendSpec, MacAddr, MacvtapMode, NicArg, NicModel, NicSpec, NicSpecError, PcapSpec,
};
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
    #[error("invalid --serial '{}': expected stdio, stdio,logfile=PATH, file:PATH or none", .0.escape_debug())]
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

/// The `--serial` flag: where COM1 goes and, with `stdio,logfile=PATH`,
/// a file that also gets every byte of the guest's output (a CI log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialArg {
    /// Where COM1 goes.
    pub dest: SerialConfig,
    /// A copy of the output.
    pub logfile: Option<PathBuf>,
}

impl std::str::FromStr for SerialArg {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only after stdio: a file:PATH may itself contain commas.
        if let Some(rest) = s.strip_prefix("stdio,") {
            return match rest.strip_prefix("logfile=") {
                Some(p) if !p.is_empty() => Ok(SerialArg {
                    dest: SerialConfig::Stdio,
                    logfile: Some(PathBuf::from(p)),
                }),
                _ => Err(SerialError::Invalid(s.to_string())),
            };
        }
        Ok(SerialArg {
            dest: s.parse()?,
            logfile: None,
        })
    }
}

/// Which of tapir's threads install their seccomp filter (docs/seccomp.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Every thread: the vCPUs, the NIC workers and the thread that runs
    /// the VM's event loop (the default, `--seccomp=on`).
    #[default]
    On,
    /// The threads tapir starts, not the caller's: for a VM run inside a
    /// test process (`tapir_vmm::run_with_backends`), whose thread goes on
    /// with the test's work after the VM. Not a command-line value.
    SpawnedThreads,
    /// None (`--seccomp=off`, for debugging).
    Off,
}

/// Errors in `--seccomp`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompModeError {
    /// Neither on nor off.
    #[error("invalid --seccomp '{0}': expected on or off")]
    Invalid(String),
}

impl std::str::FromStr for SeccompMode {
    type Err = SeccompModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(SeccompModeError::Invalid(s.to_string())),
        }
    }
}

/// Exit status when `--timeout` stops the guest (as coreutils' timeout).
pub const TIMEOUT_EXIT_STATUS: i32 = 124;

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
    /// A file that also gets COM1's output (`--serial stdio,logfile=`).
    pub serial_log: Option<PathBuf>,
    /// Stop the guest after this long (`--timeout`); exit status
    /// [`TIMEOUT_EXIT_STATUS`].
    pub timeout: Option<UserDuration>,
    /// Network interfaces.
    pub nics: Vec<NicSpec>,
    /// Other devices (`--device`: VFIO device assignment, isa-debug-exit).
    pub devices: Vec<DeviceSpec>,
    /// Disks (`--disk`: virtio-blk).
    pub disks: Vec<DiskSpec>,
    /// Run guests that PVM can only emulate (Linux bzImages) anyway.
    pub allow_emulation: bool,
    /// Where to serve the control socket (`tapir ctl`), if anywhere.
    pub control_socket: Option<PathBuf>,
    /// Which threads install their seccomp filter.
    pub seccomp: SeccompMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_forms() {
        let arg = |s: &str| s.parse::<SerialArg>();
        assert_eq!(
            arg("stdio"),
            Ok(SerialArg {
                dest: SerialConfig::Stdio,
                logfile: None
            })
        );
        assert_eq!(
            arg("stdio,logfile=/tmp/a,b.log"),
            Ok(SerialArg {
                dest: SerialConfig::Stdio,
                logfile: Some("/tmp/a,b.log".into())
            })
        );
        assert_eq!(
            arg("file:/tmp/x,y").unwrap().dest,
            SerialConfig::File("/tmp/x,y".into())
        );
        assert_eq!(arg("none").unwrap().dest, SerialConfig::None);
        for bad in [
            "stdio,logfile=",
            "stdio,log=x",
            "stdio,",
            "file:",
            "tty",
            "",
        ] {
            assert_eq!(
                arg(bad).unwrap_err().to_string(),
                format!(
                    "invalid --serial '{bad}': expected stdio, stdio,logfile=PATH, file:PATH or none"
                )
            );
        }
    }

    #[test]
    fn seccomp_is_on_or_off() {
        assert_eq!("on".parse(), Ok(SeccompMode::On));
        assert_eq!("off".parse(), Ok(SeccompMode::Off));
        assert_eq!(SeccompMode::default(), SeccompMode::On);
        assert_eq!(
            "spawned".parse::<SeccompMode>().unwrap_err().to_string(),
            "invalid --seccomp 'spawned': expected on or off"
        );
    }
}
