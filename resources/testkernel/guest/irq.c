// SPDX-License-Identifier: Apache-2.0
/*
 * Device interrupts for test=nic: the local APIC (xAPIC or x2APIC, as the
 * VMM left it), one IOAPIC redirection entry for INTx, and one vector,
 * NIC_VECTOR, whose handler counts and calls the driver's callback.
 */
#include "nic.h"

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)
#define X2APIC_MSR(reg) (0x800 + ((reg) >> 4))

#define LAPIC_ID 0x20
#define LAPIC_TPR 0x80
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_SVR_ENABLE (1u << 8)
#define SPURIOUS_VECTOR 0xff

#define IOAPIC_REDTBL(gsi) (0x10 + 2 * (gsi))
#define IOREDTBL_LEVEL (1u << 15)

extern char irq_entry_nic[], irq_entry_spurious[];

static int x2apic;
static u64 lapic_base;
static void (*handler)(void *);
static void *handler_arg;

static u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (u64)hi << 32 | lo;
}

static void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}

static u32 lapic_read(u32 reg)
{
	return x2apic ? (u32)rdmsr(X2APIC_MSR(reg)) : mmio_r32(lapic_base + reg);
}

static void lapic_write(u32 reg, u32 v)
{
	if (x2apic)
		wrmsr(X2APIC_MSR(reg), v);
	else
		mmio_w32(lapic_base + reg, v);
}

void irq_init(void)
{
	u64 base = rdmsr(MSR_APIC_BASE);
	if (!(base & APIC_BASE_ENABLE))
		fatal("irq: the local APIC is disabled (IA32_APIC_BASE=0x%lx)", base);
	x2apic = !!(base & APIC_BASE_X2APIC);
	lapic_base = base & 0xfffff000u;
	idt_set_gate(NIC_VECTOR, (u64)(uintptr_t)irq_entry_nic);
	idt_set_gate(SPURIOUS_VECTOR, (u64)(uintptr_t)irq_entry_spurious);
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | SPURIOUS_VECTOR);
	kprintf("irq: local APIC %s at 0x%lx, id %u\n", x2apic ? "x2APIC" : "xAPIC", lapic_base,
		x2apic ? lapic_read(LAPIC_ID) : lapic_read(LAPIC_ID) >> 24);
}

void irq_set_handler(void (*fn)(void *), void *arg)
{
	handler = fn;
	handler_arg = arg;
}

/* Called by irq_entry_nic (head.S) with interrupts disabled. */
void irq_dispatch(void);
void irq_dispatch(void)
{
	if (handler)
		handler(handler_arg);
	lapic_write(LAPIC_EOI, 0);
}

void ioapic_route(u8 gsi, u8 vector)
{
	u64 io = acpi.ioapic_addr ? acpi.ioapic_addr : 0xfec00000u;
	if (gsi < acpi.ioapic_gsi_base)
		fatal("irq: GSI %u is below the IOAPIC's base %u", gsi, acpi.ioapic_gsi_base);
	u32 pin = gsi - acpi.ioapic_gsi_base;
	mmio_w32(io, 1); /* IOAPICVER: the highest redirection entry in bits 23:16 */
	u32 max = (mmio_r32(io + 0x10) >> 16) & 0xff;
	if (pin > max)
		fatal("irq: GSI %u is beyond the IOAPIC's %u pins", gsi, max + 1);
	/* Destination: APIC ID 0 (physical mode) in the high dword. PCI INTx
	 * lines from KVM's irqfd are asserted high and held until the device
	 * drops them: level triggered, active high. */
	mmio_w32(io, IOAPIC_REDTBL(pin) + 1);
	mmio_w32(io + 0x10, 0);
	mmio_w32(io, IOAPIC_REDTBL(pin));
	mmio_w32(io + 0x10, vector | IOREDTBL_LEVEL);
}
