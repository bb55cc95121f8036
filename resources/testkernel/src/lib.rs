//! The tapir test guest kernel.
//!
//! `build.rs` compiles a tiny freestanding x86-64 program (C and GNU
//! assembler sources in `guest/`, built with GCC) into two ELF images that
//! VMM tests boot to validate the virtual machine; see `README.md` in this
//! crate for the entry contracts, the command-line modes and the output
//! format.

use std::path::{Path, PathBuf};

#[cfg(test)]
mod elf_check;

/// Path of `testkernel.elf`, the image for the Linux x86-64 64-bit boot
/// protocol.
///
/// It is linked and loaded at guest-physical 0x100000 (1 MiB), which is also
/// its ELF entry point. The VMM enters it in 64-bit long mode with the first
/// 4 GiB identity mapped, a flat 64-bit code segment, interrupts disabled and
/// RSI holding the guest-physical address of the `boot_params` zero page.
/// The image has no PVH note.
pub fn elf_path() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("testkernel.elf")
}

/// Path of `testkernel-pvh.elf`, the same program plus a PVH ELF note
/// (`PT_NOTE` holding a "Xen" note of type 18, `XEN_ELFNOTE_PHYS32_ENTRY`).
///
/// The VMM enters it at the note's 32-bit physical entry address in 32-bit
/// protected mode with paging off, flat 32-bit segments and EBX holding the
/// guest-physical address of a `struct hvm_start_info` (magic 0x336ec578,
/// version 1). Its ELF entry point is the 64-bit Linux-protocol entry
/// (0x100000), as for [`elf_path`], so either boot path works with it.
pub fn pvh_elf_path() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("testkernel-pvh.elf")
}

/// Path of `testkernel-mb.elf`, a separate 32-bit program (sources in
/// `guest/multiboot/`) as an i386 ELF with a multiboot v1 header (flags:
/// page-aligned modules, memory information), linked and loaded at 2 MiB.
///
/// It checks the multiboot entry state (EAX 0x2BADB002, EBX the
/// information structure, flat 32-bit protected mode, paging and interrupts
/// off), its `.data` and zeroed `.bss`, and the information structure
/// against its command line (see `guest/multiboot/main.c`), prints
/// `TESTKERNEL: PASS` or `TESTKERNEL: FAIL: ...` on COM1 and powers off.
pub fn multiboot_elf_path() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("testkernel-mb.elf")
}

/// Path of `testkernel-mb.bin`: the program of [`multiboot_elf_path`] as a
/// flat binary (no ELF headers) whose multiboot header sets flag bit 16 and
/// gives the load, bss and entry addresses (the "a.out kludge").
pub fn multiboot_bin_path() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("testkernel-mb.bin")
}

#[cfg(test)]
mod tests {
    use super::elf_check::{check_image, LOAD_ADDR};
    use super::*;

    #[test]
    fn linux64_image_is_well_formed() {
        let img = std::fs::read(elf_path()).expect("testkernel.elf");
        let info = check_image(&img, false).expect("valid image");
        assert_eq!(info.entry, LOAD_ADDR);
        assert!(info.pvh_entry.is_none());
    }

    #[test]
    fn pvh_image_has_a_32bit_entry_note() {
        let img = std::fs::read(pvh_elf_path()).expect("testkernel-pvh.elf");
        let info = check_image(&img, true).expect("valid image");
        assert_eq!(info.entry, LOAD_ADDR);
        let pvh = u64::from(info.pvh_entry.expect("PVH note"));
        assert_ne!(pvh, info.entry);
        assert!(pvh > LOAD_ADDR);
    }

    #[test]
    fn images_stay_clear_of_vmm_low_memory() {
        for path in [elf_path(), pvh_elf_path()] {
            let img = std::fs::read(&path).unwrap();
            let info = check_image(&img, path == pvh_elf_path()).unwrap();
            for seg in &info.loads {
                assert!(
                    seg.paddr >= LOAD_ADDR,
                    "{path:?}: segment at {:#x}",
                    seg.paddr
                );
                // small: everything, .bss included, fits in well under 1 MiB
                assert!(seg.paddr + seg.memsz < 0x20_0000, "{path:?}: {seg:?}");
            }
        }
    }
}
