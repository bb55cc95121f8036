// SPDX-License-Identifier: Apache-2.0
/*
 * Intel 82540EM (e1000) for test=nic: the minimal driver.
 *
 * Register and descriptor layouts follow the PCI/PCI-X Family of Gigabit
 * Ethernet Controllers Software Developer's Manual (8254x SDM), chapter 3
 * (descriptors), chapter 13 (registers) and chapter 14 (initialization).
 *
 * Receive: legacy descriptors with 2 KiB buffers (a jumbo frame spans
 * several and is gathered), CRC stripped, tags stripped into the
 * descriptor (VME), IPv4 and TCP/UDP checksums checked by the chip
 * (RXCSUM).
 * Transmit: every descriptor owns a fixed 4 KiB buffer the frame is copied
 * into, so the caller's frame may be reused at once. Plain frames use
 * legacy descriptors; checksum offload and TSO a context descriptor
 * followed by extended data descriptors. Tags are inserted by the chip
 * (VLE). Interrupts: INTx, every cause at once (ITR 0).
 */
#include "nic.h"

/* ---- registers (SDM chapter 13) ---- */
#define E1K_CTRL 0x0000
#define E1K_STATUS 0x0008
#define E1K_EERD 0x0014
#define E1K_FCAL 0x0028
#define E1K_FCAH 0x002c
#define E1K_FCT 0x0030
#define E1K_VET 0x0038
#define E1K_ICR 0x00c0
#define E1K_ITR 0x00c4
#define E1K_IMS 0x00d0
#define E1K_IMC 0x00d8
#define E1K_RCTL 0x0100
#define E1K_FCTTV 0x0170
#define E1K_TCTL 0x0400
#define E1K_TIPG 0x0410
#define E1K_RDBAL 0x2800
#define E1K_RDBAH 0x2804
#define E1K_RDLEN 0x2808
#define E1K_RDH 0x2810
#define E1K_RDT 0x2818
#define E1K_RDTR 0x2820
#define E1K_RADV 0x282c
#define E1K_TDBAL 0x3800
#define E1K_TDBAH 0x3804
#define E1K_TDLEN 0x3808
#define E1K_TDH 0x3810
#define E1K_TDT 0x3818
#define E1K_TIDV 0x3820
#define E1K_TADV 0x382c
#define E1K_RXCSUM 0x5000
#define E1K_MTA 0x5200 /* 128 dwords */
#define E1K_RAL0 0x5400
#define E1K_RAH0 0x5404

/* CTRL */
#define CTRL_LRST (1u << 3)
#define CTRL_ASDE (1u << 5)
#define CTRL_SLU (1u << 6)
#define CTRL_ILOS (1u << 7)
#define CTRL_FRCSPD (1u << 11)
#define CTRL_FRCDPLX (1u << 12)
#define CTRL_RST (1u << 26)
#define CTRL_RFCE (1u << 27)
#define CTRL_TFCE (1u << 28)
#define CTRL_VME (1u << 30)
#define CTRL_PHY_RST (1u << 31)

/* STATUS */
#define STATUS_LU (1u << 1)

/* EERD of the 82540/82545/82546 (the 82541 and later moved the fields) */
#define EERD_START (1u << 0)
#define EERD_DONE (1u << 4)
#define EERD_ADDR_SHIFT 8
#define EERD_DATA_SHIFT 16

/* interrupt causes (ICR, IMS, IMC) */
#define INT_TXDW (1u << 0)
#define INT_LSC (1u << 2)
#define INT_RXDMT0 (1u << 4)
#define INT_RXO (1u << 6)
#define INT_RXT0 (1u << 7)

/* RCTL */
#define RCTL_EN (1u << 1)
#define RCTL_LPE (1u << 5)
#define RCTL_BAM (1u << 15)
#define RCTL_BSIZE_2048 (0u << 16) /* with BSEX clear */
#define RCTL_SECRC (1u << 26)

/* TCTL: collision threshold and distance as the SDM recommends (full duplex) */
#define TCTL_EN (1u << 1)
#define TCTL_PSP (1u << 3)
#define TCTL_CT(n) ((u32)(n) << 4)
#define TCTL_COLD(n) ((u32)(n) << 12)

/* TIPG for copper: IPGT 10, IPGR1 8, IPGR2 6 (SDM table 13-77) */
#define TIPG_COPPER (10u | 8u << 10 | 6u << 20)

/* RXCSUM */
#define RXCSUM_IPOFL (1u << 8)
#define RXCSUM_TUOFL (1u << 9)

/* RAH */
#define RAH_AV (1u << 31)

/* ---- descriptors (SDM chapter 3) ---- */
struct e1k_rx_desc {
	u64 addr;
	u16 len;
	u16 csum; /* packet checksum: not used */
	u8 status;
	u8 errors;
	u16 special;
};

/* RX status */
#define RXS_DD (1u << 0)
#define RXS_EOP (1u << 1)
#define RXS_IXSM (1u << 2)
#define RXS_VP (1u << 3)
#define RXS_TCPCS (1u << 5)
#define RXS_IPCS (1u << 6)
/* RX errors: CE, SE, SEQ, CXE, RXE mean a damaged frame; TCPE, IPE bad checksums */
#define RXE_FRAME (1u << 0 | 1u << 1 | 1u << 2 | 1u << 4 | 1u << 7)
#define RXE_TCPE (1u << 5)
#define RXE_IPE (1u << 6)

