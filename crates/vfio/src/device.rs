//! [`VfioPciDevice`]: an assigned host function as a [`PciDevice`].
//!
//! Configuration space is the device's, read and written through VFIO's
//! config region, except what tapir owns:
//!
//! | registers | who answers |
//! |---|---|
//! | BARs (0x10..0x28) | tapir's [`PciConfiguration`] (its addresses, the region sizes) |
//! | expansion ROM (0x30) | reads 0, writes dropped |
//! | interrupt line/pin (0x3c, 0x3d) | tapir (line = the slot's INTx GSI) |
//! | MSI capability body | tapir's [`MsiCap`]; writes also go to the device |
//! | MSI-X message control | the enable and function-mask bits are tapir's; writes also go to the device |
//! | everything else (command, status, other capabilities, extended space) | the device |
//!
//! The command register is also mirrored into tapir's configuration, whose
//! memory/I/O decode bits the segment's BAR windows honour.

use std::sync::Arc;

use tapir_pci::configuration::{
    PCI_BAR0, PCI_CAPABILITY_LIST, PCI_CLASS_PROG, PCI_COMMAND, PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN, PCI_ROM_ADDRESS, PCI_STATUS, PCI_STATUS_CAP_LIST,
};
use tapir_pci::msix::{
    MSIX_CAP_CONTROL, MSIX_CAP_PBA, MSIX_CAP_TABLE, MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK,
    MSIX_CTRL_TABLE_SIZE, PCI_CAP_ID_MSIX,
};
use tapir_pci::{
    intx_gsi, BarChange, BarKind, IntxPin, MsiSender, MsixConfig, MsixRegion, PciBar,
    PciConfiguration, PciDevice, PciHeader,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::{VfioBackend, CONFIG_REGION, INTX_IRQ, MSIX_IRQ, MSI_IRQ};
use crate::msi::{MsiCap, Vectors, PCI_CAP_ID_MSI};
use crate::split::{split_bar, Span};
use crate::{InterruptRoutes, MemoryMapper};

/// Errors building the device model (each says what about the device).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Configuration space could not be read.
    #[error("reading its configuration space: {0}")]
    Config(std::io::Error),
    /// A BAR tapir cannot describe.
    #[error("BAR {index} ({size:#x} bytes): {source}")]
    Bar {
        index: u8,
        size: u64,
        source: tapir_pci::PciConfigError,
    },
    /// The MSI-X capability points outside the device's BARs.
    #[error("its MSI-X {what} (BAR {bar}, offset {offset:#x}) is outside that BAR")]
    MsixLocation {
        what: &'static str,
        bar: u8,
        offset: u32,
    },
    /// The MSI-X capability is unusable.
    #[error("its MSI-X capability: {0}")]
    Msix(#[from] tapir_pci::MsixError),
    /// Interrupt set-up (eventfds, GSIs, irqfds, VFIO).
    #[error("setting up its interrupts: {0}")]
    Irq(std::io::Error),
}

/// An area of a BAR that the host mmap'ed: `span` of BAR `bar` lives at
/// host address `host_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedArea {
    bar: u8,
    span: Span,
    host_addr: u64,
}

impl MappedArea {
    /// Describes an mmap'ed BAR area.
    ///
    /// # Safety
    ///
    /// `host_addr..host_addr + span.size` must be a shared mapping of the
    /// device's region that stays mapped for as long as the VM may run
    /// (the device maps it into the guest).
    pub unsafe fn new(bar: u8, span: Span, host_addr: u64) -> Self {
        Self {
            bar,
            span,
            host_addr,
        }
    }
}

/// A piece of a BAR mapped into the guest: BAR offset, length, host address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    offset: u64,
    size: u64,
    host_addr: u64,
}

#[derive(Debug)]
struct BarState {
    index: u8,
    size: u64,
    kind: BarKind,
    /// What can be mapped into the guest.
    pieces: Vec<Piece>,
    /// What is trapped (for the log line and tests).
    trapped: Vec<Span>,
    /// Where the pieces are mapped now, and their slots.
    mapped_at: Option<u64>,
    slots: Vec<u32>,
}

#[derive(Debug)]
struct Msix {
    cap: u16,
    config: MsixConfig,
    table_bar: u8,
    table: Span,
    pba_bar: u8,
    pba: Span,
}

/// Which interrupt VFIO delivers now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IrqMode {
    None,
    Intx,
    Msi(usize),
    Msix,
}

