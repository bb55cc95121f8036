//! What joins a NIC model's register file (a state machine with no fds,
//! lines or locks) to the world: the INTx line, the model's timer and the
//! doorbells that wake the NIC worker, behind the one lock that the vCPU
//! side (register accesses) and the worker (rings) share.
//!
//! The model only says what it wants ([`NicModel`]): the line's level,
//! when its timer must fire, which doorbells it rang. Every locked section
//! ends by making the line, the timer and the doorbells follow ([`Guard`]'s
//! drop), so no code path can change the model and forget the wiring.
//!
//! [`PciNic`] is the PCI function around any such model: configuration
//! space, BAR dispatch, the cable, the counters and the NIC worker.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use std::io;

use std::os::fd::AsRawFd;
use tapir_devices::Timer;
use tapir_net_backend::NetBackend;
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::{BarChange, Intx, PciConfiguration, PciDevice};

use tapir_net_backend::hdr::DATA_VALID;
use tapir_net_backend::offload::segment;
use tapir_net_backend::NetHdr;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::link::{Carrier, LinkHandle, LinkNotify};
use crate::worker::{
    GuestEvent, GuestFds, GuestWork, NetWorker, NicFrontend, NicStats, RxPush, WorkerHandle,
    WorkerThreads,
};

/// Doorbells a model rang: worker events to signal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Doorbells {
    /// Look at the transmit ring.
    pub tx: bool,
    /// Look at the receive ring (room may have been made).
    pub rx: bool,
}

/// The eventfds behind [`Doorbells`] (the worker polls the other ends).
#[derive(Debug)]
pub struct DoorbellFds {
    /// Transmit.
    pub tx: EventFd,
    /// Receive.
    pub rx: EventFd,
}

impl DoorbellFds {
    /// Two fresh doorbells.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            tx: EventFd::new(EFD_NONBLOCK)?,
            rx: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn ring(&self, bells: Doorbells) {
        // A write cannot fail short of the counter overflowing, which the
        // worker draining it prevents.
        for (rung, fd) in [(bells.tx, &self.tx), (bells.rx, &self.rx)] {
            if rung {
                let _ = fd.write(1);
            }
        }
    }
}

/// What a model tells its shell.
pub trait NicModel: Send {
    /// The INTx level it wants (also the status register's interrupt bit).
    fn irq_level(&self) -> bool;
    /// When the shell's timer must fire ([`NicModel::timer_expired`]);
    /// `None`: disarmed.
    fn timer_deadline(&self) -> Option<Instant> {
        None
    }
    /// The shell's timer fired at `now`.
    fn timer_expired(&mut self, _now: Instant) {}
    /// Doorbells rung since the last call.
    fn take_doorbells(&mut self) -> Doorbells {
        Doorbells::default()
    }
    /// The guest wrote the PCI command register: DMA allowed or not.
    fn command_written(&mut self, bus_master: bool);
}

/// `impl NicModel for $model`, for a model made of a register file
/// (`state`, itself a [`NicModel`]) and ring logic (`rings`, whose
/// `tx_again` asks for the transmit doorbell): everything comes from the
/// register file, plus that doorbell.
macro_rules! nic_model_of_state_and_rings {
    ($model:ty) => {
        impl $crate::shell::NicModel for $model {
            fn irq_level(&self) -> bool {
                self.state.irq_level()
            }
            fn timer_deadline(&self) -> Option<std::time::Instant> {
                self.state.timer_deadline()
            }
            fn timer_expired(&mut self, now: std::time::Instant) {
                self.state.timer_expired(now);
            }
            fn take_doorbells(&mut self) -> $crate::shell::Doorbells {
                let mut bells = self.state.take_doorbells();
                bells.tx |= std::mem::take(&mut self.rings.tx_again);
                bells
            }
            fn command_written(&mut self, bus_master: bool) {
                self.state.command_written(bus_master);
            }
        }
    };
}
pub(crate) use nic_model_of_state_and_rings;

