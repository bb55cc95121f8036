//! C+ mode, driven as Linux's 8139cp drives it.

use std::sync::atomic::Ordering;

use tapir_net_backend::NetHdr;

use super::*;
use crate::rtl8139::cplus::Desc;
use crate::rtl8139::filter::fcs;

const RX_DESC: u64 = 0x40000;
const TX_DESC: u64 = 0x40400;
const HI_DESC: u64 = 0x40800;
const RX_BUFS: u64 = 0x50000;
const TX_BUFS: u64 = 0x100000;
const BIG_BUF: u64 = 0x200000;
const STATS: u64 = 0x41000;
const BUF_SZ: u32 = 1536;
/// 8139cp's cp_intr_mask.
const CP_INTR_MASK: u16 = 0x80ff;
/// 8139cp's cp_rx_intr_mask.
const CP_RX_INTR: u16 = INT_ROK | INT_RER | INT_RXOVW | INT_FOVW;
const MULRW: u16 = 1 << 3;

fn desc(n: &Nic, base: u64, i: u16) -> Desc {
    let b = n.read_mem(base + 16 * u64::from(i), 16);
    Desc::from_bytes(&b.try_into().unwrap())
}

fn set_desc(n: &Nic, base: u64, i: u16, d: Desc) {
    n.write_mem(base + 16 * u64::from(i), &d.to_bytes());
}

/// The driver's view of its rings.
struct Cp {
    rx_size: u16,
    rx_tail: u16,
    tx_size: u16,
    tx_head: u16,
    buf_sz: u32,
}

impl Cp {
    fn rx_buf(i: u16) -> u64 {
        RX_BUFS + 0x800 * u64::from(i)
    }

    /// cp_refill_rx for one descriptor.
    fn refill(&self, n: &Nic, i: u16) {
        let eor = if i == self.rx_size - 1 { DESC_EOR } else { 0 };
        let d = Desc {
            opts1: DESC_OWN | eor | self.buf_sz,
            opts2: 0,
            addr: Self::rx_buf(i),
        };
        set_desc(n, RX_DESC, i, d);
    }

    /// cp_rx_poll: frames (opts1, opts2, data without CRC) until a
    /// descriptor the chip owns, refilling as it goes.
    fn rx_poll(&mut self, n: &mut Nic) -> Vec<(u32, u32, Vec<u8>)> {
        n.w16(ISR, CP_RX_INTR);
        let mut out = Vec::new();
        loop {
            let d = desc(n, RX_DESC, self.rx_tail);
            if d.opts1 & DESC_OWN != 0 {
                break;
            }
            let len = (d.opts1 & RXD_LEN_MASK) as usize;
            let data = n.read_mem(d.addr, len.min(self.buf_sz as usize));
            if d.opts1 & (DESC_FS | DESC_LS) == DESC_FS | DESC_LS {
                let (f, crc) = data.split_at(len - 4);
                assert_eq!(crc, fcs(f));
                out.push((d.opts1, d.opts2, f.to_vec()));
            } else {
                out.push((d.opts1, d.opts2, Vec::new()));
            }
            self.refill(n, self.rx_tail);
            self.rx_tail = (self.rx_tail + 1) % self.rx_size;
        }
        n.w16(IMR, CP_INTR_MASK);
        out
    }

    /// cp_start_xmit of a frame in `frags` with command bits `flags` and
    /// VLAN word `opts2`; the first descriptor is handed over last.
    fn xmit(&mut self, n: &mut Nic, frags: &[&[u8]], flags: u32, opts2: u32) -> Vec<u16> {
        let mut descs = Vec::new();
        for (k, frag) in frags.iter().enumerate() {
            let i = self.tx_head;
            let addr = if frag.len() > 0x800 {
                BIG_BUF
            } else {
                TX_BUFS + 0x800 * u64::from(i)
            };
            n.write_mem(addr, frag);
            let mut opts1 = DESC_OWN | flags | frag.len() as u32;
            if i == self.tx_size - 1 {
                opts1 |= DESC_EOR;
            }
            if k == 0 {
                opts1 |= DESC_FS;
            }
            if k + 1 == frags.len() {
                opts1 |= DESC_LS;
            }
            descs.push((i, Desc { opts1, opts2, addr }));
            self.tx_head = (self.tx_head + 1) % self.tx_size;
        }
        for &(i, d) in descs.iter().skip(1) {
            set_desc(n, TX_DESC, i, d);
        }
        set_desc(n, TX_DESC, descs[0].0, descs[0].1);
        n.w8(TPPOLL, TPPOLL_NPQ);
        descs.iter().map(|d| d.0).collect()
    }
}

