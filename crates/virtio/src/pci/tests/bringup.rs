//! Discovery, negotiation, activation, notification, reset and ioeventfd
//! registration.

use tapir_pci::configuration::{
    PCI_BAR0, PCI_CLASS_CODE, PCI_DEVICE_ID, PCI_INTERRUPT_PIN, PCI_REVISION_ID, PCI_STATUS,
    PCI_STATUS_CAP_LIST, PCI_SUBCLASS, PCI_SUBSYSTEM_ID, PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID,
};
use tapir_pci::msix::{MSIX_CAP_PBA, MSIX_CAP_TABLE};

use super::*;

#[test]
fn header_identifies_a_modern_virtio_net() {
    let mut h = build(4);
    assert_eq!(h.cfg_read(PCI_VENDOR_ID, 2), 0x1af4);
    assert_eq!(h.cfg_read(PCI_DEVICE_ID, 2), 0x1041);
    assert_eq!(h.cfg_read(PCI_REVISION_ID, 1), 1);
    assert_eq!(h.cfg_read(PCI_CLASS_CODE, 1), 0x02);
    assert_eq!(h.cfg_read(PCI_SUBCLASS, 1), 0x00);
    assert_eq!(h.cfg_read(PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
    assert_eq!(h.cfg_read(PCI_SUBSYSTEM_ID, 2), 0x1100);
    assert_eq!(h.cfg_read(PCI_INTERRUPT_PIN, 1), 1, "INTA#");
    assert_ne!(
        h.cfg_read(PCI_STATUS, 2) & u32::from(PCI_STATUS_CAP_LIST),
        0
    );
    assert_eq!(h.dev.name(), "virtio-net");

    // BAR 0: 32-bit memory, 32 KiB with MSI-X (sizing as firmware does).
    assert_eq!(h.cfg_read(PCI_BAR0, 4), BAR0 as u32);
    h.cfg_write(PCI_BAR0, &u32::MAX.to_le_bytes());
    assert_eq!(h.cfg_read(PCI_BAR0, 4), !(0x8000 - 1));
    h.cfg_write(PCI_BAR0, &(BAR0 as u32).to_le_bytes());
    for i in 1..6 {
        assert_eq!(h.cfg_read(PCI_BAR0 + 4 * i, 4), 0, "BAR {i} unused");
    }
    let bar = h.dev.config().bar(VIRTIO_BAR).unwrap();
    assert_eq!((bar.kind, bar.size), (BarKind::Mem32, 0x8000));

    let mut other = FakeDevice::new();
    other.device_type = 0x3f;
    let mut h = build_with(other, 0);
    assert_eq!(h.cfg_read(PCI_DEVICE_ID, 2), 0x107f);
    assert_eq!(h.cfg_read(PCI_CLASS_CODE, 1), 0xff);
    assert_eq!(h.dev.config().bar(VIRTIO_BAR).unwrap().size, 0x4000);
}

#[test]
fn capabilities_describe_bar0() {
    let mut h = build(3);
    let caps = h.virtio_caps();
    let types: Vec<_> = caps.iter().map(|c| c.cfg_type).collect();
    assert_eq!(types, vec![1, 3, 4, 2, 5]);
    let by_type = |t: u8| *caps.iter().find(|c| c.cfg_type == t).unwrap();
    assert_eq!(
        (by_type(1).offset, by_type(1).length),
        (0x0000, COMMON_CFG_SIZE as u32)
    );
    assert_eq!((by_type(3).offset, by_type(3).length), (0x1000, 1));
    assert_eq!((by_type(4).offset, by_type(4).length), (0x2000, 0x1000));
    assert_eq!((by_type(2).offset, by_type(2).length), (0x3000, 8));
    assert!(caps.iter().all(|c| c.bar == 0));
    // cap_len: 16, notify 20, pci_cfg 20.
    for c in &caps {
        let want = if matches!(c.cfg_type, 2 | 5) { 20 } else { 16 };
        assert_eq!(h.cfg_read(c.at + VIRTIO_CAP_LEN, 1), want);
    }
    let r = h.regions();
    assert_eq!(r.multiplier, 4);

    let msix = h.msix_cap().expect("MSI-X capability");
    assert_eq!(h.cfg_read(msix + 2, 2) & 0x7ff, 2, "3 vectors");
    assert_eq!(h.cfg_read(msix + MSIX_CAP_TABLE, 4), 0x4000, "BIR 0");
    assert_eq!(h.cfg_read(msix + MSIX_CAP_PBA, 4), 0x6000, "BIR 0");

    let mut intx_only = build(0);
    assert_eq!(intx_only.msix_cap(), None);
    assert_eq!(intx_only.virtio_caps().len(), 5);
}

#[test]
fn features_are_offered_in_windows_and_masked_on_ack() {
    let mut h = build(0);
    assert_eq!(h.device_features(), OFFERED);
    h.common_write(COMMON_DEVICE_FEATURE_SELECT, 7, 4);
    assert_eq!(h.common_read(COMMON_DEVICE_FEATURE, 4), 0);
    assert_eq!(h.common_read(COMMON_DEVICE_FEATURE_SELECT, 4), 7);
    // The driver tries to accept everything: only offered bits stick.
    h.write_driver_features(u64::MAX);
    assert_eq!(h.driver_features(), OFFERED);
    h.common_write(COMMON_DRIVER_FEATURE_SELECT, 2, 4);
    h.common_write(COMMON_DRIVER_FEATURE, 0xffff_ffff, 4);
    assert_eq!(h.common_read(COMMON_DRIVER_FEATURE, 4), 0);
    assert_eq!(h.driver_features(), OFFERED);
    // device_feature is read-only.
    h.common_write(COMMON_DEVICE_FEATURE_SELECT, 0, 4);
    h.common_write(COMMON_DEVICE_FEATURE, 0, 4);
    assert_eq!(h.device_features(), OFFERED);
}

#[test]
fn features_ok_needs_version_1() {
    let mut h = build(0);
    let status = h.negotiate(FEATURE_MAC);
    assert_eq!(status & STATUS_FEATURES_OK, 0, "legacy-only driver refused");
    assert_eq!(status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    let status = h.negotiate(FEATURE_VERSION_1 | FEATURE_MAC);
    assert_ne!(status & STATUS_FEATURES_OK, 0);
    // After FEATURES_OK the accepted set is frozen.
    h.write_driver_features(FEATURE_VERSION_1);
    assert_eq!(h.driver_features(), FEATURE_VERSION_1 | FEATURE_MAC);
}

#[test]
fn driver_ok_hands_enabled_queues_to_the_device() {
    let mut h = build(2);
    h.bring_up(OFFERED);
    let status = h.status();
    assert_eq!(
        status,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    assert!(h.dev.is_activated());
    let log = h.log.lock().unwrap();
    assert_eq!(log.activations.len(), 1);
    let a = &log.activations[0];
    assert_eq!(a.acked, OFFERED);
    let want: Vec<_> = (0..2)
        .map(|i| {
            let q = queue_setup(i);
            SeenQueue {
                index: i,
                size: q.size,
                desc: q.desc,
                avail: q.avail,
                used: q.used,
                event_idx: true,
                ready: true,
            }
        })
        .collect();
    assert_eq!(a.queues, want);
}

#[test]
fn only_enabled_queues_are_activated_and_event_idx_follows_the_ack() {
    let mut h = build(0);
    let features = FEATURE_VERSION_1;
    h.negotiate(features);
    let q = QueueSetup {
        size: 64,
        ..queue_setup(1)
    };
    h.setup_queue(1, q);
    h.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    let log = h.log.lock().unwrap();
    let a = &log.activations[0];
    assert_eq!(a.acked, FEATURE_VERSION_1);
    assert_eq!(a.queues.len(), 1);
    assert_eq!(a.queues[0].index, 1);
    assert_eq!(a.queues[0].size, 64);
    assert!(!a.queues[0].event_idx);
}

#[test]
fn driver_ok_without_features_ok_is_refused() {
    let mut h = build(0);
    h.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    h.setup_queue(0, queue_setup(0));
    h.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    assert_eq!(h.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(h.activations(), 0);
    assert!(!h.dev.is_activated());
    // Refused FEATURES_OK does not open the door either.
    h.write_driver_features(FEATURE_MAC);
    h.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    assert_eq!(h.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(h.activations(), 0);
}

#[test]
fn notify_write_signals_the_eventfd_the_device_holds() {
    let mut h = build(0);
    h.bring_up(OFFERED);
    let r = h.regions();
    let notify_off = |h: &mut Harness, q: u16| {
        h.common_write(COMMON_QUEUE_SELECT, q.into(), 2);
        h.common_read(COMMON_QUEUE_NOTIFY_OFF, 2)
    };
    let off1 = notify_off(&mut h, 1);
    assert_eq!(off1, 1);
    // Linux writes the queue index, 16 bits wide.
    h.bar_write(r.notify + off1 * u64::from(r.multiplier), 1, 2);
    {
        let log = h.log.lock().unwrap();
        let fds = &log.activations[0].notify;
        assert!(!signalled(&fds[0]));
        assert!(signalled(&fds[1]));
    }
    // Any width at the slot works; past the last queue or between slots,
    // nothing happens.
    h.bar_write(r.notify, 0, 4);
    h.bar_write(r.notify + 8, 2, 2);
    h.bar_write(r.notify + 2, 0, 2);
    let log = h.log.lock().unwrap();
    let fds = &log.activations[0].notify;
    assert!(signalled(&fds[0]));
    assert!(!signalled(&fds[0]));
    assert!(!signalled(&fds[1]));
}

#[test]
fn reset_returns_to_the_initial_state() {
    let mut h = build(4);
    h.bring_up_with(OFFERED, |h| h.assign_vectors(0, &[(0, 2), (1, 3)]));
    assert_eq!(h.common_read(COMMON_MSIX_CONFIG, 2), 0);
    assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 3);
    h.common_write(COMMON_DEVICE_FEATURE_SELECT, 1, 4);
    assert!(h.dev.is_activated());
    let resets_before = h.log.lock().unwrap().resets;

    h.set_status(0);
    assert_eq!(h.log.lock().unwrap().resets, resets_before + 1);
    assert!(!h.dev.is_activated());
    assert_eq!(h.status(), 0);
    assert_eq!(h.driver_features(), 0);
    assert_eq!(h.common_read(COMMON_MSIX_CONFIG, 2), 0xffff);
    h.common_write(COMMON_DEVICE_FEATURE_SELECT, 0, 4);
    for q in 0..2u16 {
        h.common_write(COMMON_QUEUE_SELECT, q.into(), 2);
        assert_eq!(
            h.common_read(COMMON_QUEUE_SIZE, 2),
            u64::from(QUEUE_MAX[usize::from(q)])
        );
        assert_eq!(h.common_read(COMMON_QUEUE_ENABLE, 2), 0);
        assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 0xffff);
        assert_eq!(h.common_read(COMMON_QUEUE_DESC, 8), 0);
    }
    // A second bring-up works and is a second activation.
    h.bring_up(OFFERED);
    assert_eq!(h.activations(), 2);
}

#[test]
fn device_config_region_is_delegated() {
    let mut h = build(0);
    let r = h.regions();
    assert_eq!(h.bar_read(r.device, 1), 0xa0);
    assert_eq!(h.bar_read(r.device + 2, 2), 0xa3a2);
    assert_eq!(h.bar_read(r.device + 4, 4), 0xa7a6_a5a4);
    assert_eq!(h.bar_read(r.device + 8, 8), 0xafae_adac_abaa_a9a8);
    assert_eq!(h.bar_read(r.device + 0x100, 4), 0);
    h.bar_write(r.device + 6, 0x1234, 2);
    // Crossing the end of the region is not forwarded.
    h.bar_write(r.device + 0xffc, 0, 8);
    assert_eq!(
        h.log.lock().unwrap().config_writes,
        vec![(6, vec![0x34, 0x12])]
    );
}

#[test]
fn pci_cfg_capability_is_a_window_on_bar0() {
    let mut h = build(0);
    let cap = h
        .virtio_caps()
        .into_iter()
        .find(|c| c.cfg_type == VIRTIO_PCI_CAP_PCI_CFG)
        .unwrap();
    let data = cap.at + VIRTIO_CAP_PCI_CFG_DATA;
    let aim = |h: &mut Harness, bar: u8, offset: u64, len: u32| {
        h.cfg_write(cap.at + VIRTIO_CAP_BAR, &[bar]);
        h.cfg_write(cap.at + VIRTIO_CAP_OFFSET, &(offset as u32).to_le_bytes());
        h.cfg_write(cap.at + VIRTIO_CAP_LENGTH, &len.to_le_bytes());
    };
    aim(&mut h, 0, COMMON_NUM_QUEUES, 2);
    assert_eq!(h.cfg_read(data, 4), 2);
    aim(&mut h, 0, DEVICE_CFG_OFFSET + 4, 4);
    assert_eq!(h.cfg_read(data, 4), 0xa7a6_a5a4);
    // Write device_status through the window.
    aim(&mut h, 0, COMMON_DEVICE_STATUS, 1);
    h.cfg_write(data, &[STATUS_ACKNOWLEDGE, 0, 0, 0]);
    assert_eq!(h.status(), STATUS_ACKNOWLEDGE);
    assert_eq!(h.cfg_read(data, 1), u32::from(STATUS_ACKNOWLEDGE));
    // Misaligned, bad length or another BAR: no access.
    for (bar, offset, len) in [(0, 0x15, 2), (0, 0x14, 3), (0, 0x14, 8), (1, 0x14, 1)] {
        aim(&mut h, bar, offset, len);
        h.cfg_write(data, &[0, 0, 0, 0]);
        assert_eq!(h.status(), STATUS_ACKNOWLEDGE, "{bar} {offset:#x} {len}");
        assert_eq!(h.cfg_read(data, 4), 0);
    }
    // The header fields stay read-only.
    h.cfg_write(cap.at + VIRTIO_CAP_CFG_TYPE, &[9]);
    assert_eq!(h.cfg_read(cap.at + VIRTIO_CAP_CFG_TYPE, 1), 5);
}

#[test]
fn queue_setup_is_frozen_once_enabled() {
    let mut h = build(0);
    h.negotiate(OFFERED);
    h.setup_queue(0, queue_setup(0));
    h.common_write(COMMON_QUEUE_SELECT, 0, 2);
    h.common_write(COMMON_QUEUE_SIZE, 16, 2);
    h.common_write(COMMON_QUEUE_DESC, 0x8000, 8);
    h.common_write(COMMON_QUEUE_ENABLE, 0, 2);
    assert_eq!(h.common_read(COMMON_QUEUE_SIZE, 2), 256);
    assert_eq!(h.common_read(COMMON_QUEUE_DESC, 8), queue_setup(0).desc);
    assert_eq!(h.common_read(COMMON_QUEUE_ENABLE, 2), 1);
    // 64-bit accesses to the address registers work before enabling.
    h.common_write(COMMON_QUEUE_SELECT, 1, 2);
    h.common_write(COMMON_QUEUE_DRIVER, 0x1234_5678_9abc_def0, 8);
    assert_eq!(h.common_read(COMMON_QUEUE_DRIVER, 8), 0x1234_5678_9abc_def0);
    assert_eq!(h.common_read(COMMON_QUEUE_DRIVER + 4, 4), 0x1234_5678);
}

#[test]
fn constructor_rejects_what_it_cannot_present() {
    let mut d = FakeDevice::new();
    d.device_type = 0x40;
    assert!(matches!(
        try_build(d, 0),
        Err(VirtioPciError::DeviceType(0x40))
    ));
    for bad in [0u16, 3, 100, 0x8000 + 1] {
        let mut d = FakeDevice::new();
        d.max_sizes = vec![256, bad];
        assert!(
            matches!(
                try_build(d, 0),
                Err(VirtioPciError::QueueMaxSize { index: 1, size }) if size == bad
            ),
            "max size {bad}"
        );
    }
    let mut d = FakeDevice::new();
    d.max_sizes = vec![16; MAX_QUEUES + 1];
    assert!(matches!(
        try_build(d, 0),
        Err(VirtioPciError::TooManyQueues(_))
    ));
    assert!(matches!(
        try_build(FakeDevice::new(), MAX_MSIX_VECTORS + 1),
        Err(VirtioPciError::TooManyVectors(513))
    ));
    let mut d = FakeDevice::new();
    d.max_sizes = vec![16; MAX_QUEUES];
    assert!(try_build(d, MAX_MSIX_VECTORS).is_ok());
}

// ---- ioeventfds --------------------------------------------------------------

#[test]
fn ioevents_follow_bar0() {
    let mut h = build(2);
    assert!(
        h.ioevents.addresses().is_empty(),
        "nothing before the VMM asks"
    );
    h.dev.register_ioevents().unwrap();
    let at = |base: u64| vec![base + 0x3000, base + 0x3004];
    assert_eq!(h.ioevents.addresses(), at(BAR0));
    assert!(h
        .ioevents
        .registered
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.2 == NOTIFY_WRITE_LEN));
    assert_eq!(h.dev.notify_address(1), Some(BAR0 + 0x3004));
    assert_eq!(h.dev.notify_address(2), None);
    // Idempotent.
    h.dev.register_ioevents().unwrap();
    assert_eq!(h.ioevents.registered.lock().unwrap().len(), 2);

    // Sizing and restoring the BAR does not move anything.
    h.cfg_write(PCI_BAR0, &u32::MAX.to_le_bytes());
    h.cfg_write(PCI_BAR0, &(BAR0 as u32).to_le_bytes());
    assert_eq!(h.ioevents.addresses(), at(BAR0));
    assert!(h.ioevents.unregistered.lock().unwrap().is_empty());

    // The guest moves BAR 0.
    let new = 0xd000_0000u64;
    h.cfg_write(PCI_BAR0, &(new as u32).to_le_bytes());
    assert_eq!(h.ioevents.addresses(), at(new));
    assert_eq!(h.ioevents.unregistered.lock().unwrap().len(), 2);

    // The registered fds are the device's: a kick by "KVM" reaches it.
    h.bring_up(OFFERED);
    let registered = h.ioevents.registered.lock().unwrap().clone();
    let fd1 = registered.iter().find(|r| r.1 == new + 0x3004).unwrap().0;
    assert_eq!(fd1, h.dev.notify[1].as_raw_fd());
    h.dev.notify[1].write(1).unwrap();
    assert!(signalled(&h.log.lock().unwrap().activations[0].notify[1]));

    let ioevents = h.ioevents.clone();
    drop(h);
    assert!(ioevents.addresses().is_empty(), "unregistered on drop");
}

#[test]
fn failed_registration_leaves_nothing_behind() {
    let mut h = build(0);
    *h.ioevents.fail_at.lock().unwrap() = Some(BAR0 + 0x3004);
    let err = h.dev.register_ioevents().unwrap_err();
    assert!(matches!(
        err,
        VirtioPciError::IoEvent { queue: 1, addr, .. } if addr == BAR0 + 0x3004
    ));
    assert!(h.ioevents.addresses().is_empty());
    // The BAR path still delivers notifications.
    h.bring_up(OFFERED);
    h.bar_write(NOTIFY_CFG_OFFSET + 4, 1, 2);
    assert!(signalled(&h.log.lock().unwrap().activations[0].notify[1]));
    *h.ioevents.fail_at.lock().unwrap() = None;
    h.dev.register_ioevents().unwrap();
    assert_eq!(h.ioevents.addresses().len(), 2);
}
