// SPDX-License-Identifier: Apache-2.0
/*
 * test=nic: the common part of the NIC data-path test (protocol in the
 * README). It finds the PCI function of the chosen model, hands it to the
 * model's driver, then sends frames of mixed sizes and kinds (raw, VLAN,
 * UDP, TCP with TSO) to a peer that echoes them back, checks every echo,
 * and reports FNV-1a hashes of the payloads both ways for the host to
 * compare with its own.
 */
#include "nic.h"

/* ---- memory for rings and buffers -------------------------------------- */

/* The image ends near 1.1 MiB; the test asks for 64 MiB of RAM. */
#define DMA_START 0x400000u
#define DMA_END 0x2000000u

static u64 dma_next = DMA_START;

void *dma_alloc(u64 size, u64 align)
{
	u64 a = (dma_next + align - 1) & ~(align - 1);
	if (a + size > DMA_END || a + size < a)
		fatal("nic: out of DMA memory (%lu bytes wanted at 0x%lx)", size, a);
	dma_next = a + size;
	/* Guest RAM is zero at boot and each range is handed out once, so there
	 * is nothing to clear (and clearing costs seconds under emulation). */
	return (void *)(uintptr_t)a;
}

void udelay(u32 us)
{
	/* About 3 GHz; only used for chip reset waits, which may be longer. */
	u64 end = rdtsc() + (u64)us * 3000;
	while (rdtsc() < end)
		cpu_pause();
}

/* ---- PCI ------------------------------------------------------------------- */

#define PCI_COMMAND 0x04
#define PCI_CMD_IO (1u << 0)
#define PCI_CMD_MEM (1u << 1)
#define PCI_CMD_MASTER (1u << 2)
#define PCI_CMD_INTX_DISABLE (1u << 10)
#define PCI_STATUS_CAPS (1u << 4)
#define PCI_CAP_MSIX 0x11

static void cfg_addr(u8 dev, u8 reg) { outl(0xcf8, 0x80000000u | (u32)(dev & 31) << 11 | (reg & 0xfc)); }

u32 pci_cfg_read(u8 dev, u8 reg, int width)
{
	cfg_addr(dev, reg);
	switch (width) {
	case 1:
		return inb((u16)(0xcfc + (reg & 3)));
	case 2:
		return inw((u16)(0xcfc + (reg & 2)));
	default:
		return inl(0xcfc);
	}
}

void pci_cfg_write(u8 dev, u8 reg, int width, u32 v)
{
	cfg_addr(dev, reg);
	switch (width) {
	case 1:
		outb((u16)(0xcfc + (reg & 3)), (u8)v);
		break;
	case 2:
		outw((u16)(0xcfc + (reg & 2)), (u16)v);
		break;
	default:
		outl(0xcfc, v);
	}
}

u8 pci_find_cap(u8 dev, u8 id)
{
	if (!((pci_cfg_read(dev, 0x04, 4) >> 16) & PCI_STATUS_CAPS))
		return 0;
	u8 p = (u8)pci_cfg_read(dev, 0x34, 1) & 0xfc;
	for (int n = 0; p && n < 48; n++) {
		if (pci_cfg_read(dev, p, 1) == id)
			return p;
		p = (u8)pci_cfg_read(dev, (u8)(p + 1), 1) & 0xfc;
	}
	return 0;
}

void nic_msix_vector(struct nic_dev *d, u16 entry)
{
	u8 cap = pci_find_cap(d->slot, PCI_CAP_MSIX);
	if (!cap)
		fatal("nic: %s has no MSI-X capability", d->drv->name);
	u16 ctl = (u16)pci_cfg_read(d->slot, (u8)(cap + 2), 2);
	u32 table = pci_cfg_read(d->slot, (u8)(cap + 4), 4);
	u32 bir = table & 7, size = (ctl & 0x7ff) + 1u;
	if (bir > 5 || !d->bar[bir] || d->bar_io[bir] || entry >= size)
		fatal("nic: MSI-X table BIR %u entry %u of %u unusable", bir, entry, size);
	u64 e = d->bar[bir] + (table & ~7u) + 16u * entry;
	/* Function-masked while the entry is written, then enabled. */
	pci_cfg_write(d->slot, (u8)(cap + 2), 2, ctl | 0xc000);
	mmio_w32(e + 0, 0xfee00000u); /* CPU 0, physical destination */
	mmio_w32(e + 4, 0);
	mmio_w32(e + 8, NIC_VECTOR); /* fixed delivery, edge */
	mmio_w32(e + 12, 0);         /* unmasked */
	pci_cfg_write(d->slot, (u8)(cap + 2), 2, (ctl | 0x8000) & ~0x4000u);
	/* MSI-X on: INTx is off by the spec; say so in the command register too. */
	pci_cfg_write(d->slot, PCI_COMMAND, 2,
		      pci_cfg_read(d->slot, PCI_COMMAND, 2) | PCI_CMD_INTX_DISABLE);
}

