//! Multiboot v1 (specification 0.6.96) kernel loading, as QEMU's `-kernel`
//! does it for images that are neither a bzImage nor a 64-bit ELF.
//!
//! * The image carries a header (magic 0x1BADB002, flags, checksum; 4-byte
//!   aligned in its first 8 KiB). Flag bits 0-15 are requirements: tapir
//!   fulfils bit 0 (modules page aligned) and bit 1 (memory information),
//!   accepts bit 2 (video mode) as QEMU does without providing video
//!   information (the info flags say so), and refuses the others. Of the
//!   optional bits 16-31 only bit 16 (address fields) means something.
//! * A 32-bit i386 ELF is loaded by its `PT_LOAD` program headers at their
//!   physical addresses, `.bss` zeroed; with flag bit 16 (the "a.out
//!   kludge") the header's address fields say what part of the file goes
//!   where instead, for ELF and flat binaries alike.
//! * Precedence, as in QEMU: a bzImage is a bzImage; a 64-bit ELF is booted
//!   as multiboot only when its header has the address fields and it has no
//!   PVH note (otherwise it is a PVH or 64-bit Linux ELF).
//! * The kernel must live in RAM from 1 MiB up (below is tapir's GDT, boot
//!   information, command line and firmware area).
//! * [`configure_multiboot_boot`] writes the multiboot information at
//!   [`MULTIBOOT_INFO_START`]: memory sizes, the e820 map in multiboot's
//!   `mmap` format, the command line, the boot loader name and the initrd as
//!   module 0. The vCPU then starts in 32-bit flat protected mode with
//!   `EAX` = [`BOOTLOADER_MAGIC`] and `EBX` pointing at the information
//!   ([`crate::cpu::setup_protected_mode`]).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::boot::{
    align_up, check_fits, e820_entries, mem_error, u16_at, u32_at, u64_at, BootError, KernelKind,
    LoadedKernel, Result, ELFCLASS32, ELF_MAGIC, ELF_PHDR_SIZE, PT_LOAD,
};
use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, LOW_RAM_END, MMIO_HOLE_START,
    MULTIBOOT_INFO_START, ZERO_PAGE_START,
};

/// The header is searched for in this many bytes at the start of the file.
pub const HEADER_SEARCH_LEN: usize = 8192;
/// `magic` of the multiboot header in the kernel image.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What the boot loader leaves in `EAX` for the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// Name in `boot_loader_name`.
pub const BOOT_LOADER_NAME: &str = "tapir";

/// Header flag: align modules on page boundaries.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag: provide `mem_*` (and the memory map).
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag: provide the video mode table (tapir has no display; accepted
/// and ignored, as QEMU does).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag: the address fields are valid ("a.out kludge").
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// The required-feature bits (0-15) tapir accepts.
const SUPPORTED_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;
const REQUIRED_MASK: u32 = 0xffff;

/// Info flag: `mem_lower`/`mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Info flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Info flag: `mods_count`/`mods_addr` are valid.
pub const INFO_MODS: u32 = 1 << 3;
/// Info flag: `mmap_length`/`mmap_addr` are valid.
pub const INFO_MMAP: u32 = 1 << 6;
/// Info flag: `boot_loader_name` is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Size of the multiboot information structure (up to the framebuffer fields).
pub const INFO_SIZE: usize = 116;
/// Offsets of the information fields tapir fills in.
pub const INFO_FLAGS: usize = 0;
/// `mem_lower` (KiB of memory from 0).
pub const INFO_MEM_LOWER: usize = 4;
/// `mem_upper` (KiB of memory from 1 MiB up to the first hole).
pub const INFO_MEM_UPPER: usize = 8;
/// `cmdline` (physical address of a C string).
pub const INFO_CMDLINE_ADDR: usize = 16;
/// `mods_count`.
pub const INFO_MODS_COUNT: usize = 20;
/// `mods_addr`.
pub const INFO_MODS_ADDR: usize = 24;
/// `mmap_length` (bytes).
pub const INFO_MMAP_LENGTH: usize = 44;
/// `mmap_addr`.
pub const INFO_MMAP_ADDR: usize = 48;
/// `boot_loader_name` (physical address of a C string).
pub const INFO_BOOT_LOADER_NAME_ADDR: usize = 64;
/// One memory map entry: `size` (u32, not counting itself), `base_addr`
/// (u64), `length` (u64), `type` (u32).
pub const MMAP_ENTRY_SIZE: usize = 24;
/// One module entry: `mod_start`, `mod_end`, `string`, reserved (u32 each).
pub const MODULE_ENTRY_SIZE: usize = 16;

const ELF32_HEADER_SIZE: usize = 52;
const ELF32_PHDR_SIZE: usize = 32;
const EM_386: u16 = 3;

/// The a.out-kludge address fields of a header (flag bit 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressFields {
    /// Physical address the header itself is loaded at.
    pub header_addr: u32,
    /// Physical address of the start of the text segment.
    pub load_addr: u32,
    /// End of the data segment (0: the rest of the file).
    pub load_end_addr: u32,
    /// End of the bss (0: no bss).
    pub bss_end_addr: u32,
    /// Entry point.
    pub entry_addr: u32,
}

