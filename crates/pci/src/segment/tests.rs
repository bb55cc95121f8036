use std::sync::Mutex;

use tapir_devices::BusDevice;

use super::*;
use crate::bar::{BarChange, PciBar};
use crate::configuration::{PciConfiguration, PciHeader, PCI_COMMAND_IO, PCI_COMMAND_MEMORY};
use crate::counters::AccessSnapshot;
use crate::device::PciDevice;

const IO: (u64, u64) = (0xc000, 0x4000);
const MMIO32: (u64, u64) = (0xc000_0000, 0x2000_0000);
const MMIO64: (u64, u64) = (0x40_0000_0000, 0x10_0000_0000);
const ECAM: u64 = 0xe000_0000;

fn seg_config() -> PciSegmentConfig {
    PciSegmentConfig {
        io_window: IO,
        mmio32_window: MMIO32,
        mmio64_window: MMIO64,
        ecam_base: ECAM,
    }
}

fn segment() -> PciSegment {
    PciSegment::new(seg_config()).unwrap()
}

/// A device that records BAR accesses and BAR moves.
struct TestDevice {
    config: PciConfiguration,
    writes: Vec<(u8, u64, Vec<u8>)>,
    moves: Vec<BarChange>,
}

impl TestDevice {
    fn new(bars: &[PciBar], pin: Option<IntxPin>) -> Self {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            class_code: 0x02,
            ..Default::default()
        });
        for bar in bars {
            config.add_bar(*bar).unwrap();
        }
        config.set_interrupt_pin(pin);
        Self {
            config,
            writes: Vec::new(),
            moves: Vec::new(),
        }
    }
}

impl PciDevice for TestDevice {
    fn name(&self) -> &str {
        "test"
    }
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        // Echo (index, low offset byte) so tests can see where it landed.
        for (i, b) in data.iter_mut().enumerate() {
            *b = if i == 0 {
                index
            } else {
                (offset as u8).wrapping_add(i as u8 - 1)
            };
        }
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.writes.push((index, offset, data.to_vec()));
    }
    fn bar_moved(&mut self, change: &BarChange) {
        self.moves.push(*change);
    }
}

fn bars() -> Vec<PciBar> {
    vec![
        PciBar {
            index: 0,
            size: 0x1000,
            kind: BarKind::Mem32,
        },
        PciBar {
            index: 1,
            size: 0x40,
            kind: BarKind::Io,
        },
        PciBar {
            index: 2,
            size: 0x4000,
            kind: BarKind::Mem64 {
                prefetchable: false,
            },
        },
    ]
}

/// Adds a TestDevice and returns it with its allocations.
fn add(seg: &mut PciSegment, slot: u8) -> (Arc<Mutex<TestDevice>>, Vec<BarAllocation>) {
    let dev = Arc::new(Mutex::new(TestDevice::new(&bars(), Some(IntxPin::IntA))));
    let allocs = seg.add_device(slot, dev.clone()).unwrap();
    (dev, allocs)
}

fn ecam_addr(slot: u8, func: u8, reg: u16) -> u64 {
    (u64::from(slot) << 15) | (u64::from(func) << 12) | u64::from(reg)
}

fn ecam_read32(seg: &PciSegment, slot: u8, reg: u16) -> u32 {
    let mut d = [0u8; 4];
    seg.config_mmio()
        .read(ECAM, ecam_addr(slot, 0, reg), &mut d);
    u32::from_le_bytes(d)
}

fn ecam_write32(seg: &PciSegment, slot: u8, reg: u16, v: u32) {
    seg.config_mmio()
        .write(ECAM, ecam_addr(slot, 0, reg), &v.to_le_bytes());
}

