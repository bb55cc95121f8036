//! Writes the tables into guest memory and parses them back using the
//! offsets of the ACPI specification (not the generator's structures).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::layout::*;

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

fn prt_for(slots: u8) -> Vec<(u8, u8, u32)> {
    let mut prt = Vec::new();
    for slot in 0..slots {
        for pin in 0..4u8 {
            let gsi = PCI_INTX_GSI_BASE + (u32::from(slot) + u32::from(pin)) % PCI_INTX_GSI_COUNT;
            prt.push((slot, pin, gsi));
        }
    }
    prt
}

fn config(nr_cpus: u8) -> AcpiConfig {
    AcpiConfig {
        nr_cpus,
        pci: PciRootAcpi {
            prt: prt_for(4),
            ..PciRootAcpi::default()
        },
        serial_ports: vec![(COM1_PORT as u16, COM1_IRQ)],
    }
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

fn in_region(addr: u64, len: usize) -> bool {
    addr >= ACPI_START && addr + len as u64 <= ACPI_START + ACPI_TABLES_SIZE
}

/// Reads a whole system description table (header length included) and
/// checks its signature, checksum and placement.
fn read_table(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
    let header = read(mem, addr, HEADER_LEN);
    assert_eq!(&header[0..4], signature, "signature at {addr:#x}");
    let len = u32_at(&header, 4) as usize;
    assert!(len >= HEADER_LEN, "{signature:?} length {len}");
    assert!(
        in_region(addr, len),
        "{signature:?} outside the ACPI region"
    );
    let table = read(mem, addr, len);
    assert_eq!(sum(&table), 0, "{signature:?} checksum");
    assert_eq!(&table[10..16], &OEM_ID);
    table
}

/// Everything reachable from the RSDP, keyed by signature.
struct Parsed {
    rsdp: Vec<u8>,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    mcfg: Vec<u8>,
    dsdt: Vec<u8>,
}

fn parse(mem: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> Parsed {
    let rsdp = read(mem, rsdp_addr.0, 36);
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = read_table(mem, xsdt_addr, b"XSDT");
    let mut tables = std::collections::HashMap::new();
    for i in 0..(xsdt.len() - HEADER_LEN) / 8 {
        let addr = u64_at(&xsdt, HEADER_LEN + 8 * i);
        let sig: [u8; 4] = read(mem, addr, 4).try_into().unwrap();
        let table = read_table(mem, addr, &sig);
        assert!(tables.insert(sig, table).is_none(), "duplicate {sig:?}");
    }
    let fadt = tables.remove(b"FACP").expect("FADT in XSDT");
    let madt = tables.remove(b"APIC").expect("MADT in XSDT");
    let mcfg = tables.remove(b"MCFG").expect("MCFG in XSDT");
    assert!(tables.is_empty(), "unexpected XSDT entries");
    let dsdt = read_table(mem, u64_at(&fadt, 140), b"DSDT");
    Parsed {
        rsdp,
        xsdt,
        fadt,
        madt,
        mcfg,
        dsdt,
    }
}

fn create(cfg: &AcpiConfig) -> (GuestMemoryMmap, Parsed) {
    let mem = guest_memory();
    let rsdp = create_acpi_tables(&mem, cfg).unwrap();
    assert_eq!(rsdp, GuestAddress(ACPI_START));
    let parsed = parse(&mem, rsdp);
    (mem, parsed)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Compressed EISA ID, written independently of the generator.
fn eisa_id(id: &str) -> [u8; 4] {
    let b = id.as_bytes();
    let c = |i: usize| u32::from(b[i] - b'@');
    let h = |i: usize| (b[i] as char).to_digit(16).unwrap();
    let v = (c(0) << 26)
        | (c(1) << 21)
        | (c(2) << 16)
        | (h(3) << 12)
        | (h(4) << 8)
        | (h(5) << 4)
        | h(6);
    v.to_be_bytes()
}

#[test]
fn rsdp_is_valid_and_points_to_xsdt() {
    let (_, t) = create(&config(2));
    let r = &t.rsdp;
    assert_eq!(&r[0..8], b"RSD PTR ");
    assert_eq!(sum(&r[0..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(r[15], 2, "revision");
    assert_eq!(u32_at(r, 20), 36, "length");
    assert_eq!(sum(&r[0..36]), 0, "extended checksum");
    let xsdt = u64_at(r, 24);
    assert!(in_region(xsdt, t.xsdt.len()));
    assert_eq!(t.xsdt.len(), HEADER_LEN + 3 * 8);
}

#[test]
fn fadt_describes_hw_reduced_platform() {
    let (_, t) = create(&config(2));
    let f = &t.fadt;
    assert_eq!(f.len(), 276);
    assert_eq!(f[8], 6, "FADT major revision");
    let flags = u32_at(f, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_ne!(flags & (1 << 4), 0, "PWR_BUTTON (no fixed power button)");
    assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON (no fixed sleep button)");

    let boot_arch = u16_at(f, 109);
    assert_eq!(boot_arch & (1 << 1), 0, "no 8042");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
    assert_eq!(boot_arch & (1 << 3), 0, "MSI supported");

    // GAS: space id, bit width, bit offset, access size, address.
    let gas = |off: usize| {
        (
            f[off],
            f[off + 1],
            f[off + 2],
            f[off + 3],
            u64_at(f, off + 4),
        )
    };
    assert_eq!(gas(116), (1, 8, 0, 1, ACPI_RESET_PORT), "RESET_REG");
    assert_eq!(f[128], ACPI_RESET_VALUE, "RESET_VALUE");
    assert_eq!(
        gas(244),
        (1, 8, 0, 1, ACPI_SLEEP_CONTROL_PORT),
        "SLEEP_CONTROL_REG"
    );
    assert_eq!(
        gas(256),
        (1, 8, 0, 1, ACPI_SLEEP_STATUS_PORT),
        "SLEEP_STATUS_REG"
    );

    assert_eq!(u32_at(f, 40), 0, "32-bit DSDT unused");
    let x_dsdt = u64_at(f, 140);
    assert!(in_region(x_dsdt, t.dsdt.len()));
    assert_eq!(&f[268..276], b"TAPIRVMM", "hypervisor vendor identity");
}

/// The MADT's interrupt controller structures.
#[derive(Default)]
struct MadtEntries {
    /// Local APIC IDs.
    lapics: Vec<u8>,
    /// (id, address, GSI base)
    ioapics: Vec<(u8, u32, u32)>,
    /// (source IRQ, GSI, flags)
    isos: Vec<(u8, u32, u16)>,
    /// (processor UID, flags, LINT#)
    nmis: Vec<(u8, u16, u8)>,
}

fn walk_madt(m: &[u8]) -> MadtEntries {
    let mut found = MadtEntries::default();
    let mut off = 44;
    while off < m.len() {
        let (ty, len) = (m[off], m[off + 1] as usize);
        assert!(len >= 2 && off + len <= m.len(), "bad MADT entry at {off}");
        let e = &m[off..off + len];
        match ty {
            0 => {
                assert_eq!(len, 8);
                assert_eq!(u32_at(e, 4) & 1, 1, "LAPIC enabled");
                assert_eq!(e[2], e[3], "processor uid == apic id");
                found.lapics.push(e[3]);
            }
            1 => {
                assert_eq!(len, 12);
                found.ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8)));
            }
            2 => {
                assert_eq!(len, 10);
                assert_eq!(e[2], 0, "ISA bus");
                found.isos.push((e[3], u32_at(e, 4), u16_at(e, 8)));
            }
            4 => {
                assert_eq!(len, 6);
                found.nmis.push((e[2], u16_at(e, 3), e[5]));
            }
            other => panic!("unexpected MADT entry type {other}"),
        }
        off += len;
    }
    assert_eq!(off, m.len());
    found
}

#[test]
fn madt_has_one_lapic_per_cpu() {
    for nr_cpus in [1u8, 2, 8] {
        let (_, t) = create(&config(nr_cpus));
        let m = &t.madt;
        assert_eq!(u32_at(m, 36), LAPIC_START as u32);
        assert_eq!(u32_at(m, 40), 1, "PCAT_COMPAT");
        let e = walk_madt(m);
        assert_eq!(e.lapics.len(), nr_cpus as usize);
        assert_eq!(e.lapics, (0..nr_cpus).collect::<Vec<_>>());
        assert_eq!(e.ioapics, vec![(nr_cpus, IOAPIC_START as u32, 0)]);
        assert_eq!(e.isos, vec![(0, 2, 0b0100)], "IRQ0 -> GSI2, edge");
        assert_eq!(e.nmis, vec![(0xff, 0, 1)], "NMI on LINT1 of all CPUs");
    }
}

#[test]
fn mcfg_points_at_ecam() {
    let (_, t) = create(&config(2));
    let m = &t.mcfg;
    assert_eq!(m.len(), 44 + 16);
    assert_eq!(u64_at(m, 44), PCI_ECAM_START);
    assert_eq!(u16_at(m, 52), 0, "segment");
    assert_eq!((m[54], m[55]), (0, 0), "buses");

    let mut cfg = config(1);
    cfg.pci.ecam_base = 0xb000_0000;
    let (_, t) = create(&cfg);
    assert_eq!(u64_at(&t.mcfg, 44), 0xb000_0000);
}

#[test]
fn dsdt_contains_expected_objects() {
    let (_, t) = create(&config(2));
    let d = &t.dsdt;
    assert_eq!(d[8], 2, "DSDT revision 2 (64-bit integers)");
    let aml = &d[HEADER_LEN..];
    for name in [
        &b"_S5_"[..],
        b"_PRT",
        b"_OSC",
        b"PCI0",
        b"_CRS",
        b"COM1",
        b"MBRD",
        b"_CCA",
    ] {
        assert!(
            contains(aml, name),
            "missing {}",
            String::from_utf8_lossy(name)
        );
    }
    // _HID PNP0A08 / _CID PNP0A03 as DWord integers.
    for id in ["PNP0A08", "PNP0A03", "PNP0501", "PNP0C02"] {
        let mut enc = vec![0x0c];
        enc.extend_from_slice(&eisa_id(id));
        assert!(contains(aml, &enc), "missing EISA id {id}");
    }
    assert_eq!(eisa_id("PNP0A08"), [0x41, 0xd0, 0x0a, 0x08]);
    // ToUUID("33DB4D5B-1FF7-401C-9657-7441C03DD766") byte order.
    let uuid = [
        0x5b, 0x4d, 0xdb, 0x33, 0xf7, 0x1f, 0x1c, 0x40, 0x96, 0x57, 0x74, 0x41, 0xc0, 0x3d, 0xd7,
        0x66,
    ];
    assert!(contains(aml, &uuid));
    // Name (_S5_, Package (4) { 5, 5, 0, 0 })
    let s5 = [
        0x08,
        b'_',
        b'S',
        b'5',
        b'_',
        0x12,
        0x08,
        0x04,
        0x0a,
        ACPI_S5_SLP_TYP,
        0x0a,
        ACPI_S5_SLP_TYP,
        0x00,
        0x00,
    ];
    assert!(contains(aml, &s5), "_S5_ package");
    // COM1: IO (Decode16, 0x3f8, 0x3f8, 1, 8) and IRQNoFlags () {4}
    assert!(contains(
        aml,
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
    ));
    assert!(contains(aml, &[0x22, 0x10, 0x00]));
    // MBRD reserves the ECAM: Memory32Fixed (ReadWrite, 0xe0000000, 0x100000)
    let mut ecam = vec![0x86, 0x09, 0x00, 0x01];
    ecam.extend_from_slice(&(PCI_ECAM_START as u32).to_le_bytes());
    ecam.extend_from_slice(&(PCI_ECAM_SIZE as u32).to_le_bytes());
    assert!(contains(aml, &ecam));
    // ... and the ACPI ports 0x600..=0x603.
    assert!(contains(
        aml,
        &[0x47, 0x01, 0x00, 0x06, 0x00, 0x06, 0x01, 0x04]
    ));
}

#[test]
fn dsdt_describes_pci_windows_and_prt() {
    let (_, t) = create(&config(2));
    let aml = &t.dsdt[HEADER_LEN..];
    // WordIO producer ranges 0x0000-0x0cf7 and 0x0d00-0xffff.
    let word_io = |min: u16, max: u16| {
        let mut v = vec![0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00];
        for w in [min, max, 0, max - min + 1] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    };
    assert!(contains(aml, &word_io(0, 0xcf7)));
    assert!(contains(aml, &word_io(0xd00, 0xffff)));
    // DWordMemory for the 32-bit window: min and max.
    let mut mmio32 = (PCI_MMIO32_START as u32).to_le_bytes().to_vec();
    mmio32.extend_from_slice(&((PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32).to_le_bytes());
    assert!(contains(aml, &mmio32));
    // QWordMemory for the 64-bit window.
    let mut mmio64 = PCI_MMIO64_START.to_le_bytes().to_vec();
    mmio64.extend_from_slice(&(PCI_MMIO64_START + PCI_MMIO64_SIZE - 1).to_le_bytes());
    assert!(contains(aml, &mmio64));
    // Package { 0x0003ffff, 3, 0, gsi } for slot 3 pin INTD.
    let gsi = PCI_INTX_GSI_BASE + (3 + 3) % PCI_INTX_GSI_COUNT;
    let entry = [
        0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x03, 0x00, 0x0a, 0x03, 0x00, 0x0a, gsi as u8,
    ];
    assert!(contains(aml, &entry), "_PRT entry for slot 3 INTD");
}

#[test]
fn table_sizes_for_two_cpus() {
    let cfg = config(2);
    let tables = build_tables(&cfg, ACPI_START).unwrap();
    let p = &tables.placement;
    assert_eq!(p.rsdp, ACPI_START);
    let sizes = [
        ("RSDP", tables.rsdp.len()),
        ("XSDT", tables.xsdt.len()),
        ("FACP", tables.fadt.len()),
        ("APIC", tables.madt.len()),
        ("MCFG", tables.mcfg.len()),
        ("DSDT", tables.dsdt.len()),
    ];
    eprintln!("{sizes:?}, region used {:#x}", p.end - ACPI_START);
    assert_eq!(tables.madt.len(), 44 + 2 * 8 + 12 + 10 + 6);
    // No two tables overlap.
    let mut spans: Vec<(u64, u64)> = tables
        .blobs()
        .iter()
        .map(|(a, b)| (*a, *a + b.len() as u64))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {w:?}");
    }
}

#[test]
fn huge_config_fits_or_errors() {
    let mut cfg = config(255);
    cfg.pci.prt = (0..MAX_PRT_ENTRIES)
        .map(|i| ((i / 8) as u8, (i % 4) as u8, 0x1_0000 + i as u32))
        .collect();
    cfg.serial_ports = (0..MAX_SERIAL_PORTS as u16)
        .map(|i| (0x3f8 - 8 * i, 20 + u32::from(i)))
        .collect();
    let mem = guest_memory();
    match create_acpi_tables(&mem, &cfg) {
        Ok(rsdp) => {
            let t = parse(&mem, rsdp);
            let e = walk_madt(&t.madt);
            assert_eq!(e.lapics.len(), 255);
            assert_eq!(e.ioapics[0].0, 0xfe);
        }
        Err(AcpiError::TooLarge { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn too_small_region_is_an_error() {
    let mem = guest_memory();
    let err = write_tables(&mem, &config(8), GuestAddress(ACPI_START), 0x100).unwrap_err();
    match err {
        AcpiError::TooLarge { needed, available } => {
            assert_eq!(available, 0x100);
            assert!(needed > 0x100);
        }
        e => panic!("unexpected error {e}"),
    }
    // Nothing was written.
    assert_eq!(read(&mem, ACPI_START, 8), vec![0; 8]);
}

#[test]
fn missing_guest_memory_is_an_error() {
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    assert!(matches!(
        create_acpi_tables(&mem, &config(1)),
        Err(AcpiError::GuestMemory(_))
    ));
}

#[test]
fn invalid_configs_are_rejected() {
    let mem = guest_memory();
    let check = |cfg: AcpiConfig| create_acpi_tables(&mem, &cfg).unwrap_err();

    assert!(matches!(check(config(0)), AcpiError::NoCpus));

    let mut cfg = config(1);
    cfg.pci.prt = vec![(0, 0, 16); MAX_PRT_ENTRIES + 1];
    assert!(matches!(check(cfg), AcpiError::TooManyPrtEntries(256)));

    let mut cfg = config(1);
    cfg.pci.prt = vec![(32, 0, 16)];
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPrtEntry { slot: 32, pin: 0 }
    ));
    let mut cfg = config(1);
    cfg.pci.prt = vec![(1, 4, 16)];
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPrtEntry { slot: 1, pin: 4 }
    ));

    let mut cfg = config(1);
    cfg.pci.mmio32 = (0xf000_0000, 0x2000_0000);
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPciWindow { name: "mmio32", .. }
    ));
    let mut cfg = config(1);
    cfg.pci.mmio64 = (u64::MAX, 2);
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPciWindow { name: "mmio64", .. }
    ));
    let mut cfg = config(1);
    cfg.pci.io = (0xc00, 0x200);
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPciWindow { name: "io", .. }
    ));
    let mut cfg = config(1);
    cfg.pci.ecam_base = u64::MAX - 0x1000;
    assert!(matches!(
        check(cfg),
        AcpiError::InvalidPciWindow { name: "ecam", .. }
    ));

    let mut cfg = config(1);
    cfg.serial_ports = vec![(0x3f8, 4); MAX_SERIAL_PORTS + 1];
    assert!(matches!(check(cfg), AcpiError::TooManySerialPorts(10)));
    let mut cfg = config(1);
    cfg.serial_ports = vec![(0xfffc, 4)];
    assert!(matches!(check(cfg), AcpiError::InvalidSerialPort(0xfffc)));
}

