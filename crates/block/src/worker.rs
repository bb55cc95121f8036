//! The event glue of a disk: one thread per disk that waits for the
//! driver's kicks (the queue's ioeventfd) and runs the queue
//! ([`BlockQueue::process`]), raising the queue's interrupt when it asks.
//!
//! As for NICs, a disk gets its thread when it is created, on the thread
//! that builds the VM: the thread runs the VMM's [`ThreadStart`] first
//! (its seccomp filter), and then the queue of each activation of the
//! device, one after another. virtio activation happens on a vCPU thread,
//! which therefore neither creates threads nor lends its own filter.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc};

use tapir_devices::{DeviceThreads, JobThread};
use tapir_virtio::{VirtioInterrupt, VirtioInterruptType};

pub use tapir_devices::ThreadStart;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::queue::BlockQueue;

/// Where disk threads come from (a [`DeviceThreads`]): the VMM's
/// [`ThreadStart`], or nothing to run first (the default: tests).
#[derive(Clone, Debug, Default)]
pub struct DiskThreads(DeviceThreads);

impl DiskThreads {
    /// Threads that run `start` first.
    pub fn new(start: ThreadStart) -> DiskThreads {
        DiskThreads(DeviceThreads::new(start))
    }

    /// Starts the thread (`<name>-blk`) of the disk `name`.
    pub fn spawn(&self, name: &str) -> io::Result<DiskThread> {
        let disk = name.to_string();
        let thread = self.0.spawn(
            format!("{name}-blk"),
            format!("disk {name}"),
            "the disk serves no requests",
            move |mut job: Job| match run(&mut job) {
                Ok(()) => log::debug!("disk {disk}: worker stopped"),
                Err(e) => {
                    log::error!(
                        "disk {disk}: worker stopped: {e}; the disk serves no more requests"
                    )
                }
            },
        )?;
        Ok(DiskThread(thread))
    }
}

/// One activation's work: the queue, its kick, the interrupt, the stop,
/// and the epoll set that waits for the two (made by the thread that
/// activates, so that the disk's thread only waits).
struct Job {
    queue: BlockQueue,
    epoll: Epoll,
    kick: EventFd,
    _kill: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    index: u16,
    /// Dropped when the job ends.
    _done: mpsc::Sender<()>,
}

const KICK: u64 = 0;
const KILL: u64 = 1;

fn run(job: &mut Job) -> io::Result<()> {
    let mut events = [EpollEvent::default(); 2];
    // Requests made available before the worker started.
    serve(job);
    loop {
        // Requests left by a budget-limited pass: look for a stop, then go on.
        let timeout = if job.queue.has_more() { 0 } else { -1 };
        let n = match job.epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            serve(job);
        }
        for ev in &events[..n] {
            match ev.data() {
                KILL => return Ok(()),
                _ => {
                    let _ = job.kick.read();
                    serve(job);
                }
            }
        }
    }
}

fn serve(job: &mut Job) {
    if job.queue.process() {
        let _ = job.interrupt.trigger(VirtioInterruptType::Queue(job.index));
    }
}

/// A disk's thread. Dropping it ends the thread once its worker (if any)
/// is stopped: drop the [`WorkerHandle`] first.
pub struct DiskThread(JobThread<Job>);

impl DiskThread {
    /// Runs `queue` (queue `index`, kicked through `kick`) on this thread
    /// until the returned handle stops it.
    pub fn run(
        &self,
        queue: BlockQueue,
        index: u16,
        kick: EventFd,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> io::Result<WorkerHandle> {
        let kill = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        for (fd, token) in [(kick.as_raw_fd(), KICK), (kill.as_raw_fd(), KILL)] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        let (done, stopped) = mpsc::channel();
        let job = Job {
            queue,
            epoll,
            kick,
            _kill: kill.try_clone()?,
            interrupt,
            index,
            _done: done,
        };
        self.0
            .send(job)
            .map_err(|_| io::Error::other("the disk's thread has ended"))?;
        Ok(WorkerHandle { kill, stopped })
    }
}

/// A running worker.
pub struct WorkerHandle {
    kill: EventFd,
    stopped: mpsc::Receiver<()>,
}

impl WorkerHandle {
    /// Stops the worker; returns once it no longer touches guest memory.
    pub fn stop(self) {
        let _ = self.kill.write(1);
        // The job's sender drops when it ends (or was never run).
        let _ = self.stopped.recv();
    }
}
