//! Frames the backend builds for the guest itself (everything smoltcp's
//! TCP does not): UDP (fragmented when larger than the MTU), ICMP, TCP
//! resets, and the ARP reply that seeds smoltcp's neighbor cache. All
//! through `smoltcp::wire` representations.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

use crate::device::GuestQueue;

/// Ethernet header length.
pub(crate) const ETH_HDR: usize = 14;
/// IPv4 header length (no options).
pub(crate) const IP_HDR: usize = 20;
/// IP payload per full-size packet (MTU 1500).
const IP_MTU_PAYLOAD: usize = 1500 - IP_HDR;
/// Largest UDP payload in one IPv4 datagram.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_535 - IP_HDR - 8;

/// Source and destination MACs of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct L2 {
    pub src: EthernetAddress,
    pub dst: EthernetAddress,
}

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

fn emit_eth(buf: &mut [u8], l2: L2, ethertype: EthernetProtocol) {
    let mut eth = EthernetFrame::new_unchecked(buf);
    EthernetRepr {
        src_addr: l2.src,
        dst_addr: l2.dst,
        ethertype,
    }
    .emit(&mut eth);
}

/// Queues an Ethernet/IPv4 frame whose IP payload (`payload_len` bytes)
/// is written by `emit`.
fn ipv4(
    q: &mut GuestQueue,
    l2: L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
    emit: impl FnOnce(&mut [u8]),
) -> bool {
    if payload_len > IP_MTU_PAYLOAD {
        return false; // larger than the guest's MTU
    }
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len,
        hop_limit: 64,
    };
    q.push_with(ETH_HDR + IP_HDR + payload_len, |buf| {
        emit_eth(buf, l2, EthernetProtocol::Ipv4);
        let mut p = Ipv4Packet::new_unchecked(&mut buf[ETH_HDR..]);
        ip.emit(&mut p, &caps());
        emit(p.payload_mut());
    })
}

/// Queues a UDP datagram, in IP fragments when it exceeds the MTU (all
/// fragments or none). `ident` is the IP identification for fragments.
pub(crate) fn udp(
    q: &mut GuestQueue,
    l2: L2,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    ident: u16,
) -> bool {
    if payload.len() > MAX_UDP_PAYLOAD {
        return false;
    }
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let (s, d) = (IpAddress::Ipv4(*src.ip()), IpAddress::Ipv4(*dst.ip()));
    let udp_len = 8 + payload.len();
    let fill = |b: &mut [u8]| {
        let mut p = UdpPacket::new_unchecked(b);
        repr.emit(
            &mut p,
            &s,
            &d,
            payload.len(),
            |out| out.copy_from_slice(payload),
            &caps(),
        );
    };
    if udp_len <= IP_MTU_PAYLOAD {
        return ipv4(q, l2, *src.ip(), *dst.ip(), IpProtocol::Udp, udp_len, fill);
    }
    let mut datagram = vec![0u8; udp_len];
    fill(&mut datagram);
    // Fragment payloads are multiples of 8 bytes, except the last.
    let chunk = IP_MTU_PAYLOAD / 8 * 8;
    let count = udp_len.div_ceil(chunk);
    if !q.room_for(count) {
        q.dropped += count as u64;
        return false;
    }
    for (i, part) in datagram.chunks(chunk).enumerate() {
        let ip = Ipv4Repr {
            src_addr: *src.ip(),
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Udp,
            payload_len: part.len(),
            hop_limit: 64,
        };
        q.push_with(ETH_HDR + IP_HDR + part.len(), |buf| {
            emit_eth(buf, l2, EthernetProtocol::Ipv4);
            let mut p = Ipv4Packet::new_unchecked(&mut buf[ETH_HDR..]);
            ip.emit(&mut p, &caps());
            p.set_ident(ident);
            p.set_dont_frag(false);
            p.set_more_frags(i + 1 < count);
            p.set_frag_offset((i * chunk) as u16);
            p.fill_checksum();
            p.payload_mut().copy_from_slice(part);
        });
    }
    true
}

