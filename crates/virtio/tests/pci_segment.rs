//! End-to-end: a virtio device behind the transport, plugged into a real
//! `PciSegment` and driven only through the segment's bus front-ends, as
//! the VMM wires it.

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::{BusDevice, LevelIrq};
use tapir_pci::configuration::{PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY};
use tapir_pci::msix::{MSIX_CAP_CONTROL, MSIX_CTRL_ENABLE, PCI_CAP_ID_MSIX};
use tapir_pci::{BarKind, MsiMessage, MsiSender, PciSegment, PciSegmentConfig};
use tapir_virtio::pci::layout::*;
use tapir_virtio::{
    ActivateError, ActiveQueue, IoEventRegistry, VirtioDevice, VirtioInterrupt,
    VirtioInterruptType, VirtioPciDevice,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const ECAM: u64 = 0xe000_0000;
const MMIO32: u64 = 0xc000_0000;

#[derive(Default)]
struct Seen {
    queues: Vec<(u16, EventFd)>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
}

struct Dev(Arc<Mutex<Seen>>);

impl VirtioDevice for Dev {
    fn device_type(&self) -> u32 {
        1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[64, 64]
    }
    fn features(&self) -> u64 {
        FEATURE_VERSION_1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0x5a);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        _acked: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let mut seen = self.0.lock().unwrap();
        seen.queues = queues.into_iter().map(|q| (q.index, q.notify)).collect();
        seen.interrupt = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) {}
}

#[derive(Default)]
struct Msi(Mutex<Vec<(u16, MsiMessage)>>);

impl MsiSender for Msi {
    fn send(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
        self.0.lock().unwrap().push((vector, msg));
        Ok(())
    }
}

struct Line;