fn cf8(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn type1(slot: u8, func: u8, reg: u8) -> u32 {
    0x8000_0000 | (u32::from(slot) << 11) | (u32::from(func) << 8) | u32::from(reg)
}

#[test]
fn intx_routing_and_prt() {
    assert_eq!(intx_gsi(0, IntxPin::IntA), 16);
    assert_eq!(intx_gsi(1, IntxPin::IntA), 17);
    assert_eq!(intx_gsi(7, IntxPin::IntB), 16);
    assert_eq!(intx_gsi(31, IntxPin::IntD), 16 + (31 + 3) % 8);
    let prt = prt_entries();
    assert_eq!(prt.len(), 128);
    assert_eq!(prt[0], (0, 0, 16));
    assert_eq!(prt[5], (1, 1, 18));
    assert_eq!(prt[127], (31, 3, 18));
    assert!(prt.iter().all(|&(_, _, g)| (16..24).contains(&g)));
    assert_eq!(segment().prt_entries(), prt);
}

#[test]
fn slot_reservation() {
    let mut seg = segment();
    assert_eq!(seg.reserve_slot(None), Ok(1));
    assert_eq!(seg.reserve_slot(Some(3)), Ok(3));
    assert_eq!(seg.reserve_slot(None), Ok(2));
    assert_eq!(seg.reserve_slot(None), Ok(4));
    assert_eq!(seg.reserve_slot(Some(3)), Err(PciError::SlotInUse(3)));
    assert_eq!(seg.reserve_slot(Some(0)), Err(PciError::HostBridgeSlot));
    assert_eq!(
        seg.reserve_slot(Some(32)),
        Err(PciError::SlotOutOfRange(32))
    );
    assert_eq!(
        seg.reserve_slot(Some(255)),
        Err(PciError::SlotOutOfRange(255))
    );
    for _ in 5..32 {
        seg.reserve_slot(None).unwrap();
    }
    assert_eq!(seg.reserve_slot(None), Err(PciError::NoFreeSlot));
    assert!(PciError::SlotInUse(3).to_string().contains("slot 3"));
    assert!(PciError::HostBridgeSlot.to_string().contains("host bridge"));
}

#[test]
fn window_validation() {
    let bad = |f: fn(&mut PciSegmentConfig)| {
        let mut c = seg_config();
        f(&mut c);
        PciSegment::new(c).err()
    };
    assert!(matches!(
        bad(|c| c.io_window = (0xf000, 0x2000)),
        Some(PciError::InvalidWindow { name: "I/O", .. })
    ));
    assert!(matches!(
        bad(|c| c.mmio32_window = (0xf000_0000, 0x2000_0000)),
        Some(PciError::InvalidWindow { name: "MMIO32", .. })
    ));
    assert!(matches!(
        bad(|c| c.mmio64_window = (u64::MAX, 2)),
        Some(PciError::InvalidWindow { name: "MMIO64", .. })
    ));
    assert!(matches!(
        bad(|c| c.ecam_base = 0xe000_1000),
        Some(PciError::InvalidWindow { name: "ECAM", .. })
    ));
    assert!(matches!(
        bad(|c| c.ecam_base = 0xd000_0000),
        Some(PciError::InvalidWindow { name: "ECAM", .. })
    ));
    assert!(matches!(
        bad(|c| c.ecam_base = !0xfffff),
        Some(PciError::InvalidWindow { name: "ECAM", .. })
    ));
    assert!(matches!(
        bad(|c| c.mmio64_window = (0xd000_0000, 0x1000)),
        Some(PciError::InvalidWindow { name: "MMIO64", .. })
    ));
    // Empty windows are fine.
    assert!(bad(|c| c.io_window = (0, 0)).is_none());
    let seg = segment();
    assert_eq!(seg.ecam_window(), (ECAM, 0x10_0000));
    assert_eq!(seg.config(), &seg_config());
}

#[test]
fn host_bridge_visible_through_both_mechanisms() {
    let seg = segment();
    assert_eq!(ecam_read32(&seg, 0, 0), 0x0008_1b36);
    assert_eq!(ecam_read32(&seg, 0, 8) >> 8, 0x06_0000);
    let io = seg.config_io();
    io.write(0xcf8, 0, &cf8(type1(0, 0, 0)));
    let mut d = [0u8; 4];
    io.read(0xcf8, 0, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
    io.read(0xcf8, 4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
    // Byte lanes: 0xcfe reads the device ID's low byte.
    let mut w = [0u8; 2];
    io.read(0xcf8, 6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x0008);
    assert!(seg.device(0).is_some());
    assert!(seg.device(1).is_none());
    assert!(seg.device(200).is_none());
}

#[test]
fn absent_functions_read_all_ones() {
    let mut seg = segment();
    add(&mut seg, 1);
    // Empty slot, other function, other bus.
    assert_eq!(ecam_read32(&seg, 2, 0), u32::MAX);
    let mut d = [0u8; 4];
    seg.config_mmio().read(ECAM, ecam_addr(1, 1, 0), &mut d);
    assert_eq!(d, [0xff; 4]);
    seg.config_mmio().read(ECAM, 1 << 20, &mut d);
    assert_eq!(d, [0xff; 4]);
    let io = seg.config_io();
    io.write(0xcf8, 0, &cf8(type1(1, 0, 0) | (1 << 16)));
    io.read(0xcf8, 4, &mut d);
    assert_eq!(d, [0xff; 4]);
    // Enable bit clear.
    io.write(0xcf8, 0, &cf8(type1(1, 0, 0) & !0x8000_0000));
    io.read(0xcf8, 4, &mut d);
    assert_eq!(d, [0xff; 4]);
    io.write(0xcf8, 0, &cf8(type1(1, 0, 0)));
    io.read(0xcf8, 4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x1041_1af4);
    // Writes to absent functions go nowhere and do not panic.
    seg.config_mmio()
        .write(ECAM, ecam_addr(9, 0, 4), &[0xff; 4]);
    seg.config_mmio()
        .write(ECAM, ecam_addr(1, 3, 4), &[0xff; 4]);
}

#[test]
fn config_io_latch_rules() {
    let seg = segment();
    let io = seg.config_io();
    io.write(0xcf8, 0, &cf8(0x8000_0000));
    // Non-dword writes to the latch are ignored (0xcfb is the PCI
    // mechanism probe port on some chipsets).
    io.write(0xcf8, 3, &[0x01]);
    io.write(0xcf8, 0, &[0x12, 0x34]);
    io.write(0xcf8, 1, &[0xff]);
    let mut d = [0u8; 4];
    io.read(0xcf8, 0, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
    // Reserved bits read as zero.
    io.write(0xcf8, 0, &cf8(0xffff_ffff));
    io.read(0xcf8, 0, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x80ff_fffc);
    // Odd-sized latch reads, data accesses crossing 0xcff, bad sizes.
    let mut b = [0u8; 1];
    io.read(0xcf8, 1, &mut b);
    assert_eq!(b, [0xff]);
    io.write(0xcf8, 0, &cf8(type1(0, 0, 0)));
    let mut w = [0u8; 2];
    io.read(0xcf8, 7, &mut w);
    assert_eq!(w, [0xff; 2]);
    for len in [0usize, 3, 5, 8] {
        let mut buf = vec![0u8; len];
        io.read(0xcf8, 4, &mut buf);
        assert!(buf.iter().all(|b| *b == 0xff));
        io.write(0xcf8, 4, &vec![0xff; len]);
        io.read(0xcf8, 9, &mut buf);
        io.write(0xcf8, u64::MAX, &vec![0; len]);
    }
    io.read(0xcf8, u64::MAX, &mut d);
    assert_eq!(d, [0xff; 4]);
}

#[test]
fn add_device_allocates_bars_and_irq_line() {
    let mut seg = segment();
    let slot = seg.reserve_slot(None).unwrap();
    let (dev, allocs) = add(&mut seg, slot);
    assert_eq!(
        allocs,
        vec![
            BarAllocation {
                index: 0,
                kind: BarKind::Mem32,
                address: 0xc000_0000,
                size: 0x1000
            },
            BarAllocation {
                index: 1,
                kind: BarKind::Io,
                address: 0xc000,
                size: 0x40
            },
            BarAllocation {
                index: 2,
                kind: BarKind::Mem64 {
                    prefetchable: false
                },
                address: 0x40_0000_0000,
                size: 0x4000
            },
        ]
    );
    // The guest sees them in config space, with the type bits.
    assert_eq!(ecam_read32(&seg, slot, 0x10), 0xc000_0000);
    assert_eq!(ecam_read32(&seg, slot, 0x14), 0xc001);
    assert_eq!(ecam_read32(&seg, slot, 0x18), 0x4);
    assert_eq!(ecam_read32(&seg, slot, 0x1c), 0x40);
    assert_eq!(ecam_read32(&seg, slot, 0x3c), 0x0000_0111);
    assert_eq!(
        dev.lock().unwrap().config.bar_address(2),
        Some(0x40_0000_0000)
    );
    // Second device: the next naturally aligned places.
    let (_, allocs) = add(&mut seg, 5);
    assert_eq!(allocs[0].address, 0xc000_1000);
    assert_eq!(allocs[1].address, 0xc040);
    assert_eq!(allocs[2].address, 0x40_0000_4000);
    assert_eq!(ecam_read32(&seg, 5, 0x3c) & 0xff, 16 + 5);
    // Occupied and invalid slots.
    let other = Arc::new(Mutex::new(TestDevice::new(&[], None)));
    assert_eq!(
        seg.add_device(5, other.clone()),
        Err(PciError::SlotInUse(5))
    );
    assert_eq!(
        seg.add_device(0, other.clone()),
        Err(PciError::HostBridgeSlot)
    );
    assert_eq!(
        seg.add_device(40, other.clone()),
        Err(PciError::SlotOutOfRange(40))
    );
    // A device without a pin gets line 0xff; add_device reserves the slot.
    seg.add_device(2, other).unwrap();
    assert_eq!(ecam_read32(&seg, 2, 0x3c), 0x0000_00ff);
    assert_eq!(seg.reserve_slot(Some(2)), Err(PciError::SlotInUse(2)));
    assert_eq!(seg.reserve_slot(None), Ok(3));
}

#[test]
fn bar_allocation_failure_is_atomic() {
    let mut cfg = seg_config();
    cfg.io_window = (0xc000, 0x40);
    cfg.mmio64_window = (0, 0);
    let mut seg = PciSegment::new(cfg).unwrap();
    let (_, allocs) = add(&mut seg, 1);
    // With no MMIO64 window, the 64-bit BAR falls back to MMIO32.
    assert_eq!(allocs[2].address, 0xc000_0000);
    assert_eq!(allocs[0].address, 0xc000_4000);
    // The I/O window is now full: the next device fails as a whole...
    let dev = Arc::new(Mutex::new(TestDevice::new(&bars(), None)));
    assert_eq!(
        seg.add_device(2, dev),
        Err(PciError::BarAllocation {
            slot: 2,
            index: 1,
            size: 0x40,
            window: "I/O"
        })
    );
    assert!(seg.device(2).is_none());
    // ...and consumed nothing from the other windows.
    let mem_only = Arc::new(Mutex::new(TestDevice::new(&bars()[..1], None)));
    assert_eq!(seg.add_device(2, mem_only).unwrap()[0].address, 0xc000_5000);
    let huge = PciBar {
        index: 0,
        size: 1 << 31,
        kind: BarKind::Mem32,
    };
    let too_big = Arc::new(Mutex::new(TestDevice::new(&[huge], None)));
    assert!(matches!(
        seg.add_device(3, too_big),
        Err(PciError::BarAllocation {
            window: "MMIO32",
            ..
        })
    ));
}

#[test]
fn bar_window_dispatch_honours_command_register() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    let mmio = seg.mmio_bar_window();
    let io = seg.io_bar_window();
    assert_eq!(mmio.space(), BarSpace::Memory);
    let mut d = [0u8; 4];
    // Decoding is off after add_device.
    mmio.read(MMIO32.0, 0x10, &mut d);
    assert_eq!(d, [0xff; 4]);
    mmio.write(MMIO32.0, 0x10, &[1, 2, 3, 4]);
    assert!(dev.lock().unwrap().writes.is_empty());

    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_MEMORY));
    mmio.read(MMIO32.0, 0x10, &mut d);
    assert_eq!(d, [0, 0x10, 0x11, 0x12]);
    mmio.write(MMIO32.0, 0xffc, &[9; 4]);
    mmio.read(MMIO64.0, 0x3ff8, &mut d);
    assert_eq!(d, [2, 0xf8, 0xf9, 0xfa]);
    // I/O BAR still off.
    io.read(IO.0, 0, &mut d);
    assert_eq!(d, [0xff; 4]);
    // Enable I/O with a byte write to the command register.
    seg.config_mmio().write(
        ECAM,
        ecam_addr(1, 0, 4),
        &[(PCI_COMMAND_IO | PCI_COMMAND_MEMORY) as u8],
    );
    let mut b = [0u8; 1];
    io.read(IO.0, 0x3f, &mut b);
    assert_eq!(b, [1]);
    io.write(IO.0, 0x10, &[7]);
    // Accesses straddling the end of a BAR, or past it, are unclaimed.
    mmio.read(MMIO32.0, 0xffe, &mut d);
    assert_eq!(d, [0xff; 4]);
    io.read(IO.0, 0x40, &mut b);
    assert_eq!(b, [0xff]);
    assert_eq!(
        dev.lock().unwrap().writes,
        vec![(0, 0xffc, vec![9; 4]), (1, 0x10, vec![7])]
    );
    // Disabling memory decode removes the memory BARs only.
    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_IO));
    mmio.read(MMIO32.0, 0, &mut d);
    assert_eq!(d, [0xff; 4]);
    io.read(IO.0, 0, &mut b);
    assert_eq!(b, [1]);
}

