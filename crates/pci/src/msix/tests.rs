use std::sync::Mutex;

use super::*;
use crate::configuration::{PciHeader, PCI_CAPABILITY_LIST};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Send(u16, MsiMessage),
    Route(u16, MsiMessage, bool),
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    fail: Mutex<bool>,
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    fn sends(&self) -> Vec<Event> {
        self.take()
            .into_iter()
            .filter(|e| matches!(e, Event::Send(..)))
            .collect()
    }
}

impl MsiSender for Recorder {
    fn send(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
        if *self.fail.lock().unwrap() {
            return Err(io::Error::other("no route"));
        }
        self.events.lock().unwrap().push(Event::Send(vector, msg));
        Ok(())
    }

    fn update_route(&self, vector: u16, msg: MsiMessage, masked: bool) -> io::Result<()> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Route(vector, msg, masked));
        Ok(())
    }
}

const TABLE: MsixRegion = MsixRegion { bar: 1, offset: 0 };
const PBA: MsixRegion = MsixRegion {
    bar: 1,
    offset: 0x800,
};

fn setup(n: u16) -> (MsixConfig, PciConfiguration, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let mut msix = MsixConfig::new(n, TABLE, PBA, rec.clone()).unwrap();
    let mut cfg = PciConfiguration::new(&PciHeader::default());
    msix.add_capability(&mut cfg).unwrap();
    (msix, cfg, rec)
}

fn write_ctrl(msix: &mut MsixConfig, cfg: &mut PciConfiguration, ctrl: u16) {
    let off = msix.cap_offset().unwrap() + MSIX_CAP_CONTROL;
    cfg.write(off, &ctrl.to_le_bytes());
    msix.config_written(cfg, off, 2);
}

fn program(msix: &mut MsixConfig, v: u64, addr: u64, data: u32, masked: bool) {
    let base = v * MSIX_TABLE_ENTRY_SIZE;
    msix.write_table(base, &addr.to_le_bytes());
    msix.write_table(base + ENTRY_DATA, &data.to_le_bytes());
    msix.write_table(base + ENTRY_VECTOR_CTRL, &u32::from(masked).to_le_bytes());
}

fn msg(address: u64, data: u32) -> MsiMessage {
    MsiMessage { address, data }
}

#[test]
fn capability_layout() {
    let rec = Arc::new(Recorder::default());
    let pba = MsixRegion {
        bar: 2,
        offset: 0x1000,
    };
    let mut msix = MsixConfig::new(3, TABLE, pba, rec).unwrap();
    let mut cfg = PciConfiguration::new(&PciHeader::default());
    let off = msix.add_capability(&mut cfg).unwrap();
    assert_eq!(cfg.read_u8(PCI_CAPABILITY_LIST), off as u8);
    assert_eq!(cfg.find_capability(PCI_CAP_ID_MSIX), Some(off));
    // ID 0x11, next 0, table size 3 - 1.
    assert_eq!(cfg.read_dword(usize::from(off / 4)), 0x0002_0011);
    assert_eq!(cfg.read_dword(usize::from(off / 4) + 1), 0x0000_0001);
    assert_eq!(cfg.read_dword(usize::from(off / 4) + 2), 0x0000_1002);
    // Only enable and function mask are writable.
    cfg.write(off + MSIX_CAP_CONTROL, &0xffffu16.to_le_bytes());
    assert_eq!(cfg.read_u16(off + MSIX_CAP_CONTROL), 0xc002);
    cfg.write(off + MSIX_CAP_TABLE, &[0xff; 4]);
    assert_eq!(cfg.read_dword(usize::from(off / 4) + 1), 1);
    assert_eq!(msix.table_size(), 48);
    assert_eq!(msix.pba_size(), 8);
    assert_eq!(msix.table_region(), TABLE);
    assert_eq!(msix.pba_region(), pba);
}

#[test]
fn constructor_validation() {
    let rec: Arc<dyn MsiSender> = Arc::new(Recorder::default());
    assert!(matches!(
        MsixConfig::new(0, TABLE, PBA, rec.clone()),
        Err(MsixError::VectorCount(0))
    ));
    assert!(matches!(
        MsixConfig::new(2049, TABLE, PBA, rec.clone()),
        Err(MsixError::VectorCount(2049))
    ));
    assert!(MsixConfig::new(
        2048,
        TABLE,
        MsixRegion {
            bar: 1,
            offset: 0x8000
        },
        rec.clone()
    )
    .is_ok());
    let bad_bar = MsixRegion { bar: 6, offset: 0 };
    assert!(matches!(
        MsixConfig::new(1, bad_bar, PBA, rec.clone()),
        Err(MsixError::Location { what: "table", .. })
    ));
    let unaligned = MsixRegion { bar: 0, offset: 4 };
    assert!(matches!(
        MsixConfig::new(1, TABLE, unaligned, rec.clone()),
        Err(MsixError::Location { what: "PBA", .. })
    ));
    // 128 vectors = 2 KiB of table: a PBA at 0x7f8 overlaps it.
    let overlap = MsixRegion {
        bar: 1,
        offset: 0x7f8,
    };
    assert!(matches!(
        MsixConfig::new(128, TABLE, overlap, rec.clone()),
        Err(MsixError::Overlap)
    ));
    assert!(MsixConfig::new(128, TABLE, PBA, rec).is_ok());
}

