//! Helpers shared by the integration tests: run the tapir binary with a
//! deadline so that a hang fails the test instead of blocking it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Result of one tapir run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Path of the tapir binary under test.
pub fn tapir_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapir"))
}

/// A running tapir whose output is collected in the background.
pub struct Running {
    pub child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    start: Instant,
}

fn collect(
    mut r: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Running {
    /// Starts `tapir ARGS...` with piped stdin/stdout/stderr.
    pub fn start(args: &[&str]) -> Running {
        Self::start_cmd(Command::new(tapir_bin()).args(args))
    }

    /// Starts a prepared command with piped stdio.
    pub fn start_cmd(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapir");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
            start: Instant::now(),
        }
    }

    /// Output so far.
    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; false on timeout or exit.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout_now().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stdout_now().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Writes to tapir's stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("write stdin");
        stdin.flush().unwrap();
    }

    /// Sends a signal to tapir.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit; kills tapir and panics if it takes longer than `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tapir did not exit within {timeout:?} (hung)\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_now(),
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Outcome {
            code,
            stdout: String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
            elapsed: self.start.elapsed(),
        }
    }
}

/// A run whose test panicked is not left behind.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs tapir to completion with stdin closed.
pub fn run(args: &[&str], timeout: Duration) -> Outcome {
    Running::start(args).finish(timeout)
}

/// The lines tapir printed on stderr that are not informational notes.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("tapir: note:"))
        .collect()
}

/// Whether tests can switch to the unprivileged user 'nobody' (root and
/// setpriv available).
pub fn can_run_as_nobody() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    euid == 0 && std::path::Path::new("/usr/bin/setpriv").exists()
}

/// A copy of `path`, with `mode`, in a directory that 'nobody' can enter:
/// the checkout (and so the test kernel and tapir's binary) may lie below
/// a directory that only root can search, such as /root.
pub fn copy_for_nobody(path: &std::path::Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tapir-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(path.file_name().unwrap());
    // Copy under a temporary name and rename: tests run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".copy-{n}"));
    std::fs::copy(path, &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    copy
}

/// The tapir binary, copied where 'nobody' can run it (once per process).
fn tapir_bin_for_nobody() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| copy_for_nobody(&tapir_bin(), 0o755))
        .clone()
}

/// Runs `tapir ARGS...` as 'nobody' (uid/gid 65534, no groups).
pub fn run_as_nobody(args: &[&str], timeout: Duration) -> Outcome {
    let tapir = tapir_bin_for_nobody();
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tapir)
        .args(args);
    Running::start_cmd(&mut cmd).finish(timeout)
}

/// Runs `tapir ARGS...` as 'nobody' (uid 65534) with only group `gid`
/// (e.g. /dev/kvm's group) and no capabilities.
pub fn run_as_nobody_in_group(gid: u32, args: &[&str], timeout: Duration) -> Outcome {
    let tapir = tapir_bin_for_nobody();
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        "--reuid=65534".to_string(),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
        "--inh-caps=-all".to_string(),
    ])
    .arg(tapir)
    .args(args);
    Running::start_cmd(&mut cmd).finish(timeout)
}

/// Whether tests can create tap devices (root and /dev/net/tun).
pub fn can_make_taps() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    euid == 0 && std::path::Path::new("/dev/net/tun").exists()
}
