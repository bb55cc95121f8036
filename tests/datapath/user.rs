//! The user backend: the tapir binary with `net=user,loopback=on`; the
//! guest sends UDP datagrams to the gateway, which the NAT hands to a UDP
//! echo server on this host's 127.0.0.1.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::frames::{FrameProblem, Tally};
use crate::guest::Cell;
use crate::{run_binary, Run, StopFlag};

/// Echoes every datagram until `stop`, then what it saw.
fn echo_loop(sock: UdpSocket, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                tally.datagram_received(&buf[..n]);
                match sock.send_to(&buf[..n], from) {
                    Ok(_) => tally.echo_sent(&buf[..n]),
                    Err(e) => tally.problem(FrameProblem::Send(e.kind())),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return tally;
                }
            }
            Err(e) => panic!("UDP echo server: {e}"),
        }
    }
}

pub fn run(cell: &Cell) -> Run {
    run_with(cell, "")
}

/// [`run`], with `extra` (`,key=value...`) appended to the `--nic`.
pub fn run_with(cell: &Cell, extra: &str) -> Run {
    let start = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = StopFlag::default();
    let echo = {
        let stop = stop.watch();
        std::thread::spawn(move || echo_loop(sock, stop))
    };
    let cmdline = cell.cmdline(Some(port));
    let nic = format!(
        "model={},net=user,loopback=on{extra}",
        cell.model.nic_model()
    );
    let out = run_binary(&cmdline, &nic);
    stop.raise();
    let host = echo.join().unwrap();
    Run::of_binary(cmdline, out, host, start.elapsed())
}
