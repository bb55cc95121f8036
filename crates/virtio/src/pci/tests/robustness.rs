//! Guest-controlled values that are wrong, odd or hostile.

use super::*;

const ALL_STATUS: u8 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;

#[test]
fn invalid_queues_fail_activation_cleanly() {
    let end = MEM_SIZE as u64;
    let good = queue_setup(0);
    let cases = [
        ("size 0", QueueSetup { size: 0, ..good }),
        ("size not a power of two", QueueSetup { size: 100, ..good }),
        ("size above the maximum", QueueSetup { size: 512, ..good }),
        (
            "descriptors outside memory",
            QueueSetup { desc: end, ..good },
        ),
        (
            "descriptors straddle the end",
            QueueSetup {
                desc: end - 0x800,
                ..good
            },
        ),
        (
            "avail ring outside memory",
            QueueSetup {
                avail: 1 << 40,
                ..good
            },
        ),
        (
            "used ring outside memory",
            QueueSetup {
                used: u64::MAX - 3,
                ..good
            },
        ),
        (
            "misaligned descriptors",
            QueueSetup {
                desc: good.desc + 8,
                ..good
            },
        ),
        (
            "misaligned used ring",
            QueueSetup {
                used: good.used + 2,
                ..good
            },
        ),
    ];
    for (what, q) in cases {
        let mut h = build(0);
        h.negotiate(OFFERED);
        h.setup_queue(0, q);
        h.set_status(ALL_STATUS);
        assert_eq!(h.activations(), 0, "{what}");
        assert!(!h.dev.is_activated(), "{what}");
        assert_ne!(h.status() & STATUS_NEEDS_RESET, 0, "{what}");
        assert!(
            matches!(h.dev.activate_error(), Some(ActivateError::BadQueues(_))),
            "{what}"
        );
        assert!(h.line.high(), "{what}: config interrupt");
        // Reset recovers.
        h.set_status(0);
        h.bring_up(OFFERED);
        assert_eq!(h.activations(), 1, "{what}");
    }
}

#[test]
fn out_of_range_queue_select_reads_zero_and_ignores_writes() {
    let mut h = build(2);
    h.negotiate(OFFERED);
    for select in [2u64, 0x3ff, 0xffff] {
        h.common_write(COMMON_QUEUE_SELECT, select, 2);
        assert_eq!(h.common_read(COMMON_QUEUE_SELECT, 2), select);
        h.common_write(COMMON_QUEUE_SIZE, 16, 2);
        h.common_write(COMMON_QUEUE_MSIX_VECTOR, 0, 2);
        h.common_write(COMMON_QUEUE_DESC, 0x1000, 8);
        h.common_write(COMMON_QUEUE_DRIVER, 0x2000, 4);
        h.common_write(COMMON_QUEUE_ENABLE, 1, 2);
        for (field, len) in [
            (COMMON_QUEUE_SIZE, 2),
            (COMMON_QUEUE_MSIX_VECTOR, 2),
            (COMMON_QUEUE_ENABLE, 2),
            (COMMON_QUEUE_NOTIFY_OFF, 2),
            (COMMON_QUEUE_DESC, 8),
            (COMMON_QUEUE_DRIVER, 4),
            (COMMON_QUEUE_DEVICE + 4, 4),
        ] {
            assert_eq!(
                h.common_read(field, len),
                0,
                "select {select} field {field:#x}"
            );
        }
    }
    // The real queues were not touched.
    for q in 0..2u16 {
        h.common_write(COMMON_QUEUE_SELECT, q.into(), 2);
        assert_eq!(h.common_read(COMMON_QUEUE_ENABLE, 2), 0);
        assert_eq!(h.common_read(COMMON_QUEUE_DESC, 8), 0);
        assert_eq!(h.common_read(COMMON_QUEUE_MSIX_VECTOR, 2), 0xffff);
    }
}

