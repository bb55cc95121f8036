//! Receive: descriptors, FCS, buffer sizes, filters, VLAN stripping,
//! backpressure.

use tapir_net_backend::hdr::{DATA_VALID, GSO_TCPV4, NEEDS_CSUM};
use tapir_net_backend::offload::complete_checksum;
use tapir_net_backend::Offloads;

use super::*;
use crate::crc;
use crate::e1000::filter::mta_hash;

fn inject(n: &Nic, frame: &[u8]) {
    n.peer.inject(NetHdr::default(), frame).unwrap();
}

#[test]
fn frame_lands_in_a_descriptor_with_dd_eop() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(8);
    let _ = n.r(ICR);
    let frame = eth(MAC, 0x0800, &payload(200, 1));
    inject(&n, &frame);
    n.eventually("RDH moved", |n| n.r(RDH) == 1);
    let (len, status, errors, special) = n.rx_desc(0);
    assert_eq!(usize::from(len), frame.len());
    // EtherType IPv4, but no IPv4 datagram: nothing to check, no IXSM.
    assert_eq!(status, RXD_STAT_DD | RXD_STAT_EOP);
    assert_eq!((errors, special), (0, 0));
    assert_eq!(n.rx_data(0, frame.len()), frame);
    n.eventually("RXT0 interrupt", |n| n.line.high());
    assert_ne!(n.r(ICR) & INT_RXT0, 0);
    assert!(!n.line.high());
    assert_eq!(n.dev.stats().rx_frames.load(Ordering::SeqCst), 1);
}

#[test]
fn fcs_appended_unless_secrc() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.w(RCTL, RCTL_EN | RCTL_BAM);
    n.rx_give(4);
    let frame = eth(MAC, 0x0800, &payload(100, 2));
    inject(&n, &frame);
    n.eventually("received", |n| n.r(RDH) == 1);
    let (len, ..) = n.rx_desc(0);
    assert_eq!(usize::from(len), frame.len() + 4, "Linux subtracts the CRC");
    let got = n.rx_data(0, frame.len() + 4);
    assert_eq!(&got[frame.len()..], &crc::fcs(&[&frame]));
}

#[test]
fn short_frames_are_padded() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(4);
    let arp = eth([0xFF; 6], 0x0806, &payload(28, 3));
    inject(&n, &arp);
    n.eventually("received", |n| n.r(RDH) == 1);
    assert_eq!(n.rx_desc(0).0, 60);
    let got = n.rx_data(0, 60);
    assert_eq!(&got[..42], &arp[..]);
    assert!(got[42..].iter().all(|&b| b == 0));
}

#[test]
fn no_buffers_holds_the_frame_until_rdt_moves() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let frame = eth(MAC, 0x0800, &payload(100, 4));
    inject(&n, &frame);
    inject(&n, &frame);
    n.eventually("stalled", |n| {
        n.dev.stats().rx_stalls.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(n.r(RDH), 0);
    assert_eq!(n.r(RNBC), 1);
    n.rx_give(1);
    n.eventually("one delivered", |n| n.r(RDH) == 1);
    n.pump();
    assert_eq!(n.r(RDH), 1, "ring full again (RDH == RDT)");
    n.rx_give(3);
    n.eventually("the second", |n| n.r(RDH) == 2);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn receiver_disabled_drops() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(4);
    n.w(RCTL, 0);
    inject(&n, &eth(MAC, 0x0800, &payload(100, 5)));
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(n.r(RDH), 0);
}

#[test]
fn address_filters_unicast_broadcast_multicast_promiscuous() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(15);
    let rx = |n: &mut Nic, dst: [u8; 6]| {
        let before = n.r(RDH);
        let dropped = n.dev.stats().rx_dropped.load(Ordering::SeqCst);
        inject(n, &eth(dst, 0x0800, &payload(64, 6)));
        n.eventually("handled", |n| {
            n.r(RDH) != before || n.dev.stats().rx_dropped.load(Ordering::SeqCst) != dropped
        });
        n.r(RDH) != before
    };
    assert!(rx(&mut n, MAC), "own address (RA 0)");
    assert!(!rx(&mut n, PEER_MAC), "someone else");
    assert!(rx(&mut n, [0xFF; 6]), "broadcast with BAM");
    let mc = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB];
    assert!(!rx(&mut n, mc), "multicast not in the table");
    // Multicast offset 0: the hash of the address, in the MTA.
    let h = mta_hash(&mc, 0);
    n.w(MTA + 4 * (h >> 5), 1 << (h & 31));
    assert!(rx(&mut n, mc), "multicast hashed in the MTA");
    // RA 1 holding another unicast address.
    n.w(RA + 8, u32::from_le_bytes([2, 0, 0, 0]));
    n.w(RA + 12, 0x0100 | RAH_AV);
    assert!(rx(&mut n, PEER_MAC), "exact filter RA 1");
    n.w(RCTL, RCTL_EN | RCTL_SECRC);
    assert!(!rx(&mut n, [0xFF; 6]), "broadcast without BAM");
    assert!(!rx(&mut n, [0x02, 9, 9, 9, 9, 9]));
    n.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_UPE);
    assert!(rx(&mut n, [0x02, 9, 9, 9, 9, 9]), "unicast promiscuous");
    assert!(!rx(&mut n, [0x01, 9, 9, 9, 9, 9]));
    n.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_MPE);
    assert!(rx(&mut n, [0x01, 9, 9, 9, 9, 9]), "multicast promiscuous");
    assert_eq!(n.r(MPRC), 2);
}

