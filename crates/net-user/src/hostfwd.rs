//! Host forwards (world → guest): the sockets bound at start, and the
//! accept loop of the TCP ones.

use std::io;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::{HostFwd, HostFwdProto};
use crate::poll::{token, Interest, Kind};
use crate::stats::warn_once;
use crate::tcp::TcpNat;
use crate::udp::UdpNat;
use crate::{os_message, Core, UserNetError};

/// Connections accepted per wake-up (fairness).
const BURST: usize = 16;
/// How long a listener rests after the process ran out of fds.
const FD_PAUSE: Duration = Duration::from_secs(1);

struct TcpFwd {
    listener: TcpListener,
    guest: SocketAddrV4,
    reg: Interest,
    paused_until: Option<Instant>,
}

/// The TCP forwards (UDP forwards live in [`UdpNat`]).
#[derive(Default)]
pub(crate) struct HostFwds {
    tcp: Vec<TcpFwd>,
}

fn fwd_error(f: &HostFwd, action: &'static str, e: io::Error) -> UserNetError {
    UserNetError::HostFwd {
        fwd: f.to_string(),
        action,
        reason: os_message(&e),
    }
}

impl HostFwds {
    /// Binds every forward of the configuration.
    pub fn bind(core: &mut Core, udp: &mut UdpNat) -> Result<HostFwds, UserNetError> {
        let mut fwds = HostFwds::default();
        for f in core.cfg.hostfwd.clone() {
            let guest =
                SocketAddrV4::new(f.guest_addr.unwrap_or(core.cfg.dhcp_start), f.guest_port);
            let host = SocketAddrV4::new(f.host_addr, f.host_port);
            match f.proto {
                HostFwdProto::Tcp => {
                    let l = TcpListener::bind(host).map_err(|e| fwd_error(&f, "listen", e))?;
                    l.set_nonblocking(true)
                        .map_err(|e| fwd_error(&f, "listen", e))?;
                    let idx = fwds.tcp.len();
                    let mut reg = Interest::NONE;
                    core.poller
                        .set(
                            l.as_raw_fd(),
                            token(Kind::TcpListener, idx),
                            &mut reg,
                            Interest::READ,
                        )
                        .map_err(|e| fwd_error(&f, "listen", e))?;
                    fwds.tcp.push(TcpFwd {
                        listener: l,
                        guest,
                        reg,
                        paused_until: None,
                    });
                }
                HostFwdProto::Udp => {
                    let s = UdpSocket::bind(host).map_err(|e| fwd_error(&f, "bind", e))?;
                    udp.add_fwd(core, s, guest)
                        .map_err(|e| fwd_error(&f, "bind", e))?;
                }
            }
        }
        Ok(fwds)
    }

    /// Accepts pending connections on forward `idx`.
    pub fn on_ready(&mut self, core: &mut Core, tcp: &mut TcpNat, idx: usize) {
        let Some(f) = self.tcp.get_mut(idx) else {
            return;
        };
        for _ in 0..BURST {
            match f.listener.accept() {
                Ok((stream, _)) => tcp.add_forwarded(core, stream, f.guest),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of fds: the connection stays pending; rest a while
                    // instead of waking up for it again and again.
                    let name = core.name.clone();
                    warn_once(&mut core.warned.fds, &name, || {
                        format!("user network cannot accept forwarded connections: {e}")
                    });
                    core.poller.remove(f.listener.as_raw_fd(), &mut f.reg);
                    f.paused_until = Some(core.now() + FD_PAUSE);
                    break;
                }
                // ECONNABORTED and the like: that connection is gone.
                Err(_) => {}
            }
        }
    }

    /// Whether a listener rests.
    pub fn needs_sweep(&self) -> bool {
        self.tcp.iter().any(|f| f.paused_until.is_some())
    }

    /// Wakes rested listeners.
    pub fn sweep(&mut self, core: &mut Core) {
        let now = core.now();
        for (idx, f) in self.tcp.iter_mut().enumerate() {
            if f.paused_until.is_some_and(|t| now >= t) {
                f.paused_until = None;
                let _ = core.poller.set(
                    f.listener.as_raw_fd(),
                    token(Kind::TcpListener, idx),
                    &mut f.reg,
                    Interest::READ,
                );
            }
        }
    }
}
