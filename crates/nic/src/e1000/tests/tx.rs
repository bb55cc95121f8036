//! Transmit: legacy and extended descriptors, checksum offload, TSO in
//! software and as GSO frames, VLAN insertion.

use tapir_net_backend::hdr::{GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use tapir_net_backend::offload::{complete_checksum, segment};
use tapir_net_backend::Offloads;

use super::*;

const RS_EOP: u8 = TXD_CMD_RS | TXD_CMD_EOP;
const CSUM_ONLY: Offloads = Offloads {
    csum: true,
    tso4: false,
    tso6: false,
    tso_ecn: false,
};

#[test]
fn legacy_descriptor_frame_reaches_the_peer() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let _ = n.r(ICR);
    let frame = eth(PEER_MAC, 0x0800, &payload(100, 3));
    n.send_legacy(&frame);
    let got = n.take_frames(1);
    assert_eq!(got[0], (NetHdr::default(), frame));
    n.wait_tx_head(1);
    assert_eq!(n.tx_status(0) & TXD_STAT_DD, TXD_STAT_DD);
    n.eventually("TXDW interrupt", |n| n.line.high());
    assert_eq!(n.r(ICR) & (INT_TXDW | INT_TXQE), INT_TXDW | INT_TXQE);
    assert_eq!(n.dev.stats().tx_frames.load(Ordering::SeqCst), 1);
}

#[test]
fn packet_over_several_descriptors_and_short_padding() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let frame = eth(PEER_MAC, 0x0800, &payload(3000, 4));
    let (a, b, c) = (&frame[..14], &frame[14..1000], &frame[1000..]);
    let descs = [
        legacy(n.tx_data(0, a), a.len(), 0x02, 0, 0, 0),
        legacy(n.tx_data(1, b), b.len(), 0x02, 0, 0, 0),
        // A zero-length buffer in the middle is skipped.
        legacy(tx_buf(2), 0, 0x02, 0, 0, 0),
        legacy(n.tx_data(3, c), c.len(), 0x02 | RS_EOP, 0, 0, 0),
    ];
    n.tx_push(&descs);
    assert_eq!(n.take_frames(1)[0].1, frame);
    n.wait_tx_head(4);
    assert_eq!(n.tx_status(3) & TXD_STAT_DD, TXD_STAT_DD);
    assert_eq!(n.tx_status(0) & TXD_STAT_DD, 0, "no RS, no write-back");
    // TCTL.PSP pads a runt to 60 bytes.
    let runt = eth(PEER_MAC, 0x0806, &[1, 2, 3]);
    n.send_legacy(&runt);
    let got = n.take_frames(1);
    assert_eq!(got[0].1.len(), 60);
    assert_eq!(&got[0].1[..17], &runt[..]);
}

#[test]
fn legacy_insert_checksum() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let mut frame = ipv4_tcp(&payload(300, 5), false, 0x18);
    // Legacy IC: sum from CSS to the end into CSO (the TCP checksum).
    let a = n.tx_data(0, &frame);
    n.tx_push(&[legacy(a, frame.len(), RS_EOP | TXD_CMD_IC, 34 + 16, 34, 0)]);
    let got = n.take_frames(1);
    check_ipv4_tcp(&got[0].1);
    frame[50..52].copy_from_slice(&got[0].1[50..52]);
    assert_eq!(got[0].1, frame);
}

/// Sends `frame` with a checksum context: IXSM + TXSM over IPv4/TCP.
fn send_with_csum_context(n: &mut Nic, frame: &[u8]) {
    let ctx = context((14, 24, 33), (34, 50, 0), 0, TUCMD_TCP | TUCMD_IP, 0, 0);
    let a = n.tx_data(1, frame);
    let d = data(a, frame.len(), RS_EOP, POPTS_IXSM | POPTS_TXSM, 0);
    n.tx_push(&[ctx, d]);
}

#[test]
fn checksum_offload_in_software() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let mut frame = ipv4_tcp(&payload(1000, 6), false, 0x18);
    // The IP checksum is left for the device too.
    frame[24..26].copy_from_slice(&[0, 0]);
    send_with_csum_context(&mut n, &frame);
    let got = n.take_frames(1);
    assert_eq!(got[0].0, NetHdr::default());
    let (id, seq, _, len) = check_ipv4_tcp(&got[0].1);
    assert_eq!((id, seq, len), (0x1234, 1000, 1000));
    n.wait_tx_head(2);
    assert_eq!(n.tx_status(1) & TXD_STAT_DD, TXD_STAT_DD);
}

