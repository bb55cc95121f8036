//! ACPI tables describing a tapir VM to the guest.
//!
//! The guest sees a HW-reduced ACPI 6 platform:
//!
//! ```text
//! RSDP (rev 2, at ACPI_START)
//!  └─ XSDT ─┬─ FACP (FADT rev 6) ── X_DSDT ─> DSDT (AML: \_SB_.PCI0, COMn, MBRD, \_S5_)
//!           ├─ APIC (MADT: LAPICs, IOAPIC, IRQ0 override, LINT1 NMI)
//!           └─ MCFG (ECAM for segment 0, bus 0)
//! ```
//!
//! Everything is laid out in `[ACPI_START, ACPI_START + ACPI_TABLES_SIZE)`; the
//! RSDP comes first so that a guest scanning the BIOS area finds it.

mod dsdt;
#[cfg(test)]
mod tests;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use crate::layout;

/// OEM ID written into every table header (and the RSDP).
pub const OEM_ID: [u8; 6] = *b"TAPIR ";
/// OEM table ID written into every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"TAPIRVMM";
/// OEM revision written into every table header.
pub const OEM_REVISION: u32 = 1;
/// FADT "Hypervisor Vendor Identity".
pub const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"TAPIRVMM";

/// Most `_PRT` entries one AML `Package` can hold (NumElements is a byte).
pub const MAX_PRT_ENTRIES: usize = 255;
/// Most serial ports described (named `COM1`..`COM9`).
pub const MAX_SERIAL_PORTS: usize = 9;

/// Alignment of each table inside the ACPI region.
const TABLE_ALIGN: u64 = 16;

/// Length of the common system description table header.
const HEADER_LEN: usize = 36;

// IAPC_BOOT_ARCH bits (ACPI 6.5, table 5.11).
/// "VGA Not Present".
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// "CMOS RTC Not Present".
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

// MADT.
const MADT_REVISION: u8 = 5;
const MADT_FLAG_PCAT_COMPAT: u32 = 1;
const MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const MADT_TYPE_LOCAL_APIC_NMI: u8 = 4;
/// MPS INTI flags: polarity conforming (bits 1:0 = 00), edge-triggered (bits 3:2 = 01).
const MPS_INTI_EDGE_CONFORMING: u16 = 0b0100;
/// MPS INTI flags: conforming polarity and trigger mode.
const MPS_INTI_CONFORMING: u16 = 0;
/// Processor UID meaning "all processors" in a Local APIC NMI structure.
const ACPI_UID_ALL_PROCESSORS: u8 = 0xff;

/// DSDT revision 2: integers in the AML are 64 bits wide.
const DSDT_REVISION: u8 = 2;

/// The PCI host bridge (segment 0, bus 0) as the DSDT describes it.
///
/// Every window is a `(base, size)` pair; a window of size 0 is left out of
/// `_CRS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciRootAcpi {
    /// I/O-port window for BARs. It must lie inside one of the I/O ranges
    /// the bridge decodes: `0x0000..=0x0cf7` or `0x0d00..=0xffff`.
    pub io: (u64, u64),
    /// 32-bit MMIO window (must end below 4 GiB).
    pub mmio32: (u64, u64),
    /// 64-bit MMIO window.
    pub mmio64: (u64, u64),
    /// Base of the ECAM area for bus 0 (size [`layout::PCI_ECAM_SIZE`]).
    pub ecam_base: u64,
    /// Legacy INTx routing: `(slot 0..=31, pin 0..=3 for INTA..INTD, gsi)`.
    pub prt: Vec<(u8, u8, u32)>,
}

impl Default for PciRootAcpi {
    /// The windows of [`crate::layout`], with no `_PRT` entries.
    fn default() -> Self {
        PciRootAcpi {
            io: (layout::PCI_IO_START, layout::PCI_IO_SIZE),
            mmio32: (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            mmio64: (layout::PCI_MMIO64_START, layout::PCI_MMIO64_SIZE),
            ecam_base: layout::PCI_ECAM_START,
            prt: Vec::new(),
        }
    }
}

/// What the ACPI tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; their local APIC IDs are `0..nr_cpus`.
    pub nr_cpus: u8,
    /// The PCI host bridge.
    pub pci: PciRootAcpi,
    /// 16550 UARTs as `(base port, ISA IRQ / GSI)`, e.g. COM1 = `(0x3f8, 4)`.
    /// The n-th entry becomes `\_SB_.COMn` with `_UID` n.
    pub serial_ports: Vec<(u16, u32)>,
}

