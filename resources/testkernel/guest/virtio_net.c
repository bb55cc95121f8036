// SPDX-License-Identifier: Apache-2.0
/*
 * virtio-net for test=nic: the modern (virtio 1.x) PCI transport with
 * split virtqueues, written from the virtio 1.1 specification (4.1 "Virtio
 * Over PCI Bus", 2.6 "Split Virtqueues", 5.1 "Network Device").
 *
 * Deliberately minimal: queue 0 receives, queue 1 transmits, no control
 * queue, no mergeable receive buffers, no event index, no indirect
 * descriptors. Every buffer is one descriptor holding the 12-byte
 * virtio_net_hdr (VERSION_1 always carries num_buffers) followed by the
 * frame; a descriptor's index names its buffer for good, so the used ring's
 * ids map straight back to buffers. Offloads: checksum and TCPv4
 * segmentation on transmit, DATA_VALID on receive, whatever the device
 * offers of them. Interrupts stay enabled on both queues (no suppression),
 * so that the test really takes them.
 *
 * Everything the device writes (used ring ids and lengths, the received
 * header) is checked before it is used.
 */
#include "nic.h"

/* ---- PCI capabilities (4.1.4) ---------------------------------------------- */

#define PCI_CAP_ID_VNDR 0x09
#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_PTR 0x34

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* struct virtio_pci_cap: byte offsets within the capability */
#define CAP_LEN 2
#define CAP_CFG_TYPE 3
#define CAP_BAR 4
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_NOTIFY_MULT 16 /* struct virtio_pci_notify_cap only */
#define CAP_SIZE 16
#define NOTIFY_CAP_SIZE 20

/* ---- struct virtio_pci_common_cfg (4.1.4.3) -------------------------------- */

#define COMMON_DFSELECT 0x00 /* le32 device_feature_select */
#define COMMON_DF 0x04       /* le32 device_feature */
#define COMMON_GFSELECT 0x08 /* le32 driver_feature_select */
#define COMMON_GF 0x0c       /* le32 driver_feature */
#define COMMON_MSIX 0x10     /* le16 config_msix_vector */
#define COMMON_NUMQ 0x12     /* le16 num_queues */
#define COMMON_STATUS 0x14   /* u8 device_status */
#define COMMON_CFGGEN 0x15   /* u8 config_generation */
#define COMMON_Q_SELECT 0x16 /* le16 queue_select */
#define COMMON_Q_SIZE 0x18   /* le16 queue_size */
#define COMMON_Q_MSIX 0x1a   /* le16 queue_msix_vector */
#define COMMON_Q_ENABLE 0x1c /* le16 queue_enable */
#define COMMON_Q_NOFF 0x1e   /* le16 queue_notify_off */
#define COMMON_Q_DESCLO 0x20 /* le64 queue_desc */
#define COMMON_Q_DESCHI 0x24
#define COMMON_Q_AVAILLO 0x28 /* le64 queue_driver */
#define COMMON_Q_AVAILHI 0x2c
#define COMMON_Q_USEDLO 0x30 /* le64 queue_device */
#define COMMON_Q_USEDHI 0x34
#define COMMON_CFG_MIN_LEN 0x38

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* device_status bits (2.1) */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80

/* ISR status bits (4.1.4.5) */
#define ISR_QUEUE 1
#define ISR_CONFIG 2

/* ---- feature bits (5.1.3, 6) ----------------------------------------------- */

#define F_CSUM (1ull << 0)       /* device completes partial checksums we send */
#define F_GUEST_CSUM (1ull << 1) /* device may hand us DATA_VALID / NEEDS_CSUM */
#define F_MAC (1ull << 5)
#define F_HOST_TSO4 (1ull << 11) /* device segments TCPv4 we send */
#define F_VERSION_1 (1ull << 32)

/* ---- struct virtio_net_hdr (5.1.6) ------------------------------------------ */

#define NET_HDR_LEN 12 /* with num_buffers: VERSION_1 has it even without MRG_RXBUF */
#define HDR_F_NEEDS_CSUM 1
#define HDR_F_DATA_VALID 2
#define HDR_GSO_NONE 0
#define HDR_GSO_TCPV4 1

struct net_hdr {
	u8 flags;
	u8 gso_type;
	u16 hdr_len;
	u16 gso_size;
	u16 csum_start;
	u16 csum_offset;
	u16 num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct net_hdr) == NET_HDR_LEN, "virtio_net_hdr is 12 bytes");

/* ---- split virtqueue (2.6) ---------------------------------------------------- */

#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct virtq_used_elem {
	u32 id;
	u32 len;
};

/* ---- sizing ------------------------------------------------------------------ */

#define RX_QUEUE 0
#define TX_QUEUE 1
#define RX_RING 64 /* receive buffers posted at all times */
#define TX_RING 16 /* frames in flight (the test keeps 8 units, 2 of them TCP) */
#define TX_BIG 2   /* of which this many have room for a TSO packet */
#define ETH_HLEN 14
#define VLAN_HLEN 4
/*
 * Without a negotiated MTU a device sends standard frames, and the spec asks
 * for receive buffers of at least 1526 bytes (header + 1514): that is what
 * this driver gives unless nic.c asks for more in d->max_frame, which it
 * honours up to jumbo size.
 */
#define VN_STD_FRAME 1514
#define VN_MAX_FRAME 9014
/*
 * The largest frame handed to HOST_TSO4 (nic.c counts max_tso as the whole
 * frame): the IPv4 total length caps the packet at 65535 bytes, plus the
 * Ethernet header.
 */
#define VN_MAX_TSO (ETH_HLEN + 65535)

struct vn_queue {
	u16 index; /* 0 RX, 1 TX */
	u16 size;  /* entries, a power of two */
	struct virtq_desc *desc;
	volatile u16 *avail; /* flags, idx, ring[size], used_event */
	volatile u16 *used_hdr; /* flags, idx */
	volatile struct virtq_used_elem *used_ring;
	u16 avail_idx; /* our copy of avail->idx: the next entry we publish */
	u16 last_used; /* the next used entry we consume */
	u32 notify_off; /* offset of this queue's doorbell in the notify BAR */
	u8 *bufs;       /* size buffers of buf_size bytes, one per descriptor */
	u32 buf_size;
	u8 busy[TX_RING > RX_RING ? TX_RING : RX_RING]; /* 1: the device owns it */
	/*
	 * TX: the last nbig descriptors use buffers of big_size bytes (in
	 * big) instead, for TSO packets. Few of them: dma_alloc() zeroes
	 * memory a byte at a time, which takes seconds per MiB under an
	 * instruction emulator. Free descriptors of each kind on a stack.
	 */
	u8 *big;
	u32 big_size;
	u16 nbig;
	u16 free[TX_RING], nfree;
	u16 free_big[TX_BIG], nfree_big;
};

