// SPDX-License-Identifier: Apache-2.0
/*
 * Realtek RTL8139 for test=nic, in both of its programming models:
 *
 * - rtl8139 (normal mode, what Linux's 8139too drives): four transmit
 *   slots (TSD/TSAD) and one receive ring (RBSTART) that the chip fills
 *   with [status, length] headers and frames while the driver follows with
 *   CAPR. No offloads: nic.c tags VLAN frames and computes checksums.
 * - rtl8139cp (C+ mode, what 8139cp drives; needs an RTL8139C+, PCI
 *   revision 0x20): 16-byte descriptor rings for transmit and receive, with
 *   checksum offload, VLAN tag insertion and stripping, receive checksum
 *   status and large send.
 *
 * Register access: normal mode uses BAR 0 (I/O ports), as 8139too does by
 * default; C+ mode uses BAR 1 (MMIO), as 8139cp does. The two BARs decode
 * the same 256-byte register window, so between them the two runs cover
 * both of the model's register paths (port I/O and MMIO exits).
 *
 * Interrupts are INTx (nic.c routes the line). The irq callback reads ISR
 * and writes the bits back (write 1 to clear), which drops the line; it
 * records what it saw so that the polling side knows when to look at the
 * chip's registers (normal mode: every look is a VM exit) and which error
 * causes occurred. Everything the chip writes (packet headers, CBR,
 * descriptor lengths and status) is checked before it is used.
 */
#include "nic.h"

/* ---- registers (offsets in the 256-byte window of BAR 0 and BAR 1) ---- */

#define REG_IDR0 0x00    /* station address, 6 bytes */
#define REG_MAR0 0x08    /* multicast hash, 8 bytes */
#define REG_TSD0 0x10    /* normal: transmit status of slot 0..3 (4 apart) */
#define REG_TSAD0 0x20   /* normal: transmit start address of slot 0..3 */
#define REG_TNPDS 0x20   /* C+: normal-priority TX ring (64-bit) */
#define REG_THPDS 0x28   /* C+: high-priority TX ring (64-bit) */
#define REG_RBSTART 0x30 /* normal: receive ring start */
#define REG_CR 0x37      /* command */
#define REG_CAPR 0x38    /* normal: current address of packet read */
#define REG_CBR 0x3a     /* normal: current buffer address (chip's write offset) */
#define REG_IMR 0x3c
#define REG_ISR 0x3e
#define REG_TCR 0x40
#define REG_RCR 0x44
#define REG_MPC 0x4c     /* missed packet counter (24 bits) */
#define REG_TPPOLL 0xd9  /* C+: transmit doorbell */
#define REG_CPCR 0xe0    /* C+: command */
#define REG_RDSAR 0xe4   /* C+: receive ring (64-bit) */

#define CR_RST 0x10
#define CR_RE 0x08
#define CR_TE 0x04
#define CR_BUFE 0x01 /* normal: the receive ring is empty */

#define INT_ROK 0x0001
#define INT_RER 0x0002
#define INT_TOK 0x0004
#define INT_TER 0x0008
#define INT_RXOVW 0x0010 /* normal: ring overflow (frames lost); C+: RDU, no descriptor */
#define INT_FOVW 0x0040  /* receive FIFO overflow (frames lost) */
#define INT_SERR 0x8000  /* PCI system error (a DMA that failed) */

/* Causes that mean a frame was lost or the chip refused one. */
#define INT_ERRORS_NORMAL (INT_RER | INT_TER | INT_RXOVW | INT_FOVW | INT_SERR)
#define INT_ERRORS_CPLUS (INT_RER | INT_TER | INT_FOVW | INT_SERR)

#define TCR_IFG_STD (3u << 24)   /* standard inter-frame gap */
#define TCR_MXDMA_2K (7u << 8)   /* transmit DMA burst: unlimited (2 KiB) */
#define TCR_HWVERID 0x7cc00000u  /* hardware version bits */
#define HWVERID_8139CPLUS 0x74800000u

#define RCR_APM (1u << 1) /* our address */
#define RCR_AM (1u << 2)  /* multicast (through MAR) */
#define RCR_AB (1u << 3)  /* broadcast */
#define RCR_WRAP (1u << 7)
#define RCR_RBLEN(n) ((u32)(n) << 11) /* ring of 8 KiB << n */
#define RCR_MXDMA_UNLIM (7u << 8)
#define RCR_RXFTH_NONE (7u << 13) /* whole frames into memory, no early threshold */

/* ---- normal mode ---- */

#define TSD_SIZE_MASK 0x1fffu
#define TSD_OWN (1u << 13) /* set by the chip once the frame is in its FIFO */
#define TSD_TUN (1u << 14)
#define TSD_TOK (1u << 15)
#define TSD_ERTXTH(b) ((u32)((b) / 32) << 16) /* early TX threshold, 32-byte units */
#define TSD_TABT (1u << 30)
#define TX_SLOT_MAX 1792 /* the largest frame a slot takes (datasheet) */
#define TX_SLOTS 4

#define RXH_ROK (1u << 0)
#define RXH_ERRORS 0x3eu /* FAE, CRC, LONG, RUNT, ISE */

#define RING_ORDER 1                   /* RBLEN: a 16 KiB ring */
#define RING_LEN (8192u << RING_ORDER) /* wraps often: the wrap path is tested */
/* The datasheet's ring is RBLEN + 16 bytes; with WRAP set the chip writes
 * up to a frame past the end. WRAP stays clear here, but the slack costs
 * nothing and keeps a chip that ignored it inside our allocation. */
#define RING_ALLOC (RING_LEN + 16 + 2048)

#define NORMAL_MAX_FRAME 1514
#define ETH_HLEN 14
#define ETH_ZLEN 60
#define ETH_FCS 4
#define VLAN_HLEN 4

/* ---- C+ mode ---- */

struct cp_desc {
	u32 opts1; /* OWN, EOR, FS, LS, command or status, length */
	u32 opts2; /* VLAN */
	u64 addr;
};