/// The model with its line and timer (what the lock protects).
#[derive(Debug)]
pub struct Shell<M> {
    model: M,
    intx: Intx,
    timer: Option<Timer>,
    /// The deadline `timer` is armed for.
    armed: Option<Instant>,
}

impl<M: NicModel> Shell<M> {
    /// Joins `model` to `intx`, and to `timer` (disarmed) if the model uses
    /// one.
    pub fn new(model: M, intx: Intx, timer: Option<Timer>) -> Self {
        Self {
            model,
            intx,
            timer,
            armed: None,
        }
    }

    /// Makes the line and the timer follow the model, and says which
    /// doorbells it rang. A failure to drive the line is retried by the
    /// next section (see [`Intx`]); a timer that cannot be armed leaves the
    /// event to the next section.
    fn apply(&mut self) -> Doorbells {
        if self.intx.asserted() != self.model.irq_level() {
            let _ = self.intx.set_level(self.model.irq_level());
        }
        if let Some(timer) = &self.timer {
            let want = self.model.timer_deadline();
            if want != self.armed {
                let done = match want {
                    Some(due) => timer.arm(due.saturating_duration_since(Instant::now())),
                    None => timer.disarm(),
                };
                if done.is_ok() {
                    self.armed = want;
                }
            }
        }
        self.model.take_doorbells()
    }
}

/// A shell shared by a PCI device and its NIC worker: the locked part and
/// the doorbells, which are rung after the lock is released (a woken
/// worker must not find the lock still held by whoever rang).
#[derive(Debug)]
pub struct ShellLock<M> {
    shell: Mutex<Shell<M>>,
    doorbells: DoorbellFds,
}

/// How a PCI device and its NIC worker hold their shell.
pub type SharedShell<M> = Arc<ShellLock<M>>;

impl<M: NicModel> ShellLock<M> {
    /// Shares `shell`, with a fresh pair of doorbells.
    pub fn new(shell: Shell<M>) -> io::Result<SharedShell<M>> {
        Ok(Arc::new(Self {
            shell: Mutex::new(shell),
            doorbells: DoorbellFds::new()?,
        }))
    }

    /// What the NIC worker waits on: the other ends of the doorbells, and
    /// the timer.
    pub fn guest_fds(&self) -> io::Result<GuestFds> {
        Ok(GuestFds {
            tx: self.doorbells.tx.try_clone()?,
            rx: self.doorbells.rx.try_clone()?,
            timer: lock(self).timer().map(|t| t.as_raw_fd()),
        })
    }
}

/// A locked shell: derefs to the model; on drop the line and the timer
/// follow what the section did to it, the lock is released, then the
/// doorbells it rang are signalled.
pub struct Guard<'a, M: NicModel> {
    /// `None` only while dropping.
    shell: Option<MutexGuard<'a, Shell<M>>>,
    doorbells: &'a DoorbellFds,
}

/// Locks the shell; a panicked holder leaves consistent registers.
pub fn lock<M: NicModel>(shared: &ShellLock<M>) -> Guard<'_, M> {
    Guard {
        shell: Some(tapir_devices::lock(&shared.shell)),
        doorbells: &shared.doorbells,
    }
}

impl<'a, M: NicModel> Guard<'a, M> {
    fn shell(&self) -> &Shell<M> {
        self.shell
            .as_ref()
            .expect("a guard holds its lock until dropped")
    }

    fn shell_mut(&mut self) -> &mut Shell<M> {
        self.shell
            .as_mut()
            .expect("a guard holds its lock until dropped")
    }

    /// The guest wrote the PCI command register (`bus_master`: its bus
    /// master enable bit).
    pub fn command_written(&mut self, command: u16, bus_master: bool) {
        let shell = self.shell_mut();
        let _ = shell.intx.command_written(command);
        shell.model.command_written(bus_master);
    }

    /// The shell's timer, for the worker's epoll.
    pub fn timer(&self) -> Option<&Timer> {
        self.shell().timer.as_ref()
    }

