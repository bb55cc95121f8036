//! End-to-end flows between the smoltcp guest and host sockets.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{dhcpv4, tcp::State};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Cidr};
use tapir_net_backend::NetBackend;

use super::*;
use crate::{HostFwd, Limits};

/// Accepts one connection within `secs` (None on timeout).
fn accept_within(l: &TcpListener, secs: u64) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return Some(s);
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    None
}

/// A host peer: accepts one connection, sends `n_down` pattern bytes then
/// FIN, and reads until EOF; with `after_eof` it sends only once the
/// guest's FIN arrived (a half-closed connection carrying data). Gives
/// (bytes read, all matched the pattern).
fn serve_bulk(l: TcpListener, n_down: usize, after_eof: bool) -> JoinHandle<(usize, bool)> {
    thread::spawn(move || {
        let s = accept_within(&l, 20).expect("no connection reached the host listener");
        let mut w = s.try_clone().unwrap();
        let send = move || {
            let mut buf = vec![0u8; 65536];
            let mut off = 0;
            while off < n_down {
                let k = buf.len().min(n_down - off);
                fill(&mut buf[..k], off);
                w.write_all(&buf[..k]).unwrap();
                off += k;
            }
            w.shutdown(Shutdown::Write).unwrap();
        };
        let (writer, later) = if after_eof {
            (None, Some(send))
        } else {
            (Some(thread::spawn(send)), None)
        };
        let (mut r, mut got, mut ok) = (s, 0, true);
        let mut buf = vec![0u8; 65536];
        loop {
            let k = r.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            ok &= check(&buf[..k], got);
            got += k;
        }
        if let Some(w) = writer {
            w.join().unwrap();
        }
        if let Some(mut send) = later {
            send();
        }
        (got, ok)
    })
}

/// Drives guest socket `h` against `host`: `n_up` bytes up then FIN,
/// `n_down` down until the host's FIN.
fn guest_bulk(
    net: &mut Net,
    h: SocketHandle,
    host: JoinHandle<(usize, bool)>,
    n_up: usize,
    n_down: usize,
) {
    let (mut up, mut down, mut ok) = (0usize, 0usize, true);
    let mut chunk = vec![0u8; 32768];
    let done = net.run_until(90, |net| {
        let s = net.guest.tcp(h);
        while s.can_send() && up < n_up {
            let k = chunk.len().min(n_up - up);
            fill(&mut chunk[..k], up);
            let sent = s.send_slice(&chunk[..k]).unwrap();
            up += sent;
            if sent == 0 {
                break;
            }
        }
        if up == n_up && s.may_send() {
            s.close();
        }
        while s.can_recv() {
            let k = s.recv_slice(&mut chunk).unwrap();
            ok &= check(&chunk[..k], down);
            down += k;
        }
        down == n_down && !s.may_recv() && host.is_finished()
    });
    assert!(
        done,
        "transfer stalled: up {up}/{n_up}, down {down}/{n_down}, state {}",
        net.guest.tcp(h).state()
    );
    assert!(ok, "data toward the guest corrupted");
    let (got, host_ok) = host.join().unwrap();
    assert_eq!(got, n_up, "bytes the host received");
    assert!(host_ok, "data toward the host corrupted");
    // Both sides done: the flow goes away.
    assert!(
        net.run_until(10, |n| n.be.user_stats().tcp_flows == 0),
        "flow not reaped: {:?}",
        net.be.tcp.states(&net.be.core)
    );
}

fn loopback_cfg() -> UserNetConfig {
    UserNetConfig {
        host_loopback: true,
        ..Default::default()
    }
}

/// Waits until guest socket `h` is in `want` (or a deadline).
fn wait_state(net: &mut Net, h: SocketHandle, secs: u64, want: State) -> bool {
    net.run_until(secs, |n| n.guest.tcp(h).state() == want)
}

