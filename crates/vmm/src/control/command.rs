//! The control protocol: one command per line, each answered by zero or
//! more data lines and then exactly one status line, `ok` or
//! `error: MESSAGE`.
//!
//! ```text
//! help                   the commands, one per line
//! info                   one line per NIC: NAME model=M net=B mac=M link=up|down COUNTER=N...
//!                        [pcap_file="FILE" pcap_records=N pcap_bytes=N pcap_rotations=N
//!                        pcap_unsegmented=N pcap_stopped=0|1]
//! info --json            one JSON object: {"nics": [NIC...], "vcpu_exits": {...}}
//! stats NAME             NAME's JSON object (as in `info --json`), on one line
//! set_link NAME on|off   connects or disconnects NAME's cable (as QEMU's set_link)
//! pcap NAME start FILE [MAX]
//!                        captures NAME's frames to FILE, whose descriptor comes with
//!                        the command (SCM_RIGHTS; `tapir ctl` opens FILE); with MAX
//!                        (bytes), rotating to FILE.1, whose descriptor and that of
//!                        their directory come too
//! pcap NAME stop         stops NAME's capture
//! quit                   stops the VM (tapir exits with status 0)
//! ```

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tapir_config::MacAddr;
use tapir_net_backend::{PcapControl, PcapFiles, PcapWriter};
use tapir_nic::worker::NicStats;
use tapir_nic::LinkHandle;
use tapir_pci::AccessCounters;

use super::json;
use crate::{ExitReason, VmControl};

/// The longest command line accepted (bytes, without the newline).
pub const MAX_LINE: usize = 1024;

/// What the control plane knows of a NIC.
#[derive(Clone)]
pub struct NicEntry {
    /// `id=` or `netN`.
    pub name: String,
    /// `virtio`, `e1000`, `rtl8139`.
    pub model: &'static str,
    /// The backend, e.g. `tap:tnt0`, `user`.
    pub backend: String,
    /// The NIC's MAC address.
    pub mac: [u8; 6],
    /// Its cable.
    pub link: LinkHandle,
    /// Its counters.
    pub stats: Arc<NicStats>,
    /// Its capture (`pcap=`, `pcap NAME start|stop`).
    pub pcap: Arc<PcapControl>,
    /// What its PCI function cost: exits and interrupts.
    pub device: DeviceCounters,
}

/// What the VMM counts of a NIC's PCI function, whatever its model.
#[derive(Clone, Default)]
pub struct DeviceCounters {
    /// Guest accesses to its configuration space and BARs (each one a VM
    /// exit to tapir).
    pub access: Arc<AccessCounters>,
    /// Times it raised its INTx line.
    pub intx: Arc<AtomicU64>,
    /// MSI-X messages it sent.
    pub msi: Arc<AtomicU64>,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// List the commands.
    Help,
    /// Describe the NICs, as lines of words or (`json`) one JSON object.
    Info { json: bool },
    /// One NIC's counters as a JSON object.
    Stats { nic: String },
    /// Connect (`true`) or disconnect a NIC's cable.
    SetLink { nic: String, up: bool },
    /// Start capturing a NIC's frames into the file whose descriptor came
    /// with the command (`path` is its name, for `info` and rotation),
    /// with rotation at `max` bytes.
    PcapStart {
        nic: String,
        path: String,
        max: Option<u64>,
    },
    /// Stop a NIC's capture.
    PcapStop { nic: String },
    /// Stop the VM.
    Quit,
}

const HELP: &[&str] = &[
    "help                   this list",
    "info                   one line per NIC: name, model, backend, MAC, link, counters, capture",
    "info --json            the same and the vCPUs' exits, as one JSON object",
    "stats NAME             one NIC's counters as a JSON object",
    "set_link NAME on|off   connect or disconnect the NIC's cable",
    "pcap NAME start FILE [MAX]  capture the NIC's frames to FILE, rotating to FILE.1 at MAX bytes",
    "                       (tapir ctl opens the files and passes them)",
    "pcap NAME stop         stop the NIC's capture",
    "quit                   stop the VM (tapir exits with status 0)",
];

