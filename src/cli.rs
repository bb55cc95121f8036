//! Command-line flags (clap) and the `run` / `--nic help` commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tapir_config::{
    check_devices, check_disks, nic::NicArg, parse_size, DeviceArg, DiskArg, NicModel, SeccompMode,
    SerialArg, UserDuration, VmConfig, DEVICE_KINDS, DISK_HELP, MAX_VCPUS,
};
use tapir_net_backend::PcapFiles;

/// tapir: a small, fast KVM virtual machine monitor for networking tests.
#[derive(Parser, Debug)]
#[command(name = "tapir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a kernel in a new VM and run it until it powers off.
    ///
    /// Exit status: 0 when the guest powers off or reboots, 1 for tapir's own
    /// errors, 2 when the guest dies (triple fault, KVM internal error),
    /// 128+N when stopped by signal N, (V << 1) | 1 (low 8 bits) when the guest
    /// writes V to --device isa-debug-exit, 124 when --timeout runs out. On an
    /// interactive console, Ctrl-A x quits.
    Run(RunArgs),
    /// Send a command to a running tapir's control socket (see
    /// `tapir run --control-socket`) and print the reply.
    ///
    /// Commands: help; info (one line per NIC: model, backend, MAC, link,
    /// counters, capture); info --json (the same, with interrupts and VM
    /// exits, as one JSON object); stats NAME (one NIC's JSON); set_link NAME on|off (connect or disconnect a NIC's
    /// cable); pcap NAME start FILE [MAX] | pcap NAME stop (capture the NIC's
    /// frames, rotating to FILE.1 at MAX, e.g. 10M: the files are opened
    /// here and passed to tapir); quit (stop the VM). Exit
    /// status 0 on `ok`, 1 with the error otherwise.
    Ctl(CtlArgs),
    /// Measure the NICs with the default Linux guest's own drivers: TCP
    /// throughput each way, UDP 64-byte packets per second each way, ping
    /// and TCP request/response latency (p50, p99), VM exits per MB and the
    /// VMM's CPU time per GB; optionally against QEMU. See docs/bench.md.
    ///
    /// Every model x backend (x VMM) boots a fresh guest per repetition, in
    /// alternating order; the table shows medians and min-max. On a PVM host
    /// it runs itself inside the nested L1 VM (resources/nested/tapir-nested).
    /// Needs root (network namespaces), iperf3, qemu-system-x86_64 for
    /// --against qemu and /dev/vhost-net for qemu-vhost. Exit status: 0 when
    /// everything was measured, 1 when a figure is missing or on an error.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// NIC models, comma-separated: virtio, e1000, rtl8139.
    #[arg(long, value_name = "LIST", default_value = "virtio")]
    models: String,
    /// Backends, comma-separated: user (user-mode NAT, a host port forward),
    /// tap, passthrough (a macvtap on a veth whose far end is the host side).
    #[arg(long, value_name = "LIST", default_value = "user")]
    net: String,
    /// Repetitions per cell (fresh guest each; medians over them).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Seconds per iperf3 transfer (each direction, TCP and UDP).
    #[arg(long, value_name = "S", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=600))]
    secs: u32,
    /// Also measure other VMMs with the same guest, model and backend,
    /// comma-separated: qemu (vhost off), qemu-vhost (vhost on; virtio over
    /// tap or passthrough only).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = ["qemu", "qemu-vhost"])]
    against: Vec<String>,
    /// Also measure another tapir binary (e.g. an earlier build) as column
    /// "baseline", alternating with the others: a before/after comparison.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// Keep the console logs, iperf3 and perf output and results.json in
    /// DIR (`--report DIR` prints the table again).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// vCPUs of the nested L1 VM on a PVM host (default: tapir-nested's, 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    l1_cpus: Option<u32>,
    /// Also count VM exits by reason (SVM exit codes), MMIO, MSR and
    /// interrupt events with perf, into the logs (`--keep` them).
    #[arg(long)]
    exit_detail: bool,
    /// Write the summary and every run's figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an SVG bar chart (throughput and latency) to FILE (and a PNG
    /// beside it where rsvg-convert exists).
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// Guest kernel (default: resources/guest/build-guest.sh's).
    #[arg(long, value_name = "PATH", requires = "initrd")]
    kernel: Option<PathBuf>,
    /// Guest initramfs with iperf3 (default: resources/guest/build-guest.sh's).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Measure here, inside the nested L1 VM (set by tapir bench itself).
    #[arg(long, hide = true)]
    in_l1: bool,
    /// Write the raw results as JSON here and print nothing (the L1 side).
    #[arg(long, hide = true, value_name = "FILE")]
    results_out: Option<PathBuf>,
    /// Leave out the plan's first N runs (already measured in a lost L1).
    #[arg(long, hide = true, value_name = "N", default_value_t = 0)]
    skip_runs: usize,
    /// Boot nothing: the table (and --json, --chart) again from FILE, the
    /// --json output of an earlier run (or a --keep DIR).
    #[arg(long, value_name = "FILE|DIR")]
    report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CtlArgs {
    /// The socket given to `tapir run --control-socket`.
    #[arg(value_name = "SOCKET")]
    socket: PathBuf,
    /// The command and its arguments, e.g. `set_link net0 off`.
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kernel image: bzImage, or ELF vmlinux (PVH entry when it has the note).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["nic", "device", "disk"])]
    kernel: Option<PathBuf>,
    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=MAX_VCPUS as i64))]
    cpus: u8,
    /// Guest memory, e.g. 256M or 2G.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Where COM1 goes: stdio, file:PATH or none; stdio,logfile=PATH also
    /// copies the guest's output to PATH (for a CI log).
    #[arg(long, value_name = "DEST", default_value = "stdio")]
    serial: SerialArg,
    /// Stop the guest after DURATION (30s, 2m, 500ms, 1h; plain seconds)
    /// with exit status 124, cleaning up as on SIGTERM. Default: no limit.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<UserDuration>,
    /// A network interface: model=virtio|e1000|rtl8139,net=user|tap|bridge|passthrough,
    /// id=,mac=,addr=,vlan=,pcap=,... (repeatable). `--nic help` lists models and backends.
    #[arg(long, value_name = "SPEC")]
    nic: Vec<NicArg>,
    /// A device: vfio-pci,host=DDDD:BB:DD.F[,addr=SLOT] assigns a host PCI
    /// function (repeatable; bound to vfio-pci); isa-debug-exit[,iobase=0xf4,iosize=4]
    /// lets the guest end tapir with a status of its choice. `--device help`
    /// lists kinds and keys.
    #[arg(long, value_name = "SPEC")]
    device: Vec<DeviceArg>,
    /// A virtio-blk disk: PATH[,ro][,id=NAME], PATH a raw image (repeatable).
    /// `--disk help` lists the options.
    #[arg(long, value_name = "SPEC")]
    disk: Vec<DiskArg>,
    /// On a PVM host, boot a Linux bzImage anyway (it runs under instruction
    /// emulation: many minutes, and it may die). Without it tapir refuses.
    #[arg(long)]
    allow_emulation: bool,
    /// Serve a control socket at PATH (mode 0600, removed on exit) for
    /// `tapir ctl PATH COMMAND`: NIC link up/down, NIC counters, quit.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Seccomp filters on tapir's threads: on (the default) or off, for
    /// debugging. With them on, a syscall a thread's filter does not allow
    /// stops tapir with a line that names it (exit status 159; see
    /// docs/seccomp.md).
    #[arg(long, value_name = "on|off", default_value = "on")]
    seccomp: SeccompMode,
}

