// SPDX-License-Identifier: Apache-2.0
/*
 * tapir test kernel: boot information, command line, checks and the
 * individual test modes.  See ../README.md for the contract.
 */
#include "kernel.h"

#define HVM_START_MAGIC 0x336ec578u
#define MAX_CMDLINE 4096
#define MAX_MEMMAP 128
#define UNMAPPED_MMIO 0xd0000000ul
#define UNMAPPED_PORT 0x0530

NORETURN void kmain(u32 kind, u64 info, u64 entry_rflags);
NORETURN void exception_handler(const u64 *frame);
extern const u64 isr_table[32];

static unsigned failures;

/* What the boot information told us, independent of the entry path. */
static struct {
	u32 kind;
	u64 info;
	u64 cmdline;
	u32 cmdline_len;
	u64 memmap;
	u32 memmap_count;
	u32 memmap_stride;
	u64 rsdp;
} boot;

/* Options from the command line. */
static struct {
	const char *test;
	u32 test_len;
	int want_cpus, want_mem;
	u64 cpus, mem_mib;
	const char *expect_boot;
	u32 expect_boot_len;
} opt;

/* ---- failure handling ----------------------------------------------------- */

void fail(const char *fmt, ...)
{
	va_list ap;
	failures++;
	kputs("TESTKERNEL: FAIL ");
	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
	kputs("\n");
}

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

static NORETURN void shutdown(void)
{
	acpi_poweroff();
	kputs("TESTKERNEL: FAIL poweroff-did-not-take-effect, trying the i8042 reset\n");
	outb(0x64, 0xfe);
	settle();
	kputs("TESTKERNEL: FAIL i8042-reset-did-not-take-effect, halting\n");
	halt_forever();
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	failures++;
	kputs("TESTKERNEL: FAIL ");
	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
	kputs("\n");
	shutdown();
}

/* Report the overall result and power off. */
NORETURN void finish(void)
{
	if (failures == 0)
		kputs("TESTKERNEL: PASS\n");
	else
		kprintf("TESTKERNEL: FAIL %u check(s) failed\n", failures);
	shutdown();
}

/* ---- exceptions ------------------------------------------------------------- */

struct idt_gate {
	u16 offset_lo;
	u16 selector;
	u8 ist;
	u8 type_attr;
	u16 offset_mid;
	u32 offset_hi;
	u32 reserved;
} __attribute__((packed));

struct table_ptr {
	u16 limit;
	u64 base;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
static int in_exception;

void idt_set_gate(u8 vector, u64 handler)
{
	struct idt_gate *g = &idt[vector];
	g->offset_lo = (u16)handler;
	g->selector = KERNEL_CS;
	g->ist = 0;
	g->type_attr = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
	g->offset_mid = (u16)(handler >> 16);
	g->offset_hi = (u32)(handler >> 32);
	g->reserved = 0;
}

/* Exceptions only; vectors 32-255 stay not present (a stray interrupt is a
 * #NP, reported) until irq_init() installs a handler. */
static void idt_init(void)
{
	for (int i = 0; i < 32; i++)
		idt_set_gate((u8)i, isr_table[i]);
	struct table_ptr p = {sizeof(idt) - 1, (u64)(uintptr_t)idt};
	__asm__ volatile("lidt %0" : : "m"(p));
}

/* frame: vector, error code, RIP, CS, RFLAGS, RSP, SS (see head.S) */
void exception_handler(const u64 *frame)
{
	if (in_exception++) {
		/* faulted while reporting a fault: don't recurse */
		outb(0x64, 0xfe);
		halt_forever();
	}
	u64 cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	fatal("exception vector=%lu error=0x%lx rip=0x%lx rsp=0x%lx rflags=0x%lx cr2=0x%lx", frame[0],
	      frame[1], frame[2], frame[5], frame[4], cr2);
}

/* ---- command line ------------------------------------------------------------ */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int word_is(const char *s, u32 len, const char *lit)
{
	return kstrlen(lit) == len && kstrneq(s, lit, len);
}

int parse_u64(const char *s, u32 len, u64 *out)
{
	u64 v = 0;
	u32 i = 0, base = 10;
	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	}
	if (i == len)
		return 0;
	for (; i < len; i++) {
		char c = s[i];
		u32 d;
		if (c >= '0' && c <= '9')
			d = (u32)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (u32)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (u32)(c - 'A' + 10);
		else
			return 0;
		v = v * base + d;
	}
	*out = v;
	return 1;
}

