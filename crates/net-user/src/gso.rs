//! Large TCP segments toward a guest that accepts them (virtio-net
//! GUEST_TSO4 with GUEST_CSUM): the NAT's smoltcp interface has a 64 KiB
//! MTU, and the MSS option of the guest's SYN and SYN-ACK is raised before
//! smoltcp sees it, so smoltcp sends segments of up to 64 KiB; each one
//! goes to the guest as one frame with a TCPv4 GSO header carrying the
//! guest's real MSS. The guest takes such a frame as the coalesced packet
//! it is (as from a tap with TSO offload): one frame and one interrupt
//! where there were forty.
//!
//! All functions take raw Ethernet frames (untagged, IPv4) and leave
//! anything else alone.

use std::net::Ipv4Addr;

use tapir_net_backend::hdr::{DATA_VALID, GSO_TCPV4};
use tapir_net_backend::offload::{be16, fold, put16, sum_words};
use tapir_net_backend::NetHdr;

/// The MSS the guest seems to announce: the largest segment smoltcp may
/// send within one 64 KiB IPv4 datagram.
pub(crate) const BIG_MSS: u16 = 65_535 - 20 - 20;
/// Largest frame smoltcp builds: 64 KiB IPv4 datagram + Ethernet header.
pub(crate) const GSO_FRAME: usize = 14 + 65_535;
/// The guest's MSS when its SYN did not say (RFC 9293's IPv4 default is
/// 536; Linux guests always say).
const DEFAULT_MSS: u16 = 536;

/// A guest connection: (guest address, guest port, peer address, peer port).
pub(crate) type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

const ETH: usize = 14;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const TCP_SYN: u8 = 0x02;

/// IPv4 header length and TCP header length of an untagged IPv4/TCP frame
/// whose headers are all there.
fn tcp_headers(f: &[u8]) -> Option<(usize, usize)> {
    if f.len() < ETH + 20 || f[12..14] != [0x08, 0x00] || f[ETH] >> 4 != 4 || f[ETH + 9] != 6 {
        return None;
    }
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    if ihl < 20 || f.len() < ETH + ihl + 20 {
        return None;
    }
    let thl = usize::from(f[ETH + ihl + 12] >> 4) * 4;
    if thl < 20 || f.len() < ETH + ihl + thl {
        return None;
    }
    Some((ihl, thl))
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Raises the MSS option of a guest SYN (or SYN-ACK) to [`BIG_MSS`] and
/// recomputes the TCP checksum. Returns the flow and the MSS the guest
/// announced (the default when it had no MSS option); `None` for any other
/// frame, which is left as it was.
pub(crate) fn raise_syn_mss(f: &mut [u8]) -> Option<(FlowKey, u16)> {
    let (ihl, thl) = tcp_headers(f)?;
    let t = ETH + ihl;
    if f[t + 13] & TCP_SYN == 0 {
        return None;
    }
    let key = (
        addr(&f[ETH + 12..]),
        be16(f, t),
        addr(&f[ETH + 16..]),
        be16(f, t + 2),
    );
    let mut i = t + 20;
    let end = t + thl;
    let mut found = None;
    while i < end {
        match f[i] {
            OPT_EOL => break,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*f.get(i + 1)?);
                if len < 2 || i + len > end {
                    return None; // malformed options: leave it to smoltcp
                }
                if kind == OPT_MSS && len == 4 {
                    found = Some(i + 2);
                }
                i += len;
            }
        }
    }
    let Some(at) = found else {
        return Some((key, DEFAULT_MSS));
    };
    let mss = be16(f, at);
    put16(f, at, BIG_MSS);
    // The TCP checksum over the pseudo-header and the segment.
    let ip_len = usize::from(be16(f, ETH + 2)).min(f.len() - ETH);
    let tcp_len = ip_len.saturating_sub(ihl);
    if tcp_len < thl {
        return None;
    }
    f[t + 16..t + 18].fill(0);
    let sum = sum_words(
        &f[t..t + tcp_len],
        sum_words(&f[ETH + 12..ETH + 20], 6 + tcp_len as u64),
    );
    put16(f, t + 16, !fold(sum));
    Some((key, mss))
}

/// The flow of a frame toward the guest (as [`raise_syn_mss`] keys it).
pub(crate) fn egress_key(f: &[u8]) -> Option<FlowKey> {
    let (ihl, _) = tcp_headers(f)?;
    let t = ETH + ihl;
    Some((
        addr(&f[ETH + 16..]),
        be16(f, t + 2),
        addr(&f[ETH + 12..]),
        be16(f, t),
    ))
}

