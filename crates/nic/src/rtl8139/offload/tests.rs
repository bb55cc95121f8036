//! The C+ offload code on hand-made frames, malformed ones above all (the
//! CVE-2015-5165 class: lengths pointing outside the frame).

use tapir_net_backend::offload::checksum;

use super::*;
use crate::vlan;

/// A TCP/IPv4 frame (zero checksums) with `payload` bytes of data.
fn tcp(payload: usize) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00];
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 7, 0x40, 0]);
    f.extend_from_slice(&[64, 6, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2]);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x16, 0, 0, 0, 1, 0, 0, 0, 0]);
    f.extend_from_slice(&[0x50, 0x19, 0x10, 0x00, 0, 0, 0, 0]); // FIN|PSH|ACK
    f.extend((0..payload).map(|i| (i * 31 + 1) as u8));
    f
}

fn udp(payload: usize) -> Vec<u8> {
    let mut f = tcp(0);
    f.truncate(34);
    let total = (28 + payload) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[23] = 17;
    let ulen = (8 + payload) as u16;
    f.extend_from_slice(&[0x00, 0x35, 0x00, 0x35]);
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

/// Independent check: IP header and L4 (with pseudo-header) sum to zero.
fn valid(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0xf) * 4;
    let total = usize::from(be16(f, 16));
    let l4 = &f[14 + ihl..14 + total];
    let mut p = f[26..34].to_vec();
    p.extend_from_slice(&[0, f[23]]);
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(l4);
    checksum(&f[14..14 + ihl]) == 0 && checksum(&p) == 0
}

#[test]
fn checksums_are_computed_from_scratch() {
    let mut f = tcp(333);
    f[24] = 0xaa; // garbage IP checksum
    f[50] = 0x55; // garbage TCP checksum
    tx_checksum(&mut f, true, false, true).unwrap();
    assert!(valid(&f));
    let mut u = udp(17);
    u.resize(80, 0xff); // Ethernet padding is not part of the datagram
    tx_checksum(&mut u, true, true, false).unwrap();
    assert!(valid(&u));
    // Nothing asked, nothing touched (and no parsing either).
    let mut junk = vec![1u8; 5];
    tx_checksum(&mut junk, false, false, false).unwrap();
    assert_eq!(junk, vec![1u8; 5]);
}

#[test]
fn checksum_offload_sees_through_vlan_tags() {
    let mut f = tcp(10);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    tx_checksum(&mut f, true, false, true).unwrap();
    let mut plain = f.clone();
    plain.drain(12..16);
    assert!(valid(&plain));
}

#[test]
fn malformed_headers_are_refused_never_read_past() {
    use OffloadReject::*;
    let good = tcp(40);
    let cases: Vec<(Vec<u8>, OffloadReject)> = vec![
        (good[..10].to_vec(), ShortEthernet(10)),
        (
            {
                // Cut inside a VLAN tag.
                let mut f = good[..16].to_vec();
                f[12] = 0x81;
                f[13] = 0x00;
                f
            },
            ShortEthernet(16),
        ),
        (
            {
                let mut f = good.clone();
                f[12] = 0x86;
                f[13] = 0xdd;
                f
            },
            NotIpv4(0x86dd),
        ),
        (good[..30].to_vec(), ShortIpHeader),
        (
            {
                let mut f = good.clone();
                f[14] = 0x65;
                f
            },
            IpVersion(6),
        ),
        (
            {
                let mut f = good.clone();
                f[14] = 0x41;
                f
            },
            IhlTooSmall(4),
        ),
        (
            {
                // IHL 60 bytes, 40 bytes after the MAC header.
                let mut f = good[..54].to_vec();
                f[14] = 0x4f;
                f
            },
            IhlBeyondFrame { ihl: 60, avail: 40 },
        ),
        (
            {
                // The CVE-2015-5165 shape: total length below the header length.
                let mut f = good.clone();
                f[16..18].copy_from_slice(&4u16.to_be_bytes());
                f
            },
            TotalBelowHeader { total: 4, ihl: 20 },
        ),
        (
            {
                let mut f = good.clone();
                f[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
                f
            },
            TotalBeyondFrame {
                total: 0xffff,
                avail: 80,
            },
        ),
        (
            {
                let mut f = good.clone();
                f[16..18].copy_from_slice(&30u16.to_be_bytes());
                f
            },
            ShortL4("TCP"),
        ),
        (
            {
                let mut f = good.clone();
                f[20] = 0x20; // more fragments
                f
            },
            Fragment,
        ),
        (
            udp(4),
            ProtocolMismatch {
                asked: "TCP",
                proto: 17,
            },
        ),
    ];
    for (mut f, want) in cases {
        let before = f.clone();
        assert_eq!(tx_checksum(&mut f, true, false, true), Err(want.clone()));
        assert_eq!(f, before, "a refused frame is left alone ({want})");
    }
    let mut u = udp(4);
    u[16..18].copy_from_slice(&(20 + 4u16).to_be_bytes());
    assert_eq!(tx_checksum(&mut u, true, true, false), Err(ShortL4("UDP")));
    let mut g = good.clone();
    assert_eq!(tx_checksum(&mut g, true, true, true), Err(Conflicting));
}

#[test]
fn ip_header_checksum_alone_needs_only_a_sane_ip_header() {
    let mut f = tcp(0);
    f[16..18].copy_from_slice(&20u16.to_be_bytes()); // no TCP header at all
    tx_checksum(&mut f, true, false, false).unwrap();
    assert_eq!(checksum(&f[14..34]), 0);
}

#[test]
fn large_send_segments_with_valid_checksums() {
    let f = tcp(3000);
    let segs = large_send(&f, 1000).unwrap();
    assert_eq!(segs.len(), 3);
    let mut data = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert!(valid(s), "segment {k}");
        assert_eq!(s.len(), 54 + 1000);
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 1 + 1000 * k as u32);
        assert_eq!(s[47] & 0x09 != 0, k == 2, "FIN/PSH on the last only");
        assert_eq!(be16(s, 18), 7 + k as u16, "IP ID increments");
        data.extend_from_slice(&s[54..]);
    }
    assert_eq!(data, f[54..]);
}

