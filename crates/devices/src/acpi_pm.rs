//! HW-reduced ACPI power management: sleep control/status and reset
//! registers (FADT SLEEP_CONTROL_REG, SLEEP_STATUS_REG, RESET_REG).

use std::sync::Arc;

use crate::{BusDevice, PowerEvent, PowerSink};

/// Sleep control register offset.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Sleep status register offset.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Reset register offset.
pub const RESET_OFFSET: u64 = 2;
/// Length of the register block.
pub const REGISTER_BLOCK_LEN: u64 = 3;
/// SLP_EN in the sleep control register.
pub const SLP_EN: u8 = 1 << 5;
/// SLP_TYP field shift in the sleep control register.
pub const SLP_TYP_SHIFT: u8 = 2;
/// SLP_TYP field mask (after shifting).
pub const SLP_TYP_MASK: u8 = 0x7;

/// The ACPI power-management register block.
pub struct AcpiPm {
    s5_slp_typ: u8,
    reset_value: u8,
    power: Arc<dyn PowerSink>,
}

impl AcpiPm {
    /// `s5_slp_typ` must match the DSDT's `_S5_`; `reset_value` the FADT's RESET_VALUE.
    pub fn new(s5_slp_typ: u8, reset_value: u8, power: Arc<dyn PowerSink>) -> Self {
        Self {
            s5_slp_typ,
            reset_value,
            power,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&self, _base: u64, _offset: u64, data: &mut [u8]) {
        // No wake events are ever pending.
        data.fill(0);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == self.s5_slp_typ =>
            {
                self.power.power_event(PowerEvent::PowerOff)
            }
            RESET_OFFSET if v == self.reset_value => self.power.power_event(PowerEvent::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i8042::{CMD_RESET_CPU, COMMAND_OFFSET, I8042};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Events(Mutex<Vec<PowerEvent>>);
    impl PowerSink for Events {
        fn power_event(&self, e: PowerEvent) {
            self.0.lock().unwrap().push(e);
        }
    }

    #[test]
    fn poweroff_and_reset() {
        let ev = Arc::new(Events::default());
        let pm = AcpiPm::new(5, 1, ev.clone());
        pm.write(0x600, SLEEP_CONTROL_OFFSET, &[5 << SLP_TYP_SHIFT]); // no SLP_EN
        pm.write(
            0x600,
            SLEEP_CONTROL_OFFSET,
            &[(3 << SLP_TYP_SHIFT) | SLP_EN],
        ); // S3: ignored
        assert!(ev.0.lock().unwrap().is_empty());
        pm.write(
            0x600,
            SLEEP_CONTROL_OFFSET,
            &[(5 << SLP_TYP_SHIFT) | SLP_EN],
        );
        pm.write(0x600, RESET_OFFSET, &[0]);
        pm.write(0x600, RESET_OFFSET, &[1]);
        pm.write(0x600, RESET_OFFSET, &[]);
        let kbd = I8042::new(ev.clone());
        kbd.write(0x60, COMMAND_OFFSET, &[0xaa]);
        kbd.write(0x60, COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(
            *ev.0.lock().unwrap(),
            vec![PowerEvent::PowerOff, PowerEvent::Reset, PowerEvent::Reset]
        );
    }
}
