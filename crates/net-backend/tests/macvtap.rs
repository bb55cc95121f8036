//! The macvtap (passthrough) backend against the real kernel: a veth pair
//! stands in for the host NIC and the wire behind it (root needed; the
//! tests say so and pass vacuously elsewhere).

mod common;

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use common::*;
use tapir_net_backend::macvtap::{Mode, NAME_PREFIX};
use tapir_net_backend::{BackendError, MacvtapBackend, NetBackend, NetHdr, Offloads};

const GUEST_MAC: [u8; 6] = [0x02, 0x7a, 0x70, 0x00, 0x00, 0x01];

/// A veth pair `a` (the macvtap's parent) and `b` (the wire), both up.
fn veth(tag: &str) -> (LinkGuard, String, String) {
    let a = unique("mva", tag);
    let b = unique("mvb", tag);
    let guard = veth_pair(&a, &b, 1500);
    (guard, a, b)
}

fn frame(dst: [u8; 6], src: [u8; 6], fill: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_TEST.to_be_bytes());
    f.resize(200, fill);
    f
}

#[test]
fn a_macvtap_carries_frames_both_ways_and_goes_on_drop() {
    if !privileged("a_macvtap_carries_frames_both_ways_and_goes_on_drop") {
        return;
    }
    let (_g, a, b) = veth("x");
    let mut be = MacvtapBackend::open(&a, GUEST_MAC, Mode::Bridge).unwrap();
    let name = be.ifname().to_string();
    assert!(name.starts_with(NAME_PREFIX), "{name}");
    assert_eq!(be.host(), a);
    assert!(be.describe().contains("mode bridge"), "{}", be.describe());
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
            .unwrap()
            .trim(),
        "02:7a:70:00:00:01"
    );
    assert_eq!(
        be.offloads(),
        Offloads::ALL,
        "a macvtap carries vnet headers"
    );

    let wire = PacketSocket::bind(&b, ETH_P_TEST, false).unwrap();
    // guest -> wire
    let out = frame([0x02, 0, 0, 0, 0, 0x99], GUEST_MAC, 0x11);
    be.send(&NetHdr::default(), &[IoSlice::new(&out)]).unwrap();
    let got = wire.recv(3000).expect("the frame reached the wire");
    assert_eq!(got, out);
    // wire -> guest
    let back = frame(GUEST_MAC, [0x02, 0, 0, 0, 0, 0x99], 0x22);
    wire.send(&[], &back).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65550];
    let received = loop {
        match be.recv(&mut buf) {
            Ok((_, n)) if buf[12..14] == ETH_P_TEST.to_be_bytes() => break buf[..n].to_vec(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nothing came back");
                wait_readable(be.rx_fd(), 100);
            }
            Err(e) => panic!("recv: {e}"),
        }
    };
    assert_eq!(received, back);

    let index = ifindex_of(&name);
    drop(be);
    assert!(iface_gone(&name, index), "the macvtap is deleted on drop");
}

#[test]
fn private_mode_keeps_two_guests_apart_and_bridge_mode_does_not() {
    if !privileged("private_mode_keeps_two_guests_apart_and_bridge_mode_does_not") {
        return;
    }
    let (_g, a, _b) = veth("p");
    let mac2 = [0x02, 0x7a, 0x70, 0x00, 0x00, 0x02];
    for (mode, reaches) in [(Mode::Bridge, true), (Mode::Private, false)] {
        let mut one = MacvtapBackend::open(&a, GUEST_MAC, mode).unwrap();
        let mut two = MacvtapBackend::open(&a, mac2, mode).unwrap();
        let f = frame(mac2, GUEST_MAC, 0x33);
        one.send(&NetHdr::default(), &[IoSlice::new(&f)]).unwrap();
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut buf = vec![0u8; 65550];
        let mut seen = false;
        while Instant::now() < deadline && !seen {
            match two.recv(&mut buf) {
                Ok((_, n)) => seen = buf[..n] == f[..],
                Err(_) => {
                    wait_readable(two.rx_fd(), 50);
                }
            }
        }
        assert_eq!(seen, reaches, "mode {}", mode.name());
    }
}