#[test]
fn guest_bar_move_updates_map_and_notifies_device() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    ecam_write32(
        &seg,
        1,
        0x04,
        u32::from(PCI_COMMAND_MEMORY | PCI_COMMAND_IO),
    );
    // Sizing: all-ones, read back, restore. Nothing moves.
    ecam_write32(&seg, 1, 0x10, u32::MAX);
    assert_eq!(ecam_read32(&seg, 1, 0x10), 0xffff_f000);
    ecam_write32(&seg, 1, 0x10, 0xc000_0000);
    assert!(dev.lock().unwrap().moves.is_empty());
    let mmio = seg.mmio_bar_window();
    let mut d = [0u8; 4];
    mmio.read(MMIO32.0, 0, &mut d);
    assert_eq!(d[0], 0);
    // While sizing, the BAR keeps decoding its programmed address.
    ecam_write32(&seg, 1, 0x10, u32::MAX);
    mmio.read(MMIO32.0, 0, &mut d);
    assert_eq!(d[0], 0);
    ecam_write32(&seg, 1, 0x10, 0xc000_0000);

    // Move BAR 0 within MMIO32.
    ecam_write32(&seg, 1, 0x10, 0xc800_0000);
    assert_eq!(
        dev.lock().unwrap().moves,
        vec![BarChange {
            index: 0,
            old: 0xc000_0000,
            new: 0xc800_0000
        }]
    );
    mmio.read(MMIO32.0, 0, &mut d);
    assert_eq!(d, [0xff; 4]);
    mmio.read(MMIO32.0, 0x0800_0004, &mut d);
    assert_eq!(d, [0, 4, 5, 6]);
    // Move the 64-bit BAR via its upper half.
    ecam_write32(&seg, 1, 0x1c, 0x41);
    mmio.read(0x41_0000_0000, 0, &mut d);
    assert_eq!(d[0], 2);
    mmio.read(MMIO64.0, 0, &mut d);
    assert_eq!(d, [0xff; 4]);
    // Move the I/O BAR with the type-1 mechanism.
    let cfg_io = seg.config_io();
    cfg_io.write(0xcf8, 0, &cf8(type1(1, 0, 0x14)));
    cfg_io.write(0xcf8, 4, &0xd000u32.to_le_bytes());
    let mut b = [0u8; 1];
    seg.io_bar_window().read(0xd000, 0, &mut b);
    assert_eq!(b, [1]);
    assert_eq!(dev.lock().unwrap().moves.len(), 3);
}