/// cp_init_rings + cp_init_hw + cp_enable_irq, with rings of the given sizes.
fn init_8139cp(n: &mut Nic, rx_size: u16, tx_size: u16) -> Cp {
    n.bar = 1; // 8139cp uses MMIO
    let cp = Cp {
        rx_size,
        rx_tail: 0,
        tx_size,
        tx_head: 0,
        buf_sz: BUF_SZ,
    };
    for i in 0..rx_size {
        cp.refill(n, i);
    }
    n.write_mem(TX_DESC, &vec![0u8; 16 * usize::from(tx_size)]);
    set_desc(
        n,
        TX_DESC,
        tx_size - 1,
        Desc {
            opts1: DESC_EOR,
            ..Default::default()
        },
    );
    n.reset();
    n.w8(CFG9346, EEM_CONFIG_WRITE);
    n.w32(IDR0, u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]));
    n.w32(IDR0 + 4, u32::from(u16::from_le_bytes([MAC[4], MAC[5]])));
    n.w16(CPCR, MULRW | CPCR_RX_CHKSUM | CPCR_RX | CPCR_TX);
    n.w32(THPDS, 0);
    n.w32(THPDS + 4, 0);
    n.w32(RDSAR, RX_DESC as u32);
    n.w32(RDSAR + 4, 0);
    n.w32(TNPDS, TX_DESC as u32);
    n.w32(TNPDS + 4, 0);
    n.w8(CR, CR_RE | CR_TE);
    n.w8(ETTHR, 0x06);
    n.w32(RCR, (5 << 13) | (4 << 8) | RCR_AB | RCR_APM);
    n.w32(MAR0, 0);
    n.w32(MAR0 + 4, 0);
    n.w32(TCR, (3 << 24) | (6 << 8));
    let c1 = n.r8(CONFIG1);
    n.w8(CONFIG1, c1 | 0x21);
    n.w8(CONFIG3, 0x40);
    let c5 = n.r8(CONFIG5);
    n.w8(CONFIG5, c5 & 1);
    n.w16(MULINT, 0);
    n.w8(CFG9346, 0);
    n.w16(IMR, CP_INTR_MASK);
    cp
}

fn cplus_nic() -> (Nic, Cp) {
    let mut n = nic(DEFAULT_REVISION);
    let cp = init_8139cp(&mut n, 16, 16);
    (n, cp)
}

fn wait_tx_done(n: &mut Nic, i: u16) -> Desc {
    let mut d = Desc::default();
    n.eventually("TX descriptor handed back", |n| {
        d = desc(n, TX_DESC, i);
        d.opts1 & DESC_OWN == 0
    });
    d
}

#[test]
fn tx_gathers_fragments_and_hands_descriptors_back() {
    let (mut n, mut cp) = cplus_nic();
    let f = eth(PEER, 0x88b5, &payload(1200));
    let idx = cp.xmit(&mut n, &[&f[..100], &f[100..900], &f[900..]], 0, 0);
    n.eventually("frame out", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, f);
    for (k, &i) in idx.iter().enumerate() {
        let d = wait_tx_done(&mut n, i);
        assert_eq!(d.opts1 & TXD_ERROR, 0);
        assert_eq!(d.opts1 & DESC_FS != 0, k == 0);
        assert_eq!(d.opts1 & DESC_LS != 0, k == 2);
    }
    n.eventually("TOK and TDU", |n| {
        n.r16(ISR) & (INT_TOK | INT_TDU) == INT_TOK | INT_TDU
    });
    assert!(n.line.high());
    // A second frame continues at the next descriptor, wrapping at EOR.
    for k in 0..20u8 {
        cp.xmit(&mut n, &[&eth(PEER, 0x88b5, &[k; 50])[..]], 0, 0);
        n.eventually("sent", |n| n.peer.pending_from_guest() == 1);
        assert_eq!(n.peer.take().unwrap().1[14], k);
    }
}

