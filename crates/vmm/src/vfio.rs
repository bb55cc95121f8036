//! Device assignment: each `--device vfio-pci` becomes a
//! [`tapir_vfio::VfioPciDevice`] on the PCI segment, with the VMM-side
//! services it is given: KVM memory slots for its BARs
//! ([`KvmMemorySlots`]) and the VM's GSI routing table ([`GsiRouting`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::{
    kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO, kvm_irq_routing_entry,
    kvm_userspace_memory_region, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use tapir_config::{DeviceSpec, VfioPciSpec};
use tapir_pci::segment::{PCI_INTX_GSI_BASE, PCI_INTX_GSI_COUNT};
use tapir_pci::{MsiMessage, SharedPciDevice};
use tapir_vfio::host::{self, HostVfio, RamRegion};
use tapir_vfio::{HostError, InterruptRoutes, MemoryMapper, VfioPciDevice};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::pci::PciPlatform;

/// Errors assigning a device (each names it).
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// The host is not ready, or VFIO failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The device model could not be built.
    #[error("--device vfio-pci,host={host}: {source}")]
    Device {
        host: String,
        source: tapir_vfio::DeviceError,
    },
    /// PCI slot or BAR problems.
    #[error("--device vfio-pci,host={host}: {source}")]
    Pci {
        host: String,
        source: tapir_pci::PciError,
    },
}

fn kvm_io(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first GSI for MSI routes: past the IOAPIC's 24 pins (which include
/// the INTx GSIs 16..23).
pub const FIRST_MSI_GSI: u32 = 24;
/// KVM's limit on GSIs (KVM_MAX_IRQ_ROUTES on x86).
pub const MAX_GSI: u32 = 4096;

const _: () = assert!(PCI_INTX_GSI_BASE + PCI_INTX_GSI_COUNT <= FIRST_MSI_GSI);

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = irqchip;
    e.u.irqchip.pin = pin;
    e
}

