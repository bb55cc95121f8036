//! The threads NIC workers run on.
//!
//! A NIC gets its worker thread (a [`tapir_devices::job_thread`]) when it
//! is created and keeps it for its whole life; workers run on it one after
//! another. virtio-net builds its worker only when the guest's driver sets
//! DRIVER_OK, on a vCPU thread, which therefore neither runs the worker
//! nor lends it its seccomp filter.

use std::io;
use std::sync::mpsc;

use tapir_devices::{DeviceThreads, JobThread};
use tapir_net_backend::NetBackend;
use vmm_sys_util::eventfd::EventFd;

use super::NetWorker;

pub use tapir_devices::ThreadStart;

/// Where NIC worker threads come from (a [`DeviceThreads`]): the VMM's
/// [`ThreadStart`], or nothing to run first (the default: tests, tools).
#[derive(Clone, Debug, Default)]
pub struct WorkerThreads(DeviceThreads);

impl WorkerThreads {
    /// Threads that run `start` first.
    pub fn new(start: ThreadStart) -> WorkerThreads {
        WorkerThreads(DeviceThreads::new(start))
    }

    /// Starts the worker thread (`<name>-net`) of the NIC `name`: it runs
    /// the [`ThreadStart`], then the workers it is given.
    pub fn spawn(&self, name: &str) -> io::Result<WorkerThread> {
        let thread = self.0.spawn(
            format!("{name}-net"),
            format!("NIC {name}"),
            "the NIC moves no frames",
            |Job { mut worker, done }: Job| {
                worker.run_logged();
                let _ = done.send(worker.backend);
            },
        )?;
        Ok(WorkerThread(thread))
    }
}

/// A worker to run, and where its backend goes when it stops.
struct Job {
    worker: NetWorker,
    done: mpsc::Sender<Box<dyn NetBackend>>,
}

/// A NIC's worker thread. Dropping it ends the thread once its worker
/// (if any) is stopped: drop the [`WorkerHandle`] first.
pub struct WorkerThread(JobThread<Job>);

impl WorkerThread {
    /// Runs `worker` on this thread until the returned handle stops it.
    /// Fails if the thread has ended (its start failed).
    pub fn run(&self, worker: NetWorker) -> io::Result<WorkerHandle> {
        let kill = worker.kill.try_clone()?;
        let (done, backend) = mpsc::channel();
        self.0
            .send(Job { worker, done })
            .map_err(|_| io::Error::other("the NIC's worker thread has ended"))?;
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
