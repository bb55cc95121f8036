// SPDX-License-Identifier: Apache-2.0
/*
 * test=hostile: the guest turns on one of its NICs (protocol in the README,
 * "The hostile-guest test"). It sets the hostile NIC up with its driver,
 * stops for the host (a line on COM1), runs one named case against it,
 * stops again, then runs test=nic on the other NIC: tapir must have
 * survived the case and still move that NIC's frames.
 */
#include "nic.h"

static u64 rng_state = 0x9e3779b97f4a7c15ull;

u64 hostile_rng(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

u32 hostile_arp_request(u8 *f, const u8 *mac)
{
	static const u8 ip_self[4] = { 10, 0, 2, 15 };
	static const u8 ip_gw[4] = { 10, 0, 2, 2 };
	memset(f, 0, 60);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x08, f[13] = 0x06;             /* ARP */
	f[14] = 0, f[15] = 1;                   /* Ethernet */
	f[16] = 0x08, f[17] = 0;                /* IPv4 */
	f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1; /* request */
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, ip_self, 4);
	memcpy(f + 38, ip_gw, 4);
	return 60;
}

/* One step of a wait of *left steps of 100 us; 1 when none are left. */
static int waited(u32 *left)
{
	if (!*left)
		return 1;
	udelay(100);
	--*left;
	return 0;
}

int hostile_wait_change16(volatile u16 *p, u16 v, u32 ms)
{
	u32 left = ms * 10;
	while (*p == v)
		if (waited(&left))
			return 0;
	return 1;
}

void hostile_check_alive(struct nic_dev *d, const char *what)
{
	static u8 buf[2048];
	u8 f[60];
	if (d->drv->init(d) != 0)
		return;
	hostile_arp_request(f, d->mac);
	struct nic_tx tx = { .frame = f, .len = 60 };
	for (int attempt = 0; attempt < 3; attempt++) {
		for (u32 i = 0; d->drv->xmit(d, &tx) == 0; i++) {
			d->drv->tx_reap(d);
			if (i == 100000) {
				fail("hostile: %s: %s: no room to send after a reset", d->drv->name, what);
				return;
			}
		}
		for (u32 ms = 0; ms < 1000; ms++) {
			d->drv->irq(d); /* its line is not routed: poll the causes */
			d->drv->tx_reap(d);
			struct nic_rx_info info = { 0 };
			int len = d->drv->recv(d, buf, sizeof(buf), &info);
			if (len < 0)
				return;
			/* an ARP reply (opcode 2) */
			if (len >= 42 && buf[12] == 0x08 && buf[13] == 0x06 && buf[21] == 2) {
				kprintf("hostile: %s: after a reset the device moves frames again\n",
					d->drv->name);
				return;
			}
			if (len == 0)
				udelay(1000);
		}
	}
	fail("hostile: %s: %s: no ARP reply after a reset", d->drv->name, what);
}

/* Waits for the host's go-ahead: any line on COM1. */
static void host_sync(const char *what)
{
	kprintf("HOSTILE: %s (waiting for the host)\n", what);
	for (;;) {
		int c = uart_getc();
		if (c == '\n' || c == '\r')
			return;
	}
}

NORETURN void test_hostile(void)
{
	static struct nic_dev h;
	static char name[48];
	u32 clen;
	const char *c = cmdline_get("case", &clen);
	if (!c || clen == 0 || clen >= sizeof(name))
		fatal("hostile: case= is missing or too long");
	memcpy(name, c, clen);
	name[clen] = 0;
	h.drv = nic_driver_named("model");
	const struct nic_driver *other = nic_driver_named("other");
	if (other->vendor == h.drv->vendor && other->device == h.drv->device)
		fatal("hostile: other= must be another chip than model= (drivers keep one state)");
	u64 hslot = cmdline_u64("hslot", 0xff), oslot = cmdline_u64("oslot", 0xff);
	if (!nic_find(&h, hslot < 32 ? (int)hslot : -1))
		fatal("hostile: no %s NIC", h.drv->name);
	rng_state ^= cmdline_u64("seed", 1) * 0x100000001b3ull;
	h.use_msix = 0; /* INTx, and the line is not routed: no interrupts */
	h.max_frame = 1514;
	if (h.drv->init(&h) != 0)
		finish();
	kprintf("hostile: model=%s slot=%u case=%s\n", h.drv->name, h.slot, name);
	if (!h.drv->hostile)
		fatal("hostile: model %s has no hostile cases", h.drv->name);
	host_sync("begin");
	if (!h.drv->hostile(&h, name, clen))
		fatal("hostile: model %s has no case %s", h.drv->name, name);
	kprintf("hostile: case %s ran\n", name);
	host_sync("done");
	nic_test_run("other", oslot < 32 ? (int)oslot : -1);
}