/*
 * A transmit descriptor as two dwords after the address: `lower` holds
 * the length, the type and the command, `upper` the status, the options
 * and the tag. The legacy, data and context formats differ in how they
 * cut these dwords up, so each is built with the macros below.
 */
struct e1k_tx_desc {
	u64 addr; /* context descriptor: IPCSS/IPCSO/IPCSE, TUCSS/TUCSO/TUCSE */
	u32 lower;
	u32 upper;
};

/* command bits (bits 31:24 of `lower`), legacy and data descriptors */
#define TXC_EOP (1u << 24)
#define TXC_IFCS (1u << 25)
#define TXC_TSE (1u << 26) /* data descriptor; IC in a legacy one */
#define TXC_RS (1u << 27)
#define TXC_DEXT (1u << 29)
#define TXC_VLE (1u << 30)
/* descriptor type (bits 23:20) with DEXT: context 0, data 1 */
#define TXD_DTYP_DATA (1u << 20)
/* context TUCMD (bits 31:24): TCP (else UDP), IPv4 (else IPv6), TSE, DEXT */
#define TUCMD_TCP (1u << 24)
#define TUCMD_IP (1u << 25)
#define TUCMD_TSE (1u << 26)
#define TUCMD_DEXT (1u << 29)
/* status (bits 3:0 of `upper`): DD, and EC/LC/TU that full duplex never sees */
#define TXS_DD (1u << 0)
#define TXS_BAD (1u << 1 | 1u << 2 | 1u << 3)
/* data descriptor POPTS (bits 15:8 of `upper`) */
#define POPTS_IXSM (1u << 8)
#define POPTS_TXSM (1u << 9)
#define TXD_SPECIAL(tci) ((u32)(tci) << 16)

#define RX_DESCS 64
#define TX_DESCS 64
#define RX_BUF 2048
#define TX_BUF 4096 /* bytes per transmit descriptor (Linux's e1000 uses the same) */

/* The jumbo frame limit Linux's e1000 applies to this chip: 16128 bytes
 * with the FCS. */
#define E1K_MAX_FRAME (16128 - 4)
/* A TSO packet: its IPv4 total length must fit in 16 bits, and at most
 * 16 buffers plus the context descriptor leave the ring room for more. */
#define E1K_MAX_TSO 65535

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100

struct e1k {
	volatile struct e1k_rx_desc *rx;
	u8 *rx_buf;
	u32 rx_next; /* next descriptor the device completes */

	volatile struct e1k_tx_desc *tx;
	u8 *tx_buf;       /* TX_DESCS buffers of TX_BUF bytes */
	u32 tx_tail;      /* next free descriptor (TDT as last written) */
	u32 tx_clean;     /* first descriptor of the oldest unreaped packet */
	u8 tx_last[TX_DESCS]; /* first descriptor of a packet -> its last (RS) */

	volatile u32 icr_seen; /* all causes the irq handler read */
};

static inline u32 rd(struct nic_dev *d, u32 reg) { return bar_r32(d, 0, reg); }
static inline void wr(struct nic_dev *d, u32 reg, u32 v) { bar_w32(d, 0, reg, v); }

static inline u16 get_be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static inline void put_be16(u8 *p, u16 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}

/*
 * Copies frame data eight bytes at a time. io.c's memcpy goes byte by
 * byte; with up to 64 KiB per TSO packet and every frame copied twice
 * (into the TX buffers, out of the RX buffers), that is several times
 * the instructions, which shows where each one is emulated (PVM).
 */
static void copy(void *dst, const void *src, u32 n)
{
	u8 *dp = dst;
	const u8 *sp = src;
	for (; n >= 8; n -= 8, dp += 8, sp += 8) {
		u64 v;
		__builtin_memcpy(&v, sp, 8);
		__builtin_memcpy(dp, &v, 8);
	}
	while (n--)
		*dp++ = *sp++;
}

/* Reads one EEPROM word through EERD; -1 when the read never completes. */
static int eeprom_read(struct nic_dev *d, u8 addr, u16 *out)
{
	wr(d, E1K_EERD, EERD_START | (u32)addr << EERD_ADDR_SHIFT);
	for (int i = 0; i < 10000; i++) {
		u32 v = rd(d, E1K_EERD);
		if (v & EERD_DONE) {
			*out = (u16)(v >> EERD_DATA_SHIFT);
			return 0;
		}
		udelay(1);
	}
	return -1;
}

/*
 * The MAC address: words 0-2 of the EEPROM, which the chip also loads into
 * receive address 0 at reset. Both are read and must agree: a mismatch
 * means the EEPROM or the reset is modelled wrongly.
 */