#[test]
fn dhcp_client_gets_lease() {
    let mut net = Net::new(UserNetConfig::default(), false);
    let h = net.guest.sockets.add(dhcpv4::Socket::new());
    let mut got = None;
    let ok = net.run_until(20, |n| {
        if let Some(dhcpv4::Event::Configured(c)) =
            n.guest.sockets.get_mut::<dhcpv4::Socket>(h).poll()
        {
            got = Some((
                c.address,
                c.router,
                c.dns_servers.iter().copied().collect::<Vec<_>>(),
            ));
        }
        got.is_some()
    });
    assert!(ok, "no DHCP lease");
    let (addr, router, dns) = got.unwrap();
    assert_eq!(addr, Ipv4Cidr::new(GUEST_IP, 24));
    assert_eq!(router, Some(GW));
    assert_eq!(dns, vec![DNS]);
    let s = net.be.user_stats();
    assert_eq!(s.dhcp_leases, 1);
    assert!(s.dhcp_replies >= 2, "offer and ack");
}

#[test]
fn tcp_bulk_to_host_loopback_via_gateway() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (n_up, n_down) = (3 << 20, 3 << 20);
    let host = serve_bulk(l, n_down, false);
    let mut net = Net::new(loopback_cfg(), true);
    let h = net.guest.tcp_socket(256 * 1024);
    net.guest.connect(h, (GW, port), 40000);
    guest_bulk(&mut net, h, host, n_up, n_down);
    let s = net.be.user_stats();
    assert_eq!((s.connect_failed, s.tcp_refused_policy), (0, 0));
}

/// A guest that leaves TCP checksums to the NIC (virtio CSUM): the NAT
/// completes them, else smoltcp would drop every segment as corrupt. The
/// same frames sent as plain frames (no NEEDS_CSUM) are dropped: the check
/// can fail.
#[test]
fn tcp_with_partial_checksums_from_the_guest() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let host = serve_bulk(l, 200_000, false);
    let mut net = Net::new(loopback_cfg(), true);
    net.partial_csum = true;
    let h = net.guest.tcp_socket(64 * 1024);
    net.guest.connect(h, (GW, port), 40005);
    guest_bulk(&mut net, h, host, 300_000, 200_000);

    // Without NEEDS_CSUM such frames are corrupt: no connection.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut net = Net::new(loopback_cfg(), true);
    net.partial_csum = true;
    net.partial_csum_unflagged = true;
    let h = net.guest.tcp_socket(4096);
    net.guest.connect(h, (GW, port), 40006);
    net.run_for(1500);
    assert_eq!(net.guest.tcp(h).state(), State::SynSent);
    drop(l);
}

/// A guest that takes TSO frames (virtio GUEST_TSO4 + GUEST_CSUM) gets
/// 64 KiB-class segments with a GSO header carrying its own MSS; the data
/// arrives intact both ways. Without set_offloads it gets none.
#[test]
fn tso_frames_to_a_guest_that_takes_them() {
    for tso in [true, false] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let host = serve_bulk(l, 2_000_000, false);
        let mut net = Net::new(loopback_cfg(), true);
        if tso {
            net.be
                .set_offloads(tapir_net_backend::Offloads {
                    csum: true,
                    tso4: true,
                    ..Default::default()
                })
                .unwrap();
        }
        let h = net.guest.tcp_socket(256 * 1024);
        net.guest.connect(h, (GW, port), 40007);
        guest_bulk(&mut net, h, host, 100_000, 2_000_000);
        assert_eq!(net.gso_frames > 0, tso, "GSO frames: {}", net.gso_frames);
    }
}

/// The zero-copy entry points (send_guest, recv_guest) with frames split
/// over two guest buffers carry a transfer as send/recv do.
#[test]
fn bulk_through_guest_buffers() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let host = serve_bulk(l, 500_000, false);
    let mut net = Net::new(loopback_cfg(), true);
    net.guest_bufs = true;
    let h = net.guest.tcp_socket(64 * 1024);
    net.guest.connect(h, (GW, port), 40008);
    guest_bulk(&mut net, h, host, 300_000, 500_000);
}

