//! The RTL8139 model: its register file ([`State`]) and its ring logic,
//! which walks the guest's transmit slots, descriptor rings and receive
//! ring when the NIC worker asks ([`NicRings`], one locked section per
//! call; the backend is called between them, outside the lock).
//!
//! # A small frame sent from the receive poll
//!
//! A small frame (at most `SYNC_TX_MAX` bytes: a TCP ACK, typically) handed
//! over while the driver has its receive interrupts masked, i.e. from inside
//! its receive poll, is taken from guest memory at once, on the vCPU that
//! handed it over, into the model's transmit FIFO ([`TX_FIFO`] frames), and
//! completed there: TOK is on the line before the register write returns.
//! The driver then handles the completion inside that poll, as with a chip
//! that sends a short frame in microseconds (with the completion after the
//! poll, every ACK started a poll of its own: 2.3 times the interrupts per
//! MB received, measured). The worker sends the FIFO's frames, in order,
//! before it looks at the rings again. Nothing waits for the worker; when
//! the FIFO is full, the frame takes the ordinary way.
//!
//! # When the guest has no receive room
//!
//! Hardware drops a frame that finds the ring full (C mode: RXOVW and the
//! missed-packet counter) or no descriptor owned by the chip (C+ mode:
//! RDU, then FIFO overflow and MPC). A guest usually makes room within
//! microseconds, though, and dropping every frame of a burst that arrives
//! while its driver is still busy costs TCP dearly. So the model first
//! pushes back on the backend, bounded in time:
//!
//! 1. No room: `push_rx` answers `NoBuffers`; the worker keeps the frame
//!    and stops reading the backend. In C+ mode RDU is raised (once per
//!    stall), which makes 8139cp poll and refill its ring.
//! 2. The next register write of any kind (the driver writing CAPR after
//!    reading a packet, acknowledging ISR, re-enabling IMR after its poll,
//!    resetting, ...) kicks the worker, which retries.
//! 3. If there is still no room [`RX_STALL_GRACE`] (20 ms by default,
//!    `Rtl8139::set_rx_stall_grace`) after the stall began (a driver that
//!    refills silently, or has stopped), the model turns
//!    hardware-faithful: every frame without room is dropped with the
//!    overflow bits and counted in MPC, so the backend drains and a stuck
//!    guest holds no stale frames, until a frame fits again.
//!
//! Frames looped back in TCR loopback mode never wait: without room they
//! are dropped and counted at once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shell::{NicRings, PciNicModel};
use tapir_net_backend::{NetHdr, Offloads};

use super::cplus::{self, CpTx, Room, TxChain};
use super::filter::{accept, fcs, Match};
use super::normal::{self, RxResult, SlotTx};
use super::offload::{
    large_send, large_send_gso, rx_checksum_status, strip_vlan, tx_checksum, tx_checksum_partial,
};
use super::regs::*;
use super::state::State;
use crate::vlan::{self, TPID_8021Q};
use crate::worker::{NicStats, RxPush};

/// How long received frames are held back (the backend paused) while the
/// guest has no receive room, before frames are dropped as hardware does
/// (the default; see `Rtl8139::set_rx_stall_grace`).
pub const RX_STALL_GRACE: Duration = Duration::from_millis(20);
/// Transmit work items (frames looped back or refused) per `pop_tx` call
/// before the worker is made to come back later.
const TX_BUDGET: usize = 256;
/// Frames the transmit FIFO holds (sent at once from the receive poll,
/// completed, waiting for the worker).
pub const TX_FIFO: usize = 8;
/// Shortest frame on the wire (without CRC).
const ETH_ZLEN: usize = 60;

