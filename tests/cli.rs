//! Bad input on the command line: each mistake a user will make gets one
//! clear error line and exit status 1, and nothing hangs.

mod common;

use std::time::Duration;

use common::{error_lines, run, tapir_bin, Outcome};

const T: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tapir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn assert_user_error(o: &Outcome, needle: &str) {
    assert_eq!(
        o.code, 1,
        "exit status for {needle:?}\nstderr:\n{}",
        o.stderr
    );
    let lines = error_lines(&o.stderr);
    assert_eq!(
        lines.len(),
        1,
        "want exactly one error line, got:\n{}",
        o.stderr
    );
    assert!(lines[0].starts_with("tapir: "), "{}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{:?} not in {:?}",
        needle,
        lines[0]
    );
}

fn kernel() -> String {
    tapir_testkernel::elf_path().to_str().unwrap().to_string()
}

#[test]
fn missing_kernel_file() {
    let o = run(&["run", "--kernel", "/nonexistent/vmlinuz"], T);
    assert_user_error(
        &o,
        "cannot open kernel '/nonexistent/vmlinuz': No such file or directory",
    );
}

#[test]
fn missing_initrd_file() {
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--initrd",
            "/nonexistent/initrd",
        ],
        T,
    );
    assert_user_error(&o, "cannot open initrd '/nonexistent/initrd'");
}

#[test]
fn kernel_flag_is_required() {
    let o = run(&["run", "--memory", "64M"], T);
    assert_user_error(&o, "--kernel");
}

#[test]
fn a_file_that_is_not_a_kernel() {
    let p = scratch("not-a-kernel");
    std::fs::write(&p, vec![0x5au8; 64 * 1024]).unwrap();
    let o = run(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(&o, "not a kernel image");
    // An empty file too.
    std::fs::write(&p, b"").unwrap();
    let o = run(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(&o, "not a kernel image");
}

#[test]
fn a_bad_multiboot_image_is_one_clear_error() {
    let header = |flags: u32, checksum: u32| {
        let mut img = vec![0u8; 0x100];
        for v in [0x1bad_b002u32, flags, checksum] {
            img.extend_from_slice(&v.to_le_bytes());
        }
        img.extend_from_slice(&[0u8; 0x100]);
        img
    };
    let p = scratch("bad-multiboot");
    std::fs::write(&p, header(0, 0)).unwrap();
    let o = run(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(
        &o,
        "multiboot header at file offset 0x100 has a bad checksum",
    );
    // Bit 3 is a requirement tapir does not know.
    std::fs::write(&p, header(8, 0u32.wrapping_sub(0x1bad_b00a))).unwrap();
    let o = run(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(&o, "requires features tapir does not provide");
    // A valid header, but neither ELF nor address fields.
    std::fs::write(&p, header(2, 0u32.wrapping_sub(0x1bad_b004))).unwrap();
    let o = run(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(&o, "no load addresses");
}

#[test]
fn a_directory_is_not_a_kernel() {
    let o = run(&["run", "--kernel", "/"], T);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(error_lines(&o.stderr).len(), 1, "{}", o.stderr);
}

#[test]
fn too_little_memory() {
    let o = run(&["run", "--kernel", &kernel(), "--memory", "1M"], T);
    assert_user_error(&o, "--memory 1 MiB is too small");
}

#[test]
fn unparseable_memory() {
    let o = run(&["run", "--kernel", &kernel(), "--memory", "lots"], T);
    assert_user_error(&o, "invalid size 'lots'");
}

#[test]
fn zero_cpus() {
    let o = run(&["run", "--kernel", &kernel(), "--cpus", "0"], T);
    assert_user_error(&o, "--cpus");
}

#[test]
fn too_many_cpus() {
    let o = run(&["run", "--kernel", &kernel(), "--cpus", "300"], T);
    assert_user_error(&o, "--cpus");
}

#[test]
fn bad_serial() {
    let o = run(&["run", "--kernel", &kernel(), "--serial", "tcp:1234"], T);
    assert_user_error(&o, "invalid --serial 'tcp:1234'");
}

#[test]
fn bad_seccomp() {
    let o = run(&["run", "--kernel", &kernel(), "--seccomp", "maybe"], T);
    assert_user_error(&o, "invalid --seccomp 'maybe': expected on or off");
}

#[test]
fn initrd_larger_than_memory() {
    let p = scratch("big-initrd");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(40 << 20).unwrap();
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--initrd",
            p.to_str().unwrap(),
            "--memory",
            "32M",
        ],
        T,
    );
    assert_user_error(&o, "does not fit");
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(70_000);
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--cmdline",
            &long,
        ],
        T,
    );
    assert_user_error(&o, "command line");
}

#[test]
fn no_kvm_device() {
    let o = common::Running::start_cmd(
        std::process::Command::new(tapir_bin())
            .env("TAPIR_KVM_PATH", "/nonexistent/kvm")
            .args(["run", "--kernel", &kernel(), "--memory", "32M"]),
    )
    .finish(T);
    assert_user_error(&o, "does not exist: KVM is not available");
}

#[test]
fn no_permission_on_kvm() {
    // Run as 'nobody' against /dev/kvm (mode 0600 root) when we can switch user.
    let meta = std::fs::metadata("/dev/kvm");
    if let (true, Ok(meta)) = (common::can_run_as_nobody(), meta) {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o006,
            0,
            "/dev/kvm is world-accessible here; this test needs 0600/0660"
        );
        let k = common::copy_for_nobody(&tapir_testkernel::elf_path(), 0o644);
        let o = common::run_as_nobody(
            &["run", "--kernel", k.to_str().unwrap(), "--memory", "32M"],
            T,
        );
        assert_user_error(&o, "no permission to open /dev/kvm");
    } else {
        // Not root: we are the unprivileged user; check the same path if we lack access.
        let o = run(
            &[
                "run",
                "--kernel",
                &kernel(),
                "--memory",
                "32M",
                "--serial",
                "none",
            ],
            T,
        );
        if o.code == 1 {
            assert_user_error(&o, "no permission to open /dev/kvm");
        } else {
            assert_eq!(o.code, 0, "{}", o.stderr);
        }
    }
}

