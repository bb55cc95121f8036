//! MSI-X and INTx delivery, ISR semantics and the locking contract.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tapir_pci::configuration::{PCI_COMMAND_INTX_DISABLE, PCI_STATUS, PCI_STATUS_INTERRUPT};
use tapir_pci::msix::{MSIX_CAP_CONTROL, MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK};

use super::*;

const MSI_ADDR: u64 = 0xfee0_0000;

fn msg(vector: u16) -> MsiMessage {
    MsiMessage {
        address: MSI_ADDR,
        data: 0x40 + u32::from(vector),
    }
}

impl Harness {
    /// Programs and unmasks every table entry, then enables MSI-X.
    fn enable_msix(&mut self, vectors: u16) {
        for v in 0..u64::from(vectors) {
            let entry = u64::from(MSIX_TABLE_OFFSET) + 16 * v;
            self.bar_write(entry, MSI_ADDR, 8);
            self.bar_write(entry + 8, u64::from(msg(v as u16).data), 4);
            self.bar_write(entry + 12, 0, 4);
        }
        self.set_msix_control(MSIX_CTRL_ENABLE);
    }

    fn set_msix_control(&mut self, control: u16) {
        let cap = self.msix_cap().unwrap();
        self.cfg_write(cap + MSIX_CAP_CONTROL, &control.to_le_bytes());
    }

    fn sent(&self) -> Vec<(u16, MsiMessage)> {
        std::mem::take(&mut *self.msi.sent.lock().unwrap())
    }

    fn device_interrupt(&self) -> Arc<dyn VirtioInterrupt> {
        self.log.lock().unwrap().activations[0].interrupt.clone()
    }

    fn isr(&mut self) -> u8 {
        let isr = self.regions().isr;
        self.bar_read(isr, 1) as u8
    }

    fn pci_interrupt_status(&mut self) -> bool {
        self.cfg_read(PCI_STATUS, 2) & u32::from(PCI_STATUS_INTERRUPT) != 0
    }
}

#[test]
fn msix_maps_sources_to_the_vectors_the_driver_chose() {
    let mut h = build(3);
    h.enable_msix(3);
    h.bring_up_with(OFFERED, |h| {
        h.assign_vectors(0, &[(0, 1), (1, 2)]);
        assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 2);
    });
    let irq = h.device_interrupt();

    irq.trigger(VirtioInterruptType::Queue(1)).unwrap();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(h.sent(), vec![(2, msg(2)), (1, msg(1))]);

    let generation = h.common_read(COMMON_CONFIG_GENERATION, 1);
    irq.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(h.sent(), vec![(0, msg(0))]);
    assert_eq!(h.common_read(COMMON_CONFIG_GENERATION, 1), generation + 1);

    assert!(irq.trigger(VirtioInterruptType::Queue(2)).is_err());
    assert!(h.sent().is_empty());
    assert!(
        h.line.levels.lock().unwrap().is_empty(),
        "no INTx with MSI-X"
    );
    // The transport hands out the same object the device got.
    h.dev
        .interrupt()
        .trigger(VirtioInterruptType::Queue(0))
        .unwrap();
    assert_eq!(h.sent(), vec![(1, msg(1))]);
}

#[test]
fn no_vector_means_no_interrupt() {
    let mut h = build(2);
    h.enable_msix(2);
    h.bring_up(OFFERED);
    let irq = h.device_interrupt();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    irq.trigger(VirtioInterruptType::Config).unwrap();
    assert!(h.sent().is_empty());
    assert!(!h.line.high());
    // The config bit is still set in ISR, without INTx.
    assert_eq!(h.isr(), ISR_CONFIG);
}

#[test]
fn masked_vectors_become_pending_and_fire_on_unmask() {
    let mut h = build(2);
    h.enable_msix(2);
    h.bring_up_with(OFFERED, |h| {
        h.assign_vectors(VIRTIO_MSI_NO_VECTOR, &[(0, 1)])
    });
    let irq = h.device_interrupt();
    h.set_msix_control(MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(h.sent().is_empty());
    assert_eq!(h.bar_read(u64::from(MSIX_PBA_OFFSET), 8), 1 << 1);
    h.set_msix_control(MSIX_CTRL_ENABLE);
    assert_eq!(h.sent(), vec![(1, msg(1))]);
    assert_eq!(h.bar_read(u64::from(MSIX_PBA_OFFSET), 8), 0);
}

#[test]
fn vectors_out_of_range_read_back_no_vector() {
    let mut h = build(2);
    h.common_write(COMMON_MSIX_CONFIG, 1, 2);
    assert_eq!(h.common_read(COMMON_MSIX_CONFIG, 2), 1);
    h.common_write(COMMON_MSIX_CONFIG, 2, 2);
    assert_eq!(h.common_read(COMMON_MSIX_CONFIG, 2), 0xffff);
    h.common_write(COMMON_QUEUE_SELECT, 1, 2);
    h.common_write(COMMON_QUEUE_MSIX_VECTOR, 0x7ff, 2);
    assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 0xffff);
    h.common_write(COMMON_QUEUE_MSIX_VECTOR, 0, 2);
    assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 0);

    let mut intx_only = build(0);
    intx_only.common_write(COMMON_MSIX_CONFIG, 0, 2);
    assert_eq!(intx_only.common_read(COMMON_MSIX_CONFIG, 2), 0xffff);
    intx_only.common_write(COMMON_QUEUE_MSIX_VECTOR, 0, 2);
    assert_eq!(intx_only.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 0xffff);
}