/// Offers one received frame to the chip (any receive mode). `l4_valid`:
/// the sender vouches for the L4 checksum. Returns the outcome and the
/// bytes the frame takes (CRC included), for the room check on a retry.
pub fn receive(
    st: &mut State,
    frame: &[u8],
    l4_valid: bool,
    out: &mut Vec<u8>,
) -> (RxResult, usize) {
    if !st.rx_enabled() || frame.len() < 14 {
        return (RxResult::Dropped, 0);
    }
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&frame[..6]);
    let Some(m) = accept(&dst, st.rcr, &st.idr, &st.mar) else {
        return (RxResult::Dropped, 0);
    };
    out.clear();
    out.extend_from_slice(frame);
    let cplus = st.cplus_rx();
    let (mut status, mut opts2) = (0u32, 0u32);
    if cplus {
        if st.cpcr & CPCR_RX_VLAN != 0 {
            if let Some(tci) = strip_vlan(out) {
                opts2 = RXD_TAVA | u32::from(tci.swap_bytes());
            }
        }
        if st.cpcr & CPCR_RX_CHKSUM != 0 {
            status = rx_checksum_status(out, l4_valid);
        }
    }
    let max = if cplus {
        cplus::MAX_RX_FRAME
    } else {
        normal::MAX_RX_FRAME
    };
    if out.len() > max {
        st.tally.rx_err += 1;
        return (RxResult::Dropped, 0);
    }
    if out.len() < ETH_ZLEN {
        out.resize(ETH_ZLEN, 0);
    }
    let crc = fcs(out);
    out.extend_from_slice(&crc);
    let result = if cplus {
        status |= match m {
            Match::Physical => RXD_PAM,
            Match::Broadcast => RXD_BAR,
            Match::Multicast => RXD_MAR,
            Match::Promiscuous => 0,
        };
        st.cp_rx(out, status, opts2)
    } else {
        let status = match m {
            Match::Physical => RXH_PAM,
            Match::Broadcast => RXH_BAR,
            Match::Multicast => RXH_MAR,
            Match::Promiscuous => 0,
        };
        st.normal_rx(out, status)
    };
    if result == RxResult::Delivered {
        let t = &mut st.tally;
        t.rx_ok += 1;
        match m {
            Match::Physical => t.rx_ok_phys += 1,
            Match::Broadcast => t.rx_ok_bcast += 1,
            Match::Multicast => t.rx_ok_mcast = t.rx_ok_mcast.wrapping_add(1),
            Match::Promiscuous => {}
        }
    }
    (result, out.len())
}

/// A transmitted frame whose completion is still to be reported.
enum Inflight {
    /// C mode: the slot and the reset generation it was taken in.
    Slot { slot: usize, gen: u64 },
    /// C+ mode: the chain and how many frames (segments) are still out.
    Chain { chain: TxChain, left: usize },
}

/// What `take_frame` did.
enum Taken {
    /// Nothing to send.
    None,
    /// A frame for the wire is in the buffer; it completes as said.
    Wire(Inflight),
    /// Work was done (a frame refused or looped back): look again.
    Again,
}

/// The RTL8139 model: its register file and its ring logic.
pub struct Rtl8139Model {
    /// The register file.
    pub state: State,
    rings: Rings,
}

impl Rtl8139Model {
    /// A model with `state`, counting in `stats`, sending to a backend
    /// that carries `offloads` (partial checksums, GSO frames).
    pub fn new(state: State, stats: Arc<NicStats>, offloads: Offloads) -> Self {
        Self {
            state,
            rings: Rings::new(stats, offloads),
        }
    }
}

crate::shell::nic_model_of_state_and_rings!(Rtl8139Model);

impl PciNicModel for Rtl8139Model {
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        self.state.read_bar(index, offset, data);
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.state.write_bar(index, offset, data);
        if std::mem::take(&mut self.state.tx_now) {
            self.rings.send_now(&mut self.state);
        }
    }
    fn set_carrier(&mut self, up: bool) {
        self.state.set_carrier(up);
    }
}

/// The RTL8139's rings: what the worker's calls do to guest memory.
struct Rings {
    stats: Arc<NicStats>,
    inflight: Option<Inflight>,
    /// Frames taken and completed at once, for the worker to send (see the
    /// module documentation), with their offload headers.
    fifo: VecDeque<(NetHdr, Vec<u8>)>,
    /// The transmit budget ran out with work left: ring the doorbell again.
    tx_again: bool,
    segments: VecDeque<Vec<u8>>,
    chain: TxChain,
    /// What the backend completes: partial checksums (C+ TCP checksum
    /// offload is handed on instead of computed here) and TCP segmentation
    /// (a large send goes out as one GSO frame).
    offloads: Offloads,
    /// The offload header of the frame `take_frame` produced.
    tx_hdr: NetHdr,
    rx_frame: Vec<u8>,
    rx_need: usize,
}

impl Rings {
    fn new(stats: Arc<NicStats>, offloads: Offloads) -> Self {
        Self {
            stats,
            inflight: None,
            fifo: VecDeque::new(),
            tx_again: false,
            segments: VecDeque::new(),
            chain: TxChain::default(),
            offloads,
            tx_hdr: NetHdr::default(),
            rx_frame: Vec::with_capacity(2048),
            rx_need: 0,
        }
    }

