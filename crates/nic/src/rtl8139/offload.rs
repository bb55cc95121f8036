//! C+ checksum offload, large send and VLAN tag handling, in software.
//!
//! Every header field used here comes from the guest (TX) or the network
//! (RX). The class of bug behind CVE-2015-5165 (an IP header or total
//! length that points outside the frame, or a total length smaller than the
//! header, turned into an out-of-bounds read) cannot happen: [`parse_ipv4`]
//! checks each length against the frame before any slice is taken, every
//! slice is then taken within those checked bounds, and a request that
//! does not fit the frame is an [`OffloadReject`] (the frame is dropped and
//! counted), never a panic or a read past the frame.

use tapir_net_backend::hdr::{GSO_ECN, GSO_TCPV4, NEEDS_CSUM};
use tapir_net_backend::offload::{be16, fold, put16, segment, sum_words, OffloadError, TCP_CWR};
use tapir_net_backend::{NetHdr, Offloads};

use crate::vlan::TPID_8021Q;

use super::regs::{PID_IP, PID_TCP, PID_UDP, RXD_IPF, RXD_PID_SHIFT, RXD_TCPF, RXD_UDPF};

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// VLAN tags skipped before the IP header.
const MAX_TAGS: usize = 2;

/// Why a C+ transmit offload request was refused (the frame is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadReject {
    /// Shorter than an Ethernet header (or a VLAN tag).
    #[error("frame of {0} bytes too short for its Ethernet header")]
    ShortEthernet(usize),
    /// Checksum offload asked for a frame that is not IPv4.
    #[error("checksum offload of a frame that is not IPv4 (EtherType {0:#06x})")]
    NotIpv4(u16),
    /// The frame ends inside the fixed IPv4 header.
    #[error("frame ends inside the IPv4 header")]
    ShortIpHeader,
    /// The IPv4 version field is not 4.
    #[error("IPv4 version field is {0}")]
    IpVersion(u8),
    /// IHL below 5 words.
    #[error("IPv4 header length {0} is below 20")]
    IhlTooSmall(usize),
    /// IHL reaches past the end of the frame.
    #[error("IPv4 header length {ihl} runs past the frame ({avail} bytes after the MAC header)")]
    IhlBeyondFrame {
        /// The header length.
        ihl: usize,
        /// Bytes from the IP header to the frame end.
        avail: usize,
    },
    /// Total length smaller than the header length.
    #[error("IPv4 total length {total} is below its header length {ihl}")]
    TotalBelowHeader {
        /// The total length field.
        total: usize,
        /// The header length.
        ihl: usize,
    },
    /// Total length reaches past the end of the frame.
    #[error("IPv4 total length {total} runs past the frame ({avail} bytes after the MAC header)")]
    TotalBeyondFrame {
        /// The total length field.
        total: usize,
        /// Bytes from the IP header to the frame end.
        avail: usize,
    },
    /// TCP and UDP checksums asked for at once.
    #[error("both TCP and UDP checksum offload requested")]
    Conflicting,
    /// The L4 checksum asked for is not the datagram's protocol.
    #[error("{asked} checksum requested for IP protocol {proto}")]
    ProtocolMismatch {
        /// "TCP" or "UDP".
        asked: &'static str,
        /// The protocol field.
        proto: u8,
    },
    /// An L4 checksum of a fragment cannot be computed.
    #[error("L4 checksum offload of an IPv4 fragment")]
    Fragment,
    /// The datagram ends inside the L4 header.
    #[error("IP datagram ends inside its {0} header")]
    ShortL4(&'static str),
    /// Large send with MSS 0.
    #[error("large send with MSS 0")]
    ZeroMss,
    /// The large-send segmenter refused the frame.
    #[error("large send: {0}")]
    LargeSend(#[from] OffloadError),
}

/// Where the parts of an IPv4 frame lie; all within the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Layout {
    /// Start of the IP header.
    pub l3: usize,
    /// Start of the L4 header (`l3` + IHL).
    pub l4: usize,
    /// End of the IP datagram (`l3` + total length; Ethernet padding after).
    pub end: usize,
    /// Protocol field.
    pub proto: u8,
    /// More-fragments set or a fragment offset.
    pub fragment: bool,
}