static int read_mac(struct nic_dev *d)
{
	u16 w[3];
	for (u8 i = 0; i < 3; i++) {
		if (eeprom_read(d, i, &w[i])) {
			fail("nic: e1000 EEPROM word %u: EERD never reported DONE", i);
			return -1;
		}
	}
	u8 ee[6] = { (u8)w[0], (u8)(w[0] >> 8), (u8)w[1], (u8)(w[1] >> 8), (u8)w[2], (u8)(w[2] >> 8) };
	u32 ral = rd(d, E1K_RAL0), rah = rd(d, E1K_RAH0);
	u8 ra[6] = { (u8)ral, (u8)(ral >> 8), (u8)(ral >> 16), (u8)(ral >> 24), (u8)rah, (u8)(rah >> 8) };
	if (!(rah & RAH_AV) || memcmp(ee, ra, 6)) {
		fail("nic: e1000 MAC: EEPROM %02x:%02x:%02x:%02x:%02x:%02x but RAL0/RAH0 0x%08x/0x%08x "
		     "after reset",
		     ee[0], ee[1], ee[2], ee[3], ee[4], ee[5], ral, rah);
		return -1;
	}
	if (ee[0] & 1 || !(ee[0] | ee[1] | ee[2] | ee[3] | ee[4] | ee[5])) {
		fail("nic: e1000 MAC %02x:%02x:%02x:%02x:%02x:%02x is not a station address", ee[0],
		     ee[1], ee[2], ee[3], ee[4], ee[5]);
		return -1;
	}
	memcpy(d->mac, ee, 6);
	return 0;
}

static int e1k_init(struct nic_dev *d)
{
	if (d->bar_io[0] || !d->bar[0]) {
		fail("nic: e1000 BAR 0 is not a memory BAR (0x%lx)", d->bar[0]);
		return -1;
	}
	if (d->use_msix) {
		fail("nic: the e1000 (82540EM) has no MSI-X: use irq=intx");
		return -1;
	}
	struct e1k *e = dma_alloc(sizeof(*e), 64);
	d->priv = e;

	/*
	 * Reset (CTRL.RST): mask everything first so that nothing fires
	 * halfway; RST clears itself once the reset is done. Mask again and
	 * clear stale causes afterwards, as the SDM's chapter 14 advises.
	 */
	wr(d, E1K_IMC, 0xffffffffu);
	wr(d, E1K_CTRL, rd(d, E1K_CTRL) | CTRL_RST);
	udelay(10);
	int n = 0;
	while (rd(d, E1K_CTRL) & CTRL_RST) {
		if (++n > 100000) {
			fail("nic: e1000 CTRL.RST did not clear (CTRL 0x%08x)", rd(d, E1K_CTRL));
			return -1;
		}
		udelay(1);
	}
	wr(d, E1K_IMC, 0xffffffffu);
	(void)rd(d, E1K_ICR);

	if (read_mac(d))
		return -1;

	/* The receive filters: our address, no multicast hash bits. */
	wr(d, E1K_RAL0, (u32)d->mac[0] | (u32)d->mac[1] << 8 | (u32)d->mac[2] << 16 |
				(u32)d->mac[3] << 24);
	wr(d, E1K_RAH0, (u32)d->mac[4] | (u32)d->mac[5] << 8 | RAH_AV);
	for (u32 i = 0; i < 128; i++)
		wr(d, E1K_MTA + 4 * i, 0);

	/*
	 * Link (SDM 14.3): SLU forces the MAC's link up with the speed the PHY
	 * resolved (ASDE); no forced speed or duplex, PHY and link out of
	 * reset, no flow control. VME turns on tag insertion (VLE) and
	 * stripping into the receive descriptor.
	 */
	u32 ctrl = rd(d, E1K_CTRL);
	ctrl &= ~(CTRL_LRST | CTRL_PHY_RST | CTRL_ILOS | CTRL_FRCSPD | CTRL_FRCDPLX | CTRL_RFCE |
		  CTRL_TFCE);
	ctrl |= CTRL_SLU | CTRL_ASDE | CTRL_VME;
	wr(d, E1K_CTRL, ctrl);
	wr(d, E1K_FCAL, 0);
	wr(d, E1K_FCAH, 0);
	wr(d, E1K_FCT, 0);
	wr(d, E1K_FCTTV, 0);
	wr(d, E1K_VET, ETH_P_8021Q);

	/* Every cause interrupts at once: no throttling, no delay timers. */
	wr(d, E1K_ITR, 0);
	wr(d, E1K_RDTR, 0);
	wr(d, E1K_RADV, 0);
	wr(d, E1K_TIDV, 0);
	wr(d, E1K_TADV, 0);

	/*
	 * Receive (SDM 14.4). Buffers of 2 KiB (RCTL.BSIZE 00) hold a
	 * standard frame, tagged or not; a longer one (LPE, only when the
	 * run wants jumbo frames) spans several descriptors, as Linux's e1000
	 * receives jumbo frames into pages. Buffers sized for the largest
	 * frame would cost 1 MiB for the ring, zeroed byte by byte.
	 */
	if (!d->max_frame || d->max_frame > E1K_MAX_FRAME)
		d->max_frame = E1K_MAX_FRAME;
	u32 rctl = RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048;
	if (d->max_frame > 1514)
		rctl |= RCTL_LPE;
	e->rx = dma_alloc(RX_DESCS * sizeof(struct e1k_rx_desc), 128);
	e->rx_buf = dma_alloc((u64)RX_DESCS * RX_BUF, 4096);
	for (u32 i = 0; i < RX_DESCS; i++)
		e->rx[i].addr = dma_addr(e->rx_buf + (u64)i * RX_BUF);
	wr(d, E1K_RDBAL, (u32)dma_addr((const void *)e->rx));
	wr(d, E1K_RDBAH, (u32)(dma_addr((const void *)e->rx) >> 32));
	wr(d, E1K_RDLEN, RX_DESCS * sizeof(struct e1k_rx_desc));
	wr(d, E1K_RDH, 0);
	wr(d, E1K_RDT, 0);
	wr(d, E1K_RXCSUM, RXCSUM_IPOFL | RXCSUM_TUOFL);
	wr(d, E1K_RCTL, rctl);
	mb();
	/* The head is checked before the tail hands the device buffers: from
	 * then on frames waiting in the backend (a hostile case's flood) may
	 * move it at once. */
	u32 rdh = rd(d, E1K_RDH);
	/* All but one descriptor: head == tail means "none for the device". */
	wr(d, E1K_RDT, RX_DESCS - 1);

	/* Transmit (SDM 14.5). */
	e->tx = dma_alloc(TX_DESCS * sizeof(struct e1k_tx_desc), 128);
	e->tx_buf = dma_alloc((u64)TX_DESCS * TX_BUF, 4096);
	wr(d, E1K_TDBAL, (u32)dma_addr((const void *)e->tx));
	wr(d, E1K_TDBAH, (u32)(dma_addr((const void *)e->tx) >> 32));
	wr(d, E1K_TDLEN, TX_DESCS * sizeof(struct e1k_tx_desc));
	wr(d, E1K_TDH, 0);
	wr(d, E1K_TDT, 0);
	wr(d, E1K_TIPG, TIPG_COPPER);
	wr(d, E1K_TCTL, TCTL_EN | TCTL_PSP | TCTL_CT(0x0f) | TCTL_COLD(0x40));

	u32 tdh = rd(d, E1K_TDH);
	if (rdh != 0 || tdh != 0) {
		fail("nic: e1000 ring heads not at 0 after setup: RDH %u TDH %u", rdh, tdh);
		return -1;
	}

	d->caps = NIC_CAP_TX_CSUM | NIC_CAP_TSO | NIC_CAP_VLAN_TX | NIC_CAP_VLAN_RX |
		  NIC_CAP_RX_CSUM;
	d->max_tso = E1K_MAX_TSO;

	/* INTx is routed by nic.c; the line drops when the irq reads ICR. */
	wr(d, E1K_IMS, INT_TXDW | INT_LSC | INT_RXDMT0 | INT_RXO | INT_RXT0);

	/* The link must come up for the MAC to move frames (a real PHY
	 * negotiates for a few seconds at most). */
	for (n = 0; !(rd(d, E1K_STATUS) & STATUS_LU); n++) {
		if (n >= 5000) {
			fail("nic: e1000 link down 5 s after CTRL.SLU (STATUS 0x%08x CTRL 0x%08x)",
			     rd(d, E1K_STATUS), rd(d, E1K_CTRL));
			return -1;
		}
		udelay(1000);
	}
	return 0;
}

