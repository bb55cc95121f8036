//! What joins the e1000's register file ([`E1000State`], a state machine
//! with no fds, lines or locks) to the world: the INTx line and the
//! interrupt-throttling timerfd, behind the one lock that the vCPU side
//! (register accesses) and the NIC worker (rings) share.
//!
//! The model only says what it wants: the line's level
//! ([`E1000State::irq_level`]) and when the ITR interval ends
//! ([`E1000State::itr_deadline`]). Every locked section ends by making the
//! line and the timer follow ([`Guard`]'s drop), so no code path can change
//! the model and forget the wiring.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tapir_devices::Timer;
use tapir_pci::Intx;

use super::state::E1000State;

/// The model with its line and timer.
#[derive(Debug)]
pub struct Shell {
    model: E1000State,
    intx: Intx,
    timer: Timer,
    /// The deadline `timer` is armed for.
    armed: Option<Instant>,
}

/// The shell shared by the PCI device and the NIC worker.
pub type Shared = Arc<Mutex<Shell>>;

impl Shell {
    /// Joins `model` to `intx` and `timer` (disarmed).
    pub fn new(model: E1000State, intx: Intx, timer: Timer) -> Self {
        Self {
            model,
            intx,
            timer,
            armed: None,
        }
    }

    /// Makes the line and the timer follow the model. A failure to drive the
    /// line is retried by the next section (see [`Intx`]); a timer that
    /// cannot be armed leaves the held-back interrupt to the next event.
    fn apply(&mut self) {
        if self.intx.asserted() != self.model.irq_level() {
            let _ = self.intx.set_level(self.model.irq_level());
        }
        let want = self.model.itr_deadline();
        if want != self.armed {
            let done = match want {
                Some(due) => self
                    .timer
                    .arm(due.saturating_duration_since(Instant::now())),
                None => self.timer.disarm(),
            };
            if done.is_ok() {
                self.armed = want;
            }
        }
    }
}

/// A locked shell: derefs to the model; on drop the line and the timer
/// follow what the section did to it.
pub struct Guard<'a>(MutexGuard<'a, Shell>);

/// Locks the shell; a panicked holder leaves consistent registers.
pub fn lock(shared: &Shared) -> Guard<'_> {
    Guard(tapir_devices::lock(shared))
}

impl Guard<'_> {
    /// The guest wrote the PCI command register.
    pub fn command_written(&mut self, command: u16, bus_master: bool) {
        let _ = self.0.intx.command_written(command);
        self.0.model.command_written(bus_master);
    }

    /// The throttling timer, for the worker's epoll.
    pub fn timer(&self) -> &Timer {
        &self.0.timer
    }

    /// The throttling timer fired: consumes its expiry and lets the model
    /// deliver what it held back.
    pub fn timer_fired(&mut self) {
        self.0.timer.drain();
        self.0.armed = None;
        self.0.model.timer_fired(Instant::now());
    }
}

impl Deref for Guard<'_> {
    type Target = E1000State;
    fn deref(&self) -> &E1000State {
        &self.0.model
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut E1000State {
        &mut self.0.model
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.apply();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e1000::regs::*;
    use crate::e1000::{eeprom, IDS};
    use tapir_devices::LevelIrq;
    use tapir_pci::configuration::PCI_COMMAND_INTX_DISABLE;
    use tapir_pci::{IntxPin, PciConfiguration, PciHeader};

    #[derive(Default)]
    struct Line(Mutex<Vec<bool>>);
    impl LevelIrq for Line {
        fn set_level(&self, high: bool) -> std::io::Result<()> {
            self.0.lock().unwrap().push(high);
            Ok(())
        }
    }

    #[test]
    fn the_line_follows_the_model_at_the_end_of_each_section() {
        let line = Arc::new(Line::default());
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        let intx = Intx::new(line.clone(), IntxPin::IntA, &mut cfg);
        let model = E1000State::new(eeprom::image([2, 0, 0, 0, 0, 1], IDS));
        let shared: Shared = Arc::new(Mutex::new(Shell::new(model, intx, Timer::new().unwrap())));
        {
            let mut s = lock(&shared);
            s.write(IMS, INT_TXDW);
            s.write(ICS, INT_TXDW);
            // Within the section nothing is driven yet.
            assert!(line.0.lock().unwrap().is_empty());
        }
        assert_eq!(*line.0.lock().unwrap(), vec![true]);
        lock(&shared).read(ICR);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        // INTx disabled: the model's condition no longer reaches the line.
        {
            let mut s = lock(&shared);
            s.command_written(PCI_COMMAND_INTX_DISABLE, true);
            s.write(ICS, INT_TXDW);
            assert!(s.irq_level());
        }
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        lock(&shared).command_written(0, true);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false, true]);
    }
}