/// Bad `net=user` options are one error line naming the NIC, before the
/// guest runs; a forward whose host port is taken is refused the same way.
#[test]
fn user_net_options_are_validated() {
    for (spec, needle) in [
        ("net=user,subnet=10.0.2.0/33", "net=user"),
        ("net=user,subnet=banana", "net=user"),
        ("net=user,gateway=192.168.1.1", "192.168.1.1"),
        ("net=user,dhcpstart=10.0.2.2", "10.0.2.2"),
        ("net=user,restrict=maybe", "maybe"),
        ("net=user,loopback=2", "loopback"),
        ("net=user,hostfwd=tcp::0-:80", "hostfwd"),
        ("net=user,hostfwd=sctp::8080-:80", "hostfwd"),
        ("net=user,hostfwd=tcp::8080", "hostfwd"),
    ] {
        let o = run(&["run", "--kernel", &kernel(), "--nic", spec], T);
        assert_user_error(&o, "--nic net0: net=user:");
        assert_user_error(&o, needle);
    }
    // A host port that is already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = format!("net=user,hostfwd=tcp:127.0.0.1:{port}-:80");
    let o = run(&["run", "--kernel", &kernel(), "--nic", &spec], T);
    assert_user_error(&o, &format!("{port}"));
}

/// net=user needs no privileges: the tiny test kernel boots as 'nobody',
/// with /dev/kvm's group and no capabilities, with a virtio NIC on
/// user-mode NAT and a port forward.
#[test]
fn user_net_runs_unprivileged() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata("/dev/kvm") else {
        tapir_test_support::skipped("cli::user_net_runs_unprivileged", "no /dev/kvm");
        return;
    };
    if !common::can_run_as_nobody() || meta.permissions().mode() & 0o060 != 0o060 {
        tapir_test_support::skipped(
            "cli::user_net_runs_unprivileged",
            "needs root, setpriv and a /dev/kvm its group can read and write",
        );
        return;
    }
    let k = scratch("user-net-kernel");
    std::fs::copy(tapir_testkernel::elf_path(), &k).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(k.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let spec = format!("model=virtio,net=user,hostfwd=tcp::{port}-:80");
    let o = common::run_as_nobody_in_group(
        meta.gid(),
        &[
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--cmdline",
            "test=basic",
            "--nic",
            &spec,
        ],
        T,
    );
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
}