/// The EtherType after up to two VLAN tags and where its payload starts.
fn ethertype(frame: &[u8]) -> Result<(u16, usize), OffloadReject> {
    if frame.len() < ETH_HLEN {
        return Err(OffloadReject::ShortEthernet(frame.len()));
    }
    let (mut et, mut l3) = (be16(frame, 12), ETH_HLEN);
    let mut tags = 0;
    while (et == TPID_8021Q || et == ETH_P_8021AD) && tags < MAX_TAGS {
        if frame.len() < l3 + 4 {
            return Err(OffloadReject::ShortEthernet(frame.len()));
        }
        et = be16(frame, l3 + 2);
        l3 += 4;
        tags += 1;
    }
    Ok((et, l3))
}

/// Parses and checks the IPv4 header of `frame` (every length against the
/// frame; see the module documentation).
pub fn parse_ipv4(frame: &[u8]) -> Result<Ipv4Layout, OffloadReject> {
    let (et, l3) = ethertype(frame)?;
    if et != ETH_P_IPV4 {
        return Err(OffloadReject::NotIpv4(et));
    }
    let avail = frame.len() - l3;
    if avail < 20 {
        return Err(OffloadReject::ShortIpHeader);
    }
    let version = frame[l3] >> 4;
    if version != 4 {
        return Err(OffloadReject::IpVersion(version));
    }
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    if ihl < 20 {
        return Err(OffloadReject::IhlTooSmall(ihl));
    }
    if ihl > avail {
        return Err(OffloadReject::IhlBeyondFrame { ihl, avail });
    }
    let total = usize::from(be16(frame, l3 + 2));
    if total < ihl {
        return Err(OffloadReject::TotalBelowHeader { total, ihl });
    }
    if total > avail {
        return Err(OffloadReject::TotalBeyondFrame { total, avail });
    }
    Ok(Ipv4Layout {
        l3,
        l4: l3 + ihl,
        end: l3 + total,
        proto: frame[l3 + 9],
        fragment: be16(frame, l3 + 6) & 0x3fff != 0,
    })
}

/// The IPv4 pseudo-header sum for the datagram's L4 segment.
fn pseudo_sum(frame: &[u8], lay: &Ipv4Layout) -> u64 {
    let len = (lay.end - lay.l4) as u64;
    sum_words(&frame[lay.l3 + 12..lay.l3 + 20], u64::from(lay.proto) + len)
}

/// Whether the L4 checksum (pseudo-header included) verifies.
fn l4_ok(frame: &[u8], lay: &Ipv4Layout) -> bool {
    fold(sum_words(&frame[lay.l4..lay.end], pseudo_sum(frame, lay))) == 0xffff
}

/// Whether the IPv4 header checksum verifies.
fn ip_header_ok(frame: &[u8], lay: &Ipv4Layout) -> bool {
    fold(sum_words(&frame[lay.l3..lay.l4], 0)) == 0xffff
}

