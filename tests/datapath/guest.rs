//! The guest's side of one cell: the model and backend, the test kernel's
//! command line, and its `NIC: RESULT` line.

use std::collections::BTreeMap;

use crate::frames::{PayloadHash, Rules};

/// A NIC model as the guest drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// virtio-net, MSI-X.
    Virtio,
    /// virtio-net, INTx (`irq=intx`).
    VirtioIntx,
    E1000,
    /// RTL8139, normal mode (TSD/TSAD, RX ring).
    Rtl8139,
    /// RTL8139, C+ mode (descriptors).
    Rtl8139Cp,
}

impl Model {
    /// tapir's `--nic model=`.
    pub fn nic_model(self) -> &'static str {
        match self {
            Model::Virtio | Model::VirtioIntx => "virtio",
            Model::E1000 => "e1000",
            Model::Rtl8139 | Model::Rtl8139Cp => "rtl8139",
        }
    }

    /// The guest's `model=`.
    pub fn guest_model(self) -> &'static str {
        match self {
            Model::Virtio | Model::VirtioIntx => "virtio",
            Model::E1000 => "e1000",
            Model::Rtl8139 => "rtl8139",
            Model::Rtl8139Cp => "rtl8139cp",
        }
    }

    /// A short tag for interface names.
    pub fn tag(self) -> &'static str {
        match self {
            Model::Virtio => "v",
            Model::VirtioIntx => "vi",
            Model::E1000 => "e",
            Model::Rtl8139 => "r",
            Model::Rtl8139Cp => "rc",
        }
    }
}

/// Where the NIC's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `MemoryBackend`, the VM in this process; the peer echoes.
    Memory,
    /// A tap this test made; a packet socket on it echoes.
    Tap,
    /// `net=user,loopback=on`; a UDP echo server on 127.0.0.1.
    User,
    /// `net=passthrough` on one end of a veth pair this test made; a
    /// packet socket on the other end echoes.
    Passthrough,
}

/// One test: a model over a backend.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    pub test: &'static str,
    pub model: Model,
    pub backend: Backend,
}

impl Cell {
    /// Units per run: frames (raw) or datagrams (udp), a few seconds'
    /// worth. 64 frames give every size of the guest's list to each kind
    /// of frame (TCP too, where the driver has no TSO) and every TSO
    /// packet size (2500 bytes to 64 KiB) four times; datagrams are cheap.
    pub fn frames(&self) -> u32 {
        match self.backend {
            Backend::Memory | Backend::Tap | Backend::Passthrough => 64,
            Backend::User => 128,
        }
    }

    /// A seed of its own for each cell, the same in every run.
    pub fn seed(&self) -> u64 {
        let mut h = PayloadHash::new();
        h.update(self.test.as_bytes());
        h.value() & 0xffff_ffff
    }

    /// What the path carries: the memory backend, the tap and the veth
    /// (MTU 9000) carry jumbo frames and tags; net=user carries neither.
    pub fn rules(&self) -> Rules {
        match self.backend {
            Backend::Memory | Backend::Tap | Backend::Passthrough => Rules {
                vlan: 5,
                maxframe: 9014,
            },
            Backend::User => Rules {
                vlan: 0,
                maxframe: 1514,
            },
        }
    }

    /// The test kernel's command line; `port` is the UDP echo server's
    /// (net=user).
    pub fn cmdline(&self, port: Option<u16>) -> String {
        let rules = self.rules();
        let mut c = format!(
            "test=nic model={} frames={} seed={} maxframe={}",
            self.model.guest_model(),
            self.frames(),
            self.seed(),
            rules.maxframe
        );
        match port {
            Some(p) => c.push_str(&format!(" mode=udp port={p}")),
            None => c.push_str(&format!(" mode=raw vlan={}", rules.vlan)),
        }
        if self.model == Model::VirtioIntx {
            c.push_str(" irq=intx");
        }
        c
    }
}