#[test]
fn unsuitable_host_nics_are_refused_with_one_line() {
    if !privileged("unsuitable_host_nics_are_refused_with_one_line") {
        return;
    }
    let (_g, a, _b) = veth("u");
    let mut be = MacvtapBackend::open(&a, GUEST_MAC, Mode::Bridge).unwrap();
    let e = MacvtapBackend::open(be.ifname(), GUEST_MAC, Mode::Bridge).unwrap_err();
    assert!(matches!(e, BackendError::NotAHostNic { .. }), "{e}");
    assert!(e.to_string().contains("is a macvtap"), "{e}");
    let _ = be.set_offloads(Offloads::default());
    drop(be);

    let br = unique("mvbr", "u");
    assert!(ip(&["link", "add", &br, "type", "bridge"]));
    let _bg = LinkGuard(br.clone());
    assert!(ip(&["link", "set", "dev", &a, "master", &br]));
    let e = MacvtapBackend::open(&a, GUEST_MAC, Mode::Bridge).unwrap_err();
    assert!(matches!(e, BackendError::BridgePort { .. }), "{e}");
    let e = MacvtapBackend::open(&br, GUEST_MAC, Mode::Bridge).unwrap_err();
    assert!(e.to_string().contains("is a bridge"), "{e}");
}

#[test]
fn a_macvtap_left_by_a_killed_tapir_is_removed_at_the_next_open() {
    if !privileged("a_macvtap_left_by_a_killed_tapir_is_removed_at_the_next_open") {
        return;
    }
    let (_g, a, _b) = veth("s");
    // A pid that is not running: above pid_max's usual range.
    let stale = format!("{NAME_PREFIX}4194000n0");
    assert!(ip(&[
        "link", "add", "link", &a, "name", &stale, "type", "macvtap", "mode", "bridge"
    ]));
    let _sg = LinkGuard(stale.clone());
    let be = MacvtapBackend::open(&a, GUEST_MAC, Mode::Bridge).unwrap();
    assert!(!iface_exists(&stale), "the stale macvtap is gone");
    drop(be);
}

/// Interface indexes are per network namespace, so a `/dev/tapN` may be
/// another device's (made in another namespace, or left over): here every
/// `/dev/tapN` the new macvtap could get is /dev/null's number. The backend
/// opens a node of its own instead, carries frames, and removes that node
/// when it goes.
#[test]
fn a_dev_tap_node_of_another_device_is_not_opened() {
    use std::os::unix::fs::FileTypeExt;
    if !privileged("a_dev_tap_node_of_another_device_is_not_opened") {
        return;
    }
    let (_g, a, b) = veth("n");
    let top = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("ifindex")).ok())
        .filter_map(|s| s.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut fakes = Vec::new();
    for i in top + 1..=top + 64 {
        let p = format!("/dev/tap{i}");
        let c = std::ffi::CString::new(p.clone()).unwrap();
        // SAFETY: mknod(2) reads the NUL-terminated path only.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0 {
            fakes.push(p);
        }
    }
    let opened = MacvtapBackend::open(&a, GUEST_MAC, Mode::Bridge);
    for p in &fakes {
        let _ = std::fs::remove_file(p);
    }
    let mut be = opened.expect("the macvtap opens through a node of its own");
    let wire = PacketSocket::bind(&b, ETH_P_TEST, false).unwrap();
    let out = frame([0x02, 0, 0, 0, 0, 0x98], GUEST_MAC, 0x33);
    be.send(&NetHdr::default(), &[IoSlice::new(&out)]).unwrap();
    assert_eq!(wire.recv(3000).expect("the frame reached the wire"), out);
    // Its own node (the other tests of this process may hold theirs).
    let index = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", be.ifname())).unwrap();
    let own = std::path::PathBuf::from(format!(
        "/dev/tapir-tap{}.{}",
        index.trim(),
        std::process::id()
    ));
    assert!(
        std::fs::symlink_metadata(&own).is_ok_and(|m| m.file_type().is_char_device()),
        "{} was not made",
        own.display()
    );
    drop(be);
    assert!(!own.exists(), "{} left behind", own.display());
}