#[test]
fn table_reads_and_writes() {
    let (mut msix, _cfg, rec) = setup(4);
    let mut d = [0u8; 4];
    msix.read_table(ENTRY_VECTOR_CTRL, &mut d);
    assert_eq!(u32::from_le_bytes(d), MSIX_VECTOR_MASKED);
    program(&mut msix, 2, 0xfee0_1000, 0x4041, true);
    assert_eq!(msix.message(2), Some(msg(0xfee0_1000, 0x4041)));
    let mut q = [0u8; 8];
    msix.read_table(2 * MSIX_TABLE_ENTRY_SIZE, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0xfee0_1000);
    msix.read_table(2 * MSIX_TABLE_ENTRY_SIZE + 8, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x1_0000_4041);
    // Reserved vector control bits and address bits 1:0 read as zero.
    msix.write_table(ENTRY_VECTOR_CTRL, &0xffff_fffeu32.to_le_bytes());
    msix.write_table(ENTRY_ADDR_LO, &0xfee0_0003u32.to_le_bytes());
    msix.read_table(ENTRY_VECTOR_CTRL, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0);
    assert_eq!(msix.vector_masked(0), Some(false));
    assert_eq!(msix.message(0).unwrap().address, 0xfee0_0000);
    // Every change to an entry updates its route (masked: MSI-X is off).
    let routes = rec.take();
    assert!(routes.contains(&Event::Route(2, msg(0xfee0_1000, 0x4041), true)));
    assert!(routes.iter().all(|e| matches!(e, Event::Route(_, _, true))));
    // Rewriting the same value is not a change.
    msix.write_table(ENTRY_VECTOR_CTRL, &0u32.to_le_bytes());
    assert!(rec.take().is_empty());
}

#[test]
fn bad_table_and_pba_accesses() {
    let (mut msix, _cfg, rec) = setup(2);
    let before: Vec<_> = (0..2).map(|v| msix.message(v)).collect();
    for (off, len) in [
        (0u64, 0usize),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 5),
        (0, 16),
        (2, 4),
        (4, 8),
        (32, 4),
        (28, 8),
        (u64::MAX - 3, 4),
        (u64::MAX, 8),
    ] {
        let mut buf = vec![0u8; len];
        msix.read_table(off, &mut buf);
        assert!(buf.iter().all(|b| *b == 0xff), "table {off:#x}+{len}");
        msix.write_table(off, &vec![0; len]);
        let mut buf = vec![0u8; len];
        msix.read_pba(off.saturating_add(8), &mut buf);
        assert!(buf.iter().all(|b| *b == 0xff), "pba {off:#x}+{len}");
    }
    let after: Vec<_> = (0..2).map(|v| msix.message(v)).collect();
    assert_eq!(before, after);
    assert_eq!(msix.vector_masked(1), Some(true));
    assert!(rec.take().is_empty());
    // Out-of-range queries.
    assert_eq!(msix.vector_masked(2), None);
    assert_eq!(msix.pending(2), None);
    assert_eq!(msix.message(u16::MAX), None);
}

#[test]
fn notify_sends_when_enabled_and_unmasked() {
    let (mut msix, mut cfg, rec) = setup(2);
    program(&mut msix, 1, 0xfee0_0000, 0x31, false);
    write_ctrl(&mut msix, &mut cfg, MSIX_CTRL_ENABLE);
    assert!(msix.enabled());
    // Enabling re-routes every vector; vector 1 is now live.
    let routes = rec.take();
    assert!(routes.contains(&Event::Route(1, msg(0xfee0_0000, 0x31), false)));
    assert!(routes.contains(&Event::Route(0, MsiMessage::default(), true)));
    msix.notify(1).unwrap();
    assert_eq!(rec.sends(), vec![Event::Send(1, msg(0xfee0_0000, 0x31))]);
    assert_eq!(msix.pending(1), Some(false));
}

#[test]
fn masked_vector_sets_pending_and_unmask_delivers() {
    let (mut msix, mut cfg, rec) = setup(70);
    write_ctrl(&mut msix, &mut cfg, MSIX_CTRL_ENABLE);
    program(&mut msix, 65, 0xfee0_2000, 0x55, true);
    rec.take();
    msix.notify(65).unwrap();
    assert!(rec.sends().is_empty());
    assert_eq!(msix.pending(65), Some(true));
    // Bit 1 of the second PBA qword.
    let mut q = [0u8; 8];
    msix.read_pba(8, &mut q);
    assert_eq!(u64::from_le_bytes(q), 1 << 1);
    let mut d = [0u8; 4];
    msix.read_pba(8, &mut d);
    assert_eq!(u32::from_le_bytes(d), 2);
    msix.read_pba(12, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0);
    // The PBA is read-only.
    assert!(msix.write_bar(PBA.bar, u64::from(PBA.offset) + 8, &[0; 8]));
    assert_eq!(msix.pending(65), Some(true));
    // Unmask: delivered once, pending cleared.
    msix.write_table(65 * 16 + ENTRY_VECTOR_CTRL, &0u32.to_le_bytes());
    assert_eq!(rec.sends(), vec![Event::Send(65, msg(0xfee0_2000, 0x55))]);
    assert_eq!(msix.pending(65), Some(false));
    msix.write_table(65 * 16 + ENTRY_VECTOR_CTRL, &1u32.to_le_bytes());
    msix.write_table(65 * 16 + ENTRY_VECTOR_CTRL, &0u32.to_le_bytes());
    assert!(rec.sends().is_empty());
}