int nic_find(struct nic_dev *d, int slot)
{
	for (u8 dev = 0; dev < 32; dev++) {
		u32 id = pci_cfg_read(dev, 0, 4);
		if ((id & 0xffff) != d->drv->vendor || (id >> 16) != d->drv->device)
			continue;
		if (slot >= 0 && dev != slot)
			continue;
		d->slot = dev;
		for (int i = 0; i < 6; i++) {
			u32 v = pci_cfg_read(dev, (u8)(0x10 + 4 * i), 4);
			if (v & 1) {
				d->bar_io[i] = 1;
				d->bar[i] = v & ~3u;
			} else if (((v >> 1) & 3) == 2 && i < 5) {
				u64 hi = pci_cfg_read(dev, (u8)(0x14 + 4 * i), 4);
				d->bar[i] = (v & ~0xfu) | hi << 32;
				if (d->bar[i] >= (1ull << 32))
					fatal("nic: BAR %d at 0x%lx is above the identity-mapped 4 GiB", i,
					      d->bar[i]);
				i++;
			} else {
				d->bar[i] = v & ~0xfu;
			}
		}
		d->gsi = (u8)pci_cfg_read(dev, 0x3c, 1);
		u32 cmd = pci_cfg_read(dev, PCI_COMMAND, 2);
		cmd |= PCI_CMD_IO | PCI_CMD_MEM | PCI_CMD_MASTER;
		cmd &= ~PCI_CMD_INTX_DISABLE;
		pci_cfg_write(dev, PCI_COMMAND, 2, cmd);
		return 1;
	}
	return 0;
}

static int bar_ok(struct nic_dev *d, int n)
{
	if (n < 0 || n > 5 || !d->bar[n])
		fatal("nic: %s: BAR %d is not assigned", d->drv->name, n);
	return 1;
}

u8 bar_r8(struct nic_dev *d, int n, u32 off)
{
	bar_ok(d, n);
	return d->bar_io[n] ? inb((u16)(d->bar[n] + off)) : mmio_r8(d->bar[n] + off);
}
u16 bar_r16(struct nic_dev *d, int n, u32 off)
{
	bar_ok(d, n);
	return d->bar_io[n] ? inw((u16)(d->bar[n] + off)) : mmio_r16(d->bar[n] + off);
}
u32 bar_r32(struct nic_dev *d, int n, u32 off)
{
	bar_ok(d, n);
	return d->bar_io[n] ? inl((u16)(d->bar[n] + off)) : mmio_r32(d->bar[n] + off);
}
void bar_w8(struct nic_dev *d, int n, u32 off, u8 v)
{
	bar_ok(d, n);
	if (d->bar_io[n])
		outb((u16)(d->bar[n] + off), v);
	else
		mmio_w8(d->bar[n] + off, v);
}
void bar_w16(struct nic_dev *d, int n, u32 off, u16 v)
{
	bar_ok(d, n);
	if (d->bar_io[n])
		outw((u16)(d->bar[n] + off), v);
	else
		mmio_w16(d->bar[n] + off, v);
}
void bar_w32(struct nic_dev *d, int n, u32 off, u32 v)
{
	bar_ok(d, n);
	if (d->bar_io[n])
		outl((u16)(d->bar[n] + off), v);
	else
		mmio_w32(d->bar[n] + off, v);
}

/* ---- bytes, checksums, hashes ---------------------------------------------- */

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static void put16(u8 *p, u16 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}
static void put32(u8 *p, u32 v)
{
	put16(p, (u16)(v >> 16));
	put16(p + 2, (u16)v);
}
static u32 get32(const u8 *p) { return (u32)get16(p) << 16 | get16(p + 2); }

/*
 * The Internet checksum's sum of big-endian 16-bit words of p, added to acc.
 * Four bytes at a time in the CPU's own byte order, swapped once at the end
 * (RFC 1071: the one's-complement sum is byte-order independent).
 */
static u32 sum16(const u8 *p, u32 len, u32 acc)
{
	u64 s = 0;
	u32 i = 0;
	for (; i + 4 <= len; i += 4) {
		u32 w;
		__builtin_memcpy(&w, p + i, 4);
		s += w;
	}
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	acc += (u32)((s & 0xff) << 8 | s >> 8);
	for (; i + 1 < len; i += 2)
		acc += get16(p + i);
	if (i < len)
		acc += (u32)p[i] << 8;
	return acc;
}

static u16 fold(u32 acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (u16)acc;
}

/* The un-complemented pseudo-header sum of an IPv4 L4 segment of l4_len. */
static u32 pseudo_sum(const u8 *ip, u8 proto, u32 l4_len)
{
	return sum16(ip + 12, 8, 0) + proto + l4_len;
}

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/*
 * The payload hash (README, "Hash"): FNV-1a 64 over the payload stream cut
 * into 8-byte little-endian words, whatever the frame boundaries, and the
 * k < 8 bytes left over at the end as one zero-filled word mixed with k.
 */