#[test]
fn tx_checksum_offload_fills_ip_tcp_and_udp_checksums() {
    let (mut n, mut cp) = cplus_nic();
    let mut tcp = tcp_frame(PEER, &payload(700), 1000);
    tcp[24] = 0xde; // garbage in the IP checksum
    cp.xmit(&mut n, &[&tcp[..54], &tcp[54..]], TXD_IPCS | TXD_TCPCS, 0);
    // A short UDP datagram the driver padded: the padding is not summed.
    let mut udp = udp_frame(PEER, b"hi");
    udp.resize(60, 0xee);
    cp.xmit(&mut n, &[&udp[..]], TXD_IPCS | TXD_UDPCS, 0);
    n.eventually("two frames", |n| n.peer.pending_from_guest() == 2);
    for _ in 0..2 {
        let (_, f) = n.peer.take().unwrap();
        assert_eq!(checksums_ok(&f), (true, true), "{f:02x?}");
    }
    assert_eq!(n.dev.stats().tx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn tx_large_send_produces_checksummed_segments() {
    let (mut n, mut cp) = cplus_nic();
    let data = payload(4000);
    let f = tcp_frame(PEER, &data, 0x1000_0000);
    let mss = 1460u32;
    let idx = cp.xmit(
        &mut n,
        &[&f[..54], &f[54..]],
        TXD_LGSEN | (mss << TXD_MSS_SHIFT),
        0,
    );
    n.eventually("three segments", |n| n.peer.pending_from_guest() == 3);
    let mut joined = Vec::new();
    for k in 0..3u32 {
        let (_, s) = n.peer.take().unwrap();
        assert_eq!(checksums_ok(&s), (true, true));
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 0x1000_0000 + k * mss);
        assert!(s.len() - 54 <= mss as usize);
        let psh = s[47] & 0x08 != 0;
        assert_eq!(psh, k == 2, "PSH only on the last segment");
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, data);
    let last = wait_tx_done(&mut n, idx[1]);
    assert_eq!(last.opts1 & TXD_ERROR, 0);
}

/// With a backend that segments TCP, a large send leaves as one GSO frame
/// whose segments (cut as the backend cuts them) are those of the
/// software path.
#[test]
fn tx_large_send_goes_to_a_tso_backend_as_one_gso_frame() {
    let mut n = nic_offloads(DEFAULT_REVISION, 64, Offloads::ALL);
    let mut cp = init_8139cp(&mut n, 16, 16);
    let data = payload(4000);
    let f = tcp_frame(PEER, &data, 0x1000_0000);
    let mss = 1460u32;
    let idx = cp.xmit(
        &mut n,
        &[&f[..54], &f[54..]],
        TXD_LGSEN | (mss << TXD_MSS_SHIFT),
        0,
    );
    n.eventually("one frame", |n| n.peer.pending_from_guest() == 1);
    let (hdr, g) = n.peer.take().unwrap();
    assert_eq!(hdr.gso_type, tapir_net_backend::hdr::GSO_TCPV4);
    assert_eq!(u32::from(hdr.gso_size), mss);
    assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (34, 16, 54));
    let segs = tapir_net_backend::offload::segment(&hdr, &g).unwrap();
    assert_eq!(segs.len(), 3);
    let mut joined = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert_eq!(checksums_ok(s), (true, true));
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 0x1000_0000 + k as u32 * mss);
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, data);
    let last = wait_tx_done(&mut n, idx[1]);
    assert_eq!(last.opts1 & TXD_ERROR, 0);
    // One MSS or less: no GSO, a partial checksum only.
    cp.xmit(
        &mut n,
        &[&tcp_frame(PEER, &payload(100), 7)[..]],
        TXD_LGSEN | (mss << TXD_MSS_SHIFT),
        0,
    );
    n.eventually("small frame", |n| n.peer.pending_from_guest() == 1);
    let (hdr, _) = n.peer.take().unwrap();
    assert_eq!(hdr.gso_type, tapir_net_backend::hdr::GSO_NONE);
}

#[test]
fn tx_vlan_tag_is_inserted() {
    let (mut n, mut cp) = cplus_nic();
    let f = eth(PEER, 0x0800, &payload(60));
    let tci: u16 = (5 << 13) | 42;
    cp.xmit(&mut n, &[&f[..]], 0, TXD_TAGC | u32::from(tci.swap_bytes()));
    n.eventually("sent", |n| n.peer.pending_from_guest() == 1);
    let (_, s) = n.peer.take().unwrap();
    assert_eq!(&s[12..14], &[0x81, 0x00]);
    assert_eq!(u16::from_be_bytes([s[14], s[15]]), tci);
    assert_eq!(&s[16..], &f[12..]);
}

#[test]
fn malformed_headers_are_dropped_counted_and_handed_back() {
    let (mut n, mut cp) = cplus_nic();
    let good = tcp_frame(PEER, &payload(100), 1);
    let mut cases: Vec<(Vec<u8>, u32)> = Vec::new();
    let csum = TXD_IPCS | TXD_TCPCS;
    let mut f = good.clone();
    f[14] = 0x4f; // IHL 60 bytes, with 40 bytes after the MAC header
    f.truncate(14 + 40);
    cases.push((f, csum)); // IHL beyond the frame
    let mut f = good.clone();
    f[16..18].copy_from_slice(&10u16.to_be_bytes());
    cases.push((f, csum)); // total length below the header
    let mut f = good.clone();
    f[16..18].copy_from_slice(&9000u16.to_be_bytes());
    cases.push((f, csum)); // total length beyond the frame
    let mut f = good.clone();
    f[14] = 0x44;
    cases.push((f, csum)); // IHL below 20
    let mut f = good.clone();
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    cases.push((f, csum)); // datagram ends inside the TCP header
    cases.push((udp_frame(PEER, b"x"), csum)); // TCPCS on UDP
    cases.push((good[..20].to_vec(), csum)); // ends inside the IP header
    cases.push((good.clone(), TXD_LGSEN)); // large send with MSS 0
    cases.push((udp_frame(PEER, &payload(3000)), TXD_LGSEN | (1000 << 16)));
    let count = cases.len() as u64;
    for (f, flags) in &cases {
        let idx = cp.xmit(&mut n, &[&f[..]], *flags, 0);
        let d = wait_tx_done(&mut n, idx[0]);
        assert_ne!(d.opts1 & TXD_ERROR, 0, "error bit for {flags:#x} {f:02x?}");
    }
    assert_eq!(n.dev.stats().tx_dropped.load(Ordering::SeqCst), count);
    assert_ne!(n.r16(ISR) & INT_TER, 0);
    assert_eq!(n.peer.pending_from_guest(), 0, "none reached the wire");
    // The ring goes on.
    cp.xmit(&mut n, &[&good[..]], csum, 0);
    n.eventually("good frame", |n| n.peer.pending_from_guest() == 1);
}

