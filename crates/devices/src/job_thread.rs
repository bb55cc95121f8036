//! A device's own thread: made when the device is, on the thread that
//! builds the VM; it runs the VMM's [`ThreadStart`] first (where the VMM
//! installs the thread's seccomp filter), then the jobs it is sent, one
//! after another (a NIC's workers, a disk's queue), until its
//! [`JobThread`] is dropped.
//!
//! Devices start their work when the guest's driver says so, on a vCPU
//! thread; with a thread of their own from the start, that work neither
//! runs on the vCPU thread nor inherits what a thread gives the threads
//! it creates (its seccomp filter: a vCPU thread's would then also apply
//! to the work, and vCPU threads would need to be allowed to create
//! threads). The device crates only run what they are given.

use std::io;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// What a device's thread runs first, before it touches guest memory or
/// its host resources. An error ends the thread (logged): no job runs on
/// it.
pub type ThreadStart =
    Arc<dyn Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// Where device threads come from: the VMM's [`ThreadStart`], or nothing
/// to run first (the default: tests, tools).
#[derive(Clone, Default)]
pub struct DeviceThreads {
    start: Option<ThreadStart>,
}

impl std::fmt::Debug for DeviceThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceThreads")
            .field("start", &self.start.is_some())
            .finish()
    }
}

impl DeviceThreads {
    /// Threads that run `start` first.
    pub fn new(start: ThreadStart) -> DeviceThreads {
        DeviceThreads { start: Some(start) }
    }

    /// Starts thread `thread` for `device` (messages, e.g. "NIC net0"): it
    /// runs the [`ThreadStart`], then `job` on each job sent. When the
    /// start fails it logs `DEVICE: its thread could not start: ERROR;
    /// idle` (`idle`: what the device then does not do) and ends.
    pub fn spawn<J: Send + 'static>(
        &self,
        thread: String,
        device: String,
        idle: &'static str,
        mut job: impl FnMut(J) + Send + 'static,
    ) -> io::Result<JobThread<J>> {
        let (jobs, queue) = mpsc::channel::<J>();
        let start = self.start.clone();
        let handle = std::thread::Builder::new().name(thread).spawn(move || {
            if let Some(start) = start {
                if let Err(e) = start() {
                    log::error!("{device}: its thread could not start: {e}; {idle}");
                    return;
                }
            }
            while let Ok(j) = queue.recv() {
                job(j);
            }
        })?;
        Ok(JobThread {
            jobs: Some(jobs),
            thread: Some(handle),
        })
    }
}

/// A device's thread. Dropping it ends the thread after its current job
/// (stop the job first) and waits for it.
pub struct JobThread<J> {
    jobs: Option<mpsc::Sender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J> JobThread<J> {
    /// Queues `job`; gives it back when the thread has ended (its start
    /// failed).
    pub fn send(&self, job: J) -> Result<(), J> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl<J> Drop for JobThread<J> {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current job.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_start_runs_first_then_the_jobs_in_order_on_the_named_thread() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let threads = DeviceThreads::new(Arc::new(move || {
            let name = std::thread::current().name().map(str::to_string);
            s.lock().unwrap().push(format!("start on {name:?}"));
            Ok(())
        }));
        let s = seen.clone();
        let t = threads
            .spawn("dev0-x".into(), "dev0".into(), "idle", move |j: u32| {
                s.lock().unwrap().push(format!("job {j}"));
            })
            .unwrap();
        t.send(1).unwrap();
        t.send(2).unwrap();
        drop(t);
        assert_eq!(
            *seen.lock().unwrap(),
            ["start on Some(\"dev0-x\")", "job 1", "job 2"]
        );
    }

    #[test]
    fn a_thread_whose_start_fails_runs_no_job_and_gives_jobs_back() {
        let threads = DeviceThreads::new(Arc::new(|| Err("no".into())));
        let ran = Arc::new(Mutex::new(0));
        let r = ran.clone();
        let t = threads
            .spawn("dev1-x".into(), "dev1".into(), "idle", move |_: u8| {
                *r.lock().unwrap() += 1;
            })
            .unwrap();
        // The thread ends at once; until it has, a job may still be queued,
        // and then it is dropped unrun.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while t.send(7).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread did not end"
            );
            std::thread::yield_now();
        }
        assert_eq!(t.send(8), Err(8));
        drop(t);
        assert_eq!(*ran.lock().unwrap(), 0);
    }
}
