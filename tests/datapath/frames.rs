//! The host's side of the NIC data-path test's frames, as
//! `resources/testkernel/README.md` ("The NIC data-path test") defines
//! them: the payload each side hashes, the checks on every frame the guest
//! sent, and the echo (MAC addresses swapped) that every backend's peer
//! sends back. One implementation for the memory backend's peer and the
//! tap's packet socket: [`EchoCore`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use tapir_net_backend::hdr::{GSO_ECN, GSO_NONE, NEEDS_CSUM};
use tapir_net_backend::offload::{self, be16, fold, sum_words, OffloadError};
use tapir_net_backend::NetHdr;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
/// The guest's raw frames (README: kind raw and vlan).
pub const ETH_P_TEST: u16 = 0x88b5;
/// The TCP payload of each segment of a TSO packet (the guest's MSS).
pub const TEST_MSS: usize = 1000;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The payload hash (README, "Hash"): FNV-1a 64 over the payload stream
/// of one direction cut into 8-byte little-endian words, whatever the
/// frame boundaries; the `k` (< 8) bytes left at the end make one
/// zero-filled word, mixed in with `k << 56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHash {
    h: u64,
    /// The word being filled, and its bytes so far.
    w: u64,
    n: u32,
}

impl PayloadHash {
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> PayloadHash {
        PayloadHash {
            h: Self::BASIS,
            w: 0,
            n: 0,
        }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(Self::PRIME);
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while self.n > 0 && !bytes.is_empty() {
            self.w |= u64::from(bytes[0]) << (8 * self.n);
            bytes = &bytes[1..];
            self.n += 1;
            if self.n == 8 {
                let w = self.w;
                self.mix(w);
                (self.w, self.n) = (0, 0);
            }
        }
        let mut words = bytes.chunks_exact(8);
        for c in &mut words {
            self.mix(u64::from_le_bytes(c.try_into().unwrap()));
        }
        for &b in words.remainder() {
            self.w |= u64::from(b) << (8 * self.n);
            self.n += 1;
        }
    }

    /// The hash of the stream so far, as the guest prints it.
    pub fn value(&self) -> u64 {
        match self.n {
            0 => self.h,
            k => (self.h ^ self.w ^ (u64::from(k) << 56)).wrapping_mul(Self::PRIME),
        }
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.value())
    }
}

