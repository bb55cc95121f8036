//! The filters for real, in child processes (a refusal ends the whole
//! process): this test binary runs itself again with `CHILD` naming a
//! scenario, and the parent checks the child's stderr and exit status.

use std::process::Command;

use tapir_seccomp::{Filter, ThreadKind, EXIT_STATUS};

/// Set in a child: the scenario it runs.
const CHILD: &str = "TAPIR_SECCOMP_TEST_CHILD";

/// Runs `scenario` in a child; returns (status, stderr).
fn run_child(test: &str, scenario: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// In a thread named `name`, installs `kind`'s filter and runs `body`;
/// the process then ends with status 0 (unless `body` was refused).
fn filtered_thread(name: &str, kind: ThreadKind, body: impl FnOnce() + Send + 'static) -> ! {
    let filter = Filter::new(kind).unwrap();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            filter.apply().unwrap();
            body();
        })
        .unwrap()
        .join()
        .unwrap();
    std::process::exit(0)
}

#[test]
fn a_refused_syscall_is_named_and_ends_tapir() {
    if let Ok(scenario) = std::env::var(CHILD) {
        match scenario.as_str() {
            // socket(2) is not for vCPUs.
            "vcpu-socket" => filtered_thread("vcpu7", ThreadKind::Vcpu, || {
                // SAFETY: plain socket(2); the filter refuses it.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            }),
            // NIC workers open IPv4 sockets only.
            "nic-unix-socket" => filtered_thread("net0-net", ThreadKind::NicWorker, || {
                // SAFETY: an IPv4 socket is allowed (and closed at once)...
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
                assert!(fd >= 0);
                // SAFETY: `fd` is ours.
                unsafe { libc::close(fd) };
                // SAFETY: ...a Unix one is not.
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            }),
            // The main thread has no business entering a guest.
            "main-kvm-run" => filtered_thread("main", ThreadKind::Main, || {
                // SAFETY: ioctl(2) on an fd that is not open; the filter
                // refuses the request before the kernel looks at the fd.
                unsafe { libc::ioctl(1000, tapir_seccomp::ioctls::KVM_RUN as _, 0) };
            }),
            other => panic!("unknown scenario {other}"),
        }
    }
    let cases = [
        (
            "vcpu-socket",
            "tapir: seccomp: thread 'vcpu7' (vcpu filter) made syscall 41 (socket, args 0x2 0x1 \
             0x0), which its filter does not allow; stopping (run with --seccomp=off to debug)\n",
        ),
        (
            "nic-unix-socket",
            "tapir: seccomp: thread 'net0-net' (nic-worker filter) made syscall 41 (socket, args \
             0x1 0x1 0x0), which its filter does not allow; stopping (run with --seccomp=off to \
             debug)\n",
        ),
        (
            "main-kvm-run",
            "tapir: seccomp: thread 'main' (main filter) made syscall 16 (ioctl, args 0x3e8 \
             0xae80 0x0), which its filter does not allow; stopping (run with --seccomp=off to \
             debug)\n",
        ),
    ];
    for (scenario, line) in cases {
        let (status, stderr) = run_child("a_refused_syscall_is_named_and_ends_tapir", scenario);
        assert_eq!(status, Some(EXIT_STATUS), "{scenario}: stderr:\n{stderr}");
        assert_eq!(EXIT_STATUS, 159);
        assert!(
            stderr.lines().any(|l| format!("{l}\n") == line),
            "{scenario}: expected\n{line}in stderr:\n{stderr}"
        );
    }
}

/// What every thread does besides its own work, under each filter: it
/// allocates (large and small), locks, sleeps, reads the clock, writes to
/// stderr, uses an eventfd, and ends (std and glibc tear the thread down
/// under the filter).
#[test]
fn a_filtered_thread_lives_and_ends() {
    if let Ok(scenario) = std::env::var(CHILD) {
        let kind = ThreadKind::ALL
            .into_iter()
            .find(|k| k.name() == scenario)
            .unwrap();
        filtered_thread("worker", kind, || {
            let mut v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << (i % 22)]).collect();
            v.truncate(3);
            v[0].resize(8 << 20, 1);
            drop(v);
            let m = std::sync::Mutex::new(1);
            *m.lock().unwrap() += 1;
            let t = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(t.elapsed().as_millis() >= 2);
            eprintln!("alive");
            let mut map = std::collections::HashMap::new();
            map.insert(1, 2);
            // SAFETY: plain eventfd(2) is not for every thread; the fd of
            // stderr is, for writes. (No eventfd2 here: NIC workers and
            // the main thread get theirs ready-made.)
            let n = unsafe { libc::write(2, b"x\n".as_ptr().cast(), 2) };
            assert_eq!(n, 2);
        })
    }
    for kind in ThreadKind::ALL {
        let (status, stderr) = run_child("a_filtered_thread_lives_and_ends", kind.name());
        assert_eq!(status, Some(0), "{kind}: stderr:\n{stderr}");
        assert!(stderr.contains("alive\nx\n"), "{kind}: stderr:\n{stderr}");
    }
}

