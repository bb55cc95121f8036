//! The DHCP server: one lease per client MAC, stable for the backend's
//! life, from `dhcp_start` upward (a pool of 16, skipping the gateway and
//! dns addresses). DISCOVER gets an OFFER, REQUEST for the client's lease
//! an ACK, REQUEST for any other address a NAK.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress};

use crate::config::UserNetConfig;
use crate::device::GuestQueue;
use crate::frames::{self, L2};

/// Addresses in the pool.
pub(crate) const POOL_SIZE: u32 = 16;
/// Lease time handed out (24 h).
pub(crate) const LEASE_SECS: u32 = 24 * 3600;
/// Size of a BOOTP message, the least some clients accept.
const BOOTP_MIN: usize = 300;
/// DHCP option: DNS servers.
const OPT_DNS: u8 = 6;
/// DHCP option: broadcast address.
const OPT_BROADCAST: u8 = 28;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

/// What one DHCP message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not a message for this server (or not understood): nothing sent.
    Ignored,
    /// A reply was queued (or dropped: queue full).
    Replied,
}

#[derive(Debug)]
pub(crate) struct DhcpServer {
    pool: Vec<Ipv4Addr>,
    leases: Vec<(EthernetAddress, Ipv4Addr)>,
    gateway: Ipv4Addr,
    dns: Ipv4Addr,
    mask: Ipv4Addr,
    broadcast: Ipv4Addr,
}

impl DhcpServer {
    pub fn new(cfg: &UserNetConfig) -> DhcpServer {
        let first = u32::from(cfg.dhcp_start);
        let pool = (first..first.saturating_add(POOL_SIZE + 2))
            .map(Ipv4Addr::from)
            .filter(|a| {
                cfg.in_subnet(*a) && *a != cfg.gateway && *a != cfg.dns && *a != cfg.broadcast()
            })
            .take(POOL_SIZE as usize)
            .collect();
        DhcpServer {
            pool,
            leases: Vec::new(),
            gateway: cfg.gateway,
            dns: cfg.dns,
            mask: cfg.netmask(),
            broadcast: cfg.broadcast(),
        }
    }

    /// Leases handed out.
    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    fn lease_of(&self, mac: EthernetAddress) -> Option<Ipv4Addr> {
        self.leases.iter().find(|(m, _)| *m == mac).map(|(_, a)| *a)
    }

    /// The client's lease, or a new one (its requested address if free).
    fn lease_for(&mut self, mac: EthernetAddress, wish: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(a) = self.lease_of(mac) {
            return Some(a);
        }
        let free = |a: &Ipv4Addr| !self.leases.iter().any(|(_, b)| b == a);
        let pick = wish
            .filter(|w| self.pool.contains(w) && free(w))
            .or_else(|| self.pool.iter().copied().find(free))?;
        self.leases.push((mac, pick));
        Some(pick)
    }

