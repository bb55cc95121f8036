/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tapir test kernel: the NIC data-path test (`test=nic`) and the interface
 * between its common part (nic.c) and the minimal drivers (virtio_net.c,
 * e1000.c, rtl8139.c).
 *
 * A driver only moves frames: nic.c finds the PCI function, maps its BARs,
 * routes its interrupt, builds the frames, checks the echoes and reports.
 */
#ifndef TK_NIC_H
#define TK_NIC_H

#include "kernel.h"

/* The one interrupt vector the NIC test uses (MSI-X or IOAPIC). */
#define NIC_VECTOR 0x40

/* ---- offload capabilities a driver offers for this run (nic_dev.caps) ---- */
#define NIC_CAP_TX_CSUM (1u << 0) /* completes a partial checksum (nic_tx.csum_*) */
#define NIC_CAP_TSO (1u << 1)     /* segments a TCP/IPv4 packet (nic_tx.mss) */
#define NIC_CAP_VLAN_TX (1u << 2) /* inserts the 802.1Q tag of nic_tx.vlan_tci */
#define NIC_CAP_VLAN_RX (1u << 3) /* strips 802.1Q tags into nic_rx_info */
#define NIC_CAP_RX_CSUM (1u << 4) /* reports verified TCP/UDP checksums */

/* ---- nic_tx.flags ---- */
#define NIC_TX_CSUM (1u << 0) /* the L4 checksum at csum_start + csum_offset holds the
			       * pseudo-header sum; the NIC completes it */
#define NIC_TX_TSO (1u << 1)  /* TCP/IPv4 packet of any size: the NIC cuts it into
			       * segments of mss payload bytes (hdr_len = L2+L3+L4 headers).
			       * As Linux hands it to a driver: the IPv4 total length and
			       * header checksum are those of the whole packet, and the TCP
			       * checksum field holds the folded pseudo-header sum over the
			       * whole TCP length (not complemented). A chip that wants
			       * something else (e1000: no length in the pseudo-header sum)
			       * gets it from its driver, in the driver's own copy. */
#define NIC_TX_VLAN (1u << 2) /* insert the tag vlan_tci (TPID 0x8100) */

/* One frame to send. `frame` is untagged when NIC_TX_VLAN is set. */
struct nic_tx {
	const u8 *frame;
	u32 len;
	u32 flags;
	u16 csum_start;  /* offset of the L4 header from the frame's start */
	u16 csum_offset; /* offset of the checksum field from csum_start */
	u16 ip_start;    /* offset of the IPv4 header (CSUM and TSO) */
	u16 hdr_len;     /* TSO: Ethernet + IPv4 + TCP header bytes */
	u16 mss;         /* TSO: payload bytes per segment */
	u16 vlan_tci;    /* NIC_TX_VLAN */
	u8 l4_proto;     /* 6 (TCP) or 17 (UDP) for CSUM/TSO */
};

/* What a driver says about a received frame. */
struct nic_rx_info {
	int vlan_stripped; /* the NIC removed a tag: vlan_tci is it */
	u16 vlan_tci;
	int csum_good; /* the NIC verified the TCP/UDP checksum */
};

struct nic_dev;

struct nic_driver {
	const char *name; /* as in the cmdline: virtio, e1000, rtl8139, rtl8139cp */
	u16 vendor, device;
	/*
	 * Resets the device, reads its MAC into d->mac, sets up the rings
	 * with buffers for frames of up to d->max_frame bytes, sets d->caps
	 * (only what it will really use) and d->max_frame/max_tso, and
	 * enables its interrupt causes: through MSI-X entry 0 with
	 * nic_msix_vector() when d->use_msix, else INTx (already routed to
	 * NIC_VECTOR). Returns 0, or -1 after fail().
	 */
	int (*init)(struct nic_dev *d);
	/* Queues one frame: 1 queued, 0 no room now (call tx_reap and retry),
	 * -1 it can never be sent (after fail()). */
	int (*xmit)(struct nic_dev *d, const struct nic_tx *t);
	/* Reclaims transmitted descriptors; returns how many frames completed. */
	int (*tx_reap)(struct nic_dev *d);
	/* Copies the next received frame (without FCS) into buf and gives its
	 * buffer back to the NIC. Returns its length, 0 when none is waiting,
	 * -1 on a malformed descriptor (after fail()). */
	int (*recv)(struct nic_dev *d, u8 *buf, u32 cap, struct nic_rx_info *info);
	/* Interrupt context: reads and acknowledges the causes so that an
	 * INTx line drops. Must not touch the rings. */
	void (*irq)(struct nic_dev *d);
	/* test=hostile: runs case `name` (of `len` bytes) against the device,
	 * set up by init() with interrupts not routed, and checks what the
	 * device did with fail(). Returns 1, or 0 when the model has no such
	 * case. NULL: no cases. */
	int (*hostile)(struct nic_dev *d, const char *name, u32 len);
};

