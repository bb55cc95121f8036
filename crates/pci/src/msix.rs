//! MSI-X: the capability, the vector table and the pending-bit array.
//!
//! [`MsixConfig`] is the state a device keeps; the device exposes the
//! table and PBA through one of its BARs (forwarding BAR accesses to
//! [`MsixConfig::read_bar`] / [`MsixConfig::write_bar`]) and forwards its
//! configuration writes to [`MsixConfig::config_written`] so that the
//! enable and function-mask bits take effect. Messages leave through an
//! injected [`MsiSender`], which the VMM implements with KVM GSI routes and
//! irqfds.
//!
//! Every table/PBA access is guest controlled: accesses must be 4 or 8
//! bytes, naturally aligned and inside the structure, otherwise reads
//! return all-ones and writes are dropped.

use std::io;
use std::sync::Arc;

use crate::bar::NUM_BARS;
use crate::configuration::{PciConfigError, PciConfiguration};

/// Capability ID of MSI-X.
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Offset of the message control word inside the capability.
pub const MSIX_CAP_CONTROL: u16 = 0x02;
/// Offset of the table offset/BIR dword inside the capability.
pub const MSIX_CAP_TABLE: u16 = 0x04;
/// Offset of the PBA offset/BIR dword inside the capability.
pub const MSIX_CAP_PBA: u16 = 0x08;
/// Message control: table size minus one.
pub const MSIX_CTRL_TABLE_SIZE: u16 = 0x07ff;
/// Message control: all vectors masked.
pub const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Message control: MSI-X enabled.
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;
/// Bits of the table/PBA dword that select the BAR (BIR).
const MSIX_BIR_MASK: u32 = 0x7;
/// Largest table.
pub const MSIX_MAX_VECTORS: u16 = 2048;
/// Size of one table entry.
pub const MSIX_TABLE_ENTRY_SIZE: u64 = 16;
/// Entry field: message address, low dword.
const ENTRY_ADDR_LO: u64 = 0x0;
/// Entry field: message address, high dword.
const ENTRY_ADDR_HI: u64 = 0x4;
/// Entry field: message data.
const ENTRY_DATA: u64 = 0x8;
/// Entry field: vector control.
const ENTRY_VECTOR_CTRL: u64 = 0xc;
/// Vector control: the vector is masked.
pub const MSIX_VECTOR_MASKED: u32 = 1;

/// An MSI message: what the device writes, and where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (the LAPIC window on x86).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// Delivers MSI messages; implemented by the VMM (KVM routes + irqfds).
pub trait MsiSender: Send + Sync {
    /// Delivers `msg` for table entry `vector`.
    fn send(&self, vector: u16, msg: MsiMessage) -> io::Result<()>;

    /// Entry `vector` now holds `msg`, and is (or is not) masked by either
    /// its own mask bit, the function mask or MSI-X being disabled. The
    /// VMM updates its GSI route so `send` can be a plain irqfd write.
    fn update_route(&self, vector: u16, msg: MsiMessage, masked: bool) -> io::Result<()> {
        let _ = (vector, msg, masked);
        Ok(())
    }
}

