//! End-to-end: a device with MSI-X and INTx, driven the way a guest driver
//! would, through the segment's bus front-ends only (public API).

use std::io;
use std::sync::{Arc, Mutex};

use tapir_devices::{BusDevice, LevelIrq};
use tapir_pci::configuration::{PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY};
use tapir_pci::msix::{MSIX_CAP_CONTROL, MSIX_CTRL_ENABLE, PCI_CAP_ID_MSIX};
use tapir_pci::{
    intx_gsi, BarChange, BarKind, Intx, IntxPin, MsiMessage, MsiSender, MsixConfig, MsixRegion,
    PciBar, PciConfiguration, PciDevice, PciHeader, PciSegment, PciSegmentConfig,
};

const ECAM: u64 = 0xe000_0000;
const MMIO32: u64 = 0xc000_0000;

#[derive(Default)]
struct Sent(Mutex<Vec<(u16, MsiMessage)>>);

impl MsiSender for Sent {
    fn send(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
        self.0.lock().unwrap().push((vector, msg));
        Ok(())
    }
}

#[derive(Default)]
struct Line(Mutex<Vec<bool>>);

impl LevelIrq for Line {
    fn set_level(&self, high: bool) -> io::Result<()> {
        self.0.lock().unwrap().push(high);
        Ok(())
    }
}

/// A device in the shape a virtio-pci transport will have.
struct Nic {
    config: PciConfiguration,
    msix: MsixConfig,
    intx: Intx,
    moves: Vec<BarChange>,
}

impl Nic {
    fn new(sender: Arc<dyn MsiSender>, line: Arc<dyn LevelIrq>) -> Self {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            class_code: 0x02,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x0001,
            revision_id: 1,
            ..Default::default()
        });
        let kind = BarKind::Mem64 {
            prefetchable: false,
        };
        config
            .add_bar(PciBar {
                index: 0,
                size: 0x4000,
                kind,
            })
            .unwrap();
        let mut msix = MsixConfig::new(
            3,
            MsixRegion {
                bar: 0,
                offset: 0x2000,
            },
            MsixRegion {
                bar: 0,
                offset: 0x3000,
            },
            sender,
        )
        .unwrap();
        msix.add_capability(&mut config).unwrap();
        let intx = Intx::new(line, IntxPin::IntA, &mut config);
        Self {
            config,
            msix,
            intx,
            moves: Vec::new(),
        }
    }
}

impl PciDevice for Nic {
    fn name(&self) -> &str {
        "nic"
    }
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config.set_interrupt_status(self.intx.asserted());
        self.config.read(offset, data);
    }
    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let change = self.config.write(offset, data);
        self.msix.config_written(&self.config, offset, data.len());
        self.intx.command_written(self.config.command()).unwrap();
        change
    }
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if !self.msix.read_bar(index, offset, data) {
            data.fill(0);
        }
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.msix.write_bar(index, offset, data);
    }
    fn bar_moved(&mut self, change: &BarChange) {
        self.moves.push(*change);
    }
}

fn ecam(slot: u8, reg: u16) -> u64 {
    (u64::from(slot) << 15) | u64::from(reg)
}

#[test]
fn guest_drives_msix_and_intx_through_the_bus() {
    let mut seg = PciSegment::new(PciSegmentConfig {
        io_window: (0xc000, 0x4000),
        mmio32_window: (MMIO32, 0x2000_0000),
        mmio64_window: (0, 0),
        ecam_base: ECAM,
    })
    .unwrap();
    let slot = seg.reserve_slot(Some(4)).unwrap();
    assert_eq!(intx_gsi(slot, IntxPin::IntA), 20);
    let sent = Arc::new(Sent::default());
    let line = Arc::new(Line::default());
    let nic = Arc::new(Mutex::new(Nic::new(sent.clone(), line.clone())));
    let allocs = seg.add_device(slot, nic.clone()).unwrap();
    // No MMIO64 window: the 64-bit BAR lands in MMIO32.
    assert_eq!(allocs[0].address, MMIO32);

    let cfg = seg.config_mmio();
    let bars = seg.mmio_bar_window();
    let read32 = |reg: u16| {
        let mut d = [0u8; 4];
        cfg.read(ECAM, ecam(slot, reg), &mut d);
        u32::from_le_bytes(d)
    };
    assert_eq!(read32(0x3c), 0x0000_0114);
    // Walk the capability list like a driver.
    let cap = (read32(0x34) & 0xfc) as u16;
    assert_eq!(read32(cap) & 0xff, u32::from(PCI_CAP_ID_MSIX));
    assert_eq!(read32(cap + 4), 0x2000);
    assert_eq!(read32(cap + 8), 0x3000);

    // Enable memory decode and bus mastering, program vector 1, enable
    // MSI-X.
    let command = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    cfg.write(ECAM, ecam(slot, 4), &command.to_le_bytes());
    let entry = MMIO32 + 0x2000 + 16;
    bars.write(entry, 0, &0xfee0_0000u64.to_le_bytes());
    bars.write(entry, 8, &0x0000_0041u64.to_le_bytes());
    cfg.write(
        ECAM,
        ecam(slot, cap + MSIX_CAP_CONTROL),
        &MSIX_CTRL_ENABLE.to_le_bytes(),
    );
    nic.lock().unwrap().msix.notify(1).unwrap();
    assert_eq!(
        *sent.0.lock().unwrap(),
        vec![(
            1,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x41
            }
        )]
    );
    // Vector 2 is still masked: its PBA bit shows through the BAR.
    nic.lock().unwrap().msix.notify(2).unwrap();
    let mut pba = [0u8; 8];
    bars.read(MMIO32 + 0x3000, 0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1 << 2);

    // INTx: raise, then the guest sets INTx disable.
    {
        let mut n = nic.lock().unwrap();
        n.intx.set_level(true).unwrap();
    }
    assert_ne!(read32(4) & (1 << 19), 0, "interrupt status");
    let disabled = command | PCI_COMMAND_INTX_DISABLE;
    cfg.write(ECAM, ecam(slot, 4), &disabled.to_le_bytes());
    assert_eq!(*line.0.lock().unwrap(), vec![true, false]);

    // The guest moves the BAR (64-bit, both halves); the device hears.
    cfg.write(ECAM, ecam(slot, 0x10), &0xd000_0000u32.to_le_bytes());
    assert_eq!(
        nic.lock().unwrap().moves,
        vec![BarChange {
            index: 0,
            old: MMIO32,
            new: 0xd000_0000
        }]
    );
    bars.read(0xd000_0000 + 0x3000, 0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1 << 2);
}
