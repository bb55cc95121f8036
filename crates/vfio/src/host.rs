//! The host side: from a PCI address to an open VFIO device.
//!
//! [`check_host`] reads sysfs and turns each way the host can be unready
//! into one [`HostError`] line that says what to do; [`open`] then opens
//! the container, group and device with vfio-ioctls, maps guest RAM for
//! the device's DMA, resets the device and mmaps its BARs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{RegionInfo, VfioBackend, INTX_IRQ};
use crate::device::MappedArea;
use crate::split::Span;

/// Where the kernel lists PCI devices.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// Where the kernel lists IOMMU groups.
pub const SYSFS_IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";

/// Drivers a device may have and still leave its group viable for VFIO.
const VIABLE_DRIVERS: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

/// Why a host function cannot be assigned (one line each; the VMM prints
/// it after `tapir: `).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No such device in sysfs.
    #[error("--device vfio-pci,host={addr}: no such PCI device ({SYSFS_PCI_DEVICES}/{addr} does not exist; `lspci -D` lists this host's)")]
    NoSuchDevice { addr: String },
    /// Bound to another driver, or to none.
    #[error("--device vfio-pci,host={addr}: the device is bound to {}, not vfio-pci; bind it with: {}",
        driver.as_deref().unwrap_or("no driver"), rebind_commands(addr, driver.is_some()))]
    NotBound {
        addr: String,
        driver: Option<String>,
    },
    /// No IOMMU group: the IOMMU is off.
    #[error("--device vfio-pci,host={addr}: the device has no IOMMU group ({SYSFS_PCI_DEVICES}/{addr}/iommu_group is missing): \
             turn the IOMMU on (boot the host with intel_iommu=on or amd_iommu=on, VT-d/AMD-Vi enabled in the firmware)")]
    NoIommu { addr: String },
    /// Other devices of the group are bound to host drivers.
    #[error("--device vfio-pci,host={addr}: IOMMU group {group} is not viable: its other devices must be bound to vfio-pci too (or to no driver): {}",
        others.iter().map(|(d, drv)| format!("{d} (bound to {drv})")).collect::<Vec<_>>().join(", "))]
    GroupNotViable {
        addr: String,
        group: u32,
        others: Vec<(String, String)>,
    },
    /// /dev/vfio/N cannot be opened for lack of rights.
    #[error("--device vfio-pci,host={addr}: permission denied opening {}: run tapir as root, or give this user read-write access to it and to /dev/vfio/vfio", path.display())]
    Permission { addr: String, path: PathBuf },
    /// /dev/vfio/N is missing.
    #[error("--device vfio-pci,host={addr}: {} does not exist (is the vfio-pci module loaded and the device bound to it?)", path.display())]
    NoGroupNode { addr: String, path: PathBuf },
    /// A VFIO operation failed.
    #[error("--device vfio-pci,host={addr}: {what}: {source}")]
    Vfio {
        addr: String,
        what: &'static str,
        source: VfioError,
    },
    /// Other I/O.
    #[error("--device vfio-pci,host={addr}: {what}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        source: io::Error,
    },
}

fn rebind_commands(addr: &str, bound: bool) -> String {
    let mut cmds = Vec::new();
    if bound {
        cmds.push(format!(
            "echo {addr} > {SYSFS_PCI_DEVICES}/{addr}/driver/unbind"
        ));
    }
    cmds.push(format!(
        "echo vfio-pci > {SYSFS_PCI_DEVICES}/{addr}/driver_override"
    ));
    cmds.push(format!("echo {addr} > /sys/bus/pci/drivers/vfio-pci/bind"));
    cmds.join("; ")
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_string)
}

/// The sysfs facts about a host function that assignment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFunction {
    /// Its sysfs directory.
    pub sysfs: PathBuf,
    /// Its IOMMU group.
    pub group: u32,
}