/// Errors from setting up or using MSI-X.
#[derive(Debug, thiserror::Error)]
pub enum MsixError {
    /// The table size is not within 1..=2048.
    #[error("MSI-X vector count {0} is not within 1..=2048")]
    VectorCount(u16),
    /// `notify` for a vector beyond the table.
    #[error("MSI-X vector {vector} is out of range (table has {count} entries)")]
    VectorOutOfRange {
        /// Requested vector.
        vector: u16,
        /// Table size.
        count: u16,
    },
    /// Bad BAR index or unaligned offset for the table or PBA.
    #[error("invalid MSI-X {what} location: BAR {bar}, offset {offset:#x}")]
    Location {
        /// "table" or "PBA".
        what: &'static str,
        /// BAR index.
        bar: u8,
        /// Offset in the BAR.
        offset: u32,
    },
    /// The table and PBA overlap in the same BAR.
    #[error("the MSI-X table and PBA overlap")]
    Overlap,
    /// The capability could not be added.
    #[error("adding the MSI-X capability: {0}")]
    Capability(#[from] PciConfigError),
    /// The sender failed.
    #[error("sending MSI-X vector {vector}: {source}")]
    Send {
        /// The vector.
        vector: u16,
        /// The sender's error.
        source: io::Error,
    },
}

/// Where a structure (table or PBA) lives: BAR index and offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixRegion {
    /// BAR index (BIR).
    pub bar: u8,
    /// Offset inside the BAR (8-byte aligned).
    pub offset: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MsixEntry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

impl Default for MsixEntry {
    fn default() -> Self {
        // Entries come out of reset masked.
        Self {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            ctrl: MSIX_VECTOR_MASKED,
        }
    }
}

impl MsixEntry {
    fn masked(&self) -> bool {
        self.ctrl & MSIX_VECTOR_MASKED != 0
    }

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo),
            data: self.data,
        }
    }
}

/// Checks a 4- or 8-byte naturally aligned access inside `limit` bytes.
fn valid_access(offset: u64, len: usize, limit: u64) -> bool {
    matches!(len, 4 | 8)
        && offset & (len as u64 - 1) == 0
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= limit)
}

/// MSI-X state of one function. See the module documentation.
pub struct MsixConfig {
    entries: Vec<MsixEntry>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    table: MsixRegion,
    pba_region: MsixRegion,
    cap_offset: Option<u16>,
    sender: Arc<dyn MsiSender>,
    delivery_errors: u64,
}

impl std::fmt::Debug for MsixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixConfig")
            .field("vectors", &self.entries.len())
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .field("table", &self.table)
            .field("pba", &self.pba_region)
            .finish_non_exhaustive()
    }
}

impl MsixConfig {
    /// `num_vectors` masked entries, with the table and PBA at the given
    /// places.
    pub fn new(
        num_vectors: u16,
        table: MsixRegion,
        pba: MsixRegion,
        sender: Arc<dyn MsiSender>,
    ) -> Result<Self, MsixError> {
        if num_vectors == 0 || num_vectors > MSIX_MAX_VECTORS {
            return Err(MsixError::VectorCount(num_vectors));
        }
        for (what, r) in [("table", table), ("PBA", pba)] {
            if usize::from(r.bar) >= NUM_BARS || r.offset & MSIX_BIR_MASK != 0 {
                return Err(MsixError::Location {
                    what,
                    bar: r.bar,
                    offset: r.offset,
                });
            }
        }
        let n = usize::from(num_vectors);
        let cfg = Self {
            entries: vec![MsixEntry::default(); n],
            pba: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            table,
            pba_region: pba,
            cap_offset: None,
            sender,
            delivery_errors: 0,
        };
        if table.bar == pba.bar {
            let t = (u64::from(table.offset), cfg.table_size());
            let p = (u64::from(pba.offset), cfg.pba_size());
            if t.0 < p.0 + p.1 && p.0 < t.0 + t.1 {
                return Err(MsixError::Overlap);
            }
        }
        Ok(cfg)
    }

    /// Number of table entries.
    pub fn num_vectors(&self) -> u16 {
        // At most MSIX_MAX_VECTORS, checked in `new`.
        self.entries.len() as u16
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * MSIX_TABLE_ENTRY_SIZE
    }