    fn drop_tx(&self) {
        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The next segment of a large send, unless a reset voided it.
    fn next_segment(&mut self, st: &State, buf: &mut Vec<u8>) -> bool {
        if self.segments.is_empty() {
            return false;
        }
        if !matches!(&self.inflight, Some(Inflight::Chain { chain, .. }) if chain.gen == st.gen) {
            self.segments.clear();
            self.inflight = None;
            return false;
        }
        let Some(seg) = self.segments.pop_front() else {
            return false;
        };
        buf.clear();
        buf.extend_from_slice(&seg);
        true
    }

    /// Applies a C+ frame's VLAN and offload requests: `Ok(None)` when
    /// the frame stays one (a partial checksum or a large send left to the
    /// backend sets `self.tx_hdr`, which `pop_tx` cleared),
    /// `Ok(Some(frames))` when large send turned it into segments here.
    /// `backend`: what the backend completes (nothing for frames that loop
    /// back).
    fn offload(
        &mut self,
        buf: &mut Vec<u8>,
        backend: Offloads,
    ) -> Result<Option<Vec<Vec<u8>>>, ()> {
        let (opts1, opts2) = (self.chain.opts1, self.chain.opts2);
        if opts2 & TXD_TAGC != 0 {
            vlan::insert(
                buf,
                TPID_8021Q,
                (opts2 as u16).swap_bytes(),
                &mut self.tx_hdr,
            );
        }
        let (ip, udp, tcp) = (
            opts1 & TXD_IPCS != 0,
            opts1 & TXD_UDPCS != 0,
            opts1 & TXD_TCPCS != 0,
        );
        let partial = backend.csum;
        let r = if opts1 & TXD_LGSEN != 0 {
            let mss = ((opts1 >> TXD_MSS_SHIFT) & TXD_MSS_MASK) as u16;
            match large_send_gso(buf, mss, backend) {
                // One GSO frame for the backend to cut.
                Ok(Some(hdr)) => {
                    self.tx_hdr = hdr;
                    Ok(None)
                }
                Ok(None) => large_send(buf, mss).map(Some),
                Err(e) => Err(e),
            }
        } else if partial {
            tx_checksum_partial(buf, ip, udp, tcp).map(|hdr| {
                self.tx_hdr = hdr;
                None
            })
        } else {
            tx_checksum(buf, ip, udp, tcp).map(|()| None)
        };
        r.map_err(|_| ())
    }

    fn loop_back(&mut self, st: &mut State, frame: &[u8]) {
        if receive(st, frame, false, &mut self.rx_frame).0 == RxResult::NoRoom {
            st.count_missed();
        }
    }

    /// Takes the next frame the guest handed over (any mode).
    fn take_frame(&mut self, st: &mut State, buf: &mut Vec<u8>) -> Taken {
        if !st.cplus_tx() {
            return match st.normal_pop_tx(buf) {
                SlotTx::Empty => Taken::None,
                SlotTx::Aborted => {
                    self.drop_tx();
                    Taken::Again
                }
                SlotTx::Frame(slot) => {
                    let gen = st.gen;
                    if st.loopback() {
                        self.loop_back(st, buf);
                        st.normal_complete_tx(slot, gen);
                        return Taken::Again;
                    }
                    Taken::Wire(Inflight::Slot { slot, gen })
                }
            };
        }
        match st.cp_pop_tx(buf, &mut self.chain) {
            CpTx::Empty | CpTx::Wait => Taken::None,
            CpTx::Bad(_) => {
                st.cp_complete_tx(&self.chain, false);
                self.drop_tx();
                Taken::Again
            }
            CpTx::Frame => {
                let loopback = st.loopback();
                // Looped-back frames reach our own receiver: they need
                // every checksum done here.
                let to_backend = if loopback {
                    Offloads::default()
                } else {
                    self.offloads
                };
                let Ok(segments) = self.offload(buf, to_backend) else {
                    st.cp_complete_tx(&self.chain, false);
                    self.drop_tx();
                    return Taken::Again;
                };
                if loopback {
                    match &segments {
                        Some(segs) => segs.iter().for_each(|f| self.loop_back(st, f)),
                        None => self.loop_back(st, buf),
                    }
                    st.cp_complete_tx(&self.chain, true);
                    return Taken::Again;
                }
                let mut left = 1;
                if let Some(segs) = segments {
                    let mut segs = VecDeque::from(segs);
                    left = segs.len();
                    let Some(first) = segs.pop_front() else {
                        // The segmenter always gives one segment at least.
                        st.cp_complete_tx(&self.chain, true);
                        return Taken::Again;
                    };
                    *buf = first;
                    self.segments = segs;
                }
                let chain = std::mem::take(&mut self.chain);
                Taken::Wire(Inflight::Chain { chain, left })
            }
        }
    }

    /// Reports a frame's transmission done: TOK, or the descriptor back
    /// to the driver.
    fn complete(&mut self, st: &mut State, done: Inflight) {
        match done {
            Inflight::Slot { slot, gen } => st.normal_complete_tx(slot, gen),
            Inflight::Chain { chain, .. } => {
                st.cp_complete_tx(&chain, true);
                self.chain = chain;
            }
        }
    }

    /// Transmits the next frame now, from a register write (see the module
    /// documentation): into the FIFO, completed, the line up to date.
    fn send_now(&mut self, st: &mut State) {
        // Frames leave in order: not past a large send still going out.
        if !self.segments.is_empty() || self.fifo.len() >= TX_FIFO {
            return;
        }
        let mut buf = Vec::new();
        for _ in 0..TX_BUDGET {
            self.tx_hdr = NetHdr::default();
            match self.take_frame(st, &mut buf) {
                Taken::None => break,
                Taken::Again => {}
                Taken::Wire(done) => {
                    self.fifo.push_back((self.tx_hdr, buf));
                    let segments = std::mem::take(&mut self.segments);
                    self.fifo
                        .extend(segments.into_iter().map(|f| (NetHdr::default(), f)));
                    self.complete(st, done);
                    break;
                }
            }
        }
        st.flush_irq();
    }

    /// Offers one plain frame. `l4_valid`: its TCP/UDP checksum is known
    /// to be right (not verified again).
    fn push_one(&mut self, st: &mut State, frame: &[u8], l4_valid: bool) -> RxPush {
        let (result, need) = receive(st, frame, l4_valid, &mut self.rx_frame);
        match result {
            RxResult::Delivered => {
                st.end_rx_stall();
                RxPush::Delivered
            }
            RxResult::Dropped => {
                st.end_rx_stall();
                RxPush::Dropped
            }
            RxResult::NoRoom if st.rx_overflow() => {
                st.count_missed();
                RxPush::Dropped
            }
            RxResult::NoRoom => {
                self.rx_need = need;
                RxPush::NoBuffers
            }
        }
    }
}

impl NicRings for Rtl8139Model {
    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        let (r, st) = (&mut self.rings, &mut self.state);
        *hdr = NetHdr::default();
        if let Some((h, frame)) = r.fifo.pop_front() {
            // Completed when it was taken.
            *hdr = h;
            *buf = frame;
            return true;
        }
        for _ in 0..TX_BUDGET {
            if r.next_segment(st, buf) {
                return true;
            }
            r.tx_hdr = NetHdr::default();
            match r.take_frame(st, buf) {
                Taken::None => return false,
                Taken::Wire(done) => {
                    r.inflight = Some(done);
                    *hdr = r.tx_hdr;
                    return true;
                }
                Taken::Again => {}
            }
        }
        // Bounded work per call: come back after the other events.
        r.tx_again = true;
        false
    }