/// A multiboot header found in a kernel image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the header.
    pub offset: usize,
    /// Its flags.
    pub flags: u32,
    /// The address fields, when flag bit 16 is set.
    pub addresses: Option<AddressFields>,
}

/// Looks for a multiboot header in `head` (the file's first bytes, up to
/// [`HEADER_SEARCH_LEN`]): the first 4-byte aligned magic whose checksum
/// holds. `Ok(None)` when there is no magic; an error when there is one but
/// its checksum is wrong, when it asks for what tapir cannot provide, or when
/// the file ends inside it.
pub fn find_header(head: &[u8]) -> Result<Option<Header>> {
    let head = &head[..head.len().min(HEADER_SEARCH_LEN)];
    let mut bad_checksum = None;
    let mut offset = 0;
    while offset + 4 <= head.len() {
        if u32_at(head, offset) != HEADER_MAGIC {
            offset += 4;
            continue;
        }
        if offset + 12 > head.len() {
            return Err(BootError::KernelTruncated(
                "file ends inside the multiboot header".into(),
            ));
        }
        let flags = u32_at(head, offset + 4);
        let checksum = u32_at(head, offset + 8);
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
            bad_checksum.get_or_insert(offset);
            offset += 4;
            continue;
        }
        let unsupported = flags & REQUIRED_MASK & !SUPPORTED_REQUIRED;
        if unsupported != 0 {
            return Err(BootError::MultibootUnsupportedFlags(unsupported));
        }
        if flags & FLAG_VIDEO_MODE != 0 {
            log::warn!("multiboot kernel asks for a video mode; tapir has no display, ignoring it");
        }
        let addresses = if flags & FLAG_AOUT_KLUDGE != 0 {
            if offset + 32 > head.len() {
                return Err(BootError::KernelTruncated(
                    "file ends inside the multiboot header's address fields".into(),
                ));
            }
            let field = |i: usize| u32_at(head, offset + 12 + 4 * i);
            Some(AddressFields {
                header_addr: field(0),
                load_addr: field(1),
                load_end_addr: field(2),
                bss_end_addr: field(3),
                entry_addr: field(4),
            })
        } else {
            None
        };
        return Ok(Some(Header {
            offset,
            flags,
            addresses,
        }));
    }
    match bad_checksum {
        Some(offset) => Err(BootError::MultibootChecksum(offset)),
        None => Ok(None),
    }
}

/// The multiboot header of a 64-bit ELF that is to be booted as multiboot:
/// one with address fields (flag bit 16, the only way multiboot v1 loads a
/// 64-bit ELF, used by 64-bit hobby kernels with a 32-bit entry) in an ELF
/// without a PVH note (PVH comes first, as in QEMU). `None` sends the file
/// to the ELF loader, which reports what is wrong with a broken one.
pub fn elf64_header(file: &File, file_len: u64, head: &[u8]) -> Option<Header> {
    let header = find_header(head).ok().flatten()?;
    header.addresses?;
    (!elf64_has_pvh_note(file, file_len, head)?).then_some(header)
}

