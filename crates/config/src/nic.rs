//! `--nic` specifications: `model=virtio,net=tap,ifname=tap0,mac=...`.
//!
//! Keys, as a QEMU user knows them:
//! - `model=` `virtio` (default) | `e1000` | `rtl8139` | `help`
//! - `net=` `user` (default) | `tap` | `bridge` | `passthrough`
//! - `id=` a name for the NIC (letters, digits, `-`, `_`; at most 15)
//! - `mac=` `XX:XX:XX:XX:XX:XX`, unicast
//! - `addr=` the PCI slot, hex as in QEMU (`addr=5`, `addr=0x1f`, `addr=05.0`), 1..1f
//! - `vlan=` 802.1Q VLAN id 1..4094 (the NIC becomes an access port)
//! - model options: `vectors=N` (virtio MSI-X vectors, 0 = INTx),
//!   `rev=N` (rtl8139 PCI revision; below 0x20 is driven by 8139too)
//! - backend options: tap `ifname=`, `fd=`; bridge `br=`, `ifname=`;
//!   user `subnet=`, `gateway=`, `dns=`, `dhcpstart=`, `loopback=`, `hostfwd=` (repeatable),
//!   `restrict=on|off`; passthrough `host=`, `mode=bridge|vepa|private|passthru`.
//! - capture: `pcap=FILE` (every frame in and out, in libpcap format),
//!   `pcap_max=SIZE` (rotation to `FILE.1` past SIZE; at least 4K).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::size::parse_size;

/// The smallest `pcap_max=`: a file header and a few records.
pub const PCAP_MAX_MIN: u64 = 4096;

/// Errors in one `--nic` value. What the user typed is shown with control
/// characters escaped, so that every error stays one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NicSpecError {
    /// A token is not `key=value` (or the lone word `help`).
    #[error("--nic: '{}' is not key=value", .0.escape_debug())]
    NotKeyValue(String),
    /// Unknown key.
    #[error("--nic: unknown key '{}' (see --nic help)", .0.escape_debug())]
    UnknownKey(String),
    /// A key given twice (only `hostfwd` may repeat).
    #[error("--nic: '{}' given more than once", .0.escape_debug())]
    Duplicate(String),
    /// Bad value for a key.
    #[error("--nic: invalid {key} '{}': {why}", .value.escape_debug())]
    BadValue {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    /// An option that the chosen model or backend does not take.
    #[error("--nic: '{}' does not apply to {what}", .key.escape_debug())]
    NotApplicable { key: String, what: String },
    /// A required option is missing.
    #[error("--nic: net={net} needs {key}=")]
    Missing {
        net: &'static str,
        key: &'static str,
    },
    /// An option that only makes sense with another one.
    #[error("--nic: {key}= needs {needs}=")]
    Needs {
        key: &'static str,
        needs: &'static str,
    },
}

/// Capture of a NIC's frames (`pcap=FILE[,pcap_max=SIZE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapSpec {
    /// The capture file (created, or emptied).
    pub path: PathBuf,
    /// Past this many bytes the file becomes `FILE.1` and a new one starts.
    pub max: Option<u64>,
}

/// The emulated NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// virtio-net over PCI (virtio 1.x).
    Virtio,
    /// Intel 82540EM.
    E1000,
    /// Realtek RTL8139 (C+ capable).
    Rtl8139,
}

impl NicModel {
    /// All models, in listing order.
    pub const ALL: [NicModel; 3] = [NicModel::Virtio, NicModel::E1000, NicModel::Rtl8139];

