//! The guest's side: the scenario script the default guest's /init runs
//! (its address, a TCP echo port, pings, iperf3's server), and the
//! small newc cpio that carries it, appended to the guest's initramfs.

use crate::plan::Net;

pub const MEM_MIB: u32 = 256;
pub const CMDLINE: &str = "console=ttyS0 quiet tapir.exit=poweroff";
pub const HOST_IP: &str = "192.168.150.1";
pub const GUEST_IP: &str = "192.168.150.2";
/// [`GUEST_IP`] as an address.
pub const GUEST_IPV4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 150, 2);
pub const GUEST_MAC: &str = "52:54:00:15:00:02";
/// The tap in the benchmark's namespace.
pub const TAP: &str = "tbn0";
/// iperf3's server port (TCP and UDP).
pub const IPERF_PORT: u16 = 5201;
/// A connection here tells the guest to power off.
pub const BYE_PORT: u16 = 9001;
/// The guest echoes every byte sent here (TCP request/response).
pub const ECHO_PORT: u16 = 9002;
/// Pings the guest sends to its gateway (the host's tap, or the NAT's).
pub const PINGS: u32 = 50;

/// What the guest prints when its iperf3 server runs.
pub const READY: &str = "NET: iperf ready";
/// Lines that say the guest cannot serve.
pub const FAILS: [&str; 3] = ["NET: iperf FAIL", "NET: dhcp FAIL", "NET: ip config FAIL"];
/// The prefix of the guest's ping output lines.
pub const PING_PREFIX: &str = "NET: ping ";

/// The scenario script for a guest on backend `net`: configures the NIC
/// with the fixed MAC (a fixed address on a tap, DHCP on user), starts a
/// TCP echo server and the iperf3 server, pings its gateway, and stays up
/// until the host connects to [`BYE_PORT`] (or 15 minutes pass).
pub fn script(net: Net) -> String {
    let mut s = format!(
        "MAC={GUEST_MAC} IP={GUEST_IP} HOST={HOST_IP} NETB={} PINGS={PINGS}\n",
        net.name()
    );
    s += r#"say() { echo "NET: $*"; }
IF=eth0
for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$MAC" ] && IF=${d##*/}
done
GW=$HOST
if [ "$NETB" = user ]; then
    printf '#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/${mask:-24}" dev "$interface" && ip route add default via "$router" && echo "$router" >/tmp/gw\nexit 0\n' >/tmp/dhcp.sh
    chmod +x /tmp/dhcp.sh
    ip link set "$IF" up && udhcpc -i "$IF" -s /tmp/dhcp.sh -n -q -t 20 -T 3 >/dev/null 2>&1 || say "dhcp FAIL"
    GW=$(cat /tmp/gw 2>/dev/null)
else
    ip addr add "$IP/24" dev "$IF" && ip link set "$IF" up || say "ip config FAIL"
fi
nc -l -p 9001 >/dev/null 2>&1 &
bye=$!
nc -ll -p 9002 -e cat >/dev/null 2>&1 &
for f in /sys/bus/virtio/devices/*/features; do [ -r "$f" ] && say "virtio features $(cat "$f")"; done
if [ -n "$GW" ]; then
    ping -c 2 -W 2 "$GW" >/dev/null 2>&1
    ping -c "$PINGS" -i 0.02 -W 2 "$GW" 2>&1 | sed 's/^/NET: ping /'
fi
if iperf3 -s -D >/dev/null 2>&1; then say "iperf ready on $IF"; else say "iperf FAIL"; fi
i=0
while kill -0 "$bye" 2>/dev/null && [ "$i" -lt 4500 ]; do sleep 0.2; i=$((i + 1)); done
say done
"#;
    s
}

fn newc_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let namesize = name.len() + 1;
    let fields = [
        1u32, // ino
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        namesize as u32,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// An uncompressed newc cpio holding `/scenario.sh` (mode 0755). Linux
/// unpacks it after the gzip'd base initramfs it is appended to.
pub fn scenario_cpio(script: &str) -> Vec<u8> {
    let mut out = Vec::new();
    newc_entry(&mut out, "scenario.sh", 0o100755, script.as_bytes());
    newc_entry(&mut out, "TRAILER!!!", 0, &[]);
    out
}

/// `base` (the guest's gzip'd initramfs) with the scenario appended:
/// zero padding to a 4-byte boundary first, where Linux looks for the
/// next archive's magic.
pub fn append_scenario(base: &[u8], script: &str) -> Vec<u8> {
    let mut img = base.to_vec();
    while img.len() % 4 != 0 {
        img.push(0);
    }
    img.extend(scenario_cpio(script));
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_address_forms_agree() {
        assert_eq!(GUEST_IPV4.to_string(), GUEST_IP);
    }

    #[test]
    fn scripts_differ_by_backend() {
        let u = script(Net::User);
        let t = script(Net::Tap);
        assert!(
            u.starts_with("MAC=52:54:00:15:00:02 IP=192.168.150.2 HOST=192.168.150.1 NETB=user")
        );
        assert!(t.contains("NETB=tap"));
        for s in [&u, &t] {
            assert!(s.contains("say \"iperf ready on $IF\""));
            assert!(s.contains("nc -ll -p 9002 -e cat"));
            assert!(s.contains("sed 's/^/NET: ping /'"));
        }
    }

    #[test]
    fn appended_on_a_4_byte_boundary() {
        let img = append_scenario(&[0x1f, 0x8b, 8, 0, 1], "true\n");
        assert_eq!(&img[5..8], &[0, 0, 0]);
        assert!(img[8..].starts_with(b"070701"));
        assert_eq!(append_scenario(&[1, 2, 3, 4], "x").len() % 4, 0);
    }

    #[test]
    fn cpio_layout() {
        let c = scenario_cpio("echo hi\n");
        assert!(c.starts_with(b"070701"));
        assert_eq!(c.len() % 4, 0);
        // Header: magic + 13 fields of 8 hex digits; mode is the 2nd field.
        assert_eq!(&c[14..22], b"000081ed");
        // filesize (7th field) = 8
        assert_eq!(&c[54..62], b"00000008");
        let name_at = 110;
        assert_eq!(&c[name_at..name_at + 12], b"scenario.sh\0");
        let text = String::from_utf8_lossy(&c);
        assert!(text.contains("echo hi\n"));
        assert!(text.contains("TRAILER!!!"));
    }
}