/// Direct attach without CAP_NET_ADMIN (root with the capability dropped
/// from its bounding set, by setpriv): one line that names the capability,
/// and no macvtap made.
#[test]
fn passthrough_without_cap_net_admin_is_one_line() {
    use tapir_test_support::net::{privileged, unique, veth_pair};
    const TEST: &str = "cli::passthrough_without_cap_net_admin_is_one_line";
    if !privileged(TEST) {
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        tapir_test_support::skipped(TEST, "setpriv (util-linux) not found");
        return;
    }
    let (parent, peer) = (unique("cap", "a"), unique("cap", "b"));
    let _guard = veth_pair(&parent, &peer, 1500);
    let nic = format!("model=virtio,net=passthrough,host={parent}");
    let o = common::Running::start_cmd(
        std::process::Command::new("setpriv")
            .args([
                "--bounding-set",
                "-net_admin",
                "--inh-caps",
                "-net_admin",
                "--",
            ])
            .arg(tapir_bin())
            .args([
                "run",
                "--kernel",
                &kernel(),
                "--memory",
                "64M",
                "--nic",
                &nic,
            ]),
    )
    .finish(T);
    assert_user_error(&o, "needs CAP_NET_ADMIN");
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "macvtap"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("@{parent}")), "{links}");
}

#[test]
fn nic_is_validated_with_one_line_errors() {
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--nic",
            "model=virtio,net=passthrough,host=eth9,mode=loud",
        ],
        T,
    );
    assert_user_error(&o, "expected bridge, vepa, private or passthru");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--nic",
            "model=virtio,net=passthrough,host=nosuchnic9",
        ],
        T,
    );
    assert_user_error(&o, "host NIC 'nosuchnic9' does not exist");
    let o = run(&["run", "--kernel", &kernel(), "--nic", "model=ne2k"], T);
    assert_user_error(&o, "invalid model 'ne2k'");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--nic",
            "mac=01:02:03:04:05:06",
        ],
        T,
    );
    assert_user_error(&o, "multicast");
    let o = run(&["run", "--kernel", &kernel(), "--nic", "net=bridge"], T);
    assert_user_error(&o, "net=bridge needs br=");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--nic",
            "net=tap,ifname=x,vlan=5000",
        ],
        T,
    );
    assert_user_error(&o, "VLAN id must be 1..4094");
}

#[test]
fn pcap_errors_are_one_line() {
    let o = run(&["run", "--kernel", &kernel(), "--nic", "pcap_max=1M"], T);
    assert_user_error(&o, "pcap_max= needs pcap=");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--nic",
            "pcap=x.pcap,pcap_max=10",
        ],
        T,
    );
    assert_user_error(&o, "invalid pcap_max '10': at least 4K");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--nic",
            "id=cap0,pcap=/nonexistent-tapir-dir/x.pcap",
        ],
        T,
    );
    assert_user_error(
        &o,
        "--nic cap0: cannot create pcap file '/nonexistent-tapir-dir/x.pcap': No such file or \
         directory",
    );
}

#[test]
fn missing_bridge_is_one_clear_line() {
    if !common::can_make_taps() {
        tapir_test_support::skipped(
            "cli::missing_bridge_is_one_clear_line",
            "needs root and /dev/net/tun",
        );
        return;
    }
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--nic",
            "net=bridge,br=nosuchbr0",
        ],
        T,
    );
    assert_user_error(&o, "bridge 'nosuchbr0' does not exist");
}

