//! The worker side of the RTL8139: a [`NicFrontend`] over the register
//! state shared with the vCPU-side device. It is the only code that walks
//! the guest's transmit slots, descriptor rings and receive ring; it holds
//! the state lock only while it does (never across a backend call, which
//! the worker makes after `pop_tx` returns), and does the offload work on
//! a transmitted frame outside the lock.
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
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tapir_devices::lock;

use crate::shell::{self, SharedShell};
use tapir_net_backend::hdr::{DATA_VALID, GSO_ECN, GSO_NONE, NEEDS_CSUM};
use tapir_net_backend::offload::{complete_checksum, segment};
use tapir_net_backend::NetHdr;
use vmm_sys_util::eventfd::EventFd;

use super::cplus::{self, CpTx, Room, TxChain};
use super::filter::{accept, fcs, Match};
use super::normal::{self, RxResult, SlotTx};
use super::offload::{
    large_send, rx_checksum_status, strip_vlan, tx_checksum, tx_checksum_partial,
};
use super::regs::*;
use super::state::State;
use crate::vlan::{self, TPID_8021Q};
use crate::worker::{GuestWork, NicFrontend, NicStats, RxPush};

const TOKEN_TX: u32 = 0;
const TOKEN_RX: u32 = 1;
const TOKEN_TIMER: u32 = 2;

/// How long received frames are held back (the backend paused) while the
/// guest has no receive room, before frames are dropped as hardware does
/// (the default; see `Rtl8139::set_rx_stall_grace`).
pub const RX_STALL_GRACE: Duration = Duration::from_millis(20);
/// Transmit work items (frames looped back or refused) per `pop_tx` call
/// before the worker is made to come back later.
const TX_BUDGET: usize = 256;
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

/// The transmit doorbell the worker has fully served (its ring found
/// empty, completions on the interrupt line), for a vCPU that waits.
#[derive(Default)]
pub struct TxSync {
    served: Mutex<u64>,
    cv: std::sync::Condvar,
}

impl TxSync {
    /// Waits until doorbell `n` is served, at most `limit`.
    pub fn wait_for(&self, n: u64, limit: Duration) {
        let served = lock(&self.served);
        let _ = self.cv.wait_timeout_while(served, limit, |s| *s < n);
    }

    fn served(&self, n: u64) {
        let mut s = lock(&self.served);
        if n > *s {
            *s = n;
            self.cv.notify_all();
        }
    }
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
    /// A frame for the wire is in the buffer.
    Wire,
    /// Work was done (a frame refused or looped back): look again.
    Again,
}

/// The RTL8139's guest-facing rings as the NIC worker sees them.
pub struct Rtl8139Frontend {
    state: SharedShell<State>,
    tx_evt: EventFd,
    rx_evt: EventFd,
    /// The shell's timer (TCTR reaching TimerInt, a stall's grace period).
    timer_fd: Option<RawFd>,
    stats: Arc<NicStats>,
    inflight: Option<Inflight>,
    segments: VecDeque<Vec<u8>>,
    chain: TxChain,
    /// The backend completes partial checksums (C+ TCP checksum offload
    /// is handed on instead of computed here).
    tx_csum: bool,
    tx_sync: Arc<TxSync>,
    /// The offload header of the frame `take_frame` produced.
    tx_hdr: NetHdr,
    rx_frame: Vec<u8>,
    rx_csum: Vec<u8>,
    rx_need: usize,
    /// Segments of a TSO frame from the backend still to be delivered.
    rx_segments: VecDeque<Vec<u8>>,
}

impl Rtl8139Frontend {
    /// A frontend over `state`, woken by the read ends of its kick fds.
    pub fn new(
        state: SharedShell<State>,
        tx_evt: EventFd,
        rx_evt: EventFd,
        stats: Arc<NicStats>,
        tx_csum: bool,
        tx_sync: Arc<TxSync>,
    ) -> io::Result<Self> {
        let timer_fd = shell::lock(&state).timer().map(|t| t.as_raw_fd());
        Ok(Self {
            state,
            tx_evt,
            rx_evt,
            timer_fd,
            stats,
            inflight: None,
            segments: VecDeque::new(),
            chain: TxChain::default(),
            tx_csum,
            tx_sync,
            tx_hdr: NetHdr::default(),
            rx_frame: Vec::with_capacity(2048),
            rx_csum: Vec::new(),
            rx_need: 0,
            rx_segments: VecDeque::new(),
        })
    }

