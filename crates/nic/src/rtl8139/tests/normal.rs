//! C mode, driven as Linux's 8139too drives it.

use std::sync::atomic::Ordering;

use tapir_net_backend::NetHdr;
use tapir_pci::configuration::PCI_COMMAND;
use tapir_pci::PciDevice;

use super::*;
use crate::rtl8139::filter::{fcs, mcast_hash_index};
use crate::rtl8139::RX_STALL_GRACE;

const RX_RING: u64 = 0x10000;
const TX_BUF: u64 = 0x30000;
/// 8139too's rtl8139_rx_config with a 32K ring (RX_BUF_IDX 2).
const RX_CONFIG_32K: u32 = (1 << 12) | RCR_WRAP | (7 << 13) | (7 << 8);
/// 8139too's rtl8139_intr_mask.
const INTR_MASK: u16 = 0xc07f;
/// 8139too's tx_flag: the early TX threshold of 256 bytes.
const TX_FLAG: u32 = (256 << 11) & 0x003f_0000;

/// rtl8139_hw_start with `rcr` as the ring/accept configuration.
fn init_8139too(n: &mut Nic, rcr: u32) {
    n.w8(HLTCLK, b'R');
    n.reset();
    n.w8(CFG9346, EEM_CONFIG_WRITE);
    n.w32(IDR0, u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]));
    n.w32(IDR0 + 4, u32::from(u16::from_le_bytes([MAC[4], MAC[5]])));
    n.w32(RBSTART, RX_RING as u32);
    n.w8(CR, CR_RE | CR_TE);
    n.w32(RCR, rcr);
    n.w32(TCR, (3 << 24) | (6 << 8) | (8 << 4));
    let v = n.r8(CONFIG3) & !0x20;
    n.w8(CONFIG3, v);
    n.w8(CFG9346, 0);
    for i in 0..4u8 {
        n.w32(TSAD0 + 4 * i, (TX_BUF + 0x800 * u64::from(i)) as u32);
    }
    n.w32(MPC, 0);
    n.w32(RCR, rcr);
    n.w32(MAR0, 0);
    n.w32(MAR0 + 4, 0);
    let mi = n.r16(MULINT) & 0xf000;
    n.w16(MULINT, mi);
    n.w16(IMR, INTR_MASK);
}

/// The driver's side of the receive ring.
struct Reader {
    cur: u32,
    len: u32,
}

impl Reader {
    fn new(len: u32) -> Self {
        Reader { cur: 0, len }
    }

    /// rtl8139_rx: every packet until BUFE, as (status, frame, crc).
    fn poll(&mut self, n: &mut Nic) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        while n.r8(CR) & CR_BUFE == 0 {
            let off = self.cur % self.len;
            let h = n.read_mem(RX_RING + u64::from(off), 4);
            let status = u16::from_le_bytes([h[0], h[1]]);
            let size = u32::from(u16::from_le_bytes([h[2], h[3]]));
            assert!((8..=1540).contains(&size), "size {size}");
            // With WRAP set the packet is contiguous past the ring end.
            let data = n.read_mem(RX_RING + u64::from(off) + 4, size as usize);
            let (frame, crc) = data.split_at(size as usize - 4);
            out.push((status, frame.to_vec(), crc.to_vec()));
            self.cur = (self.cur + size + 4 + 3) & !3;
            n.w16(CAPR, self.cur.wrapping_sub(16) as u16);
            n.w16(ISR, INT_ROK | INT_RXOVW | INT_FOVW);
        }
        out
    }
}

/// rtl8139_start_xmit into `entry`.
fn xmit(n: &mut Nic, entry: u8, frame: &[u8]) {
    let mut buf = frame.to_vec();
    if buf.len() < 60 {
        buf.resize(60, 0);
    }
    n.write_mem(TX_BUF + 0x800 * u64::from(entry), &buf);
    n.w32(TSD0 + 4 * entry, TX_FLAG | buf.len() as u32);
}

fn inject(n: &Nic, frame: &[u8]) {
    n.peer.inject(NetHdr::default(), frame).unwrap();
}