struct hash {
	u64 h, w; /* the hash; the word being filled */
	u32 n;    /* bytes in w */
};

static void hash_init(struct hash *s)
{
	s->h = FNV_BASIS;
	s->w = 0;
	s->n = 0;
}

static void hash_bytes(struct hash *s, const u8 *p, u32 len)
{
	while (len && s->n) {
		s->w |= (u64)*p++ << (8 * s->n);
		len--;
		if (++s->n == 8) {
			s->h = (s->h ^ s->w) * FNV_PRIME;
			s->w = 0;
			s->n = 0;
		}
	}
	for (; len >= 8; p += 8, len -= 8) {
		u64 w;
		__builtin_memcpy(&w, p, 8);
		s->h = (s->h ^ w) * FNV_PRIME;
	}
	while (len--)
		s->w |= (u64)*p++ << (8 * s->n++);
}

static u64 hash_final(const struct hash *s)
{
	return s->n ? (s->h ^ s->w ^ (u64)s->n << 56) * FNV_PRIME : s->h;
}

static u64 rng_state;
static u64 rng(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* ---- frames ------------------------------------------------------------------ */

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_TEST 0x88b5
#define IP_HLEN 20
#define UDP_HLEN 8
#define TCP_HLEN 20
#define TEST_MSS 1000
#define MIN_FRAME 60

static const u8 peer_mac[6] = {0x02, 0x54, 0x41, 0x50, 0x49, 0x52};
static const u8 raw_src_ip[4] = {192, 0, 2, 1}, raw_dst_ip[4] = {192, 0, 2, 2};
static const u8 udp_my_ip[4] = {10, 0, 2, 15}, udp_gw_ip[4] = {10, 0, 2, 2};
#define UDP_MY_PORT 40000

/*
 * Where the payload of an Ethernet frame lies (README, "Hash"): after the
 * EtherType (one tag skipped); for IPv4 after the UDP or TCP header, up to
 * the IPv4 total length. Returns 0 when the frame is too short for what it
 * claims.
 */
static int payload_of(const u8 *f, u32 len, u32 *off, u32 *plen)
{
	u32 et_at = 12;
	if (len < ETH_HLEN)
		return 0;
	if (get16(f + 12) == ETH_P_8021Q) {
		if (len < ETH_HLEN + 4)
			return 0;
		et_at = 16;
	}
	u16 et = get16(f + et_at);
	u32 l3 = et_at + 2;
	if (et != ETH_P_IP) {
		*off = l3;
		*plen = len - l3;
		return 1;
	}
	if (len < l3 + IP_HLEN)
		return 0;
	const u8 *ip = f + l3;
	u32 ihl = (ip[0] & 15) * 4u, tot = get16(ip + 2);
	if (ihl < IP_HLEN || tot < ihl || l3 + tot > len)
		return 0;
	u32 l4 = l3 + ihl, hl = 0;
	if (ip[9] == 17)
		hl = UDP_HLEN;
	else if (ip[9] == 6 && tot >= ihl + TCP_HLEN)
		hl = (f[l4 + 12] >> 4) * 4u;
	if (ihl + hl > tot)
		return 0;
	*off = l4 + hl;
	*plen = tot - ihl - hl;
	return 1;
}

static void eth_header(u8 *f, const u8 *dst, const u8 *src, u16 type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, type);
}

static void ipv4_header(u8 *ip, u16 tot, u16 id, u8 proto, const u8 *src, const u8 *dst)
{
	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, tot);
	put16(ip + 4, id);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = proto;
	put16(ip + 10, 0);
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	put16(ip + 10, (u16)~fold(sum16(ip, IP_HLEN, 0)));
}

/* 1 when the frame's IPv4 header and UDP/TCP checksums are right. */
static int l4_checksums_ok(const u8 *f, u32 len, const char **why)
{
	u32 l3 = get16(f + 12) == ETH_P_8021Q ? 18 : 14;
	const u8 *ip = f + l3;
	u32 ihl = (ip[0] & 15) * 4u, tot = get16(ip + 2);
	if (l3 + tot > len || ihl < IP_HLEN || tot < ihl) {
		*why = "IPv4 lengths";
		return 0;
	}
	if (fold(sum16(ip, ihl, 0)) != 0xffff) {
		*why = "IPv4 header checksum";
		return 0;
	}
	const u8 *l4 = ip + ihl;
	u32 l4len = tot - ihl;
	if (ip[9] == 17 && get16(l4 + 6) == 0)
		return 1; /* UDP without a checksum */
	if (fold(sum16(l4, l4len, pseudo_sum(ip, ip[9], l4len))) != 0xffff) {
		*why = ip[9] == 6 ? "TCP checksum" : "UDP checksum";
		return 0;
	}
	return 1;
}