    /// Size of the PBA in bytes (whole qwords).
    pub fn pba_size(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// Where the table lives.
    pub fn table_region(&self) -> MsixRegion {
        self.table
    }

    /// Where the PBA lives.
    pub fn pba_region(&self) -> MsixRegion {
        self.pba_region
    }

    /// Adds the MSI-X capability to `config` (only the enable and function
    /// mask bits are guest-writable) and returns its offset.
    pub fn add_capability(&mut self, config: &mut PciConfiguration) -> Result<u16, MsixError> {
        let control = self.num_vectors() - 1;
        let table = self.table.offset | u32::from(self.table.bar);
        let pba = self.pba_region.offset | u32::from(self.pba_region.bar);
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&control.to_le_bytes());
        body[2..6].copy_from_slice(&table.to_le_bytes());
        body[6..10].copy_from_slice(&pba.to_le_bytes());
        let mut mask = [0u8; 10];
        mask[0..2].copy_from_slice(&(MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK).to_le_bytes());
        let offset = config.add_capability_with_mask(&body, PCI_CAP_ID_MSIX, &mask)?;
        self.cap_offset = Some(offset);
        Ok(offset)
    }

    /// Offset of the capability once added.
    pub fn cap_offset(&self) -> Option<u16> {
        self.cap_offset
    }

    /// To be called after every guest configuration write of `len` bytes
    /// at `offset`: picks up the message control word if it was written.
    pub fn config_written(&mut self, config: &PciConfiguration, offset: u16, len: usize) {
        let Some(cap) = self.cap_offset else { return };
        let ctrl = u32::from(cap + MSIX_CAP_CONTROL);
        let start = u32::from(offset);
        if start < ctrl + 2 && start + len as u32 > ctrl {
            self.set_control(config.read_u16(cap + MSIX_CAP_CONTROL));
        }
    }