#[test]
fn pci_slot_conflicts_are_errors() {
    if !common::can_make_taps() {
        tapir_test_support::skipped(
            "cli::pci_slot_conflicts_are_errors",
            "needs root and /dev/net/tun",
        );
        return;
    }
    let pid = std::process::id() % 10000;
    let a = format!("net=tap,ifname=tcA{pid},addr=5");
    let b = format!("net=tap,ifname=tcB{pid},addr=5");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--nic",
            &a,
            "--nic",
            &b,
        ],
        T,
    );
    assert_user_error(&o, "slot");
    // The taps tapir created for the failed run are gone.
    assert!(!std::path::Path::new(&format!("/sys/class/net/tcA{pid}")).exists());
}

#[test]
fn nic_help_lists_models_and_backends() {
    for spec in ["help", "model=help"] {
        let o = run(&["run", "--nic", spec], T);
        assert_eq!(o.code, 0, "{}", o.stderr);
        for needle in [
            "virtio",
            "1af4:1041",
            "e1000",
            "8086:100e",
            "rtl8139",
            "10ec:8139",
            "8139cp",
            "8139too",
            "user",
            "tap",
            "bridge",
            "passthrough",
            "pcap=FILE",
            "pcap_max=SIZE",
        ] {
            assert!(
                o.stdout.contains(needle),
                "{needle} missing from:\n{}",
                o.stdout
            );
        }
        assert!(
            !o.stdout.contains("not built yet"),
            "everything listed is built:\n{}",
            o.stdout
        );
    }
}

fn on_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn linux_bzimage_on_pvm_is_refused_with_the_way_out() {
    let Some(bz) =
        tapir_test_support::host_bzimage("cli::linux_bzimage_on_pvm_is_refused_with_the_way_out")
    else {
        return;
    };
    let o = run(
        &[
            "run",
            "--kernel",
            bz.to_str().unwrap(),
            "--memory",
            "256M",
            "--serial",
            "none",
        ],
        T,
    );
    if on_pvm() {
        assert_user_error(&o, "refusing to boot a Linux bzImage: /dev/kvm here is PVM");
        assert!(
            o.stderr.contains("tapir-nested") && o.stderr.contains("--allow-emulation"),
            "{}",
            o.stderr
        );
    }
}

#[test]
fn pvm_is_announced() {
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--serial",
            "none",
        ],
        T,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stderr.contains("tapir: note: /dev/kvm is PVM"),
        on_pvm(),
        "{}",
        o.stderr
    );
}

#[test]
fn unreadable_kernel_file() {
    // Root reads anything: check it as 'nobody' when we can switch user.
    if !common::can_run_as_nobody() {
        tapir_test_support::skipped(
            "cli::unreadable_kernel_file",
            "not root or no setpriv: unreadable-file case not checked",
        );
        return;
    }
    let p = scratch("unreadable-kernel");
    std::fs::copy(tapir_testkernel::elf_path(), &p).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = common::run_as_nobody(&["run", "--kernel", p.to_str().unwrap()], T);
    assert_user_error(&o, "cannot open kernel");
    assert!(o.stderr.contains("Permission denied"), "{}", o.stderr);
}

#[test]
fn creating_a_tap_without_cap_net_admin_is_one_clear_line() {
    // Stay root (so /dev/kvm opens) but drop CAP_NET_ADMIN from the
    // bounding set, so the exec'd tapir does not have it.
    if !common::can_make_taps() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        tapir_test_support::skipped(
            "cli::creating_a_tap_without_cap_net_admin_is_one_clear_line",
            "needs root, /dev/net/tun and setpriv",
        );
        return;
    }
    let o = common::Running::start_cmd(std::process::Command::new("/usr/bin/setpriv").args([
        "--bounding-set=-net_admin",
        common::tapir_bin().to_str().unwrap(),
        "run",
        "--kernel",
        &kernel(),
        "--memory",
        "32M",
        "--nic",
        "net=tap,ifname=tcapX0",
    ]))
    .finish(T);
    assert_user_error(&o, "creating a tap needs CAP_NET_ADMIN");
}

