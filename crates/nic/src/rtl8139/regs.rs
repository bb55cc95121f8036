//! Register map of the RTL8139C(L)+ (offsets into the 256-byte register
//! window of BAR 0 and BAR 1) and the bits the model implements.
//!
//! Names follow the Realtek datasheet; C+ registers that share offsets with
//! the C-mode registers (DTCCR with TSD0-1, TNPDS/THPDS with TSAD0-3) are
//! decoded by the mode the chip is in (see `state.rs`).

/// PCI vendor ID (Realtek).
pub const VENDOR_ID: u16 = 0x10ec;
/// PCI device ID (RTL8139).
pub const DEVICE_ID: u16 = 0x8139;

/// Size of the register window (both BARs).
pub const REG_WINDOW: u64 = 256;

// ---- Offsets ----

/// ID registers 0-5: the station MAC address.
pub const IDR0: u8 = 0x00;
/// Multicast hash registers 0-7.
pub const MAR0: u8 = 0x08;
/// Transmit status of descriptor 0 (TSD1-3 follow, 4 bytes apart).
pub const TSD0: u8 = 0x10;
/// C+: dump tally counter command register (64-bit, over TSD0-1).
pub const DTCCR: u8 = 0x10;
/// Transmit start address of descriptor 0 (TSAD1-3 follow).
pub const TSAD0: u8 = 0x20;
/// C+: transmit normal-priority descriptor ring start (64-bit, over TSAD0-1).
pub const TNPDS: u8 = 0x20;
/// C+: transmit high-priority descriptor ring start (64-bit, over TSAD2-3).
pub const THPDS: u8 = 0x28;
/// Receive buffer start address.
pub const RBSTART: u8 = 0x30;
/// Early receive byte count (read-only, 0: early RX is not modelled).
pub const ERBCR: u8 = 0x34;
/// Early receive status (read-only, 0).
pub const ERSR: u8 = 0x36;
/// Command register.
pub const CR: u8 = 0x37;
/// Current address of packet read (written by the driver).
pub const CAPR: u8 = 0x38;
/// Current buffer address (where the next packet is written; read-only).
pub const CBR: u8 = 0x3a;
/// Interrupt mask.
pub const IMR: u8 = 0x3c;
/// Interrupt status (write 1 to clear).
pub const ISR: u8 = 0x3e;
/// Transmit configuration.
pub const TCR: u8 = 0x40;
/// Receive configuration.
pub const RCR: u8 = 0x44;
/// Timer count (33 MHz; any write resets it to 0).
pub const TCTR: u8 = 0x48;
/// Missed packet counter (24 bits; any write clears it).
pub const MPC: u8 = 0x4c;
/// 93C46 command register: EEPROM mode and bit-bang pins.
pub const CFG9346: u8 = 0x50;
/// Configuration register 0 (read-only).
pub const CONFIG0: u8 = 0x51;
/// Configuration register 1.
pub const CONFIG1: u8 = 0x52;
/// Timer interrupt: TimeOut is raised when TCTR reaches this value (0: off).
pub const TIMER_INT: u8 = 0x54;
/// Media status.
pub const MSR: u8 = 0x58;
/// Configuration register 3.
pub const CONFIG3: u8 = 0x59;
/// Configuration register 4.
pub const CONFIG4: u8 = 0x5a;
/// Halt clock ('R' run, 'H' halt); stored, no effect.
pub const HLTCLK: u8 = 0x5b;
/// Multiple interrupt select.
pub const MULINT: u8 = 0x5c;
/// PCI revision ID, mirrored.
pub const RERID: u8 = 0x5e;
/// Transmit status of all descriptors (read-only summary).
pub const TSAD: u8 = 0x60;
/// Basic mode control (MII register 0).
pub const BMCR: u8 = 0x62;
/// Basic mode status (MII register 1, read-only).
pub const BMSR: u8 = 0x64;
/// Auto-negotiation advertisement (MII register 4).
pub const ANAR: u8 = 0x66;
/// Auto-negotiation link partner ability (MII register 5, read-only).
pub const ANLPAR: u8 = 0x68;
/// Auto-negotiation expansion (MII register 6, read-only).
pub const ANER: u8 = 0x6a;
/// Chip status and configuration (undocumented; 8139too reads link bits).
pub const CSCR: u8 = 0x74;
/// Configuration register 5 (not write-protected by 9346CR).
pub const CONFIG5: u8 = 0xd8;
/// C+: transmit priority polling (the C+ TX doorbell).
pub const TPPOLL: u8 = 0xd9;
/// C+: command register.
pub const CPCR: u8 = 0xe0;
/// C+: interrupt mitigation (accepted and stored).
pub const INTR_MITIGATE: u8 = 0xe2;
/// C+: receive descriptor ring start (64-bit).
pub const RDSAR: u8 = 0xe4;
/// C+: early transmit threshold (stored).
pub const ETTHR: u8 = 0xec;