/* ---- the test --------------------------------------------------------------- */

enum kind { K_RAW, K_VLAN, K_UDP, K_TCP };
static const char *const kind_name[] = {"raw", "vlan", "udp", "tcp"};

#define WINDOW 8
#define NO_PROGRESS_CYCLES (30ull * 1000 * 1000 * 1000) /* about 10 s */

struct unit {
	u32 index;
	enum kind kind;
	u8 *frame; /* as built (untagged when the NIC inserts the tag) */
	u32 len;
	struct nic_tx tx;
	u32 tcp_seq;
	u32 payload_off, payload_len; /* TCP: what the segments must carry */
	u32 got;                      /* TCP: payload bytes echoed so far */
};

static struct {
	struct nic_dev dev;
	int udp;
	u32 frames, maxframe, port;
	u64 seed;
	u8 gw_mac[6];
	struct unit units[WINDOW];
	u32 head, count; /* the in-flight units, a FIFO in units[] */
	u32 built;       /* units built so far (the next index) */
	int pending;     /* units[(head+count)%WINDOW] is built but not queued */
	u8 *rx;
	u32 rx_cap;
	struct hash tx_hash, rx_hash;
	u32 tx_frames, rx_frames, stray, tso_units, csum_units, hw_tags, hw_strips, rx_csum_good;
	u32 tcp_seq;
	u64 last_progress;
} t;

static void nic_irq(void *arg)
{
	struct nic_dev *d = arg;
	d->irqs++;
	if (d->drv->irq)
		d->drv->irq(d);
}

static const struct nic_driver *const drivers[] = {
	&virtio_net_driver, &e1000_driver, &rtl8139_driver, &rtl8139cp_driver,
};

/* Sizes of frames, untagged, before clamping to [60, maxframe]. */
static u32 frame_size(u32 i, u32 maxf)
{
	static const u32 edges[] = {60, 61, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 1500, 1514, ~0u};
	const u32 n = sizeof(edges) / sizeof(edges[0]);
	u32 s = edges[(i / 4 * 5 + i) % n];
	if (s == ~0u)
		s = maxf;
	if (s < MIN_FRAME)
		s = MIN_FRAME;
	return s > maxf ? maxf : s;
}

/* The TSO packet sizes (payload bytes), bounded by the driver's max_tso. */
static u32 tso_payload(u32 i, u32 max_tso)
{
	static const u32 sizes[] = {2500, 5123, 9000, 65536};
	u32 hdr = ETH_HLEN + IP_HLEN + TCP_HLEN;
	u32 p = sizes[(i / 4) % 4];
	if (max_tso < hdr + TEST_MSS + 1)
		return 0;
	if (p + hdr > max_tso)
		p = max_tso - hdr;
	if (p + IP_HLEN + TCP_HLEN > 0xffff)
		p = 0xffff - IP_HLEN - TCP_HLEN;
	return p;
}

static void fill_random(u8 *p, u32 len)
{
	for (; len >= 8; p += 8, len -= 8) {
		u64 r = rng();
		__builtin_memcpy(p, &r, 8);
	}
	u64 r = rng();
	for (u32 i = 0; i < len; i++)
		p[i] = (u8)(r >> (8 * i));
}