/// What is wrong with one frame the guest sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameProblem {
    #[error("frame too short for its {0} header")]
    Truncated(&'static str),
    #[error("IPv4 lengths: header {ihl}, total {total}, {room} bytes after the Ethernet header")]
    IpLengths {
        ihl: usize,
        total: usize,
        room: usize,
    },
    #[error("IPv4 header checksum does not verify")]
    IpChecksum,
    #[error("{proto} checksum 0x{stored:04x} does not verify")]
    L4Checksum { proto: &'static str, stored: u16 },
    #[error("UDP checksum 0 (none): the guest always sends one")]
    UdpNoChecksum,
    #[error("UDP length {udp} is not the IPv4 payload length {ip}")]
    UdpLength { udp: usize, ip: usize },
    #[error("TCP data offset {0} is below 20")]
    TcpDataOffset(usize),
    #[error("TSO segment of {0} payload bytes (MSS {TEST_MSS})")]
    SegmentSize(usize),
    #[error("TCP sequence {got}, expected {want}: a segment was lost, repeated or reordered")]
    TcpSequence { got: u32, want: u32 },
    #[error("802.1Q VID {got}, expected {want}")]
    Vid { got: u16, want: u16 },
    #[error("{len}-byte frame, the path carries at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("offload header {hdr:?}: {source}")]
    Offload { hdr: NetHdr, source: OffloadError },
    #[error("echo not delivered: {0}")]
    Send(std::io::ErrorKind),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where the parts of a frame lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The 802.1Q TCI of its tag, if it has one.
    pub tci: Option<u16>,
    /// The EtherType after the tag.
    pub ethertype: u16,
    /// Start of what follows the EtherType.
    pub l3: usize,
    /// IPv4: the protocol and where the L4 header starts.
    pub ipv4: Option<(u8, usize)>,
    /// The hashed payload (README, "Hash").
    pub payload: (usize, usize),
}

/// Parses a frame as the guest's `payload_of` does: the payload is what
/// follows the EtherType (one tag skipped); for IPv4 what follows the UDP
/// (8 bytes) or TCP (data offset) header, up to the IPv4 total length.
pub fn layout(f: &[u8]) -> Result<Layout, FrameProblem> {
    if f.len() < ETH_HLEN {
        return Err(FrameProblem::Truncated("Ethernet"));
    }
    let mut et_at = 12;
    let mut tci = None;
    if be16(f, 12) == ETH_P_8021Q {
        if f.len() < ETH_HLEN + 4 {
            return Err(FrameProblem::Truncated("802.1Q"));
        }
        tci = Some(be16(f, 14));
        et_at = 16;
    }
    let ethertype = be16(f, et_at);
    let l3 = et_at + 2;
    if ethertype != ETH_P_IPV4 {
        return Ok(Layout {
            tci,
            ethertype,
            l3,
            ipv4: None,
            payload: (l3, f.len()),
        });
    }
    if f.len() < l3 + 20 {
        return Err(FrameProblem::Truncated("IPv4"));
    }
    let ihl = usize::from(f[l3] & 15) * 4;
    let total = usize::from(be16(f, l3 + 2));
    let room = f.len() - l3;
    if ihl < 20 || total < ihl || total > room {
        return Err(FrameProblem::IpLengths { ihl, total, room });
    }
    let proto = f[l3 + 9];
    let l4 = l3 + ihl;
    let hl = match proto {
        IPPROTO_UDP => 8,
        IPPROTO_TCP if total >= ihl + 20 => usize::from(f[l4 + 12] >> 4) * 4,
        _ => 0,
    };
    if ihl + hl > total {
        return Err(FrameProblem::Truncated(if proto == IPPROTO_UDP {
            "UDP"
        } else {
            "TCP"
        }));
    }
    Ok(Layout {
        tci,
        ethertype,
        l3,
        ipv4: Some((proto, l4)),
        payload: (l4 + hl, l3 + total),
    })
}

/// What the path promises about the frames (the guest's `vlan=` and
/// `maxframe=`).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The VID of every tagged frame; 0: no frame may be tagged.
    pub vlan: u16,
    /// The largest untagged frame.
    pub maxframe: usize,
}

/// What one checked frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub layout: Layout,
    /// TCP: its sequence number and payload length.
    pub tcp: Option<(u32, usize)>,
}

/// Checks one plain frame (offloads already done): its length, its tag's
/// VID, the IPv4 header checksum and the UDP or TCP checksum, and for a
/// segment cut from a TSO packet (`from_tso`) its payload size.
pub fn check(f: &[u8], rules: &Rules, from_tso: bool) -> Result<Checked, FrameProblem> {
    let lay = layout(f)?;
    let max = rules.maxframe + if lay.tci.is_some() { 4 } else { 0 };
    if f.len() > max {
        return Err(FrameProblem::TooLong { len: f.len(), max });
    }
    if let Some(tci) = lay.tci {
        if tci & 0xfff != rules.vlan || rules.vlan == 0 {
            return Err(FrameProblem::Vid {
                got: tci & 0xfff,
                want: rules.vlan,
            });
        }
    }
    let Some((proto, l4)) = lay.ipv4 else {
        return Ok(Checked {
            layout: lay,
            tcp: None,
        });
    };
    let l3 = lay.l3;
    let end = lay.payload.1;
    if fold(sum_words(&f[l3..l4], 0)) != 0xffff {
        return Err(FrameProblem::IpChecksum);
    }
    let l4_len = end - l4;
    let pseudo = sum_words(&f[l3 + 12..l3 + 20], u64::from(proto) + l4_len as u64);
    let verifies = || fold(sum_words(&f[l4..end], pseudo)) == 0xffff;
    let mut tcp = None;
    match proto {
        IPPROTO_UDP => {
            let udp_len = usize::from(be16(f, l4 + 4));
            if udp_len != l4_len {
                return Err(FrameProblem::UdpLength {
                    udp: udp_len,
                    ip: l4_len,
                });
            }
            let stored = be16(f, l4 + 6);
            if stored == 0 {
                return Err(FrameProblem::UdpNoChecksum);
            }
            if !verifies() {
                return Err(FrameProblem::L4Checksum {
                    proto: "UDP",
                    stored,
                });
            }
        }
        IPPROTO_TCP => {
            if l4_len < 20 {
                return Err(FrameProblem::Truncated("TCP"));
            }
            let doff = usize::from(f[l4 + 12] >> 4) * 4;
            if doff < 20 {
                return Err(FrameProblem::TcpDataOffset(doff));
            }
            if !verifies() {
                return Err(FrameProblem::L4Checksum {
                    proto: "TCP",
                    stored: be16(f, l4 + 16),
                });
            }
            let plen = lay.payload.1 - lay.payload.0;
            if from_tso && (plen == 0 || plen > TEST_MSS) {
                return Err(FrameProblem::SegmentSize(plen));
            }
            tcp = Some((be32(f, l4 + 4), plen));
        }
        _ => {}
    }
    Ok(Checked { layout: lay, tcp })
}

