//! `tapir bench`: boots the default guest under tapir (and QEMU with
//! `--against qemu`) once per NIC model × backend × repetition and
//! measures, with the guest's own driver, TCP throughput each way, UDP
//! 64-byte packets per second each way, ping and TCP request/response
//! latency, VM exits per MB and the VMM's CPU time per GB.
//!
//! Modules: [`plan`] (cells and the alternating order), [`runner`]
//! (spawning VMMs, the network namespace, measuring), [`parse`] (iperf3
//! JSON, ping, /proc, perf), [`stats`], [`output`] (table, JSON) and
//! [`svg`] (the chart), [`netns`] (the network namespaces), [`notes`] ("guest sees"), [`guest`] (the guest's
//! script), [`place`] (where it runs: here, or in the nested L1 VM).

pub mod guest;
pub mod netns;
pub mod notes;
pub mod output;
pub mod parse;
pub mod place;
pub mod plan;
pub mod runner;
pub mod stats;
pub mod svg;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use plan::{Model, Net, Run, Vmm};

/// Everything that stops `tapir bench`, one line each.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{flag}: unknown value '{value}' (valid: {valid})")]
    BadList {
        flag: &'static str,
        value: String,
        valid: &'static str,
    },
    #[error("{flag}: {why}")]
    BadValue {
        flag: &'static str,
        why: &'static str,
    },
    #[error("cannot parse {what}: {why}")]
    Parse { what: &'static str, why: String },
    #[error("iperf3: {0}")]
    Iperf(String),
    #[error("{tool} not found (install package {package})")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("--net {net} needs root here ({what}); run as root, or use --net user")]
    NetNeedsRoot {
        net: &'static str,
        what: &'static str,
    },
    #[error("/dev/vhost-net is missing here (modprobe vhost_net failed); qemu-vhost needs it: leave it out of --against")]
    NoVhostNet,
    #[error("--baseline {0}: not an executable file")]
    Baseline(PathBuf),
    #[error("the benchmark needs root here (its network namespace); run as root")]
    NeedsRoot,
    #[error("guest file {0} is missing (resources/guest/build-guest.sh builds it; or give --kernel and --initrd)")]
    GuestFile(PathBuf),
    #[error("cannot find {0} (run tapir from its checkout, or set TAPIR_ROOT to it)")]
    NoResource(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: &'static str, detail: String },
    #[error("no usable /dev/kvm here and this is not a PVM host (nothing to run guests on)")]
    NoKvm,
    #[error("the nested L1 VM gave no results (tapir-nested {status}: {last}; its output: {log})")]
    Nested {
        status: String,
        last: String,
        log: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub models: Vec<Model>,
    pub nets: Vec<Net>,
    pub reps: u32,
    pub secs: u32,
    /// The VMMs measured against tapir: qemu, qemu-vhost.
    pub against: Vec<Vmm>,
    /// Another tapir binary, measured as column "baseline".
    pub baseline: Option<PathBuf>,
    /// Keep the logs and the results (`DIR/results.json`) in DIR.
    pub keep: Option<PathBuf>,
    /// vCPUs of the nested L1 VM (tapir-nested's default when None).
    pub l1_cpus: Option<u32>,
    /// Also count VM exits by reason with perf (into the logs).
    pub exit_detail: bool,
    pub json: Option<PathBuf>,
    pub chart: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Measure here, whatever this host is (set inside the nested L1).
    pub in_l1: bool,
    /// Write the raw results as JSON here instead of printing (the L1 side),
    /// after every run.
    pub results_out: Option<PathBuf>,
    /// Leave out the plan's first N runs (measured in an L1 that was lost).
    pub skip_runs: usize,
    /// Boot nothing: print the table (and --json, --chart) from the results
    /// (`--json` output or the L1 side's results.json) of an earlier run.
    pub report: Option<PathBuf>,
}

impl Options {
    /// The columns, in the table's order.
    pub fn vmms(&self) -> Vec<Vmm> {
        plan::vmms(self.baseline.is_some(), &self.against)
    }

    /// Every run of the plan, in order.
    pub fn runs(&self) -> Vec<Run> {
        plan::runs(
            &plan::cells(&self.models, &self.nets),
            &self.vmms(),
            self.reps,
        )
    }

    /// Whether a QEMU column is measured.
    pub fn against_qemu(&self) -> bool {
        !self.against.is_empty()
    }

    /// What can be told wrong before anything boots.
    pub fn check(&self) -> Result<(), Error> {
        if self.reps == 0 {
            return Err(Error::BadValue {
                flag: "--reps",
                why: "must be at least 1",
            });
        }
        if self.secs == 0 {
            return Err(Error::BadValue {
                flag: "--secs",
                why: "must be at least 1",
            });
        }
        if self.against.contains(&Vmm::QemuVhost)
            && !self.runs().iter().any(|r| r.vmm == Vmm::QemuVhost)
        {
            return Err(Error::BadValue {
                flag: "--against qemu-vhost",
                why: "vhost-net is for --models virtio over --net tap or passthrough only",
            });
        }
        if let Some(b) = &self.baseline {
            use std::os::unix::fs::PermissionsExt;
            let exec = std::fs::metadata(b)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !exec {
                return Err(Error::Baseline(b.clone()));
            }
        }
        Ok(())
    }
}

/// One repetition's figures; None where not measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub tcp_h2g_mbps: Option<f64>,
    pub tcp_g2h_mbps: Option<f64>,
    pub udp_h2g_kpps: Option<f64>,
    pub udp_g2h_kpps: Option<f64>,
    pub ping_p50_ms: Option<f64>,
    pub ping_p99_ms: Option<f64>,
    pub tcp_rr_p50_us: Option<f64>,
    pub tcp_rr_p99_us: Option<f64>,
    pub exits_per_mb: Option<f64>,
    pub cpu_s_per_gb: Option<f64>,
}

/// The figures of the table, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    TcpH2g,
    TcpG2h,
    UdpH2g,
    UdpG2h,
    PingP50,
    PingP99,
    RrP50,
    RrP99,
    ExitsPerMb,
    CpuPerGb,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::TcpH2g,
        Metric::TcpG2h,
        Metric::UdpH2g,
        Metric::UdpG2h,
        Metric::PingP50,
        Metric::PingP99,
        Metric::RrP50,
        Metric::RrP99,
        Metric::ExitsPerMb,
        Metric::CpuPerGb,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::TcpH2g => "TCP host->guest (Mbit/s)",
            Metric::TcpG2h => "TCP guest->host (Mbit/s)",
            Metric::UdpH2g => "UDP 64 B host->guest (kpps)",
            Metric::UdpG2h => "UDP 64 B guest->host (kpps)",
            Metric::PingP50 => "ping p50 (ms)",
            Metric::PingP99 => "ping p99 (ms)",
            Metric::RrP50 => "TCP req/resp p50 (us)",
            Metric::RrP99 => "TCP req/resp p99 (us)",
            Metric::ExitsPerMb => "VM exits per MB (TCP)",
            Metric::CpuPerGb => "VMM CPU s per GB (TCP)",
        }
    }

    /// The key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Metric::TcpH2g => "tcp_h2g_mbps",
            Metric::TcpG2h => "tcp_g2h_mbps",
            Metric::UdpH2g => "udp_h2g_kpps",
            Metric::UdpG2h => "udp_g2h_kpps",
            Metric::PingP50 => "ping_p50_ms",
            Metric::PingP99 => "ping_p99_ms",
            Metric::RrP50 => "tcp_rr_p50_us",
            Metric::RrP99 => "tcp_rr_p99_us",
            Metric::ExitsPerMb => "exits_per_mb",
            Metric::CpuPerGb => "cpu_s_per_gb",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::TcpH2g | Metric::TcpG2h | Metric::UdpH2g | Metric::UdpG2h
        )
    }

    pub fn get(self, m: &Metrics) -> Option<f64> {
        match self {
            Metric::TcpH2g => m.tcp_h2g_mbps,
            Metric::TcpG2h => m.tcp_g2h_mbps,
            Metric::UdpH2g => m.udp_h2g_kpps,
            Metric::UdpG2h => m.udp_g2h_kpps,
            Metric::PingP50 => m.ping_p50_ms,
            Metric::PingP99 => m.ping_p99_ms,
            Metric::RrP50 => m.tcp_rr_p50_us,
            Metric::RrP99 => m.tcp_rr_p99_us,
            Metric::ExitsPerMb => m.exits_per_mb,
            Metric::CpuPerGb => m.cpu_s_per_gb,
        }
    }
}