#[test]
fn vlan_stripped_into_special_and_filtered_by_vfta() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(8);
    let inner = eth(MAC, 0x0800, &payload(100, 7));
    let mut tagged = inner.clone();
    tagged.splice(12..12, [0x81, 0x00, 0x20, 0x0A]); // priority 1, VLAN 10
                                                     // Without VME the tag stays in the data.
    inject(&n, &tagged);
    n.eventually("received", |n| n.r(RDH) == 1);
    let (len, status, _, special) = n.rx_desc(0);
    assert_eq!(
        (usize::from(len), status & RXD_STAT_VP, special),
        (tagged.len(), 0, 0)
    );
    // With VME it goes to the descriptor.
    let ctrl = n.r(CTRL);
    n.w(CTRL, ctrl | CTRL_VME);
    inject(&n, &tagged);
    n.eventually("received", |n| n.r(RDH) == 2);
    let (len, status, _, special) = n.rx_desc(1);
    assert_eq!((usize::from(len), special), (inner.len(), 0x200A));
    assert_ne!(status & RXD_STAT_VP, 0);
    assert_eq!(n.rx_data(1, inner.len()), inner);
    // VFE: only VLANs set in the VFTA pass; untagged frames are unaffected.
    n.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_VFE);
    inject(&n, &tagged);
    n.eventually("filtered", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    n.w(VFTA, 1 << 10);
    inject(&n, &tagged);
    inject(&n, &inner);
    n.eventually("both received", |n| n.r(RDH) == 4);
}

#[test]
fn long_frames_span_descriptors_with_lpe() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(8);
    let frame = eth(MAC, 0x0800, &payload(2500, 8));
    // Without LPE a 2514-byte frame is oversize.
    inject(&n, &frame);
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(n.r(ROC), 1);
    // 1024-byte buffers, LPE: three descriptors, EOP on the last.
    n.w(
        RCTL,
        RCTL_EN | RCTL_SECRC | RCTL_LPE | (1 << RCTL_BSIZE_SHIFT),
    );
    inject(&n, &frame);
    n.eventually("received", |n| n.r(RDH) == 3);
    let mut got = Vec::new();
    for i in 0..3 {
        let (len, status, ..) = n.rx_desc(i);
        assert_eq!(status & RXD_STAT_EOP != 0, i == 2);
        assert_ne!(status & RXD_STAT_DD, 0);
        got.extend_from_slice(&n.rx_data(i, usize::from(len)));
    }
    assert_eq!(got, frame);
}

#[test]
fn rxdmt0_when_free_descriptors_fall_to_the_threshold() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(10);
    let _ = n.r(ICR);
    // 16 descriptors, RDMTS = 1/2: the threshold is 8 free.
    inject(&n, &eth(MAC, 0x0800, &payload(64, 9)));
    n.eventually("received", |n| n.r(RDH) == 1);
    assert_eq!(n.r(ICR) & INT_RXDMT0, 0, "9 free");
    inject(&n, &eth(MAC, 0x0800, &payload(64, 9)));
    n.eventually("received", |n| n.r(RDH) == 2);
    assert_ne!(n.r(ICR) & INT_RXDMT0, 0, "8 free");
}

#[test]
fn offloaded_frames_from_the_backend_are_completed() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(8);
    // A partial checksum: completed before delivery.
    let (f, h) = partial_tcp(500, 10);
    n.peer.inject(h, &f).unwrap();
    n.eventually("received", |n| n.r(RDH) == 1);
    check_ipv4_tcp(&n.rx_data(0, f.len()));
    // A GSO frame: segmented, all segments delivered.
    let mut g = ipv4_tcp(&payload(3000, 11), false, 0x18);
    g[..6].copy_from_slice(&MAC);
    let h = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    n.peer.inject(h, &g).unwrap();
    n.eventually("three segments", |n| n.r(RDH) == 4);
    for i in 1..4 {
        let (len, status, errors, _) = n.rx_desc(i);
        check_ipv4_tcp(&n.rx_data(i, usize::from(len)));
        // Checksums computed here are reported good.
        assert_eq!(
            status & (RXD_STAT_TCPCS | RXD_STAT_IPCS | RXD_STAT_IXSM),
            RXD_STAT_TCPCS | RXD_STAT_IPCS
        );
        assert_eq!(errors, 0);
    }
}

/// A TCP/IPv4 frame to the NIC with a partial TCP checksum (the
/// pseudo-header sum), and the header that says so.
fn partial_tcp(len: usize, seed: u8) -> (Vec<u8>, NetHdr) {
    let mut f = ipv4_tcp(&payload(len, seed), false, 0x18);
    f[..6].copy_from_slice(&MAC);
    let h = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    (f, h)
}

