//! The memory backend: the VM runs in this process
//! (`tapir_vmm::run_with_backends`) with a `MemoryBackend` for its NIC,
//! and a peer thread echoes what the guest sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tapir_config::{NicArg, SeccompMode, SerialConfig, VmConfig};
use tapir_net_backend::{MemoryBackend, MemoryPeer, NetHdr, Offloads};
use tapir_test_support::net::wait_readable;
use tapir_vmm::{ExitReason, OpenedBackend};

use crate::frames::{EchoCore, Rules, Tally};
use crate::guest::Cell;
use crate::{Run, StopFlag, GUEST_MEMORY, RUN_TIMEOUT};

/// Frames each way the backend's queues hold: more than a TSO packet's
/// segments (64 KiB / 1000) for the whole window of 8.
const QUEUE: usize = 1024;

/// Echoes every frame the guest sends until `stop`, then what it saw.
fn peer_loop(peer: MemoryPeer, rules: Rules, stop: Arc<AtomicBool>) -> Tally {
    let mut core = EchoCore::new(rules);
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        while let Some((hdr, frame)) = peer.take() {
            for echo in core.guest_sent(&hdr, &frame) {
                loop {
                    match peer.inject(NetHdr::default(), &echo) {
                        Ok(()) => {
                            core.echo_sent(&echo);
                            break;
                        }
                        // The guest is behind: give it time, unless the
                        // VM is gone.
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                && !stop.load(Ordering::SeqCst) =>
                        {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => {
                            core.echo_lost(e.kind());
                            break;
                        }
                    }
                }
            }
        }
        if stopping {
            return core.finish();
        }
        wait_readable(peer.sent_fd(), 100);
    }
}

/// Sends SIGTERM to this process (which the running VM takes as "stop")
/// unless told within `after` that the VM is done.
fn watchdog(after: Duration) -> (mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (tx, rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        if rx.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on this process; the VM's handler for
            // SIGTERM is installed while it runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            return true;
        }
        false
    });
    (tx, h)
}

pub fn run(cell: &Cell) -> Run {
    let start = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "tapir-datapath-{}-{}",
        std::process::id(),
        cell.test
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let serial = dir.join("serial.log");

    let (backend, peer) = MemoryBackend::new(QUEUE, Offloads::ALL).unwrap();
    let stop = StopFlag::default();
    let peer_thread = {
        let (rules, stop) = (cell.rules(), stop.watch());
        std::thread::spawn(move || peer_loop(peer, rules, stop))
    };

    let spec = match format!("model={}", cell.model.nic_model()).parse::<NicArg>() {
        Ok(NicArg::Nic(spec)) => spec,
        other => panic!("--nic model={}: {other:?}", cell.model.nic_model()),
    };
    let cmdline = cell.cmdline(None);
    let config = VmConfig {
        kernel: tapir_testkernel::elf_path(),
        initrd: None,
        cmdline: cmdline.clone(),
        cpus: 1,
        memory: GUEST_MEMORY << 20,
        serial: SerialConfig::File(serial.clone()),
        serial_log: None,
        timeout: None,
        nics: vec![spec],
        devices: vec![],
        disks: vec![],
        allow_emulation: false,
        control_socket: None,
        // The threads the VM starts filter themselves; this thread goes on
        // with the test after the VM, so it does not.
        seccomp: SeccompMode::SpawnedThreads,
    };
    let mut backend = Some(backend);
    let (done, dog) = watchdog(RUN_TIMEOUT);
    // The NIC's `net=` (user, parsed by default) is not looked at: every
    // NIC of this VM gets the memory backend, and it has one.
    let result = tapir_vmm::run_with_backends(&config, &mut |_name, _spec| {
        Ok(OpenedBackend::new(
            Box::new(backend.take().expect("the VM has one NIC")),
            "memory".to_string(),
            "memory".to_string(),
        ))
    });
    let _ = done.send(());
    let timed_out = dog.join().unwrap();
    stop.raise();
    let host = peer_thread.join().unwrap();

    let serial_text = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let powered_off = matches!(result, Ok(ExitReason::PowerOff));
    Run {
        cmdline,
        serial: serial_text,
        vmm: format!(
            "in-process VM: {result:?}{}",
            if timed_out {
                format!(" (stopped by the test after {RUN_TIMEOUT:?})")
            } else {
                String::new()
            }
        ),
        powered_off,
        host,
        elapsed: start.elapsed(),
    }
}