#define DESC_OWN (1u << 31)
#define DESC_EOR (1u << 30)
#define DESC_FS (1u << 29)
#define DESC_LS (1u << 28)
#define TXD_LGSEN (1u << 27)
#define TXD_MSS_SHIFT 16
#define TXD_MSS_MAX 0x7ffu /* 11 bits */
#define TXD_ERROR (1u << 23)
#define TXD_IPCS (1u << 18)
#define TXD_UDPCS (1u << 17)
#define TXD_TCPCS (1u << 16)
#define TXD_LEN_MAX 0xffffu /* Frame_Length, bits 15:0 */
#define TXD2_TAGC (1u << 17)
#define RXD_RES (1u << 20) /* error summary */
#define RXD_PID(o) (((o) >> 16) & 3u)
#define RXD_PID_TCP 1u
#define RXD_PID_UDP 2u
#define RXD_IPF (1u << 15)
#define RXD_UDPF (1u << 14)
#define RXD_TCPF (1u << 13)
#define RXD_LEN_MASK 0x1fffu
#define RXD2_TAVA (1u << 16) /* a tag was stripped: bits 15:0, bytes swapped */

#define CPCR_TX (1u << 0)
#define CPCR_RX (1u << 1)
#define CPCR_RXCHKSUM (1u << 5)
#define CPCR_RXVLAN (1u << 6)
#define TPPOLL_NPQ 0x40

/* 64 descriptors per ring: the most a C+ ring holds (8139cp uses 64 too). */
#define CP_RING 64
#define CP_TX_BUF 2048 /* per TX descriptor: a TSO packet is gathered from several */
/* Frames as in normal mode (the host path's MTU); a receive buffer holds
 * one with its FCS (RxVlan has removed the tag), as 8139cp's 1536 does. */
#define CP_MAX_FRAME 1514
#define CP_RX_BUF 1536
/*
 * Large send: the chip takes a packet of up to 64 KiB - 1 (Frame_Length,
 * 16 bits), but the peer echoes a TSO packet back as its segments, one
 * receive descriptor each: at nic.c's 1000-byte MSS a 64 KiB packet is 66
 * frames, more than the 64-descriptor ring holds. The rest would wait for
 * nic.c to come back to recv, and it may be building and queueing frames
 * for longer than the 20 ms tapir's model holds a frame before dropping it
 * (docs/nic-rtl8139.md; seen here: FOVW, MPC 4 to 11, on every run with
 * 64 KiB). At 32 KiB (33 segments) the echoes of a whole window of 8
 * frames, at most two of them TSO packets, fit in the ring.
 */
#define CP_MAX_TSO 32768

struct rtl {
	int bar; /* 0: I/O (normal mode), 1: MMIO (C+) */
	int cplus;
	/* written by the irq callback */
	volatile u16 causes; /* every cause seen, for the error check */
	volatile int rx_kick; /* ROK (or an error) since the last look */
	volatile int tx_kick; /* TOK/TER since the last look */
	volatile int rdu;     /* C+: RDU since the last refill */
	int failed;

	/* normal mode */
	u8 *ring;
	u32 rx_off;  /* where the next packet header is */
	int rx_more; /* the last look found a packet: look again */
	u8 *slot_buf[TX_SLOTS];
	u32 tx_head, tx_tail, tx_count;

	/* C+ mode */
	volatile struct cp_desc *txd, *rxd;
	u8 *txb[CP_RING], *rxb[CP_RING];
	u32 txd_cmd[CP_RING]; /* EOR|FS|LS as queued, checked at write-back */
	u32 cp_tx_head, cp_tx_tail, cp_tx_used;
	u32 cp_rx_tail;
};

static struct rtl rtl;

static u8 r8(struct nic_dev *d, u32 off) { return bar_r8(d, rtl.bar, off); }
static u16 r16(struct nic_dev *d, u32 off) { return bar_r16(d, rtl.bar, off); }
static u32 r32(struct nic_dev *d, u32 off) { return bar_r32(d, rtl.bar, off); }
static void w8(struct nic_dev *d, u32 off, u8 v) { bar_w8(d, rtl.bar, off, v); }
static void w16(struct nic_dev *d, u32 off, u16 v) { bar_w16(d, rtl.bar, off, v); }
static void w32(struct nic_dev *d, u32 off, u32 v) { bar_w32(d, rtl.bar, off, v); }

static u16 swab16(u16 v) { return (u16)(v << 8 | v >> 8); }
static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }

/* ---- common ---------------------------------------------------------------- */

static void rtl_irq(struct nic_dev *d)
{
	u16 isr = r16(d, REG_ISR);
	if (!isr || isr == 0xffff)
		return; /* not ours (or the device is gone) */
	/* Acknowledge first: a cause raised after this read stays set and
	 * keeps the line up, so the flags below can never miss an event. */
	w16(d, REG_ISR, isr);
	rtl.causes |= isr;
	if (isr & (INT_ROK | INT_RER | INT_RXOVW | INT_FOVW))
		rtl.rx_kick = 1;
	if (isr & (INT_TOK | INT_TER))
		rtl.tx_kick = 1;
	if (rtl.cplus && (isr & INT_RXOVW))
		rtl.rdu = 1;
	d->irq_causes |= isr;
}

/* Fails (once) when the chip reported a lost or refused frame. */
static int check_causes(struct nic_dev *d)
{
	u16 bad = rtl.causes & (rtl.cplus ? INT_ERRORS_CPLUS : INT_ERRORS_NORMAL);
	if (!bad)
		return 0;
	if (!rtl.failed) {
		rtl.failed = 1;
		fail("nic: %s: the chip reported ISR 0x%04x (RER/TER/overflow/SERR), missed "
		     "packets %u",
		     d->drv->name, bad, r32(d, REG_MPC) & 0xffffff);
	}
	return -1;
}

/* CR.RST resets everything but the station address and the buffer
 * addresses; the bit reads as 1 until the chip is done. */
static int rtl_reset(struct nic_dev *d)
{
	w8(d, REG_CR, CR_RST);
	for (int i = 0; i < 1000; i++) {
		if (!(r8(d, REG_CR) & CR_RST))
			return 0;
		udelay(10);
	}
	fail("nic: %s: CR.RST did not clear within 10 ms (CR=0x%02x)", d->drv->name,
	     r8(d, REG_CR));
	return -1;
}

/* Reset, MAC, and the receive filter's multicast half (accept them all:
 * whatever the path carries is nic.c's to count as stray). */
