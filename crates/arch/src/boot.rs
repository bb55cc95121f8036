//! Guest RAM layout, the e820 map, kernel/initrd/command-line loading and the
//! boot-protocol structures (Linux `boot_params`, PVH `hvm_start_info`).
//!
//! Two ways into a guest kernel are supported:
//!
//! * the Linux 64-bit boot protocol, for bzImages and ELF `vmlinux` files
//!   without a PVH note: the vCPU starts in long mode at the 64-bit entry
//!   with `RSI` pointing at `boot_params` ([`configure_linux_boot`]);
//! * PVH, for ELF kernels that carry a `XEN_ELFNOTE_PHYS32_ENTRY` note: the
//!   vCPU starts in 32-bit protected mode with `EBX` pointing at
//!   `hvm_start_info` ([`configure_pvh_boot`]).

use std::fs::File;
use std::io::{self, Seek};
use std::mem::size_of;
use std::os::unix::fs::FileExt;

use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE,
    LOADED_HIGH, XLF_KERNEL_64,
};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use thiserror::Error;
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryRegion,
};

use crate::layout::{
    ACPI_SIZE, ACPI_START, CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_RAM_START, HIMEM_START,
    LOW_RAM_END, MMIO_HOLE_START, PCI_ECAM_SIZE, PCI_ECAM_START, PVH_INFO_START, ZERO_PAGE_START,
};
use crate::multiboot;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved (not usable) memory.
pub const E820_RESERVED: u32 = 2;

pub(crate) const PAGE_SIZE: u64 = 0x1000;
const MIB: u64 = 1 << 20;

// Linux boot protocol (Documentation/arch/x86/boot.rst).
const SETUP_HEADER_OFFSET: usize = 0x1f1;
const SETUP_HEADER_END: usize = SETUP_HEADER_OFFSET + size_of::<setup_header>();
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS", little endian
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// Offset of the 64-bit entry point (`startup_64`) from the protected-mode
/// kernel's load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Oldest protocol we accept: 2.06 is the first with `cmdline_size`, and
/// everything the 64-bit entry relies on is in place by then.
const MIN_BZIMAGE_PROTOCOL: u16 = 0x0206;
/// From 2.10 on, the header has `pref_address` and `init_size`.
const PROTOCOL_WITH_INIT_SIZE: u16 = 0x020a;
/// From 2.12 on, `xloadflags` says whether the 64-bit entry exists.
const PROTOCOL_WITH_XLOADFLAGS: u16 = 0x020c;
/// Protocol version advertised in the header synthesized for ELF kernels.
const SYNTHETIC_PROTOCOL: u16 = 0x020f;
/// `type_of_loader` for a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Conventional end of the setup heap, relative to the real-mode code
/// (0xfe00 minus the 0x200 bytes of the boot sector).
const HEAP_END_PTR: u16 = 0xfe00 - 0x200;
/// `kernel_alignment` advertised for ELF kernels (x86_64 default
/// `CONFIG_PHYSICAL_ALIGN`).
const SYNTHETIC_KERNEL_ALIGNMENT: u32 = 0x20_0000;

// ELF (only the bits we look at before handing the file to linux-loader).
pub(crate) const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_HEADER_SIZE: usize = 64;
pub(crate) const ELF_PHDR_SIZE: usize = 56;
pub(crate) const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
pub(crate) const PT_LOAD: u32 = 1;

/// `hvm_start_info.magic` ("xEn3" with the top bit of each byte cleared).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `hvm_start_info` version; 1 has the memory map fields.
const PVH_START_INFO_VERSION: u32 = 1;