#[test]
fn read_only_fields_ignore_writes() {
    let mut h = build(0);
    h.common_write(COMMON_NUM_QUEUES, 9, 2);
    assert_eq!(h.common_read(COMMON_NUM_QUEUES, 2), 2);
    h.common_write(COMMON_CONFIG_GENERATION, 9, 1);
    assert_eq!(h.common_read(COMMON_CONFIG_GENERATION, 1), 0);
    h.common_write(COMMON_QUEUE_SELECT, 1, 2);
    h.common_write(COMMON_QUEUE_NOTIFY_OFF, 9, 2);
    assert_eq!(h.common_read(COMMON_QUEUE_NOTIFY_OFF, 2), 1);
    // The driver cannot raise NEEDS_RESET itself.
    h.set_status(STATUS_ACKNOWLEDGE | STATUS_NEEDS_RESET);
    assert_eq!(h.status(), STATUS_ACKNOWLEDGE);
    // Bits accumulate until reset; FAILED is the driver's to set.
    h.set_status(STATUS_DRIVER);
    assert_eq!(h.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    h.set_status(STATUS_FAILED);
    assert_eq!(
        h.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED
    );
}

#[test]
fn unnatural_widths_read_zero_and_are_dropped() {
    let mut h = build(0);
    h.set_status(STATUS_ACKNOWLEDGE);
    // device_status and config_generation as one 16-bit access.
    assert_eq!(h.common_read(COMMON_DEVICE_STATUS, 2), 0);
    h.common_write(COMMON_DEVICE_STATUS, 0, 2);
    h.common_write(COMMON_DEVICE_STATUS, 0, 4);
    assert_eq!(
        h.status(),
        STATUS_ACKNOWLEDGE,
        "no reset through a wide write"
    );
    // 32-bit fields at 16 bits, 16-bit fields at 8 or 32 bits.
    assert_eq!(h.common_read(COMMON_DEVICE_FEATURE + 2, 2), 0);
    assert_eq!(h.common_read(COMMON_NUM_QUEUES, 1), 0);
    assert_eq!(h.common_read(COMMON_NUM_QUEUES, 4), 0);
    h.common_write(COMMON_QUEUE_SELECT, 1, 1);
    h.common_write(COMMON_QUEUE_SELECT, 1, 4);
    assert_eq!(h.common_read(COMMON_QUEUE_SELECT, 2), 0);
    // Address halves must be dword aligned.
    h.common_write(COMMON_QUEUE_DESC + 2, 0xffff, 2);
    h.common_write(COMMON_QUEUE_DESC + 4, 0xffff, 8);
    assert_eq!(h.common_read(COMMON_QUEUE_DESC, 8), 0);
    // Past the structure, but inside its page.
    assert_eq!(h.bar_read(COMMON_CFG_SIZE, 4), 0);
    assert_eq!(h.bar_read(COMMON_CFG_SIZE - 4, 8), 0, "straddles the end");
}

/// Every offset of BAR 0 (and beyond), every width including invalid
/// ones, reads and writes of all-ones and zeros: nothing panics, other
/// BARs read as unclaimed, and the transport still works afterwards.
#[test]
fn any_access_anywhere_is_safe() {
    for nr_vectors in [0u16, 4] {
        let mut h = build(nr_vectors);
        h.dev.register_ioevents().unwrap();
        h.bring_up(OFFERED);
        let bar_size = h.dev.config().bar(VIRTIO_BAR).unwrap().size;
        let offsets =
            (0..bar_size + 16).chain([u64::MAX - 8, u64::MAX - 1, u64::MAX, 1 << 32, bar_size * 2]);
        for offset in offsets {
            for len in [0usize, 1, 2, 3, 4, 5, 8, 9, 16] {
                let mut buf = vec![0u8; len];
                h.dev.read_bar(VIRTIO_BAR, offset, &mut buf);
                // Writes of all-ones except to device_status, which would
                // reset/activate endlessly; zeros there are covered below.
                let fill = if offset == COMMON_DEVICE_STATUS {
                    0x0f
                } else {
                    0xff
                };
                h.dev.write_bar(VIRTIO_BAR, offset, &vec![fill; len]);
                h.dev.write_bar(VIRTIO_BAR, offset, &vec![0; len]);
            }
        }
        for index in [1u8, 5, 6, 255] {
            let mut buf = [0u8; 4];
            h.dev.read_bar(index, 0, &mut buf);
            assert_eq!(buf, [0xff; 4]);
            h.dev.write_bar(index, COMMON_DEVICE_STATUS, &[0]);
        }
        // Configuration space, including the PCI_CFG window aimed at
        // whatever the all-ones pattern made of it.
        for offset in (0..0x1002u16).chain([u16::MAX - 1, u16::MAX]) {
            for len in [0usize, 1, 2, 3, 4, 8] {
                let mut buf = vec![0u8; len];
                h.dev.read_config(offset, &mut buf);
                if offset != PCI_COMMAND {
                    h.dev.write_config(offset, &vec![0xff; len]);
                }
            }
        }
        // Still a working device after a reset.
        h.set_status(0);
        h.dev
            .config_mut()
            .set_bar_address(VIRTIO_BAR, BAR0)
            .unwrap();
        let before = h.activations();
        h.bring_up(OFFERED);
        assert_eq!(h.activations(), before + 1, "{nr_vectors} vectors");
        assert_eq!(h.status(), ALL_STATUS);
    }
}

#[test]
fn driver_ok_twice_activates_once() {
    let mut h = build(0);
    h.bring_up(OFFERED);
    h.set_status(ALL_STATUS);
    h.set_status(ALL_STATUS | STATUS_FAILED);
    assert_eq!(h.activations(), 1);
    // Queue setup is frozen while running.
    h.common_write(COMMON_QUEUE_SELECT, 1, 2);
    h.common_write(COMMON_QUEUE_SIZE, 2, 2);
    assert_eq!(h.common_read(COMMON_QUEUE_SIZE, 2), u64::from(QUEUE_MAX[1]));
}

#[test]
fn enabled_queue_keeps_what_the_driver_wrote() {
    // Enabled with the reset values: rings at address 0 are inside memory
    // but overlap; the transport accepts what the spec allows and the
    // device sees exactly what the driver wrote.
    let mut h = build(0);
    h.negotiate(OFFERED);
    h.common_write(COMMON_QUEUE_SELECT, 0, 2);
    h.common_write(COMMON_QUEUE_ENABLE, 1, 2);
    h.set_status(ALL_STATUS);
    let log = h.log.lock().unwrap();
    let q = &log.activations[0].queues[0];
    assert_eq!(
        (q.index, q.size, q.desc, q.avail, q.used),
        (0, 256, 0, 0, 0)
    );
}
