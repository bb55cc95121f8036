//! The tap backend: the test makes a tap (MTU 9000, no IPv6, up), binds a
//! packet socket with `PACKET_VNET_HDR` to it, and runs the tapir binary
//! attached to it; a thread echoes what the guest sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tapir_net_backend::hdr::NEEDS_CSUM;
use tapir_net_backend::NetHdr;
use tapir_test_support::net::{
    ip, privileged, unique, up_quiet, veth_pair, LinkGuard, PacketSocket, PACKET_VNET_HDR_LEN,
};

use crate::frames::{swap_macs, EchoCore, Rules, Tally};
use crate::guest::Cell;
use crate::{run_binary, Run, StopFlag};

const ETH_P_ALL: u16 = 3;

/// A tap made for one test, removed on drop.
struct Tap {
    guard: LinkGuard,
}

impl Tap {
    /// A persistent tap `name`: MTU 9000, IPv6 off (the host sends nothing
    /// on it), up.
    fn make(name: &str) -> Tap {
        let guard = LinkGuard(name.to_string());
        assert!(
            ip(&["tuntap", "add", "dev", name, "mode", "tap"]),
            "ip tuntap add {name}"
        );
        up_quiet(name, 9000);
        Tap { guard }
    }

    fn name(&self) -> &str {
        &self.guard.0
    }
}

/// The frame as it was on the wire: the kernel hands a received frame's
/// 802.1Q tag to packet sockets apart from it. Put back after the MAC
/// addresses, moving a partial checksum's start with it.
fn retag(hdr: &mut NetHdr, frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len() + 4);
    f.extend_from_slice(&frame[..12]);
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    if hdr.flags & NEEDS_CSUM != 0 {
        hdr.csum_start += 4;
    }
    if hdr.hdr_len != 0 {
        hdr.hdr_len += 4;
    }
    f
}

/// Echoes every frame the guest sends until `stop`, then what it saw.
fn echo_loop(sock: PacketSocket, rules: Rules, stop: Arc<AtomicBool>) -> Tally {
    let mut core = EchoCore::new(rules);
    let mut buf = vec![0u8; 70000];
    let no_offloads = [0u8; PACKET_VNET_HDR_LEN];
    loop {
        let meta = match sock.recv_meta(&mut buf, 100) {
            Ok(Some(m)) => m,
            Ok(None) if stop.load(Ordering::SeqCst) => return core.finish(),
            Ok(None) => continue,
            Err(e) => panic!("packet socket: {e}"),
        };
        if meta.outgoing || meta.len < PACKET_VNET_HDR_LEN {
            continue;
        }
        let mut hdr = NetHdr::from_bytes(&buf[..PACKET_VNET_HDR_LEN]);
        let frame = &buf[PACKET_VNET_HDR_LEN..meta.len];
        let frame = match meta.vlan {
            Some((tpid, tci)) if frame.len() >= 12 => retag(&mut hdr, frame, tpid, tci),
            _ => frame.to_vec(),
        };
        for echo in core.guest_sent(&hdr, &frame) {
            match sock.send(&no_offloads, &echo) {
                Ok(()) => core.echo_sent(&echo),
                Err(e) => core.echo_lost(e.kind()),
            }
        }
    }
}

/// None: skipped here (no root or no /dev/net/tun).
pub fn run(cell: &Cell) -> Option<Run> {
    run_with(cell, "")
}

/// [`run`], with `extra` (`,key=value...`) appended to the `--nic`.
pub fn run_with(cell: &Cell, extra: &str) -> Option<Run> {
    if !privileged(cell.test) {
        return None;
    }
    let start = Instant::now();
    let tap = Tap::make(&unique("dp", cell.model.tag()));
    let nic = format!(
        "model={},net=tap,ifname={}{extra}",
        cell.model.nic_model(),
        tap.name()
    );
    let run = echo_run(cell, tap.name(), &nic, start);
    drop(tap);
    Some(run)
}

/// Runs the tapir binary with `--nic nic` while a thread echoes every
/// frame that appears on interface `wire`.
fn echo_run(cell: &Cell, wire: &str, nic: &str, start: Instant) -> Run {
    let sock = PacketSocket::bind(wire, ETH_P_ALL, true)
        .unwrap_or_else(|e| panic!("packet socket on {wire}: {e}"));
    let stop = StopFlag::default();
    let echo = {
        let (rules, stop) = (cell.rules(), stop.watch());
        std::thread::spawn(move || echo_loop(sock, rules, stop))
    };
    let cmdline = cell.cmdline(None);
    let out = run_binary(&cmdline, nic);
    stop.raise();
    let host = echo.join().unwrap();
    Run::of_binary(cmdline, out, host, start.elapsed())
}

