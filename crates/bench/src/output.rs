//! The results as a table (stdout) and as JSON (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::notes::guest_sees;
use crate::plan::{Cell, Vmm};
use crate::stats::{summarize, Summary};
use crate::{Error, Metric, Results};

/// One VMM's figures in one cell, over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct CellSummary {
    pub cell: Cell,
    pub vmm: Vmm,
    /// Repetitions run, and those measured completely.
    pub runs: usize,
    pub complete: usize,
    /// Metric key -> median and spread over the repetitions that gave it.
    pub figures: BTreeMap<&'static str, Summary>,
}

impl CellSummary {
    pub fn get(&self, m: Metric) -> Option<&Summary> {
        self.figures.get(m.key())
    }
}

/// The cells and VMMs in the order they first ran.
fn pairs(results: &Results) -> Vec<(Cell, Vmm)> {
    let mut out: Vec<(Cell, Vmm)> = Vec::new();
    for r in &results.runs {
        if !out.contains(&(r.run.cell, r.run.vmm)) {
            out.push((r.run.cell, r.run.vmm));
        }
    }
    // Cells in first-run order, the VMMs in the columns' order within each.
    let mut cells: Vec<Cell> = Vec::new();
    for (c, _) in &out {
        if !cells.contains(c) {
            cells.push(*c);
        }
    }
    let mut sorted = Vec::new();
    for c in cells {
        for v in Vmm::ALL {
            if out.contains(&(c, v)) {
                sorted.push((c, v));
            }
        }
    }
    sorted
}

/// Medians and spreads per cell and VMM.
pub fn summaries(results: &Results) -> Vec<CellSummary> {
    pairs(results)
        .into_iter()
        .map(|(cell, vmm)| {
            let runs: Vec<_> = results
                .runs
                .iter()
                .filter(|r| r.run.cell == cell && r.run.vmm == vmm)
                .collect();
            let mut figures = BTreeMap::new();
            for m in Metric::ALL {
                let vals: Vec<f64> = runs.iter().filter_map(|r| m.get(&r.metrics)).collect();
                if let Some(s) = summarize(&vals) {
                    figures.insert(m.key(), s);
                }
            }
            CellSummary {
                cell,
                vmm,
                runs: runs.len(),
                complete: runs.iter().filter(|r| r.error.is_none()).count(),
                figures,
            }
        })
        .collect()
}

/// A figure with as many decimals as it is worth.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn figure(s: Option<&Summary>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.n > 1 => format!("{} ({}-{})", num(s.median), num(s.min), num(s.max)),
        Some(s) => num(s.median),
    }
}

const LABEL_W: usize = 30;
const COL_W: usize = 22;
const RATIO_W: usize = 11;

/// The table printed on stdout: per cell one column per VMM that ran
/// there and one ratio, tapir/X, per other VMM; under it, with a QEMU
/// column, what the guest sees differently.
pub fn table(results: &Results) -> String {
    let against_qemu = results.runs.iter().any(|r| r.run.vmm.is_qemu());
    let m = &results.meta;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "tapir bench: {} repetition(s), {} s per transfer, alternating order; medians (min-max over repetitions)",
        m.reps, m.secs
    );
    let _ = writeln!(t, "  ran on:  {}", m.ran_on);
    let _ = writeln!(t, "  tapir:   {}", m.tapir);
    if !m.baseline.is_empty() {
        let _ = writeln!(t, "  baseline: {}", m.baseline);
    }
    if against_qemu {
        let _ = writeln!(
            t,
            "  qemu:    {} (-accel kvm -cpu host; qemu: vhost=off, qemu-vhost: vhost=on)",
            m.qemu
        );
    }
    let _ = writeln!(t, "  iperf3:  {}", m.iperf3);
    let _ = writeln!(
        t,
        "  guest:   {} MiB, 1 vCPU, {}",
        crate::guest::MEM_MIB,
        m.kernel
    );
    let _ = writeln!(
        t,
        "  exits:   {} (perf: kvm:kvm_exit of the VMM's threads; debugfs: global kvm/exits; none: n/a)",
        m.exits_method
    );
    let sums = summaries(results);
    let mut cells: Vec<Cell> = Vec::new();
    for s in &sums {
        if !cells.contains(&s.cell) {
            cells.push(s.cell);
        }
    }
    for cell in cells {
        let cols: Vec<&CellSummary> = sums.iter().filter(|s| s.cell == cell).collect();
        let tapir = cols.iter().find(|s| s.vmm == Vmm::Tapir);
        let others: Vec<&&CellSummary> = match tapir {
            Some(_) => cols.iter().filter(|s| s.vmm != Vmm::Tapir).collect(),
            None => Vec::new(),
        };
        t.push('\n');
        let mut head = format!("{:<LABEL_W$}", cell.label());
        for c in &cols {
            let _ = write!(head, " {:>COL_W$}", c.vmm.name());
        }
        for o in &others {
            let _ = write!(head, " {:>RATIO_W$}", format!("tapir/{}", o.vmm.name()));
        }
        let _ = writeln!(t, "{}", head.trim_end());
        let mut line = format!("{:<LABEL_W$}", "  runs complete");
        for c in &cols {
            let _ = write!(line, " {:>COL_W$}", format!("{}/{}", c.complete, c.runs));
        }
        let _ = writeln!(t, "{}", line.trim_end());
        for metric in Metric::ALL {
            let mut line = format!("{:<LABEL_W$}", format!("  {}", metric.label()));
            for c in &cols {
                let _ = write!(line, " {:>COL_W$}", figure(c.get(metric)));
            }
            for (a, b) in tapir
                .iter()
                .flat_map(|a| others.iter().map(move |b| (a, b)))
            {
                let ratio = match (a.get(metric), b.get(metric)) {
                    (Some(a), Some(b)) if b.median != 0.0 => format!("{:.2}", a.median / b.median),
                    _ => "n/a".into(),
                };
                let w = RATIO_W.max(b.vmm.name().len() + "tapir/".len());
                let _ = write!(line, " {ratio:>w$}");
            }
            let _ = writeln!(t, "{}", line.trim_end());
        }
        let vmms: Vec<Vmm> = cols.iter().map(|c| c.vmm).collect();
        if vmms.iter().any(|v| v.is_qemu()) {
            let _ = writeln!(t, "  guest sees (tapir vs QEMU):");
            for l in guest_sees(cell, &vmms) {
                let _ = writeln!(t, "    {l}");
            }
        }
    }
    let failures: Vec<_> = results.runs.iter().filter(|r| r.error.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(t, "\nincomplete runs (their other figures still count):");
        for r in failures {
            let _ = writeln!(
                t,
                "  {} {} rep {}: {} (log {})",
                r.run.cell.label(),
                r.run.vmm.name(),
                r.run.rep,
                r.error.as_deref().unwrap_or(""),
                r.log
            );
        }
    }
    if !results.notes.is_empty() {
        let _ = writeln!(t, "\nnotes:");
        for n in &results.notes {
            let _ = writeln!(t, "  {n}");
        }
    }
    let _ = writeln!(
        t,
        "\nhigher is better for throughput and packet rates; lower for latency, exits and CPU (ratios: tapir/X)"
    );
    t
}

