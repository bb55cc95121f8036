//! The per-frame offload header carried across the backend seam.

/// Size of the header on the wire to tap (virtio_net_hdr_v1, with num_buffers).
pub const NET_HDR_LEN: usize = 12;

/// `flags`: the checksum from `csum_start` to the end must be completed,
/// and stored at `csum_start + csum_offset`.
pub const NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is known to be valid.
pub const DATA_VALID: u8 = 2;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
/// TCPv4 segmentation.
pub const GSO_TCPV4: u8 = 1;
/// UDP fragmentation (legacy UFO).
pub const GSO_UDP: u8 = 3;
/// TCPv6 segmentation.
pub const GSO_TCPV6: u8 = 4;
/// ECN bit, or-ed into `gso_type`.
pub const GSO_ECN: u8 = 0x80;

/// Offload metadata of one frame (virtio_net_hdr_v1 fields, host order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// [`NEEDS_CSUM`] | [`DATA_VALID`].
    pub flags: u8,
    /// [`GSO_NONE`], [`GSO_TCPV4`], [`GSO_TCPV6`], [`GSO_UDP`], maybe | [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP) for segmentation.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
    /// Number of merged RX buffers (virtio MRG_RXBUF); 0 elsewhere.
    pub num_buffers: u16,
}

impl NetHdr {
    /// Decodes the 12-byte little-endian wire form (shorter input: the
    /// missing fields are zero).
    pub fn from_bytes(b: &[u8]) -> NetHdr {
        let mut w = [0u8; NET_HDR_LEN];
        let n = b.len().min(NET_HDR_LEN);
        w[..n].copy_from_slice(&b[..n]);
        let u16_at = |i: usize| u16::from_le_bytes([w[i], w[i + 1]]);
        NetHdr {
            flags: w[0],
            gso_type: w[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    /// Encodes the 12-byte little-endian wire form.
    pub fn to_bytes(&self) -> [u8; NET_HDR_LEN] {
        let mut w = [0u8; NET_HDR_LEN];
        w[0] = self.flags;
        w[1] = self.gso_type;
        w[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        w[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        w[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        w[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        w[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        w
    }

    /// True when the frame needs no offload work.
    pub fn is_plain(&self) -> bool {
        self.flags & NEEDS_CSUM == 0 && self.gso_type & !GSO_ECN == GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = NetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(NetHdr::from_bytes(&h.to_bytes()), h);
        assert_eq!(
            NetHdr::from_bytes(&[1, 0]),
            NetHdr {
                flags: 1,
                ..Default::default()
            }
        );
        assert!(!h.is_plain());
        assert!(NetHdr::default().is_plain());
    }
}
