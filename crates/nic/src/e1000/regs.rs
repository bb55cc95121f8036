//! Register offsets (in BAR 0) and bit definitions of the 82540EM, as the
//! 8254x Software Developer's Manual names them.

// ---- Register offsets ------------------------------------------------------

/// Device Control.
pub const CTRL: u32 = 0x0000;
/// Device Status (read-only).
pub const STATUS: u32 = 0x0008;
/// EEPROM/Flash Control (bit-banged Microwire).
pub const EECD: u32 = 0x0010;
/// EEPROM Read.
pub const EERD: u32 = 0x0014;
/// Extended Device Control.
pub const CTRL_EXT: u32 = 0x0018;
/// MDI Control (PHY register access).
pub const MDIC: u32 = 0x0020;
/// Flow Control Address Low.
pub const FCAL: u32 = 0x0028;
/// Flow Control Address High.
pub const FCAH: u32 = 0x002C;
/// Flow Control Type.
pub const FCT: u32 = 0x0030;
/// VLAN Ether Type.
pub const VET: u32 = 0x0038;
/// Interrupt Cause Read (read to clear).
pub const ICR: u32 = 0x00C0;
/// Interrupt Throttling Rate.
pub const ITR: u32 = 0x00C4;
/// Interrupt Cause Set.
pub const ICS: u32 = 0x00C8;
/// Interrupt Mask Set/Read.
pub const IMS: u32 = 0x00D0;
/// Interrupt Mask Clear.
pub const IMC: u32 = 0x00D8;
/// Receive Control.
pub const RCTL: u32 = 0x0100;
/// Flow Control Transmit Timer Value.
pub const FCTTV: u32 = 0x0170;
/// Transmit Control.
pub const TCTL: u32 = 0x0400;
/// Transmit Inter-Packet Gap.
pub const TIPG: u32 = 0x0410;
/// LED Control.
pub const LEDCTL: u32 = 0x0E00;
/// Packet Buffer Allocation.
pub const PBA: u32 = 0x1000;
/// Receive Descriptor Base Address Low.
pub const RDBAL: u32 = 0x2800;
/// Receive Descriptor Base Address High.
pub const RDBAH: u32 = 0x2804;
/// Receive Descriptor Length (bytes, multiple of 128).
pub const RDLEN: u32 = 0x2808;
/// Receive Descriptor Head.
pub const RDH: u32 = 0x2810;
/// Receive Descriptor Tail.
pub const RDT: u32 = 0x2818;
/// Receive Delay Timer (accepted, not modelled).
pub const RDTR: u32 = 0x2820;
/// Receive Interrupt Absolute Delay Timer (accepted, not modelled).
pub const RADV: u32 = 0x282C;
/// Transmit Descriptor Base Address Low.
pub const TDBAL: u32 = 0x3800;
/// Transmit Descriptor Base Address High.
pub const TDBAH: u32 = 0x3804;
/// Transmit Descriptor Length (bytes, multiple of 128).
pub const TDLEN: u32 = 0x3808;
/// Transmit Descriptor Head.
pub const TDH: u32 = 0x3810;
/// Transmit Descriptor Tail.
pub const TDT: u32 = 0x3818;
/// Transmit Interrupt Delay Value (accepted, not modelled).
pub const TIDV: u32 = 0x3820;
/// Transmit Absolute Interrupt Delay Value (accepted, not modelled).
pub const TADV: u32 = 0x382C;
/// Receive Checksum Control.
pub const RXCSUM: u32 = 0x5000;
/// Multicast Table Array: 128 registers.
pub const MTA: u32 = 0x5200;
/// Receive Address (RAL/RAH pairs): 16 entries.
pub const RA: u32 = 0x5400;
/// VLAN Filter Table Array: 128 registers.
pub const VFTA: u32 = 0x5600;
/// Management Control.
pub const MANC: u32 = 0x5820;

