//! The 93C46 serial EEPROM behind 9346CR (64 words of 16 bits, 6-bit
//! addresses), as a pin-level state machine: the driver bit-bangs chip
//! select (CS), clock (SK) and data in (DI) and samples data out (DO).
//!
//! A command is a start bit (1; leading zeros are ignored), a 2-bit opcode
//! and a 6-bit address, clocked in on rising SK edges while CS is high.
//! READ then drives a dummy 0 and the word's 16 bits, most significant
//! first, one per rising edge, and goes on with the next word while the
//! clock keeps running (sequential read). WRITE takes 16 data bits after
//! the address; ERASE, and the 00-opcode group (EWEN, EWDS, ERAL, WRAL)
//! work as on the part, with programming enabled only after EWEN and
//! completing at once (DO reads 1, "ready", when CS is raised again).

/// Words in a 93C46 (16-bit organisation).
pub const EEPROM_WORDS: usize = 64;
/// Address bits of a 93C46.
const ADDR_BITS: u8 = 6;
/// Signature word 0 the Realtek drivers look for.
pub const EEPROM_SIGNATURE: u16 = 0x8129;
/// First word of the MAC address (words 7-9, little-endian byte pairs).
pub const EEPROM_MAC_WORD: usize = 7;

/// Contents of a fresh EEPROM for a NIC with `mac` and PCI identity.
pub fn default_contents(mac: [u8; 6], vendor: u16, device: u16) -> [u16; EEPROM_WORDS] {
    let mut w = [0u16; EEPROM_WORDS];
    w[0] = EEPROM_SIGNATURE;
    w[1] = vendor;
    w[2] = device;
    w[3] = vendor; // subsystem vendor
    w[4] = device; // subsystem
    w[5] = 0x4020; // MAX_LAT 0x40, MIN_GNT 0x20
    for i in 0..3 {
        w[EEPROM_MAC_WORD + i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
    }
    w
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the start bit.
    Idle,
    /// Collecting opcode and address bits (`bits` so far, value in `shift`).
    Command,
    /// Shifting out `addr`, next bit `bit` (0 = most significant).
    Read { addr: u8, bit: u8 },
    /// Collecting 16 data bits for `addr` (`None`: write to every word).
    Write { addr: Option<u8>, bits: u8 },
    /// Command done; further clocks are ignored until CS drops.
    Done,
}

/// A 93C46 serial EEPROM.
#[derive(Debug, Clone)]
pub struct Eeprom93c46 {
    words: [u16; EEPROM_WORDS],
    phase: Phase,
    shift: u32,
    bits: u8,
    cs: bool,
    sk: bool,
    dout: bool,
    write_enabled: bool,
}

impl Eeprom93c46 {
    /// An EEPROM holding `words`.
    pub fn new(words: [u16; EEPROM_WORDS]) -> Self {
        Self {
            words,
            phase: Phase::Idle,
            shift: 0,
            bits: 0,
            cs: false,
            sk: false,
            dout: true,
            write_enabled: false,
        }
    }

    /// Word `addr` (wrapping at 64).
    pub fn word(&self, addr: usize) -> u16 {
        self.words[addr % EEPROM_WORDS]
    }

    /// The data-out pin.
    pub fn dout(&self) -> bool {
        self.dout
    }

    /// Drives the three input pins.
    pub fn set_pins(&mut self, cs: bool, sk: bool, di: bool) {
        if !cs {
            // Deselected: the command (if any) ends; DO floats (reads 1).
            self.phase = Phase::Idle;
            self.cs = false;
            self.sk = sk;
            self.dout = true;
            return;
        }
        if !self.cs {
            // Newly selected: a fresh command starts; DO shows "ready".
            self.cs = true;
            self.phase = Phase::Idle;
            self.dout = true;
        }
        let rising = sk && !self.sk;
        self.sk = sk;
        if rising {
            self.clock(di);
        }
    }

    fn clock(&mut self, di: bool) {
        match self.phase {
            Phase::Idle => {
                if di {
                    self.phase = Phase::Command;
                    self.shift = 0;
                    self.bits = 0;
                }
            }
            Phase::Command => {
                self.shift = (self.shift << 1) | u32::from(di);
                self.bits += 1;
                if self.bits == 2 + ADDR_BITS {
                    self.decode();
                }
            }
            Phase::Read { addr, bit } => {
                let word = self.words[usize::from(addr)];
                self.dout = word & (0x8000 >> bit) != 0;
                self.phase = if bit == 15 {
                    Phase::Read {
                        addr: (addr + 1) % EEPROM_WORDS as u8,
                        bit: 0,
                    }
                } else {
                    Phase::Read { addr, bit: bit + 1 }
                };
            }
            Phase::Write { addr, bits } => {
                self.shift = (self.shift << 1) | u32::from(di);
                if bits + 1 < 16 {
                    self.phase = Phase::Write {
                        addr,
                        bits: bits + 1,
                    };
                    return;
                }
                let value = self.shift as u16;
                if self.write_enabled {
                    match addr {
                        Some(a) => self.words[usize::from(a)] = value,
                        None => self.words = [value; EEPROM_WORDS],
                    }
                }
                self.phase = Phase::Done;
            }
            Phase::Done => {}
        }
    }

    fn decode(&mut self) {
        let opcode = (self.shift >> ADDR_BITS) & 3;
        let addr = (self.shift & ((1 << ADDR_BITS) - 1)) as u8;
        self.shift = 0;
        self.phase = match opcode {
            0b10 => {
                self.dout = false; // the dummy bit before the data
                Phase::Read { addr, bit: 0 }
            }
            0b01 => Phase::Write {
                addr: Some(addr),
                bits: 0,
            },
            0b11 => {
                if self.write_enabled {
                    self.words[usize::from(addr)] = 0xffff;
                }
                Phase::Done
            }
            _ => match addr >> (ADDR_BITS - 2) {
                0b11 => {
                    self.write_enabled = true;
                    Phase::Done
                }
                0b00 => {
                    self.write_enabled = false;
                    Phase::Done
                }
                0b10 => {
                    if self.write_enabled {
                        self.words = [0xffff; EEPROM_WORDS];
                    }
                    Phase::Done
                }
                _ => Phase::Write {
                    addr: None,
                    bits: 0,
                },
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-bangs like Linux's 8139too/8139cp `read_eeprom`: `lead` zero bits,
    /// the start bit, READ and an address of `addr_len` bits, then 16 reads.
    pub(crate) fn read_word(e: &mut Eeprom93c46, loc: u16, addr_len: u32, lead: u32) -> u16 {
        let cmd = (u32::from(loc)) | (6 << addr_len);
        e.set_pins(false, false, false);
        e.set_pins(true, false, false);
        for i in (0..3 + addr_len + lead).rev() {
            let d = cmd & (1 << i) != 0;
            e.set_pins(true, false, d);
            e.set_pins(true, true, d);
        }
        e.set_pins(true, false, false);
        let mut v = 0u16;
        for _ in 0..16 {
            e.set_pins(true, true, false);
            v = (v << 1) | u16::from(e.dout());
            e.set_pins(true, false, false);
        }
        e.set_pins(false, false, false);
        v
    }

    fn send(e: &mut Eeprom93c46, value: u32, bits: u32) {
        for i in (0..bits).rev() {
            let d = value & (1 << i) != 0;
            e.set_pins(true, false, d);
            e.set_pins(true, true, d);
        }
    }

    fn eeprom() -> Eeprom93c46 {
        Eeprom93c46::new(default_contents(
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            0x10ec,
            0x8139,
        ))
    }

    #[test]
    fn reads_signature_and_mac_like_the_drivers() {
        let mut e = eeprom();
        // 8139too shifts two leading zeros; 8139cp does not.
        assert_eq!(read_word(&mut e, 0, 6, 2), 0x8129);
        assert_eq!(read_word(&mut e, 0, 6, 0), 0x8129);
        assert_eq!(read_word(&mut e, 7, 6, 2), 0x5452);
        assert_eq!(read_word(&mut e, 8, 6, 0), 0x1200);
        assert_eq!(read_word(&mut e, 9, 6, 2), 0x5634);
        // The 8-bit-address probe must not see the signature (93C46, not 93C56).
        assert_ne!(read_word(&mut e, 0, 8, 2), 0x8129);
        assert_ne!(read_word(&mut e, 0, 8, 0), 0x8129);
    }

    #[test]
    fn write_needs_ewen_and_reports_ready() {
        let mut e = eeprom();
        let write = |e: &mut Eeprom93c46| {
            e.set_pins(true, false, false);
            send(e, (0b101 << 6) | 20, 9);
            send(e, 0xbeef, 16);
            e.set_pins(false, false, false);
        };
        write(&mut e);
        assert_eq!(read_word(&mut e, 20, 6, 0), 0, "write-protected");
        e.set_pins(true, false, false);
        send(&mut e, (0b100 << 6) | 0b11_0000, 9); // EWEN
        e.set_pins(false, false, false);
        write(&mut e);
        e.set_pins(true, false, false);
        assert!(e.dout(), "ready after programming");
        e.set_pins(false, false, false);
        assert_eq!(read_word(&mut e, 20, 6, 0), 0xbeef);
        assert_eq!(e.word(20), 0xbeef);
    }

    #[test]
    fn sequential_read_and_garbage_never_panic() {
        let mut e = eeprom();
        e.set_pins(true, false, false);
        send(&mut e, (0b110 << 6) | 63, 9);
        e.set_pins(true, false, false);
        // 64 words past the end wrap around.
        for _ in 0..16 * 70 {
            e.set_pins(true, true, false);
            e.set_pins(true, false, false);
        }
        for i in 0..10_000u32 {
            let b = i.wrapping_mul(2_654_435_761);
            e.set_pins(b & 1 != 0, b & 2 != 0, b & 4 != 0);
        }
        let w0 = e.word(0);
        assert_eq!(
            read_word(&mut e, 0, 6, 2),
            w0,
            "still in step after garbage"
        );
    }
}
