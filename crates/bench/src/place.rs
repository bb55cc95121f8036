//! Where the benchmark runs: directly where /dev/kvm is VT-x/AMD-V (or
//! inside the nested L1 already), else, on a PVM host, inside one
//! `resources/nested/tapir-nested` L1 VM that runs this same binary with
//! `--in-l1` and hands back its results as JSON.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::runner::{self, Progress};
use crate::{Error, Options, Results};

/// What kind of /dev/kvm this machine has (resources/lib/common.sh's
/// `tapir_kvm_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmMode {
    /// kvm_intel or kvm_amd: Linux guests run directly.
    Hw,
    /// kvm_pvm: Linux guests are far too slow; go nested.
    Pvm,
    None,
}

pub fn kvm_mode() -> KvmMode {
    if Path::new("/sys/module/kvm_pvm").is_dir() {
        KvmMode::Pvm
    } else if Path::new("/dev/kvm").exists()
        && (Path::new("/sys/module/kvm_intel").is_dir()
            || Path::new("/sys/module/kvm_amd").is_dir())
    {
        KvmMode::Hw
    } else {
        KvmMode::None
    }
}

/// Whether this process runs inside tapir-nested's L1 (it sets TAPIR_IN_L1=1).
pub fn in_l1(opts: &Options) -> bool {
    opts.in_l1 || std::env::var("TAPIR_IN_L1").is_ok_and(|v| v == "1")
}

