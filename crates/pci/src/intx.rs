//! Legacy PCI INTx interrupts.
//!
//! [`Intx`] keeps a function's interrupt pin, its interrupt status bit and
//! the command register's INTx-disable bit consistent with the level of the
//! line the VMM gave it.

use std::io;
use std::sync::Arc;

use tapir_devices::LevelIrq;

use crate::configuration::{PciConfiguration, PCI_COMMAND_INTX_DISABLE};

/// One of the four INTx pins of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum IntxPin {
    /// INTA#.
    IntA = 0,
    /// INTB#.
    IntB = 1,
    /// INTC#.
    IntC = 2,
    /// INTD#.
    IntD = 3,
}

impl IntxPin {
    /// All pins, in order.
    pub const ALL: [IntxPin; 4] = [IntxPin::IntA, IntxPin::IntB, IntxPin::IntC, IntxPin::IntD];

    /// The pin number used by ACPI `_PRT` entries (INTA = 0 .. INTD = 3).
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The pin for an ACPI pin number 0..=3.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// The value of the interrupt pin register (INTA = 1 .. INTD = 4).
    pub fn register_value(self) -> u8 {
        self as u8 + 1
    }

    /// The pin for an interrupt pin register value (0 means none).
    pub fn from_register_value(value: u8) -> Option<Self> {
        value.checked_sub(1).and_then(Self::from_index)
    }
}

/// Drives a function's INTx line.
///
/// The device calls [`Intx::set_level`] with the level of its interrupt
/// condition; the line itself is driven high only while the guest has not
/// set the command register's INTx-disable bit, which `Intx` keeps itself:
/// the device forwards each command register value with
/// [`Intx::command_written`]. So `Intx` needs no configuration space, and
/// a device may raise interrupts from wherever its state lives (a NIC
/// worker, a vCPU thread). The device shows [`Intx::asserted`] as the
/// status register's interrupt bit when the guest reads it.
pub struct Intx {
    irq: Arc<dyn LevelIrq>,
    pin: IntxPin,
    /// The device's interrupt condition.
    asserted: bool,
    /// The command register's INTx-disable bit, as last written.
    disabled: bool,
    /// The level last driven onto `irq`.
    line_high: bool,
}

impl std::fmt::Debug for Intx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intx")
            .field("pin", &self.pin)
            .field("asserted", &self.asserted)
            .field("disabled", &self.disabled)
            .field("line_high", &self.line_high)
            .finish()
    }
}

impl Intx {
    /// Wraps `irq` (the GSI given by [`crate::intx_gsi`] for the device's
    /// slot and `pin`) and records `pin` in the interrupt pin register.
    pub fn new(irq: Arc<dyn LevelIrq>, pin: IntxPin, config: &mut PciConfiguration) -> Self {
        config.set_interrupt_pin(Some(pin));
        Self {
            irq,
            pin,
            asserted: false,
            disabled: config.intx_disabled(),
            line_high: false,
        }
    }

    /// The pin this function uses.
    pub fn pin(&self) -> IntxPin {
        self.pin
    }

    /// The device's interrupt condition as last set (the status register's
    /// interrupt bit).
    pub fn asserted(&self) -> bool {
        self.asserted
    }

    /// Sets the device's interrupt condition. A failure to drive the line
    /// leaves the old line state, and the next change retries.
    pub fn set_level(&mut self, high: bool) -> io::Result<()> {
        self.asserted = high;
        self.sync()
    }

    /// The guest wrote the command register: `command` is its new value.
    pub fn command_written(&mut self, command: u16) -> io::Result<()> {
        self.disabled = command & PCI_COMMAND_INTX_DISABLE != 0;
        self.sync()
    }

    fn sync(&mut self) -> io::Result<()> {
        let want = self.asserted && !self.disabled;
        if want != self.line_high {
            self.irq.set_level(want)?;
            self.line_high = want;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{PciHeader, PCI_COMMAND_INTX_DISABLE, PCI_INTERRUPT_PIN};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line {
        levels: Mutex<Vec<bool>>,
        fail: Mutex<bool>,
    }

    impl LevelIrq for Line {
        fn set_level(&self, high: bool) -> io::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(io::Error::other("irqfd gone"));
            }
            self.levels.lock().unwrap().push(high);
            Ok(())
        }
    }

    #[test]
    fn pin_numbering() {
        assert_eq!(IntxPin::IntA.register_value(), 1);
        assert_eq!(IntxPin::IntD.register_value(), 4);
        assert_eq!(IntxPin::IntC.index(), 2);
        assert_eq!(IntxPin::from_register_value(0), None);
        assert_eq!(IntxPin::from_register_value(2), Some(IntxPin::IntB));
        assert_eq!(IntxPin::from_register_value(5), None);
        assert_eq!(IntxPin::from_index(3), Some(IntxPin::IntD));
        assert_eq!(IntxPin::from_index(4), None);
    }

    #[test]
    fn level_follows_status_and_disable() {
        let line = Arc::new(Line::default());
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        let mut intx = Intx::new(line.clone(), IntxPin::IntA, &mut cfg);
        assert_eq!(cfg.read_u8(PCI_INTERRUPT_PIN), 1);
        assert_eq!(intx.pin(), IntxPin::IntA);

        intx.set_level(true).unwrap();
        assert!(intx.asserted());
        // Raising again does not re-drive the line.
        intx.set_level(true).unwrap();
        assert_eq!(*line.levels.lock().unwrap(), vec![true]);

        // Guest disables INTx: line drops, the condition stays.
        intx.command_written(PCI_COMMAND_INTX_DISABLE).unwrap();
        assert!(intx.asserted());
        assert_eq!(*line.levels.lock().unwrap(), vec![true, false]);

        // Device deasserts and reasserts while disabled: line stays low.
        intx.set_level(false).unwrap();
        assert!(!intx.asserted());
        intx.set_level(true).unwrap();
        assert_eq!(*line.levels.lock().unwrap(), vec![true, false]);

        // Re-enabling delivers the pending condition.
        intx.command_written(0).unwrap();
        assert_eq!(*line.levels.lock().unwrap(), vec![true, false, true]);
        intx.set_level(false).unwrap();
        assert_eq!(*line.levels.lock().unwrap(), vec![true, false, true, false]);
    }

    #[test]
    fn failed_set_level_is_retried() {
        let line = Arc::new(Line::default());
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        let mut intx = Intx::new(line.clone(), IntxPin::IntB, &mut cfg);
        *line.fail.lock().unwrap() = true;
        assert!(intx.set_level(true).is_err());
        *line.fail.lock().unwrap() = false;
        intx.set_level(true).unwrap();
        assert_eq!(*line.levels.lock().unwrap(), vec![true]);
    }
}