// ---- Statistics (clear on read) ----------------------------------------------

/// First statistics register.
pub const STATS_START: u32 = 0x4000;
/// Last statistics register (inclusive).
pub const STATS_END: u32 = 0x4124;
/// CRC Error Count.
pub const CRCERRS: u32 = 0x4000;
/// Missed Packets Count.
pub const MPC: u32 = 0x4010;
/// Receive Length Error Count.
pub const RLEC: u32 = 0x4040;
/// Packets Received (64 bytes).
pub const PRC64: u32 = 0x405C;
/// Good Packets Received.
pub const GPRC: u32 = 0x4074;
/// Broadcast Packets Received.
pub const BPRC: u32 = 0x4078;
/// Multicast Packets Received.
pub const MPRC: u32 = 0x407C;
/// Good Packets Transmitted.
pub const GPTC: u32 = 0x4080;
/// Good Octets Received (low; high at +4).
pub const GORCL: u32 = 0x4088;
/// Good Octets Transmitted (low; high at +4).
pub const GOTCL: u32 = 0x4090;
/// Receive No Buffers Count.
pub const RNBC: u32 = 0x40A0;
/// Receive Undersize Count.
pub const RUC: u32 = 0x40A4;
/// Receive Oversize Count.
pub const ROC: u32 = 0x40AC;
/// Total Octets Received (low; high at +4).
pub const TORL: u32 = 0x40C0;
/// Total Octets Transmitted (low; high at +4).
pub const TOTL: u32 = 0x40C8;
/// Total Packets Received.
pub const TPR: u32 = 0x40D0;
/// Total Packets Transmitted.
pub const TPT: u32 = 0x40D4;
/// Packets Transmitted (64 bytes).
pub const PTC64: u32 = 0x40D8;
/// Multicast Packets Transmitted.
pub const MPTC: u32 = 0x40F0;
/// Broadcast Packets Transmitted.
pub const BPTC: u32 = 0x40F4;
/// TCP Segmentation Context Transmitted.
pub const TSCTC: u32 = 0x40F8;
/// TCP Segmentation Context Transmit Fail.
pub const TSCTFC: u32 = 0x40FC;

// ---- BAR layout ----------------------------------------------------------------

/// Size of the memory BAR (register space).
pub const BAR0_SIZE: u64 = 128 * 1024;
/// Size of the I/O BAR (IOADDR/IODATA window).
pub const BAR1_SIZE: u64 = 64;
/// I/O BAR: register offset to access through IODATA.
pub const IOADDR: u64 = 0x0;
/// I/O BAR: data of the register selected by IOADDR.
pub const IODATA: u64 = 0x4;

// ---- CTRL ----------------------------------------------------------------------

/// Full duplex.
pub const CTRL_FD: u32 = 1 << 0;
/// Auto-speed detection enable.
pub const CTRL_ASDE: u32 = 1 << 5;
/// Set link up.
pub const CTRL_SLU: u32 = 1 << 6;
/// Speed selection: 1000 Mb/s.
pub const CTRL_SPD_1000: u32 = 2 << 8;
/// Device reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// VLAN mode enable (tag stripping and insertion).
pub const CTRL_VME: u32 = 1 << 30;
/// PHY reset.
pub const CTRL_PHY_RST: u32 = 1 << 31;

// ---- STATUS --------------------------------------------------------------------

/// Full duplex.
pub const STATUS_FD: u32 = 1 << 0;
/// Link up.
pub const STATUS_LU: u32 = 1 << 1;
/// Transmission paused (flow control): never set here.
pub const STATUS_TXOFF: u32 = 1 << 4;
/// Link speed 1000 Mb/s.
pub const STATUS_SPEED_1000: u32 = 2 << 6;

// ---- EECD ----------------------------------------------------------------------