static int rtl_common_init(struct nic_dev *d, int bar, int cplus)
{
	memset(&rtl, 0, sizeof(rtl));
	rtl.bar = bar;
	rtl.cplus = cplus;
	d->priv = &rtl;
	if (rtl_reset(d))
		return -1;
	for (int i = 0; i < 6; i++)
		d->mac[i] = r8(d, REG_IDR0 + (u32)i);
	if (!(d->mac[0] | d->mac[1] | d->mac[2] | d->mac[3] | d->mac[4] | d->mac[5]) ||
	    (d->mac[0] & 1)) {
		fail("nic: %s: IDR0-5 hold no usable station address", d->drv->name);
		return -1;
	}
	w32(d, REG_MAR0, 0xffffffffu);
	w32(d, REG_MAR0 + 4, 0xffffffffu);
	w32(d, REG_MPC, 0);
	return 0;
}

/* ---- normal mode -------------------------------------------------------- */

static int rtl_init(struct nic_dev *d)
{
	if (!d->bar_io[0] || !d->bar[0]) {
		fail("nic: rtl8139: BAR 0 is not an I/O BAR");
		return -1;
	}
	if (rtl_common_init(d, 0, 0))
		return -1;

	rtl.ring = dma_alloc(RING_ALLOC, 4096);
	for (int i = 0; i < TX_SLOTS; i++) {
		/* TSAD must be dword aligned; a slot never crosses a page. */
		rtl.slot_buf[i] = dma_alloc(2048, 2048);
		w32(d, REG_TSAD0 + 4u * (u32)i, (u32)dma_addr(rtl.slot_buf[i]));
	}
	w32(d, REG_RBSTART, (u32)dma_addr(rtl.ring));
	/* The reset put the chip's read pointer at 0 (CAPR 0xfff0: CAPR is
	 * always 16 below where the driver reads next). */
	w16(d, REG_CAPR, (u16)(0u - 16u));

	/* Enable first: the datasheet and 8139too configure TCR/RCR with the
	 * transmitter and receiver on. */
	w8(d, REG_CR, CR_RE | CR_TE);
	/* WRAP clear: a packet that reaches the ring's end continues at its
	 * start, so recv copies it in two pieces. */
	w32(d, REG_RCR, RCR_RXFTH_NONE | RCR_RBLEN(RING_ORDER) | RCR_MXDMA_UNLIM | RCR_AB | RCR_AM |
				RCR_APM);
	w32(d, REG_TCR, TCR_IFG_STD | TCR_MXDMA_2K);
	if ((r8(d, REG_CR) & (CR_RE | CR_TE)) != (CR_RE | CR_TE)) {
		fail("nic: rtl8139: receiver/transmitter did not turn on (CR=0x%02x)",
		     r8(d, REG_CR));
		return -1;
	}

	w16(d, REG_ISR, 0xffff);
	w16(d, REG_IMR, INT_ROK | INT_RER | INT_TOK | INT_TER | INT_RXOVW | INT_FOVW | INT_SERR);

	d->caps = 0;
	if (d->max_frame > NORMAL_MAX_FRAME)
		d->max_frame = NORMAL_MAX_FRAME;
	d->max_tso = 0;
	kprintf("rtl8139: normal mode, I/O BAR 0 at 0x%lx, TCR 0x%08x, %u KiB receive ring\n",
		d->bar[0], r32(d, REG_TCR), RING_LEN / 1024);
	return 0;
}

static int rtl_xmit(struct nic_dev *d, const struct nic_tx *t)
{
	if (t->flags) {
		fail("nic: rtl8139: offload flags 0x%x asked of a driver without offloads",
		     t->flags);
		return -1;
	}
	/* Tagged by nic.c: up to 4 bytes over max_frame. */
	if (t->len == 0 || t->len > NORMAL_MAX_FRAME + VLAN_HLEN || t->len > TX_SLOT_MAX) {
		fail("nic: rtl8139: frame of %u bytes", t->len);
		return -1;
	}
	if (rtl.tx_count == TX_SLOTS) {
		/* Full: look at the oldest slot now rather than wait for the
		 * TOK interrupt, so a caller that retries at once moves on. */
		rtl.tx_kick = 1;
		return 0;
	}
	u32 slot = rtl.tx_head, len = t->len;
	memcpy(rtl.slot_buf[slot], t->frame, len);
	if (len < ETH_ZLEN) {
		/* The chip sends what it is given: pad to the minimum. */
		memset(rtl.slot_buf[slot] + len, 0, ETH_ZLEN - len);
		len = ETH_ZLEN;
	}
	barrier();
	/* Writing the size with OWN clear hands the slot over. The early
	 * threshold is the largest (2016 bytes): whole frames, no underrun. */
	w32(d, REG_TSD0 + 4 * slot, len | TSD_ERTXTH(2016));
	rtl.tx_head = (slot + 1) % TX_SLOTS;
	rtl.tx_count++;
	return 1;
}

static int rtl_tx_reap(struct nic_dev *d)
{
	int n = 0;
	if (check_causes(d))
		return 0;
	if (!rtl.tx_count || !rtl.tx_kick)
		return 0;
	rtl.tx_kick = 0;
	/* The chip sends the slots in turn, so they complete in order. */
	while (rtl.tx_count) {
		u32 slot = rtl.tx_tail;
		u32 tsd = r32(d, REG_TSD0 + 4 * slot);
		if (tsd & (TSD_TABT | TSD_TUN)) {
			fail("nic: rtl8139: slot %u %s (TSD 0x%08x)", slot,
			     tsd & TSD_TABT ? "aborted" : "underran", tsd);
			return n;
		}
		if (!(tsd & TSD_TOK))
			break;
		if (!(tsd & TSD_OWN)) {
			fail("nic: rtl8139: slot %u has TOK without OWN (TSD 0x%08x)", slot, tsd);
			return n;
		}
		rtl.tx_tail = (slot + 1) % TX_SLOTS;
		rtl.tx_count--;
		n++;
	}
	return n;
}