/// Errors of kernel/initrd loading and boot-structure set-up.
#[derive(Debug, Error)]
pub enum BootError {
    /// The kernel file could not be read.
    #[error("cannot read kernel image: {0}")]
    ReadKernel(#[source] io::Error),
    /// The kernel file is neither ELF, a bzImage nor a multiboot image.
    #[error("not a kernel image (neither ELF, bzImage nor multiboot)")]
    NotAKernel,
    /// ELF, but not for this architecture/class.
    #[error("ELF kernel is not x86_64/64-bit")]
    ElfNotX86_64,
    /// ELF with a malformed header.
    #[error("ELF kernel is malformed: {0}")]
    ElfMalformed(&'static str),
    /// ELF without anything to load.
    #[error("ELF kernel has no loadable segments")]
    ElfNoSegments,
    /// The file ends before the data its headers describe.
    #[error("kernel image is truncated: {0}")]
    KernelTruncated(String),
    /// A bzImage with a boot protocol too old for 64-bit direct boot.
    #[error(
        "bzImage boot protocol {}.{:02} is too old; 64-bit direct boot needs 2.06 or newer",
        .0 >> 8,
        .0 & 0xff
    )]
    BzImageTooOld(u16),
    /// A zImage (protected-mode code meant to run below 1 MiB).
    #[error("kernel is a zImage (not loaded high); only bzImage is supported")]
    BzImageNotLoadedHigh,
    /// The bzImage is a 32-bit kernel.
    #[error("bzImage has no 64-bit entry point (is it a 32-bit kernel?)")]
    BzImageNo64BitEntry,
    /// A non-relocatable bzImage that wants to run somewhere we cannot give it.
    #[error("bzImage is not relocatable and wants to run at {0:#x}, below 1 MiB")]
    BzImageNotRelocatable(u64),
    /// The kernel would be loaded (or would run) below 1 MiB.
    #[error("kernel wants to be loaded at {0:#x}, below 1 MiB")]
    KernelLoadAddress(u64),
    /// The kernel needs more memory than the guest has.
    #[error(
        "kernel does not fit in guest memory: it needs RAM up to {needed_end:#x} \
         ({} MiB), low RAM ends at {ram_end:#x} ({} MiB)",
        .needed_end.div_ceil(MIB),
        .ram_end / MIB
    )]
    KernelTooBig {
        /// First byte past what the kernel needs.
        needed_end: u64,
        /// First byte past the RAM region the kernel is loaded into.
        ram_end: u64,
    },
    /// linux-loader failed on an ELF kernel.
    #[error("cannot load ELF kernel: {0}")]
    ElfLoad(#[source] linux_loader::loader::Error),
    /// linux-loader failed on a bzImage.
    #[error("cannot load bzImage kernel: {0}")]
    BzImageLoad(#[source] linux_loader::loader::Error),
    /// The initrd file could not be read.
    #[error("cannot read initrd: {0}")]
    ReadInitrd(#[source] io::Error),
    /// The initrd file is empty.
    #[error("initrd file is empty")]
    InitrdEmpty,
    /// The initrd does not fit between the kernel and the top of low RAM.
    #[error("initrd ({size_mib} MiB) does not fit in guest memory")]
    InitrdTooBig {
        /// Initrd size, rounded up to MiB.
        size_mib: u64,
    },
    /// The command line is longer than the space reserved for it.
    #[error("kernel command line is too long ({len} bytes, at most {max})")]
    CmdlineTooLong {
        /// Length without the NUL.
        len: usize,
        /// Longest accepted length without the NUL.
        max: usize,
    },
    /// The command line is longer than this kernel accepts.
    #[error("kernel command line is too long for this kernel ({len} bytes, it accepts {max})")]
    CmdlineTooLongForKernel {
        /// Length without the NUL.
        len: usize,
        /// The kernel's `cmdline_size`.
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// The e820 map has more entries than `boot_params` holds.
    #[error("too many e820 entries ({0})")]
    TooManyE820Entries(usize),
    /// The PVH structures overflow their space.
    #[error("PVH start_info, memory map and module list overflow their area")]
    PvhInfoTooLarge,
    /// The initrd lies where the boot protocol cannot describe it.
    #[error("initrd at {0:#x} is above 4 GiB")]
    InitrdAbove4G(u64),
    /// A multiboot header whose checksum is wrong.
    #[error("multiboot header at file offset {0:#x} has a bad checksum")]
    MultibootChecksum(usize),
    /// A multiboot header that requires what tapir cannot provide.
    #[error(
        "multiboot kernel requires features tapir does not provide \
         (header flag bits {0:#x}; tapir supports bits 0-2 and 16)"
    )]
    MultibootUnsupportedFlags(u32),
    /// A multiboot image that is not ELF and has no address fields.
    #[error("multiboot kernel is not ELF and has no load addresses (header flag bit 16)")]
    MultibootNoAddresses,
    /// The a.out-kludge address fields of a multiboot header contradict each other.
    #[error("multiboot header address fields are invalid: {0}")]
    MultibootBadAddresses(&'static str),
    /// A 32-bit ELF multiboot kernel for another machine than i386.
    #[error("multiboot ELF kernel is not a 32-bit x86 (i386) ELF")]
    MultibootElfNot386,
    /// A multiboot segment below 1 MiB outside the conventional memory
    /// tapir leaves free there.
    #[error(
        "multiboot segment {start:#x}-{end:#x} is below 1 MiB outside the free conventional \
         memory ({free}): tapir keeps its boot data there, or it is not RAM"
    )]
    MultibootLowMemory {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// The free ranges, for the message.
        free: &'static str,
    },
    /// The multiboot information, memory map and module list overflow their area.
    #[error("multiboot information structure overflows its area (module string too long?)")]
    MultibootInfoTooLarge,
    /// Writing a boot structure to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, BootError>;

/// One entry of the e820 memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub r#type: u32,
}

/// The kind of kernel image that was loaded, which decides the boot protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// bzImage: Linux 64-bit boot protocol, entry at load address + 0x200.
    BzImage,
    /// ELF `vmlinux` without a PVH note: Linux 64-bit boot protocol at `e_entry`.
    ElfLinux64,
    /// ELF with a PVH note: 32-bit protected-mode PVH entry.
    ElfPvh,
    /// Multiboot v1 image (32-bit ELF or a.out kludge): 32-bit protected-mode
    /// entry with `EAX` = 0x2BADB002 and `EBX` the multiboot information.
    Multiboot,
}

/// What [`load_kernel`] put into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Which image/boot protocol.
    pub kind: KernelKind,
    /// Where the boot vCPU starts: the 64-bit entry for [`KernelKind::BzImage`]
    /// and [`KernelKind::ElfLinux64`], the 32-bit entry for
    /// [`KernelKind::ElfPvh`] and [`KernelKind::Multiboot`].
    pub entry: GuestAddress,
    /// Lowest guest-physical address of the loaded image.
    pub load_addr: GuestAddress,
    /// First byte past the memory the kernel occupies, including the room a
    /// bzImage needs to decompress itself and an ELF kernel's bss; nothing
    /// else (the initrd) may be placed below it.
    pub kernel_end: GuestAddress,
    /// The bzImage's setup header (`code32_start` set to the load address);
    /// `None` for ELF kernels.
    pub setup_header: Option<setup_header>,
}

/// The guest RAM regions for `mem_size` bytes of memory: low RAM up to the
/// 32-bit MMIO hole and the rest above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let mut regions = Vec::with_capacity(2);
    let low = mem_size.min(MMIO_HOLE_START);
    if low > 0 {
        regions.push((GuestAddress(0), low as usize));
    }
    if mem_size > MMIO_HOLE_START {
        regions.push((
            GuestAddress(HIGH_RAM_START),
            (mem_size - MMIO_HOLE_START) as usize,
        ));
    }
    regions
}

/// The e820 map of a guest with `mem_size` bytes of RAM, sorted by address.
pub fn e820_entries(mem_size: u64) -> Vec<E820Entry> {
    let ram = |addr, size| E820Entry {
        addr,
        size,
        r#type: E820_RAM,
    };
    let reserved = |addr, size| E820Entry {
        addr,
        size,
        r#type: E820_RESERVED,
    };
    let low_end = mem_size.min(MMIO_HOLE_START);
    let mut entries = Vec::with_capacity(5);
    entries.push(ram(0, low_end.min(LOW_RAM_END)));
    entries.push(reserved(ACPI_START, ACPI_SIZE));
    if low_end > HIMEM_START {
        entries.push(ram(HIMEM_START, low_end - HIMEM_START));
    }
    entries.push(reserved(PCI_ECAM_START, PCI_ECAM_SIZE));
    if mem_size > MMIO_HOLE_START {
        entries.push(ram(HIGH_RAM_START, mem_size - MMIO_HOLE_START));
    }
    entries
}

pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(value.checked_add(align - 1)? & !(align - 1))
}

pub(crate) fn mem_error(what: &'static str) -> impl FnOnce(GuestMemoryError) -> BootError {
    move |source| BootError::GuestMemory { what, source }
}

/// End (exclusive) of the guest RAM region that holds the kernel at 1 MiB.
fn low_ram_end<M: GuestMemoryBackend>(mem: &M) -> u64 {
    mem.find_region(GuestAddress(HIMEM_START))
        .map(|r| r.last_addr().raw_value() + 1)
        .unwrap_or(0)
}