/// What is wrong with the guest's `NIC: RESULT` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the guest printed no '{0}' line")]
    NoLine(&'static str),
    #[error("'{line}' has no {key}=")]
    Missing {
        line: &'static str,
        key: &'static str,
    },
    #[error("'{line}' has {key}={value}, not a number")]
    NotANumber {
        line: &'static str,
        key: &'static str,
        value: String,
    },
}

/// One of the guest's `key=value` lines: `NIC: RESULT ...`
/// ([`GuestReport::RESULT`]) or `nic: model=...` ([`GuestReport::NIC`]).
#[derive(Debug, Clone)]
pub struct GuestReport {
    line: &'static str,
    fields: BTreeMap<String, String>,
}

impl GuestReport {
    /// The result line.
    pub const RESULT: &'static str = "NIC: RESULT ";
    /// The driver's line: caps, max_frame, max_tso, irq.
    pub const NIC: &'static str = "nic: model=";

    /// The last line of the guest's output that starts with `line`.
    pub fn parse(serial: &str, line: &'static str) -> Result<GuestReport, ReportError> {
        let text = serial
            .lines()
            .rfind(|l| l.starts_with(line))
            .ok_or(ReportError::NoLine(line.trim()))?;
        let fields = text
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(GuestReport {
            line: line.trim(),
            fields,
        })
    }

    pub fn text(&self, key: &'static str) -> Result<&str, ReportError> {
        self.fields
            .get(key)
            .map(String::as_str)
            .ok_or(ReportError::Missing {
                line: self.line,
                key,
            })
    }

    /// A decimal or `0x` hex number.
    pub fn num(&self, key: &'static str) -> Result<u64, ReportError> {
        let v = self.text(key)?;
        let n = match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => v.parse(),
        };
        n.map_err(|_| ReportError::NotANumber {
            line: self.line,
            key,
            value: v.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_parsed() {
        let serial = "nic: model=e1000 mac=52:54:00:12:34:56 caps=0x7\n\
                      NIC: RESULT model=e1000 mode=raw tx_frames=64 tx_units=64 rx_frames=90 \
                      tx_hash=0x00000000000000ff rx_hash=0x85944171f73967e8 irqs=12 stray=0\n\
                      TESTKERNEL: PASS\n";
        let r = GuestReport::parse(serial, GuestReport::RESULT).unwrap();
        assert_eq!(r.text("model"), Ok("e1000"));
        assert_eq!(r.num("rx_frames"), Ok(90));
        assert_eq!(r.num("tx_hash"), Ok(0xff));
        assert_eq!(r.num("rx_hash"), Ok(0x8594_4171_f739_67e8));
        assert_eq!(
            r.num("tso"),
            Err(ReportError::Missing {
                line: "NIC: RESULT",
                key: "tso"
            })
        );
        assert!(matches!(
            r.num("mode"),
            Err(ReportError::NotANumber { key: "mode", .. })
        ));
        let nic = GuestReport::parse(serial, GuestReport::NIC).unwrap();
        assert_eq!(nic.num("caps"), Ok(7));
        assert_eq!(
            GuestReport::parse("TESTKERNEL: PASS\n", GuestReport::RESULT).unwrap_err(),
            ReportError::NoLine("NIC: RESULT")
        );
    }

    #[test]
    fn command_lines() {
        let c = Cell {
            test: "datapath_virtio_intx_tap",
            model: Model::VirtioIntx,
            backend: Backend::Tap,
        };
        let s = c.seed();
        assert_eq!(
            c.cmdline(None),
            format!(
                "test=nic model=virtio frames=64 seed={s} maxframe=9014 mode=raw vlan=5 irq=intx"
            )
        );
        let c = Cell {
            test: "datapath_rtl8139cp_user",
            model: Model::Rtl8139Cp,
            backend: Backend::User,
        };
        assert_eq!(
            c.cmdline(Some(4242)),
            format!(
                "test=nic model=rtl8139cp frames=128 seed={} maxframe=1514 mode=udp port=4242",
                c.seed()
            )
        );
    }
}