#[test]
fn tx_slots_round_robin_with_status_write_back() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    for k in 0..6usize {
        let entry = (k % 4) as u8;
        let f = eth(PEER, 0x0800, &payload(100 + k));
        xmit(&mut n, entry, &f);
        n.eventually("slot completed", |n| {
            n.r32(TSD0 + 4 * entry) & (TSD_OWN | TSD_TOK) == TSD_OWN | TSD_TOK
        });
        let tsd = n.r32(TSD0 + 4 * entry);
        assert_eq!(tsd & TSD_SIZE_MASK, f.len() as u32);
        assert_eq!(tsd & TSD_TABT, 0);
        let (_, sent) = n.peer.take().expect("frame at the backend");
        assert_eq!(sent, f);
        assert!(n.line.high(), "TOK interrupt");
        assert_ne!(n.r16(ISR) & INT_TOK, 0);
        n.w16(ISR, INT_TOK);
        assert!(!n.line.high());
    }
    // TSAD: TOK and OWN set for all four slots.
    assert_eq!(n.r16(TSAD), 0xf00f);
    assert_eq!(n.dev.stats().tx_frames.load(Ordering::SeqCst), 6);
}

#[test]
fn short_frames_go_out_as_written_and_four_can_be_queued() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    for entry in 0..4u8 {
        xmit(&mut n, entry, &eth(PEER, 0x88b5, &[entry; 10]));
    }
    n.eventually("four frames", |n| n.peer.pending_from_guest() == 4);
    for entry in 0..4u8 {
        let (_, f) = n.peer.take().unwrap();
        assert_eq!(f.len(), 60, "padded by the driver");
        assert_eq!(f[14], entry, "in slot order");
    }
}

#[test]
fn rx_frames_land_in_the_ring_with_header_crc_and_alignment() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    assert_ne!(n.r8(CR) & CR_BUFE, 0);
    let unicast = eth(MAC, 0x0800, &payload(99));
    let bcast = eth([0xff; 6], 0x0806, &payload(28));
    let runt = eth(MAC, 0x88b5, &[1, 2, 3]);
    for f in [&unicast, &bcast, &runt] {
        inject(&n, f);
    }
    n.eventually("three received", |n| {
        n.dev.stats().rx_frames.load(Ordering::SeqCst) == 3
    });
    assert!(n.line.high(), "ROK");
    assert_eq!(n.r8(CR) & CR_BUFE, 0);
    let mut r = Reader::new(32768);
    let got = r.poll(&mut n);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, RXH_ROK | RXH_PAM);
    assert_eq!(got[0].1, unicast);
    assert_eq!(got[1].0, RXH_ROK | RXH_BAR);
    let mut padded_bcast = bcast.clone();
    padded_bcast.resize(60, 0);
    assert_eq!(got[1].1, padded_bcast);
    let mut padded = runt.clone();
    padded.resize(60, 0);
    assert_eq!(got[2].1, padded, "padded to the 60-byte minimum");
    for (_, f, crc) in &got {
        assert_eq!(crc, &fcs(f).to_vec());
    }
    assert_eq!(r.cur % 4, 0);
    assert_eq!(u32::from(n.r16(CBR)), r.cur);
    assert_ne!(n.r8(CR) & CR_BUFE, 0, "empty again");
    assert!(!n.line.high(), "acknowledged");
}

