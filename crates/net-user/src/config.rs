//! Configuration of the user-mode NAT: addresses, forwards, limits, and
//! the parser of the `--nic net=user,...` options.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

/// Why a `net=user` configuration is rejected. Each message is one line
/// meant for the person who wrote the options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserConfigError {
    /// An option key that `net=user` does not know.
    #[error("unknown net=user option '{0}' (known: subnet, gateway, dns, dhcpstart, restrict, loopback, hostfwd)")]
    UnknownOption(String),
    /// A value that does not parse for its key.
    #[error("invalid value '{value}' for {key}: {reason}")]
    InvalidValue {
        /// The option key.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The subnet prefix length is outside 8..=30.
    #[error("subnet prefix /{0} is not supported (use /8 to /30)")]
    Prefix(u8),
    /// The subnet address has host bits set.
    #[error("subnet {addr}/{prefix} has host bits set (did you mean {net}/{prefix}?)")]
    HostBits {
        /// The address as given.
        addr: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
        /// The network address.
        net: Ipv4Addr,
    },
    /// An address (gateway, dns, dhcpstart, hostfwd guest) outside the subnet.
    #[error("{what} {addr} is not in subnet {net}/{prefix}")]
    NotInSubnet {
        /// Which address, e.g. `gateway`.
        what: &'static str,
        /// The address.
        addr: Ipv4Addr,
        /// The subnet.
        net: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
    /// An address that is the network or broadcast address of the subnet.
    #[error("{what} {addr} is the {which} address of subnet {net}/{prefix}")]
    Reserved {
        /// Which address.
        what: &'static str,
        /// The address.
        addr: Ipv4Addr,
        /// `network` or `broadcast`.
        which: &'static str,
        /// The subnet.
        net: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
    /// Two roles given the same address.
    #[error("{a} and {b} are both {addr}: they must differ")]
    Clash {
        /// First role.
        a: &'static str,
        /// Second role.
        b: &'static str,
        /// The shared address.
        addr: Ipv4Addr,
    },
    /// A `hostfwd=` value that does not parse or is not usable.
    #[error("invalid hostfwd '{spec}': {reason}")]
    HostFwd {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two forwards of the same protocol on the same host address and port.
    #[error("hostfwd {0} is given twice")]
    DuplicateHostFwd(String),
    /// A limit that cannot work (zero).
    #[error("limit {0} must be at least 1")]
    Limit(&'static str),
}

/// Protocol of a host forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFwdProto {
    /// A TCP listener on the host; each connection goes to the guest.
    Tcp,
    /// A UDP socket on the host; datagrams go to the guest, replies come back.
    Udp,
}

impl fmt::Display for HostFwdProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostFwdProto::Tcp => "tcp",
            HostFwdProto::Udp => "udp",
        })
    }
}

/// One host forward (world → guest), QEMU's `hostfwd=` syntax:
/// `tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (or `udp:`; an empty
/// protocol means tcp), e.g. `tcp::8080-:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    /// TCP or UDP.
    pub proto: HostFwdProto,
    /// Host address to listen on (default 127.0.0.1).
    pub host_addr: Ipv4Addr,
    /// Host port to listen on (nonzero).
    pub host_port: u16,
    /// Guest address; `None` is the first DHCP address.
    pub guest_addr: Option<Ipv4Addr>,
    /// Guest port (nonzero).
    pub guest_port: u16,
}

impl fmt::Display for HostFwd {
    /// The host side, as named in messages: `tcp 127.0.0.1:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.proto, self.host_addr, self.host_port)
    }
}

impl FromStr for HostFwd {
    type Err = UserConfigError;

    fn from_str(spec: &str) -> Result<HostFwd, UserConfigError> {
        let bad = |reason: &str| UserConfigError::HostFwd {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (proto, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"))?;
        let proto = match proto {
            "" | "tcp" => HostFwdProto::Tcp,
            "udp" => HostFwdProto::Udp,
            _ => return Err(bad("protocol must be tcp or udp")),
        };
        let (host, guest) = rest
            .split_once('-')
            .ok_or_else(|| bad("expected HOST-GUEST, e.g. tcp::8080-:80"))?;
        let side = |s: &str, what: &str| -> Result<(Option<Ipv4Addr>, u16), UserConfigError> {
            let (addr, port) = s
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("{what} side needs [ADDR]:PORT")))?;
            let addr =
                match addr {
                    "" => None,
                    a => Some(a.parse::<Ipv4Addr>().map_err(|_| {
                        bad(&format!("{what} address '{a}' is not an IPv4 address"))
                    })?),
                };
            let port = port
                .parse::<u16>()
                .map_err(|_| bad(&format!("{what} port '{port}' is not a port number")))?;
            if port == 0 {
                return Err(bad(&format!("{what} port must not be 0")));
            }
            Ok((addr, port))
        };
        let (host_addr, host_port) = side(host, "host")?;
        let (guest_addr, guest_port) = side(guest, "guest")?;
        Ok(HostFwd {
            proto,
            host_addr: host_addr.unwrap_or(Ipv4Addr::LOCALHOST),
            host_port,
            guest_addr,
            guest_port,
        })
    }
}