/// `net=passthrough`: tapir makes its macvtap on one end of a veth pair
/// (MTU 9000, no IPv6, up); the echo runs on the other end. None: skipped
/// here (no root).
pub fn run_passthrough(cell: &Cell) -> Option<Run> {
    if !privileged(cell.test) {
        return None;
    }
    let start = Instant::now();
    let (parent, wire) = (
        unique("dpa", cell.model.tag()),
        unique("dpb", cell.model.tag()),
    );
    let _guard = veth_pair(&parent, &wire, 9000);
    let nic = format!(
        "model={},net=passthrough,host={parent}",
        cell.model.nic_model()
    );
    Some(echo_run(cell, &wire, &nic, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::build::{self, bytes, eth, tcp, udp};
    use crate::frames::{check, ETH_P_8021Q, ETH_P_TEST};
    use std::io::IoSlice;
    use std::time::Duration;
    use tapir_net_backend::{NetBackend, Offloads, TapBackend, TapConfig};
    use tapir_test_support::net::wait_readable;

    /// The echo over a real tap, with this test in the guest's place (a
    /// `TapBackend`, as tapir opens it): a tagged frame comes back tagged,
    /// a TSO packet as its segments, a partial checksum completed.
    #[test]
    fn echoes_over_a_real_tap() {
        if !privileged("datapath::tap::tests::echoes_over_a_real_tap") {
            return;
        }
        let tap = Tap::make(&unique("dp", "t"));
        let sock = PacketSocket::bind(tap.name(), ETH_P_ALL, true).unwrap();
        let rules = Rules {
            vlan: 5,
            maxframe: 9014,
        };
        let stop = StopFlag::default();
        let echo = {
            let stop = stop.watch();
            std::thread::spawn(move || echo_loop(sock, rules, stop))
        };
        let mut be = TapBackend::open(TapConfig {
            ifname: Some(tap.name().to_string()),
            fd: None,
            vnet_hdr: true,
        })
        .unwrap();
        be.set_offloads(Offloads::ALL).unwrap();

        let tagged = [eth(Some(5), ETH_P_TEST), bytes(8996, 1)].concat();
        let tso = tcp(0, &bytes(2500, 2), true);
        let tso_hdr = build::tso_hdr();
        let mut partial = udp(&bytes(300, 3), 0);
        build::l4_csum(&mut partial, 17, 6, true);
        let csum_hdr = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        for (h, f) in [
            (NetHdr::default(), &tagged),
            (tso_hdr, &tso),
            (csum_hdr, &partial),
        ] {
            be.send(&h, &[IoSlice::new(f)]).unwrap();
        }
        let mut echoes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65550];
        while echoes.len() < 5 && Instant::now() < deadline {
            match be.recv(&mut buf) {
                Ok((_, n)) => echoes.push(buf[..n].to_vec()),
                Err(_) => {
                    wait_readable(be.rx_fd(), 100);
                }
            }
        }
        stop.raise();
        let tally = echo.join().unwrap();
        assert_eq!(echoes.len(), 5, "{tally}");
        for e in &echoes {
            assert_eq!(&e[..6], &build::GUEST);
            assert_eq!(&e[6..12], &build::PEER);
            check(e, &rules, false).unwrap();
        }
        assert_eq!(echoes[0], swap_macs(&tagged), "tagged, as sent");
        assert_eq!(
            (tally.received, tally.sent, tally.tagged),
            (5, 5, 1),
            "{tally}"
        );
        assert_eq!(
            (tally.gso, tally.segments, tally.partial_csum),
            (1, 3, 2),
            "{tally}"
        );
        assert_eq!(tally.problem_count, 0, "{tally}");
        assert_eq!(tally.rx_hash, tally.tx_hash);
    }

    #[test]
    fn a_tag_is_put_back_with_the_checksum_start() {
        let frame: Vec<u8> = (0..40u8).collect();
        let mut hdr = NetHdr {
            flags: NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let f = retag(&mut hdr, &frame, ETH_P_8021Q, 5);
        assert_eq!(&f[..12], &frame[..12]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 0x05]);
        assert_eq!(&f[16..], &frame[12..]);
        assert_eq!((hdr.csum_start, hdr.hdr_len), (38, 0));
    }
}
