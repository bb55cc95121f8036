//! The threads NIC workers run on.
//!
//! A NIC gets its worker thread when it is created, on the thread that
//! builds the VM, and keeps it for its whole life; workers run on it one
//! after another. virtio-net builds its worker only when the guest's
//! driver sets DRIVER_OK, on a vCPU thread: with a thread of its own from
//! the start, the worker neither runs on that vCPU thread nor inherits
//! what a thread gives the threads it creates (its seccomp filter: a vCPU
//! thread's would then also apply to the worker, and a vCPU thread would
//! need to be allowed to create threads).
//!
//! What the thread runs first, before any worker, is up to the VMM
//! ([`WorkerThreads::new`]): it installs the thread's seccomp filter
//! there. The nic crate only runs what it is given.

use std::io;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tapir_net_backend::NetBackend;
use vmm_sys_util::eventfd::EventFd;

use super::NetWorker;

/// What a NIC's worker thread runs first, before it touches guest memory
/// or the backend. An error ends the thread (logged): no worker runs on
/// it, and the NIC moves no frames.
pub type ThreadStart =
    Arc<dyn Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// Where NIC worker threads come from: the VMM's [`ThreadStart`], or
/// nothing to run first (the default: tests, tools).
#[derive(Clone, Default)]
pub struct WorkerThreads {
    start: Option<ThreadStart>,
}

impl std::fmt::Debug for WorkerThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerThreads")
            .field("start", &self.start.is_some())
            .finish()
    }
}

impl WorkerThreads {
    /// Threads that run `start` first.
    pub fn new(start: ThreadStart) -> WorkerThreads {
        WorkerThreads { start: Some(start) }
    }

    /// Starts the worker thread (`<name>-net`) of the NIC `name`: it runs
    /// the [`ThreadStart`], then the workers it is given.
    pub fn spawn(&self, name: &str) -> io::Result<WorkerThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let start = self.start.clone();
        let nic = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-net"))
            .spawn(move || thread_main(&nic, start, queue))?;
        Ok(WorkerThread {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }
}

/// A worker to run, and where its backend goes when it stops.
struct Job {
    worker: NetWorker,
    done: mpsc::Sender<Box<dyn NetBackend>>,
}

fn thread_main(nic: &str, start: Option<ThreadStart>, queue: mpsc::Receiver<Job>) {
    if let Some(start) = start {
        if let Err(e) = start() {
            log::error!(
                "NIC {nic}: the worker thread could not start: {e}; the NIC moves no frames"
            );
            return;
        }
    }
    while let Ok(Job { mut worker, done }) = queue.recv() {
        worker.run_logged();
        let _ = done.send(worker.backend);
    }
}

/// A NIC's worker thread. Dropping it ends the thread once its worker
/// (if any) is stopped: drop the [`WorkerHandle`] first.
pub struct WorkerThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerThread {
    /// Runs `worker` on this thread until the returned handle stops it.
    /// Fails if the thread has ended (its start failed).
    pub fn run(&self, worker: NetWorker) -> io::Result<WorkerHandle> {
        let kill = worker.kill.try_clone()?;
        let (done, backend) = mpsc::channel();
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(Job { worker, done }).ok())
            .ok_or_else(|| io::Error::other("the NIC's worker thread has ended"))?;
        Ok(WorkerHandle {
            kill,
            backend,
            thread: None,
        })
    }

    /// [`WorkerThread::run`], with the handle owning the thread: stopping
    /// the worker also ends the thread.
    pub fn run_owned(self, worker: NetWorker) -> io::Result<WorkerHandle> {
        let mut handle = self.run(worker)?;
        handle.thread = Some(self);
        Ok(handle)
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current worker.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running worker; stopping it gives the backend back.
pub struct WorkerHandle {
    kill: EventFd,
    backend: mpsc::Receiver<Box<dyn NetBackend>>,
    /// The thread, when this handle owns it.
    thread: Option<WorkerThread>,
}

impl WorkerHandle {
    /// Stops the worker and returns the backend (None if the thread
    /// panicked or ended before running the worker).
    pub fn stop(mut self) -> Option<Box<dyn NetBackend>> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<Box<dyn NetBackend>> {
        let _ = self.kill.write(1);
        // The worker sends its backend when it stops, or its end drops
        // the sender; either way this returns.
        let backend = self.backend.recv().ok();
        drop(self.thread.take());
        backend
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
