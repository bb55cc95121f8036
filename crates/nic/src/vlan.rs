//! The 802.1Q access-port rule applied between a NIC and its backend.

use tapir_net_backend::offload::be16;
use tapir_net_backend::NetHdr;

/// 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Offset of the EtherType (or TPID) in an Ethernet frame.
pub const ETHERTYPE_OFFSET: usize = 12;
/// Length of an 802.1Q tag.
pub const TAG_LEN: usize = 4;

/// Inserts a tag (`tpid`, `tci`) after the MAC addresses of `frame`, in
/// place, and shifts the offload offsets in `hdr` that point at or past
/// the insertion point (those that count from the frame start). Frames too
/// short to hold two MAC addresses are left alone (they are dropped later).
///
/// Every tagging path uses it: the worker's access port (TPID 0x8100, the
/// port's VID), e1000 (VET's TPID, the descriptor's TCI) and rtl8139 C+
/// (0x8100, the descriptor's TCI).
pub fn insert(frame: &mut Vec<u8>, tpid: u16, tci: u16, hdr: &mut NetHdr) {
    if frame.len() < ETHERTYPE_OFFSET {
        return;
    }
    let [t0, t1] = tpid.to_be_bytes();
    let [c0, c1] = tci.to_be_bytes();
    frame.splice(ETHERTYPE_OFFSET..ETHERTYPE_OFFSET, [t0, t1, c0, c1]);
    for offset in [&mut hdr.csum_start, &mut hdr.hdr_len] {
        if usize::from(*offset) >= ETHERTYPE_OFFSET {
            *offset = offset.saturating_add(TAG_LEN as u16);
        }
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

    /// Tags `f` the way the access port does.
    fn tag(hdr: &mut NetHdr, f: &[u8], vid: u16) -> Vec<u8> {
        let mut out = f.to_vec();
        insert(&mut out, TPID_8021Q, vid, hdr);
        out
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
        let mut out = tag(&mut hdr, &f, 100);
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
    fn insert_keeps_tpid_and_whole_tci() {
        // e1000 takes the TPID from VET and the TCI (priority, DEI, VID)
        // from the descriptor, as it is.
        let f = frame(0x86dd);
        let mut out = f.clone();
        let mut hdr = NetHdr::default();
        insert(&mut out, 0x88a8, 0xa07b, &mut hdr);
        assert_eq!(&out[..12], &f[..12]);
        assert_eq!(&out[12..16], &[0x88, 0xa8, 0xa0, 0x7b]);
        assert_eq!(&out[16..], &f[12..]);
        assert_eq!(hdr, NetHdr::default(), "no offsets: nothing to shift");
    }

    #[test]
    fn insert_shifts_only_offsets_behind_the_tag() {
        let mut hdr = NetHdr {
            csum_start: 11,
            hdr_len: 12,
            ..Default::default()
        };
        let mut out = frame(0x0800);
        insert(&mut out, TPID_8021Q, 1, &mut hdr);
        assert_eq!((hdr.csum_start, hdr.hdr_len), (11, 16));
        let mut hdr = NetHdr {
            csum_start: u16::MAX - 1,
            ..Default::default()
        };
        insert(&mut out, TPID_8021Q, 1, &mut hdr);
        assert_eq!(hdr.csum_start, u16::MAX, "saturates");
    }

    #[test]
    fn access_port_drops_untagged_and_other_vlans() {
        let mut hdr = NetHdr::default();
        let mut f = frame(0x0800);
        let len = f.len();
        assert_eq!(untag(&mut hdr, &mut f, len, 100), None);
        let mut out = tag(&mut hdr, &frame(0x0800), 200);
        let len = out.len();
        assert_eq!(untag(&mut hdr, &mut out, len, 100), None);
        let mut tiny = [0u8; 10];
        assert_eq!(untag(&mut hdr, &mut tiny, 10, 100), None);
        assert_eq!(tag(&mut hdr, &[1, 2, 3], 5), vec![1, 2, 3]);
        let mut short = vec![0u8; 8];
        insert(&mut short, TPID_8021Q, 1, &mut hdr);
        assert_eq!(short, vec![0u8; 8], "no room for the MAC addresses");
    }
}