/* Builds unit number t.built into u. */
static void build_unit(struct unit *u)
{
	struct nic_dev *d = &t.dev;
	u32 i = t.built;
	u8 *f = u->frame;
	memset(u, 0, sizeof(*u));
	u->frame = f;
	u->index = i;
	/* Every bit of the seed counts; xorshift needs a non-zero state. */
	rng_state = t.seed * 0xbf58476d1ce4e5b9ull + 0x9e3779b97f4a7c15ull * (i + 1);
	if (!rng_state)
		rng_state = 1;
	u->kind = t.udp ? K_UDP : (enum kind)(i % 4);
	if (u->kind == K_VLAN && !d->vlan)
		u->kind = K_RAW;
	u32 len = frame_size(i, t.maxframe);
	struct nic_tx *x = &u->tx;
	x->frame = f;

	switch (u->kind) {
	case K_RAW:
	case K_VLAN: {
		u32 hl = ETH_HLEN;
		if (u->kind == K_VLAN && !(d->caps & NIC_CAP_VLAN_TX)) {
			/* The guest tags it itself: 4 more bytes on the wire. */
			eth_header(f, peer_mac, d->mac, ETH_P_8021Q);
			put16(f + 14, d->vlan);
			put16(f + 16, ETH_P_TEST);
			hl += 4;
			len += 4;
		} else {
			eth_header(f, peer_mac, d->mac, ETH_P_TEST);
			if (u->kind == K_VLAN) {
				x->flags |= NIC_TX_VLAN;
				x->vlan_tci = d->vlan;
				t.hw_tags++;
			}
		}
		put32(f + hl, i);
		fill_random(f + hl + 4, len - hl - 4);
		break;
	}
	case K_UDP: {
		const u8 *dst = t.udp ? t.gw_mac : peer_mac;
		const u8 *sip = t.udp ? udp_my_ip : raw_src_ip, *dip = t.udp ? udp_gw_ip : raw_dst_ip;
		u16 sport = t.udp ? UDP_MY_PORT : 7, dport = t.udp ? (u16)t.port : 7;
		if (t.udp && len > 1514)
			len = 1514;
		u32 l4len = len - ETH_HLEN - IP_HLEN;
		eth_header(f, dst, d->mac, ETH_P_IP);
		ipv4_header(f + ETH_HLEN, (u16)(len - ETH_HLEN), (u16)i, 17, sip, dip);
		u8 *udp = f + ETH_HLEN + IP_HLEN;
		put16(udp, sport);
		put16(udp + 2, dport);
		put16(udp + 4, (u16)l4len);
		put16(udp + 6, 0); /* summed below: the buffer holds an older frame */
		put32(udp + 8, i);
		fill_random(udp + 12, l4len - 12);
		u32 ps = pseudo_sum(f + ETH_HLEN, 17, l4len);
		if (d->caps & NIC_CAP_TX_CSUM) {
			put16(udp + 6, fold(ps));
			x->flags |= NIC_TX_CSUM;
			t.csum_units++;
		} else {
			u16 c = (u16)~fold(sum16(udp, l4len, ps));
			put16(udp + 6, c ? c : 0xffff);
		}
		x->csum_start = ETH_HLEN + IP_HLEN;
		x->csum_offset = 6;
		x->ip_start = ETH_HLEN;
		x->l4_proto = 17;
		break;
	}
	case K_TCP: {
		u32 p = (d->caps & NIC_CAP_TSO) ? tso_payload(i, d->max_tso) : 0;
		if (p)
			len = ETH_HLEN + IP_HLEN + TCP_HLEN + p;
		u32 l4len = len - ETH_HLEN - IP_HLEN;
		eth_header(f, peer_mac, d->mac, ETH_P_IP);
		ipv4_header(f + ETH_HLEN, (u16)(len - ETH_HLEN), (u16)i, 6, raw_src_ip, raw_dst_ip);
		u8 *tcp = f + ETH_HLEN + IP_HLEN;
		put16(tcp, 7);
		put16(tcp + 2, 7);
		put32(tcp + 4, t.tcp_seq);
		put32(tcp + 8, 0);
		tcp[12] = (TCP_HLEN / 4) << 4;
		tcp[13] = 0x18; /* PSH, ACK */
		put16(tcp + 14, 0xffff);
		put16(tcp + 16, 0);
		put16(tcp + 18, 0);
		fill_random(tcp + TCP_HLEN, l4len - TCP_HLEN);
		u->tcp_seq = t.tcp_seq;
		u->payload_off = ETH_HLEN + IP_HLEN + TCP_HLEN;
		u->payload_len = l4len - TCP_HLEN;
		t.tcp_seq += u->payload_len;
		u32 ps = pseudo_sum(f + ETH_HLEN, 6, l4len);
		if (p || (d->caps & NIC_CAP_TX_CSUM)) {
			put16(tcp + 16, fold(ps));
			x->flags |= NIC_TX_CSUM;
			t.csum_units++;
		} else {
			put16(tcp + 16, (u16)~fold(sum16(tcp, l4len, ps)));
		}
		if (p) {
			x->flags |= NIC_TX_TSO;
			x->hdr_len = ETH_HLEN + IP_HLEN + TCP_HLEN;
			x->mss = TEST_MSS;
			t.tso_units++;
		}
		x->csum_start = ETH_HLEN + IP_HLEN;
		x->csum_offset = 16;
		x->ip_start = ETH_HLEN;
		x->l4_proto = 6;
		break;
	}
	}
	u->len = len;
	x->len = len;
	u32 off, plen;
	if (!payload_of(f, len, &off, &plen))
		fatal("nic: built a malformed frame (unit %u)", i);
	hash_bytes(&t.tx_hash, f + off, plen);
	t.built++;
}

static void progress(void) { t.last_progress = rdtsc(); }

