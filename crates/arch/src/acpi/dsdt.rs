//! The DSDT: AML describing the PCI host bridge, the serial ports, the
//! motherboard resources and the soft-off sleep state.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Arg, CreateDWordField, Device, EISAName, Else, Equal, If,
    Interrupt, Memory32Fixed, Method, Name, NotEqual, Or, Package, Path, ResourceTemplate, Return,
    Scope, Uuid, IO, ONE, ZERO,
};
use acpi_tables::{Aml, AmlSink};

use super::{dsdt_table, AcpiConfig, AcpiError, MAX_PRT_ENTRIES, MAX_SERIAL_PORTS};
use crate::layout;

/// UUID of the PCI host bridge `_OSC` (PCI Firmware Specification).
pub(super) const PCI_HOST_BRIDGE_OSC_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";

/// `_OSC` CDW1 bit: unrecognised UUID.
const OSC_CDW1_UNKNOWN_UUID: u8 = 1 << 2;
/// `_OSC` CDW1 bit: unrecognised revision.
const OSC_CDW1_UNKNOWN_REVISION: u8 = 1 << 3;

/// The I/O ranges the host bridge forwards (everything but 0xcf8..=0xcff,
/// the type-1 configuration ports).
const PCI_IO_RANGES: [(u16, u16); 2] = [(0x0000, 0x0cf7), (0x0d00, 0xffff)];

/// Already-encoded AML.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn encode(aml: &dyn Aml) -> RawAml {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    RawAml(bytes)
}

/// `IRQNoFlags () {irq}`: small IRQ descriptor, edge-triggered, active-high,
/// exclusive (ISA IRQs 0..=15 only).
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22); // small item, type 4 (IRQ), length 2
        sink.word(1u16 << self.0);
    }
}

/// Builds the complete DSDT table (header included).
pub(super) fn build_dsdt(cfg: &AcpiConfig) -> Result<Vec<u8>, AcpiError> {
    let pci0 = pci_host_bridge(cfg)?;
    let serial = serial_ports(cfg)?;
    let mbrd = motherboard_resources(cfg)?;

    let mut sb_children: Vec<&dyn Aml> = vec![&pci0];
    sb_children.extend(serial.iter().map(|d| d as &dyn Aml));
    sb_children.push(&mbrd);
    let sb = Scope::new("\\_SB_".into(), sb_children);

    let slp_typ = layout::ACPI_S5_SLP_TYP;
    let s5 = Name::new(
        "_S5_".into(),
        &Package::new(vec![&slp_typ, &slp_typ, &ZERO, &ZERO]),
    );

    let mut aml = Vec::new();
    sb.to_aml_bytes(&mut aml);
    s5.to_aml_bytes(&mut aml);
    Ok(dsdt_table(&aml))
}

/// Checks that `(base, size)` is a well-formed window and returns its last
/// address, or `None` for an empty window.
fn window_end(name: &'static str, (base, size): (u64, u64)) -> Result<Option<u64>, AcpiError> {
    if size == 0 {
        return Ok(None);
    }
    base.checked_add(size - 1)
        .map(Some)
        .ok_or(AcpiError::InvalidPciWindow { name, base, size })
}

/// `\_SB_.PCI0`: the PCIe host bridge for segment 0, bus 0.
fn pci_host_bridge(cfg: &AcpiConfig) -> Result<RawAml, AcpiError> {
    let pci = &cfg.pci;

    // The BAR I/O window must be inside what the bridge forwards.
    if let Some(end) = window_end("io", pci.io)? {
        let inside = PCI_IO_RANGES
            .iter()
            .any(|&(lo, hi)| pci.io.0 >= u64::from(lo) && end <= u64::from(hi));
        if !inside {
            return Err(AcpiError::InvalidPciWindow {
                name: "io",
                base: pci.io.0,
                size: pci.io.1,
            });
        }
    }

    let bus = AddressSpace::<u16>::new_bus_number(0, 0);
    let io_ranges: Vec<AddressSpace<u16>> = PCI_IO_RANGES
        .iter()
        .map(|&(lo, hi)| AddressSpace::new_io(lo, hi, None))
        .collect();
    let mut crs_children: Vec<&dyn Aml> = vec![&bus];
    crs_children.extend(io_ranges.iter().map(|r| r as &dyn Aml));

    let mmio32 = match window_end("mmio32", pci.mmio32)? {
        None => None,
        Some(end) => {
            let (base, size) = pci.mmio32;
            let invalid = AcpiError::InvalidPciWindow {
                name: "mmio32",
                base,
                size,
            };
            let base = u32::try_from(base).map_err(|_| invalid)?;
            let end = u32::try_from(end).map_err(|_| AcpiError::InvalidPciWindow {
                name: "mmio32",
                base: u64::from(base),
                size,
            })?;
            Some(AddressSpace::<u32>::new_memory(
                AddressSpaceCacheable::NotCacheable,
                true,
                base,
                end,
                None,
            ))
        }
    };
    if let Some(m) = &mmio32 {
        crs_children.push(m);
    }
    let mmio64 = window_end("mmio64", pci.mmio64)?.map(|end| {
        AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::Cacheable,
            true,
            pci.mmio64.0,
            end,
            None,
        )
    });
    if let Some(m) = &mmio64 {
        crs_children.push(m);
    }

    let hid = Name::new("_HID".into(), &EISAName::new("PNP0A08"));
    let cid = Name::new("_CID".into(), &EISAName::new("PNP0A03"));
    let adr = Name::new("_ADR".into(), &ZERO);
    let seg = Name::new("_SEG".into(), &ZERO);
    let uid = Name::new("_UID".into(), &ZERO);
    let bbn = Name::new("_BBN".into(), &ZERO);
    let cca = Name::new("_CCA".into(), &ONE);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(crs_children));
    let osc = osc_method();
    let prt = prt(cfg)?;

    Ok(encode(&Device::new(
        "PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &cca, &crs, &osc, &prt],
    )))
}