    /// The `model=` name.
    pub fn name(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

impl FromStr for NicModel {
    type Err = NicSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "virtio" | "virtio-net" | "virtio-net-pci" => Ok(NicModel::Virtio),
            "e1000" | "82540em" => Ok(NicModel::E1000),
            "rtl8139" => Ok(NicModel::Rtl8139),
            _ => Err(NicSpecError::BadValue {
                key: "model",
                value: s.into(),
                why: "expected virtio, e1000, rtl8139 or help",
            }),
        }
    }
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = NicSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| NicSpecError::BadValue {
            key: "mac",
            value: s.into(),
            why,
        };
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad("expected six hex octets XX:XX:XX:XX:XX:XX"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad("expected six hex octets XX:XX:XX:XX:XX:XX"));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| bad("expected six hex octets XX:XX:XX:XX:XX:XX"))?;
        }
        if out[0] & 1 != 0 {
            return Err(bad("a multicast address cannot be a NIC's address"));
        }
        if out == [0; 6] {
            return Err(bad("the all-zero address is not valid"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The backend a NIC is attached to, with its options: the `net=` part of
/// a `--nic`. The VMM opens it as a `tapir_net_backend::NetBackend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// User-mode NAT (no privileges).
    User {
        /// `key=value` options (subnet, gateway, dns, dhcpstart, restrict,
        /// loopback) in order; tapir-net-user parses them.
        options: Vec<(String, String)>,
        /// `hostfwd=` rules, as given.
        hostfwd: Vec<String>,
    },
    /// A tap device: existing (`ifname`), inherited (`fd`) or created.
    Tap {
        /// Name of the tap to attach to or create.
        ifname: Option<String>,
        /// An already open tap file descriptor.
        fd: Option<i32>,
    },
    /// A new tap enslaved to an existing Linux bridge.
    Bridge {
        /// The bridge.
        br: String,
        /// Name for the tap tapir creates.
        ifname: Option<String>,
    },
    /// Direct attach to a host NIC (a macvtap on it).
    Passthrough {
        /// Host interface name.
        host: String,
        /// The macvtap mode.
        mode: MacvtapMode,
    },
}

/// How a passthrough NIC's macvtap treats traffic between guests on the
/// same host NIC (`mode=`, as libvirt's `type='direct'`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MacvtapMode {
    /// Guests on one host NIC reach each other directly (the default).
    #[default]
    Bridge,
    /// Everything goes to the adjacent switch, which may send it back.
    Vepa,
    /// Guests on one host NIC never reach each other.
    Private,
    /// The guest owns the host NIC (one macvtap per NIC).
    Passthru,
}

impl BackendSpec {
    /// The `net=` name.
    pub fn name(&self) -> &'static str {
        match self {
            BackendSpec::User { .. } => "user",
            BackendSpec::Tap { .. } => "tap",
            BackendSpec::Bridge { .. } => "bridge",
            BackendSpec::Passthrough { .. } => "passthrough",
        }
    }
}

/// One parsed `--nic`, or a request for the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicArg {
    /// `--nic help` or `model=help`.
    Help,
    /// A NIC.
    Nic(NicSpec),
}

/// A validated NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Model.
    pub model: NicModel,
    /// Backend.
    pub net: BackendSpec,
    /// Name.
    pub id: Option<String>,
    /// MAC address (None: the VMM derives a stable one).
    pub mac: Option<MacAddr>,
    /// PCI slot.
    pub slot: Option<u8>,
    /// 802.1Q access VLAN.
    pub vlan: Option<u16>,
    /// virtio MSI-X vectors (virtio only).
    pub vectors: Option<u16>,
    /// PCI revision (rtl8139 only).
    pub revision: Option<u8>,
    /// Capture to a pcap file.
    pub pcap: Option<PcapSpec>,
}

fn valid_ifname(key: &'static str, v: &str) -> Result<String, NicSpecError> {
    if v.is_empty()
        || v.len() > 15
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(NicSpecError::BadValue {
            key,
            value: v.into(),
            why: "expected 1-15 characters of [A-Za-z0-9._-]",
        });
    }
    Ok(v.to_string())
}

fn parse_num<T: TryFrom<u64>>(
    key: &'static str,
    v: &str,
    hex_default: bool,
) -> Result<T, NicSpecError> {
    let bad = || NicSpecError::BadValue {
        key,
        value: v.into(),
        why: "not a number in range",
    };
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None if hex_default => (v, 16),
        None => (v, 10),
    };
    let n = u64::from_str_radix(digits, radix).map_err(|_| bad())?;
    T::try_from(n).map_err(|_| bad())
}

