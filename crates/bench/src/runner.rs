//! Running the benchmark where /dev/kvm boots Linux: network namespaces
//! ([`crate::netns`]), one VMM per run with the guest's scenario,
//! and the measurements: iperf3 (TCP and UDP each way), TCP
//! request/response, the guest's pings, CPU time and VM exits.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::guest::{self, BYE_PORT, ECHO_PORT, GUEST_IP, GUEST_MAC, IPERF_PORT, TAP};
use crate::netns::{Macvtap, Netns, PT_PARENT};
use crate::parse;
use crate::plan::{Cell, Net, Run, Vmm};
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
        return Err(needs_root(&opts.nets));
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
    if opts.against_qemu() && !have("qemu-system-x86_64") {
        return Err(Error::MissingTool {
            tool: "qemu-system-x86_64",
            package: "qemu-system-x86",
        });
    }
    let runs = opts.runs();
    if runs.iter().any(|r| r.vmm == Vmm::QemuVhost) && !vhost_net() {
        return Err(Error::NoVhostNet);
    }
    for f in [kernel, initrd] {
        if !f.is_file() {
            return Err(Error::GuestFile(f.to_path_buf()));
        }
    }
    let tapir = std::env::current_exe().map_err(|e| Error::io("finding tapir's own binary", e))?;
    let work = match (&opts.results_out, &opts.keep) {
        (Some(r), _) => r.with_file_name("logs"),
        (None, Some(k)) => k.join("logs"),
        (None, None) => std::env::temp_dir().join(format!("tapir-bench-{}", std::process::id())),
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
    let ns = Netns::create(&opts.nets)?;
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
        qemu: if opts.against_qemu() {
            first_line("qemu-system-x86_64", "--version")
        } else {
            "-".into()
        },
        iperf3: first_line("iperf3", "--version"),
        kernel: kernel.display().to_string(),
        exits_method: exits.name().into(),
        secs: opts.secs,
        reps: opts.reps,
        baseline: opts
            .baseline
            .as_ref()
            .map(|b| b.display().to_string())
            .unwrap_or_default(),
    };
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

/// The one-line error for a benchmark that is not root here.
pub fn needs_root(nets: &[Net]) -> Error {
    if nets.contains(&Net::Passthrough) {
        Error::NetNeedsRoot {
            net: "passthrough",
            what: "a veth pair in two network namespaces, macvtaps on it",
        }
    } else if nets.contains(&Net::Tap) {
        Error::NetNeedsRoot {
            net: "tap",
            what: "a network namespace with a tap in it",
        }
    } else {
        Error::NeedsRoot
    }
}