impl LevelIrq for Line {
    fn set_level(&self, _high: bool) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct IoEvents(Mutex<Vec<u64>>);

impl IoEventRegistry for IoEvents {
    fn register(&self, _fd: &EventFd, addr: u64, _len: u32) -> io::Result<()> {
        self.0.lock().unwrap().push(addr);
        Ok(())
    }
    fn unregister(&self, _fd: &EventFd, addr: u64, _len: u32) -> io::Result<()> {
        self.0.lock().unwrap().retain(|a| *a != addr);
        Ok(())
    }
}

fn ecam(slot: u8, reg: u16) -> u64 {
    (u64::from(slot) << 15) | u64::from(reg)
}

#[test]
fn guest_brings_up_a_virtio_function_through_the_segment() {
    let mut seg = PciSegment::new(PciSegmentConfig {
        io_window: (0xc000, 0x4000),
        mmio32_window: (MMIO32, 0x1000_0000),
        mmio64_window: (0, 0),
        ecam_base: ECAM,
    })
    .unwrap();
    let slot = seg.reserve_slot(None).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let msi = Arc::new(Msi::default());
    let ioevents = Arc::new(IoEvents::default());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let transport = Arc::new(Mutex::new(
        VirtioPciDevice::new(
            Dev(seen.clone()),
            mem,
            3,
            msi.clone(),
            Arc::new(Line),
            ioevents.clone(),
        )
        .unwrap(),
    ));

    // VMM: plug in, then register the notify addresses.
    let allocs = seg.add_device(slot, transport.clone()).unwrap();
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].kind, BarKind::Mem32);
    assert_eq!(allocs[0].size, BAR_SIZE_MSIX);
    let bar = allocs[0].address;
    transport.lock().unwrap().register_ioevents().unwrap();
    assert_eq!(
        *ioevents.0.lock().unwrap(),
        vec![bar + 0x3000, bar + 0x3004]
    );

    // Guest: configuration through ECAM, registers through the BAR window.
    let cfg = seg.config_mmio();
    let mmio = seg.mmio_bar_window();
    let cfg_read = |reg: u16, len: usize| {
        let mut d = [0u8; 4];
        cfg.read(ECAM, ecam(slot, reg), &mut d[..len]);
        u32::from_le_bytes(d)
    };
    let cfg_write = |reg: u16, data: &[u8]| cfg.write(ECAM, ecam(slot, reg), data);
    let rd = |addr: u64, len: usize| {
        let mut d = [0u8; 8];
        mmio.read(addr, 0, &mut d[..len]);
        u64::from_le_bytes(d)
    };
    let wr = |addr: u64, v: u64, len: usize| mmio.write(addr, 0, &v.to_le_bytes()[..len]);

    assert_eq!(cfg_read(0, 4), 0x1041_1af4);
    let command = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    cfg_write(0x04, &command.to_le_bytes());

    let mut common = None;
    let mut msix_cap = None;
    let mut ptr = (cfg_read(0x34, 1) & 0xfc) as u16;
    while ptr != 0 {
        match cfg_read(ptr, 1) as u8 {
            PCI_CAP_ID_VNDR if cfg_read(ptr + VIRTIO_CAP_CFG_TYPE, 1) == 1 => {
                common = Some(u64::from(cfg_read(ptr + VIRTIO_CAP_OFFSET, 4)));
            }
            PCI_CAP_ID_MSIX => msix_cap = Some(ptr),
            _ => {}
        }
        ptr = (cfg_read(ptr + 1, 1) & 0xfc) as u16;
    }
    let common = bar + common.unwrap();

    // MSI-X: program vector 2, enable.
    let entry = bar + u64::from(MSIX_TABLE_OFFSET) + 2 * 16;
    wr(entry, 0xfee0_0000, 8);
    wr(entry + 8, 0x31, 4);
    wr(entry + 12, 0, 4);
    cfg_write(
        msix_cap.unwrap() + MSIX_CAP_CONTROL,
        &MSIX_CTRL_ENABLE.to_le_bytes(),
    );

    // virtio bring-up.
    wr(common + COMMON_DEVICE_STATUS, 0, 1);
    wr(common + COMMON_DEVICE_STATUS, 3, 1);
    wr(common + COMMON_DEVICE_FEATURE_SELECT, 1, 4);
    assert_eq!(rd(common + COMMON_DEVICE_FEATURE, 4), 1);
    wr(common + COMMON_DRIVER_FEATURE_SELECT, 1, 4);
    wr(common + COMMON_DRIVER_FEATURE, 1, 4);
    wr(common + COMMON_DEVICE_STATUS, 0xb, 1);
    assert_eq!(rd(common + COMMON_DEVICE_STATUS, 1), 0xb);
    wr(common + COMMON_QUEUE_SELECT, 1, 2);
    wr(common + COMMON_QUEUE_MSIX_VECTOR, 2, 2);
    wr(common + COMMON_QUEUE_DESC, 0x1000, 8);
    wr(common + COMMON_QUEUE_DRIVER, 0x2000, 8);
    wr(common + COMMON_QUEUE_DEVICE, 0x3000, 8);
    wr(common + COMMON_QUEUE_ENABLE, 1, 2);
    wr(common + COMMON_DEVICE_STATUS, 0xf, 1);
    assert_eq!(rd(common + COMMON_DEVICE_STATUS, 1), 0xf);
    assert!(transport.lock().unwrap().is_activated());
    assert_eq!(rd(bar + DEVICE_CFG_OFFSET, 2), 0x5a5a);

    // The device's queue 1 hears a notify written through the BAR, and
    // its interrupt reaches vector 2.
    wr(bar + NOTIFY_CFG_OFFSET + 4, 1, 2);
    let interrupt = {
        let s = seen.lock().unwrap();
        assert_eq!(s.queues.len(), 1);
        assert_eq!(s.queues[0].0, 1);
        assert_eq!(s.queues[0].1.read().unwrap(), 1);
        s.interrupt.clone().unwrap()
    };
    interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert_eq!(
        *msi.0.lock().unwrap(),
        vec![(
            2,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x31
            }
        )]
    );

    // The guest moves BAR 0: the notify addresses follow.
    let new = MMIO32 + 0x10_0000;
    cfg_write(0x10, &(new as u32).to_le_bytes());
    assert_eq!(
        *ioevents.0.lock().unwrap(),
        vec![new + 0x3000, new + 0x3004]
    );
    assert_eq!(rd(new + COMMON_NUM_QUEUES, 2), 2);

    // Dropping the function unregisters them.
    drop((seg, cfg, mmio));
    drop(transport);
    assert!(ioevents.0.lock().unwrap().is_empty());
}