/// Fails unless `[start, end)` is guest RAM.
pub(crate) fn check_fits<M: GuestMemoryBackend>(mem: &M, start: u64, end: u64) -> Result<()> {
    let fits = end >= start
        && usize::try_from(end - start)
            .map(|len| mem.check_range(GuestAddress(start), len))
            .unwrap_or(false);
    if fits {
        Ok(())
    } else {
        Err(BootError::KernelTooBig {
            needed_end: end,
            ram_end: low_ram_end(mem),
        })
    }
}

/// Reads as much of `buf` as the file has from offset 0; returns the count.
pub(crate) fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Loads a kernel image (ELF `vmlinux`, bzImage or multiboot) into guest
/// memory.
///
/// The formats are tried in QEMU's order of precedence: a 64-bit ELF is
/// loaded at its program headers' physical addresses (a PVH note makes it
/// [`KernelKind::ElfPvh`]) unless it has no PVH note and a multiboot header
/// with address fields, which QEMU boots as multiboot; a bzImage is loaded at `code32_start` (1 MiB)
/// and checked for a usable 64-bit boot protocol and for enough memory to
/// decompress itself; anything else with a multiboot v1 header in its first
/// 8 KiB is loaded as [`KernelKind::Multiboot`] (see [`crate::multiboot`]).
pub fn load_kernel<M: GuestMemoryBackend>(mem: &M, kernel_file: &mut File) -> Result<LoadedKernel> {
    let file_len = kernel_file.metadata().map_err(BootError::ReadKernel)?.len();
    let mut head = vec![0u8; SETUP_HEADER_END.max(multiboot::HEADER_SEARCH_LEN)];
    let n = read_prefix(kernel_file, &mut head).map_err(BootError::ReadKernel)?;
    let head = &head[..n];
    let is_elf = head.starts_with(ELF_MAGIC);

    if is_elf && head.get(4) != Some(&ELFCLASS32) {
        return match multiboot::elf64_header(kernel_file, file_len, head) {
            Some(header) => multiboot::load(mem, kernel_file, file_len, head, &header),
            None => load_elf(mem, kernel_file, file_len),
        };
    }
    if head.len() >= HDRS_OFFSET + 4 && u32_at(head, HDRS_OFFSET) == HDRS_MAGIC {
        return load_bzimage(mem, kernel_file, head, file_len);
    }
    match multiboot::find_header(head)? {
        Some(header) => multiboot::load(mem, kernel_file, file_len, head, &header),
        None if is_elf => Err(BootError::ElfNotX86_64),
        None => Err(BootError::NotAKernel),
    }
}

fn load_elf<M: GuestMemoryBackend>(
    mem: &M,
    file: &mut File,
    file_len: u64,
) -> Result<LoadedKernel> {
    let mut ehdr = [0u8; ELF_HEADER_SIZE];
    if read_prefix(file, &mut ehdr).map_err(BootError::ReadKernel)? < ELF_HEADER_SIZE {
        return Err(BootError::KernelTruncated(
            "file ends inside the ELF header".into(),
        ));
    }
    if ehdr[4] != ELFCLASS64 || ehdr[5] != ELFDATA2LSB || u16_at(&ehdr, 18) != EM_X86_64 {
        return Err(BootError::ElfNotX86_64);
    }
    let e_entry = u64_at(&ehdr, 24);
    let e_phoff = u64_at(&ehdr, 32);
    let e_phentsize = u16_at(&ehdr, 54) as usize;
    let e_phnum = u16_at(&ehdr, 56) as usize;
    if e_phentsize != ELF_PHDR_SIZE {
        return Err(BootError::ElfMalformed("unexpected program header size"));
    }
    if e_phoff < ELF_HEADER_SIZE as u64 {
        return Err(BootError::ElfMalformed(
            "program headers overlap the ELF header",
        ));
    }
    let phdrs_len = (e_phnum * ELF_PHDR_SIZE) as u64;
    if e_phoff
        .checked_add(phdrs_len)
        .is_none_or(|end| end > file_len)
    {
        return Err(BootError::KernelTruncated(
            "file ends inside the ELF program headers".into(),
        ));
    }
    let mut phdrs = vec![0u8; phdrs_len as usize];
    file.read_exact_at(&mut phdrs, e_phoff)
        .map_err(BootError::ReadKernel)?;

    // Check every segment against the file and guest RAM before anything is
    // written, so that the errors say what is wrong.
    let mut load_start = u64::MAX;
    let mut load_end = 0u64;
    for ph in phdrs.chunks_exact(ELF_PHDR_SIZE) {
        let p_type = u32_at(ph, 0);
        let (p_offset, p_paddr) = (u64_at(ph, 8), u64_at(ph, 24));
        let (p_filesz, p_memsz) = (u64_at(ph, 32), u64_at(ph, 40));
        // linux-loader skips empty PT_LOADs; so do we.
        if p_type != PT_LOAD || p_filesz == 0 {
            continue;
        }
        if p_offset
            .checked_add(p_filesz)
            .is_none_or(|end| end > file_len)
        {
            return Err(BootError::KernelTruncated(format!(
                "segment at file offset {p_offset:#x} ({p_filesz:#x} bytes) runs past the \
                 end of the {file_len}-byte file"
            )));
        }
        if p_paddr < HIMEM_START {
            return Err(BootError::KernelLoadAddress(p_paddr));
        }
        let end = p_paddr
            .checked_add(p_memsz.max(p_filesz))
            .ok_or(BootError::ElfMalformed("segment address overflows"))?;
        check_fits(mem, p_paddr, end)?;
        load_start = load_start.min(p_paddr);
        load_end = load_end.max(end);
    }
    if load_end == 0 {
        return Err(BootError::ElfNoSegments);
    }

    let result =
        Elf::load(mem, None, file, Some(GuestAddress(HIMEM_START))).map_err(BootError::ElfLoad)?;
    let (kind, entry) = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (KernelKind::ElfPvh, addr),
        _ => (KernelKind::ElfLinux64, GuestAddress(e_entry)),
    };
    Ok(LoadedKernel {
        kind,
        entry,
        load_addr: GuestAddress(load_start),
        kernel_end: GuestAddress(load_end.max(result.kernel_end)),
        setup_header: None,
    })
}