/// Whether a 64-bit ELF has a Xen `PHYS32_ENTRY` note; `None` if its
/// program headers cannot be read.
fn elf64_has_pvh_note(file: &File, file_len: u64, head: &[u8]) -> Option<bool> {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    const MAX_NOTES_LEN: u64 = 1 << 20;
    if head.len() < 64 || usize::from(u16_at(head, 54)) != ELF_PHDR_SIZE {
        return None;
    }
    let phoff = u64_at(head, 32);
    let phdrs_len = usize::from(u16_at(head, 56)) * ELF_PHDR_SIZE;
    if phoff.checked_add(phdrs_len as u64)? > file_len {
        return None;
    }
    let mut phdrs = vec![0u8; phdrs_len];
    file.read_exact_at(&mut phdrs, phoff).ok()?;
    for ph in phdrs.chunks_exact(ELF_PHDR_SIZE) {
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32));
        if u32_at(ph, 0) != PT_NOTE || size > MAX_NOTES_LEN || offset.checked_add(size)? > file_len
        {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        file.read_exact_at(&mut notes, offset).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let name = notes.get(at + 12..at + 12 + namesz)?;
            if name == b"Xen\0" && u32_at(&notes, at + 8) == XEN_ELFNOTE_PHYS32_ENTRY {
                return Some(true);
            }
            at += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    Some(false)
}

/// One piece of the file to copy to guest memory, then zeros up to `mem_end`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    file_offset: u64,
    file_size: u64,
    addr: u64,
    mem_end: u64,
}

/// Loads a multiboot kernel whose `header` [`find_header`] found in `head`.
pub fn load<M: GuestMemoryBackend>(
    mem: &M,
    file: &mut File,
    file_len: u64,
    head: &[u8],
    header: &Header,
) -> Result<LoadedKernel> {
    let (segments, entry) = match header.addresses {
        Some(a) => (
            vec![aout_segment(header.offset, &a, file_len)?],
            a.entry_addr,
        ),
        None if head.starts_with(ELF_MAGIC) => elf32_segments(file, file_len, head)?,
        None => return Err(BootError::MultibootNoAddresses),
    };

    // Check everything before writing anything.
    for s in &segments {
        if s.file_offset
            .checked_add(s.file_size)
            .is_none_or(|end| end > file_len)
        {
            return Err(BootError::KernelTruncated(format!(
                "multiboot segment at file offset {:#x} ({:#x} bytes) runs past the end of \
                 the {file_len}-byte file",
                s.file_offset, s.file_size
            )));
        }
        check_low(s.addr, s.mem_end)?;
        check_fits(mem, s.addr, s.mem_end)?;
    }
    let load_start = segments.iter().map(|s| s.addr).min();
    let load_end = segments.iter().map(|s| s.mem_end).max();
    let (Some(load_start), Some(load_end)) = (load_start, load_end) else {
        return Err(BootError::ElfNoSegments);
    };

    for s in &segments {
        copy_segment(mem, file, s)?;
    }
    Ok(LoadedKernel {
        kind: KernelKind::Multiboot,
        entry: GuestAddress(entry.into()),
        load_addr: GuestAddress(load_start),
        kernel_end: GuestAddress(load_end),
        setup_header: None,
    })
}

/// The segment the a.out-kludge address fields describe.
fn aout_segment(header_offset: usize, a: &AddressFields, file_len: u64) -> Result<Segment> {
    let bad = BootError::MultibootBadAddresses;
    if a.load_addr > a.header_addr {
        return Err(bad("load_addr is above header_addr"));
    }
    let file_offset = (header_offset as u64)
        .checked_sub(u64::from(a.header_addr - a.load_addr))
        .ok_or(bad(
            "header_addr - load_addr is more than the header's file offset",
        ))?;
    let addr = u64::from(a.load_addr);
    let file_size = if a.load_end_addr == 0 {
        file_len.saturating_sub(file_offset)
    } else if a.load_end_addr < a.load_addr {
        return Err(bad("load_end_addr is below load_addr"));
    } else {
        u64::from(a.load_end_addr - a.load_addr)
    };
    let load_end = addr
        .checked_add(file_size)
        .ok_or(bad("the loaded data overflows the address space"))?;
    let mem_end = if a.bss_end_addr == 0 {
        load_end
    } else if u64::from(a.bss_end_addr) < load_end {
        return Err(bad("bss_end_addr is below the end of the loaded data"));
    } else {
        u64::from(a.bss_end_addr)
    };
    Ok(Segment {
        file_offset,
        file_size,
        addr,
        mem_end,
    })
}