/// Carries out the IPCS / UDPCS / TCPCS requests of a C+ TX descriptor on
/// `frame` (checksums computed from scratch, as the chip does).
pub fn tx_checksum(frame: &mut [u8], ip: bool, udp: bool, tcp: bool) -> Result<(), OffloadReject> {
    if !(ip || udp || tcp) {
        return Ok(());
    }
    if udp && tcp {
        return Err(OffloadReject::Conflicting);
    }
    let lay = parse_ipv4(frame)?;
    if udp || tcp {
        let (asked, proto, min, field) = if tcp {
            ("TCP", IPPROTO_TCP, TCP_HLEN, 16)
        } else {
            ("UDP", IPPROTO_UDP, UDP_HLEN, 6)
        };
        if lay.proto != proto {
            return Err(OffloadReject::ProtocolMismatch {
                asked,
                proto: lay.proto,
            });
        }
        if lay.fragment {
            return Err(OffloadReject::Fragment);
        }
        if lay.end - lay.l4 < min {
            return Err(OffloadReject::ShortL4(asked));
        }
        put16(frame, lay.l4 + field, 0);
        let mut c = !fold(sum_words(&frame[lay.l4..lay.end], pseudo_sum(frame, &lay)));
        if udp && c == 0 {
            c = 0xffff;
        }
        put16(frame, lay.l4 + field, c);
    }
    if ip {
        put16(frame, lay.l3 + 10, 0);
        let c = !fold(sum_words(&frame[lay.l3..lay.l4], 0));
        put16(frame, lay.l3 + 10, c);
    }
    Ok(())
}

/// Like [`tx_checksum`], for a backend that completes checksums itself:
/// a TCP checksum request is checked the same way, then left to the
/// backend (the field gets the pseudo-header sum and the returned header
/// says `NEEDS_CSUM` from the TCP header on), and the frame is cut to its
/// IP datagram so that Ethernet padding cannot enter the sum. Other
/// requests are carried out here as [`tx_checksum`] does (UDP's "0 means
/// none" rule stays with us); then the header is plain.
pub fn tx_checksum_partial(
    frame: &mut Vec<u8>,
    ip: bool,
    udp: bool,
    tcp: bool,
) -> Result<NetHdr, OffloadReject> {
    if !tcp || udp {
        tx_checksum(frame, ip, udp, tcp)?;
        return Ok(NetHdr::default());
    }
    let lay = tcp_ipv4(frame)?;
    let (Ok(start), Ok(_)) = (u16::try_from(lay.l4), u16::try_from(lay.end)) else {
        // Not reachable for frames the chip accepts (8 KiB at most).
        tx_checksum(frame, ip, udp, tcp)?;
        return Ok(NetHdr::default());
    };
    let pseudo = fold(pseudo_sum(frame, &lay));
    put16(frame, lay.l4 + 16, pseudo);
    if ip {
        put16(frame, lay.l3 + 10, 0);
        let c = !fold(sum_words(&frame[lay.l3..lay.l4], 0));
        put16(frame, lay.l3 + 10, c);
    }
    frame.truncate(lay.end);
    Ok(NetHdr {
        flags: NEEDS_CSUM,
        csum_start: start,
        csum_offset: 16,
        ..NetHdr::default()
    })
}

/// The layout of a frame that TCP checksum offload or large send may
/// work on: IPv4, TCP, not a fragment, room for a whole TCP header.
fn tcp_ipv4(frame: &[u8]) -> Result<Ipv4Layout, OffloadReject> {
    let lay = parse_ipv4(frame)?;
    if lay.proto != IPPROTO_TCP {
        return Err(OffloadReject::ProtocolMismatch {
            asked: "TCP",
            proto: lay.proto,
        });
    }
    if lay.fragment {
        return Err(OffloadReject::Fragment);
    }
    if lay.end - lay.l4 < TCP_HLEN {
        return Err(OffloadReject::ShortL4("TCP"));
    }
    Ok(lay)
}

