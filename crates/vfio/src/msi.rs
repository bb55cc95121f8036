//! MSI and MSI-X vectors of an assigned device.
//!
//! Each vector has an eventfd that VFIO signals when the device raises it,
//! and a GSI that KVM injects through an irqfd on that eventfd; the GSI's
//! route is the message the guest programmed. A masked vector has no
//! irqfd: what the device raises meanwhile stays counted in the eventfd,
//! and KVM delivers it when the irqfd is registered again on unmask.
//!
//! [`MsiCap`] is tapir's copy of the MSI capability registers (the guest
//! reads and writes it; the device's own copy is VFIO's business).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tapir_pci::{MsiMessage, MsiSender};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::InterruptRoutes;

/// Capability ID of MSI.
pub const PCI_CAP_ID_MSI: u8 = 0x05;
/// MSI control: enable.
pub const MSI_CTRL_ENABLE: u16 = 1 << 0;
/// MSI control: multiple message capable (log2), bits 3:1.
const MSI_CTRL_MMC_SHIFT: u16 = 1;
/// MSI control: multiple message enable (log2), bits 6:4.
const MSI_CTRL_MME_SHIFT: u16 = 4;
const MSI_CTRL_MME_MASK: u16 = 0x7 << MSI_CTRL_MME_SHIFT;
/// MSI control: 64-bit address capable.
pub const MSI_CTRL_64BIT: u16 = 1 << 7;
/// MSI control: per-vector masking capable.
pub const MSI_CTRL_PVM: u16 = 1 << 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorState {
    /// The route KVM has for the vector's GSI.
    route: Option<MsiMessage>,
    /// Whether the irqfd is registered.
    irqfd: bool,
}

/// The vectors of one device (shared by its MSI and MSI-X logic; only one
/// of them is enabled at a time).
pub struct Vectors {
    routes: Arc<dyn InterruptRoutes>,
    fds: Vec<EventFd>,
    gsis: Vec<u32>,
    state: Mutex<Vec<VectorState>>,
}

impl std::fmt::Debug for Vectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vectors").field("gsis", &self.gsis).finish()
    }
}