/// The echo of a frame: the same bytes with the two MAC addresses swapped.
pub fn swap_macs(f: &[u8]) -> Vec<u8> {
    let mut e = f.to_vec();
    if e.len() >= 12 {
        e[..6].copy_from_slice(&f[6..12]);
        e[6..12].copy_from_slice(&f[..6]);
    }
    e
}

/// Frames whose notes [`Tally::recent`] keeps for the failure report.
const RECENT: usize = 24;
/// Problems kept (the rest are only counted).
const PROBLEMS_KEPT: usize = 40;

/// The host's view of one run: counts and hashes both ways, and what was
/// wrong.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Hash of the payloads of the frames (or datagrams) the guest sent.
    pub rx_hash: PayloadHash,
    /// Hash of the payloads of the echoes sent back to the guest.
    pub tx_hash: PayloadHash,
    /// Plain frames (or datagrams) received from the guest, after the
    /// offloads were carried out.
    pub received: u64,
    /// Echoes sent back.
    pub sent: u64,
    /// Frames as the backend handed them over (a GSO frame is one).
    pub handed_over: u64,
    /// ... of which with GSO, and how many segments they made.
    pub gso: u64,
    pub segments: u64,
    /// ... of which with a partial checksum (`NEEDS_CSUM`).
    pub partial_csum: u64,
    /// Frames with an 802.1Q tag.
    pub tagged: u64,
    /// The largest TCP payload of a frame.
    pub max_tcp_payload: usize,
    /// (frame number, problem), the first [`PROBLEMS_KEPT`].
    pub problems: Vec<(u64, FrameProblem)>,
    pub problem_count: u64,
    /// One line for each of the last frames handed over.
    pub recent: VecDeque<String>,
    /// When the first and the last frame were handed over.
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// The longest wait between two frames, and the frame after it.
    pub longest_gap: (Duration, u64),
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            rx_hash: PayloadHash::new(),
            tx_hash: PayloadHash::new(),
            received: 0,
            sent: 0,
            handed_over: 0,
            gso: 0,
            segments: 0,
            partial_csum: 0,
            tagged: 0,
            max_tcp_payload: 0,
            problems: Vec::new(),
            problem_count: 0,
            recent: VecDeque::new(),
            first: None,
            last: None,
            longest_gap: (Duration::ZERO, 0),
        }
    }
}