#[test]
fn function_mask_and_disable_hold_interrupts() {
    let (mut msix, mut cfg, rec) = setup(2);
    program(&mut msix, 0, 0xfee0_0000, 0x20, false);
    // Disabled: pending.
    msix.notify(0).unwrap();
    assert_eq!(msix.pending(0), Some(true));
    // Enable with the function masked: still pending.
    write_ctrl(
        &mut msix,
        &mut cfg,
        MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK,
    );
    assert!(msix.function_masked());
    assert!(rec.sends().is_empty());
    msix.notify(0).unwrap();
    assert!(rec.sends().is_empty());
    // Clearing the function mask delivers the (single) pending message.
    write_ctrl(&mut msix, &mut cfg, MSIX_CTRL_ENABLE);
    assert_eq!(rec.sends(), vec![Event::Send(0, msg(0xfee0_0000, 0x20))]);
    assert_eq!(msix.pending(0), Some(false));
    // Disabling marks every route masked.
    write_ctrl(&mut msix, &mut cfg, 0);
    assert!(rec
        .take()
        .iter()
        .all(|e| matches!(e, Event::Route(_, _, true))));
}

#[test]
fn control_write_detection() {
    let (mut msix, mut cfg, _rec) = setup(1);
    let cap = msix.cap_offset().unwrap();
    // A dword write over the capability header also covers control.
    cfg.write(cap, &0x8000_0000u32.to_le_bytes());
    msix.config_written(&cfg, cap, 4);
    assert!(msix.enabled());
    // A byte write to the high control byte.
    cfg.write(cap + 3, &[0x40]);
    msix.config_written(&cfg, cap + 3, 1);
    assert!(!msix.enabled());
    assert!(msix.function_masked());
    // Writes elsewhere are not looked at.
    cfg.set_raw(cap + 2, &[0, 0]).unwrap();
    msix.config_written(&cfg, cap + 4, 4);
    msix.config_written(&cfg, cap - 4, 4);
    assert!(msix.function_masked());
    msix.config_written(&cfg, u16::MAX, 4);
}

#[test]
fn out_of_range_notify_and_send_errors() {
    let (mut msix, mut cfg, rec) = setup(2);
    assert!(matches!(
        msix.notify(2),
        Err(MsixError::VectorOutOfRange {
            vector: 2,
            count: 2
        })
    ));
    assert!(msix.notify(u16::MAX).is_err());
    program(&mut msix, 0, 0xfee0_0000, 1, false);
    write_ctrl(&mut msix, &mut cfg, MSIX_CTRL_ENABLE);
    *rec.fail.lock().unwrap() = true;
    assert!(matches!(
        msix.notify(0),
        Err(MsixError::Send { vector: 0, .. })
    ));
    // A failed delivery on a guest path is counted, not propagated.
    msix.write_table(ENTRY_VECTOR_CTRL, &1u32.to_le_bytes());
    msix.notify(0).unwrap();
    msix.write_table(ENTRY_VECTOR_CTRL, &0u32.to_le_bytes());
    assert_eq!(msix.delivery_errors(), 1);
}

#[test]
fn bar_routing() {
    let (mut msix, _cfg, _rec) = setup(4);
    let mut d = [0u8; 4];
    assert!(msix.read_bar(1, 12, &mut d));
    assert_eq!(u32::from_le_bytes(d), 1);
    assert!(msix.write_bar(1, 12, &0u32.to_le_bytes()));
    assert_eq!(msix.vector_masked(0), Some(false));
    assert!(msix.read_bar(1, 0x800, &mut d));
    assert_eq!(d, [0; 4]);
    // Other BARs, the gap between table and PBA, and far offsets.
    assert!(!msix.read_bar(0, 12, &mut d));
    assert!(!msix.read_bar(1, 0x40, &mut d));
    assert!(!msix.write_bar(1, 0x40, &d));
    assert!(!msix.read_bar(1, u64::MAX, &mut d));
    assert!(!msix.read_bar(9, 0, &mut d));
    // An access that starts in the table and runs past it is claimed but
    // reads as all-ones.
    let mut q = [0u8; 8];
    assert!(msix.read_bar(1, 0x3c, &mut q));
    assert_eq!(q, [0xff; 8]);
}
