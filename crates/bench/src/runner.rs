//! Running the benchmark where /dev/kvm boots Linux: a network namespace
//! (with a tap for `--net tap`), one VMM per run with the guest's scenario,
//! and the measurements: iperf3 (TCP and UDP each way), TCP
//! request/response, the guest's pings, CPU time and VM exits.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::guest::{self, BYE_PORT, ECHO_PORT, GUEST_IP, GUEST_MAC, HOST_IP, IPERF_PORT, TAP};
use crate::parse;
use crate::plan::{self, Net, Run, Vmm};
use crate::stats::percentile;
use crate::{Error, Meta, Metrics, Options, Results, RunResult};

/// How long a guest may take to serve iperf3.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// TCP request/response: at most this many transactions, or this long.
const RR_MAX: usize = 2000;
const RR_TIME: Duration = Duration::from_secs(2);

/// How VM exits are counted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitsMethod {
    /// `perf stat -e kvm:kvm_exit -p PID`: the VMM's own threads.
    Perf,
    /// The global /sys/kernel/debug/kvm/exits (one VM runs at a time).
    Debugfs,
    None,
}

impl ExitsMethod {
    pub fn name(self) -> &'static str {
        match self {
            ExitsMethod::Perf => "perf",
            ExitsMethod::Debugfs => "debugfs",
            ExitsMethod::None => "none",
        }
    }
}

const DEBUGFS_EXITS: &str = "/sys/kernel/debug/kvm/exits";

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Finds the way to count exits, mounting tracefs or debugfs if needed.
pub fn exits_method() -> ExitsMethod {
    if Path::new("/sys/kernel/tracing").is_dir()
        && !Path::new("/sys/kernel/tracing/events").is_dir()
    {
        quiet(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]));
    }
    if quiet(Command::new("perf").args([
        "stat",
        "-e",
        "kvm:kvm_exit",
        "-a",
        "-x,",
        "-o",
        "/dev/null",
        "--",
        "true",
    ])) {
        return ExitsMethod::Perf;
    }
    if !Path::new("/sys/kernel/debug/kvm").exists() {
        quiet(Command::new("mount").args(["-t", "debugfs", "none", "/sys/kernel/debug"]));
    }
    if fs::read_to_string(DEBUGFS_EXITS).is_ok() {
        return ExitsMethod::Debugfs;
    }
    ExitsMethod::None
}

/// Whether `tool` is an executable in PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn first_line(prog: &str, arg: &str) -> String {
    Command::new(prog)
        .arg(arg)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// The benchmark's network namespace; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn ip(args: &[&str]) -> Result<(), Error> {
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("running ip", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                what: "setting up the network namespace",
                detail: format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    /// A namespace with lo up, and the tap (192.168.150.1/24) when asked.
    pub fn create(with_tap: bool) -> Result<Netns, Error> {
        let name = format!("tapir-bench-{}", std::process::id());
        Self::ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        Self::ip(&["-n", n, "link", "set", "lo", "up"])?;
        if with_tap {
            Self::ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
            Self::ip(&["-n", n, "addr", "add", &format!("{HOST_IP}/24"), "dev", TAP])?;
            Self::ip(&["-n", n, "link", "set", TAP, "up"])?;
        }
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it
    /// opens live there).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let handle = std::thread::spawn(move || {
            let fd = File::open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("entering the network namespace", e.into()))?;
            f()
        });
        handle.join().unwrap_or_else(|_| {
            Err(Error::Command {
                what: "a namespace thread",
                detail: "panicked".into(),
            })
        })
    }

    /// `ip netns exec NS PROG ARGS...`.
    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if Self::ip(&["-n", &self.name, "link", "del", TAP]).is_err() {
            log::debug!("no tap to delete in {}", self.name);
        }
        if let Err(e) = Self::ip(&["netns", "del", &self.name]) {
            log::warn!("{e}");
        }
    }
}