#[test]
fn tcp_to_world_address() {
    // The guest sends, closes, and only then gets the host's answer.
    // The guest talks to a world address; the test remaps it to 127.0.0.1
    // (sending nothing off this machine). Real non-loopback host addresses
    // are not used: tests here must only reach loopback.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let host = serve_bulk(l, 700_000, true);
    let mut net = Net::with(UserNetConfig::default(), true, |t| {
        t.remap.push((WORLD, Ipv4Addr::LOCALHOST))
    });
    let h = net.guest.tcp_socket(64 * 1024);
    net.guest.connect(h, (WORLD, port), 40001);
    guest_bulk(&mut net, h, host, 500_000, 700_000);
}

#[test]
fn closed_port_gets_rst() {
    let port = free_tcp_port();
    let mut net = Net::new(loopback_cfg(), true);
    let h = net.guest.tcp_socket(4096);
    net.guest.connect(h, (GW, port), 40002);
    let t = Instant::now();
    assert!(
        wait_state(&mut net, h, 5, State::Closed),
        "no RST: {}",
        net.guest.tcp(h).state()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "RST took {:?}",
        t.elapsed()
    );
    let s = net.be.user_stats();
    assert_eq!(s.connect_failed, 1);
    assert!(net.run_until(5, |n| n.be.user_stats().tcp_flows == 0));
}

#[test]
fn gateway_refused_without_loopback() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut net = Net::new(UserNetConfig::default(), true);
    let h = net.guest.tcp_socket(4096);
    net.guest.connect(h, (GW, port), 40003);
    assert!(wait_state(&mut net, h, 5, State::Closed), "not refused");
    l.set_nonblocking(true).unwrap();
    assert!(l.accept().is_err(), "the host listener must not be reached");
    let s = net.be.user_stats();
    assert_eq!(
        (s.tcp_refused_policy, s.connect_failed, s.tcp_flows),
        (1, 0, 0)
    );
    // A martian is refused the same way.
    let h = net.guest.tcp_socket(4096);
    net.guest
        .connect(h, (Ipv4Addr::new(127, 0, 0, 1), port), 40004);
    assert!(wait_state(&mut net, h, 5, State::Closed));
    assert_eq!(net.be.user_stats().tcp_refused_policy, 2);
}

#[test]
fn udp_echo_and_dns_relay() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let eport = echo.local_addr().unwrap().port();
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rport = resolver.local_addr().unwrap().port();
    for s in [&echo, &resolver] {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let echo_t = thread::spawn(move || {
        let mut b = [0u8; 2048];
        for _ in 0..2 {
            let (n, from) = echo.recv_from(&mut b).unwrap();
            echo.send_to(&b[..n], from).unwrap();
        }
    });
    let dns_t = thread::spawn(move || {
        let mut b = [0u8; 512];
        let (n, from) = resolver.recv_from(&mut b).unwrap();
        let mut answer = b[..n].to_vec();
        answer.extend_from_slice(b"-answer");
        resolver.send_to(&answer, from).unwrap();
        b[..n].to_vec()
    });
    let mut net = Net::with(loopback_cfg(), true, |t| {
        t.resolver = SocketAddrV4::new(Ipv4Addr::LOCALHOST, rport)
    });
    let u = net.guest.udp_socket(5000);
    for msg in [&b"ping one"[..], &[7u8; 1400][..]] {
        net.guest
            .udp(u)
            .send_slice(msg, IpEndpoint::new(IpAddress::Ipv4(GW), eport))
            .unwrap();
        let mut got = None;
        assert!(net.run_until(10, |n| {
            if let Ok((d, m)) = n.guest.udp(u).recv() {
                got = Some((d.to_vec(), m.endpoint));
            }
            got.is_some()
        }));
        let (d, from) = got.unwrap();
        assert_eq!(d, msg);
        assert_eq!(from, IpEndpoint::new(IpAddress::Ipv4(GW), eport));
    }
    echo_t.join().unwrap();
    // DNS: a query to 10.0.2.3:53 reaches the resolver; the answer comes
    // back from 10.0.2.3:53.
    let d = net.guest.udp_socket(5353);
    net.guest
        .udp(d)
        .send_slice(b"query", IpEndpoint::new(IpAddress::Ipv4(DNS), 53))
        .unwrap();
    let mut got = None;
    assert!(net.run_until(10, |n| {
        if let Ok((d, m)) = n.guest.udp(d).recv() {
            got = Some((d.to_vec(), m.endpoint));
        }
        got.is_some()
    }));
    assert_eq!(dns_t.join().unwrap(), b"query");
    let (d, from) = got.unwrap();
    assert_eq!(d, b"query-answer");
    assert_eq!(from, IpEndpoint::new(IpAddress::Ipv4(DNS), 53));
    assert_eq!(net.be.user_stats().udp_flows, 2);
    // The answered DNS flow goes soon; the echo flow stays (60 s idle).
    assert!(net.run_until(5, |n| n.be.user_stats().udp_flows == 1));
}

