//! The hostile guest: the test kernel's `test=hostile`
//! (`resources/testkernel/README.md`, "The hostile-guest test") sets up one
//! NIC with its driver, then attacks it in one of the ways that broke
//! QEMU's NIC models before. Each test is named after the class of CVE it
//! covers (`docs/hostile-guest.md` maps them).
//!
//! Every run checks, besides what the guest checks of the hostile NIC
//! (what the datasheet or the virtio spec says the device does):
//! - tapir answers its control socket before, throughout and after the
//!   attack (polled without pause while it runs);
//! - tapir's resident memory after the attack is within [`RSS_SLACK`] of
//!   before it;
//! - the other NIC then still moves frames (the guest's `test=nic` over
//!   `net=user,loopback=on` to a UDP echo server here), and the VM ends
//!   with the guest's poweroff.
//!
//! Both NICs use `net=user`: no privileges needed. The runs go one at a
//! time (the guest gives up after 10 s without progress, which a 2-core
//! host should not be made to risk).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Guest RAM in MiB (the kernel's HOSTILE_ABOVE_RAM lies above it).
const GUEST_MEMORY: &str = "64M";
/// How much tapir's resident set may grow across an attack.
const RSS_SLACK_KIB: u64 = 4096;
/// The longest an attack may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// PCI slots of the hostile NIC and the other one.
const HOSTILE_SLOT: u8 = 4;
const OTHER_SLOT: u8 = 5;
/// Datagrams the other NIC exchanges afterwards.
const OTHER_FRAMES: u32 = 16;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The guest's model name and tapir's `--nic model=`.
#[derive(Clone, Copy, Debug)]
enum Model {
    Virtio,
    E1000,
    Rtl8139,
    Rtl8139Cp,
}

impl Model {
    fn guest(self) -> &'static str {
        match self {
            Model::Virtio => "virtio",
            Model::E1000 => "e1000",
            Model::Rtl8139 => "rtl8139",
            Model::Rtl8139Cp => "rtl8139cp",
        }
    }

    fn nic(self) -> &'static str {
        match self {
            Model::Virtio => "virtio",
            Model::E1000 => "e1000",
            Model::Rtl8139 | Model::Rtl8139Cp => "rtl8139",
        }
    }

    /// The NIC that must keep working: another chip.
    fn other(self) -> Model {
        match self {
            Model::Virtio => Model::E1000,
            _ => Model::Virtio,
        }
    }
}

