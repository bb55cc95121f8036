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
