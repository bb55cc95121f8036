/*
 * The 32-bit multiboot test guest: checks what a multiboot v1 loader
 * promises (machine state, the information structure, the memory map, the
 * command line and module 0) and prints "TESTKERNEL: PASS" or
 * "TESTKERNEL: FAIL: ..." on COM1. head.S powers off afterwards.
 *
 * The command line (after the kernel's file name, which the loader puts
 * first) carries what to expect:
 *   kernel=PATH    the first word of the command line
 *   mem_mib=N      guest RAM in MiB (below the PCI hole)
 *   module=PATH    module 0's string
 *   module_len=N   module 0's size; its contents must hold "TAPIR_MODULE_OK"
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define BOOTLOADER_MAGIC 0x2BADB002u

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void ser_putc(char c)
{
	if (c == '\n')
		ser_putc('\r');
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, (u8)c);
}

static void ser_puts(const char *s)
{
	while (*s)
		ser_putc(*s++);
}

static void puthex(u32 v)
{
	ser_puts("0x");
	for (int i = 28; i >= 0; i -= 4)
		ser_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

/* In .data: the loader must copy it. */
static volatile u32 data_marker = 0x5a5aa5a5;
/* In .bss: the loader must zero it. */
static volatile u8 bss_probe[8192];

static int failed;

static void check(int ok, const char *what, u32 value)
{
	ser_puts(ok ? "MULTIBOOT: ok " : "MULTIBOOT: BAD ");
	ser_puts(what);
	ser_puts(" ");
	puthex(value);
	ser_puts("\n");
	if (!ok)
		failed = 1;
}

