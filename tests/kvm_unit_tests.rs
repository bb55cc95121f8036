//! kvm-unit-tests' x86 tests under the tapir binary beside QEMU
//! (docs/kvm-unit-tests.md): `resources/kvm-unit-tests/run.sh` runs each
//! test under both, and this test fails when a test that passes under QEMU
//! fails under tapir and is not listed, with its reason, in
//! `resources/kvm-unit-tests/known.txt`.
//!
//! kvm-unit-tests stays outside this repository: the test uses a build made
//! by `resources/kvm-unit-tests/build.sh` (`TAPIR_KUT_BUILD`, else the
//! newest one in the cache) and says SKIPPED when there is none, or no
//! `/dev/kvm`, or no QEMU. `TAPIR_KUT_ONLY` (a bash regex of test names)
//! and `TAPIR_KUT_TIMEOUT` (seconds per run) narrow it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const TEST: &str = "kvm_unit_tests_x86";

/// The default subset: the tests that finish within seconds under both
/// VMMs on a PVM host (where every guest instruction is emulated), so that
/// `cargo test` stays within a few minutes. `TAPIR_KUT_ONLY=.` runs all.
const DEFAULT_ONLY: &str = include_str!("../resources/kvm-unit-tests/suite-tests.txt");

/// Each run's limit (seconds) unless `TAPIR_KUT_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT_S: &str = "40";

/// `$TAPIR_CACHE`, else `$XDG_CACHE_HOME/tapir`, else `~/.cache/tapir`, as
/// `resources/lib/common.sh` has it.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TAPIR_CACHE") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(Path::new(&d).join("tapir"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/tapir"))
}

/// The newest finished build of build.sh in the cache.
fn cached_build() -> Option<PathBuf> {
    let dir = cache_dir()?.join("kvm-unit-tests");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let stamp = e.path().join(".tapir-kut-build");
            let modified = std::fs::metadata(&stamp).ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// One bash regex out of the subset file: one test name a line, `#`
/// comments.
fn subset_regex(list: &str) -> String {
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    format!("^({})$", names.join("|"))
}

#[test]
fn kvm_unit_tests_x86() {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    if kvm.is_err() {
        tapir_test_support::skipped(TEST, "no usable /dev/kvm");
        return;
    }
    // A TAPIR_KUT_BUILD that is not a build fails in run.sh, with its line.
    let Some(build) = std::env::var_os("TAPIR_KUT_BUILD")
        .map(PathBuf::from)
        .or_else(cached_build)
    else {
        tapir_test_support::skipped(
            TEST,
            "no kvm-unit-tests build (resources/kvm-unit-tests/build.sh KUT_CHECKOUT, or TAPIR_KUT_BUILD=DIR)",
        );
        return;
    };
    if !on_path("qemu-system-x86_64") {
        tapir_test_support::skipped(
            TEST,
            "no qemu-system-x86_64 to compare with (install qemu-system-x86)",
        );
        return;
    }
    let only = std::env::var("TAPIR_KUT_ONLY").unwrap_or_else(|_| subset_regex(DEFAULT_ONLY));
    let timeout = std::env::var("TAPIR_KUT_TIMEOUT").unwrap_or_else(|_| DEFAULT_TIMEOUT_S.into());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-unit-tests");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/kvm-unit-tests/run.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg("--build")
        .arg(&build)
        .arg("--tapir")
        .arg(common::tapir_bin())
        .arg("--out")
        .arg(&out)
        .args(["--only", &only, "--timeout", &timeout])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stdout}");
    assert!(
        o.status.success(),
        "kvm-unit-tests: {} (a test that passes under QEMU fails under tapir and is not in known.txt, or run.sh failed)\n{stdout}\n{stderr}",
        o.status
    );
    // With nothing passing under QEMU, nothing was compared.
    if stdout.lines().any(|l| l == "QEMU PASS: 0") {
        tapir_test_support::skipped(
            TEST,
            &format!("no test passed under QEMU here (logs: {})", out.display()),
        );
    }
}

#[test]
fn subset_regex_joins_names() {
    assert_eq!(
        subset_regex("# c\nsmptest\n\n vmexit_cpuid  # fast\n"),
        "^(smptest|vmexit_cpuid)$"
    );
}
