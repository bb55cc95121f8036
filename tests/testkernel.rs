//! Fast integration tests: the tiny test kernel (resources/testkernel) runs
//! directly on the host's /dev/kvm (PVM or hardware) under the real tapir
//! binary. They cover the vCPU loop, port and MMIO exits, the serial
//! console, ACPI/e820/MADT promises, PCI enumeration, power events and
//! guest failures.

mod common;

use std::time::Duration;

use common::{run, Outcome, Running};

const T: Duration = Duration::from_secs(60);

fn tk(args: &[&str], cmdline: &str) -> Outcome {
    let kernel = tapir_testkernel::elf_path();
    let mut v = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        cmdline,
    ];
    v.extend_from_slice(args);
    run(&v, T)
}

fn assert_pass(o: &Outcome) {
    assert!(
        o.stdout.contains("TESTKERNEL: PASS"),
        "no PASS:\nstdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert!(
        !o.stdout.contains("TESTKERNEL: FAIL"),
        "FAIL seen:\n{}",
        o.stdout
    );
    assert_eq!(o.code, 0, "exit status\nstderr:\n{}", o.stderr);
    assert!(
        o.stderr.contains("guest powered off"),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn boots_linux64_entry_and_checks_the_machine() {
    let o = tk(
        &["--memory", "64M"],
        "test=basic expect_cpus=1 expect_mem_mib=64",
    );
    assert_pass(&o);
    assert!(o.stdout.contains("boot=linux64"), "{}", o.stdout);
    // The host bridge is the only PCI function on bus 0.
    assert!(
        o.stdout.contains("PCI 00:00.0 1b36:0008 class 060000"),
        "{}",
        o.stdout
    );
    assert_eq!(o.stdout.matches("PCI 00:").count(), 1, "{}", o.stdout);
}

#[test]
fn boots_pvh_entry() {
    let kernel = tapir_testkernel::pvh_elf_path();
    let o = run(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "32M",
            "--cmdline",
            "test=basic expect_cpus=1 expect_mem_mib=32",
        ],
        T,
    );
    assert_pass(&o);
    assert!(o.stdout.contains("boot=pvh"), "{}", o.stdout);
}

#[test]
fn madt_lists_every_vcpu() {
    assert_pass(&tk(
        &["--cpus", "4", "--memory", "32M"],
        "test=basic expect_cpus=4 expect_mem_mib=32",
    ));
}

#[test]
fn memory_above_the_pci_hole_is_reported() {
    // 3.5 GiB: 3 GiB below the hole and 512 MiB above 4 GiB (lazily mapped).
    assert_pass(&tk(
        &["--memory", "3584M"],
        "test=basic expect_cpus=1 expect_mem_mib=3584",
    ));
}

#[test]
fn a_broken_promise_is_caught_by_the_guest() {
    // The guest checks what tapir promised: a wrong expectation must FAIL.
    let o = tk(
        &["--cpus", "2", "--memory", "32M"],
        "test=basic expect_cpus=3 expect_mem_mib=32",
    );
    assert!(o.stdout.contains("TESTKERNEL: FAIL"), "{}", o.stdout);
    let o = tk(
        &["--memory", "32M"],
        "test=basic expect_cpus=1 expect_mem_mib=64",
    );
    assert!(o.stdout.contains("TESTKERNEL: FAIL"), "{}", o.stdout);
}

#[test]
fn acpi_reset_register_reboots() {
    let o = tk(&["--memory", "32M"], "test=reboot");
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert!(o.stderr.contains("guest rebooted"), "stderr: {}", o.stderr);
}

#[test]
fn i8042_reset_reboots() {
    let o = tk(&["--memory", "32M"], "test=i8042-reset");
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert!(o.stderr.contains("guest rebooted"), "stderr: {}", o.stderr);
}

#[test]
fn triple_fault_is_a_dead_guest_with_registers() {
    let o = tk(&["--memory", "32M"], "test=triple-fault");
    assert_eq!(o.code, 2, "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("guest died on vCPU 0: triple fault"),
        "stderr: {}",
        o.stderr
    );
    assert!(
        o.stderr.contains("rip=0x") && o.stderr.contains("cr0="),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn unmapped_mmio_reads_all_ones_and_the_vm_survives() {
    let o = tk(&["--memory", "32M"], "test=mmio-unmapped");
    assert_pass(&o);
    assert!(
        o.stdout.to_lowercase().contains("0xffffffff"),
        "{}",
        o.stdout
    );
}

#[test]
fn unclaimed_port_reads_all_ones_with_a_warning() {
    let o = tk(&["--memory", "32M"], "test=pio-unmapped");
    assert_pass(&o);
    assert!(o.stderr.contains("port read 0x530"), "stderr: {}", o.stderr);
}

#[test]
fn serial_input_reaches_the_guest() {
    let kernel = tapir_testkernel::elf_path();
    let mut r = Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
        "--cmdline",
        "test=echo",
    ]);
    assert!(
        r.wait_for_output("ECHO READY", T),
        "no ECHO READY: {}",
        r.stdout_now()
    );
    r.send(b"hello tapir\n");
    let o = r.finish(T);
    assert!(o.stdout.contains("ECHO GOT hello tapir"), "{}", o.stdout);
    assert_pass(&o);
}

#[test]
fn sigterm_stops_a_halted_guest() {
    let kernel = tapir_testkernel::elf_path();
    let mut r = Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
        "--cmdline",
        "test=halt",
    ]);
    assert!(r.wait_for_output("HALTING", T), "{}", r.stdout_now());
    r.signal(libc::SIGTERM);
    let o = r.finish(Duration::from_secs(10));
    assert_eq!(o.code, 128 + libc::SIGTERM, "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("stopped by signal 15"),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn sigint_stops_a_halted_smp_guest() {
    let kernel = tapir_testkernel::elf_path();
    let mut r = Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cpus",
        "2",
        "--memory",
        "32M",
        "--cmdline",
        "test=halt",
    ]);
    assert!(r.wait_for_output("HALTING", T), "{}", r.stdout_now());
    r.signal(libc::SIGINT);
    let o = r.finish(Duration::from_secs(10));
    assert_eq!(o.code, 128 + libc::SIGINT, "stderr: {}", o.stderr);
}

