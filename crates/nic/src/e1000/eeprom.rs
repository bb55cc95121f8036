//! The 82540EM's serial EEPROM: a 64-word Microwire part (93C46 style)
//! that software reads by bit-banging EECD or through EERD.
//!
//! The image is built from the MAC address: words 0-2 hold the address,
//! 0x0B-0x0E the PCI IDs, and word 0x3F makes words 0..=0x3F sum to 0xBABA
//! as drivers check. Writes are not modelled: the part behaves as
//! write-protected (commands other than READ are ignored and DO reads
//! "ready").

use super::regs::*;

/// Number of 16-bit words.
pub const EEPROM_WORDS: usize = 64;
/// Address bits of a 64-word Microwire part.
const ADDR_BITS: u32 = 6;
/// Start bit + 2 opcode bits + address.
const COMMAND_BITS: u32 = 3 + ADDR_BITS;
/// Microwire READ opcode (after the start bit).
const OP_READ: u16 = 0b10;
/// Word whose value makes the image sum to [`CHECKSUM_SUM`].
pub const CHECKSUM_WORD: usize = 0x3F;
/// What words 0..=0x3F must sum to.
pub const CHECKSUM_SUM: u16 = 0xBABA;

/// Word offsets with meaning to drivers.
mod word {
    pub const COMPAT: usize = 0x03;
    pub const ID_LED: usize = 0x04;
    pub const VERSION: usize = 0x05;
    pub const PBA_HIGH: usize = 0x08;
    pub const PBA_LOW: usize = 0x09;
    pub const INIT_CONTROL1: usize = 0x0A;
    pub const SUBSYSTEM_ID: usize = 0x0B;
    pub const SUBSYSTEM_VENDOR: usize = 0x0C;
    pub const DEVICE_ID: usize = 0x0D;
    pub const VENDOR_ID: usize = 0x0E;
    pub const INIT_CONTROL2: usize = 0x0F;
}

/// The PCI identity written into the image (and used for config space).
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// Builds the EEPROM image for `mac`.
pub fn image(mac: [u8; 6], ids: Ids) -> [u16; EEPROM_WORDS] {
    let mut w = [0u16; EEPROM_WORDS];
    for i in 0..3 {
        w[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
    }
    w[word::COMPAT] = 0x0000;
    // 0xFFFF: "use the default LED configuration".
    w[word::ID_LED] = 0xFFFF;
    w[word::VERSION] = 0x0100;
    w[word::PBA_HIGH] = 0xFFFF;
    w[word::PBA_LOW] = 0xFFFF;
    // Bits 15:14 = 01b (valid image), full duplex, load the IDs below.
    w[word::INIT_CONTROL1] = 0x4000 | 0x0400 | 0x0003;
    w[word::SUBSYSTEM_ID] = ids.subsystem;
    w[word::SUBSYSTEM_VENDOR] = ids.subsystem_vendor;
    w[word::DEVICE_ID] = ids.device;
    w[word::VENDOR_ID] = ids.vendor;
    // Symmetric and asymmetric PAUSE advertised, auto-negotiation on.
    w[word::INIT_CONTROL2] = 0x3000 | 0x0800;
    let sum = w[..CHECKSUM_WORD]
        .iter()
        .fold(0u16, |a, &x| a.wrapping_add(x));
    w[CHECKSUM_WORD] = CHECKSUM_SUM.wrapping_sub(sum);
    w
}

/// Where the Microwire interface is in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// Waiting for a start bit.
    Idle,
    /// Shifting in a command: `bits` received so far, start bit included.
    Command { bits: u32, value: u16 },
    /// Shifting out data; `bit` of the word at `addr` goes out next.
    Reading { addr: u16, bit: u32 },
    /// A command we do not model: ignore clocks until chip select drops.
    Ignore,
}

