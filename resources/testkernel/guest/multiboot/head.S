/*
 * Entry of the 32-bit multiboot test guest. The multiboot header comes
 * first in .multiboot; with -DAOUT_KLUDGE it sets flag bit 16 and its
 * address fields describe the flat binary (the linker provides the
 * symbols). The entry saves what the loader handed over (EAX, EBX and the
 * machine state) and calls mb_main(), which reports over COM1 and powers
 * off.
 */
#define MB_MAGIC 0x1BADB002
#define MB_PAGE_ALIGN (1 << 0)
#define MB_MEMORY_INFO (1 << 1)
#ifdef AOUT_KLUDGE
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO | (1 << 16))
#else
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

	.section .multiboot, "a"
	.balign 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mb_header		/* header_addr */
	.long __image_start	/* load_addr */
	.long __data_end	/* load_end_addr */
	.long __bss_end		/* bss_end_addr */
	.long _start		/* entry_addr */

	.text
	.globl _start
	.code32
_start:
	movl	$boot_stack_top, %esp
	/* mb_main(eax, ebx, cr0, eflags, cs, ds, ss, gdtr) */
	sgdt	gdtr
	pushl	$gdtr
	movl	%cs, %ecx
	xorl	%edx, %edx
	movw	%ss, %dx
	pushl	%edx
	movw	%ds, %dx
	pushl	%edx
	pushl	%ecx
	pushfl
	movl	%cr0, %edx
	pushl	%edx
	pushl	%ebx
	pushl	%eax
	call	mb_main
	/* ACPI (HW-reduced) sleep control: SLP_TYP 5 (S5), SLP_EN. */
	movw	$0x600, %dx
	movb	$((5 << 2) | (1 << 5)), %al
	outb	%al, %dx
1:	cli
	hlt
	jmp	1b

	.section .bss
	.balign 4
	.space 2
gdtr:	.space 6
	.balign 16
	.space 16384
boot_stack_top:
