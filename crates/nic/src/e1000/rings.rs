//! The ring logic: the transmit and receive descriptor rings in guest
//! memory, driven by the model's [`NicRings`] calls (the NIC worker makes
//! them, one locked section each).
//!
//! A packet's frames go to the backend between `pop_tx` and
//! `complete_tx`, outside the lock: a device reset or a rewrite of the
//! transmit ring's registers meanwhile is detected by generation
//! counters, and the packet's results are then discarded instead of being
//! written into the new ring.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapir_net_backend::hdr::GSO_NONE;
use tapir_net_backend::{NetHdr, Offloads};
use vm_memory::GuestMemoryMmap;

use super::filter::Cast;
use super::regs::*;
use super::ring::Ring;
use super::rx::{self, Verdict, WriteBack, Written, MIN_FRAME};
use super::state::E1000State;
use super::tx::{self, Gather, Offload, Packet};
use super::tx_offload::{self, Tso, TxContext};
use crate::shell::{NicRings, PciNicModel};
use crate::vlan;
use crate::worker::{NicStats, RxPush};

/// Packets one `pop_tx` may drop or loop back before yielding to the
/// worker's other events (it rings its doorbell again to come back).
const TX_BUDGET: usize = 64;

/// Transmit statistics of one packet, published when it completes.
#[derive(Debug, Default)]
struct TxCount {
    packets: u32,
    octets: u64,
    broadcast: u32,
    multicast: u32,
    buckets: [u32; 6],
}

impl TxCount {
    /// Counts `frame` (its GSO segments when `hdr` asks for segmentation).
    fn add(&mut self, frame: &[u8], hdr: &NetHdr) {
        let (segs, seg_len) = if hdr.gso_type & 0x7F != GSO_NONE && hdr.gso_size > 0 {
            let h = usize::from(hdr.hdr_len);
            let n = frame
                .len()
                .saturating_sub(h)
                .div_ceil(usize::from(hdr.gso_size))
                .max(1);
            (n, h + usize::from(hdr.gso_size))
        } else {
            (1, frame.len())
        };
        self.packets += segs as u32;
        self.octets += (frame.len() + (segs - 1) * usize::from(hdr.hdr_len) + 4 * segs) as u64;
        if frame.len() >= 6 {
            match Cast::of(&frame[..6]) {
                Cast::Broadcast => self.broadcast += segs as u32,
                Cast::Multicast => self.multicast += segs as u32,
                Cast::Unicast => {}
            }
        }
        if let Some(b) = rx::size_bucket(0, seg_len.min(frame.len()) + 4) {
            self.buckets[b as usize / 4] += segs as u32;
        }
    }
}

/// The packet being transmitted: its descriptors complete when its last
/// frame has been handed to the backend.
#[derive(Debug)]
struct Flight {
    gen: u64,
    ring_gen: u64,
    ring: Ring,
    end: u32,
    report: Vec<(u32, u8)>,
    /// Software segmentation in progress (segments are cut from `pkt`).
    tso: Option<Tso>,
    /// VLAN tag to insert into each frame: (TPID, TCI).
    tag: Option<(u16, u16)>,
    count: TxCount,
    tso_context: bool,
    tso_failed: bool,
}

/// Ring registers and modes read at the start of a transmit step.
#[derive(Debug, Clone, Copy)]
struct TxSnap {
    ring: Option<Ring>,
    ring_gen: u64,
    vme: bool,
    vet: u16,
    psp: bool,
    loopback: bool,
}

enum Step {
    Frame,
    Idle,
    Consumed,
}

/// The e1000 model: its register file and its ring logic.
#[derive(Debug)]
pub struct E1000Model {
    /// The register file (everything behind BAR 0 but the data path).
    pub state: E1000State,
    rings: Rings,
}

impl E1000Model {
    /// A model with `state`, DMA into `mem`, counting in `stats`, sending
    /// to a backend that carries `offloads`.
    pub fn new(
        state: E1000State,
        mem: GuestMemoryMmap,
        stats: Arc<NicStats>,
        offloads: Offloads,
    ) -> Self {
        let rings = Rings::new(mem, stats, offloads, state.generation);
        Self { state, rings }
    }
}

crate::shell::nic_model_of_state_and_rings!(E1000Model);

impl PciNicModel for E1000Model {
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        self.state.read_bar(index, offset, data);
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.state.write_bar(index, offset, data);
    }
    fn set_carrier(&mut self, up: bool) {
        self.state.set_carrier(up);
    }
}

/// The e1000's rings: what the worker's calls do to guest memory.
#[derive(Debug)]
struct Rings {
    mem: GuestMemoryMmap,
    stats: Arc<NicStats>,
    offloads: Offloads,
    gen: u64,
    ctx: TxContext,
    pkt: Vec<u8>,
    flight: Option<Flight>,
    rx_needed: u32,
    rx_starved: bool,
    plans: Vec<(usize, rx::Plan)>,
    wb: Vec<WriteBack>,
    irq_pending: bool,
    /// The transmit budget ran out with work left: ring the doorbell again.
    tx_again: bool,
}

impl Rings {
    fn new(mem: GuestMemoryMmap, stats: Arc<NicStats>, offloads: Offloads, gen: u64) -> Self {
        Self {
            mem,
            stats,
            offloads,
            gen,
            ctx: TxContext::default(),
            pkt: Vec::with_capacity(tx::MAX_PACKET_BYTES),
            flight: None,
            rx_needed: 1,
            rx_starved: false,
            plans: Vec::new(),
            wb: Vec::new(),
            irq_pending: false,
            tx_again: false,
        }
    }

    // ---- transmit -------------------------------------------------------------

    fn tx_snapshot(&mut self, s: &E1000State) -> Option<TxSnap> {
        sync_generation(&mut self.gen, &mut self.ctx, &mut self.flight, s);
        if self
            .flight
            .as_ref()
            .is_some_and(|f| f.ring_gen != s.tx_ring_gen)
        {
            self.flight = None;
        }
        let regs = s.regs();
        if regs.get(TCTL) & TCTL_EN == 0 || !s.bus_master() {
            return None;
        }
        Some(TxSnap {
            ring: Ring::from_regs(regs, TDBAL),
            ring_gen: s.tx_ring_gen,
            vme: regs.get(CTRL) & CTRL_VME != 0,
            vet: regs.get(VET) as u16,
            psp: regs.get(TCTL) & TCTL_PSP != 0,
            loopback: s.loopback(),
        })
    }

    fn tx_step(&mut self, s: &mut E1000State, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> Step {
        let Some(snap) = self.tx_snapshot(s) else {
            return Step::Idle;
        };
        if let Some(f) = self.flight.as_mut() {
            if let Some(t) = f.tso.as_mut().filter(|t| !t.done()) {
                t.segment(&self.pkt, buf);
                *hdr = NetHdr::default();
                finish_frame(buf, hdr, f.tag, snap.psp);
                f.count.add(buf, hdr);
                return Step::Frame;
            }
            self.finish_packet(s);
        }
        let Some(ring) = snap.ring else {
            return Step::Idle;
        };
        match tx::gather(&self.mem, &ring, &mut self.ctx, &mut self.pkt) {
            Gather::Wait => Step::Idle,
            Gather::Drop { end, report, .. } => {
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                self.flight = Some(self.new_flight(ring, snap.ring_gen, end, report));
                self.finish_packet(s);
                Step::Consumed
            }
            Gather::Packet(p) => self.build(s, p, ring, snap, hdr, buf),
        }
    }

    fn new_flight(&self, ring: Ring, ring_gen: u64, end: u32, report: Vec<(u32, u8)>) -> Flight {
        Flight {
            gen: self.gen,
            ring_gen,
            ring,
            end,
            report,
            tso: None,
            tag: None,
            count: TxCount::default(),
            tso_context: false,
            tso_failed: false,
        }
    }

    /// Applies the packet's offloads and produces its first frame (all of
    /// them in loopback mode).
    fn build(
        &mut self,
        s: &mut E1000State,
        p: Packet,
        ring: Ring,
        snap: TxSnap,
        hdr: &mut NetHdr,
        buf: &mut Vec<u8>,
    ) -> Step {
        let mut f = self.new_flight(ring, snap.ring_gen, p.end, p.report);
        f.tag = (p.vle && snap.vme).then_some((snap.vet, p.special));
        // Offloads toward the backend only: looped-back frames must be whole.
        let offloads = if snap.loopback {
            Offloads::default()
        } else {
            self.offloads
        };
        let mut h = NetHdr::default();
        let done = match p.offload {
            Offload::Legacy { ic: false, .. } => Ok(()),
            Offload::Legacy { css, cso, .. } => {
                tx_offload::insert_csum(&mut self.pkt, "legacy", (css, 0, cso), 0, false)
            }
            Offload::Data { popts, tse: false } => {
                match tx_offload::partial_csum(&mut self.pkt, &self.ctx, popts, offloads) {
                    Some(x) => {
                        h = x;
                        Ok(())
                    }
                    None => tx_offload::insert_checksums(&mut self.pkt, &self.ctx, popts),
                }
            }
            Offload::Data { popts, tse: true } => {
                f.tso_context = true;
                match tx_offload::gso(&mut self.pkt, &self.ctx, popts, offloads) {
                    Some(x) => {
                        h = x;
                        Ok(())
                    }
                    None => Tso::new(self.pkt.len(), &self.ctx, popts).map(|t| f.tso = Some(t)),
                }
            }
        };
        if done.is_err() {
            self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
            f.tso_failed = f.tso_context;
            self.flight = Some(f);
            self.finish_packet(s);
            return Step::Consumed;
        }
        if snap.loopback {
            match f.tso.as_mut() {
                Some(t) => {
                    while !t.done() {
                        t.segment(&self.pkt, buf);
                        let mut h = NetHdr::default();
                        finish_frame(buf, &mut h, f.tag, snap.psp);
                        f.count.add(buf, &h);
                        self.loop_back(s, buf);
                    }
                }
                None => {
                    std::mem::swap(buf, &mut self.pkt);
                    finish_frame(buf, &mut h, f.tag, snap.psp);
                    f.count.add(buf, &h);
                    self.loop_back(s, buf);
                }
            }
            self.flight = Some(f);
            self.finish_packet(s);
            return Step::Consumed;
        }
        match f.tso.as_mut() {
            Some(t) => t.segment(&self.pkt, buf),
            None => std::mem::swap(buf, &mut self.pkt),
        }
        finish_frame(buf, &mut h, f.tag, snap.psp);
        f.count.add(buf, &h);
        *hdr = h;
        self.flight = Some(f);
        Step::Frame
    }

    /// Receives a transmitted frame (MAC or PHY loopback). A frame the
    /// receive ring cannot take is dropped: transmit never waits on receive.
    fn loop_back(&mut self, s: &mut E1000State, frame: &[u8]) {
        let mut small = [0u8; MIN_FRAME];
        let frame = pad(frame, &mut small);
        if self.deliver(s, &[frame], false, false) == RxPush::NoBuffers {
            s.count(MPC, 1);
        }
    }

    /// Completes the packet in flight: status write-back, head, statistics
    /// and interrupt causes.
    fn finish_packet(&mut self, s: &mut E1000State) {
        let Some(f) = self.flight.take() else {
            return;
        };
        if s.generation != f.gen || s.tx_ring_gen != f.ring_gen {
            return;
        }
        tx::report_done(&self.mem, &f.ring, &f.report);
        s.set_reg(TDH, f.end);
        let c = &f.count;
        s.count(GPTC, c.packets);
        s.count(TPT, c.packets);
        s.count64(GOTCL, c.octets);
        s.count64(TOTL, c.octets);
        s.count(BPTC, c.broadcast);
        s.count(MPTC, c.multicast);
        for (i, &n) in c.buckets.iter().enumerate() {
            s.count(PTC64 + 4 * i as u32, n);
        }
        if f.tso_context {
            s.count(if f.tso_failed { TSCTFC } else { TSCTC }, 1);
        }
        let mut causes = 0;
        if !f.report.is_empty() {
            causes |= INT_TXDW;
        }
        if s.regs().get(TDT) == f.end {
            causes |= INT_TXQE;
        }
        s.raise(causes);
        self.irq_pending = true;
    }

    // ---- receive ----------------------------------------------------------------

    /// Delivers `frames` (each at least [`MIN_FRAME`] bytes) as one unit:
    /// all go in, or none when the ring lacks descriptors. `l4_valid`:
    /// their TCP/UDP checksums are known to be right (receive checksum
    /// offload then only checks the IP headers).
    fn deliver(
        &mut self,
        s: &mut E1000State,
        frames: &[&[u8]],
        from_backend: bool,
        l4_valid: bool,
    ) -> RxPush {
        self.plans.clear();
        sync_generation(&mut self.gen, &mut self.ctx, &mut self.flight, s);
        let regs = s.regs();
        if regs.get(RCTL) & RCTL_EN == 0 || !s.bus_master() || (from_backend && s.loopback()) {
            return RxPush::Dropped;
        }
        let mut oversize = 0;
        for (i, f) in frames.iter().enumerate() {
            match rx::plan(regs, f, l4_valid) {
                Verdict::Accept(p) => self.plans.push((i, p)),
                Verdict::Filtered => {}
                Verdict::Oversize => oversize += 1,
            }
        }
        let needed: u32 = self.plans.iter().map(|(_, p)| p.descs).sum();
        let ring = Ring::from_regs(regs, RDBAL);
        if ring.is_some_and(|r| needed > r.count - 1) {
            // More descriptors than the ring can ever offer: never wait.
            frames.iter().for_each(|f| rx::count_total(s, f.len()));
            s.count(ROC, 1);
            return RxPush::Dropped;
        }
        if needed > 0 {
            let free = ring.map_or(0, |r| r.pending_from(r.head));
            if needed > free {
                self.rx_needed = needed;
                if !self.rx_starved {
                    self.rx_starved = true;
                    s.count(RNBC, 1);
                }
                return RxPush::NoBuffers;
            }
        }
        self.rx_starved = false;
        frames.iter().for_each(|f| rx::count_total(s, f.len()));
        s.count(ROC, oversize);
        let ring = match ring {
            Some(r) if needed > 0 => r,
            _ => return RxPush::Dropped,
        };
        self.wb.clear();
        let mut head = ring.head;
        let mut delivered = 0;
        let mut fault = false;
        for &(i, ref p) in &self.plans {
            match rx::write_frame(&self.mem, &ring, head, frames[i], p, &mut self.wb) {
                Written::Done(n) => {
                    head = n;
                    delivered += 1;
                }
                Written::BufferFault(n) => {
                    head = n;
                    fault = true;
                    break;
                }
                Written::RingFault => {
                    fault = true;
                    break;
                }
            }
        }
        rx::write_back(&self.mem, &ring, &self.wb);
        s.set_reg(RDH, head);
        for (_, p) in &self.plans[..delivered] {
            rx::count_good(s, p);
        }
        if fault {
            s.count(MPC, 1);
        }
        if head != ring.head {
            let now = Ring {
                head,
                tail: s.regs().get(RDT) % ring.count,
                ..ring
            };
            let before = ring.pending_from(ring.head);
            let after = now.pending_from(head);
            let mut causes = INT_RXT0;
            if rx::below_threshold(s.regs().get(RCTL), ring.count, before, after) {
                causes |= INT_RXDMT0;
            }
            s.raise(causes);
            self.irq_pending = true;
        }
        if fault || delivered < frames.len() {
            RxPush::Dropped
        } else {
            RxPush::Delivered
        }
    }
}

/// Forgets transmit state that a device reset invalidated.
fn sync_generation(
    gen: &mut u64,
    ctx: &mut TxContext,
    flight: &mut Option<Flight>,
    s: &E1000State,
) {
    if s.generation != *gen {
        *gen = s.generation;
        *ctx = TxContext::default();
        *flight = None;
    }
}

/// `frame`, or a zero-padded copy in `small` when shorter than a minimal
/// Ethernet frame.
fn pad<'a>(frame: &'a [u8], small: &'a mut [u8; MIN_FRAME]) -> &'a [u8] {
    if frame.len() >= MIN_FRAME {
        return frame;
    }
    small[..frame.len()].copy_from_slice(frame);
    small
}

/// The MAC's last steps on a frame: VLAN tag insertion (VLE with
/// CTRL.VME) and short-packet padding (TCTL.PSP, whole frames only).
fn finish_frame(buf: &mut Vec<u8>, hdr: &mut NetHdr, tag: Option<(u16, u16)>, psp: bool) {
    if let Some((tpid, tci)) = tag {
        vlan::insert(buf, tpid, tci, hdr);
    }
    if psp && hdr.is_plain() && buf.len() < MIN_FRAME {
        buf.resize(MIN_FRAME, 0);
    }
}

impl NicRings for E1000Model {
    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        let r = &mut self.rings;
        for _ in 0..TX_BUDGET {
            buf.clear();
            match r.tx_step(&mut self.state, hdr, buf) {
                Step::Frame => return true,
                Step::Idle => return false,
                Step::Consumed => {}
            }
        }
        // More work: come back after the worker's other events.
        r.tx_again = true;
        false
    }