#[test]
fn overlapping_bars_and_two_devices() {
    let mut seg = segment();
    let (a, _) = add(&mut seg, 1);
    let (b, _) = add(&mut seg, 2);
    for slot in [1, 2] {
        ecam_write32(&seg, slot, 0x04, u32::from(PCI_COMMAND_MEMORY));
    }
    let mmio = seg.mmio_bar_window();
    mmio.write(MMIO32.0, 0, &[1]);
    mmio.write(MMIO32.0 + 0x1000, 0, &[2]);
    assert_eq!(a.lock().unwrap().writes, vec![(0, 0, vec![1])]);
    assert_eq!(b.lock().unwrap().writes, vec![(0, 0, vec![2])]);
    // The guest programs B's BAR 0 over A's: one of them answers and
    // nothing panics; moving it away restores A.
    ecam_write32(&seg, 2, 0x10, 0xc000_0000);
    let mut d = [0u8; 1];
    mmio.read(MMIO32.0, 0x10, &mut d);
    assert_eq!(d, [0]);
    ecam_write32(&seg, 2, 0x10, 0xc100_0000);
    mmio.write(MMIO32.0, 0x20, &[3]);
    assert_eq!(a.lock().unwrap().writes.last(), Some(&(0, 0x20, vec![3])));
    assert_eq!(seg.state.bars.read().unwrap().len(), 4);
}