#[test]
fn two_nics_with_one_name_are_refused() {
    // The second NIC's default name is net1.
    for (a, b) in [
        (
            "model=virtio,net=user,id=lan",
            "model=e1000,net=user,id=lan",
        ),
        ("model=virtio,net=user,id=net1", "model=e1000,net=user"),
    ] {
        let o = run(
            &[
                "run",
                "--kernel",
                &kernel(),
                "--memory",
                "32M",
                "--nic",
                a,
                "--nic",
                b,
            ],
            T,
        );
        assert_user_error(&o, "two NICs are named");
    }
}

#[test]
fn control_socket_path_problems_are_one_line() {
    let dir = scratch("ctl");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--control-socket",
            file.to_str().unwrap(),
        ],
        T,
    );
    assert_user_error(&o, "exists and is not a socket");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "left alone");
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--control-socket",
            "/nonexistent-dir/ctl.sock",
        ],
        T,
    );
    assert_user_error(&o, "--control-socket /nonexistent-dir/ctl.sock");
    let o = run(&["ctl", dir.join("none.sock").to_str().unwrap(), "info"], T);
    assert_user_error(&o, "cannot connect to control socket");
    let o = run(&["ctl", dir.join("none.sock").to_str().unwrap()], T);
    assert_eq!(o.code, 1, "a command is required: {}", o.stderr);
}

/// Two NICs with one MAC address: the VM runs, with a warning naming both.
#[test]
fn two_nics_with_one_mac_get_a_warning() {
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--cmdline",
            "test=basic",
            "--serial",
            "none",
            "--nic",
            "model=virtio,net=user,mac=52:54:00:aa:bb:cc",
            "--nic",
            "model=e1000,net=user,mac=52:54:00:aa:bb:cc",
        ],
        T,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("tapir: warning: net1 and net0 have the same MAC address 52:54:00:aa:bb:cc"),
        "{}",
        o.stderr
    );
}

/// Every error in the configuration is said before a Linux bzImage is
/// refused on PVM (and on other hosts, it is said at all).
#[test]
fn configuration_errors_come_before_the_pvm_refusal() {
    let Some(bz) =
        tapir_test_support::host_bzimage("cli::configuration_errors_come_before_the_pvm_refusal")
    else {
        return;
    };
    let bz = bz.to_str().unwrap();
    for (flags, needle) in [
        (
            ["--memory", "1T"],
            "--memory 1048576 MiB is more than this host's RAM",
        ),
        (
            ["--control-socket", "/missing/dir/s"],
            "--control-socket /missing/dir/s: No such file or directory",
        ),
    ] {
        let mut args = vec!["run", "--kernel", bz, "--serial", "none"];
        args.extend(flags);
        let o = run(&args, T);
        assert_user_error(&o, needle);
    }
}

#[test]
fn device_is_validated_with_one_line_errors() {
    let o = run(&["run", "--device", "help"], T);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("vfio-pci"), "{}", o.stdout);
    assert!(o.stdout.contains("host=DDDD:BB:DD.F"), "{}", o.stdout);
    let k = kernel();
    for (spec, needle) in [
        ("vfio-pci,host=0000:01:00", "invalid host '0000:01:00'"),
        ("vfio-pci", "vfio-pci needs host="),
        ("vfio-pci,host=01:00.0,rombar=0", "unknown key 'rombar'"),
        ("vfio-pci,host=01:00.0,addr=0", "invalid addr '0'"),
        ("nvme,host=01:00.0", "unknown device kind 'nvme'"),
        (
            "vfio-pci,host=ffff:ff:1f.7",
            "no such PCI device (/sys/bus/pci/devices/ffff:ff:1f.7 does not exist",
        ),
    ] {
        let o = run(&["run", "--kernel", &k, "--device", spec], T);
        assert_user_error(&o, needle);
    }
    let o = run(
        &[
            "run",
            "--kernel",
            &k,
            "--device",
            "vfio-pci,host=01:00.0",
            "--device",
            "vfio-pci,host=0000:01:00.0",
        ],
        T,
    );
    assert_user_error(&o, "host 0000:01:00.0 is assigned twice");
}