    fn complete_tx(&mut self) {
        let r = &mut self.rings;
        let more = r
            .flight
            .as_ref()
            .and_then(|f| f.tso.as_ref())
            .is_some_and(|t| !t.done());
        if !more {
            r.finish_packet(&mut self.state);
        }
    }

    fn push_rx(&mut self, frames: &[&[u8]], l4_valid: bool) -> (RxPush, usize) {
        let (r, s) = (&mut self.rings, &mut self.state);
        let padded: Vec<Cow<'_, [u8]>> = frames
            .iter()
            .map(|f| {
                if f.len() >= MIN_FRAME {
                    Cow::Borrowed(*f)
                } else {
                    let mut short = f.to_vec();
                    short.resize(MIN_FRAME, 0);
                    Cow::Owned(short)
                }
            })
            .collect();
        let refs: Vec<&[u8]> = padded.iter().map(|f| f.as_ref()).collect();
        // The segments of one frame go in together, or none of them.
        match r.deliver(s, &refs, true, l4_valid) {
            RxPush::NoBuffers => (RxPush::NoBuffers, 0),
            done => (done, frames.len()),
        }
    }

    fn rx_wait_buffers(&mut self) -> bool {
        let s = &self.state;
        let regs = s.regs();
        if regs.get(RCTL) & RCTL_EN == 0 || !s.bus_master() || s.loopback() {
            // Frames are dropped in these modes: no reason to wait.
            return true;
        }
        Ring::from_regs(regs, RDBAL).is_some_and(|r| r.pending_from(r.head) >= self.rings.rx_needed)
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.rings.irq_pending) {
            self.state.update_irq();
        }
    }
}
