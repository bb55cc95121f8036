//! 802.1Q VLAN tag helpers (TPID 0x8100).
//!
//! Inserting or stripping a tag moves everything after the MAC addresses by
//! 4 bytes: a [`crate::NetHdr`] travelling with the frame needs its
//! `csum_start` and `hdr_len` moved by the same amount ([`shift_hdr`]).

use crate::NetHdr;

/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Bytes of one tag.
pub const TAG_LEN: usize = 4;
/// Destination and source MAC: where the tag goes.
const MACS_LEN: usize = 12;

/// Returns `frame` with a tag for `vid` (low 12 bits; priority 0) after the
/// MAC addresses. A frame too short to have an EtherType (< 14 bytes) is
/// not an Ethernet frame and comes back as it is.
pub fn insert_tag(frame: &[u8], vid: u16) -> Vec<u8> {
    insert_tci(frame, vid & 0x0fff)
}

/// As [`insert_tag`], with a full tag control information word
/// (priority, DEI and VID).
pub fn insert_tci(frame: &[u8], tci: u16) -> Vec<u8> {
    if frame.len() < MACS_LEN + 2 {
        return frame.to_vec();
    }
    let mut out = Vec::with_capacity(frame.len() + TAG_LEN);
    out.extend_from_slice(&frame[..MACS_LEN]);
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[MACS_LEN..]);
    out
}

/// The VLAN id of an 802.1Q-tagged frame, without copying.
pub fn tag_of(frame: &[u8]) -> Option<u16> {
    if frame.len() < MACS_LEN + TAG_LEN + 2 {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != TPID_8021Q {
        return None;
    }
    Some(u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff)
}

/// Removes the outer 802.1Q tag: `(vid, untagged frame)`, or `None` when
/// the frame carries no (complete) tag.
pub fn strip_tag(frame: &[u8]) -> Option<(u16, Vec<u8>)> {
    let vid = tag_of(frame)?;
    let mut out = Vec::with_capacity(frame.len() - TAG_LEN);
    out.extend_from_slice(&frame[..MACS_LEN]);
    out.extend_from_slice(&frame[MACS_LEN + TAG_LEN..]);
    Some((vid, out))
}

/// Moves the header offsets of `hdr` by `delta` bytes (+4 after
/// [`insert_tag`], -4 after [`strip_tag`]). Offsets that are zero (unused)
/// stay zero; `None` when an offset would leave the u16 range.
pub fn shift_hdr(hdr: &NetHdr, delta: i32) -> Option<NetHdr> {
    let shift = |v: u16| -> Option<u16> {
        if v == 0 {
            return Some(0);
        }
        u16::try_from(i32::from(v) + delta).ok()
    };
    let mut h = *hdr;
    if h.flags & crate::hdr::NEEDS_CSUM != 0 {
        h.csum_start = shift(h.csum_start)?;
    }
    h.hdr_len = shift(h.hdr_len)?;
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdr::NEEDS_CSUM;

    fn frame() -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend((0..46).map(|i| i as u8));
        f
    }

    #[test]
    fn insert_then_strip() {
        let f = frame();
        let t = insert_tag(&f, 0x1234); // only 12 bits count
        assert_eq!(t.len(), f.len() + 4);
        assert_eq!(&t[12..16], &[0x81, 0x00, 0x02, 0x34]);
        assert_eq!(&t[16..], &f[12..]);
        assert_eq!(tag_of(&t), Some(0x234));
        assert_eq!(strip_tag(&t), Some((0x234, f.clone())));
        assert_eq!(strip_tag(&f), None);
        let p = insert_tci(&f, 0xe005);
        assert_eq!(strip_tag(&p), Some((5, f)));
    }

    #[test]
    fn short_frames() {
        assert_eq!(insert_tag(&[1, 2, 3], 5), vec![1, 2, 3]);
        assert_eq!(strip_tag(&[]), None);
        // A tag header cut short is not a tag.
        let t = insert_tag(&frame(), 7);
        assert_eq!(strip_tag(&t[..17]), None);
        assert_eq!(
            strip_tag(&t[..18]).map(|(v, f)| (v, f.len())),
            Some((7, 14))
        );
    }

    #[test]
    fn hdr_shift() {
        let h = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            hdr_len: 54,
            ..Default::default()
        };
        let s = shift_hdr(&h, 4).unwrap();
        assert_eq!((s.csum_start, s.csum_offset, s.hdr_len), (38, 16, 58));
        assert_eq!(shift_hdr(&s, -4), Some(h));
        assert_eq!(shift_hdr(&NetHdr::default(), 4), Some(NetHdr::default()));
        let low = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 2,
            ..Default::default()
        };
        assert_eq!(shift_hdr(&low, -4), None);
    }
}