/// What a run needs from its surroundings.
pub struct Bench<'a> {
    pub opts: &'a Options,
    pub tapir: PathBuf,
    pub kernel: PathBuf,
    pub work: PathBuf,
    /// The guest's initramfs with the scenario, per backend (local, not 9p).
    pub images: PathBuf,
    pub exits: ExitsMethod,
    pub clk_tck: f64,
    pub ns: Netns,
}

/// Where each run stands, for the progress line.
pub struct Progress<'a> {
    pub index: usize,
    pub total: usize,
    pub run: &'a Run,
    pub eta: Duration,
}

impl Progress<'_> {
    pub fn line(&self) -> String {
        let s = self.eta.as_secs();
        format!(
            "tapir bench: run {}/{}: {} {} rep {}, about {}m{:02}s left",
            self.index + 1,
            self.total,
            self.run.cell.label(),
            self.run.vmm.name(),
            self.run.rep,
            s / 60,
            s % 60
        )
    }
}

/// Measures every run of the plan here. `kernel` and `initrd` are the
/// default guest's.
pub fn measure_here(
    opts: &Options,
    ran_on: String,
    kernel: &Path,
    initrd: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Results, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(if opts.nets.contains(&Net::Tap) {
            Error::TapNeedsRoot
        } else {
            Error::NeedsRoot
        });
    }
    for (tool, package) in [
        ("iperf3", "iperf3"),
        ("ip", "iproute2"),
        ("timeout", "coreutils"),
    ] {
        if !have(tool) {
            return Err(Error::MissingTool { tool, package });
        }
    }
    if opts.against_qemu && !have("qemu-system-x86_64") {
        return Err(Error::MissingTool {
            tool: "qemu-system-x86_64",
            package: "qemu-system-x86",
        });
    }
    for f in [kernel, initrd] {
        if !f.is_file() {
            return Err(Error::GuestFile(f.to_path_buf()));
        }
    }
    let tapir = std::env::current_exe().map_err(|e| Error::io("finding tapir's own binary", e))?;
    let work = match &opts.results_out {
        Some(r) => r.with_file_name("logs"),
        None => std::env::temp_dir().join(format!("tapir-bench-{}", std::process::id())),
    };
    fs::create_dir_all(&work).map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    // The guest's initramfs with the scenario, one per backend.
    let images = std::env::temp_dir().join(format!("tapir-bench-{}-img", std::process::id()));
    fs::create_dir_all(&images)
        .map_err(|e| Error::io(format!("creating {}", images.display()), e))?;
    let base =
        fs::read(initrd).map_err(|e| Error::io(format!("reading {}", initrd.display()), e))?;
    for net in &opts.nets {
        let img = guest::append_scenario(&base, &guest::script(*net));
        let p = images.join(format!("initrd-{}", net.name()));
        fs::write(&p, img).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
    }
    let clk_tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|v| v as f64)
        .unwrap_or(100.0);
    let exits = exits_method();
    let ns = Netns::create(opts.nets.contains(&Net::Tap))?;
    let bench = Bench {
        opts,
        tapir: tapir.clone(),
        kernel: kernel.to_path_buf(),
        work,
        images: images.clone(),
        exits,
        clk_tck,
        ns,
    };
    let meta = Meta {
        ran_on,
        tapir: tapir.display().to_string(),
        qemu: if opts.against_qemu {
            first_line("qemu-system-x86_64", "--version")
        } else {
            "-".into()
        },
        iperf3: first_line("iperf3", "--version"),
        kernel: kernel.display().to_string(),
        exits_method: exits.name().into(),
        secs: opts.secs,
        reps: opts.reps,
    };
    let cells = plan::cells(&opts.models, &opts.nets);
    let runs = plan::runs(&cells, &opts.vmms(), opts.reps);
    let start = Instant::now();
    let guess = Duration::from_secs(60 + 5 * u64::from(opts.secs));
    let mut results = Results {
        meta,
        runs: Vec::new(),
        notes: Vec::new(),
    };
    // Written after the set-up and after every run: a nested L1 that is
    // lost mid-way still hands back what it measured.
    checkpoint(opts, &results)?;
    let skip = opts.skip_runs.min(runs.len());
    for (i, run) in runs.iter().enumerate().skip(skip) {
        let done = i - skip;
        let per = if done == 0 {
            guess
        } else {
            start.elapsed() / done as u32
        };
        progress(&Progress {
            index: i,
            total: runs.len(),
            run,
            eta: per * (runs.len() - i) as u32,
        });
        results.runs.push(bench.one(run));
        checkpoint(opts, &results)?;
    }
    drop(bench);
    if let Err(e) = fs::remove_dir_all(&images) {
        log::warn!("cannot remove {}: {e}", images.display());
    }
    Ok(results)
}