#[test]
fn bar_window_rejects_bad_accesses() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_MEMORY));
    let mmio = seg.mmio_bar_window();
    for len in [0usize, 9, 16] {
        let mut buf = vec![0u8; len];
        mmio.read(MMIO32.0, 0, &mut buf);
        assert!(buf.iter().all(|b| *b == 0xff));
        mmio.write(MMIO32.0, 0, &buf);
    }
    let mut d = [0u8; 8];
    mmio.read(u64::MAX, 1, &mut d);
    assert_eq!(d, [0xff; 8]);
    mmio.write(u64::MAX, u64::MAX, &d);
    // An 8-byte access inside the BAR is forwarded.
    mmio.read(MMIO32.0, 8, &mut d);
    assert_eq!(d[0], 0);
    assert!(dev.lock().unwrap().writes.is_empty());
}

#[test]
fn invalid_config_accesses_do_not_reach_devices() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    let ecam = seg.config_mmio();
    let before = dev.lock().unwrap().config.clone();
    for (reg, len) in [
        (0x04u16, 0usize),
        (0x04, 3),
        (0x04, 5),
        (0x04, 8),
        (0x06, 4),
        (0x07, 2),
    ] {
        ecam.write(ECAM, ecam_addr(1, 0, reg), &vec![0xff; len]);
        let mut buf = vec![0u8; len];
        ecam.read(ECAM, ecam_addr(1, 0, reg), &mut buf);
        assert!(buf.iter().all(|b| *b == 0xff), "{reg:#x}+{len}");
    }
    // The last dword of extended space is reachable (and reads zero).
    assert_eq!(ecam_read32(&seg, 1, 0xffc), 0);
    let mut d = [0u8; 4];
    ecam.read(ECAM, ECAM_BUS_SIZE - 2, &mut d);
    assert_eq!(d, [0xff; 4]);
    ecam.read(ECAM, u64::MAX, &mut d);
    ecam.write(ECAM, u64::MAX, &d);
    assert_eq!(dev.lock().unwrap().config.regs, before.regs);
}