static int rtl_recv(struct nic_dev *d, u8 *buf, u32 cap, struct nic_rx_info *info)
{
	(void)info; /* no offloads: nothing to report */
	if (check_causes(d))
		return -1;
	/* Only look (a VM exit per register) after ROK, or while the last
	 * look found packets. */
	if (!rtl.rx_more) {
		if (!rtl.rx_kick)
			return 0;
		rtl.rx_kick = 0;
	}
	if (r8(d, REG_CR) & CR_BUFE) {
		rtl.rx_more = 0;
		return 0;
	}
	rtl.rx_more = 1;

	u32 off = rtl.rx_off;
	u32 cbr = r16(d, REG_CBR);
	/* CBR counts the bytes the chip has written (not always a multiple
	 * of 4 while a packet comes in), modulo the ring. */
	if (cbr >= RING_LEN) {
		fail("nic: rtl8139: CBR 0x%x is outside the %u-byte ring", cbr, RING_LEN);
		return -1;
	}
	/* Bytes the chip has written past our position. */
	u32 avail = (cbr + RING_LEN - off) % RING_LEN;
	/* The header never straddles the end: off is a multiple of 4. */
	u32 hdr = *(volatile u32 *)(rtl.ring + off);
	u32 status = hdr & 0xffff, size = hdr >> 16; /* size includes the FCS */
	u32 need = (4 + size + 3) & ~3u;
	if (!(status & RXH_ROK) || (status & RXH_ERRORS)) {
		fail("nic: rtl8139: packet header 0x%08x at ring offset 0x%x: no ROK, or errors",
		     hdr, off);
		return -1;
	}
	/* 64: the chip pads short frames to 60 bytes and appends the FCS. */
	if (size < ETH_ZLEN + ETH_FCS || size > NORMAL_MAX_FRAME + VLAN_HLEN + ETH_FCS) {
		fail("nic: rtl8139: packet length %u at ring offset 0x%x (header 0x%08x)", size,
		     off, hdr);
		return -1;
	}
	if (need > avail) {
		fail("nic: rtl8139: packet of %u bytes at ring offset 0x%x runs past CBR 0x%x",
		     size, off, cbr);
		return -1;
	}
	u32 len = size - ETH_FCS;
	if (len > cap) {
		fail("nic: rtl8139: frame of %u bytes, the caller has room for %u", len, cap);
		return -1;
	}
	/* WRAP clear: whatever does not fit before the end continues at 0. */
	u32 data = off + 4;
	u32 first = data < RING_LEN ? RING_LEN - data : 0;
	if (first > len)
		first = len;
	memcpy(buf, rtl.ring + data, first);
	memcpy(buf + first, rtl.ring, len - first);

	rtl.rx_off = (off + need) % RING_LEN;
	/* The datasheet's CAPR is 16 below the next read (8139too's
	 * "cur_rx - 16"); the write also tells the chip the room is free. */
	w16(d, REG_CAPR, (u16)(rtl.rx_off - 16u));
	return (int)len;
}

/* ---- C+ mode ------------------------------------------------------------ */

static int cp_init(struct nic_dev *d)
{
	if (d->bar_io[1] || !d->bar[1]) {
		fail("nic: rtl8139cp: BAR 1 is not a memory BAR");
		return -1;
	}
	if (rtl_common_init(d, 1, 1))
		return -1;

	u8 rev = (u8)pci_cfg_read(d->slot, 0x08, 1);
	u32 ver = r32(d, REG_TCR) & TCR_HWVERID;
	if (rev < 0x20 || ver != HWVERID_8139CPLUS) {
		fail("nic: rtl8139cp: not an RTL8139C+ (PCI revision 0x%02x, TCR version 0x%08x; "
		     "C+ mode needs revision 0x20, tapir's default rev)",
		     rev, ver);
		return -1;
	}

	rtl.txd = dma_alloc(CP_RING * sizeof(struct cp_desc), 256);
	rtl.rxd = dma_alloc(CP_RING * sizeof(struct cp_desc), 256);
	for (int i = 0; i < CP_RING; i++) {
		rtl.txb[i] = dma_alloc(CP_TX_BUF, 64);
		rtl.rxb[i] = dma_alloc(CP_RX_BUF, 64);
		rtl.rxd[i].addr = dma_addr(rtl.rxb[i]);
		rtl.rxd[i].opts2 = 0;
		rtl.rxd[i].opts1 = DESC_OWN | (i == CP_RING - 1 ? DESC_EOR : 0) | CP_RX_BUF;
	}
	/* TX descriptors are host-owned (OWN clear) until queued. */
	for (int i = 0; i < CP_RING; i++) {
		rtl.txd[i].addr = 0;
		rtl.txd[i].opts2 = 0;
		rtl.txd[i].opts1 = i == CP_RING - 1 ? DESC_EOR : 0;
	}

	/* C+ first: the ring address registers are decoded by mode, and
	 * 8139cp notes that some chips reset TNPDS when C+ TX is enabled. */
	u16 cpcr = CPCR_TX | CPCR_RX | CPCR_RXCHKSUM | CPCR_RXVLAN;
	w16(d, REG_CPCR, cpcr);
	if ((r16(d, REG_CPCR) & cpcr) != cpcr) {
		fail("nic: rtl8139cp: C+CR reads 0x%04x after writing 0x%04x", r16(d, REG_CPCR),
		     cpcr);
		return -1;
	}
	w32(d, REG_TNPDS, (u32)dma_addr((void *)rtl.txd));
	w32(d, REG_TNPDS + 4, 0);
	w32(d, REG_THPDS, 0); /* no high-priority ring */
	w32(d, REG_THPDS + 4, 0);
	w32(d, REG_RDSAR, (u32)dma_addr((void *)rtl.rxd));
	w32(d, REG_RDSAR + 4, 0);

	w8(d, REG_CR, CR_RE | CR_TE);
	w32(d, REG_RCR, RCR_RXFTH_NONE | RCR_MXDMA_UNLIM | RCR_AB | RCR_AM | RCR_APM);
	w32(d, REG_TCR, TCR_IFG_STD | TCR_MXDMA_2K);
	if ((r8(d, REG_CR) & (CR_RE | CR_TE)) != (CR_RE | CR_TE)) {
		fail("nic: rtl8139cp: receiver/transmitter did not turn on (CR=0x%02x)",
		     r8(d, REG_CR));
		return -1;
	}

	w16(d, REG_ISR, 0xffff);
	/* RXOVW is RDU in C+ mode ("no receive descriptor"): not a loss,
	 * but the moment to tell the chip about refilled descriptors. */
	w16(d, REG_IMR, INT_ROK | INT_RER | INT_TOK | INT_TER | INT_RXOVW | INT_FOVW | INT_SERR);

	d->caps = NIC_CAP_TX_CSUM | NIC_CAP_TSO | NIC_CAP_VLAN_TX | NIC_CAP_VLAN_RX |
		  NIC_CAP_RX_CSUM;
	if (d->max_frame > CP_MAX_FRAME)
		d->max_frame = CP_MAX_FRAME;
	d->max_tso = CP_MAX_TSO;
	kprintf("rtl8139cp: C+ mode, MMIO BAR 1 at 0x%lx, revision 0x%02x, C+CR 0x%04x, "
		"%u+%u descriptors\n",
		d->bar[1], rev, r16(d, REG_CPCR), CP_RING, CP_RING);
	return 0;
}

