//! Parsing what the tools print: iperf3's JSON (`-J`), busybox ping's
//! lines, `/proc/PID/stat`, `perf stat -x,` output. Pure functions.

use serde_json::Value;

use crate::Error;

/// What one TCP iperf3 run moved, as its receiving side counted it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TcpResult {
    pub bytes: u64,
    pub bits_per_second: f64,
}

/// What one UDP iperf3 run delivered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UdpResult {
    /// Datagrams that arrived, per second.
    pub packets_per_second: f64,
    pub lost_percent: f64,
}

fn iperf_json(text: &str) -> Result<Value, Error> {
    let v: Value = serde_json::from_str(text).map_err(|e| Error::Parse {
        what: "iperf3 JSON",
        why: e.to_string(),
    })?;
    // iperf3 -J reports its own failures as {"error": "..."}.
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(Error::Iperf(err.to_string()));
    }
    Ok(v)
}

fn field(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn missing(what: &'static str) -> Error {
    Error::Parse {
        what: "iperf3 JSON",
        why: format!("no {what}"),
    }
}

/// A TCP run: `end.sum_received` (bytes and bit/s at the receiver).
pub fn iperf_tcp(text: &str) -> Result<TcpResult, Error> {
    let v = iperf_json(text)?;
    let bytes = field(&v, &["end", "sum_received", "bytes"])
        .ok_or_else(|| missing("end.sum_received.bytes"))?;
    let bps = field(&v, &["end", "sum_received", "bits_per_second"])
        .ok_or_else(|| missing("end.sum_received.bits_per_second"))?;
    if !(bytes >= 0.0 && bps.is_finite() && bps >= 0.0) {
        return Err(missing("valid figures in end.sum_received"));
    }
    Ok(TcpResult {
        bytes: bytes as u64,
        bits_per_second: bps,
    })
}

/// A UDP run: datagrams received per second, `(packets - lost_packets) /
/// seconds` of `end.sum_received` (iperf3 3.12 and later), else of `end.sum`.
pub fn iperf_udp(text: &str) -> Result<UdpResult, Error> {
    let v = iperf_json(text)?;
    let sum = ["sum_received", "sum"]
        .iter()
        .find_map(|k| v.get("end").and_then(|e| e.get(*k)))
        .ok_or_else(|| missing("end.sum_received or end.sum"))?;
    let packets = field(sum, &["packets"]).ok_or_else(|| missing("packets"))?;
    let lost = field(sum, &["lost_packets"]).unwrap_or(0.0);
    let secs = field(sum, &["seconds"]).ok_or_else(|| missing("seconds"))?;
    let lost_percent = field(sum, &["lost_percent"]).unwrap_or(0.0);
    if secs <= 0.0 || packets < lost {
        return Err(missing("valid packet counts"));
    }
    Ok(UdpResult {
        packets_per_second: (packets - lost) / secs,
        lost_percent,
    })
}

/// Round-trip times in ms from ping's reply lines (`... time=0.512 ms`),
/// busybox's or iputils'; other lines are ignored.
pub fn ping_times_ms(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let t = l.split("time=").nth(1)?;
            let num: String = t
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let ms: f64 = num.parse().ok()?;
            let unit = t[num.len()..].trim_start();
            // iputils can say "time<1 ms"; busybox always "ms".
            if unit.starts_with("ms") {
                Some(ms)
            } else if unit.starts_with("us") || unit.starts_with("µs") {
                Some(ms / 1000.0)
            } else {
                None
            }
        })
        .collect()
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`.
pub fn proc_stat_ticks(text: &str) -> Result<u64, Error> {
    // The command name may hold spaces and ')': fields follow the last ')'.
    let bad = |why: &str| Error::Parse {
        what: "/proc/PID/stat",
        why: why.to_string(),
    };
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| bad("no ')'"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15.
    let get = |i: usize| -> Result<u64, Error> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no utime/stime"))
    };
    Ok(get(11)? + get(12)?)
}

/// The count of the `kvm:kvm_exit` event from `perf stat -x,` output
/// (`COUNT,,kvm:kvm_exit,...`); None when absent or `<not counted>`.
pub fn perf_exits(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split(',');
        let count = f.next()?;
        let event = f.nth(1)?;
        if event.trim() == "kvm:kvm_exit" {
            count.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = include_str!("../testdata/iperf3-tcp.json");
    const UDP: &str = include_str!("../testdata/iperf3-udp64-reverse.json");

    #[test]
    fn iperf_tcp_sample() {
        let r = iperf_tcp(TCP).unwrap();
        assert_eq!(r.bytes, 5071044608);
        assert!((r.bits_per_second - 40501124996.5058).abs() < 1.0);
    }

    #[test]
    fn iperf_udp_sample() {
        let r = iperf_udp(UDP).unwrap();
        // (356237 - 173848) / 1.000013 s
        assert!((r.packets_per_second - 182386.6).abs() < 1.0, "{r:?}");
        assert!((r.lost_percent - 48.8).abs() < 0.01);
    }

    #[test]
    fn iperf_error_and_garbage() {
        let e =
            iperf_tcp(r#"{"start":{},"error":"unable to connect to server: Connection refused"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("Connection refused"), "{e}");
        assert!(iperf_tcp("").is_err());
        assert!(iperf_tcp("{\"end\":{}}").is_err());
        assert!(iperf_udp(TCP).is_err());
    }

    #[test]
    fn ping_lines() {
        let text = "PING 10.0.2.2 (10.0.2.2): 56 data bytes\n\
            64 bytes from 10.0.2.2: seq=0 ttl=255 time=0.512 ms\n\
            64 bytes from 10.0.2.2: seq=1 ttl=255 time=12.03 ms\n\
            64 bytes from 192.168.1.1: icmp_seq=2 ttl=64 time=0.045 ms\n\
            \n--- 10.0.2.2 ping statistics ---\n\
            round-trip min/avg/max = 0.512/6.271/12.030 ms\n";
        assert_eq!(ping_times_ms(text), vec![0.512, 12.03, 0.045]);
        assert!(ping_times_ms("ping: sendto: Network unreachable").is_empty());
    }

    #[test]
    fn proc_stat() {
        let s = "4242 (tapir (vcpu) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 137 42 0 0 20 0 5 0 100 0 0";
        assert_eq!(proc_stat_ticks(s).unwrap(), 179);
        assert!(proc_stat_ticks("garbage").is_err());
        assert!(proc_stat_ticks("1 (x) S 1").is_err());
    }

    #[test]
    fn perf_csv() {
        let s =
            "# started on Sun Dec  6 17:00:00 2026\n\n123456,,kvm:kvm_exit,2000000000,100.00,,\n";
        assert_eq!(perf_exits(s), Some(123456));
        assert_eq!(perf_exits("<not counted>,,kvm:kvm_exit,0,0.00,,\n"), None);
        assert_eq!(perf_exits(""), None);
    }
}
