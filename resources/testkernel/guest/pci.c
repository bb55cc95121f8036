// SPDX-License-Identifier: Apache-2.0
/*
 * PCI bus 0 enumeration through the type-1 configuration mechanism
 * (0xCF8/0xCFC), cross-checked against ECAM when the MCFG provides it.
 */
#include "kernel.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

u32 pci_cfg_read32(u8 bus, u8 dev, u8 fn, u8 reg)
{
	outl(PCI_CONFIG_ADDRESS,
	     0x80000000u | (u32)bus << 16 | (u32)(dev & 31) << 11 | (u32)(fn & 7) << 8 | (reg & 0xfc));
	return inl(PCI_CONFIG_DATA);
}

static u32 ecam_read32(u8 dev, u8 fn, u8 reg)
{
	return mmio_r32(acpi.ecam_base + ((u64)dev << 15 | (u64)fn << 12 | (reg & 0xfc)));
}

void pci_scan_bus0(void)
{
	int use_ecam = 0;
	u32 functions = 0, ecam_checked = 0, ecam_bad = 0, host_class = 0;
	int host_present = 0;

	if (acpi.ecam_base) {
		/* bus 0 occupies the first 1 MiB of the window */
		if (phys_ok(acpi.ecam_base, 1u << 20))
			use_ecam = 1;
		else
			kprintf("pci: ECAM base 0x%lx is outside the identity-mapped 4 GiB; not checked\n",
				acpi.ecam_base);
	}

	for (u8 dev = 0; dev < 32; dev++) {
		for (u8 fn = 0; fn < 8; fn++) {
			u32 id = pci_cfg_read32(0, dev, fn, 0x00);
			if (use_ecam) {
				u32 e = ecam_read32(dev, fn, 0x00);
				ecam_checked++;
				if (e != id && ++ecam_bad)
					fail("ecam-mismatch 00:%02x.%u id pio=0x%08x ecam=0x%08x", dev, fn, id, e);
			}
			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break;
				continue;
			}
			u32 class_rev = pci_cfg_read32(0, dev, fn, 0x08);
			u8 header = (u8)(pci_cfg_read32(0, dev, fn, 0x0c) >> 16);
			u32 class_code = class_rev >> 8;
			functions++;
			kprintf("PCI 00:%02x.%u %04x:%04x class %06x\n", dev, fn, id & 0xffff, id >> 16,
				class_code);
			if (use_ecam) {
				u32 e = ecam_read32(dev, fn, 0x08);
				if (e != class_rev && ++ecam_bad)
					fail("ecam-mismatch 00:%02x.%u class/rev pio=0x%08x ecam=0x%08x", dev,
					     fn, class_rev, e);
			}
			if (dev == 0 && fn == 0) {
				host_present = 1;
				host_class = class_code;
			}
			if (fn == 0 && !(header & 0x80))
				break; /* single-function device */
		}
	}

	kprintf("pci: %u function(s) on bus 0\n", functions);
	if (use_ecam)
		kprintf("pci: ECAM at 0x%lx: %u probe(s), %u mismatch(es) with port I/O\n", acpi.ecam_base,
			ecam_checked, ecam_bad);
	if (!host_present)
		fail("no-host-bridge (00:00.0 absent)");
	else if ((host_class >> 8) != 0x0600)
		fail("host-bridge-class 00:00.0 class 0x%06x, expected 0x0600xx", host_class);
}