/* Descriptors the driver may still fill: one always stays empty, since
 * TDH == TDT means an empty ring to the chip. */
static u32 tx_free(const struct e1k *e)
{
	return TX_DESCS - 1 - (e->tx_tail + TX_DESCS - e->tx_clean) % TX_DESCS;
}

static u32 csum_add(u32 sum, const u8 *p, u32 len)
{
	for (u32 i = 0; i + 1 < len; i += 2)
		sum += get_be16(p + i);
	if (len & 1)
		sum += (u32)p[len - 1] << 8;
	return sum;
}

static u16 csum_fold(u32 sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)sum;
}

/*
 * Checks the offsets of a CSUM or TSO request against the frame and the
 * 8-bit context descriptor fields; fills in the context. 0, or -1 after
 * fail().
 */
static int tx_context(const struct nic_tx *t, struct e1k_tx_desc *c)
{
	u32 ip = t->ip_start, l4 = t->csum_start, field = (u32)t->csum_start + t->csum_offset;
	int tso = !!(t->flags & NIC_TX_TSO);
	int tcp = t->l4_proto == 6;
	if ((!tcp && t->l4_proto != 17) || (tso && !tcp)) {
		fail("nic: e1000 %s for L4 protocol %u", tso ? "TSO" : "checksum offload",
		     t->l4_proto);
		return -1;
	}
	if (ip < ETH_HLEN || l4 < ip + 20 || field + 2 > t->len || l4 > 255 || field > 255 ||
	    t->csum_offset != (tcp ? 16 : 6)) {
		fail("nic: e1000 offload offsets ip=%u l4=%u csum at %u outside a %u-byte frame "
		     "or the context descriptor's 8-bit fields",
		     ip, l4, field, t->len);
		return -1;
	}
	/* The IPv4 datagram may end before the frame (padding): the L4
	 * checksum then must end with it, not at the frame's end. */
	u32 ip_end = ip + get_be16(t->frame + ip + 2);
	if (ip_end > t->len || ip_end < l4) {
		fail("nic: e1000 IPv4 total length %u does not fit the %u-byte frame",
		     get_be16(t->frame + ip + 2), t->len);
		return -1;
	}
	u32 tucse = ip_end == t->len ? 0 : ip_end - 1; /* 0: to the end of the frame */

	u32 ipcss = ip, ipcso = ip + 10, ipcse = l4 - 1;
	c->addr = (u64)ipcss | (u64)ipcso << 8 | (u64)ipcse << 16 | (u64)l4 << 32 |
		  (u64)field << 40 | (u64)tucse << 48;
	c->lower = TUCMD_DEXT | TUCMD_IP | (tcp ? TUCMD_TCP : 0);
	c->upper = 0;
	if (tso) {
		u32 hdr = t->hdr_len, payload = t->len - t->hdr_len;
		if (hdr < l4 + 20 || hdr > 255 || hdr >= t->len || !t->mss || tucse) {
			fail("nic: e1000 TSO header length %u, MSS %u for a %u-byte frame "
			     "(L4 at %u, IPv4 end %u)",
			     hdr, t->mss, t->len, l4, ip_end);
			return -1;
		}
		c->lower |= TUCMD_TSE | payload; /* PAYLEN: bits 19:0 */
		c->upper = hdr << 8 | (u32)t->mss << 16;
	}
	return 0;
}