#[test]
fn checksum_offload_handed_to_a_capable_backend() {
    let mut n = Nic::new(CSUM_ONLY);
    n.up();
    let mut frame = ipv4_tcp(&payload(1000, 7), false, 0x18);
    frame[24..26].copy_from_slice(&[0, 0]);
    send_with_csum_context(&mut n, &frame);
    let (h, mut f) = n.take_frames(1).remove(0);
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (NEEDS_CSUM, 34, 16));
    assert_eq!(fold(sum_words(&f[14..34], 0)), 0xFFFF, "IP done here");
    complete_checksum(&h, &mut f).unwrap();
    check_ipv4_tcp(&f);
}

/// A TSO packet: context + header descriptor + two payload descriptors.
fn send_tso_v4(n: &mut Nic, frame: &[u8], mss: u16) {
    let hdrlen = 54u8;
    let paylen = (frame.len() - 54) as u32;
    let ctx = context(
        (14, 24, 33),
        (34, 50, 0),
        paylen,
        TUCMD_TCP | TUCMD_IP | TXD_CMD_TSE,
        hdrlen,
        mss,
    );
    let split = 54 + 2000;
    let popts = POPTS_IXSM | POPTS_TXSM;
    let cmd = TXD_CMD_TSE;
    let d0 = data(n.tx_data(1, &frame[..54]), 54, cmd, popts, 0);
    let d1 = data(n.tx_data(2, &frame[54..split]), split - 54, cmd, popts, 0);
    let d2 = data(
        n.tx_data(3, &frame[split..]),
        frame.len() - split,
        cmd | RS_EOP,
        popts,
        0,
    );
    n.tx_push(&[ctx, d0, d1, d2]);
}

#[test]
fn tso_in_software_makes_checksummed_segments() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let data = payload(5000, 8);
    let frame = ipv4_tcp(&data, true, 0x19); // FIN | PSH | ACK
    send_tso_v4(&mut n, &frame, 1460);
    let got = n.take_frames(4);
    let mut all = Vec::new();
    for (i, (h, f)) in got.iter().enumerate() {
        assert_eq!(*h, NetHdr::default());
        let (id, seq, flags, len) = check_ipv4_tcp(f);
        assert_eq!(id, 0x1234 + i as u16);
        assert_eq!(seq, 1000 + 1460 * i as u32);
        let last = i == 3;
        assert_eq!(len, if last { 5000 - 3 * 1460 } else { 1460 });
        assert_eq!(
            flags,
            if last { 0x19 } else { 0x10 },
            "FIN/PSH on the last only"
        );
        all.extend_from_slice(&f[54..]);
    }
    assert_eq!(all, data);
    n.wait_tx_head(4);
    assert_eq!(n.tx_status(3) & TXD_STAT_DD, TXD_STAT_DD);
    assert_eq!(n.r(TSCTC), 1);
    assert_eq!(n.r(GPTC), 4);
}

#[test]
fn tso_ipv6_in_software() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let data = payload(3000, 9);
    let frame = ipv6_tcp(&data, true);
    let ctx = context(
        (14, 0, 0),
        (54, 70, 0),
        3000,
        TUCMD_TCP | TXD_CMD_TSE,
        74,
        1200,
    );
    let d = data_desc_one(&mut n, &frame, TXD_CMD_TSE | RS_EOP, POPTS_TXSM);
    n.tx_push(&[ctx, d]);
    let got = n.take_frames(3);
    let mut all = Vec::new();
    for (i, (_, f)) in got.iter().enumerate() {
        let (seq, _, len) = check_ipv6_tcp(f);
        assert_eq!(seq, 7000 + 1200 * i as u32);
        assert_eq!(len, [1200, 1200, 600][i]);
        all.extend_from_slice(&f[74..]);
    }
    assert_eq!(all, data);
}

fn data_desc_one(n: &mut Nic, frame: &[u8], cmd: u8, popts: u8) -> [u8; 16] {
    data(n.tx_data(1, frame), frame.len(), cmd, popts, 0)
}

