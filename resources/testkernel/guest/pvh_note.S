/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PVH boot note (linked only into testkernel-pvh.elf): an ELF note named
 * "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY whose 4-byte descriptor is the
 * 32-bit physical entry point.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long	2f - 1f			/* namesz */
	.long	4f - 3f			/* descsz */
	.long	XEN_ELFNOTE_PHYS32_ENTRY	/* type */
1:	.asciz	"Xen"
2:	.balign 4
3:	.long	pvh_start32
4:	.balign 4
