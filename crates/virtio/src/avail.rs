//! Taking descriptor chains from the available ring without trusting the
//! driver's available index.
//!
//! virtio-queue refuses an available index that is more than the queue
//! size ahead of the device (the driver cannot have made that many entries
//! available) by returning no chain, and it logs the refusal each time.
//! Its `enable_notification`, though, reports such an index as "more
//! entries arrived", so a device loop of the usual shape, "take chains
//! until none, re-arm, go on if more arrived", never ends on it. [`pop`]
//! and [`enable_notification`] tell the three cases apart: a chain,
//! nothing, and a ring the device must stop using until the driver resets
//! it (as QEMU's `virtio_error` does).

use std::num::Wrapping;
use std::ops::Deref;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemory;

/// Why a ring cannot be used any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The available index is further ahead of the device's position than
    /// the queue has entries.
    #[error("available index {avail} is {ahead} entries ahead of the device's {next} (queue size {size})")]
    IndexAhead {
        avail: u16,
        next: u16,
        ahead: u16,
        size: u16,
    },
    /// The available ring could not be read, or the queue refused it (an
    /// index the driver changed to a bad one between two reads).
    #[error("the available ring cannot be read")]
    Unreadable,
}

/// What [`pop`] found.
pub enum Popped<M: Deref>
where
    M::Target: GuestMemory,
{
    /// The next chain (its descriptors still to be checked by the device).
    Chain(DescriptorChain<M>),
    /// Nothing is available.
    Empty,
    /// The ring is broken; stop using it until the driver resets the queue.
    Broken(RingError),
}

/// Entries the driver made available that the device has not taken.
pub fn pending<M: GuestMemory + ?Sized>(queue: &Queue, mem: &M) -> Result<u16, RingError> {
    let avail = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| RingError::Unreadable)?;
    let next = queue.next_avail();
    let ahead = (avail - Wrapping(next)).0;
    if ahead > queue.size() {
        return Err(RingError::IndexAhead {
            avail: avail.0,
            next,
            ahead,
            size: queue.size(),
        });
    }
    Ok(ahead)
}

/// Takes the next available chain, checking the available index first.
pub fn pop<M>(queue: &mut Queue, mem: M) -> Popped<M>
where
    M: Clone + Deref,
    M::Target: GuestMemory,
{
    match pending(queue, mem.deref()) {
        Err(e) => Popped::Broken(e),
        Ok(0) => Popped::Empty,
        Ok(_) => match queue.pop_descriptor_chain(mem) {
            Some(chain) => Popped::Chain(chain),
            None => Popped::Broken(RingError::Unreadable),
        },
    }
}

/// Asks the driver to notify again when it makes entries available, then
/// looks once more: `Ok(true)` when entries arrived meanwhile (take them
/// now, no notification will come for them), `Err` when the index read is
/// one the device must not follow.
pub fn enable_notification<M: GuestMemory>(queue: &mut Queue, mem: &M) -> Result<bool, RingError> {
    queue
        .enable_notification(mem)
        .map_err(|_| RingError::Unreadable)?;
    // The re-arm is visible before the index is read again.
    fence(Ordering::SeqCst);
    pending(queue, mem).map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const SIZE: u16 = 16;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    fn ring() -> (GuestMemoryMmap, Queue) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(&mem));
        (mem, q)
    }

    fn set_avail_idx(mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
    }

    /// One one-descriptor chain (head 0) made available `n` times.
    fn offer(mem: &GuestMemoryMmap, n: u16) {
        let desc = [0x8000u64.to_le(), (64u64).to_le()];
        mem.write_obj(desc, GuestAddress(DESC)).unwrap();
        for i in 0..n {
            mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(i % SIZE)))
                .unwrap();
        }
        set_avail_idx(mem, n);
    }

    #[test]
    fn chains_then_empty() {
        let (mem, mut q) = ring();
        assert!(matches!(pop(&mut q, &mem), Popped::Empty));
        offer(&mem, 2);
        assert_eq!(pending(&q, &mem), Ok(2));
        assert!(matches!(pop(&mut q, &mem), Popped::Chain(_)));
        assert!(matches!(pop(&mut q, &mem), Popped::Chain(_)));
        assert!(matches!(pop(&mut q, &mem), Popped::Empty));
        assert_eq!(enable_notification(&mut q, &mem), Ok(false));
    }

    #[test]
    fn a_full_ring_is_not_broken() {
        let (mem, mut q) = ring();
        offer(&mem, SIZE);
        for _ in 0..SIZE {
            assert!(matches!(pop(&mut q, &mem), Popped::Chain(_)));
        }
        assert!(matches!(pop(&mut q, &mem), Popped::Empty));
    }

    /// The index virtio-queue refuses: `pop` and `enable_notification`
    /// both say so, where virtio-queue's own re-arm says "more arrived".
    #[test]
    fn an_index_too_far_ahead_breaks_the_ring() {
        let (mem, mut q) = ring();
        set_avail_idx(&mem, SIZE + 1);
        assert!(q.enable_notification(&mem).unwrap(), "virtio-queue's view");
        let err = RingError::IndexAhead {
            avail: SIZE + 1,
            next: 0,
            ahead: SIZE + 1,
            size: SIZE,
        };
        assert!(matches!(pop(&mut q, &mem), Popped::Broken(e) if e == err));
        assert_eq!(enable_notification(&mut q, &mem), Err(err));
        assert_eq!(q.next_avail(), 0, "nothing was taken");
        // Behind the device (a driver moving its index back) is as far
        // ahead, modulo 2^16.
        set_avail_idx(&mem, 0xffff);
        assert!(matches!(pop(&mut q, &mem), Popped::Broken(_)));
    }
}
