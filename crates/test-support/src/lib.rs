//! Helpers shared by tapir's tests in several crates.
//!
//! - [`host_bzimage`]: the newest Debian kernel installed on this machine
//!   (whichever version `linux-image-amd64` brought: none is hard-coded),
//!   or a SKIPPED line when there is none.
//! - [`skipped`] and [`retried`]: what a test could not do, said where the
//!   suite's summary finds it.
//! - [`net`]: for tests with taps (root and `/dev/net/tun`): interface
//!   names, `ip`, and [`net::PacketSocket`], the host's end of a tap.
//! - [`pcap`]: pcap files read back (a reader of its own, and `tcpdump -r`).
//!
//! Rust's test harness has no "skipped" verdict: a test that cannot run
//! here returns early and passes. So that it does not pass silently, it
//! calls [`skipped`], which prints one `SKIPPED` line and, when the
//! environment variable [`SUMMARY_ENV`] names a file, appends the same line
//! to it. `tests/run-all.sh` sets that variable and prints the file's lines
//! at the end of every run, green or red; [`retried`] does the same for a
//! check that was run again.

pub mod net;
pub mod pcap;

use std::io::Write;
use std::path::PathBuf;

/// The newest `/boot/vmlinuz-*` (by version order), for `test`; when none
/// is readable, says that `test` was skipped (see [`skipped`]) and gives
/// `None`.
pub fn host_bzimage(test: &str) -> Option<PathBuf> {
    let found = newest_bzimage();
    if found.is_none() {
        skipped(
            test,
            "no readable /boot/vmlinuz-* (install linux-image-amd64)",
        );
    }
    found
}

fn newest_bzimage() -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?;
            std::fs::File::open(e.path()).ok()?;
            Some((version_key(version), e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// "6.1.0-48-amd64" -> [6, 1, 0, 48]: the numbers before the flavour, for
/// sorting.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-']).map_while(|n| n.parse().ok()).collect()
}

/// The environment variable naming the file that collects the lines.
pub const SUMMARY_ENV: &str = "TAPIR_TEST_SUMMARY";

/// Says that `test` could not run here, and why (e.g. "needs root").
pub fn skipped(test: &str, why: &str) {
    report("SKIPPED", test, why);
}

/// Says that `what` was run again, and why.
pub fn retried(what: &str, why: &str) {
    report("RETRIED", what, why);
}

fn report(kind: &str, what: &str, why: &str) {
    let line = format!("{kind} {what}: {}\n", why.replace('\n', " "));
    eprint!("{line}");
    let Some(path) = std::env::var_os(SUMMARY_ENV) else {
        return;
    };
    // One write(2) of a short line to an O_APPEND file: lines from test
    // threads and processes running at once do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "tapir-test-support: cannot append to {}: {e}",
            path.to_string_lossy()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_by_number() {
        let mut v = [
            "6.1.0-9-amd64",
            "6.1.0-48-amd64",
            "6.12.3-amd64",
            "6.1.0-56-amd64",
        ]
        .map(version_key);
        v.sort();
        assert_eq!(v[3], vec![6, 12, 3]);
        assert_eq!(v[2], vec![6, 1, 0, 56]);
        assert_eq!(v[0], vec![6, 1, 0, 9]);
    }

    #[test]
    fn lines_are_appended_to_the_summary_file() {
        let path = std::env::temp_dir().join(format!("tapir-test-support-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // The only test in this crate that touches the variable.
        std::env::set_var(SUMMARY_ENV, &path);
        skipped("a::b", "needs root");
        retried("scenario x", "the L1 died\nof a triple fault");
        std::env::remove_var(SUMMARY_ENV);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            text,
            "SKIPPED a::b: needs root\nRETRIED scenario x: the L1 died of a triple fault\n"
        );
    }
}