/// The GSO header of a frame toward the guest that carries more than `mss`
/// bytes of TCP payload (smoltcp computed its checksums in full: the
/// header says DATA_VALID); `None` when the frame needs none.
pub(crate) fn gso_header(f: &[u8], mss: u16) -> Option<NetHdr> {
    let (ihl, thl) = tcp_headers(f)?;
    let hdr_len = ETH + ihl + thl;
    if mss == 0 || f.len() - hdr_len <= usize::from(mss) {
        return None;
    }
    Some(NetHdr {
        flags: DATA_VALID,
        gso_type: GSO_TCPV4,
        hdr_len: hdr_len as u16,
        gso_size: mss,
        csum_start: (ETH + ihl) as u16,
        csum_offset: 16,
        num_buffers: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapir_net_backend::offload::checksum;

    /// An Ethernet/IPv4/TCP frame with the given flags, options and payload.
    fn frame(flags: u8, opts: &[u8], payload: usize) -> Vec<u8> {
        let thl = 20 + opts.len();
        let ip_len = 20 + thl + payload;
        let mut f = vec![0u8; ETH + ip_len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
        ip[16..20].copy_from_slice(&[192, 168, 77, 1]);
        let t = ETH + 20;
        f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
        f[t + 12] = ((thl / 4) as u8) << 4;
        f[t + 13] = flags;
        f[t + 20..t + thl].copy_from_slice(opts);
        let sum = sum_words(
            &f[t..],
            sum_words(&f[ETH + 12..ETH + 20], 6 + (thl + payload) as u64),
        );
        f[t + 16..t + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        f
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let t = ETH + 20;
        let len = f.len() - t;
        let mut p = f[ETH + 12..ETH + 20].to_vec();
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p.extend_from_slice(&f[t..]);
        checksum(&p) == 0
    }

    #[test]
    fn syn_mss_is_raised_and_checksum_kept_valid() {
        // NOP NOP, MSS 1460, SACK permitted, window scale 7, EOL.
        let opts = [1, 1, 2, 4, 0x05, 0xb4, 4, 2, 3, 3, 7, 0];
        let mut f = frame(TCP_SYN, &opts, 0);
        assert!(tcp_ok(&f));
        let (key, mss) = raise_syn_mss(&mut f).unwrap();
        assert_eq!(mss, 1460);
        assert_eq!(
            key,
            (
                Ipv4Addr::new(10, 0, 2, 15),
                40000,
                Ipv4Addr::new(192, 168, 77, 1),
                80
            )
        );
        assert_eq!(be16(&f, ETH + 20 + 24), BIG_MSS);
        assert!(tcp_ok(&f), "checksum recomputed");
        // The reverse direction of the same flow has the same key.
        let mut back = frame(0x10, &[], 10);
        back[ETH + 12..ETH + 16].copy_from_slice(&[192, 168, 77, 1]);
        back[ETH + 16..ETH + 20].copy_from_slice(&[10, 0, 2, 15]);
        back[ETH + 20..ETH + 22].copy_from_slice(&80u16.to_be_bytes());
        back[ETH + 22..ETH + 24].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(egress_key(&back), Some(key));
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut ack = frame(0x10, &[2, 4, 0x05, 0xb4], 0);
        let before = ack.clone();
        assert_eq!(raise_syn_mss(&mut ack), None);
        assert_eq!(ack, before);
        // SYN without an MSS option: the default, frame unchanged.
        let mut syn = frame(TCP_SYN, &[], 0);
        let before = syn.clone();
        assert_eq!(raise_syn_mss(&mut syn).unwrap().1, DEFAULT_MSS);
        assert_eq!(syn, before);
        // Malformed options (length 0, running past the header): unchanged.
        for opts in [[2u8, 0, 0, 0], [8, 9, 0, 0]] {
            let mut f = frame(TCP_SYN, &opts, 0);
            let before = f.clone();
            assert_eq!(raise_syn_mss(&mut f), None);
            assert_eq!(f, before);
        }
        // Truncated and non-TCP frames.
        for n in 0..54 {
            let mut f = frame(TCP_SYN, &[], 0);
            f.truncate(n);
            assert_eq!(raise_syn_mss(&mut f), None, "{n} bytes");
        }
        let mut udp = frame(TCP_SYN, &[], 0);
        udp[ETH + 9] = 17;
        assert_eq!(raise_syn_mss(&mut udp), None);
    }

    #[test]
    fn gso_header_only_for_frames_above_the_mss() {
        let small = frame(0x18, &[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0], 1448);
        assert_eq!(gso_header(&small, 1448), None);
        let big = frame(0x18, &[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0], 20_000);
        let h = gso_header(&big, 1448).unwrap();
        assert_eq!(
            (
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (GSO_TCPV4, 1448, 66, 34, 16)
        );
        assert_eq!(h.flags, DATA_VALID);
        assert_eq!(gso_header(&big, 0), None);
    }
}