// ---- CR ----

/// Software reset (self-clearing).
pub const CR_RST: u8 = 0x10;
/// Receiver enable.
pub const CR_RE: u8 = 0x08;
/// Transmitter enable.
pub const CR_TE: u8 = 0x04;
/// Receive buffer empty (read-only).
pub const CR_BUFE: u8 = 0x01;

// ---- ISR / IMR ----

/// Receive OK.
pub const INT_ROK: u16 = 0x0001;
/// Receive error.
pub const INT_RER: u16 = 0x0002;
/// Transmit OK.
pub const INT_TOK: u16 = 0x0004;
/// Transmit error.
pub const INT_TER: u16 = 0x0008;
/// C mode: receive buffer overflow; C+ mode: RX descriptor unavailable.
pub const INT_RXOVW: u16 = 0x0010;
/// Packet underrun / link change.
pub const INT_PUN_LINKCHG: u16 = 0x0020;
/// Receive FIFO overflow.
pub const INT_FOVW: u16 = 0x0040;
/// C+: TX descriptor unavailable (the ring drained).
pub const INT_TDU: u16 = 0x0080;
/// C+: software interrupt (TPPoll FSWInt).
pub const INT_SWINT: u16 = 0x0100;
/// Cable length change.
pub const INT_LENCHG: u16 = 0x2000;
/// TCTR reached TimerInt.
pub const INT_TIMEOUT: u16 = 0x4000;
/// System error (a DMA outside guest RAM).
pub const INT_SERR: u16 = 0x8000;
/// Bits that exist in ISR and IMR.
pub const INT_MASK: u16 = 0xe1ff;

// ---- TSD ----

/// Frame size (bits 12:0).
pub const TSD_SIZE_MASK: u32 = 0x1fff;
/// OWN: 1 when the chip is done with the buffer; a write with 0 starts TX.
pub const TSD_OWN: u32 = 1 << 13;
/// Transmit FIFO underrun.
pub const TSD_TUN: u32 = 1 << 14;
/// Transmit OK.
pub const TSD_TOK: u32 = 1 << 15;
/// Early TX threshold (bits 21:16), stored.
pub const TSD_ERTXTH_MASK: u32 = 0x3f << 16;
/// Transmit aborted.
pub const TSD_TABT: u32 = 1 << 30;
/// Bits a driver write sets.
pub const TSD_WRITABLE: u32 = TSD_SIZE_MASK | TSD_OWN | TSD_ERTXTH_MASK;
/// Largest frame a TX slot takes (the datasheet's 1792 bytes).
pub const TSD_MAX_SIZE: usize = 1792;

// ---- TCR ----

/// Loopback mode field (bits 18:17); both set = loopback.
pub const TCR_LBK: u32 = 3 << 17;
/// Clear abort (write-only, ignored: aborted frames are not retried).
pub const TCR_CLRABT: u32 = 1;
/// Bits the driver can write: IFG, LBK, CRC, MXDMA, TXRR.
pub const TCR_WRITABLE: u32 = 0x0307_07f0;
/// Hardware version bits (30:26 and 23:22).
pub const TCR_HWVERID_MASK: u32 = 0x7cc0_0000;
/// HWVERID of the RTL8139C (8139too's "RTL-8139C").
pub const HWVERID_8139C: u32 = 0x7400_0000;
/// HWVERID of the RTL8139C+.
pub const HWVERID_8139CPLUS: u32 = 0x7480_0000;