static void print_bounded(const char *s, u32 len)
{
	for (u32 i = 0; i < len; i++)
		uart_putc(s[i]);
}

/*
 * The next `key=value` token of the command line at *p (before end);
 * other tokens are skipped. Returns 0 at the end.
 */
static int next_key_value(const char **p, const char *end, const char **key, u32 *klen,
			  const char **val, u32 *vlen)
{
	while (*p < end) {
		while (*p < end && is_space(**p))
			(*p)++;
		const char *tok = *p;
		while (*p < end && !is_space(**p))
			(*p)++;
		u32 len = (u32)(*p - tok), k = 0;
		while (k < len && tok[k] != '=')
			k++;
		if (k == len)
			continue; /* not key=value */
		*key = tok;
		*klen = k;
		*val = tok + k + 1;
		*vlen = len - k - 1;
		return 1;
	}
	return 0;
}

static void parse_cmdline(void)
{
	const char *p = (const char *)(uintptr_t)boot.cmdline, *end = p + boot.cmdline_len;
	const char *tok, *val;
	u32 klen, vlen;
	while (next_key_value(&p, end, &tok, &klen, &val, &vlen)) {
		if (word_is(tok, klen, "test")) {
			opt.test = val;
			opt.test_len = vlen;
		} else if (word_is(tok, klen, "expect_cpus")) {
			opt.want_cpus = parse_u64(val, vlen, &opt.cpus);
			if (!opt.want_cpus)
				fail("cmdline-bad-value expect_cpus");
		} else if (word_is(tok, klen, "expect_mem_mib")) {
			opt.want_mem = parse_u64(val, vlen, &opt.mem_mib);
			if (!opt.want_mem)
				fail("cmdline-bad-value expect_mem_mib");
		} else if (word_is(tok, klen, "expect_boot")) {
			opt.expect_boot = val;
			opt.expect_boot_len = vlen;
		}
	}
}

const char *cmdline_get(const char *key, u32 *vlen)
{
	const char *p = (const char *)(uintptr_t)boot.cmdline, *end = p + boot.cmdline_len;
	const char *tok, *val, *found = 0;
	u32 klen, len;
	while (next_key_value(&p, end, &tok, &klen, &val, &len)) {
		if (word_is(tok, klen, key)) {
			found = val;
			*vlen = len;
		}
	}
	return found;
}

u64 cmdline_u64(const char *key, u64 dflt)
{
	u32 len;
	u64 v;
	const char *s = cmdline_get(key, &len);
	if (!s)
		return dflt;
	if (!parse_u64(s, len, &v)) {
		fail("cmdline-bad-value %s", key);
		return dflt;
	}
	return v;
}

/* ---- boot information ----------------------------------------------------------- */

static void set_cmdline(u64 pa)
{
	boot.cmdline = pa;
	boot.cmdline_len = 0;
	if (!pa)
		return;
	if (!phys_ok(pa, 1)) {
		fail("cmdline-address 0x%lx outside the identity-mapped 4 GiB", pa);
		boot.cmdline = 0;
		return;
	}
	const char *s = (const char *)(uintptr_t)pa;
	while (boot.cmdline_len < MAX_CMDLINE && pa + boot.cmdline_len < IDENTITY_LIMIT &&
	       s[boot.cmdline_len])
		boot.cmdline_len++;
	if (boot.cmdline_len == MAX_CMDLINE)
		fail("cmdline-unterminated (no NUL within %u bytes)", MAX_CMDLINE);
}

