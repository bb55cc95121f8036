/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linker script for the test kernel, run through the C preprocessor; the
 * PVH variant is built with -DPVH and gets the PT_NOTE segment.
 *
 * Layout: one R+X PT_LOAD at 0x100000 (text, rodata, note) and one R+W
 * PT_LOAD after it (data, then bss: page tables, stack, C bss).
 */
OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(_start64)

PHDRS
{
	text PT_LOAD FLAGS(5);
	data PT_LOAD FLAGS(6);
#ifdef PVH
	note PT_NOTE FLAGS(4);
#endif
}

SECTIONS
{
	. = 0x100000;
	__image_start = .;

	.text : {
		KEEP(*(.text.entry))
		*(.text .text.*)
	} :text

	.rodata : {
		*(.rodata .rodata.*)
	} :text

	/* linker-synthesised PLT/GOT sections: must stay empty (no PIC code) */
	.iplt : { *(.iplt) } :text
	ASSERT(SIZEOF(.iplt) == 0, "unexpected PLT entries")

#ifdef PVH
	.note.Xen : {
		KEEP(*(.note.Xen))
	} :text :note
#endif

	. = ALIGN(4096);
	.data : {
		*(.data .data.*)
	} :data

	.got : { *(.got) *(.got.plt) *(.igot.plt) } :data
	ASSERT(SIZEOF(.got) == 0, "unexpected GOT entries")

	.bss : {
		*(.bss.pagetables)
		*(.bss.stack)
		. = ALIGN(8);
		__cbss_start = .;
		*(.bss .bss.* COMMON)
		. = ALIGN(8);
		__cbss_end = .;
	} :data

	. = ALIGN(4096);
	__image_end = .;

	/DISCARD/ : {
		*(.comment)
		*(.note.GNU-stack)
		*(.note.gnu.*)
		*(.eh_frame .eh_frame_hdr)
		*(.rela.*)
	}
}