/* Checks one received frame against the oldest unit in flight. */
static void check_echo(const u8 *f, u32 len, const struct nic_rx_info *info)
{
	struct nic_dev *d = &t.dev;
	struct unit *u = &t.units[t.head];
	const char *why = 0;
	u32 off, plen;

	if (!t.count)
		fatal("nic: a frame of %u bytes arrived with nothing in flight", len);
	if (memcmp(f, d->mac, 6) != 0)
		fatal("nic: echo of unit %u has destination %02x:%02x:%02x:%02x:%02x:%02x", u->index,
		      f[0], f[1], f[2], f[3], f[4], f[5]);
	if (!payload_of(f, len, &off, &plen))
		fatal("nic: echo of unit %u (%s) is malformed (%u bytes)", u->index,
		      kind_name[u->kind], len);
	hash_bytes(&t.rx_hash, f + off, plen);
	t.rx_frames++;
	if (info->csum_good)
		t.rx_csum_good++;

	/* The tag: stripped by the NIC into info, or still in the frame. */
	int tagged = get16(f + 12) == ETH_P_8021Q;
	int want_tag = u->kind == K_VLAN;
	if (info->vlan_stripped) {
		t.hw_strips++;
		if (!want_tag || (info->vlan_tci & 0xfff) != d->vlan)
			fatal("nic: unit %u (%s): NIC stripped tag 0x%04x", u->index,
			      kind_name[u->kind], info->vlan_tci);
	} else if (tagged != want_tag || (tagged && (get16(f + 14) & 0xfff) != d->vlan)) {
		fatal("nic: unit %u (%s): tag %s (0x%04x)", u->index, kind_name[u->kind],
		      tagged ? "unexpected" : "missing", tagged ? get16(f + 14) : 0);
	}
	/* Compare without the tag, from the EtherType on. */
	const u8 *body = f + (tagged ? 16 : 12);
	u32 blen = len - (tagged ? 16 : 12);
	const u8 *ubody = u->frame + 12;
	u32 ulen = u->len - 12;
	if (u->kind == K_VLAN && !(u->tx.flags & NIC_TX_VLAN)) {
		ubody += 4; /* the guest built it tagged */
		ulen -= 4;
	}
	if (memcmp(f + 6, peer_mac, 6) != 0 && !t.udp)
		fatal("nic: unit %u: echo source MAC is not the peer's", u->index);

	if (u->kind == K_UDP || u->kind == K_TCP) {
		if (!l4_checksums_ok(f, len, &why))
			fatal("nic: unit %u (%s): bad %s in the echo", u->index, kind_name[u->kind], why);
	}
	if (t.udp) {
		/* Through the NAT: only the UDP payload comes back unchanged. */
		if (get16(body) != ETH_P_IP || body[2 + 9] != 17)
			fatal("nic: unit %u: the echo is not UDP", u->index);
		const u8 *ip = body + 2;
		u32 uoff, ulenp;
		payload_of(u->frame, u->len, &uoff, &ulenp);
		if (memcmp(ip + 12, udp_gw_ip, 4) || memcmp(ip + 16, udp_my_ip, 4) ||
		    get16(ip + 20) != t.port || get16(ip + 22) != UDP_MY_PORT)
			fatal("nic: unit %u: the echo's addresses or ports are wrong", u->index);
		if (plen != ulenp || memcmp(f + off, u->frame + uoff, plen))
			fatal("nic: unit %u: the echoed UDP payload differs (%u vs %u bytes)", u->index,
			      plen, ulenp);
	} else if (u->kind == K_TCP && (u->tx.flags & NIC_TX_TSO)) {
		const u8 *tcp = f + off - TCP_HLEN;
		u32 seq = get32(tcp + 4);
		if (plen == 0 || plen > TEST_MSS)
			fatal("nic: unit %u: TSO segment of %u payload bytes (mss %u)", u->index, plen,
			      TEST_MSS);
		if (seq != u->tcp_seq + u->got || u->got + plen > u->payload_len)
			fatal("nic: unit %u: TSO segment seq %u len %u, expected seq %u of %u bytes",
			      u->index, seq, plen, u->tcp_seq + u->got, u->payload_len);
		if (memcmp(f + off, u->frame + u->payload_off + u->got, plen))
			fatal("nic: unit %u: TSO segment at offset %u differs", u->index, u->got);
		u->got += plen;
		if (u->got < u->payload_len)
			return; /* more segments to come */
	} else {
		/* Byte for byte, but for a checksum the NIC completed (the sent
		 * frame holds the pseudo-header sum; the echo's is checked above). */
		u32 skip = ~0u;
		if (u->tx.flags & NIC_TX_CSUM)
			skip = u->tx.csum_start + u->tx.csum_offset - 12u;
		u32 at = 0;
		while (at < blen && at < ulen && (body[at] == ubody[at] || at == skip || at == skip + 1))
			at++;
		if (blen != ulen || at != blen)
			fatal("nic: unit %u (%s): echo differs at byte %u (%u vs %u bytes)", u->index,
			      kind_name[u->kind], at + 12, blen + 12, ulen + 12);
	}
	t.head = (t.head + 1) % WINDOW;
	t.count--;
}

