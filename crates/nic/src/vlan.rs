//! The 802.1Q access-port rule applied between a NIC and its backend.

use tapir_net_backend::offload::be16;
use tapir_net_backend::NetHdr;

/// 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Offset of the EtherType (or TPID) in an Ethernet frame.
pub const ETHERTYPE_OFFSET: usize = 12;
/// Length of an 802.1Q tag.
pub const TAG_LEN: usize = 4;

/// Inserts a tag with `vid` after the MAC addresses, shifting the offload
/// offsets in `hdr` that count from the frame start. Frames too short to
/// hold two MAC addresses come back unchanged (they are dropped later).
pub fn tag(hdr: &mut NetHdr, frame: &[u8], vid: u16, out: &mut Vec<u8>) {
    out.clear();
    if frame.len() < ETHERTYPE_OFFSET {
        out.extend_from_slice(frame);
        return;
    }
    out.extend_from_slice(&frame[..ETHERTYPE_OFFSET]);
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[ETHERTYPE_OFFSET..]);
    if hdr.csum_start != 0 {
        hdr.csum_start = hdr.csum_start.saturating_add(TAG_LEN as u16);
    }
    if hdr.hdr_len != 0 {
        hdr.hdr_len = hdr.hdr_len.saturating_add(TAG_LEN as u16);
    }
}

/// If `frame` carries a tag with `vid`, removes it in place (returns the
/// new length) and shifts the offsets in `hdr`; `None` for untagged frames
/// and other VLANs, which an access port drops.
pub fn untag(hdr: &mut NetHdr, frame: &mut [u8], len: usize, vid: u16) -> Option<usize> {
    if len < ETHERTYPE_OFFSET + TAG_LEN {
        return None;
    }
    let tpid = be16(frame, ETHERTYPE_OFFSET);
    let tci = be16(frame, ETHERTYPE_OFFSET + 2);
    if tpid != TPID_8021Q || tci & 0x0fff != vid {
        return None;
    }
    frame.copy_within(ETHERTYPE_OFFSET + TAG_LEN..len, ETHERTYPE_OFFSET);
    if hdr.csum_start as usize >= ETHERTYPE_OFFSET + TAG_LEN {
        hdr.csum_start -= TAG_LEN as u16;
    }
    if hdr.hdr_len as usize >= ETHERTYPE_OFFSET + TAG_LEN {
        hdr.hdr_len -= TAG_LEN as u16;
    }
    Some(len - TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0xab; 46]);
        f
    }

    #[test]
    fn tag_and_untag_round_trip() {
        let f = frame(0x0800);
        let mut hdr = NetHdr {
            csum_start: 34,
            csum_offset: 16,
            hdr_len: 54,
            ..Default::default()
        };
        let mut out = Vec::new();
        tag(&mut hdr, &f, 100, &mut out);
        assert_eq!(out.len(), f.len() + 4);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&out[16..18], &[0x08, 0x00]);
        assert_eq!((hdr.csum_start, hdr.hdr_len), (38, 58));
        let len = out.len();
        assert_eq!(untag(&mut hdr, &mut out, len, 100), Some(f.len()));
        assert_eq!(&out[..f.len()], &f[..]);
        assert_eq!((hdr.csum_start, hdr.hdr_len), (34, 54));
    }

    #[test]
    fn access_port_drops_untagged_and_other_vlans() {
        let mut hdr = NetHdr::default();
        let mut f = frame(0x0800);
        let len = f.len();
        assert_eq!(untag(&mut hdr, &mut f, len, 100), None);
        let mut out = Vec::new();
        tag(&mut hdr, &frame(0x0800), 200, &mut out);
        let len = out.len();
        assert_eq!(untag(&mut hdr, &mut out, len, 100), None);
        let mut tiny = [0u8; 10];
        assert_eq!(untag(&mut hdr, &mut tiny, 10, 100), None);
        tag(&mut hdr, &[1, 2, 3], 5, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
    }
}