/// Clock input to the EEPROM.
pub const EECD_SK: u32 = 1 << 0;
/// Chip select.
pub const EECD_CS: u32 = 1 << 1;
/// Data input to the EEPROM.
pub const EECD_DI: u32 = 1 << 2;
/// Data output from the EEPROM.
pub const EECD_DO: u32 = 1 << 3;
/// Flash write enable control (two bits).
pub const EECD_FWE_MASK: u32 = 3 << 4;
/// Request access from software.
pub const EECD_REQ: u32 = 1 << 6;
/// Access granted.
pub const EECD_GNT: u32 = 1 << 7;
/// EEPROM present.
pub const EECD_PRES: u32 = 1 << 8;
/// EEPROM size: 0 = 64 words (6 address bits).
pub const EECD_SIZE: u32 = 1 << 9;

// ---- EERD ----------------------------------------------------------------------

/// Start a read.
pub const EERD_START: u32 = 1 << 0;
/// The read is done.
pub const EERD_DONE: u32 = 1 << 4;
/// Address field shift (bits 15:8).
pub const EERD_ADDR_SHIFT: u32 = 8;
/// Data field shift (bits 31:16).
pub const EERD_DATA_SHIFT: u32 = 16;

// ---- CTRL_EXT ------------------------------------------------------------------

/// Reload the EEPROM (self-clearing).
pub const CTRL_EXT_EE_RST: u32 = 1 << 13;

// ---- MDIC ----------------------------------------------------------------------

/// Data (bits 15:0).
pub const MDIC_DATA_MASK: u32 = 0xFFFF;
/// PHY register shift (bits 20:16).
pub const MDIC_REG_SHIFT: u32 = 16;
/// PHY address shift (bits 25:21).
pub const MDIC_PHY_SHIFT: u32 = 21;
/// Write operation.
pub const MDIC_OP_WRITE: u32 = 1 << 26;
/// Read operation.
pub const MDIC_OP_READ: u32 = 2 << 26;
/// Ready: the operation completed.
pub const MDIC_READY: u32 = 1 << 28;
/// Raise MDAC when the operation completes.
pub const MDIC_INT_EN: u32 = 1 << 29;
/// Error (no PHY at that address).
pub const MDIC_ERROR: u32 = 1 << 30;

// ---- Interrupt causes (ICR/ICS/IMS/IMC) ---------------------------------------------

/// Transmit descriptor written back.
pub const INT_TXDW: u32 = 1 << 0;
/// Transmit queue empty.
pub const INT_TXQE: u32 = 1 << 1;
/// Link status change.
pub const INT_LSC: u32 = 1 << 2;
/// Receive descriptor minimum threshold reached.
pub const INT_RXDMT0: u32 = 1 << 4;
/// Receiver overrun.
pub const INT_RXO: u32 = 1 << 6;
/// Receiver timer (a frame was received).
pub const INT_RXT0: u32 = 1 << 7;
/// MDI access complete.
pub const INT_MDAC: u32 = 1 << 9;
/// The cause bits of the 82540 (ICR bits beyond are reserved).
pub const INT_MASK: u32 = 0x0001_FFFF;

// ---- RCTL ----------------------------------------------------------------------

/// Receiver enable.
pub const RCTL_EN: u32 = 1 << 1;
/// Unicast promiscuous.
pub const RCTL_UPE: u32 = 1 << 3;
/// Multicast promiscuous.
pub const RCTL_MPE: u32 = 1 << 4;
/// Long packet enable (frames up to 16384 bytes).
pub const RCTL_LPE: u32 = 1 << 5;
/// Loopback mode (two bits).
pub const RCTL_LBM_MASK: u32 = 3 << 6;
/// MAC loopback.
pub const RCTL_LBM_MAC: u32 = 1 << 6;
/// Minimum threshold size (two bits): 1/2, 1/4, 1/8 of the ring.
pub const RCTL_RDMTS_SHIFT: u32 = 8;
/// Multicast offset (two bits).
pub const RCTL_MO_SHIFT: u32 = 12;
/// Broadcast accept.
pub const RCTL_BAM: u32 = 1 << 15;
/// Buffer size (two bits).
pub const RCTL_BSIZE_SHIFT: u32 = 16;
/// VLAN filter enable.
pub const RCTL_VFE: u32 = 1 << 18;
/// Canonical form indicator enable.
pub const RCTL_CFIEN: u32 = 1 << 19;
/// Canonical form indicator value.
pub const RCTL_CFI: u32 = 1 << 20;
/// Buffer size extension (x16).
pub const RCTL_BSEX: u32 = 1 << 25;
/// Strip the Ethernet CRC.
pub const RCTL_SECRC: u32 = 1 << 26;