impl FromStr for NicArg {
    type Err = NicSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "help" {
            return Ok(NicArg::Help);
        }
        let mut kv: Vec<(String, String)> = Vec::new();
        for tok in s.split(',') {
            let (k, v) = tok
                .split_once('=')
                .ok_or_else(|| NicSpecError::NotKeyValue(tok.to_string()))?;
            if k != "hostfwd" && kv.iter().any(|(ek, _)| ek == k) {
                return Err(NicSpecError::Duplicate(k.to_string()));
            }
            kv.push((k.to_string(), v.to_string()));
        }
        if kv.iter().any(|(k, v)| k == "model" && v == "help") {
            return Ok(NicArg::Help);
        }
        let get = |key: &str| kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let model = get("model")
            .map(NicModel::from_str)
            .transpose()?
            .unwrap_or(NicModel::Virtio);
        let net_name = get("net").unwrap_or("user");
        let mut used = vec![
            "model", "net", "id", "mac", "addr", "vlan", "vectors", "rev", "pcap", "pcap_max",
        ];
        let net = match net_name {
            "user" => {
                used.extend([
                    "subnet",
                    "gateway",
                    "dns",
                    "dhcpstart",
                    "restrict",
                    "loopback",
                    "hostfwd",
                ]);
                let options = kv
                    .iter()
                    .filter(|(k, _)| {
                        [
                            "subnet",
                            "gateway",
                            "dns",
                            "dhcpstart",
                            "restrict",
                            "loopback",
                        ]
                        .contains(&k.as_str())
                    })
                    .cloned()
                    .collect();
                let hostfwd = kv
                    .iter()
                    .filter(|(k, _)| k == "hostfwd")
                    .map(|(_, v)| v.clone())
                    .collect();
                BackendSpec::User { options, hostfwd }
            }
            "tap" => {
                used.extend(["ifname", "fd"]);
                let ifname = get("ifname")
                    .map(|v| valid_ifname("ifname", v))
                    .transpose()?;
                let fd = get("fd")
                    .map(|v| parse_num::<i32>("fd", v, false))
                    .transpose()?;
                if ifname.is_some() && fd.is_some() {
                    return Err(NicSpecError::BadValue {
                        key: "fd",
                        value: get("fd").unwrap_or_default().into(),
                        why: "give either ifname= or fd=, not both",
                    });
                }
                BackendSpec::Tap { ifname, fd }
            }
            "bridge" => {
                used.extend(["br", "ifname"]);
                let br = get("br").ok_or(NicSpecError::Missing {
                    net: "bridge",
                    key: "br",
                })?;
                let br = valid_ifname("br", br)?;
                let ifname = get("ifname")
                    .map(|v| valid_ifname("ifname", v))
                    .transpose()?;
                BackendSpec::Bridge { br, ifname }
            }
            "passthrough" => {
                used.extend(["host", "mode"]);
                let host = get("host").ok_or(NicSpecError::Missing {
                    net: "passthrough",
                    key: "host",
                })?;
                let mode = match get("mode") {
                    None | Some("bridge") => MacvtapMode::Bridge,
                    Some("vepa") => MacvtapMode::Vepa,
                    Some("private") => MacvtapMode::Private,
                    Some("passthru") => MacvtapMode::Passthru,
                    Some(other) => {
                        return Err(NicSpecError::BadValue {
                            key: "mode",
                            value: other.into(),
                            why: "expected bridge, vepa, private or passthru",
                        })
                    }
                };
                BackendSpec::Passthrough {
                    host: valid_ifname("host", host)?,
                    mode,
                }
            }
            other => {
                return Err(NicSpecError::BadValue {
                    key: "net",
                    value: other.into(),
                    why: "expected user, tap, bridge or passthrough",
                })
            }
        };
        for (k, _) in &kv {
            if !used.contains(&k.as_str()) {
                let known = [
                    "ifname",
                    "fd",
                    "br",
                    "host",
                    "mode",
                    "subnet",
                    "gateway",
                    "dns",
                    "dhcpstart",
                    "restrict",
                    "hostfwd",
                ];
                return Err(if known.contains(&k.as_str()) {
                    NicSpecError::NotApplicable {
                        key: k.clone(),
                        what: format!("net={net_name}"),
                    }
                } else {
                    NicSpecError::UnknownKey(k.clone())
                });
            }
        }
        let id = get("id").map(|v| valid_ifname("id", v)).transpose()?;
        let mac = get("mac").map(MacAddr::from_str).transpose()?;
        let slot = match get("addr") {
            None => None,
            Some(v) => {
                let slot_str = v.strip_suffix(".0").unwrap_or(v);
                let slot: u8 = parse_num("addr", slot_str, true)?;
                if !(1..=31).contains(&slot) {
                    return Err(NicSpecError::BadValue {
                        key: "addr",
                        value: v.into(),
                        why: "PCI slot must be 1..1f (slot 0 is the host bridge)",
                    });
                }
                Some(slot)
            }
        };
        let vlan = match get("vlan") {
            None => None,
            Some(v) => {
                let id: u16 = parse_num("vlan", v, false)?;
                if !(1..=4094).contains(&id) {
                    return Err(NicSpecError::BadValue {
                        key: "vlan",
                        value: v.into(),
                        why: "802.1Q VLAN id must be 1..4094",
                    });
                }
                Some(id)
            }
        };
        let vectors = get("vectors")
            .map(|v| parse_num::<u16>("vectors", v, false))
            .transpose()?;
        if vectors.is_some() && model != NicModel::Virtio {
            return Err(NicSpecError::NotApplicable {
                key: "vectors".into(),
                what: format!("model={}", model.name()),
            });
        }
        if vectors.is_some_and(|n| n > 64) {
            return Err(NicSpecError::BadValue {
                key: "vectors",
                value: get("vectors").unwrap_or_default().into(),
                why: "at most 64",
            });
        }
        let revision = get("rev")
            .map(|v| parse_num::<u8>("rev", v, false))
            .transpose()?;
        if revision.is_some() && model != NicModel::Rtl8139 {
            return Err(NicSpecError::NotApplicable {
                key: "rev".into(),
                what: format!("model={}", model.name()),
            });
        }
        let pcap = parse_pcap(get("pcap"), get("pcap_max"))?;
        Ok(NicArg::Nic(NicSpec {
            model,
            net,
            id,
            mac,
            slot,
            vlan,
            vectors,
            revision,
            pcap,
        }))
    }
}