static int e1k_xmit(struct nic_dev *d, const struct nic_tx *t)
{
	struct e1k *e = d->priv;
	int tso = !!(t->flags & NIC_TX_TSO);
	int ctx = !!(t->flags & (NIC_TX_CSUM | NIC_TX_TSO));
	u32 limit = tso ? d->max_tso : d->max_frame;
	if (t->len < ETH_HLEN || t->len > limit) {
		fail("nic: e1000 asked to send a %u-byte %s (limit %u)", t->len,
		     tso ? "TSO packet" : "frame", limit);
		return -1;
	}
	u32 bufs = (t->len + TX_BUF - 1) / TX_BUF;
	if (bufs + ctx > tx_free(e))
		return 0;

	struct e1k_tx_desc c = { 0, 0, 0 };
	if (ctx && tx_context(t, &c))
		return -1;

	/* Copy the frame into the buffers of the descriptors it will use. */
	u32 first = e->tx_tail, i = first;
	if (ctx)
		i = (i + 1) % TX_DESCS;
	u32 data_first = i;
	for (u32 off = 0, k = i; off < t->len; off += TX_BUF, k = (k + 1) % TX_DESCS) {
		u32 n = t->len - off < TX_BUF ? t->len - off : TX_BUF;
		copy(e->tx_buf + (u64)k * TX_BUF, t->frame + off, n);
	}
	if (tso) {
		/*
		 * nic.h hands TSO packets over as Linux does: IPv4 total length
		 * and header checksum of the whole packet, TCP checksum field
		 * holding the pseudo-header sum with the whole TCP length. The
		 * chip writes each segment's length into the IP header and adds
		 * it to the pseudo-header sum itself (SDM 3.5), and sums the IP
		 * header including its checksum field. So, in our copy, as
		 * Linux's e1000 does: zero total length and header checksum, and
		 * a pseudo-header sum (saddr, daddr, protocol) without the length.
		 * The headers all lie in the first buffer (hdr_len <= 255).
		 */
		u8 *f = e->tx_buf + (u64)data_first * TX_BUF;
		u8 *iph = f + t->ip_start;
		put_be16(iph + 2, 0);
		put_be16(iph + 10, 0);
		u32 sum = csum_add(6, iph + 12, 8);
		put_be16(f + t->csum_start + 16, csum_fold(sum));
	}

	u32 special = (t->flags & NIC_TX_VLAN) ? TXD_SPECIAL(t->vlan_tci) : 0;
	u32 vle = (t->flags & NIC_TX_VLAN) ? TXC_VLE : 0;
	if (ctx) {
		volatile struct e1k_tx_desc *cd = &e->tx[first];
		cd->addr = c.addr;
		cd->upper = c.upper;
		cd->lower = c.lower;
	}
	u32 last = i;
	for (u32 off = 0; off < t->len; off += TX_BUF) {
		u32 n = t->len - off < TX_BUF ? t->len - off : TX_BUF;
		int end = off + n == t->len;
		u32 cmd = TXC_IFCS | vle | (end ? TXC_EOP | TXC_RS : 0);
		volatile struct e1k_tx_desc *dd = &e->tx[i];
		dd->addr = dma_addr(e->tx_buf + (u64)i * TX_BUF);
		if (ctx) {
			/* extended data descriptor: DTALEN 19:0, DTYP 1 */
			cmd |= TXC_DEXT | TXD_DTYP_DATA | (tso ? TXC_TSE : 0);
			dd->upper = special | POPTS_TXSM | (tso ? POPTS_IXSM : 0);
		} else {
			/* legacy descriptor: length 15:0, no checksum (CSO/CSS 0) */
			dd->upper = special;
		}
		dd->lower = cmd | n;
		last = i;
		i = (i + 1) % TX_DESCS;
	}
	e->tx_last[first] = (u8)last;
	e->tx_tail = i;
	/* The descriptors must be in memory before the chip sees the tail. */
	mb();
	wr(d, E1K_TDT, e->tx_tail);
	return 1;
}

static int e1k_tx_reap(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	int done = 0;
	while (e->tx_clean != e->tx_tail) {
		u32 last = e->tx_last[e->tx_clean];
		u32 sta = e->tx[last].upper & 0xf;
		if (!(sta & TXS_DD))
			break;
		barrier();
		if (sta & TXS_BAD) {
			fail("nic: e1000 TX descriptor %u status 0x%x (EC/LC/TU on a full-duplex link)",
			     last, sta);
			return done;
		}
		for (u32 k = e->tx_clean;; k = (k + 1) % TX_DESCS) {
			e->tx[k].lower = 0;
			e->tx[k].upper = 0;
			if (k == last)
				break;
		}
		e->tx_clean = (last + 1) % TX_DESCS;
		done++;
	}
	return done;
}