fn load_bzimage<M: GuestMemoryBackend>(
    mem: &M,
    file: &mut File,
    head: &[u8],
    file_len: u64,
) -> Result<LoadedKernel> {
    if head.len() < SETUP_HEADER_END {
        return Err(BootError::KernelTruncated(format!(
            "file ends inside the bzImage setup header ({file_len} bytes)"
        )));
    }
    let mut hdr = setup_header::default();
    hdr.as_mut_slice()
        .copy_from_slice(&head[SETUP_HEADER_OFFSET..SETUP_HEADER_END]);
    // Copy out of the packed struct once.
    let version = hdr.version;
    let loadflags = hdr.loadflags;
    let xloadflags = hdr.xloadflags;
    let load = u64::from(hdr.code32_start);

    if version < MIN_BZIMAGE_PROTOCOL {
        return Err(BootError::BzImageTooOld(version));
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err(BootError::BzImageNotLoadedHigh);
    }
    if version >= PROTOCOL_WITH_XLOADFLAGS && xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::BzImageNo64BitEntry);
    }
    let setup_sects = match hdr.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    let setup_bytes = (setup_sects + 1) * 512;
    let payload = file_len.saturating_sub(setup_bytes);
    let expected = u64::from(hdr.syssize) * 16;
    if payload == 0 || payload < expected {
        return Err(BootError::KernelTruncated(format!(
            "the bzImage header announces {} bytes of setup and {expected} bytes of kernel, \
             the file has {file_len} bytes",
            setup_bytes
        )));
    }
    if load < HIMEM_START {
        return Err(BootError::KernelLoadAddress(load));
    }

    // Where the kernel decompresses itself (arch/x86/boot/compressed/head_64.S):
    // a relocatable kernel at its load address rounded up to kernel_alignment,
    // but never below pref_address; a fixed one at pref_address. It needs
    // init_size bytes there.
    let mut needed_end = load + payload;
    if version >= PROTOCOL_WITH_INIT_SIZE {
        let pref = hdr.pref_address;
        let relocatable = hdr.relocatable_kernel != 0;
        let init_size = u64::from(hdr.init_size);
        let base = if relocatable {
            let align = u64::from(hdr.kernel_alignment);
            let align = if align.is_power_of_two() { align } else { 1 };
            align_up(load, align)
                .ok_or(BootError::KernelLoadAddress(load))?
                .max(pref)
        } else {
            if pref < HIMEM_START {
                return Err(BootError::BzImageNotRelocatable(pref));
            }
            pref
        };
        needed_end = needed_end.max(base.saturating_add(init_size));
    }
    check_fits(mem, load, needed_end)?;

    let result = BzImage::load(mem, None, file, Some(GuestAddress(HIMEM_START)))
        .map_err(BootError::BzImageLoad)?;
    Ok(LoadedKernel {
        kind: KernelKind::BzImage,
        entry: result.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
        load_addr: result.kernel_load,
        kernel_end: GuestAddress(needed_end.max(result.kernel_end)),
        setup_header: result.setup_header,
    })
}

