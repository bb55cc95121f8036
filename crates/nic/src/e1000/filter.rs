//! Receive filtering: which destination addresses and VLANs the guest
//! programmed the receiver to accept.

use super::regs::*;
use super::state::Regs;

/// How a frame was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    /// To one station.
    Unicast,
    /// To a group.
    Multicast,
    /// To everyone.
    Broadcast,
}

impl Cast {
    /// The kind of the destination address `dst`.
    pub fn of(dst: &[u8]) -> Cast {
        if dst.iter().all(|&b| b == 0xFF) {
            Cast::Broadcast
        } else if dst.first().is_some_and(|b| b & 1 != 0) {
            Cast::Multicast
        } else {
            Cast::Unicast
        }
    }
}

/// Whether receive address register `i` (0..16) is valid and holds `dst`.
fn ra_matches(regs: &Regs, i: u32, dst: &[u8; 6]) -> bool {
    let lo = regs.get(RA + 8 * i);
    let hi = regs.get(RA + 8 * i + 4);
    // Only entries selecting the destination address (AS = 00) filter here.
    hi & RAH_AV != 0
        && hi & RAH_AS_MASK == 0
        && lo.to_le_bytes() == dst[..4]
        && (hi as u16).to_le_bytes() == dst[4..]
}

/// The 12-bit multicast hash of `dst` for multicast offset `mo` (RCTL.MO):
/// address bits [47:36], [46:35], [45:34] or [43:32].
pub fn mta_hash(dst: &[u8; 6], mo: u32) -> u32 {
    let (b4, b5) = (u32::from(dst[4]), u32::from(dst[5]));
    let h = match mo & 3 {
        0 => (b4 >> 4) | (b5 << 4),
        1 => (b4 >> 3) | (b5 << 5),
        2 => (b4 >> 2) | (b5 << 6),
        _ => b4 | (b5 << 8),
    };
    h & 0xFFF
}

fn mta_matches(regs: &Regs, dst: &[u8; 6]) -> bool {
    let h = mta_hash(dst, regs.get(RCTL) >> RCTL_MO_SHIFT);
    regs.get(MTA + 4 * (h >> 5)) & (1 << (h & 31)) != 0
}

/// Whether the destination filters accept a frame to `dst`.
pub fn accepts_address(regs: &Regs, dst: &[u8; 6]) -> bool {
    let rctl = regs.get(RCTL);
    let exact = || (0..16).any(|i| ra_matches(regs, i, dst));
    match Cast::of(dst) {
        Cast::Unicast => rctl & RCTL_UPE != 0 || exact(),
        Cast::Broadcast if rctl & RCTL_BAM != 0 => true,
        Cast::Multicast | Cast::Broadcast => {
            rctl & RCTL_MPE != 0 || exact() || mta_matches(regs, dst)
        }
    }
}

/// Whether the VLAN filters accept a frame carrying tag control `tci`.
pub fn accepts_vlan(regs: &Regs, tci: u16) -> bool {
    let rctl = regs.get(RCTL);
    if rctl & RCTL_CFIEN != 0 {
        let cfi = tci & 0x1000 != 0;
        if cfi != (rctl & RCTL_CFI != 0) {
            return false;
        }
    }
    if rctl & RCTL_VFE == 0 {
        return true;
    }
    let vid = u32::from(tci & 0x0FFF);
    regs.get(VFTA + 4 * (vid >> 5)) & (1 << (vid & 31)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_drivers_examples() {
        // 01:AA:00:12:34:56: address bits [47:36], [46:35], [45:34], [43:32].
        let a = [0x01, 0xAA, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(mta_hash(&a, 0), 0x563);
        assert_eq!(mta_hash(&a, 1), 0xAC6);
        assert_eq!(mta_hash(&a, 2), 0x58D);
        assert_eq!(mta_hash(&a, 3), 0x634);
        assert_eq!(Cast::of(&a), Cast::Multicast);
        assert_eq!(Cast::of(&[0xFF; 6]), Cast::Broadcast);
        assert_eq!(Cast::of(&[0x52, 0, 0, 0, 0, 1]), Cast::Unicast);
    }
}