static int e1k_recv(struct nic_dev *d, u8 *buf, u32 cap, struct nic_rx_info *info)
{
	struct e1k *e = d->priv;
	if (e->icr_seen & INT_RXO) {
		fail("nic: e1000 receiver overrun (ICR.RXO): frames were lost");
		return -1;
	}

	/* Find the end of the next frame; all of it must be written back. */
	u32 i = e->rx_next, n = 1;
	u8 st;
	for (;;) {
		st = e->rx[i].status;
		if (!(st & RXS_DD))
			return 0;
		if (st & RXS_EOP)
			break;
		if (++n >= RX_DESCS) {
			fail("nic: e1000 RX ring full of descriptors without EOP");
			return -1;
		}
		i = (i + 1) % RX_DESCS;
	}
	barrier();
	u32 eop = i;

	u32 total = 0;
	i = e->rx_next;
	for (u32 k = 0; k < n; k++, i = (i + 1) % RX_DESCS) {
		volatile struct e1k_rx_desc *r = &e->rx[i];
		u32 len = r->len;
		u8 err = r->errors;
		u64 want = dma_addr(e->rx_buf + (u64)i * RX_BUF);
		if (r->addr != want) {
			fail("nic: e1000 RX descriptor %u buffer address changed to 0x%lx (was 0x%lx)",
			     i, (u64)r->addr, want);
			return -1;
		}
		if (err & RXE_FRAME) {
			fail("nic: e1000 RX descriptor %u errors 0x%02x (status 0x%02x)", i, err,
			     r->status);
			return -1;
		}
		/* Only the last buffer of a frame may be partly filled. */
		if (len > RX_BUF || (i != eop && len != RX_BUF) || (i == eop && len == 0)) {
			fail("nic: e1000 RX descriptor %u length %u (buffers of %u, %s of %u)", i, len,
			     RX_BUF, i == eop ? "last" : "not last", n);
			return -1;
		}
		if (total + len > cap) {
			fail("nic: e1000 received a frame of more than %u bytes", cap);
			return -1;
		}
		copy(buf + total, e->rx_buf + (u64)i * RX_BUF, len);
		total += len;
	}
	/* With the tag stripped (or not: then 4 bytes more) and no FCS. */
	if (total < ETH_HLEN || total > d->max_frame + 4) {
		fail("nic: e1000 received a %u-byte frame (max_frame %u)", total, d->max_frame);
		return -1;
	}

	/* The last descriptor carries the tag and the checksum results. */
	volatile struct e1k_rx_desc *r = &e->rx[eop];
	u8 err = r->errors;
	u16 special = r->special;
	u16 type = get_be16(buf + 12);
	if (type == ETH_P_8021Q) {
		fail("nic: e1000 passed a tagged frame on although CTRL.VME strips tags "
		     "(status 0x%02x)",
		     st);
		return -1;
	}
	info->vlan_stripped = !!(st & RXS_VP);
	info->vlan_tci = info->vlan_stripped ? special : 0;
	if ((st & (RXS_IPCS | RXS_TCPCS)) && type != ETH_P_IP) {
		fail("nic: e1000 checked IP checksums (status 0x%02x) of a frame of type 0x%04x", st,
		     type);
		return -1;
	}
	/* IXSM: the chip says to ignore both checksum bits. */
	info->csum_good = !(st & RXS_IXSM) && (st & RXS_TCPCS) && !(err & RXE_TCPE) &&
			  !((st & RXS_IPCS) && (err & RXE_IPE));

	/* Hand the buffers back: the tail follows the last one returned. */
	i = e->rx_next;
	for (u32 k = 0; k < n; k++, i = (i + 1) % RX_DESCS) {
		e->rx[i].status = 0;
		e->rx[i].errors = 0;
		e->rx[i].special = 0;
		e->rx[i].len = 0;
	}
	e->rx_next = (eop + 1) % RX_DESCS;
	mb();
	wr(d, E1K_RDT, eop);
	return (int)total;
}

static void e1k_irq(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	/* Reading ICR clears the causes, and so lowers INTx. */
	u32 icr = rd(d, E1K_ICR);
	e->icr_seen |= icr;
	d->irq_causes |= icr;
}

/* ---- test=hostile (hostile.c) ---- */

/*
 * The cases program the rings as a guest that means harm would. The SDM
 * says what the chip does with a descriptor it can read (it is processed
 * and, with RS, written back with DD, TDH moving past it); for what it
 * leaves open (DMA that hits nothing, a tail outside the ring) tapir must
 * stay inside the ring and inside RAM, and end. Each case ends with a
 * reset and a check that the NIC works again.
 */
#define RCTL_LBM_MAC (1u << 6)

/* Queues one legacy descriptor at the tail and moves TDT past it. */
static void ek_put(struct nic_dev *d, u64 addr, u32 len, u32 cmd)
{
	struct e1k *e = d->priv;
	volatile struct e1k_tx_desc *t = &e->tx[e->tx_tail];
	t->addr = addr;
	t->lower = (len & 0xffff) | cmd;
	t->upper = 0;
	e->tx_tail = (e->tx_tail + 1) % TX_DESCS;
	e->tx_clean = e->tx_tail; /* the case reaps by TDH itself */
	mb();
	wr(d, E1K_TDT, e->tx_tail);
}