/// `pcap=` and `pcap_max=`.
fn parse_pcap(path: Option<&str>, max: Option<&str>) -> Result<Option<PcapSpec>, NicSpecError> {
    let Some(path) = path else {
        return match max {
            Some(_) => Err(NicSpecError::Needs {
                key: "pcap_max",
                needs: "pcap",
            }),
            None => Ok(None),
        };
    };
    if path.is_empty() || path.ends_with('/') || path.bytes().any(|b| b == 0) {
        return Err(NicSpecError::BadValue {
            key: "pcap",
            value: path.into(),
            why: "expected a file name",
        });
    }
    let max = match max {
        None => None,
        Some(v) => {
            let bad = |why| NicSpecError::BadValue {
                key: "pcap_max",
                value: v.into(),
                why,
            };
            let n = parse_size(v)
                .map_err(|_| bad("expected a size such as 64M (a number, K, M, G or T suffix)"))?;
            if n < PCAP_MAX_MIN {
                return Err(bad("at least 4K"));
            }
            Some(n)
        }
    };
    Ok(Some(PcapSpec {
        path: PathBuf::from(path),
        max,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(s: &str) -> NicSpec {
        match s.parse::<NicArg>().unwrap() {
            NicArg::Nic(n) => n,
            NicArg::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_full() {
        let n = nic("id=n0");
        assert_eq!(n.model, NicModel::Virtio);
        assert_eq!(
            n.net,
            BackendSpec::User {
                options: vec![],
                hostfwd: vec![]
            }
        );
        let n = nic("model=e1000,net=tap,ifname=tap0,mac=52:54:00:12:34:56,addr=0x1f,vlan=100");
        assert_eq!(n.model, NicModel::E1000);
        assert_eq!(
            n.net,
            BackendSpec::Tap {
                ifname: Some("tap0".into()),
                fd: None
            }
        );
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert_eq!(n.slot, Some(31));
        assert_eq!(n.vlan, Some(100));
        assert_eq!(nic("addr=05.0").slot, Some(5));
        assert_eq!(nic("addr=10").slot, Some(16));
        let n = nic("net=user,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:53-:53,restrict=on");
        assert_eq!(
            n.net,
            BackendSpec::User {
                options: vec![("restrict".into(), "on".into())],
                hostfwd: vec!["tcp::8080-:80".into(), "udp:127.0.0.1:53-:53".into()]
            }
        );
        assert_eq!(
            nic("net=bridge,br=br0").net,
            BackendSpec::Bridge {
                br: "br0".into(),
                ifname: None
            }
        );
        assert_eq!(nic("model=rtl8139,rev=16").revision, Some(16));
        assert_eq!("help".parse::<NicArg>(), Ok(NicArg::Help));
        assert_eq!("model=help".parse::<NicArg>(), Ok(NicArg::Help));
    }

    #[test]
    fn errors() {
        let e = |s: &str| s.parse::<NicArg>().unwrap_err();
        assert_eq!(
            e("model=ne2k"),
            NicSpecError::BadValue {
                key: "model",
                value: "ne2k".into(),
                why: "expected virtio, e1000, rtl8139 or help"
            }
        );
        assert!(matches!(
            e("net=vde"),
            NicSpecError::BadValue { key: "net", .. }
        ));
        assert_eq!(e("foo=1"), NicSpecError::UnknownKey("foo".into()));
        assert_eq!(e("tap0"), NicSpecError::NotKeyValue("tap0".into()));
        // Found by the nic_arg fuzz target: typed control characters are
        // shown escaped, and the error stays one line.
        assert_eq!(e("\n -").to_string(), "--nic: '\\n -' is not key=value");
        assert_eq!(
            e("mac=\r\x1b[2J").to_string().lines().count(),
            1,
            "a terminal escape in a value"
        );
        assert_eq!(e("mac=1,mac=2"), NicSpecError::Duplicate("mac".into()));
        assert!(matches!(
            e("mac=01:00:5e:00:00:01"),
            NicSpecError::BadValue { key: "mac", .. }
        ));
        assert!(matches!(
            e("mac=52:54:00:12:34"),
            NicSpecError::BadValue { key: "mac", .. }
        ));
        assert!(matches!(
            e("mac=52:54:00:12:34:zz"),
            NicSpecError::BadValue { key: "mac", .. }
        ));
        assert!(matches!(
            e("addr=0"),
            NicSpecError::BadValue { key: "addr", .. }
        ));
        assert!(matches!(
            e("addr=20"),
            NicSpecError::BadValue { key: "addr", .. }
        ));
        assert!(matches!(
            e("vlan=0"),
            NicSpecError::BadValue { key: "vlan", .. }
        ));
        assert!(matches!(
            e("vlan=4095"),
            NicSpecError::BadValue { key: "vlan", .. }
        ));
        assert_eq!(
            e("net=bridge"),
            NicSpecError::Missing {
                net: "bridge",
                key: "br"
            }
        );
        assert_eq!(
            e("net=user,br=br0"),
            NicSpecError::NotApplicable {
                key: "br".into(),
                what: "net=user".into()
            }
        );
        assert_eq!(
            e("model=e1000,vectors=2"),
            NicSpecError::NotApplicable {
                key: "vectors".into(),
                what: "model=e1000".into()
            }
        );
        assert!(matches!(
            e("net=tap,ifname=waytoolonginterfacename"),
            NicSpecError::BadValue { key: "ifname", .. }
        ));
        assert!(matches!(
            e("net=tap,ifname=a,fd=3"),
            NicSpecError::BadValue { key: "fd", .. }
        ));
    }

    #[test]
    fn pcap() {
        assert_eq!(nic("id=n0").pcap, None);
        assert_eq!(
            nic("pcap=/tmp/n0.pcap").pcap,
            Some(PcapSpec {
                path: "/tmp/n0.pcap".into(),
                max: None
            })
        );
        assert_eq!(
            nic("net=tap,ifname=t0,pcap=cap,pcap_max=64M").pcap,
            Some(PcapSpec {
                path: "cap".into(),
                max: Some(64 << 20)
            })
        );
        assert_eq!(nic("pcap=c,pcap_max=4096").pcap.unwrap().max, Some(4096));
        let e = |s: &str| s.parse::<NicArg>().unwrap_err();
        assert_eq!(
            e("pcap_max=1M"),
            NicSpecError::Needs {
                key: "pcap_max",
                needs: "pcap"
            }
        );
        assert_eq!(e("pcap_max=1M").to_string(), "--nic: pcap_max= needs pcap=");
        for bad in ["pcap=", "pcap=dir/"] {
            assert!(
                matches!(e(bad), NicSpecError::BadValue { key: "pcap", .. }),
                "{bad}"
            );
        }
        for bad in ["1.5M", "-1", "M", "12X", "99999999999T", "4095", "0"] {
            let err = e(&format!("pcap=c,pcap_max={bad}"));
            assert!(
                matches!(
                    err,
                    NicSpecError::BadValue {
                        key: "pcap_max",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
            assert_eq!(err.to_string().lines().count(), 1);
        }
        assert_eq!(
            e("pcap=c,pcap_max=1K").to_string(),
            "--nic: invalid pcap_max '1K': at least 4K"
        );
        assert_eq!(e("pcap=a,pcap=b"), NicSpecError::Duplicate("pcap".into()));
    }
}