static void parse_linux_boot_params(u64 bp)
{
	if (!phys_ok(bp, 0x1000))
		fatal("boot_params pointer RSI=0x%lx invalid", bp);
	kprintf("boot_params at 0x%lx: boot_flag=0x%04x header=0x%08x version=0x%04x loader=0x%02x\n",
		bp, phys_r16(bp + 0x1fe), phys_r32(bp + 0x202), phys_r16(bp + 0x206),
		phys_r8(bp + 0x210));
	set_cmdline(phys_r32(bp + 0x228));
	boot.memmap = bp + 0x2d0;
	boot.memmap_count = phys_r8(bp + 0x1e8);
	boot.memmap_stride = 20;
	boot.rsdp = phys_r64(bp + 0x070);
	if (boot.memmap_count > MAX_MEMMAP) {
		fail("e820_entries %u exceeds the zero page's %u slots", boot.memmap_count, MAX_MEMMAP);
		boot.memmap_count = MAX_MEMMAP;
	}
}

static void parse_hvm_start_info(u64 si)
{
	if (!phys_ok(si, 0x38))
		fatal("hvm_start_info pointer EBX=0x%lx invalid", si);
	u32 magic = phys_r32(si), version = phys_r32(si + 4);
	kprintf("hvm_start_info at 0x%lx: magic=0x%08x version=%u flags=0x%x nr_modules=%u\n", si,
		magic, version, phys_r32(si + 8), phys_r32(si + 0xc));
	if (magic != HVM_START_MAGIC) {
		fail("hvm_start_info-magic 0x%08x (expected 0x%08x)", magic, HVM_START_MAGIC);
		return;
	}
	set_cmdline(phys_r64(si + 0x18));
	boot.rsdp = phys_r64(si + 0x20);
	if (version < 1) {
		fail("hvm_start_info-version %u (need >= 1 for the memory map)", version);
		return;
	}
	boot.memmap = phys_r64(si + 0x28);
	boot.memmap_count = phys_r32(si + 0x30);
	boot.memmap_stride = 24;
	if (boot.memmap_count > MAX_MEMMAP) {
		fail("memmap_entries %u is implausible", boot.memmap_count);
		boot.memmap_count = MAX_MEMMAP;
	}
	if (boot.memmap_count && !phys_ok(boot.memmap, (u64)boot.memmap_count * 24)) {
		fail("memmap_paddr 0x%lx invalid", boot.memmap);
		boot.memmap_count = 0;
	}
}

struct mem_entry {
	u64 addr, size;
	u32 type;
};

static struct mem_entry mem_get(u32 i)
{
	u64 p = boot.memmap + (u64)i * boot.memmap_stride;
	struct mem_entry e = {phys_r64(p), phys_r64(p + 8), phys_r32(p + 16)};
	return e;
}

static int overlaps(u64 a, u64 asz, u64 b, u64 bsz) { return a < b + bsz && b < a + asz; }

