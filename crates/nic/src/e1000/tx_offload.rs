//! Transmit offloads as the 8254x defines them: checksum insertion at
//! offsets a context descriptor gives, and TCP segmentation (TSO).
//!
//! # Approach
//!
//! The model is always able to do the work itself: checksums are summed
//! and stored in software and TSO frames are cut into segments whose IP
//! length, IP identification, TCP sequence number, flags and checksums are
//! fixed as the hardware would ([`Tso`]). When the backend carries offloads
//! (a tap with a vnet header), two common cases are handed over instead,
//! with the frame rewritten to virtio-net conventions:
//! - a TCP/UDP checksum running to the end of the frame becomes
//!   `NEEDS_CSUM` ([`partial_csum`]);
//! - a well-formed TCPv4/TCPv6 TSO frame becomes one GSO frame
//!   ([`gso`]): IP length and header checksum of the whole frame, TCP
//!   checksum field holding the pseudo-header sum with the full length.
//!
//! All offsets come from the guest; each is checked against the frame and
//! a bad one is an [`OffloadError`] (the packet is dropped and counted).

use tapir_net_backend::hdr::{GSO_ECN, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use tapir_net_backend::offload::{be16, fold, put16, sum_words, OffloadError, TCP_CWR};
use tapir_net_backend::{NetHdr, Offloads};

use super::regs::*;

/// The offload parameters of a TCP/IP context descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxContext {
    /// IP checksum start.
    pub ipcss: usize,
    /// IP checksum offset.
    pub ipcso: usize,
    /// IP checksum end (inclusive; 0 = end of frame).
    pub ipcse: usize,
    /// TCP/UDP checksum start.
    pub tucss: usize,
    /// TCP/UDP checksum offset.
    pub tucso: usize,
    /// TCP/UDP checksum end (inclusive; 0 = end of frame).
    pub tucse: usize,
    /// TUCMD: TCP (else UDP), IP (v4, else v6), TSE.
    pub tucmd: u8,
    /// TSO header length.
    pub hdrlen: usize,
    /// TSO maximum segment size.
    pub mss: usize,
}

impl TxContext {
    /// Decodes a context descriptor.
    pub fn parse(d: &[u8; 16]) -> Self {
        let u16_at = |i: usize| usize::from(u16::from_le_bytes([d[i], d[i + 1]]));
        TxContext {
            ipcss: usize::from(d[0]),
            ipcso: usize::from(d[1]),
            ipcse: u16_at(2),
            tucss: usize::from(d[4]),
            tucso: usize::from(d[5]),
            tucse: u16_at(6),
            tucmd: d[11],
            hdrlen: usize::from(d[13]),
            mss: u16_at(14),
        }
    }

    fn is_tcp(&self) -> bool {
        self.tucmd & TUCMD_TCP != 0
    }

    fn is_ipv4(&self) -> bool {
        self.tucmd & TUCMD_IP != 0
    }
}

/// Stores at `at` the one's complement of the sum of `frame[start..=end]`
/// (`end` 0: to the end) plus `extra`. The field itself is inside the
/// region: it holds whatever partial sum software put there (the
/// pseudo-header for TCP/UDP). With `udp`, a result of 0 is sent as 0xFFFF.
pub fn insert_csum(
    frame: &mut [u8],
    what: &'static str,
    (start, end, at): (usize, usize, usize),
    extra: u64,
    udp: bool,
) -> Result<(), OffloadError> {
    let len = frame.len();
    let end = if end == 0 { len.saturating_sub(1) } else { end };
    if start >= len || end >= len || end < start || at + 2 > len {
        return Err(OffloadError::CsumRegion {
            what,
            start,
            end,
            at,
            len,
        });
    }
    let mut c = !fold(sum_words(&frame[start..=end], extra));
    if udp && c == 0 {
        c = 0xFFFF;
    }
    put16(frame, at, c);
    Ok(())
}