/// The routes KVM installs with KVM_CREATE_IRQCHIP (the kernel's default
/// table): GSIs 0..15 to the PIC pin and the IOAPIC pin of the same
/// number, GSIs 16..23 to the IOAPIC. Setting a routing table replaces
/// them, so every table tapir sets starts with these.
pub fn irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::with_capacity(40);
    for gsi in 0..24u32 {
        v.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        if gsi < 8 {
            v.push(irqchip_entry(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            v.push(irqchip_entry(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
    }
    v
}

fn msi_entry(gsi: u32, msg: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = msg.address as u32;
    e.u.msi.address_hi = (msg.address >> 32) as u32;
    e.u.msi.data = msg.data;
    e
}

/// The whole table: the irqchip's routes, then the MSI routes.
pub fn routing_table(msi: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
    let mut v = irqchip_routes();
    v.extend(msi.iter().map(|(gsi, msg)| msi_entry(*gsi, *msg)));
    v
}

#[derive(Default)]
struct Routes {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// The VM's GSI routing table: the in-kernel irqchip's routes plus one
/// MSI route per routed vector of an assigned device. Each change sets
/// the whole table again (KVM_SET_GSI_ROUTING replaces it).
pub struct GsiRouting {
    vm: Arc<VmFd>,
    routes: Mutex<Routes>,
}

impl GsiRouting {
    /// A table for `vm` (nothing set until the first MSI route).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            routes: Mutex::new(Routes {
                msi: BTreeMap::new(),
                next_gsi: FIRST_MSI_GSI,
            }),
        }
    }

    fn commit(&self, msi: &BTreeMap<u32, MsiMessage>) -> io::Result<()> {
        let entries = routing_table(msi);
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.vm.set_gsi_routing(&table).map_err(kvm_io)
    }
}

impl InterruptRoutes for GsiRouting {
    fn allocate_gsi(&self) -> io::Result<u32> {
        let mut r = lock(&self.routes);
        if r.next_gsi >= MAX_GSI {
            return Err(io::Error::other(format!(
                "out of GSIs for MSI vectors (KVM allows {MAX_GSI})"
            )));
        }
        r.next_gsi += 1;
        Ok(r.next_gsi - 1)
    }

    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> io::Result<()> {
        let mut r = lock(&self.routes);
        let old = r.msi.insert(gsi, msg);
        if let Err(e) = self.commit(&r.msi) {
            match old {
                Some(m) => r.msi.insert(gsi, m),
                None => r.msi.remove(&gsi),
            };
            return Err(e);
        }
        Ok(())
    }

    fn remove_route(&self, gsi: u32) -> io::Result<()> {
        let mut r = lock(&self.routes);
        if r.msi.remove(&gsi).is_some() {
            self.commit(&r.msi)?;
        }
        Ok(())
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        self.vm.register_irqfd(fd, gsi).map_err(kvm_io)
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        self.vm.unregister_irqfd(fd, gsi).map_err(kvm_io)
    }

    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> io::Result<()> {
        self.vm
            .register_irqfd_with_resample(fd, resample, gsi)
            .map_err(kvm_io)
    }
}

/// The most memory slots tapir uses (KVM on x86 has at least 509).
pub const MAX_SLOTS: u32 = 509;

struct Slots {
    next: u32,
    free: Vec<u32>,
    used: BTreeMap<u32, kvm_userspace_memory_region>,
}

/// KVM memory slots for BAR areas, above guest RAM's slots.
pub struct KvmMemorySlots {
    vm: Arc<VmFd>,
    slots: Mutex<Slots>,
}

impl KvmMemorySlots {
    /// Slots from `first` (the number of RAM slots) up.
    pub fn new(vm: Arc<VmFd>, first: u32) -> Self {
        Self {
            vm,
            slots: Mutex::new(Slots {
                next: first,
                free: Vec::new(),
                used: BTreeMap::new(),
            }),
        }
    }
}

impl MemoryMapper for KvmMemorySlots {
    unsafe fn map(&self, guest_addr: u64, len: u64, host_addr: u64) -> io::Result<u32> {
        let mut s = lock(&self.slots);
        let slot = match s.free.pop() {
            Some(slot) => slot,
            None if s.next < MAX_SLOTS => {
                s.next += 1;
                s.next - 1
            }
            None => return Err(io::Error::other("out of KVM memory slots")),
        };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: len,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped while
        // the slot exists or the VM may run (MemoryMapper::map's contract).
        match unsafe { self.vm.set_user_memory_region(region) } {
            Ok(()) => {
                s.used.insert(slot, region);
                Ok(slot)
            }
            Err(e) => {
                s.free.push(slot);
                Err(kvm_io(e))
            }
        }
    }

    fn unmap(&self, slot: u32) -> io::Result<()> {
        let mut s = lock(&self.slots);
        let Some(mut region) = s.used.remove(&slot) else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        region.memory_size = 0;
        // SAFETY: a zero size deletes the slot; no memory is handed to KVM.
        let r = unsafe { self.vm.set_user_memory_region(region) }.map_err(kvm_io);
        if r.is_ok() {
            s.free.push(slot);
        } else {
            region.memory_size = 1;
            s.used.insert(slot, region);
        }
        r
    }
}

/// What the VMM keeps of an assigned device: its host handles, which it
/// never drops (see [`add_devices`]).
pub struct Assigned {
    /// The device's fds, container and BAR mmaps.
    pub host: Arc<HostVfio>,
}

/// Assigns every `--device` in `specs` to the guest.
///
/// The returned handles must outlive the VM: guest RAM is mapped for the
/// devices' DMA and their BARs into the guest. The VMM leaks them at the
/// end (the kernel closes them at exit): dropping a VFIO device reads
/// sysfs and issues VFIO ioctls that the main thread's seccomp filter
/// does not allow, after the VM is gone anyway.
pub fn add_devices(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pci: &mut PciPlatform,
    specs: &[DeviceSpec],
) -> Result<Vec<Assigned>, VfioError> {
    let specs: Vec<&VfioPciSpec> = specs.iter().filter_map(DeviceSpec::as_vfio_pci).collect();
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let ram: Vec<RamRegion> = mem
        .iter()
        .filter_map(|r| {
            let host = mem.get_host_address(r.start_addr()).ok()?;
            Some(RamRegion {
                guest_addr: r.start_addr().0,
                len: r.len(),
                host_addr: host as u64,
            })
        })
        .collect();
    let routes: Arc<dyn InterruptRoutes> = Arc::new(GsiRouting::new(vm.clone()));
    let mapper: Arc<dyn MemoryMapper> =
        Arc::new(KvmMemorySlots::new(vm.clone(), mem.num_regions() as u32));
    let mut out = Vec::with_capacity(specs.len());
    for v in specs {
        let host = v.host.to_string();
        let pci_err = |source| VfioError::Pci {
            host: host.clone(),
            source,
        };
        let slot = pci.segment().reserve_slot(v.slot).map_err(pci_err)?;
        // KVM's VFIO device tells KVM about the group (coherent DMA, the
        // IOMMU's snooping); without it assignment still works.
        let mut create = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_vfio = match vm.create_device(&mut create) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!("vfio {host}: no KVM VFIO device ({e}); going on without it");
                None
            }
        };
        // SAFETY: guest RAM (`mem`) lives as long as the VM, and the
        // device handles are never dropped before the process exits.
        let opened = unsafe { host::open(&host, kvm_vfio, &ram) }?;
        let backend: Arc<dyn tapir_vfio::VfioBackend> = opened.backend.clone();
        let device = VfioPciDevice::new(
            format!("vfio {host}"),
            backend,
            mapper.clone(),
            routes.clone(),
            slot,
            &opened.areas,
            opened.page_size,
        )
        .map_err(|source| VfioError::Device {
            host: host.clone(),
            source,
        })?;
        let summary = device.summary();
        let device: SharedPciDevice = Arc::new(Mutex::new(device));
        let bars = pci.segment().add_device(slot, device).map_err(pci_err)?;
        let at: Vec<String> = bars
            .iter()
            .map(|b| format!("BAR{}@{:#x}", b.index, b.address))
            .collect();
        log::info!(
            "vfio {host}: assigned at guest slot {slot:#x} ({}); {summary}",
            at.join(" ")
        );
        out.push(Assigned {
            host: opened.backend,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irqchip_routes_match_the_kernels_default() {
        let r = irqchip_routes();
        assert_eq!(r.len(), 16 * 2 + 8);
        let ioapic: Vec<_> = r
            .iter()
            .filter(|e| {
                // SAFETY: irqchip entries only.
                let chip = unsafe { e.u.irqchip.irqchip };
                chip == KVM_IRQCHIP_IOAPIC
            })
            .collect();
        assert_eq!(ioapic.len(), 24);
        for e in &ioapic {
            // SAFETY: irqchip entries only.
            assert_eq!(unsafe { e.u.irqchip.pin }, e.gsi);
        }
        let slave = r
            .iter()
            .find(|e| {
                // SAFETY: irqchip entries only.
                let chip = unsafe { e.u.irqchip.irqchip };
                e.gsi == 12 && chip == KVM_IRQCHIP_PIC_SLAVE
            })
            .unwrap();
        // SAFETY: an irqchip entry.
        assert_eq!(unsafe { slave.u.irqchip.pin }, 4);
        assert!(r.iter().all(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
    }

    #[test]
    fn msi_routes_follow_the_irqchip() {
        let mut msi = BTreeMap::new();
        msi.insert(
            25,
            MsiMessage {
                address: 0x1_fee0_1000,
                data: 0x4041,
            },
        );
        msi.insert(24, MsiMessage::default());
        let t = routing_table(&msi);
        assert_eq!(t.len(), 42);
        let last = t[41];
        assert_eq!((last.gsi, last.type_), (25, KVM_IRQ_ROUTING_MSI));
        // SAFETY: an MSI entry.
        let m = unsafe { last.u.msi };
        assert_eq!(
            (m.address_lo, m.address_hi, m.data),
            (0xfee0_1000, 1, 0x4041)
        );
        assert_eq!(t[40].gsi, 24);
        assert!(KvmIrqRouting::from_entries(&t).is_ok());
    }
}