/// Finds `rel` (e.g. "resources/nested/tapir-nested") in $TAPIR_ROOT, or
/// above tapir's binary (target/release/tapir in a checkout), or above the
/// working directory.
pub fn resource(rel: &'static str) -> Result<PathBuf, Error> {
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(r) = std::env::var_os("TAPIR_ROOT") {
        starts.push(PathBuf::from(r));
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for s in starts {
        for dir in s.ancestors() {
            let p = dir.join(rel);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::NoResource(rel))
}

/// The default guest: `--kernel`/`--initrd`, or what
/// resources/guest/build-guest.sh prints (it builds or reuses its cache).
pub fn guest_files(opts: &Options) -> Result<(PathBuf, PathBuf), Error> {
    if let (Some(k), Some(i)) = (&opts.kernel, &opts.initrd) {
        for f in [k, i] {
            if !f.is_file() {
                return Err(Error::GuestFile(f.clone()));
            }
        }
        return Ok((k.clone(), i.clone()));
    }
    let script = resource("resources/guest/build-guest.sh")?;
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            what: "resources/guest/build-guest.sh",
            detail: format!("{}", out.status),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(PathBuf::from)
    };
    let kernel = get("KERNEL=").ok_or(Error::Command {
        what: "resources/guest/build-guest.sh",
        detail: "printed no KERNEL=".into(),
    })?;
    let initrd = get("INITRD=").ok_or(Error::Command {
        what: "resources/guest/build-guest.sh",
        detail: "printed no INITRD=".into(),
    })?;
    let kernel = opts.kernel.clone().unwrap_or(kernel);
    let initrd = opts.initrd.clone().unwrap_or(initrd);
    for f in [&kernel, &initrd] {
        if !f.is_file() {
            return Err(Error::GuestFile(f.clone()));
        }
    }
    Ok((kernel, initrd))
}

/// Shows progress on stderr: a line rewritten in place on a terminal,
/// nothing otherwise.
pub struct ProgressLine {
    tty: bool,
    shown: bool,
}

impl ProgressLine {
    pub fn new() -> Self {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn show(&mut self, line: &str) {
        if self.tty {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[K{line}");
            let _ = e.flush();
            self.shown = true;
        }
    }

    pub fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

impl Default for ProgressLine {
    fn default() -> Self {
        Self::new()
    }
}

/// Measures here or in the nested L1, whichever this host needs.
pub fn measure(opts: &Options) -> Result<Results, Error> {
    if in_l1(opts) {
        let (kernel, initrd) = guest_files(opts)?;
        // Inside L1 the outer tapir shows the progress: leave it a file.
        let progress_file = opts
            .results_out
            .as_ref()
            .map(|r| r.with_file_name("progress"));
        let mut show = |p: &Progress| {
            if let Some(f) = &progress_file {
                let _ = fs::write(f, p.line());
            }
        };
        let ran_on = format!(
            "nested: L2 guests under nested KVM in a tapir-nested L1 VM ({})",
            uname()
        );
        return runner::measure_here(opts, ran_on, &kernel, &initrd, &mut show);
    }
    match kvm_mode() {
        KvmMode::Hw => {
            let (kernel, initrd) = guest_files(opts)?;
            let mut line = ProgressLine::new();
            let r = runner::measure_here(
                opts,
                format!("directly on this host ({})", uname()),
                &kernel,
                &initrd,
                &mut |p| line.show(&p.line()),
            );
            line.clear();
            r
        }
        KvmMode::Pvm => nested(opts),
        KvmMode::None => Err(Error::NoKvm),
    }
}

fn uname() -> String {
    nix::sys::utsname::uname()
        .map(|u| {
            let node = u.nodename().to_string_lossy().into_owned();
            let kernel = u.release().to_string_lossy().into_owned();
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            if node.is_empty() || node == "(none)" {
                format!("kernel {kernel}, {cpus} CPU(s)")
            } else {
                format!("{node}, kernel {kernel}, {cpus} CPU(s)")
            }
        })
        .unwrap_or_else(|_| "?".into())
}

/// Runs this binary's `bench --in-l1` in a tapir-nested L1 VM and reads
/// back its results.
fn nested(opts: &Options) -> Result<Results, Error> {
    // What can be checked out here is checked here: one clear line, before
    // minutes of booting L1 (which sees this host's root).
    if !runner::have("iperf3") {
        return Err(Error::MissingTool {
            tool: "iperf3",
            package: "iperf3",
        });
    }
    if opts.against_qemu() && !runner::have("qemu-system-x86_64") {
        return Err(Error::MissingTool {
            tool: "qemu-system-x86_64",
            package: "qemu-system-x86",
        });
    }
    let nested = resource("resources/nested/tapir-nested")?;
    let (kernel, initrd) = guest_files(opts)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding tapir's own binary", e))?;
    let out = match &opts.keep {
        Some(k) => k.clone(),
        None => std::env::temp_dir().join(format!("tapir-bench-{}", std::process::id())),
    };
    fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let total = opts.runs().len();
    let l1 = L1 {
        opts,
        nested: &nested,
        exe: &exe,
        kernel: &kernel,
        initrd: &initrd,
        out: &out,
    };
    let mut all: Option<Results> = None;
    for attempt in 1..=MAX_L1 {
        let done = all.as_ref().map_or(0, |r| r.runs.len());
        let log = out.join(format!("l1-{attempt}.log"));
        let (status, got) = l1.attempt(done, &log)?;
        let Some(got) = got else {
            // The L1 side never got through its set-up: nothing to retry;
            // what earlier L1s measured still counts.
            if let Some(a) = &mut all {
                a.notes.push(format!(
                    "a fresh L1 measured nothing ({status}: {}; {}); the rest were not run",
                    last_line(&log),
                    log.display()
                ));
                break;
            }
            return Err(Error::Nested {
                status: status.to_string(),
                last: last_line(&log),
                log,
            });
        };
        let how = (!status.success())
            .then(|| format!("{status}: {}; {}", last_line(&log), log.display()));
        if !merge(&mut all, got, how, total, attempt) {
            break;
        }
    }
    let mut r = all.unwrap_or_default();
    // The logs came back in OUT/logs: name them as seen from here.
    for run in &mut r.runs {
        if let Some(name) = Path::new(&run.log).file_name() {
            run.log = out.join("logs").join(name).display().to_string();
        }
    }
    r.meta.tapir = exe.display().to_string();
    if let Some(n) = opts.l1_cpus {
        r.meta.ran_on += &format!(" (--l1-cpus {n})");
    }
    Ok(r)
}

/// How many L1 VMs one benchmark may use (a lost one is replaced).
const MAX_L1: usize = 3;

/// Adds what L1 number `attempt` measured to what the L1s before it did.
/// `lost`: how it ended when not with status 0. Returns whether another L1
/// should run the rest of the plan (`total` runs), with a note saying why.
fn merge(
    all: &mut Option<Results>,
    got: Results,
    lost: Option<String>,
    total: usize,
    attempt: usize,
) -> bool {
    match all {
        None => *all = Some(got),
        Some(a) => a.runs.extend(got.runs),
    }
    let a = all.get_or_insert_with(Results::default);
    let now = a.runs.len();
    let Some(how) = lost else {
        return false;
    };
    if now >= total {
        return false;
    }
    let what = format!(
        "the nested L1 VM was lost during run {} of {total} ({how}); ",
        now + 1
    );
    if attempt < MAX_L1 {
        a.notes
            .push(what + "that run and the rest ran in a fresh L1");
        true
    } else {
        a.notes.push(what + "the rest were not run");
        false
    }
}

/// The last non-empty line of a file, shortened.
fn last_line(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let l = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    l.chars().take(200).collect()
}

/// What every L1 attempt shares.
struct L1<'a> {
    opts: &'a Options,
    nested: &'a Path,
    exe: &'a Path,
    kernel: &'a Path,
    initrd: &'a Path,
    out: &'a Path,
}

impl L1<'_> {
    /// One tapir-nested L1 measuring the plan from run `skip` on; its exit
    /// status and the results it wrote (None: it never got that far).
    fn attempt(
        &self,
        skip: usize,
        log_path: &Path,
    ) -> Result<(std::process::ExitStatus, Option<Results>), Error> {
        let opts = self.opts;
        let results = self.out.join("results.json");
        let _ = fs::remove_file(&results);
        let _ = fs::remove_file(self.out.join("progress"));
        let runs = opts.runs().len();
        let timeout = 600 + runs.saturating_sub(skip) as u64 * (360 + 6 * u64::from(opts.secs));
        let mut cmd = Command::new(self.nested);
        cmd.arg("--out")
            .arg(self.out)
            .args(["--timeout", &timeout.to_string()]);
        if let Some(n) = opts.l1_cpus {
            cmd.args(["--cpus", &n.to_string()]);
        }
        if let Some(b) = &opts.baseline {
            cmd.arg("--share").arg(b);
        }
        cmd.arg("--share")
            .arg(self.exe)
            .arg("--share")
            .arg(self.kernel)
            .arg("--share")
            .arg(self.initrd)
            .arg("--")
            .arg(self.exe)
            .arg("bench")
            .arg("--models")
            .arg(
                opts.models
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .arg("--net")
            .arg(
                opts.nets
                    .iter()
                    .map(|n| n.name())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .args([
                "--reps",
                &opts.reps.to_string(),
                "--secs",
                &opts.secs.to_string(),
            ])
            .arg("--kernel")
            .arg(self.kernel)
            .arg("--initrd")
            .arg(self.initrd)
            .args(["--in-l1", "--results-out", "/run/out/results.json"])
            .args(["--skip-runs", &skip.to_string()]);
        if !opts.against.is_empty() {
            let list: Vec<&str> = opts.against.iter().map(|v| v.name()).collect();
            cmd.args(["--against", &list.join(",")]);
        }
        if let Some(b) = &opts.baseline {
            // L1 runs the command in this working directory, but say it whole.
            cmd.arg("--baseline")
                .arg(b.canonicalize().unwrap_or_else(|_| b.clone()));
        }
        if opts.exit_detail {
            cmd.arg("--exit-detail");
        }
        let log = fs::File::create(log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log.try_clone().map_err(|e| Error::io("the L1 log", e))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::io(format!("running {}", self.nested.display()), e))?;
        // The progress line: the L1 side writes its current line to a file.
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            let file = self.out.join("progress");
            std::thread::spawn(move || {
                let mut line = ProgressLine::new();
                line.show("tapir bench: booting the nested L1 VM");
                while !done.load(Ordering::Relaxed) {
                    if let Ok(s) = fs::read_to_string(&file) {
                        line.show(&format!("{s} (in L1)"));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                line.clear();
            })
        };
        let status = child.wait();
        done.store(true, Ordering::Relaxed);
        if watcher.join().is_err() {
            log::warn!("the progress line's thread stopped");
        }
        let status = status.map_err(|e| Error::io("waiting for tapir-nested", e))?;
        let Ok(text) = fs::read_to_string(&results) else {
            return Ok((status, None));
        };
        let r: Results = serde_json::from_str(&text).map_err(|e| Error::Parse {
            what: "the L1 side's results",
            why: e.to_string(),
        })?;
        Ok((status, Some(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample;

    fn part(from: usize, to: usize) -> Results {
        let mut r = sample();
        r.notes.clear();
        r.runs = r.runs[from..to].to_vec();
        r
    }

    #[test]
    fn a_lost_l1_is_replaced_and_noted() {
        let mut all = None;
        // L1 1 is lost during run 4 of 8, L1 2 does the rest.
        assert!(merge(
            &mut all,
            part(0, 3),
            Some("exit status: 125".into()),
            8,
            1
        ));
        assert!(!merge(&mut all, part(3, 8), None, 8, 2));
        let a = all.unwrap();
        assert_eq!(a.runs, sample().runs);
        assert_eq!(
            a.notes,
            ["the nested L1 VM was lost during run 4 of 8 (exit status: 125); that run and the rest ran in a fresh L1"]
        );
    }

    #[test]
    fn no_retry_when_done_or_out_of_l1s() {
        let mut all = None;
        assert!(!merge(&mut all, part(0, 8), None, 8, 1));
        assert!(all.unwrap().notes.is_empty());
        // Every run measured, though the L1 ended badly afterwards.
        let mut all = None;
        assert!(!merge(
            &mut all,
            part(0, 8),
            Some("exit status: 1".into()),
            8,
            1
        ));
        assert!(all.unwrap().notes.is_empty());
        let mut all = None;
        assert!(merge(&mut all, part(0, 1), Some("x".into()), 8, 1));
        assert!(merge(&mut all, part(1, 2), Some("x".into()), 8, 2));
        assert!(!merge(&mut all, part(2, 2), Some("x".into()), 8, MAX_L1));
        let a = all.unwrap();
        assert_eq!(a.runs.len(), 2);
        assert!(
            a.notes[2].ends_with("the rest were not run"),
            "{:?}",
            a.notes
        );
    }
}