#[test]
fn tso_as_one_gso_frame_when_the_backend_segments() {
    let mut n = Nic::new(Offloads::ALL);
    n.up();
    let data = payload(5000, 10);
    let frame = ipv4_tcp(&data, true, 0x18);
    send_tso_v4(&mut n, &frame, 1460);
    let (h, f) = n.take_frames(1).remove(0);
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(
        (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
        (54, 1460, 34, 16)
    );
    assert_eq!(f.len(), frame.len());
    // The TCP field holds the pseudo-header sum with the full length (as
    // virtio-net GSO wants it): completing it checksums the whole frame.
    let mut whole = f.clone();
    let plain = NetHdr { gso_type: 0, ..h };
    complete_checksum(&plain, &mut whole).unwrap();
    check_ipv4_tcp(&whole);
    // What the host does with it gives the same segments as the device.
    let segs = segment(&h, &f).unwrap();
    assert_eq!(segs.len(), 4);
    for (i, s) in segs.iter().enumerate() {
        let (id, seq, _, _) = check_ipv4_tcp(s);
        assert_eq!((id, seq), (0x1234 + i as u16, 1000 + 1460 * i as u32));
    }
    n.wait_tx_head(4);
    assert_eq!(n.r(GPTC), 4, "counted as segments");

    // IPv6 likewise.
    let frame = ipv6_tcp(&payload(3000, 11), true);
    let ctx = context(
        (14, 0, 0),
        (54, 70, 0),
        3000,
        TUCMD_TCP | TXD_CMD_TSE,
        74,
        1200,
    );
    let d = data_desc_one(&mut n, &frame, TXD_CMD_TSE | RS_EOP, POPTS_TXSM);
    n.tx_push(&[ctx, d]);
    let (h, f) = n.take_frames(1).remove(0);
    assert_eq!(h.gso_type, GSO_TCPV6);
    for s in segment(&h, &f).unwrap() {
        check_ipv6_tcp(&s);
    }
}

#[test]
fn vlan_tag_inserted_with_vle_and_vme() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let frame = eth(PEER_MAC, 0x0800, &payload(80, 12));
    let a = n.tx_data(0, &frame);
    let tci = (5 << 13) | 100;
    // Without CTRL.VME, VLE is ignored.
    n.tx_push(&[legacy(a, frame.len(), RS_EOP | TXD_CMD_VLE, 0, 0, tci)]);
    assert_eq!(n.take_frames(1)[0].1, frame);
    let ctrl = n.r(CTRL);
    n.w(CTRL, ctrl | CTRL_VME);
    n.tx_push(&[legacy(a, frame.len(), RS_EOP | TXD_CMD_VLE, 0, 0, tci)]);
    let got = n.take_frames(1).remove(0).1;
    assert_eq!(&got[12..16], &[0x81, 0x00, 0xA0, 100]);
    assert_eq!(&got[16..], &frame[12..]);
    // With offloads handed over, the checksum start moves with the tag.
    let mut n = Nic::new(CSUM_ONLY);
    n.up();
    let ctrl = n.r(CTRL);
    n.w(CTRL, ctrl | CTRL_VME);
    let f = ipv4_tcp(&payload(100, 13), false, 0x18);
    let ctx = context((14, 24, 33), (34, 50, 0), 0, TUCMD_TCP | TUCMD_IP, 0, 0);
    let d = data(
        n.tx_data(1, &f),
        f.len(),
        RS_EOP | TXD_CMD_VLE,
        POPTS_TXSM,
        7,
    );
    n.tx_push(&[ctx, d]);
    let (h, g) = n.take_frames(1).remove(0);
    assert_eq!((h.csum_start, &g[12..16]), (38, &[0x81, 0, 0, 7][..]));
}

#[test]
fn transmitter_waits_for_tctl_en() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.w(TCTL, TCTL_PSP);
    n.send_legacy(&eth(PEER_MAC, 0x0800, &payload(64, 14)));
    n.pump();
    assert_eq!(n.peer.pending_from_guest(), 0);
    assert_eq!(n.r(TDH), 0);
    n.w(TCTL, TCTL_PSP | TCTL_EN);
    n.take_frames(1);
    n.wait_tx_head(1);
}