#[test]
fn udp_refused_gets_port_unreachable() {
    let mut net = Net::new(UserNetConfig::default(), true);
    let u = net.guest.udp_socket(5000);
    net.guest
        .udp(u)
        .send_slice(b"x", IpEndpoint::new(IpAddress::Ipv4(GW), 9))
        .unwrap();
    net.capture = Some(Vec::new());
    assert!(net.run_until(5, |n| n.be.user_stats().udp_refused_policy == 1));
    net.run_for(50);
    let frames = net.capture.take().unwrap();
    assert!(
        frames
            .iter()
            .any(|f| f.len() > 34 && f[23] == 1 && f[34] == 3 && f[35] == 3),
        "an ICMP port unreachable"
    );
    assert_eq!(net.be.user_stats().udp_flows, 0);
}

fn hostfwd_cfg(spec: &str, restrict: bool) -> UserNetConfig {
    UserNetConfig {
        restrict,
        host_loopback: true,
        hostfwd: vec![spec.parse::<HostFwd>().unwrap()],
        ..Default::default()
    }
}

/// A host client through a TCP forward to a guest echo service.
fn hostfwd_echo(net: &mut Net, port: u16, len: usize) {
    let l = net.guest.tcp_socket(64 * 1024);
    net.guest.tcp(l).listen(8080).unwrap();
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let mut buf = vec![0u8; len];
            fill(&mut buf, 0);
            w.write_all(&buf).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });
    let (mut echoed, mut pending) = (0usize, Vec::new());
    let done = net.run_until(60, |n| {
        let s = n.guest.tcp(l);
        let mut b = [0u8; 8192];
        while s.can_recv() && pending.len() < 65536 {
            let k = s.recv_slice(&mut b).unwrap();
            pending.extend_from_slice(&b[..k]);
        }
        if !pending.is_empty() && s.can_send() {
            let k = s.send_slice(&pending).unwrap();
            pending.drain(..k);
            echoed += k;
        }
        if pending.is_empty() && !s.may_recv() && s.may_send() {
            s.close();
        }
        client.is_finished()
    });
    assert!(done, "forwarded connection stalled after {echoed} bytes");
    let got = client.join().unwrap();
    assert_eq!(got.len(), len);
    assert!(check(&got, 0), "echo corrupted");
    assert_eq!(net.be.user_stats().hostfwd_accepted, 1);
}

#[test]
fn hostfwd_tcp_reaches_guest() {
    let port = free_tcp_port();
    let mut net = Net::new(
        hostfwd_cfg(&format!("tcp:127.0.0.1:{port}-:8080"), false),
        true,
    );
    hostfwd_echo(&mut net, port, 300_000);
    assert!(net.run_until(10, |n| n.be.user_stats().tcp_flows == 0));
}