    /// The shell's timer fired: consumes its expiry and tells the model.
    pub fn timer_fired(&mut self) {
        let shell = self.shell_mut();
        if let Some(t) = &shell.timer {
            t.drain();
        }
        shell.armed = None;
        shell.model.timer_expired(Instant::now());
    }
}

impl<M: NicModel> Deref for Guard<'_, M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.shell().model
    }
}

impl<M: NicModel> DerefMut for Guard<'_, M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.shell_mut().model
    }
}

impl<M: NicModel> Drop for Guard<'_, M> {
    fn drop(&mut self) {
        let Some(mut shell) = self.shell.take() else {
            return;
        };
        let bells = shell.apply();
        drop(shell);
        self.doorbells.ring(bells);
    }
}

/// The ring side of a model: what the NIC worker asks of it, one locked
/// section per call (see [`NicFrontend`], whose methods these are). The
/// model reads guest memory only through the memory it was handed; it
/// raises interrupts and asks for timers and doorbells only through what
/// it tells its shell ([`NicModel`]).
pub trait NicRings: NicModel {
    /// [`NicFrontend::pop_tx`].
    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool;
    /// [`NicFrontend::complete_tx`].
    fn complete_tx(&mut self);
    /// Delivers received frames, each plain (no GSO, checksums complete):
    /// one frame from the backend, or the segments of one. `l4_valid`:
    /// their TCP/UDP checksums are known to be right (the backend vouches
    /// for them, or they were just computed). Returns the outcome and how
    /// many of `frames` it took: all of them, but with
    /// [`RxPush::NoBuffers`], when the rest is offered again later.
    fn push_rx(&mut self, frames: &[&[u8]], l4_valid: bool) -> (RxPush, usize);
    /// [`NicFrontend::rx_wait_buffers`].
    fn rx_wait_buffers(&mut self) -> bool;
    /// [`NicFrontend::flush`]: the end of a worker pass.
    fn flush(&mut self) {}
}

/// The NIC worker's view of a shared model: each call locks the shell,
/// asks the model, and lets the shell apply what the model then wants
/// (line, timer, doorbells) as the section ends.
///
/// The models behind it have no receive offloads, so a frame from the
/// backend with offloads (a TSO frame, a partial checksum) is finished
/// here, in one place for all of them and outside the lock: cut into its
/// segments with their checksums, which the model then takes as plain
/// frames. Segments the guest has no room for yet wait here for the
/// worker's next offer of the same frame.
struct ShellRings<M: NicRings> {
    shell: SharedShell<M>,
    /// The segments of the frame being delivered.
    segments: Vec<Vec<u8>>,
    /// How many of them the model took.
    taken: usize,
}

impl<M: NicRings> ShellRings<M> {
    fn new(shell: SharedShell<M>) -> Self {
        Self {
            shell,
            segments: Vec::new(),
            taken: 0,
        }
    }
}

impl<M: NicRings> NicFrontend for ShellRings<M> {
    fn guest_event(&mut self, ev: GuestEvent) -> GuestWork {
        match ev {
            GuestEvent::Tx => GuestWork::Tx,
            GuestEvent::Rx => GuestWork::Rx,
            GuestEvent::Timer => {
                // A model that wants the worker back after its timer rings
                // a doorbell.
                lock(&self.shell).timer_fired();
                GuestWork::None
            }
        }
    }

    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        lock(&self.shell).pop_tx(hdr, buf)
    }

    fn complete_tx(&mut self) {
        lock(&self.shell).complete_tx();
    }

    fn push_rx(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush {
        if self.segments.is_empty() {
            if hdr.is_plain() {
                let l4_valid = hdr.flags & DATA_VALID != 0;
                return lock(&self.shell).push_rx(&[frame], l4_valid).0;
            }
            match segment(hdr, frame) {
                Ok(segments) => self.segments = segments,
                Err(_) => return RxPush::Dropped,
            }
            self.taken = 0;
        }
        let rest: Vec<&[u8]> = self.segments[self.taken..]
            .iter()
            .map(Vec::as_slice)
            .collect();
        // Their checksums were just computed.
        let (done, taken) = lock(&self.shell).push_rx(&rest, true);
        self.taken += taken;
        if done != RxPush::NoBuffers {
            self.segments.clear();
        }
        done
    }

    fn rx_wait_buffers(&mut self) -> bool {
        lock(&self.shell).rx_wait_buffers()
    }

    fn rx_discard(&mut self) {
        self.segments.clear();
    }

    fn flush(&mut self) {
        lock(&self.shell).flush();
    }
}

