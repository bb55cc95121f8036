//! Linux guests under tapir: Debian's kernel and the default initramfs
//! (resources/guest), booted by the real tapir binary.
//!
//! All scenarios run in ONE place with a usable KVM: inside a single nested
//! L1 VM (resources/nested/tapir-nested) when /dev/kvm is PVM or missing, or
//! directly on a host with VT-x/AMD-V. tests/nested/scenarios.sh runs them
//! and leaves NAME.log / NAME.rc per scenario; each test below checks one.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

struct Suite {
    results: HashMap<String, (i32, String)>,
    runner_output: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kvm_mode() -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(". resources/lib/common.sh && tapir_kvm_mode")
        .current_dir(root())
        .output()
        .expect("run tapir_kvm_mode");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn build_guest() -> (String, String) {
    let out = Command::new(root().join("resources/guest/build-guest.sh"))
        .output()
        .expect("run build-guest.sh");
    assert!(
        out.status.success(),
        "build-guest.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in build-guest output: {text}"))
            .to_string()
    };
    (get("KERNEL="), get("INITRD="))
}

fn suite() -> &'static Suite {
    static SUITE: OnceLock<Suite> = OnceLock::new();
    SUITE.get_or_init(|| {
        let (kernel, initrd) = build_guest();
        let tapir = common::tapir_bin();
        let out_dir = out_dir();
        if std::env::var_os("TAPIR_NESTED_REUSE").is_some() {
            // Developer aid: re-check the results of the last run without booting L1.
            return read_results(&out_dir, "(reused results)".into());
        }
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let scenarios = root().join("tests/nested/scenarios.sh");
        let mode = kvm_mode();
        eprintln!("nested suite: KVM mode '{mode}'");
        let runner_output = if mode == "hw" {
            let o = Command::new(&scenarios)
                .arg(&tapir)
                .arg(&kernel)
                .arg(&initrd)
                .arg(&out_dir)
                .output()
                .expect("start the scenario runner");
            transcript(&o)
        } else {
            eprintln!(
                "nested suite: /dev/kvm is '{mode}': running the scenarios in a nested L1 VM \
                 (QEMU TCG + SVM); a fresh L1 takes over if it dies"
            );
            let list = Command::new(&scenarios)
                .arg("--list")
                .output()
                .expect("list the scenarios");
            let mut names: Vec<String> = String::from_utf8_lossy(&list.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if let Ok(only) = std::env::var("TAPIR_NESTED_ONLY") {
                // Developer aid: run only these scenarios (the other tests fail).
                names.retain(|n| only.split_whitespace().any(|o| o == n));
            }
            assert!(!names.is_empty(), "scenarios.sh --list gave nothing");
            // The L1 VM (QEMU TCG emulating SVM) has died now and then (a
            // triple fault of the L1 CPU in QEMU's log, an L1 kernel panic,
            // both vCPUs of a 2-vCPU L1 in a soft lockup). One L1 runs all
            // scenarios; when it dies, or makes no progress for STALL (no
            // scenario's own time limit fired: L1 itself is stuck), the
            // rest runs in a fresh L1 and the interrupted scenario starts
            // over: at most MAX_L1_RESTARTS times in a suite, each one
            // said in the suite's summary. A guest that dies while its L1
            // lives is a failure like any other.
            let mut remaining = names.clone();
            let mut all = String::new();
            let mut restarts = 0;
            for round in 1.. {
                let (o, stalled) =
                    run_l1(&scenarios, &tapir, &kernel, &initrd, &out_dir, &remaining);
                all.push_str(&format!("--- L1 VM {round}: {} ---\n", remaining.join(" ")));
                all.push_str(&o);
                remaining.retain(|n| !out_dir.join(format!("{n}.rc")).exists());
                let Some(current) = remaining.first().cloned() else {
                    break;
                };
                let why = if stalled {
                    format!("no scenario finished for {} s: L1 killed", STALL.as_secs())
                } else {
                    o.lines()
                        .filter(|l| l.contains("tapir-nested"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                };
                if restarts == MAX_L1_RESTARTS {
                    eprintln!(
                        "nested suite: L1 VM {round} stopped during {current} ({why}); \
                         {restarts} restarts already: the rest has no result"
                    );
                    break;
                }
                restarts += 1;
                tapir_test_support::retried(
                    &format!("nested scenario {current}"),
                    &format!(
                        "in a fresh L1 VM (restart {restarts} of at most {MAX_L1_RESTARTS}): \
                         L1 VM {round} stopped: {why}"
                    ),
                );
            }
            all
        };
        eprintln!("{runner_output}");
        read_results(&out_dir, runner_output)
    })
}

/// Longest an L1 VM runs without a scenario finishing before it is taken
/// for hung: longer than any scenario's own time limit (at most 480 s).
const STALL: std::time::Duration = std::time::Duration::from_secs(600);
/// How many times in one suite a fresh L1 VM takes over from one that died.
const MAX_L1_RESTARTS: u32 = 2;
/// tapir-nested's own limit for one L1 VM.
const L1_TIMEOUT_S: u32 = 3600;

/// Runs `names` in one L1 VM; kills it (its whole process group: the
/// runner, `timeout`, QEMU) when no scenario finishes for [`STALL`].
/// Returns the transcript, and whether it was killed for that.
fn run_l1(
    scenarios: &std::path::Path,
    tapir: &std::path::Path,
    kernel: &str,
    initrd: &str,
    out_dir: &std::path::Path,
    names: &[String],
) -> (String, bool) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    // A short path: Unix socket names are limited to 107 bytes.
    let monitor = std::env::temp_dir().join(format!("tapir-l1-{}.mon", std::process::id()));
    let mut child = Command::new(root().join("resources/nested/tapir-nested"))
        .arg("--monitor")
        .arg(&monitor)
        .arg("--out")
        .arg(out_dir)
        .arg("--timeout")
        .arg(L1_TIMEOUT_S.to_string())
        // q35 with an emulated IOMMU and an e1000e to assign (vfio_*).
        .arg("--assign-nic")
        // Below /tmp (CARGO_TARGET_DIR, TAPIR_CACHE) these would be
        // hidden inside L1.
        .arg("--share")
        .arg(tapir)
        .args(["--share", kernel, "--share", initrd])
        .arg("--")
        .arg(scenarios)
        .arg(tapir)
        .arg(kernel)
        .arg(initrd)
        .arg("/run/out")
        .args(names)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start tapir-nested");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let done = || {
        names
            .iter()
            .filter(|n| out_dir.join(format!("{n}.rc")).exists())
            .count()
    };
    let (mut seen, mut since) = (done(), Instant::now());
    let mut stalled = false;
    let mut l1_state = String::new();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for tapir-nested") {
            break st;
        }
        let now = done();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() > STALL {
            if !stalled {
                l1_state = l1_snapshot(&monitor);
            }
            // SIGTERM first (tapir-nested then stops QEMU and cleans up),
            // SIGKILL to the whole group 15 s later.
            let sig = if stalled && since.elapsed() > STALL + Duration::from_secs(15) {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            stalled = true;
            // SAFETY: kill(2) on the process group we created for the
            // child (its pid); no memory is involved.
            unsafe { libc::kill(-(child.id() as i32), sig) };
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let text = format!(
        "status {status:?}\nstdout:\n{}\nstderr:\n{}{l1_state}",
        String::from_utf8_lossy(&out.join().unwrap_or_default()),
        String::from_utf8_lossy(&err.join().unwrap_or_default())
    );
    let _ = std::fs::remove_file(&monitor);
    (text, stalled)
}

/// What a stuck L1 is doing, through QEMU's monitor: a backtrace of every
/// L1 CPU (SysRq-L, onto the L1 console, i.e. into the runner's output)
/// and the CPU registers (returned).
fn l1_snapshot(monitor: &std::path::Path) -> String {
    use std::io::{Read, Write};
    use std::time::Duration;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(monitor) else {
        return "\n(no QEMU monitor to ask about the stuck L1)\n".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut reply = Vec::new();
    for cmd in ["sendkey alt-sysrq-l\n", "info registers -a\n"] {
        let _ = s.write_all(cmd.as_bytes());
        std::thread::sleep(Duration::from_secs(2));
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
    }
    // The monitor echoes with terminal escapes: keep the register lines.
    let text = String::from_utf8_lossy(&reply);
    let regs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("CPU#") || l.starts_with("RIP=") || l.starts_with("CR0="))
        .collect();
    format!("\nstuck L1, QEMU monitor:\n{}\n", regs.join("\n"))
}

/// A runner's exit status, stdout and stderr, for failure messages.
fn transcript(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn out_dir() -> PathBuf {
    root().join("target").join("nested-out")
}

fn read_results(out_dir: &std::path::Path, runner_output: String) -> Suite {
    let mut results = HashMap::new();
    for entry in std::fs::read_dir(out_dir).unwrap().flatten() {
        let p = entry.path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".rc") {
            let rc: i32 = std::fs::read_to_string(&p)
                .unwrap()
                .trim()
                .parse()
                .unwrap_or(-1);
            let log = std::fs::read_to_string(p.with_extension("log")).unwrap_or_default();
            results.insert(stem.to_string(), (rc, log));
        }
    }
    Suite {
        results,
        runner_output,
    }
}

fn scenario(name: &str) -> &'static (i32, String) {
    let s = suite();
    s.results
        .get(name)
        .unwrap_or_else(|| panic!("scenario {name} did not run\n{}", s.runner_output))
}