#[test]
fn hostfwd_tcp_guest_refuses() {
    // Nobody listens on the guest port: the host client is reset or closed.
    let port = free_tcp_port();
    let mut net = Net::new(hostfwd_cfg(&format!("tcp::{port}-:8080"), false), true);
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    });
    assert!(net.run_until(20, |_| client.is_finished()));
    assert!(client.join().unwrap());
    assert!(net.run_until(5, |n| n.be.user_stats().tcp_flows == 0));
}

#[test]
fn hostfwd_udp_round_trip() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut net = Net::new(
        hostfwd_cfg(&format!("udp:127.0.0.1:{port}-:5555"), true),
        true,
    );
    let u = net.guest.udp_socket(5555);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"to guest", ("127.0.0.1", port)).unwrap();
    let mut got = None;
    assert!(net.run_until(10, |n| {
        if let Ok((d, m)) = n.guest.udp(u).recv() {
            got = Some((d.to_vec(), m.endpoint));
        }
        got.is_some()
    }));
    let (d, from) = got.unwrap();
    assert_eq!(d, b"to guest");
    assert_eq!(from.addr, IpAddress::Ipv4(GW));
    net.guest.udp(u).send_slice(b"reply", from).unwrap();
    net.run_for(100);
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    let (n, src) = peer.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"reply");
    assert_eq!(src.port(), port);
}

#[test]
fn restrict_refuses_outbound_but_forward_works() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = l.local_addr().unwrap().port();
    let port = free_tcp_port();
    let mut net = Net::with(
        hostfwd_cfg(&format!("tcp:127.0.0.1:{port}-:8080"), true),
        true,
        |t| t.remap.push((WORLD, Ipv4Addr::LOCALHOST)),
    );
    for (i, to) in [GW, WORLD].into_iter().enumerate() {
        let h = net.guest.tcp_socket(4096);
        net.guest.connect(h, (to, lport), 41000 + i as u16);
        assert!(
            wait_state(&mut net, h, 5, State::Closed),
            "{to} not refused"
        );
    }
    let u = net.guest.udp_socket(5000);
    net.guest
        .udp(u)
        .send_slice(b"q", IpEndpoint::new(IpAddress::Ipv4(DNS), 53))
        .unwrap();
    assert!(net.run_until(5, |n| n.be.user_stats().udp_refused_policy == 1));
    l.set_nonblocking(true).unwrap();
    assert!(l.accept().is_err());
    let s = net.be.user_stats();
    assert_eq!((s.tcp_refused_policy, s.udp_flows), (2, 0));
    hostfwd_echo(&mut net, port, 20_000);
}

