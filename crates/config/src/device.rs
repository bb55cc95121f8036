//! `--device` specifications: `vfio-pci,host=0000:01:00.0[,addr=SLOT]` and
//! `isa-debug-exit[,iobase=0xf4,iosize=4]`.
//!
//! The first token is the device kind (or `help`); the rest are
//! `key=value`. For vfio-pci:
//! - `host=` the host PCI function, `DDDD:BB:DD.F` (or `BB:DD.F`, domain 0)
//! - `addr=` the guest PCI slot, hex as in QEMU (`addr=5`, `addr=0x1f`,
//!   `addr=05.0`), 1..1f
//!
//! For isa-debug-exit (a guest write of V ends tapir with status
//! `(V << 1) | 1`):
//! - `iobase=` first I/O port, `0x` hex or decimal (default 0xf4)
//! - `iosize=` number of ports, at least 1 (default 4)

use std::fmt;
use std::str::FromStr;

/// Errors in one `--device` value; each is one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceSpecError {
    /// Nothing given.
    #[error("--device: empty value (see --device help)")]
    Empty,
    /// The first token is not a device kind tapir knows.
    #[error("--device: unknown device kind '{}' (see --device help)", .0.escape_debug())]
    UnknownKind(String),
    /// A token after the kind is not `key=value`.
    #[error("--device: '{}' is not key=value", .0.escape_debug())]
    NotKeyValue(String),
    /// Unknown key.
    #[error("--device: unknown key '{}' for {kind} (see --device help)", .key.escape_debug())]
    UnknownKey { kind: &'static str, key: String },
    /// A key given twice.
    #[error("--device: '{}' given more than once", .0.escape_debug())]
    Duplicate(String),
    /// A required key is missing.
    #[error("--device: {kind} needs {key}=")]
    Missing {
        kind: &'static str,
        key: &'static str,
    },
    /// Bad value for a key.
    #[error("--device: invalid {key} '{}': {why}", .value.escape_debug())]
    BadValue {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    /// Two `--device`s name one host function.
    #[error("--device: host {0} is assigned twice")]
    DuplicateHost(PciAddress),
    /// A device kind a VM can have only one of, given twice.
    #[error("--device: only one {0} is allowed")]
    OnlyOne(&'static str),
}

/// A host PCI function address: domain, bus, device (slot), function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u16,
    /// Bus.
    pub bus: u8,
    /// Device (slot), 0..=0x1f.
    pub device: u8,
    /// Function, 0..=7.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceSpecError::BadValue {
            key: "host",
            value: s.into(),
            why: "expected a PCI address DDDD:BB:DD.F, e.g. 0000:01:00.0",
        };
        let hex = |t: &str, max_len: usize| -> Result<u32, DeviceSpecError> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(t, 16).map_err(|_| bad())
        };
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, dev] => (hex(d, 4)?, hex(b, 2)?, hex(dev, 2)?),
            [b, dev] => (0, hex(b, 2)?, hex(dev, 2)?),
            _ => return Err(bad()),
        };
        let function = hex(function, 1)?;
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(PciAddress {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

/// A host PCI function assigned to the guest through VFIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioPciSpec {
    /// The host function (bound to vfio-pci).
    pub host: PciAddress,
    /// The guest PCI slot (None: the first free one).
    pub slot: Option<u8>,
}

/// `isa-debug-exit`: the I/O ports whose writes end the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugExitSpec {
    /// First port.
    pub iobase: u16,
    /// Number of ports (at least 1; the range ends by 0xffff).
    pub iosize: u16,
}

impl Default for DebugExitSpec {
    fn default() -> Self {
        Self {
            iobase: DEBUG_EXIT_IOBASE,
            iosize: DEBUG_EXIT_IOSIZE,
        }
    }
}

/// `isa-debug-exit`'s default `iobase=` (kvm-unit-tests' port).
pub const DEBUG_EXIT_IOBASE: u16 = 0xf4;
/// `isa-debug-exit`'s default `iosize=`.
pub const DEBUG_EXIT_IOSIZE: u16 = 4;

/// One `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `vfio-pci`: device assignment.
    VfioPci(VfioPciSpec),
    /// `isa-debug-exit`: guest-chosen exit status.
    DebugExit(DebugExitSpec),
    /// `pc-testdev`: QEMU's x86 test device (kvm-unit-tests).
    PcTestdev,
}

impl DeviceSpec {
    /// The assignment, when this is a `vfio-pci`.
    pub fn as_vfio_pci(&self) -> Option<&VfioPciSpec> {
        match self {
            DeviceSpec::VfioPci(v) => Some(v),
            DeviceSpec::DebugExit(_) | DeviceSpec::PcTestdev => None,
        }
    }

