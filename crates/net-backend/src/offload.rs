//! Offload work in software, for backends (or NIC models) that cannot
//! carry offloads: completing partial checksums and TCP segmentation.
//!
//! Every length and offset comes from the guest: all are checked against
//! the frame, and a bad one is an [`OffloadError`], never a panic. NIC
//! models that do offloads themselves report their errors with the same
//! type.

use crate::hdr::{GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, NEEDS_CSUM};
use crate::NetHdr;

/// Why a frame's offload request cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// `csum_start` lies beyond the frame.
    #[error("checksum start {start} is beyond the {len}-byte frame")]
    CsumStart {
        /// `csum_start`.
        start: usize,
        /// The frame length.
        len: usize,
    },
    /// The checksum field (`csum_start + csum_offset`, 2 bytes) lies beyond the frame.
    #[error("checksum field at {at} does not fit in the {len}-byte frame")]
    CsumOffset {
        /// `csum_start + csum_offset`.
        at: usize,
        /// The frame length.
        len: usize,
    },
    /// A checksum region (`start..=end`) or its 2-byte field (at `at`)
    /// lies outside the frame: offsets a NIC model was given (e1000
    /// context descriptors).
    #[error(
        "{what} checksum: region {start}..={end} or field at {at} outside the {len}-byte frame"
    )]
    CsumRegion {
        /// Which checksum (`IP`, `TCP/UDP`, ...).
        what: &'static str,
        /// Start of the summed region.
        start: usize,
        /// End of the summed region (inclusive).
        end: usize,
        /// Where the checksum goes.
        at: usize,
        /// The frame length.
        len: usize,
    },
    /// The frame ends inside a header.
    #[error("frame too short for its {0} header")]
    Truncated(&'static str),
    /// A header field is inconsistent.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// Valid, but not something this module can do.
    #[error("unsupported offload: {0}")]
    Unsupported(&'static str),
}

/// The big-endian `u16` at `b[at..at + 2]`. Panics when that lies
/// outside `b`: callers check their offsets against the frame first (or
/// use [`try_be16`]).
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian `u16` at `b[at..at + 2]`, `None` when that lies outside `b`.
pub fn try_be16(b: &[u8], at: usize) -> Option<u16> {
    let w = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([w[0], w[1]]))
}

/// Stores `v` big-endian at `b[at..at + 2]` (panics like [`be16`]).
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// One's-complement sum of `data` as big-endian 16-bit words, added to
/// `acc` (not folded). An odd trailing byte counts as its word's high byte.
pub fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    // Summing 32-bit words is the same modulo 0xffff (2^16 = 1 there), and
    // a u64 cannot overflow for any frame size (< 2^32 words).
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (end-around carry).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Completes a partial checksum (`NEEDS_CSUM`): sums `frame` from
/// `csum_start` to the end (the field already holds the pseudo-header sum
/// the guest put there) and stores the result at `csum_start + csum_offset`.
/// A result of 0 is stored as 0xffff (equivalent, and what UDP needs).
/// Frames without `NEEDS_CSUM` are left alone. The caller clears
/// `NEEDS_CSUM` in the header it passes on.
pub fn complete_checksum(hdr: &NetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.flags & NEEDS_CSUM == 0 {
        return Ok(());
    }
    let len = frame.len();
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if start > len {
        return Err(OffloadError::CsumStart { start, len });
    }
    if at + 2 > len {
        return Err(OffloadError::CsumOffset { at, len });
    }
    let sum = match checksum(&frame[start..]) {
        0 => 0xffff,
        c => c,
    };
    put16(frame, at, sum);
    Ok(())
}

/// Turns one frame with offloads into plain frames ready for the wire:
/// without GSO, a copy with its checksum completed; with TCPv4/TCPv6 GSO,
/// the TSO segments, each with `gso_size` payload bytes at most and correct
/// IP and TCP checksums.
///
/// The headers are parsed from the frame itself (one or two VLAN tags, IPv4
/// options, IPv6 hop-by-hop and destination-options headers, TCP options);
/// the header's `hdr_len`, `csum_start` and `csum_offset` are only hints
/// for TSO (guests fill them loosely) and are not used. Bytes after the IP
/// datagram (Ethernet padding) are dropped.
pub fn segment(hdr: &NetHdr, frame: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let mut f = frame.to_vec();
            complete_checksum(hdr, &mut f)?;
            Ok(vec![f])
        }
        GSO_TCPV4 => tso(hdr, frame, false),
        GSO_TCPV6 => tso(hdr, frame, true),
        GSO_UDP => Err(OffloadError::Unsupported("UDP fragmentation (UFO)")),
        _ => Err(OffloadError::Unsupported("unknown gso_type")),
    }
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
/// The TCP flags byte's CWR bit (ECN: a GSO frame with it needs `GSO_ECN`).
pub const TCP_CWR: u8 = 0x80;

/// Where the parts of a TCP/IP frame lie.
#[derive(Debug)]
struct TcpLayout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP header.
    l4: usize,
    /// Start of the TCP payload.
    payload: usize,
    /// End of the IP datagram.
    end: usize,
}