    /// Applies a message control value (enable and function mask bits).
    pub fn set_control(&mut self, control: u16) {
        let enabled = control & MSIX_CTRL_ENABLE != 0;
        let function_masked = control & MSIX_CTRL_FUNCTION_MASK != 0;
        if enabled == self.enabled && function_masked == self.function_masked {
            return;
        }
        self.enabled = enabled;
        self.function_masked = function_masked;
        for v in 0..self.num_vectors() {
            self.update_route(v);
            self.deliver_pending(v);
        }
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the function mask is set.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Whether `vector`'s own mask bit is set (None if out of range).
    pub fn vector_masked(&self, vector: u16) -> Option<bool> {
        self.entries.get(usize::from(vector)).map(MsixEntry::masked)
    }

    /// Whether `vector`'s pending bit is set (None if out of range).
    pub fn pending(&self, vector: u16) -> Option<bool> {
        let v = usize::from(vector);
        (v < self.entries.len()).then(|| self.pba[v / 64] & (1 << (v % 64)) != 0)
    }

    /// The message `vector` is programmed with (None if out of range).
    pub fn message(&self, vector: u16) -> Option<MsiMessage> {
        self.entries
            .get(usize::from(vector))
            .map(MsixEntry::message)
    }

    /// How many sender calls failed on guest-driven paths (table writes,
    /// control writes), where no error can be returned.
    pub fn delivery_errors(&self) -> u64 {
        self.delivery_errors
    }

    fn deliverable(&self, vector: usize) -> bool {
        self.enabled && !self.function_masked && !self.entries[vector].masked()
    }

    fn set_pending(&mut self, vector: usize, pending: bool) {
        let bit = 1u64 << (vector % 64);
        if pending {
            self.pba[vector / 64] |= bit;
        } else {
            self.pba[vector / 64] &= !bit;
        }
    }

    fn update_route(&mut self, vector: u16) {
        let v = usize::from(vector);
        let masked = !self.deliverable(v);
        let msg = self.entries[v].message();
        if self.sender.update_route(vector, msg, masked).is_err() {
            self.delivery_errors += 1;
        }
    }

    /// Sends `vector` if it is pending and can now be delivered.
    fn deliver_pending(&mut self, vector: u16) {
        let v = usize::from(vector);
        if self.pending(vector) == Some(true) && self.deliverable(v) {
            self.set_pending(v, false);
            if self.sender.send(vector, self.entries[v].message()).is_err() {
                self.delivery_errors += 1;
            }
        }
    }

    /// Signals `vector`: sends it if MSI-X is enabled and the vector is not
    /// masked, otherwise sets its pending bit (delivered on unmask).
    pub fn notify(&mut self, vector: u16) -> Result<(), MsixError> {
        let v = usize::from(vector);
        if v >= self.entries.len() {
            return Err(MsixError::VectorOutOfRange {
                vector,
                count: self.num_vectors(),
            });
        }
        if !self.deliverable(v) {
            self.set_pending(v, true);
            return Ok(());
        }
        self.sender
            .send(vector, self.entries[v].message())
            .map_err(|source| MsixError::Send { vector, source })
    }

    // ---- table and PBA -----------------------------------------------------

    fn table_dword(&self, offset: u64) -> u32 {
        let e = &self.entries[(offset / MSIX_TABLE_ENTRY_SIZE) as usize];
        match offset % MSIX_TABLE_ENTRY_SIZE {
            ENTRY_ADDR_LO => e.addr_lo,
            ENTRY_ADDR_HI => e.addr_hi,
            ENTRY_DATA => e.data,
            _ => e.ctrl,
        }
    }

    /// Guest read at `offset` inside the table.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        if !valid_access(offset, data.len(), self.table_size()) {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&self.table_dword(offset + 4 * i as u64).to_le_bytes());
        }
    }

    /// Guest write at `offset` inside the table.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        if !valid_access(offset, data.len(), self.table_size()) {
            return;
        }
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.write_table_dword(offset + 4 * i as u64, value);
        }
    }

    fn write_table_dword(&mut self, offset: u64, value: u32) {
        let v = (offset / MSIX_TABLE_ENTRY_SIZE) as usize;
        let before = self.entries[v];
        let e = &mut self.entries[v];
        match offset % MSIX_TABLE_ENTRY_SIZE {
            // Message addresses are dword aligned: bits 1:0 read as zero.
            ENTRY_ADDR_LO => e.addr_lo = value & !0x3,
            ENTRY_ADDR_HI => e.addr_hi = value,
            ENTRY_DATA => e.data = value,
            ENTRY_VECTOR_CTRL => e.ctrl = value & MSIX_VECTOR_MASKED,
            _ => return,
        }
        if *e != before {
            // v < entries.len() <= MSIX_MAX_VECTORS.
            self.update_route(v as u16);
            self.deliver_pending(v as u16);
        }
    }

    /// Guest read at `offset` inside the PBA.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        if !valid_access(offset, data.len(), self.pba_size()) {
            data.fill(0xff);
            return;
        }
        let qword = self.pba[(offset / 8) as usize].to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&qword[start..start + data.len()]);
    }

    /// Guest read at `offset` inside BAR `bar`: serves it and returns true
    /// if it falls on the table or the PBA.
    pub fn read_bar(&self, bar: u8, offset: u64, data: &mut [u8]) -> bool {
        if let Some(off) = region_offset(self.table, self.table_size(), bar, offset) {
            self.read_table(off, data);
            true
        } else if let Some(off) = region_offset(self.pba_region, self.pba_size(), bar, offset) {
            self.read_pba(off, data);
            true
        } else {
            false
        }
    }

    /// Guest write at `offset` inside BAR `bar`: serves it and returns
    /// true if it falls on the table or the PBA (the PBA is read-only).
    pub fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) -> bool {
        if let Some(off) = region_offset(self.table, self.table_size(), bar, offset) {
            self.write_table(off, data);
            true
        } else {
            region_offset(self.pba_region, self.pba_size(), bar, offset).is_some()
        }
    }
}

/// The offset inside `region` of BAR access (`bar`, `offset`), if it
/// starts inside the region.
fn region_offset(region: MsixRegion, size: u64, bar: u8, offset: u64) -> Option<u64> {
    let rel = offset.checked_sub(u64::from(region.offset))?;
    (bar == region.bar && rel < size).then_some(rel)
}

#[cfg(test)]
mod tests;