    /// The port range, when this is an `isa-debug-exit`.
    pub fn as_debug_exit(&self) -> Option<&DebugExitSpec> {
        match self {
            DeviceSpec::DebugExit(d) => Some(d),
            DeviceSpec::VfioPci(_) | DeviceSpec::PcTestdev => None,
        }
    }
}

/// A parsed `--device` argument: a device, or a request for the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceArg {
    /// `--device help`.
    Help,
    /// A device.
    Device(DeviceSpec),
}

/// The device kinds, with their keys, for `--device help`.
pub const DEVICE_KINDS: &[(&str, &str)] = &[
    (
        "vfio-pci",
        "assign a host PCI function bound to vfio-pci: host=DDDD:BB:DD.F (required), addr=SLOT (guest PCI slot, hex 1..1f)",
    ),
    (
        "isa-debug-exit",
        "a guest write of V to these ports ends tapir with exit status (V << 1) | 1 (low 8 bits): \
         iobase=PORT (0x hex or decimal, default 0xf4), iosize=N (ports, default 4)",
    ),
    (
        "pc-testdev",
        "QEMU's x86 test device for kvm-unit-tests: a scratch register at port 0xe0, interrupt \
         lines at ports 0x2000+N, scratch memory at 0xff000000 (64 KiB); no keys",
    ),
];

/// A port number or count: `0x` hex or decimal, below 0x10000.
fn parse_port_number(key: &'static str, v: &str) -> Result<u32, DeviceSpecError> {
    let bad = || DeviceSpecError::BadValue {
        key,
        value: v.into(),
        why: "expected a number, 0x hex or decimal, below 0x10000",
    };
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (v, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let n = u32::from_str_radix(digits, radix).map_err(|_| bad())?;
    if n > 0xffff {
        return Err(bad());
    }
    Ok(n)
}

/// `key=value` tokens as (key, value); an error for a token without `=`
/// or a key given twice.
fn key_values<'a>(
    tokens: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = Result<(&'a str, &'a str), DeviceSpecError>> {
    let mut seen: Vec<&'a str> = Vec::new();
    tokens.map(move |tok| match tok.split_once('=') {
        None => Err(DeviceSpecError::NotKeyValue(tok.to_string())),
        Some((k, _)) if seen.contains(&k) => Err(DeviceSpecError::Duplicate(k.to_string())),
        Some((k, v)) => {
            seen.push(k);
            Ok((k, v))
        }
    })
}

fn parse_debug_exit<'a>(
    tokens: impl Iterator<Item = &'a str>,
) -> Result<DebugExitSpec, DeviceSpecError> {
    let mut spec = DebugExitSpec::default();
    for kv in key_values(tokens) {
        let (k, v) = kv?;
        match k {
            "iobase" => spec.iobase = parse_port_number("iobase", v)? as u16,
            "iosize" => {
                let n = parse_port_number("iosize", v)?;
                if n == 0 {
                    return Err(DeviceSpecError::BadValue {
                        key: "iosize",
                        value: v.into(),
                        why: "at least 1 port",
                    });
                }
                spec.iosize = n as u16;
            }
            _ => {
                return Err(DeviceSpecError::UnknownKey {
                    kind: "isa-debug-exit",
                    key: k.to_string(),
                })
            }
        }
    }
    if spec.iobase as u32 + spec.iosize as u32 > 0x10000 {
        return Err(DeviceSpecError::BadValue {
            key: "iosize",
            value: spec.iosize.to_string(),
            why: "the ports would run past 0xffff",
        });
    }
    Ok(spec)
}

fn parse_slot(v: &str) -> Result<u8, DeviceSpecError> {
    let bad = || DeviceSpecError::BadValue {
        key: "addr",
        value: v.into(),
        why: "PCI slot must be hex 1..1f (slot 0 is the host bridge)",
    };
    let s = v.strip_suffix(".0").unwrap_or(v);
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let slot = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    if !(1..=0x1f).contains(&slot) {
        return Err(bad());
    }
    Ok(slot)
}