fn parse_tcp(frame: &[u8], v6: bool) -> Result<TcpLayout, OffloadError> {
    use OffloadError::{Malformed, Truncated, Unsupported};
    let len = frame.len();
    if len < 14 {
        return Err(Truncated("Ethernet"));
    }
    let mut l3 = 14;
    let mut ethertype = be16(frame, 12);
    let mut tags = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        tags += 1;
        if tags > 2 {
            return Err(Unsupported("more than two VLAN tags"));
        }
        if len < l3 + 4 {
            return Err(Truncated("VLAN"));
        }
        ethertype = be16(frame, l3 + 2);
        l3 += 4;
    }
    let (l4, end) = if v6 {
        if ethertype != ETH_P_IPV6 {
            return Err(Malformed("TCPv6 segmentation of a frame that is not IPv6"));
        }
        if len < l3 + 40 {
            return Err(Truncated("IPv6"));
        }
        if frame[l3] >> 4 != 6 {
            return Err(Malformed("IPv6 version field"));
        }
        let plen = usize::from(be16(frame, l3 + 4));
        if plen == 0 {
            return Err(Unsupported("IPv6 jumbogram"));
        }
        let end = l3 + 40 + plen;
        if end > len {
            return Err(Malformed("IPv6 payload length beyond the frame"));
        }
        let mut next = frame[l3 + 6];
        let mut l4 = l3 + 40;
        // Hop-by-hop and destination options do not change the pseudo-header.
        while next == 0 || next == 60 {
            if l4 + 8 > end {
                return Err(Truncated("IPv6 extension"));
            }
            next = frame[l4];
            l4 += (usize::from(frame[l4 + 1]) + 1) * 8;
        }
        if next != IPPROTO_TCP {
            return Err(Unsupported(
                "IPv6 next header other than TCP (or options before it)",
            ));
        }
        (l4, end)
    } else {
        if ethertype != ETH_P_IPV4 {
            return Err(Malformed("TCPv4 segmentation of a frame that is not IPv4"));
        }
        if len < l3 + 20 {
            return Err(Truncated("IPv4"));
        }
        if frame[l3] >> 4 != 4 {
            return Err(Malformed("IPv4 version field"));
        }
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        if ihl < 20 {
            return Err(Malformed("IPv4 header length below 20"));
        }
        let tot = usize::from(be16(frame, l3 + 2));
        if tot < ihl {
            return Err(Malformed("IPv4 total length below its header length"));
        }
        let end = l3 + tot;
        if end > len {
            return Err(Malformed("IPv4 total length beyond the frame"));
        }
        if be16(frame, l3 + 6) & 0x3fff != 0 {
            return Err(Malformed("IPv4 fragment"));
        }
        if frame[l3 + 9] != IPPROTO_TCP {
            return Err(Malformed("TCP segmentation of a protocol other than TCP"));
        }
        (l3 + ihl, end)
    };
    if l4 + 20 > end {
        return Err(Truncated("TCP"));
    }
    let doff = usize::from(frame[l4 + 12] >> 4) * 4;
    if doff < 20 {
        return Err(Malformed("TCP data offset below 20"));
    }
    let payload = l4 + doff;
    if payload > end {
        return Err(Truncated("TCP"));
    }
    Ok(TcpLayout {
        l3,
        l4,
        payload,
        end,
    })
}

/// The pseudo-header sum for a TCP segment of `tcp_len` bytes.
fn pseudo_sum(seg: &[u8], lay: &TcpLayout, v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 {
        &seg[lay.l3 + 8..lay.l3 + 40]
    } else {
        &seg[lay.l3 + 12..lay.l3 + 20]
    };
    sum_words(addrs, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

fn tso(hdr: &NetHdr, frame: &[u8], v6: bool) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(OffloadError::Malformed("gso_size 0"));
    }
    let lay = parse_tcp(frame, v6)?;
    let (l3, l4) = (lay.l3, lay.l4);
    let data = &frame[lay.payload..lay.end];
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let flags0 = frame[l4 + 13];
    let id0 = be16(frame, l3 + 4);
    let count = data.len().div_ceil(mss).max(1);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let chunk = &data[(i * mss).min(data.len())..((i + 1) * mss).min(data.len())];
        let mut seg = Vec::with_capacity(lay.payload + chunk.len());
        seg.extend_from_slice(&frame[..lay.payload]);
        seg.extend_from_slice(chunk);
        let (first, last) = (i == 0, i + 1 == count);
        let seg_len = seg.len();
        let tcp_len = seg_len - l4;
        // Fits: each segment is no longer than the datagram it came from.
        if v6 {
            put16(&mut seg, l3 + 4, (seg_len - l3 - 40) as u16);
        } else {
            put16(&mut seg, l3 + 2, (seg_len - l3) as u16);
            put16(&mut seg, l3 + 4, id0.wrapping_add(i as u16));
            put16(&mut seg, l3 + 10, 0);
            let c = checksum(&seg[l3..l4]);
            put16(&mut seg, l3 + 10, c);
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if !last {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            flags &= !TCP_CWR;
        }
        seg[l4 + 13] = flags;
        put16(&mut seg, l4 + 16, 0);
        let c = !fold(sum_words(&seg[l4..], pseudo_sum(&seg, &lay, v6, tcp_len)));
        put16(&mut seg, l4 + 16, c);
        out.push(seg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