/// `_OSC` for the host bridge:
///
/// ```text
/// Method (_OSC, 4) {
///     CreateDWordField (Arg3, 0, CDW1)
///     If (Arg0 == ToUUID ("33DB4D5B-...")) {
///         If (Arg1 != 1) { CDW1 |= 0x08 }   // unrecognised revision
///     } Else {
///         CDW1 |= 0x04                      // unrecognised UUID
///     }
///     Return (Arg3)                         // every requested control granted
/// }
/// ```
fn osc_method() -> RawAml {
    let cdw1: Path = "CDW1".into();
    let create_cdw1 = CreateDWordField::new(&cdw1, &Arg(3), &ZERO);
    let uuid = Uuid::new(PCI_HOST_BRIDGE_OSC_UUID);
    let known_uuid = Equal::new(&Arg(0), &uuid);
    let bad_revision = NotEqual::new(&Arg(1), &ONE);
    let flag_revision = Or::new(&cdw1, &cdw1, &OSC_CDW1_UNKNOWN_REVISION);
    let check_revision = If::new(&bad_revision, vec![&flag_revision]);
    let if_known = If::new(&known_uuid, vec![&check_revision]);
    let flag_uuid = Or::new(&cdw1, &cdw1, &OSC_CDW1_UNKNOWN_UUID);
    let else_unknown = Else::new(vec![&flag_uuid]);
    let ret = Return::new(&Arg(3));
    encode(&Method::new(
        "_OSC".into(),
        4,
        false,
        vec![&create_cdw1, &if_known, &else_unknown, &ret],
    ))
}

/// `_PRT`: `Package { Package { (slot << 16) | 0xffff, pin, 0, gsi }, ... }`.
fn prt(cfg: &AcpiConfig) -> Result<RawAml, AcpiError> {
    let entries = &cfg.pci.prt;
    if entries.len() > MAX_PRT_ENTRIES {
        return Err(AcpiError::TooManyPrtEntries(entries.len()));
    }
    let mut values: Vec<(u32, u8, u32)> = Vec::with_capacity(entries.len());
    for &(slot, pin, gsi) in entries {
        if slot > 31 || pin > 3 {
            return Err(AcpiError::InvalidPrtEntry { slot, pin });
        }
        values.push(((u32::from(slot) << 16) | 0xffff, pin, gsi));
    }
    let packages: Vec<Package> = values
        .iter()
        .map(|(address, pin, gsi)| Package::new(vec![address, pin, &ZERO, gsi]))
        .collect();
    let table = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());
    Ok(encode(&Name::new("_PRT".into(), &table)))
}

/// `\_SB_.COMn` for each serial port.
fn serial_ports(cfg: &AcpiConfig) -> Result<Vec<RawAml>, AcpiError> {
    let ports = &cfg.serial_ports;
    if ports.len() > MAX_SERIAL_PORTS {
        return Err(AcpiError::TooManySerialPorts(ports.len()));
    }
    let mut devices = Vec::with_capacity(ports.len());
    for (index, &(port, irq)) in ports.iter().enumerate() {
        if port > 0xfff8 {
            return Err(AcpiError::InvalidSerialPort(port));
        }
        let n = index as u8 + 1;
        let io = IO::new(port, port, 1, 8);
        let irq_desc: Box<dyn Aml> = match u8::try_from(irq) {
            Ok(isa) if isa < 16 => Box::new(IrqNoFlags(isa)),
            _ => Box::new(Interrupt::new(true, true, false, false, irq)),
        };
        let hid = Name::new("_HID".into(), &EISAName::new("PNP0501"));
        let uid = Name::new("_UID".into(), &n);
        let crs = Name::new(
            "_CRS".into(),
            &ResourceTemplate::new(vec![&io, irq_desc.as_ref()]),
        );
        let path = format!("COM{n}");
        devices.push(encode(&Device::new(
            path.as_str().into(),
            vec![&hid, &uid, &crs],
        )));
    }
    Ok(devices)
}

/// `\_SB_.MBRD` (PNP0C02): claims the ECAM area (so Linux's MMCONFIG sanity
/// check finds it reserved) and the ACPI sleep/reset ports.
fn motherboard_resources(cfg: &AcpiConfig) -> Result<RawAml, AcpiError> {
    let ecam_base = cfg.pci.ecam_base;
    let ecam_size = layout::PCI_ECAM_SIZE;
    let ecam_end = window_end("ecam", (ecam_base, ecam_size))?.unwrap_or(ecam_base);
    let ecam: Box<dyn Aml> = match (u32::try_from(ecam_base), u32::try_from(ecam_end)) {
        (Ok(base), Ok(_)) => Box::new(Memory32Fixed::new(true, base, ecam_size as u32)),
        _ => Box::new(AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            ecam_base,
            ecam_end,
            None,
        )),
    };
    let acpi_ports = IO::new(
        layout::ACPI_SLEEP_CONTROL_PORT as u16,
        layout::ACPI_SLEEP_CONTROL_PORT as u16,
        1,
        4,
    );
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C02"));
    let uid = Name::new("_UID".into(), &ZERO);
    let crs = Name::new(
        "_CRS".into(),
        &ResourceTemplate::new(vec![ecam.as_ref(), &acpi_ports]),
    );
    Ok(encode(&Device::new("MBRD".into(), vec![&hid, &uid, &crs])))
}
