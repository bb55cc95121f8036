//! The rtnetlink requests tapir makes, synchronously, over
//! `netlink-packet-route` and `netlink-sys` (no async runtime): create a
//! macvtap on a parent interface, delete a link.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkInfo, LinkMessage, MacVtapMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Sends one request and waits for the kernel's acknowledgement: `Ok` or
/// the errno it answered. Only socket(2), sendto(2) and recvfrom(2): the
/// socket binds itself on the first send, so that tapir's main thread can
/// delete its macvtaps at exit under its seccomp filter (docs/seccomp.md).
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let sock = Socket::new(NETLINK_ROUTE)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut out = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut out);
    sock.send_to(&out, &SocketAddr::new(0, 0), 0)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        let n = sock.recv(&mut buf, 0)?;
        let mut at = 0;
        while at < n {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    }
                }
                NetlinkPayload::Done(_) => return Ok(()),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// The macvtap modes (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Guests on one parent reach each other inside the kernel.
    Bridge,
    /// Everything goes out to the adjacent switch (which may hairpin it).
    Vepa,
    /// Like VEPA, but frames between macvtaps of one parent are dropped.
    Private,
    /// The one macvtap of a parent takes all its traffic.
    Passthru,
}

impl Mode {
    fn netlink(self) -> MacVtapMode {
        match self {
            Mode::Bridge => MacVtapMode::Bridge,
            Mode::Vepa => MacVtapMode::Vepa,
            Mode::Private => MacVtapMode::Private,
            Mode::Passthru => MacVtapMode::Passthrough,
        }
    }

    /// As `mode=` names it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Vepa => "vepa",
            Mode::Private => "private",
            Mode::Passthru => "passthru",
        }
    }
}

/// Creates macvtap `name` on the interface of index `parent`, with MAC
/// `mac` and `mode` (it is left down).
pub fn create_macvtap(name: &str, parent: u32, mac: [u8; 6], mode: Mode) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Link(parent),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVtap),
            LinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(mode.netlink())])),
        ]),
    ];
    request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}

/// Deletes the link of index `index`.
pub fn delete_link(index: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    request(RouteNetlinkMessage::DelLink(msg), 0)
}