#[test]
fn tx_chain_without_last_segment_is_bounded() {
    let mut n = nic(DEFAULT_REVISION);
    let _cp = init_8139cp(&mut n, 16, 64);
    // 64 descriptors, all owned, none with LS, no EOR.
    for i in 0..64u16 {
        let d = Desc {
            opts1: DESC_OWN | 100,
            opts2: 0,
            addr: TX_BUFS,
        };
        set_desc(&n, TX_DESC, i, d);
    }
    n.w8(TPPOLL, TPPOLL_NPQ);
    n.eventually("all handed back", |n| {
        (0..64).all(|i| desc(n, TX_DESC, i).opts1 & DESC_OWN == 0)
    });
    assert_ne!(desc(&n, TX_DESC, 63).opts1 & TXD_ERROR, 0);
    assert_eq!(n.peer.pending_from_guest(), 0);
    // A 4-descriptor ring (EOR) owned round and round without LS.
    n.w8(CR, 0);
    for i in 0..4u16 {
        let eor = if i == 3 { DESC_EOR } else { 0 };
        set_desc(
            &n,
            TX_DESC,
            i,
            Desc {
                opts1: DESC_OWN | eor | 10,
                opts2: 0,
                addr: TX_BUFS,
            },
        );
    }
    n.w8(CR, CR_RE | CR_TE);
    n.w8(TPPOLL, TPPOLL_NPQ);
    n.eventually("looping chain refused", |n| {
        n.dev.stats().tx_dropped.load(Ordering::SeqCst) == 2
    });
}

#[test]
fn tx_bad_sizes_and_addresses_never_reach_host_memory() {
    let (mut n, mut cp) = cplus_nic();
    // Two 64 KiB - 1 descriptors: longer than any frame.
    let i0 = cp.tx_head;
    for k in 0..2u16 {
        let ls = if k == 1 { DESC_LS } else { DESC_FS };
        set_desc(
            &n,
            TX_DESC,
            i0 + k,
            Desc {
                opts1: DESC_OWN | ls | 0xffff,
                opts2: 0,
                addr: BIG_BUF,
            },
        );
    }
    cp.tx_head += 2;
    n.w8(TPPOLL, TPPOLL_NPQ);
    wait_tx_done(&mut n, i0 + 1);
    // A buffer outside guest RAM, and one that wraps the address space.
    for addr in [MEM_SIZE as u64 + 0x1000, u64::MAX - 8] {
        let i = cp.tx_head;
        set_desc(
            &n,
            TX_DESC,
            i,
            Desc {
                opts1: DESC_OWN | DESC_FS | DESC_LS | 64,
                opts2: 0,
                addr,
            },
        );
        cp.tx_head += 1;
        n.w8(TPPOLL, TPPOLL_NPQ);
        wait_tx_done(&mut n, i);
    }
    assert_ne!(n.r16(ISR) & INT_SERR, 0);
    // Zero-length fragments are harmless.
    let f = eth(PEER, 0x88b5, &payload(80));
    cp.xmit(&mut n, &[&f[..10], &[], &f[10..]], 0, 0);
    n.eventually("sent", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, f);
    assert_eq!(n.dev.stats().tx_dropped.load(Ordering::SeqCst), 3);
    // A ring at the top of the address space: descriptor reads fail.
    n.w32(TNPDS, 0xffff_fff8);
    n.w32(TNPDS + 4, 0xffff_ffff);
    n.w16(ISR, 0xffff);
    n.w8(TPPOLL, TPPOLL_NPQ);
    n.eventually("SERR", |n| n.r16(ISR) & INT_SERR != 0);
}