impl Command {
    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let arity = |n: usize, usage: &str| {
            if words.len() == n {
                Ok(())
            } else {
                Err(format!("usage: {usage}"))
            }
        };
        match words.first().copied() {
            None => Err("empty command (try: help)".into()),
            Some("help") => arity(1, "help").map(|_| Command::Help),
            Some("info") => match words.get(1).copied() {
                None => Ok(Command::Info { json: false }),
                Some("--json") if words.len() == 2 => Ok(Command::Info { json: true }),
                _ => Err("usage: info [--json]".into()),
            },
            Some("stats") => {
                arity(2, "stats NAME")?;
                Ok(Command::Stats {
                    nic: words[1].to_string(),
                })
            }
            Some("quit") => arity(1, "quit").map(|_| Command::Quit),
            Some("set_link") => {
                arity(3, "set_link NAME on|off")?;
                let up = match words[2] {
                    "on" | "up" => true,
                    "off" | "down" => false,
                    other => return Err(format!("set_link: '{other}' is not on or off")),
                };
                Ok(Command::SetLink {
                    nic: words[1].to_string(),
                    up,
                })
            }
            Some("pcap") => match (words.get(2).copied(), words.len()) {
                (Some("start"), 4 | 5) => Ok(Command::PcapStart {
                    nic: words[1].to_string(),
                    path: words[3].to_string(),
                    max: match words.get(4) {
                        None => None,
                        Some(m) => match m.parse::<u64>() {
                            Ok(v) if v > 0 => Some(v),
                            _ => return Err(format!("pcap start: MAX '{m}' is not a byte count")),
                        },
                    },
                }),
                (Some("stop"), 3) => Ok(Command::PcapStop {
                    nic: words[1].to_string(),
                }),
                _ => Err("usage: pcap NAME start FILE [MAX] | pcap NAME stop".into()),
            },
            Some(other) => Err(format!(
                "unknown command '{}' (try: help)",
                other.escape_debug()
            )),
        }
    }
}

/// One `info` line.
pub fn info_line(n: &NicEntry) -> String {
    let mut s = format!(
        "{} model={} net={} mac={} link={}",
        n.name,
        n.model,
        n.backend,
        MacAddr(n.mac),
        if n.link.is_up() { "up" } else { "down" }
    );
    for (k, v) in n.stats.snapshot() {
        s += &format!(" {k}={v}");
    }
    let d = &n.device;
    s += &format!(
        " intx={} msi={}",
        d.intx.load(Ordering::Relaxed),
        d.msi.load(Ordering::Relaxed)
    );
    for (k, v) in d.access.snapshot().named() {
        s += &format!(" {k}={v}");
    }
    if let Some((path, counters)) = n.pcap.current() {
        let p = counters.snapshot();
        // Quoted and escaped: the line stays one line of words.
        s += &format!(
            " pcap_file={:?} pcap_records={} pcap_bytes={} pcap_rotations={} \
             pcap_unsegmented={} pcap_stopped={}",
            path.to_string_lossy(),
            p.records,
            p.bytes,
            p.rotations,
            p.unsegmented,
            u8::from(p.stopped)
        );
    }
    s
}

/// The NIC named `nic`, or the error that lists the names.
fn find<'a>(nics: &'a [NicEntry], nic: &str) -> Result<&'a NicEntry, String> {
    nics.iter().find(|n| n.name == nic).ok_or_else(|| {
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        if names.is_empty() {
            format!("no NIC named '{nic}': this VM has no NICs")
        } else {
            format!("no NIC named '{nic}' (NICs: {})", names.join(", "))
        }
    })
}

