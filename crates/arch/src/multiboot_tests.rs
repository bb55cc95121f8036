//! Unit tests of multiboot loading: images built in memory, loaded into
//! guest memory and read back.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::boot::tests::{build_elf, bzimage_head, guest_memory, TempFile};
use crate::boot::{load_kernel, E820_RAM};
use crate::layout::CMDLINE_START;

const MIB: u64 = 1 << 20;

/// A multiboot header with `flags` (and address fields when given).
fn header(flags: u32, addresses: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [
        HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in addresses.into_iter().flatten() {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

const ELF32_CODE_OFFSET: usize = 0x100;

/// A 32-bit i386 ELF: one PT_LOAD of `body` (the multiboot header first,
/// then `code`) at `paddr`, linked at `vaddr`, plus `bss` bytes of bss;
/// the entry is just past the header, as a virtual address.
fn build_elf32(vaddr: u32, paddr: u32, flags: u32, code: &[u8], bss: u32) -> Vec<u8> {
    let mut body = header(flags, None);
    let entry = vaddr + body.len() as u32;
    body.extend_from_slice(code);
    let mut elf = vec![0u8; ELF32_CODE_OFFSET];
    elf[..4].copy_from_slice(ELF_MAGIC);
    elf[4] = ELFCLASS32;
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&EM_386.to_le_bytes());
    elf[24..28].copy_from_slice(&entry.to_le_bytes());
    elf[28..32].copy_from_slice(&(ELF32_HEADER_SIZE as u32).to_le_bytes()); // e_phoff
    elf[40..42].copy_from_slice(&(ELF32_HEADER_SIZE as u16).to_le_bytes());
    elf[42..44].copy_from_slice(&(ELF32_PHDR_SIZE as u16).to_le_bytes());
    elf[44..46].copy_from_slice(&1u16.to_le_bytes());
    let len = body.len() as u32;
    let ph = [
        PT_LOAD,
        ELF32_CODE_OFFSET as u32,
        vaddr,
        paddr,
        len,
        len + bss,
        7,
        0x1000,
    ];
    for (i, v) in ph.iter().enumerate() {
        let at = ELF32_HEADER_SIZE + 4 * i;
        elf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&body);
    elf
}

const AOUT_HEADER_OFFSET: usize = 0x40;

/// A flat binary with the a.out kludge: loaded from file offset 0 at
/// `load_addr`, header at file offset 0x40, `code` after it, `bss` bytes of
/// bss; entry at the code.
fn build_aout(load_addr: u32, code: &[u8], bss: u32) -> Vec<u8> {
    let header_addr = load_addr + AOUT_HEADER_OFFSET as u32;
    let entry = header_addr + 32;
    let len = (AOUT_HEADER_OFFSET + 32 + code.len()) as u32;
    let mut img = vec![0x90u8; AOUT_HEADER_OFFSET];
    img.extend(header(
        FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_AOUT_KLUDGE,
        Some([
            header_addr,
            load_addr,
            load_addr + len,
            load_addr + len + bss,
            entry,
        ]),
    ));
    img.extend_from_slice(code);
    img
}

fn load_image(mem: &GuestMemoryMmap, img: &[u8]) -> Result<LoadedKernel> {
    let mut f = TempFile::with_contents(img);
    load_kernel(mem, &mut f.file)
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

fn u32_in(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

/// Fills `len` bytes at `addr` with 0xff, to see bss zeroing.
fn dirty(mem: &GuestMemoryMmap, addr: u64, len: usize) {
    mem.write_slice(&vec![0xff; len], GuestAddress(addr))
        .unwrap();
}

#[test]
fn header_search() {
    assert_eq!(find_header(&[0u8; 8192]).unwrap(), None);
    // Aligned, anywhere in the first 8 KiB.
    let mut head = vec![0u8; 8192];
    head[8180..8192].copy_from_slice(&header(FLAG_MEMORY_INFO, None));
    let h = find_header(&head).unwrap().unwrap();
    assert_eq!(
        (h.offset, h.flags, h.addresses),
        (8180, FLAG_MEMORY_INFO, None)
    );
    // Not at an unaligned offset, nor past 8 KiB.
    let mut head = vec![0u8; 8300];
    head[2..14].copy_from_slice(&header(0, None));
    head[8192..8204].copy_from_slice(&header(0, None));
    assert_eq!(find_header(&head).unwrap(), None);
    // Video mode (bit 2) is accepted; address fields are read.
    let mut head = header(FLAG_VIDEO_MODE | FLAG_AOUT_KLUDGE, Some([1, 2, 3, 4, 5]));
    head.extend_from_slice(&[0; 16]);
    let h = find_header(&head).unwrap().unwrap();
    assert_eq!(
        h.addresses,
        Some(AddressFields {
            header_addr: 1,
            load_addr: 2,
            load_end_addr: 3,
            bss_end_addr: 4,
            entry_addr: 5
        })
    );
}

#[test]
fn bad_headers_are_rejected() {
    let mut bad = header(0, None);
    bad[8] ^= 1;
    let mut head = vec![0u8; 0x20];
    head.extend_from_slice(&bad);
    let err = find_header(&head).unwrap_err();
    assert!(matches!(err, BootError::MultibootChecksum(0x20)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "multiboot header at file offset 0x20 has a bad checksum"
    );
    // A good header after a bad one wins.
    head.extend_from_slice(&header(0, None));
    assert_eq!(find_header(&head).unwrap().unwrap().offset, 0x2c);

    // Required bits tapir does not know.
    let err = find_header(&header(FLAG_MEMORY_INFO | 1 << 3 | 1 << 15, None)).unwrap_err();
    assert!(
        matches!(err, BootError::MultibootUnsupportedFlags(0x8008)),
        "{err:?}"
    );
    // Optional bits it does not know are fine.
    assert!(find_header(&header(1 << 20, None)).unwrap().is_some());

    // Truncated: the magic alone, the address fields missing.
    let err = find_header(&HEADER_MAGIC.to_le_bytes()).unwrap_err();
    assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");
    let mut short = header(FLAG_AOUT_KLUDGE, Some([1, 2, 3, 4, 5]));
    short.truncate(20);
    let err = find_header(&short).unwrap_err();
    assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");

    // Through load_kernel too, as one clear error.
    let mut f = TempFile::with_contents(&head[..0x2c]);
    let err = load_kernel(&guest_memory(64 * MIB), &mut f.file).unwrap_err();
    assert!(matches!(err, BootError::MultibootChecksum(0x20)), "{err:?}");
}

#[test]
fn elf32_loads_by_physical_address_with_bss_zeroed() {
    let mem = guest_memory(64 * MIB);
    const VADDR: u32 = 0xc040_0000;
    const PADDR: u32 = 0x40_0000;
    dirty(&mem, PADDR.into(), 0x2000);
    let code = [0xf4u8, 0xeb, 0xfd];
    let img = build_elf32(
        VADDR,
        PADDR,
        FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO,
        &code,
        0x1000,
    );
    let k = load_image(&mem, &img).unwrap();
    assert_eq!(k.kind, KernelKind::Multiboot);
    // The virtual entry is translated to the physical one.
    assert_eq!(k.entry, GuestAddress(u64::from(PADDR) + 12));
    assert_eq!(k.load_addr, GuestAddress(PADDR.into()));
    assert_eq!(k.kernel_end, GuestAddress(u64::from(PADDR) + 15 + 0x1000));
    assert!(k.setup_header.is_none());
    assert_eq!(read(&mem, PADDR.into(), 15), img[ELF32_CODE_OFFSET..]);
    assert!(read(&mem, u64::from(PADDR) + 15, 0x1000)
        .iter()
        .all(|&b| b == 0));
    // Nothing past the bss.
    assert_eq!(read(&mem, u64::from(PADDR) + 15 + 0x1000, 1), [0xff]);
}

#[test]
fn aout_kludge_loads_by_the_header_addresses() {
    let mem = guest_memory(64 * MIB);
    const LOAD: u32 = 0x20_0000;
    dirty(&mem, LOAD.into(), 0x3000);
    let code = [0xfa, 0xf4];
    let img = build_aout(LOAD, &code, 0x2000);
    let k = load_image(&mem, &img).unwrap();
    assert_eq!(k.kind, KernelKind::Multiboot);
    let len = img.len() as u64;
    assert_eq!(k.entry, GuestAddress(u64::from(LOAD) + 0x60));
    assert_eq!(k.load_addr, GuestAddress(LOAD.into()));
    assert_eq!(k.kernel_end, GuestAddress(u64::from(LOAD) + len + 0x2000));
    assert_eq!(read(&mem, LOAD.into(), img.len()), img);
    assert!(read(&mem, u64::from(LOAD) + len, 0x2000)
        .iter()
        .all(|&b| b == 0));

    // load_end_addr 0: the rest of the file; bss_end_addr 0: no bss. An ELF
    // with the kludge flag is loaded by the address fields too.
    let mut elf = build_elf32(0x30_0000, 0x30_0000, 0, &[0xf4], 0);
    let off = ELF32_CODE_OFFSET;
    let kludge = header(
        FLAG_AOUT_KLUDGE,
        Some([0x50_0000, 0x50_0000 - off as u32, 0, 0, 0x50_1234]),
    );
    elf.truncate(off);
    elf.extend_from_slice(&kludge);
    let k = load_image(&mem, &elf).unwrap();
    assert_eq!(k.entry, GuestAddress(0x50_1234));
    assert_eq!(k.load_addr, GuestAddress(0x50_0000 - off as u64));
    assert_eq!(k.kernel_end, GuestAddress(0x50_0000 + 32));
    assert_eq!(read(&mem, 0x50_0000 - off as u64, elf.len()), elf);
}

#[test]
fn bad_images_are_rejected() {
    let mem = guest_memory(64 * MIB);
    let check = |img: &[u8], want: &str| {
        let err = load_image(&mem, img).unwrap_err();
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
        err
    };
    // Neither ELF nor address fields.
    let mut flat = vec![0u8; 0x40];
    flat.extend(header(FLAG_MEMORY_INFO, None));
    let err = check(&flat, "no load addresses");
    assert!(matches!(err, BootError::MultibootNoAddresses), "{err:?}");

    // Address fields that contradict each other.
    let kludge = |fields: [u32; 5]| {
        let mut img = vec![0u8; 0x40];
        img.extend(header(FLAG_AOUT_KLUDGE, Some(fields)));
        img.extend_from_slice(&[0u8; 0x100]);
        img
    };
    const H: u32 = 0x20_0040;
    check(
        &kludge([H, H + 4, 0, 0, H]),
        "load_addr is above header_addr",
    );
    check(
        &kludge([H, H - 0x41, 0, 0, H]),
        "more than the header's file offset",
    );
    check(
        &kludge([H, H - 0x40, H - 0x41, 0, H]),
        "load_end_addr is below",
    );
    check(
        &kludge([H, H - 0x40, H + 0x10, H, H]),
        "bss_end_addr is below",
    );
    // Data past the end of the file.
    let err = check(&kludge([H, H - 0x40, H + 0x1000, 0, H]), "truncated");
    assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");
    // Below 1 MiB: in free conventional memory it loads (kvm-unit-tests'
    // realmode is linked at 0x8000); over tapir's boot data, the command
    // line's area or the BIOS area it does not. Past RAM, in the hole.
    let loaded = load_image(&mem, &build_aout(0x8000, &[0xf4], 0x100))
        .expect("0x8000 is free conventional memory");
    assert_eq!(loaded.load_addr.0, 0x8000);
    for (addr, what) in [
        (0x6000, "the multiboot information"),
        (0x1f000 + 0x800, "the command line"),
        (0x9f000, "the EBDA"),
        (0x500, "the GDT"),
    ] {
        let err = check(
            &build_aout(addr, &[0xf4; 0x1000], 0),
            "below 1 MiB outside the free conventional memory",
        );
        assert!(
            matches!(err, BootError::MultibootLowMemory { start, .. } if start == u64::from(addr)),
            "{what}: {err:?}"
        );
    }
    check(&build_aout(0x3ff_f000, &[0xf4], 0x10_0000), "does not fit");
    check(&build_aout(0xc000_0000, &[0xf4], 0), "does not fit");
    check(&build_aout(0xffff_f000, &[0xf4], 0x100), "does not fit");

    // ELF32: wrong machine, segments past the file or below 1 MiB, bad
    // program headers, bss past RAM.
    let mut arm = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    arm[18] = 40; // EM_ARM
    check(&arm, "not a 32-bit x86");
    let mut past = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    past[ELF32_HEADER_SIZE + 16..ELF32_HEADER_SIZE + 20].copy_from_slice(&0x1000u32.to_le_bytes());
    past[ELF32_HEADER_SIZE + 20..ELF32_HEADER_SIZE + 24].copy_from_slice(&0x1000u32.to_le_bytes());
    check(&past, "truncated");
    check(&build_elf32(0x1000, 0x1000, 0, &[0xf4], 0), "below 1 MiB");
    check(
        &build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0xffff_0000),
        "does not fit",
    );
    let mut phnum = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    phnum[44..46].copy_from_slice(&0xffffu16.to_le_bytes());
    check(&phnum, "truncated");
    let mut phent = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    phent[42] = 40;
    check(&phent, "program header size");
    let mut no_load = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    no_load[ELF32_HEADER_SIZE] = 0; // PT_NULL
    check(&no_load, "no loadable segments");
    let mut short = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    short.truncate(48);
    short.extend(header(0, None));
    // The header is now at offset 48; the program headers are cut off.
    check(&short, "file ends inside the ELF program headers");
    // Nothing was written for any of them.
    assert!(read(&mem, 0x10_0000, 0x100).iter().all(|&b| b == 0));
}

#[test]
fn other_formats_keep_their_precedence() {
    let mem = guest_memory(64 * MIB);
    // A 64-bit ELF with a multiboot header stays a 64-bit ELF.
    let mut code = header(FLAG_MEMORY_INFO, None);
    code.push(0xf4);
    let k = load_image(&mem, &build_elf(0x10_0000, &code, None)).unwrap();
    assert_eq!(k.kind, KernelKind::ElfLinux64);
    // With address fields (bit 16) it is multiboot, unless it has a PVH note.
    let mut code = header(
        FLAG_AOUT_KLUDGE,
        Some([0x30_0000, 0x30_0000, 0, 0, 0x30_0020]),
    );
    code.push(0xf4);
    let k = load_image(&mem, &build_elf(0x10_0000, &code, None)).unwrap();
    assert_eq!(k.kind, KernelKind::Multiboot);
    assert_eq!(k.entry, GuestAddress(0x30_0020));
    assert_eq!(read(&mem, 0x30_0000, code.len()), code);
    let k = load_image(&mem, &build_elf(0x10_0000, &code, Some(0x10_0010))).unwrap();
    assert_eq!(k.kind, KernelKind::ElfPvh);
    // A bzImage with a multiboot header stays a bzImage (too old here).
    let mut bz = bzimage_head(0x0205, 1, 0);
    bz.extend(header(
        FLAG_AOUT_KLUDGE,
        Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000]),
    ));
    let err = load_image(&mem, &bz).unwrap_err();
    assert!(matches!(err, BootError::BzImageTooOld(0x0205)), "{err:?}");
    // A 32-bit ELF without a header is still "not x86_64".
    let mut elf32 = build_elf32(0x10_0000, 0x10_0000, 0, &[0xf4], 0);
    elf32[ELF32_CODE_OFFSET..ELF32_CODE_OFFSET + 4].fill(0);
    let err = load_image(&mem, &elf32).unwrap_err();
    assert!(matches!(err, BootError::ElfNotX86_64), "{err:?}");
}

#[test]
fn command_line_starts_with_the_kernel_name() {
    assert_eq!(command_line("/k/x.flat", ""), "/k/x.flat");
    assert_eq!(command_line("/k/x.flat", "a=1 b"), "/k/x.flat a=1 b");
}

#[test]
fn information_structure_reads_back() {
    const MEM: u64 = 64 * MIB;
    let mem = guest_memory(MEM);
    let module = Module {
        addr: GuestAddress(0x3ff_0000),
        size: 0x123,
        string: "/tmp/env",
    };
    configure_multiboot_boot(&mem, GuestAddress(CMDLINE_START), &[module], MEM).unwrap();
    let info = MULTIBOOT_INFO_START;
    let field = |off: usize| u32_in(&mem, info + off as u64);
    assert_eq!(field(INFO_FLAGS), 0x24d); // mem, cmdline, mods, mmap, name
    assert_eq!(field(INFO_MEM_LOWER), 639);
    assert_eq!(field(INFO_MEM_UPPER), 63 * 1024);
    assert_eq!(field(INFO_CMDLINE_ADDR), CMDLINE_START as u32);

    // The memory map: the e820 entries, each with its size prefix.
    let (mmap_addr, mmap_len) = (field(INFO_MMAP_ADDR), field(INFO_MMAP_LENGTH));
    let entries = e820_entries(MEM);
    assert_eq!(mmap_len as usize, entries.len() * 24);
    let mut at = u64::from(mmap_addr);
    for e in &entries {
        assert_eq!(u32_in(&mem, at), 20);
        let base: u64 = mem.read_obj(GuestAddress(at + 4)).unwrap();
        let len: u64 = mem.read_obj(GuestAddress(at + 12)).unwrap();
        assert_eq!(
            (base, len, u32_in(&mem, at + 20)),
            (e.addr, e.size, e.r#type)
        );
        at += 4 + u64::from(u32_in(&mem, at));
    }
    assert_eq!(entries[2].r#type, E820_RAM);

    // Module 0 and the strings.
    assert_eq!(field(INFO_MODS_COUNT), 1);
    let mods = u64::from(field(INFO_MODS_ADDR));
    assert_eq!(mods % 4, 0);
    assert_eq!(u32_in(&mem, mods), 0x3ff_0000);
    assert_eq!(u32_in(&mem, mods + 4), 0x3ff_0123);
    let string = u64::from(u32_in(&mem, mods + 8));
    assert_eq!(read(&mem, string, 9), b"/tmp/env\0");
    let name = u64::from(field(INFO_BOOT_LOADER_NAME_ADDR));
    assert_eq!(read(&mem, name, 6), b"tapir\0");
    // Everything stays below the zero page and clear of the command line.
    assert!(string + 9 <= ZERO_PAGE_START);
    assert!(u64::from(mmap_addr) >= info + INFO_SIZE as u64);

    // Without modules; above the hole mem_upper stops at the hole.
    configure_multiboot_boot(&mem, GuestAddress(CMDLINE_START), &[], 4 << 30).unwrap();
    assert_eq!(field(INFO_MODS_COUNT), 0);
    assert_eq!(field(INFO_MEM_UPPER), ((3u64 << 30) - MIB) as u32 / 1024);
}

#[test]
fn information_that_does_not_fit_is_rejected() {
    let mem = guest_memory(64 * MIB);
    let long = "m".repeat(4096);
    let module = |string| Module {
        addr: GuestAddress(0x3ff_0000),
        size: 1,
        string,
    };
    let err = configure_multiboot_boot(
        &mem,
        GuestAddress(CMDLINE_START),
        &[module(&long)],
        64 * MIB,
    )
    .unwrap_err();
    assert!(matches!(err, BootError::MultibootInfoTooLarge), "{err:?}");
    let err = configure_multiboot_boot(
        &mem,
        GuestAddress(CMDLINE_START),
        &[module("a\0b")],
        64 * MIB,
    )
    .unwrap_err();
    assert!(matches!(err, BootError::CmdlineNul), "{err:?}");
}