#[test]
fn rx_writes_descriptors_back_with_status_and_checksum_bits() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 4, 16);
    let mut tcp = tcp_frame(MAC, &payload(300), 7);
    fill_checksums(&mut tcp);
    let mut bad = tcp.clone();
    bad[60] ^= 0xff; // payload byte: the TCP checksum no longer matches
    let mut bad_ip = tcp.clone();
    bad_ip[22] ^= 1; // TTL: the IP header checksum no longer matches
    let mut udp0 = udp_frame([0xff; 6], b"hello");
    fill_checksums(&mut udp0);
    udp0[40..42].fill(0); // "no checksum"
    let arp = eth([0xff; 6], 0x0806, &[0; 28]);
    let frames = [&tcp, &bad, &bad_ip, &udp0, &arp, &tcp];
    let want = [
        RXD_PAM | (PID_TCP << 16),
        RXD_PAM | (PID_TCP << 16) | RXD_TCPF,
        RXD_PAM | (PID_TCP << 16) | RXD_IPF,
        RXD_BAR | (PID_UDP << 16),
        RXD_BAR,
        RXD_PAM | (PID_TCP << 16),
    ];
    let mut got = Vec::new();
    for f in frames {
        let before = got.len();
        n.peer.inject(NetHdr::default(), f).unwrap();
        n.eventually("received", |n| {
            got.extend(cp.rx_poll(n));
            got.len() == before + 1
        });
    }
    for (k, (opts1, opts2, data)) in got.iter().enumerate() {
        let mut f = frames[k].to_vec();
        f.resize(f.len().max(60), 0);
        assert_eq!(data, &f, "frame {k}");
        assert_eq!(opts1 & DESC_OWN, 0);
        assert_eq!(opts1 & (DESC_FS | DESC_LS), DESC_FS | DESC_LS);
        assert_eq!(opts1 & RXD_LEN_MASK, f.len() as u32 + 4);
        let status = opts1 & !(DESC_OWN | DESC_EOR | DESC_FS | DESC_LS | RXD_LEN_MASK);
        assert_eq!(status, want[k], "frame {k}: {opts1:#x}");
        assert_eq!(*opts2, 0);
        // The 4-descriptor ring wrapped at EOR.
        assert_eq!(opts1 & DESC_EOR != 0, k % 4 == 3);
    }
}

#[test]
fn rx_vlan_tags_are_stripped_when_asked() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 8, 8);
    let inner = eth(MAC, 0x88b5, &payload(100));
    let mut tagged = inner.clone();
    let tci: u16 = (3 << 13) | 100;
    tagged.splice(12..12, [0x81, 0x00, (tci >> 8) as u8, tci as u8]);
    n.peer.inject(NetHdr::default(), &tagged).unwrap();
    let mut got = Vec::new();
    n.eventually("kept", |n| {
        got.extend(cp.rx_poll(n));
        got.len() == 1
    });
    assert_eq!(got[0].2, tagged, "RxVlan off: the tag stays");
    let v = n.r16(CPCR) | CPCR_RX_VLAN;
    n.w16(CPCR, v);
    n.peer.inject(NetHdr::default(), &tagged).unwrap();
    n.eventually("stripped", |n| {
        got.extend(cp.rx_poll(n));
        got.len() == 2
    });
    assert_eq!(got[1].2, inner);
    assert_eq!(got[1].1, RXD_TAVA | u32::from(tci.swap_bytes()));
}

#[test]
fn rx_without_descriptors_waits_for_the_refill() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 2, 8);
    n.dev.set_rx_stall_grace(std::time::Duration::from_secs(10));
    for k in 0..4u8 {
        n.peer
            .inject(NetHdr::default(), &eth(MAC, 0x88b5, &[k; 100]))
            .unwrap();
    }
    n.eventually("ring exhausted", |n| {
        n.dev.stats().rx_stalls.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(n.dev.stats().rx_frames.load(Ordering::SeqCst), 2);
    assert_ne!(n.r16(ISR) & INT_RXOVW, 0, "RDU tells the driver to refill");
    assert_eq!(n.r32(MPC), 0);
    let mut got = Vec::new();
    n.eventually("all four after refills", |n| {
        got.extend(cp.rx_poll(n).into_iter().map(|g| g.2[14]));
        got.len() == 4
    });
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn rx_spans_small_buffers_and_refuses_what_cannot_fit() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 8, 8);
    cp.buf_sz = 256;
    for i in 0..8 {
        cp.refill(&n, i);
    }
    let f = eth(MAC, 0x88b5, &payload(700)); // 718 bytes with CRC: 3 buffers
    n.peer.inject(NetHdr::default(), &f).unwrap();
    n.eventually("written", |n| desc(n, RX_DESC, 2).opts1 & DESC_OWN == 0);
    let d: Vec<Desc> = (0..3).map(|i| desc(&n, RX_DESC, i)).collect();
    assert_eq!(d[0].opts1 & (DESC_FS | DESC_LS), DESC_FS);
    assert_eq!(d[1].opts1 & (DESC_FS | DESC_LS), 0);
    assert_eq!(d[2].opts1 & (DESC_FS | DESC_LS), DESC_LS);
    assert_eq!(d[2].opts1 & RXD_LEN_MASK, 718);
    let mut joined = Vec::new();
    for (i, take) in [(0u16, 256usize), (1, 256), (2, 206)] {
        joined.extend(n.read_mem(Cp::rx_buf(i), take));
    }
    assert_eq!(&joined[..714], &f[..]);
    assert_eq!(desc(&n, RX_DESC, 3).opts1 & DESC_OWN, DESC_OWN);
    // 8-byte buffers cannot hold 1000 bytes within 64 descriptors.
    let _small = init_8139cp(&mut n, 64, 8);
    for i in 0..64u16 {
        let eor = if i == 63 { DESC_EOR } else { 0 };
        set_desc(
            &n,
            RX_DESC,
            i,
            Desc {
                opts1: DESC_OWN | eor | 8,
                opts2: 0,
                addr: Cp::rx_buf(i),
            },
        );
    }
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x88b5, &payload(1000)))
        .unwrap();
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(desc(&n, RX_DESC, 0).opts1 & DESC_OWN, DESC_OWN, "untouched");
}

