//! The part of the i8042 keyboard controller a VM needs: the CPU reset line.

use std::sync::Arc;

use crate::{BusDevice, PowerEvent, PowerSink};

/// Offset of the data port (0x60) from the device base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (0x64) from the device base (0x60).
pub const COMMAND_OFFSET: u64 = 4;
/// Command: pulse the output port's reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;

/// i8042 with only the reset command; registered at 0x60..0x65.
/// Status reads say "output buffer empty, input buffer empty", so a probing
/// driver finds no keyboard data rather than hanging on a busy controller.
pub struct I8042 {
    power: Arc<dyn PowerSink>,
}

impl I8042 {
    /// An i8042 that reports reset requests to `power`.
    pub fn new(power: Arc<dyn PowerSink>) -> Self {
        Self { power }
    }
}

impl BusDevice for I8042 {
    fn read(&self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.power.power_event(PowerEvent::Reset);
        }
    }
}