#[test]
fn serial_to_file_and_to_nowhere() {
    let dir = std::env::temp_dir().join(format!("tapir-serial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("console.log");
    let spec = format!("file:{}", path.display());
    let o = tk(
        &["--memory", "32M", "--serial", &spec],
        "test=basic expect_cpus=1",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stdout.contains("TESTKERNEL"),
        "guest output leaked to stdout: {}",
        o.stdout
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("TESTKERNEL: PASS"), "{text}");
    let o = tk(&["--memory", "32M", "--serial", "none"], "test=basic");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn virtio_nics_appear_at_their_pci_slots() {
    if !common::can_make_taps() {
        tapir_test_support::skipped(
            "testkernel::virtio_nics_appear_at_their_pci_slots",
            "needs root and /dev/net/tun",
        );
        return;
    }
    let pid = std::process::id() % 10000;
    let a = format!("model=virtio,net=tap,ifname=tkA{pid},addr=5,mac=52:54:00:aa:00:01");
    let b = format!("model=virtio,net=tap,ifname=tkB{pid},addr=0x1f");
    let c = format!("model=virtio,net=tap,ifname=tkC{pid},vectors=0");
    let o = tk(
        &["--memory", "32M", "--nic", &a, "--nic", &b, "--nic", &c],
        "test=basic expect_cpus=1",
    );
    assert_pass(&o);
    assert!(
        o.stdout.contains("PCI 00:05.0 1af4:1041 class 020000"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("PCI 00:1f.0 1af4:1041 class 020000"),
        "{}",
        o.stdout
    );
    // The NIC without addr= takes the lowest free slot.
    assert!(
        o.stdout.contains("PCI 00:01.0 1af4:1041 class 020000"),
        "{}",
        o.stdout
    );
    // Taps tapir created are gone once it exits.
    for n in ["tkA", "tkB", "tkC"] {
        assert!(
            !std::path::Path::new(&format!("/sys/class/net/{n}{pid}")).exists(),
            "{n}{pid} left behind"
        );
    }
}

#[test]
fn e1000_appears_with_its_ids_and_bars() {
    if !common::can_make_taps() {
        tapir_test_support::skipped(
            "testkernel::e1000_appears_with_its_ids_and_bars",
            "needs root and /dev/net/tun",
        );
        return;
    }
    let pid = std::process::id() % 10000;
    let a = format!("model=e1000,net=tap,ifname=teA{pid},addr=3");
    let o = tk(
        &["--memory", "32M", "--nic", &a],
        "test=basic expect_cpus=1",
    );
    assert_pass(&o);
    assert!(
        o.stdout.contains("PCI 00:03.0 8086:100e class 020000"),
        "{}",
        o.stdout
    );
}

/// `tapir ctl` against a running VM: NIC listing, link down and up, bad
/// commands, quit; the socket file is gone afterwards.
#[test]
fn control_socket_lists_nics_sets_links_and_quits() {
    let kernel = tapir_testkernel::elf_path();
    let dir = std::env::temp_dir().join(format!("tapir-ctl-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctl.sock");
    let sock_s = sock.to_str().unwrap();
    let mut r = Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
        "--cmdline",
        "test=halt",
        "--control-socket",
        sock_s,
        "--nic",
        "model=virtio,net=user",
        "--nic",
        &format!(
            "model=e1000,net=user,id=lan,mac=52:54:00:00:00:42,pcap={}",
            dir.join("lan.pcap").display()
        ),
    ]);
    assert!(r.wait_for_output("HALTING", T), "{}", r.stdout_now());
    let ctl = |args: &[&str]| {
        let mut a = vec!["ctl", sock_s];
        a.extend_from_slice(args);
        common::run(&a, T)
    };
    let info = ctl(&["info"]);
    assert_eq!(info.code, 0, "{}", info.stderr);
    let lines: Vec<&str> = info.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", info.stdout);
    assert!(
        lines[0].starts_with("net0 model=virtio net=user "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("lan model=e1000 net=user mac=52:54:00:00:00:42 link=up "),
        "{}",
        lines[1]
    );
    // Capture: lan's counters (the guest sends nothing), none for net0.
    let pcap = format!(
        " pcap_file=\"{}\" pcap_records=0 pcap_bytes=0 pcap_rotations=0 pcap_unsegmented=0 \
         pcap_stopped=0",
        dir.join("lan.pcap").display()
    );
    assert!(lines[1].ends_with(&pcap), "{}", lines[1]);
    assert!(!lines[0].contains("pcap"), "{}", lines[0]);
    // The same, machine-readable: one JSON object; and one NIC's.
    let json = ctl(&["info", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let lan = &v["nics"][1];
    assert_eq!(
        (&lan["name"], &lan["model"], &lan["backend"], &lan["link"]),
        (&"lan".into(), &"e1000".into(), &"user".into(), &"up".into())
    );
    assert_eq!(lan["counters"]["tx_frames"], 0, "{lan}");
    assert_eq!(lan["drops"]["rx_dropped"], 0, "{lan}");
    assert_eq!(lan["pcap"]["records"], 0, "{lan}");
    assert!(v["nics"][0]["pcap"].is_null(), "{v}");
    // The guest printed on the serial port: port writes reached tapir.
    assert!(v["vcpu_exits"]["io_out"].as_u64().unwrap() > 0, "{v}");
    let stats = ctl(&["stats", "lan"]);
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let one: serde_json::Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(one["mac"], "52:54:00:00:00:42", "{one}");
    assert_eq!(one["interrupts"]["msi"], 0, "{one}");
    // A capture started and stopped at run time: tapir ctl opens the file
    // and passes it (the main thread's filter lets it receive it).
    let run_time = dir.join("net0.pcap");
    let start = ctl(&["pcap", "net0", "start", run_time.to_str().unwrap()]);
    assert_eq!(
        (start.code, start.stdout.as_str()),
        (0, ""),
        "{}",
        start.stderr
    );
    assert_eq!(
        std::fs::metadata(&run_time).unwrap().len(),
        24,
        "the header"
    );
    let info = ctl(&["info"]);
    let want = format!(" pcap_file=\"{}\" pcap_records=0 ", run_time.display());
    assert!(
        info.stdout.lines().next().unwrap().contains(&want),
        "{}",
        info.stdout
    );
    let stop = ctl(&["pcap", "net0", "stop"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let stop = ctl(&["pcap", "net0", "stop"]);
    assert_eq!(
        common::error_lines(&stop.stderr),
        vec!["tapir: pcap stop: NIC 'net0' has no capture running"]
    );
    // With a size limit: FILE.1 is made (a capture of no frames) beside
    // FILE, and the capture runs; a bad limit is one line.
    let rotating = dir.join("rot.pcap");
    let start = ctl(&["pcap", "net0", "start", rotating.to_str().unwrap(), "64K"]);
    assert_eq!(start.code, 0, "{}", start.stderr);
    for p in [rotating.clone(), dir.join("rot.pcap.1")] {
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 24, "{}", p.display());
    }
    assert_eq!(ctl(&["pcap", "net0", "stop"]).code, 0);
    let bad = ctl(&["pcap", "net0", "start", rotating.to_str().unwrap(), "1K"]);
    assert_eq!(
        common::error_lines(&bad.stderr),
        vec!["tapir: pcap start: MAX '1K' is not a size of at least 4096 bytes (e.g. 64K, 10M)"]
    );
    let off = ctl(&["set_link", "lan", "off"]);
    assert_eq!((off.code, off.stdout.as_str()), (0, ""), "{}", off.stderr);
    let info = ctl(&["info"]);
    assert!(info.stdout.lines().nth(1).unwrap().contains(" link=down "));
    assert!(info.stdout.lines().next().unwrap().contains(" link=up "));
    let bad = ctl(&["set_link", "wan", "off"]);
    assert_eq!(bad.code, 1);
    assert_eq!(
        common::error_lines(&bad.stderr),
        vec!["tapir: no NIC named 'wan' (NICs: net0, lan)"]
    );
    let bad = ctl(&["reboot", "now"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown command 'reboot'"),
        "{}",
        bad.stderr
    );
    let quit = ctl(&["quit"]);
    assert_eq!(quit.code, 0, "{}", quit.stderr);
    let o = r.finish(T);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("stopped by 'quit' on the control socket"),
        "{}",
        o.stderr
    );
    assert!(!sock.exists(), "socket removed at exit");
    let gone = ctl(&["info"]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("cannot connect"), "{}", gone.stderr);
}

/// Seccomp is on by default: every thread installs its kind's filter
/// (docs/seccomp.md) and the guest, with two vCPUs and two NICs, runs as
/// without them.
#[test]
fn every_thread_installs_its_seccomp_filter() {
    let kernel = tapir_testkernel::elf_path();
    let o = Running::start_cmd(
        std::process::Command::new(common::tapir_bin())
            .env("TAPIR_LOG", "debug")
            .args(["run", "--kernel", kernel.to_str().unwrap()])
            .args(["--cmdline", "test=basic expect_cpus=2", "--cpus", "2"])
            .args(["--memory", "64M", "--serial", "stdio"])
            .args([
                "--nic",
                "model=virtio,net=user",
                "--nic",
                "model=e1000,net=user",
            ]),
    )
    .finish(T);
    assert_pass(&o);
    for (thread, kind) in [
        ("main", "main"),
        ("vcpu0", "vcpu"),
        ("vcpu1", "vcpu"),
        ("net0-net", "nic-worker"),
        ("net1-net", "nic-worker"),
    ] {
        let line = format!("tapir: debug: thread '{thread}' installed the {kind} seccomp filter");
        assert_eq!(
            o.stderr.matches(&line).count(),
            1,
            "{line}\nstderr:\n{}",
            o.stderr
        );
    }
    assert!(!o.stderr.contains("seccomp is off"), "{}", o.stderr);
}

#[test]
fn seccomp_off_runs_without_filters_and_says_so() {
    let o = tk(
        &["--memory", "64M", "--seccomp=off"],
        "test=basic expect_cpus=1",
    );
    assert_pass(&o);
    assert!(
        o.stderr
            .contains("tapir: warning: seccomp is off (--seccomp=off)"),
        "{}",
        o.stderr
    );
}

/// Boots the 32-bit multiboot guest (`kernel`) with a module: the guest
/// checks the entry state, the information structure, the memory map, the
/// command line (the kernel's file name first) and module 0 against what
/// its command line says, like kvm-unit-tests reads its environment from
/// module 0.
fn multiboot(kernel: &std::path::Path, mem_mib: u32, expect_mem_mib: u32) -> Outcome {
    let dir = std::env::temp_dir().join(format!("tapir-mb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join(format!(
        "env-{}",
        kernel.file_name().unwrap().to_string_lossy()
    ));
    let contents = "NR_CPUS=1\nMEMSIZE=32\nTAPIR_MODULE_OK\n";
    std::fs::write(&module, contents).unwrap();
    let (kernel, module) = (kernel.to_str().unwrap(), module.to_str().unwrap());
    let cmdline = format!(
        "kernel={kernel} mem_mib={expect_mem_mib} module={module} module_len={}",
        contents.len()
    );
    let memory = format!("{mem_mib}M");
    run(
        &[
            "run",
            "--kernel",
            kernel,
            "--initrd",
            module,
            "--memory",
            &memory,
            "--cmdline",
            &cmdline,
        ],
        T,
    )
}

#[test]
fn boots_multiboot_elf() {
    let o = multiboot(&tapir_testkernel::multiboot_elf_path(), 32, 32);
    assert_pass(&o);
    assert!(o.stdout.contains("boot=multiboot"), "{}", o.stdout);
    assert!(!o.stdout.contains("MULTIBOOT: BAD"), "{}", o.stdout);
}

#[test]
fn boots_multiboot_aout_kludge() {
    let o = multiboot(&tapir_testkernel::multiboot_bin_path(), 64, 64);
    assert_pass(&o);
    assert!(o.stdout.contains("boot=multiboot"), "{}", o.stdout);
}

#[test]
fn a_broken_multiboot_promise_is_caught_by_the_guest() {
    let o = multiboot(&tapir_testkernel::multiboot_elf_path(), 32, 64);
    assert!(
        o.stdout.contains("MULTIBOOT: BAD mem_upper"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("TESTKERNEL: FAIL"), "{}", o.stdout);
}

// ---- what tiny test kernels need (docs/test-kernels.md) ----------------

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tapir-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn fw_cfg_reports_signature_memory_and_cpus() {
    let o = tk(
        &["--cpus", "2", "--memory", "64M"],
        "test=fw-cfg expect_cpus=2 expect_mem_mib=64",
    );
    assert_pass(&o);
    assert!(
        o.stdout
            .contains("FW_CFG: signature=QEMU id=0x1 ram_size=0x4000000 nb_cpus=2 max_cpus=2"),
        "{}",
        o.stdout
    );
}

#[test]
fn debug_exit_ends_tapir_with_the_guests_status() {
    // Default ports (0xf4, 4 wide), a 4-byte write: (0x10 << 1) | 1.
    let o = tk(
        &["--memory", "32M", "--device", "isa-debug-exit"],
        "test=debug-exit debug_exit_value=0x10",
    );
    assert_eq!(o.code, 33, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("tapir: guest wrote 0x10 to isa-debug-exit (exit status 33)"),
        "{}",
        o.stderr
    );
    // QEMU's own default ports, a byte write at the range's second port.
    let o = tk(
        &[
            "--memory",
            "32M",
            "--device",
            "isa-debug-exit,iobase=0x501,iosize=2",
        ],
        "test=debug-exit debug_exit_value=2 debug_exit_port=0x502 debug_exit_width=1",
    );
    assert_eq!(o.code, 5, "stderr:\n{}", o.stderr);
    // A 2-byte write; only the status's low 8 bits survive.
    let o = tk(
        &["--memory", "32M", "--device", "isa-debug-exit,iobase=244"],
        "test=debug-exit debug_exit_value=0x17f debug_exit_width=2",
    );
    assert_eq!(o.code, 255, "stderr:\n{}", o.stderr);
    // Without the device the port is unclaimed: the guest goes on and
    // reports that nothing happened.
    let o = tk(
        &["--memory", "32M"],
        "test=debug-exit debug_exit_value=0x10",
    );
    assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    assert!(
        o.stdout
            .contains("TESTKERNEL: FAIL debug-exit write did not stop the VM"),
        "{}",
        o.stdout
    );
}

#[test]
fn timeout_stops_an_idle_guest_and_cleans_up() {
    let sock = scratch_dir("timeout").join("ctl.sock");
    let o = tk(
        &[
            "--memory",
            "32M",
            "--timeout",
            "2s",
            "--control-socket",
            sock.to_str().unwrap(),
        ],
        "test=halt",
    );
    assert_eq!(o.code, 124, "stderr:\n{}", o.stderr);
    assert!(o.stdout.contains("HALTING"), "{}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| l.contains("timeout")).collect();
    assert_eq!(
        lines,
        ["tapir: guest stopped after --timeout 2s"],
        "{}",
        o.stderr
    );
    assert!(
        o.elapsed >= Duration::from_secs(2) && o.elapsed < Duration::from_secs(30),
        "took {:?}",
        o.elapsed
    );
    assert!(!sock.exists(), "control socket removed as on a normal stop");
    // A guest that ends first is not affected.
    let o = tk(&["--memory", "32M", "--timeout", "1m"], "test=basic");
    assert_pass(&o);
}

#[test]
fn serial_logfile_gets_exactly_what_stdout_got() {
    let log = scratch_dir("serial-log").join("console.log");
    let spec = format!("stdio,logfile={}", log.display());
    let o = tk(&["--memory", "32M", "--serial", &spec], "test=fw-cfg");
    assert_pass(&o);
    assert!(o.stdout.contains("FW_CFG: signature=QEMU"), "{}", o.stdout);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, o.stdout);
    let _ = std::fs::remove_file(&log);
}

/// `--device pc-testdev`: string instructions on its scratch port (KVM
/// gives several accesses in one exit; tapir must split them) and its
/// scratch memory; without the device the guest sees nothing there.
#[test]
fn pc_testdev_string_io_and_scratch_memory() {
    let o = tk(
        &["--memory", "32M", "--device", "pc-testdev"],
        "test=pc-testdev",
    );
    assert_pass(&o);
    assert!(
        o.stdout
            .contains("PC_TESTDEV: string-io last=0x68 word=0x4444 ioram=0xdeadbeef"),
        "{}",
        o.stdout
    );
    let o = tk(&["--memory", "32M"], "test=pc-testdev");
    assert!(o.stdout.contains("TESTKERNEL: FAIL"), "{}", o.stdout);
}
