//! Hostile or broken guests: rings and buffers outside RAM, bad lengths
//! and indices, packets without an end, bad offload parameters, loopback.

use tapir_net_backend::Offloads;
use tapir_pci::configuration::{PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY};
use tapir_pci::PciDevice;
use vm_memory::{Bytes, GuestAddress};

use super::*;

const RS_EOP: u8 = TXD_CMD_RS | TXD_CMD_EOP;

fn dropped_tx(n: &Nic) -> u64 {
    n.dev.stats().tx_dropped.load(Ordering::SeqCst)
}

#[test]
fn tx_ring_outside_ram_is_consumed_without_harm() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.w(TDBAL, 0xFFFF_F000);
    n.w(TDBAH, 0xFFFF_FFFF);
    n.w(TDH, 0);
    n.w(TDT, 3);
    n.wait_tx_head(3);
    assert_eq!(dropped_tx(&n), 3);
    assert_eq!(n.peer.pending_from_guest(), 0);
    // A ring partly in RAM: the descriptors past the end fail one by one.
    n.w(TDBAL, (MEM_SIZE - 32) as u32);
    n.w(TDBAH, 0);
    n.w(TDLEN, 128);
    n.w(TDH, 0);
    n.w(TDT, 4);
    n.wait_tx_head(4);
}

#[test]
fn bad_lengths_and_indices_are_not_used() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(4);
    // TDLEN/RDLEN: the low 7 bits do not exist; zero means no ring.
    n.w(TDLEN, 0x7F);
    assert_eq!(n.r(TDLEN), 0);
    n.send_legacy(&eth(PEER_MAC, 0x0800, &payload(64, 1)));
    n.w(RDLEN, 0);
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x0800, &payload(64, 2)))
        .unwrap();
    n.pump();
    assert_eq!((n.peer.pending_from_guest(), n.r(TDH), n.r(RDH)), (0, 0, 0));
    // Head and tail beyond the ring: nothing happens either.
    n.w(TDT, RING + 3);
    n.w(TDLEN, RING * 16 + 5);
    assert_eq!(n.r(TDLEN), RING * 16);
    n.w(TDH, 0);
    n.w(RDT, 40);
    n.w(RDLEN, RING * 16);
    n.w(RDH, 0);
    n.pump();
    assert_eq!((n.peer.pending_from_guest(), n.r(TDH), n.r(RDH)), (0, 0, 0));
    // Fixed up, both rings work again.
    n.w(TDT, 1);
    n.take_frames(1);
    n.w(RDT, 4);
    n.eventually("received", |n| n.r(RDH) == 1);
}

#[test]
fn buffers_outside_ram_drop_the_packet_and_the_ring_goes_on() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let good = eth(PEER_MAC, 0x0800, &payload(100, 3));
    let a = n.tx_data(1, &good);
    n.tx_push(&[
        legacy(MEM_SIZE as u64 - 10, 100, RS_EOP, 0, 0, 0),
        legacy(u64::MAX - 4, 100, RS_EOP, 0, 0, 0),
        legacy(a, good.len(), RS_EOP, 0, 0, 0),
    ]);
    assert_eq!(n.take_frames(1)[0].1, good);
    n.wait_tx_head(3);
    assert_eq!(dropped_tx(&n), 2);
    assert_eq!(n.tx_status(0) & TXD_STAT_DD, TXD_STAT_DD, "reported done");

    // RX: a buffer outside RAM gets RXE; the next frame is fine.
    n.rx_give(4);
    let mut d = [0u8; 8];
    d.copy_from_slice(&(u64::MAX - 100).to_le_bytes());
    n.mem.write_slice(&d, GuestAddress(RX_RING)).unwrap();
    let frame = eth(MAC, 0x0800, &payload(100, 4));
    n.peer.inject(NetHdr::default(), &frame).unwrap();
    n.peer.inject(NetHdr::default(), &frame).unwrap();
    n.eventually("both handled", |n| n.r(RDH) == 2);
    let (len, status, errors, _) = n.rx_desc(0);
    assert_eq!((len, errors), (0, RXD_ERR_RXE));
    assert_ne!(status & RXD_STAT_DD, 0);
    assert_eq!(n.rx_data(1, frame.len()), frame);
    assert_eq!(n.dev.stats().rx_dropped.load(Ordering::SeqCst), 1);
    // An RX ring outside RAM: frames are dropped, not waited on.
    n.w(RDBAL, 0xFFFF_0000);
    n.w(RDBAH, 0xFFFF);
    n.w(RDH, 0);
    n.w(RDT, 5);
    n.peer.inject(NetHdr::default(), &frame).unwrap();
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 2
    });
    assert_eq!(n.r(RDH), 0);
}

