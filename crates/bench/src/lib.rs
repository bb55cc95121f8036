//! `tapir bench`: boots the default guest under tapir (and QEMU with
//! `--against qemu`) once per NIC model × backend × repetition and
//! measures, with the guest's own driver, TCP throughput each way, UDP
//! 64-byte packets per second each way, ping and TCP request/response
//! latency, VM exits per MB and the VMM's CPU time per GB.
//!
//! Modules: [`plan`] (cells and the alternating order), [`runner`]
//! (spawning VMMs, the network namespace, measuring), [`parse`] (iperf3
//! JSON, ping, /proc, perf), [`stats`], [`output`] (table, JSON) and
//! [`svg`] (the chart), [`notes`] ("guest sees"), [`guest`] (the guest's
//! script), [`place`] (where it runs: here, or in the nested L1 VM).

pub mod guest;
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
    #[error("--net tap needs root here (a network namespace with a tap in it); run as root, or use --net user")]
    TapNeedsRoot,
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
    pub against_qemu: bool,
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
    pub fn vmms(&self) -> Vec<Vmm> {
        if self.against_qemu {
            vec![Vmm::Tapir, Vmm::Qemu]
        } else {
            vec![Vmm::Tapir]
        }
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
    if opts.reps == 0 {
        return Err(Error::BadValue {
            flag: "--reps",
            why: "must be at least 1",
        });
    }
    if opts.secs == 0 {
        return Err(Error::BadValue {
            flag: "--secs",
            why: "must be at least 1",
        });
    }
    let results = match &opts.report {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("--report {}", path.display()), e))?;
            serde_json::from_str(&text).map_err(|e| Error::Parse {
                what: "--report's results",
                why: e.to_string(),
            })?
        }
        None => place::measure(opts)?,
    };
    if opts.results_out.is_some() {
        runner::checkpoint(opts, &results)?;
        return Ok(0);
    }
    let against_qemu =
        opts.against_qemu || results.runs.iter().any(|r| r.run.vmm == plan::Vmm::Qemu);
    print!("{}", output::table(&results, against_qemu));
    if let Some(path) = &opts.json {
        let text = output::json(&results)?;
        std::fs::write(path, text)
            .map_err(|e| Error::io(format!("--json {}", path.display()), e))?;
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