/// The `PT_LOAD` segments of a 32-bit i386 ELF and its entry point, the ELF
/// entry translated from virtual to physical through the segment holding it
/// (as GRUB and QEMU do).
fn elf32_segments(file: &File, file_len: u64, head: &[u8]) -> Result<(Vec<Segment>, u32)> {
    if head.len() < ELF32_HEADER_SIZE {
        return Err(BootError::KernelTruncated(
            "file ends inside the ELF header".into(),
        ));
    }
    if head[4] != ELFCLASS32 || head[5] != 1 || u16_at(head, 18) != EM_386 {
        return Err(BootError::MultibootElfNot386);
    }
    let e_entry = u32_at(head, 24);
    let e_phoff = u64::from(u32_at(head, 28));
    let e_phentsize = usize::from(u16_at(head, 42));
    let e_phnum = usize::from(u16_at(head, 44));
    if e_phentsize != ELF32_PHDR_SIZE {
        return Err(BootError::ElfMalformed("unexpected program header size"));
    }
    let phdrs_len = (e_phnum * ELF32_PHDR_SIZE) as u64;
    if e_phoff + phdrs_len > file_len {
        return Err(BootError::KernelTruncated(
            "file ends inside the ELF program headers".into(),
        ));
    }
    let mut phdrs = vec![0u8; phdrs_len as usize];
    file.read_exact_at(&mut phdrs, e_phoff)
        .map_err(BootError::ReadKernel)?;

    let mut segments = Vec::new();
    let mut entry = e_entry;
    for ph in phdrs.chunks_exact(ELF32_PHDR_SIZE) {
        let (p_type, p_offset) = (u32_at(ph, 0), u32_at(ph, 4));
        let (p_vaddr, p_paddr) = (u32_at(ph, 8), u32_at(ph, 12));
        let (p_filesz, p_memsz) = (u32_at(ph, 16), u32_at(ph, 20));
        if p_type != PT_LOAD || p_memsz == 0 {
            continue;
        }
        if p_filesz > p_memsz {
            return Err(BootError::ElfMalformed(
                "segment has more file than memory bytes",
            ));
        }
        if (p_vaddr..p_vaddr.saturating_add(p_memsz)).contains(&e_entry) {
            entry = e_entry - p_vaddr + p_paddr;
        }
        segments.push(Segment {
            file_offset: p_offset.into(),
            file_size: p_filesz.into(),
            addr: p_paddr.into(),
            mem_end: u64::from(p_paddr) + u64::from(p_memsz),
        });
    }
    Ok((segments, entry))
}

/// Copies a checked segment from the file and zeroes the rest of it.
fn copy_segment<M: GuestMemoryBackend>(mem: &M, file: &mut File, s: &Segment) -> Result<()> {
    let map_err = |e| match e {
        GuestMemoryError::IOError(e) => BootError::ReadKernel(e),
        e => BootError::GuestMemory {
            what: "multiboot kernel",
            source: e,
        },
    };
    if s.file_size > 0 {
        file.seek(SeekFrom::Start(s.file_offset))
            .map_err(BootError::ReadKernel)?;
        // check_fits made sure the size fits in usize.
        mem.read_exact_volatile_from(GuestAddress(s.addr), file, s.file_size as usize)
            .map_err(map_err)?;
    }
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut addr = s.addr + s.file_size;
    while addr < s.mem_end {
        let n = (s.mem_end - addr).min(ZEROS.len() as u64) as usize;
        mem.write_slice(&ZEROS[..n], GuestAddress(addr))
            .map_err(mem_error("multiboot kernel bss"))?;
        addr += n as u64;
    }
    Ok(())
}

/// The command line a multiboot kernel gets: the kernel's file name first,
/// as GRUB and QEMU pass it (kvm-unit-tests takes it as its program name),
/// then `cmdline`.
pub fn command_line(kernel_name: &str, cmdline: &str) -> String {
    if cmdline.is_empty() {
        kernel_name.to_owned()
    } else {
        format!("{kernel_name} {cmdline}")
    }
}

/// A module for the kernel: where it was loaded and its string.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    /// Guest-physical address (page aligned).
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: usize,
    /// Its string (QEMU passes the file name).
    pub string: &'a str,
}

/// The conventional memory (below 1 MiB) a multiboot image may occupy:
/// above tapir's GDT, IDT and multiboot information (which end below
/// [`ZERO_PAGE_START`]; the zero page itself is Linux's), outside the
/// command line's area, below the EBDA and BIOS area ([`LOW_RAM_END`]).
/// kvm-unit-tests' `realmode` test is linked at 0x8000, as QEMU allows.
const LOW_FREE: [(u64, u64); 2] = [
    (ZERO_PAGE_START, CMDLINE_START),
    (CMDLINE_START + CMDLINE_MAX_SIZE as u64, LOW_RAM_END),
];