/// Fills an 8K ring to just before its end, then receives a packet that
/// crosses it, with or without WRAP.
fn crossing_the_end(wrap: bool) {
    let mut n = nic(REVISION_8139C);
    let rcr = (if wrap { RCR_WRAP } else { 0 }) | RCR_APM | (7 << 13) | (7 << 8);
    init_8139too(&mut n, rcr);
    let mut cur = 0u32;
    // 8 frames of 1000 bytes take 8 * 1008 bytes; consume them as they come.
    for k in 0..8u8 {
        inject(&n, &eth(MAC, 0x88b5, &[k; 986]));
        n.eventually("frame", |n| n.r8(CR) & CR_BUFE == 0);
        cur += 1008;
        n.w16(CAPR, cur.wrapping_sub(16) as u16);
    }
    assert_eq!(n.r16(CBR), 8064);
    let f = eth(MAC, 0x88b5, &payload(700));
    inject(&n, &f);
    n.eventually("crossing frame", |n| n.r8(CR) & CR_BUFE == 0);
    let h = n.read_mem(RX_RING + 8064, 4);
    assert_eq!(u16::from_le_bytes([h[2], h[3]]) as usize, f.len() + 4);
    let mut data = f.clone();
    data.extend_from_slice(&fcs(&f));
    if wrap {
        assert_eq!(n.read_mem(RX_RING + 8068, data.len()), data);
    } else {
        let first = 8192 - 8068;
        assert_eq!(n.read_mem(RX_RING + 8068, first), data[..first]);
        assert_eq!(n.read_mem(RX_RING, data.len() - first), data[first..]);
    }
    let next = (8064 + ((4 + data.len() as u32 + 3) & !3)) % 8192;
    assert_eq!(u32::from(n.r16(CBR)), next);
}

#[test]
fn rx_wrap_set_continues_past_the_ring_end() {
    crossing_the_end(true);
}

#[test]
fn rx_wrap_clear_wraps_to_the_ring_start() {
    crossing_the_end(false);
}

#[test]
fn rx_filter_follows_rcr_and_the_multicast_hash() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    inject(&n, &eth([0xff; 6], 0x0806, &[0; 46])); // no AB
    inject(&n, &eth(group, 0x0800, &[0; 46])); // no AM
    inject(&n, &eth(PEER, 0x0800, &[0; 46])); // not ours
    n.eventually("three filtered", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 3
    });
    assert_ne!(n.r8(CR) & CR_BUFE, 0);
    // __set_rx_mode with one group: AM and its hash bit.
    let bit = mcast_hash_index(&group);
    let mut mar = [0u32; 2];
    mar[bit >> 5] |= 1 << (bit & 31);
    n.w32(RCR, RX_CONFIG_32K | RCR_APM | RCR_AB | RCR_AM);
    n.w32(MAR0, mar[0]);
    n.w32(MAR0 + 4, mar[1]);
    inject(&n, &eth(group, 0x0800, &[1; 46]));
    inject(&n, &eth([0x01, 0x00, 0x5e, 0, 0, 2], 0x0800, &[2; 46]));
    inject(&n, &eth([0xff; 6], 0x0806, &[3; 46]));
    // Promiscuous: any unicast, without PAM.
    n.w32(RCR, RX_CONFIG_32K | RCR_APM | RCR_AB | RCR_AM | RCR_AAP);
    inject(&n, &eth(PEER, 0x0800, &[4; 46]));
    n.eventually("three more", |n| {
        n.dev.stats().rx_frames.load(Ordering::SeqCst) == 3
    });
    let got = Reader::new(32768).poll(&mut n);
    let status: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(status, vec![RXH_ROK | RXH_MAR, RXH_ROK | RXH_BAR, RXH_ROK]);
    assert_eq!(got[0].1[14], 1);
    assert_eq!(got[2].1[14], 4);
}