/// Writes the results so far to `--results-out`, if given (atomically:
/// a temporary file renamed over it).
pub fn checkpoint(opts: &Options, results: &Results) -> Result<(), Error> {
    let Some(path) = &opts.results_out else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(results).map_err(|e| Error::Parse {
        what: "results",
        why: e.to_string(),
    })?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A running VMM, killed on drop if still there.
struct Vm {
    child: Child,
    log: PathBuf,
}

impl Vm {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    fn last_line(&self) -> String {
        let t = self.text();
        let l = t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        l.chars().take(160).collect()
    }

    fn ticks(&self) -> Option<u64> {
        let s = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        parse::proc_stat_ticks(&s).ok()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An exit counter running over one transfer.
enum ExitCount {
    Perf(Child, PathBuf),
    Debugfs(Option<u64>),
    None,
}

fn debugfs_exits() -> Option<u64> {
    fs::read_to_string(DEBUGFS_EXITS).ok()?.trim().parse().ok()
}

impl ExitCount {
    fn start(method: ExitsMethod, vm: &Vm, out: PathBuf) -> ExitCount {
        match method {
            ExitsMethod::Perf => {
                let child = Command::new("perf")
                    .args(["stat", "-e", "kvm:kvm_exit", "-x,", "-p"])
                    .arg(vm.child.id().to_string())
                    .arg("-o")
                    .arg(&out)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                match child {
                    Ok(c) => {
                        std::thread::sleep(Duration::from_millis(500));
                        ExitCount::Perf(c, out)
                    }
                    Err(_) => ExitCount::None,
                }
            }
            ExitsMethod::Debugfs => ExitCount::Debugfs(debugfs_exits()),
            ExitsMethod::None => ExitCount::None,
        }
    }

    fn stop(self) -> Option<u64> {
        match self {
            ExitCount::Perf(mut c, out) => {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGINT);
                let _ = c.wait();
                parse::perf_exits(&fs::read_to_string(out).ok()?)
            }
            ExitCount::Debugfs(before) => Some(debugfs_exits()?.checked_sub(before?)?),
            ExitCount::None => None,
        }
    }
}

impl Bench<'_> {
    /// The address the host side reaches the guest's servers at.
    fn target_ip(&self, net: Net) -> IpAddr {
        match net {
            Net::Tap => IpAddr::V4(guest::GUEST_IPV4),
            Net::User => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn target(&self, net: Net) -> &'static str {
        match net {
            Net::Tap => GUEST_IP,
            Net::User => "127.0.0.1",
        }
    }

    fn vmm_command(&self, run: &Run) -> Command {
        let cell = run.cell;
        let initrd = self.images.join(format!("initrd-{}", cell.net.name()));
        match run.vmm {
            Vmm::Tapir => {
                let nic = match cell.net {
                    Net::Tap => format!("model={},net=tap,ifname={TAP},mac={GUEST_MAC}", cell.model.name()),
                    Net::User => format!(
                        "model={},net=user,mac={GUEST_MAC},hostfwd=tcp::{IPERF_PORT}-:{IPERF_PORT},\
                         hostfwd=udp::{IPERF_PORT}-:{IPERF_PORT},hostfwd=tcp::{BYE_PORT}-:{BYE_PORT},\
                         hostfwd=tcp::{ECHO_PORT}-:{ECHO_PORT}",
                        cell.model.name()
                    ),
                };
                let mut c = self.ns.command(&self.tapir.to_string_lossy());
                c.arg("run")
                    .arg("--kernel")
                    .arg(&self.kernel)
                    .arg("--initrd")
                    .arg(&initrd)
                    .args(["--memory", &format!("{}M", guest::MEM_MIB), "--cpus", "1"])
                    .args(["--cmdline", guest::CMDLINE, "--nic", &nic]);
                c
            }
            Vmm::Qemu => {
                let netdev = match cell.net {
                    Net::Tap => format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off"),
                    Net::User => {
                        let f =
                            |p: &str, port: u16| format!(",hostfwd={p}:127.0.0.1:{port}-:{port}");
                        format!(
                            "user,id=n0{}{}{}{}",
                            f("tcp", IPERF_PORT),
                            f("udp", IPERF_PORT),
                            f("tcp", BYE_PORT),
                            f("tcp", ECHO_PORT)
                        )
                    }
                };
                let mut c = self.ns.command("qemu-system-x86_64");
                c.args([
                    "-accel",
                    "kvm",
                    "-cpu",
                    "host",
                    "-m",
                    &guest::MEM_MIB.to_string(),
                ])
                .args([
                    "-smp",
                    "1",
                    "-nographic",
                    "-no-reboot",
                    "-nodefaults",
                    "-serial",
                    "stdio",
                ])
                .arg("-kernel")
                .arg(&self.kernel)
                .arg("-initrd")
                .arg(&initrd)
                .args(["-append", guest::CMDLINE])
                .arg("-device")
                .arg(format!(
                    "{},netdev=n0,romfile=,mac={GUEST_MAC}",
                    cell.model.qemu_device()
                ))
                .args(["-netdev", &netdev]);
                c
            }
        }
    }

    fn tag(run: &Run) -> String {
        format!(
            "{}-{}-{}-r{}",
            run.cell.model.name(),
            run.cell.net.name(),
            run.vmm.name(),
            run.rep
        )
    }

    /// One boot: never fails as a whole; what went wrong is its `error`.
    fn one(&self, run: &Run) -> RunResult {
        let tag = Self::tag(run);
        let log = self.work.join(format!("{tag}.log"));
        let mut metrics = Metrics::default();
        let error = self.measure(run, &tag, &log, &mut metrics).err();
        if let Some(e) = &error {
            log::warn!(
                "{} {} rep {}: {e}",
                run.cell.label(),
                run.vmm.name(),
                run.rep
            );
        }
        RunResult {
            run: *run,
            metrics,
            error: error.map(|e| e.to_string()),
            log: log.display().to_string(),
        }
    }

    fn measure(&self, run: &Run, tag: &str, log: &Path, m: &mut Metrics) -> Result<(), RunError> {
        let log_err = |source| RunError::Log {
            path: log.to_path_buf(),
            source,
        };
        let out = File::create(log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let child = self
            .vmm_command(run)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| RunError::Start {
                vmm: run.vmm.name(),
                source,
            })?;
        let mut vm = Vm {
            child,
            log: log.to_path_buf(),
        };
        self.wait_ready(&mut vm)?;
        std::thread::sleep(Duration::from_secs(1));
        let text = vm.text();
        let pings: String = text
            .lines()
            .filter_map(|l| l.strip_prefix(guest::PING_PREFIX))
            .collect::<Vec<_>>()
            .join("\n");
        let times = parse::ping_times_ms(&pings);
        m.ping_p50_ms = percentile(&times, 50.0);
        m.ping_p99_ms = percentile(&times, 99.0);
        let mut errors: Vec<RunError> = Vec::new();
        if times.is_empty() {
            errors.push(RunError::NoPings);
        }
        // TCP both ways, with CPU time and exits over both.
        let (mut bytes, mut ticks, mut exits) = (0u64, Some(0u64), Some(0u64));
        for reverse in [false, true] {
            let (dir, step) = if reverse {
                ("g2h", "TCP g2h")
            } else {
                ("h2g", "TCP h2g")
            };
            let t0 = vm.ticks();
            let count =
                ExitCount::start(self.exits, &vm, self.work.join(format!("{tag}-{dir}.perf")));
            let r = self.iperf(run.cell.net, &format!("{tag}-tcp-{dir}"), reverse, false);
            let e = count.stop();
            let t1 = vm.ticks();
            if !vm.alive() {
                return Err(RunError::Died {
                    vmm: run.vmm.name(),
                    step,
                    last: vm.last_line(),
                });
            }
            match r.and_then(|j| Ok(parse::iperf_tcp(&j)?)) {
                Ok(t) => {
                    let mbps = Some(t.bits_per_second / 1e6);
                    if reverse {
                        m.tcp_g2h_mbps = mbps;
                    } else {
                        m.tcp_h2g_mbps = mbps;
                    }
                    bytes += t.bytes;
                    ticks = match (ticks, t0, t1) {
                        (Some(a), Some(x), Some(y)) if y >= x => Some(a + y - x),
                        _ => None,
                    };
                    exits = exits.zip(e).map(|(a, b)| a + b);
                }
                Err(e) => {
                    errors.push(RunError::step(step)(e));
                    ticks = None;
                    exits = None;
                }
            }
        }
        if bytes > 0 {
            m.cpu_s_per_gb = ticks.map(|t| t as f64 / self.clk_tck / (bytes as f64 / 1e9));
            m.exits_per_mb = exits.map(|e| e as f64 / (bytes as f64 / 1e6));
        }
        for reverse in [false, true] {
            let (dir, step) = if reverse {
                ("g2h", "UDP g2h")
            } else {
                ("h2g", "UDP h2g")
            };
            let r = self.iperf(run.cell.net, &format!("{tag}-udp-{dir}"), reverse, true);
            if !vm.alive() {
                return Err(RunError::Died {
                    vmm: run.vmm.name(),
                    step,
                    last: vm.last_line(),
                });
            }
            match r.and_then(|j| Ok(parse::iperf_udp(&j)?)) {
                Ok(u) => {
                    let k = Some(u.packets_per_second / 1e3);
                    if reverse {
                        m.udp_g2h_kpps = k;
                    } else {
                        m.udp_h2g_kpps = k;
                    }
                }
                Err(e) => errors.push(RunError::step(step)(e)),
            }
        }
        let addr = SocketAddr::new(self.target_ip(run.cell.net), ECHO_PORT);
        match self.ns.run(move || request_response(addr)) {
            Ok(rtts) => {
                m.tcp_rr_p50_us = percentile(&rtts, 50.0);
                m.tcp_rr_p99_us = percentile(&rtts, 99.0);
            }
            Err(e) => errors.push(RunError::step("TCP request/response")(e.into())),
        }
        // Tell the guest to power off, and give it a minute.
        let bye = SocketAddr::new(self.target_ip(run.cell.net), BYE_PORT);
        let _ = self.ns.run(move || {
            let mut s = TcpStream::connect_timeout(&bye, Duration::from_secs(10))
                .map_err(|e| Error::io("bye", e))?;
            s.write_all(b"bye\n").map_err(|e| Error::io("bye", e))
        });
        let end = Instant::now() + Duration::from_secs(60);
        while vm.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
        }
        if vm.alive() {
            errors.push(RunError::NoPowerOff);
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(RunError::Several(errors)),
        }
    }

    fn wait_ready(&self, vm: &mut Vm) -> Result<(), RunError> {
        let end = Instant::now() + BOOT_TIMEOUT;
        loop {
            let text = vm.text();
            if text.contains(guest::READY) {
                return Ok(());
            }
            if let Some(f) = guest::FAILS.iter().find(|f| text.contains(*f)) {
                return Err(RunError::GuestFailed {
                    said: f,
                    log: vm.log.clone(),
                });
            }
            if !vm.alive() {
                return Err(RunError::ExitedEarly {
                    last: vm.last_line(),
                });
            }
            if Instant::now() > end {
                return Err(RunError::NotReady);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One iperf3 client run in the namespace; its JSON, or why not.
    fn iperf(&self, net: Net, name: &str, reverse: bool, udp: bool) -> Result<String, RunError> {
        let secs = self.opts.secs;
        let mut c = self.ns.command("timeout");
        c.arg((secs + 60).to_string()).args([
            "iperf3",
            "-c",
            self.target(net),
            "-t",
            &secs.to_string(),
            "-J",
        ]);
        if udp {
            c.args(["-u", "-l", "64", "-b", "0"]);
        }
        if reverse {
            c.arg("-R");
        }
        let out = c
            .stdin(Stdio::null())
            .output()
            .map_err(RunError::IperfSpawn)?;
        let json = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = fs::write(self.work.join(format!("{name}.json")), &json);
        if json.trim().is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(RunError::IperfSilent {
                status: out.status,
                stderr: err.trim().to_string(),
            });
        }
        Ok(json)
    }
}

/// Why one run (a VMM, a cell, a repetition) has no figures, or lacks
/// some; recorded, as its text, in the run's result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The console log file.
    #[error("cannot create {}: {source}", .path.display())]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The VMM could not be started.
    #[error("cannot start {vmm}: {source}")]
    Start {
        /// tapir or qemu.
        vmm: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The guest reported a failure of its own.
    #[error("the guest said '{said}' ({})", .log.display())]
    GuestFailed {
        /// Its line.
        said: &'static str,
        /// The console log.
        log: PathBuf,
    },
    /// The VMM exited before the guest served iperf3.
    #[error("exited before the guest served iperf3: {last}")]
    ExitedEarly {
        /// The console's last line.
        last: String,
    },
    /// The guest did not get ready in time.
    #[error("the guest did not report '{}' within {} s", guest::READY, BOOT_TIMEOUT.as_secs())]
    NotReady,
    /// The VMM exited during a measurement.
    #[error("{vmm} exited during {step}: {last}")]
    Died {
        /// tapir or qemu.
        vmm: &'static str,
        /// Which measurement.
        step: &'static str,
        /// The console's last line.
        last: String,
    },
    /// iperf3 could not be run.
    #[error("cannot run iperf3: {0}")]
    IperfSpawn(std::io::Error),
    /// iperf3 printed no JSON.
    #[error("iperf3 printed nothing ({status}): {stderr}")]
    IperfSilent {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// A measurement's output could not be read, or its connection failed.
    #[error(transparent)]
    Bench(#[from] Error),
    /// The guest's log has no ping replies.
    #[error("no ping replies in the guest's log")]
    NoPings,
    /// The VMM outlived the guest's poweroff.
    #[error("did not exit within 60 s of the guest being told to power off; killed")]
    NoPowerOff,
    /// One measurement failed; the others may have figures.
    #[error("{step}: {source}")]
    Step {
        /// Which measurement.
        step: &'static str,
        /// Why.
        source: Box<RunError>,
    },
    /// Several of the above.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<RunError>),
}

impl RunError {
    fn step(step: &'static str) -> impl FnOnce(RunError) -> RunError {
        move |e| RunError::Step {
            step,
            source: Box::new(e),
        }
    }
}

/// TCP request/response against the guest's echo port: one byte each way
/// per transaction, for [`RR_TIME`] or [`RR_MAX`] transactions; the
/// round-trip times in µs.
fn request_response(addr: SocketAddr) -> Result<Vec<f64>, Error> {
    let io = |e| Error::io(format!("echo {addr}"), e);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut b = [0u8; 1];
    while rtts.len() < RR_MAX && start.elapsed() < RR_TIME {
        let t = Instant::now();
        s.write_all(b"x").map_err(io)?;
        s.read_exact(&mut b).map_err(io)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(rtts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's recorded error says which measurements failed, in order.
    #[test]
    fn run_errors_read_as_one_line() {
        let e = RunError::Several(vec![
            RunError::NoPings,
            RunError::step("TCP h2g")(RunError::Died {
                vmm: "tapir",
                step: "TCP h2g",
                last: "panic".into(),
            }),
            RunError::NoPowerOff,
        ]);
        assert_eq!(
            e.to_string(),
            "no ping replies in the guest's log; TCP h2g: tapir exited during TCP h2g: panic; \
             did not exit within 60 s of the guest being told to power off; killed"
        );
        assert!(RunError::NotReady.to_string().contains(guest::READY));
    }
}