#[test]
fn rx_ring_outside_guest_ram_is_dropped_with_serr() {
    let (mut n, _cp) = cplus_nic();
    n.w32(RDSAR, 0xffff_fff0);
    n.w32(RDSAR + 4, 0xffff_ffff);
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x88b5, &payload(100)))
        .unwrap();
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_ne!(n.r16(ISR) & INT_SERR, 0);
    // Buffers outside RAM: the descriptor stays with the chip.
    n.w32(RDSAR, RX_DESC as u32);
    n.w32(RDSAR + 4, 0);
    set_desc(
        &n,
        RX_DESC,
        0,
        Desc {
            opts1: DESC_OWN | BUF_SZ,
            opts2: 0,
            addr: MEM_SIZE as u64 - 16,
        },
    );
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x88b5, &payload(100)))
        .unwrap();
    n.eventually("dropped again", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 2
    });
    assert_ne!(desc(&n, RX_DESC, 0).opts1 & DESC_OWN, 0);
}

#[test]
fn tally_counters_are_dumped_through_dtccr() {
    let (mut n, mut cp) = cplus_nic();
    cp.xmit(&mut n, &[&eth(PEER, 0x88b5, &payload(80))[..]], 0, 0);
    n.peer
        .inject(NetHdr::default(), &eth([0xff; 6], 0x0806, &[0; 28]))
        .unwrap();
    n.eventually("one each way", |n| {
        n.peer.pending_from_guest() == 1 && n.dev.stats().rx_frames.load(Ordering::SeqCst) == 1
    });
    n.eventually("TX written back", |n| {
        desc(n, TX_DESC, 0).opts1 & DESC_OWN == 0
    });
    // cp_get_ethtool_stats.
    n.w32(DTCCR + 4, 0);
    n.w32(DTCCR, STATS as u32 | DTCCR_CMD);
    assert_eq!(n.r32(DTCCR) & DTCCR_CMD, 0, "dump done");
    let b = n.read_mem(STATS, 64);
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    assert_eq!((u64_at(0), u64_at(8)), (1, 1), "tx_ok, rx_ok");
    assert_eq!(u64_at(48), 1, "rx_ok_bcast");
}

#[test]
fn loopback_large_send_is_received_segment_by_segment() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 64, 8);
    let v = n.r32(TCR) | TCR_LBK;
    n.w32(TCR, v);
    let f = tcp_frame(MAC, &payload(4000), 5);
    cp.xmit(&mut n, &[&f[..]], TXD_LGSEN | (100 << TXD_MSS_SHIFT), 0);
    let mut got = Vec::new();
    n.eventually("40 segments", |n| {
        got.extend(cp.rx_poll(n));
        got.len() == 40
    });
    for (opts1, _, s) in &got {
        assert_eq!(opts1 & (RXD_TCPF | RXD_IPF), 0);
        assert_eq!(checksums_ok(s), (true, true));
    }
    assert_eq!(n.peer.pending_from_guest(), 0);
}

#[test]
fn high_priority_ring_goes_first() {
    let (mut n, mut cp) = cplus_nic();
    n.w32(THPDS, HI_DESC as u32);
    let hi = eth(PEER, 0x88b5, &[1; 60]);
    n.write_mem(TX_BUFS + 0x10000, &hi);
    set_desc(
        &n,
        HI_DESC,
        0,
        Desc {
            opts1: DESC_OWN | DESC_EOR | DESC_FS | DESC_LS | 74,
            opts2: 0,
            addr: TX_BUFS + 0x10000,
        },
    );
    n.w8(TPPOLL, TPPOLL_HPQ);
    n.eventually("high", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, hi);
    assert_eq!(desc(&n, HI_DESC, 0).opts1 & DESC_OWN, 0);
    cp.xmit(&mut n, &[&eth(PEER, 0x88b5, &[2; 60])[..]], 0, 0);
    n.eventually("normal", |n| n.peer.pending_from_guest() == 1);
}

#[test]
fn revision_0x10_never_enters_cplus_mode() {
    let mut n = nic(REVISION_8139C);
    let mut cp = init_8139cp(&mut n, 8, 8);
    cp.xmit(&mut n, &[&eth(PEER, 0x88b5, &payload(60))[..]], 0, 0);
    n.pump();
    assert_eq!(n.peer.pending_from_guest(), 0);
    assert_ne!(
        desc(&n, TX_DESC, 0).opts1 & DESC_OWN,
        0,
        "descriptor untouched"
    );
    assert_eq!(n.r16(ISR) & INT_SWINT, 0);
    n.w8(TPPOLL, TPPOLL_FSWINT);
    assert_eq!(n.r16(ISR) & INT_SWINT, 0, "no TPPoll on an RTL8139C");
}