/// `tapir ctl SOCK pcap NIC start FILE [MAX]`: FILE (and, with MAX, FILE.1
/// and their directory) opened as `pcap=` opens them, with FILE's
/// absolute path and MAX in bytes.
fn open_capture(
    file: &str,
    max: Option<&str>,
) -> Result<(PathBuf, Option<u64>, PcapFiles), String> {
    let path = std::path::absolute(file).map_err(|e| format!("pcap file '{file}': {e}"))?;
    if path.to_string_lossy().contains(char::is_whitespace) {
        return Err(format!(
            "pcap file '{}': a path with white space cannot be sent on the control socket",
            path.display()
        ));
    }
    let max = match max {
        None => None,
        Some(m) => Some(
            parse_size(m)
                .ok()
                .filter(|&v| v >= tapir_config::nic::PCAP_MAX_MIN)
                .ok_or_else(|| {
                    format!(
                        "pcap start: MAX '{m}' is not a size of at least {} bytes (e.g. 64K, 10M)",
                        tapir_config::nic::PCAP_MAX_MIN
                    )
                })?,
        ),
    };
    let files = PcapFiles::open(&path, max).map_err(|e| e.to_string())?;
    Ok((path, max, files))
}

/// How long `tapir ctl` waits for a reply.
const CTL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `--nic help` listing.
pub fn nic_help() -> String {
    let mut s = String::from("NIC models (--nic model=NAME):\n");
    for m in NicModel::ALL {
        let (ids, driver, note, built) = match m {
            NicModel::Virtio => (
                "1af4:1041",
                "virtio_net",
                "virtio 1.x over PCI; vectors=N (MSI-X, 0 = INTx)",
                true,
            ),
            NicModel::E1000 => ("8086:100e", "e1000", "Intel 82540EM", true),
            NicModel::Rtl8139 => (
                "10ec:8139",
                "8139cp (rev >= 0x20), 8139too (rev=N below 0x20)",
                "Realtek RTL8139C+",
                true,
            ),
        };
        let status = if built { "" } else { " [not built yet]" };
        s += &format!(
            "  {:<8} PCI {}  driver {:<14} {}{}\n",
            m.name(),
            ids,
            driver,
            note,
            status
        );
    }
    s += "\nBackends (--nic net=NAME):\n";
    s += "  tap          a tap device: ifname=NAME (attached if it exists, else created and removed on exit) or fd=N\n";
    s += "  bridge       a new tap on an existing Linux bridge, removed on exit: br=NAME [ifname=NAME]\n";
    s += "  user         user-mode NAT, no privileges (the default): subnet=CIDR (10.0.2.0/24), gateway= (.2),\n";
    s += "               dns= (.3), dhcpstart= (.15), hostfwd=tcp|udp:[HOSTADDR]:PORT-[GUESTADDR]:PORT (repeatable),\n";
    s += "               restrict=on|off (only forwards in), loopback=on|off (gateway reaches host 127.0.0.1)\n";
    s += "  passthrough  direct attach to a host NIC through a macvtap of tapir's own, removed on exit (root):\n";
    s += "               host=IFNAME, mode=bridge|vepa|private|passthru (bridge)\n";
    s += "\nCommon keys: id=NAME, mac=XX:XX:XX:XX:XX:XX (default: stable, locally administered),\n";
    s += "             addr=SLOT (PCI slot, hex 1..1f), vlan=1..4094 (802.1Q access port)\n";
    s += "Capture:     pcap=FILE (every frame in and out, libpcap format, as on the backend's wire;\n";
    s += "             GSO frames as their segments), pcap_max=SIZE (e.g. 64M, at least 4K: past it\n";
    s += "             FILE becomes FILE.1, replacing the older one, and a new FILE starts)\n";
    s
}

