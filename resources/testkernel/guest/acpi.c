// SPDX-License-Identifier: Apache-2.0
/*
 * ACPI: RSDP -> XSDT (or RSDT) -> FADT, MADT, MCFG, DSDT.  Extracts what the
 * tests need (CPU count, ECAM base, sleep/reset registers, _S5_ SLP_TYP)
 * and implements poweroff and reset.
 */
#include "kernel.h"

struct acpi_info acpi;

#define SIG32(a, b, c, d) ((u32)(a) | (u32)(b) << 8 | (u32)(c) << 16 | (u32)(d) << 24)
#define RSDP_SIG 0x2052545020445352ull /* "RSD PTR " */
#define MAX_TABLE_LEN (1u << 20)

/* ---- helpers ----------------------------------------------------------- */

/*
 * Sum of len bytes modulo 256.  Firmware tables (the DSDT in particular)
 * can be a few KiB, so this adds eight bytes per step: the even and odd
 * bytes of each word are accumulated in separate 16-bit lanes, which are
 * folded before they can overflow.
 */
static u8 byte_sum(u64 pa, u32 len)
{
	const u8 *p = phys_ptr(pa);
	const u64 m = 0x00ff00ff00ff00ffull;
	u32 sum = 0, i = 0, words_end = len & ~7u;

	while (i < words_end) {
		u64 acc = 0;
		/* each lane gains at most 2 * 255 per word: 128 words fit */
		u32 chunk_end = words_end - i > 1024 ? i + 1024 : words_end;
		for (; i < chunk_end; i += 8) {
			u64 w;
			__builtin_memcpy(&w, p + i, 8);
			acc += (w & m) + ((w >> 8) & m);
		}
		sum += (u32)(acc & 0xffff) + (u32)((acc >> 16) & 0xffff) + (u32)((acc >> 32) & 0xffff) +
		       (u32)(acc >> 48);
	}
	for (; i < len; i++)
		sum += p[i];
	return (u8)sum;
}