/// Large send (LGSEN) left to a backend that segments TCP/IPv4
/// (`backend`): the frame, checked as [`large_send`] checks it, with its
/// IP header checksum and the TCP pseudo-header sum in place, and the GSO
/// header that asks for `mss`-byte segments. `Ok(None)`: the backend
/// cannot do it (no TSO, ECN it does not take) or there is only one
/// segment; [`large_send`] then does the work here.
pub fn large_send_gso(
    frame: &mut Vec<u8>,
    mss: u16,
    backend: Offloads,
) -> Result<Option<NetHdr>, OffloadReject> {
    if mss == 0 {
        return Err(OffloadReject::ZeroMss);
    }
    if !(backend.csum && backend.tso4) {
        return Ok(None);
    }
    let lay = tcp_ipv4(frame)?;
    let tcp_hlen = usize::from(frame[lay.l4 + 12] >> 4) * 4;
    let hdr_len = lay.l4 + tcp_hlen;
    let cwr = frame[lay.l4 + 13] & TCP_CWR != 0;
    if tcp_hlen < TCP_HLEN
        || hdr_len > lay.end
        || lay.end - hdr_len <= usize::from(mss)
        || (cwr && !backend.tso_ecn)
    {
        // Bad header lengths are left for the segmenter's checks.
        return Ok(None);
    }
    let mut hdr = tx_checksum_partial(frame, true, false, true)?;
    hdr.gso_type = if cwr { GSO_TCPV4 | GSO_ECN } else { GSO_TCPV4 };
    hdr.gso_size = mss;
    hdr.hdr_len = hdr_len as u16;
    Ok(Some(hdr))
}

/// Large send (LGSEN): TCP/IPv4 segments of at most `mss` payload bytes,
/// each with correct IP and TCP checksums.
pub fn large_send(frame: &[u8], mss: u16) -> Result<Vec<Vec<u8>>, OffloadReject> {
    if mss == 0 {
        return Err(OffloadReject::ZeroMss);
    }
    // Our own checks first (same rules, precise errors), then the
    // segmenter's, which checks everything again.
    tcp_ipv4(frame)?;
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        gso_size: mss,
        ..Default::default()
    };
    Ok(segment(&hdr, frame)?)
}

/// If `frame` carries an 802.1Q tag, removes it and returns the TCI.
pub fn strip_vlan(frame: &mut Vec<u8>) -> Option<u16> {
    if frame.len() < ETH_HLEN + 4 || be16(frame, 12) != TPID_8021Q {
        return None;
    }
    let tci = be16(frame, 14);
    frame.drain(12..16);
    Some(tci)
}

/// The C+ receive status bits of `frame` with RxChkSum on: protocol ID and
/// the IP/UDP/TCP checksum-failed bits. `l4_valid` (the backend vouched for
/// the checksums) skips verifying the L4 checksum.
pub fn rx_checksum_status(frame: &[u8], l4_valid: bool) -> u32 {
    let lay = match parse_ipv4(frame) {
        Ok(l) => l,
        // Not IP at all: PID 0, nothing checked.
        Err(
            OffloadReject::NotIpv4(_)
            | OffloadReject::ShortEthernet(_)
            | OffloadReject::IpVersion(_),
        ) => return 0,
        // An IPv4 header that does not fit: IP with a bad header.
        Err(_) => return (PID_IP << RXD_PID_SHIFT) | RXD_IPF,
    };
    let mut status = 0;
    if !ip_header_ok(frame, &lay) {
        status |= RXD_IPF;
    }
    if lay.fragment {
        return status | (PID_IP << RXD_PID_SHIFT);
    }
    let seg_len = lay.end - lay.l4;
    match lay.proto {
        IPPROTO_TCP => {
            status |= PID_TCP << RXD_PID_SHIFT;
            if seg_len < TCP_HLEN || (!l4_valid && !l4_ok(frame, &lay)) {
                status |= RXD_TCPF;
            }
        }
        IPPROTO_UDP => {
            status |= PID_UDP << RXD_PID_SHIFT;
            if seg_len < UDP_HLEN {
                status |= RXD_UDPF;
            } else if !l4_valid && be16(frame, lay.l4 + 6) != 0 && !l4_ok(frame, &lay) {
                // A zero UDP checksum means "none".
                status |= RXD_UDPF;
            }
        }
        _ => status |= PID_IP << RXD_PID_SHIFT,
    }
    status
}

#[cfg(test)]
mod tests;