#[test]
fn packets_without_an_end_are_dropped() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let a = n.tx_data(0, &payload(100, 5));
    // Not yet full: the device waits for the rest of the packet.
    let no_eop = legacy(a, 100, TXD_CMD_RS, 0, 0, 0);
    n.tx_push(&[no_eop; 5]);
    n.pump();
    assert_eq!(n.r(TDH), 0);
    // A full ring (15 of 16) without EOP can never complete.
    n.tx_push(&[no_eop; 10]);
    n.wait_tx_head(15);
    assert_eq!(dropped_tx(&n), 1);
    assert_eq!(n.peer.pending_from_guest(), 0);
    // A big ring: at most 256 descriptors per packet.
    n.w(TDLEN, 512 * 16);
    n.w(TDH, 0);
    for i in 0..400u64 {
        let d = legacy(a, 100, 0, 0, 0, 0);
        n.mem
            .write_slice(&d, GuestAddress(TX_RING + 16 * i))
            .unwrap();
    }
    n.w(TDT, 400);
    n.wait_tx_head(256);
    assert_eq!(dropped_tx(&n), 2);
    // Over 64 KiB in one packet.
    n.w(TDLEN, RING * 16);
    n.w(TDH, 0);
    n.tx_tail = 0;
    let big = legacy(tx_buf(0), 0xFFFF, 0, 0, 0, 0);
    n.tx_push(&[big, big, legacy(tx_buf(0), 100, RS_EOP, 0, 0, 0)]);
    n.wait_tx_head(3);
    assert_eq!(dropped_tx(&n), 3);
    // A packet of zero-length buffers: PSP pads it to a minimal frame;
    // without PSP the worker drops it (no Ethernet header). Nothing hangs.
    n.tx_push(&[legacy(a, 0, 0, 0, 0, 0), legacy(a, 0, RS_EOP, 0, 0, 0)]);
    let got = n.take_frames(1);
    assert_eq!(got[0].1, vec![0u8; 60]);
    n.w(TCTL, TCTL_EN);
    n.tx_push(&[legacy(a, 0, RS_EOP, 0, 0, 0)]);
    n.wait_tx_head(6);
    let frame = eth(PEER_MAC, 0x0800, &payload(64, 6));
    n.send_legacy(&frame);
    assert_eq!(n.take_frames(1)[0].1, frame);
    assert_eq!(dropped_tx(&n), 4);
}

#[test]
fn bad_offload_parameters_drop_the_packet() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    let frame = ipv4_tcp(&payload(100, 7), true, 0x18);
    let a = n.tx_data(1, &frame);
    let tso = TUCMD_TCP | TUCMD_IP | TXD_CMD_TSE;
    let popts = POPTS_IXSM | POPTS_TXSM;
    let cases = [
        // MSS 0.
        context((14, 24, 33), (34, 50, 0), 100, tso, 54, 0),
        // Header longer than the 154-byte frame.
        context((14, 24, 33), (34, 50, 0), 100, tso, 255, 10),
        // Checksum field beyond the header.
        context((14, 24, 33), (34, 250, 0), 100, tso, 54, 10),
        // IP header beyond the header length.
        context((250, 24, 33), (34, 50, 0), 100, tso, 54, 10),
    ];
    for (i, ctx) in cases.iter().enumerate() {
        let d = data(a, frame.len(), TXD_CMD_TSE | RS_EOP, popts, 0);
        n.tx_push(&[*ctx, d]);
        n.wait_tx_head(2 * (i as u32 + 1));
    }
    assert_eq!(dropped_tx(&n), 4);
    assert_eq!(n.r(TSCTFC), 4);
    // Checksum offsets beyond a plain frame.
    let ctx = context((14, 24, 33), (200, 250, 0), 0, TUCMD_TCP, 0, 0);
    let small = eth(PEER_MAC, 0x0800, &payload(50, 8));
    let d = data(n.tx_data(2, &small), small.len(), RS_EOP, POPTS_TXSM, 0);
    n.tx_push(&[ctx, d]);
    n.wait_tx_head(10);
    assert_eq!(dropped_tx(&n), 5);
    assert_eq!(n.peer.pending_from_guest(), 0);
    // MSS 1 is valid, if slow: every payload byte its own segment.
    let ctx = context((14, 24, 33), (34, 50, 0), 20, tso, 54, 1);
    let f = ipv4_tcp(&payload(20, 9), true, 0x18);
    let d = data(n.tx_data(3, &f), f.len(), TXD_CMD_TSE | RS_EOP, popts, 0);
    n.tx_push(&[ctx, d]);
    for (_, s) in n.take_frames(20) {
        assert_eq!(check_ipv4_tcp(&s).3, 1);
    }
}