struct IntxFds {
    trigger: EventFd,
    resample: EventFd,
    gsi: u32,
}

/// An assigned host PCI function. See the module documentation.
pub struct VfioPciDevice {
    name: String,
    config: PciConfiguration,
    config_size: u64,
    backend: Arc<dyn VfioBackend>,
    mapper: Arc<dyn MemoryMapper>,
    bars: Vec<BarState>,
    msi: Option<MsiCap>,
    msix: Option<Msix>,
    vectors: Arc<Vectors>,
    intx: Option<IntxFds>,
    mode: IrqMode,
    rom_size: u64,
}

impl std::fmt::Debug for VfioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioPciDevice")
            .field("name", &self.name)
            .field("bars", &self.bars)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Reads configuration bytes from the device (all-ones where it cannot).
fn device_config(backend: &dyn VfioBackend, size: u64, offset: u64, data: &mut [u8]) {
    let inside = offset
        .checked_add(data.len() as u64)
        .is_some_and(|end| end <= size);
    if !inside || backend.read(CONFIG_REGION, offset, data).is_err() {
        data.fill(0xff);
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Finds capability `id` in a conventional configuration space image
/// (bounded walk: a looping list ends).
fn find_capability(cfg: &[u8], id: u8) -> Option<u16> {
    if u16_at(cfg, usize::from(PCI_STATUS)) & PCI_STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut ptr = cfg[usize::from(PCI_CAPABILITY_LIST)] & !3;
    for _ in 0..48 {
        if ptr < 0x40 {
            return None;
        }
        if cfg[usize::from(ptr)] == id {
            return Some(u16::from(ptr));
        }
        ptr = cfg[usize::from(ptr) + 1] & !3;
    }
    None
}

impl VfioPciDevice {
    /// Builds the model of the function behind `backend`, to sit in PCI
    /// slot `slot`. `areas` are the BAR areas the host mmap'ed; `page_size`
    /// the host's page size. INTx is wired (irqfd on the slot's GSI, VFIO's
    /// unmask eventfd as its resample fd) and enabled when the function
    /// has an interrupt pin.
    pub fn new(
        name: String,
        backend: Arc<dyn VfioBackend>,
        mapper: Arc<dyn MemoryMapper>,
        routes: Arc<dyn InterruptRoutes>,
        slot: u8,
        areas: &[MappedArea],
        page_size: u64,
    ) -> Result<Self, DeviceError> {
        let config_size = backend.region(CONFIG_REGION).size;
        // Conventional space, with slack so that a capability at the very
        // end (a device's odd pointer) is read as zeros, not out of bounds.
        let mut raw = [0u8; 256 + 16];
        if config_size < 256 {
            return Err(DeviceError::Config(std::io::Error::other(format!(
                "the config region has {config_size} bytes"
            ))));
        }
        backend
            .read(CONFIG_REGION, 0, &mut raw[..256])
            .map_err(DeviceError::Config)?;
        let header = PciHeader {
            vendor_id: u16_at(&raw, 0),
            device_id: u16_at(&raw, 2),
            revision_id: raw[8],
            prog_if: raw[usize::from(PCI_CLASS_PROG)],
            subclass: raw[0x0a],
            class_code: raw[0x0b],
            subsystem_vendor_id: u16_at(&raw, 0x2c),
            subsystem_id: u16_at(&raw, 0x2e),
            multifunction: false,
        };
        let mut config = PciConfiguration::new(&header);

        // BARs: sizes from VFIO, types from the device's registers.
        let mut bars = Vec::new();
        let mut index = 0u8;
        while index < 6 {
            let reg = u32_at(&raw, usize::from(PCI_BAR0) + 4 * usize::from(index));
            let size = backend.region(u32::from(index)).size;
            let is64 = reg & 1 == 0 && (reg >> 1) & 3 == 2;
            if size == 0 {
                index += if is64 { 2 } else { 1 };
                continue;
            }
            let kind = if reg & 1 != 0 {
                BarKind::Io
            } else if is64 {
                BarKind::Mem64 {
                    prefetchable: reg & 8 != 0,
                }
            } else {
                BarKind::Mem32
            };
            let min = if kind.is_io() { 4 } else { 16 };
            let bar_size = size.max(min).checked_next_power_of_two().unwrap_or(size);
            config
                .add_bar(PciBar {
                    index,
                    size: bar_size,
                    kind,
                })
                .map_err(|source| DeviceError::Bar {
                    index,
                    size,
                    source,
                })?;
            bars.push(BarState {
                index,
                size,
                kind,
                pieces: Vec::new(),
                trapped: vec![Span::new(0, size)],
                mapped_at: None,
                slots: Vec::new(),
            });
            index += if is64 { 2 } else { 1 };
        }

        // MSI-X: tapir emulates the table.
        let msix_cap = find_capability(&raw, PCI_CAP_ID_MSIX);
        let msix_geometry = msix_cap.map(|cap| {
            let c = usize::from(cap);
            let control = u16_at(&raw, c + usize::from(MSIX_CAP_CONTROL));
            let table = u32_at(&raw, c + usize::from(MSIX_CAP_TABLE));
            let pba = u32_at(&raw, c + usize::from(MSIX_CAP_PBA));
            (cap, (control & MSIX_CTRL_TABLE_SIZE) + 1, table, pba)
        });
        let msi = find_capability(&raw, PCI_CAP_ID_MSI)
            .map(|cap| MsiCap::new(cap, u16_at(&raw, usize::from(cap) + 2)));
        let msi_count = if backend.irq_count(MSI_IRQ) > 0 {
            msi.as_ref().map_or(0, MsiCap::capable)
        } else {
            0
        };
        let msix_count = msix_geometry.map_or(0, |g| usize::from(g.1));
        let vectors = Arc::new(
            Vectors::new(routes.clone(), msi_count.max(msix_count)).map_err(DeviceError::Irq)?,
        );
        let msix = match msix_geometry {
            Some((cap, count, table, pba)) => {
                let (table_bar, table_off) = ((table & 7) as u8, table & !7);
                let (pba_bar, pba_off) = ((pba & 7) as u8, pba & !7);
                let sender: Arc<dyn MsiSender> = vectors.clone();
                let config = MsixConfig::new(
                    count,
                    MsixRegion {
                        bar: table_bar,
                        offset: table_off,
                    },
                    MsixRegion {
                        bar: pba_bar,
                        offset: pba_off,
                    },
                    sender,
                )?;
                let table = Span::new(u64::from(table_off), config.table_size());
                let pba = Span::new(u64::from(pba_off), config.pba_size());
                for (what, bar, span) in [("table", table_bar, table), ("PBA", pba_bar, pba)] {
                    let fits = bars
                        .iter()
                        .any(|b| b.index == bar && !b.kind.is_io() && span.end() <= b.size);
                    if !fits {
                        return Err(DeviceError::MsixLocation {
                            what,
                            bar,
                            offset: span.offset as u32,
                        });
                    }
                }
                Some(Msix {
                    cap,
                    config,
                    table_bar,
                    table,
                    pba_bar,
                    pba,
                })
            }
            None => None,
        };

        // Which parts of each memory BAR go straight to the guest.
        for bar in bars.iter_mut().filter(|b| !b.kind.is_io()) {
            let mut holes = Vec::new();
            if let Some(m) = &msix {
                if m.table_bar == bar.index {
                    holes.push(m.table);
                }
                if m.pba_bar == bar.index {
                    holes.push(m.pba);
                }
            }
            let host: Vec<&MappedArea> = areas.iter().filter(|a| a.bar == bar.index).collect();
            let mmappable: Vec<Span> = host.iter().map(|a| a.span).collect();
            let split = split_bar(bar.size, &mmappable, &holes, page_size);
            for span in &split.mapped {
                // A mapped span may cross two host areas (abutting sparse
                // areas): one piece per area.
                for a in &host {
                    let start = span.offset.max(a.span.offset);
                    let end = span.end().min(a.span.end());
                    if start < end {
                        bar.pieces.push(Piece {
                            offset: start,
                            size: end - start,
                            host_addr: a.host_addr + (start - a.span.offset),
                        });
                    }
                }
            }
            bar.trapped = split.trapped;
        }

        // Interrupt pin and INTx.
        let pin = IntxPin::from_register_value(raw[usize::from(PCI_INTERRUPT_PIN)])
            .filter(|_| backend.irq_count(INTX_IRQ) > 0);
        config.set_interrupt_pin(pin);
        let intx = match pin {
            Some(pin) => {
                let gsi = intx_gsi(slot, pin);
                let trigger = EventFd::new(EFD_NONBLOCK).map_err(DeviceError::Irq)?;
                let resample = EventFd::new(EFD_NONBLOCK).map_err(DeviceError::Irq)?;
                routes
                    .register_irqfd_with_resample(&trigger, &resample, gsi)
                    .map_err(DeviceError::Irq)?;
                Some(IntxFds {
                    trigger,
                    resample,
                    gsi,
                })
            }
            None => None,
        };
        let rom_size = backend.region(crate::backend::ROM_REGION).size;
        let mut dev = Self {
            name,
            config,
            config_size,
            backend,
            mapper,
            bars,
            msi,
            msix,
            vectors,
            intx,
            mode: IrqMode::None,
            rom_size,
        };
        dev.set_mode(dev.wanted_mode()).map_err(DeviceError::Irq)?;
        Ok(dev)
    }

    /// One line for the log: BARs (mapped and trapped ranges), interrupts.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for b in &self.bars {
            let kind = match b.kind {
                BarKind::Io => "io",
                BarKind::Mem32 => "mem32",
                BarKind::Mem64 { .. } => "mem64",
            };
            let list = |v: &mut dyn Iterator<Item = (u64, u64)>| {
                v.map(|(o, n)| format!("{o:#x}+{n:#x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mapped = list(&mut b.pieces.iter().map(|p| (p.offset, p.size)));
            let trapped = list(&mut b.trapped.iter().map(|t| (t.offset, t.size)));
            s += &format!(
                "BAR{} {kind} {:#x} mapped [{mapped}] trapped [{trapped}]; ",
                b.index, b.size
            );
        }
        let mut irqs = Vec::new();
        if let Some(i) = &self.intx {
            irqs.push(format!("INTx (GSI {})", i.gsi));
        }
        if let Some(m) = &self.msi {
            irqs.push(format!("MSI ({} vectors)", m.capable()));
        }
        if let Some(m) = &self.msix {
            irqs.push(format!("MSI-X ({} vectors)", m.config.num_vectors()));
        }
        if irqs.is_empty() {
            irqs.push("none".into());
        }
        s + "interrupts: " + &irqs.join(", ")
    }

    /// Whether BAR `index`'s pieces are mapped into the guest now, and where.
    pub fn mapped_at(&self, index: u8) -> Option<u64> {
        self.bars
            .iter()
            .find(|b| b.index == index)
            .and_then(|b| b.mapped_at.filter(|_| !b.slots.is_empty()))
    }

    /// BAR `index`'s mapped and trapped spans.
    pub fn bar_layout(&self, index: u8) -> Option<(Vec<Span>, Vec<Span>)> {
        let b = self.bars.iter().find(|b| b.index == index)?;
        let mapped = b
            .pieces
            .iter()
            .map(|p| Span::new(p.offset, p.size))
            .collect();
        Some((mapped, b.trapped.clone()))
    }

    fn wanted_mode(&self) -> IrqMode {
        if self.msix.as_ref().is_some_and(|m| m.config.enabled()) {
            IrqMode::Msix
        } else if let Some(m) = self.msi.as_ref().filter(|m| m.enabled()) {
            IrqMode::Msi(m.vectors().min(self.vectors.len()))
        } else if self.intx.is_some() {
            IrqMode::Intx
        } else {
            IrqMode::None
        }
    }

    /// Switches VFIO to interrupt mode `new` (VFIO wants one at a time).
    fn set_mode(&mut self, new: IrqMode) -> std::io::Result<()> {
        if self.mode == new {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.mode, IrqMode::None);
        let off = match old {
            IrqMode::None => Ok(()),
            IrqMode::Intx => self.backend.disable_irq(INTX_IRQ),
            IrqMode::Msi(_) => {
                self.vectors.mask_all();
                self.backend.disable_irq(MSI_IRQ)
            }
            IrqMode::Msix => {
                self.vectors.mask_all();
                self.backend.disable_irq(MSIX_IRQ)
            }
        };
        if let Err(e) = off {
            log::warn!("{}: turning {old:?} off: {e}", self.name);
        }
        match new {
            IrqMode::None => {}
            IrqMode::Intx => {
                if let Some(i) = &self.intx {
                    self.backend.enable_irq(INTX_IRQ, &[&i.trigger])?;
                    self.backend.set_intx_unmask_fd(&i.resample)?;
                }
            }
            IrqMode::Msi(n) => self.backend.enable_irq(MSI_IRQ, &self.vectors.fds(n))?,
            IrqMode::Msix => {
                let n = self.msix.as_ref().map_or(0, |m| m.config.num_vectors());
                self.backend
                    .enable_irq(MSIX_IRQ, &self.vectors.fds(usize::from(n)))?
            }
        }
        self.mode = new;
        Ok(())
    }

    fn update_mode(&mut self) {
        let want = self.wanted_mode();
        if let Err(e) = self.set_mode(want) {
            log::warn!("{}: switching interrupts to {want:?}: {e}", self.name);
        }
    }

    /// Routes the MSI vectors as the capability now says (and switches
    /// VFIO to or from MSI).
    fn apply_msi(&mut self) {
        self.update_mode();
        let (IrqMode::Msi(n), Some(msi)) = (self.mode, &self.msi) else {
            return;
        };
        for v in 0..n {
            if let Err(e) = self.vectors.update(v, msi.message(v), msi.masked(v)) {
                log::warn!("{}: MSI vector {v}: {e}", self.name);
            }
        }
    }

    fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| m.config.enabled())
    }

    /// Maps or unmaps the BARs' pieces as the command register and the
    /// BAR addresses now say.
    fn sync_mappings(&mut self) {
        let memory_on = self.config.memory_space_enabled();
        for b in self.bars.iter_mut().filter(|b| !b.pieces.is_empty()) {
            let want = self.config.bar_address(b.index).filter(|_| memory_on);
            if b.mapped_at == want {
                continue;
            }
            for slot in b.slots.drain(..) {
                if let Err(e) = self.mapper.unmap(slot) {
                    log::warn!("{}: unmapping BAR{} (slot {slot}): {e}", self.name, b.index);
                }
            }
            b.mapped_at = want;
            let Some(base) = want else { continue };
            for p in &b.pieces {
                let Some(gpa) = base.checked_add(p.offset) else {
                    continue;
                };
                // SAFETY: pieces lie inside MappedAreas, whose host ranges
                // stay mapped while the VM may run (MappedArea::new).
                match unsafe { self.mapper.map(gpa, p.size, p.host_addr) } {
                    Ok(slot) => b.slots.push(slot),
                    Err(e) => log::warn!(
                        "{}: cannot map BAR{} {:#x}+{:#x} at guest {gpa:#x} ({e}); its accesses are trapped",
                        self.name,
                        b.index,
                        p.offset,
                        p.size
                    ),
                }
            }
        }
    }

    fn bar_state(&self, index: u8) -> Option<&BarState> {
        self.bars.iter().find(|b| b.index == index)
    }

    /// Whether a BAR access is inside the BAR.
    fn bar_access_ok(&self, index: u8, offset: u64, len: usize) -> bool {
        matches!(len, 1 | 2 | 4 | 8)
            && self.bar_state(index).is_some_and(|b| {
                offset
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= b.size)
            })
    }

    /// tapir's value for configuration byte `off`, if tapir owns it.
    fn emulated_byte(&self, off: u16) -> Option<u8> {
        let bar_end = PCI_BAR0 + 24;
        if (PCI_BAR0..bar_end).contains(&off) {
            return Some(self.config.read_u8(off));
        }
        if (PCI_ROM_ADDRESS..PCI_ROM_ADDRESS + 4).contains(&off) {
            return Some(0);
        }
        if off == PCI_INTERRUPT_LINE || off == PCI_INTERRUPT_PIN {
            return Some(self.config.read_u8(off));
        }
        if let Some(msi) = self.msi.as_ref().filter(|m| m.owns(off)) {
            return Some(msi.read_byte(off));
        }
        if let Some(m) = &self.msix {
            // Message control: the table size the device has, tapir's
            // enable and function-mask bits.
            let ctrl = m.cap + MSIX_CAP_CONTROL;
            if off == ctrl || off == ctrl + 1 {
                let value = (m.config.num_vectors() - 1) | self.msix_control_bits();
                return Some(value.to_le_bytes()[usize::from(off - ctrl)]);
            }
        }
        None
    }

    fn msix_control_bits(&self) -> u16 {
        self.msix.as_ref().map_or(0, |m| {
            (if m.config.enabled() {
                MSIX_CTRL_ENABLE
            } else {
                0
            }) | (if m.config.function_masked() {
                MSIX_CTRL_FUNCTION_MASK
            } else {
                0
            })
        })
    }
}