/// A TCP/IPv4 frame to the NIC with every checksum right.
fn good_tcp(len: usize, seed: u8) -> Vec<u8> {
    let (mut f, h) = partial_tcp(len, seed);
    complete_checksum(&h, &mut f).unwrap();
    f
}

/// A UDP/IPv4 frame to the NIC; `csum`: a right checksum, else none (0).
fn udp(len: usize, csum: bool) -> Vec<u8> {
    let mut f = good_tcp(len, 3);
    f[14 + 9] = 17;
    f[14 + 10..14 + 12].fill(0);
    let c = !fold(sum_words(&f[14..34], 0));
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let ulen = (f.len() - 34) as u16;
    f[38..40].copy_from_slice(&ulen.to_be_bytes());
    f[40..42].fill(0);
    if csum {
        let pseudo = sum_words(&f[26..34], 17 + u64::from(ulen));
        let c = !fold(sum_words(&f[34..], pseudo));
        f[40..42].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// Delivers `frame` with `hdr` as the next frame; returns its status and
/// error bits.
fn csum_bits(n: &mut Nic, hdr: NetHdr, frame: &[u8]) -> (u8, u8) {
    let i = n.r(RDH);
    n.peer.inject(hdr, frame).unwrap();
    n.eventually("received", |n| n.r(RDH) == i + 1);
    let (_, status, errors, _) = n.rx_desc(i);
    (
        status & (RXD_STAT_IXSM | RXD_STAT_TCPCS | RXD_STAT_IPCS),
        errors,
    )
}

#[test]
fn receive_checksum_offload_reports_what_it_checked() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(15); // the 13 frames below fit without a refill
    let plain = NetHdr::default();
    let both = RXD_STAT_TCPCS | RXD_STAT_IPCS;
    let good = good_tcp(300, 1);
    assert_eq!(csum_bits(&mut n, plain, &good), (both, 0));
    let mut bad_l4 = good.clone();
    *bad_l4.last_mut().unwrap() ^= 0x5a;
    assert_eq!(csum_bits(&mut n, plain, &bad_l4), (both, RXD_ERR_TCPE));
    let mut bad_ip = good.clone();
    bad_ip[14 + 8] ^= 1; // TTL, under the header checksum only
    assert_eq!(csum_bits(&mut n, plain, &bad_ip), (both, RXD_ERR_IPE));
    // UDP: TCPCS on the 8254x too; a zero checksum is "none sent".
    assert_eq!(csum_bits(&mut n, plain, &udp(200, true)), (both, 0));
    assert_eq!(csum_bits(&mut n, plain, &udp(200, false)), (both, 0));
    let mut bad_udp = udp(200, true);
    *bad_udp.last_mut().unwrap() ^= 0xff;
    assert_eq!(csum_bits(&mut n, plain, &bad_udp), (both, RXD_ERR_TCPE));
    // A fragment: the IP header only.
    let mut frag = good.clone();
    frag[14 + 6] |= 0x20; // MF
    frag[14 + 10..14 + 12].fill(0);
    let c = !fold(sum_words(&frag[14..34], 0));
    frag[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(csum_bits(&mut n, plain, &frag), (RXD_STAT_IPCS, 0));
    // Not IPv4, or a total length past the frame: nothing checked.
    let arp = eth(MAC, 0x0806, &payload(46, 4));
    assert_eq!(csum_bits(&mut n, plain, &arp), (0, 0));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&4000u16.to_be_bytes());
    assert_eq!(csum_bits(&mut n, plain, &long), (0, 0));
    // The backend vouches for the L4 checksum: it is not summed again.
    let vouched = NetHdr {
        flags: DATA_VALID,
        ..Default::default()
    };
    assert_eq!(csum_bits(&mut n, vouched, &bad_l4), (both, 0));
    assert_eq!(csum_bits(&mut n, vouched, &bad_ip), (both, RXD_ERR_IPE));
    // Behind an 802.1Q tag.
    n.w(VFTA + 4 * (100 >> 5), 1 << (100 & 31));
    let rctl = n.r(RCTL);
    n.w(RCTL, rctl | RCTL_VFE);
    let mut tagged = good[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
    tagged.extend_from_slice(&good[12..]);
    assert_eq!(csum_bits(&mut n, plain, &tagged), (both, 0));
    // Offloads off (ethtool -K rx off): every descriptor says IXSM.
    n.w(RXCSUM, 0);
    assert_eq!(csum_bits(&mut n, plain, &bad_l4), (RXD_STAT_IXSM, 0));
}

#[test]
fn backend_checksum_and_tso_offloads_are_enabled() {
    let offered = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
        tso_ecn: true,
    };
    let n = Nic::new(offered);
    assert_eq!(n.peer.enabled_offloads(), offered);
    let n = Nic::new(Offloads {
        tso4: true,
        ..Default::default()
    });
    assert_eq!(
        n.peer.enabled_offloads(),
        Offloads::default(),
        "no TSO without checksums"
    );
}