#[test]
fn rx_full_ring_pushes_back_and_capr_resumes_without_loss() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RCR_WRAP | RCR_APM | (7 << 13) | (7 << 8)); // 8K
    n.dev.set_rx_stall_grace(std::time::Duration::from_secs(10));
    for k in 0..12u8 {
        inject(&n, &eth(MAC, 0x88b5, &[k; 986]));
    }
    n.eventually("ring full", |n| {
        n.dev.stats().rx_stalls.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(n.dev.stats().rx_frames.load(Ordering::SeqCst), 8);
    assert_eq!(n.r32(MPC), 0, "nothing missed while the backend waits");
    let mut r = Reader::new(8192);
    let mut seen = Vec::new();
    n.eventually("all twelve read", |n| {
        seen.extend(r.poll(n).into_iter().map(|g| g.1[14]));
        seen.len() == 12
    });
    assert_eq!(seen, (0..12).collect::<Vec<u8>>(), "in order, none lost");
    assert_eq!(n.r32(MPC), 0);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn rx_ring_left_full_overflows_after_the_grace_period() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RCR_WRAP | RCR_APM | (7 << 13) | (7 << 8)); // 8K
    for k in 0..20u8 {
        inject(&n, &eth(MAC, 0x88b5, &[k; 986]));
    }
    n.pump();
    assert_eq!(
        n.r32(MPC),
        0,
        "held back, not dropped, within the grace period"
    );
    n.advance(RX_STALL_GRACE);
    n.eventually("backend drained by drops", |n| {
        n.peer.pending_to_guest() == 0 && n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 12
    });
    assert_eq!(n.r32(MPC), 12);
    assert_ne!(n.r16(ISR) & INT_RXOVW, 0);
    // Once the driver reads, frames arrive again.
    let mut r = Reader::new(8192);
    assert_eq!(r.poll(&mut n).len(), 8);
    inject(&n, &eth(MAC, 0x88b5, &[99; 100]));
    n.eventually("delivered again", |n| n.r8(CR) & CR_BUFE == 0);
    assert_eq!(r.poll(&mut n)[0].1[14], 99);
}

#[test]
fn bad_tx_slots_abort_and_the_next_one_still_goes() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    n.w32(TSD0, 0); // size 0
    n.eventually("slot 0 aborted", |n| n.r32(TSD0) & TSD_TABT != 0);
    n.w32(TSD0 + 4, 1793); // too long
    n.eventually("slot 1 aborted", |n| n.r32(TSD0 + 4) & TSD_TABT != 0);
    n.w32(TSAD0 + 8, MEM_SIZE as u32 - 10); // runs off RAM
    n.w32(TSD0 + 8, 100);
    n.eventually("slot 2 aborted", |n| n.r32(TSD0 + 8) & TSD_TABT != 0);
    let isr = n.r16(ISR);
    assert_eq!(isr & (INT_TER | INT_SERR), INT_TER | INT_SERR);
    // 8139too on TxAborted: TxClearAbt and acknowledge.
    let v = n.r32(TCR) | TCR_CLRABT;
    n.w32(TCR, v);
    n.w16(ISR, INT_TER | INT_SERR);
    let f = eth(PEER, 0x0800, &payload(200));
    xmit(&mut n, 3, &f);
    n.eventually("slot 3 sent", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, f);
    assert_eq!(n.dev.stats().tx_dropped.load(Ordering::SeqCst), 3);
    assert_eq!(
        n.peer.pending_from_guest(),
        0,
        "aborted slots are not retried"
    );
}

#[test]
fn rx_ring_outside_guest_ram_drops_with_serr() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    n.w32(RBSTART, MEM_SIZE as u32 - 64);
    inject(&n, &eth(MAC, 0x0800, &payload(200)));
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_ne!(n.r16(ISR) & INT_SERR, 0);
    assert_eq!(n.r16(CBR), 0, "nothing consumed");
    n.w32(RBSTART, 0xffff_fff0);
    inject(&n, &eth(MAC, 0x0800, &payload(200)));
    n.eventually("dropped again", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 2
    });
}

#[test]
fn capr_anywhere_is_only_a_ring_position() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RCR_WRAP | RCR_APM); // 8K
    for capr in [0xffffu16, 0x1235, 0x8000, 0x1ff0, 0xfff0] {
        n.w16(CAPR, capr);
        inject(&n, &eth(MAC, 0x88b5, &payload(80)));
        n.pump();
        let _ = n.r8(CR);
        let _ = n.r16(CBR);
    }
    // A reset restores a sane ring whatever happened.
    n.reset();
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    n.advance(RX_STALL_GRACE * 2);
    let mut r = Reader::new(32768);
    r.poll(&mut n);
    inject(&n, &eth(MAC, 0x88b5, &[0x5a; 80]));
    let mut last = None;
    n.eventually("received after reset", |n| {
        if let Some(g) = r.poll(n).pop() {
            last = Some(g.1[14]);
        }
        last == Some(0x5a)
    });
}

