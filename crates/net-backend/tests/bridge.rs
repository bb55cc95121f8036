//! Bridge backend against the real kernel (root, /dev/net/tun and
//! iproute2 needed; the tests print a note and pass vacuously elsewhere).

mod common;

use common::*;
use tapir_net_backend::{BackendError, BridgeBackend, NetBackend};

/// A bridge made with iproute2 for one test, deleted on drop.
fn make_bridge(tag: &str) -> LinkGuard {
    let name = unique("tbr", tag);
    let guard = LinkGuard(name.clone());
    assert!(
        ip(&["link", "add", &name, "type", "bridge"]),
        "ip link add {name} type bridge"
    );
    guard
}

fn master_of(ifname: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/class/net/{ifname}/master")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[test]
fn tap_is_enslaved_and_removed() {
    if !privileged("tap_is_enslaved_and_removed") {
        return;
    }
    let br = make_bridge("a");
    let tap = unique("tbt", "a");
    let _tap_guard = LinkGuard(tap.clone());
    let be = BridgeBackend::open(&br.0, Some(&tap)).unwrap();
    assert_eq!(be.ifname(), tap);
    assert_eq!(be.bridge(), br.0);
    assert_eq!(be.describe(), format!("bridge {} (tap {tap})", br.0));
    assert_eq!(master_of(&tap).as_deref(), Some(br.0.as_str()));
    assert!(be.tap().is_up().unwrap());
    assert!(be.tap().created() && be.tap().vnet_hdr());
    drop(be);
    assert!(!iface_exists(&tap), "the tap vanishes with the backend");
    assert!(iface_exists(&br.0), "the bridge is left alone");
    assert!(std::fs::read_dir(format!("/sys/class/net/{}/brif", br.0))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn default_tap_name_and_existing_name() {
    if !privileged("default_tap_name_and_existing_name") {
        return;
    }
    let br = make_bridge("b");
    let be = BridgeBackend::open(&br.0, None).unwrap();
    // Kernel-chosen name: checked by ifindex, and no name-based cleanup guard
    // (another test may get the name once ours is gone).
    let tap = be.ifname().to_string();
    let index = ifindex_of(&tap);
    assert!(tap.starts_with("tapir"), "{tap}");
    assert_eq!(master_of(&tap).as_deref(), Some(br.0.as_str()));
    // The name is taken now: a second backend may not reuse it.
    let e = BridgeBackend::open(&br.0, Some(&tap)).unwrap_err();
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
    drop(be);
    assert!(iface_gone(&tap, index), "{tap} is still there");
}

#[test]
fn clear_errors() {
    if !privileged("clear_errors") {
        return;
    }
    let missing = unique("tbr", "m");
    let e = BridgeBackend::open(&missing, None).unwrap_err();
    assert_eq!(e.to_string(), format!("bridge '{missing}' does not exist"));
    let e = BridgeBackend::open("lo", None).unwrap_err();
    assert_eq!(e.to_string(), "'lo' is not a bridge");

    let br = make_bridge("p");
    let tap = unique("tbt", "p");
    let _tap_guard = LinkGuard(tap.clone());
    let (b, t) = (br.0.clone(), tap.clone());
    let e = without_net_admin(move || BridgeBackend::open(&b, Some(&t)).map(|_| ()).unwrap_err());
    assert_eq!(
        e.to_string(),
        "creating a tap needs CAP_NET_ADMIN (run as root or grant cap_net_admin)"
    );
    assert!(!iface_exists(&tap));
}