/// Parses `TAPIR-GUEST: booted cpus=N mem=MMiB ...`.
fn booted(log: &str) -> (u32, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("TAPIR-GUEST: booted"))
        .unwrap_or_else(|| panic!("no booted marker in:\n{log}"));
    let field = |k: &str| -> u64 {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line}"));
        v.trim_end_matches("MiB").parse().unwrap()
    };
    (field("cpus=") as u32, field("mem="))
}

fn section<'a>(log: &'a str, begin: &str, end: &str) -> &'a str {
    let b = log
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin} in log:\n{log}"))
        + begin.len();
    let e = log[b..].find(end).map(|e| b + e).unwrap_or(log.len());
    &log[b..e]
}

/// The kernel's warnings and errors (levels 0-4) that point at IRQ routing,
/// PCI, ACPI or the APIC: there must be none.
fn routing_errors(log: &str) -> Vec<String> {
    let warn = section(log, "==DMESG-BEGIN==", "==DMESG-END==");
    warn.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            [
                "irq",
                "pci",
                "acpi",
                "apic",
                "_osc",
                "mmconfig",
                "ecam",
                "interrupt",
                "gsi",
                "_prt",
                "e820",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(str::to_string)
        .collect()
}

fn assert_clean_exit(name: &str, rc: i32, log: &str) {
    assert_eq!(rc, 0, "{name}: tapir exit status {rc}\n{log}");
}

#[test]
fn smp2_guest_sees_two_cpus_256m_and_powers_off() {
    let (rc, log) = scenario("smp2_poweroff");
    assert_clean_exit("smp2_poweroff", *rc, log);
    let (cpus, mem) = booted(log);
    assert_eq!(cpus, 2, "{log}");
    assert!(
        (250..=256).contains(&mem),
        "guest RAM {mem} MiB, want ~256\n{log}"
    );
    assert!(log.contains("tapir: guest powered off"), "{log}");
    let errs = routing_errors(log);
    assert!(
        errs.is_empty(),
        "kernel warnings about IRQ/PCI/ACPI routing:\n{}",
        errs.join("\n")
    );
    // Both CPUs came up and the host bridge was enumerated through ACPI.
    let pci = section(log, "==DMESG-PCI-IRQ==", "==INTERRUPTS==");
    assert!(pci.contains("PCI0") || pci.contains("PNP0A08"), "{pci}");
    assert!(pci.contains("[1b36:0008]"), "{pci}");
    let irqs = section(log, "==INTERRUPTS==", "==PCI==");
    assert!(irqs.contains("CPU1"), "{irqs}");
    assert!(irqs.contains("ttyS0"), "serial uses an interrupt:\n{irqs}");
}

#[test]
fn up_guest_powers_off_cleanly() {
    let (rc, log) = scenario("up_poweroff");
    assert_clean_exit("up_poweroff", *rc, log);
    let (cpus, mem) = booted(log);
    assert_eq!(cpus, 1);
    assert!((250..=256).contains(&mem), "{mem}");
    let errs = routing_errors(log);
    assert!(
        errs.is_empty(),
        "kernel warnings about IRQ/PCI/ACPI routing:\n{}",
        errs.join("\n")
    );
}

#[test]
fn guest_reboot_ends_tapir_with_status_0() {
    let (rc, log) = scenario("up_reboot");
    assert_clean_exit("up_reboot", *rc, log);
    assert!(log.contains("reboot: Restarting system"), "{log}");
    assert!(log.contains("tapir: guest rebooted"), "{log}");
}

#[test]
fn elf_vmlinux_boots_through_the_pvh_entry() {
    let (rc, log) = scenario("elf_pvh");
    assert_clean_exit("elf_pvh", *rc, log);
    let (cpus, _) = booted(log);
    assert_eq!(cpus, 1);
    assert!(log.contains("tapir: guest powered off"), "{log}");
}

#[test]
fn console_input_reaches_the_guest_shell() {
    let (rc, log) = scenario("console_input");
    assert_clean_exit("console_input", *rc, log);
    // The guest shell evaluated $((6*7)): the line came from our stdin.
    assert!(log.contains("typed-42-ok"), "{log}");
}

#[test]
fn sigterm_ends_a_running_linux_guest() {
    let (rc, log) = scenario("sigterm");
    assert_eq!(*rc, 143, "{log}");
    assert!(log.contains("tapir: stopped by signal 15"), "{log}");
}

/// A network scenario's `key=value` results (tests/nested/net-scenarios.sh):
/// `ok=1` only when every check in it passed and tapir exited 0.
fn net_scenario(name: &str) {
    let (rc, log) = scenario(name);
    let path = out_dir().join(format!("{name}.result"));
    let result =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let get = |k: &str| {
        result
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    // Only outside L1 may a scenario find no hardware of its own (the
    // scripts fail it inside L1, where tapir-nested provides it).
    let skipped = get("skipped");
    if !skipped.is_empty() {
        tapir_test_support::skipped(name, &skipped);
        return;
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(
        get("ok") == "1" && *rc == 0,
        "{name}: failed checks: {}; tapir exit {rc}\nresults:\n{result}\nconsole tail:\n{tail}",
        get("failed")
    );
}

#[test]
fn virtio_net_over_tap_ping_transfers_driver_link_and_interrupts() {
    net_scenario("net_tap");
}

#[test]
fn e1000_over_tap_ping_transfers_driver_link_and_interrupts() {
    net_scenario("net_tap_e1000");
}

#[test]
fn rtl8139_cplus_with_8139cp_over_tap() {
    net_scenario("net_tap_rtl8139");
}

/// The same chip at PCI revision 0x10 (RTL8139C), which Linux's 8139too
/// drives in normal (non-C+) mode.
#[test]
fn rtl8139_normal_mode_with_8139too_over_tap() {
    net_scenario("net_tap_8139too");
}

/// Two guests on one L1 bridge (net=bridge) and a host on a veth port:
/// guest<->guest and host->guest.
#[test]
fn two_guests_on_one_bridge_reach_each_other_and_the_host() {
    net_scenario("net_bridge");
}

#[test]
fn vlan_access_port_reaches_only_its_vlan() {
    net_scenario("net_vlan");
}

#[test]
fn two_nics_with_given_macs_and_slots() {
    net_scenario("net_two_nics");
}

/// Two virtio-blk disks (tests/nested/disk-scenarios.sh): ext4 read and
/// written through virtio_blk, the write found in the image afterwards,
/// discard, serial numbers, and a read-only disk the guest cannot write.
#[test]
fn virtio_blk_ext4_disks_read_write_and_read_only() {
    net_scenario("disk_ext4");
}

/// net=user as uid 65534: DHCP lease, gateway and relayed ping, DNS through
/// 10.0.2.3, a 10 MiB download by name, 200 concurrent connections, and a
/// host port forward into the guest (tests/nested/user-scenarios.sh).
#[test]
fn user_net_dhcp_dns_download_200_connections_and_forward_unprivileged() {
    net_scenario("net_user");
}

/// The same through an e1000 (driver e1000).
#[test]
fn user_net_with_e1000() {
    net_scenario("net_user_e1000");
}

/// The same through an RTL8139 (driver 8139cp).
#[test]
fn user_net_with_rtl8139() {
    net_scenario("net_user_rtl8139");
}

/// net=user with restrict=on: the lease and the forward work, nothing
/// outbound does (no relayed ping, no DNS, no HTTP).
#[test]
fn user_net_restrict_blocks_outbound_but_not_forwards() {
    net_scenario("net_user_restrict");
}

/// `tapir ctl SOCKET set_link NAME off|on` on a guest with one NIC per
/// driver (virtio_net, e1000, 8139cp, 8139too): each driver sees its carrier
/// go and come back, frames are dropped and counted while the cable is out,
/// pings work again after, and `tapir ctl SOCKET quit` stops tapir
/// (tests/nested/link-scenarios.sh).
#[test]
fn link_down_and_up_from_the_control_socket_reach_every_driver() {
    net_scenario("net_link");
}

/// Direct attach (net=passthrough) on a veth in L1, one guest with one NIC
/// per driver (virtio_net, e1000, 8139cp, 8139too): per NIC, pings and a
/// sha256-checked transfer each way with the namespace host on the veth's
/// other end; the macvtaps are tapir's (names, MACs, mode) and gone after
/// exit (tests/nested/passthrough-scenarios.sh).
#[test]
fn passthrough_macvtap_every_driver_pings_and_transfers() {
    net_scenario("net_passthrough");
}

/// Two guests with a NIC each on one parent in mode=bridge (they reach each
/// other) and one on another parent in mode=private (they do not); both
/// reach the namespace host in both modes; no macvtap is left after exit.
#[test]
fn passthrough_bridge_mode_guests_meet_private_mode_guests_do_not() {
    net_scenario("net_passthrough_modes");
}

/// Device assignment: L1's e1000e (behind QEMU's emulated Intel IOMMU),
/// bound to vfio-pci and given to the guest with `--device vfio-pci`; the
/// guest's e1000e driver binds with MSI-X, pings and moves sha256-checked
/// files both ways with L1's peer NIC on the same QEMU hub
/// (tests/nested/vfio-scenarios.sh).
#[test]
fn vfio_assigned_e1000e_driver_msix_ping_and_transfers() {
    net_scenario("vfio_e1000e");
}

/// The same with the guest driver on INTx (`e1000e.IntMode=0`): VFIO's
/// level interrupt through a KVM irqfd whose resample eventfd unmasks it.
#[test]
fn vfio_assigned_e1000e_on_intx() {
    net_scenario("vfio_e1000e_intx");
}

#[test]
fn every_scenario_ran() {
    let s = suite();
    for name in [
        "up_poweroff",
        "up_reboot",
        "elf_pvh",
        "console_input",
        "sigterm",
        "smp2_poweroff",
        "net_tap",
        "net_tap_e1000",
        "net_tap_rtl8139",
        "net_tap_8139too",
        "net_vlan",
        "net_two_nics",
        "net_bridge",
        "net_user",
        "net_user_e1000",
        "net_user_rtl8139",
        "net_user_restrict",
        "net_link",
        "net_passthrough",
        "net_passthrough_modes",
        "vfio_e1000e",
        "vfio_e1000e_intx",
    ] {
        assert!(
            s.results.contains_key(name),
            "{name} missing\n{}",
            s.runner_output
        );
    }
}
