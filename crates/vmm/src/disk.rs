//! Disks: each `--disk` becomes a virtio-blk PCI function (tapir-block)
//! on a slot of its own. This module only opens images and assembles.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use tapir_block::{BlockConfig, DiskBackend, DiskThreads, OpenError, RawFile, VirtioBlk};
use tapir_config::DiskSpec;
use tapir_pci::{intx_gsi, IntxPin};
use tapir_virtio::VirtioPciDevice;
use vm_memory::GuestMemoryMmap;

use crate::irq::IrqfdLevel;
use crate::kvm_irq::{KvmIoEvents, KvmMsi};
use crate::pci::PciPlatform;

/// MSI-X vectors of a disk: configuration + the request queue.
pub const DISK_VECTORS: u16 = 2;

/// Errors setting up a disk (each names the disk's flag).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image cannot be a disk.
    #[error("--disk {disk}: {source}")]
    Open { disk: String, source: OpenError },
    /// PCI slot or transport problems.
    #[error("--disk {disk}: {msg}")]
    Pci { disk: String, msg: String },
    /// Interrupt line or thread set-up.
    #[error("--disk {disk}: device set-up: {source}")]
    Setup {
        disk: String,
        source: std::io::Error,
    },
}

/// An opened `--disk`: its name, spec and image.
pub struct OpenedDisk {
    name: String,
    spec: DiskSpec,
    image: Arc<dyn DiskBackend>,
}

/// Opens every image of `disks` (before KVM is touched: a bad image is
/// said first).
pub fn open_disks(disks: &[DiskSpec]) -> Result<Vec<OpenedDisk>, DiskError> {
    disks
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = spec.name(i);
            let image =
                RawFile::open(&spec.path, spec.read_only).map_err(|source| DiskError::Open {
                    disk: name.clone(),
                    source,
                })?;
            Ok(OpenedDisk {
                name,
                spec: spec.clone(),
                image: Arc::new(image),
            })
        })
        .collect()
}

/// Adds each opened disk on bus 0, its worker thread from `threads`;
/// returns their INTx lines (resampled by the event loop).
pub fn add_disks(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pci: &mut PciPlatform,
    disks: Vec<OpenedDisk>,
    threads: &DiskThreads,
) -> Result<Vec<Arc<IrqfdLevel>>, DiskError> {
    let mut lines = Vec::with_capacity(disks.len());
    for d in disks {
        let name = d.name;
        let pci_err = |msg: String| DiskError::Pci {
            disk: name.clone(),
            msg,
        };
        let setup_err = |source| DiskError::Setup {
            disk: name.clone(),
            source,
        };
        let slot = pci
            .segment()
            .reserve_slot(None)
            .map_err(|e| pci_err(e.to_string()))?;
        let intx = Arc::new(IrqfdLevel::new(vm, intx_gsi(slot, IntxPin::IntA)).map_err(setup_err)?);
        let device = VirtioBlk::new(
            BlockConfig {
                name: name.clone(),
                read_only: d.spec.read_only,
                serial: d.spec.serial(),
            },
            d.image,
            threads,
        )
        .map_err(setup_err)?;
        let transport = VirtioPciDevice::new(
            device,
            mem.clone(),
            DISK_VECTORS,
            Arc::new(KvmMsi::new(vm.clone())),
            intx.clone(),
            Arc::new(KvmIoEvents::new(vm.clone())),
        )
        .map_err(|e| pci_err(e.to_string()))?;
        let transport = Arc::new(Mutex::new(transport));
        pci.segment()
            .add_device(slot, transport.clone())
            .map_err(|e| pci_err(e.to_string()))?;
        transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_ioevents()
            .map_err(|e| pci_err(e.to_string()))?;
        log::debug!(
            "disk {name}: {} on PCI slot {slot:#x}{}",
            d.spec.path.display(),
            if d.spec.read_only { ", read-only" } else { "" }
        );
        lines.push(intx);
    }
    Ok(lines)
}
