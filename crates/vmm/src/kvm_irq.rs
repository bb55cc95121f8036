//! KVM-backed implementations of the device-side interrupt and notify
//! traits: MSI delivery and ioeventfd registration.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::kvm_msi;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use tapir_devices::pc_testdev::IrqLines;
use tapir_pci::{MsiMessage, MsiSender};
use tapir_virtio::IoEventRegistry;
use vmm_sys_util::eventfd::EventFd;

fn kvm_err(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// Sends MSIs with KVM_SIGNAL_MSI.
pub struct KvmMsi {
    vm: Arc<VmFd>,
    sent: Arc<AtomicU64>,
}

impl KvmMsi {
    /// An MSI sender for `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            sent: Arc::default(),
        }
    }

    /// Counts the messages sent (KVM accepted them).
    pub fn sent(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }
}

impl MsiSender for KvmMsi {
    fn send(&self, _vector: u16, msg: MsiMessage) -> io::Result<()> {
        let m = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        self.vm.signal_msi(m).map_err(kvm_err)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Registers MMIO ioeventfds with KVM.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
}

impl KvmIoEvents {
    /// An ioeventfd registry for `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl IoEventRegistry for KvmIoEvents {
    fn register(&self, fd: &EventFd, addr: u64, _len: u32) -> io::Result<()> {
        // A zero-length match: any write width at `addr` signals (virtio
        // drivers write 16 bits; KVM then needs no exact size).
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(kvm_err)
    }

    fn unregister(&self, fd: &EventFd, addr: u64, _len: u32) -> io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(kvm_err)
    }
}

/// Sets interrupt lines with KVM_IRQ_LINE (the in-kernel PIC and I/O APIC;
/// pc-testdev's interrupt-line ports).
pub struct KvmIrqLines {
    vm: Arc<VmFd>,
}

impl KvmIrqLines {
    /// Lines of `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl IrqLines for KvmIrqLines {
    fn set_line(&self, line: u32, high: bool) {
        if let Err(e) = self.vm.set_irq_line(line, high) {
            log::warn!("KVM_IRQ_LINE {line} {high}: {e}");
        }
    }
}