/// [`LOW_FREE`] in words, for the error.
const LOW_FREE_TEXT: &str = "0x7000-0x1ffff and 0x30000-0x9fbff";

/// Checks that a segment `[start, end)` that begins below 1 MiB lies in
/// one range of [`LOW_FREE`].
fn check_low(start: u64, end: u64) -> Result<()> {
    if start >= HIMEM_START || LOW_FREE.iter().any(|&(lo, hi)| start >= lo && end <= hi) {
        return Ok(());
    }
    Err(BootError::MultibootLowMemory {
        start,
        end,
        free: LOW_FREE_TEXT,
    })
}

/// Writes the multiboot information at [`MULTIBOOT_INFO_START`], followed by
/// the memory map, the module list and the strings, for a guest with
/// `mem_size` bytes of RAM whose command line is at `cmdline`.
pub fn configure_multiboot_boot<M: GuestMemoryBackend>(
    mem: &M,
    cmdline: GuestAddress,
    modules: &[Module],
    mem_size: u64,
) -> Result<()> {
    let too_large = || BootError::MultibootInfoTooLarge;
    let entries = e820_entries(mem_size);
    let mmap_addr = MULTIBOOT_INFO_START + INFO_SIZE as u64;
    let mmap_len = entries.len() * MMAP_ENTRY_SIZE;
    let mods_addr = align_up(mmap_addr + mmap_len as u64, 8).ok_or_else(too_large)?;
    let name_addr = mods_addr + (modules.len() * MODULE_ENTRY_SIZE) as u64;
    let mut strings = Vec::new();
    strings.extend_from_slice(BOOT_LOADER_NAME.as_bytes());
    strings.push(0);
    let mut mod_list = Vec::with_capacity(modules.len() * MODULE_ENTRY_SIZE);
    for m in modules {
        if m.string.as_bytes().contains(&0) {
            return Err(BootError::CmdlineNul);
        }
        let start = m.addr.0;
        let end = start.checked_add(m.size as u64).ok_or_else(too_large)?;
        if end > 1 << 32 {
            return Err(BootError::InitrdAbove4G(start));
        }
        let string_addr = name_addr + strings.len() as u64;
        strings.extend_from_slice(m.string.as_bytes());
        strings.push(0);
        for field in [start as u32, end as u32, string_addr as u32, 0] {
            mod_list.extend_from_slice(&field.to_le_bytes());
        }
    }
    if name_addr + strings.len() as u64 > ZERO_PAGE_START {
        return Err(too_large());
    }

    let mut mmap = Vec::with_capacity(mmap_len);
    for e in &entries {
        mmap.extend_from_slice(&((MMAP_ENTRY_SIZE - 4) as u32).to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&e.r#type.to_le_bytes());
    }

    let upper_end = mem_size.min(MMIO_HOLE_START);
    let mut info = [0u8; INFO_SIZE];
    let mut put = |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(
        INFO_FLAGS,
        INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_BOOT_LOADER_NAME,
    );
    put(INFO_MEM_LOWER, (LOW_RAM_END / 1024) as u32);
    put(
        INFO_MEM_UPPER,
        (upper_end.saturating_sub(HIMEM_START) / 1024) as u32,
    );
    put(INFO_CMDLINE_ADDR, cmdline.0 as u32);
    put(INFO_MODS_COUNT, modules.len() as u32);
    put(INFO_MODS_ADDR, mods_addr as u32);
    put(INFO_MMAP_LENGTH, mmap_len as u32);
    put(INFO_MMAP_ADDR, mmap_addr as u32);
    put(INFO_BOOT_LOADER_NAME_ADDR, name_addr as u32);

    let write = |bytes: &[u8], addr: u64, what| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(mem_error(what))
    };
    write(&mmap, mmap_addr, "multiboot memory map")?;
    write(&mod_list, mods_addr, "multiboot module list")?;
    write(&strings, name_addr, "multiboot strings")?;
    write(&info, MULTIBOOT_INFO_START, "multiboot information")
}

#[cfg(test)]
#[path = "multiboot_tests.rs"]
mod tests;
