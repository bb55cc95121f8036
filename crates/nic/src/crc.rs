//! The Ethernet CRC-32 (IEEE 802.3, reflected), slice-by-8: the frame
//! check sequence a NIC appends to received frames (e1000 unless the guest
//! asks the MAC to strip it, RTL8139 always) and the multicast hashes.

/// Reflected polynomial of CRC-32.
const POLY: u32 = 0xEDB8_8320;

/// Slice-by-8 lookup tables, built at compile time. A `static`, not a
/// `const`: an unoptimized build copies a `const` array to the stack at
/// every indexing, 8 KiB per byte of frame here.
static TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
};

/// Continues a CRC-32 over `data` from the running (uncomplemented) `crc`.
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = TABLES[7][(lo & 0xFF) as usize]
            ^ TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xFF) as usize]
            ^ TABLES[2][((hi >> 8) & 0xFF) as usize]
            ^ TABLES[1][((hi >> 16) & 0xFF) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

/// The FCS of the frame made of `parts` (concatenated), in wire order.
pub fn fcs(parts: &[&[u8]]) -> [u8; 4] {
    let crc = parts.iter().fold(!0u32, |c, p| update(c, p));
    (!crc).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_split_input() {
        assert_eq!(fcs(&[b"123456789"]), 0xCBF4_3926u32.to_le_bytes());
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31) as u8).collect();
        assert_eq!(
            fcs(&[&data]),
            fcs(&[&data[..13], &data[13..500], &data[500..]])
        );
        assert_eq!(fcs(&[]), [0, 0, 0, 0]);
    }

    #[test]
    fn slice_by_8_matches_the_bitwise_definition() {
        fn bitwise(mut crc: u32, data: &[u8]) -> u32 {
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ POLY
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..1531u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 1514, 1531] {
            assert_eq!(update(!0, &data[..len]), bitwise(!0, &data[..len]), "{len}");
        }
    }
}