static void sig_str(u32 sig, char out[5])
{
	for (int i = 0; i < 4; i++) {
		char c = (char)(sig >> (8 * i));
		out[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	out[4] = 0;
}

/* Validate a System Description Table header; returns its length or 0. */
static u32 table_check(u64 pa, const char *what)
{
	if (!phys_ok(pa, 36)) {
		fail("acpi-%s-address 0x%lx outside the identity-mapped 4 GiB", what, pa);
		return 0;
	}
	u32 len = phys_r32(pa + 4);
	if (len < 36 || len > MAX_TABLE_LEN || !phys_ok(pa, len)) {
		fail("acpi-%s-length %u at 0x%lx", what, len, pa);
		return 0;
	}
	u8 s = byte_sum(pa, len);
	if (s) {
		fail("acpi-%s-checksum at 0x%lx (sum 0x%02x)", what, pa, s);
		return 0;
	}
	return len;
}

static struct gas gas_read(u64 pa)
{
	struct gas g = {
		.space_id = phys_r8(pa),
		.bit_width = phys_r8(pa + 1),
		.bit_offset = phys_r8(pa + 2),
		.access_size = phys_r8(pa + 3),
		.address = phys_r64(pa + 4),
	};
	return g;
}

static void print_gas(const char *name, const struct gas *g)
{
	const char *sp = g->space_id == 0 ? "mem" : g->space_id == 1 ? "io" : "space?";
	kprintf(" %s=%s:0x%lx/%u", name, sp, g->address, g->bit_width);
}

/* Width in bytes of a GAS access: Access Size if given, else Bit Width. */
static unsigned gas_bytes(const struct gas *g)
{
	if (g->access_size >= 1 && g->access_size <= 4)
		return 1u << (g->access_size - 1);
	switch (g->bit_width) {
	case 16:
		return 2;
	case 32:
		return 4;
	case 64:
		return 8;
	default:
		return 1;
	}
}

/* Returns 0 when the write was issued. */
static int gas_write(const struct gas *g, u64 value, const char *what)
{
	unsigned bytes = gas_bytes(g);
	value <<= g->bit_offset;
	kprintf("%s: writing 0x%lx (%u byte%s) to %s:0x%lx\n", what, value, bytes, bytes == 1 ? "" : "s",
		g->space_id == 0 ? "mem" : g->space_id == 1 ? "io" : "space?", g->address);
	if (g->space_id == 1) {
		if (!g->address || g->address > 0xffff) {
			fail("%s-register io port 0x%lx invalid", what, g->address);
			return -1;
		}
		u16 port = (u16)g->address;
		switch (bytes) {
		case 1:
			outb(port, (u8)value);
			return 0;
		case 2:
			outw(port, (u16)value);
			return 0;
		case 4:
			outl(port, (u32)value);
			return 0;
		default:
			fail("%s-register io access of %u bytes", what, bytes);
			return -1;
		}
	}
	if (g->space_id == 0) {
		if (!phys_ok(g->address, bytes)) {
			fail("%s-register mmio address 0x%lx invalid", what, g->address);
			return -1;
		}
		switch (bytes) {
		case 1:
			mmio_w8(g->address, (u8)value);
			break;
		case 2:
			mmio_w16(g->address, (u16)value);
			break;
		case 4:
			mmio_w32(g->address, (u32)value);
			break;
		default:
			mmio_w64(g->address, value);
			break;
		}
		return 0;
	}
	fail("%s-register address space %u unsupported", what, g->space_id);
	return -1;
}

void settle(void)
{
	/*
	 * A VMM typically handles reset/poweroff asynchronously (the vCPU
	 * keeps running until the VMM's main loop reacts), so wait about a
	 * second's worth of TSC ticks before concluding nothing happened.
	 * The iteration cap guards against a TSC that does not advance.
	 */
	u64 start = rdtsc();
	for (u32 i = 0; i < 50000000u; i++) {
		if (rdtsc() - start > (1ull << 32))
			break;
		cpu_pause();
	}
}

/* ---- RSDP -------------------------------------------------------------- */

static int rsdp_valid(u64 pa)
{
	if (!phys_ok(pa, 36) || phys_r64(pa) != RSDP_SIG || byte_sum(pa, 20))
		return 0;
	if (phys_r8(pa + 15) >= 2) {
		u32 len = phys_r32(pa + 20);
		if (len < 36 || len > 4096 || byte_sum(pa, len))
			return 0;
	}
	return 1;
}

static u64 rsdp_scan_range(u64 start, u64 end)
{
	for (u64 pa = start; pa + 36 <= end; pa += 16)
		if (phys_r64(pa) == RSDP_SIG && rsdp_valid(pa))
			return pa;
	return 0;
}

static u64 rsdp_find(u64 hint)
{
	if (hint) {
		if (rsdp_valid(hint))
			return hint;
		fail("acpi-rsdp-invalid at 0x%lx (boot info pointer)", hint);
	}
	kputs("acpi: no valid RSDP pointer from the boot info, scanning EBDA and 0xe0000-0xfffff\n");
	u64 ebda = (u64)phys_r16(0x40e) << 4;
	u64 pa = 0;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		pa = rsdp_scan_range(ebda, ebda + 1024);
	if (!pa)
		pa = rsdp_scan_range(0xe0000, 0x100000);
	return pa;
}

/* ---- DSDT: _S5_ -------------------------------------------------------- */

/*
 * Parse "_S5_" PackageOp PkgLength NumElements <first element> at p.
 * Returns 1 and sets *typ on success.
 */
static int parse_s5(const u8 *p, const u8 *end, u8 *typ)
{
	p += 4; /* "_S5_" */
	if (p >= end || *p != 0x12)
		return 0; /* not a Name(_S5_, Package(){...}) definition */
	p++;
	if (p >= end)
		return 0;
	p += 1 + (*p >> 6); /* PkgLength: lead byte + (bits 7:6) follow-on bytes */
	if (p + 2 > end)
		return 0;
	u8 nelem = *p++;
	if (nelem < 1)
		return 0;
	u64 v;
	switch (*p) {
	case 0x00: /* ZeroOp */
		v = 0;
		break;
	case 0x01: /* OneOp */
		v = 1;
		break;
	case 0x0a: /* BytePrefix */
		if (p + 2 > end)
			return 0;
		v = p[1];
		break;
	case 0x0b: /* WordPrefix */
		if (p + 3 > end)
			return 0;
		v = (u64)p[1] | (u64)p[2] << 8;
		break;
	case 0x0c: /* DWordPrefix */
		if (p + 5 > end)
			return 0;
		v = (u64)p[1] | (u64)p[2] << 8 | (u64)p[3] << 16 | (u64)p[4] << 24;
		break;
	default:
		/* a raw small value (SLP_TYP is a 3-bit field) */
		if (*p > 7)
			return 0;
		v = *p;
		break;
	}
	if (v > 7) {
		fail("acpi-s5-slp-typ %lu does not fit in 3 bits", v);
		v &= 7;
	}
	*typ = (u8)v;
	return 1;
}

/* Is base[j] the '5' of a "_S5_" that starts a Name(_S5_, Package)? */
static int s5_at(const u8 *base, u32 len, u32 j, u8 *typ)
{
	return j >= 38 && j + 1 < len && base[j - 2] == '_' && base[j - 1] == 'S' && base[j + 1] == '_' &&
	       parse_s5(base + j - 2, base + len, typ);
}

/*
 * Find Name(_S5_, Package...) in the DSDT body.  The digit '5' (0x35) is
 * rare in AML, so look for it eight bytes at a time and only examine the
 * neighbourhood of each exact hit.
 */
static int dsdt_find_s5(u64 pa, u32 len, u8 *typ)
{
	const u8 *base = phys_ptr(pa);
	const u64 low7 = 0x7f7f7f7f7f7f7f7full, fives = 0x3535353535353535ull;
	u32 i = 36;

	for (; i + 8 <= len; i += 8) {
		u64 w;
		__builtin_memcpy(&w, base + i, 8);
		u64 x = w ^ fives;
		/* exactly the bytes of x that are zero get their top bit set */
		u64 hits = ~(((x & low7) + low7) | x | low7);
		while (hits) {
			u32 j = i + ((u32)__builtin_ctzll(hits) >> 3);
			hits &= hits - 1;
			if (s5_at(base, len, j, typ))
				return 1;
		}
	}
	for (; i < len; i++)
		if (base[i] == '5' && s5_at(base, len, i, typ))
			return 1;
	return 0;
}

/* ---- tables -------------------------------------------------------------- */

static void parse_fadt(u64 f, u32 len)
{
	acpi.fadt_len = len;
	u8 rev = phys_r8(f + 8), minor = len > 131 ? phys_r8(f + 131) : 0;
	if (len >= 116)
		acpi.fadt_flags = phys_r32(f + 112);
	acpi.hw_reduced = (acpi.fadt_flags >> 20) & 1;
	if (len >= 68)
		acpi.pm1a_cnt = phys_r32(f + 64);
	if (len >= 129) {
		acpi.reset_reg = gas_read(f + 116);
		acpi.reset_value = phys_r8(f + 128);
	}
	if (len >= 268) {
		acpi.sleep_ctl = gas_read(f + 244);
		acpi.sleep_sts = gas_read(f + 256);
	}
	u64 dsdt = len >= 148 ? phys_r64(f + 140) : 0;
	if (!dsdt && len >= 44)
		dsdt = phys_r32(f + 40);
	acpi.dsdt = dsdt;

	kprintf("acpi: FADT rev=%u.%u len=%u flags=0x%08x hw_reduced=%d dsdt=0x%lx\n", rev, minor, len,
		acpi.fadt_flags, acpi.hw_reduced, dsdt);
	kputs("acpi: FADT");
	print_gas("sleep_ctl", &acpi.sleep_ctl);
	print_gas("sleep_sts", &acpi.sleep_sts);
	print_gas("reset", &acpi.reset_reg);
	kprintf(" reset_value=0x%02x\n", acpi.reset_value);
}

static void parse_dsdt(void)
{
	if (!acpi.dsdt) {
		fail("acpi-no-dsdt (FADT X_DSDT and DSDT are 0)");
		return;
	}
	u32 len = table_check(acpi.dsdt, "DSDT");
	if (!len)
		return;
	if (phys_r32(acpi.dsdt) != SIG32('D', 'S', 'D', 'T')) {
		char s[5];
		sig_str(phys_r32(acpi.dsdt), s);
		fail("acpi-dsdt-signature '%s' at 0x%lx", s, acpi.dsdt);
		return;
	}
	acpi.s5_found = dsdt_find_s5(acpi.dsdt, len, &acpi.slp_typ);
	if (acpi.s5_found)
		kprintf("acpi: DSDT len=%u _S5_ SLP_TYP=%u\n", len, acpi.slp_typ);
	else
		fail("acpi-no-s5 (no Name(_S5_, Package) in the %u-byte DSDT)", len);
}

static void parse_madt(u64 m, u32 len)
{
	if (len < 44) {
		fail("acpi-madt-too-short %u", len);
		return;
	}
	acpi.lapic_addr = phys_r32(m + 36);
	u32 off = 44;
	while (off + 2 <= len) {
		u8 type = phys_r8(m + off), elen = phys_r8(m + off + 1);
		if (elen < 2 || off + elen > len) {
			fail("acpi-madt-bad-entry type=%u len=%u at offset %u", type, elen, off);
			break;
		}
		if (type == 0 && elen >= 8) {
			acpi.lapic_entries++;
			if (phys_r32(m + off + 4) & 1)
				acpi.cpus++;
		} else if (type == 9 && elen >= 16) {
			acpi.x2apic_entries++;
			if (phys_r32(m + off + 8) & 1)
				acpi.cpus++;
		} else if (type == 1) {
			if (!acpi.ioapics && elen >= 12) {
				acpi.ioapic_addr = phys_r32(m + off + 4);
				acpi.ioapic_gsi_base = phys_r32(m + off + 8);
			}
			acpi.ioapics++;
		}
		off += elen;
	}
	kprintf("acpi: MADT lapic_addr=0x%08x flags=0x%x lapic_entries=%u x2apic_entries=%u "
		"enabled_cpus=%u ioapics=%u\n",
		phys_r32(m + 36), phys_r32(m + 40), acpi.lapic_entries, acpi.x2apic_entries, acpi.cpus,
		acpi.ioapics);
}

static void parse_mcfg(u64 m, u32 len)
{
	for (u32 off = 44; off + 16 <= len; off += 16) {
		u64 base = phys_r64(m + off);
		u16 seg = phys_r16(m + off + 8);
		u8 bus0 = phys_r8(m + off + 10), bus1 = phys_r8(m + off + 11);
		kprintf("acpi: MCFG base=0x%lx segment=%u buses=%u-%u\n", base, seg, bus0, bus1);
		if (seg == 0 && bus0 == 0 && !acpi.ecam_base) {
			acpi.ecam_base = base;
			acpi.ecam_bus_start = bus0;
			acpi.ecam_bus_end = bus1;
		}
	}
	if (!acpi.ecam_base)
		kputs("acpi: MCFG has no entry for segment 0 starting at bus 0\n");
}

void acpi_init(u64 rsdp_hint)
{
	u64 rsdp = rsdp_find(rsdp_hint);
	if (!rsdp) {
		fail("acpi-no-rsdp (hint 0x%lx)", rsdp_hint);
		return;
	}
	acpi.rsdp = rsdp;
	acpi.rsdp_rev = phys_r8(rsdp + 15);
	acpi.rsdt = phys_r32(rsdp + 16);
	acpi.xsdt = acpi.rsdp_rev >= 2 ? phys_r64(rsdp + 24) : 0;
	kprintf("acpi: RSDP at 0x%lx rev=%u rsdt=0x%lx xsdt=0x%lx\n", rsdp, acpi.rsdp_rev, acpi.rsdt,
		acpi.xsdt);
	if (acpi.rsdp_rev < 2)
		fail("acpi-rsdp-revision %u (expected 2 with an XSDT)", acpi.rsdp_rev);

	int x = acpi.xsdt != 0;
	u64 sdt = x ? acpi.xsdt : acpi.rsdt;
	u32 sdt_len = table_check(sdt, x ? "XSDT" : "RSDT");
	if (!sdt_len)
		return;
	if (phys_r32(sdt) != (x ? SIG32('X', 'S', 'D', 'T') : SIG32('R', 'S', 'D', 'T'))) {
		fail("acpi-%s-signature at 0x%lx", x ? "xsdt" : "rsdt", sdt);
		return;
	}
	acpi.ok = 1;

	u32 esz = x ? 8 : 4, n = (sdt_len - 36) / esz;
	for (u32 i = 0; i < n; i++) {
		u64 t = x ? phys_r64(sdt + 36 + 8 * i) : phys_r32(sdt + 36 + 4 * i);
		char s[5] = "????";
		if (phys_ok(t, 36))
			sig_str(phys_r32(t), s);
		u32 len = table_check(t, s);
		if (!len)
			continue;
		kprintf("acpi: %s at 0x%lx len=%u rev=%u\n", s, t, len, phys_r8(t + 8));
		u32 sig = phys_r32(t);
		u64 *slot = sig == SIG32('F', 'A', 'C', 'P') ? &acpi.fadt :
			    sig == SIG32('A', 'P', 'I', 'C') ? &acpi.madt :
			    sig == SIG32('M', 'C', 'F', 'G') ? &acpi.mcfg :
								 0;
		if (!slot)
			continue;
		if (*slot) {
			fail("acpi-duplicate-%s at 0x%lx and 0x%lx", s, *slot, t);
			continue;
		}
		*slot = t;
		if (slot == &acpi.fadt)
			parse_fadt(t, len);
		else if (slot == &acpi.madt)
			parse_madt(t, len);
		else
			parse_mcfg(t, len);
	}

	if (!acpi.fadt)
		fail("acpi-no-fadt");
	else
		parse_dsdt();
	if (!acpi.madt)
		fail("acpi-no-madt");
}

/* ---- poweroff / reset ---------------------------------------------------- */

void acpi_poweroff(void)
{
	u8 typ = acpi.s5_found ? acpi.slp_typ : 5; /* 5: common choice when _S5_ is unknown */
	if (acpi.sleep_ctl.address) {
		/* HW-reduced ACPI: SLP_TYP in bits 4:2, SLP_EN is bit 5 */
		if (gas_write(&acpi.sleep_ctl, (u64)(typ & 7) << 2 | 1u << 5, "poweroff") == 0)
			settle();
		return;
	}
	if (acpi.pm1a_cnt && acpi.pm1a_cnt <= 0xffff) {
		/* legacy fixed hardware: SLP_TYP in bits 12:10, SLP_EN is bit 13 */
		kprintf("poweroff: writing 0x%x to PM1a_CNT io:0x%x\n", (typ & 7) << 10 | 1u << 13,
			acpi.pm1a_cnt);
		outw((u16)acpi.pm1a_cnt, (u16)((typ & 7) << 10 | 1u << 13));
		settle();
		return;
	}
	kputs("TESTKERNEL: FAIL no-acpi-poweroff-register\n");
}

void acpi_reset(void)
{
	if (!acpi.reset_reg.address) {
		kputs("TESTKERNEL: FAIL no-acpi-reset-register\n");
		return;
	}
	if (gas_write(&acpi.reset_reg, acpi.reset_value, "reset") == 0)
		settle();
}