/// Resource limits: what a guest (or the world through the forwards) can
/// make the backend hold. See `docs/backend-user.md` for the memory bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent TCP flows (outbound, forwarded, and closing ones).
    pub max_tcp_flows: usize,
    /// Concurrent UDP flows (outbound and forwarded peers).
    pub max_udp_flows: usize,
    /// Concurrent ICMP echo relays.
    pub max_icmp_flows: usize,
    /// Bytes buffered per TCP flow in each direction.
    pub tcp_buffer: usize,
    /// Frames queued toward the guest.
    pub guest_queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_tcp_flows: 512,
            max_udp_flows: 256,
            max_icmp_flows: 32,
            tcp_buffer: 128 * 1024,
            guest_queue: 512,
        }
    }
}

/// The user-mode network: QEMU's `-netdev user` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNetConfig {
    /// Network address of the guest subnet (10.0.2.0).
    pub net: Ipv4Addr,
    /// Prefix length of the subnet (24).
    pub prefix_len: u8,
    /// The host as seen by the guest: router, DHCP server (10.0.2.2).
    pub gateway: Ipv4Addr,
    /// The DNS relay (10.0.2.3).
    pub dns: Ipv4Addr,
    /// First address handed out by DHCP (10.0.2.15).
    pub dhcp_start: Ipv4Addr,
    /// The guest reaches nothing but the forwards, DHCP, ARP and pings
    /// to the gateway.
    pub restrict: bool,
    /// Connections to the gateway address reach the host's 127.0.0.1.
    pub host_loopback: bool,
    /// Host forwards.
    pub hostfwd: Vec<HostFwd>,
    /// Resource limits.
    pub limits: Limits,
    /// Where the host's DNS resolver is read (first IPv4 `nameserver`).
    pub resolv_conf: PathBuf,
}