/// Loads an initrd page-aligned at the top of low RAM (below the MMIO hole
/// and below the kernel's `initrd_addr_max`), above the kernel.
///
/// Returns its address and size.
pub fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &LoadedKernel,
    initrd_file: &mut File,
    mem_size: u64,
) -> Result<(GuestAddress, usize)> {
    let size = initrd_file.metadata().map_err(BootError::ReadInitrd)?.len();
    if size == 0 {
        return Err(BootError::InitrdEmpty);
    }
    let too_big = BootError::InitrdTooBig {
        size_mib: size.div_ceil(MIB),
    };

    let mut top = mem_size.min(MMIO_HOLE_START);
    if let Some(hdr) = kernel.setup_header {
        // initrd_addr_max is the highest address the initrd may occupy
        // (protocol 2.03+, which every bzImage we accept has).
        let max = u64::from(hdr.initrd_addr_max);
        if max != 0 {
            top = top.min(max + 1);
        }
    }
    let Some(start) = top.checked_sub(size).map(|s| s & !(PAGE_SIZE - 1)) else {
        return Err(too_big);
    };
    let lowest = align_up(kernel.kernel_end.raw_value(), PAGE_SIZE).unwrap_or(u64::MAX);
    if start < lowest {
        return Err(too_big);
    }
    let len = usize::try_from(size).map_err(|_| too_big)?;

    initrd_file.rewind().map_err(BootError::ReadInitrd)?;
    mem.read_exact_volatile_from(GuestAddress(start), initrd_file, len)
        .map_err(|e| match e {
            GuestMemoryError::IOError(e) => BootError::ReadInitrd(e),
            e => BootError::GuestMemory {
                what: "initrd",
                source: e,
            },
        })?;
    Ok((GuestAddress(start), len))
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`].
///
/// Returns the number of bytes written, NUL included.
pub fn write_cmdline<M: GuestMemoryBackend>(mem: &M, cmdline: &str) -> Result<usize> {
    let bytes = cmdline.as_bytes();
    if bytes.contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    if bytes.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: bytes.len(),
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    mem.write_slice(&buf, GuestAddress(CMDLINE_START))
        .map_err(mem_error("kernel command line"))?;
    Ok(buf.len())
}

/// The setup header handed to ELF kernels, which have none of their own.
fn synthetic_setup_header(kernel: &LoadedKernel, cmdline_size: usize) -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG_MAGIC,
        header: HDRS_MAGIC,
        version: SYNTHETIC_PROTOCOL,
        type_of_loader: LOADER_TYPE_UNDEFINED,
        loadflags: LOADED_HIGH | CAN_USE_HEAP,
        code32_start: kernel.load_addr.raw_value() as u32,
        heap_end_ptr: HEAP_END_PTR,
        cmd_line_ptr: CMDLINE_START as u32,
        cmdline_size: cmdline_size.saturating_sub(1) as u32,
        kernel_alignment: SYNTHETIC_KERNEL_ALIGNMENT,
        ..Default::default()
    }
}

/// Writes Linux `boot_params` (the zero page) at [`ZERO_PAGE_START`] for the
/// 64-bit boot protocol.
///
/// `cmdline_size` is what [`write_cmdline`] returned (NUL included).
pub fn configure_linux_boot<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &LoadedKernel,
    cmdline_size: usize,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
    mem_size: u64,
) -> Result<()> {
    let cmdline_len = cmdline_size.saturating_sub(1);
    let mut hdr = match kernel.setup_header {
        Some(hdr) => {
            // The kernel silently truncates a longer command line.
            let max = hdr.cmdline_size as usize;
            if hdr.version >= MIN_BZIMAGE_PROTOCOL && cmdline_len > max {
                return Err(BootError::CmdlineTooLongForKernel {
                    len: cmdline_len,
                    max,
                });
            }
            hdr
        }
        None => synthetic_setup_header(kernel, cmdline_size),
    };
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    hdr.heap_end_ptr = HEAP_END_PTR;
    hdr.cmd_line_ptr = CMDLINE_START as u32;
    if let Some((addr, size)) = initrd {
        let start = addr.raw_value();
        if start.saturating_add(size as u64) > 1 << 32 {
            return Err(BootError::InitrdAbove4G(start));
        }
        hdr.ramdisk_image = start as u32;
        hdr.ramdisk_size = size as u32;
    }

    let entries = e820_entries(mem_size);
    if entries.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyE820Entries(entries.len()));
    }
    let mut table = [boot_e820_entry::default(); E820_MAX_ENTRIES_ZEROPAGE];
    for (slot, e) in table.iter_mut().zip(&entries) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.r#type,
        };
    }

    let params = boot_params {
        hdr,
        e820_table: table,
        e820_entries: entries.len() as u8,
        acpi_rsdp_addr: rsdp.raw_value(),
        ..Default::default()
    };
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(mem_error("boot_params"))
}

/// Writes the PVH `hvm_start_info` at [`PVH_INFO_START`], followed by the
/// memory map and (with an initrd) a one-entry module list.
pub fn configure_pvh_boot<M: GuestMemoryBackend>(
    mem: &M,
    cmdline: GuestAddress,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
    mem_size: u64,
) -> Result<()> {
    let entries = e820_entries(mem_size);
    let memmap_addr = PVH_INFO_START + size_of::<hvm_start_info>() as u64;
    let memmap_len = (entries.len() * size_of::<hvm_memmap_table_entry>()) as u64;
    let modlist_addr = align_up(memmap_addr + memmap_len, 8).ok_or(BootError::PvhInfoTooLarge)?;
    let nr_modules = u32::from(initrd.is_some());
    let end = modlist_addr + u64::from(nr_modules) * size_of::<hvm_modlist_entry>() as u64;
    if end > ZERO_PAGE_START {
        return Err(BootError::PvhInfoTooLarge);
    }

    let memmap: Vec<u8> = entries
        .iter()
        .flat_map(|e| {
            hvm_memmap_table_entry {
                addr: e.addr,
                size: e.size,
                type_: e.r#type,
                reserved: 0,
            }
            .as_slice()
            .to_vec()
        })
        .collect();
    mem.write_slice(&memmap, GuestAddress(memmap_addr))
        .map_err(mem_error("PVH memory map"))?;

    if let Some((addr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr: addr.raw_value(),
            size: size as u64,
            cmdline_paddr: 0,
            reserved: 0,
        };
        mem.write_obj(module, GuestAddress(modlist_addr))
            .map_err(mem_error("PVH module list"))?;
    }

    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: PVH_START_INFO_VERSION,
        flags: 0,
        nr_modules,
        modlist_paddr: if nr_modules > 0 { modlist_addr } else { 0 },
        cmdline_paddr: cmdline.raw_value(),
        rsdp_paddr: rsdp.raw_value(),
        memmap_paddr: memmap_addr,
        memmap_entries: entries.len() as u32,
        reserved: 0,
    };
    mem.write_obj(start_info, GuestAddress(PVH_INFO_START))
        .map_err(mem_error("PVH start_info"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vm_memory::GuestMemoryMmap;

    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// A file in the temp directory, removed on drop.
    pub(crate) struct TempFile {
        path: PathBuf,
        pub(crate) file: File,
    }

    impl TempFile {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "tapir-arch-boot-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            TempFile { path, file }
        }

        pub(crate) fn with_contents(bytes: &[u8]) -> Self {
            let mut t = Self::new();
            t.file.write_all(bytes).unwrap();
            t
        }

        fn sparse(len: u64) -> Self {
            let t = Self::new();
            t.file.set_len(len).unwrap();
            t
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    pub(crate) fn guest_memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&ram_regions(size)).unwrap()
    }

    /// A minimal x86_64 ELF executable: one PT_LOAD of `code` at `paddr`
    /// (plus 4 KiB of bss) and, optionally, a PVH note.
    pub(crate) fn build_elf(paddr: u64, code: &[u8], pvh_entry: Option<u32>) -> Vec<u8> {
        const CODE_OFFSET: usize = 0x200;
        const NOTE_OFFSET: usize = 64 + 2 * 56;
        let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
        let mut elf = vec![0u8; CODE_OFFSET];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = ELFCLASS64;
        elf[5] = ELFDATA2LSB;
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&phnum.to_le_bytes());

        let mut phdr = |i: usize, fields: [u64; 7], p_type: u32, flags: u32| {
            let at = 64 + i * 56;
            elf[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
            elf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            for (j, f) in fields.iter().enumerate() {
                let o = at + 8 + j * 8;
                elf[o..o + 8].copy_from_slice(&f.to_le_bytes());
            }
        };
        let code_len = code.len() as u64;
        // offset, vaddr, paddr, filesz, memsz, align
        phdr(
            0,
            [
                CODE_OFFSET as u64,
                paddr,
                paddr,
                code_len,
                code_len + 0x1000,
                0x1000,
                0,
            ],
            PT_LOAD,
            5,
        );
        if let Some(entry) = pvh_entry {
            phdr(1, [NOTE_OFFSET as u64, 0, 0, 20, 20, 4, 0], 4, 4);
            let note = &mut elf[NOTE_OFFSET..NOTE_OFFSET + 20];
            note[0..4].copy_from_slice(&4u32.to_le_bytes()); // namesz
            note[4..8].copy_from_slice(&4u32.to_le_bytes()); // descsz
            note[8..12].copy_from_slice(&18u32.to_le_bytes()); // PHYS32_ENTRY
            note[12..16].copy_from_slice(b"Xen\0");
            note[16..20].copy_from_slice(&entry.to_le_bytes());
        }
        elf.extend_from_slice(code);
        elf
    }

    /// The first 0x26c bytes of a bzImage: boot sector plus setup header.
    pub(crate) fn bzimage_head(version: u16, loadflags: u8, xloadflags: u16) -> Vec<u8> {
        let mut img = vec![0u8; SETUP_HEADER_END];
        img[SETUP_HEADER_OFFSET] = 1; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = loadflags;
        img[0x214..0x218].copy_from_slice(&(HIMEM_START as u32).to_le_bytes());
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img
    }

    fn elf_kernel(load: u64, end: u64) -> LoadedKernel {
        LoadedKernel {
            kind: KernelKind::ElfLinux64,
            entry: GuestAddress(load),
            load_addr: GuestAddress(load),
            kernel_end: GuestAddress(end),
            setup_header: None,
        }
    }

    #[test]
    fn ram_regions_follow_the_hole() {
        assert_eq!(
            ram_regions(64 * MIB),
            vec![(GuestAddress(0), (64 * MIB) as usize)]
        );
        assert_eq!(
            ram_regions(3 * GIB),
            vec![(GuestAddress(0), (3 * GIB) as usize)]
        );
        assert_eq!(
            ram_regions(4 * GIB),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(HIGH_RAM_START), GIB as usize)
            ]
        );
        assert_eq!(
            ram_regions(5 * GIB),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), (2 * GIB) as usize)
            ]
        );
        assert!(ram_regions(0).is_empty());
    }

    #[test]
    fn e820_covers_ram_and_reserves_acpi_and_ecam() {
        for size in [16 * MIB, 64 * MIB, 3 * GIB, 4 * GIB, 5 * GIB] {
            let entries = e820_entries(size);
            // Sorted and disjoint.
            for pair in entries.windows(2) {
                assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{entries:?}");
            }
            let ram: u64 = entries
                .iter()
                .filter(|e| e.r#type == E820_RAM)
                .map(|e| e.size)
                .sum();
            // Everything but the legacy hole between the EBDA and 1 MiB.
            assert_eq!(ram, size - (HIMEM_START - LOW_RAM_END), "size {size:#x}");
            // RAM never reaches into the MMIO hole.
            for e in entries.iter().filter(|e| e.r#type == E820_RAM) {
                let end = e.addr + e.size;
                assert!(end <= MMIO_HOLE_START || e.addr >= HIGH_RAM_START);
            }
            let reserved: Vec<_> = entries
                .iter()
                .filter(|e| e.r#type == E820_RESERVED)
                .map(|e| (e.addr, e.size))
                .collect();
            assert_eq!(
                reserved,
                vec![(ACPI_START, ACPI_SIZE), (PCI_ECAM_START, PCI_ECAM_SIZE)]
            );
        }
        let five = e820_entries(5 * GIB);
        assert_eq!(five.len(), 5);
        assert_eq!(five[2].addr, HIMEM_START);
        assert_eq!(five[2].size, 3 * GIB - HIMEM_START);
        assert_eq!((five[4].addr, five[4].size), (4 * GIB, 2 * GIB));
        assert_eq!(e820_entries(64 * MIB).len(), 4);
    }

    #[test]
    fn non_kernel_files_are_rejected() {
        let mem = guest_memory(64 * MIB);
        for contents in [&b""[..], b"#!/bin/sh\necho hello\n", &[0u8; 4096][..]] {
            let mut f = TempFile::with_contents(contents);
            let err = load_kernel(&mem, &mut f.file).unwrap_err();
            assert!(matches!(err, BootError::NotAKernel), "{err:?}");
            assert_eq!(
                err.to_string(),
                "not a kernel image (neither ELF, bzImage nor multiboot)"
            );
        }
    }

    #[test]
    fn elf_for_other_architectures_is_rejected() {
        let mem = guest_memory(64 * MIB);
        let mut elf32 = build_elf(HIMEM_START, &[0xf4], None);
        elf32[4] = 1; // ELFCLASS32
        let mut arm64 = build_elf(HIMEM_START, &[0xf4], None);
        arm64[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        for img in [elf32, arm64] {
            let mut f = TempFile::with_contents(&img);
            let err = load_kernel(&mem, &mut f.file).unwrap_err();
            assert!(matches!(err, BootError::ElfNotX86_64), "{err:?}");
            assert_eq!(err.to_string(), "ELF kernel is not x86_64/64-bit");
        }
        // Just the magic: truncated, not a panic.
        let mut f = TempFile::with_contents(b"\x7fELF\x02\x01");
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");
    }

    #[test]
    fn elf_linux64_kernel_loads_at_its_physical_address() {
        let mem = guest_memory(64 * MIB);
        let code = [0xb0, 0x42, 0xe6, 0x80, 0xf4];
        let mut f = TempFile::with_contents(&build_elf(2 * MIB, &code, None));
        let k = load_kernel(&mem, &mut f.file).unwrap();
        assert_eq!(k.kind, KernelKind::ElfLinux64);
        assert_eq!(k.entry, GuestAddress(2 * MIB));
        assert_eq!(k.load_addr, GuestAddress(2 * MIB));
        assert_eq!(k.kernel_end, GuestAddress(2 * MIB + 5 + 0x1000));
        assert!(k.setup_header.is_none());
        let mut back = [0u8; 5];
        mem.read_slice(&mut back, GuestAddress(2 * MIB)).unwrap();
        assert_eq!(back, code);
    }

    #[test]
    fn elf_with_pvh_note_uses_the_pvh_entry() {
        let mem = guest_memory(64 * MIB);
        let img = build_elf(HIMEM_START, &[0xf4; 16], Some(0x10_0008));
        let mut f = TempFile::with_contents(&img);
        let k = load_kernel(&mem, &mut f.file).unwrap();
        assert_eq!(k.kind, KernelKind::ElfPvh);
        assert_eq!(k.entry, GuestAddress(0x10_0008));
    }

    #[test]
    fn elf_that_does_not_fit_is_rejected() {
        let mem = guest_memory(16 * MIB);
        let mut f = TempFile::with_contents(&build_elf(16 * MIB - 0x800, &[0xf4; 16], None));
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(
            matches!(err, BootError::KernelTooBig { ram_end, .. } if ram_end == 16 * MIB),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("kernel does not fit in guest memory"));

        let mut f = TempFile::with_contents(&build_elf(0x8000, &[0xf4; 16], None));
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(
            matches!(err, BootError::KernelLoadAddress(0x8000)),
            "{err:?}"
        );

        // A segment that runs past the end of the file.
        let mut img = build_elf(2 * MIB, &[0xf4; 64], None);
        img.truncate(img.len() - 32);
        let mut f = TempFile::with_contents(&img);
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");
    }

    #[test]
    fn truncated_bzimage_header_is_an_error() {
        let mem = guest_memory(64 * MIB);
        // "HdrS" present but the file ends inside the setup header.
        let head = bzimage_head(0x20f, LOADED_HIGH, XLF_KERNEL_64);
        let mut f = TempFile::with_contents(&head[..0x210]);
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");

        // A full header whose syssize promises more than the file has.
        let mut img = head.clone();
        img[0x1f4..0x1f8].copy_from_slice(&0x1000u32.to_le_bytes()); // 64 KiB
        img.resize(0x400 + 0x100, 0);
        let mut f = TempFile::with_contents(&img);
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");

        // Header only, no kernel at all.
        let mut f = TempFile::with_contents(&head);
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::KernelTruncated(_)), "{err:?}");
    }

    #[test]
    fn unsuitable_bzimages_are_rejected() {
        let mem = guest_memory(64 * MIB);
        let with_payload = |mut head: Vec<u8>| {
            head.resize(0x400 + 0x1000, 0);
            TempFile::with_contents(&head)
        };

        let mut f = with_payload(bzimage_head(0x204, LOADED_HIGH, 0));
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::BzImageTooOld(0x204)), "{err:?}");
        assert!(err.to_string().contains("2.04 is too old"), "{err}");

        let mut f = with_payload(bzimage_head(0x20f, 0, XLF_KERNEL_64));
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::BzImageNotLoadedHigh), "{err:?}");

        let mut f = with_payload(bzimage_head(0x20f, LOADED_HIGH, 0));
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(matches!(err, BootError::BzImageNo64BitEntry), "{err:?}");

        // Not relocatable, wants to run below 1 MiB (pref_address 0x8000).
        let mut head = bzimage_head(0x20f, LOADED_HIGH, XLF_KERNEL_64);
        head[0x258..0x260].copy_from_slice(&0x8000u64.to_le_bytes());
        let mut f = with_payload(head);
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(
            matches!(err, BootError::BzImageNotRelocatable(0x8000)),
            "{err:?}"
        );

        // Relocatable, decompresses at 16 MiB and needs 60 MiB there.
        let mut head = bzimage_head(0x20f, LOADED_HIGH, XLF_KERNEL_64);
        head[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        head[0x234] = 1;
        head[0x258..0x260].copy_from_slice(&(16 * MIB).to_le_bytes());
        head[0x260..0x264].copy_from_slice(&(60 * MIB as u32).to_le_bytes());
        let mut f = with_payload(head.clone());
        let err = load_kernel(&mem, &mut f.file).unwrap_err();
        assert!(
            matches!(err, BootError::KernelTooBig { needed_end, .. } if needed_end == 76 * MIB),
            "{err:?}"
        );
        // ... which fits in 128 MiB.
        let big = guest_memory(128 * MIB);
        let mut f = with_payload(head);
        let k = load_kernel(&big, &mut f.file).unwrap();
        assert_eq!(k.kind, KernelKind::BzImage);
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        assert_eq!(k.kernel_end, GuestAddress(76 * MIB));
    }

    #[test]
    fn real_bzimage_loads() {
        let Some(path) = tapir_test_support::host_bzimage("tapir-arch boot::real_bzimage_loads")
        else {
            return;
        };
        let mut file = File::open(&path).unwrap();
        let image = std::fs::read(&path).unwrap();
        let mem = guest_memory(256 * MIB);
        let k = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(k.kind, KernelKind::BzImage);
        assert_eq!(k.load_addr, GuestAddress(HIMEM_START));
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        let hdr = k.setup_header.unwrap();
        assert!({ hdr.version } >= MIN_BZIMAGE_PROTOCOL);
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.code32_start }, HIMEM_START as u32);
        // The protected-mode kernel follows the setup sectors.
        let setup_bytes = (usize::from(hdr.setup_sects) + 1) * 512;
        let mut back = vec![0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(back, image[setup_bytes..setup_bytes + 4096]);
        assert!(k.kernel_end.raw_value() > HIMEM_START + (image.len() - setup_bytes) as u64);

        // Complete set-up, then read the zero page back.
        let size = write_cmdline(&mem, "console=ttyS0 reboot=k panic=1").unwrap();
        let initrd = TempFile::with_contents(&[0x5a; 10000]);
        let (initrd_addr, initrd_len) = load_initrd(
            &mem,
            &k,
            &mut { initrd.file.try_clone().unwrap() },
            256 * MIB,
        )
        .unwrap();
        configure_linux_boot(
            &mem,
            &k,
            size,
            Some((initrd_addr, initrd_len)),
            GuestAddress(ACPI_START),
            256 * MIB,
        )
        .unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.version }, { hdr.version });
        assert_eq!({ params.hdr.type_of_loader }, LOADER_TYPE_UNDEFINED);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ params.hdr.ramdisk_image }, initrd_addr.raw_value() as u32);
        assert_eq!({ params.hdr.kernel_alignment }, { hdr.kernel_alignment });
        assert_eq!({ params.e820_entries }, 4);

        // The same kernel needs more than 64 MiB to decompress.
        let small = guest_memory(64 * MIB);
        let err = load_kernel(&small, &mut file).unwrap_err();
        assert!(matches!(err, BootError::KernelTooBig { .. }), "{err:?}");
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let mem = guest_memory(64 * MIB);
        let contents: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut f = TempFile::with_contents(&contents);
        let kernel = elf_kernel(HIMEM_START, 4 * MIB);
        let (addr, len) = load_initrd(&mem, &kernel, &mut f.file, 64 * MIB).unwrap();
        assert_eq!(len, 5000);
        assert_eq!(addr.raw_value() % PAGE_SIZE, 0);
        assert_eq!(addr.raw_value(), (64 * MIB - 5000) & !(PAGE_SIZE - 1));
        let mut back = vec![0u8; 5000];
        mem.read_slice(&mut back, addr).unwrap();
        assert_eq!(back, contents);

        // A bzImage's initrd_addr_max is honoured.
        let mut hdr = setup_header {
            version: 0x20f,
            initrd_addr_max: (32 * MIB - 1) as u32,
            ..Default::default()
        };
        hdr.header = HDRS_MAGIC;
        let kernel = LoadedKernel {
            kind: KernelKind::BzImage,
            setup_header: Some(hdr),
            ..kernel
        };
        let (addr, len) = load_initrd(&mem, &kernel, &mut f.file, 64 * MIB).unwrap();
        assert!(addr.raw_value() + len as u64 <= 32 * MIB);
        assert!(addr.raw_value() >= 31 * MIB);

        // Memory above the hole is never used.
        let big = guest_memory(4 * GIB + 64 * MIB);
        let kernel = elf_kernel(HIMEM_START, 4 * MIB);
        let (addr, _) = load_initrd(&big, &kernel, &mut f.file, 4 * GIB + 64 * MIB).unwrap();
        assert!(addr.raw_value() < MMIO_HOLE_START && addr.raw_value() > MMIO_HOLE_START - MIB);
    }

    #[test]
    fn initrd_too_big_is_an_error() {
        let mem = guest_memory(64 * MIB);
        let kernel = elf_kernel(HIMEM_START, 4 * MIB);
        let mut f = TempFile::sparse(80 * MIB);
        let err = load_initrd(&mem, &kernel, &mut f.file, 64 * MIB).unwrap_err();
        assert_eq!(
            err.to_string(),
            "initrd (80 MiB) does not fit in guest memory"
        );
        // Fits in RAM but would overlap the kernel.
        let kernel = elf_kernel(HIMEM_START, 16 * MIB);
        let mut f = TempFile::sparse(50 * MIB);
        let err = load_initrd(&mem, &kernel, &mut f.file, 64 * MIB).unwrap_err();
        assert!(
            matches!(err, BootError::InitrdTooBig { size_mib: 50 }),
            "{err:?}"
        );

        let mut f = TempFile::new();
        let err = load_initrd(&mem, &kernel, &mut f.file, 64 * MIB).unwrap_err();
        assert!(matches!(err, BootError::InitrdEmpty), "{err:?}");
    }

    #[test]
    fn cmdline_is_written_with_its_nul() {
        let mem = guest_memory(16 * MIB);
        let size = write_cmdline(&mem, "console=ttyS0").unwrap();
        assert_eq!(size, 14);
        let mut back = [0xffu8; 14];
        mem.read_slice(&mut back, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&back, b"console=ttyS0\0");

        let longest = "x".repeat(CMDLINE_MAX_SIZE - 1);
        assert_eq!(write_cmdline(&mem, &longest).unwrap(), CMDLINE_MAX_SIZE);
        let err = write_cmdline(&mem, &"x".repeat(CMDLINE_MAX_SIZE)).unwrap_err();
        assert!(
            matches!(err, BootError::CmdlineTooLong { len, max }
                if len == CMDLINE_MAX_SIZE && max == CMDLINE_MAX_SIZE - 1),
            "{err:?}"
        );
        assert!(matches!(
            write_cmdline(&mem, "a\0b").unwrap_err(),
            BootError::CmdlineNul
        ));
    }

    #[test]
    fn boot_params_read_back_for_an_elf_kernel() {
        let mem = guest_memory(5 * GIB);
        let kernel = elf_kernel(16 * MIB, 40 * MIB);
        let size = write_cmdline(&mem, "console=ttyS0").unwrap();
        let initrd = (GuestAddress(0x3000_0000), 0x1234);
        configure_linux_boot(
            &mem,
            &kernel,
            size,
            Some(initrd),
            GuestAddress(ACPI_START),
            5 * GIB,
        )
        .unwrap();

        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!(
            { p.hdr.loadflags } & (LOADED_HIGH | CAN_USE_HEAP),
            LOADED_HIGH | CAN_USE_HEAP
        );
        assert_eq!({ p.hdr.heap_end_ptr }, 0xfe00 - 0x200);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 13);
        assert_eq!({ p.hdr.ramdisk_image }, 0x3000_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ p.acpi_rsdp_addr }, ACPI_START);

        let expected = e820_entries(5 * GIB);
        assert_eq!(usize::from(p.e820_entries), expected.len());
        for (i, e) in expected.iter().enumerate() {
            let got = p.e820_table[i];
            assert_eq!(
                ({ got.addr }, { got.size }, { got.r#type }),
                (e.addr, e.size, e.r#type)
            );
        }
        assert_eq!({ p.e820_table[expected.len()].size }, 0);
    }

    #[test]
    fn bzimage_cmdline_limit_is_enforced() {
        let mem = guest_memory(16 * MIB);
        let hdr = setup_header {
            version: 0x20f,
            cmdline_size: 2047,
            header: HDRS_MAGIC,
            ..Default::default()
        };
        let kernel = LoadedKernel {
            kind: KernelKind::BzImage,
            setup_header: Some(hdr),
            ..elf_kernel(HIMEM_START, 8 * MIB)
        };
        let rsdp = GuestAddress(ACPI_START);
        configure_linux_boot(&mem, &kernel, 2048, None, rsdp, 16 * MIB).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.cmdline_size }, 2047);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
        let err = configure_linux_boot(&mem, &kernel, 2049, None, rsdp, 16 * MIB).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::CmdlineTooLongForKernel {
                    len: 2048,
                    max: 2047
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn pvh_start_info_reads_back() {
        let mem = guest_memory(64 * MIB);
        let initrd = (GuestAddress(60 * MIB), 0x4321);
        configure_pvh_boot(
            &mem,
            GuestAddress(CMDLINE_START),
            Some(initrd),
            GuestAddress(ACPI_START),
            64 * MIB,
        )
        .unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.rsdp_paddr, ACPI_START);
        assert_eq!(
            info.memmap_paddr,
            PVH_INFO_START + size_of::<hvm_start_info>() as u64
        );
        let expected = e820_entries(64 * MIB);
        assert_eq!(info.memmap_entries as usize, expected.len());
        for (i, e) in expected.iter().enumerate() {
            let addr = info.memmap_paddr + (i * size_of::<hvm_memmap_table_entry>()) as u64;
            let got: hvm_memmap_table_entry = mem.read_obj(GuestAddress(addr)).unwrap();
            assert_eq!((got.addr, got.size, got.type_), (e.addr, e.size, e.r#type));
        }
        assert_eq!(info.nr_modules, 1);
        assert!(info.modlist_paddr >= info.memmap_paddr + expected.len() as u64 * 24);
        assert_eq!(info.modlist_paddr % 8, 0);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (60 * MIB, 0x4321));

        configure_pvh_boot(
            &mem,
            GuestAddress(CMDLINE_START),
            None,
            GuestAddress(ACPI_START),
            64 * MIB,
        )
        .unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }
}