#[test]
fn large_send_refuses_what_it_cannot_segment() {
    assert_eq!(large_send(&tcp(100), 0), Err(OffloadReject::ZeroMss));
    assert_eq!(
        large_send(&udp(100), 50),
        Err(OffloadReject::ProtocolMismatch {
            asked: "TCP",
            proto: 17
        })
    );
    let mut f = tcp(100);
    f[16..18].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(
        large_send(&f, 50),
        Err(OffloadReject::TotalBelowHeader { total: 4, ihl: 20 })
    );
    let mut f = tcp(100);
    // TCP data offset 60 bytes, past the end of a 50-byte datagram.
    f[46] = 0xf0;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    assert!(matches!(
        large_send(&f, 50),
        Err(OffloadReject::LargeSend(_))
    ));
    let mut f = tcp(100);
    f[46] = 0x10; // data offset 4 words: below 20
    assert!(matches!(
        large_send(&f, 50),
        Err(OffloadReject::LargeSend(_))
    ));
}

#[test]
fn vlan_insert_and_strip_round_trip() {
    let f = tcp(10);
    let mut t = f.clone();
    vlan::insert(&mut t, TPID_8021Q, 0xa07b, &mut NetHdr::default());
    assert_eq!(&t[12..16], &[0x81, 0x00, 0xa0, 0x7b]);
    assert_eq!(strip_vlan(&mut t), Some(0xa07b));
    assert_eq!(t, f);
    assert_eq!(strip_vlan(&mut t), None, "untagged");
    let mut cut = vec![0u8; 15];
    cut[12] = 0x81;
    assert_eq!(strip_vlan(&mut cut), None);
}

#[test]
fn receive_checksum_status() {
    let status = |f: &[u8]| rx_checksum_status(f, false);
    let mut t = tcp(50);
    tx_checksum(&mut t, true, false, true).unwrap();
    assert_eq!(status(&t), PID_TCP << RXD_PID_SHIFT);
    let mut bad = t.clone();
    bad[60] ^= 1;
    assert_eq!(status(&bad), (PID_TCP << RXD_PID_SHIFT) | RXD_TCPF);
    assert_eq!(
        rx_checksum_status(&bad, true),
        PID_TCP << RXD_PID_SHIFT,
        "vouched"
    );
    let mut badip = t.clone();
    badip[22] ^= 1;
    assert_eq!(status(&badip), (PID_TCP << RXD_PID_SHIFT) | RXD_IPF);
    let mut u = udp(9);
    tx_checksum(&mut u, true, true, false).unwrap();
    assert_eq!(status(&u), PID_UDP << RXD_PID_SHIFT);
    u[40..42].fill(0);
    assert_eq!(status(&u), PID_UDP << RXD_PID_SHIFT, "no UDP checksum");
    u[45] ^= 1;
    assert_eq!(status(&u), PID_UDP << RXD_PID_SHIFT);
    let mut frag = t.clone();
    frag[20] = 0x20;
    tx_checksum(&mut frag, true, false, false).unwrap();
    assert_eq!(status(&frag), PID_IP << RXD_PID_SHIFT);
    let mut icmp = t.clone();
    icmp[23] = 1;
    tx_checksum(&mut icmp, true, false, false).unwrap();
    assert_eq!(status(&icmp), PID_IP << RXD_PID_SHIFT);
    // Not IP: nothing. Broken IP header lengths: IP, failed; never a panic.
    let mut arp = t.clone();
    arp[13] = 0x06;
    assert_eq!(status(&arp), 0);
    assert_eq!(status(&t[..20]), (PID_IP << RXD_PID_SHIFT) | RXD_IPF);
    let mut cve = t.clone();
    cve[16..18].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(status(&cve), (PID_IP << RXD_PID_SHIFT) | RXD_IPF);
    let mut short_tcp = t.clone();
    short_tcp[16..18].copy_from_slice(&24u16.to_be_bytes());
    assert_ne!(status(&short_tcp) & RXD_TCPF, 0);
    assert_eq!(status(&[]), 0);
}