/// Errors from [`create_acpi_tables`].
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// `nr_cpus` was 0.
    #[error("the ACPI tables need at least one vCPU")]
    NoCpus,
    /// The tables do not fit in the ACPI region.
    #[error("ACPI tables need {needed:#x} bytes but only {available:#x} are reserved")]
    TooLarge {
        /// Bytes the tables need (from the region start, alignment included).
        needed: u64,
        /// Bytes available in the region.
        available: u64,
    },
    /// A PCI window is malformed or not where it can be described.
    #[error("PCI {name} window {base:#x}+{size:#x} cannot be described")]
    InvalidPciWindow {
        /// Which window (`io`, `mmio32`, `mmio64` or `ecam`).
        name: &'static str,
        /// Window base.
        base: u64,
        /// Window size.
        size: u64,
    },
    /// A `_PRT` entry names a slot above 31 or a pin above 3 (INTD).
    #[error("invalid _PRT entry: slot {slot}, pin {pin}")]
    InvalidPrtEntry {
        /// Device slot.
        slot: u8,
        /// Interrupt pin (0 = INTA).
        pin: u8,
    },
    /// More `_PRT` entries than one AML package can hold.
    #[error("{0} _PRT entries, at most {MAX_PRT_ENTRIES} are supported")]
    TooManyPrtEntries(usize),
    /// More serial ports than can be named `COM1`..`COM9`.
    #[error("{0} serial ports, at most {MAX_SERIAL_PORTS} are supported")]
    TooManySerialPorts(usize),
    /// A serial port's 8-port range would run past 0xffff.
    #[error("serial port base {0:#x} leaves no room for its 8 registers")]
    InvalidSerialPort(u16),
    /// Writing to guest memory failed.
    #[error("cannot write ACPI tables to guest memory: {0}")]
    GuestMemory(#[from] GuestMemoryError),
}

/// Builds the ACPI tables for `cfg` and writes them into `mem` at
/// [`layout::ACPI_START`]. Returns the address of the RSDP (which is
/// `ACPI_START`).
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    write_tables(
        mem,
        cfg,
        GuestAddress(layout::ACPI_START),
        layout::ACPI_TABLES_SIZE,
    )
}

/// Where each table landed; used by [`write_tables`] and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Placement {
    rsdp: u64,
    dsdt: u64,
    fadt: u64,
    madt: u64,
    mcfg: u64,
    xsdt: u64,
    end: u64,
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Lays the tables out in `[start, start + size)` and writes them.
fn write_tables<M: GuestMemory>(
    mem: &M,
    cfg: &AcpiConfig,
    start: GuestAddress,
    size: u64,
) -> Result<GuestAddress, AcpiError> {
    let tables = build_tables(cfg, start.0)?;
    let needed = tables.placement.end - start.0;
    if needed > size {
        return Err(AcpiError::TooLarge {
            needed,
            available: size,
        });
    }
    for (addr, bytes) in tables.blobs() {
        mem.write_slice(bytes, GuestAddress(addr))?;
    }
    Ok(GuestAddress(tables.placement.rsdp))
}

/// All tables, serialized, with their guest addresses.
struct Tables {
    placement: Placement,
    rsdp: Vec<u8>,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    mcfg: Vec<u8>,
    dsdt: Vec<u8>,
}