    /// Handles one message to UDP port 67 (`payload` is the UDP payload);
    /// a reply goes into `q` from `our_mac`.
    pub fn handle(
        &mut self,
        our_mac: EthernetAddress,
        payload: &[u8],
        q: &mut GuestQueue,
    ) -> Outcome {
        let Ok(pkt) = DhcpPacket::new_checked(payload) else {
            return Outcome::Ignored;
        };
        let Ok(req) = DhcpRepr::parse(&pkt) else {
            return Outcome::Ignored;
        };
        let mac = req.client_hardware_address;
        if !mac.is_unicast() {
            return Outcome::Ignored;
        }
        let (kind, yiaddr) = match req.message_type {
            DhcpMessageType::Discover => match self.lease_for(mac, req.requested_ip) {
                Some(a) => (DhcpMessageType::Offer, a),
                None => return Outcome::Ignored, // pool exhausted
            },
            DhcpMessageType::Request => {
                if req.server_identifier.is_some_and(|s| s != self.gateway) {
                    return Outcome::Ignored; // the client chose another server
                }
                let wanted = req
                    .requested_ip
                    .or_else(|| (!req.client_ip.is_unspecified()).then_some(req.client_ip));
                match (self.lease_of(mac), wanted) {
                    (Some(l), Some(w)) if l == w => (DhcpMessageType::Ack, l),
                    _ => (DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED),
                }
            }
            _ => return Outcome::Ignored,
        };
        let nak = kind == DhcpMessageType::Nak;
        let dns = self.dns.octets();
        let bcast = self.broadcast.octets();
        let extra = [
            DhcpOption {
                kind: OPT_DNS,
                data: &dns,
            },
            DhcpOption {
                kind: OPT_BROADCAST,
                data: &bcast,
            },
        ];
        let reply = DhcpRepr {
            message_type: kind,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: mac,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: yiaddr,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: (!nak).then_some(self.gateway),
            subnet_mask: (!nak).then_some(self.mask),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: req.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(self.gateway),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: (!nak).then_some(LEASE_SECS),
            renew_duration: None,
            rebind_duration: None,
            additional_options: if nak { &[] } else { &extra },
        };
        let mut buf = vec![0u8; reply.buffer_len().max(BOOTP_MIN)];
        if reply
            .emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .is_err()
        {
            return Outcome::Ignored;
        }
        // Where the reply goes (RFC 2131 4.1): a bound client's address,
        // else broadcast when asked (or for a NAK), else the new address
        // at the client's MAC.
        let (dst_ip, dst_mac) = if nak || req.broadcast {
            (Ipv4Addr::BROADCAST, EthernetAddress::BROADCAST)
        } else if !req.client_ip.is_unspecified() {
            (req.client_ip, mac)
        } else {
            (yiaddr, mac)
        };
        frames::udp(
            q,
            L2 {
                src: our_mac,
                dst: dst_mac,
            },
            SocketAddrV4::new(self.gateway, SERVER_PORT),
            SocketAddrV4::new(dst_ip, CLIENT_PORT),
            &buf,
            0,
        );
        Outcome::Replied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{EthernetFrame, Ipv4Packet, UdpPacket};

    const OUR: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
    const C1: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 1]);
    const C2: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 2]);

    fn msg(
        kind: DhcpMessageType,
        mac: EthernetAddress,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        broadcast: bool,
    ) -> Vec<u8> {
        let prl = [1u8, 3, 6, 15, 28, 51];
        let r = DhcpRepr {
            message_type: kind,
            transaction_id: 0x1234_5678,
            secs: 3,
            client_hardware_address: mac,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast,
            requested_ip: requested,
            client_identifier: Some(mac),
            server_identifier: server,
            parameter_request_list: Some(&prl),
            dns_servers: None,
            max_size: Some(576),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut DhcpPacket::new_unchecked(&mut b[..])).unwrap();
        b
    }

    /// Runs one message; returns (dst MAC, dst IP, reply payload).
    fn run(s: &mut DhcpServer, m: &[u8]) -> Option<(EthernetAddress, Ipv4Addr, Vec<u8>)> {
        let mut q = GuestQueue::new(4);
        if s.handle(OUR, m, &mut q) == Outcome::Ignored {
            assert!(q.is_empty());
            return None;
        }
        let f = q.pop().unwrap();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.src_addr(), OUR);
        let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (67, 68));
        assert!(u.verify_checksum(&p.src_addr().into(), &p.dst_addr().into()));
        assert!(u.payload().len() >= BOOTP_MIN);
        Some((eth.dst_addr(), p.dst_addr(), u.payload().to_vec()))
    }

    /// The fields of a reply the tests look at.
    #[derive(Debug)]
    struct Reply {
        message_type: DhcpMessageType,
        transaction_id: u32,
        your_ip: Ipv4Addr,
        client_hardware_address: EthernetAddress,
        router: Option<Ipv4Addr>,
        subnet_mask: Option<Ipv4Addr>,
        server_identifier: Option<Ipv4Addr>,
        lease_duration: Option<u32>,
        dns_servers: Option<Vec<Ipv4Addr>>,
    }

    fn parse(b: &[u8]) -> Reply {
        let p = DhcpPacket::new_checked(b).unwrap();
        let r = DhcpRepr::parse(&p).unwrap();
        Reply {
            message_type: r.message_type,
            transaction_id: r.transaction_id,
            your_ip: r.your_ip,
            client_hardware_address: r.client_hardware_address,
            router: r.router,
            subnet_mask: r.subnet_mask,
            server_identifier: r.server_identifier,
            lease_duration: r.lease_duration,
            dns_servers: r.dns_servers.as_ref().map(|d| d.iter().copied().collect()),
        }
    }

    #[test]
    fn discover_offer_request_ack() {
        let cfg = UserNetConfig::default();
        let mut s = DhcpServer::new(&cfg);
        let a15 = Ipv4Addr::new(10, 0, 2, 15);
        let (mac, dst, off) = run(
            &mut s,
            &msg(DhcpMessageType::Discover, C1, None, None, true),
        )
        .unwrap();
        assert_eq!(
            (mac, dst),
            (EthernetAddress::BROADCAST, Ipv4Addr::BROADCAST)
        );
        let o = parse(&off);
        assert_eq!(o.message_type, DhcpMessageType::Offer);
        assert_eq!(o.transaction_id, 0x1234_5678);
        assert_eq!(o.your_ip, a15);
        assert_eq!(o.client_hardware_address, C1);
        assert_eq!(o.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(o.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(o.server_identifier, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(o.lease_duration, Some(LEASE_SECS));
        assert_eq!(o.dns_servers, Some(vec![Ipv4Addr::new(10, 0, 2, 3)]));
        // Unicast reply when the client did not ask for broadcast.
        let (mac, dst, ack) = run(
            &mut s,
            &msg(
                DhcpMessageType::Request,
                C1,
                Some(a15),
                Some(Ipv4Addr::new(10, 0, 2, 2)),
                false,
            ),
        )
        .unwrap();
        assert_eq!((mac, dst), (C1, a15));
        let a = parse(&ack);
        assert_eq!(a.message_type, DhcpMessageType::Ack);
        assert_eq!(a.your_ip, a15);
        assert_eq!(s.leases(), 1);
        // Stable per MAC; the next client gets the next address.
        let (_, _, off) = run(
            &mut s,
            &msg(DhcpMessageType::Discover, C1, None, None, true),
        )
        .unwrap();
        assert_eq!(parse(&off).your_ip, a15);
        let (_, _, off) = run(
            &mut s,
            &msg(DhcpMessageType::Discover, C2, Some(a15), None, true),
        )
        .unwrap();
        assert_eq!(
            parse(&off).your_ip,
            Ipv4Addr::new(10, 0, 2, 16),
            "a15 is taken"
        );
        assert_eq!(s.leases(), 2);
    }

    #[test]
    fn nak_and_ignored() {
        let cfg = UserNetConfig::default();
        let mut s = DhcpServer::new(&cfg);
        // INIT-REBOOT with an address never offered: NAK, broadcast.
        let (mac, dst, nak) = run(
            &mut s,
            &msg(
                DhcpMessageType::Request,
                C1,
                Some(Ipv4Addr::new(10, 0, 2, 99)),
                None,
                false,
            ),
        )
        .unwrap();
        assert_eq!(
            (mac, dst),
            (EthernetAddress::BROADCAST, Ipv4Addr::BROADCAST)
        );
        let n = parse(&nak);
        assert_eq!(n.message_type, DhcpMessageType::Nak);
        assert_eq!(n.your_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(n.router, None);
        // Offered .15, but asks for .16.
        run(
            &mut s,
            &msg(DhcpMessageType::Discover, C1, None, None, true),
        )
        .unwrap();
        let (_, _, nak) = run(
            &mut s,
            &msg(
                DhcpMessageType::Request,
                C1,
                Some(Ipv4Addr::new(10, 0, 2, 16)),
                None,
                true,
            ),
        )
        .unwrap();
        assert_eq!(parse(&nak).message_type, DhcpMessageType::Nak);
        // A request to another server, a release, and garbage: ignored.
        assert!(run(
            &mut s,
            &msg(
                DhcpMessageType::Request,
                C1,
                Some(Ipv4Addr::new(10, 0, 2, 15)),
                Some(Ipv4Addr::new(10, 0, 2, 9)),
                true
            )
        )
        .is_none());
        assert!(run(
            &mut s,
            &msg(DhcpMessageType::Release, C1, None, None, false)
        )
        .is_none());
        assert!(run(&mut s, &[1, 2, 3]).is_none());
        assert!(run(&mut s, &[0u8; 300]).is_none());
        let mut m = msg(DhcpMessageType::Discover, C1, None, None, true);
        m.truncate(236); // inside the fixed BOOTP header
        assert!(run(&mut s, &m).is_none());
    }

    #[test]
    fn pool_is_bounded() {
        let cfg = UserNetConfig {
            dhcp_start: Ipv4Addr::new(10, 0, 2, 250),
            ..Default::default()
        };
        let mut s = DhcpServer::new(&cfg);
        assert_eq!(s.pool.len(), 5, ".250 to .254");
        for i in 0..5u8 {
            let mac = EthernetAddress([0x52, 0x54, 0, 0, 1, i]);
            assert!(run(
                &mut s,
                &msg(DhcpMessageType::Discover, mac, None, None, true)
            )
            .is_some());
        }
        let mac = EthernetAddress([0x52, 0x54, 0, 0, 2, 0]);
        assert!(run(
            &mut s,
            &msg(DhcpMessageType::Discover, mac, None, None, true)
        )
        .is_none());
        let cfg = UserNetConfig {
            dhcp_start: Ipv4Addr::new(10, 0, 2, 1),
            ..Default::default()
        };
        let s = DhcpServer::new(&cfg);
        assert_eq!(s.pool.len(), 16);
        assert!(!s.pool.contains(&cfg.gateway) && !s.pool.contains(&cfg.dns));
    }
}
