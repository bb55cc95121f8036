//! Receive checksum offload as the 82540EM does it (RXCSUM): for an IPv4
//! frame the chip checks the IP header checksum (IPOFL: status IPCS, error
//! IPE) and the TCP or UDP checksum of an unfragmented datagram (TUOFL:
//! status TCPCS, for UDP too, error TCPE). Other frames (IPv6, ARP, IP
//! fragments) get neither bit, and Linux's `e1000` checks them itself;
//! with both offloads off every descriptor carries IXSM.
//!
//! A frame the backend vouches for (`DATA_VALID`), or whose checksums this
//! model just computed (a partial checksum completed, a TSO frame
//! segmented), is not summed again: only its 20-60 byte IP header is.
//!
//! Everything is read through bounds-checked slices of the frame: any
//! length field that points past it makes the frame "not checked", never
//! an out-of-range read.

use tapir_net_backend::offload::{fold, sum_words, try_be16};

use super::regs::*;

const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// The status and error bits for `frame` (as received, before any tag is
/// stripped), whose EtherType field sits at `etype_at` (12, or 16 behind
/// one 802.1Q tag), under the guest's `rxcsum` register. `l4_valid`: the
/// TCP/UDP checksum is known to be right.
pub fn status(rxcsum: u32, frame: &[u8], etype_at: usize, l4_valid: bool) -> (u8, u8) {
    if rxcsum & (RXCSUM_IPOFL | RXCSUM_TUOFL) == 0 {
        return (RXD_STAT_IXSM, 0);
    }
    if try_be16(frame, etype_at) != Some(ETH_P_IPV4) {
        return (0, 0);
    }
    let l3 = etype_at + 2;
    let Some(&vihl) = frame.get(l3) else {
        return (0, 0);
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = try_be16(frame, l3 + 2).map_or(0, usize::from);
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > frame.len() {
        // Not a well-formed IPv4 datagram: the chip checks nothing.
        return (0, 0);
    }
    let (mut st, mut err) = (0, 0);
    if rxcsum & RXCSUM_IPOFL != 0 {
        st |= RXD_STAT_IPCS;
        if fold(sum_words(&frame[l3..l3 + ihl], 0)) != 0xffff {
            err |= RXD_ERR_IPE;
        }
    }
    let frag = try_be16(frame, l3 + 6).unwrap_or(0) & 0x3fff != 0;
    let proto = frame[l3 + 9];
    let (l4, end) = (l3 + ihl, l3 + total);
    let min = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return (st, err),
    };
    if rxcsum & RXCSUM_TUOFL == 0 || frag || end - l4 < min {
        return (st, err);
    }
    st |= RXD_STAT_TCPCS;
    // A zero UDP checksum means "none sent": nothing to be wrong.
    let none = proto == IPPROTO_UDP && try_be16(frame, l4 + 6) == Some(0);
    if !l4_valid && !none {
        let pseudo = sum_words(
            &frame[l3 + 12..l3 + 20],
            u64::from(proto) + (end - l4) as u64,
        );
        if fold(sum_words(&frame[l4..end], pseudo)) != 0xffff {
            err |= RXD_ERR_TCPE;
        }
    }
    (st, err)
}