/// Runs `line` against the VM; returns the reply, status line included,
/// each line ending in a newline. `fds` are the descriptors the client
/// passed (SCM_RIGHTS), oldest first: `pcap NAME start` takes one.
pub fn execute(line: &str, nics: &[NicEntry], vm: &VmControl, fds: &mut Vec<OwnedFd>) -> String {
    let mut out = String::new();
    let status = match Command::parse(line) {
        Err(e) => Err(e),
        Ok(Command::Help) => {
            for l in HELP {
                out += l;
                out.push('\n');
            }
            Ok(())
        }
        Ok(Command::Info { json: false }) => {
            for n in nics {
                out += &info_line(n);
                out.push('\n');
            }
            Ok(())
        }
        Ok(Command::Info { json: true }) => {
            out += &json::info(nics, &vm.exits).to_string();
            out.push('\n');
            Ok(())
        }
        Ok(Command::Stats { nic }) => find(nics, &nic).map(|n| {
            out += &json::nic(n).to_string();
            out.push('\n');
        }),
        Ok(Command::SetLink { nic, up }) => find(nics, &nic).map(|n| {
            n.link.set(up);
        }),
        Ok(Command::PcapStart { nic, path, max }) => find(nics, &nic).and_then(|n| {
            // tapir's threads may not open files: the client did.
            let want = if max.is_some() { 3 } else { 1 };
            if fds.len() < want {
                return Err(format!(
                    "pcap start: {} descriptors came with the command, {want} needed (use \
                     tapir ctl, which opens the files and passes them)",
                    fds.len()
                ));
            }
            let taken = fds.drain(..want).collect();
            let writer = PcapFiles::from_fds(PathBuf::from(path), max, taken)
                .and_then(PcapWriter::from_files)
                .map_err(|e| format!("pcap start: {e}"))?;
            n.pcap.start(writer);
            Ok(())
        }),
        Ok(Command::PcapStop { nic }) => find(nics, &nic).and_then(|n| {
            if n.pcap.stop() {
                Ok(())
            } else {
                Err(format!("pcap stop: NIC '{nic}' has no capture running"))
            }
        }),
        Ok(Command::Quit) => {
            vm.stop(ExitReason::ControlQuit);
            Ok(())
        }
    };
    match status {
        Ok(()) => out += "ok\n",
        Err(e) => {
            out += "error: ";
            out += &e.replace('\n', " ");
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::sync::Mutex;
    use tapir_nic::{Carrier, LinkNotify};

    #[derive(Default)]
    struct Rec(Mutex<Vec<bool>>);
    impl LinkNotify for Rec {
        fn link_changed(&self, up: bool) {
            self.0.lock().unwrap().push(up);
        }
    }

    fn entry(name: &str, rec: Arc<Rec>) -> NicEntry {
        NicEntry {
            name: name.into(),
            model: "e1000",
            backend: "user".into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            link: LinkHandle::new(Carrier::new(), rec),
            stats: Arc::new(NicStats::default()),
            pcap: Arc::default(),
            device: DeviceCounters::default(),
        }
    }

    #[test]
    fn pcap_start_and_stop_and_info() {
        let vm = VmControl::new().unwrap();
        let nics = vec![entry("net0", Arc::new(Rec::default()))];
        let mut fds = Vec::new();
        let plain = execute("info", &nics, &vm, &mut fds);
        assert!(!plain.contains("pcap"), "{plain}");
        assert_eq!(
            execute("pcap net0 start /x.pcap", &nics, &vm, &mut fds),
            "error: pcap start: 0 descriptors came with the command, 1 needed (use tapir ctl, \
             which opens the files and passes them)\n"
        );
        assert_eq!(
            execute("pcap net0 stop", &nics, &vm, &mut fds),
            "error: pcap stop: NIC 'net0' has no capture running\n"
        );
        assert_eq!(
            execute("pcap wan stop", &nics, &vm, &mut fds),
            "error: no NIC named 'wan' (NICs: net0)\n"
        );
        let dir = std::env::temp_dir().join(format!("tapir-info-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a b.pcap");
        let appending = |p: &PathBuf| File::options().append(true).create(true).open(p).unwrap();
        fds.push(appending(&path).into());
        let start = format!("pcap net0 start {}", path.display());
        assert_eq!(
            execute(&start, &nics, &vm, &mut fds),
            "error: pcap start: MAX 'b.pcap' is not a byte count\n",
            "a space"
        );
        let path = dir.join("a.pcap");
        fds[0] = appending(&path).into();
        let start = format!("pcap net0 start {}", path.display());
        assert_eq!(execute(&start, &nics, &vm, &mut fds), "ok\n");
        assert!(fds.is_empty());
        // The header is written at once.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        let info = execute("info", &nics, &vm, &mut fds);
        let line = info.lines().next().unwrap();
        let want = format!(
            " config_writes=0 pcap_file=\"{}\" pcap_records=0 pcap_bytes=0 pcap_rotations=0 \
             pcap_unsegmented=0 pcap_stopped=0",
            path.display()
        );
        assert!(line.ends_with(&want), "{line}");
        assert_eq!(execute("pcap net0 stop", &nics, &vm, &mut fds), "ok\n");
        assert!(!execute("info", &nics, &vm, &mut fds).contains("pcap"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn info_json_and_stats_carry_every_counter() {
        let vm = VmControl::new().unwrap();
        let nics = vec![
            entry("net0", Arc::new(Rec::default())),
            entry("lan", Arc::new(Rec::default())),
        ];
        nics[1].stats.rx_frames.store(7, Ordering::Relaxed);
        nics[1].stats.rx_link_down.store(2, Ordering::Relaxed);
        nics[1].device.intx.store(5, Ordering::Relaxed);
        nics[1].link.set(false);
        let reply = execute("info --json", &nics, &vm, &mut Vec::new());
        let (body, status) = reply.split_once('\n').unwrap();
        assert_eq!(status, "ok\n");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["nics"].as_array().unwrap().len(), 2);
        assert_eq!(v["vcpu_exits"]["mmio_write"], 0);
        let lan = &v["nics"][1];
        assert_eq!(lan["name"], "lan");
        assert_eq!(lan["mac"], "52:54:00:12:34:56");
        assert_eq!(lan["link"], "down");
        assert_eq!(lan["counters"]["rx_frames"], 7);
        assert_eq!(lan["drops"]["rx_link_down"], 2);
        assert!(lan["counters"].get("rx_link_down").is_none());
        assert_eq!(lan["interrupts"]["intx"], 5);
        assert_eq!(lan["exits"]["bar_writes"], 0);
        assert!(lan["pcap"].is_null());
        // Every counter appears once, under counters or drops.
        let n = |k: &str| lan[k].as_object().unwrap().len();
        assert_eq!(n("counters") + n("drops"), nics[1].stats.snapshot().len());

        let reply = execute("stats lan", &nics, &vm, &mut Vec::new());
        let (body, status) = reply.split_once('\n').unwrap();
        assert_eq!(status, "ok\n");
        let one: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(&one, lan);
        assert_eq!(
            execute("stats wan", &nics, &vm, &mut Vec::new()),
            "error: no NIC named 'wan' (NICs: net0, lan)\n"
        );
    }

    #[test]
    fn parses_commands_and_rejects_the_rest() {
        assert_eq!(Command::parse("help"), Ok(Command::Help));
        assert_eq!(
            Command::parse("  info  "),
            Ok(Command::Info { json: false })
        );
        assert_eq!(
            Command::parse("info --json"),
            Ok(Command::Info { json: true })
        );
        assert_eq!(
            Command::parse("stats lan"),
            Ok(Command::Stats { nic: "lan".into() })
        );
        assert_eq!(
            Command::parse("set_link lan off"),
            Ok(Command::SetLink {
                nic: "lan".into(),
                up: false
            })
        );
        assert_eq!(
            Command::parse("set_link lan up"),
            Ok(Command::SetLink {
                nic: "lan".into(),
                up: true
            })
        );
        for bad in [
            "",
            "set_link",
            "set_link lan",
            "set_link lan maybe",
            "set_link lan on extra",
            "info x",
            "info --json x",
            "stats",
            "stats a b",
            "reboot",
            "\u{0}\u{1b}[2J",
        ] {
            let e = Command::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
        assert!(Command::parse("frob")
            .unwrap_err()
            .contains("unknown command 'frob'"));
    }

    #[test]
    fn set_link_reaches_the_named_nic_only() {
        let vm = VmControl::new().unwrap();
        let (a, b) = (Arc::new(Rec::default()), Arc::new(Rec::default()));
        let nics = vec![entry("net0", a.clone()), entry("lan", b.clone())];
        assert_eq!(
            execute("set_link lan off", &nics, &vm, &mut Vec::new()),
            "ok\n"
        );
        assert_eq!(*b.0.lock().unwrap(), vec![false]);
        assert!(a.0.lock().unwrap().is_empty());
        let info = execute("info", &nics, &vm, &mut Vec::new());
        let lines: Vec<&str> = info.lines().collect();
        assert_eq!(lines.len(), 3, "{info}");
        assert!(lines[0]
            .starts_with("net0 model=e1000 net=user mac=52:54:00:12:34:56 link=up tx_frames=0"));
        assert!(lines[1].starts_with("lan ") && lines[1].contains(" link=down "));
        assert!(lines[1].contains(" rx_link_down=0 intx=0 msi=0 bar_reads=0 "));
        assert!(lines[1].ends_with(" config_writes=0"));
        assert_eq!(lines[2], "ok");
        let e = execute("set_link wan on", &nics, &vm, &mut Vec::new());
        assert_eq!(e, "error: no NIC named 'wan' (NICs: net0, lan)\n");
        assert!(!vm.stopping());
    }

    #[test]
    fn quit_stops_the_vm_and_help_lists_every_command() {
        let vm = VmControl::new().unwrap();
        let help = execute("help", &[], &vm, &mut Vec::new());
        for c in ["help", "info", "stats", "set_link", "pcap", "quit"] {
            assert!(help.lines().any(|l| l.starts_with(c)), "{c}: {help}");
        }
        assert!(help.ends_with("ok\n"));
        assert_eq!(
            execute("set_link net0 on", &[], &vm, &mut Vec::new()),
            "error: no NIC named 'net0': this VM has no NICs\n"
        );
        assert_eq!(execute("quit", &[], &vm, &mut Vec::new()), "ok\n");
        assert!(vm.stopping());
        assert_eq!(vm.reason(), Some(ExitReason::ControlQuit));
    }
}