impl FromStr for DeviceArg {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tokens = s.split(',');
        let kind = tokens.next().unwrap_or("");
        match kind {
            "" => return Err(DeviceSpecError::Empty),
            "help" => return Ok(DeviceArg::Help),
            "vfio-pci" => {}
            "isa-debug-exit" => {
                return Ok(DeviceArg::Device(DeviceSpec::DebugExit(parse_debug_exit(
                    tokens,
                )?)))
            }
            "pc-testdev" => {
                return match tokens.next() {
                    None => Ok(DeviceArg::Device(DeviceSpec::PcTestdev)),
                    Some(tok) => Err(DeviceSpecError::UnknownKey {
                        kind: "pc-testdev",
                        key: tok.split('=').next().unwrap_or(tok).to_string(),
                    }),
                }
            }
            other => return Err(DeviceSpecError::UnknownKind(other.to_string())),
        }
        let mut host = None;
        let mut slot = None;
        for kv in key_values(tokens) {
            let (k, v) = kv?;
            match k {
                "host" => host = Some(v.parse::<PciAddress>()?),
                "addr" => slot = Some(parse_slot(v)?),
                _ => {
                    return Err(DeviceSpecError::UnknownKey {
                        kind: "vfio-pci",
                        key: k.to_string(),
                    })
                }
            }
        }
        let host = host.ok_or(DeviceSpecError::Missing {
            kind: "vfio-pci",
            key: "host",
        })?;
        Ok(DeviceArg::Device(DeviceSpec::VfioPci(VfioPciSpec {
            host,
            slot,
        })))
    }
}