impl Tally {
    pub fn problem(&mut self, p: FrameProblem) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push((self.handed_over, p));
        }
    }

    /// Counts one frame (or datagram) handed over, and when.
    fn handed(&mut self) {
        let now = Instant::now();
        self.handed_over += 1;
        if let Some(last) = self.last {
            let gap = now - last;
            if gap > self.longest_gap.0 {
                self.longest_gap = (gap, self.handed_over);
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// From the first frame to the last.
    pub fn span(&self) -> Duration {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        }
    }

    fn note(&mut self, line: String) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// A datagram (UDP mode) received from the guest: its payload.
    pub fn datagram_received(&mut self, payload: &[u8]) {
        self.handed();
        self.received += 1;
        self.rx_hash.update(payload);
        let head = payload.get(..4).map(|b| be32(b, 0));
        self.note(format!(
            "#{} datagram of {} bytes, unit {head:?}",
            self.handed_over,
            payload.len()
        ));
    }

    /// An echo (frame or datagram) was delivered; `payload` is what the
    /// guest hashes of it.
    pub fn echo_sent(&mut self, payload: &[u8]) {
        self.sent += 1;
        self.tx_hash.update(payload);
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "host: received {} (handed over {}: {} GSO -> {} segments, {} partial checksums), \
             {} tagged, echoed {}; hash received {}, hash echoed {}; {} problem(s); frames over \
             {:.1} s, the longest wait {:.2} s before #{}",
            self.received,
            self.handed_over,
            self.gso,
            self.segments,
            self.partial_csum,
            self.tagged,
            self.sent,
            self.rx_hash,
            self.tx_hash,
            self.problem_count,
            self.span().as_secs_f64(),
            self.longest_gap.0.as_secs_f64(),
            self.longest_gap.1
        )?;
        for (n, p) in &self.problems {
            writeln!(f, "  problem in frame #{n}: {p}")?;
        }
        if self.problem_count > self.problems.len() as u64 {
            writeln!(
                f,
                "  ... and {} more",
                self.problem_count - self.problems.len() as u64
            )?;
        }
        writeln!(f, "last frames handed over:")?;
        for l in &self.recent {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// The peer of `mode=raw`: takes each frame the guest sent, finishes its
/// offloads as the host kernel would, checks and hashes each resulting
/// frame, and gives the echoes to send back.
pub struct EchoCore {
    rules: Rules,
    tally: Tally,
    /// The next TCP sequence number the guest's stream must carry.
    tcp_next: u32,
}

impl EchoCore {
    pub fn new(rules: Rules) -> EchoCore {
        EchoCore {
            rules,
            tally: Tally::default(),
            // The guest's stream starts at 0.
            tcp_next: 0,
        }
    }

    /// A frame the guest sent, with the offload header the backend gave:
    /// returns the echoes to send, in order.
    pub fn guest_sent(&mut self, hdr: &NetHdr, frame: &[u8]) -> Vec<Vec<u8>> {
        self.tally.handed();
        let gso = hdr.gso_type & !GSO_ECN != GSO_NONE;
        if gso {
            self.tally.gso += 1;
        }
        if hdr.flags & NEEDS_CSUM != 0 {
            self.tally.partial_csum += 1;
        }
        let note = format!(
            "#{} {} bytes{}{}",
            self.tally.handed_over,
            frame.len(),
            if gso {
                format!(" gso {} size {}", hdr.gso_type, hdr.gso_size)
            } else {
                String::new()
            },
            if hdr.flags & NEEDS_CSUM != 0 {
                format!(" csum {}+{}", hdr.csum_start, hdr.csum_offset)
            } else {
                String::new()
            },
        );
        let plain = match offload::segment(hdr, frame) {
            Ok(p) => p,
            Err(source) => {
                self.tally.note(format!("{note}: {source}"));
                self.tally
                    .problem(FrameProblem::Offload { hdr: *hdr, source });
                return Vec::new();
            }
        };
        if gso {
            self.tally.segments += plain.len() as u64;
        }
        let mut kinds = Vec::new();
        let mut echoes = Vec::with_capacity(plain.len());
        for f in plain {
            self.tally.received += 1;
            match check(&f, &self.rules, gso) {
                Ok(c) => {
                    let (start, end) = c.layout.payload;
                    self.tally.rx_hash.update(&f[start..end]);
                    if c.layout.tci.is_some() {
                        self.tally.tagged += 1;
                    }
                    if let Some((seq, plen)) = c.tcp {
                        self.tally.max_tcp_payload = self.tally.max_tcp_payload.max(plen);
                        if seq != self.tcp_next {
                            self.tally.problem(FrameProblem::TcpSequence {
                                got: seq,
                                want: self.tcp_next,
                            });
                        }
                        self.tcp_next = seq.wrapping_add(plen as u32);
                    }
                    kinds.push(describe(&c, f.len()));
                }
                Err(p) => {
                    // Hashed all the same where it can be: the guest
                    // compares, and says what differs.
                    if let Ok(lay) = layout(&f) {
                        self.tally.rx_hash.update(&f[lay.payload.0..lay.payload.1]);
                    }
                    kinds.push(format!("{}: {p}", f.len()));
                    self.tally.problem(p);
                }
            }
            echoes.push(swap_macs(&f));
        }
        self.tally.note(format!("{note} -> {}", kinds.join(", ")));
        echoes
    }

    /// An echo was delivered.
    pub fn echo_sent(&mut self, echo: &[u8]) {
        let payload = match layout(echo) {
            Ok(lay) => &echo[lay.payload.0..lay.payload.1],
            Err(_) => &[][..],
        };
        self.tally.echo_sent(payload);
    }

    /// An echo could not be delivered.
    pub fn echo_lost(&mut self, e: std::io::ErrorKind) {
        self.tally.problem(FrameProblem::Send(e));
    }

    pub fn finish(self) -> Tally {
        self.tally
    }
}

fn describe(c: &Checked, len: usize) -> String {
    let tag = c
        .layout
        .tci
        .map(|t| format!(" vid {}", t & 0xfff))
        .unwrap_or_default();
    let what = match (c.layout.ethertype, c.layout.ipv4, c.tcp) {
        (ETH_P_TEST, _, _) => "raw".to_string(),
        (_, _, Some((seq, plen))) => format!("tcp seq {seq} +{plen}"),
        (_, Some((IPPROTO_UDP, _)), _) => "udp".to_string(),
        (et, _, _) => format!("ethertype 0x{et:04x}"),
    };
    format!("{len} {what}{tag}")
}

/// Frames built by hand, as the guest builds them, for the tests.
#[cfg(test)]
pub mod build {
    use super::*;
    use tapir_net_backend::offload::checksum;

    pub const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    pub const PEER: [u8; 6] = [0x02, 0x54, 0x41, 0x50, 0x49, 0x52];
    pub const RULES: Rules = Rules {
        vlan: 5,
        maxframe: 1514,
    };

    pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    pub fn eth(tag: Option<u16>, et: u16) -> Vec<u8> {
        let mut f = [PEER, GUEST].concat();
        if let Some(t) = tag {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&et.to_be_bytes());
        f
    }

    /// An IPv4 frame 192.0.2.1 -> 192.0.2.2 with `l4` (checksum field
    /// included) after a correct IPv4 header; `pad` bytes of Ethernet
    /// padding after it.
    pub fn ipv4(proto: u8, l4: &[u8], pad: usize) -> Vec<u8> {
        let mut f = eth(None, ETH_P_IPV4);
        let total = (20 + l4.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f.extend(std::iter::repeat_n(0, pad));
        f
    }

    /// Stores the L4 checksum at `at` (from the L4 header): complete, or
    /// only the pseudo-header sum (`partial`, for NEEDS_CSUM).
    pub fn l4_csum(f: &mut [u8], proto: u8, at: usize, partial: bool) {
        let l3 = ETH_HLEN;
        let total = usize::from(be16(f, l3 + 2));
        let l4 = l3 + 20;
        let pseudo = sum_words(&f[l3 + 12..l3 + 20], u64::from(proto) + (total - 20) as u64);
        f[l4 + at..l4 + at + 2].fill(0);
        let c = if partial {
            fold(pseudo)
        } else {
            !fold(sum_words(&f[l4..l3 + total], pseudo))
        };
        f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
    }

    pub fn udp(payload: &[u8], pad: usize) -> Vec<u8> {
        let mut l4 = vec![0, 7, 0, 7, 0, 0, 0, 0];
        l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(payload);
        let mut f = ipv4(IPPROTO_UDP, &l4, pad);
        l4_csum(&mut f, IPPROTO_UDP, 6, false);
        f
    }

    pub fn tcp(seq: u32, payload: &[u8], partial: bool) -> Vec<u8> {
        let mut l4 = vec![0, 7, 0, 7];
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(payload);
        let mut f = ipv4(IPPROTO_TCP, &l4, 0);
        l4_csum(&mut f, IPPROTO_TCP, 16, partial);
        f
    }

    /// The offload header of a [`tcp`] packet (built `partial`) that a
    /// backend with TSO hands over: segments of [`TEST_MSS`] bytes.
    pub fn tso_hdr() -> NetHdr {
        NetHdr {
            flags: tapir_net_backend::hdr::NEEDS_CSUM,
            gso_type: tapir_net_backend::hdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: TEST_MSS as u16,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn hash(data: &[u8]) -> u64 {
        let mut h = PayloadHash::new();
        h.update(data);
        h.value()
    }

    #[test]
    fn payload_hash_test_vectors() {
        // Worked out apart from this code (README, "Hash").
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xfc63_dc4c_8601_ec8c);
        assert_eq!(hash(b"abcdefgh"), 0x3919_eeb0_0ee1_e68c);
        assert_eq!(hash(b"foobar"), 0x4117_9086_5558_95d9);
        assert_eq!(hash(b"The quick brown fox"), 0x41e5_2891_14bb_ad3a);
        // The frame boundaries do not count: any cut of the stream gives
        // the same hash.
        let data = bytes(1000, 3);
        for cuts in [&[1, 7, 8, 9][..], &[3, 5, 13, 500], &[8, 16, 999]] {
            let mut h = PayloadHash::new();
            let mut at = 0;
            for &c in cuts {
                h.update(&data[at..c]);
                at = c;
            }
            h.update(&data[at..]);
            assert_eq!(h.value(), hash(&data), "cut at {cuts:?}");
        }
        let mut h = PayloadHash::new();
        h.update(b"The quick");
        h.update(b" brown fox");
        assert_eq!(h.to_string(), "0x41e5289114bbad3a");
    }

    #[test]
    fn payloads_skip_headers_tags_and_padding() {
        let body = bytes(46, 1);
        let raw = [eth(None, ETH_P_TEST), body.clone()].concat();
        let lay = layout(&raw).unwrap();
        assert_eq!(&raw[lay.payload.0..lay.payload.1], &body[..]);
        assert_eq!(lay.tci, None);

        let tagged = [eth(Some(0x2005), ETH_P_TEST), body.clone()].concat();
        let lay = layout(&tagged).unwrap();
        assert_eq!(&tagged[lay.payload.0..lay.payload.1], &body[..]);
        assert_eq!(lay.tci, Some(0x2005));
        assert!(check(&tagged, &RULES, false).is_ok());

        // A short UDP datagram padded to 60 bytes: the padding is not payload.
        let f = udp(b"abcd", 14);
        assert_eq!(f.len(), 60);
        let lay = layout(&f).unwrap();
        assert_eq!(&f[lay.payload.0..lay.payload.1], b"abcd");
        assert!(check(&f, &RULES, false).is_ok());

        let f = tcp(0, &bytes(100, 2), false);
        let lay = layout(&f).unwrap();
        assert_eq!(lay.payload, (54, 154));
        let c = check(&f, &RULES, false).unwrap();
        assert_eq!(c.tcp, Some((0, 100)));
    }

    #[test]
    fn bad_frames_are_named() {
        let mut f = udp(&bytes(30, 3), 0);
        f[ETH_HLEN + 10] ^= 1;
        assert_eq!(check(&f, &RULES, false), Err(FrameProblem::IpChecksum));

        let mut f = udp(&bytes(30, 3), 0);
        *f.last_mut().unwrap() ^= 0x40;
        assert!(matches!(
            check(&f, &RULES, false),
            Err(FrameProblem::L4Checksum { proto: "UDP", .. })
        ));

        let mut f = udp(&bytes(30, 3), 0);
        f[ETH_HLEN + 26..ETH_HLEN + 28].fill(0);
        assert_eq!(check(&f, &RULES, false), Err(FrameProblem::UdpNoChecksum));

        let mut f = tcp(0, &bytes(30, 3), false);
        f[40] ^= 0xff;
        assert!(matches!(
            check(&f, &RULES, false),
            Err(FrameProblem::L4Checksum { proto: "TCP", .. })
        ));

        let f = [eth(Some(6), ETH_P_TEST), bytes(46, 1)].concat();
        assert_eq!(
            check(&f, &RULES, false),
            Err(FrameProblem::Vid { got: 6, want: 5 })
        );
        let untagged_run = Rules {
            vlan: 0,
            maxframe: 1514,
        };
        let f = [eth(Some(5), ETH_P_TEST), bytes(46, 1)].concat();
        assert_eq!(
            check(&f, &untagged_run, false),
            Err(FrameProblem::Vid { got: 5, want: 0 })
        );

        let f = [eth(None, ETH_P_TEST), bytes(1501, 1)].concat();
        assert_eq!(
            check(&f, &RULES, false),
            Err(FrameProblem::TooLong {
                len: 1515,
                max: 1514
            })
        );
        // A tag may add its 4 bytes to the largest frame.
        let f = [eth(Some(5), ETH_P_TEST), bytes(1500, 1)].concat();
        assert!(check(&f, &RULES, false).is_ok());

        let f = tcp(0, &bytes(1001, 4), false);
        assert!(check(&f, &RULES, false).is_ok(), "not from TSO: any size");
        assert_eq!(
            check(&f, &RULES, true),
            Err(FrameProblem::SegmentSize(1001))
        );

        let mut f = udp(&bytes(30, 3), 0);
        f[ETH_HLEN + 3] += 1;
        assert!(matches!(layout(&f), Err(FrameProblem::IpLengths { .. })));
    }

    /// A TSO packet with a partial checksum, as a NIC hands it to a backend
    /// that carries offloads: cut into 1000-byte segments, each checked
    /// and echoed, and hashed as the guest hashes the packet it built.
    #[test]
    fn tso_packet_is_segmented_checked_and_echoed() {
        let data = bytes(2500, 7);
        let packet = tcp(0, &data, true);
        let hdr = tso_hdr();
        let mut core = EchoCore::new(Rules {
            vlan: 5,
            maxframe: 9014,
        });
        let echoes = core.guest_sent(&hdr, &packet);
        assert_eq!(echoes.len(), 3);
        for e in &echoes {
            assert_eq!(&e[..6], &GUEST, "sent back to the guest");
            assert_eq!(&e[6..12], &PEER, "from the peer");
            let c = check(e, &RULES, true).unwrap();
            assert!(c.tcp.unwrap().1 <= TEST_MSS);
            core.echo_sent(e);
        }
        // Then a plain raw frame and a UDP datagram whose checksum the NIC
        // left to the host.
        let raw = [eth(Some(5), ETH_P_TEST), bytes(60, 9)].concat();
        assert_eq!(core.guest_sent(&NetHdr::default(), &raw).len(), 1);
        core.echo_sent(&swap_macs(&raw));
        let mut partial = udp(&bytes(200, 5), 0);
        l4_csum(&mut partial, IPPROTO_UDP, 6, true);
        let hdr = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let e = core.guest_sent(&hdr, &partial);
        assert_eq!(e.len(), 1);
        assert!(check(&e[0], &RULES, false).is_ok(), "checksum completed");
        core.echo_sent(&e[0]);
        // A second TCP segment must go on where the stream stopped.
        let next = tcp(2500, &bytes(10, 1), false);
        core.guest_sent(&NetHdr::default(), &next);
        let gap = tcp(9999, &bytes(10, 1), false);
        core.guest_sent(&NetHdr::default(), &gap);

        let t = core.finish();
        let mut want = PayloadHash::new();
        want.update(&data);
        want.update(&bytes(60, 9));
        want.update(&bytes(200, 5));
        let echoed = want;
        want.update(&bytes(10, 1));
        want.update(&bytes(10, 1));
        assert_eq!(t.rx_hash, want);
        assert_eq!(t.tx_hash, echoed);
        assert_eq!((t.handed_over, t.received, t.sent), (5, 7, 5));
        assert_eq!((t.gso, t.segments, t.partial_csum, t.tagged), (1, 3, 2, 1));
        assert_eq!(
            t.problems,
            vec![(
                5,
                FrameProblem::TcpSequence {
                    got: 9999,
                    want: 2510
                }
            )]
        );
        let report = t.to_string();
        assert!(report.contains("problem in frame #5"), "{report}");
    }

    #[test]
    fn broken_offload_requests_are_problems_not_panics() {
        let mut core = EchoCore::new(RULES);
        let hdr = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 200,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(core.guest_sent(&hdr, &udp(b"xy", 0)).is_empty());
        let t = core.finish();
        assert_eq!(t.problem_count, 1);
        assert!(matches!(t.problems[0].1, FrameProblem::Offload { .. }));
    }
}