#[test]
fn loopback_without_receive_room_drops_and_counts_at_once() {
    let mut n = nic(DEFAULT_REVISION);
    let mut cp = init_8139cp(&mut n, 2, 8);
    let v = n.r32(TCR) | TCR_LBK;
    n.w32(TCR, v);
    for k in 0..4u8 {
        cp.xmit(&mut n, &[&eth(MAC, 0x88b5, &[k; 60])[..]], 0, 0);
    }
    n.eventually("all sent", |n| {
        (0..4).all(|i| desc(n, TX_DESC, i).opts1 & DESC_OWN == 0)
    });
    assert_eq!(n.r32(MPC), 2);
    assert_ne!(n.r16(ISR) & INT_FOVW, 0);
    let got = cp.rx_poll(&mut n);
    assert_eq!(got.iter().map(|g| g.2[14]).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(n.peer.pending_from_guest(), 0);
}

/// What the host's stack sends to a tap with offloads on, and what the
/// chip's driver can take: segments and complete checksums.
#[test]
fn tso_frames_from_the_backend_arrive_as_checksummed_segments_across_refills() {
    let mut n = nic_offloads(DEFAULT_REVISION, 64, Offloads::ALL);
    assert_eq!(
        n.peer.enabled_offloads(),
        Offloads::ALL,
        "the NIC asks for all"
    );
    let mut cp = init_8139cp(&mut n, 4, 16);
    let data = payload(20_000);
    let mss = 1448u16;
    let (hdr, f) = tso_frame(MAC, &data, 0x7000_0000, mss);
    n.peer.inject(hdr, &f).unwrap();
    // 14 segments through a ring of 4: the rest waits for the refills.
    let mut got = Vec::new();
    n.eventually("all segments", |n| {
        got.extend(cp.rx_poll(n));
        got.len() >= 14
    });
    assert_eq!(got.len(), 14);
    let mut joined = Vec::new();
    for (k, (opts1, _, s)) in got.iter().enumerate() {
        assert_eq!(checksums_ok(s), (true, true), "segment {k}");
        let status = opts1 & !(DESC_OWN | DESC_EOR | DESC_FS | DESC_LS | RXD_LEN_MASK);
        assert_eq!(status, RXD_PAM | (PID_TCP << 16), "segment {k}");
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 0x7000_0000 + k as u32 * u32::from(mss));
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, data);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
    // A partial checksum alone is completed.
    let (mut hdr, f) = tso_frame(MAC, &payload(300), 5, mss);
    hdr.gso_type = 0;
    n.peer.inject(hdr, &f).unwrap();
    let mut one = Vec::new();
    n.eventually("one frame", |n| {
        one.extend(cp.rx_poll(n));
        !one.is_empty()
    });
    assert_eq!(checksums_ok(&one[0].2), (true, true));
    assert_eq!(one[0].0 & RXD_TCPF, 0);
}

#[test]
fn tcp_checksum_offload_is_left_to_a_backend_that_completes_it() {
    let mut n = nic_offloads(DEFAULT_REVISION, 64, Offloads::ALL);
    let mut cp = init_8139cp(&mut n, 16, 16);
    let mut tcp = tcp_frame(PEER, &payload(700), 1000);
    tcp[24] = 0xde; // garbage in the IP checksum
    let ip_end = tcp.len();
    tcp.extend_from_slice(&[0xee; 6]); // trailing bytes after the datagram
    cp.xmit(&mut n, &[&tcp[..54], &tcp[54..]], TXD_IPCS | TXD_TCPCS, 0);
    // UDP stays with the NIC (its "0 means none" rule).
    let mut udp = udp_frame(PEER, b"hi");
    udp.resize(60, 0xee);
    cp.xmit(&mut n, &[&udp[..]], TXD_IPCS | TXD_UDPCS, 0);
    n.eventually("two frames", |n| n.peer.pending_from_guest() == 2);
    let (hdr, mut f) = n.peer.take().unwrap();
    assert_eq!(hdr.flags, tapir_net_backend::hdr::NEEDS_CSUM);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
    assert_eq!(f.len(), ip_end, "cut to the IP datagram");
    assert!(
        checksums_ok(&f).0,
        "the IP header checksum is done by the NIC"
    );
    tapir_net_backend::offload::complete_checksum(&hdr, &mut f).unwrap();
    assert_eq!(checksums_ok(&f), (true, true));
    let (hdr, f) = n.peer.take().unwrap();
    assert!(hdr.is_plain());
    assert_eq!(checksums_ok(&f), (true, true));
    // A bad request is still refused as the chip refuses it.
    let mut not_tcp = udp_frame(PEER, &payload(100));
    fill_checksums(&mut not_tcp);
    let idx = cp.xmit(&mut n, &[&not_tcp[..]], TXD_TCPCS, 0);
    let d = wait_tx_done(&mut n, idx[0]);
    assert_ne!(d.opts1 & TXD_ERROR, 0);
    assert_eq!(n.peer.pending_from_guest(), 0);
}

