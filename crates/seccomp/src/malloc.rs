//! glibc's malloc opens files of its own, lazily, the first time it needs
//! what they say:
//!
//! - `/proc/sys/vm/overcommit_memory`, the first time it shrinks the heap
//!   of a thread's arena (a thread frees a big block at the top of it, or
//!   of another thread's arena);
//! - `/sys/devices/system/cpu/online`, for its arena limit, the first
//!   time a new arena is wanted while eight exist (a thread's first
//!   allocation, or a retry after an allocation failed in its arena).
//!
//! Both can happen at any time, in any thread, long after the filters are
//! on, and no filter allows open(2): the first was seen ending tapir at
//! the guest's poweroff, when a NIC thread freed the receive buffer that
//! the worker had allocated on a vCPU thread. So before the first filter,
//! [`tame`] sets what those files would decide: heaps are never shrunk
//! (`M_TRIM_THRESHOLD`: freed memory stays in the arena, for the next
//! allocation; large blocks are mapped and unmapped on their own as
//! before) and at most glibc's default number of arenas (8 per CPU) is
//! made (`M_ARENA_MAX`), without asking the file.

/// glibc refused a malloc parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mallopt({param}, {value}) failed")]
pub struct MalloptError {
    param: libc::c_int,
    value: libc::c_int,
}

/// Sets the two malloc parameters (see the module documentation). Call
/// it before any thread installs a filter.
pub(crate) fn tame() -> Result<(), MalloptError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(cpus.saturating_mul(8)).unwrap_or(libc::c_int::MAX);
    for (param, value) in [
        (libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
        (libc::M_ARENA_MAX, arenas),
    ] {
        // SAFETY: mallopt only sets a malloc parameter; no pointers.
        if unsafe { libc::mallopt(param, value) } != 1 {
            return Err(MalloptError { param, value });
        }
    }
    Ok(())
}
