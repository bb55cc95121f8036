//! Tap backend against the real kernel (root and /dev/net/tun needed; the
//! tests print a note and pass vacuously elsewhere).

mod common;

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use tapir_net_backend::hdr::{GSO_TCPV4, NEEDS_CSUM};
use tapir_net_backend::offload::{self, fold, sum_words};
use tapir_net_backend::{BackendError, NetBackend, NetHdr, Offloads, TapBackend, TapConfig};

fn open_named(name: &str) -> TapBackend {
    TapBackend::open(TapConfig {
        ifname: Some(name.into()),
        fd: None,
        vnet_hdr: true,
    })
    .unwrap()
}

/// Receives from the backend until a frame matching `want` arrives (the
/// host stack may send IPv6 autoconfiguration traffic meanwhile).
fn recv_matching(be: &mut TapBackend, want: impl Fn(&[u8]) -> bool) -> Option<(NetHdr, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65550];
    while Instant::now() < deadline {
        match be.recv(&mut buf) {
            Ok((h, n)) if want(&buf[..n]) => return Some((h, buf[..n].to_vec())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(be.rx_fd(), 100);
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    None
}

#[test]
fn created_tap_sends_receives_and_vanishes() {
    if !privileged("created_tap_sends_receives_and_vanishes") {
        return;
    }
    let name = unique("tt", "a");
    let _guard = LinkGuard(name.clone());
    let mut be = open_named(&name);
    assert!(be.created());
    assert_eq!(be.ifname(), name);
    assert_eq!(be.describe(), format!("tap {name}"));
    assert!(be.vnet_hdr());
    assert_eq!(be.offloads(), Offloads::ALL);
    assert!(be.is_up().unwrap(), "a created tap is brought up");
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags"))
            .unwrap()
            .trim(),
        "0x5002"
    );

    let mut buf = vec![0u8; 65550];
    assert_eq!(
        be.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );

    // guest -> host: what `send` writes arrives on the host side of the tap.
    let host = PacketSocket::bind(&name, ETH_P_TEST, false).unwrap();
    let frame = test_frame(1, 100);
    let n = be
        .send(
            &NetHdr::default(),
            &[IoSlice::new(&frame[..20]), IoSlice::new(&frame[20..])],
        )
        .unwrap();
    assert_eq!(n, frame.len());
    assert_eq!(host.recv(2000).as_deref(), Some(&frame[..]));

    // Many slices (coalesced above the iovec limit) still make one frame.
    let big = test_frame(2, 3000);
    let slices: Vec<IoSlice> = big.chunks(2).map(IoSlice::new).collect();
    assert_eq!(be.send(&NetHdr::default(), &slices).unwrap(), big.len());
    assert_eq!(host.recv(2000).as_deref(), Some(&big[..]));

    // host -> guest: a frame the host transmits on the tap reaches `recv`.
    let back = test_frame(3, 64);
    host.send(&[], &back).unwrap();
    let (h, got) = recv_matching(&mut be, |f| {
        f.len() > 13 && f[11] == 3 && f[12..14] == ETH_P_TEST.to_be_bytes()
    })
    .expect("frame from the host side");
    assert_eq!(got, back);
    assert!(h.is_plain());
    let st = be.stats();
    assert_eq!((st.tx_frames, st.tx_errors), (2, 0));
    assert!(st.rx_frames >= 1);

    drop(be);
    assert!(
        !iface_exists(&name),
        "a tap tapir created vanishes on close"
    );
}

#[test]
fn kernel_picks_a_name() {
    if !privileged("kernel_picks_a_name") {
        return;
    }
    let be = TapBackend::open(TapConfig {
        ifname: None,
        fd: None,
        vnet_hdr: false,
    })
    .unwrap();
    // No name-based cleanup guard: the kernel may give this name to another
    // test's tap once ours is gone; a non-persistent tap goes with its fd.
    let name = be.ifname().to_string();
    let index = ifindex_of(&name);
    assert!(name.starts_with("tap"), "{name}");
    assert!(be.created() && !be.vnet_hdr());
    assert_eq!(be.offloads(), Offloads::default());
    drop(be);
    assert!(iface_gone(&name, index), "{name} is still there");
}

#[test]
fn down_interface_drops_and_counts() {
    if !privileged("down_interface_drops_and_counts") {
        return;
    }
    let name = unique("tt", "d");
    let _guard = LinkGuard(name.clone());
    let mut be = open_named(&name);
    be.bring_down().unwrap();
    assert!(!be.is_up().unwrap());
    let frame = test_frame(4, 60);
    assert_eq!(
        be.send(&NetHdr::default(), &[IoSlice::new(&frame)])
            .unwrap(),
        frame.len()
    );
    assert_eq!(be.stats().tx_errors, 1);
    assert_eq!(be.stats().tx_frames, 0);
    assert_eq!(be.link_down_drops(), 1);
    be.bring_up().unwrap();
    be.send(&NetHdr::default(), &[IoSlice::new(&frame)])
        .unwrap();
    assert_eq!(be.stats().tx_frames, 1);
}

#[test]
fn existing_persistent_tap_is_attached_and_left_alone() {
    if !privileged("existing_persistent_tap_is_attached_and_left_alone") {
        return;
    }
    let name = unique("tt", "p");
    let _guard = LinkGuard(name.clone());
    assert!(ip(&["tuntap", "add", "mode", "tap", "name", &name]));
    let be = open_named(&name);
    assert!(!be.created());
    assert!(be.vnet_hdr(), "attaching asks for the vnet header");
    assert!(
        !be.is_up().unwrap(),
        "an existing tap's state is the admin's"
    );
    // Single queue: a second opener is told it is busy.
    let e = TapBackend::open(TapConfig {
        ifname: Some(name.clone()),
        fd: None,
        vnet_hdr: true,
    })
    .unwrap_err();
    assert!(matches!(e, BackendError::Busy { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("tap '{name}' is in use by another process")
    );
    drop(be);
    assert!(iface_exists(&name), "a persistent tap stays");
}

#[test]
fn non_tap_interfaces_are_refused() {
    if !privileged("non_tap_interfaces_are_refused") {
        return;
    }
    let e = TapBackend::open(TapConfig {
        ifname: Some("lo".into()),
        fd: None,
        vnet_hdr: true,
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "'lo' is not a tap");
    let name = unique("tu", "n");
    let _guard = LinkGuard(name.clone());
    assert!(ip(&["tuntap", "add", "mode", "tun", "name", &name]));
    let e = TapBackend::open(TapConfig {
        ifname: Some(name.clone()),
        fd: None,
        vnet_hdr: true,
    })
    .unwrap_err();
    assert_eq!(e.to_string(), format!("'{name}' is not a tap"));
}

/// Opens /dev/net/tun and attaches it like a management process would.
fn raw_tun_fd(name: &str, flags: i16) -> OwnedFd {
    let path = c"/dev/net/tun";
    // SAFETY: a valid path string; plain open(2).
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh fd owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads/writes a 40-byte struct ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
    fd
}

#[test]
fn adopts_an_open_tap_fd() {
    if !privileged("adopts_an_open_tap_fd") {
        return;
    }
    let name = unique("tt", "f");
    let _guard = LinkGuard(name.clone());
    let owned = raw_tun_fd(
        &name,
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16,
    );
    let raw = owned.as_raw_fd();
    // Wrong name: refused, and the fd is still ours.
    let e = TapBackend::open(TapConfig {
        ifname: Some("other0".into()),
        fd: Some(raw),
        vnet_hdr: true,
    })
    .unwrap_err();
    assert!(matches!(e, BackendError::FdNameMismatch { .. }), "{e}");
    let raw = std::os::fd::IntoRawFd::into_raw_fd(owned);
    let mut be = TapBackend::open(TapConfig {
        ifname: Some(name.clone()),
        fd: Some(raw),
        vnet_hdr: true,
    })
    .unwrap();
    assert_eq!(be.ifname(), name);
    assert!(!be.created() && be.vnet_hdr());
    assert_eq!(be.offloads(), Offloads::ALL);
    // SAFETY: F_GETFL on an fd the backend owns; touches no memory.
    assert!(unsafe { libc::fcntl(raw, libc::F_GETFL) } & libc::O_NONBLOCK != 0);
    let mut buf = vec![0u8; 2048];
    assert_eq!(
        be.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    be.bring_up().unwrap();
    let host = PacketSocket::bind(&name, ETH_P_TEST, false).unwrap();
    let frame = test_frame(5, 80);
    be.send(&NetHdr::default(), &[IoSlice::new(&frame)])
        .unwrap();
    assert_eq!(host.recv(2000).as_deref(), Some(&frame[..]));
    drop(be);
    assert!(
        !iface_exists(&name),
        "the adopted fd was closed: the non-persistent tap is gone"
    );

    // A tun (layer 3) fd is refused and left open.
    let tun_name = unique("tu", "f");
    let _g2 = LinkGuard(tun_name.clone());
    let tun = raw_tun_fd(&tun_name, (libc::IFF_TUN | libc::IFF_NO_PI) as i16);
    let e = TapBackend::open(TapConfig {
        ifname: None,
        fd: Some(tun.as_raw_fd()),
        vnet_hdr: true,
    })
    .unwrap_err();
    assert!(e.to_string().contains("is a tun (layer 3)"), "{e}");
    // SAFETY: F_GETFD touches no memory.
    assert!(unsafe { libc::fcntl(tun.as_raw_fd(), libc::F_GETFD) } >= 0);
}

#[test]
fn permission_error_is_clear() {
    if !privileged("permission_error_is_clear") {
        return;
    }
    let name = unique("tt", "x");
    let _guard = LinkGuard(name.clone());
    let n = name.clone();
    let e = without_net_admin(move || {
        TapBackend::open(TapConfig {
            ifname: Some(n),
            fd: None,
            vnet_hdr: true,
        })
        .map(|_| ())
        .unwrap_err()
    });
    assert_eq!(
        e.to_string(),
        "creating a tap needs CAP_NET_ADMIN (run as root or grant cap_net_admin)"
    );
}

/// An Ethernet + IPv4 + TCP frame with `payload`, its TCP checksum field
/// holding the pseudo-header sum (as a guest leaves it with NEEDS_CSUM).
fn tcp4_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00];
    let tot = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    let c = offload::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 100, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let tcp_len = (20 + payload.len()) as u64;
    let pseudo = fold(sum_words(&f[26..34], 6 + tcp_len));
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn kernel_agrees_with_software_offloads() {
    if !privileged("kernel_agrees_with_software_offloads") {
        return;
    }
    let name = unique("tt", "o");
    let _guard = LinkGuard(name.clone());
    let mut be = open_named(&name);
    // The host side transmits with a virtio_net_hdr (10 bytes) toward us.
    let host = PacketSocket::bind(&name, 0x0800, true).unwrap();
    let is_tcp =
        |f: &[u8]| f.len() > 47 && f[12..14] == [8, 0] && f[23] == 6 && f[36..38] == [0, 80];

    // 1. Offloads off: the kernel completes the checksum; so must we.
    let frame = tcp4_frame(b"checksum me, please");
    let csum = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    host.send(&csum.to_bytes()[..10], &frame).unwrap();
    let (h, got) = recv_matching(&mut be, is_tcp).expect("checksummed frame");
    assert!(h.is_plain(), "{h:?}");
    let mut ours = frame.clone();
    offload::complete_checksum(&csum, &mut ours).unwrap();
    assert_eq!(got, ours);

    // 2. Offloads off: the kernel segments in software; so must we.
    let payload: Vec<u8> = (0..2900u32).map(|i| (i % 251) as u8).collect();
    let frame = tcp4_frame(&payload);
    let gso = NetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1000,
        hdr_len: 54,
        ..csum
    };
    host.send(&gso.to_bytes()[..10], &frame).unwrap();
    let ours = offload::segment(&gso, &frame).unwrap();
    assert_eq!(ours.len(), 3);
    for (i, seg) in ours.iter().enumerate() {
        let (h, got) = recv_matching(&mut be, is_tcp).unwrap_or_else(|| panic!("segment {i}"));
        assert!(h.is_plain(), "{h:?}");
        assert_eq!(&got, seg, "segment {i} differs from the kernel's");
    }

    // 3. Offloads on: the super-frame arrives whole, with its header.
    assert_eq!(
        be.set_offloads(Offloads {
            tso4: true,
            ..Default::default()
        })
        .unwrap_err()
        .kind(),
        io::ErrorKind::InvalidInput
    );
    be.set_offloads(Offloads::ALL).unwrap();
    assert_eq!(be.enabled_offloads(), Offloads::ALL);
    host.send(&gso.to_bytes()[..10], &frame).unwrap();
    let (h, got) = recv_matching(&mut be, is_tcp).expect("GSO frame");
    assert_eq!(
        (h.flags & NEEDS_CSUM, h.gso_type, h.gso_size),
        (NEEDS_CSUM, GSO_TCPV4, 1000)
    );
    assert_eq!((h.csum_start, h.csum_offset), (34, 16));
    assert_eq!(got.len(), frame.len());
    assert_eq!(got[54..], frame[54..]);
}

#[test]
fn guest_buffers_are_written_and_read_by_the_kernel_directly() {
    if !privileged("guest_buffers_are_written_and_read_by_the_kernel_directly") {
        return;
    }
    use tapir_net_backend::guest_buf::{self, GuestBuf};
    let name = unique("tt", "g");
    let _guard = LinkGuard(name.clone());
    let mut be = open_named(&name);
    let host = PacketSocket::bind(&name, ETH_P_TEST, false).unwrap();

    // guest -> host: a frame gathered from three pieces of "guest memory".
    let frame = test_frame(4, 1000);
    let mut mem = frame.clone();
    let p = mem.as_mut_ptr();
    // SAFETY: the three ranges lie within `mem`, alive until the end.
    let bufs = unsafe {
        [
            GuestBuf::new(p, 10),
            GuestBuf::new(p.add(10), 0),
            GuestBuf::new(p.add(10), frame.len() - 10),
        ]
    };
    assert_eq!(
        be.send_guest(&NetHdr::default(), &bufs).unwrap(),
        frame.len()
    );
    assert_eq!(host.recv(2000).as_deref(), Some(&frame[..]));

    // host -> guest: read into two buffers, the first one small.
    let back = test_frame(5, 1400);
    host.send(&[], &back).unwrap();
    let mut rx = vec![0u8; 70000];
    let rp = rx.as_mut_ptr();
    // SAFETY: both ranges lie within `rx`, alive until the end.
    let rbufs = unsafe { [GuestBuf::new(rp, 100), GuestBuf::new(rp.add(100), 69900)] };
    let deadline = Instant::now() + Duration::from_secs(3);
    let n = loop {
        assert!(Instant::now() < deadline, "no frame from the host side");
        match be.recv_guest(&rbufs) {
            Ok((h, n)) if n > 13 && rx[11] == 5 && rx[12..14] == ETH_P_TEST.to_be_bytes() => {
                assert!(h.is_plain());
                break n;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(be.rx_fd(), 100);
            }
            Err(e) => panic!("recv_guest: {e}"),
        }
    };
    assert_eq!(&rx[..n], &back[..]);
    assert_eq!(guest_buf::total_len(&rbufs), 70000);
}