/// Queues an ICMP message from `src` to `dst`.
pub(crate) fn icmp(
    q: &mut GuestQueue,
    l2: L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    repr: &Icmpv4Repr<'_>,
) -> bool {
    ipv4(q, l2, src, dst, IpProtocol::Icmp, repr.buffer_len(), |b| {
        repr.emit(&mut Icmpv4Packet::new_unchecked(b), &caps())
    })
}

/// Queues an ICMP port unreachable answering the guest's datagram
/// (`ip`, with `payload` its UDP header and data).
pub(crate) fn port_unreachable(q: &mut GuestQueue, l2: L2, ip: &Ipv4Repr, payload: &[u8]) -> bool {
    let data = &payload[..payload.len().min(8)];
    let repr = Icmpv4Repr::DstUnreachable {
        reason: smoltcp::wire::Icmpv4DstUnreachable::PortUnreachable,
        header: *ip,
        data,
    };
    icmp(q, l2, ip.dst_addr, ip.src_addr, &repr)
}

/// Queues the TCP reset answering the guest's segment `tcp` (RFC 9293
/// 3.10.7.1: seq from its ACK, or an ACK of everything it sent).
pub(crate) fn tcp_rst(q: &mut GuestQueue, l2: L2, ip: &Ipv4Repr, tcp: &TcpRepr<'_>) -> bool {
    if tcp.control == TcpControl::Rst {
        return false;
    }
    let (seq_number, ack_number) = match tcp.ack_number {
        Some(ack) => (ack, None),
        None => (
            smoltcp::wire::TcpSeqNumber(0),
            Some(tcp.seq_number + tcp.segment_len()),
        ),
    };
    let rst = TcpRepr {
        src_port: tcp.dst_port,
        dst_port: tcp.src_port,
        control: TcpControl::Rst,
        seq_number,
        ack_number,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let (s, d) = (IpAddress::Ipv4(ip.dst_addr), IpAddress::Ipv4(ip.src_addr));
    ipv4(
        q,
        l2,
        ip.dst_addr,
        ip.src_addr,
        IpProtocol::Tcp,
        rst.buffer_len(),
        |b| rst.emit(&mut TcpPacket::new_unchecked(b), &s, &d, &caps()),
    )
}

/// An ARP reply from the guest to `our_ip`: fed to smoltcp so that it
/// knows the guest's MAC without asking.
pub(crate) fn arp_reply(
    guest_mac: EthernetAddress,
    guest_ip: Ipv4Addr,
    our_mac: EthernetAddress,
    our_ip: Ipv4Addr,
) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: guest_mac,
        source_protocol_addr: guest_ip,
        target_hardware_addr: our_mac,
        target_protocol_addr: our_ip,
    };
    let mut buf = vec![0u8; ETH_HDR + repr.buffer_len()];
    emit_eth(
        &mut buf,
        L2 {
            src: guest_mac,
            dst: our_mac,
        },
        EthernetProtocol::Arp,
    );
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[ETH_HDR..]));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::TcpSeqNumber;

    const A: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
    const B: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn parse_ip(f: &[u8]) -> (Ipv4Repr, Vec<u8>, Ipv4Packet<&[u8]>) {
        let eth = EthernetFrame::new_checked(f).unwrap();
        let p = Ipv4Packet::new_checked(&f[ETH_HDR..]).unwrap();
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
        let pl = p.payload().to_vec();
        let r = Ipv4Repr::parse(&p, &caps()).unwrap_or(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: pl.len(),
            hop_limit: 64,
        });
        (r, pl, p)
    }

    #[test]
    fn udp_small_and_fragmented() {
        let mut q = GuestQueue::new(100);
        let l2 = L2 { src: A, dst: B };
        let s = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 3), 53);
        let d = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 15), 4000);
        assert!(udp(&mut q, l2, s, d, b"hello", 1));
        let f = q.pop().unwrap();
        let (ip, pl, _) = parse_ip(&f);
        let up = UdpPacket::new_checked(&pl[..]).unwrap();
        let ur = UdpRepr::parse(&up, &ip.src_addr.into(), &ip.dst_addr.into(), &caps()).unwrap();
        assert_eq!((ur.src_port, ur.dst_port), (53, 4000));
        assert_eq!(up.payload(), b"hello");

        let big: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        assert!(udp(&mut q, l2, s, d, &big, 77));
        let mut whole = Vec::new();
        let mut n = 0;
        while let Some(f) = q.pop() {
            assert!(f.len() <= 1514);
            let p = Ipv4Packet::new_checked(&f[ETH_HDR..]).unwrap();
            assert!(p.verify_checksum());
            assert_eq!(p.ident(), 77);
            assert_eq!(p.frag_offset() as usize, whole.len());
            assert_eq!(p.more_frags(), whole.len() + p.payload().len() < 4008);
            whole.extend_from_slice(p.payload());
            n += 1;
        }
        assert_eq!(n, 3);
        let up = UdpPacket::new_checked(&whole[..]).unwrap();
        assert!(up.verify_checksum(&(*s.ip()).into(), &(*d.ip()).into()));
        assert_eq!(up.payload(), &big[..]);

        let mut small = GuestQueue::new(2);
        assert!(
            !udp(&mut small, l2, s, d, &big, 1),
            "3 fragments do not fit in 2"
        );
        assert!(small.is_empty());
        assert!(!udp(&mut q, l2, s, d, &vec![0; MAX_UDP_PAYLOAD + 1], 1));
    }

    #[test]
    fn rst_answers_syn() {
        let mut q = GuestQueue::new(4);
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 2, 15),
            dst_addr: Ipv4Addr::new(10, 0, 2, 2),
            next_header: IpProtocol::Tcp,
            payload_len: 20,
            hop_limit: 64,
        };
        let syn = TcpRepr {
            src_port: 40000,
            dst_port: 22,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        assert!(tcp_rst(&mut q, L2 { src: A, dst: B }, &ip, &syn));
        let f = q.pop().unwrap();
        let (rip, pl, _) = parse_ip(&f);
        assert_eq!((rip.src_addr, rip.dst_addr), (ip.dst_addr, ip.src_addr));
        let tp = TcpPacket::new_checked(&pl[..]).unwrap();
        let t = TcpRepr::parse(&tp, &rip.src_addr.into(), &rip.dst_addr.into(), &caps()).unwrap();
        assert_eq!(t.control, TcpControl::Rst);
        assert_eq!(t.ack_number, Some(TcpSeqNumber(1001)));
        assert_eq!((t.src_port, t.dst_port), (22, 40000));
        let rst = TcpRepr {
            control: TcpControl::Rst,
            ..syn
        };
        assert!(
            !tcp_rst(&mut q, L2 { src: A, dst: B }, &ip, &rst),
            "no RST for an RST"
        );
    }

    #[test]
    fn arp_and_icmp() {
        let f = arp_reply(
            B,
            Ipv4Addr::new(10, 0, 2, 15),
            A,
            Ipv4Addr::new(10, 0, 2, 2),
        );
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let r = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert!(matches!(
            r,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                ..
            }
        ));
        let mut q = GuestQueue::new(4);
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 2, 15),
            dst_addr: Ipv4Addr::new(10, 0, 2, 2),
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        };
        assert!(port_unreachable(
            &mut q,
            L2 { src: A, dst: B },
            &ip,
            &[1; 12]
        ));
        let f = q.pop().unwrap();
        let (r, pl, _) = parse_ip(&f);
        assert_eq!((r.src_addr, r.dst_addr), (ip.dst_addr, ip.src_addr));
        // smoltcp's parser wants the whole quoted datagram; RFC 792 quotes
        // the header and 8 bytes, so look at the fields directly.
        let p = Icmpv4Packet::new_checked(&pl[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((u8::from(p.msg_type()), p.msg_code()), (3, 3));
        assert_eq!(pl.len(), 8 + 20 + 8);
        let quoted = Ipv4Packet::new_unchecked(&pl[8..28]);
        assert_eq!(
            (quoted.src_addr(), quoted.dst_addr()),
            (ip.src_addr, ip.dst_addr)
        );
    }
}
