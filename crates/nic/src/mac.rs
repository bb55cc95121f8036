//! Default MAC addresses.

/// A stable, locally administered unicast MAC for a NIC that was given none:
/// `52:54:00` + 24 bits hashed from `seed` (e.g. the NIC's index and its
/// backend's interface name), so that the same command line gives the same
/// address and two NICs differ.
pub fn default_mac(seed: &str) -> [u8; 6] {
    // FNV-1a, 32 bits: small and stable across releases (unlike DefaultHasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in seed.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    [0x52, 0x54, 0x00, b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_unicast_local_and_distinct() {
        let a = default_mac("0/tap0");
        assert_eq!(a, default_mac("0/tap0"));
        assert_ne!(a, default_mac("1/tap1"));
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
    }
}
