//! The `--chart` SVG, written by hand: two bar panels, throughput (TCP
//! each way) and latency (ping and TCP request/response p50), one group
//! of bars per model/backend and VMM, each bar the median with a whisker
//! for the spread (min-max). A PNG beside it where rsvg-convert exists.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::output::{num, summaries, CellSummary};
use crate::stats::Summary;
use crate::{Metric, Results};

const GROUP_W: f64 = 110.0;
const BAR_W: f64 = 36.0;
const LEFT: f64 = 70.0;
const PANEL_H: f64 = 220.0;
const COLORS: [&str; 2] = ["#3b6fb6", "#e08a2c"];

/// One panel: a title and two series (metric, legend label, scale).
struct Panel {
    title: &'static str,
    series: [(Metric, &'static str, f64); 2],
}

const PANELS: [Panel; 2] = [
    Panel {
        title: "TCP throughput (Mbit/s, higher is better)",
        series: [
            (Metric::TcpH2g, "host->guest", 1.0),
            (Metric::TcpG2h, "guest->host", 1.0),
        ],
    },
    Panel {
        title: "round-trip latency p50 (us, lower is better)",
        series: [
            (Metric::PingP50, "ping", 1000.0),
            (Metric::RrP50, "TCP request/response", 1.0),
        ],
    },
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn scaled(s: Option<&Summary>, k: f64) -> Option<(f64, f64, f64)> {
    s.map(|s| (s.median * k, s.min * k, s.max * k))
}

fn panel(out: &mut String, p: &Panel, groups: &[CellSummary], top: f64, width: f64) {
    let max = groups
        .iter()
        .flat_map(|g| {
            p.series
                .iter()
                .filter_map(|(m, _, k)| scaled(g.get(*m), *k))
        })
        .map(|(_, _, hi)| hi)
        .fold(0.0_f64, f64::max);
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let base = top + 50.0 + PANEL_H;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" class="title">{}</text>"#,
        top + 16.0,
        esc(p.title)
    );
    // Legend.
    for (i, (_, name, _)) in p.series.iter().enumerate() {
        let x = LEFT + i as f64 * 170.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            top + 24.0,
            COLORS[i],
            x + 16.0,
            top + 34.0,
            esc(name)
        );
    }
    // Axis and grid: 0, 1/2 and the top.
    for frac in [0.0, 0.5, 1.0] {
        let y = base - frac * PANEL_H;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ccc"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            width - 10.0,
            LEFT - 6.0,
            y + 4.0,
            if frac == 0.0 {
                "0".to_string()
            } else {
                num(frac * max)
            }
        );
    }
    for (gi, g) in groups.iter().enumerate() {
        let gx = LEFT + 10.0 + gi as f64 * GROUP_W;
        for (si, (metric, name, k)) in p.series.iter().enumerate() {
            let x = gx + si as f64 * (BAR_W + 4.0);
            match scaled(g.get(*metric), *k) {
                Some((med, lo, hi)) => {
                    let h = med / max * PANEL_H;
                    let _ = writeln!(
                        out,
                        r#"<rect class="bar" x="{x}" y="{:.1}" width="{BAR_W}" height="{h:.1}" fill="{}"><title>{} {} {}: {}</title></rect>"#,
                        base - h,
                        COLORS[si],
                        esc(&g.cell.label()),
                        g.vmm.name(),
                        esc(name),
                        num(med)
                    );
                    if hi > lo {
                        let cx = x + BAR_W / 2.0;
                        let _ = writeln!(
                            out,
                            r##"<line class="spread" x1="{cx}" y1="{:.1}" x2="{cx}" y2="{:.1}" stroke="#222"/>"##,
                            base - hi / max * PANEL_H,
                            base - lo / max * PANEL_H
                        );
                    }
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{:.1}" text-anchor="middle" class="value">{}</text>"#,
                        x + BAR_W / 2.0,
                        base - hi.max(med) / max * PANEL_H - 4.0,
                        num(med)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{}" text-anchor="middle" class="value">n/a</text>"#,
                        x + BAR_W / 2.0,
                        base - 4.0
                    );
                }
            }
        }
        let cx = gx + BAR_W + 2.0;
        let _ = writeln!(
            out,
            r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text><text x="{cx}" y="{}" text-anchor="middle" class="vmm">{}</text>"#,
            base + 16.0,
            esc(&g.cell.label()),
            base + 30.0,
            g.vmm.name()
        );
    }
}

/// The chart for `results`.
pub fn chart(results: &Results) -> String {
    let groups = summaries(results);
    let width = (LEFT + 20.0 + groups.len() as f64 * GROUP_W).max(640.0);
    let panel_total = PANEL_H + 100.0;
    let height = 50.0 + panel_total * PANELS.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    out += "<style>.title{font-size:13px;font-weight:bold}.value{font-size:10px}.vmm{fill:#555}</style>\n";
    out += r#"<rect width="100%" height="100%" fill="white"/>"#;
    out.push('\n');
    let m = &results.meta;
    let _ = writeln!(
        out,
        r#"<text x="10" y="18">tapir bench: medians of {} repetition(s), {} s per transfer; whiskers: min-max</text><text x="10" y="34" class="vmm">{}</text>"#,
        m.reps,
        m.secs,
        esc(&m.ran_on)
    );
    for (i, p) in PANELS.iter().enumerate() {
        panel(&mut out, p, &groups, 44.0 + i as f64 * panel_total, width);
    }
    out += "</svg>\n";
    out
}

/// Converts `svg` to a PNG beside it with rsvg-convert, when it is here.
pub fn to_png(svg: &Path) -> Option<PathBuf> {
    let png = svg.with_extension("png");
    let ok = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(svg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample;

    #[test]
    fn bars_labels_and_shape() {
        let s = chart(&sample());
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        // 4 groups x 2 panels x 2 series, every one measured.
        assert_eq!(s.matches(r#"class="bar""#).count(), 16);
        assert!(s.contains(">virtio/user</text>") && s.contains(">e1000/tap</text>"));
        assert_eq!(s.matches(r#"class="vmm">qemu<"#).count(), 4);
        assert!(s.contains("TCP throughput (Mbit/s, higher is better)"));
        assert!(s.contains("host-&gt;guest"));
        // Ping p50 0.5 ms is drawn as 500 us; TCP host->guest medians.
        assert!(s.contains("virtio/user tapir ping: 500</title>"), "{s}");
        assert!(s.contains("e1000/tap tapir host-&gt;guest: 415</title>"));
        // Spread whiskers where the repetitions differ (TCP host->guest).
        assert_eq!(s.matches(r#"class="spread""#).count(), 4);
        // The tallest bar (e1000/tap tapir, 420 max) stays inside the panel.
        for part in s.split(r#"height=""#).skip(2) {
            let h: f64 = part.split('"').next().unwrap().parse().unwrap_or(0.0);
            assert!(h <= PANEL_H, "{h}");
        }
    }

    #[test]
    fn missing_figures_say_na() {
        let mut r = sample();
        for run in &mut r.runs {
            run.metrics.tcp_rr_p50_us = None;
        }
        let s = chart(&r);
        assert_eq!(s.matches(r#"class="bar""#).count(), 12);
        assert_eq!(s.matches(">n/a</text>").count(), 4);
    }
}
