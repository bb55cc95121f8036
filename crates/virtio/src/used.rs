//! Completing descriptor chains (the used ring) and deciding when the
//! driver wants an interrupt, for devices on split virtqueues.
//!
//! virtio-queue's `add_used` publishes the used index after every element.
//! A receive frame merged over several chains (VIRTIO_NET_F_MRG_RXBUF) must
//! appear to the driver all at once: Linux polls the used ring while the
//! device writes it, and a frame whose first buffer is visible before the
//! others is counted as an error and dropped ("N buffers out of M
//! missing"), with the late buffers then misread as frames of their own.
//! [`add_used`] writes any number of elements and publishes the index once.
//!
//! Because the index is not moved by virtio-queue, the interrupt decision
//! cannot use its `needs_notification` either (which counts its own
//! `add_used` calls): [`Notifier`] remembers the used index of its previous
//! decision and applies the driver's `used_event` (VIRTIO_F_EVENT_IDX) or
//! its VRING_AVAIL_F_NO_INTERRUPT flag.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Error, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// `flags` of the available ring: the driver wants no interrupts.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Completes the chains `elems` (head index, bytes written) in order: their
/// used elements are written first, then the used index is published once
/// (store-release), so the driver sees all of them or none. A head index
/// beyond the queue rejects the whole batch before anything is written.
pub fn add_used<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    elems: &[(u16, u32)],
) -> Result<(), Error> {
    let size = queue.size();
    if size == 0 || elems.iter().any(|&(head, _)| head >= size) {
        return Err(Error::InvalidDescriptorIndex);
    }
    let used = GuestAddress(queue.used_ring());
    let mut next = Wrapping(queue.next_used());
    for &(head, len) in elems {
        // virtq_used: flags (2), idx (2), then ring[size] of (id: le32, len: le32).
        let offset = 4 + 8 * u64::from(next.0 % size);
        let addr = used.checked_add(offset).ok_or(Error::AddressOverflow)?;
        let elem = u64::from(head) | (u64::from(len) << 32);
        mem.write_obj(elem.to_le(), addr)
            .map_err(Error::GuestMemory)?;
        next += Wrapping(1);
    }
    let idx_addr = used.checked_add(2).ok_or(Error::AddressOverflow)?;
    mem.store(next.0.to_le(), idx_addr, Ordering::Release)
        .map_err(Error::GuestMemory)?;
    queue.set_next_used(next.0);
    Ok(())
}

/// Asks the driver to notify once it makes available more than `seen`
/// entries in total (avail index `seen`): with EVENT_IDX by writing
/// `avail_event`, otherwise by clearing VRING_USED_F_NO_NOTIFY. Returns
/// whether the driver already did (the caller then retries at once instead
/// of waiting for a notification that may never come).
///
/// Unlike virtio-queue's `enable_notification` (which compares with the
/// next entry to take), this lets a device that looked at entries and put
/// them back, because they were not enough, wait for *new* ones.
pub fn enable_notification_after<M: GuestMemory>(queue: &mut Queue, mem: &M, seen: u16) -> bool {
    let used = GuestAddress(queue.used_ring());
    let stored = if queue.event_idx_enabled() {
        // virtq_used: flags, idx, ring[size] (8 bytes each), avail_event.
        used.checked_add(4 + 8 * u64::from(queue.size()))
            .is_some_and(|a| mem.store(seen.to_le(), a, Ordering::Relaxed).is_ok())
    } else {
        mem.store(0u16, used, Ordering::Relaxed).is_ok()
    };
    if !stored {
        return true;
    }
    // The request is visible before the available index is read again
    // (pairs with the driver's barrier between publishing and checking).
    fence(Ordering::SeqCst);
    queue
        .avail_idx(mem, Ordering::Acquire)
        .map_or(true, |idx| idx.0 != seen)
}

/// Interrupt suppression for one queue whose used ring is written with
/// [`add_used`].
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// The used index at the previous decision.
    last: Wrapping<u16>,
}

impl Notifier {
    /// A notifier for `queue` as it is now (nothing used since).
    pub fn new(queue: &Queue) -> Self {
        Self {
            last: Wrapping(queue.next_used()),
        }
    }