/* Answers ARP requests for our address (udp mode); 1 when f was one. */
static int arp_reply(const u8 *f, u32 len)
{
	if (len < 42 || get16(f + 12) != ETH_P_ARP || get16(f + 20) != 1 ||
	    memcmp(f + 38, udp_my_ip, 4))
		return 0;
	u8 r[60];
	memset(r, 0, sizeof(r));
	eth_header(r, f + 6, t.dev.mac, ETH_P_ARP);
	memcpy(r + 14, f + 14, 6); /* htype, ptype, hlen, plen */
	put16(r + 20, 2);
	memcpy(r + 22, t.dev.mac, 6);
	memcpy(r + 28, udp_my_ip, 4);
	memcpy(r + 32, f + 22, 10); /* the asker's MAC and IP */
	struct nic_tx x = {.frame = r, .len = sizeof(r)};
	for (int n = 0; n < 1000; n++) {
		if (t.dev.drv->xmit(&t.dev, &x))
			return 1;
		t.dev.drv->tx_reap(&t.dev);
	}
	return 1;
}

static void poll_rx(void)
{
	struct nic_dev *d = &t.dev;
	for (int n = 0; n < 32; n++) {
		struct nic_rx_info info = {0};
		int len = d->drv->recv(d, t.rx, t.rx_cap, &info);
		if (len < 0)
			fatal("nic: receive failed");
		if (len == 0)
			return;
		progress();
		const u8 *f = t.rx;
		if (t.udp && arp_reply(f, (u32)len))
			continue;
		/* Echoes only: anything else the path carries is counted and ignored. */
		int ours = (u32)len >= ETH_HLEN && !memcmp(f, d->mac, 6);
		if (ours && !t.udp) {
			u32 et = get16(f + 12) == ETH_P_8021Q && len >= 18 ? get16(f + 16) : get16(f + 12);
			ours = et == ETH_P_TEST || (et == ETH_P_IP && !memcmp(f + 6, peer_mac, 6));
			if (info.vlan_stripped)
				ours = 1;
		}
		if (ours && t.udp)
			ours = get16(f + 12) == ETH_P_IP && len >= 42 && f[23] == 17 &&
			       get16(f + 36) == UDP_MY_PORT;
		if (!ours) {
			t.stray++;
			continue;
		}
		check_echo(f, (u32)len, &info);
	}
}

static void resolve_gateway(void)
{
	struct nic_dev *d = &t.dev;
	u8 q[60];
	memset(q, 0, sizeof(q));
	static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	eth_header(q, bcast, d->mac, ETH_P_ARP);
	put16(q + 14, 1);
	put16(q + 16, ETH_P_IP);
	q[18] = 6;
	q[19] = 4;
	put16(q + 20, 1);
	memcpy(q + 22, d->mac, 6);
	memcpy(q + 28, udp_my_ip, 4);
	memcpy(q + 38, udp_gw_ip, 4);
	for (int attempt = 0; attempt < 10; attempt++) {
		struct nic_tx x = {.frame = q, .len = sizeof(q)};
		while (!d->drv->xmit(d, &x))
			d->drv->tx_reap(d);
		u64 end = rdtsc() + 3000ull * 1000 * 1000;
		while (rdtsc() < end) {
			d->drv->tx_reap(d);
			struct nic_rx_info info = {0};
			int len = d->drv->recv(d, t.rx, t.rx_cap, &info);
			if (len < 0)
				fatal("nic: receive failed");
			const u8 *f = t.rx;
			if (len >= 42 && get16(f + 12) == ETH_P_ARP && get16(f + 20) == 2 &&
			    !memcmp(f + 28, udp_gw_ip, 4)) {
				memcpy(t.gw_mac, f + 22, 6);
				kprintf("nic: gateway 10.0.2.2 is at %02x:%02x:%02x:%02x:%02x:%02x\n",
					t.gw_mac[0], t.gw_mac[1], t.gw_mac[2], t.gw_mac[3], t.gw_mac[4],
					t.gw_mac[5]);
				return;
			}
			if (len > 0 && !arp_reply(f, (u32)len))
				t.stray++;
			cpu_pause();
		}
	}
	fatal("nic: no ARP reply from the gateway 10.0.2.2");
}