// ---- RCR ----

/// Accept all packets with a physical destination (promiscuous).
pub const RCR_AAP: u32 = 1 << 0;
/// Accept physical match (our MAC).
pub const RCR_APM: u32 = 1 << 1;
/// Accept multicast (through the MAR hash).
pub const RCR_AM: u32 = 1 << 2;
/// Accept broadcast.
pub const RCR_AB: u32 = 1 << 3;
/// WRAP: 1 = a packet at the end of the ring continues past it (into the
/// driver's padding); 0 = it wraps to the ring start.
pub const RCR_WRAP: u32 = 1 << 7;
/// Ring length field (bits 12:11): 8K << n.
pub const RCR_RBLEN_SHIFT: u32 = 11;
/// Bits the driver can write.
pub const RCR_WRITABLE: u32 = 0x0f03_ffbf;

// ---- 9346CR ----

/// Operating mode field (bits 7:6).
pub const CFG9346_EEM_MASK: u8 = 0xc0;
/// Normal operation.
pub const EEM_NORMAL: u8 = 0x00;
/// Auto-load: reload the configuration from the EEPROM, then normal.
pub const EEM_AUTOLOAD: u8 = 0x40;
/// 93C46 programming: the pin bits drive the EEPROM.
pub const EEM_PROGRAM: u8 = 0x80;
/// Configuration register write enable (the "unlock" value).
pub const EEM_CONFIG_WRITE: u8 = 0xc0;
/// EEPROM chip select.
pub const CFG9346_EECS: u8 = 0x08;
/// EEPROM serial clock.
pub const CFG9346_EESK: u8 = 0x04;
/// EEPROM data in.
pub const CFG9346_EEDI: u8 = 0x02;
/// EEPROM data out (read-only).
pub const CFG9346_EEDO: u8 = 0x01;

// ---- CONFIG registers ----

/// CONFIG1 power-on value: registers mapped in I/O and memory space.
pub const CONFIG1_DEFAULT: u8 = 0x0c;
/// CONFIG1 bits the driver may write (IOMAP/MEMMAP are read-only).
pub const CONFIG1_WRITABLE: u8 = 0xf3;

// ---- MSR and the MII registers ----

/// Media status: link up (LINKB = 0), 100 Mb/s (SPEED_10 = 0).
pub const MSR_VALUE: u8 = 0x00;
/// MSR: link fail (set while the cable is out).
pub const MSR_LINKB: u8 = 0x04;
/// BMCR: reset (self-clearing).
pub const BMCR_RESET: u16 = 1 << 15;
/// BMCR: restart auto-negotiation (self-clearing).
pub const BMCR_RESTART_AN: u16 = 1 << 9;
/// BMCR power-on value: 100 Mb/s, auto-negotiation on, full duplex.
pub const BMCR_DEFAULT: u16 = 0x3100;
/// BMSR: 100/10 full/half capable, AN complete, AN capable, link up, extended.
pub const BMSR_VALUE: u16 = 0x782d;
/// BMSR: link status.
pub const BMSR_LINK: u16 = 0x0004;
/// ANAR power-on value: 100/10 full/half, 802.3.
pub const ANAR_DEFAULT: u16 = 0x05e1;
/// Link partner: acknowledged, 100/10 full/half.
pub const ANLPAR_VALUE: u16 = 0x45e1;
/// Expansion: the link partner can auto-negotiate.
pub const ANER_VALUE: u16 = 0x0001;
/// CSCR bit read as set: link OK.
pub const CSCR_LINK_OK: u16 = 0x0400;
/// CSCR bit: the link changed since CSCR was last read (8139too reads it
/// on a PUN/LinkChg interrupt to tell a link change from an underrun).
pub const CSCR_LINK_CHANGE: u16 = 0x0800;

// ---- C+ ----

