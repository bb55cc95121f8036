/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tapir test kernel entry points.
 *
 *  _start64     Linux 64-bit boot protocol (the ELF entry point, 0x100000):
 *               long mode, paging on with the low 4 GiB identity mapped by
 *               the VMM, interrupts off, RSI = boot_params.
 *  pvh_start32  PVH (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected mode,
 *               paging off, EBX = hvm_start_info.  Builds identity page
 *               tables for the low 4 GiB (2 MiB pages) in .bss and enters
 *               long mode.
 *
 * Both load the GDT below, switch to the stack below and call
 * kmain(kind, info, entry_rflags).  No memory outside the image is written.
 */
#include "kernel.h"

#define PTE_P 0x001
#define PTE_RW 0x002
#define PTE_PS 0x080
#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100
#define STACK_SIZE 0x4000

	.section .text.entry, "ax", @progbits

/* ---- Linux 64-bit entry ------------------------------------------------- */
	.code64
	.globl _start64
	.type _start64, @function
_start64:
	mov	$stack_top, %rsp	/* the VMM's RSP is not ours to use */
	pushfq				/* record RFLAGS as handed over */
	cli
	cld
	pop	%rdx
	mov	$BOOT_LINUX64, %edi	/* RSI = boot_params, untouched */

	lgdt	gdt_desc(%rip)
	pushq	$KERNEL_CS
	lea	1f(%rip), %rax
	pushq	%rax
	lretq				/* reload CS from our GDT */
1:	mov	$KERNEL_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	jmp	common64
	.size _start64, . - _start64

/* ---- PVH 32-bit entry ------------------------------------------------------ */
	.code32
	.globl pvh_start32
	.type pvh_start32, @function
pvh_start32:
	mov	$stack_top, %esp
	pushfl
	cli
	cld
	pop	%ebp			/* EFLAGS as handed over */
	mov	%ebx, %esi		/* hvm_start_info */

	lgdt	gdt_desc		/* the PVH GDTR may be invalid */
	mov	$KERNEL_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs

	/* clear the PML4 and the PDPT (two pages) */
	mov	$pvh_pml4, %edi
	xor	%eax, %eax
	mov	$(2 * 4096 / 4), %ecx
	rep stosl
	movl	$(pvh_pdpt + PTE_P + PTE_RW), pvh_pml4

	/* PDPT[0..3] -> the four page directories */
	mov	$pvh_pdpt, %edi
	mov	$(pvh_pd + PTE_P + PTE_RW), %eax
	mov	$4, %ecx
2:	mov	%eax, (%edi)
	add	$4096, %eax
	add	$8, %edi
	dec	%ecx
	jnz	2b

	/*
	 * 2048 PDEs of 2 MiB cover 0-4 GiB, two per iteration; the loop ends
	 * when the physical address wraps past 4 GiB (carry out of EAX).
	 */
	mov	$pvh_pd, %edi
	mov	$(PTE_P + PTE_RW + PTE_PS), %eax
3:	mov	%eax, (%edi)
	movl	$0, 4(%edi)
	lea	0x200000(%eax), %edx
	mov	%edx, 8(%edi)
	movl	$0, 12(%edi)
	add	$16, %edi
	add	$0x400000, %eax
	jnc	3b

	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$pvh_pml4, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_PE), %eax
	mov	%eax, %cr0
	ljmp	$KERNEL_CS, $pvh_long64

	.code64
pvh_long64:
	mov	$KERNEL_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$stack_top, %rsp
	mov	%esi, %esi		/* upper halves are undefined after the switch */
	mov	%ebp, %edx
	mov	$BOOT_PVH, %edi
	.size pvh_start32, . - pvh_start32

/* ---- common 64-bit path: EDI = kind, RSI = info, RDX = entry RFLAGS ---- */
common64:
	/* zero the C .bss (8-byte aligned by the linker script) */
	mov	%rdi, %r12
	mov	%rdx, %r13
	mov	$__cbss_start, %rdi
	mov	$__cbss_end, %rcx
	sub	%rdi, %rcx
	shr	$3, %rcx
	xor	%eax, %eax
	rep stosq
	mov	%r12, %rdi
	mov	%r13, %rdx
	call	kmain			/* does not return */
4:	cli
	hlt
	jmp	4b

/* ---- exception stubs: push a uniform frame and call exception_handler ---- */
	.text
	.balign 16
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
isr\n:
	.if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	/* the CPU pushed an error code */
	.else
	pushq	$0			/* no CPU error code: push a dummy */
	.endif
	pushq	$\n
	jmp	isr_common
.endr

isr_common:
	/* RSP -> vector, error code, RIP, CS, RFLAGS, RSP, SS */
	mov	%rsp, %rdi
	and	$-16, %rsp
	call	exception_handler	/* does not return */
5:	cli
	hlt
	jmp	5b

/* ---- device interrupts: save the caller-saved registers, call irq_dispatch ---- */
	.globl	irq_entry_nic
irq_entry_nic:
	/* the CPU aligned RSP to 16 and pushed 5 words: 9 pushes re-align it */
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	cld
	call	irq_dispatch
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
	iretq

	/* the local APIC's spurious vector: no EOI */
	.globl	irq_entry_spurious
irq_entry_spurious:
	iretq

	.section .rodata
	.balign 8
	.globl isr_table
isr_table:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad	isr\n
.endr

/* ---- GDT (in .data so the data segment has file contents) --------------- */
	.section .data
	.balign 16
gdt:
	.quad	0
	.quad	0x00af9b000000ffff	/* KERNEL_CS: 64-bit code, DPL 0, accessed */
	.quad	0x00cf93000000ffff	/* KERNEL_DS: flat 4 GiB data, accessed */
gdt_end:
	.balign 8
	.word	0, 0, 0			/* pad so that the base is 8-byte aligned */
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

/* ---- page tables and stack ---------------------------------------------------- */
	.section .bss.pagetables, "aw", @nobits
	.balign 4096
pvh_pml4:
	.skip	4096
pvh_pdpt:
	.skip	4096
pvh_pd:
	.skip	4 * 4096

	.section .bss.stack, "aw", @nobits
	.balign 16
stack_bottom:
	.skip	STACK_SIZE
	.globl stack_top
stack_top:
