//! Reading pcap files back in tests: [`read`], a reader written apart
//! from tapir's writer (`tapir_net_backend::pcap`), and [`tcpdump`], what
//! `tcpdump -r` (or `tshark -r`) makes of a file.

use std::path::Path;
use std::process::Command;

/// One record of a pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Seconds since the epoch.
    pub ts_sec: u32,
    /// Nanoseconds (or microseconds, see [`PcapFile::nanos`]).
    pub ts_frac: u32,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// The bytes kept (`incl_len` of them).
    pub data: Vec<u8>,
}

/// A whole pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapFile {
    /// Time stamps in nanoseconds (magic 0xa1b23c4d), not microseconds.
    pub nanos: bool,
    /// Version (major, minor).
    pub version: (u16, u16),
    pub snaplen: u32,
    pub linktype: u32,
    pub records: Vec<Record>,
}

/// Parses `bytes` as a little-endian classic pcap file; `Err` says what is
/// wrong (a truncated last record is an error too).
pub fn parse(bytes: &[u8]) -> Result<PcapFile, String> {
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 24 {
        return Err(format!(
            "{} bytes: shorter than the file header",
            bytes.len()
        ));
    }
    let nanos = match u32_at(0) {
        0xa1b2_3c4d => true,
        0xa1b2_c3d4 => false,
        m => return Err(format!("magic 0x{m:08x}")),
    };
    let mut f = PcapFile {
        nanos,
        version: (u16_at(4), u16_at(6)),
        snaplen: u32_at(16),
        linktype: u32_at(20),
        records: Vec::new(),
    };
    let mut at = 24;
    while at < bytes.len() {
        if at + 16 > bytes.len() {
            return Err(format!("record header at {at} cut short"));
        }
        let incl = u32_at(at + 8) as usize;
        let orig_len = u32_at(at + 12);
        if incl > orig_len as usize || incl > f.snaplen as usize {
            return Err(format!(
                "record at {at}: incl_len {incl}, orig_len {orig_len}"
            ));
        }
        if nanos && u32_at(at + 4) >= 1_000_000_000 {
            return Err(format!("record at {at}: nanoseconds {}", u32_at(at + 4)));
        }
        let data = bytes
            .get(at + 16..at + 16 + incl)
            .ok_or_else(|| format!("record at {at} cut short"))?;
        f.records.push(Record {
            ts_sec: u32_at(at),
            ts_frac: u32_at(at + 4),
            orig_len,
            data: data.to_vec(),
        });
        at += 16 + incl;
    }
    Ok(f)
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<PcapFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// What `tcpdump -r FILE -nn -e` prints, one line per frame (link-level
/// addresses and VLAN tags shown), or `tshark -r FILE` when there is no
/// tcpdump. `None` when neither is installed: then `test` is reported
/// skipped (see [`crate::skipped`]). Panics when the reader rejects the
/// file.
pub fn tcpdump(test: &str, path: &Path) -> Option<Vec<String>> {
    let readers: [(&str, &[&str]); 2] =
        [("tcpdump", &["-nn", "-e", "-r"]), ("tshark", &["-n", "-r"])];
    for (tool, args) in readers {
        let out = match Command::new(tool).args(args).arg(path).output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("running {tool}: {e}"),
        };
        assert!(
            out.status.success(),
            "{tool} -r {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // tcpdump follows a frame of an unknown type with a hex dump, on
        // indented lines.
        let frames = text.lines().filter(|l| !l.starts_with([' ', '\t']));
        return Some(frames.map(str::to_string).collect());
    }
    crate::skipped(
        test,
        "neither tcpdump nor tshark is installed (apt-get install -y tcpdump)",
    );
    None
}