#[test]
fn poisoned_device_lock_does_not_wedge_the_bus() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    let d2 = dev.clone();
    let _ = std::thread::spawn(move || {
        let _g = d2.lock().unwrap();
        panic!("device model bug");
    })
    .join();
    assert!(dev.is_poisoned());
    assert_eq!(ecam_read32(&seg, 1, 0), 0x1041_1af4);
    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_MEMORY));
    let mut d = [0u8; 1];
    seg.mmio_bar_window().read(MMIO32.0, 0, &mut d);
    assert_eq!(d, [0]);
}

#[test]
fn front_ends_are_shared_across_threads() {
    let mut seg = segment();
    let (dev, _) = add(&mut seg, 1);
    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_MEMORY));
    let mmio = seg.mmio_bar_window();
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let mmio = mmio.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    mmio.write(MMIO32.0, i * 4, &[t]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(dev.lock().unwrap().writes.len(), 400);
}

#[test]
fn accesses_are_counted_per_slot_and_unclaimed_ones_are_not() {
    let mut seg = segment();
    add(&mut seg, 1);
    add(&mut seg, 2);
    let (c1, c2) = (
        seg.access_counters(1).unwrap(),
        seg.access_counters(2).unwrap(),
    );
    assert!(seg.access_counters(PCI_NUM_SLOTS).is_none());
    ecam_write32(&seg, 1, 0x04, u32::from(PCI_COMMAND_MEMORY));
    let _ = ecam_read32(&seg, 1, 0x00);
    let _ = ecam_read32(&seg, 2, 0x00);
    let mmio = seg.mmio_bar_window();
    let mut d = [0u8; 4];
    mmio.read(MMIO32.0, 0x10, &mut d);
    mmio.write(MMIO32.0, 0x10, &[1; 4]);
    mmio.write(MMIO32.0, 0x14, &[1; 4]);
    // Slot 2 does not decode yet: its BARs see nothing, and nothing counts.
    mmio.write(MMIO32.0 + 0x1000, 0, &[2]);
    // An empty slot's configuration space: not counted either.
    let _ = ecam_read32(&seg, 3, 0x00);
    assert_eq!(
        c1.snapshot(),
        AccessSnapshot {
            bar_reads: 1,
            bar_writes: 2,
            config_reads: 1,
            config_writes: 1,
        }
    );
    assert_eq!(
        c2.snapshot(),
        AccessSnapshot {
            config_reads: 1,
            ..AccessSnapshot::default()
        }
    );
    assert_eq!(c1.snapshot().named()[1], ("bar_writes", 2));
}
