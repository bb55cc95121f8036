//! `--nic ...,pcap=FILE[,pcap_max=SIZE]` on the data path (docs/pcap.md):
//! the runs of the cells above with capture on, every check of theirs,
//! and the capture read back with `tcpdump -r` and tapir-test-support's
//! own reader.
//!
//! - `datapath_virtio_tap_pcap`: virtio on a tap (root). The capture holds
//!   exactly the frames the host saw, both ways: the guest's as the host
//!   received them (its TSO packets as their segments), the echoes as sent,
//!   with the guest's MAC address as source or destination and the 802.1Q
//!   tag (VID 5) on every tagged one.
//! - `datapath_e1000_user_pcap`: e1000 on `net=user` (no root), with
//!   `pcap_max=64K`: the capture rotates, and `FILE` and `FILE.1` are both
//!   whole captures within the limit.

use std::path::{Path, PathBuf};

use tapir_test_support::pcap::{read, tcpdump};

use crate::frames::ETH_HLEN;
use crate::guest::{Backend, Cell, GuestReport, Model};
use crate::{check_run, have_kvm, one_vm, tap, user, Run};

/// A fresh directory for one test's capture.
fn capture_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapir-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The guest's MAC address, from its `nic:` line.
fn guest_mac(run: &Run) -> String {
    GuestReport::parse(&run.serial, GuestReport::NIC)
        .and_then(|r| r.text("mac").map(str::to_string))
        .unwrap_or_else(|e| panic!("no MAC in the guest's nic: line: {e}\n{}", run.serial))
}

/// `tcpdump -e`'s frames from `mac` and to `mac`.
fn split_by_direction<'a>(lines: &'a [String], mac: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let (from, to) = (format!(" {mac} > "), format!(" > {mac}, "));
    let out = lines
        .iter()
        .filter(|l| l.contains(&from))
        .map(String::as_str);
    let back = lines.iter().filter(|l| l.contains(&to)).map(String::as_str);
    (out.collect(), back.collect())
}

#[test]
fn datapath_virtio_tap_pcap() {
    let cell = Cell {
        test: "datapath_virtio_tap_pcap",
        model: Model::Virtio,
        backend: Backend::Tap,
    };
    if !have_kvm(cell.test) {
        return;
    }
    let _one = one_vm();
    let dir = capture_dir(cell.test);
    let path = dir.join("net0.pcap");
    let Some(run) = tap::run_with(&cell, &format!(",pcap={}", path.display())) else {
        return;
    };
    if !check_run(&cell, &run) {
        return;
    }
    let host = &run.host;
    let file = read(&path).unwrap();
    assert!(file.nanos && file.linktype == 1 && file.version == (2, 4));
    let count = file.records.len() as u64;
    assert_eq!(
        count,
        host.received + host.sent,
        "records: the host received {} and echoed {}",
        host.received,
        host.sent
    );
    // GSO frames are in the capture as segments: none is larger than the
    // tap's MTU allows (9000 + Ethernet header + tag).
    let largest = file.records.iter().map(|r| r.data.len()).max().unwrap();
    assert!(
        largest <= 9000 + ETH_HLEN + 4,
        "a record of {largest} bytes"
    );
    assert!(file
        .records
        .iter()
        .all(|r| r.orig_len as usize == r.data.len()));
    let Some(lines) = tcpdump(cell.test, &path) else {
        return;
    };
    assert_eq!(lines.len() as u64, count, "tcpdump's lines");
    let mac = guest_mac(&run);
    let (out, back) = split_by_direction(&lines, &mac);
    assert_eq!(out.len() as u64, host.received, "frames from {mac}");
    assert_eq!(back.len() as u64, host.sent, "frames to {mac}");
    let vid = cell.rules().vlan;
    let tagged = |v: &[&str]| {
        v.iter()
            .filter(|l| l.contains(&format!("vlan {vid}, ")))
            .count() as u64
    };
    assert_eq!(tagged(&out), host.tagged, "tagged frames from the guest");
    assert_eq!(tagged(&back), host.tagged, "tagged echoes");
    assert!(host.tagged > 0 && host.gso > 0, "the run had tags and GSO");
    eprintln!(
        "{}: {count} records ({} out, {} back, {} tagged each way), largest {largest} bytes",
        cell.test,
        out.len(),
        back.len(),
        host.tagged
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Both files of a rotating capture: whole, and within `max`.
fn check_rotated(path: &Path, max: u64) -> (usize, usize) {
    let path1 = PathBuf::from(format!("{}.1", path.display()));
    let mut counts = [0; 2];
    for (i, p) in [path, &path1].into_iter().enumerate() {
        let size = std::fs::metadata(p).unwrap().len();
        assert!(size <= max, "{}: {size} bytes, over {max}", p.display());
        counts[i] = read(p).unwrap().records.len();
    }
    (counts[0], counts[1])
}

#[test]
fn datapath_e1000_user_pcap() {
    let cell = Cell {
        test: "datapath_e1000_user_pcap",
        model: Model::E1000,
        backend: Backend::User,
    };
    if !have_kvm(cell.test) {
        return;
    }
    let _one = one_vm();
    let dir = capture_dir(cell.test);
    let path = dir.join("net0.pcap");
    let max = 64 << 10;
    let run = user::run_with(&cell, &format!(",pcap={},pcap_max=64K", path.display()));
    if !check_run(&cell, &run) {
        return;
    }
    let (cur, old) = check_rotated(&path, max);
    assert!(cur > 0 && old > 0, "{cur} records in FILE, {old} in FILE.1");
    let Some(lines) = tcpdump(cell.test, &path) else {
        return;
    };
    assert_eq!(lines.len(), cur);
    // The newest datagrams: the guest's and the echoes, 10.0.2.15:40000
    // and the gateway.
    let mac = guest_mac(&run);
    let (out, back) = split_by_direction(&lines, &mac);
    assert!(out
        .iter()
        .any(|l| l.contains("10.0.2.15.40000 > 10.0.2.2.")));
    assert!(back.iter().any(|l| l.contains(" > 10.0.2.15.40000: UDP")));
    let old_lines = tcpdump(cell.test, &PathBuf::from(format!("{}.1", path.display()))).unwrap();
    assert_eq!(old_lines.len(), old);
    eprintln!(
        "{}: FILE {cur} records, FILE.1 {old} records, each within {max} bytes",
        cell.test
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