/*
 * The chip finds the IPv4 header itself (after up to two tags) and puts
 * the checksum where TCP or UDP keeps it; check that this is where nic.c
 * asked for it, else the offload would write somewhere else.
 */
static int cp_csum_request_ok(const struct nic_tx *t)
{
	u32 l3 = ETH_HLEN;
	if (t->len >= ETH_HLEN + VLAN_HLEN && be16(t->frame + 12) == 0x8100)
		l3 += VLAN_HLEN;
	if (t->len < l3 + 20 || be16(t->frame + l3 - 2) != 0x0800 || (t->frame[l3] >> 4) != 4)
		return 0;
	u32 ihl = (t->frame[l3] & 15) * 4u;
	u32 field = t->l4_proto == 6 ? 16 : 6;
	return t->ip_start == l3 && t->csum_start == l3 + ihl && t->csum_offset == field &&
	       t->frame[l3 + 9] == t->l4_proto && (t->l4_proto == 6 || t->l4_proto == 17) &&
	       t->csum_start + field + 2 <= t->len;
}

static int cp_xmit(struct nic_dev *d, const struct nic_tx *t)
{
	u32 len = t->len, cmd = 0, opts2 = 0;
	if (t->flags & ~(NIC_TX_CSUM | NIC_TX_TSO | NIC_TX_VLAN)) {
		fail("nic: rtl8139cp: unknown offload flags 0x%x", t->flags);
		return -1;
	}
	if (t->flags & NIC_TX_TSO) {
		/* Large send: the chip cuts the packet at MSS and computes the
		 * IPv4 and TCP checksums of every segment itself (the MSS field
		 * takes the place of the checksum bits). */
		if (len > CP_MAX_TSO || t->mss == 0 || t->mss > TXD_MSS_MAX || t->l4_proto != 6 ||
		    !cp_csum_request_ok(t) || t->hdr_len >= len) {
			fail("nic: rtl8139cp: TSO request the chip cannot carry out (len %u, "
			     "mss %u, proto %u, ip %u, l4 %u, hdr %u)",
			     len, t->mss, t->l4_proto, t->ip_start, t->csum_start, t->hdr_len);
			return -1;
		}
		cmd = TXD_LGSEN | (u32)t->mss << TXD_MSS_SHIFT;
	} else {
		if (len == 0 || len > CP_MAX_FRAME + VLAN_HLEN) {
			fail("nic: rtl8139cp: frame of %u bytes", len);
			return -1;
		}
		if (t->flags & NIC_TX_CSUM) {
			if (!cp_csum_request_ok(t)) {
				fail("nic: rtl8139cp: checksum request the chip cannot carry out "
				     "(proto %u, ip %u, start %u, offset %u)",
				     t->l4_proto, t->ip_start, t->csum_start, t->csum_offset);
				return -1;
			}
			/* The chip computes both from scratch (the field's
			 * pseudo-header sum is not used). */
			cmd = TXD_IPCS | (t->l4_proto == 6 ? TXD_TCPCS : TXD_UDPCS);
		}
	}
	if (t->flags & NIC_TX_VLAN)
		opts2 = TXD2_TAGC | swab16(t->vlan_tci); /* the chip wants it byte-swapped */

	u32 padded = len < ETH_ZLEN ? ETH_ZLEN : len;
	u32 ndesc = (padded + CP_TX_BUF - 1) / CP_TX_BUF;
	if (ndesc > CP_RING - rtl.cp_tx_used)
		return 0;

	/* Fill the descriptors from the last to the first: the chip may
	 * look at the ring any time, and must never find the first one
	 * owned before the rest of the frame is. */
	for (u32 k = ndesc; k-- > 0;) {
		u32 i = (rtl.cp_tx_head + k) % CP_RING;
		u32 at = k * CP_TX_BUF;
		u32 chunk = padded - at < CP_TX_BUF ? padded - at : CP_TX_BUF;
		u32 real = at < len ? (len - at < chunk ? len - at : chunk) : 0;
		memcpy(rtl.txb[i], t->frame + at, real);
		if (real < chunk)
			memset(rtl.txb[i] + real, 0, chunk - real);
		u32 marks = (i == CP_RING - 1 ? DESC_EOR : 0) | (k == 0 ? DESC_FS : 0) |
			    (k == ndesc - 1 ? DESC_LS : 0);
		rtl.txd_cmd[i] = marks;
		rtl.txd[i].addr = dma_addr(rtl.txb[i]);
		rtl.txd[i].opts2 = opts2;
		barrier(); /* x86 keeps stores in order; the compiler must too */
		rtl.txd[i].opts1 = DESC_OWN | marks | cmd | chunk;
	}
	rtl.cp_tx_head = (rtl.cp_tx_head + ndesc) % CP_RING;
	rtl.cp_tx_used += ndesc;
	mb();
	w8(d, REG_TPPOLL, TPPOLL_NPQ);
	return 1;
}

