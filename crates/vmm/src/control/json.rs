//! The control socket's machine-readable replies (`info --json`,
//! `stats NAME`): one JSON object per line. Field names are the counters'
//! names everywhere (the `info` line uses the same ones).

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};
use tapir_config::MacAddr;

use super::command::NicEntry;
use crate::vcpu::ExitCounters;

/// The NIC counters that count frames lost, by reason.
const DROPS: [&str; 5] = [
    "tx_dropped",
    "tx_link_down",
    "rx_dropped",
    "rx_link_down",
    "rx_bad_buffers",
];

fn object<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect::<Map<_, _>>(),
    )
}

/// One NIC: name, model, backend, MAC, link, `counters` (frames, bytes,
/// stalls), `drops` (by reason), `interrupts`, `exits` (the guest's
/// accesses to its PCI function), `pcap` (null when not capturing).
pub fn nic(n: &NicEntry) -> Value {
    let stats = n.stats.snapshot();
    let (drops, counters): (Vec<_>, Vec<_>) = stats.iter().partition(|(k, _)| DROPS.contains(k));
    let pcap = n.pcap.current().map(|(path, c)| {
        let p = c.snapshot();
        json!({
            "file": path.to_string_lossy(),
            "records": p.records,
            "bytes": p.bytes,
            "rotations": p.rotations,
            "unsegmented": p.unsegmented,
            "stopped": p.stopped,
        })
    });
    json!({
        "name": n.name,
        "model": n.model,
        "backend": n.backend,
        "mac": MacAddr(n.mac).to_string(),
        "link": if n.link.is_up() { "up" } else { "down" },
        "counters": object(counters.into_iter().copied()),
        "drops": object(drops.into_iter().copied()),
        "interrupts": {
            "intx": n.device.intx.load(Ordering::Relaxed),
            "msi": n.device.msi.load(Ordering::Relaxed),
        },
        "exits": object(n.device.access.snapshot().named()),
        "pcap": pcap,
    })
}

/// Every NIC, and the vCPUs' exits to tapir by kind.
pub fn info(nics: &[NicEntry], exits: &ExitCounters) -> Value {
    json!({
        "nics": nics.iter().map(nic).collect::<Vec<_>>(),
        "vcpu_exits": object(exits.snapshot()),
    })
}