impl Default for UserNetConfig {
    fn default() -> UserNetConfig {
        UserNetConfig {
            net: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            dhcp_start: Ipv4Addr::new(10, 0, 2, 15),
            restrict: false,
            host_loopback: false,
            hostfwd: Vec::new(),
            limits: Limits::default(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

fn on_off(key: &str, value: &str) -> Result<bool, UserConfigError> {
    match value {
        "on" | "yes" => Ok(true),
        "off" | "no" => Ok(false),
        _ => Err(UserConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected on or off",
        }),
    }
}

fn addr(key: &str, value: &str) -> Result<Ipv4Addr, UserConfigError> {
    value.parse().map_err(|_| UserConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: "expected an IPv4 address",
    })
}

/// The netmask of a prefix length (0..=32).
pub(crate) fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl UserNetConfig {
    /// Parses the `--nic net=user,...` options as given on the command line:
    /// `options` are key/value pairs among subnet=A.B.C.D/N, gateway=, dns=,
    /// dhcpstart=, restrict=on|off, loopback=on|off; `hostfwd` are the raw
    /// `hostfwd=` values. A subnet without gateway/dns/dhcpstart gets them
    /// at .2, .3 and .15 of the subnet, as QEMU does. The result is validated.
    pub fn parse(
        options: &[(String, String)],
        hostfwd: &[String],
    ) -> Result<UserNetConfig, UserConfigError> {
        let mut cfg = UserNetConfig::default();
        let (mut gateway, mut dns, mut dhcp_start) = (None, None, None);
        for (key, value) in options {
            match key.as_str() {
                "subnet" => {
                    let (a, p) = value.split_once('/').unwrap_or((value.as_str(), "24"));
                    cfg.net = addr(key, a)?;
                    cfg.prefix_len = p.parse().map_err(|_| UserConfigError::InvalidValue {
                        key: key.clone(),
                        value: value.clone(),
                        reason: "expected A.B.C.D/N",
                    })?;
                }
                "gateway" => gateway = Some(addr(key, value)?),
                "dns" => dns = Some(addr(key, value)?),
                "dhcpstart" => dhcp_start = Some(addr(key, value)?),
                "restrict" => cfg.restrict = on_off(key, value)?,
                "loopback" => cfg.host_loopback = on_off(key, value)?,
                "hostfwd" => cfg.hostfwd.push(value.parse()?),
                _ => return Err(UserConfigError::UnknownOption(key.clone())),
            }
        }
        if !(8..=30).contains(&cfg.prefix_len) {
            return Err(UserConfigError::Prefix(cfg.prefix_len));
        }
        let base = u32::from(cfg.net) & mask(cfg.prefix_len);
        let at = |n: u32| Ipv4Addr::from(base.wrapping_add(n));
        cfg.gateway = gateway.unwrap_or(at(2));
        cfg.dns = dns.unwrap_or(at(3));
        cfg.dhcp_start = dhcp_start.unwrap_or(at(15));
        for h in hostfwd {
            cfg.hostfwd.push(h.parse()?);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the addresses, forwards and limits (done by
    /// [`UserNetConfig::parse`] and by `UserBackend::new`).
    pub fn validate(&self) -> Result<(), UserConfigError> {
        let (net, prefix) = (self.net, self.prefix_len);
        if !(8..=30).contains(&prefix) {
            return Err(UserConfigError::Prefix(prefix));
        }
        let m = mask(prefix);
        let base = u32::from(net) & m;
        if base != u32::from(net) {
            return Err(UserConfigError::HostBits {
                addr: net,
                prefix,
                net: Ipv4Addr::from(base),
            });
        }
        let check = |what: &'static str, a: Ipv4Addr| -> Result<(), UserConfigError> {
            let v = u32::from(a);
            if v & m != base {
                return Err(UserConfigError::NotInSubnet {
                    what,
                    addr: a,
                    net,
                    prefix,
                });
            }
            let which = if v == base {
                "network"
            } else if v == base | !m {
                "broadcast"
            } else {
                return Ok(());
            };
            Err(UserConfigError::Reserved {
                what,
                addr: a,
                which,
                net,
                prefix,
            })
        };
        check("gateway", self.gateway)?;
        check("dns", self.dns)?;
        check("dhcpstart", self.dhcp_start)?;
        let roles = [
            ("gateway", self.gateway),
            ("dns", self.dns),
            ("dhcpstart", self.dhcp_start),
        ];
        for (i, (a, x)) in roles.iter().enumerate() {
            for (b, y) in &roles[i + 1..] {
                if x == y {
                    return Err(UserConfigError::Clash { a, b, addr: *x });
                }
            }
        }
        for (i, f) in self.hostfwd.iter().enumerate() {
            let bad = |reason: String| UserConfigError::HostFwd {
                spec: f.to_string(),
                reason,
            };
            if f.host_port == 0 || f.guest_port == 0 {
                return Err(bad("ports must not be 0".into()));
            }
            if let Some(g) = f.guest_addr {
                check("hostfwd guest address", g)?;
                if g == self.gateway || g == self.dns {
                    return Err(bad(format!(
                        "guest address {g} is the gateway or dns address"
                    )));
                }
            }
            if self.hostfwd[..i].iter().any(|o| {
                o.proto == f.proto && o.host_addr == f.host_addr && o.host_port == f.host_port
            }) {
                return Err(UserConfigError::DuplicateHostFwd(f.to_string()));
            }
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_tcp_flows", l.max_tcp_flows),
            ("max_udp_flows", l.max_udp_flows),
            ("max_icmp_flows", l.max_icmp_flows),
            ("guest_queue", l.guest_queue),
        ] {
            if v == 0 {
                return Err(UserConfigError::Limit(name));
            }
        }
        if l.tcp_buffer < 4096 || l.tcp_buffer > (1 << 30) {
            return Err(UserConfigError::Limit("tcp_buffer (4 KiB to 1 GiB)"));
        }
        Ok(())
    }

    /// `true` when `a` is inside the subnet.
    pub(crate) fn in_subnet(&self, a: Ipv4Addr) -> bool {
        let m = mask(self.prefix_len);
        u32::from(a) & m == u32::from(self.net) & m
    }

    /// The subnet's broadcast address.
    pub(crate) fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) | !mask(self.prefix_len))
    }

    /// The netmask.
    pub(crate) fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)], fwd: &[&str]) -> String {
        let fwd: Vec<String> = fwd.iter().map(|s| s.to_string()).collect();
        UserNetConfig::parse(&kv(pairs), &fwd)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_derived_addresses() {
        let c = UserNetConfig::parse(&[], &[]).unwrap();
        assert_eq!(c, UserNetConfig::default());
        let c = UserNetConfig::parse(&kv(&[("subnet", "192.168.76.0/24")]), &[]).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(192, 168, 76, 2));
        assert_eq!(c.dns, Ipv4Addr::new(192, 168, 76, 3));
        assert_eq!(c.dhcp_start, Ipv4Addr::new(192, 168, 76, 15));
        let c = UserNetConfig::parse(
            &kv(&[
                ("subnet", "10.1.0.0/16"),
                ("gateway", "10.1.0.1"),
                ("dns", "10.1.0.53"),
                ("dhcpstart", "10.1.5.1"),
                ("restrict", "on"),
                ("loopback", "on"),
            ]),
            &[
                "tcp::2222-:22".to_string(),
                "udp:0.0.0.0:5353-10.1.5.9:53".to_string(),
            ],
        )
        .unwrap();
        assert_eq!((c.net, c.prefix_len), (Ipv4Addr::new(10, 1, 0, 0), 16));
        assert!(c.restrict && c.host_loopback);
        assert_eq!(c.hostfwd.len(), 2);
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert!(c.in_subnet(Ipv4Addr::new(10, 1, 200, 3)));
        assert!(!c.in_subnet(Ipv4Addr::new(10, 2, 0, 3)));
    }

    #[test]
    fn validation_messages() {
        assert_eq!(
            err(&[("gateway", "10.0.3.2")], &[]),
            "gateway 10.0.3.2 is not in subnet 10.0.2.0/24"
        );
        assert_eq!(
            err(&[("dns", "10.0.2.255")], &[]),
            "dns 10.0.2.255 is the broadcast address of subnet 10.0.2.0/24"
        );
        assert_eq!(
            err(&[("dhcpstart", "10.0.2.0")], &[]),
            "dhcpstart 10.0.2.0 is the network address of subnet 10.0.2.0/24"
        );
        assert_eq!(
            err(&[("dns", "10.0.2.2")], &[]),
            "gateway and dns are both 10.0.2.2: they must differ"
        );
        assert_eq!(
            err(&[("subnet", "10.0.2.0/31")], &[]),
            "subnet prefix /31 is not supported (use /8 to /30)"
        );
        assert_eq!(
            err(&[("subnet", "10.0.0.0/7")], &[]),
            "subnet prefix /7 is not supported (use /8 to /30)"
        );
        assert_eq!(
            err(&[("subnet", "10.0.2.5/24")], &[]),
            "subnet 10.0.2.5/24 has host bits set (did you mean 10.0.2.0/24?)"
        );
        assert_eq!(
            err(&[("restrict", "maybe")], &[]),
            "invalid value 'maybe' for restrict: expected on or off"
        );
        assert_eq!(
            err(&[("loopback", "")], &[]),
            "invalid value '' for loopback: expected on or off"
        );
        assert_eq!(
            err(&[("gateway", "10.0.2")], &[]),
            "invalid value '10.0.2' for gateway: expected an IPv4 address"
        );
        assert!(err(&[("subnet", "10.0.2.0/x")], &[]).contains("expected A.B.C.D/N"));
        assert!(err(&[("smb", "/tmp")], &[]).starts_with("unknown net=user option 'smb'"));
        assert_eq!(
            err(&[], &["tcp::8080-10.0.3.15:80"]),
            "hostfwd guest address 10.0.3.15 is not in subnet 10.0.2.0/24"
        );
        assert_eq!(
            err(&[], &["tcp::8080-:80", "tcp:127.0.0.1:8080-:81"]),
            "hostfwd tcp 127.0.0.1:8080 is given twice"
        );
        // Same port on udp and tcp is fine.
        UserNetConfig::parse(&[], &["tcp::8080-:80".into(), "udp::8080-:80".into()]).unwrap();
        for msg in [
            err(&[], &["tcp::0-:80"]),
            err(&[], &["tcp::80-:0"]),
            err(&[], &["tcp::80"]),
            err(&[], &["sctp::80-:80"]),
            err(&[], &["tcp:1.2.3:80-:80"]),
            err(&[], &["tcp::80-:http"]),
            err(&[], &["8080"]),
        ] {
            assert!(msg.starts_with("invalid hostfwd '"), "{msg}");
            assert!(!msg.contains('\n'));
        }
        let mut c = UserNetConfig::default();
        c.limits.max_tcp_flows = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "limit max_tcp_flows must be at least 1"
        );
    }

    #[test]
    fn hostfwd_syntax() {
        let f: HostFwd = "tcp::8080-:80".parse().unwrap();
        assert_eq!(
            f,
            HostFwd {
                proto: HostFwdProto::Tcp,
                host_addr: Ipv4Addr::LOCALHOST,
                host_port: 8080,
                guest_addr: None,
                guest_port: 80
            }
        );
        assert_eq!(f.to_string(), "tcp 127.0.0.1:8080");
        let f: HostFwd = "udp:127.0.0.1:5353-10.0.2.15:53".parse().unwrap();
        assert_eq!(f.proto, HostFwdProto::Udp);
        assert_eq!(f.guest_addr, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!((f.host_port, f.guest_port), (5353, 53));
        let f: HostFwd = ":0.0.0.0:2222-10.0.2.20:22".parse().unwrap();
        assert_eq!(f.proto, HostFwdProto::Tcp);
        assert_eq!(f.host_addr, Ipv4Addr::UNSPECIFIED);
        assert!("tcp::65536-:80".parse::<HostFwd>().is_err());
        assert!("tcp:8080-:80".parse::<HostFwd>().is_err());
        assert!("".parse::<HostFwd>().is_err());
    }
}