#[test]
fn looped_back_frames_get_their_checksums_done_by_the_nic() {
    let mut n = nic_offloads(DEFAULT_REVISION, 64, Offloads::ALL);
    let mut cp = init_8139cp(&mut n, 16, 16);
    let v = n.r32(TCR);
    n.w32(TCR, v | TCR_LBK);
    let tcp = tcp_frame(MAC, &payload(500), 9);
    cp.xmit(&mut n, &[&tcp[..]], TXD_IPCS | TXD_TCPCS, 0);
    let mut got = Vec::new();
    n.eventually("looped back", |n| {
        got.extend(cp.rx_poll(n));
        !got.is_empty()
    });
    assert_eq!(checksums_ok(&got[0].2), (true, true));
    assert_eq!(got[0].0 & (RXD_TCPF | RXD_IPF), 0);
    assert_eq!(n.peer.pending_from_guest(), 0);
}

#[test]
fn the_rest_of_a_tso_frame_is_lost_with_the_cable() {
    let mut n = nic_offloads(DEFAULT_REVISION, 64, Offloads::ALL);
    n.dev.set_rx_stall_grace(std::time::Duration::from_secs(10));
    let mut cp = init_8139cp(&mut n, 4, 16);
    let (hdr, f) = tso_frame(MAC, &payload(20_000), 1, 1448);
    n.peer.inject(hdr, &f).unwrap();
    let stats = n.dev.stats();
    n.eventually("ring full", |_| stats.rx_stalls.load(Ordering::SeqCst) >= 1);
    let link = n.dev.link();
    assert!(link.set(false));
    n.eventually("held frame dropped", |_| {
        stats.rx_link_down.load(Ordering::SeqCst) == 1
    });
    assert!(link.set(true));
    let mut got = Vec::new();
    n.eventually("the four delivered before", |n| {
        got.extend(cp.rx_poll(n));
        got.len() >= 4
    });
    let marker = eth(MAC, 0x88b5, &[0x5a; 100]);
    n.peer.inject(NetHdr::default(), &marker).unwrap();
    n.eventually("next frame", |n| {
        got.extend(cp.rx_poll(n));
        got.len() >= 5
    });
    assert_eq!(got.len(), 5);
    assert_eq!(got[4].2, marker, "no stale segment after the cable is back");
}

/// What 8139cp does when TCP acknowledges from inside its receive poll
/// (receive interrupts masked): the doorbell returns with the frame sent
/// and TOK raised, so the completion is handled inside that poll.
#[test]
fn a_small_frame_sent_from_the_receive_poll_completes_before_the_doorbell_returns() {
    let (mut n, mut cp) = cplus_nic();
    n.w16(IMR, CP_INTR_MASK & !CP_RX_INTR); // cp_norx_intr_mask
    let ack = tcp_frame(PEER, &[], 1);
    for k in 0..20 {
        let idx = cp.xmit(&mut n, &[&ack[..]], 0, 0);
        // Done when the doorbell write returns: nobody waited.
        assert_eq!(desc(&n, TX_DESC, idx[0]).opts1 & DESC_OWN, 0, "frame {k}");
        assert_ne!(n.r16(ISR) & INT_TOK, 0, "frame {k}");
        assert!(n.line.high(), "frame {k}: the completion is on the line");
        let mut sent = None;
        n.eventually("sent by the worker", |n| {
            sent = n.peer.take().map(|f| f.1);
            sent.is_some()
        });
        assert_eq!(sent, Some(ack.clone()));
        n.w16(ISR, INT_TOK | INT_TDU);
    }
    // Bulk frames, or frames sent with receive interrupts on, take the
    // worker's way; they go out all the same.
    n.w16(IMR, CP_INTR_MASK);
    let big = eth(PEER, 0x88b5, &payload(1000));
    cp.xmit(&mut n, &[&big[..]], 0, 0);
    n.eventually("sent", |n| n.peer.pending_from_guest() == 1);
    // With no worker to send them, the FIFO fills and stays bounded: later
    // frames wait in the ring, owned by the chip.
    n.w16(IMR, CP_INTR_MASK & !CP_RX_INTR);
    let _ = n.dev.stop();
    for k in 0..crate::rtl8139::rings::TX_FIFO + 2 {
        let idx = cp.xmit(&mut n, &[&ack[..]], 0, 0);
        let owned = desc(&n, TX_DESC, idx[0]).opts1 & DESC_OWN != 0;
        assert_eq!(owned, k >= crate::rtl8139::rings::TX_FIFO, "frame {k}");
    }
}