#[test]
fn loopback_mode_receives_what_it_sends() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    let v = n.r32(TCR) | TCR_LBK;
    n.w32(TCR, v);
    let f = eth(MAC, 0x88b5, &payload(300));
    xmit(&mut n, 0, &f);
    n.eventually("looped back", |n| n.r8(CR) & CR_BUFE == 0);
    let got = Reader::new(32768).poll(&mut n);
    assert_eq!(got[0].1, f);
    assert_ne!(n.r32(TSD0) & TSD_TOK, 0);
    assert_eq!(n.peer.pending_from_guest(), 0, "nothing on the wire");
    // A looped frame to another address is filtered like any other.
    xmit(&mut n, 1, &eth(PEER, 0x88b5, &payload(300)));
    n.eventually("slot 1 done", |n| n.r32(TSD0 + 4) & TSD_TOK != 0);
    assert_ne!(n.r8(CR) & CR_BUFE, 0);
}

#[test]
fn disabling_the_receiver_restarts_the_ring() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    inject(&n, &eth(MAC, 0x88b5, &payload(100)));
    n.eventually("one", |n| n.r8(CR) & CR_BUFE == 0);
    assert_ne!(n.r16(CBR), 0);
    // rtl8139_rx_err: RE off and on, RCR again, cur_rx = 0.
    let cr = n.r8(CR);
    n.w8(CR, cr & !CR_RE);
    n.w8(CR, cr);
    n.w32(RCR, RX_CONFIG_32K | RCR_APM);
    assert_eq!(n.r16(CBR), 0);
    assert_ne!(n.r8(CR) & CR_BUFE, 0);
    inject(&n, &eth(MAC, 0x88b5, &[7; 100]));
    n.eventually("next at 0", |n| n.r8(CR) & CR_BUFE == 0);
    assert_eq!(Reader::new(32768).poll(&mut n)[0].1[14], 7);
}

#[test]
fn no_dma_without_bus_master_or_transmitter() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    n.w8(CR, CR_RE);
    let f = eth(PEER, 0x0800, &payload(64));
    xmit(&mut n, 0, &f);
    n.pump();
    assert_eq!(n.peer.pending_from_guest(), 0, "TE off");
    n.dev.write_config(PCI_COMMAND, &3u16.to_le_bytes());
    n.w8(CR, CR_RE | CR_TE);
    inject(&n, &eth(MAC, 0x0800, &payload(64)));
    n.pump();
    assert_eq!(n.peer.pending_from_guest(), 0, "bus master off");
    assert_ne!(n.r8(CR) & CR_BUFE, 0);
    n.dev.write_config(PCI_COMMAND, &7u16.to_le_bytes());
    n.eventually("sent once mastering", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, f);
}

/// rtl8139_rx with NAPI budget `budget`: reads at most `budget` packets,
/// acknowledging RxAckBits after each (rtl8139_isr_ack).
fn napi_rx(n: &mut Nic, r: &mut Reader, budget: usize) -> usize {
    let mut got = 0;
    while got < budget && n.r8(CR) & CR_BUFE == 0 {
        let off = r.cur % r.len;
        let h = n.read_mem(RX_RING + u64::from(off), 4);
        let size = u32::from(u16::from_le_bytes([h[2], h[3]]));
        assert!((8..=1540).contains(&size), "size {size}");
        r.cur = (r.cur + size + 4 + 3) & !3;
        n.w16(CAPR, r.cur.wrapping_sub(16) as u16);
        if n.r16(ISR) & (INT_ROK | INT_RXOVW | INT_FOVW) != 0 {
            n.w16(ISR, INT_ROK | INT_RXOVW | INT_FOVW);
        }
        got += 1;
    }
    got
}

