/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tapir test kernel: shared declarations.
 *
 * The kernel is a tiny freestanding x86-64 program that validates the
 * machine a VMM presents to it and reports on COM1.  Everything runs with
 * interrupts disabled on the identity-mapped first 4 GiB.
 */
#ifndef TK_KERNEL_H
#define TK_KERNEL_H

/* Entry paths, passed from head.S to kmain() in EDI. */
#define BOOT_LINUX64 1
#define BOOT_PVH 2

/* Selectors of the GDT in head.S. */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

#ifndef __ASSEMBLER__

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* Symbols from the linker script. */
extern char __image_start[], __image_end[];

/* ---- port and memory access --------------------------------------- */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void cpu_pause(void) { __asm__ volatile("pause" ::: "memory"); }

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/*
 * Physical memory is identity mapped, so a physical address is also a
 * pointer.  The phys_*() helpers read (possibly unaligned) plain RAM such
 * as firmware tables; the mmio_*() helpers do single volatile accesses of
 * exactly the given width.
 */
static inline const void *phys_ptr(u64 pa)
{
	/* hide the integer origin from GCC's object-size tracking, which
	 * otherwise warns about accesses through constant addresses */
	uintptr_t p = (uintptr_t)pa;
	__asm__("" : "+r"(p));
	return (const void *)p;
}
static inline u8 phys_r8(u64 pa) { return *(const u8 *)phys_ptr(pa); }
static inline u16 phys_r16(u64 pa)
{
	u16 v;
	__builtin_memcpy(&v, phys_ptr(pa), sizeof(v));
	return v;
}
static inline u32 phys_r32(u64 pa)
{
	u32 v;
	__builtin_memcpy(&v, phys_ptr(pa), sizeof(v));
	return v;
}
static inline u64 phys_r64(u64 pa)
{
	u64 v;
	__builtin_memcpy(&v, phys_ptr(pa), sizeof(v));
	return v;
}

/* Everything the kernel touches must lie in the identity-mapped 4 GiB. */
#define IDENTITY_LIMIT 0x100000000ull
static inline int phys_ok(u64 pa, u64 len)
{
	return pa != 0 && pa < IDENTITY_LIMIT && len <= IDENTITY_LIMIT - pa;
}

static inline u8 mmio_r8(u64 pa) { return *(volatile u8 *)(uintptr_t)pa; }
static inline u16 mmio_r16(u64 pa) { return *(volatile u16 *)(uintptr_t)pa; }
static inline u32 mmio_r32(u64 pa) { return *(volatile u32 *)(uintptr_t)pa; }
static inline u64 mmio_r64(u64 pa) { return *(volatile u64 *)(uintptr_t)pa; }
static inline void mmio_w8(u64 pa, u8 v) { *(volatile u8 *)(uintptr_t)pa = v; }
static inline void mmio_w16(u64 pa, u16 v) { *(volatile u16 *)(uintptr_t)pa = v; }
static inline void mmio_w32(u64 pa, u32 v) { *(volatile u32 *)(uintptr_t)pa = v; }
static inline void mmio_w64(u64 pa, u64 v) { *(volatile u64 *)(uintptr_t)pa = v; }

/* ---- io.c: COM1 console, formatting, string helpers ------------------ */

void uart_init(void);
void uart_putc(char c);
int uart_getc(void); /* blocks (polling LSR.DR); returns the byte */
void kputs(const char *s);
void kprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);
void kvprintf(const char *fmt, va_list ap);

size_t kstrlen(const char *s);
int kstrneq(const char *a, const char *b, size_t n); /* 1 when equal */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- failure handling (main.c) ----------------------------------------- */

/* Print "TESTKERNEL: FAIL <reason>" and count it; execution continues. */
void fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
/* Print "TESTKERNEL: FAIL <reason>" and power off. */
NORETURN void fatal(const char *fmt, ...) PRINTF_LIKE(1, 2);
/* Print PASS (no check failed) or the failure count, and power off. */
NORETURN void finish(void);
/* 1 when s[0..len) is the NUL-terminated lit. */
int word_is(const char *s, u32 len, const char *lit);
/* Decimal or 0x hex; 1 on success. */
int parse_u64(const char *s, u32 len, u64 *out);
/* The value of the last `key=` on the command line (its length in *len),
 * or NULL. */
const char *cmdline_get(const char *key, u32 *len);
/* The numeric value of `key=`, or dflt when absent (a FAIL when malformed). */
u64 cmdline_u64(const char *key, u64 dflt);
/* cli; hlt forever. */
NORETURN void halt_forever(void);

/* test=nic (nic.c). */
NORETURN void test_nic(void);
NORETURN void test_hostile(void); /* hostile.c */
/* test=fw-cfg and test=debug-exit (qemu_devices.c). */
NORETURN void test_fw_cfg(void);
NORETURN void test_debug_exit(void);
NORETURN void test_pc_testdev(void);

/* Installs a 64-bit interrupt gate (main.c). */
void idt_set_gate(u8 vector, u64 handler);

/* ---- acpi.c ------------------------------------------------------------- */

struct gas {
	u8 space_id; /* 0 = system memory, 1 = system I/O */
	u8 bit_width;
	u8 bit_offset;
	u8 access_size;
	u64 address;
};

struct acpi_info {
	int ok;           /* RSDP + XSDT/RSDT found and valid */
	u64 rsdp;
	u8 rsdp_rev;
	u64 xsdt;         /* 0 when only an RSDT exists */
	u64 rsdt;
	u64 fadt, madt, mcfg, dsdt;
	u32 fadt_len;
	u32 fadt_flags;
	int hw_reduced;
	struct gas sleep_ctl, sleep_sts, reset_reg;
	u8 reset_value;
	u32 pm1a_cnt;     /* legacy PM1a control block port (non HW-reduced) */
	int s5_found;
	u8 slp_typ;
	u32 cpus;         /* enabled local APIC + x2APIC entries */
	u32 lapic_entries, x2apic_entries, ioapics;
	u32 lapic_addr;      /* MADT local APIC address */
	u32 ioapic_addr;     /* the first IOAPIC's address, 0 when none */
	u32 ioapic_gsi_base; /* and its first GSI */
	u64 ecam_base;    /* 0 when no MCFG entry covers segment 0 bus 0 */
	u8 ecam_bus_start, ecam_bus_end;
};

extern struct acpi_info acpi;

/* Locate and parse the ACPI tables; rsdp_hint may be 0 (then scan). */
void acpi_init(u64 rsdp_hint);
/* Write the _S5_ sleep request; returns only if nothing happened. */
void acpi_poweroff(void);
/* Write RESET_VALUE to RESET_REG; returns only if nothing happened. */
void acpi_reset(void);
/* Spin for a while (bounded by the TSC) so a VMM can act on a request. */
void settle(void);

/* ---- pci.c -------------------------------------------------------------- */

u32 pci_cfg_read32(u8 bus, u8 dev, u8 fn, u8 reg);
/* Enumerate bus 0, print one line per function, check the host bridge and
 * (when an MCFG exists) compare ECAM with port I/O. */
void pci_scan_bus0(void);

#endif /* !__ASSEMBLER__ */
#endif
