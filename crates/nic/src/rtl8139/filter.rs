//! The receive address filter (RCR accept bits, IDR, the MAR multicast
//! hash) and the Ethernet CRC the chip appends to received frames (the
//! crate's slice-by-8 CRC).

use super::regs::{RCR_AAP, RCR_AB, RCR_AM, RCR_APM};

/// The frame check sequence of `frame`, in wire (little-endian) byte order.
pub fn fcs(frame: &[u8]) -> [u8; 4] {
    crate::crc::fcs(&[frame])
}

/// Index (0..64) of `addr` in the multicast hash: the top 6 bits of the
/// big-endian Ethernet CRC of the address, as the Realtek drivers compute it.
pub fn mcast_hash_index(addr: &[u8; 6]) -> usize {
    let crc = crate::crc::update(!0, addr);
    (crc.reverse_bits() >> 26) as usize
}

/// How a frame's destination matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Our station address.
    Physical,
    /// Another unicast address, accepted in promiscuous mode.
    Promiscuous,
    /// The broadcast address.
    Broadcast,
    /// A multicast address whose hash bit is set.
    Multicast,
}

/// Whether a frame to `dst` is accepted with receive configuration `rcr`,
/// station address `idr` and multicast hash `mar`.
pub fn accept(dst: &[u8; 6], rcr: u32, idr: &[u8; 6], mar: &[u8; 8]) -> Option<Match> {
    if dst == &[0xff; 6] {
        return (rcr & RCR_AB != 0).then_some(Match::Broadcast);
    }
    if dst[0] & 1 != 0 {
        if rcr & RCR_AM == 0 {
            return None;
        }
        let bit = mcast_hash_index(dst);
        return (mar[bit / 8] & (1 << (bit % 8)) != 0).then_some(Match::Multicast);
    }
    if rcr & RCR_APM != 0 && dst == idr {
        return Some(Match::Physical);
    }
    (rcr & RCR_AAP != 0).then_some(Match::Promiscuous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_values() {
        // CRC-32 of "123456789" is 0xcbf43926.
        assert_eq!(u32::from_le_bytes(fcs(b"123456789")), 0xcbf4_3926);
        // Linux's `ether_crc(6, addr) >> 26` (bit-reversed reflected CRC)
        // for the IPv6 all-nodes and IPv4 all-hosts groups.
        assert_eq!(mcast_hash_index(&[0x33, 0x33, 0, 0, 0, 1]), 62);
        assert_eq!(mcast_hash_index(&[0x01, 0x00, 0x5e, 0, 0, 1]), 31);
    }

    #[test]
    fn accept_rules() {
        let me = [0x52, 0x54, 0, 1, 2, 3];
        let mut mar = [0u8; 8];
        let group = [0x01, 0x00, 0x5e, 0, 0, 1];
        let all = RCR_AAP | RCR_APM | RCR_AM | RCR_AB;
        assert_eq!(accept(&me, RCR_APM, &me, &mar), Some(Match::Physical));
        assert_eq!(accept(&me, RCR_AB, &me, &mar), None);
        assert_eq!(
            accept(&[0xff; 6], RCR_AB, &me, &mar),
            Some(Match::Broadcast)
        );
        assert_eq!(accept(&[0xff; 6], RCR_APM, &me, &mar), None);
        assert_eq!(accept(&group, RCR_AM, &me, &mar), None, "hash bit clear");
        let bit = mcast_hash_index(&group);
        mar[bit / 8] |= 1 << (bit % 8);
        assert_eq!(accept(&group, RCR_AM, &me, &mar), Some(Match::Multicast));
        assert_eq!(accept(&group, RCR_APM, &me, &mar), None);
        let other = [0x52, 0x54, 0, 9, 9, 9];
        assert_eq!(accept(&other, RCR_APM | RCR_AB, &me, &mar), None);
        assert_eq!(accept(&other, all, &me, &mar), Some(Match::Promiscuous));
    }
}