#[test]
fn packets_left_after_the_napi_budget_raise_rok_again_when_imr_returns() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    for k in 0..5u8 {
        inject(&n, &eth(MAC, 0x0800, &[k; 46]));
    }
    n.eventually("five delivered", |n| {
        n.dev.stats().rx_frames.load(Ordering::SeqCst) == 5
    });
    // rtl8139_interrupt: RX bits pending, NAPI scheduled, RX masked.
    assert!(n.line.high());
    let status = n.r16(ISR);
    assert_ne!(status & INT_ROK, 0);
    n.w16(IMR, INTR_MASK & !(INT_ROK | INT_RXOVW | INT_FOVW));
    assert!(!n.line.high());
    // rtl8139_poll with a budget of 2: two packets read, ROK acked.
    let mut r = Reader::new(32768);
    assert_eq!(napi_rx(&mut n, &mut r, 2), 2);
    // Budget spent: repoll finds no RxAckBits in ISR and completes.
    assert_eq!(n.r16(ISR) & (INT_ROK | INT_RXOVW | INT_FOVW), 0);
    n.w16(IMR, INTR_MASK);
    // Three packets are still unread: the chip must interrupt again.
    assert_ne!(n.r16(ISR) & INT_ROK, 0, "ROK re-raised");
    assert!(n.line.high(), "stranded packets interrupt");
    n.w16(IMR, INTR_MASK & !(INT_ROK | INT_RXOVW | INT_FOVW));
    assert_eq!(napi_rx(&mut n, &mut r, 64), 3);
    n.w16(IMR, INTR_MASK);
    assert_eq!(n.r16(ISR) & INT_ROK, 0, "empty ring: nothing re-raised");
    assert!(!n.line.high());
}

#[test]
fn tx_wraps_many_times_under_backpressure_with_8139too_bookkeeping() {
    // A backend queue of 2 frames: the worker blocks and holds frames.
    let mut n = nic_with(REVISION_8139C, 2);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    let total = 64usize;
    let (mut cur_tx, mut dirty_tx) = (0usize, 0usize);
    let mut received = Vec::new();
    for round in 0.. {
        if received.len() == total {
            break;
        }
        assert!(round < 10 * total, "TX stalled at {cur_tx}/{dirty_tx}");
        // rtl8139_start_xmit while the queue is not stopped.
        while cur_tx < total && cur_tx - dirty_tx < 4 {
            let f = eth(PEER, 0x88b5, &(cur_tx as u32).to_le_bytes());
            xmit(&mut n, (cur_tx % 4) as u8, &f);
            cur_tx += 1;
        }
        // rtl8139_interrupt: ack all but RX/TxErr bits, then scan.
        let status = n.r16(ISR);
        let ack = status & !(INT_ROK | INT_RXOVW | INT_FOVW | INT_TER);
        if ack != 0 {
            n.w16(ISR, ack);
        }
        while dirty_tx < cur_tx {
            let tsd = n.r32(TSD0 + 4 * (dirty_tx % 4) as u8);
            if tsd & (TSD_TOK | TSD_TUN | TSD_TABT) == 0 {
                break;
            }
            assert_eq!(tsd & TSD_TABT, 0);
            dirty_tx += 1;
        }
        // The worker runs; the host drains slowly, a frame at a time.
        n.pump();
        if let Some((_, f)) = n.peer.take() {
            received.push(u32::from_le_bytes([f[14], f[15], f[16], f[17]]));
        }
    }
    assert_eq!(received, (0..total as u32).collect::<Vec<_>>(), "in order");
    n.eventually("all slots completed", |n| {
        while dirty_tx < cur_tx && n.r32(TSD0 + 4 * (dirty_tx % 4) as u8) & TSD_TOK != 0 {
            dirty_tx += 1;
        }
        dirty_tx == cur_tx
    });
}