    fn drop_tx(&self) {
        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The next segment of a large send, unless a reset voided it.
    fn next_segment(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.segments.is_empty() {
            return false;
        }
        let gen = shell::lock(&self.state).gen;
        if !matches!(&self.inflight, Some(Inflight::Chain { chain, .. }) if chain.gen == gen) {
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
    /// the frame stays one (a partial checksum left to the backend sets
    /// `self.tx_hdr`, which `pop_tx` cleared), `Ok(Some(frames))` when
    /// large send turned it into segments. `partial`: a TCP checksum may
    /// be left to the backend.
    fn offload(&mut self, buf: &mut Vec<u8>, partial: bool) -> Result<Option<Vec<Vec<u8>>>, ()> {
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
        let r = if opts1 & TXD_LGSEN != 0 {
            let mss = ((opts1 >> TXD_MSS_SHIFT) & TXD_MSS_MASK) as u16;
            large_send(buf, mss).map(Some)
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

    fn take_frame(&mut self, buf: &mut Vec<u8>) -> Taken {
        let state = self.state.clone();
        let mut st = shell::lock(&state);
        if !st.cplus_tx() {
            return match st.normal_pop_tx(buf) {
                SlotTx::Empty => {
                    self.tx_served(&mut st);
                    Taken::None
                }
                SlotTx::Aborted => {
                    self.drop_tx();
                    Taken::Again
                }
                SlotTx::Frame(slot) => {
                    let gen = st.gen;
                    if st.loopback() {
                        self.loop_back(&mut st, buf);
                        st.normal_complete_tx(slot, gen);
                        return Taken::Again;
                    }
                    self.inflight = Some(Inflight::Slot { slot, gen });
                    Taken::Wire
                }
            };
        }
        match st.cp_pop_tx(buf, &mut self.chain) {
            CpTx::Empty | CpTx::Wait => {
                self.tx_served(&mut st);
                Taken::None
            }
            CpTx::Bad(_) => {
                st.cp_complete_tx(&self.chain, false);
                self.drop_tx();
                Taken::Again
            }
            CpTx::Frame => {
                let loopback = st.loopback();
                drop(st);
                // Looped-back frames reach our own receiver: they need
                // every checksum done here.
                let offloaded = self.offload(buf, self.tx_csum && !loopback);
                let mut st = shell::lock(&state);
                let Ok(segments) = offloaded else {
                    st.cp_complete_tx(&self.chain, false);
                    self.drop_tx();
                    return Taken::Again;
                };
                if loopback {
                    match &segments {
                        Some(segs) => segs.iter().for_each(|f| self.loop_back(&mut st, f)),
                        None => self.loop_back(&mut st, buf),
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
                self.inflight = Some(Inflight::Chain { chain, left });
                Taken::Wire
            }
        }
    }

    /// Offers one frame that needs no segmentation (a partial checksum
    /// is completed on a copy first).
    fn push_one(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush {
        let mut copy = std::mem::take(&mut self.rx_csum);
        let partial = hdr.flags & NEEDS_CSUM != 0;
        if partial {
            copy.clear();
            copy.extend_from_slice(frame);
            if complete_checksum(hdr, &mut copy).is_err() {
                self.rx_csum = copy;
                return RxPush::Dropped;
            }
        }
        let frame: &[u8] = if partial { &copy } else { frame };
        // Checksums the backend vouches for, or that were just computed,
        // are not verified again.
        let l4_valid = hdr.flags & (DATA_VALID | NEEDS_CSUM) != 0;
        let state = self.state.clone();
        let mut st = shell::lock(&state);
        let (result, need) = receive(&mut st, frame, l4_valid, &mut self.rx_frame);
        self.rx_csum = copy;
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

    /// Nothing left to send: completions go on the line now and a vCPU
    /// waiting for this pass is released.
    fn tx_served(&self, st: &mut State) {
        if std::mem::take(&mut st.tx_wait_pending) {
            st.flush_irq();
        }
        self.tx_sync.served(st.tx_doorbells);
    }
}

impl NicFrontend for Rtl8139Frontend {
    fn guest_fds(&self) -> Vec<(RawFd, u32)> {
        let mut fds = vec![
            (self.tx_evt.as_raw_fd(), TOKEN_TX),
            (self.rx_evt.as_raw_fd(), TOKEN_RX),
        ];
        fds.extend(self.timer_fd.map(|fd| (fd, TOKEN_TIMER)));
        fds
    }

    fn guest_event(&mut self, token: u32) -> GuestWork {
        match token {
            TOKEN_TX => {
                let _ = self.tx_evt.read();
                GuestWork::Tx
            }
            TOKEN_RX => {
                let _ = self.rx_evt.read();
                GuestWork::Rx
            }
            TOKEN_TIMER => {
                let mut st = shell::lock(&self.state);
                st.timer_fired();
                if st.take_rx_retry() {
                    GuestWork::Rx
                } else {
                    GuestWork::None
                }
            }
            _ => GuestWork::None,
        }
    }

    fn pop_tx(&mut self, hdr: &mut NetHdr, buf: &mut Vec<u8>) -> bool {
        *hdr = NetHdr::default();
        for _ in 0..TX_BUDGET {
            if self.next_segment(buf) {
                return true;
            }
            self.tx_hdr = NetHdr::default();
            match self.take_frame(buf) {
                Taken::None => return false,
                Taken::Wire => {
                    *hdr = self.tx_hdr;
                    return true;
                }
                Taken::Again => {}
            }
        }
        // Bounded work per call: come back after the other events.
        let _ = self.tx_evt.write(1);
        false
    }

    fn complete_tx(&mut self) {
        match self.inflight.take() {
            Some(Inflight::Slot { slot, gen }) => {
                shell::lock(&self.state).normal_complete_tx(slot, gen)
            }
            Some(Inflight::Chain { chain, left }) if left > 1 => {
                self.inflight = Some(Inflight::Chain {
                    chain,
                    left: left - 1,
                });
            }
            Some(Inflight::Chain { chain, .. }) => {
                shell::lock(&self.state).cp_complete_tx(&chain, true);
                self.chain = chain;
            }
            None => {}
        }
    }

    fn push_rx(&mut self, hdr: &NetHdr, frame: &[u8]) -> RxPush {
        if self.rx_segments.is_empty() {
            if hdr.gso_type & !GSO_ECN == GSO_NONE {
                return self.push_one(hdr, frame);
            }
            // A TSO frame from the backend: the chip has no receive
            // offloads, so it gets the segments, each with its checksums
            // computed here. What does not fit now waits in the queue; the
            // worker offers this same frame again until it is all through.
            match segment(hdr, frame) {
                Ok(segs) => self.rx_segments = segs.into(),
                Err(_) => return RxPush::Dropped,
            }
        }
        let plain = NetHdr {
            flags: DATA_VALID,
            ..NetHdr::default()
        };
        while let Some(seg) = self.rx_segments.pop_front() {
            match self.push_one(&plain, &seg) {
                RxPush::NoBuffers => {
                    self.rx_segments.push_front(seg);
                    return RxPush::NoBuffers;
                }
                RxPush::Delivered | RxPush::Dropped => {}
            }
        }
        RxPush::Delivered
    }

    fn rx_discard(&mut self) {
        self.rx_segments.clear();
    }

    fn rx_wait_buffers(&mut self) -> bool {
        let state = self.state.clone();
        let mut st = shell::lock(&state);
        let room = if !st.rx_enabled() {
            true
        } else if st.cplus_rx() {
            st.cp_rx_room(self.rx_need) != Room::No
        } else {
            st.normal_room(self.rx_need)
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
        shell::lock(&self.state).flush_irq();
    }
}