    fn complete_tx(&mut self) {
        let r = &mut self.rings;
        match r.inflight.take() {
            Some(Inflight::Chain { chain, left }) if left > 1 => {
                r.inflight = Some(Inflight::Chain {
                    chain,
                    left: left - 1,
                });
            }
            Some(done) => r.complete(&mut self.state, done),
            None => {}
        }
    }

    fn push_rx(&mut self, frames: &[&[u8]], l4_valid: bool) -> (RxPush, usize) {
        let (r, st) = (&mut self.rings, &mut self.state);
        // One at a time, as the wire brings them: what does not fit now
        // is offered again.
        let mut last = RxPush::Dropped;
        for (i, f) in frames.iter().enumerate() {
            match r.push_one(st, f, l4_valid) {
                RxPush::NoBuffers => return (RxPush::NoBuffers, i),
                done => last = done,
            }
        }
        let done = if frames.len() == 1 {
            last
        } else {
            RxPush::Delivered
        };
        (done, frames.len())
    }

    fn rx_wait_buffers(&mut self) -> bool {
        let (st, need) = (&mut self.state, self.rings.rx_need);
        let room = if !st.rx_enabled() {
            true
        } else if st.cplus_rx() {
            st.cp_rx_room(need) != Room::No
        } else {
            st.normal_room(need)
        };
        if room {
            return true;
        }
        st.rx_waiting = true;
        st.begin_rx_stall(Instant::now());
        false
    }

    fn flush(&mut self) {
        // The end of a worker pass: the line follows what it raised.
        self.state.flush_irq();
    }
}