static void check_memory_map(void)
{
	u64 total = 0;
	u64 img = (u64)(uintptr_t)__image_start, img_len = (u64)(__image_end - __image_start);
	int image_in_ram = 0, mmio_probe_is_ram = 0;

	if (boot.memmap_count == 0)
		fail("no-memory-map");
	for (u32 i = 0; i < boot.memmap_count; i++) {
		struct mem_entry e = mem_get(i);
		kprintf("mem: 0x%016lx-0x%016lx type %u\n", e.addr, e.addr + e.size - 1, e.type);
		if (e.type != 1)
			continue;
		total += e.size;
		if (overlaps(e.addr, e.size, 0xa0000, 0x60000))
			fail("ram-in-legacy-hole entry %u 0x%lx+0x%lx overlaps 0xa0000-0xfffff", i, e.addr,
			     e.size);
		if (img >= e.addr && img + img_len <= e.addr + e.size)
			image_in_ram = 1;
		if (overlaps(e.addr, e.size, UNMAPPED_MMIO, 4))
			mmio_probe_is_ram = 1;
		for (u32 j = 0; j < i; j++) {
			struct mem_entry f = mem_get(j);
			if (f.type == 1 && overlaps(e.addr, e.size, f.addr, f.size))
				fail("memory-map-overlap RAM entries %u and %u", j, i);
		}
	}
	kprintf("mem: total RAM %lu KiB (%lu MiB)\n", total >> 10, total >> 20);
	if (boot.memmap_count && !image_in_ram)
		fail("kernel-not-in-ram image 0x%lx-0x%lx is not inside one RAM entry", img,
		     img + img_len - 1);
	if (opt.want_mem) {
		u64 hi = opt.mem_mib << 20, lo = opt.mem_mib >= 2 ? (opt.mem_mib - 2) << 20 : 0;
		if (total < lo || total > hi)
			fail("mem expected %lu MiB (accepting %lu..%lu MiB) but the map has %lu KiB of RAM",
			     opt.mem_mib, lo >> 20, hi >> 20, total >> 10);
	}
	if (mmio_probe_is_ram && opt.test && word_is(opt.test, opt.test_len, "mmio-unmapped"))
		fail("mmio-unmapped probe address 0x%lx is RAM in the memory map", UNMAPPED_MMIO);
}

/* ---- tests ------------------------------------------------------------------------- */

static NORETURN void test_basic(void)
{
	pci_scan_bus0();
	finish();
}

static NORETURN void test_mmio_unmapped(void)
{
	mmio_w32(UNMAPPED_MMIO, 0x12345678);
	u32 v = mmio_r32(UNMAPPED_MMIO);
	kprintf("mmio-unmapped: wrote 0x12345678 to 0x%lx, read back 0x%08x\n", UNMAPPED_MMIO, v);
	if (v != 0xffffffffu)
		fail("mmio-unmapped read 0x%08x, expected 0xffffffff", v);
	finish();
}

static NORETURN void test_pio_unmapped(void)
{
	outb(UNMAPPED_PORT, 0x5a); /* must be ignored */
	u8 b = inb(UNMAPPED_PORT);
	u16 w = inw(UNMAPPED_PORT);
	u32 l = inl(UNMAPPED_PORT);
	kprintf("pio-unmapped: port 0x%04x inb=0x%02x inw=0x%04x inl=0x%08x\n", UNMAPPED_PORT, b, w, l);
	if (b != 0xff)
		fail("pio-unmapped inb 0x%02x, expected 0xff", b);
	if (w != 0xffff)
		fail("pio-unmapped inw 0x%04x, expected 0xffff", w);
	if (l != 0xffffffffu)
		fail("pio-unmapped inl 0x%08x, expected 0xffffffff", l);
	finish();
}

static NORETURN void test_echo(void)
{
	char line[256];
	u32 n = 0;
	kputs("ECHO READY\n");
	for (;;) {
		char c = (char)uart_getc();
		if (c == '\n' || c == '\r')
			break;
		uart_putc(c);
		if (n < sizeof(line) - 1)
			line[n++] = c;
	}
	line[n] = 0;
	kprintf("\nECHO GOT %s\n", line);
	finish();
}

static NORETURN void test_reboot(void)
{
	kputs("REBOOTING via the FADT reset register\n");
	acpi_reset();
	fatal("reset-register-write-did-not-reset");
}

static NORETURN void test_i8042_reset(void)
{
	kputs("RESETTING via i8042 (0xfe to port 0x64)\n");
	outb(0x64, 0xfe);
	settle();
	fatal("i8042-reset-did-not-reset");
}

static NORETURN void test_triple_fault(void)
{
	struct table_ptr empty = {0, 0};
	/*
	 * ud2 rather than int3: an instruction emulator (KVM's included)
	 * may refuse to emulate a software interrupt outside real mode,
	 * whereas #UD is always delivered as an exception.  Vector 6 lies
	 * beyond the IDT limit -> #GP -> #DF -> triple fault.
	 */
	kputs("TRIPLE FAULTING (IDT limit 0, ud2)\n");
	__asm__ volatile("lidt %0\n\tud2" : : "m"(empty) : "memory");
	idt_init();
	fatal("triple-fault-survived");
}

