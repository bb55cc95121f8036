// SPDX-License-Identifier: Apache-2.0
/*
 * tapir test kernel: the QEMU-style devices tiny test kernels rely on,
 * fw_cfg (test=fw-cfg) and isa-debug-exit (test=debug-exit).  See
 * ../README.md for the contract.
 */
#include "kernel.h"

#define FW_CFG_PORT_SEL 0x510
#define FW_CFG_PORT_DATA 0x511
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_ID 0x0001
#define FW_CFG_RAM_SIZE 0x0003
#define FW_CFG_NB_CPUS 0x0005
#define FW_CFG_MAX_CPUS 0x000f
#define FW_CFG_UNKNOWN 0x7fff

/* The first `bytes` bytes of item `key`, little-endian. */
static u64 fw_cfg_read(u16 key, u32 bytes)
{
	u64 v = 0;
	outw(FW_CFG_PORT_SEL, key);
	for (u32 i = 0; i < bytes; i++)
		v |= (u64)inb(FW_CFG_PORT_DATA) << (i * 8);
	return v;
}

NORETURN void test_fw_cfg(void)
{
	/* Five bytes: the 4-byte signature, then one past its end (0). */
	u64 sig = fw_cfg_read(FW_CFG_SIGNATURE, 5);
	u32 id = (u32)fw_cfg_read(FW_CFG_ID, 4);
	u64 ram = fw_cfg_read(FW_CFG_RAM_SIZE, 8);
	u16 nb = (u16)fw_cfg_read(FW_CFG_NB_CPUS, 2);
	u16 max = (u16)fw_cfg_read(FW_CFG_MAX_CPUS, 2);
	u64 unknown = fw_cfg_read(FW_CFG_UNKNOWN, 8);
	char s[5] = {(char)sig, (char)(sig >> 8), (char)(sig >> 16), (char)(sig >> 24), 0};

	kprintf("FW_CFG: signature=%s id=0x%x ram_size=0x%lx nb_cpus=%u max_cpus=%u\n", s, id, ram,
		nb, max);
	if (!kstrneq(s, "QEMU", 4))
		fail("fw_cfg signature 0x%08lx, expected \"QEMU\"", sig & 0xffffffffu);
	if (sig >> 32)
		fail("fw_cfg read past the signature's end gave 0x%lx, expected 0", sig >> 32);
	if (id != 1)
		fail("fw_cfg id 0x%x, expected 0x1 (traditional interface, no DMA)", id);
	if (nb != acpi.cpus || max != acpi.cpus)
		fail("fw_cfg nb_cpus=%u max_cpus=%u, the MADT has %u CPUs", nb, max, acpi.cpus);
	u64 mib = cmdline_u64("expect_mem_mib", 0);
	if (mib && ram != mib << 20)
		fail("fw_cfg ram_size 0x%lx, expected %lu MiB", ram, mib);
	if (unknown)
		fail("fw_cfg unknown key 0x%x read 0x%lx, expected 0", FW_CFG_UNKNOWN, unknown);
	finish();
}

/*
 * debug_exit_value=V (default 0), debug_exit_port=P (default 0xf4),
 * debug_exit_width=1|2|4 (default 4): write V to P; the VMM must stop.
 */
NORETURN void test_debug_exit(void)
{
	u64 v = cmdline_u64("debug_exit_value", 0);
	u64 port = cmdline_u64("debug_exit_port", 0xf4);
	u64 width = cmdline_u64("debug_exit_width", 4);

	if (port > 0xffff || (width != 1 && width != 2 && width != 4))
		fatal("debug-exit bad port 0x%lx or width %lu", port, width);
	kprintf("DEBUG-EXIT: writing 0x%lx (%lu bytes) to port 0x%lx\n", v, width, port);
	if (width == 1)
		outb((u16)port, (u8)v);
	else if (width == 2)
		outw((u16)port, (u16)v);
	else
		outl((u16)port, (u32)v);
	settle();
	fatal("debug-exit write did not stop the VM");
}

/*
 * QEMU's pc-testdev (tapir --device pc-testdev): string instructions on its
 * scratch port 0xe0, which KVM hands to the VMM as several accesses in one
 * exit, and its scratch memory at 0xff000000 behind MMIO exits.
 */
#define TESTDEV_PORT 0xe0
#define TESTDEV_IORAM 0xff000000ul

NORETURN void test_pc_testdev(void)
{
	static const char out[] = "abcdefgh";
	static const u16 words[4] = {0x1111, 0x2222, 0x3333, 0x4444};
	u8 in[16];
	const void *src = out;
	void *dst = in;
	u64 n = sizeof(out) - 1;

	/* rep outsb: eight byte writes; the register keeps the last. */
	__asm__ volatile("cld; rep outsb" : "+S"(src), "+c"(n) : "d"((u16)TESTDEV_PORT) : "memory");
	u8 last = inb(TESTDEV_PORT);
	if (last != 'h')
		fail("pc-testdev after rep outsb: port 0xe0 reads 0x%x, expected 'h' (0x68)", last);
	/* rep insb: sixteen byte reads, each the register's first byte. */
	n = sizeof(in);
	__asm__ volatile("cld; rep insb" : "+D"(dst), "+c"(n) : "d"((u16)TESTDEV_PORT) : "memory");
	for (u32 i = 0; i < sizeof(in); i++)
		if (in[i] != 'h') {
			fail("pc-testdev rep insb: byte %u is 0x%x, expected 'h'", i, in[i]);
			break;
		}
	/* rep outsw: four word writes; the register's low word is the last. */
	src = words;
	n = 4;
	__asm__ volatile("cld; rep outsw" : "+S"(src), "+c"(n) : "d"((u16)TESTDEV_PORT) : "memory");
	u16 w = inw(TESTDEV_PORT);
	if (w != 0x4444)
		fail("pc-testdev after rep outsw: port 0xe0 reads 0x%x, expected 0x4444", w);
	/* The scratch memory reads back through MMIO. */
	volatile u32 *ioram = (volatile u32 *)(TESTDEV_IORAM + 0x10);
	*ioram = 0xdeadbeef;
	u32 back = *ioram;
	if (back != 0xdeadbeef)
		fail("pc-testdev memory at 0x%lx reads 0x%x, expected 0xdeadbeef",
		     TESTDEV_IORAM + 0x10, back);
	kprintf("PC_TESTDEV: string-io last=0x%x word=0x%x ioram=0x%x\n", last, w, back);
	finish();
}