/// The `--device help` listing.
pub fn device_help() -> String {
    let mut s = String::from("Device kinds (--device KIND,key=value,...):\n");
    for (kind, what) in DEVICE_KINDS {
        s += &format!("  {kind:<14} {what}\n");
    }
    s += "\nExamples: --device vfio-pci,host=0000:01:00.0,addr=5 (see docs/backend-passthrough.md, \"Device assignment (VFIO)\")\n";
    s += "          --device isa-debug-exit,iobase=0xf4,iosize=4 (see docs/test-kernels.md)\n";
    s
}

/// Runs the CLI; returns the process exit status or a one-line error.
pub fn main() -> Result<u8, String> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            print!("{e}");
            return Ok(0);
        }
        Err(e) => {
            // One clear line: clap's message without the usage block.
            let text = e.to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(|l| l.trim().trim_start_matches("error: "))
                .collect();
            let sub = if std::env::args().nth(1).as_deref() == Some("bench") {
                "bench"
            } else {
                "run"
            };
            return Err(format!("{} (see tapir {sub} --help)", msg.join(" ")));
        }
    };
    match cli.command {
        Command::Bench(args) => {
            let opts = tapir_bench::Options {
                models: tapir_bench::plan::parse_models(&args.models).map_err(|e| e.to_string())?,
                nets: tapir_bench::plan::parse_nets(&args.net).map_err(|e| e.to_string())?,
                reps: args.reps,
                secs: args.secs,
                against: if args.against.is_empty() {
                    Vec::new()
                } else {
                    tapir_bench::plan::parse_against(&args.against.join(","))
                        .map_err(|e| e.to_string())?
                },
                baseline: args.baseline,
                keep: args.keep,
                l1_cpus: args.l1_cpus,
                exit_detail: args.exit_detail,
                json: args.json,
                chart: args.chart,
                kernel: args.kernel,
                initrd: args.initrd,
                in_l1: args.in_l1,
                results_out: args.results_out,
                skip_runs: args.skip_runs,
                report: args.report,
            };
            tapir_bench::main(&opts).map_err(|e| format!("bench: {e}"))
        }
        Command::Ctl(args) => {
            let line = args.command.join(" ");
            let lines = match args.command.as_slice() {
                [pcap, nic, start, file, max @ ..]
                    if pcap == "pcap" && start == "start" && max.len() <= 1 =>
                {
                    // tapir may not open files once it runs: open them here
                    // and pass them over the socket.
                    let (path, max, files) = open_capture(file, max.first().map(String::as_str))?;
                    let mut line = format!("pcap {nic} start {}", path.display());
                    if let Some(m) = max {
                        line += &format!(" {m}");
                    }
                    tapir_vmm::control::request_with_fds(
                        &args.socket,
                        &line,
                        &files.fds(),
                        CTL_TIMEOUT,
                    )?
                }
                _ => tapir_vmm::control::request(&args.socket, &line, CTL_TIMEOUT)?,
            };
            for l in lines {
                println!("{l}");
            }
            Ok(0)
        }
        Command::Run(args) => {
            if args.nic.iter().any(|n| matches!(n, NicArg::Help)) {
                print!("{}", nic_help());
                return Ok(0);
            }
            if args.device.iter().any(|d| matches!(d, DeviceArg::Help)) {
                print!("{}", device_help());
                return Ok(0);
            }
            if args.disk.iter().any(|d| matches!(d, DiskArg::Help)) {
                print!("{DISK_HELP}");
                return Ok(0);
            }
            let disks: Vec<_> = args
                .disk
                .into_iter()
                .filter_map(|d| match d {
                    DiskArg::Disk(spec) => Some(spec),
                    DiskArg::Help => None,
                })
                .collect();
            check_disks(&disks).map_err(|e| e.to_string())?;
            let devices: Vec<_> = args
                .device
                .into_iter()
                .filter_map(|d| match d {
                    DeviceArg::Device(spec) => Some(spec),
                    DeviceArg::Help => None,
                })
                .collect();
            check_devices(&devices).map_err(|e| e.to_string())?;
            let config = VmConfig {
                kernel: args.kernel.ok_or("--kernel is required")?,
                initrd: args.initrd,
                cmdline: args.cmdline,
                cpus: args.cpus,
                memory: args.memory,
                serial: args.serial.dest,
                serial_log: args.serial.logfile,
                timeout: args.timeout,
                allow_emulation: args.allow_emulation,
                control_socket: args.control_socket,
                seccomp: args.seccomp,
                nics: args
                    .nic
                    .into_iter()
                    .filter_map(|n| match n {
                        NicArg::Nic(spec) => Some(spec),
                        NicArg::Help => None,
                    })
                    .collect(),
                devices,
                disks,
            };
            let reason = tapir_vmm::run(&config).map_err(|e| e.to_string())?;
            if let tapir_vmm::ExitReason::GuestDied { registers, .. } = &reason {
                eprintln!("tapir: {}", reason.describe());
                eprint!("{registers}");
            } else {
                eprintln!("tapir: {}", reason.describe());
            }
            Ok(reason.exit_code() as u8)
        }
    }
}