#[test]
fn loopback_delivers_once_and_never_loops() {
    let mut n = Nic::new(Offloads::ALL);
    n.up();
    n.rx_give(2);
    n.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_BAM | RCTL_LBM_MAC);
    let frame = eth(MAC, 0x0800, &payload(100, 10));
    n.send_legacy(&frame);
    n.eventually("looped back", |n| n.r(RDH) == 1);
    assert_eq!(n.rx_data(0, frame.len()), frame);
    // TSO in loopback is segmented in software, even with a capable backend.
    let data_ = payload(3000, 11);
    let mut t = ipv4_tcp(&data_, true, 0x18);
    t[..6].copy_from_slice(&MAC);
    let ctx = context(
        (14, 24, 33),
        (34, 50, 0),
        3000,
        TUCMD_TCP | TUCMD_IP | TXD_CMD_TSE,
        54,
        1460,
    );
    let d = data(
        n.tx_data(5, &t),
        t.len(),
        TXD_CMD_TSE | RS_EOP,
        POPTS_IXSM | POPTS_TXSM,
        0,
    );
    n.tx_push(&[ctx, d]);
    // One receive buffer left: one segment lands, the others are dropped.
    n.wait_tx_head(n.tx_tail);
    assert_eq!(n.r(RDH), 2);
    check_ipv4_tcp(&n.rx_data(1, usize::from(n.rx_desc(1).0)));
    assert!(n.r(MPC) >= 2);
    // Many frames with no buffers at all: all consumed, none to the backend.
    for _ in 0..10 {
        n.send_legacy(&frame);
    }
    n.wait_tx_head(n.tx_tail);
    n.pump();
    assert_eq!(n.peer.pending_from_guest(), 0);
    // Frames from the network are not received in loopback.
    n.rx_give(4);
    n.peer.inject(NetHdr::default(), &frame).unwrap();
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(n.r(RDH), 2);
    // Back to normal.
    n.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_BAM);
    n.send_legacy(&frame);
    n.take_frames(1);
}

#[test]
fn reset_while_busy_and_drop_stop_cleanly() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(8);
    for i in 0..8 {
        n.send_legacy(&eth(PEER_MAC, 0x0800, &payload(1000, i)));
        n.peer
            .inject(NetHdr::default(), &eth(MAC, 0x0800, &payload(1000, i)))
            .unwrap();
    }
    n.reset_hw();
    assert_eq!((n.r(TDH), n.r(RDH), n.r(TCTL) & TCTL_EN), (0, 0, 0));
    // The device comes back up and works.
    n.up();
    n.rx_give(8);
    n.send_legacy(&eth(PEER_MAC, 0x0800, &payload(64, 99)));
    n.eventually("sent after reset", |n| {
        n.peer
            .take_all()
            .iter()
            .any(|(_, f)| f.len() == 78 && f[14] == 99)
    });
    let start = std::time::Instant::now();
    drop(n);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn no_dma_without_bus_mastering() {
    let mut n = Nic::new(Offloads::default());
    n.up();
    n.rx_give(4);
    n.dev
        .write_config(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    let frame = eth(PEER_MAC, 0x0800, &payload(64, 12));
    n.send_legacy(&frame);
    n.peer
        .inject(NetHdr::default(), &eth(MAC, 0x0800, &payload(64, 13)))
        .unwrap();
    n.eventually("dropped", |n| {
        n.dev.stats().rx_dropped.load(Ordering::SeqCst) == 1
    });
    n.pump();
    assert_eq!((n.r(TDH), n.r(RDH), n.peer.pending_from_guest()), (0, 0, 0));
    let cmd = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    n.dev.write_config(PCI_COMMAND, &cmd.to_le_bytes());
    assert_eq!(n.take_frames(1)[0].1, frame);
}
