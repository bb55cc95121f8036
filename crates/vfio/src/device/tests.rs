use std::io;
use std::sync::Mutex;

use tapir_pci::configuration::PCI_COMMAND_MEMORY;
use tapir_pci::MsiMessage;

use super::*;
use crate::backend::{RegionInfo, BAR0_REGION, ROM_REGION};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    EnableIrq(u32, usize),
    DisableIrq(u32),
    Unmask,
    Map(u64, u64, u64),
    Unmap(u32),
    Route(u32, MsiMessage),
    Irqfd(u32),
    Unirqfd(u32),
    Resample(u32),
    ConfigWrite(u64, Vec<u8>),
    BarWrite(u32, u64, Vec<u8>),
}

#[derive(Default)]
struct Log(Mutex<Vec<Call>>);

impl Log {
    fn push(&self, c: Call) {
        self.0.lock().unwrap().push(c);
    }
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// The fake device: e1000e-like. BAR0 128 KiB mem32 (mmappable), BAR2 32
/// bytes I/O, BAR3 16 KiB mem32 holding the MSI-X table (5 vectors at 0)
/// and PBA (at 0x2000), an MSI capability at 0x50 (64-bit, 1 vector) and
/// MSI-X at 0xa0, INTA.
struct FakeVfio {
    config: Mutex<Vec<u8>>,
    regions: Vec<RegionInfo>,
    log: Arc<Log>,
}

fn put(cfg: &mut [u8], off: usize, bytes: &[u8]) {
    cfg[off..off + bytes.len()].copy_from_slice(bytes);
}

impl FakeVfio {
    fn new(log: Arc<Log>, msix_table: u32, msix_pba: u32, bar3_sparse: Option<Vec<Span>>) -> Self {
        let mut cfg = vec![0u8; 4096];
        put(&mut cfg, 0, &0x10d3_8086u32.to_le_bytes());
        put(&mut cfg, 4, &0x0010_0000u32.to_le_bytes()); // status: cap list
        put(&mut cfg, 8, &0x0200_0000u32.to_le_bytes());
        // The device's own BAR values (physical addresses on the host).
        put(&mut cfg, 0x10, &0xfeb0_0000u32.to_le_bytes());
        put(&mut cfg, 0x18, &0x0000_e001u32.to_le_bytes());
        put(&mut cfg, 0x1c, &0xfeb2_0000u32.to_le_bytes());
        put(&mut cfg, 0x30, &0xfeb4_0000u32.to_le_bytes());
        put(&mut cfg, 0x34, &[0x50]);
        put(&mut cfg, 0x3c, &[0x0b, 0x01, 0, 0]);
        // MSI at 0x50 -> MSI-X at 0xa0 -> PCIe-ish cap 0x10 at 0xe0.
        put(&mut cfg, 0x50, &[0x05, 0xa0]);
        put(&mut cfg, 0x52, &0x0080u16.to_le_bytes());
        put(&mut cfg, 0xa0, &[0x11, 0xe0]);
        put(&mut cfg, 0xa2, &4u16.to_le_bytes());
        put(&mut cfg, 0xa4, &msix_table.to_le_bytes());
        put(&mut cfg, 0xa8, &msix_pba.to_le_bytes());
        put(&mut cfg, 0xe0, &[0x10, 0x00, 0x02, 0x00]);
        let mut regions = vec![RegionInfo::default(); 9];
        regions[0] = RegionInfo {
            size: 0x2_0000,
            mmappable: vec![Span::new(0, 0x2_0000)],
        };
        regions[2] = RegionInfo {
            size: 0x20,
            mmappable: vec![],
        };
        regions[3] = RegionInfo {
            size: 0x4000,
            mmappable: bar3_sparse.unwrap_or_else(|| vec![Span::new(0, 0x4000)]),
        };
        regions[usize::try_from(ROM_REGION).unwrap()].size = 0x4_0000;
        regions[usize::try_from(CONFIG_REGION).unwrap()].size = 4096;
        Self {
            config: Mutex::new(cfg),
            regions,
            log,
        }
    }
}

impl VfioBackend for FakeVfio {
    fn region(&self, index: u32) -> RegionInfo {
        self.regions
            .get(index as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        if index == CONFIG_REGION {
            let cfg = self.config.lock().unwrap();
            let o = offset as usize;
            data.copy_from_slice(&cfg[o..o + data.len()]);
        } else {
            // BAR contents: the low byte of the offset, repeated.
            data.fill(offset as u8);
        }
        Ok(())
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        if index == CONFIG_REGION {
            let mut cfg = self.config.lock().unwrap();
            let o = offset as usize;
            cfg[o..o + data.len()].copy_from_slice(data);
            self.log.push(Call::ConfigWrite(offset, data.to_vec()));
        } else {
            self.log.push(Call::BarWrite(index, offset, data.to_vec()));
        }
        Ok(())
    }

    fn irq_count(&self, index: u32) -> u32 {
        match index {
            INTX_IRQ | MSI_IRQ => 1,
            MSIX_IRQ => 5,
            _ => 0,
        }
    }

    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> io::Result<()> {
        self.log.push(Call::EnableIrq(index, fds.len()));
        Ok(())
    }

    fn disable_irq(&self, index: u32) -> io::Result<()> {
        self.log.push(Call::DisableIrq(index));
        Ok(())
    }

    fn set_intx_unmask_fd(&self, _fd: &EventFd) -> io::Result<()> {
        self.log.push(Call::Unmask);
        Ok(())
    }

    fn reset(&self) -> bool {
        true
    }
}

struct FakeMapper {
    log: Arc<Log>,
    next: Mutex<u32>,
    /// Guest addresses at or above this fail (as KVM would over RAM).
    refuse_below: u64,
}

impl MemoryMapper for FakeMapper {
    unsafe fn map(&self, guest_addr: u64, len: u64, host_addr: u64) -> io::Result<u32> {
        if guest_addr < self.refuse_below {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.log.push(Call::Map(guest_addr, len, host_addr));
        let mut n = self.next.lock().unwrap();
        *n += 1;
        Ok(*n)
    }

    fn unmap(&self, slot: u32) -> io::Result<()> {
        self.log.push(Call::Unmap(slot));
        Ok(())
    }
}

struct FakeRoutes {
    log: Arc<Log>,
    next: Mutex<u32>,
}

impl InterruptRoutes for FakeRoutes {
    fn allocate_gsi(&self) -> io::Result<u32> {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        Ok(*n)
    }
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage) -> io::Result<()> {
        self.log.push(Call::Route(gsi, msg));
        Ok(())
    }
    fn remove_route(&self, _gsi: u32) -> io::Result<()> {
        Ok(())
    }
    fn register_irqfd(&self, _fd: &EventFd, gsi: u32) -> io::Result<()> {
        self.log.push(Call::Irqfd(gsi));
        Ok(())
    }
    fn unregister_irqfd(&self, _fd: &EventFd, gsi: u32) -> io::Result<()> {
        self.log.push(Call::Unirqfd(gsi));
        Ok(())
    }
    fn register_irqfd_with_resample(
        &self,
        _fd: &EventFd,
        _resample: &EventFd,
        gsi: u32,
    ) -> io::Result<()> {
        self.log.push(Call::Resample(gsi));
        Ok(())
    }
}

const HOST_BAR0: u64 = 0x7f00_0000_0000;
const HOST_BAR3: u64 = 0x7f10_0000_0000;
const SLOT: u8 = 3;

struct Rig {
    dev: VfioPciDevice,
    log: Arc<Log>,
}

fn rig_with(msix_table: u32, msix_pba: u32, sparse: Option<Vec<Span>>, refuse_below: u64) -> Rig {
    let log = Arc::new(Log::default());
    let backend = Arc::new(FakeVfio::new(log.clone(), msix_table, msix_pba, sparse));
    let mut areas = Vec::new();
    for (bar, host) in [(0u8, HOST_BAR0), (3, HOST_BAR3)] {
        for span in backend.region(u32::from(bar)).mmappable {
            // SAFETY: the fake mapper never touches host memory.
            areas.push(unsafe { MappedArea::new(bar, span, host + span.offset) });
        }
    }
    let dev = VfioPciDevice::new(
        "vfio test".into(),
        backend,
        Arc::new(FakeMapper {
            log: log.clone(),
            next: Mutex::new(100),
            refuse_below,
        }),
        Arc::new(FakeRoutes {
            log: log.clone(),
            next: Mutex::new(23),
        }),
        SLOT,
        &areas,
        0x1000,
    )
    .unwrap();
    Rig { dev, log }
}

fn rig() -> Rig {
    // Table in BAR3 at 0, PBA in BAR3 at 0x2000.
    rig_with(3, 0x2000 | 3, None, 0)
}

fn read32(dev: &mut VfioPciDevice, off: u16) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(off, &mut b);
    u32::from_le_bytes(b)
}

fn write32(dev: &mut VfioPciDevice, off: u16, v: u32) -> Option<BarChange> {
    dev.write_config(off, &v.to_le_bytes())
}

#[test]
fn intx_is_wired_at_creation() {
    let r = rig();
    let gsi = intx_gsi(SLOT, IntxPin::IntA);
    assert_eq!(
        r.log.take(),
        vec![
            Call::Resample(gsi),
            Call::EnableIrq(INTX_IRQ, 1),
            Call::Unmask
        ]
    );
    assert_eq!(r.dev.config().interrupt_pin(), Some(IntxPin::IntA));
    assert!(r.dev.summary().contains("INTx (GSI"));
    assert!(r.dev.summary().contains("MSI-X (5 vectors)"));
}

#[test]
fn bar_sizing_reads_tapirs_values() {
    let mut r = rig();
    let d = &mut r.dev;
    // Before the segment allocates: zero addresses, the device's types.
    assert_eq!(read32(d, 0x10), 0);
    assert_eq!(read32(d, 0x18), 1);
    d.config_mut().set_bar_address(0, 0xc000_0000).unwrap();
    assert_eq!(read32(d, 0x10), 0xc000_0000);
    // Sizing: all-ones then read: the region's size, not the device's register.
    assert_eq!(write32(d, 0x10, u32::MAX), None);
    assert_eq!(read32(d, 0x10), 0xfffe_0000);
    assert_eq!(write32(d, 0x18, u32::MAX), None);
    assert_eq!(read32(d, 0x18), 0xffff_ffe1);
    assert_eq!(write32(d, 0x1c, u32::MAX), None);
    assert_eq!(read32(d, 0x1c), 0xffff_c000);
    // BARs 1, 4, 5 do not exist.
    write32(d, 0x14, u32::MAX);
    assert_eq!(read32(d, 0x14), 0);
    // None of this reached the device.
    assert!(!r
        .log
        .take()
        .iter()
        .any(|c| matches!(c, Call::ConfigWrite(..))));
}

#[test]
fn rom_is_hidden_and_header_passes_through() {
    let mut r = rig();
    let d = &mut r.dev;
    assert_eq!(read32(d, 0x30), 0);
    write32(d, 0x30, u32::MAX);
    assert_eq!(read32(d, 0x30), 0);
    assert_eq!(read32(d, 0), 0x10d3_8086);
    assert_eq!(read32(d, 8), 0x0200_0000);
    // Extended space and other capabilities come from the device.
    assert_eq!(read32(d, 0xe0), 0x0002_0010);
    // Interrupt line is tapir's, pin the device's.
    d.config_mut().set_interrupt_line(19);
    assert_eq!(read32(d, 0x3c) & 0xffff, 0x0113);
    r.log.take();
    // A write to a device register goes to the device.
    let d = &mut r.dev;
    write32(d, 0xe8, 0x1234_5678);
    assert_eq!(read32(d, 0xe8), 0x1234_5678);
    assert_eq!(
        r.log.take(),
        vec![Call::ConfigWrite(
            0xe8,
            0x1234_5678u32.to_le_bytes().to_vec()
        )]
    );
    // Sub-dword reads.
    let mut b = [0u8; 2];
    r.dev.read_config(2, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0x10d3);
}

#[test]
fn command_register_maps_and_unmaps_bars() {
    let mut r = rig();
    r.dev.config_mut().set_bar_address(0, 0xc000_0000).unwrap();
    r.dev.config_mut().set_bar_address(3, 0xc002_0000).unwrap();
    r.log.take();
    // Memory decode on: BAR0 whole, BAR3 without its table and PBA pages.
    r.dev
        .write_config(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    let calls = r.log.take();
    assert!(calls.contains(&Call::ConfigWrite(4, vec![2, 0])));
    let maps: Vec<_> = calls
        .into_iter()
        .filter(|c| matches!(c, Call::Map(..)))
        .collect();
    assert_eq!(
        maps,
        vec![
            Call::Map(0xc000_0000, 0x2_0000, HOST_BAR0),
            Call::Map(0xc002_1000, 0x1000, HOST_BAR3 + 0x1000),
            Call::Map(0xc002_3000, 0x1000, HOST_BAR3 + 0x3000),
        ]
    );
    assert_eq!(r.dev.mapped_at(0), Some(0xc000_0000));
    // The guest moves BAR0: unmapped, mapped at the new place.
    let change = write32(&mut r.dev, 0x10, 0xc010_0000).unwrap();
    r.dev.bar_moved(&change);
    assert_eq!(
        r.log.take(),
        vec![
            Call::Unmap(101),
            Call::Map(0xc010_0000, 0x2_0000, HOST_BAR0)
        ]
    );
    // Decode off: everything unmapped.
    r.dev.write_config(PCI_COMMAND, &[0, 0]);
    let unmaps = r
        .log
        .take()
        .into_iter()
        .filter(|c| matches!(c, Call::Unmap(_)))
        .count();
    assert_eq!(unmaps, 3);
    assert_eq!(r.dev.mapped_at(0), None);
}

#[test]
fn bar_over_ram_is_refused_and_trapped() {
    // The mapper refuses everything below 0xc000_0000 (RAM).
    let mut r = rig_with(3, 0x2000 | 3, None, 0xc000_0000);
    r.dev.config_mut().set_bar_address(0, 0x1000_0000).unwrap();
    r.dev
        .write_config(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    assert_eq!(r.dev.mapped_at(0), None);
    // Accesses still work, through the device fd.
    let mut b = [0u8; 4];
    r.dev.read_bar(0, 0x44, &mut b);
    assert_eq!(b, [0x44; 4]);
}

#[test]
fn msix_split_layouts() {
    // Table and PBA sharing page 0 of BAR3.
    let r = rig_with(3, 0x800 | 3, None, 0);
    assert_eq!(
        r.dev.bar_layout(3),
        Some((vec![Span::new(0x1000, 0x3000)], vec![Span::new(0, 0x1000)]))
    );
    // Table in the middle of the BAR, PBA at the end.
    let r = rig_with(0x2000 | 3, 0x3ff8 | 3, None, 0);
    assert_eq!(
        r.dev.bar_layout(3),
        Some((vec![Span::new(0, 0x2000)], vec![Span::new(0x2000, 0x2000)]))
    );
    // Sparse areas that leave the table page out: abutting ones stay two
    // pieces (two host mmaps).
    let sparse = vec![Span::new(0x1000, 0x1000), Span::new(0x2000, 0x2000)];
    let r = rig_with(3, 0x800 | 3, Some(sparse), 0);
    let (mapped, trapped) = r.dev.bar_layout(3).unwrap();
    assert_eq!(
        mapped,
        vec![Span::new(0x1000, 0x1000), Span::new(0x2000, 0x2000)]
    );
    assert_eq!(trapped, vec![Span::new(0, 0x1000)]);
    // The I/O BAR is trapped whole.
    assert_eq!(
        r.dev.bar_layout(2),
        Some((vec![], vec![Span::new(0, 0x20)]))
    );
}

#[test]
fn msix_enable_and_mask_reach_vfio_and_routes() {
    let mut r = rig();
    r.log.take();
    let d = &mut r.dev;
    // Program vector 1 (table in BAR3 at 0), unmask it.
    d.write_bar(3, 16, &0xfee0_0000u32.to_le_bytes());
    d.write_bar(3, 16 + 4, &0u32.to_le_bytes());
    d.write_bar(3, 16 + 8, &0x41u32.to_le_bytes());
    d.write_bar(3, 16 + 12, &0u32.to_le_bytes());
    // Table writes never reach the device, nor routes while disabled.
    assert!(r.log.take().is_empty());
    let mut b = [0u8; 4];
    r.dev.read_bar(3, 16 + 8, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x41);
    // Enable MSI-X (message control at 0xa2).
    r.dev.write_config(0xa2, &MSIX_CTRL_ENABLE.to_le_bytes());
    let msg = MsiMessage {
        address: 0xfee0_0000,
        data: 0x41,
    };
    let gsi1 = 25; // FakeRoutes hands out 24.. in vector order.
    let calls = r.log.take();
    assert_eq!(
        &calls[..4],
        &[
            Call::DisableIrq(INTX_IRQ),
            Call::EnableIrq(MSIX_IRQ, 5),
            Call::Route(gsi1, msg),
            Call::Irqfd(gsi1),
        ]
    );
    assert!(calls.contains(&Call::ConfigWrite(
        0xa2,
        MSIX_CTRL_ENABLE.to_le_bytes().to_vec()
    )));
    // The guest reads its enable bit back; the table size is the device's.
    assert_eq!(
        read32(&mut r.dev, 0xa0) >> 16,
        u32::from(MSIX_CTRL_ENABLE | 4)
    );
    // Function mask: the irqfd goes.
    r.dev.write_config(
        0xa2,
        &(MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK).to_le_bytes(),
    );
    assert!(r.log.take().contains(&Call::Unirqfd(gsi1)));
    r.dev.write_config(0xa2, &MSIX_CTRL_ENABLE.to_le_bytes());
    assert!(r.log.take().contains(&Call::Irqfd(gsi1)));
    // Masking the vector itself.
    r.dev.write_bar(3, 16 + 12, &1u32.to_le_bytes());
    assert_eq!(r.log.take(), vec![Call::Unirqfd(gsi1)]);
    r.dev.write_bar(3, 16 + 12, &0u32.to_le_bytes());
    assert_eq!(r.log.take(), vec![Call::Irqfd(gsi1)]);
    // A new message while unmasked: the route changes, the irqfd stays.
    r.dev.write_bar(3, 16 + 8, &0x42u32.to_le_bytes());
    assert_eq!(
        r.log.take(),
        vec![Call::Route(
            gsi1,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x42
            }
        )]
    );
    // Disable: vectors unrouted, MSI-X off, INTx back.
    r.dev.write_config(0xa2, &0u16.to_le_bytes());
    let calls = r.log.take();
    assert!(calls.contains(&Call::Unirqfd(gsi1)));
    assert!(calls.contains(&Call::DisableIrq(MSIX_IRQ)));
    assert!(calls.contains(&Call::EnableIrq(INTX_IRQ, 1)));
    assert!(calls.contains(&Call::Unmask));
}

#[test]
fn msi_enable_routes_one_vector() {
    let mut r = rig();
    r.log.take();
    let d = &mut r.dev;
    write32(d, 0x54, 0xfee0_1000);
    write32(d, 0x58, 0);
    write32(d, 0x5c, 0x0000_4055);
    assert_eq!(read32(d, 0x54), 0xfee0_1000);
    d.write_config(0x52, &1u16.to_le_bytes());
    let calls = r.log.take();
    let gsi0 = 24;
    assert!(calls.contains(&Call::DisableIrq(INTX_IRQ)));
    assert!(calls.contains(&Call::EnableIrq(MSI_IRQ, 1)));
    assert!(calls.contains(&Call::Route(
        gsi0,
        MsiMessage {
            address: 0xfee0_1000,
            data: 0x4055
        }
    )));
    assert!(calls.contains(&Call::Irqfd(gsi0)));
    assert_eq!(read32(&mut r.dev, 0x50) >> 16, 0x81);
    r.dev.write_config(0x52, &0u16.to_le_bytes());
    let calls = r.log.take();
    assert!(calls.contains(&Call::Unirqfd(gsi0)));
    assert!(calls.contains(&Call::DisableIrq(MSI_IRQ)));
    assert!(calls.contains(&Call::EnableIrq(INTX_IRQ, 1)));
}

#[test]
fn out_of_range_bar_accesses_are_refused() {
    let mut r = rig();
    r.log.take();
    let d = &mut r.dev;
    let mut b = [0u8; 4];
    for (bar, off) in [
        (0u8, 0x2_0000u64),
        (0, 0x1_fffe),
        (0, u64::MAX),
        (0, u64::MAX - 2),
        (1, 0),
        (2, 0x20),
        (9, 0),
    ] {
        b = [0; 4];
        d.read_bar(bar, off, &mut b);
        assert_eq!(b, [0xff; 4], "BAR{bar} {off:#x}");
        d.write_bar(bar, off, &[1, 2, 3, 4]);
    }
    let mut odd = [0u8; 3];
    d.read_bar(0, 0, &mut odd);
    assert_eq!(odd, [0xff; 3]);
    d.write_bar(0, 0, &[0; 16]);
    // Nothing reached the device.
    assert!(r.log.take().is_empty());
    // In range: served by the device.
    r.dev.read_bar(2, 0x1c, &mut b);
    assert_eq!(b, [0x1c; 4]);
    r.dev.write_bar(0, 0x1_fffc, &[9; 4]);
    assert_eq!(
        r.log.take(),
        vec![Call::BarWrite(BAR0_REGION, 0x1_fffc, vec![9; 4])]
    );
    // PBA writes are dropped; MSI-X table accesses of a bad size read all-ones.
    r.dev.write_bar(3, 0x2000, &[1; 8]);
    assert!(r.log.take().is_empty());
    let mut two = [0u8; 2];
    r.dev.read_bar(3, 0, &mut two);
    assert_eq!(two, [0xff; 2]);
}

#[test]
fn hostile_config_writes_do_not_panic() {
    let mut r = rig();
    for off in (0..0x1000u16).step_by(2) {
        r.dev.write_config(off, &[0xff, 0xff]);
        let mut b = [0u8; 2];
        r.dev.read_config(off, &mut b);
    }
    // Huge 64-bit-ish addresses and moves with decode on.
    r.dev
        .config_mut()
        .set_bar_address(0, 0xffff_0000 - 0x2_0000 + 0x1_0000 - 0x1_0000)
        .ok();
    write32(&mut r.dev, 0x04, 0x7);
    write32(&mut r.dev, 0x10, 0xfffe_0000);
}

#[test]
fn capability_at_the_end_of_config_space() {
    // A device whose capability list points at 0xfc (MSI-X there would
    // run past 256 bytes): building the model must not panic.
    let log = Arc::new(Log::default());
    let backend = FakeVfio::new(log.clone(), 3, 0x2000 | 3, None);
    {
        let mut cfg = backend.config.lock().unwrap();
        put(&mut cfg, 0x34, &[0xfc]);
        put(&mut cfg, 0xfc, &[0x05, 0x00, 0x80, 0x01]);
    }
    let dev = VfioPciDevice::new(
        "edge".into(),
        Arc::new(backend),
        Arc::new(FakeMapper {
            log: log.clone(),
            next: Mutex::new(0),
            refuse_below: 0,
        }),
        Arc::new(FakeRoutes {
            log,
            next: Mutex::new(23),
        }),
        SLOT,
        &[],
        0x1000,
    );
    assert!(dev.is_ok());
}