impl Vectors {
    /// `count` vectors, each with its eventfd and GSI.
    pub fn new(routes: Arc<dyn InterruptRoutes>, count: usize) -> io::Result<Self> {
        let mut fds = Vec::with_capacity(count);
        let mut gsis = Vec::with_capacity(count);
        for _ in 0..count {
            fds.push(EventFd::new(EFD_NONBLOCK)?);
            gsis.push(routes.allocate_gsi()?);
        }
        Ok(Self {
            routes,
            fds,
            gsis,
            state: Mutex::new(vec![VectorState::default(); count]),
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The eventfds of the first `n` vectors, for VFIO.
    pub fn fds(&self, n: usize) -> Vec<&EventFd> {
        self.fds.iter().take(n).collect()
    }

    /// The GSI of `vector`.
    pub fn gsi(&self, vector: usize) -> Option<u32> {
        self.gsis.get(vector).copied()
    }

    /// Whether `vector` currently reaches the guest (its irqfd is registered).
    pub fn live(&self, vector: usize) -> bool {
        self.lock().get(vector).is_some_and(|s| s.irqfd)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VectorState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Vector `vector` now holds `msg` and is (or is not) masked.
    pub fn update(&self, vector: usize, msg: MsiMessage, masked: bool) -> io::Result<()> {
        let mut state = self.lock();
        let (Some(s), Some(fd), Some(&gsi)) = (
            state.get_mut(vector),
            self.fds.get(vector),
            self.gsis.get(vector),
        ) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        if masked {
            if s.irqfd {
                self.routes.unregister_irqfd(fd, gsi)?;
                s.irqfd = false;
            }
            return Ok(());
        }
        if s.route != Some(msg) {
            self.routes.set_msi_route(gsi, msg)?;
            s.route = Some(msg);
        }
        if !s.irqfd {
            self.routes.register_irqfd(fd, gsi)?;
            s.irqfd = true;
        }
        Ok(())
    }

    /// Masks every vector (MSI or MSI-X turned off).
    pub fn mask_all(&self) {
        for v in 0..self.len() {
            if let Err(e) = self.update(v, MsiMessage::default(), true) {
                log::warn!("vfio: unrouting vector {v}: {e}");
            }
        }
    }
}

impl MsiSender for Vectors {
    fn send(&self, vector: u16, _msg: MsiMessage) -> io::Result<()> {
        // Only a pending vector the guest unmasks gets here; the irqfd
        // (registered by then) delivers it.
        match self.fds.get(usize::from(vector)) {
            Some(fd) => fd.write(1),
            None => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    fn update_route(&self, vector: u16, msg: MsiMessage, masked: bool) -> io::Result<()> {
        let r = self.update(usize::from(vector), msg, masked);
        if let Err(e) = &r {
            log::warn!("vfio: MSI-X vector {vector}: {e}");
        }
        r
    }
}

/// tapir's copy of a function's MSI capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsiCap {
    /// Where the capability is in configuration space.
    pub offset: u16,
    control: u16,
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    mask: u32,
}

impl MsiCap {
    /// From the capability as the device has it: `control` is its message
    /// control word (the enable and multiple-message-enable bits start clear).
    pub fn new(offset: u16, control: u16) -> Self {
        Self {
            offset,
            control: control & !(MSI_CTRL_ENABLE | MSI_CTRL_MME_MASK),
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            mask: 0,
        }
    }

    fn is_64(&self) -> bool {
        self.control & MSI_CTRL_64BIT != 0
    }

    fn pvm(&self) -> bool {
        self.control & MSI_CTRL_PVM != 0
    }

    /// Size of the capability in bytes (from its ID byte).
    pub fn size(&self) -> u16 {
        match (self.is_64(), self.pvm()) {
            (false, false) => 0x0c,
            (true, false) => 0x10,
            (false, true) => 0x14,
            (true, true) => 0x18,
        }
    }

    fn data_offset(&self) -> u16 {
        if self.is_64() {
            0x0c
        } else {
            0x08
        }
    }

    /// (value, writable mask) of the dword at `rel` (a multiple of 4) from
    /// the capability's start; the ID/next bytes of dword 0 are not ours.
    fn dword(&self, rel: u16) -> Option<(u32, u32)> {
        let data = self.data_offset();
        match rel {
            0 => Some((
                u32::from(self.control) << 16,
                u32::from(MSI_CTRL_ENABLE | MSI_CTRL_MME_MASK) << 16,
            )),
            4 => Some((self.addr_lo, !0x3)),
            8 if self.is_64() => Some((self.addr_hi, u32::MAX)),
            r if r == data => Some((self.data & 0xffff, 0xffff)),
            r if self.pvm() && r == data + 4 => Some((self.mask, u32::MAX)),
            // Pending bits: the device's are not visible here; none.
            r if self.pvm() && r == data + 8 => Some((0, 0)),
            _ => None,
        }
    }

    /// Whether configuration byte `offset` is one tapir answers (the
    /// capability's body, not its ID and next pointer).
    pub fn owns(&self, offset: u16) -> bool {
        offset >= self.offset + 2 && offset < self.offset + self.size()
    }

    /// The byte at configuration offset `offset` (see [`Self::owns`]).
    pub fn read_byte(&self, offset: u16) -> u8 {
        let rel = offset.wrapping_sub(self.offset);
        let (v, _) = self.dword(rel & !3).unwrap_or((0, 0));
        (v >> ((rel & 3) * 8)) as u8
    }

    /// Guest write of byte `value` at configuration offset `offset`.
    pub fn write_byte(&mut self, offset: u16, value: u8) {
        if !self.owns(offset) {
            return;
        }
        let rel = offset - self.offset;
        let Some((old, mask)) = self.dword(rel & !3) else {
            return;
        };
        let shift = (rel & 3) * 8;
        let m = mask & (0xff << shift);
        let new = (old & !m) | ((u32::from(value) << shift) & m);
        let data = self.data_offset();
        match rel & !3 {
            0 => self.control = (new >> 16) as u16,
            4 => self.addr_lo = new,
            8 if self.is_64() => self.addr_hi = new,
            r if r == data => self.data = new,
            r if self.pvm() && r == data + 4 => self.mask = new,
            _ => {}
        }
    }

    /// Whether the guest enabled MSI.
    pub fn enabled(&self) -> bool {
        self.control & MSI_CTRL_ENABLE != 0
    }

    /// How many vectors the device can do (multiple message capable).
    pub fn capable(&self) -> usize {
        1 << ((self.control >> MSI_CTRL_MMC_SHIFT) & 0x7).min(5)
    }

    /// How many vectors the guest enabled (at most what the device can do).
    pub fn vectors(&self) -> usize {
        let mme = (self.control & MSI_CTRL_MME_MASK) >> MSI_CTRL_MME_SHIFT;
        (1usize << mme.min(5)).min(self.capable())
    }

    /// The message of vector `v` (its index replaces the data's low bits).
    pub fn message(&self, v: usize) -> MsiMessage {
        let n = self.vectors() as u32;
        let address = if self.is_64() {
            u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo)
        } else {
            u64::from(self.addr_lo)
        };
        MsiMessage {
            address,
            data: (self.data & 0xffff & !(n - 1)) | (v as u32 & (n - 1)),
        }
    }

    /// Whether vector `v` is masked (per-vector masking).
    pub fn masked(&self, v: usize) -> bool {
        self.pvm() && v < 32 && self.mask & (1 << v) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(c: &mut MsiCap, offset: u16, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            c.write_byte(offset + i as u16, *b);
        }
    }

    fn read32(c: &MsiCap, offset: u16) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|i| c.read_byte(offset + i as u16)))
    }

    #[test]
    fn msi_64bit_with_masking() {
        // 64-bit, per-vector masking, 4 vectors capable.
        let mut c = MsiCap::new(
            0x50,
            MSI_CTRL_64BIT | MSI_CTRL_PVM | (2 << 1) | MSI_CTRL_ENABLE,
        );
        assert!(!c.enabled());
        assert_eq!(c.size(), 0x18);
        assert!(c.owns(0x52) && !c.owns(0x51) && !c.owns(0x68));
        write(&mut c, 0x54, &0xfee0_1003u32.to_le_bytes());
        write(&mut c, 0x58, &1u32.to_le_bytes());
        write(&mut c, 0x5c, &0xabcd_4041u32.to_le_bytes());
        write(&mut c, 0x60, &0b10u32.to_le_bytes());
        assert_eq!(read32(&c, 0x54), 0xfee0_1000);
        assert_eq!(read32(&c, 0x5c), 0x4041);
        // Enable with 4 vectors (MME = 2).
        write(&mut c, 0x52, &(MSI_CTRL_ENABLE | (2 << 4)).to_le_bytes());
        assert!(c.enabled());
        assert_eq!(c.vectors(), 4);
        assert_eq!(
            c.message(3),
            MsiMessage {
                address: 0x1_fee0_1000,
                data: 0x4043
            }
        );
        assert!(c.masked(1) && !c.masked(0));
        // Read-only control bits stay.
        write(&mut c, 0x52, &0u16.to_le_bytes());
        assert_eq!(
            read32(&c, 0x50) >> 16,
            u32::from(MSI_CTRL_64BIT | MSI_CTRL_PVM | (2 << 1))
        );
        // MME beyond MMC is clamped.
        write(&mut c, 0x52, &(MSI_CTRL_ENABLE | (5 << 4)).to_le_bytes());
        assert_eq!(c.vectors(), 4);
    }

    #[test]
    fn msi_32bit_plain() {
        let mut c = MsiCap::new(0x40, 0);
        assert_eq!(c.size(), 0x0c);
        write(&mut c, 0x44, &0xfee0_0000u32.to_le_bytes());
        write(&mut c, 0x48, &0x0000_0031u32.to_le_bytes());
        // No mask register: writes past the capability are not ours.
        write(&mut c, 0x4c, &u32::MAX.to_le_bytes());
        assert!(!c.masked(0));
        write(&mut c, 0x42, &[1]);
        assert_eq!(c.vectors(), 1);
        assert_eq!(
            c.message(0),
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x31
            }
        );
    }
}