    /// Whether the driver must be interrupted for what was used since the
    /// previous call. With EVENT_IDX: when the used index moved past
    /// `used_event` (the Linux `vring_need_event` rule); otherwise unless
    /// the driver set VRING_AVAIL_F_NO_INTERRUPT. Nothing new: false. A
    /// failed read of the ring errs on the side of interrupting.
    pub fn needs_notification<M: GuestMemory>(&mut self, queue: &Queue, mem: &M) -> bool {
        let new = Wrapping(queue.next_used());
        let old = std::mem::replace(&mut self.last, new);
        if new == old {
            return false;
        }
        // The used index is published before the driver's suppression
        // state is read (pairs with the driver's barrier between writing
        // used_event and re-reading the used index).
        fence(Ordering::SeqCst);
        let avail = GuestAddress(queue.avail_ring());
        if queue.event_idx_enabled() {
            // virtq_avail: flags (2), idx (2), ring[size] (2 each), used_event.
            let offset = 4 + 2 * u64::from(queue.size());
            let Some(addr) = avail.checked_add(offset) else {
                return true;
            };
            let Ok(event) = mem.load::<u16>(addr, Ordering::Acquire) else {
                return true;
            };
            let event = Wrapping(u16::from_le(event));
            (new - event - Wrapping(1)).0 < (new - old).0
        } else {
            match mem.load::<u16>(avail, Ordering::Acquire) {
                Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0,
                Err(_) => true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const QSIZE: u16 = 8;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    fn setup(event_idx: bool) -> (GuestMemoryMmap, Queue) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        assert!(q.is_valid(&mem));
        (mem, q)
    }

    fn used_idx(mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn used_elem(mem: &GuestMemoryMmap, slot: u16) -> (u32, u32) {
        let a = USED + 4 + 8 * u64::from(slot % QSIZE);
        (
            mem.read_obj(GuestAddress(a)).unwrap(),
            mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    fn set_used_event(mem: &GuestMemoryMmap, v: u16) {
        mem.write_obj(v, GuestAddress(AVAIL + 4 + 2 * u64::from(QSIZE)))
            .unwrap();
    }

    #[test]
    fn a_batch_is_published_with_one_index_update_and_wraps() {
        let (mem, mut q) = setup(true);
        q.set_next_used(6);
        add_used(&mut q, &mem, &[(3, 100), (5, 200), (1, 0)]).unwrap();
        assert_eq!(q.next_used(), 9);
        assert_eq!(used_idx(&mem), 9);
        assert_eq!(used_elem(&mem, 6), (3, 100));
        assert_eq!(used_elem(&mem, 7), (5, 200));
        assert_eq!(used_elem(&mem, 8), (1, 0), "slot 0 after the wrap");
        // An empty batch publishes the same index again.
        add_used(&mut q, &mem, &[]).unwrap();
        assert_eq!(used_idx(&mem), 9);
    }

    #[test]
    fn a_bad_head_rejects_the_whole_batch() {
        let (mem, mut q) = setup(true);
        assert!(add_used(&mut q, &mem, &[(2, 10), (QSIZE, 10)]).is_err());
        assert_eq!(q.next_used(), 0);
        assert_eq!(used_idx(&mem), 0);
        assert_eq!(used_elem(&mem, 0), (0, 0), "nothing written");
    }

    #[test]
    fn event_idx_interrupts_once_used_event_is_passed() {
        let (mem, mut q) = setup(true);
        let mut n = Notifier::new(&q);
        assert!(!n.needs_notification(&q, &mem), "nothing used yet");
        // The driver wants an interrupt once entry 2 is used (idx 3).
        set_used_event(&mem, 2);
        add_used(&mut q, &mem, &[(0, 1), (1, 1)]).unwrap();
        assert!(!n.needs_notification(&q, &mem), "idx 2 has not passed 2");
        add_used(&mut q, &mem, &[(2, 1), (3, 1)]).unwrap();
        assert!(n.needs_notification(&q, &mem), "idx 4 passed used_event 2");
        // used_event not moved by the driver (it is busy polling): no more.
        add_used(&mut q, &mem, &[(4, 1)]).unwrap();
        assert!(!n.needs_notification(&q, &mem));
        // The driver re-arms at its current position: the next one counts.
        set_used_event(&mem, 5);
        add_used(&mut q, &mem, &[(5, 1)]).unwrap();
        assert!(n.needs_notification(&q, &mem));
        assert!(!n.needs_notification(&q, &mem), "nothing new since");
    }

    #[test]
    fn event_idx_handles_index_wraparound() {
        let (mem, mut q) = setup(true);
        q.set_next_used(u16::MAX - 1);
        let mut n = Notifier::new(&q);
        set_used_event(&mem, u16::MAX);
        add_used(&mut q, &mem, &[(0, 1), (1, 1), (2, 1)]).unwrap();
        assert_eq!(q.next_used(), 1);
        assert!(n.needs_notification(&q, &mem));
    }

    #[test]
    fn notification_is_requested_beyond_the_entries_seen() {
        let (mem, mut q) = setup(true);
        let avail_event = || -> u16 {
            mem.read_obj(GuestAddress(USED + 4 + 8 * u64::from(QSIZE)))
                .unwrap()
        };
        // The driver made 3 entries available; the device saw all three.
        mem.write_obj(3u16, GuestAddress(AVAIL + 2)).unwrap();
        assert!(!enable_notification_after(&mut q, &mem, 3));
        assert_eq!(avail_event(), 3, "kick when entry 3 is published");
        // It added one more meanwhile: retry at once.
        mem.write_obj(4u16, GuestAddress(AVAIL + 2)).unwrap();
        assert!(enable_notification_after(&mut q, &mem, 3));
        // Without EVENT_IDX: NO_NOTIFY is cleared.
        let (mem, mut q) = setup(false);
        mem.write_obj(1u16, GuestAddress(USED)).unwrap();
        assert!(!enable_notification_after(&mut q, &mem, 0));
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED)).unwrap(), 0);
    }

    #[test]
    fn without_event_idx_the_no_interrupt_flag_is_honoured() {
        let (mem, mut q) = setup(false);
        let mut n = Notifier::new(&q);
        add_used(&mut q, &mem, &[(0, 1)]).unwrap();
        assert!(n.needs_notification(&q, &mem));
        mem.write_obj(VRING_AVAIL_F_NO_INTERRUPT, GuestAddress(AVAIL))
            .unwrap();
        add_used(&mut q, &mem, &[(1, 1)]).unwrap();
        assert!(!n.needs_notification(&q, &mem));
        mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
        add_used(&mut q, &mem, &[(2, 1)]).unwrap();
        assert!(n.needs_notification(&q, &mem));
    }
}
