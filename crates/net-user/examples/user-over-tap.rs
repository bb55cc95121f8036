//! Debugging aid: puts a host tap device where a guest would be, so the
//! host kernel's own TCP/IP stack talks through tapir's user-mode NAT.
//!
//! Usage (root): `user-over-tap TAPNAME` creates TAPNAME (if missing) and
//! pumps frames between it and a `UserBackend` with default options until
//! killed. Move the tap into a network namespace, give it 10.0.2.15/24 and
//! a default route via 10.0.2.2 (or run udhcpc), and use it.

use std::io;
use std::os::fd::RawFd;

use tapir_net_backend::{NetBackend, NetHdr, TapBackend, TapConfig};
use tapir_net_user::{UserBackend, UserNetConfig};

fn wait(fds: &[RawFd]) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of p.len() pollfd structs.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 1000) };
}

fn main() {
    let name = std::env::args()
        .nth(1)
        .expect("usage: user-over-tap TAPNAME");
    let mut tap = TapBackend::open(TapConfig {
        ifname: Some(name),
        fd: None,
        vnet_hdr: false,
    })
    .expect("tap");
    let args: Vec<String> = std::env::args().skip(2).collect();
    let opts: Vec<(String, String)> = args
        .iter()
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .filter(|(k, _)| k != "hostfwd")
        .collect();
    let fwd: Vec<String> = args
        .iter()
        .filter_map(|a| a.strip_prefix("hostfwd=").map(String::from))
        .collect();
    let cfg = UserNetConfig::parse(&opts, &fwd).expect("options");
    let mut user = UserBackend::new("user-over-tap", cfg).expect("user backend");
    let mut buf = vec![0u8; 65_600];
    loop {
        wait(&[tap.rx_fd(), user.rx_fd()]);
        loop {
            let mut moved = false;
            match tap.recv(&mut buf) {
                Ok((hdr, n)) => {
                    let _ = user.send(&hdr, &[io::IoSlice::new(&buf[..n])]);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("tap: {e}"),
            }
            match user.recv(&mut buf) {
                Ok((_, n)) => {
                    let _ = tap.send(&NetHdr::default(), &[io::IoSlice::new(&buf[..n])]);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("user: {e}"),
            }
            if !moved {
                break;
            }
        }
    }
}
