//! The plan: which cells (model × backend), which VMMs, and the order of
//! the runs (alternating repetitions).

use serde::{Deserialize, Serialize};

use crate::Error;

/// A NIC model, as tapir's `--nic model=` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Virtio,
    E1000,
    Rtl8139,
}

impl Model {
    pub const ALL: [Model; 3] = [Model::Virtio, Model::E1000, Model::Rtl8139];

    pub fn name(self) -> &'static str {
        match self {
            Model::Virtio => "virtio",
            Model::E1000 => "e1000",
            Model::Rtl8139 => "rtl8139",
        }
    }

    /// QEMU's `-device` for the same model.
    pub fn qemu_device(self) -> &'static str {
        match self {
            Model::Virtio => "virtio-net-pci",
            Model::E1000 => "e1000",
            Model::Rtl8139 => "rtl8139",
        }
    }
}

/// A backend: user-mode NAT, a tap, or a macvtap (direct attach to a
/// veth whose far end is the "namespace host").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    User,
    Tap,
    Passthrough,
}

impl Net {
    pub const ALL: [Net; 3] = [Net::User, Net::Tap, Net::Passthrough];

    pub fn name(self) -> &'static str {
        match self {
            Net::User => "user",
            Net::Tap => "tap",
            Net::Passthrough => "passthrough",
        }
    }
}

/// Which VMM boots the guest: this tapir, another tapir binary
/// (`--baseline`), QEMU with vhost off, QEMU with vhost on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    Baseline,
    Tapir,
    Qemu,
    #[serde(rename = "qemu-vhost")]
    QemuVhost,
}

impl Vmm {
    /// Every VMM in the order of the table's columns.
    pub const ALL: [Vmm; 4] = [Vmm::Baseline, Vmm::Tapir, Vmm::Qemu, Vmm::QemuVhost];

    pub fn name(self) -> &'static str {
        match self {
            Vmm::Baseline => "baseline",
            Vmm::Tapir => "tapir",
            Vmm::Qemu => "qemu",
            Vmm::QemuVhost => "qemu-vhost",
        }
    }

    pub fn is_qemu(self) -> bool {
        matches!(self, Vmm::Qemu | Vmm::QemuVhost)
    }

    /// Whether this VMM has a column in `cell`: vhost-net serves virtio
    /// over a tap (a macvtap's /dev/tapN is one), not libslirp.
    pub fn serves(self, cell: Cell) -> bool {
        match self {
            Vmm::QemuVhost => cell.model == Model::Virtio && cell.net != Net::User,
            _ => true,
        }
    }
}

/// One model over one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub model: Model,
    pub net: Net,
}

impl Cell {
    pub fn label(&self) -> String {
        format!("{}/{}", self.model.name(), self.net.name())
    }
}

/// One boot of one guest: a cell, a VMM, a repetition (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub cell: Cell,
    pub vmm: Vmm,
    pub rep: u32,
}

