//! The request queue of one active virtio-blk device: takes chains from
//! the available ring, runs them ([`crate::request`]), completes them and
//! says when the driver wants an interrupt. No fds, threads or locks: the
//! worker ([`crate::worker`]) calls [`BlockQueue::process`] when the
//! driver kicks.

use std::sync::Arc;

use tapir_virtio::avail::{self, Popped};
use tapir_virtio::used::{self, Notifier};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::backend::{DiskBackend, SECTOR_SIZE};
use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_S_OK;

use crate::request::{write_status, Completion, DiskProps, Request};

/// Bad requests logged per activation before the log goes quiet (a guest
/// could otherwise fill the host's log).
pub const LOGGED_BAD_REQUESTS: u32 = 10;

/// At most this many requests per [`BlockQueue::process`] call, in queue
/// sizes: a driver that keeps adding requests cannot keep the worker from
/// its stop (a device reset waits for it).
const BUDGET_QUEUES: u32 = 4;

/// Counts of what the queue did (for tests and the log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests completed with VIRTIO_BLK_S_OK.
    pub ok: u64,
    /// Requests completed with an error status, or without one.
    pub failed: u64,
}

/// One activated request queue and the disk behind it.
pub struct BlockQueue {
    name: String,
    mem: GuestMemoryMmap,
    queue: Queue,
    disk: Arc<dyn DiskBackend>,
    props: DiskProps,
    notifier: Notifier,
    /// The available index could not be followed: nothing more is taken
    /// until the driver resets the device.
    broken: bool,
    logged: u32,
    stats: QueueStats,
    /// Requests per [`BlockQueue::process`] call.
    budget: u32,
    /// The last [`BlockQueue::process`] stopped at its budget with
    /// requests left.
    more: bool,
}

impl BlockQueue {
    /// The queue handed over at DRIVER_OK, for disk `name` (messages).
    pub fn new(
        name: String,
        mem: GuestMemoryMmap,
        queue: Queue,
        disk: Arc<dyn DiskBackend>,
        props: DiskProps,
    ) -> BlockQueue {
        BlockQueue {
            notifier: Notifier::new(&queue),
            budget: u32::from(queue.size()) * BUDGET_QUEUES,
            name,
            mem,
            queue,
            disk,
            props,
            broken: false,
            logged: 0,
            stats: QueueStats::default(),
            more: false,
        }
    }

    /// What the queue did so far.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    fn log_bad(&mut self, what: std::fmt::Arguments<'_>) {
        self.logged = self.logged.saturating_add(1);
        if self.logged <= LOGGED_BAD_REQUESTS {
            log::warn!("disk {}: bad request: {what}", self.name);
            if self.logged == LOGGED_BAD_REQUESTS {
                log::warn!(
                    "disk {}: {LOGGED_BAD_REQUESTS} bad requests; no more are logged until the driver resets the device",
                    self.name
                );
            }
        }
    }

    /// Sets the requests per pass (tests).
    #[cfg(test)]
    pub(crate) fn set_budget(&mut self, budget: u32) {
        self.budget = budget;
    }

    /// Whether the last [`BlockQueue::process`] left requests for the next
    /// call (it stopped at its budget; no kick will come for them).
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Serves the requests the driver made available, re-arming kicks at
    /// the end, or up to a budget (see [`BlockQueue::has_more`]). Returns
    /// whether the driver must be interrupted.
    pub fn process(&mut self) -> bool {
        self.more = false;
        if self.broken {
            return false;
        }
        let sectors = self.disk.size() / SECTOR_SIZE;
        let mut budget = self.budget;
        loop {
            let _ = self.queue.disable_notification(&self.mem);
            loop {
                if budget == 0 {
                    self.more = true;
                    return self.notifier.needs_notification(&self.queue, &self.mem);
                }
                budget -= 1;
                let chain = match avail::pop(&mut self.queue, &self.mem) {
                    Popped::Chain(c) => c,
                    Popped::Empty => break,
                    Popped::Broken(e) => {
                        log::warn!(
                            "disk {}: queue stopped until the driver resets the device: {e}",
                            self.name
                        );
                        self.broken = true;
                        return self.notifier.needs_notification(&self.queue, &self.mem);
                    }
                };
                let head = chain.head_index();
                let (status_at, status) = match Request::parse(chain, &self.mem, sectors) {
                    Ok(req) => {
                        let (done, err) = req.execute(&self.mem, &*self.disk, &self.props);
                        if let Some(e) = err {
                            self.log_bad(format_args!("{:?}: {e}", req.kind()));
                        }
                        (Some(req.status_addr()), Some(done))
                    }
                    Err((e, at)) => {
                        self.log_bad(format_args!("{e}"));
                        (at, at.map(|_| Completion::IOERR))
                    }
                };
                let used_len = match (status_at, status) {
                    (Some(at), Some(done)) if write_status(&self.mem, at, done.status) => {
                        if done.status == VIRTIO_BLK_S_OK as u8 {
                            self.stats.ok += 1;
                        } else {
                            self.stats.failed += 1;
                        }
                        done.used_len
                    }
                    _ => {
                        self.stats.failed += 1;
                        0
                    }
                };
                // The head came from the ring, so it is below the size.
                let _ = used::add_used(&mut self.queue, &self.mem, &[(head, used_len)]);
            }
            match avail::enable_notification(&mut self.queue, &self.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    log::warn!(
                        "disk {}: queue stopped until the driver resets the device: {e}",
                        self.name
                    );
                    self.broken = true;
                    break;
                }
            }
        }
        self.notifier.needs_notification(&self.queue, &self.mem)
    }
}