#[test]
fn test_kernel_flags_are_validated_with_one_line_errors() {
    let k = kernel();
    for (flag, value, needle) in [
        (
            "--device",
            "isa-debug-exit,iosize=0",
            "invalid iosize '0': at least 1 port",
        ),
        (
            "--device",
            "isa-debug-exit,iobase=0x1ffff",
            "invalid iobase '0x1ffff'",
        ),
        (
            "--device",
            "isa-debug-exit,iobase=0xfffe,iosize=4",
            "the ports would run past 0xffff",
        ),
        ("--device", "isa-debug-exit,port=1", "unknown key 'port'"),
        ("--device", "pc-testdev,irq=1", "unknown key 'irq'"),
        (
            "--timeout",
            "0",
            "invalid duration '0': must be more than 0",
        ),
        ("--timeout", "10x", "invalid duration '10x'"),
        ("--timeout", "1.5s", "invalid duration '1.5s'"),
        (
            "--serial",
            "stdio,logfile=",
            "invalid --serial 'stdio,logfile='",
        ),
        (
            "--serial",
            "stdio,logfile=/nonexistent/dir/log",
            "cannot open serial log file '/nonexistent/dir/log'",
        ),
    ] {
        let o = run(&["run", "--kernel", &k, flag, value], T);
        assert_user_error(&o, needle);
    }
    let o = run(
        &[
            "run",
            "--kernel",
            &k,
            "--device",
            "isa-debug-exit",
            "--device",
            "isa-debug-exit,iobase=0x501",
        ],
        T,
    );
    assert_user_error(&o, "only one isa-debug-exit is allowed");
    let o = run(
        &[
            "run",
            "--kernel",
            &k,
            "--device",
            "pc-testdev",
            "--device",
            "pc-testdev",
        ],
        T,
    );
    assert_user_error(&o, "only one pc-testdev is allowed");
    // pc-testdev's ports and isa-debug-exit's must not overlap.
    let o = run(
        &[
            "run",
            "--kernel",
            &k,
            "--device",
            "pc-testdev",
            "--device",
            "isa-debug-exit,iobase=0xe2,iosize=2",
        ],
        T,
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(common::error_lines(&o.stderr).len(), 1, "{}", o.stderr);
    let o = run(&["run", "--device", "help"], T);
    assert!(o.stdout.contains("isa-debug-exit"), "{}", o.stdout);
    assert!(o.stdout.contains("pc-testdev"), "{}", o.stdout);
}

#[test]
fn debug_exit_overlapping_the_machines_ports_is_one_line() {
    if !std::path::Path::new("/dev/kvm").exists() {
        tapir_test_support::skipped(
            "cli::debug_exit_overlapping_the_machines_ports_is_one_line",
            "no /dev/kvm",
        );
        return;
    }
    let k = kernel();
    for (spec, needle) in [
        (
            "isa-debug-exit,iobase=0x3fa",
            "--device isa-debug-exit: ports 0x3fa-0x3fd overlap COM1 (ports 0x3f8-0x3ff)",
        ),
        (
            "isa-debug-exit,iobase=0x50f,iosize=2",
            "ports 0x50f-0x510 overlap fw_cfg (ports 0x510-0x511)",
        ),
        (
            "isa-debug-exit,iobase=0xcfc,iosize=1",
            "overlap PCI configuration (ports 0xcf8-0xcff)",
        ),
        (
            "isa-debug-exit,iobase=0xd000",
            "overlap the PCI I/O window (ports 0xc000-0xffff)",
        ),
    ] {
        let o = run(
            &["run", "--kernel", &k, "--memory", "32M", "--device", spec],
            T,
        );
        assert_user_error(&o, needle);
    }
}

#[test]
fn bench_bad_flags_are_one_line() {
    let o = run(&["bench", "--models", "virtio,ne2k"], T);
    assert_user_error(
        &o,
        "--models: unknown value 'ne2k' (valid: virtio, e1000, rtl8139)",
    );
    let o = run(&["bench", "--reps", "0"], T);
    assert_user_error(&o, "--reps");
    let o = run(&["bench", "--against", "firecracker"], T);
    assert_user_error(&o, "see tapir bench --help");
    let o = run(&["bench", "--against", "qemu,firecracker"], T);
    assert_user_error(&o, "see tapir bench --help");
    // vhost-net serves virtio over a tap or a macvtap only.
    let o = run(
        &[
            "bench",
            "--against",
            "qemu-vhost",
            "--models",
            "e1000",
            "--net",
            "tap",
        ],
        T,
    );
    assert_user_error(&o, "--against qemu-vhost: vhost-net is for --models virtio");
    let o = run(
        &["bench", "--baseline", "/nonexistent/tapir", "--net", "tap"],
        T,
    );
    assert_user_error(&o, "--baseline /nonexistent/tapir: not an executable file");
}

/// Bad `--disk` values and images: one line each, before KVM is touched.
#[test]
fn disk_is_validated_with_one_line_errors() {
    let o = run(&["run", "--disk", "help"], T);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("PATH[,ro][,id=NAME]"), "{}", o.stdout);
    let k = kernel();
    let odd = scratch("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let good = scratch("good.img");
    std::fs::write(&good, vec![0u8; 4096]).unwrap();
    let dir = scratch("a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let (odd, good, dir) = (
        odd.to_str().unwrap().to_string(),
        good.to_str().unwrap().to_string(),
        dir.to_str().unwrap().to_string(),
    );
    for (spec, needle) in [
        (
            "/nonexistent-tapir-dir/root.img".to_string(),
            "--disk disk0: cannot open '/nonexistent-tapir-dir/root.img': No such file or directory",
        ),
        (dir.clone(), "is a directory, not a disk image"),
        (odd.clone(), "is 1000 bytes, not a multiple of 512"),
        (format!("{good},rw"), "--disk: unknown option 'rw'"),
        (format!("{good},id=a/b"), "--disk: invalid id 'a/b'"),
        (",ro".to_string(), "--disk: no image path"),
    ] {
        let o = run(&["run", "--kernel", &k, "--disk", &spec], T);
        assert_user_error(&o, needle);
    }
    let o = run(
        &[
            "run",
            "--kernel",
            &k,
            "--disk",
            &good,
            "--disk",
            &good,
            "--disk",
            &format!("{good},id=disk1"),
        ],
        T,
    );
    assert_user_error(&o, "two disks are named 'disk1'");
}

/// A file tapir may only read, given without `ro`: one line that says
/// what to add. Root may write anything: checked as 'nobody'.
#[test]
fn a_read_only_image_needs_ro() {
    let img = if common::can_run_as_nobody() {
        common::copy_for_nobody(&tapir_testkernel::elf_path(), 0o444)
    } else {
        use std::os::unix::fs::PermissionsExt;
        let p = scratch("ro.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        if std::fs::OpenOptions::new().write(true).open(&p).is_ok() {
            tapir_test_support::skipped(
                "cli::a_read_only_image_needs_ro",
                "this user may write a mode 0444 file and cannot switch to 'nobody'",
            );
            return;
        }
        p
    };
    let k = kernel();
    let args = ["run", "--kernel", &k, "--disk", img.to_str().unwrap()];
    let o = if common::can_run_as_nobody() {
        common::run_as_nobody(&args, T)
    } else {
        run(&args, T)
    };
    assert_user_error(&o, "is read-only for tapir: add ,ro");
}

/// Disks on a running VM (the test kernel does not drive them): the
/// devices, their threads and their seccomp filters start, and the VM ends
/// normally.
#[test]
fn a_vm_with_disks_runs() {
    let a = scratch("run-a.img");
    std::fs::write(&a, vec![0u8; 1 << 20]).unwrap();
    let b = scratch("run-b.img");
    std::fs::write(&b, vec![0u8; 4096]).unwrap();
    let o = run(
        &[
            "run",
            "--kernel",
            &kernel(),
            "--memory",
            "32M",
            "--cmdline",
            "test=basic",
            "--serial",
            "none",
            "--disk",
            a.to_str().unwrap(),
            "--disk",
            &format!("{},ro,id=second", b.to_str().unwrap()),
        ],
        T,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
}