/// Whether /dev/vhost-net is there (after `modprobe vhost_net`).
fn vhost_net() -> bool {
    let dev = Path::new("/dev/vhost-net");
    if !dev.exists() {
        quiet(Command::new("modprobe").arg("vhost_net"));
    }
    dev.exists()
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

    /// CPU ticks of the VMM's process and of its vhost-PID kernel threads
    /// (vhost workers are kernel threads before Linux 6.4, the VMM's own
    /// threads from 6.4 on).
    fn ticks(&self) -> Option<u64> {
        let pid = self.child.id();
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let own = parse::proc_stat_ticks(&s).ok()?;
        let vhost = format!("vhost-{pid}");
        let mut workers = 0;
        for e in fs::read_dir("/proc").ok()?.flatten() {
            let p = e.path();
            if fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == vhost) {
                let s = fs::read_to_string(p.join("stat")).unwrap_or_default();
                workers += parse::proc_stat_ticks(&s).unwrap_or(0);
            }
        }
        Some(own + workers)
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

/// `--exit-detail`: perf's counts of VM exits by SVM exit code (NPF 0x400:
/// MMIO and faults, MSR 0x7c, INTR 0x60, VINTR 0x64, HLT 0x78, IOIO 0x7b;
/// VMX reasons are other numbers), MMIO writes and reads (a read counts
/// twice), x2APIC EOI, TSC-deadline and ICR writes, MSR reads, timer
/// (vector 0xec) and re-injected interrupts, exits to user space, injected
/// and raised interrupts. Counts only: perf record trips on the VMM's
/// namespaces.
const EXIT_DETAIL: [(&str, &str); 15] = [
    ("kvm:kvm_exit", "exit_reason == 0x400"),
    ("kvm:kvm_exit", "exit_reason == 0x7c"),
    ("kvm:kvm_exit", "exit_reason == 0x60"),
    ("kvm:kvm_exit", "exit_reason == 0x64"),
    ("kvm:kvm_exit", "exit_reason == 0x78"),
    ("kvm:kvm_exit", "exit_reason == 0x7b"),
    ("kvm:kvm_mmio", "type == 2"),
    ("kvm:kvm_mmio", "type != 2"),
    ("kvm:kvm_msr", "ecx == 0x80b"),
    ("kvm:kvm_msr", "ecx == 0x6e0"),
    ("kvm:kvm_msr", "ecx == 0x830"),
    ("kvm:kvm_msr", "write == 0"),
    ("kvm:kvm_inj_virq", "vector == 0xec"),
    ("kvm:kvm_inj_virq", "reinjected == 1"),
    (
        "kvm:kvm_userspace_exit,kvm:kvm_inj_virq,kvm:kvm_msr,kvm:kvm_set_irq",
        "",
    ),
];

/// `perf stat` of the [`EXIT_DETAIL`] events of process `pid` into `out`.
pub fn exit_detail_args(pid: u32, out: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = ["stat", "-x,", "-o"].map(OsString::from).into();
    v.push(out.into());
    v.extend(["-p".into(), pid.to_string().into()]);
    for (event, filter) in EXIT_DETAIL {
        v.extend(["-e".into(), event.into()]);
        if !filter.is_empty() {
            v.extend(["--filter".into(), filter.into()]);
        }
    }
    v
}

fn spawn_perf(args: &[OsString]) -> Option<Child> {
    Command::new("perf")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn stop_perf(c: &mut Child) {
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGINT);
    let _ = c.wait();
}

/// An exit counter running over one transfer (with `--exit-detail`'s
/// counts beside it).
enum ExitCount {
    Perf(Child, PathBuf, Option<Child>),
    Debugfs(Option<u64>),
    None,
}

fn debugfs_exits() -> Option<u64> {
    fs::read_to_string(DEBUGFS_EXITS).ok()?.trim().parse().ok()
}

impl ExitCount {
    fn start(method: ExitsMethod, vm: &Vm, out: PathBuf, detail: Option<PathBuf>) -> ExitCount {
        match method {
            ExitsMethod::Perf => {
                let pid = vm.child.id();
                let args: Vec<OsString> = ["stat", "-e", "kvm:kvm_exit", "-x,", "-p"]
                    .map(OsString::from)
                    .into_iter()
                    .chain([pid.to_string().into(), "-o".into(), out.clone().into()])
                    .collect();
                match spawn_perf(&args) {
                    Some(c) => {
                        let d = detail.and_then(|d| spawn_perf(&exit_detail_args(pid, &d)));
                        std::thread::sleep(Duration::from_millis(500));
                        ExitCount::Perf(c, out, d)
                    }
                    None => ExitCount::None,
                }
            }
            ExitsMethod::Debugfs => ExitCount::Debugfs(debugfs_exits()),
            ExitsMethod::None => ExitCount::None,
        }
    }

    fn stop(self) -> Option<u64> {
        match self {
            ExitCount::Perf(mut c, out, detail) => {
                stop_perf(&mut c);
                if let Some(mut d) = detail {
                    stop_perf(&mut d);
                }
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
            Net::Tap | Net::Passthrough => IpAddr::V4(guest::GUEST_IPV4),
            Net::User => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn target(&self, net: Net) -> &'static str {
        match net {
            Net::Tap | Net::Passthrough => GUEST_IP,
            Net::User => "127.0.0.1",
        }
    }

    /// The VMM's command, run in the VMMs' namespace; `fd`: QEMU's
    /// macvtap for `--net passthrough`.
    fn vmm_command(&self, run: &Run, fd: Option<RawFd>) -> Command {
        let initrd = self.images.join(format!("initrd-{}", run.cell.net.name()));
        let bin = match run.vmm {
            Vmm::Baseline => self.opts.baseline.as_deref().unwrap_or(&self.tapir),
            _ => &self.tapir,
        };
        let argv = vmm_argv(run, bin, &self.kernel, &initrd, fd);
        let mut c = self.ns.command(&argv[0].to_string_lossy());
        c.args(&argv[1..]);
        c
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
        // QEMU's macvtap over passthrough (tapir makes its own); declared
        // before the VM, so it goes after it.
        let mut macvtap: Option<Macvtap> = None;
        if run.vmm.is_qemu() && run.cell.net == Net::Passthrough {
            macvtap = Some(self.ns.qemu_macvtap().map_err(RunError::Macvtap)?);
        }
        let child = self
            .vmm_command(run, macvtap.as_ref().and_then(Macvtap::fd))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| RunError::Start {
                vmm: run.vmm.name(),
                source,
            })?;
        // QEMU has its copy of the macvtap's descriptor; the next VMM must not.
        if let Some(m) = &mut macvtap {
            m.close();
        }
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
            let detail = self
                .opts
                .exit_detail
                .then(|| self.work.join(format!("{tag}-{dir}.exits")));
            let count = ExitCount::start(
                self.exits,
                &vm,
                self.work.join(format!("{tag}-{dir}.perf")),
                detail,
            );
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
        let client = self.ns.client(run.cell.net);
        match Netns::run_in(client, move || request_response(addr)) {
            Ok(rtts) => {
                m.tcp_rr_p50_us = percentile(&rtts, 50.0);
                m.tcp_rr_p99_us = percentile(&rtts, 99.0);
            }
            Err(e) => errors.push(RunError::step("TCP request/response")(e.into())),
        }
        // Tell the guest to power off, and give it a minute.
        let bye = SocketAddr::new(self.target_ip(run.cell.net), BYE_PORT);
        let _ = Netns::run_in(client, move || {
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
        let mut c = Netns::command_in(self.ns.client(net), "timeout");
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

/// tapir's `--nic` for `cell`.
fn tapir_nic(cell: Cell) -> String {
    let m = cell.model.name();
    match cell.net {
        Net::Tap => format!("model={m},net=tap,ifname={TAP},mac={GUEST_MAC}"),
        Net::Passthrough => format!("model={m},net=passthrough,host={PT_PARENT},mac={GUEST_MAC}"),
        Net::User => format!(
            "model={m},net=user,mac={GUEST_MAC},hostfwd=tcp::{IPERF_PORT}-:{IPERF_PORT},\
             hostfwd=udp::{IPERF_PORT}-:{IPERF_PORT},hostfwd=tcp::{BYE_PORT}-:{BYE_PORT},\
             hostfwd=tcp::{ECHO_PORT}-:{ECHO_PORT}"
        ),
    }
}

/// QEMU's `-netdev` for `cell`: vhost on for qemu-vhost; over
/// passthrough the macvtap's descriptor `fd` (none: -1, which QEMU
/// refuses with a line of its own).
fn qemu_netdev(cell: Cell, vhost: bool, fd: Option<RawFd>) -> String {
    let vh = if vhost { "on" } else { "off" };
    match cell.net {
        Net::Tap => format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost={vh}"),
        Net::Passthrough => format!("tap,id=n0,fd={},vhost={vh}", fd.unwrap_or(-1)),
        Net::User => {
            let f = |p: &str, port: u16| format!(",hostfwd={p}:127.0.0.1:{port}-:{port}");
            format!(
                "user,id=n0{}{}{}{}",
                f("tcp", IPERF_PORT),
                f("udp", IPERF_PORT),
                f("tcp", BYE_PORT),
                f("tcp", ECHO_PORT)
            )
        }
    }
}

/// The program and arguments that boot `run`'s guest: `tapir` (this
/// binary, or the baseline's) or QEMU.
pub fn vmm_argv(
    run: &Run,
    tapir: &Path,
    kernel: &Path,
    initrd: &Path,
    fd: Option<RawFd>,
) -> Vec<OsString> {
    let cell = run.cell;
    let mut v: Vec<OsString> = Vec::new();
    let strs = |v: &mut Vec<OsString>, args: &[&str]| v.extend(args.iter().map(OsString::from));
    match run.vmm {
        Vmm::Tapir | Vmm::Baseline => {
            let mem = format!("{}M", guest::MEM_MIB);
            v.extend([tapir.into(), "run".into(), "--kernel".into(), kernel.into()]);
            v.extend(["--initrd".into(), initrd.into()]);
            strs(
                &mut v,
                &["--memory", &mem, "--cpus", "1", "--cmdline", guest::CMDLINE],
            );
            strs(&mut v, &["--nic", &tapir_nic(cell)]);
        }
        Vmm::Qemu | Vmm::QemuVhost => {
            let mem = guest::MEM_MIB.to_string();
            strs(
                &mut v,
                &[
                    "qemu-system-x86_64",
                    "-accel",
                    "kvm",
                    "-cpu",
                    "host",
                    "-m",
                    &mem,
                ],
            );
            strs(
                &mut v,
                &[
                    "-smp",
                    "1",
                    "-nographic",
                    "-no-reboot",
                    "-nodefaults",
                    "-serial",
                    "stdio",
                ],
            );
            v.extend([
                "-kernel".into(),
                kernel.into(),
                "-initrd".into(),
                initrd.into(),
            ]);
            let device = format!(
                "{},netdev=n0,romfile=,mac={GUEST_MAC}",
                cell.model.qemu_device()
            );
            let netdev = qemu_netdev(cell, run.vmm == Vmm::QemuVhost, fd);
            strs(
                &mut v,
                &[
                    "-append",
                    guest::CMDLINE,
                    "-device",
                    &device,
                    "-netdev",
                    &netdev,
                ],
            );
        }
    }
    v
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
    /// QEMU's macvtap could not be made (`--net passthrough`).
    #[error("cannot set up QEMU's macvtap: {0}")]
    Macvtap(Error),
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

    fn argv(vmm: Vmm, net: Net, fd: Option<RawFd>) -> Vec<String> {
        let run = Run {
            cell: Cell {
                model: crate::plan::Model::Virtio,
                net,
            },
            vmm,
            rep: 1,
        };
        vmm_argv(
            &run,
            Path::new("/b/tapir"),
            Path::new("/k"),
            Path::new("/i"),
            fd,
        )
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
    }

    fn after<'a>(v: &'a [String], flag: &str) -> &'a str {
        let i = v.iter().position(|a| a == flag).unwrap();
        &v[i + 1]
    }

    /// Over passthrough, tapir attaches its own macvtap to the veth; QEMU
    /// takes the descriptor of the one the benchmark made, vhost off or on.
    #[test]
    fn passthrough_command_lines() {
        let t = argv(Vmm::Tapir, Net::Passthrough, None);
        assert_eq!(t[..2], ["/b/tapir", "run"]);
        assert_eq!(
            after(&t, "--nic"),
            "model=virtio,net=passthrough,host=tbv0,mac=52:54:00:15:00:02"
        );
        let q = argv(Vmm::Qemu, Net::Passthrough, Some(7));
        assert_eq!(q[0], "qemu-system-x86_64");
        assert_eq!(after(&q, "-netdev"), "tap,id=n0,fd=7,vhost=off");
        assert_eq!(
            after(&q, "-device"),
            "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:15:00:02"
        );
        let v = argv(Vmm::QemuVhost, Net::Passthrough, Some(9));
        assert_eq!(after(&v, "-netdev"), "tap,id=n0,fd=9,vhost=on");
        let v = argv(Vmm::QemuVhost, Net::Tap, None);
        assert_eq!(
            after(&v, "-netdev"),
            "tap,id=n0,ifname=tbn0,script=no,downscript=no,vhost=on"
        );
        let q = argv(Vmm::Qemu, Net::User, None);
        assert!(after(&q, "-netdev").starts_with("user,id=n0,hostfwd=tcp:127.0.0.1:5201-:5201"));
        // The baseline is another tapir binary with the same arguments.
        let b = argv(Vmm::Baseline, Net::Tap, None);
        assert_eq!(b, argv(Vmm::Tapir, Net::Tap, None));
        assert_eq!(
            after(&b, "--nic"),
            "model=virtio,net=tap,ifname=tbn0,mac=52:54:00:15:00:02"
        );
    }

    #[test]
    fn exit_detail_counts_with_filters() {
        let a: Vec<String> = exit_detail_args(42, Path::new("/l/x.exits"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(a[..6], ["stat", "-x,", "-o", "/l/x.exits", "-p", "42"]);
        assert_eq!(a.iter().filter(|a| *a == "-e").count(), EXIT_DETAIL.len());
        assert_eq!(
            a.iter().filter(|a| *a == "--filter").count(),
            EXIT_DETAIL.len() - 1
        );
        assert_eq!(after(&a, "--filter"), "exit_reason == 0x400");
    }

    #[test]
    fn root_errors_name_the_backend() {
        let e = needs_root(&[Net::User, Net::Passthrough]).to_string();
        assert!(e.starts_with("--net passthrough needs root"), "{e}");
        let e = needs_root(&[Net::Tap]).to_string();
        assert!(e.starts_with("--net tap needs root"), "{e}");
        assert!(matches!(needs_root(&[Net::User]), Error::NeedsRoot));
    }
}