/// Parses a comma-separated list with `one`, rejecting empty lists and
/// repeated entries (order kept).
fn parse_list<T: PartialEq + Copy>(
    flag: &'static str,
    s: &str,
    one: impl Fn(&str) -> Option<T>,
    valid: &'static str,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for word in s.split(',').map(str::trim) {
        let v = one(word).ok_or_else(|| Error::BadList {
            flag,
            value: word.to_string(),
            valid,
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// `--models virtio,e1000,rtl8139`.
pub fn parse_models(s: &str) -> Result<Vec<Model>, Error> {
    parse_list(
        "--models",
        s,
        |w| Model::ALL.into_iter().find(|m| m.name() == w),
        "virtio, e1000, rtl8139",
    )
}

/// `--net user,tap,passthrough`.
pub fn parse_nets(s: &str) -> Result<Vec<Net>, Error> {
    parse_list(
        "--net",
        s,
        |w| Net::ALL.into_iter().find(|n| n.name() == w),
        "user, tap, passthrough",
    )
}

/// `--against qemu,qemu-vhost`.
pub fn parse_against(s: &str) -> Result<Vec<Vmm>, Error> {
    parse_list(
        "--against",
        s,
        |w| {
            [Vmm::Qemu, Vmm::QemuVhost]
                .into_iter()
                .find(|v| v.name() == w)
        },
        "qemu, qemu-vhost",
    )
}

/// The columns: the baseline (when given), tapir, then the VMMs it is
/// measured against, always in [`Vmm::ALL`]'s order.
pub fn vmms(baseline: bool, against: &[Vmm]) -> Vec<Vmm> {
    Vmm::ALL
        .into_iter()
        .filter(|v| match v {
            Vmm::Baseline => baseline,
            Vmm::Tapir => true,
            _ => against.contains(v),
        })
        .collect()
}

/// The cells, models outer and backends inner, in the order given.
pub fn cells(models: &[Model], nets: &[Net]) -> Vec<Cell> {
    models
        .iter()
        .flat_map(|&model| nets.iter().map(move |&net| Cell { model, net }))
        .collect()
}

/// Every run in the order it happens (a VMM only in the cells it
/// [serves](Vmm::serves)). Repetition 1 goes through the
/// (cell, VMM) pairs front to back, repetition 2 back to front, and so on:
/// whatever drifts on the host during the benchmark (another job, a warm
/// cache) falls on every pair alike.
pub fn runs(cells: &[Cell], vmms: &[Vmm], reps: u32) -> Vec<Run> {
    let pairs: Vec<(Cell, Vmm)> = cells
        .iter()
        .flat_map(|&c| {
            vmms.iter()
                .filter(move |v| v.serves(c))
                .map(move |&v| (c, v))
        })
        .collect();
    let mut out = Vec::with_capacity(pairs.len() * reps as usize);
    for rep in 1..=reps {
        let forward = rep % 2 == 1;
        let ordered: Box<dyn Iterator<Item = &(Cell, Vmm)>> = if forward {
            Box::new(pairs.iter())
        } else {
            Box::new(pairs.iter().rev())
        };
        out.extend(ordered.map(|&(cell, vmm)| Run { cell, vmm, rep }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_reject() {
        assert_eq!(
            parse_models("virtio,e1000,virtio").unwrap(),
            vec![Model::Virtio, Model::E1000]
        );
        assert_eq!(parse_nets("tap").unwrap(), vec![Net::Tap]);
        let e = parse_models("virtio,ne2k").unwrap_err().to_string();
        assert!(e.contains("ne2k") && e.contains("--models"), "{e}");
        assert!(parse_nets("").is_err());
    }

    #[test]
    fn repetitions_alternate() {
        let c = cells(&[Model::Virtio, Model::E1000], &[Net::User]);
        let r = runs(&c, &[Vmm::Tapir, Vmm::Qemu], 3);
        let names: Vec<String> = r
            .iter()
            .map(|r| format!("{}:{}:{}", r.rep, r.cell.model.name(), r.vmm.name()))
            .collect();
        assert_eq!(
            names,
            [
                "1:virtio:tapir",
                "1:virtio:qemu",
                "1:e1000:tapir",
                "1:e1000:qemu",
                "2:e1000:qemu",
                "2:e1000:tapir",
                "2:virtio:qemu",
                "2:virtio:tapir",
                "3:virtio:tapir",
                "3:virtio:qemu",
                "3:e1000:tapir",
                "3:e1000:qemu",
            ]
        );
    }

    #[test]
    fn cells_models_outer() {
        let c = cells(&[Model::Virtio, Model::Rtl8139], &[Net::User, Net::Tap]);
        let l: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            l,
            ["virtio/user", "virtio/tap", "rtl8139/user", "rtl8139/tap"]
        );
    }

    #[test]
    fn columns_in_table_order() {
        let a = parse_against("qemu-vhost,qemu").unwrap();
        assert_eq!(
            vmms(true, &a),
            [Vmm::Baseline, Vmm::Tapir, Vmm::Qemu, Vmm::QemuVhost]
        );
        assert_eq!(vmms(false, &[]), [Vmm::Tapir]);
        assert_eq!(vmms(false, &[Vmm::QemuVhost]), [Vmm::Tapir, Vmm::QemuVhost]);
        let e = parse_against("qemu,kvmtool").unwrap_err().to_string();
        assert!(e.contains("kvmtool") && e.contains("qemu-vhost"), "{e}");
        assert_eq!(parse_nets("passthrough").unwrap(), [Net::Passthrough]);
    }

    #[test]
    fn vhost_only_for_virtio_over_a_tap_or_macvtap() {
        let c = cells(
            &[Model::Virtio, Model::E1000],
            &[Net::User, Net::Tap, Net::Passthrough],
        );
        let v = vmms(false, &[Vmm::Qemu, Vmm::QemuVhost]);
        let r = runs(&c, &v, 1);
        let vhost: Vec<String> = r
            .iter()
            .filter(|r| r.vmm == Vmm::QemuVhost)
            .map(|r| r.cell.label())
            .collect();
        assert_eq!(vhost, ["virtio/tap", "virtio/passthrough"]);
        // Every cell has tapir and qemu.
        assert_eq!(r.iter().filter(|r| r.vmm == Vmm::Qemu).count(), 6);
        assert_eq!(r.len(), 6 + 6 + 2);
    }

    #[test]
    fn baseline_alternates_with_the_rest() {
        let c = cells(&[Model::Virtio], &[Net::Tap]);
        let v = vmms(true, &[Vmm::Qemu]);
        let names: Vec<String> = runs(&c, &v, 2)
            .iter()
            .map(|r| format!("{}:{}", r.rep, r.vmm.name()))
            .collect();
        assert_eq!(
            names,
            [
                "1:baseline",
                "1:tapir",
                "1:qemu",
                "2:qemu",
                "2:tapir",
                "2:baseline"
            ]
        );
    }

    #[test]
    fn vmm_names_round_trip_in_json() {
        for v in Vmm::ALL {
            let j = serde_json::to_string(&v).unwrap();
            assert_eq!(j, format!("\"{}\"", v.name()));
            assert_eq!(serde_json::from_str::<Vmm>(&j).unwrap(), v);
        }
    }
}
