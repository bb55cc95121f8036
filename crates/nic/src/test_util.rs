//! What the model tests share: a NIC whose worker runs on the test's
//! thread, driven without sleeps or polling against time.

use std::time::{Duration, Instant};

use crate::worker::NetWorker;

/// Rounds of [`Driven::eventually`].
const ROUNDS: usize = 64;

/// A test fixture around a NIC and its worker ([`NetWorker::manual`]).
pub trait Driven: Sized {
    /// The NIC's worker.
    fn worker(&mut self) -> &mut NetWorker;
    /// The model's timer expires as it would at `at`.
    fn expire_timer(&mut self, at: Instant);

    /// Runs the NIC worker (on this thread) until it has nothing left to
    /// do: what the guest's last accesses and the peer's frames lead to.
    fn pump(&mut self) {
        self.worker().pump().expect("the worker's event wait");
    }

    /// Runs the worker, then checks `f`; again, for a check whose own
    /// accesses give the worker more to do (a driver's receive poll making
    /// room), at most [`ROUNDS`] times. Deterministic: nothing here waits
    /// for time to pass.
    fn eventually(&mut self, what: &str, mut f: impl FnMut(&mut Self) -> bool) {
        for _ in 0..ROUNDS {
            self.pump();
            if f(self) {
                return;
            }
        }
        panic!("not reached after the worker ran out of work: {what}");
    }

    /// Moves the model's clock `by` ahead (a fake clock: the shell's
    /// timerfd is not waited for), then runs the worker.
    fn advance(&mut self, by: Duration) {
        self.expire_timer(Instant::now() + by);
        self.pump();
    }
}