/// Checks that `addr` (`DDDD:BB:DD.F`) can be assigned, reading sysfs
/// under `devices` (normally [`SYSFS_PCI_DEVICES`]) and `groups`
/// ([`SYSFS_IOMMU_GROUPS`]).
pub fn check_host(addr: &str, devices: &Path, groups: &Path) -> Result<HostFunction, HostError> {
    let dev = devices.join(addr);
    if !dev.exists() {
        return Err(HostError::NoSuchDevice { addr: addr.into() });
    }
    let driver = link_name(&dev.join("driver"));
    if driver.as_deref() != Some("vfio-pci") {
        return Err(HostError::NotBound {
            addr: addr.into(),
            driver,
        });
    }
    let group = link_name(&dev.join("iommu_group"))
        .and_then(|g| g.parse::<u32>().ok())
        .ok_or_else(|| HostError::NoIommu { addr: addr.into() })?;
    let others = group_offenders(addr, groups, group);
    if !others.is_empty() {
        return Err(HostError::GroupNotViable {
            addr: addr.into(),
            group,
            others,
        });
    }
    Ok(HostFunction { sysfs: dev, group })
}

/// The other devices of `group` bound to a driver that makes it
/// non-viable, with that driver.
fn group_offenders(addr: &str, groups: &Path, group: u32) -> Vec<(String, String)> {
    let dir = groups.join(group.to_string()).join("devices");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name == addr {
                return None;
            }
            let driver = link_name(&e.path().join("driver"))?;
            (!VIABLE_DRIVERS.contains(&driver.as_str())).then_some((name, driver))
        })
        .collect();
    out.sort();
    out
}

/// An mmap of part of a device region, unmapped on drop.
struct Mmap {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain shared memory of the device; the pointer is
// only handed to KVM as a number, never dereferenced by tapir.
unsafe impl Send for Mmap {}
// SAFETY: as above: nothing reads or writes through it in tapir.
unsafe impl Sync for Mmap {}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: addr/len are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// An open VFIO device: the [`VfioBackend`] of the device model.
pub struct HostVfio {
    device: VfioDevice,
    _container: Arc<VfioContainer>,
    _maps: Vec<Mmap>,
}

impl HostVfio {
    fn region_info(&self, index: u32) -> (u64, u32) {
        (
            self.device.get_region_size(index),
            self.device.get_region_flags(index),
        )
    }

    fn check(&self, index: u32, offset: u64, len: usize) -> io::Result<()> {
        let (size, _) = self.region_info(index);
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
}

fn vfio_io(e: VfioError) -> io::Error {
    io::Error::other(e)
}

impl VfioBackend for HostVfio {
    fn region(&self, index: u32) -> RegionInfo {
        let (size, flags) = self.region_info(index);
        let mut mmappable = Vec::new();
        if flags & VFIO_REGION_INFO_FLAG_MMAP != 0 {
            let sparse = self
                .device
                .get_region_caps(index)
                .into_iter()
                .find_map(|c| match c {
                    VfioRegionInfoCap::SparseMmap(s) => Some(s.areas),
                    _ => None,
                });
            match sparse {
                Some(areas) => mmappable.extend(areas.iter().map(|a| Span::new(a.offset, a.size))),
                None => mmappable.push(Span::new(0, size)),
            }
        }
        RegionInfo { size, mmappable }
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.check(index, offset, data.len())?;
        // region_read logs and leaves the buffer alone on failure.
        data.fill(0xff);
        self.device.region_read(index, data, offset);
        Ok(())
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(index, offset, data.len())?;
        self.device.region_write(index, data, offset);
        Ok(())
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.device.get_irq_info(index).map_or(0, |i| i.count)
    }

    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> io::Result<()> {
        self.device.enable_irq(index, fds.to_vec()).map_err(vfio_io)
    }

    fn disable_irq(&self, index: u32) -> io::Result<()> {
        self.device.disable_irq(index).map_err(vfio_io)
    }

    fn set_intx_unmask_fd(&self, fd: &EventFd) -> io::Result<()> {
        self.device
            .set_irq_resample_fd(INTX_IRQ, vec![fd])
            .map_err(vfio_io)
    }

