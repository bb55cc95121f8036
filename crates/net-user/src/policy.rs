//! Where a guest connection goes: the address translation and the rules
//! that refuse some destinations.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use crate::config::UserNetConfig;

/// Transport of a translated flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// Why a guest flow is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `restrict=on`.
    Restricted,
    /// The dns address on a port other than 53 (or a ping to it, which
    /// smoltcp answers before this is asked).
    DnsPort,
    /// The gateway address while `loopback=off`.
    Loopback,
    /// 0/8, 127/8, multicast, reserved or broadcast.
    Martian,
    /// Another address of the guest subnet: nobody is there.
    InSubnet,
}

/// The translation rules of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Translator {
    cfg: UserNetConfig,
    /// Where DNS (dns:53) goes: the host's resolver.
    pub resolver: SocketAddrV4,
    /// Tests: destinations rewritten to others (checked before the rules
    /// on martians, so a test can reach 127.0.0.1 through a documentation
    /// address without sending anything off the machine).
    #[cfg(test)]
    pub remap: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4 (with 255.255.255.255).
pub(crate) fn is_martian(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224
}

/// The first IPv4 `nameserver` of a resolv.conf; 127.0.0.1 when there is
/// none or the file cannot be read (a resolver on the host itself, if any).
pub(crate) fn read_resolver(path: &Path) -> Ipv4Addr {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some("nameserver"), Some(a)) => a.parse::<Ipv4Addr>().ok(),
                _ => None,
            }
        })
        .find(|a| !a.is_unspecified())
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

impl Translator {
    pub fn new(cfg: &UserNetConfig) -> Translator {
        Translator {
            cfg: cfg.clone(),
            resolver: SocketAddrV4::new(read_resolver(&cfg.resolv_conf), 53),
            #[cfg(test)]
            remap: Vec::new(),
        }
    }

    /// The host-side destination of a guest flow to `dst`.
    pub fn outbound(&self, proto: Proto, dst: SocketAddrV4) -> Result<SocketAddrV4, Refused> {
        let ip = *dst.ip();
        if self.cfg.restrict {
            return Err(Refused::Restricted);
        }
        if ip == self.cfg.dns {
            return match (proto, dst.port()) {
                (Proto::Tcp | Proto::Udp, 53) => Ok(self.resolver),
                _ => Err(Refused::DnsPort),
            };
        }
        if ip == self.cfg.gateway {
            return if self.cfg.host_loopback {
                Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port()))
            } else {
                Err(Refused::Loopback)
            };
        }
        #[cfg(test)]
        if let Some((_, to)) = self.remap.iter().find(|(from, _)| *from == ip) {
            return Ok(SocketAddrV4::new(*to, dst.port()));
        }
        if self.cfg.in_subnet(ip) {
            return Err(Refused::InSubnet);
        }
        if is_martian(ip) {
            return Err(Refused::Martian);
        }
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(a: [u8; 4], p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), p)
    }

    #[test]
    fn translation_rules() {
        let dir = std::env::temp_dir().join(format!("tapir-resolv-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# comment\nsearch example\nnameserver fe80::1\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n",
        )
        .unwrap();
        let mut cfg = UserNetConfig {
            resolv_conf: dir.clone(),
            ..Default::default()
        };
        let t = Translator::new(&cfg);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(t.resolver, sa([192, 0, 2, 53], 53));
        let o = |t: &Translator, p, d| t.outbound(p, d);
        assert_eq!(o(&t, Proto::Udp, sa([10, 0, 2, 3], 53)), Ok(t.resolver));
        assert_eq!(o(&t, Proto::Tcp, sa([10, 0, 2, 3], 53)), Ok(t.resolver));
        assert_eq!(
            o(&t, Proto::Tcp, sa([10, 0, 2, 3], 80)),
            Err(Refused::DnsPort)
        );
        assert_eq!(
            o(&t, Proto::Tcp, sa([10, 0, 2, 2], 22)),
            Err(Refused::Loopback)
        );
        for m in [
            [127, 0, 0, 1],
            [0, 1, 2, 3],
            [224, 0, 0, 251],
            [255, 255, 255, 255],
            [240, 0, 0, 1],
        ] {
            assert_eq!(o(&t, Proto::Udp, sa(m, 9)), Err(Refused::Martian), "{m:?}");
        }
        assert_eq!(
            o(&t, Proto::Tcp, sa([10, 0, 2, 77], 80)),
            Err(Refused::InSubnet)
        );
        // Anything else is itself.
        assert_eq!(
            o(&t, Proto::Tcp, sa([93, 184, 216, 34], 443)),
            Ok(sa([93, 184, 216, 34], 443))
        );
        assert_eq!(
            o(&t, Proto::Icmp, sa([198, 51, 100, 1], 0)),
            Ok(sa([198, 51, 100, 1], 0))
        );
        cfg.host_loopback = true;
        let t = Translator::new(&cfg);
        assert_eq!(t.resolver, sa([127, 0, 0, 1], 53), "missing file");
        assert_eq!(
            o(&t, Proto::Tcp, sa([10, 0, 2, 2], 22)),
            Ok(sa([127, 0, 0, 1], 22))
        );
        cfg.restrict = true;
        let t = Translator::new(&cfg);
        for d in [
            sa([10, 0, 2, 2], 22),
            sa([10, 0, 2, 3], 53),
            sa([1, 1, 1, 1], 53),
        ] {
            assert_eq!(o(&t, Proto::Udp, d), Err(Refused::Restricted));
        }
    }
}