impl PciDevice for VfioPciDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        let dword = offset & !3;
        let mut bytes = [0u8; 4];
        let all_emulated = (0..4).all(|i| self.emulated_byte(dword + i).is_some());
        if !all_emulated {
            device_config(
                self.backend.as_ref(),
                self.config_size,
                u64::from(dword),
                &mut bytes,
            );
        }
        for i in 0..4u16 {
            if let Some(b) = self.emulated_byte(dword + i) {
                bytes[usize::from(i)] = b;
            }
        }
        let start = usize::from(offset & 3);
        match bytes.get(start..start + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let start = u64::from(offset);
        let end = start + data.len() as u64;
        let touches = |lo: u16, len: u16| start < u64::from(lo + len) && end > u64::from(lo);

        // BARs: tapir's only.
        if touches(PCI_BAR0, 24) {
            return self.config.write(offset, data);
        }
        // The ROM is hidden.
        if touches(PCI_ROM_ADDRESS, 4) {
            return None;
        }
        // Interrupt line: tapir's; pin and the rest of the dword are read-only.
        if touches(PCI_INTERRUPT_LINE, 4) {
            if offset == PCI_INTERRUPT_LINE {
                self.config.write(offset, &data[..1]);
            }
            return None;
        }
        let command = touches(PCI_COMMAND, 2);
        if command {
            self.config.write(offset, data);
        }
        // MSI: tapir's copy decides; the device gets the write too.
        let mut msi_written = false;
        if let Some(msi) = self.msi.as_mut() {
            for (i, b) in data.iter().enumerate() {
                let off = offset + i as u16;
                if msi.owns(off) {
                    msi.write_byte(off, *b);
                    msi_written = true;
                }
            }
        }
        if msi_written {
            self.apply_msi();
        }
        // MSI-X message control: enable and function mask.
        let mut msix_control = None;
        if let Some(m) = &self.msix {
            let ctrl = m.cap + MSIX_CAP_CONTROL;
            if touches(ctrl, 2) {
                let mut word = (self.msix_control_bits()).to_le_bytes();
                for (i, b) in data.iter().enumerate() {
                    let off = offset + i as u16;
                    if off >= ctrl && off < ctrl + 2 {
                        word[usize::from(off - ctrl)] = *b;
                    }
                }
                msix_control = Some(u16::from_le_bytes(word));
            }
        }
        if let Some(control) = msix_control {
            let was = self.msix_enabled();
            let now = control & MSIX_CTRL_ENABLE != 0;
            if now && !was {
                // VFIO first (its eventfds), then the routes.
                if let Err(e) = self.set_mode(IrqMode::Msix) {
                    log::warn!("{}: enabling MSI-X: {e}", self.name);
                }
            }
            if let Some(m) = self.msix.as_mut() {
                m.config.set_control(control);
            }
            if !now && was {
                self.update_mode();
                if self.msi.as_ref().is_some_and(MsiCap::enabled) {
                    self.apply_msi();
                }
            }
        }
        // Everything else (and the MSI/MSI-X writes) reaches the device.
        let inside = end <= self.config_size;
        if inside {
            if let Err(e) = self.backend.write(CONFIG_REGION, start, data) {
                log::debug!("{}: config write at {offset:#x}: {e}", self.name);
            }
        }
        if command {
            self.sync_mappings();
        }
        None
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if !self.bar_access_ok(index, offset, data.len()) {
            data.fill(0xff);
            return;
        }
        if let Some(m) = &self.msix {
            if m.table_bar == index && offset >= m.table.offset && offset < m.table.end() {
                m.config.read_table(offset - m.table.offset, data);
                return;
            }
        }
        if self.backend.read(u32::from(index), offset, data).is_err() {
            data.fill(0xff);
        }
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        if !self.bar_access_ok(index, offset, data.len()) {
            return;
        }
        if let Some(m) = self.msix.as_mut() {
            if m.table_bar == index && offset >= m.table.offset && offset < m.table.end() {
                m.config.write_table(offset - m.table.offset, data);
                return;
            }
            if m.pba_bar == index && offset >= m.pba.offset && offset < m.pba.end() {
                // The PBA is read-only.
                return;
            }
        }
        if let Err(e) = self.backend.write(u32::from(index), offset, data) {
            log::debug!("{}: BAR{index} write at {offset:#x}: {e}", self.name);
        }
    }

    fn bar_moved(&mut self, _change: &BarChange) {
        self.sync_mappings();
    }
}

impl VfioPciDevice {
    /// Size of the expansion ROM region (hidden from the guest).
    pub fn rom_size(&self) -> u64 {
        self.rom_size
    }
}

#[cfg(test)]
mod tests;