/// A model whose registers the guest reaches through PCI BARs.
pub trait PciNicModel: NicRings {
    /// A guest read of `data.len()` bytes at `offset` of BAR `index`.
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset` of BAR `index`.
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]);
    /// The cable went in (`true`) or out: the model shows it to the guest.
    fn set_carrier(&mut self, up: bool);
}

/// The PCI function around a [`PciNicModel`]: its configuration space and
/// BAR dispatch, the shell (line, timer, doorbells), the cable, the
/// counters and the NIC worker. The same for every model.
pub struct PciNic<M: PciNicModel> {
    name: String,
    config: PciConfiguration,
    shell: SharedShell<M>,
    stats: Arc<NicStats>,
    carrier: Arc<Carrier>,
    worker: Option<WorkerHandle>,
}

/// Shows the cable to the model.
struct ShellLink<M: PciNicModel>(SharedShell<M>);

impl<M: PciNicModel> LinkNotify for ShellLink<M> {
    fn link_changed(&self, up: bool) {
        lock(&self.0).set_carrier(up);
    }
}

impl<M: PciNicModel + 'static> PciNic<M> {
    /// The function `name` with configuration space `config` (header and
    /// BARs set up, its INTx pin given to the shell's `Intx`), its model in
    /// `shell`, and the worker joining the model's rings to `backend`,
    /// counting in `stats`; `vlan` makes it an 802.1Q access port. The
    /// worker starts at once, on a thread from `threads`.
    pub fn start(
        name: String,
        config: PciConfiguration,
        shell: SharedShell<M>,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        stats: Arc<NicStats>,
        threads: &WorkerThreads,
    ) -> io::Result<Self> {
        let (mut nic, worker) = Self::manual(name, config, shell, backend, vlan, stats)?;
        nic.start_worker(worker, threads)?;
        Ok(nic)
    }

    /// Runs `worker` (this function's, from [`PciNic::manual`]) on a
    /// thread of its own from `threads`.
    pub fn start_worker(&mut self, worker: NetWorker, threads: &WorkerThreads) -> io::Result<()> {
        self.worker = Some(threads.spawn(&self.name)?.run_owned(worker)?);
        Ok(())
    }

    /// [`PciNic::start`] without starting the worker: the caller drives it
    /// on its own thread ([`NetWorker::pump`]), as tests and fuzzing do.
    pub fn manual(
        name: String,
        config: PciConfiguration,
        shell: SharedShell<M>,
        backend: Box<dyn NetBackend>,
        vlan: Option<u16>,
        stats: Arc<NicStats>,
    ) -> io::Result<(Self, NetWorker)> {
        let carrier = Carrier::new();
        let worker = NetWorker::manual(
            &name,
            Box::new(ShellRings::new(shell.clone())),
            shell.guest_fds()?,
            backend,
            vlan,
            stats.clone(),
            carrier.clone(),
        )?;
        let nic = Self {
            name,
            config,
            shell,
            stats,
            carrier,
            worker: None,
        };
        Ok((nic, worker))
    }

    /// The NIC's counters.
    pub fn stats(&self) -> Arc<NicStats> {
        self.stats.clone()
    }

    /// The handle that connects and disconnects the cable: the worker
    /// stops moving frames and the model shows the change to the guest.
    pub fn link(&self) -> LinkHandle {
        LinkHandle::new(
            self.carrier.clone(),
            Arc::new(ShellLink(self.shell.clone())),
        )
    }

    /// The model, locked.
    pub fn model(&self) -> Guard<'_, M> {
        lock(&self.shell)
    }

    /// Whether the worker still runs.
    pub fn running(&self) -> bool {
        self.worker.is_some()
    }

    /// Stops the worker and returns the backend (`None` if the worker is
    /// gone or its thread panicked). The function keeps answering register
    /// accesses but moves no more frames.
    pub fn stop(&mut self) -> Option<Box<dyn NetBackend>> {
        self.worker.take().and_then(WorkerHandle::stop)
    }
}

impl<M: PciNicModel> Drop for PciNic<M> {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.stop();
        }
    }
}

impl<M: PciNicModel + 'static> PciDevice for PciNic<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        // The line is driven away from this configuration space: bring the
        // status register's interrupt bit (in the command's dword) up to date.
        if offset & !3 == PCI_COMMAND {
            let asserted = lock(&self.shell).irq_level();
            self.config.set_interrupt_status(asserted);
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Option<BarChange> {
        let change = self.config.write(offset, data);
        if offset & !3 == PCI_COMMAND {
            let (command, master) = (self.config.command(), self.config.bus_master_enabled());
            lock(&self.shell).command_written(command, master);
        }
        change
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        lock(&self.shell).read_bar(index, offset, data);
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        lock(&self.shell).write_bar(index, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;
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

    /// A model that wants what the test says.
    #[derive(Debug, Default)]
    struct Fake {
        level: bool,
        deadline: Option<Instant>,
        bells: Doorbells,
        expired: u32,
        bus_master: bool,
    }

    impl NicModel for Fake {
        fn irq_level(&self) -> bool {
            self.level
        }
        fn timer_deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn timer_expired(&mut self, _now: Instant) {
            self.deadline = None;
            self.expired += 1;
        }
        fn take_doorbells(&mut self) -> Doorbells {
            std::mem::take(&mut self.bells)
        }
        fn command_written(&mut self, bus_master: bool) {
            self.bus_master = bus_master;
        }
    }

    fn shell(line: &Arc<Line>) -> SharedShell<Fake> {
        let mut cfg = PciConfiguration::new(&PciHeader::default());
        let intx = Intx::new(line.clone(), IntxPin::IntA, &mut cfg);
        let timer = Some(Timer::new().unwrap());
        ShellLock::new(Shell::new(Fake::default(), intx, timer)).unwrap()
    }

    #[test]
    fn the_line_follows_the_model_at_the_end_of_each_section() {
        let line = Arc::new(Line::default());
        let shared = shell(&line);
        {
            let mut s = lock(&shared);
            s.level = true;
            // Within the section nothing is driven yet.
            assert!(line.0.lock().unwrap().is_empty());
        }
        assert_eq!(*line.0.lock().unwrap(), vec![true]);
        lock(&shared).level = false;
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        // INTx disabled: the model's condition no longer reaches the line.
        {
            let mut s = lock(&shared);
            s.command_written(PCI_COMMAND_INTX_DISABLE, true);
            s.level = true;
            assert!(s.bus_master);
        }
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        lock(&shared).command_written(0, true);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false, true]);
    }

    #[test]
    fn the_timer_is_armed_for_the_models_deadline() {
        let line = Arc::new(Line::default());
        let shared = shell(&line);
        lock(&shared).deadline = Some(Instant::now() + Duration::from_millis(1));
        let fd = lock(&shared).timer().unwrap().as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and its count.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "timer fired");
        let mut s = lock(&shared);
        s.timer_fired();
        assert_eq!(s.expired, 1);
        assert_eq!(s.timer_deadline(), None);
    }

    #[test]
    fn doorbells_rung_in_a_section_signal_the_worker_after_it() {
        let line = Arc::new(Line::default());
        let shared = shell(&line);
        let GuestFds { tx, rx, .. } = shared.guest_fds().unwrap();
        {
            let mut s = lock(&shared);
            s.bells.tx = true;
            assert!(tx.read().is_err(), "not before the section ends");
        }
        assert_eq!(tx.read().unwrap(), 1);
        assert!(rx.read().is_err());
        // Rung once: the next section rings nothing.
        drop(lock(&shared));
        assert!(tx.read().is_err());
    }
}
