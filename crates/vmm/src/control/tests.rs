//! The control server over a real Unix socket, driven by a real event loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use tapir_nic::worker::NicStats;
use tapir_nic::{Carrier, LinkHandle, LinkNotify};

use super::command::NicEntry;
use super::*;

struct NoNotify;
impl LinkNotify for NoNotify {
    fn link_changed(&self, _up: bool) {}
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapir-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("ctl.sock")
}

fn nics() -> Vec<NicEntry> {
    vec![NicEntry {
        name: "net0".into(),
        model: "virtio",
        backend: "user".into(),
        mac: [2, 0, 0, 0, 0, 1],
        link: LinkHandle::new(Carrier::new(), Arc::new(NoNotify)),
        stats: Arc::new(NicStats::default()),
        pcap: Arc::default(),
        device: Default::default(),
    }]
}

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A server on `path` whose event loop runs on a thread until dropped.
struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    vm: Arc<VmControl>,
    link: LinkHandle,
}

impl Running {
    fn start(path: &std::path::Path) -> Running {
        let vm = Arc::new(VmControl::new().unwrap());
        let n = nics();
        let link = n[0].link.clone();
        let server = ControlServer::bind(path, n, vm.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut em = Em::new().unwrap();
            em.add_subscriber(Arc::new(Mutex::new(server)));
            while !s2.load(Ordering::SeqCst) {
                let _ = em.run_with_timeout(20);
            }
        });
        Running {
            stop,
            thread: Some(thread),
            vm,
            link,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

const T: Duration = Duration::from_secs(5);

#[test]
fn requests_are_answered_and_the_socket_is_private_and_removed() {
    let path = scratch("basic");
    let r = Running::start(&path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let info = request(&path, "info", T).unwrap();
    assert_eq!(info.len(), 1);
    assert!(info[0].starts_with("net0 model=virtio net=user mac=02:00:00:00:00:01 link=up"));
    assert_eq!(request(&path, "set_link net0 off", T), Ok(vec![]));
    assert!(!r.link.is_up());
    assert!(request(&path, "info", T).unwrap()[0].contains(" link=down "));
    assert_eq!(
        request(&path, "set_link eth9 on", T),
        Err("no NIC named 'eth9' (NICs: net0)".into())
    );
    assert_eq!(request(&path, "quit", T), Ok(vec![]));
    assert!(r.vm.stopping());
    drop(r);
    assert!(!path.exists(), "socket file removed");
    let e = request(&path, "info", T).unwrap_err();
    assert!(e.contains("cannot connect"), "{e}");
}

/// `pcap NAME start FILE` with FILE's descriptor passed over the socket
/// (what `tapir ctl` does), then `stop`; without a descriptor, an error.
#[test]
fn pcap_start_gets_its_file_over_the_socket() {
    use std::os::fd::AsFd;
    let path = scratch("pcap");
    let r = Running::start(&path);
    let cap = path.with_file_name("net0.pcap");
    let f = std::fs::File::options()
        .append(true)
        .create(true)
        .open(&cap)
        .unwrap();
    let line = format!("pcap net0 start {}", cap.display());
    assert_eq!(request_with_fds(&path, &line, &[f.as_fd()], T), Ok(vec![]));
    drop(f);
    // The header, written by the server into the file it was passed.
    assert_eq!(std::fs::read(&cap).unwrap()[..4], [0x4d, 0x3c, 0xb2, 0xa1]);
    let info = request(&path, "info", T).unwrap();
    assert!(
        info[0].contains(&format!(" pcap_file=\"{}\" pcap_records=0 ", cap.display())),
        "{info:?}"
    );
    assert_eq!(request(&path, "pcap net0 stop", T), Ok(vec![]));
    assert!(!request(&path, "info", T).unwrap()[0].contains("pcap"));
    let e = request(&path, &line, T).unwrap_err();
    assert!(
        e.starts_with("pcap start: 0 descriptors came with the command, 1 needed"),
        "{e}"
    );
    // A pipe is refused: it could block the NIC's worker.
    let (rd, _wr) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = request_with_fds(&path, &line, &[rd.as_fd()], T).unwrap_err();
    assert!(e.contains("is not a regular file"), "{e}");
    // With a size limit: FILE, FILE.1 and their directory, as tapir ctl
    // opens them (tapir_net_backend::PcapFiles::open).
    let files = tapir_net_backend::PcapFiles::open(&cap, Some(4096)).unwrap();
    let line = format!("pcap net0 start {} 4096", cap.display());
    assert_eq!(request_with_fds(&path, &line, &files.fds(), T), Ok(vec![]));
    let e = request_with_fds(&path, &line, &files.fds()[..1], T).unwrap_err();
    assert!(
        e.starts_with("pcap start: 1 descriptors came with the command, 3 needed"),
        "{e}"
    );
    drop(r);
}

#[test]
fn several_commands_on_one_connection_in_order() {
    let path = scratch("pipeline");
    let _r = Running::start(&path);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"set_link net0 down\r\nbogus\n\ninfo\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "ok");
    assert!(lines[1].starts_with("error: unknown command 'bogus'"));
    assert!(lines[2].starts_with("error: empty command"));
    assert!(lines[3].contains(" link=down "));
    assert_eq!(lines[4], "ok");
    assert_eq!(lines.len(), 5);
}

#[test]
fn hostile_clients_get_an_error_and_the_server_keeps_serving() {
    let path = scratch("hostile");
    let _r = Running::start(&path);
    // A line that never ends.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.write_all(&vec![b'x'; 64 * 1024]);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.starts_with("error: command longer than"), "{line}");
    // Not UTF-8.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"\xff\xfe\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "error: command is not UTF-8\n");
    // A client that sends and never reads: dropped, not waited for.
    let mut greedy = UnixStream::connect(&path).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flood = "help\n".repeat(20_000);
    let _ = greedy.write_all(flood.as_bytes());
    // Too many clients: the extra one is told so.
    let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let deadline = Instant::now() + T;
    let mut told = false;
    while Instant::now() < deadline && !told {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&s).read_line(&mut line);
        told = line == "error: too many control connections\n";
    }
    assert!(told, "the extra client was told");
    drop(idle);
    drop(greedy);
    // Still serving.
    let deadline = Instant::now() + T;
    loop {
        match request(&path, "info", T) {
            Ok(l) if l.len() == 1 => break,
            r if Instant::now() > deadline => panic!("not serving: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
    let path = scratch("stale");
    // A socket file nobody listens on (its listener is gone).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let r = Running::start(&path);
    assert!(request(&path, "info", T).is_ok());
    let vm = Arc::new(VmControl::new().unwrap());
    match ControlServer::bind(&path, nics(), vm.clone()) {
        Err(ControlError::InUse(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound a live socket"),
    }
    drop(r);
    std::fs::write(&path, b"not a socket").unwrap();
    match ControlServer::bind(&path, nics(), vm) {
        Err(e @ ControlError::NotASocket(_)) => {
            assert!(e.to_string().contains("not a socket"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("replaced a regular file"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}
