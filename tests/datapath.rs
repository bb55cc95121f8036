//! The NIC data path, end to end: the test kernel's `test=nic`
//! (`resources/testkernel/README.md`, "The NIC data-path test") drives each
//! NIC model with its own minimal driver, sends frames of every kind and
//! size, and checks the echoes; the host echoes every frame and checks
//! and hashes what crossed. One test per model and backend,
//! `datapath_<model>_<backend>`:
//!
//! - models: `virtio` (MSI-X), `virtio_intx`, `e1000`, `rtl8139` (normal
//!   mode), `rtl8139cp` (C+ mode);
//! - backends: `memory` (the VM in this process with a `MemoryBackend`,
//!   see `memory.rs`), `tap` (the tapir binary on a tap the test made, a
//!   packet socket echoing; root), `user` (the binary with
//!   `net=user,loopback=on`, a UDP echo server on 127.0.0.1), `passthrough`
//!   (the binary with `net=passthrough` on one end of a veth pair, a packet
//!   socket echoing on the other; root).
//!
//! The VMs run one at a time: the in-process ones must (process-wide
//! signal handlers), and the guest gives up after 10 s without progress,
//! which a host of 2 busy cores should not be made to risk.

mod common;
#[path = "datapath/frames.rs"]
mod frames;
#[path = "datapath/guest.rs"]
mod guest;
#[path = "datapath/memory.rs"]
mod memory;
#[path = "datapath/pcap.rs"]
mod pcap;
#[path = "datapath/tap.rs"]
mod tap;
#[path = "datapath/user.rs"]
mod user;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use frames::{Tally, ETH_HLEN, TEST_MSS};
use guest::{Backend, Cell, GuestReport, Model, ReportError};

/// `nic.h`: the driver segments TCP (`nic: ... caps=`).
const NIC_CAP_TSO: u64 = 1 << 1;

/// Guest RAM in MiB (the test kernel's DMA area ends at 32 MiB).
pub const GUEST_MEMORY: u64 = 64;
/// The longest a run may take before it is stopped (a run takes seconds;
/// the guest itself gives up after 10 s without progress).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Tells an echo thread to finish: raised by [`StopFlag::raise`] or on
/// drop, so that a run that panics does not leave its thread behind.
#[derive(Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// What the echo thread watches.
    pub fn watch(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    pub fn raise(self) {}
}

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What one run left behind.
pub struct Run {
    pub cmdline: String,
    /// The guest's console.
    pub serial: String,
    /// How the VMM ended, and what it said.
    pub vmm: String,
    /// The VM ended with the guest's ACPI poweroff.
    pub powered_off: bool,
    /// The host's side.
    pub host: Tally,
    pub elapsed: Duration,
}

impl Run {
    /// What a run of the tapir binary (`out`) left, with the host's side.
    fn of_binary(cmdline: String, out: common::Outcome, host: Tally, elapsed: Duration) -> Run {
        Run {
            cmdline,
            powered_off: out.code == 0 && out.stderr.contains("guest powered off"),
            vmm: format!("tapir exit status {}, stderr:\n{}", out.code, out.stderr),
            serial: out.stdout,
            host,
            elapsed,
        }
    }
}

/// Runs the tapir binary on the test kernel with `cmdline` and the one NIC
/// `--nic nic`, until it ends or [`RUN_TIMEOUT`] passes.
fn run_binary(cmdline: &str, nic: &str) -> common::Outcome {
    let kernel = tapir_testkernel::elf_path();
    let memory = format!("{GUEST_MEMORY}M");
    common::Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        &memory,
        "--cmdline",
        cmdline,
        "--nic",
        nic,
    ])
    .finish(RUN_TIMEOUT)
}

/// A check that did not hold.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the guest did not print 'TESTKERNEL: PASS'")]
    NoPass,
    #[error("the guest printed: {0}")]
    GuestFail(String),
    #[error("the VM did not end with the guest's poweroff")]
    NoPowerOff,
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{what}: the guest says {guest}, the host {host}")]
    Differs {
        what: &'static str,
        guest: String,
        host: String,
    },
    #[error("irqs=0: no interrupt reached the guest")]
    NoIrqs,
    #[error("{0} problem(s) in the frames the guest sent (below)")]
    HostProblems(u64),
    #[error(
        "the driver uses TSO (caps 0x{caps:x}, max_tso {max_tso}), so every TCP frame is a \
         segment, but one carried {payload} bytes (MSS {TEST_MSS})"
    )]
    Unsegmented {
        caps: u64,
        max_tso: u64,
        payload: usize,
    },
}

fn differs(what: &'static str, guest: impl ToString, host: impl ToString) -> Failure {
    Failure::Differs {
        what,
        guest: guest.to_string(),
        host: host.to_string(),
    }
}

/// Everything the guest's report and the host's view must agree on.
fn verify(cell: &Cell, run: &Run) -> Vec<Failure> {
    let mut fails = Vec::new();
    if !run.serial.contains("TESTKERNEL: PASS") {
        fails.push(Failure::NoPass);
    }
    for l in run
        .serial
        .lines()
        .filter(|l| l.contains("TESTKERNEL: FAIL"))
    {
        fails.push(Failure::GuestFail(l.trim().to_string()));
    }
    if !run.powered_off {
        fails.push(Failure::NoPowerOff);
    }
    let host = &run.host;
    if host.problem_count > 0 {
        fails.push(Failure::HostProblems(host.problem_count));
    }
    let report = match GuestReport::parse(&run.serial, GuestReport::RESULT) {
        Ok(r) => r,
        Err(e) => {
            fails.push(e.into());
            return fails;
        }
    };
    let mut field_checks = || -> Result<(), ReportError> {
        let udp = cell.backend == Backend::User;
        let frames = u64::from(cell.frames());
        let mut want = |what, guest: u64, host: u64| {
            if guest != host {
                fails.push(differs(what, guest, host));
            }
        };
        want("tx_frames (units sent)", report.num("tx_frames")?, frames);
        want("tx_units (units built)", report.num("tx_units")?, frames);
        want(
            "rx_frames (echoes): guest received, host sent",
            report.num("rx_frames")?,
            host.sent,
        );
        want(
            "frames: host received, host echoed",
            host.received,
            host.sent,
        );
        if udp {
            want(
                "datagrams: guest sent, host received",
                frames,
                host.received,
            );
        } else {
            // Every 4th unit (i % 4 == 1) is a tagged raw frame.
            let vlan_units = (frames + 2) / 4;
            want(
                "tagged frames: units, host received",
                vlan_units,
                host.tagged,
            );
        }
        if cell.backend == Backend::Memory {
            want("stray frames", report.num("stray")?, 0);
        }
        let hex = |h: u64| format!("0x{h:016x}");
        let tx = report.num("tx_hash")?;
        if tx != host.rx_hash.value() {
            fails.push(differs(
                "tx_hash (payloads the guest sent)",
                hex(tx),
                host.rx_hash,
            ));
        }
        let rx = report.num("rx_hash")?;
        if rx != host.tx_hash.value() {
            fails.push(differs(
                "rx_hash (payloads the host echoed)",
                hex(rx),
                host.tx_hash,
            ));
        }
        if report.num("irqs")? == 0 {
            fails.push(Failure::NoIrqs);
        }
        // With TSO every TCP unit is one TSO packet (README), so every TCP
        // frame on the wire is a segment, whoever cut it: the NIC model
        // (rtl8139 C+) or the host (a GSO frame from virtio or e1000).
        let nic = GuestReport::parse(&run.serial, GuestReport::NIC)?;
        let (caps, max_tso) = (nic.num("caps")?, nic.num("max_tso")?);
        let tso_used = caps & NIC_CAP_TSO != 0 && max_tso > (ETH_HLEN + 20 + 20 + TEST_MSS) as u64;
        if tso_used && host.max_tcp_payload > TEST_MSS {
            fails.push(Failure::Unsegmented {
                caps,
                max_tso,
                payload: host.max_tcp_payload,
            });
        }
        let model = report.text("model")?;
        if model != cell.model.guest_model() {
            fails.push(differs("model", model, cell.model.guest_model()));
        }
        let mode = report.text("mode")?;
        let want_mode = if udp { "udp" } else { "raw" };
        if mode != want_mode {
            fails.push(differs("mode", mode, want_mode));
        }
        Ok(())
    };
    if let Err(e) = field_checks() {
        fails.push(e.into());
    }
    fails
}