/// Inserts the checksums `popts` asks for in a frame that is not segmented.
pub fn insert_checksums(frame: &mut [u8], ctx: &TxContext, popts: u8) -> Result<(), OffloadError> {
    if popts & POPTS_IXSM != 0 {
        insert_csum(frame, "IP", (ctx.ipcss, ctx.ipcse, ctx.ipcso), 0, false)?;
    }
    if popts & POPTS_TXSM != 0 {
        let region = (ctx.tucss, ctx.tucse, ctx.tucso);
        insert_csum(frame, "TCP/UDP", region, 0, !ctx.is_tcp())?;
    }
    Ok(())
}

/// When the backend can complete it: leaves the TCP/UDP checksum of a
/// non-segmented frame to the backend (`NEEDS_CSUM`). The IP checksum, if
/// asked for, is inserted here. `None`: nothing was changed.
pub fn partial_csum(
    frame: &mut [u8],
    ctx: &TxContext,
    popts: u8,
    offloads: Offloads,
) -> Option<NetHdr> {
    let len = frame.len();
    if !offloads.csum
        || popts & POPTS_TXSM == 0
        || ctx.tucse != 0
        || ctx.tucss >= len
        || ctx.tucso < ctx.tucss
        || ctx.tucso + 2 > len
    {
        return None;
    }
    if popts & POPTS_IXSM != 0 {
        insert_csum(frame, "IP", (ctx.ipcss, ctx.ipcse, ctx.ipcso), 0, false).ok()?;
    }
    Some(NetHdr {
        flags: NEEDS_CSUM,
        csum_start: u16::try_from(ctx.tucss).ok()?,
        csum_offset: u16::try_from(ctx.tucso - ctx.tucss).ok()?,
        ..Default::default()
    })
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;

/// A TSO frame being cut into segments, one per call to [`Tso::segment`].
#[derive(Debug, Clone)]
pub struct Tso {
    ctx: TxContext,
    popts: u8,
    count: usize,
    next: usize,
}

impl Tso {
    /// Checks `ctx` against a `len`-byte frame (headers then payload).
    pub fn new(len: usize, ctx: &TxContext, popts: u8) -> Result<Tso, OffloadError> {
        use OffloadError::Malformed;
        let c = ctx;
        if c.mss == 0 {
            return Err(Malformed("TSO with MSS 0"));
        }
        if c.hdrlen == 0 || c.hdrlen > len {
            return Err(Malformed("TSO header length outside the frame"));
        }
        // IPv4 total length and identification, IPv6 payload length.
        if c.ipcss + 6 > c.hdrlen {
            return Err(Malformed("TSO: IP length field outside the header"));
        }
        // TCP sequence number and flags, UDP length.
        let l4_fields = if c.is_tcp() { 14 } else { 6 };
        if c.tucss + l4_fields > c.hdrlen {
            return Err(Malformed("TSO: TCP/UDP fields outside the header"));
        }
        if popts & POPTS_IXSM != 0 && (c.ipcso + 2 > c.hdrlen || c.ipcse >= c.hdrlen) {
            return Err(Malformed("TSO: IP checksum outside the header"));
        }
        if popts & POPTS_TXSM != 0 && c.tucso + 2 > c.hdrlen {
            return Err(Malformed("TSO: TCP/UDP checksum field outside the header"));
        }
        let payload = len - c.hdrlen;
        Ok(Tso {
            ctx: *c,
            popts,
            count: payload.div_ceil(c.mss).max(1),
            next: 0,
        })
    }

    /// Whether every segment was produced.
    pub fn done(&self) -> bool {
        self.next >= self.count
    }

    /// Writes the next segment of `frame` (the whole TSO frame) into `out`.
    pub fn segment(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let c = &self.ctx;
        let i = self.next;
        self.next += 1;
        let payload = &frame[c.hdrlen..];
        let start = (i * c.mss).min(payload.len());
        let end = ((i + 1) * c.mss).min(payload.len());
        let last = i + 1 >= self.count;
        out.clear();
        out.extend_from_slice(&frame[..c.hdrlen]);
        out.extend_from_slice(&payload[start..end]);
        let len = out.len();
        if c.is_ipv4() {
            put16(out, c.ipcss + 2, (len - c.ipcss) as u16);
            let id = be16(out, c.ipcss + 4).wrapping_add(i as u16);
            put16(out, c.ipcss + 4, id);
        } else {
            put16(out, c.ipcss + 4, len.saturating_sub(c.ipcss + 40) as u16);
        }
        let l4_len = (len - c.tucss) as u64;
        if c.is_tcp() {
            let seq = u32::from_be_bytes([
                out[c.tucss + 4],
                out[c.tucss + 5],
                out[c.tucss + 6],
                out[c.tucss + 7],
            ]);
            let seq = seq.wrapping_add((i * c.mss) as u32);
            out[c.tucss + 4..c.tucss + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[c.tucss + 13] &= !(TCP_FIN | TCP_PSH);
            }
        } else {
            put16(out, c.tucss + 4, l4_len as u16);
        }
        // Checked in `new`: both regions and fields lie inside the header.
        if self.popts & POPTS_IXSM != 0 {
            let _ = insert_csum(out, "IP", (c.ipcss, c.ipcse, c.ipcso), 0, false);
        }
        if self.popts & POPTS_TXSM != 0 {
            // The field holds the pseudo-header sum without the length.
            let _ = insert_csum(out, "TCP/UDP", (c.tucss, 0, c.tucso), l4_len, !c.is_tcp());
        }
    }
}

/// When the backend can segment it: turns a well-formed TCP TSO frame into
/// one GSO frame. `None` (frame unchanged) sends it down the software path.
pub fn gso(frame: &mut [u8], ctx: &TxContext, popts: u8, offloads: Offloads) -> Option<NetHdr> {
    let c = ctx;
    let len = frame.len();
    let v4 = c.is_ipv4();
    let usable = offloads.csum
        && c.is_tcp()
        && popts & POPTS_TXSM != 0
        && c.mss > 0
        && c.ipcss >= 14
        && c.tucso == c.tucss + 16
        && c.hdrlen <= len
        && c.hdrlen >= c.tucss + 20
        && len - c.hdrlen > c.mss
        && c.mss <= usize::from(u16::MAX);
    if !usable {
        return None;
    }
    if (frame[c.tucss + 12] >> 4) as usize * 4 != c.hdrlen - c.tucss {
        return None;
    }
    let mut gso_type = if v4 {
        let ihl = usize::from(frame[c.ipcss] & 0xF) * 4;
        let ok = offloads.tso4
            && popts & POPTS_IXSM != 0
            && frame[c.ipcss] >> 4 == 4
            && c.ipcss + ihl == c.tucss
            && c.ipcse + 1 == c.tucss
            && c.ipcso == c.ipcss + 10
            && len - c.ipcss <= usize::from(u16::MAX);
        if !ok {
            return None;
        }
        GSO_TCPV4
    } else {
        let ok = offloads.tso6
            && frame[c.ipcss] >> 4 == 6
            && frame[c.ipcss + 6] == 6
            && c.ipcss + 40 == c.tucss
            && len - c.ipcss - 40 <= usize::from(u16::MAX);
        if !ok {
            return None;
        }
        GSO_TCPV6
    };
    if frame[c.tucss + 13] & TCP_CWR != 0 {
        if !offloads.tso_ecn {
            return None;
        }
        gso_type |= GSO_ECN;
    }
    if v4 {
        put16(frame, c.ipcss + 2, (len - c.ipcss) as u16);
        insert_csum(frame, "IP", (c.ipcss, c.ipcse, c.ipcso), 0, false).ok()?;
    } else {
        put16(frame, c.ipcss + 4, (len - c.ipcss - 40) as u16);
    }
    // Pseudo-header sum with the full TCP length, not complemented.
    let field = u64::from(be16(frame, c.tucso));
    put16(frame, c.tucso, fold(field + (len - c.tucss) as u64));
    Some(NetHdr {
        flags: NEEDS_CSUM,
        gso_type,
        hdr_len: c.hdrlen as u16,
        gso_size: c.mss as u16,
        csum_start: c.tucss as u16,
        csum_offset: 16,
        num_buffers: 0,
    })
}