/// One boot: what was measured, and what went wrong (if anything).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: Run,
    pub metrics: Metrics,
    /// Why this run is incomplete; None when everything was measured.
    pub error: Option<String>,
    /// The VMM's console log (on the machine that measured).
    pub log: String,
}

/// Where and how the figures were taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub ran_on: String,
    pub tapir: String,
    pub qemu: String,
    pub iperf3: String,
    pub kernel: String,
    pub exits_method: String,
    pub secs: u32,
    pub reps: u32,
    /// The `--baseline` binary, when one was measured.
    #[serde(default)]
    pub baseline: String,
}

/// Everything measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub runs: Vec<RunResult>,
    /// What happened beside the runs (a nested L1 lost and replaced).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `tapir bench`: measures (here or in the nested L1), prints the table,
/// writes `--json` and `--chart`. Returns the exit status: 0 when every
/// run was measured completely, 1 when some figure is missing.
pub fn main(opts: &Options) -> Result<u8, Error> {
    let results = match &opts.report {
        Some(path) => {
            // A --keep DIR holds its results as DIR/results.json.
            let path = if path.is_dir() {
                path.join("results.json")
            } else {
                path.clone()
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("--report {}", path.display()), e))?;
            serde_json::from_str(&text).map_err(|e| Error::Parse {
                what: "--report's results",
                why: e.to_string(),
            })?
        }
        None => {
            opts.check()?;
            place::measure(opts)?
        }
    };
    if opts.results_out.is_some() {
        runner::checkpoint(opts, &results)?;
        return Ok(0);
    }
    print!("{}", output::table(&results));
    let keep = opts
        .keep
        .as_ref()
        .filter(|_| opts.report.is_none())
        .map(|d| d.join("results.json"));
    for path in opts.json.iter().chain(keep.iter()) {
        let text = output::json(&results)?;
        std::fs::write(path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    if let Some(dir) = opts.keep.as_ref().filter(|_| keep.is_some()) {
        println!(
            "kept: the logs and results.json (tapir bench --report {}) in {}",
            dir.display(),
            dir.display()
        );
    }
    if let Some(path) = &opts.chart {
        let text = svg::chart(&results);
        std::fs::write(path, text)
            .map_err(|e| Error::io(format!("--chart {}", path.display()), e))?;
        if let Some(png) = svg::to_png(path) {
            println!("chart: {} and {}", path.display(), png.display());
        } else {
            println!("chart: {} (no rsvg-convert here for a PNG)", path.display());
        }
    }
    let complete = results.runs.iter().all(|r| r.error.is_none());
    Ok(if complete { 0 } else { 1 })
}