/// glibc's malloc opens files lazily: /proc/sys/vm/overcommit_memory the
/// first time it shrinks a thread's heap, /sys/devices/system/cpu/online
/// when a ninth arena is wanted. Under filters it must not (tapir tames
/// it before the first filter): many filtered threads allocate for the
/// first time after their filter, and free big blocks another thread
/// allocated, which shrinks that thread's heap.
#[test]
fn malloc_opens_no_file_under_the_filters() {
    if std::env::var(CHILD).is_ok_and(|s| s == "malloc") {
        let filter = std::sync::Arc::new(Filter::new(ThreadKind::NicWorker).unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
        let freer = {
            let filter = filter.clone();
            std::thread::spawn(move || {
                filter.apply().unwrap();
                for blocks in rx {
                    drop(blocks);
                }
            })
        };
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (filter, tx) = (filter.clone(), tx.clone());
                std::thread::Builder::new()
                    .name(format!("t{i}"))
                    .spawn(move || {
                        filter.apply().unwrap();
                        // This thread's heap grows, then shrinks.
                        let blocks: Vec<Vec<u8>> = (0..8).map(|_| vec![1u8; 100_000]).collect();
                        drop(blocks);
                        // Blocks of this thread's heap, freed by another.
                        let blocks: Vec<Vec<u8>> = (0..8).map(|_| vec![2u8; 70_000]).collect();
                        tx.send(blocks).unwrap();
                    })
                    .unwrap()
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(tx);
        freer.join().unwrap();
        std::process::exit(0);
    }
    let (status, stderr) = run_child("malloc_opens_no_file_under_the_filters", "malloc");
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
}

/// `pcap_max=`'s rotation under the nic-worker filter: the writer, given
/// its files open before the filter, rotates several times (ftruncate and
/// renameat2 RENAME_EXCHANGE, no open); a plain rename is still refused.
#[test]
fn pcap_rotation_under_the_nic_worker_filter() {
    use tapir_net_backend::PcapWriter;
    // The parent's directory: a child names it by its parent's pid.
    let pid = match std::env::var(CHILD) {
        Ok(_) => std::os::unix::process::parent_id(),
        Err(_) => std::process::id(),
    };
    let dir = std::env::temp_dir().join(format!("tapir-seccomp-pcap-{pid}"));
    let path = dir.join("net0.pcap");
    match std::env::var(CHILD).as_deref() {
        Ok("pcap-rotate") => {
            let mut w = PcapWriter::create(&path, Some(4096)).unwrap();
            filtered_thread("net0-net", ThreadKind::NicWorker, move || {
                for i in 0..100u32 {
                    let frame = vec![i as u8; 300];
                    w.push(std::time::Duration::from_secs(i.into()), &[&frame]);
                    w.flush();
                }
                let st = w.stats();
                assert!(!st.stopped && st.rotations >= 5, "{st:?}");
                eprintln!("rotated {} times", st.rotations);
            })
        }
        Ok("pcap-rename") => filtered_thread("net0-net", ThreadKind::NicWorker, move || {
            let (a, b) = (c"a", c"b");
            // SAFETY: two NUL-terminated names; the filter refuses the call
            // (flags 0) before the kernel looks at them. The raw syscall:
            // glibc's wrapper makes flags 0 a renameat.
            unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    0,
                )
            };
        }),
        Ok(_) => return,
        Err(_) => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let test = "pcap_rotation_under_the_nic_worker_filter";
    let (status, stderr) = run_child(test, "pcap-rotate");
    assert_eq!(status, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("rotated "), "stderr:\n{stderr}");
    for f in ["net0.pcap", "net0.pcap.1"] {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() <= 4096);
    }
    let (status, stderr) = run_child(test, "pcap-rename");
    assert_eq!(status, Some(EXIT_STATUS), "stderr:\n{stderr}");
    assert!(stderr.contains("(renameat2, args"), "stderr:\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