#[test]
fn the_cable_shows_in_the_link_registers_and_stops_frames_both_ways() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_AB | RCR_APM);
    let link = n.dev.link();
    assert_eq!(n.r16(CSCR) & CSCR_LINK_CHANGE, 0);
    assert!(!n.line.high());

    assert!(link.set(false));
    assert!(n.line.high(), "link change interrupt");
    assert_ne!(n.r16(ISR) & INT_PUN_LINKCHG, 0);
    // 8139too tells a link change from an underrun by CSCR, read once.
    let cscr = n.r16(CSCR);
    assert_ne!(cscr & CSCR_LINK_CHANGE, 0);
    assert_eq!(cscr & CSCR_LINK_OK, 0);
    assert_eq!(n.r16(CSCR) & CSCR_LINK_CHANGE, 0, "cleared by the read");
    assert_eq!(n.r16(BMSR) & BMSR_LINK, 0);
    assert_ne!(n.r8(MSR) & MSR_LINKB, 0);
    n.w16(ISR, INT_PUN_LINKCHG);
    assert!(!n.line.high());

    // Frames both ways are dropped and counted; the slot still completes.
    xmit(&mut n, 0, &eth(PEER, 0x0800, &payload(100)));
    n.eventually("slot completed", |n| n.r32(TSD0) & TSD_OWN != 0);
    inject(&n, &eth(MAC, 0x0800, &payload(80)));
    let stats = n.dev.stats();
    n.eventually("backend frame dropped", |_| {
        stats.rx_link_down.load(Ordering::SeqCst) == 1
    });
    assert_eq!(stats.tx_link_down.load(Ordering::SeqCst), 1);
    assert_eq!(n.peer.pending_from_guest(), 0);
    assert_ne!(n.r8(CR) & CR_BUFE, 0, "nothing received");

    // Back in: the bits return, another interrupt, frames pass.
    assert!(link.set(true));
    assert_ne!(n.r16(ISR) & INT_PUN_LINKCHG, 0);
    assert_ne!(n.r16(CSCR) & (CSCR_LINK_CHANGE | CSCR_LINK_OK), 0);
    assert_ne!(n.r16(BMSR) & BMSR_LINK, 0);
    assert_eq!(n.r8(MSR) & MSR_LINKB, 0);
    let f = eth(PEER, 0x0800, &payload(90));
    xmit(&mut n, 1, &f);
    n.eventually("sent", |n| n.peer.pending_from_guest() == 1);
    assert_eq!(n.peer.take().unwrap().1, f);
}

#[test]
fn tso_frames_from_the_backend_fill_the_ring_segment_by_segment() {
    let mut n = nic_offloads(REVISION_8139C, 64, Offloads::ALL);
    init_8139too(&mut n, RCR_WRAP | RCR_APM | (7 << 13) | (7 << 8)); // 8K
    n.dev.set_rx_stall_grace(std::time::Duration::from_secs(10));
    let data = payload(30_000);
    let (hdr, f) = tso_frame(MAC, &data, 1, 1460);
    n.peer.inject(hdr, &f).unwrap();
    // 21 segments do not fit in 8 KiB at once: the reader makes room.
    let mut r = Reader::new(8192);
    let mut seen = Vec::new();
    n.eventually("all segments", |n| {
        seen.extend(r.poll(n));
        seen.len() >= 21
    });
    assert_eq!(seen.len(), 21);
    let mut joined = Vec::new();
    for (status, s, crc) in &seen {
        assert_ne!(status & RXH_ROK, 0);
        assert_eq!(checksums_ok(s), (true, true));
        assert_eq!(crc.as_slice(), fcs(s));
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, data);
    assert_eq!(n.r32(MPC), 0);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn a_small_frame_sent_from_the_receive_poll_completes_before_tsd_returns() {
    let mut n = nic(REVISION_8139C);
    init_8139too(&mut n, RX_CONFIG_32K | RCR_APM);
    n.w16(IMR, INTR_MASK & !(INT_ROK | INT_RXOVW | INT_FOVW)); // rtl8139_norx_intr_mask
    let ack = tcp_frame(PEER, &[], 1);
    for k in 0..8u8 {
        let slot = k % 4;
        xmit(&mut n, slot, &ack);
        let tsd = n.r32(TSD0 + 4 * slot);
        assert_ne!(tsd & TSD_TOK, 0, "frame {k}: done when the write returns");
        assert!(n.line.high(), "frame {k}");
        n.eventually("sent by the worker", |n| n.peer.take().is_some());
        n.w16(ISR, INT_TOK);
    }
}