// ---- TCTL ----------------------------------------------------------------------

/// Transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// Pad short packets.
pub const TCTL_PSP: u32 = 1 << 3;

// ---- RAH -----------------------------------------------------------------------

/// Address valid.
pub const RAH_AV: u32 = 1 << 31;
/// Address select (two bits): 0 = destination address.
pub const RAH_AS_MASK: u32 = 3 << 16;

// ---- Descriptors -----------------------------------------------------------------

/// Size of every descriptor.
pub const DESC_LEN: u64 = 16;

/// RX status: descriptor done.
pub const RXD_STAT_DD: u8 = 0x01;
/// RX status: end of packet.
pub const RXD_STAT_EOP: u8 = 0x02;
/// RX status: ignore checksum indication.
pub const RXD_STAT_IXSM: u8 = 0x04;
/// RX status: 802.1Q packet (tag stripped into `special`).
pub const RXD_STAT_VP: u8 = 0x08;
/// RX status: TCP/UDP checksum calculated (UDP too on the 8254x).
pub const RXD_STAT_TCPCS: u8 = 0x20;
/// RX status: IPv4 header checksum calculated.
pub const RXD_STAT_IPCS: u8 = 0x40;
/// RX errors: TCP/UDP checksum error.
pub const RXD_ERR_TCPE: u8 = 0x20;
/// RX errors: IPv4 header checksum error.
pub const RXD_ERR_IPE: u8 = 0x40;
/// RX errors: receive data error (buffer not writable).
pub const RXD_ERR_RXE: u8 = 0x80;
/// RXCSUM: IPv4 header checksum offload.
pub const RXCSUM_IPOFL: u32 = 1 << 8;
/// RXCSUM: TCP/UDP checksum offload.
pub const RXCSUM_TUOFL: u32 = 1 << 9;

/// TX command: end of packet.
pub const TXD_CMD_EOP: u8 = 0x01;
/// TX command (legacy): insert checksum.
pub const TXD_CMD_IC: u8 = 0x04;
/// TX command (data): TCP segmentation enable.
pub const TXD_CMD_TSE: u8 = 0x04;
/// TX command: report status.
pub const TXD_CMD_RS: u8 = 0x08;
/// TX command: descriptor extension (context or data descriptor).
pub const TXD_CMD_DEXT: u8 = 0x20;
/// TX command: insert a VLAN tag.
pub const TXD_CMD_VLE: u8 = 0x40;
/// TX status: descriptor done.
pub const TXD_STAT_DD: u8 = 0x01;
/// TX descriptor type (bits 23:20 of the length dword): context.
pub const TXD_DTYP_CONTEXT: u32 = 0;
/// TX descriptor type: data.
pub const TXD_DTYP_DATA: u32 = 1;
/// Context TUCMD: TCP (else UDP).
pub const TUCMD_TCP: u8 = 0x01;
/// Context TUCMD: IPv4 (else IPv6).
pub const TUCMD_IP: u8 = 0x02;
/// Data POPTS: insert the IP checksum.
pub const POPTS_IXSM: u8 = 0x01;
/// Data POPTS: insert the TCP/UDP checksum.
pub const POPTS_TXSM: u8 = 0x02;