/// What one attack left behind.
struct Attack {
    /// What tapir printed on stderr.
    stderr: String,
    /// The hostile NIC's counters after the attack (`info`).
    hostile_info: String,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// One control-socket command; the reply, or why there was none.
fn control(path: &Path, command: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    writeln!(s, "{command}").map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    for line in BufReader::new(s).lines() {
        let l = line.map_err(|e| format!("read after '{reply}': {e}"))?;
        if l == "ok" {
            return Ok(reply);
        }
        if l.starts_with("error:") {
            return Err(l);
        }
        reply.push_str(&l);
        reply.push('\n');
    }
    Err(format!("no status line after '{reply}'"))
}

/// Polls `info` until `stop`: (replies, slowest), or the first failure.
fn poll_control(path: PathBuf, stop: Arc<AtomicBool>) -> Result<(u64, Duration), String> {
    let (mut n, mut slowest) = (0u64, Duration::ZERO);
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        control(&path, "info").map_err(|e| format!("after {n} replies: {e}"))?;
        slowest = slowest.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((n, slowest))
}

fn udp_echo(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// Runs `case` against `model` and checks everything but the case's own
/// expectations of tapir's counters, which the caller checks.
fn attack(model: Model, case: &str) -> Attack {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let other = model.other();
    let dir = std::env::temp_dir().join(format!("tapir-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join(format!("{}-{case}.sock", model.guest()));
    let _ = std::fs::remove_file(&sock_path);

    let echo_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo_sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = echo_sock.local_addr().unwrap().port();
    let stop_echo = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop_echo.clone();
        std::thread::spawn(move || udp_echo(echo_sock, stop))
    };

    let cmdline = format!(
        "test=hostile case={case} model={} hslot={HOSTILE_SLOT} other={} oslot={OTHER_SLOT} \
         mode=udp port={port} frames={OTHER_FRAMES} seed=7",
        model.guest(),
        other.guest()
    );
    let kernel = tapir_testkernel::elf_path();
    let hostile_nic = format!(
        "model={},net=user,addr={HOSTILE_SLOT:x},id=hostile",
        model.nic()
    );
    let other_nic = format!(
        "model={},net=user,loopback=on,addr={OTHER_SLOT:x},id=other",
        other.nic()
    );
    let mut vm = common::Running::start(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        GUEST_MEMORY,
        "--cmdline",
        &cmdline,
        "--nic",
        &hostile_nic,
        "--nic",
        &other_nic,
        "--control-socket",
        sock_path.to_str().unwrap(),
    ]);
    let pid = vm.child.id();
    let context =
        |vm: &common::Running| format!("cmdline: {cmdline}\nserial:\n{}", vm.stdout_now());

    assert!(
        vm.wait_for_output("HOSTILE: begin", Duration::from_secs(60)),
        "the guest did not reach the attack\n{}",
        context(&vm)
    );
    control(&sock_path, "info").unwrap_or_else(|e| panic!("control socket before: {e}"));
    let rss_before_kib = rss_kib(pid);
    let stop_poll = Arc::new(AtomicBool::new(false));
    let poller = {
        let (path, stop) = (sock_path.clone(), stop_poll.clone());
        std::thread::spawn(move || poll_control(path, stop))
    };
    vm.send(b"\n");
    let done = vm.wait_for_output("HOSTILE: done", CASE_TIMEOUT);
    stop_poll.store(true, Ordering::SeqCst);
    let polled = poller.join().unwrap();
    assert!(
        done,
        "the attack did not end within {CASE_TIMEOUT:?}\n{}",
        context(&vm)
    );
    let (polls, slowest_poll) =
        polled.unwrap_or_else(|e| panic!("control socket during the attack: {e}"));
    assert!(polls > 0, "the control socket was never polled");
    let rss_after_kib = rss_kib(pid);
    // The guest's "done" can come before the NIC's worker has handled its
    // last frames: read the counters once they stop changing.
    let info = settled_info(&sock_path);
    let hostile_info = info
        .lines()
        .find(|l| l.contains("hostile"))
        .unwrap_or_else(|| panic!("no hostile NIC in 'info':\n{info}"))
        .to_string();
    vm.send(b"\n");
    let out = vm.finish(Duration::from_secs(60));
    stop_echo.store(true, Ordering::SeqCst);
    echo.join().unwrap();

    let serial = out.stdout;
    let why = format!(
        "cmdline: {cmdline}\nexit {}\nserial:\n{serial}\nstderr:\n{}",
        out.code, out.stderr
    );
    assert!(
        !serial.contains("TESTKERNEL: FAIL"),
        "the guest found the device wrong\n{why}"
    );
    assert!(
        serial.contains("TESTKERNEL: PASS"),
        "the other NIC did not finish its exchange\n{why}"
    );
    assert!(serial.contains("NIC: RESULT"), "{why}");
    assert_eq!(
        out.code, 0,
        "tapir did not end with the guest's poweroff\n{why}"
    );
    assert!(!out.stderr.contains("panicked"), "{why}");
    eprintln!(
        "{} {case}: {polls} control replies during the attack (slowest {slowest_poll:?}), \
         RSS {rss_before_kib} -> {rss_after_kib} KiB\n  {hostile_info}",
        model.guest()
    );
    assert!(
        rss_after_kib <= rss_before_kib + RSS_SLACK_KIB,
        "tapir's RSS grew from {rss_before_kib} to {rss_after_kib} KiB across the attack\n{why}"
    );
    Attack {
        stderr: out.stderr,
        hostile_info,
    }
}

/// `info` once two replies 50 ms apart are the same (at most 10 s).
fn settled_info(path: &Path) -> String {
    let get = || control(path, "info").unwrap_or_else(|e| panic!("control socket after: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = get();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = get();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The value of counter `key` in an `info` line.
fn counter(info: &str, key: &str) -> u64 {
    info.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in '{info}'"))
}

// ---- virtio-net ----

/// Buffers outside RAM, wrapping the address space, in the device's own
/// MMIO, over the ring itself; rings outside RAM at DRIVER_OK.
#[test]
fn dma_outside_ram_into_mmio_and_the_ring_virtio() {
    let a = attack(Model::Virtio, "dma-outside-ram");
    assert!(
        counter(&a.hostile_info, "tx_dropped") >= 4,
        "{}",
        a.hostile_info
    );
}

/// Zero-length descriptors and chains of 120 KiB both ways, and a
/// descriptor claiming 4 GiB.
#[test]
fn zero_length_and_64k_chains_virtio() {
    let a = attack(Model::Virtio, "chain-lengths");
    assert!(
        counter(&a.hostile_info, "tx_dropped") >= 4,
        "{}",
        a.hostile_info
    );
}

/// CVE-2016-8910 / CVE-2021-20257 class: descriptor chains that loop.
#[test]
fn cve_2021_20257_descriptor_loop_virtio() {
    let a = attack(Model::Virtio, "descriptor-loop");
    assert!(
        counter(&a.hostile_info, "tx_dropped") >= 3,
        "{}",
        a.hostile_info
    );
}

/// CVE-2016-5403 class: an available index claiming more entries than the
/// queue has. The ring is stopped (said once on stderr) until the reset.
#[test]
fn cve_2016_5403_unbounded_virtqueue_virtio() {
    let a = attack(Model::Virtio, "unbounded-virtqueue");
    assert!(
        a.stderr
            .contains("transmit queue stopped until the driver resets the device"),
        "{}",
        a.stderr
    );
}

/// Floods of doorbells with nothing new and of frames nobody reads.
#[test]
fn frame_and_doorbell_floods_virtio() {
    let a = attack(Model::Virtio, "floods");
    assert!(
        counter(&a.hostile_info, "tx_frames") >= 5000,
        "{}",
        a.hostile_info
    );
}

/// Register writes at random over the virtio structures.
#[test]
fn random_register_writes_virtio() {
    attack(Model::Virtio, "random-registers");
}

// ---- e1000 ----

/// Buffers beyond RAM, wrapping, in MMIO and over the ring; rings beyond
/// RAM and in MMIO.
#[test]
fn dma_outside_ram_into_mmio_and_the_ring_e1000() {
    attack(Model::E1000, "dma-outside-ram");
}

/// CVE-2016-1981 / CVE-2021-20257 class: a ring of zero-length
/// descriptors without end, a tail beyond the ring, rings of no length.
#[test]
fn cve_2021_20257_descriptor_loop_e1000() {
    attack(Model::E1000, "descriptor-loop");
}

/// CVE-2012-6075 class: looped-back frames of 9000 and 17500 bytes with
/// long packets off: dropped, nothing written past a buffer.
#[test]
fn cve_2012_6075_oversize_frames_e1000() {
    attack(Model::E1000, "oversize-frames");
}

/// CVE-2021-3416 class: loopback with receive buffers on the transmit
/// ring, then the receive ring on the transmit ring.
#[test]
fn cve_2021_3416_loopback_feeds_itself_e1000() {
    attack(Model::E1000, "loopback-feeds-itself");
}

#[test]
fn frame_and_doorbell_floods_e1000() {
    let a = attack(Model::E1000, "floods");
    assert!(
        counter(&a.hostile_info, "tx_frames") >= 5000,
        "{}",
        a.hostile_info
    );
}

#[test]
fn random_register_writes_e1000() {
    attack(Model::E1000, "random-registers");
}

// ---- rtl8139, normal mode and C+ ----

#[test]
fn dma_outside_ram_into_mmio_and_the_ring_rtl8139() {
    attack(Model::Rtl8139, "dma-outside-ram");
}

#[test]
fn dma_outside_ram_into_mmio_and_the_ring_rtl8139cp() {
    attack(Model::Rtl8139Cp, "dma-outside-ram");
}

/// Normal mode: transmit slots of size 0.
#[test]
fn zero_length_slots_rtl8139() {
    attack(Model::Rtl8139, "descriptor-loop");
}

/// CVE-2016-8910 class: a C+ ring of owned descriptors none of which ends
/// the frame, then a ring of zero-length ones.
#[test]
fn cve_2016_8910_descriptor_loop_rtl8139cp() {
    attack(Model::Rtl8139Cp, "descriptor-loop");
}

/// CVE-2015-5165 class: C+ large send and checksum offload of IPv4
/// headers whose lengths lie about the frame.
#[test]
fn cve_2015_5165_cplus_header_length_lies_rtl8139cp() {
    attack(Model::Rtl8139Cp, "header-length-lies");
}

/// CVE-2012-6075 class: a transmit slot of 8191 bytes, then looped-back
/// frames overrunning an 8 KiB receive ring, with a guard after it.
#[test]
fn cve_2012_6075_oversize_frames_rtl8139() {
    attack(Model::Rtl8139, "oversize-frames");
}

/// CVE-2012-6075 class: a C+ descriptor of 65535 bytes without large send.
#[test]
fn cve_2012_6075_oversize_frames_rtl8139cp() {
    attack(Model::Rtl8139Cp, "oversize-frames");
}

/// CVE-2021-3416 class: loopback into the transmit buffers (normal mode).
#[test]
fn cve_2021_3416_loopback_feeds_itself_rtl8139() {
    attack(Model::Rtl8139, "loopback-feeds-itself");
}

/// CVE-2021-3416 class: loopback with the C+ receive ring on the transmit
/// ring.
#[test]
fn cve_2021_3416_loopback_feeds_itself_rtl8139cp() {
    attack(Model::Rtl8139Cp, "loopback-feeds-itself");
}

#[test]
fn frame_and_doorbell_floods_rtl8139() {
    let a = attack(Model::Rtl8139, "floods");
    assert!(
        counter(&a.hostile_info, "tx_frames") >= 5000,
        "{}",
        a.hostile_info
    );
}

#[test]
fn frame_and_doorbell_floods_rtl8139cp() {
    let a = attack(Model::Rtl8139Cp, "floods");
    assert!(
        counter(&a.hostile_info, "tx_frames") >= 5000,
        "{}",
        a.hostile_info
    );
}

#[test]
fn random_register_writes_rtl8139() {
    attack(Model::Rtl8139, "random-registers");
}

#[test]
fn random_register_writes_rtl8139cp() {
    attack(Model::Rtl8139Cp, "random-registers");
}
