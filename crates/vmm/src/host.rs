//! The host's KVM: opening it with clear errors, and telling PVM apart from
//! hardware virtualization.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// What kind of KVM the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// VT-x or AMD-V (kvm_intel / kvm_amd).
    Hardware,
    /// PVM (kvm_pvm): guests that are not PVM-aware run under the host's
    /// instruction emulator, about 1.5 µs per instruction.
    Pvm,
}

/// Errors opening /dev/kvm.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No device node.
    #[error("/dev/kvm does not exist: KVM is not available on this host (load kvm_intel or kvm_amd, or run Linux guests with resources/nested/tapir-nested)")]
    NoKvm,
    /// Permission denied.
    #[error(
        "no permission to open /dev/kvm: run as a user in the group that owns it (usually 'kvm')"
    )]
    Permission,
    /// Any other failure.
    #[error("cannot open /dev/kvm: {0}")]
    Open(std::io::Error),
    /// API version mismatch or a required capability is missing.
    #[error("/dev/kvm lacks a capability tapir needs: {0}")]
    MissingCap(&'static str),
}

/// Detects the KVM flavour from sysfs.
pub fn kvm_kind() -> KvmKind {
    if Path::new("/sys/module/kvm_pvm").exists() {
        KvmKind::Pvm
    } else {
        KvmKind::Hardware
    }
}

/// The host's RAM in bytes (`MemTotal` of /proc/meminfo), if it can be read.
pub fn ram_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&info)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// The note printed when running on PVM.
pub const PVM_NOTE: &str =
    "note: /dev/kvm is PVM (kvm_pvm): this guest runs under the host's instruction emulator \
(about 1.5 us per instruction); unmodified Linux kernels stall or die there (cmpxchg16b, xrstor). \
Run Linux guests inside resources/nested/tapir-nested, which provides a nested KVM.";

/// Environment variable naming another KVM device node (tests use it to
/// check the "no /dev/kvm" error).
pub const KVM_PATH_ENV: &str = "TAPIR_KVM_PATH";

/// Opens /dev/kvm (or `$TAPIR_KVM_PATH`) and checks the capabilities tapir
/// relies on.
pub fn open_kvm() -> Result<Kvm, HostError> {
    let path = std::env::var_os(KVM_PATH_ENV).unwrap_or_else(|| "/dev/kvm".into());
    let path = std::ffi::CString::new(path.as_encoded_bytes()).map_err(|_| HostError::NoKvm)?;
    let kvm = Kvm::new_with_path(&path).map_err(|e| match e.errno() {
        libc::ENOENT => HostError::NoKvm,
        libc::EACCES | libc::EPERM => HostError::Permission,
        _ => HostError::Open(std::io::Error::from_raw_os_error(e.errno())),
    })?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(HostError::MissingCap(name));
        }
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let info = "MemTotal:       24591560 kB\nMemFree:        23000000 kB\n";
        assert_eq!(parse_mem_total(info), Some(24_591_560 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots\n"), None);
    }
}
