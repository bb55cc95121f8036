//! `isa-debug-exit`: a port range whose every write ends the VM with a
//! status the guest chose, as QEMU's device of that name does. Test kernels
//! (kvm-unit-tests, OS test harnesses) report their result through it.
//!
//! A write of value V (the access's bytes, little-endian, at any offset
//! in the range, 1 to 4 bytes) asks for exit status `(V << 1) | 1`, of
//! which the process keeps the low 8 bits. Reads return 0.

use std::sync::Arc;

use crate::BusDevice;

/// QEMU's x86 default port base for the kvm-unit-tests convention.
pub const DEFAULT_IOBASE: u16 = 0xf4;
/// Default width of the port range.
pub const DEFAULT_IOSIZE: u16 = 4;
/// Widest write the device decodes; wider ones are ignored.
pub const MAX_ACCESS: usize = 4;

/// Receives the guest's exit request.
pub trait DebugExitSink: Send + Sync {
    /// The guest wrote `value`; the VMM ends with [`exit_status`]`(value)`.
    /// Called from the vCPU thread that performed the write.
    fn debug_exit(&self, value: u32);
}

/// The process exit status for a written `value`: `(value << 1) | 1`,
/// truncated to the 8 bits a process status keeps.
pub fn exit_status(value: u32) -> u8 {
    (((value as u64) << 1) | 1) as u8
}

/// The debug-exit port range.
pub struct DebugExit {
    sink: Arc<dyn DebugExitSink>,
}

impl DebugExit {
    /// A device that reports writes to `sink`.
    pub fn new(sink: Arc<dyn DebugExitSink>) -> Self {
        Self { sink }
    }
}

impl BusDevice for DebugExit {
    fn read(&self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _base: u64, _offset: u64, data: &[u8]) {
        if data.is_empty() || data.len() > MAX_ACCESS {
            return;
        }
        let mut le = [0u8; 4];
        le[..data.len()].copy_from_slice(data);
        self.sink.debug_exit(u32::from_le_bytes(le));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Exits(Mutex<Vec<u32>>);
    impl DebugExitSink for Exits {
        fn debug_exit(&self, value: u32) {
            self.0.lock().unwrap().push(value);
        }
    }

    #[test]
    fn writes_of_each_width_request_an_exit() {
        let ex = Arc::new(Exits::default());
        let d = DebugExit::new(ex.clone());
        d.write(0xf4, 0, &[0x10]);
        d.write(0xf4, 0, &[0x34, 0x12]);
        d.write(0xf4, 0, &[0x78, 0x56, 0x34, 0x12]);
        d.write(0xf4, 3, &[1]);
        // Empty and 8-byte accesses are not port I/O; ignored.
        d.write(0xf4, 0, &[]);
        d.write(0xf4, 0, &[1; 8]);
        assert_eq!(*ex.0.lock().unwrap(), vec![0x10, 0x1234, 0x1234_5678, 1]);
        let mut b = [0xffu8; 4];
        d.read(0xf4, 0, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn status_is_value_shifted_with_the_low_bit_set() {
        assert_eq!(exit_status(0), 1);
        assert_eq!(exit_status(1), 3);
        assert_eq!(exit_status(0x10), 0x21);
        assert_eq!(exit_status(0x7f), 0xff);
        // Only the low 7 bits of the value survive in an 8-bit status.
        assert_eq!(exit_status(0x80), 1);
        assert_eq!(exit_status(u32::MAX), 0xff);
    }
}