/// C+CR: C+ transmit enable.
pub const CPCR_TX: u16 = 1 << 0;
/// C+CR: C+ receive enable.
pub const CPCR_RX: u16 = 1 << 1;
/// C+CR: receive checksum offload.
pub const CPCR_RX_CHKSUM: u16 = 1 << 5;
/// C+CR: receive VLAN de-tagging.
pub const CPCR_RX_VLAN: u16 = 1 << 6;
/// C+CR bits stored (TX/RX enable, MulRW, DAC, RxChkSum, RxVLAN, endian).
pub const CPCR_WRITABLE: u16 = 0x027b;
/// TPPoll: high-priority queue poll.
pub const TPPOLL_HPQ: u8 = 1 << 7;
/// TPPoll: normal-priority queue poll.
pub const TPPOLL_NPQ: u8 = 1 << 6;
/// TPPoll: forced software interrupt.
pub const TPPOLL_FSWINT: u8 = 1 << 0;
/// DTCCR: dump command (self-clearing).
pub const DTCCR_CMD: u32 = 1 << 3;

/// C+ descriptor: owned by the NIC.
pub const DESC_OWN: u32 = 1 << 31;
/// C+ descriptor: end of ring.
pub const DESC_EOR: u32 = 1 << 30;
/// C+ descriptor: first segment of a frame.
pub const DESC_FS: u32 = 1 << 29;
/// C+ descriptor: last segment of a frame.
pub const DESC_LS: u32 = 1 << 28;
/// C+ TX: large send (TCP segmentation).
pub const TXD_LGSEN: u32 = 1 << 27;
/// C+ TX: MSS field shift (11 bits, with LGSEN).
pub const TXD_MSS_SHIFT: u32 = 16;
/// C+ TX: MSS field mask.
pub const TXD_MSS_MASK: u32 = 0x7ff;
/// C+ TX: error summary (written back).
pub const TXD_ERROR: u32 = 1 << 23;
/// C+ TX: compute the IPv4 header checksum.
pub const TXD_IPCS: u32 = 1 << 18;
/// C+ TX: compute the UDP checksum.
pub const TXD_UDPCS: u32 = 1 << 17;
/// C+ TX: compute the TCP checksum.
pub const TXD_TCPCS: u32 = 1 << 16;
/// C+ TX: buffer length (bits 15:0).
pub const TXD_LEN_MASK: u32 = 0xffff;
/// C+ TX opts2: insert a VLAN tag.
pub const TXD_TAGC: u32 = 1 << 17;
/// C+ RX status: multicast.
pub const RXD_MAR: u32 = 1 << 26;
/// C+ RX status: physical address matched.
pub const RXD_PAM: u32 = 1 << 25;
/// C+ RX status: broadcast.
pub const RXD_BAR: u32 = 1 << 24;
/// C+ RX status: error summary.
pub const RXD_RES: u32 = 1 << 20;
/// C+ RX status: protocol ID shift (0 non-IP, 1 TCP, 2 UDP, 3 IP).
pub const RXD_PID_SHIFT: u32 = 16;
/// C+ RX status: IP checksum failed.
pub const RXD_IPF: u32 = 1 << 15;
/// C+ RX status: UDP checksum failed.
pub const RXD_UDPF: u32 = 1 << 14;
/// C+ RX status: TCP checksum failed.
pub const RXD_TCPF: u32 = 1 << 13;
/// C+ RX: buffer size / frame length (bits 12:0).
pub const RXD_LEN_MASK: u32 = 0x1fff;
/// C+ RX opts2: a VLAN tag was removed (tag in bits 15:0, byte-swapped).
pub const RXD_TAVA: u32 = 1 << 16;
/// PID value: TCP/IP.
pub const PID_TCP: u32 = 1;
/// PID value: UDP/IP.
pub const PID_UDP: u32 = 2;
/// PID value: other IP.
pub const PID_IP: u32 = 3;

// ---- C-mode receive header ----

/// Receive OK.
pub const RXH_ROK: u16 = 1 << 0;
/// Broadcast address received.
pub const RXH_BAR: u16 = 1 << 13;
/// Physical address matched.
pub const RXH_PAM: u16 = 1 << 14;
/// Multicast address received.
pub const RXH_MAR: u16 = 1 << 15;