/// Checks a VM's devices together: one host function is assigned once;
/// one isa-debug-exit and one pc-testdev at most. (Port conflicts with the machine's own
/// devices are found when the VM is built.)
pub fn check_devices(devices: &[DeviceSpec]) -> Result<(), DeviceSpecError> {
    let mut hosts: Vec<PciAddress> = Vec::new();
    for v in devices.iter().filter_map(DeviceSpec::as_vfio_pci) {
        if hosts.contains(&v.host) {
            return Err(DeviceSpecError::DuplicateHost(v.host));
        }
        hosts.push(v.host);
    }
    if devices.iter().filter_map(DeviceSpec::as_debug_exit).count() > 1 {
        return Err(DeviceSpecError::OnlyOne("isa-debug-exit"));
    }
    if devices
        .iter()
        .filter(|d| matches!(d, DeviceSpec::PcTestdev))
        .count()
        > 1
    {
        return Err(DeviceSpecError::OnlyOne("pc-testdev"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> VfioPciSpec {
        match s.parse::<DeviceArg>().unwrap() {
            DeviceArg::Device(DeviceSpec::VfioPci(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    fn debug_exit(s: &str) -> DebugExitSpec {
        match s.parse::<DeviceArg>().unwrap() {
            DeviceArg::Device(DeviceSpec::DebugExit(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pc_testdev_has_no_keys_and_comes_once() {
        assert_eq!(
            "pc-testdev".parse::<DeviceArg>(),
            Ok(DeviceArg::Device(DeviceSpec::PcTestdev))
        );
        assert_eq!(
            "pc-testdev,iobase=1".parse::<DeviceArg>(),
            Err(DeviceSpecError::UnknownKey {
                kind: "pc-testdev",
                key: "iobase".into()
            })
        );
        let two = [DeviceSpec::PcTestdev, DeviceSpec::PcTestdev];
        assert_eq!(
            check_devices(&two),
            Err(DeviceSpecError::OnlyOne("pc-testdev"))
        );
        assert_eq!(check_devices(&two[..1]), Ok(()));
    }

    #[test]
    fn debug_exit_defaults_hex_and_decimal() {
        assert_eq!(
            debug_exit("isa-debug-exit"),
            DebugExitSpec {
                iobase: 0xf4,
                iosize: 4
            }
        );
        assert_eq!(
            debug_exit("isa-debug-exit,iobase=0x501,iosize=2"),
            DebugExitSpec {
                iobase: 0x501,
                iosize: 2
            }
        );
        assert_eq!(
            debug_exit("isa-debug-exit,iosize=1,iobase=244"),
            DebugExitSpec {
                iobase: 0xf4,
                iosize: 1
            }
        );
        assert_eq!(
            debug_exit("isa-debug-exit,iobase=0xfffc,iosize=4").iobase,
            0xfffc
        );
    }

    #[test]
    fn debug_exit_bad_values() {
        assert_eq!(
            err("isa-debug-exit,iosize=0").to_string(),
            "--device: invalid iosize '0': at least 1 port"
        );
        assert_eq!(
            err("isa-debug-exit,iobase=0x10000").to_string(),
            "--device: invalid iobase '0x10000': expected a number, 0x hex or decimal, below 0x10000"
        );
        for bad in ["", "f4", "-1", "+4", "0x", "0x+4", "1.5", "99999999999"] {
            let e = err(&format!("isa-debug-exit,iobase={bad}"));
            assert!(
                matches!(e, DeviceSpecError::BadValue { key: "iobase", .. }),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            err("isa-debug-exit,iobase=0xfffe,iosize=4").to_string(),
            "--device: invalid iosize '4': the ports would run past 0xffff"
        );
        assert_eq!(
            err("isa-debug-exit,host=01:00.0").to_string(),
            "--device: unknown key 'host' for isa-debug-exit (see --device help)"
        );
        assert_eq!(
            err("isa-debug-exit,iosize=1,iosize=2").to_string(),
            "--device: 'iosize' given more than once"
        );
        let one = DeviceSpec::DebugExit(DebugExitSpec::default());
        assert_eq!(
            check_devices(&[one.clone(), one]).unwrap_err().to_string(),
            "--device: only one isa-debug-exit is allowed"
        );
    }

    fn err(s: &str) -> DeviceSpecError {
        s.parse::<DeviceArg>().unwrap_err()
    }

    #[test]
    fn parses_host_and_slot() {
        let v = dev("vfio-pci,host=0000:01:00.0");
        assert_eq!(
            v.host,
            PciAddress {
                domain: 0,
                bus: 1,
                device: 0,
                function: 0
            }
        );
        assert_eq!(v.slot, None);
        let v = dev("vfio-pci,host=abcd:ff:1f.7,addr=0x1f");
        assert_eq!(v.host.to_string(), "abcd:ff:1f.7");
        assert_eq!(v.slot, Some(0x1f));
        assert_eq!(dev("vfio-pci,addr=05.0,host=02:03.1").slot, Some(5));
        assert_eq!(
            dev("vfio-pci,host=02:03.1").host.to_string(),
            "0000:02:03.1"
        );
        assert_eq!(
            dev("vfio-pci,host=0:1:2.3").host.to_string(),
            "0000:01:02.3"
        );
        assert_eq!("help".parse::<DeviceArg>(), Ok(DeviceArg::Help));
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "0000:01:00",
            "0000:01:00.8",
            "0000:01:20.0",
            "00000:01:00.0",
            "0000:100:00.0",
            "01.0",
            "0000:0g:00.0",
            "",
            "0000:01:00.0.0",
            "1:2:3:4.0",
            "0000:01:+1.0",
        ] {
            let e = err(&format!("vfio-pci,host={bad}"));
            assert!(
                matches!(e, DeviceSpecError::BadValue { key: "host", .. }),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            err("vfio-pci,host=01:00").to_string(),
            "--device: invalid host '01:00': expected a PCI address DDDD:BB:DD.F, e.g. 0000:01:00.0"
        );
    }

    #[test]
    fn bad_slots() {
        for bad in ["0", "20", "x", "", "1.1"] {
            let e = err(&format!("vfio-pci,host=01:00.0,addr={bad}"));
            assert!(
                matches!(e, DeviceSpecError::BadValue { key: "addr", .. }),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn keys_and_kinds() {
        assert_eq!(
            err("vfio-pci,host=01:00.0,romfile=x").to_string(),
            "--device: unknown key 'romfile' for vfio-pci (see --device help)"
        );
        assert_eq!(
            err("vfio-pci").to_string(),
            "--device: vfio-pci needs host="
        );
        assert_eq!(
            err("vfio-pci,addr=3").to_string(),
            "--device: vfio-pci needs host="
        );
        assert_eq!(
            err("vfio-pci,host=01:00.0,host=01:00.1").to_string(),
            "--device: 'host' given more than once"
        );
        assert_eq!(
            err("vfio-pci,host").to_string(),
            "--device: 'host' is not key=value"
        );
        assert_eq!(
            err("e1000e,host=01:00.0").to_string(),
            "--device: unknown device kind 'e1000e' (see --device help)"
        );
        assert_eq!(err(""), DeviceSpecError::Empty);
        // Control characters stay escaped: one line.
        assert!(!err("vfio-pci,a\nb=1").to_string().contains('\n'));
    }

    #[test]
    fn duplicate_host_across_devices() {
        let a = DeviceSpec::VfioPci(dev("vfio-pci,host=01:00.0"));
        let b = DeviceSpec::VfioPci(dev("vfio-pci,host=0000:01:00.0,addr=4"));
        let c = DeviceSpec::VfioPci(dev("vfio-pci,host=01:00.1"));
        assert_eq!(check_devices(&[a.clone(), c.clone()]), Ok(()));
        assert_eq!(
            check_devices(&[a, c, b]).unwrap_err().to_string(),
            "--device: host 0000:01:00.0 is assigned twice"
        );
    }
}