static NORETURN void test_halt(void)
{
	kputs("HALTING\n");
	halt_forever();
}

/* ---- entry -------------------------------------------------------------------------- */

void kmain(u32 kind, u64 info, u64 entry_rflags)
{
	idt_init();
	uart_init();
	boot.kind = kind;
	boot.info = info;

	kputs("\nTESTKERNEL: tapir test kernel\n");
	kprintf("boot=%s\n", kind == BOOT_PVH ? "pvh" : "linux64");
	kprintf("entry: info=0x%lx rflags=0x%lx image=0x%lx-0x%lx\n", info, entry_rflags,
		(u64)(uintptr_t)__image_start, (u64)(uintptr_t)__image_end - 1);
	if (entry_rflags & 0x200)
		fail("entry-interrupts-enabled rflags=0x%lx", entry_rflags);
	if (kind == BOOT_PVH)
		parse_hvm_start_info(info);
	else
		parse_linux_boot_params(info);

	kputs("cmdline: ");
	if (boot.cmdline)
		print_bounded((const char *)(uintptr_t)boot.cmdline, boot.cmdline_len);
	else
		kputs("(none)");
	kputs("\n");
	parse_cmdline();

	check_memory_map();
	acpi_init(boot.rsdp);
	if (acpi.fadt && !acpi.hw_reduced)
		fail("fadt-not-hw-reduced flags=0x%08x", acpi.fadt_flags);
	if (acpi.fadt && !acpi.sleep_ctl.address)
		fail("fadt-no-sleep-control-register");
	if (acpi.fadt && !acpi.reset_reg.address)
		fail("fadt-no-reset-register");

	kprintf("cpus=%u\n", acpi.cpus);
	if (opt.want_cpus && acpi.cpus != opt.cpus)
		fail("cpus expected %lu, MADT has %u enabled", opt.cpus, acpi.cpus);
	if (opt.expect_boot) {
		const char *b = kind == BOOT_PVH ? "pvh" : "linux64";
		if (!word_is(opt.expect_boot, opt.expect_boot_len, b)) {
			kputs("TESTKERNEL: FAIL boot expected ");
			print_bounded(opt.expect_boot, opt.expect_boot_len);
			kprintf(", entered via %s\n", b);
			failures++;
		}
	}

	const char *t = opt.test ? opt.test : "basic";
	u32 tl = opt.test ? opt.test_len : 5;
	kputs("test=");
	print_bounded(t, tl);
	kputs("\n");

	if (word_is(t, tl, "basic"))
		test_basic();
	if (word_is(t, tl, "mmio-unmapped"))
		test_mmio_unmapped();
	if (word_is(t, tl, "pio-unmapped"))
		test_pio_unmapped();
	if (word_is(t, tl, "nic"))
		test_nic();
	if (word_is(t, tl, "hostile"))
		test_hostile();
	if (word_is(t, tl, "fw-cfg"))
		test_fw_cfg();
	if (word_is(t, tl, "pc-testdev"))
		test_pc_testdev();

	/* The remaining modes do not end in PASS; stop here if anything failed. */
	if (failures)
		finish();
	if (word_is(t, tl, "echo"))
		test_echo();
	if (word_is(t, tl, "reboot"))
		test_reboot();
	if (word_is(t, tl, "i8042-reset"))
		test_i8042_reset();
	if (word_is(t, tl, "triple-fault"))
		test_triple_fault();
	if (word_is(t, tl, "halt"))
		test_halt();
	if (word_is(t, tl, "debug-exit"))
		test_debug_exit();
	kputs("TESTKERNEL: FAIL unknown-test ");
	print_bounded(t, tl);
	kputs("\n");
	failures++;
	finish();
}