/// The EEPROM and its two access paths (EECD bit-banging, EERD).
#[derive(Debug, Clone)]
pub struct Eeprom {
    words: [u16; EEPROM_WORDS],
    /// The software-driven EECD bits as last written.
    eecd: u32,
    eerd: u32,
    wire: Wire,
    /// The level of DO.
    dout: bool,
}

/// EECD bits software drives.
const EECD_WRITABLE: u32 = EECD_SK | EECD_CS | EECD_DI | EECD_FWE_MASK | EECD_REQ;

impl Eeprom {
    /// An EEPROM holding `words`.
    pub fn new(words: [u16; EEPROM_WORDS]) -> Self {
        Self {
            words,
            eecd: 0,
            eerd: 0,
            wire: Wire::Idle,
            dout: true,
        }
    }

    /// The word at `addr` (addresses wrap like the part's 6 address bits).
    pub fn word(&self, addr: u16) -> u16 {
        self.words[usize::from(addr) % EEPROM_WORDS]
    }

    /// The MAC address in words 0-2.
    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        for i in 0..3 {
            m[2 * i..2 * i + 2].copy_from_slice(&self.words[i].to_le_bytes());
        }
        m
    }

    /// Device reset: the interface returns to idle, access is released.
    pub fn reset(&mut self) {
        self.eecd = 0;
        self.eerd = 0;
        self.wire = Wire::Idle;
        self.dout = true;
    }

    /// EECD as the guest reads it.
    pub fn eecd_read(&self) -> u32 {
        let mut v = self.eecd | EECD_PRES;
        // A single function: access is granted as soon as it is requested.
        if v & EECD_REQ != 0 {
            v |= EECD_GNT;
        }
        if self.dout {
            v |= EECD_DO;
        }
        // EECD_SIZE stays clear: a 64-word part.
        v & !EECD_SIZE
    }

    /// A guest write of EECD: drives chip select, clock and data in.
    pub fn eecd_write(&mut self, value: u32) {
        let old = self.eecd;
        let new = value & EECD_WRITABLE;
        self.eecd = new;
        if new & EECD_CS == 0 {
            // Deselected: any transaction ends.
            self.wire = Wire::Idle;
            self.dout = true;
            return;
        }
        if old & EECD_CS == 0 {
            self.wire = Wire::Idle;
        }
        if old & EECD_SK == 0 && new & EECD_SK != 0 {
            self.clock(new & EECD_DI != 0);
        }
    }

    /// One rising edge of SK with chip select high.
    fn clock(&mut self, di: bool) {
        self.wire = match self.wire {
            Wire::Idle if di => Wire::Command { bits: 1, value: 1 },
            Wire::Idle => Wire::Idle,
            Wire::Command { bits, value } => {
                let value = (value << 1) | u16::from(di);
                let bits = bits + 1;
                if bits < COMMAND_BITS {
                    Wire::Command { bits, value }
                } else if (value >> ADDR_BITS) & 0b11 == OP_READ {
                    // A dummy 0 precedes the data.
                    self.dout = false;
                    Wire::Reading {
                        addr: value & ((1 << ADDR_BITS) - 1),
                        bit: 0,
                    }
                } else {
                    Wire::Ignore
                }
            }
            Wire::Reading { addr, bit } => {
                self.dout = (self.word(addr) >> (15 - bit)) & 1 != 0;
                // Sequential read: go on into the next word.
                if bit == 15 {
                    Wire::Reading {
                        addr: (addr + 1) % EEPROM_WORDS as u16,
                        bit: 0,
                    }
                } else {
                    Wire::Reading { addr, bit: bit + 1 }
                }
            }
            Wire::Ignore => Wire::Ignore,
        };
    }

    /// EERD as the guest reads it.
    pub fn eerd_read(&self) -> u32 {
        self.eerd
    }

    /// A guest write of EERD: START reads the addressed word at once.
    pub fn eerd_write(&mut self, value: u32) {
        let addr = ((value >> EERD_ADDR_SHIFT) & 0xFF) as u16;
        self.eerd = if value & EERD_START != 0 {
            (u32::from(self.word(addr)) << EERD_DATA_SHIFT)
                | (u32::from(addr) << EERD_ADDR_SHIFT)
                | EERD_DONE
        } else {
            u32::from(addr) << EERD_ADDR_SHIFT
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: Ids = Ids {
        vendor: 0x8086,
        device: 0x100E,
        subsystem_vendor: 0x8086,
        subsystem: 0x001E,
    };
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Reads a word the way Linux's Microwire code does.
    fn bitbang_read(e: &mut Eeprom, addr: u16) -> u16 {
        let mut eecd = e.eecd_read() | EECD_REQ;
        e.eecd_write(eecd);
        assert_ne!(e.eecd_read() & EECD_GNT, 0);
        eecd &= !(EECD_DI | EECD_SK);
        e.eecd_write(eecd);
        eecd |= EECD_CS;
        e.eecd_write(eecd);
        let mut shift_out = |e: &mut Eeprom, data: u16, count: u32| {
            for i in (0..count).rev() {
                eecd &= !EECD_DI;
                if data & (1 << i) != 0 {
                    eecd |= EECD_DI;
                }
                e.eecd_write(eecd);
                e.eecd_write(eecd | EECD_SK);
                e.eecd_write(eecd);
            }
            eecd &= !EECD_DI;
            e.eecd_write(eecd);
        };
        shift_out(e, 0b110, 3);
        shift_out(e, addr, 6);
        let mut data = 0u16;
        for _ in 0..16 {
            e.eecd_write(eecd | EECD_SK);
            data = (data << 1) | u16::from(e.eecd_read() & EECD_DO != 0);
            e.eecd_write(eecd);
        }
        // Standby, then release.
        e.eecd_write(eecd & !(EECD_CS | EECD_SK));
        e.eecd_write(eecd & !EECD_CS & !EECD_REQ);
        data
    }

    #[test]
    fn image_has_mac_ids_and_valid_checksum() {
        let w = image(MAC, IDS);
        let sum = w.iter().fold(0u16, |a, &x| a.wrapping_add(x));
        assert_eq!(sum, CHECKSUM_SUM);
        assert_eq!(&w[..3], &[0x5452, 0x1200, 0x5634]);
        assert_eq!(w[0x0D], 0x100E);
        assert_eq!(Eeprom::new(w).mac(), MAC);
    }

    #[test]
    fn microwire_and_eerd_reads_agree() {
        let w = image(MAC, IDS);
        let mut e = Eeprom::new(w);
        for addr in 0..EEPROM_WORDS as u16 {
            assert_eq!(
                bitbang_read(&mut e, addr),
                w[usize::from(addr)],
                "word {addr}"
            );
            e.eerd_write((u32::from(addr) << EERD_ADDR_SHIFT) | EERD_START);
            let r = e.eerd_read();
            assert_ne!(r & EERD_DONE, 0);
            assert_eq!((r >> EERD_DATA_SHIFT) as u16, w[usize::from(addr)]);
        }
        assert_eq!(e.eecd_read() & (EECD_PRES | EECD_SIZE), EECD_PRES);
    }

    #[test]
    fn unmodelled_commands_and_noise_are_harmless() {
        let mut e = Eeprom::new(image(MAC, IDS));
        // Write-enable command, then a write: ignored, DO reads ready.
        e.eecd_write(EECD_CS);
        for bit in [1, 0, 0, 1, 1, 0, 0, 0, 0] {
            let di = if bit == 1 { EECD_DI } else { 0 };
            e.eecd_write(EECD_CS | di);
            e.eecd_write(EECD_CS | di | EECD_SK);
            e.eecd_write(EECD_CS | di);
        }
        assert_ne!(e.eecd_read() & EECD_DO, 0);
        // Clocks without chip select do nothing.
        for _ in 0..100 {
            e.eecd_write(EECD_SK | EECD_DI);
            e.eecd_write(EECD_DI);
        }
        assert_eq!(bitbang_read(&mut e, 1), 0x1200);
    }
}