const struct nic_driver *nic_driver_named(const char *key)
{
	u32 len;
	const char *m = cmdline_get(key, &len);
	if (!m)
		fatal("nic: %s= is missing", key);
	for (u32 i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (word_is(m, len, drivers[i]->name))
			return drivers[i];
	fatal("nic: unknown %s= (virtio, e1000, rtl8139, rtl8139cp)", key);
}

static void options(const char *model_key)
{
	u32 len;
	t.dev.drv = nic_driver_named(model_key);
	const char *mode = cmdline_get("mode", &len);
	if (!mode || word_is(mode, len, "raw"))
		t.udp = 0;
	else if (word_is(mode, len, "udp"))
		t.udp = 1;
	else
		fatal("nic: mode= must be raw or udp");
	const char *irq = cmdline_get("irq", &len);
	t.dev.use_msix = t.dev.drv == &virtio_net_driver;
	if (irq && word_is(irq, len, "intx"))
		t.dev.use_msix = 0;
	else if (irq && !word_is(irq, len, "msix"))
		fatal("nic: irq= must be msix or intx");
	t.frames = (u32)cmdline_u64("frames", 64);
	t.seed = cmdline_u64("seed", 1);
	t.maxframe = (u32)cmdline_u64("maxframe", 1514);
	t.port = (u32)cmdline_u64("port", 7);
	u64 vid = cmdline_u64("vlan", 0);
	if (vid > 4094)
		fatal("nic: vlan= must be 0..4094");
	t.dev.vlan = t.udp ? 0 : (u16)vid;
	if (t.maxframe < MIN_FRAME || t.frames == 0 || t.port == 0 || t.port > 0xffff)
		fatal("nic: maxframe= below 60, frames=0 or a bad port=");
}

NORETURN void test_nic(void) { nic_test_run("model", -1); }

NORETURN void nic_test_run(const char *model_key, int slot)
{
	struct nic_dev *d = &t.dev;
	options(model_key);
	if (!nic_find(d, slot))
		fatal("nic: no %04x:%04x PCI function for model %s", d->drv->vendor, d->drv->device,
		      d->drv->name);
	irq_init();
	irq_set_handler(nic_irq, d);
	if (!d->use_msix)
		ioapic_route(d->gsi, NIC_VECTOR);
	d->max_frame = t.maxframe; /* what the test wants; the driver may lower it */
	if (d->drv->init(d) != 0)
		finish();
	if (d->max_frame < MIN_FRAME)
		fatal("nic: the %s driver gives max_frame %u", d->drv->name, d->max_frame);
	if (t.maxframe > d->max_frame)
		t.maxframe = d->max_frame;
	kprintf("nic: model=%s mac=%02x:%02x:%02x:%02x:%02x:%02x caps=0x%x max_frame=%u max_tso=%u "
		"irq=%s gsi=%u slot=%u\n",
		d->drv->name, d->mac[0], d->mac[1], d->mac[2], d->mac[3], d->mac[4], d->mac[5],
		d->caps, d->max_frame, d->max_tso, d->use_msix ? "msix" : "intx", d->gsi, d->slot);

	u32 unit_cap = t.maxframe + 4;
	if ((d->caps & NIC_CAP_TSO) && d->max_tso > unit_cap)
		unit_cap = d->max_tso;
	for (int i = 0; i < WINDOW; i++)
		t.units[i].frame = dma_alloc(unit_cap, 64);
	t.rx_cap = (d->max_frame > t.maxframe ? d->max_frame : t.maxframe) + 64;
	t.rx = dma_alloc(t.rx_cap, 64);
	hash_init(&t.tx_hash);
	hash_init(&t.rx_hash);

	irq_enable();
	progress();
	if (t.udp)
		resolve_gateway();
	u32 done = 0;
	while (done < t.frames) {
		int moved = d->drv->tx_reap(d) > 0;
		while (t.count < WINDOW && (t.pending || t.built < t.frames)) {
			struct unit *u = &t.units[(t.head + t.count) % WINDOW];
			if (!t.pending) {
				build_unit(u);
				t.pending = 1;
			}
			int r = d->drv->xmit(d, &u->tx);
			if (r < 0)
				fatal("nic: %s cannot send unit %u", d->drv->name, u->index);
			if (r == 0)
				break;
			t.pending = 0;
			t.count++;
			t.tx_frames++;
			moved = 1;
		}
		u32 before = t.count;
		poll_rx();
		if (t.count < before) {
			done += before - t.count;
			moved = 1;
		}
		if (moved)
			progress();
		else if (rdtsc() - t.last_progress > NO_PROGRESS_CYCLES)
			fatal("nic: no progress for about 10 s: %u of %u units echoed, %u in flight "
			      "(oldest %u, %s, %u bytes), irqs=%u",
			      done, t.frames, t.count, t.units[t.head].index,
			      kind_name[t.units[t.head].kind], t.units[t.head].len, d->irqs);
		else
			cpu_pause();
	}
	while (d->drv->tx_reap(d) > 0)
		;
	irq_disable();
	kprintf("NIC: RESULT model=%s mode=%s tx_frames=%u tx_units=%u rx_frames=%u tx_hash=0x%016lx "
		"rx_hash=0x%016lx irqs=%u stray=%u tso=%u csum=%u hw_tag=%u hw_strip=%u rx_csum=%u\n",
		d->drv->name, t.udp ? "udp" : "raw", t.tx_frames, t.built, t.rx_frames,
		hash_final(&t.tx_hash), hash_final(&t.rx_hash), d->irqs, t.stray, t.tso_units, t.csum_units, t.hw_tags, t.hw_strips,
		t.rx_csum_good);
	if (!d->irqs)
		fail("nic: no interrupt arrived");
	finish();
}