static int str_eq_n(const char *a, const char *b, u32 n)
{
	for (u32 i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

static u32 str_len(const char *s)
{
	u32 n = 0;
	while (s[n])
		n++;
	return n;
}

/* The value of "key=" in the command line (up to the next space), or 0. */
static const char *arg(const char *cmdline, const char *key, u32 *len)
{
	u32 klen = str_len(key);
	for (const char *p = cmdline; *p; p++) {
		if ((p == cmdline || p[-1] == ' ') && str_eq_n(p, key, klen) && p[klen] == '=') {
			const char *v = p + klen + 1;
			*len = 0;
			while (v[*len] && v[*len] != ' ')
				(*len)++;
			return v;
		}
	}
	return 0;
}

static u32 arg_u32(const char *cmdline, const char *key)
{
	u32 len, v = 0;
	const char *s = arg(cmdline, key, &len);
	for (u32 i = 0; s && i < len && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (u32)(s[i] - '0');
	return v;
}

static int contains(const char *hay, u32 n, const char *needle)
{
	u32 m = str_len(needle);
	for (u32 i = 0; i + m <= n; i++)
		if (str_eq_n(hay + i, needle, m))
			return 1;
	return 0;
}

void mb_main(u32 magic, u32 info_addr, u32 cr0, u32 eflags, u32 cs, u32 ds, u32 ss, const volatile u16 *gdtr);

void mb_main(u32 magic, u32 info_addr, u32 cr0, u32 eflags, u32 cs, u32 ds, u32 ss, const volatile u16 *gdtr)
{
	const volatile u32 *info = (const volatile u32 *)info_addr;

	outb(COM1 + 3, 0x03); /* 8n1 */
	ser_puts("boot=multiboot\n");
	check(magic == BOOTLOADER_MAGIC, "eax", magic);
	check((cr0 & 1) && !(cr0 & 0x80000000u), "cr0 PE=1 PG=0", cr0);
	check(!(eflags & (1u << 9)) && !(eflags & (1u << 17)), "eflags IF=0 VM=0", eflags);
	/* The descriptors in the GDT: flat (base 0, 4 GiB, 32-bit). */
	u32 gdt = gdtr[1] | (u32)gdtr[2] << 16;
	const volatile u32 *code = (const volatile u32 *)(gdt + (cs & ~7u));
	const volatile u32 *data = (const volatile u32 *)(gdt + (ds & ~7u));
	const volatile u32 *stack = (const volatile u32 *)(gdt + (ss & ~7u));
	/* low: limit 15:0 = ffff, base 15:0 = 0; high: G, D/B, limit 19:16, base 31:24/23:16 = 0 */
	check(code[0] == 0x0000ffff && (code[1] & 0xffcf1800) == 0x00cf1800, "cs flat 32-bit code", code[1]);
	check(data[0] == 0x0000ffff && (data[1] & 0xffcf1a00) == 0x00cf1200, "ds flat data", data[1]);
	check(stack[0] == 0x0000ffff && (stack[1] & 0xffcf1a00) == 0x00cf1200, "ss flat data", stack[1]);
	check(data_marker == 0x5a5aa5a5, "data loaded", data_marker);
	u32 dirty = 0;
	for (u32 i = 0; i < sizeof(bss_probe); i++)
		dirty |= bss_probe[i];
	check(dirty == 0, "bss zeroed", dirty);
	check(info_addr != 0 && info_addr < 0x100000, "ebx", info_addr);
	if (failed) {
		ser_puts("TESTKERNEL: FAIL: entry state\n");
		return;
	}

	u32 flags = info[0];
	u32 want = (1u << 0) | (1u << 2) | (1u << 3) | (1u << 6) | (1u << 9);
	check((flags & want) == want, "info flags", flags);
	if (failed) {
		ser_puts("TESTKERNEL: FAIL: info flags\n");
		return;
	}

	const char *cmdline = (const char *)info[4];
	ser_puts("cmdline: ");
	ser_puts(cmdline);
	ser_puts("\n");
	u32 klen;
	const char *kernel = arg(cmdline, "kernel", &klen);
	check(kernel && str_eq_n(cmdline, kernel, klen) && cmdline[klen] == ' ',
	      "cmdline starts with the kernel name", klen);

	u32 mem_mib = arg_u32(cmdline, "mem_mib");
	check(info[1] == 639, "mem_lower", info[1]);
	check(mem_mib > 1 && info[2] == (mem_mib - 1) * 1024, "mem_upper", info[2]);

	/* Memory map: entries with a size prefix. */
	u32 mmap_len = info[11], mmap = info[12];
	u32 entries = 0, low_ok = 0, high_ok = 0, sizes_ok = 1;
	for (u32 p = mmap; p < mmap + mmap_len; p += *(const volatile u32 *)p + 4) {
		const volatile u32 *e = (const volatile u32 *)p;
		u64 base = e[1] | (u64)e[2] << 32, len = e[3] | (u64)e[4] << 32;
		u32 type = e[5];
		if (e[0] != 20)
			sizes_ok = 0;
		if (base == 0 && len == 0x9fc00 && type == 1)
			low_ok = 1;
		if (base == 0x100000 && len == ((u64)mem_mib << 20) - 0x100000 && type == 1)
			high_ok = 1;
		entries++;
		if (entries > 64)
			break;
	}
	check(entries >= 3 && sizes_ok, "mmap entries", entries);
	check(low_ok, "mmap low RAM", mmap);
	check(high_ok, "mmap RAM from 1 MiB", mem_mib);

	const char *name = (const char *)info[16];
	check(str_len(name) == 5 && str_eq_n(name, "tapir", 5), "boot_loader_name", info[16]);

	/* Module 0. */
	u32 mods_count = info[5];
	check(mods_count == 1, "mods_count", mods_count);
	if (mods_count == 1) {
		const volatile u32 *mod = (const volatile u32 *)info[6];
		u32 start = mod[0], end = mod[1];
		const char *string = (const char *)mod[2];
		u32 mlen;
		const char *want_string = arg(cmdline, "module", &mlen);
		check((start & 0xfff) == 0, "module page aligned", start);
		check(end - start == arg_u32(cmdline, "module_len"), "module size", end - start);
		check(want_string && str_len(string) == mlen && str_eq_n(string, want_string, mlen),
		      "module string", mlen);
		check(contains((const char *)start, end - start, "TAPIR_MODULE_OK"), "module contents",
		      start);
	}

	ser_puts(failed ? "TESTKERNEL: FAIL: multiboot information\n" : "TESTKERNEL: PASS\n");
}
