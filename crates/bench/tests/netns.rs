//! The passthrough set-up of `tapir bench` without a guest: the two
//! namespaces, the veth pair, QEMU's macvtap and its inheritable
//! descriptor, and that everything goes again. Needs root.

use std::path::Path;
use std::process::Command;

use tapir_bench::guest::{GUEST_MAC, HOST_IP};
use tapir_bench::netns::{Netns, PT_PARENT, PT_PEER, QEMU_MACVTAP};
use tapir_bench::plan::Net;
use tapir_test_support::{net::privileged, skipped};

fn ip_out(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn passthrough_namespaces_and_qemus_macvtap() {
    const TEST: &str = "bench passthrough_namespaces_and_qemus_macvtap";
    if !privileged(TEST) {
        return;
    }
    let ns = Netns::create(&[Net::Tap, Net::Passthrough]).expect("namespaces");
    let host = ns.host.clone().expect("a namespace host for passthrough");
    let (name, h) = (ns.name.clone(), host.clone());
    assert!(Path::new("/run/netns").join(&name).exists());
    assert_eq!(ns.client(Net::Passthrough), host);
    assert_eq!(ns.client(Net::Tap), name);
    assert!(ip_out(&["-n", &h, "addr", "show", PT_PEER]).contains(&format!("{HOST_IP}/24")));
    assert!(ip_out(&["-n", &name, "link", "show", PT_PARENT]).contains("UP"));
    let mut m = match ns.qemu_macvtap() {
        Ok(m) => m,
        Err(e) if e.to_string().contains("type macvtap") => {
            skipped(TEST, &format!("no macvtap here: {e}"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let fd = m.fd().expect("the macvtap's descriptor");
    // Inheritable: QEMU gets it across exec.
    let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = flags
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(flags & 0o2000000, 0, "O_CLOEXEC set: {flags:o}");
    let link = ip_out(&["-n", &name, "link", "show", QEMU_MACVTAP]);
    assert!(
        link.contains(GUEST_MAC) && link.contains(PT_PARENT),
        "{link}"
    );
    m.close();
    assert!(m.fd().is_none());
    drop(m);
    assert!(ip_out(&["-n", &name, "link", "show", "type", "macvtap"])
        .trim()
        .is_empty());
    drop(ns);
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(!Path::new("/run/netns").join(&h).exists());
}