#[test]
fn intx_sets_isr_bits_and_isr_read_clears_them() {
    let mut h = build(0);
    h.bring_up(OFFERED);
    let irq = h.device_interrupt();
    assert_eq!(h.isr(), 0);

    irq.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert!(h.line.high());
    assert!(h.pci_interrupt_status());
    assert_eq!(h.isr(), ISR_QUEUE);
    assert!(!h.line.high(), "reading ISR lowers the line");
    assert!(!h.pci_interrupt_status());
    assert_eq!(h.isr(), 0);

    irq.trigger(VirtioInterruptType::Config).unwrap();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(*h.line.levels.lock().unwrap(), vec![true, false, true]);
    // Only a byte-0 read clears; reads elsewhere in the page do not.
    assert_eq!(h.bar_read(ISR_CFG_OFFSET + 1, 1), 0);
    assert_eq!(h.isr(), ISR_QUEUE | ISR_CONFIG);
    assert!(!h.line.high());
    // ISR is read-only.
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    h.bar_write(ISR_CFG_OFFSET, 0, 1);
    assert!(h.line.high());
}

#[test]
fn intx_disable_holds_the_line_low() {
    let mut h = build(0);
    h.bring_up(OFFERED);
    let irq = h.device_interrupt();
    let command = PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE;
    h.cfg_write(PCI_COMMAND, &command.to_le_bytes());
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(!h.line.high());
    assert!(h.pci_interrupt_status(), "status shows the condition");
    h.cfg_write(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    assert!(h.line.high(), "re-enabling delivers it");
    assert_eq!(h.isr(), ISR_QUEUE);
    assert!(!h.line.high());
}

#[test]
fn enabling_msix_drops_a_pending_intx() {
    let mut h = build(1);
    h.bring_up(OFFERED);
    let irq = h.device_interrupt();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(h.line.high(), "MSI-X not enabled yet: INTx");
    h.enable_msix(1);
    assert!(!h.line.high());
    h.set_msix_control(0);
    assert!(h.line.high(), "still pending in ISR");
    assert_eq!(h.isr(), ISR_QUEUE);
}

#[test]
fn reset_clears_isr_and_lowers_the_line() {
    let mut h = build(0);
    h.bring_up(OFFERED);
    h.device_interrupt()
        .trigger(VirtioInterruptType::Queue(0))
        .unwrap();
    assert!(h.line.high());
    h.set_status(0);
    assert!(!h.line.high());
    assert_eq!(h.isr(), 0);
}

#[test]
fn activation_failure_needs_reset_and_raises_config() {
    let mut d = FakeDevice::new();
    d.fail_activate = true;
    let mut h = build_with(d, 0);
    h.bring_up(OFFERED);
    let status = h.status();
    assert_ne!(status & STATUS_NEEDS_RESET, 0);
    assert!(!h.dev.is_activated());
    assert!(matches!(
        h.dev.activate_error(),
        Some(ActivateError::Backend(_))
    ));
    assert!(h.line.high());
    assert_eq!(h.isr(), ISR_CONFIG);
    // The driver cannot clear NEEDS_RESET except by resetting.
    h.set_status(status & !STATUS_NEEDS_RESET);
    assert_ne!(h.status() & STATUS_NEEDS_RESET, 0);
    h.set_status(0);
    assert_eq!(h.status(), 0);
    assert!(h.dev.activate_error().is_none());

    let mut d = FakeDevice::new();
    d.fail_activate = true;
    let mut h = build_with(d, 2);
    h.enable_msix(2);
    h.bring_up_with(OFFERED, |h| h.assign_vectors(1, &[]));
    assert_ne!(h.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(h.sent(), vec![(1, msg(1))]);
}

/// A device thread raises interrupts while a vCPU holds the transport (as
/// the PCI segment does during every access): it must not need the
/// transport's lock.
#[test]
fn interrupts_do_not_need_the_transport_lock() {
    let mut h = build(2);
    h.enable_msix(2);
    h.bring_up_with(OFFERED, |h| h.assign_vectors(1, &[(0, 0)]));
    let irq = h.device_interrupt();
    let msi = h.msi.clone();
    let transport = Arc::new(Mutex::new(h.dev));

    let guard = transport.lock().unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        for _ in 0..100 {
            irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
            irq.trigger(VirtioInterruptType::Queue(1)).unwrap();
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("interrupt blocked on the transport lock");
    drop(guard);
    worker.join().unwrap();
    assert_eq!(msi.sent.lock().unwrap().len(), 100);

    // And both sides hammering at once finishes.
    let irq = transport.lock().unwrap().interrupt();
    let worker = thread::spawn(move || {
        for _ in 0..500 {
            irq.trigger(VirtioInterruptType::Config).unwrap();
        }
    });
    for _ in 0..500 {
        let mut t = transport.lock().unwrap();
        let mut b = [0u8; 1];
        t.read_bar(VIRTIO_BAR, ISR_CFG_OFFSET, &mut b);
        t.write_bar(VIRTIO_BAR, COMMON_MSIX_CONFIG, &0u16.to_le_bytes());
    }
    worker.join().unwrap();
}