#[test]
fn empty_windows_and_high_ecam_are_described() {
    let mut cfg = config(1);
    cfg.pci.io = (0, 0);
    cfg.pci.mmio64 = (0, 0);
    cfg.pci.ecam_base = 0x80_0000_0000;
    cfg.serial_ports.clear();
    let (_, t) = create(&cfg);
    let aml = &t.dsdt[HEADER_LEN..];
    assert!(!contains(aml, b"COM1"));
    // The high ECAM is reserved with a QWordMemory descriptor.
    let mut ecam = 0x80_0000_0000u64.to_le_bytes().to_vec();
    ecam.extend_from_slice(&(0x80_0000_0000u64 + PCI_ECAM_SIZE - 1).to_le_bytes());
    assert!(contains(aml, &ecam));
    assert_eq!(u64_at(&t.mcfg, 44), 0x80_0000_0000);
}

/// The tables as ACPICA sees them: `iasl -d` must disassemble every table
/// (tests/run-all.sh installs acpica-tools; without iasl the test says so and
/// only fails under CI). `TAPIR_ACPI_DUMP=DIR` keeps the files.
#[test]
fn iasl_disassembles_every_table() {
    let keep = std::env::var_os("TAPIR_ACPI_DUMP").map(std::path::PathBuf::from);
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("tapir-acpi-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, t) = create(&config(2));
    let tables = [
        ("xsdt", &t.xsdt),
        ("facp", &t.fadt),
        ("apic", &t.madt),
        ("mcfg", &t.mcfg),
        ("dsdt", &t.dsdt),
    ];
    for (name, bytes) in tables {
        std::fs::write(dir.join(format!("{name}.dat")), bytes).unwrap();
    }
    let iasl = std::process::Command::new("iasl").arg("-v").output();
    if iasl.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "iasl (acpica-tools) is missing under CI"
        );
        tapir_test_support::skipped(
            "tapir-arch acpi: disassembly by iasl",
            "iasl (acpica-tools) not installed",
        );
        return;
    }
    for (name, _) in tables {
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(format!("{name}.dat"))
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {name}: {text}");
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        assert!(!dsl.contains("**** Unknown"), "{name}: {dsl}");
        if name == "dsdt" {
            for needle in [
                "Device (PCI0)",
                "_PRT",
                "_OSC",
                "Name (_S5",
                "Device (COM1)",
            ] {
                assert!(
                    dsl.contains(needle),
                    "{needle} missing from the DSDT:\n{dsl}"
                );
            }
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