impl Tables {
    fn blobs(&self) -> [(u64, &[u8]); 6] {
        let p = &self.placement;
        [
            (p.rsdp, &self.rsdp),
            (p.dsdt, &self.dsdt),
            (p.fadt, &self.fadt),
            (p.madt, &self.madt),
            (p.mcfg, &self.mcfg),
            (p.xsdt, &self.xsdt),
        ]
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Serializes every table for a region starting at `base`. The tables are
/// laid out RSDP, DSDT, FADT, MADT, MCFG, XSDT, each 16-byte aligned.
fn build_tables(cfg: &AcpiConfig, base: u64) -> Result<Tables, AcpiError> {
    if cfg.nr_cpus == 0 {
        return Err(AcpiError::NoCpus);
    }
    let dsdt = dsdt::build_dsdt(cfg)?;
    let madt = build_madt(cfg);
    let mcfg = build_mcfg(cfg);
    // The XSDT lists FADT, MADT and MCFG.
    let xsdt_len = (HEADER_LEN + 3 * 8) as u64;

    let mut cursor = base;
    let mut place = |len: u64| {
        let at = align_up(cursor, TABLE_ALIGN);
        cursor = at + len;
        at
    };
    let rsdp_at = place(Rsdp::len() as u64);
    let dsdt_at = place(dsdt.len() as u64);
    let fadt_at = place(acpi_tables::fadt::FADT::len() as u64);
    let madt_at = place(madt.len() as u64);
    let mcfg_at = place(mcfg.len() as u64);
    let xsdt_at = place(xsdt_len);
    let placement = Placement {
        rsdp: rsdp_at,
        dsdt: dsdt_at,
        fadt: fadt_at,
        madt: madt_at,
        mcfg: mcfg_at,
        xsdt: xsdt_at,
        end: cursor,
    };

    let fadt = build_fadt(placement.dsdt);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(placement.fadt);
    xsdt.add_entry(placement.madt);
    xsdt.add_entry(placement.mcfg);
    let xsdt = to_bytes(&xsdt);
    debug_assert_eq!(xsdt.len() as u64, xsdt_len);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, placement.xsdt));

    Ok(Tables {
        placement,
        rsdp,
        xsdt,
        fadt,
        madt,
        mcfg,
        dsdt,
    })
}

/// A one-byte system-I/O register.
fn io_port_gas(port: u64) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

fn build_fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = io_port_gas(layout::ACPI_RESET_PORT);
    fadt.reset_value = layout::ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_port_gas(layout::ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_port_gas(layout::ACPI_SLEEP_STATUS_PORT);
    // No 8042 (bit 1 clear: the VMM only emulates its reset line), no
    // legacy ISA devices beyond those in the DSDT, no VGA, MSI supported
    // (bit 3 clear), no CMOS RTC.
    fadt.iapc_boot_arch =
        (IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT).into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    to_bytes(&fadt.finalize())
}

fn build_madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        (HEADER_LEN + 8) as u32,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(HEADER_LEN, layout::LAPIC_START as u32);
    madt.write_u32(HEADER_LEN + 4, MADT_FLAG_PCAT_COMPAT);

    let mut entries = Vec::new();
    for id in 0..cfg.nr_cpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    let ioapic_id = cfg.nr_cpus.min(0xfe);
    IoApic::new(ioapic_id, layout::IOAPIC_START as u32, 0).to_aml_bytes(&mut entries);

    // ISA IRQ 0 (PIT) is wired to IOAPIC pin 2.
    entries.extend_from_slice(&[MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE, 10, 0, 0]);
    entries.extend_from_slice(&2u32.to_le_bytes());
    entries.extend_from_slice(&MPS_INTI_EDGE_CONFORMING.to_le_bytes());

    // NMI arrives on LINT1 of every local APIC.
    entries.extend_from_slice(&[MADT_TYPE_LOCAL_APIC_NMI, 6, ACPI_UID_ALL_PROCESSORS]);
    entries.extend_from_slice(&MPS_INTI_CONFORMING.to_le_bytes());
    entries.push(1);

    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}

fn build_mcfg(cfg: &AcpiConfig) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(cfg.pci.ecam_base, 0, 0, 0);
    to_bytes(&mcfg)
}

/// DSDT wrapper: AML body in a `DSDT` table with the right checksum.
fn dsdt_table(aml: &[u8]) -> Vec<u8> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN as u32,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(aml);
    dsdt.as_slice().to_vec()
}