/* Where one virtio structure lives: BAR index and offset. */
struct vn_region {
	int bar;
	u32 off;
	u32 len;
};

struct vn {
	struct vn_region common, notify, isr, device;
	u32 notify_mult;
	u64 features; /* negotiated */
	struct vn_queue rx, tx;
	u32 rx_dropped; /* buffers the device gave back empty */
};

static struct vn vn_state;
/* test=hostile: init offers no receive buffers (the case offers its own). */
static int vn_rx_offer_none;

/*
 * Copies frames with one string instruction rather than io.c's byte loop:
 * on hosts where the guest runs under an instruction emulator (PVM) every
 * instruction costs about a microsecond, and 64 KiB TSO packets add up.
 */
static void copy(void *dst, const void *src, u32 n)
{
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* ---- register access ------------------------------------------------------------ */

static u8 c_r8(struct nic_dev *d, u32 reg)
{
	struct vn *vn = d->priv;
	return bar_r8(d, vn->common.bar, vn->common.off + reg);
}
static u16 c_r16(struct nic_dev *d, u32 reg)
{
	struct vn *vn = d->priv;
	return bar_r16(d, vn->common.bar, vn->common.off + reg);
}
static u32 c_r32(struct nic_dev *d, u32 reg)
{
	struct vn *vn = d->priv;
	return bar_r32(d, vn->common.bar, vn->common.off + reg);
}
static void c_w8(struct nic_dev *d, u32 reg, u8 v)
{
	struct vn *vn = d->priv;
	bar_w8(d, vn->common.bar, vn->common.off + reg, v);
}
static void c_w16(struct nic_dev *d, u32 reg, u16 v)
{
	struct vn *vn = d->priv;
	bar_w16(d, vn->common.bar, vn->common.off + reg, v);
}
static void c_w32(struct nic_dev *d, u32 reg, u32 v)
{
	struct vn *vn = d->priv;
	bar_w32(d, vn->common.bar, vn->common.off + reg, v);
}
/* 64-bit fields as two 32-bit halves, which every transport accepts. */
static void c_w64(struct nic_dev *d, u32 reg, u64 v)
{
	c_w32(d, reg, (u32)v);
	c_w32(d, reg + 4, (u32)(v >> 32));
}

/* ---- capabilities ------------------------------------------------------------------ */

/*
 * Walks the capability list for the virtio structures (4.1.4). The spec
 * lets a device list a type more than once, in order of preference: the
 * first one this driver can use wins. Returns 0, or -1 after fail().
 */
static int vn_find_caps(struct nic_dev *d, struct vn *vn)
{
	struct vn_region *want[5] = {
		[VIRTIO_PCI_CAP_COMMON_CFG] = &vn->common,
		[VIRTIO_PCI_CAP_NOTIFY_CFG] = &vn->notify,
		[VIRTIO_PCI_CAP_ISR_CFG] = &vn->isr,
		[VIRTIO_PCI_CAP_DEVICE_CFG] = &vn->device,
	};
	/* smallest useful length of each structure */
	static const u32 min_len[5] = {
		[VIRTIO_PCI_CAP_COMMON_CFG] = COMMON_CFG_MIN_LEN,
		[VIRTIO_PCI_CAP_NOTIFY_CFG] = 2,
		[VIRTIO_PCI_CAP_ISR_CFG] = 1,
		[VIRTIO_PCI_CAP_DEVICE_CFG] = 6, /* mac */
	};

	for (int t = 0; t < 5; t++)
		if (want[t])
			want[t]->bar = -1;

	if (!(pci_cfg_read(d->slot, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST)) {
		fail("nic: virtio: the function has no capability list");
		return -1;
	}
	u8 ptr = (u8)pci_cfg_read(d->slot, PCI_CAP_PTR, 1) & 0xfc;
	/* 48 capabilities fill the 192 bytes after the header: more is a loop */
	for (int n = 0; ptr && n < 48; n++) {
		if (ptr < 0x40) {
			fail("nic: virtio: capability pointer 0x%x inside the header", ptr);
			return -1;
		}
		u8 id = (u8)pci_cfg_read(d->slot, ptr, 1);
		u8 next = (u8)pci_cfg_read(d->slot, ptr + 1, 1) & 0xfc;
		if (id == PCI_CAP_ID_VNDR) {
			u8 len = (u8)pci_cfg_read(d->slot, ptr + CAP_LEN, 1);
			u8 type = (u8)pci_cfg_read(d->slot, ptr + CAP_CFG_TYPE, 1);
			u8 bar = (u8)pci_cfg_read(d->slot, ptr + CAP_BAR, 1);
			/* unknown types (PCI_CFG, SHARED_MEMORY, ...) and BARs
			 * that are reserved or not mapped are skipped, as the
			 * spec asks of a driver */
			if (type < 5 && want[type] && want[type]->bar < 0 && bar < 6 &&
			    d->bar[bar] && len >= CAP_SIZE) {
				u32 off = pci_cfg_read(d->slot, ptr + CAP_OFFSET, 4);
				u32 length = pci_cfg_read(d->slot, ptr + CAP_LENGTH, 4);
				if (length < min_len[type] || off + length < off) {
					fail("nic: virtio: capability type %u at 0x%x: length %u at offset 0x%x",
					     type, ptr, length, off);
					return -1;
				}
				if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
					if (len < NOTIFY_CAP_SIZE) {
						fail("nic: virtio: notify capability at 0x%x is %u bytes", ptr,
						     len);
						return -1;
					}
					vn->notify_mult = pci_cfg_read(d->slot, ptr + CAP_NOTIFY_MULT, 4);
				}
				want[type]->bar = bar;
				want[type]->off = off;
				want[type]->len = length;
			}
		}
		ptr = next;
	}
	static const char *const names[5] = { "", "common", "notify", "isr", "device" };
	for (int t = 1; t < 5; t++) {
		if (want[t]->bar < 0) {
			fail("nic: virtio: no usable %s configuration capability (not a modern device?)",
			     names[t]);
			return -1;
		}
	}
	return 0;
}

/* ---- virtqueues ------------------------------------------------------------------------ */

/* Tells the device that queue q has new available buffers, unless it said it
 * does not want to hear (it is draining the ring and will look again). */
static void vn_kick(struct nic_dev *d, struct vn_queue *q)
{
	struct vn *vn = d->priv;
	/* the avail index store must be visible before the flag is read, or
	 * the device may re-arm notifications and miss our entry */
	mb();
	if (q->used_hdr[0] & VIRTQ_USED_F_NO_NOTIFY)
		return;
	bar_w16(d, vn->notify.bar, q->notify_off, q->index);
}

/* Puts descriptor id on the available ring (not yet visible: vn_publish). */
static void vn_offer(struct vn_queue *q, u16 id)
{
	q->avail[2 + (q->avail_idx & (q->size - 1))] = id;
	q->avail_idx++;
	q->busy[id] = 1;
}

/* Makes the offered entries visible: descriptors and ring slots first. */
static void vn_publish(struct vn_queue *q)
{
	barrier(); /* x86 keeps stores in order; the compiler must too */
	q->avail[1] = q->avail_idx;
}

/*
 * Sets up queue `index` with at most `want` entries and a buffer of
 * buf_size bytes behind each descriptor (4.1.5.1.3). Returns 0, or -1
 * after fail().
 */
static int vn_setup_queue(struct nic_dev *d, struct vn_queue *q, u16 index, u16 want,
			  u32 buf_size)
{
	struct vn *vn = d->priv;

	c_w16(d, COMMON_Q_SELECT, index);
	u16 max = c_r16(d, COMMON_Q_SIZE);
	if (max == 0) {
		fail("nic: virtio: queue %u does not exist (queue_size 0)", index);
		return -1;
	}
	if (c_r16(d, COMMON_Q_ENABLE)) {
		fail("nic: virtio: queue %u is enabled after a reset", index);
		return -1;
	}
	/* split rings are a power of two long; take the largest one that
	 * fits both the device's maximum and ours */
	u16 size = want;
	while (size > max)
		size >>= 1;
	if (size < 2) {
		fail("nic: virtio: queue %u: queue_size %u is too small", index, max);
		return -1;
	}
	q->index = index;
	q->size = size;
	q->buf_size = buf_size;

	/* the three parts, each on its own page: more than the 16/2/4-byte
	 * alignment the spec asks for, and easy to look at in a dump */
	q->desc = dma_alloc(16ull * size, 4096);
	q->avail = dma_alloc(6 + 2ull * size, 4096);
	volatile u8 *used = dma_alloc(6 + 8ull * size, 4096);
	q->used_hdr = (volatile u16 *)used;
	q->used_ring = (volatile struct virtq_used_elem *)(used + 4);
	q->bufs = dma_alloc((u64)buf_size * size, 4096);
	q->avail_idx = 0;
	q->last_used = 0;
	/* avail->flags stays 0: interrupt us for every used buffer */

	for (u16 i = 0; i < size; i++) {
		q->desc[i].addr = dma_addr(q->bufs + (u64)buf_size * i);
		q->desc[i].len = buf_size;
		q->desc[i].flags = 0;
		q->desc[i].next = 0;
	}

	c_w16(d, COMMON_Q_SIZE, size);
	c_w64(d, COMMON_Q_DESCLO, dma_addr(q->desc));
	c_w64(d, COMMON_Q_AVAILLO, dma_addr((const void *)q->avail));
	c_w64(d, COMMON_Q_USEDLO, dma_addr((const void *)used));

	if (d->use_msix) {
		/* both queues share MSI-X entry 0; the device answers with
		 * NO_VECTOR when it cannot take it (4.1.5.1.2) */
		c_w16(d, COMMON_Q_MSIX, 0);
		u16 v = c_r16(d, COMMON_Q_MSIX);
		if (v != 0) {
			fail("nic: virtio: queue %u refused MSI-X vector 0 (reads 0x%x)", index, v);
			return -1;
		}
	} else {
		c_w16(d, COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
	}

	/* the doorbell: cap.offset + queue_notify_off * multiplier, which
	 * must leave room for the 16-bit write inside the structure */
	u64 noff = (u64)c_r16(d, COMMON_Q_NOFF) * vn->notify_mult;
	if (noff + 2 > vn->notify.len) {
		fail("nic: virtio: queue %u doorbell at +0x%lx is outside the notify structure (%u bytes)",
		     index, noff, vn->notify.len);
		return -1;
	}
	q->notify_off = vn->notify.off + (u32)noff;

	c_w16(d, COMMON_Q_ENABLE, 1);
	return 0;
}

/*
 * The next used entry of q, checked: its id names a descriptor the device
 * owns. Returns 1 with the id and length, 0 when the device has returned nothing
 * new, -1 after fail().
 */
static int vn_next_used(struct vn_queue *q, const char *what, u16 *id, u32 *len)
{
	u16 used_idx = q->used_hdr[1];
	if (used_idx == q->last_used)
		return 0;
	/* more entries than we ever offered is a device writing garbage */
	if ((u16)(used_idx - q->last_used) > q->size) {
		fail("nic: virtio: %s used index %u runs %u ahead of %u (ring of %u)", what, used_idx,
		     (u16)(used_idx - q->last_used), q->last_used, q->size);
		return -1;
	}
	barrier(); /* read the entry only after the index that published it */
	volatile struct virtq_used_elem *e = &q->used_ring[q->last_used & (q->size - 1)];
	u32 eid = e->id;
	*len = e->len;
	if (eid >= q->size) {
		fail("nic: virtio: %s used entry %u names descriptor %u (ring of %u)", what,
		     q->last_used, eid, q->size);
		return -1;
	}
	if (!q->busy[eid]) {
		fail("nic: virtio: %s used entry %u returns descriptor %u, which the device does not own",
		     what, q->last_used, eid);
		return -1;
	}
	q->busy[eid] = 0;
	q->last_used++;
	*id = (u16)eid;
	return 1;
}

/* ---- the driver ----------------------------------------------------------------------------- */

static int vn_init(struct nic_dev *d)
{
	struct vn *vn = &vn_state;
	memset(vn, 0, sizeof(*vn));
	d->priv = vn;

	if (vn_find_caps(d, vn))
		return -1;

	/* 3.1.1: reset, then wait for the device to say it is done */
	c_w8(d, COMMON_STATUS, 0);
	for (u32 i = 0; c_r8(d, COMMON_STATUS) != 0; i++) {
		if (i == 100000) {
			fail("nic: virtio: device_status stays 0x%x after a reset",
			     c_r8(d, COMMON_STATUS));
			return -1;
		}
		udelay(10);
	}
	u8 status = S_ACKNOWLEDGE;
	c_w8(d, COMMON_STATUS, status);
	status |= S_DRIVER;
	c_w8(d, COMMON_STATUS, status);

	c_w32(d, COMMON_DFSELECT, 0);
	u64 offered = c_r32(d, COMMON_DF);
	c_w32(d, COMMON_DFSELECT, 1);
	offered |= (u64)c_r32(d, COMMON_DF) << 32;
	if (!(offered & F_VERSION_1)) {
		fail("nic: virtio: device does not offer VIRTIO_F_VERSION_1 (features 0x%lx)", offered);
		c_w8(d, COMMON_STATUS, status | S_FAILED);
		return -1;
	}
	/* TSO is only offered together with CSUM, and needs it (5.1.3.1) */
	u64 want = F_VERSION_1 | F_MAC | F_CSUM | F_GUEST_CSUM;
	if (offered & F_CSUM)
		want |= F_HOST_TSO4;
	vn->features = offered & want;
	c_w32(d, COMMON_GFSELECT, 0);
	c_w32(d, COMMON_GF, (u32)vn->features);
	c_w32(d, COMMON_GFSELECT, 1);
	c_w32(d, COMMON_GF, (u32)(vn->features >> 32));
	status |= S_FEATURES_OK;
	c_w8(d, COMMON_STATUS, status);
	if (!(c_r8(d, COMMON_STATUS) & S_FEATURES_OK)) {
		fail("nic: virtio: device refused features 0x%lx (offered 0x%lx)", vn->features,
		     offered);
		c_w8(d, COMMON_STATUS, status | S_FAILED);
		return -1;
	}

	u16 numq = c_r16(d, COMMON_NUMQ);
	if (numq < 2) {
		fail("nic: virtio: %u queues, need receiveq1 and transmitq1", numq);
		return -1;
	}

	if (vn->features & F_MAC) {
		/* 4.1.4.3.1: reread until config_generation holds still, so
		 * the six bytes come from one version of the config */
		u8 gen, gen2;
		int tries = 0;
		do {
			if (++tries > 100) {
				fail("nic: virtio: config_generation keeps changing");
				return -1;
			}
			gen = c_r8(d, COMMON_CFGGEN);
			for (int i = 0; i < 6; i++)
				d->mac[i] = bar_r8(d, vn->device.bar, vn->device.off + i);
			gen2 = c_r8(d, COMMON_CFGGEN);
		} while (gen != gen2);
	} else {
		/* no address from the device: a locally administered one */
		static const u8 local[6] = { 0x02, 0x00, 0x00, 0x7e, 0x57, 0x01 };
		memcpy(d->mac, local, 6);
	}

	/* sizes: what nic.c asks for (0: nothing in particular), within what
	 * this driver supports */
	if (d->max_frame < VN_STD_FRAME)
		d->max_frame = VN_STD_FRAME;
	if (d->max_frame > VN_MAX_FRAME)
		d->max_frame = VN_MAX_FRAME;
	d->caps = 0;
	d->max_tso = 0;
	if (vn->features & F_CSUM)
		d->caps |= NIC_CAP_TX_CSUM;
	if (vn->features & F_HOST_TSO4) {
		d->caps |= NIC_CAP_TSO;
		d->max_tso = VN_MAX_TSO;
	}
	if (vn->features & F_GUEST_CSUM)
		d->caps |= NIC_CAP_RX_CSUM;

	/* a received frame may carry a tag the device does not strip; a
	 * frame we send may have been tagged by nic.c */
	u32 rx_buf = (NET_HDR_LEN + d->max_frame + VLAN_HLEN + 63) & ~63u;
	u32 tx_big = (NET_HDR_LEN + d->max_tso + VLAN_HLEN + 63) & ~63u;

	if (d->use_msix) {
		nic_msix_vector(d, 0);
		/* the link status is not negotiated: no config interrupts */
		c_w16(d, COMMON_MSIX, VIRTIO_MSI_NO_VECTOR);
	}
	if (vn_setup_queue(d, &vn->rx, RX_QUEUE, RX_RING, rx_buf) ||
	    vn_setup_queue(d, &vn->tx, TX_QUEUE, TX_RING, rx_buf))
		return -1;

	/* every receive buffer goes to the device; the device may only
	 * write them (descriptors of a receive queue are write-only) */
	for (u16 i = 0; i < vn->rx.size && !vn_rx_offer_none; i++) {
		vn->rx.desc[i].flags = VIRTQ_DESC_F_WRITE;
		vn_offer(&vn->rx, i);
	}
	vn_publish(&vn->rx);
	struct vn_queue *tq = &vn->tx;
	if (tx_big > tq->buf_size) {
		/* the last descriptors get the big buffers (their small ones
		 * stay unused); a ring has at least 2 entries, so one is big */
		tq->nbig = tq->size / 2 < TX_BIG ? tq->size / 2 : TX_BIG;
		tq->big_size = tx_big;
		tq->big = dma_alloc((u64)tx_big * tq->nbig, 4096);
		for (u16 i = 0; i < tq->nbig; i++) {
			u16 id = (u16)(tq->size - tq->nbig + i);
			tq->desc[id].addr = dma_addr(tq->big + (u64)tx_big * i);
			tq->desc[id].len = tx_big;
			tq->free_big[tq->nfree_big++] = id;
		}
	}
	for (u16 i = 0; i < tq->size - tq->nbig; i++)
		tq->free[tq->nfree++] = (u16)(tq->size - tq->nbig - 1 - i);

	status |= S_DRIVER_OK;
	c_w8(d, COMMON_STATUS, status);
	u8 now = c_r8(d, COMMON_STATUS);
	if (now & (S_NEEDS_RESET | S_FAILED) || !(now & S_DRIVER_OK)) {
		fail("nic: virtio: device_status 0x%x after DRIVER_OK (features 0x%lx)", now,
		     vn->features);
		return -1;
	}
	/* notifications only count from DRIVER_OK on (3.1.1): tell the
	 * device about the receive buffers now */
	vn_kick(d, &vn->rx);

	kprintf("nic: virtio: features offered 0x%lx acked 0x%lx, rx %u x %u B, tx %u x %u B + %u x %u B\n",
		offered, vn->features, vn->rx.size, rx_buf, tq->size - tq->nbig, rx_buf, tq->nbig,
		tq->big_size);
	return 0;
}

static int vn_xmit(struct nic_dev *d, const struct nic_tx *t)
{
	struct vn *vn = d->priv;
	struct vn_queue *q = &vn->tx;
	int tso = (t->flags & NIC_TX_TSO) != 0;
	int csum = tso || (t->flags & NIC_TX_CSUM);

	if (t->flags & ~(NIC_TX_CSUM | NIC_TX_TSO)) {
		fail("nic: virtio: tx flags 0x%x not offered (caps 0x%x)", t->flags, d->caps);
		return -1;
	}
	if ((tso && !(d->caps & NIC_CAP_TSO)) || (csum && !(d->caps & NIC_CAP_TX_CSUM))) {
		fail("nic: virtio: tx flags 0x%x without the offload (caps 0x%x)", t->flags, d->caps);
		return -1;
	}
	u32 limit = (tso ? d->max_tso : d->max_frame) + VLAN_HLEN;
	u32 room = q->nbig ? q->big_size : q->buf_size;
	if (t->len < ETH_HLEN || t->len > limit || NET_HDR_LEN + t->len > room) {
		fail("nic: virtio: tx frame of %u bytes (limit %u)", t->len, limit);
		return -1;
	}
	if (csum && (u32)t->csum_start + t->csum_offset + 2 > t->len) {
		fail("nic: virtio: tx checksum at %u+%u outside the %u-byte frame", t->csum_start,
		     t->csum_offset, t->len);
		return -1;
	}
	if (tso && (t->mss == 0 || t->l4_proto != 6 || t->hdr_len > t->len ||
		    t->hdr_len <= t->csum_start)) {
		fail("nic: virtio: tso with mss %u, proto %u, hdr_len %u (csum_start %u, len %u)",
		     t->mss, t->l4_proto, t->hdr_len, t->csum_start, t->len);
		return -1;
	}

	/* completions come back in order with tapir, but the spec lets a
	 * device finish buffers out of order: keep a free list */
	u16 id;
	if (NET_HDR_LEN + t->len <= q->buf_size && q->nfree)
		id = q->free[--q->nfree];
	else if (q->nfree_big)
		id = q->free_big[--q->nfree_big];
	else
		return 0;
	/* from our own bookkeeping, not from the descriptor in shared memory */
	u16 first_big = (u16)(q->size - q->nbig);
	u8 *buf = id < first_big ? q->bufs + (u64)q->buf_size * id
				 : q->big + (u64)q->big_size * (id - first_big);

	struct net_hdr h = { 0 };
	if (csum) {
		/* the L4 checksum field holds the pseudo-header sum: the device
		 * sums from csum_start to the end and stores it there */
		h.flags = HDR_F_NEEDS_CSUM;
		h.csum_start = t->csum_start;
		h.csum_offset = t->csum_offset;
	}
	if (tso) {
		/* as Linux hands TSO to the device: the headers of the whole
		 * packet, each segment carries mss payload bytes */
		h.gso_type = HDR_GSO_TCPV4;
		h.gso_size = t->mss;
		h.hdr_len = t->hdr_len;
	}
	memcpy(buf, &h, NET_HDR_LEN);
	copy(buf + NET_HDR_LEN, t->frame, t->len);

	q->desc[id].addr = dma_addr(buf);
	q->desc[id].len = NET_HDR_LEN + t->len;
	q->desc[id].flags = 0; /* device-readable, no chain */
	vn_offer(q, id);
	vn_publish(q);
	vn_kick(d, q);
	return 1;
}

static int vn_tx_reap(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *q = &vn->tx;
	int done = 0;
	u16 id;
	u32 len;
	int r;

	/* the used length of a transmit buffer means nothing (the device
	 * writes none of it): only the id matters */
	while ((r = vn_next_used(q, "tx", &id, &len)) == 1) {
		if (id >= q->size - q->nbig)
			q->free_big[q->nfree_big++] = id;
		else
			q->free[q->nfree++] = id;
		done++;
	}
	return r < 0 ? -1 : done;
}

/* Completes a partial checksum the device left for us (NEEDS_CSUM): the
 * ones' complement sum from `start` to the end of the frame, stored at
 * start + off. The field already holds the pseudo-header sum. */
static void vn_complete_csum(u8 *f, u32 len, u32 start, u32 off)
{
	u32 sum = 0;
	for (u32 i = start; i + 1 < len; i += 2)
		sum += (u32)f[i] << 8 | f[i + 1];
	if ((len - start) & 1)
		sum += (u32)f[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	u16 c = (u16)~sum;
	/* UDP sends an all-zero result as 0xffff (0 means "no checksum") */
	if (c == 0)
		c = 0xffff;
	f[start + off] = (u8)(c >> 8);
	f[start + off + 1] = (u8)c;
}

static int vn_recv(struct nic_dev *d, u8 *out, u32 cap, struct nic_rx_info *info)
{
	struct vn *vn = d->priv;
	struct vn_queue *q = &vn->rx;

	for (;;) {
		u16 id;
		u32 len;
		int r = vn_next_used(q, "rx", &id, &len);
		if (r <= 0)
			return r;
		u8 *buf = q->bufs + (u64)q->buf_size * id;

		if (len == 0) {
			/* tapir returns a buffer empty when a frame did not fit
			 * it (or the chain was unusable): the frame is lost, the
			 * echo check will say so; recycle and go on */
			if (vn->rx_dropped++ == 0)
				kprintf("nic: virtio: the device returned rx buffer %u empty (a frame too big for %u bytes?)\n",
					id, q->buf_size);
			vn_offer(q, id);
			vn_publish(q);
			vn_kick(d, q);
			continue;
		}
		if (len > q->buf_size) {
			fail("nic: virtio: rx used length %u exceeds the %u-byte buffer %u", len,
			     q->buf_size, id);
			return -1;
		}
		if (len <= NET_HDR_LEN) {
			fail("nic: virtio: rx used length %u leaves no frame after the %u-byte header",
			     len, NET_HDR_LEN);
			return -1;
		}
		u32 flen = len - NET_HDR_LEN;
		if (flen > cap) {
			fail("nic: virtio: rx frame of %u bytes, caller's buffer holds %u", flen, cap);
			return -1;
		}

		struct net_hdr h;
		memcpy(&h, buf, NET_HDR_LEN);
		/* 5.1.6.4: one buffer per frame without MRG_RXBUF */
		if (h.num_buffers != 1) {
			fail("nic: virtio: rx num_buffers %u without MRG_RXBUF (must be 1)",
			     h.num_buffers);
			return -1;
		}
		/* no GUEST_TSO* negotiated: the device must not merge */
		if (h.gso_type != HDR_GSO_NONE) {
			fail("nic: virtio: rx gso_type %u, no GUEST_TSO negotiated", h.gso_type);
			return -1;
		}
		if (h.flags & ~(HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID)) {
			fail("nic: virtio: rx header flags 0x%x", h.flags);
			return -1;
		}
		if ((h.flags & (HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID)) && !(vn->features & F_GUEST_CSUM)) {
			fail("nic: virtio: rx header flags 0x%x without GUEST_CSUM", h.flags);
			return -1;
		}
		copy(out, buf + NET_HDR_LEN, flen);

		int good = 0;
		if (h.flags & HDR_F_NEEDS_CSUM) {
			/* a frame from a local sender whose checksum nobody
			 * computed: finish it, then it is as good as verified */
			if ((u32)h.csum_start + h.csum_offset + 2 > flen) {
				fail("nic: virtio: rx NEEDS_CSUM at %u+%u outside the %u-byte frame",
				     h.csum_start, h.csum_offset, flen);
				return -1;
			}
			vn_complete_csum(out, flen, h.csum_start, h.csum_offset);
			good = 1;
		}
		if (h.flags & HDR_F_DATA_VALID)
			good = 1;
		if (info) {
			info->vlan_stripped = 0;
			info->vlan_tci = 0;
			info->csum_good = good;
		}

		/* the buffer goes straight back to the device; the descriptor
		 * still describes it (the device does not write descriptors) */
		vn_offer(q, id);
		vn_publish(q);
		vn_kick(d, q);
		return (int)flen;
	}
}

static void vn_irq(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	if (d->use_msix) {
		/* an MSI-X message needs no acknowledging; with one vector for
		 * both queues it means "look at the queues" */
		d->irq_causes |= ISR_QUEUE;
		return;
	}
	/* reading the ISR clears it and drops the INTx line (4.1.4.5) */
	d->irq_causes |= bar_r8(d, vn->isr.bar, vn->isr.off);
}

/* ---- test=hostile (hostile.c) ------------------------------------------------------------ */

/*
 * The cases write descriptors straight into the rings, as a guest that
 * means harm would: the TX ring is theirs (the NIC sends nothing else), and
 * on the RX ring they rewrite descriptors the device has not taken yet
 * (tapir takes receive chains only when a frame comes). Every case checks
 * what the spec asks of the device where it says something: a chain the
 * device cannot use is still returned (2.7.7: the device may also set
 * NEEDS_RESET), a ring that cannot be followed is left alone, and a reset
 * makes the device usable again.
 */

#define F_NEXT 1

static void hv_desc(struct vn_queue *q, u16 id, u64 addr, u32 len, u16 flags, u16 next)
{
	q->desc[id].addr = addr;
	q->desc[id].len = len;
	q->desc[id].flags = flags;
	q->desc[id].next = next;
}

/* Offers chain `head` on q and waits up to 2 s for its used entry:
 * returns the used length, or -1 (after fail()) when it did not come. */
static int hv_round_trip(struct nic_dev *d, struct vn_queue *q, u16 head, const char *what)
{
	vn_offer(q, head);
	vn_publish(q);
	vn_kick(d, q);
	if (!hostile_wait_change16(&q->used_hdr[1], q->last_used, 2000)) {
		fail("hostile: virtio: %s: the chain was not returned within 2 s", what);
		return -1;
	}
	u16 id;
	u32 len;
	if (vn_next_used(q, "tx", &id, &len) != 1)
		return -1;
	if (id != head) {
		fail("hostile: virtio: %s: used entry names %u, not the head %u", what, id, head);
		return -1;
	}
	return (int)len;
}

/* Resets and sets the device up again with no receive buffers offered:
 * the case offers its own, so none was taken before it wrote them. */
static int hv_fresh_rx(struct nic_dev *d)
{
	vn_rx_offer_none = 1;
	int r = vn_init(d);
	vn_rx_offer_none = 0;
	return r;
}

/* Offers RX chains `heads` (n of them) and tells the device. */
static void hv_offer_rx(struct nic_dev *d, const u16 *heads, u16 n)
{
	struct vn *vn = d->priv;
	for (u16 i = 0; i < n; i++)
		vn_offer(&vn->rx, heads[i]);
	vn_publish(&vn->rx);
	vn_kick(d, &vn->rx);
}

/* A valid header + frame in the buffer of TX descriptor 0's slot. */
static u64 hv_frame(struct nic_dev *d, struct vn_queue *q, u32 *len)
{
	u8 *buf = q->bufs;
	memset(buf, 0, NET_HDR_LEN);
	*len = NET_HDR_LEN + hostile_arp_request(buf + NET_HDR_LEN, d->mac);
	return dma_addr(buf);
}

/* Sends one ARP request and waits up to 2 s for RX used entries to reach
 * `want` more: the gateway's reply fills the receive ring's next chains. */
static int hv_provoke_rx(struct nic_dev *d, u16 want, const char *what)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx, *r = &vn->rx;
	u32 len;
	u16 head = (u16)(t->size - 1);
	u64 frame = hv_frame(d, t, &len);
	hv_desc(t, head, frame, len, 0, 0);
	if (hv_round_trip(d, t, head, what) < 0)
		return -1;
	for (u32 ms = 0; (u16)(r->used_hdr[1] - r->last_used) < want; ms++) {
		if (ms == 2000) {
			fail("hostile: virtio: %s: %u of %u receive chains returned in 2 s", what,
			     (u16)(r->used_hdr[1] - r->last_used), want);
			return -1;
		}
		udelay(1000);
	}
	return 0;
}

/* The next RX used entry must be `id` with a length in [min, max]. */
static void hv_expect_rx(struct vn_queue *r, u16 id, u32 min, u32 max, const char *what)
{
	u16 got;
	u32 len;
	if (vn_next_used(r, "rx", &got, &len) != 1)
		return;
	if (got != id || len < min || len > max)
		fail("hostile: virtio: %s: rx used entry %u with %u bytes, want %u with %u..%u", what,
		     got, len, id, min, max);
}

static void hv_reset_and_check(struct nic_dev *d, const char *what)
{
	hostile_check_alive(d, what);
}

static void hv_dma_outside_ram(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx, *r = &vn->rx;
	u64 mmio = d->bar[vn->common.bar] + vn->common.off;
	u32 len;
	u64 hdr = hv_frame(d, t, &len);
	/* header in RAM, frame beyond it; all beyond; wrapping; in MMIO */
	hv_desc(t, 0, hdr, NET_HDR_LEN, F_NEXT, 1);
	hv_desc(t, 1, HOSTILE_ABOVE_RAM, 60, 0, 0);
	if (hv_round_trip(d, t, 0, "frame beyond RAM") != 0)
		fail("hostile: virtio: a chain beyond RAM came back with a length");
	hv_desc(t, 2, HOSTILE_ABOVE_RAM, 4096, 0, 0);
	hv_round_trip(d, t, 2, "chain beyond RAM");
	hv_desc(t, 3, HOSTILE_WRAPS, 0x2000, 0, 0);
	hv_round_trip(d, t, 3, "buffer wrapping the address space");
	hv_desc(t, 4, mmio, 64, 0, 0);
	hv_round_trip(d, t, 4, "buffer in the device's own MMIO");
	/* the descriptor table itself as a frame: RAM, so it is sent */
	hv_desc(t, 5, dma_addr(t->desc), 16 * 8, 0, 0);
	hv_round_trip(d, t, 5, "the descriptor table as a frame");

	/* receive: beyond RAM, in MMIO, then a buffer over the avail ring
	 * itself (the device overwrites the index the driver publishes) */
	if (hv_fresh_rx(d))
		return;
	t = &vn->tx, r = &vn->rx;
	hv_desc(r, 0, HOSTILE_ABOVE_RAM, 2048, VIRTQ_DESC_F_WRITE, 0);
	hv_desc(r, 1, mmio, 2048, VIRTQ_DESC_F_WRITE, 0);
	hv_desc(r, 2, dma_addr((const void *)r->avail), 128, VIRTQ_DESC_F_WRITE, 0);
	static const u16 three[] = { 0, 1, 2 };
	hv_offer_rx(d, three, 3);
	if (hv_provoke_rx(d, 3, "rx buffers outside RAM") == 0) {
		hv_expect_rx(r, 0, 0, 0, "rx buffer beyond RAM");
		hv_expect_rx(r, 1, 0, 0, "rx buffer in MMIO");
		hv_expect_rx(r, 2, NET_HDR_LEN + 42, 128, "rx buffer over the avail ring");
	}
	/* rings themselves outside RAM: DRIVER_OK must end in NEEDS_RESET */
	c_w8(d, COMMON_STATUS, 0);
	while (c_r8(d, COMMON_STATUS) != 0)
		udelay(10);
	c_w8(d, COMMON_STATUS, S_ACKNOWLEDGE | S_DRIVER);
	c_w32(d, COMMON_GFSELECT, 0);
	c_w32(d, COMMON_GF, (u32)vn->features);
	c_w32(d, COMMON_GFSELECT, 1);
	c_w32(d, COMMON_GF, (u32)(vn->features >> 32));
	c_w8(d, COMMON_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	for (u16 qi = 0; qi < 2; qi++) {
		c_w16(d, COMMON_Q_SELECT, qi);
		c_w16(d, COMMON_Q_SIZE, 16);
		c_w64(d, COMMON_Q_DESCLO, qi ? mmio : HOSTILE_ABOVE_RAM);
		c_w64(d, COMMON_Q_AVAILLO, HOSTILE_WRAPS);
		c_w64(d, COMMON_Q_USEDLO, HOSTILE_ABOVE_RAM + 0x1000);
		c_w16(d, COMMON_Q_ENABLE, 1);
	}
	c_w8(d, COMMON_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	u8 st = c_r8(d, COMMON_STATUS);
	if (!(st & S_NEEDS_RESET))
		fail("hostile: virtio: rings outside RAM: device_status 0x%x without NEEDS_RESET", st);
	hv_reset_and_check(d, "after rings outside RAM");
}

static void hv_chain_lengths(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx, *r = &vn->rx;
	u32 len;
	u64 hdr = hv_frame(d, t, &len);
	/* zero-length descriptors, alone and after a header */
	hv_desc(t, 0, hdr, 0, 0, 0);
	hv_round_trip(d, t, 0, "zero-length chain");
	hv_desc(t, 1, hdr, NET_HDR_LEN, F_NEXT, 2);
	hv_desc(t, 2, hdr, 0, 0, 0);
	hv_round_trip(d, t, 1, "header then zero bytes");
	/* 15 descriptors of 8 KiB: 120 KiB, over any frame */
	u8 *big = dma_alloc(0x2000, 4096);
	for (u16 i = 0; i < 15; i++)
		hv_desc(t, i, dma_addr(big), 0x2000, i < 14 ? F_NEXT : 0, (u16)(i + 1));
	hv_round_trip(d, t, 0, "a 120 KiB chain");
	/* the largest lengths a descriptor can claim */
	hv_desc(t, 0, hdr, 0xffffffffu, 0, 0);
	hv_round_trip(d, t, 0, "a 4 GiB descriptor");

	/* receive: an empty chain first (returned empty), then one chain of
	 * 15 x 8 KiB, which takes the reply */
	if (hv_fresh_rx(d))
		return;
	t = &vn->tx, r = &vn->rx;
	hv_desc(r, 0, dma_addr(r->bufs), 0, VIRTQ_DESC_F_WRITE, 0);
	u8 *rbig = dma_alloc(15 * 0x2000, 4096);
	for (u16 i = 1; i < 16; i++)
		hv_desc(r, i, dma_addr(rbig) + 0x2000ull * (i - 1), 0x2000,
			VIRTQ_DESC_F_WRITE | (i < 15 ? F_NEXT : 0), (u16)(i + 1));
	static const u16 two[] = { 0, 1 };
	hv_offer_rx(d, two, 2);
	if (hv_provoke_rx(d, 2, "rx zero-length and 120 KiB chains") == 0) {
		hv_expect_rx(r, 0, 0, 0, "zero-length rx chain");
		hv_expect_rx(r, 1, NET_HDR_LEN + 42, NET_HDR_LEN + 64, "120 KiB rx chain");
	}
	hv_reset_and_check(d, "after odd chain lengths");
}

static void hv_descriptor_loop(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx, *r = &vn->rx;
	u32 len;
	u64 hdr = hv_frame(d, t, &len);
	hv_desc(t, 0, hdr, len, F_NEXT, 0); /* itself */
	hv_round_trip(d, t, 0, "a descriptor chained to itself");
	hv_desc(t, 1, hdr, len, F_NEXT, 2);
	hv_desc(t, 2, hdr, len, F_NEXT, 1); /* two in a circle */
	hv_round_trip(d, t, 1, "two descriptors in a circle");
	hv_desc(t, 3, hdr, len, F_NEXT, 200); /* next beyond the table */
	hv_round_trip(d, t, 3, "next beyond the table");
	/* receive: a loop first, returned empty; the reply lands in the next */
	if (hv_fresh_rx(d))
		return;
	t = &vn->tx, r = &vn->rx;
	hv_desc(r, 0, dma_addr(r->bufs), 64, VIRTQ_DESC_F_WRITE | F_NEXT, 0);
	hv_desc(r, 1, dma_addr(r->bufs + r->buf_size), r->buf_size, VIRTQ_DESC_F_WRITE, 0);
	static const u16 two[] = { 0, 1 };
	hv_offer_rx(d, two, 2);
	if (hv_provoke_rx(d, 2, "rx descriptor loop") == 0) {
		hv_expect_rx(r, 0, 0, 0, "looping rx chain");
		hv_expect_rx(r, 1, NET_HDR_LEN + 42, r->buf_size, "the chain after the loop");
	}
	hv_reset_and_check(d, "after descriptor loops");
}

static void hv_unbounded_virtqueue(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx;
	u32 len;
	u64 frame = hv_frame(d, t, &len);
	hv_desc(t, 0, frame, len, 0, 0);
	/* one real entry, and an index that claims size + 7 more */
	vn_offer(t, 0);
	t->avail[1] = (u16)(t->avail_idx + t->size + 7);
	mb();
	bar_w16(d, vn->notify.bar, t->notify_off, t->index);
	if (hostile_wait_change16(&t->used_hdr[1], t->last_used, 500))
		fail("hostile: virtio: an avail index beyond the ring was followed");
	/* the same on receive, then traffic that would need it */
	vn->rx.avail[1] = (u16)(vn->rx.avail_idx + 3 * vn->rx.size);
	mb();
	bar_w16(d, vn->notify.bar, vn->rx.notify_off, vn->rx.index);
	udelay(200000);
	kprintf("hostile: virtio: rings with runaway indices left alone\n");
	hv_reset_and_check(d, "after runaway avail indices");
}

static void hv_floods(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	struct vn_queue *t = &vn->tx;
	/* doorbells with nothing new */
	for (u32 i = 0; i < 100000; i++) {
		bar_w16(d, vn->notify.bar, t->notify_off, t->index);
		bar_w16(d, vn->notify.bar, vn->rx.notify_off, vn->rx.index);
	}
	/* frames as fast as the ring takes them; replies are never read */
	u8 f[60];
	hostile_arp_request(f, d->mac);
	struct nic_tx tx = { .frame = f, .len = 60 };
	u32 sent = 0;
	for (u32 spins = 0; sent < 5000 && spins < 10000000; spins++) {
		vn_tx_reap(d);
		int r = vn_xmit(d, &tx);
		if (r < 0)
			return;
		sent += (u32)r;
	}
	if (sent < 5000)
		fail("hostile: virtio: the flood stalled after %u frames", sent);
	kprintf("hostile: virtio: 200000 doorbells and %u frames\n", sent);
	hv_reset_and_check(d, "after the floods");
}

static void hv_random_registers(struct nic_dev *d)
{
	struct vn *vn = d->priv;
	const struct vn_region *reg[4] = { &vn->common, &vn->notify, &vn->isr, &vn->device };
	for (u32 i = 0; i < 20000; i++) {
		u64 x = hostile_rng();
		const struct vn_region *g = reg[x & 3];
		u32 off = g->off + (u32)((x >> 8) % (g->len ? g->len : 1));
		u32 v = (u32)(x >> 32);
		switch ((x >> 2) & 3) {
		case 0:
			bar_w8(d, g->bar, off, (u8)v);
			break;
		case 1:
			bar_w16(d, g->bar, off & ~1u, (u16)v);
			break;
		case 2:
			bar_w32(d, g->bar, off & ~3u, v);
			break;
		default:
			(void)bar_r32(d, g->bar, off & ~3u);
		}
	}
	kprintf("hostile: virtio: 20000 random register accesses\n");
	hv_reset_and_check(d, "after random register writes");
}

static int vn_hostile(struct nic_dev *d, const char *name, u32 len)
{
	if (word_is(name, len, "dma-outside-ram"))
		hv_dma_outside_ram(d);
	else if (word_is(name, len, "chain-lengths"))
		hv_chain_lengths(d);
	else if (word_is(name, len, "descriptor-loop"))
		hv_descriptor_loop(d);
	else if (word_is(name, len, "unbounded-virtqueue"))
		hv_unbounded_virtqueue(d);
	else if (word_is(name, len, "floods"))
		hv_floods(d);
	else if (word_is(name, len, "random-registers"))
		hv_random_registers(d);
	else
		return 0;
	return 1;
}

const struct nic_driver virtio_net_driver = {
	.name = "virtio",
	.vendor = 0x1af4,
	.device = 0x1041,
	.init = vn_init,
	.xmit = vn_xmit,
	.tx_reap = vn_tx_reap,
	.recv = vn_recv,
	.irq = vn_irq,
	.hostile = vn_hostile,
};