#[test]
fn tcp_flow_limit() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let cfg = UserNetConfig {
        host_loopback: true,
        limits: Limits {
            max_tcp_flows: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut net = Net::new(cfg, true);
    let mut held = Vec::new();
    let mut hs = Vec::new();
    for i in 0..4u16 {
        let h = net.guest.tcp_socket(4096);
        net.guest.connect(h, (GW, port), 42000 + i);
        assert!(wait_state(&mut net, h, 5, State::Established), "flow {i}");
        held.push(accept_within(&l, 5).expect("accepted"));
        hs.push(h);
    }
    let h = net.guest.tcp_socket(4096);
    net.guest.connect(h, (GW, port), 42100);
    assert!(wait_state(&mut net, h, 5, State::Closed), "5th not refused");
    let s = net.be.user_stats();
    assert_eq!((s.tcp_refused_limit, s.tcp_flows), (1, 4));
    assert!(hs
        .iter()
        .all(|&h| net.guest.tcp(h).state() == State::Established));
    // A host reset resets the guest side.
    let _ = socket2::SockRef::from(&held[0]).set_linger(Some(Duration::ZERO));
    drop(held.remove(0));
    assert!(
        wait_state(&mut net, hs[0], 5, State::Closed),
        "host RST not passed on"
    );
}

#[test]
fn stalled_guest_does_not_spin() {
    // The host sends more than the guest reads: smoltcp's buffer fills,
    // the backend stops reading the host socket, and its fd stays quiet.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut net = Net::new(loopback_cfg(), true);
    let h = net.guest.tcp_socket(16 * 1024);
    net.guest.connect(h, (GW, port), 43000);
    assert!(wait_state(&mut net, h, 5, State::Established));
    let mut s = accept_within(&l, 5).unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = vec![1u8; 65536];
    let mut written = 0;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => net.step(5),
        }
    }
    net.run_for(300);
    assert!(written > 200_000, "the host could write {written}");
    // Quiet now: count the backend's wake-ups over half a second.
    let mut wakeups = 0;
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        if wait_readable(net.be.rx_fd(), 20) {
            wakeups += 1;
        }
        net.step(0);
    }
    assert!(wakeups < 60, "{wakeups} wake-ups in 0.5 s: busy loop");
    // And the data is all there once the guest reads.
    let mut got = 0;
    let mut b = vec![0u8; 65536];
    drop(s);
    assert!(
        net.run_until(30, |n| {
            let sk = n.guest.tcp(h);
            while sk.can_recv() {
                got += sk.recv_slice(&mut b).unwrap();
            }
            got == written && !sk.may_recv()
        }),
        "got {got} of {written}"
    );
}

#[test]
fn hostfwd_bind_error_names_forward() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let cfg = hostfwd_cfg(&format!("tcp::{port}-:22"), false);
    let err = UserBackend::new("net0", cfg).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("hostfwd tcp 127.0.0.1:{port}: cannot listen: Address already in use")
    );
    let bad = UserNetConfig {
        gateway: Ipv4Addr::new(10, 0, 3, 2),
        ..Default::default()
    };
    assert_eq!(
        UserBackend::new("net0", bad).unwrap_err().to_string(),
        "gateway 10.0.3.2 is not in subnet 10.0.2.0/24"
    );
    let be = UserBackend::new("net0", UserNetConfig::default()).unwrap();
    assert_eq!(be.describe(), "user 10.0.2.0/24");
    assert_eq!(be.rx_fd(), be.tx_fd());
    let o = be.offloads();
    assert!(o.csum && o.tso4 && !o.tso6, "{o:?}");
    assert!(
        !wait_readable(be.rx_fd(), 0),
        "idle backend is not readable"
    );
}

/// Not a check: prints throughput through the NAT (guest and backend share
/// one thread here, so this is a lower bound). Run with
/// `cargo test -p tapir-net-user --release -- --ignored throughput --nocapture`.
#[test]
#[ignore]
fn throughput() {
    const N: usize = 256 << 20;
    for (down, name) in [(true, "host -> guest"), (false, "guest -> host")] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let host = thread::spawn(move || {
            let mut s = accept_within(&l, 20).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            if down {
                while n < N {
                    let k = buf.len().min(N - n);
                    s.write_all(&buf[..k]).unwrap();
                    n += k;
                }
            } else {
                while n < N {
                    let k = s.read(&mut buf).unwrap();
                    assert!(k > 0);
                    n += k;
                }
            }
        });
        let mut net = Net::new(loopback_cfg(), true);
        let h = net.guest.tcp_socket(1 << 20);
        net.guest.connect(h, (GW, port), 44000);
        let t = Instant::now();
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 16];
        assert!(net.run_until(120, |net| {
            let s = net.guest.tcp(h);
            if down {
                while s.can_recv() {
                    n += s.recv_slice(&mut buf).unwrap();
                }
            } else {
                while s.can_send() && n < N {
                    let k = buf.len().min(N - n);
                    n += s.send_slice(&buf[..k]).unwrap();
                }
            }
            n >= N && host.is_finished()
        }));
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} MB/s ({} MiB in {secs:.2} s)",
            N as f64 / secs / 1e6,
            N >> 20
        );
    }
}
