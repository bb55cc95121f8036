//! "Guest sees": what differs between tapir's device and QEMU's for one
//! model and backend (offloads, interrupt mitigation, vhost, NAT), from
//! crates/nic/src, docs/nic-*.md, docs/backend-*.md and QEMU's
//! hw/net/{virtio-net,e1000,rtl8139}.c.

use crate::plan::{Cell, Model, Net, Vmm};

const VIRTIO_IRQ: &str =
    "interrupts: both MSI-X with EVENT_IDX, no other mitigation (tapir 3 vectors, QEMU 4)";
const E1000_IRQ: [&str; 3] = [
    "interrupts: tapir honours ITR (assertions ITR x 256 ns apart; RDTR/RADV/TIDV/TADV stored, not",
    "            modelled); QEMU (mitigation=on, its default) the least of ITR, RADV (if RDTR) and TADV",
    "            (if IDE), never under 500 x 256 ns",
];
const RTL_IRQ: [&str; 2] = [
    "interrupts: IntrMitigate is modelled by neither; tapir moves the line once per worker pass and",
    "            completes a small frame sent from the receive poll before the doorbell write returns",
];

/// The lines for `cell`, tapir against the QEMU columns in `vmms` (qemu:
/// vhost off; qemu-vhost: vhost on).
pub fn guest_sees(cell: Cell, vmms: &[Vmm]) -> Vec<&'static str> {
    // A macvtap's /dev/tapN is a tap to both VMMs (vnet header,
    // TUNSETOFFLOAD): the device is the same as over a tap.
    let nat = cell.net == Net::User;
    let mut v: Vec<&'static str> = match (cell.model, nat) {
        (Model::Virtio, false) => {
            let mut v = vec![
                "offloads:   both offer checksum and TSO4/TSO6/ECN both ways through the tap's vnet header;",
                "            QEMU also offers UFO (where the tap takes it) and a control queue, tapir neither",
                VIRTIO_IRQ,
                "data path:  tapir: its NIC worker thread (ioeventfd kicks); qemu: QEMU's main loop (vhost=off)",
            ];
            if vmms.contains(&Vmm::QemuVhost) {
                v.push("            qemu-vhost: the kernel's vhost-net worker (vhost=on), whose CPU time counts as QEMU's");
            }
            v
        }
        (Model::Virtio, true) => vec![
            "offloads:   tapir's NAT takes checksum and TSO4 (CSUM, HOST_TSO4) and sends TCP segments of up",
            "            to 64 KiB (GUEST_CSUM, GUEST_TSO4); QEMU's virtio-net has no vnet header to libslirp,",
            "            so it offers no checksum or TSO: 1514-byte frames, checksummed by the guest, both ways",
            VIRTIO_IRQ,
        ],
        (Model::E1000, false) => {
            let mut v = vec![
                "offloads:   tapir asks the tap for checksum offload and TSO: the guest's TSO/checksum contexts go",
                "            out as one GSO frame, 64 KiB frames from the host are cut up by tapir, and RXCSUM",
                "            reports IP/TCP checksums good (Linux skips its own pass); QEMU's e1000 uses no vnet",
                "            header: TSO and checksums in software, 1514-byte frames in, IXSM (no checksum status)",
            ];
            v.extend(E1000_IRQ);
            v.push("            tapir walks the rings on its NIC worker thread");
            v
        }
        (Model::E1000, true) => {
            let mut v = vec![
                "offloads:   tapir's NAT takes the guest's TSO/checksum contexts as one frame and hands the model TCP",
                "            segments of up to 64 KiB, which it cuts up and reports good (RXCSUM); QEMU's e1000 and",
                "            libslirp exchange 1514-byte frames (TSO and checksums in software, IXSM on receive)",
            ];
            v.extend(E1000_IRQ);
            v
        }
        (Model::Rtl8139, false) => {
            let mut v = vec![
                "offloads:   (8139cp) tapir asks the tap for checksum offload and TSO: 64 KiB frames from the host",
                "            are cut up by tapir, C+ large send goes out as one GSO frame, C+ TCP checksum requests",
                "            as partial checksums, and receive descriptors carry checksum status (Linux skips its",
                "            pass); QEMU's rtl8139 uses no vnet header: large send and checksums in software, no",
                "            receive checksum status",
            ];
            v.extend(RTL_IRQ);
            v
        }
        (Model::Rtl8139, true) => {
            let mut v = vec![
                "offloads:   (8139cp) tapir's NAT hands the model TCP segments of up to 64 KiB, cut up there with",
                "            checksum status in the descriptors, and takes C+ TCP checksum requests as partial",
                "            checksums; QEMU's rtl8139 and libslirp exchange 1514-byte frames, no checksum status",
            ];
            v.extend(RTL_IRQ);
            v
        }
    };
    if cell.net == Net::Passthrough {
        v.push("backend:    both a macvtap (mode bridge) on the same veth: tapir its own (net=passthrough,");
        v.push("            host=), QEMU -netdev tap,fd= on one the benchmark makes; same offloads as a tap");
    }
    if cell.net == Net::User {
        v.push("NAT:        tapir's own (crates/net-user, smoltcp for TCP) against QEMU's libslirp; no vhost");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_has_notes() {
        for model in Model::ALL {
            for net in Net::ALL {
                let n = guest_sees(Cell { model, net }, &[Vmm::Tapir, Vmm::Qemu]);
                assert!(n[0].starts_with("offloads:"), "{model:?} {net:?}");
                assert!(n.iter().any(|l| l.starts_with("interrupts:")));
                assert_eq!(n.iter().any(|l| l.starts_with("NAT:")), net == Net::User);
                assert_eq!(
                    n.iter().any(|l| l.starts_with("backend:")),
                    net == Net::Passthrough
                );
            }
        }
    }

    #[test]
    fn vhost_said_only_with_its_column() {
        let cell = Cell {
            model: Model::Virtio,
            net: Net::Passthrough,
        };
        let with = guest_sees(cell, &[Vmm::Tapir, Vmm::Qemu, Vmm::QemuVhost]);
        let without = guest_sees(cell, &[Vmm::Tapir, Vmm::Qemu]);
        assert!(with.iter().any(|l| l.contains("vhost=on")));
        assert!(!without.iter().any(|l| l.contains("vhost=on")));
        assert!(with[0].contains("tap's vnet header"));
    }
}