static int cp_tx_reap(struct nic_dev *d)
{
	int n = 0;
	if (check_causes(d))
		return 0;
	/* Descriptors live in memory: no register is read here. */
	while (rtl.cp_tx_used) {
		u32 i = rtl.cp_tx_tail;
		u32 st = rtl.txd[i].opts1;
		if (st & DESC_OWN)
			break;
		barrier();
		u32 marks = st & (DESC_EOR | DESC_FS | DESC_LS);
		if (marks != rtl.txd_cmd[i]) {
			fail("nic: rtl8139cp: TX descriptor %u written back as 0x%08x, queued with "
			     "EOR/FS/LS 0x%08x",
			     i, st, rtl.txd_cmd[i]);
			return n;
		}
		if (st & TXD_ERROR) {
			fail("nic: rtl8139cp: TX descriptor %u reports an error (0x%08x): the chip "
			     "refused the frame",
			     i, st);
			return n;
		}
		if (st & DESC_LS)
			n++;
		rtl.cp_tx_tail = (i + 1) % CP_RING;
		rtl.cp_tx_used--;
	}
	return n;
}

static int cp_recv(struct nic_dev *d, u8 *buf, u32 cap, struct nic_rx_info *info)
{
	if (check_causes(d))
		return -1;
	u32 i = rtl.cp_rx_tail;
	volatile struct cp_desc *rd = &rtl.rxd[i];
	u32 st = rd->opts1;
	if (st & DESC_OWN)
		return 0;
	barrier();
	u32 opts2 = rd->opts2;
	u32 size = st & RXD_LEN_MASK; /* includes the FCS */

	/* Buffers hold the largest frame, so a frame never spans two. */
	if ((st & (DESC_FS | DESC_LS)) != (DESC_FS | DESC_LS)) {
		fail("nic: rtl8139cp: RX descriptor %u is not a whole frame (0x%08x)", i, st);
		return -1;
	}
	if (st & RXD_RES) {
		fail("nic: rtl8139cp: RX descriptor %u reports an error (0x%08x)", i, st);
		return -1;
	}
	if ((st & DESC_EOR) != (i == CP_RING - 1 ? DESC_EOR : 0)) {
		fail("nic: rtl8139cp: RX descriptor %u came back with EOR %s (0x%08x)", i,
		     st & DESC_EOR ? "set" : "clear", st);
		return -1;
	}
	/* At least a MAC header and the FCS (a frame padded to the minimum
	 * on the wire is shorter once RxVlan has taken its tag out). */
	if (size < ETH_HLEN + ETH_FCS || size > CP_RX_BUF) {
		fail("nic: rtl8139cp: RX descriptor %u length %u (buffer %u, 0x%08x)", i, size,
		     CP_RX_BUF, st);
		return -1;
	}
	u32 len = size - ETH_FCS;
	if (len > cap) {
		fail("nic: rtl8139cp: frame of %u bytes, the caller has room for %u", len, cap);
		return -1;
	}
	memcpy(buf, rtl.rxb[i], len);

	if (opts2 & RXD2_TAVA) {
		info->vlan_stripped = 1;
		info->vlan_tci = swab16((u16)opts2);
	}
	/* RxChkSum: the protocol the chip recognised and whether its
	 * checksum failed; a good IPv4 header is part of "verified". */
	u32 pid = RXD_PID(st);
	info->csum_good = !(st & RXD_IPF) && ((pid == RXD_PID_TCP && !(st & RXD_TCPF)) ||
					       (pid == RXD_PID_UDP && !(st & RXD_UDPF)));

	/* Give the buffer back: address and opts2 before OWN. */
	rd->opts2 = 0;
	rd->addr = dma_addr(rtl.rxb[i]);
	barrier();
	rd->opts1 = DESC_OWN | (i == CP_RING - 1 ? DESC_EOR : 0) | CP_RX_BUF;
	rtl.cp_rx_tail = (i + 1) % CP_RING;

	if (rtl.rdu) {
		/*
		 * The chip ran out of descriptors. Hardware looks at the ring
		 * again when the next frame comes; tapir's model holds that
		 * frame back instead of dropping it and looks again at the
		 * next register write (docs/nic-rtl8139.md). Acknowledging
		 * RDU once more now that there is room is that write, as
		 * 8139cp's poll loop acknowledges its receive causes.
		 */
		rtl.rdu = 0;
		mb();
		w16(d, REG_ISR, INT_RXOVW);
	}
	return (int)len;
}

/* ---- test=hostile (hostile.c) ---------------------------------------------- */

/*
 * Normal mode: the datasheet has the chip set OWN once a slot's frame is
 * in its FIFO and then TOK or TABT; a slot's size is at most 1792 bytes.
 * C+ mode: the chip clears OWN of every descriptor it is done with. What
 * neither says (DMA that hits nothing, lengths that lie), tapir must
 * survive inside RAM and end; each case ends with a reset and a check
 * that the NIC works again.
 */
#define TCR_LBK (3u << 17)

/* Waits up to 2 s for `mask` in the 32-bit register `reg`. */
static int rh_wait_reg(struct nic_dev *d, u32 reg, u32 mask, const char *what)
{
	for (u32 ms = 0; ms < 2000; ms++) {
		if (r32(d, reg) & mask)
			return 1;
		udelay(1000);
	}
	fail("hostile: %s: %s: register 0x%x is 0x%08x, never with 0x%x", d->drv->name, what, reg,
	     r32(d, reg), mask);
	return 0;
}

/* Hands normal-mode slot `slot` a frame of `size` at `addr`; waits for OWN. */
static void rh_slot(struct nic_dev *d, u32 slot, u64 addr, u32 size, const char *what)
{
	w32(d, REG_TSAD0 + 4 * slot, (u32)addr);
	w32(d, REG_TSD0 + 4 * slot, size | TSD_ERTXTH(2016));
	rh_wait_reg(d, REG_TSD0 + 4 * slot, TSD_OWN, what);
}

static void rh_frame(struct nic_dev *d, u8 *f, u32 len)
{
	memset(f, 0x5a, len);
	memcpy(f, d->mac, 6);
	memcpy(f + 6, d->mac, 6);
	f[12] = 0x88, f[13] = 0xb5;
}

/* C+: queues descriptor i as given and rings the doorbell. */
static void ch_desc(struct nic_dev *d, u32 i, u64 addr, u32 opts1)
{
	rtl.txd[i].addr = addr;
	rtl.txd[i].opts2 = 0;
	barrier();
	rtl.txd[i].opts1 = opts1 | (i == CP_RING - 1 ? DESC_EOR : 0);
	mb();
	w8(d, REG_TPPOLL, TPPOLL_NPQ);
}

