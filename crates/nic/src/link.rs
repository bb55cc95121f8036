//! The cable between a NIC and its backend.
//!
//! The VMM's control plane ([`LinkHandle::set`], e.g. `tapir ctl SOCKET
//! set_link NAME off`) connects or disconnects it. Two parties react:
//! - the generic worker reads the [`Carrier`] on every frame: with the cable
//!   out, frames the guest sends and frames the backend delivers are
//!   dropped and counted (`tx_link_down`, `rx_link_down` in
//!   [`crate::worker::NicStats`]), and guest receive buffers are not
//!   touched;
//! - the NIC model, through [`LinkNotify`], shows the change to the guest
//!   the way its hardware does (virtio: `status` and a configuration
//!   interrupt; e1000: STATUS.LU and LSC; RTL8139: BMSR, MSR and the
//!   link-change interrupt).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether the cable is in; shared by the link handle and the worker.
#[derive(Debug)]
pub struct Carrier(AtomicBool);

impl Carrier {
    /// A carrier that starts connected.
    pub fn new() -> Arc<Self> {
        Arc::new(Carrier(AtomicBool::new(true)))
    }

    /// Whether frames may pass.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the state; returns the previous one.
    fn swap(&self, up: bool) -> bool {
        self.0.swap(up, Ordering::AcqRel)
    }
}

/// How a NIC model tells its guest that the cable changed. Called on the
/// control plane's thread, after the [`Carrier`] changed.
pub trait LinkNotify: Send + Sync {
    /// The cable is now in (`true`) or out.
    fn link_changed(&self, up: bool);
}

/// The VMM's handle on one NIC's cable.
#[derive(Clone)]
pub struct LinkHandle {
    carrier: Arc<Carrier>,
    notify: Arc<dyn LinkNotify>,
}

impl LinkHandle {
    /// A handle setting `carrier` and telling the model through `notify`.
    pub fn new(carrier: Arc<Carrier>, notify: Arc<dyn LinkNotify>) -> Self {
        Self { carrier, notify }
    }

    /// Whether the cable is in.
    pub fn is_up(&self) -> bool {
        self.carrier.is_up()
    }

    /// Connects (`true`) or disconnects the cable; the guest hears about
    /// it only when that is a change. Returns whether it was one.
    pub fn set(&self, up: bool) -> bool {
        if self.carrier.swap(up) == up {
            return false;
        }
        self.notify.link_changed(up);
        true
    }
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("up", &self.is_up())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<bool>>);
    impl LinkNotify for Record {
        fn link_changed(&self, up: bool) {
            self.0.lock().unwrap().push(up);
        }
    }

    #[test]
    fn only_changes_reach_the_model() {
        let carrier = Carrier::new();
        let rec = Arc::new(Record::default());
        let h = LinkHandle::new(carrier.clone(), rec.clone());
        assert!(h.is_up());
        assert!(!h.set(true));
        assert!(h.set(false));
        assert!(!carrier.is_up());
        assert!(!h.set(false));
        assert!(h.set(true));
        assert!(carrier.is_up());
        assert_eq!(*rec.0.lock().unwrap(), vec![false, true]);
    }
}