    fn reset(&self) -> bool {
        self.device.reset();
        true
    }
}

/// What [`open`] gives the VMM.
pub struct OpenedDevice {
    /// The device's backend (owns the fds and the BAR mmaps).
    pub backend: Arc<HostVfio>,
    /// The mmap'ed BAR areas, for the device model.
    pub areas: Vec<MappedArea>,
    /// The host's page size.
    pub page_size: u64,
}

/// A guest RAM region: guest physical address, length, host address.
#[derive(Clone, Copy, Debug)]
pub struct RamRegion {
    /// Guest physical address (the device's DMA address).
    pub guest_addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where tapir has it mapped.
    pub host_addr: u64,
}

/// Opens host function `addr` for assignment: checks sysfs, opens the
/// VFIO container (telling KVM's VFIO device, `kvm_vfio`, about the
/// group), group and device, maps `ram` for DMA, resets the device and
/// mmaps its BARs.
///
/// # Safety
///
/// Every `ram` region must be guest memory that stays mapped for as long
/// as the device may do DMA (the life of the process: the VMM never drops
/// the returned backend before exiting).
pub unsafe fn open(
    addr: &str,
    kvm_vfio: Option<kvm_ioctls::DeviceFd>,
    ram: &[RamRegion],
) -> Result<OpenedDevice, HostError> {
    let host = check_host(
        addr,
        Path::new(SYSFS_PCI_DEVICES),
        Path::new(SYSFS_IOMMU_GROUPS),
    )?;
    let vfio_err = |what| {
        move |source| HostError::Vfio {
            addr: addr.into(),
            what,
            source,
        }
    };
    // Say why /dev/vfio/N cannot be opened, in words (vfio-ioctls opens
    // it again; the group is exclusive, so this one is closed first).
    let node = PathBuf::from(format!("/dev/vfio/{}", host.group));
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open(&node) {
        return Err(match e.kind() {
            io::ErrorKind::PermissionDenied => HostError::Permission {
                addr: addr.into(),
                path: node,
            },
            io::ErrorKind::NotFound => HostError::NoGroupNode {
                addr: addr.into(),
                path: node,
            },
            _ => HostError::Io {
                addr: addr.into(),
                what: "opening its VFIO group",
                source: e,
            },
        });
    }
    let handle = kvm_vfio.map(|fd| Arc::new(VfioDeviceFd::new_from_kvm(fd)));
    let container = Arc::new(
        VfioContainer::new(handle)
            .map_err(vfio_err("opening the VFIO container /dev/vfio/vfio"))?,
    );
    let device = VfioDevice::new(&host.sysfs, container.clone(), false).map_err(|e| match e {
        VfioError::GroupViable => HostError::GroupNotViable {
            addr: addr.into(),
            group: host.group,
            others: group_offenders(addr, Path::new(SYSFS_IOMMU_GROUPS), host.group),
        },
        other => vfio_err("opening the device")(other),
    })?;
    for r in ram {
        let len = usize::try_from(r.len).map_err(|_| HostError::Io {
            addr: addr.into(),
            what: "mapping guest RAM for DMA",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: the caller guarantees each RAM region stays mapped for
        // the life of the device; tapir only accesses guest memory through
        // vm-memory's volatile accessors, never Rust references.
        unsafe { container.vfio_dma_map(r.guest_addr, len, r.host_addr as *mut u8) }
            .map_err(vfio_err("mapping guest RAM for DMA (VFIO_IOMMU_MAP_DMA)"))?;
    }
    device.reset();

    // SAFETY: sysconf has no preconditions.
    let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    let mut backend = HostVfio {
        device,
        _container: container,
        _maps: Vec::new(),
    };
    let mut areas = Vec::new();
    for bar in 0..6u32 {
        let info = backend.region(bar);
        let (_, flags) = backend.region_info(bar);
        let region_offset = backend.device.get_region_offset(bar);
        let mut prot = 0;
        if flags & VFIO_REGION_INFO_FLAG_READ != 0 {
            prot |= libc::PROT_READ;
        }
        if flags & VFIO_REGION_INFO_FLAG_WRITE != 0 {
            prot |= libc::PROT_WRITE;
        }
        for span in info.mmappable {
            let (Ok(len), Some(file_off)) = (
                usize::try_from(span.size),
                region_offset.checked_add(span.offset),
            ) else {
                continue;
            };
            if len == 0 || span.end() > info.size {
                continue;
            }
            // SAFETY: a fresh shared mapping of the device fd at an offset
            // VFIO gave us; it overlaps nothing of ours.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&backend.device),
                    file_off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                log::warn!(
                    "vfio {addr}: cannot mmap BAR{bar} {:#x}+{:#x} ({}); its accesses are trapped",
                    span.offset,
                    span.size,
                    io::Error::last_os_error()
                );
                continue;
            }
            backend._maps.push(Mmap { addr: p, len });
            // SAFETY: the mapping lives in `backend`, which the VMM keeps
            // until the process exits.
            areas.push(unsafe { MappedArea::new(bar as u8, span, p as u64) });
        }
    }
    Ok(OpenedDevice {
        backend: Arc::new(backend),
        areas,
        page_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Sysfs {
        root: PathBuf,
    }

    impl Sysfs {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("tapir-vfio-sysfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("devices")).unwrap();
            fs::create_dir_all(root.join("groups")).unwrap();
            fs::create_dir_all(root.join("drivers")).unwrap();
            Self { root }
        }

        fn device(&self, addr: &str, driver: Option<&str>, group: Option<u32>) {
            let dev = self.root.join("devices").join(addr);
            fs::create_dir_all(&dev).unwrap();
            if let Some(d) = driver {
                let drv = self.root.join("drivers").join(d);
                fs::create_dir_all(&drv).unwrap();
                symlink(&drv, dev.join("driver")).unwrap();
            }
            if let Some(g) = group {
                let gdir = self.root.join("groups").join(g.to_string());
                fs::create_dir_all(gdir.join("devices")).unwrap();
                symlink(&gdir, dev.join("iommu_group")).unwrap();
                symlink(&dev, gdir.join("devices").join(addr)).unwrap();
            }
        }

        fn check(&self, addr: &str) -> Result<HostFunction, HostError> {
            check_host(addr, &self.root.join("devices"), &self.root.join("groups"))
        }
    }

    impl Drop for Sysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn ready_device() {
        let s = Sysfs::new("ready");
        s.device("0000:01:00.0", Some("vfio-pci"), Some(7));
        s.device("0000:00:01.0", Some("pcieport"), Some(7));
        s.device("0000:01:00.1", None, Some(7));
        let f = s.check("0000:01:00.0").unwrap();
        assert_eq!(f.group, 7);
    }

    #[test]
    fn errors_say_what_to_do() {
        let s = Sysfs::new("errors");
        let e = s.check("0000:09:00.0").unwrap_err().to_string();
        assert!(e.contains("no such PCI device"), "{e}");

        s.device("0000:02:00.0", Some("e1000e"), Some(3));
        let e = s.check("0000:02:00.0").unwrap_err().to_string();
        assert!(e.contains("bound to e1000e, not vfio-pci"), "{e}");
        assert!(
            e.contains("echo 0000:02:00.0 > /sys/bus/pci/devices/0000:02:00.0/driver/unbind; echo vfio-pci > /sys/bus/pci/devices/0000:02:00.0/driver_override; echo 0000:02:00.0 > /sys/bus/pci/drivers/vfio-pci/bind"),
            "{e}"
        );
        assert!(!e.contains('\n'));

        s.device("0000:03:00.0", None, Some(4));
        let e = s.check("0000:03:00.0").unwrap_err().to_string();
        assert!(e.contains("bound to no driver"), "{e}");
        assert!(!e.contains("unbind"), "{e}");

        s.device("0000:04:00.0", Some("vfio-pci"), None);
        let e = s.check("0000:04:00.0").unwrap_err().to_string();
        assert!(e.contains("intel_iommu=on or amd_iommu=on"), "{e}");

        s.device("0000:05:00.0", Some("vfio-pci"), Some(9));
        s.device("0000:05:00.1", Some("igb"), Some(9));
        s.device("0000:05:00.2", Some("vfio-pci"), Some(9));
        let e = s.check("0000:05:00.0").unwrap_err();
        assert!(
            matches!(&e, HostError::GroupNotViable { group: 9, others, .. }
                if others == &vec![("0000:05:00.1".to_string(), "igb".to_string())]),
            "{e:?}"
        );
        assert!(e.to_string().contains("0000:05:00.1 (bound to igb)"));
    }
}
