//! `pc-testdev`: the test device of QEMU's x86 machines that kvm-unit-tests
//! relies on (`--device pc-testdev`, docs/test-kernels.md). Three parts,
//! each a [`BusDevice`]:
//!
//! - [`TestdevPorts`], ports [`IO_PORT`]..+8: a 4-byte scratch register at
//!   0xe0 that reads back what was written (byte, word or dword at any
//!   offset; string I/O tests use it), and the "flush page" port at 0xe4,
//!   whose writes are taken and ignored (QEMU uses them to drop a page's
//!   mappings; KVM here keeps its own).
//! - [`TestdevIrqLines`], ports [`IRQ_PORT_BASE`]..+[`IRQ_LINES`]: a write
//!   of V to port 0x2000 + N sets interrupt line N (an I/O APIC pin, and
//!   the PIC's for N < 16) to level V != 0, through [`IrqLines`].
//! - [`TestdevIoram`], MMIO [`IORAM_BASE`]..+[`IORAM_LEN`]: scratch memory
//!   that reads back what was written, but through MMIO exits (the
//!   emulator and LAM tests run instructions against it).

use std::sync::{Arc, Mutex};

use crate::{lock, BusDevice};

/// The scratch register's port.
pub const IO_PORT: u16 = 0xe0;
/// The ports [`TestdevPorts`] claims: the scratch register, then the
/// flush-page port.
pub const IO_LEN: u16 = 8;
/// Bytes of the scratch register.
const SCRATCH_LEN: usize = 4;
/// The first interrupt-line port.
pub const IRQ_PORT_BASE: u16 = 0x2000;
/// Interrupt lines (the I/O APIC's pins).
pub const IRQ_LINES: u16 = 24;
/// The scratch memory's guest-physical address.
pub const IORAM_BASE: u64 = 0xff00_0000;
/// Its size.
pub const IORAM_LEN: u64 = 0x1_0000;

/// Sets the level of a VM interrupt line (GSI).
pub trait IrqLines: Send + Sync {
    /// Line `line` (below [`IRQ_LINES`]) is now high or low.
    fn set_line(&self, line: u32, high: bool);
}

/// Copies `data.len()` bytes between `data` and `store` at `offset`; bytes
/// past the store's end read as 0 and are not written.
fn window(store: &mut [u8], offset: u64, data: &mut [u8], write: bool) {
    for (i, d) in data.iter_mut().enumerate() {
        let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
        match (at.and_then(|a| store.get_mut(a)), write) {
            (Some(s), true) => *s = *d,
            (Some(s), false) => *d = *s,
            (None, false) => *d = 0,
            (None, true) => {}
        }
    }
}

/// The scratch register and the flush-page port.
#[derive(Default)]
pub struct TestdevPorts {
    scratch: Mutex<[u8; SCRATCH_LEN]>,
}

impl BusDevice for TestdevPorts {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        window(&mut *lock(&self.scratch), offset, data, false);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        // The flush-page port (offset 4..8) lands past the scratch: ignored.
        let mut d = data.to_vec();
        window(&mut *lock(&self.scratch), offset, &mut d, true);
    }
}

/// The interrupt-line ports.
pub struct TestdevIrqLines {
    lines: Arc<dyn IrqLines>,
}

impl TestdevIrqLines {
    /// Ports that drive `lines`.
    pub fn new(lines: Arc<dyn IrqLines>) -> Self {
        Self { lines }
    }
}

impl BusDevice for TestdevIrqLines {
    fn read(&self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        if offset < u64::from(IRQ_LINES) {
            self.lines
                .set_line(offset as u32, data.iter().any(|&b| b != 0));
        }
    }
}

/// The scratch memory.
pub struct TestdevIoram {
    bytes: Mutex<Vec<u8>>,
}

impl Default for TestdevIoram {
    fn default() -> Self {
        Self {
            bytes: Mutex::new(vec![0; IORAM_LEN as usize]),
        }
    }
}

impl BusDevice for TestdevIoram {
    fn read(&self, _base: u64, offset: u64, data: &mut [u8]) {
        window(&mut lock(&self.bytes), offset, data, false);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        let mut d = data.to_vec();
        window(&mut lock(&self.bytes), offset, &mut d, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl IrqLines for Lines {
        fn set_line(&self, line: u32, high: bool) {
            self.0.lock().unwrap().push((line, high));
        }
    }

    #[test]
    fn the_scratch_register_reads_back_every_width_and_the_flush_port_is_inert() {
        let p = TestdevPorts::default();
        let base = u64::from(IO_PORT);
        p.write(base, 0, &[0x78, 0x56, 0x34, 0x12]);
        let mut d = [0u8; 4];
        p.read(base, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_5678);
        p.write(base, 0, &[0x99]);
        let mut b = [0u8; 1];
        p.read(base, 0, &mut b);
        assert_eq!(b, [0x99]);
        let mut w = [0u8; 2];
        p.read(base, 2, &mut w);
        assert_eq!(w, [0x34, 0x12]);
        // The flush-page port: taken, changes nothing, reads 0.
        p.write(base, 4, &[1, 2, 3, 4]);
        p.read(base, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_5699);
        p.read(base, 4, &mut d);
        assert_eq!(d, [0; 4]);
        // Straddling the scratch's end: the part inside counts.
        p.write(base, 3, &[0xaa, 0xbb]);
        p.read(base, 3, &mut w);
        assert_eq!(w, [0xaa, 0]);
    }

    #[test]
    fn irq_ports_set_the_line_of_their_number() {
        let lines = Arc::new(Lines::default());
        let d = TestdevIrqLines::new(lines.clone());
        let base = u64::from(IRQ_PORT_BASE);
        d.write(base, 0x0e, &[1]);
        d.write(base, 0x0e, &[0]);
        d.write(base, 23, &[0, 2]);
        d.write(base, 24, &[1]);
        assert_eq!(
            *lines.0.lock().unwrap(),
            vec![(14, true), (14, false), (23, true)]
        );
    }

    #[test]
    fn ioram_is_memory_behind_mmio() {
        let m = TestdevIoram::default();
        m.write(IORAM_BASE, 0x10, &0xdead_beef_u32.to_le_bytes());
        let mut d = [0u8; 8];
        m.read(IORAM_BASE, 0x10, &mut d);
        assert_eq!(d, [0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0]);
        // The last byte, and past it.
        m.write(IORAM_BASE, IORAM_LEN - 1, &[7, 8]);
        let mut two = [9u8; 2];
        m.read(IORAM_BASE, IORAM_LEN - 1, &mut two);
        assert_eq!(two, [7, 0]);
    }
}