#[derive(Serialize)]
struct JsonOut<'a> {
    meta: &'a crate::Meta,
    summary: Vec<CellSummary>,
    runs: &'a [crate::RunResult],
    notes: &'a [String],
}

/// The `--json` document: meta, the summaries, every run's figures.
pub fn json(results: &Results) -> Result<String, Error> {
    let doc = JsonOut {
        meta: &results.meta,
        summary: summaries(results),
        runs: &results.runs,
        notes: &results.notes,
    };
    serde_json::to_string_pretty(&doc).map_err(|e| Error::Parse {
        what: "results",
        why: e.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{Model, Net, Run};
    use crate::{Meta, Metrics, RunResult};

    /// A made-up result set: virtio/user and e1000/tap, tapir and qemu,
    /// two repetitions; qemu's e1000 fails its second.
    pub(crate) fn sample() -> Results {
        let mut runs = Vec::new();
        let cells = [
            Cell {
                model: Model::Virtio,
                net: Net::User,
            },
            Cell {
                model: Model::E1000,
                net: Net::Tap,
            },
        ];
        for rep in 1..=2u32 {
            for (i, cell) in cells.iter().enumerate() {
                for vmm in [Vmm::Tapir, Vmm::Qemu] {
                    let base = if vmm == Vmm::Tapir { 200.0 } else { 100.0 } * (i + 1) as f64;
                    let failed = vmm == Vmm::Qemu && i == 1 && rep == 2;
                    let metrics = Metrics {
                        tcp_h2g_mbps: Some(base + f64::from(rep) * 10.0),
                        tcp_g2h_mbps: if failed { None } else { Some(base / 2.0) },
                        udp_h2g_kpps: Some(12.5),
                        udp_g2h_kpps: Some(8.25),
                        ping_p50_ms: Some(0.5),
                        ping_p99_ms: Some(1.5),
                        tcp_rr_p50_us: Some(250.0),
                        tcp_rr_p99_us: Some(900.0),
                        exits_per_mb: None,
                        cpu_s_per_gb: Some(3.0),
                    };
                    runs.push(RunResult {
                        run: Run {
                            cell: *cell,
                            vmm,
                            rep,
                        },
                        metrics,
                        error: failed.then(|| "qemu died during TCP guest->host".to_string()),
                        log: format!(
                            "/tmp/x/{}-{}-{rep}.log",
                            cell.label().replace('/', "-"),
                            vmm.name()
                        ),
                    });
                }
            }
        }
        Results {
            meta: Meta {
                ran_on: "test".into(),
                tapir: "tapir".into(),
                qemu: "QEMU 7.2".into(),
                iperf3: "iperf 3.12".into(),
                kernel: "vmlinuz".into(),
                exits_method: "none".into(),
                secs: 2,
                reps: 2,
                baseline: String::new(),
            },
            runs,
            notes: vec!["the nested L1 VM was lost after run 3 of 8".into()],
        }
    }

    #[test]
    fn summary_medians_and_counts() {
        let s = summaries(&sample());
        assert_eq!(s.len(), 4);
        let q = &s[3];
        assert_eq!((q.cell.model, q.vmm), (Model::E1000, Vmm::Qemu));
        assert_eq!((q.runs, q.complete), (2, 1));
        let tcp = q.get(Metric::TcpH2g).unwrap();
        assert_eq!(
            (tcp.median, tcp.min, tcp.max, tcp.n),
            (215.0, 210.0, 220.0, 2)
        );
        assert_eq!(q.get(Metric::TcpG2h).unwrap().n, 1);
        assert!(q.get(Metric::ExitsPerMb).is_none());
    }

    #[test]
    fn table_rows_ratios_notes_failures() {
        let t = table(&sample());
        let line = |start: &str, after: &str| -> String {
            let from = t.find(after).unwrap();
            t[from..]
                .lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap()
                .to_string()
        };
        // virtio/user: tapir 210/220 -> 215 (210-220), qemu 110/120 -> 115.
        let l = line("TCP host->guest", "virtio/user");
        assert!(
            l.contains("215 (210-220)") && l.contains("115 (110-120)"),
            "{l}"
        );
        assert!(l.trim_end().ends_with("1.87"), "{l}");
        let l = line("VM exits per MB", "virtio/user");
        assert!(l.contains("n/a"), "{l}");
        assert!(line("runs complete", "e1000/tap").contains("1/2"));
        assert!(t.contains("guest sees (tapir vs QEMU):"));
        assert!(t.contains("NAT:        tapir's own"));
        assert!(t.contains("e1000/tap qemu rep 2: qemu died during TCP guest->host"));
        assert!(t.contains("notes:\n  the nested L1 VM was lost after run 3 of 8\n"));
        let head = t.lines().find(|l| l.starts_with("virtio/user")).unwrap();
        assert!(head.contains("tapir") && head.contains("qemu") && head.contains("tapir/qemu"));
        // Without qemu: no notes.
        let mut r = sample();
        r.runs.retain(|r| r.run.vmm == Vmm::Tapir);
        let t = table(&r);
        assert!(!t.contains("guest sees") && !t.contains("tapir/qemu"));
    }

    /// The sample's virtio/user cell as virtio/tap with a baseline and a
    /// qemu-vhost column added (made-up figures).
    fn with_baseline_and_vhost() -> Results {
        let mut r = sample();
        r.runs.retain(|r| r.run.cell.model == Model::Virtio);
        let mut extra = Vec::new();
        for run in &mut r.runs {
            run.run.cell.net = Net::Passthrough;
            for (vmm, f) in [(Vmm::Baseline, 0.5), (Vmm::QemuVhost, 4.0)] {
                if run.run.vmm == Vmm::Tapir {
                    let mut x = run.clone();
                    x.run.vmm = vmm;
                    x.metrics.tcp_h2g_mbps = x.metrics.tcp_h2g_mbps.map(|v| v * f);
                    extra.push(x);
                }
            }
        }
        // Measured first: the table still puts them in column order.
        extra.extend(r.runs);
        r.runs = extra;
        r.meta.baseline = "/tmp/old/tapir".into();
        r
    }

    #[test]
    fn baseline_first_vhost_last_ratios_for_each() {
        let r = with_baseline_and_vhost();
        let t = table(&r);
        let head = t
            .lines()
            .find(|l| l.starts_with("virtio/passthrough"))
            .unwrap();
        let words: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "virtio/passthrough",
                "baseline",
                "tapir",
                "qemu",
                "qemu-vhost",
                "tapir/baseline",
                "tapir/qemu",
                "tapir/qemu-vhost"
            ]
        );
        // tapir 215, baseline 107.5, qemu 115, qemu-vhost 860.
        let l = t
            .lines()
            .find(|l| l.trim_start().starts_with("TCP host->guest"))
            .unwrap();
        assert!(
            l.trim_end().ends_with("2.00        1.87             0.25"),
            "{l}"
        );
        assert!(t.contains("  baseline: /tmp/old/tapir\n"));
        assert!(t.contains("qemu-vhost: the kernel's vhost-net worker"));
        assert!(t.contains("backend:    both a macvtap"));
        let s = summaries(&r);
        let order: Vec<Vmm> = s.iter().map(|s| s.vmm).collect();
        assert_eq!(order, Vmm::ALL);
    }

    #[test]
    fn json_round_trip() {
        let text = json(&sample()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["summary"][0]["figures"]["tcp_h2g_mbps"]["median"], 215.0);
        assert_eq!(v["runs"].as_array().unwrap().len(), 8);
        assert_eq!(v["summary"][0]["cell"]["model"], "virtio");
        assert_eq!(v["meta"]["secs"], 2);
        // `tapir bench --report FILE` reads it back as the results.
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.456), "0.46");
    }
}