/* C+: waits up to 2 s for the chip to give descriptor i back. */
static int ch_returned(u32 i, const char *what)
{
	for (u32 ms = 0; ms < 2000; ms++) {
		if (!(rtl.txd[i].opts1 & DESC_OWN))
			return 1;
		udelay(1000);
	}
	fail("hostile: rtl8139cp: %s: descriptor %u still owned by the chip (0x%08x)", what, i,
	     rtl.txd[i].opts1);
	return 0;
}

static void rh_dma_outside_ram(struct nic_dev *d)
{
	if (rtl.cplus) {
		ch_desc(d, 0, HOSTILE_ABOVE_RAM, DESC_OWN | DESC_FS | DESC_LS | 1000);
		ch_returned(0, "buffer beyond RAM");
		ch_desc(d, 1, HOSTILE_WRAPS, DESC_OWN | DESC_FS | DESC_LS | 0x3000);
		ch_returned(1, "buffer wrapping the address space");
		ch_desc(d, 2, d->bar[1], DESC_OWN | DESC_FS | DESC_LS | 256);
		ch_returned(2, "buffer in MMIO");
		ch_desc(d, 3, dma_addr((const void *)rtl.txd), DESC_OWN | DESC_FS | DESC_LS | 512);
		ch_returned(3, "the ring as a frame");
		/* rings beyond RAM and in MMIO */
		w32(d, REG_TNPDS, (u32)HOSTILE_ABOVE_RAM);
		w8(d, REG_TPPOLL, TPPOLL_NPQ);
		w32(d, REG_RDSAR, (u32)d->bar[1]);
	} else {
		rh_slot(d, 0, HOSTILE_ABOVE_RAM, 1000, "slot beyond RAM");
		rh_slot(d, 1, 0xfffff000u, 1792, "slot at the top of 4 GiB");
		rh_slot(d, 2, d->bar[1], 256, "slot in MMIO");
		rh_slot(d, 3, dma_addr(rtl.ring), 1000, "slot over the receive ring");
		w32(d, REG_RBSTART, (u32)HOSTILE_ABOVE_RAM);
	}
	/* a frame to receive into the ring outside RAM */
	u8 f[60];
	hostile_arp_request(f, d->mac);
	if (rtl.cplus) {
		memcpy(rtl.txb[4], f, 60);
		ch_desc(d, 4, dma_addr(rtl.txb[4]), DESC_OWN | DESC_FS | DESC_LS | 60);
	} else {
		memcpy(rtl.slot_buf[0], f, 60);
		rh_slot(d, 0, dma_addr(rtl.slot_buf[0]), 60, "ARP request");
	}
	udelay(300000);
	hostile_check_alive(d, "after DMA outside RAM");
}

/* CVE-2016-8910 class (C+): every descriptor owned, none with LS, the
 * last with EOR: the ring goes round for ever unless the chip stops;
 * then zero-length descriptors. Normal mode: sizes of zero. */
static void rh_descriptor_loop(struct nic_dev *d)
{
	if (rtl.cplus) {
		for (u32 i = CP_RING; i-- > 0;) {
			rtl.txd[i].addr = dma_addr(rtl.txb[i]);
			rtl.txd[i].opts1 = DESC_OWN | (i == 0 ? DESC_FS : 0) |
					   (i == CP_RING - 1 ? DESC_EOR : 0) | 64;
		}
		mb();
		w8(d, REG_TPPOLL, TPPOLL_NPQ);
		udelay(500000);
		kprintf("hostile: rtl8139cp: a ring without LS: descriptor 0 reads 0x%08x\n",
			rtl.txd[0].opts1);
		for (u32 i = 0; i < CP_RING; i++)
			rtl.txd[i].opts1 = DESC_OWN | DESC_FS | DESC_LS |
					   (i == CP_RING - 1 ? DESC_EOR : 0);
		mb();
		w8(d, REG_TPPOLL, TPPOLL_NPQ);
		ch_returned(CP_RING - 1, "a ring of zero-length descriptors");
	} else {
		for (u32 i = 0; i < 4; i++)
			rh_slot(d, i, dma_addr(rtl.slot_buf[i]), 0, "a slot of size 0");
	}
	hostile_check_alive(d, "after descriptor loops");
}

/* CVE-2015-5165 class (C+): large send and checksum offload of IPv4
 * packets whose header length and total length lie about the frame. */
static void rh_header_length_lies(struct nic_dev *d)
{
	static const struct {
		u8 ihl;    /* IPv4 header length in words */
		u16 tot;   /* IPv4 total length */
		u32 len;   /* bytes in the descriptor */
		u32 large; /* large send (else checksums only) */
	} lie[] = {
		{ 5, 10, 200, 1 },     /* total length below the header: 5165 itself */
		{ 15, 100, 60, 1 },    /* header longer than the frame */
		{ 5, 0xffff, 100, 1 }, /* total length beyond the frame */
		{ 5, 10, 200, 0 },
		{ 15, 100, 60, 0 },
		{ 5, 0xffff, 100, 0 },
		{ 0, 40, 100, 1 },     /* no header at all */
	};
	for (u32 k = 0; k < sizeof(lie) / sizeof(lie[0]); k++) {
		u8 *f = rtl.txb[k];
		rh_frame(d, f, lie[k].len);
		f[12] = 0x08, f[13] = 0x00;
		f[14] = (u8)(0x40 | lie[k].ihl);
		f[16] = (u8)(lie[k].tot >> 8), f[17] = (u8)lie[k].tot;
		f[23] = 6; /* TCP */
		u32 cmd = lie[k].large ? TXD_LGSEN | 100u << TXD_MSS_SHIFT : TXD_IPCS | TXD_TCPCS;
		ch_desc(d, k, dma_addr(f), DESC_OWN | DESC_FS | DESC_LS | cmd | lie[k].len);
		ch_returned(k, "an IPv4 header that lies");
	}
	hostile_check_alive(d, "after lying headers");
}

/* CVE-2012-6075 class: frames over what the chip takes. Normal mode: a
 * slot size over 1792 (up to 8191); then a flood of looped-back frames
 * into an 8 KiB ring the driver never reads, with a guard after it. C+:
 * a descriptor of 65535 bytes without large send. */
