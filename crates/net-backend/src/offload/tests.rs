use super::*;
use crate::hdr::{DATA_VALID, GSO_ECN};

/// An independent, deliberately naive RFC 1071 sum: 16-bit words one at a
/// time with the carry folded in at every step. Returns the folded sum.
fn naive_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes: Vec<u8> = parts.concat();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = 0;
    for w in bytes.chunks(2) {
        s += (u32::from(w[0]) << 8) | u32::from(w[1]);
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn mac_header(ethertype: u16) -> Vec<u8> {
    let mut f = vec![
        0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef,
    ];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

#[test]
fn rfc1071_and_known_ipv4_header() {
    // RFC 1071, section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(fold(sum_words(&d, 0)), 0xddf2);
    assert_eq!(checksum(&d), !0xddf2);
    // Odd length: the last byte is a high byte.
    assert_eq!(fold(sum_words(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    // The classic IPv4 header example (checksum b861), completed in place.
    let ip = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(checksum(&ip), 0xb861);
    let mut frame = mac_header(0x0800);
    frame.extend_from_slice(&ip);
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 14,
        csum_offset: 10,
        ..Default::default()
    };
    complete_checksum(&hdr, &mut frame).unwrap();
    assert_eq!(&frame[24..26], &[0xb8, 0x61]);
}

#[test]
fn completes_udp_partial_checksum() {
    // 192.0.2.1:1234 -> 192.0.2.2:5678 "tapir says hi"; the checksum 0x9397
    // was computed independently (a separate script).
    let payload = b"tapir says hi";
    let udp_len = 8 + payload.len() as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    let mut frame = mac_header(0x0800);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&1234u16.to_be_bytes());
    frame.extend_from_slice(&5678u16.to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    // What a guest puts in the field: the folded pseudo-header sum.
    let pseudo = naive_sum(&[&[192, 0, 2, 1, 192, 0, 2, 2, 0, 17], &udp_len.to_be_bytes()]);
    frame.extend_from_slice(&pseudo.to_be_bytes());
    frame.extend_from_slice(payload);
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    complete_checksum(&hdr, &mut frame).unwrap();
    assert_eq!(be16(&frame, 40), 0x9397);
}

#[test]
fn completes_icmp_checksum() {
    // Echo request id 0x1234 seq 1 "abcdefgh": checksum 0x5435 (computed
    // independently); ICMP has no pseudo-header, so the field starts at 0.
    let mut frame = mac_header(0x0800);
    frame.extend_from_slice(&[
        0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    frame.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    frame.extend_from_slice(b"abcdefgh");
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 2,
        ..Default::default()
    };
    complete_checksum(&hdr, &mut frame).unwrap();
    assert_eq!(be16(&frame, 36), 0x5435);
    // Without NEEDS_CSUM nothing is touched.
    let before = frame.clone();
    complete_checksum(
        &NetHdr {
            flags: DATA_VALID,
            ..hdr
        },
        &mut frame,
    )
    .unwrap();
    assert_eq!(frame, before);
}

#[test]
fn bad_checksum_offsets_are_errors() {
    let mut f = vec![0u8; 60];
    let h = |start, offset| NetHdr {
        flags: NEEDS_CSUM,
        csum_start: start,
        csum_offset: offset,
        ..Default::default()
    };
    assert_eq!(
        complete_checksum(&h(61, 0), &mut f),
        Err(OffloadError::CsumStart { start: 61, len: 60 })
    );
    assert_eq!(
        complete_checksum(&h(50, 9), &mut f),
        Err(OffloadError::CsumOffset { at: 59, len: 60 })
    );
    assert_eq!(
        complete_checksum(&h(0xffff, 0xffff), &mut f),
        Err(OffloadError::CsumStart {
            start: 0xffff,
            len: 60
        })
    );
    assert_eq!(
        complete_checksum(&h(50, 0xffff), &mut f),
        Err(OffloadError::CsumOffset {
            at: 50 + 0xffff,
            len: 60
        })
    );
    assert!(complete_checksum(&h(50, 8), &mut f).is_ok());
    assert!(complete_checksum(&h(58, 0), &mut f).is_ok());
    assert!(complete_checksum(&h(0, 0), &mut []).is_err());
}

/// A TCP frame: optional VLAN tag, IPv4 or IPv6 (with a hop-by-hop header
/// when `ext`), TCP with 12 bytes of options, the given payload.
fn tcp_frame(v6: bool, vlan: bool, ext: bool, payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
    let mut f = mac_header(if vlan {
        0x8100
    } else if v6 {
        0x86dd
    } else {
        0x0800
    });
    if vlan {
        f.extend_from_slice(&[0x00, 0x2a]);
        f.extend_from_slice(&(if v6 { 0x86dd_u16 } else { 0x0800 }).to_be_bytes());
    }
    let tcp_len = 32 + payload.len();
    if v6 {
        let ext_len = if ext { 8 } else { 0 };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((tcp_len + ext_len) as u16).to_be_bytes());
        f.extend_from_slice(&[if ext { 0 } else { 6 }, 64]);
        f.extend((0..16).map(|i| 0x20 + i as u8));
        f.extend((0..16).map(|i| 0x40 + i as u8));
        if ext {
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // PadN option
        }
    } else {
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0xff, 0xfe, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let l3 = f.len() - 20;
        let c = !naive_sum(&[&f[l3..]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&0x01020304u32.to_be_bytes());
    f.extend_from_slice(&[0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
    f.extend_from_slice(payload);
    f
}

/// Checks one segment independently of the code under test and returns
/// `(l3, l4, payload offset)`.
fn verify_segment(seg: &[u8], v6: bool, vlan: bool, ext: bool) -> (usize, usize, usize) {
    let l3 = if vlan { 18 } else { 14 };
    let l4 = l3 + if v6 { 40 + if ext { 8 } else { 0 } } else { 20 };
    let tcp = &seg[l4..];
    let pseudo_len = (tcp.len() as u32).to_be_bytes();
    let sum = if v6 {
        assert_eq!(
            usize::from(be16(seg, l3 + 4)),
            seg.len() - l3 - 40,
            "IPv6 payload length"
        );
        naive_sum(&[&seg[l3 + 8..l3 + 40], &pseudo_len, &[0, 0, 0, 6], tcp])
    } else {
        assert_eq!(
            usize::from(be16(seg, l3 + 2)),
            seg.len() - l3,
            "IPv4 total length"
        );
        assert_eq!(naive_sum(&[&seg[l3..l4]]), 0xffff, "IPv4 header checksum");
        naive_sum(&[&seg[l3 + 12..l3 + 20], &[0, 6], &pseudo_len[2..], tcp])
    };
    assert_eq!(sum, 0xffff, "TCP checksum");
    (l3, l4, l4 + 32)
}

fn check_tso(v6: bool, vlan: bool, ext: bool) {
    let payload: Vec<u8> = (0..2990u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let seq = u32::MAX - 1500; // wraps inside the second segment
    let flags = TCP_CWR | TCP_PSH | TCP_FIN | 0x10;
    let frame = tcp_frame(v6, vlan, ext, &payload, seq, flags);
    let gso_type = if v6 { GSO_TCPV6 } else { GSO_TCPV4 } | GSO_ECN;
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        gso_type,
        hdr_len: 66,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let segs = segment(&hdr, &frame).unwrap();
    assert_eq!(segs.len(), 3);
    let mut joined = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let (l3, l4, p) = verify_segment(seg, v6, vlan, ext);
        assert_eq!(
            &seg[..p - 32],
            &frame[..p - 32]
                .iter()
                .enumerate()
                .map(|(j, &b)| {
                    // Only length, id and checksum fields may differ in the IP header.
                    let ip_var = if v6 {
                        j == l3 + 4 || j == l3 + 5
                    } else {
                        (l3 + 2..l3 + 6).contains(&j) || (l3 + 10..l3 + 12).contains(&j)
                    };
                    if ip_var {
                        seg[j]
                    } else {
                        b
                    }
                })
                .collect::<Vec<_>>()[..]
        );
        if !v6 {
            assert_eq!(
                be16(seg, l3 + 4),
                0xfffe_u16.wrapping_add(i as u16),
                "IPv4 id"
            );
        }
        let s = u32::from_be_bytes(seg[l4 + 4..l4 + 8].try_into().unwrap());
        assert_eq!(s, seq.wrapping_add(1000 * i as u32));
        let f = seg[l4 + 13];
        assert_eq!(f & TCP_CWR != 0, i == 0, "CWR only on the first");
        assert_eq!(
            f & (TCP_PSH | TCP_FIN) != 0,
            i == 2,
            "PSH/FIN only on the last"
        );
        assert_eq!(f & 0x10, 0x10, "ACK on all");
        assert_eq!(seg.len() - p, if i < 2 { 1000 } else { 990 });
        joined.extend_from_slice(&seg[p..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn tso_ipv4() {
    check_tso(false, false, false);
}

#[test]
fn tso_ipv6() {
    check_tso(true, false, false);
}

#[test]
fn tso_vlan_and_ipv6_options() {
    check_tso(false, true, false);
    check_tso(true, true, true);
}

#[test]
fn tso_small_and_empty_payloads() {
    for len in [0usize, 1, 999, 1000] {
        let payload = vec![0x5a; len];
        let frame = tcp_frame(false, false, false, &payload, 1, 0x18);
        let hdr = NetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..Default::default()
        };
        let segs = segment(&hdr, &frame).unwrap();
        assert_eq!(segs.len(), 1, "len {len}");
        verify_segment(&segs[0], false, false, false);
        assert_eq!(segs[0][47], 0x18, "flags of a single segment stay");
    }
    // Ethernet padding after the datagram is not payload.
    let mut padded = tcp_frame(false, false, false, &[], 1, 0x10);
    padded.extend_from_slice(&[0; 6]);
    let segs = segment(
        &NetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Default::default()
        },
        &padded,
    )
    .unwrap();
    assert_eq!(segs[0].len(), padded.len() - 6);
}

#[test]
fn segment_without_gso_completes_checksum() {
    let mut frame = tcp_frame(false, false, false, b"payload", 7, 0x18);
    let pseudo = naive_sum(&[&frame[26..34], &[0, 6], &(39u16).to_be_bytes()]);
    frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    let segs = segment(&hdr, &frame).unwrap();
    assert_eq!(segs.len(), 1);
    verify_segment(&segs[0], false, false, false);
    assert_eq!(segment(&NetHdr::default(), &frame).unwrap(), vec![frame]);
}

#[test]
fn tso_rejects_bad_frames() {
    let h4 = NetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 100,
        ..Default::default()
    };
    let h6 = NetHdr {
        gso_type: GSO_TCPV6,
        ..h4
    };
    let good = tcp_frame(false, false, false, &[1; 300], 1, 0x10);
    assert!(segment(&NetHdr { gso_size: 0, ..h4 }, &good).is_err());
    assert!(matches!(
        segment(&h6, &good),
        Err(OffloadError::Malformed(_))
    ));
    assert!(matches!(
        segment(
            &NetHdr {
                gso_type: GSO_UDP,
                ..h4
            },
            &good
        ),
        Err(OffloadError::Unsupported(_))
    ));
    assert!(matches!(
        segment(&NetHdr { gso_type: 7, ..h4 }, &good),
        Err(OffloadError::Unsupported(_))
    ));
    let edit = |at: usize, v: u8| {
        let mut f = good.clone();
        f[at] = v;
        segment(&h4, &f)
    };
    assert!(edit(14, 0x44).is_err(), "ihl 4");
    assert!(edit(14, 0x55).is_err(), "version 5");
    assert!(edit(16, 0xff).is_err(), "total length beyond frame");
    let tot = |v: u16| {
        let mut f = good.clone();
        f[16..18].copy_from_slice(&v.to_be_bytes());
        segment(&h4, &f)
    };
    assert!(
        tot(10).is_err() && tot(40).is_err(),
        "total length below headers"
    );
    assert_eq!(
        tot(60).unwrap().len(),
        1,
        "a shorter datagram: the rest is padding"
    );
    assert!(edit(20, 0x20).is_err(), "more fragments");
    assert!(edit(23, 17).is_err(), "UDP");
    assert!(edit(46, 0x40).is_err(), "TCP data offset 16");
    // Every truncation of valid IPv4 and IPv6 frames: errors, no panics.
    let good6 = tcp_frame(true, true, true, &[2; 300], 1, 0x10);
    for n in 0..good.len() {
        assert!(segment(&h4, &good[..n]).is_err(), "ipv4 cut at {n}");
    }
    for n in 0..good6.len() {
        assert!(segment(&h6, &good6[..n]).is_err(), "ipv6 cut at {n}");
    }
}

#[test]
fn tso_survives_random_mutation() {
    // A small deterministic fuzz: random byte flips in headers, random gso
    // sizes; the only requirement is no panic and segments within bounds.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let bases = [
        tcp_frame(false, false, false, &[3; 500], 9, 0x19),
        tcp_frame(true, true, true, &[4; 500], 9, 0x19),
    ];
    for round in 0..4000 {
        let mut f = bases[round % 2].clone();
        for _ in 0..(rnd() % 4 + 1) {
            let at = (rnd() % 90) as usize;
            f[at] = rnd() as u8;
        }
        let gso_type = [GSO_TCPV4, GSO_TCPV6, GSO_NONE][(rnd() % 3) as usize];
        let hdr = NetHdr {
            flags: (rnd() % 2) as u8,
            gso_type,
            gso_size: (rnd() % 700) as u16,
            csum_start: (rnd() % 700) as u16,
            csum_offset: (rnd() % 64) as u16,
            ..Default::default()
        };
        if let Ok(segs) = segment(&hdr, &f) {
            assert!(segs.iter().all(|s| s.len() <= f.len()));
        }
    }
}

#[test]
fn big_endian_fields() {
    let mut b = [0u8; 4];
    put16(&mut b, 1, 0xbeef);
    assert_eq!(b, [0, 0xbe, 0xef, 0]);
    assert_eq!(be16(&b, 1), 0xbeef);
    assert_eq!(try_be16(&b, 2), Some(0xef00));
    assert_eq!(try_be16(&b, 3), None, "one byte short");
    assert_eq!(try_be16(&b, usize::MAX), None);
}