struct nic_dev {
	const struct nic_driver *drv;
	u8 slot;
	u64 bar[6];     /* addresses (memory BARs are below 4 GiB, mapped) */
	int bar_io[6];  /* 1: I/O port BAR */
	u8 gsi;         /* INTx GSI (config space interrupt line) */
	int use_msix;   /* irq=msix on the cmdline */
	u8 mac[6];
	u32 caps;       /* NIC_CAP_* */
	u32 max_frame;  /* largest untagged frame, no FCS, it sends and receives; on
			 * entry to init, what the test asks for (maxframe=): the
			 * driver lowers it to what it can do */
	u32 max_tso;    /* with NIC_CAP_TSO: largest packet given with NIC_TX_TSO */
	u16 vlan;       /* the VID of this run (0: no VLAN frames) */
	void *priv;     /* the driver's own state */
	volatile u32 irqs;       /* interrupts taken */
	volatile u32 irq_causes; /* the driver may OR cause bits in here */
};

/* ---- services nic.c and irq.c give the drivers ---- */

/* Zeroed memory for rings and buffers: physical == virtual, below 4 GiB,
 * `align` a power of two. Fails the test when RAM runs out. */
void *dma_alloc(u64 size, u64 align);
static inline u64 dma_addr(const void *p) { return (u64)(uintptr_t)p; }

u32 pci_cfg_read(u8 dev, u8 reg, int width);  /* bus 0, function 0 */
void pci_cfg_write(u8 dev, u8 reg, int width, u32 v);
/* Finds capability `id` of the function; 0 when absent. */
u8 pci_find_cap(u8 dev, u8 id);
/* Programs MSI-X table entry `entry` to deliver NIC_VECTOR to CPU 0,
 * unmasks it and enables MSI-X on the function. */
void nic_msix_vector(struct nic_dev *d, u16 entry);

/* Register access to BAR n (MMIO or I/O port). */
u8 bar_r8(struct nic_dev *d, int n, u32 off);
u16 bar_r16(struct nic_dev *d, int n, u32 off);
u32 bar_r32(struct nic_dev *d, int n, u32 off);
void bar_w8(struct nic_dev *d, int n, u32 off, u8 v);
void bar_w16(struct nic_dev *d, int n, u32 off, u16 v);
void bar_w32(struct nic_dev *d, int n, u32 off, u32 v);

static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* Spins for about `us` microseconds (TSC, calibrated roughly). */
void udelay(u32 us);

/* ---- irq.c ---- */
void irq_init(void);                       /* LAPIC on, IDT vector NIC_VECTOR */
void ioapic_route(u8 gsi, u8 vector);      /* level, active high, CPU 0 */
void irq_set_handler(void (*fn)(void *), void *arg);
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }

/* ---- nic.c, for test=hostile ---- */
/* The driver named by cmdline key `key`; fatal when missing or unknown. */
const struct nic_driver *nic_driver_named(const char *key);
/* Fills d (d->drv set) from the first function of its model, in slot `slot`
 * when slot >= 0, and enables its decoding and bus mastering; 0 if none. */
int nic_find(struct nic_dev *d, int slot);
/* test=nic on the function of cmdline key `model_key`'s model in `slot`
 * (-1: any); ends the test. */
NORETURN void nic_test_run(const char *model_key, int slot);

/* ---- hostile.c: what the cases share ---- */
u64 hostile_rng(void);                 /* deterministic PRNG */
/* An ARP request from 10.0.2.15 (mac) for the gateway 10.0.2.2 into f (60
 * bytes, returned): under net=user the reply is a frame to receive. */
u32 hostile_arp_request(u8 *f, const u8 *mac);
/* Guest-physical addresses a hostile driver hands the device. */
#define HOSTILE_ABOVE_RAM 0x3f000000ull          /* above the test's 64 MiB, not MMIO */
#define HOSTILE_WRAPS 0xfffffffffffff000ull      /* addr + len wraps around */
/* Sets d up again with its driver (which resets it first), sends an ARP
 * request to the gateway and fails unless the reply comes back. */
void hostile_check_alive(struct nic_dev *d, const char *what);
/* Spins (pausing) until *p != v or about `ms` ms pass; 1 when it changed. */
int hostile_wait_change16(volatile u16 *p, u16 v, u32 ms);

/* Drivers. */
extern const struct nic_driver virtio_net_driver;
extern const struct nic_driver e1000_driver;
extern const struct nic_driver rtl8139_driver;   /* normal mode (TSD/TSAD, RX ring) */
extern const struct nic_driver rtl8139cp_driver; /* C+ mode (descriptors) */

#endif