static void rh_oversize_frames(struct nic_dev *d)
{
	if (rtl.cplus) {
		u8 *big = dma_alloc(0x10000, 4096);
		rh_frame(d, big, 0xffff);
		ch_desc(d, 0, dma_addr(big), DESC_OWN | DESC_FS | DESC_LS | 0xffff);
		ch_returned(0, "a 65535-byte frame");
		hostile_check_alive(d, "after oversize frames");
		return;
	}
	u8 *big = dma_alloc(8192, 4096);
	rh_frame(d, big, 8191);
	rh_slot(d, 0, dma_addr(big), 8191, "a slot of 8191 bytes");
	/* the ring: 8 KiB + 16 + 1536 bytes the chip may run over with WRAP,
	 * then a guard page */
	u32 room = 8192 + 16 + 1536;
	u8 *ring = dma_alloc(room + 4096, 4096);
	memset(ring + room, 0xa5, 4096);
	w32(d, REG_RBSTART, (u32)dma_addr(ring));
	w32(d, REG_RCR, RCR_RXFTH_NONE | RCR_RBLEN(0) | RCR_MXDMA_UNLIM | RCR_AB | RCR_AM | RCR_APM |
				RCR_WRAP);
	w32(d, REG_TCR, TCR_IFG_STD | TCR_MXDMA_2K | TCR_LBK);
	/* the chip goes round the slots in order: slot 0 was the last */
	for (u32 i = 1; i <= 40; i++)
		rh_slot(d, i % 4, dma_addr(big), 1792, "a looped-back frame");
	udelay(200000);
	for (u32 i = 0; i < 4096; i++)
		if (ring[room + i] != 0xa5) {
			fail("hostile: rtl8139: byte %u past the receive ring's room changed", i);
			break;
		}
	hostile_check_alive(d, "after oversize frames");
}

/* CVE-2021-3416 class: loopback with the receive ring (normal) or the
 * receive descriptors (C+) on the transmit side's own memory. */
static void rh_loopback_feeds_itself(struct nic_dev *d)
{
	w32(d, REG_TCR, TCR_IFG_STD | TCR_MXDMA_2K | TCR_LBK);
	if (rtl.cplus) {
		w32(d, REG_RDSAR, (u32)dma_addr((const void *)rtl.txd));
		for (u32 i = 0; i < 8; i++) {
			rh_frame(d, rtl.txb[i], 64);
			ch_desc(d, i, dma_addr(rtl.txb[i]), DESC_OWN | DESC_FS | DESC_LS | 64);
		}
	} else {
		w32(d, REG_RBSTART, (u32)dma_addr(rtl.slot_buf[0]));
		for (u32 i = 0; i < 16; i++) {
			rh_frame(d, rtl.slot_buf[i % 4], 64);
			rh_slot(d, i % 4, dma_addr(rtl.slot_buf[i % 4]), 64, "a looped-back frame");
		}
	}
	udelay(500000);
	hostile_check_alive(d, "after loopback into its own memory");
}

static void rh_floods(struct nic_dev *d)
{
	for (u32 i = 0; i < 100000; i++) {
		if (rtl.cplus)
			w8(d, REG_TPPOLL, TPPOLL_NPQ);
		else
			w16(d, REG_CAPR, r16(d, REG_CAPR));
		w16(d, REG_ISR, 0);
	}
	u8 f[60];
	hostile_arp_request(f, d->mac);
	struct nic_tx tx = { .frame = f, .len = 60 };
	u32 sent = 0;
	for (u32 spins = 0; sent < 5000 && spins < 10000000; spins++) {
		d->drv->irq(d);
		rtl.causes = 0; /* replies are never read: overflows are expected */
		d->drv->tx_reap(d);
		int r = d->drv->xmit(d, &tx);
		if (r < 0)
			return;
		sent += (u32)r;
	}
	if (sent < 5000)
		fail("hostile: %s: the flood stalled after %u frames", d->drv->name, sent);
	kprintf("hostile: %s: 200000 doorbells and %u frames\n", d->drv->name, sent);
	hostile_check_alive(d, "after the floods");
}

static void rh_random_registers(struct nic_dev *d)
{
	for (u32 i = 0; i < 20000; i++) {
		u64 x = hostile_rng();
		u32 off = (u32)(x >> 8) & 0xff;
		switch ((x >> 2) & 3) {
		case 0:
			w8(d, off, (u8)(x >> 32));
			break;
		case 1:
			w16(d, off & ~1u, (u16)(x >> 32));
			break;
		case 2:
			w32(d, off & ~3u, (u32)(x >> 32));
			break;
		default:
			(void)r32(d, off & ~3u);
		}
	}
	kprintf("hostile: %s: 20000 random register accesses\n", d->drv->name);
	hostile_check_alive(d, "after random register writes");
}

static int rtl_hostile(struct nic_dev *d, const char *name, u32 len)
{
	if (word_is(name, len, "dma-outside-ram"))
		rh_dma_outside_ram(d);
	else if (word_is(name, len, "descriptor-loop"))
		rh_descriptor_loop(d);
	else if (word_is(name, len, "header-length-lies") && rtl.cplus)
		rh_header_length_lies(d);
	else if (word_is(name, len, "oversize-frames"))
		rh_oversize_frames(d);
	else if (word_is(name, len, "loopback-feeds-itself"))
		rh_loopback_feeds_itself(d);
	else if (word_is(name, len, "floods"))
		rh_floods(d);
	else if (word_is(name, len, "random-registers"))
		rh_random_registers(d);
	else
		return 0;
	return 1;
}

const struct nic_driver rtl8139_driver = {
	.name = "rtl8139",
	.vendor = 0x10ec,
	.device = 0x8139,
	.init = rtl_init,
	.xmit = rtl_xmit,
	.tx_reap = rtl_tx_reap,
	.recv = rtl_recv,
	.irq = rtl_irq,
	.hostile = rtl_hostile,
};

const struct nic_driver rtl8139cp_driver = {
	.name = "rtl8139cp",
	.vendor = 0x10ec,
	.device = 0x8139,
	.init = cp_init,
	.xmit = cp_xmit,
	.tx_reap = cp_tx_reap,
	.recv = cp_recv,
	.irq = rtl_irq,
	.hostile = rtl_hostile,
};