/* Waits up to 2 s for TDH to reach TDT; fails with `what` otherwise. */
static int ek_drained(struct nic_dev *d, const char *what)
{
	for (u32 ms = 0; ms < 2000; ms++) {
		u32 tdh = rd(d, E1K_TDH), tdt = rd(d, E1K_TDT);
		if (tdh >= TX_DESCS) {
			fail("hostile: e1000: %s: TDH %u outside the ring of %u", what, tdh, TX_DESCS);
			return 0;
		}
		if (tdh == tdt)
			return 1;
		udelay(1000);
	}
	fail("hostile: e1000: %s: TDH %u never reached TDT %u", what, rd(d, E1K_TDH),
	     rd(d, E1K_TDT));
	return 0;
}

/* The descriptor before the tail has DD (it had RS). */
static void ek_expect_dd(struct nic_dev *d, const char *what)
{
	struct e1k *e = d->priv;
	u32 last = (e->tx_tail + TX_DESCS - 1) % TX_DESCS;
	if (!(e->tx[last].upper & TXS_DD))
		fail("hostile: e1000: %s: descriptor %u has no DD (upper 0x%08x)", what, last,
		     e->tx[last].upper);
}

static void ek_dma_outside_ram(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	const u32 cmd = TXC_EOP | TXC_IFCS | TXC_RS;
	ek_put(d, HOSTILE_ABOVE_RAM, 1000, cmd);
	if (ek_drained(d, "buffer beyond RAM"))
		ek_expect_dd(d, "buffer beyond RAM");
	ek_put(d, HOSTILE_WRAPS, 0x3000, cmd);
	if (ek_drained(d, "buffer wrapping the address space"))
		ek_expect_dd(d, "buffer wrapping the address space");
	ek_put(d, d->bar[0], 256, cmd); /* its own registers as a frame */
	if (ek_drained(d, "buffer in MMIO"))
		ek_expect_dd(d, "buffer in MMIO");
	/* the ring itself as the frame: RAM, so it is sent */
	ek_put(d, dma_addr((const void *)e->tx), 512, cmd);
	if (ek_drained(d, "the ring as a frame"))
		ek_expect_dd(d, "the ring as a frame");

	/* receive buffers beyond RAM and in MMIO, then an ARP reply */
	e->rx[0].addr = HOSTILE_ABOVE_RAM;
	e->rx[1].addr = d->bar[0];
	u8 f[60];
	u32 len = hostile_arp_request(f, d->mac);
	copy(e->tx_buf, f, len);
	ek_put(d, dma_addr(e->tx_buf), len, cmd);
	ek_drained(d, "ARP request");
	udelay(300000);

	/* rings beyond RAM and in MMIO: a tail the chip must not follow into
	 * memory that is not there */
	wr(d, E1K_TCTL, 0);
	wr(d, E1K_TDBAL, (u32)HOSTILE_ABOVE_RAM);
	wr(d, E1K_TDBAH, 0);
	wr(d, E1K_TDH, 0);
	wr(d, E1K_TDT, 0);
	wr(d, E1K_TCTL, TCTL_EN | TCTL_PSP);
	wr(d, E1K_TDT, 8);
	udelay(300000);
	if (rd(d, E1K_TDH) >= TX_DESCS)
		fail("hostile: e1000: ring beyond RAM: TDH %u", rd(d, E1K_TDH));
	wr(d, E1K_RCTL, 0);
	wr(d, E1K_RDBAL, (u32)d->bar[0]);
	wr(d, E1K_RDH, 0);
	wr(d, E1K_RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
	wr(d, E1K_RDT, 16);
	udelay(300000);
	hostile_check_alive(d, "after DMA outside RAM");
}

/* CVE-2016-1981 / CVE-2021-20257 class: zero-length descriptors without
 * EOP around the whole ring, a tail outside it, a ring of no length. */
static void ek_descriptor_loop(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	for (u32 i = 0; i < TX_DESCS - 1; i++)
		ek_put(d, dma_addr(e->tx_buf), 0, TXC_IFCS);
	ek_put(d, dma_addr(e->tx_buf), 0, TXC_EOP | TXC_RS);
	ek_drained(d, "a ring of zero-length descriptors");
	wr(d, E1K_TDT, TX_DESCS + 5); /* beyond the ring */
	udelay(300000);
	if (rd(d, E1K_TDH) >= TX_DESCS)
		fail("hostile: e1000: tail beyond the ring: TDH %u", rd(d, E1K_TDH));
	wr(d, E1K_TDLEN, 0);
	wr(d, E1K_TDT, 3);
	udelay(300000);
	wr(d, E1K_TDLEN, 8); /* half a descriptor */
	wr(d, E1K_TDT, 1);
	udelay(300000);
	hostile_check_alive(d, "after descriptor loops");
}

/* CVE-2012-6075 class: a frame longer than the receive buffers, looped
 * back, with long packets not enabled (RCTL.LPE clear): the chip drops it
 * (SDM 3.2.3); no byte past a buffer may change. */
static void ek_oversize_frames(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	/* guard pattern after the first receive buffer */
	u8 *guard = e->rx_buf + RX_BUF;
	memset(guard, 0xa5, RX_BUF);
	wr(d, E1K_RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048 | RCTL_LBM_MAC);
	u8 *f = e->tx_buf;
	memset(f, 0x5a, 3 * TX_BUF);
	memcpy(f, d->mac, 6);
	memcpy(f + 6, d->mac, 6);
	f[12] = 0x88, f[13] = 0xb5;
	/* 9000 bytes in three descriptors, then 16 KiB + in five */
	ek_put(d, dma_addr(f), 3000, TXC_IFCS);
	ek_put(d, dma_addr(f) + 3000, 3000, TXC_IFCS);
	ek_put(d, dma_addr(f) + 6000, 3000, TXC_EOP | TXC_IFCS | TXC_RS);
	ek_drained(d, "a 9000-byte frame");
	for (u32 i = 0; i < 5; i++)
		ek_put(d, dma_addr(f), 3500, (i == 4 ? TXC_EOP | TXC_RS : 0) | TXC_IFCS);
	ek_drained(d, "a 17500-byte frame");
	udelay(300000);
	if (e->rx[0].status & RXS_DD)
		fail("hostile: e1000: a frame over 1522 bytes was received without LPE (len %u)",
		     e->rx[0].len);
	for (u32 i = 0; i < RX_BUF; i++)
		if (guard[i] != 0xa5) {
			fail("hostile: e1000: byte %u past the first receive buffer changed", i);
			break;
		}
	hostile_check_alive(d, "after oversize frames");
}

/* CVE-2021-3416 class: MAC loopback with the receive ring on the
 * transmit ring, and receive buffers over the transmit descriptors. */
static void ek_loopback_feeds_itself(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	u8 *f = e->tx_buf;
	memset(f, 0, 64);
	memcpy(f, d->mac, 6);
	memcpy(f + 6, d->mac, 6);
	f[12] = 0x88, f[13] = 0xb5;
	/* receive buffers are the transmit descriptor ring */
	for (u32 i = 0; i < RX_DESCS; i++)
		e->rx[i].addr = dma_addr((const void *)e->tx);
	wr(d, E1K_RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048 | RCTL_LBM_MAC);
	for (u32 i = 0; i < 8; i++)
		ek_put(d, dma_addr(f), 64, TXC_EOP | TXC_IFCS | TXC_RS);
	udelay(500000);
	if (rd(d, E1K_TDH) >= TX_DESCS || rd(d, E1K_RDH) >= RX_DESCS)
		fail("hostile: e1000: loopback into its own ring: TDH %u RDH %u", rd(d, E1K_TDH),
		     rd(d, E1K_RDH));
	/* then the receive ring is the transmit ring */
	wr(d, E1K_RCTL, 0);
	wr(d, E1K_RDBAL, (u32)dma_addr((const void *)e->tx));
	wr(d, E1K_RDLEN, TX_DESCS * sizeof(struct e1k_tx_desc));
	wr(d, E1K_RDH, 0);
	wr(d, E1K_RDT, TX_DESCS - 1);
	wr(d, E1K_RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048 | RCTL_LBM_MAC);
	for (u32 i = 0; i < 8; i++)
		ek_put(d, dma_addr(f), 64, TXC_EOP | TXC_IFCS | TXC_RS);
	udelay(500000);
	kprintf("hostile: e1000: loopback into its own rings: TDH %u TDT %u RDH %u\n",
		rd(d, E1K_TDH), rd(d, E1K_TDT), rd(d, E1K_RDH));
	hostile_check_alive(d, "after loopback into its own rings");
}

static void ek_floods(struct nic_dev *d)
{
	struct e1k *e = d->priv;
	for (u32 i = 0; i < 100000; i++) {
		wr(d, E1K_TDT, e->tx_tail);
		wr(d, E1K_RDT, RX_DESCS - 1);
	}
	u8 f[60];
	hostile_arp_request(f, d->mac);
	struct nic_tx tx = { .frame = f, .len = 60 };
	u32 sent = 0;
	for (u32 spins = 0; sent < 5000 && spins < 10000000; spins++) {
		e1k_tx_reap(d);
		int r = e1k_xmit(d, &tx);
		if (r < 0)
			return;
		sent += (u32)r;
	}
	if (sent < 5000)
		fail("hostile: e1000: the flood stalled after %u frames", sent);
	kprintf("hostile: e1000: 200000 doorbells and %u frames\n", sent);
	hostile_check_alive(d, "after the floods");
}

static void ek_random_registers(struct nic_dev *d)
{
	for (u32 i = 0; i < 20000; i++) {
		u64 x = hostile_rng();
		u32 off = (u32)(x >> 8) % 0x20000 & ~3u;
		if (x & 1)
			wr(d, off, (u32)(x >> 32));
		else
			(void)rd(d, off);
	}
	kprintf("hostile: e1000: 20000 random register accesses\n");
	hostile_check_alive(d, "after random register writes");
}

static int e1k_hostile(struct nic_dev *d, const char *name, u32 len)
{
	if (word_is(name, len, "dma-outside-ram"))
		ek_dma_outside_ram(d);
	else if (word_is(name, len, "descriptor-loop"))
		ek_descriptor_loop(d);
	else if (word_is(name, len, "oversize-frames"))
		ek_oversize_frames(d);
	else if (word_is(name, len, "loopback-feeds-itself"))
		ek_loopback_feeds_itself(d);
	else if (word_is(name, len, "floods"))
		ek_floods(d);
	else if (word_is(name, len, "random-registers"))
		ek_random_registers(d);
	else
		return 0;
	return 1;
}

const struct nic_driver e1000_driver = {
	.name = "e1000",
	.vendor = 0x8086,
	.device = 0x100e,
	.init = e1k_init,
	.xmit = e1k_xmit,
	.tx_reap = e1k_tx_reap,
	.recv = e1k_recv,
	.irq = e1k_irq,
	.hostile = e1k_hostile,
};