/// One line for the log: time, counts, and what the guest's driver used.
fn summary(cell: &Cell, run: &Run) -> String {
    let line = |prefix: &str| {
        run.serial
            .lines()
            .rfind(|l| l.starts_with(prefix))
            .map(str::trim)
            .unwrap_or("(none)")
    };
    let (nic, result) = (line(GuestReport::NIC), line(GuestReport::RESULT));
    let h = &run.host;
    format!(
        "{}: {:.1} s; host: {} received ({} handed over, {} GSO -> {} segments, {} partial csum, \
         {} tagged), {} echoed, {} problem(s), frames over {:.1} s (longest wait {:.2} s \
         before #{}); {nic}; {result}",
        cell.test,
        run.elapsed.as_secs_f64(),
        h.received,
        h.handed_over,
        h.gso,
        h.segments,
        h.partial_csum,
        h.tagged,
        h.sent,
        h.problem_count,
        h.span().as_secs_f64(),
        h.longest_gap.0.as_secs_f64(),
        h.longest_gap.1
    )
}

/// One VM at a time in this process (see the crate's comment).
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether this host can run VMs (else `test` is reported skipped).
fn have_kvm(test: &str) -> bool {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    if let Err(e) = kvm {
        tapir_test_support::skipped(test, &format!("cannot open /dev/kvm: {e}"));
        return false;
    }
    true
}

/// Holds the one VM this process may run at a time.
fn one_vm() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holds nothing the next one needs.
    ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_cell(cell: Cell) {
    if !have_kvm(cell.test) {
        return;
    }
    let _one = one_vm();
    let run = match cell.backend {
        Backend::Memory => memory::run(&cell),
        Backend::Tap => match tap::run(&cell) {
            Some(r) => r,
            None => return,
        },
        Backend::User => user::run(&cell),
        Backend::Passthrough => match tap::run_passthrough(&cell) {
            Some(r) => r,
            None => return,
        },
    };
    check_run(&cell, &run);
}

/// Prints the run's summary and panics with every check that failed;
/// `false` when the guest's driver is a stub (the test is then skipped).
fn check_run(cell: &Cell, run: &Run) -> bool {
    eprintln!("{}", summary(cell, run));
    // The guest's stubs, until its driver is written.
    if let Some(stub) = run
        .serial
        .lines()
        .find(|l| l.contains("driver is not written yet"))
    {
        tapir_test_support::skipped(cell.test, stub.trim());
        return false;
    }
    let fails = verify(cell, run);
    if !fails.is_empty() {
        let list: Vec<String> = fails.iter().map(|f| format!("  - {f}")).collect();
        panic!(
            "{}: {} check(s) failed:\n{}\ncmdline: {}\n{}\n--- guest console ---\n{}\n--- host ---\n{}",
            cell.test,
            fails.len(),
            list.join("\n"),
            run.cmdline,
            run.vmm,
            run.serial,
            run.host
        );
    }
    true
}

macro_rules! cells {
    ($($test:ident: $model:ident, $backend:ident;)*) => {$(
        #[test]
        fn $test() {
            run_cell(Cell {
                test: stringify!($test),
                model: Model::$model,
                backend: Backend::$backend,
            });
        }
    )*};
}

cells! {
    datapath_virtio_memory: Virtio, Memory;
    datapath_virtio_tap: Virtio, Tap;
    datapath_virtio_user: Virtio, User;
    datapath_virtio_intx_memory: VirtioIntx, Memory;
    datapath_virtio_intx_tap: VirtioIntx, Tap;
    datapath_virtio_intx_user: VirtioIntx, User;
    datapath_e1000_memory: E1000, Memory;
    datapath_e1000_tap: E1000, Tap;
    datapath_e1000_user: E1000, User;
    datapath_rtl8139_memory: Rtl8139, Memory;
    datapath_rtl8139_tap: Rtl8139, Tap;
    datapath_rtl8139_user: Rtl8139, User;
    datapath_rtl8139cp_memory: Rtl8139Cp, Memory;
    datapath_rtl8139cp_tap: Rtl8139Cp, Tap;
    datapath_rtl8139cp_user: Rtl8139Cp, User;
    datapath_virtio_passthrough: Virtio, Passthrough;
    datapath_e1000_passthrough: E1000, Passthrough;
    datapath_rtl8139_passthrough: Rtl8139, Passthrough;
    datapath_rtl8139cp_passthrough: Rtl8139Cp, Passthrough;
}
