use super::*;
use crate::hdr::{GSO_TCPV4, GSO_UDP, NEEDS_CSUM};
use crate::MemoryBackend;
use std::time::Duration;
use tapir_test_support::pcap::{parse, read, tcpdump, PcapFile};

/// A fresh directory for one test.
fn tmpdir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapir-pcap-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

/// An Ethernet frame `GUEST` -> `PEER` (or back), optionally 802.1Q
/// tagged with `vid`, of ethertype 0x88b5 (local experimental), padded
/// with `fill` to `len` bytes.
fn frame(from_guest: bool, vid: Option<u16>, len: usize, fill: u8) -> Vec<u8> {
    let (src, dst) = if from_guest {
        (GUEST, PEER)
    } else {
        (PEER, GUEST)
    };
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(v) = vid {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.resize(len.max(f.len()), fill);
    f
}

/// A TCPv4 frame (guest to peer) with `payload` bytes of payload, for TSO.
fn tcp4(payload: usize) -> Vec<u8> {
    let mut f = PEER.to_vec();
    f.extend_from_slice(&GUEST);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let tot = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&1000u32.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

#[test]
fn header_and_records_are_libpcap() {
    let h = file_header();
    assert_eq!(
        h,
        [0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]
    );
    let r = record_header(Duration::new(0x0102_0304, 999_999_999), 70_000);
    assert_eq!(&r[0..4], &[4, 3, 2, 1]);
    assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 999_999_999);
    assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 70_000);
    assert_eq!(u32::from_le_bytes(r[12..16].try_into().unwrap()), 70_000);
    let cut = record_header(Duration::ZERO, 300_000);
    assert_eq!(u32::from_le_bytes(cut[8..12].try_into().unwrap()), SNAPLEN);
    assert_eq!(u32::from_le_bytes(cut[12..16].try_into().unwrap()), 300_000);
}

#[test]
fn frames_round_trip_with_time_stamps() {
    let d = tmpdir("round-trip");
    let path = d.join("cap.pcap");
    let mut w = PcapWriter::create(&path, None).unwrap();
    let frames = [
        frame(true, None, 60, 1),
        frame(false, Some(100), 1518, 2),
        frame(true, Some(4094), 9018, 3),
    ];
    let before = now();
    for (i, f) in frames.iter().enumerate() {
        // Two parts for the first: a record is gathered from them.
        if i == 0 {
            w.push(now(), &[&f[..10], &f[10..]]);
        } else {
            w.push(now(), &[f]);
        }
    }
    w.flush();
    let after = now();
    let stats = w.stats();
    assert_eq!(stats.records, 3);
    assert!(!stats.stopped);
    assert_eq!(w.counters().snapshot(), stats, "published");
    let file = read(&path).unwrap();
    assert!(file.nanos);
    assert_eq!(
        (file.version, file.snaplen, file.linktype),
        ((2, 4), SNAPLEN, 1)
    );
    assert_eq!(file.records.len(), 3);
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert_eq!(stats.bytes + FILE_HEADER_LEN as u64, on_disk);
    for (r, f) in file.records.iter().zip(&frames) {
        assert_eq!(&r.data, f);
        assert_eq!(r.orig_len as usize, f.len());
        let ts = Duration::new(r.ts_sec.into(), r.ts_frac);
        assert!(
            before.saturating_sub(Duration::from_secs(1)) <= ts && ts <= after,
            "time stamp {ts:?} outside {before:?}..{after:?}"
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Rotation keeps `FILE` and `FILE.1` under the limit, each a valid
/// capture, and the newest frames in `FILE`.
#[test]
fn rotation_renames_to_dot_1_and_starts_afresh() {
    let d = tmpdir("rotation");
    let path = d.join("cap.pcap");
    let path1 = d.join("cap.pcap.1");
    std::fs::write(&path1, b"an older capture").unwrap();
    let max = 4096u64;
    let mut w = PcapWriter::create(&path, Some(max)).unwrap();
    // At start FILE.1 is an empty capture.
    assert_eq!(read(&path1).unwrap().records.len(), 0);
    // 100 records of 16 + 200 bytes: 18 fit a file (24 + 18 * 216 = 3912).
    for i in 0..100u8 {
        w.push(
            Duration::from_secs(u64::from(i)),
            &[&frame(true, None, 200, i)],
        );
        w.flush();
    }
    let stats = w.stats();
    assert_eq!(stats.records, 100);
    assert_eq!(stats.rotations, 5, "{stats:?}");
    let (cur, old) = (read(&path).unwrap(), read(&path1).unwrap());
    assert_eq!(cur.records.len(), 100 - 5 * 18);
    assert_eq!(old.records.len(), 18);
    for f in [&path, &path1] {
        assert!(std::fs::metadata(f).unwrap().len() <= max);
    }
    // FILE.1 holds the 18 frames before FILE's.
    assert_eq!(old.records[0].ts_sec, 72);
    assert_eq!(old.records[17].ts_sec, 89);
    assert_eq!(cur.records[0].ts_sec, 90);
    assert_eq!(cur.records[0].data[20], 90);
    // Nothing else was left in the directory.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_frame_larger_than_the_limit_gets_a_file_of_its_own() {
    let d = tmpdir("large");
    let path = d.join("cap");
    let mut w = PcapWriter::create(&path, Some(1000)).unwrap();
    w.push(now(), &[&frame(true, None, 100, 0)]);
    w.push(now(), &[&frame(true, None, 5000, 1)]);
    w.push(now(), &[&frame(true, None, 5000, 2)]);
    w.flush();
    assert_eq!(w.stats().rotations, 2);
    let (cur, old) = (read(&path).unwrap(), read(&d.join("cap.1")).unwrap());
    assert_eq!((cur.records.len(), old.records.len()), (1, 1));
    assert_eq!(cur.records[0].data[20], 2);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn creation_errors_are_typed() {
    let d = tmpdir("errors");
    let missing = d.join("no/such/dir/cap");
    assert!(matches!(
        PcapWriter::create(&missing, None),
        Err(PcapError::Create { .. })
    ));
    assert!(matches!(
        PcapWriter::create(Path::new("/"), Some(4096)),
        Err(PcapError::Create { .. } | PcapError::NotAFile { .. })
    ));
    // A symbolic link is not followed.
    let link = d.join("link");
    std::os::unix::fs::symlink(d.join("target"), &link).unwrap();
    let e = PcapWriter::create(&link, None).unwrap_err();
    assert!(e.to_string().contains("link"), "{e}");
    assert!(!d.join("target").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// A failed write stops capture for good, once, without an error to the caller.
#[test]
fn a_write_error_stops_capture() {
    let d = tmpdir("write-error");
    let path = d.join("cap");
    let mut w = PcapWriter::create(&path, None).unwrap();
    w.files.as_mut().unwrap().file = OpenOptions::new().write(true).open("/dev/full").unwrap();
    w.push(now(), &[&frame(true, None, 60, 0)]);
    w.flush();
    assert!(!w.is_running());
    assert!(w.stats().stopped);
    assert!(w.counters().snapshot().stopped, "published");
    w.push(now(), &[&frame(true, None, 60, 0)]);
    w.flush();
    assert_eq!(w.stats().records, 1);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The backend records both ways, GSO frames as segments, and stays out
/// of the frames' way.
#[test]
fn backend_captures_both_ways_and_segments_gso() {
    let d = tmpdir("backend");
    let path = d.join("cap");
    let (mem, peer) = MemoryBackend::new(8, Offloads::ALL).unwrap();
    let mut b = PcapBackend::new(mem, Some(PcapWriter::create(&path, None).unwrap()));
    // Plain, tagged, out.
    let out = frame(true, Some(5), 64, 7);
    b.send(&NetHdr::default(), &[IoSlice::new(&out)]).unwrap();
    // A TSO frame of 3000 bytes of payload, MSS 1400: three segments.
    let tso = tcp4(3000);
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1400,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    b.send(&hdr, &[IoSlice::new(&tso[..50]), IoSlice::new(&tso[50..])])
        .unwrap();
    // A GSO type that cannot be cut: written whole, counted.
    let ufo = NetHdr {
        gso_type: GSO_UDP,
        gso_size: 1000,
        ..Default::default()
    };
    b.send(&ufo, &[IoSlice::new(&out)]).unwrap();
    // In.
    let inn = frame(false, Some(5), 1514, 9);
    peer.inject(NetHdr::default(), &inn).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (_, len) = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], &inn[..]);
    // Into "guest memory".
    let mut mem = vec![0u8; 2000];
    // SAFETY: `mem` outlives the buffers' use in this test.
    let bufs = unsafe {
        [
            GuestBuf::new(mem.as_mut_ptr(), 1000),
            GuestBuf::new(mem.as_mut_ptr().add(1000), 1000),
        ]
    };
    peer.inject(NetHdr::default(), &inn).unwrap();
    let (_, len) = b.recv_guest(&bufs).unwrap();
    assert_eq!(&mem[..len], &inn[..]);
    // What the peer got is untouched by capture.
    let sent = peer.take_all();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1].1, tso);
    assert_eq!(
        b.pcap_stats().unwrap(),
        PcapStats {
            records: 1 + 3 + 1 + 2,
            bytes: b.pcap_stats().unwrap().bytes,
            rotations: 0,
            unsegmented: 1,
            stopped: false,
        }
    );
    let f = read(&path).unwrap();
    let data: Vec<&[u8]> = f.records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data[0], &out[..]);
    let segments = offload::segment(&hdr, &tso).unwrap();
    assert_eq!(segments.len(), 3);
    for (r, s) in data[1..4].iter().zip(&segments) {
        assert_eq!(r, s);
    }
    assert_eq!(data[4], &out[..]);
    assert_eq!(data[5], &inn[..]);
    assert_eq!(data[6], &inn[..]);
    if let Some(lines) = tcpdump("pcap::backend_captures_both_ways", &path) {
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert!(lines[0].contains("52:54:00:12:34:56 > 52:54:00:ab:cd:ef"));
        assert!(lines[0].contains("vlan 5"), "{}", lines[0]);
        assert!(lines[1].contains("10.0.2.15.40000 > 10.0.2.2.80"));
        assert!(lines[1].contains("seq 1000:2400"), "{}", lines[1]);
        // Relative sequence numbers after the first.
        assert!(lines[3].contains("seq 2800:3000, ack 1"), "{}", lines[3]);
        assert!(lines[5].contains("52:54:00:ab:cd:ef > 52:54:00:12:34:56"));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A capture started, replaced and stopped from another thread's
/// [`PcapControl`] while frames flow; the capture's own file only.
#[test]
fn captures_start_and_stop_at_run_time() {
    let d = tmpdir("control");
    let (mem, peer) = MemoryBackend::new(8, Offloads::ALL).unwrap();
    let mut b = PcapBackend::new(mem, None);
    let control = b.control();
    assert!(control.current().is_none());
    let send = |b: &mut PcapBackend<MemoryBackend>, fill: u8| {
        let f = frame(true, None, 60, fill);
        b.send(&NetHdr::default(), &[IoSlice::new(&f)]).unwrap();
        peer.take().unwrap();
    };
    send(&mut b, 0);
    // Passed as the control socket's client does: by descriptor.
    let open = |name: &str| {
        let p = d.join(name);
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .unwrap();
        PcapWriter::from_files(PcapFiles::from_fds(p, None, vec![f.into()]).unwrap()).unwrap()
    };
    control.start(open("a"));
    let (shown, counters) = control.current().unwrap();
    assert_eq!(shown, d.join("a"));
    send(&mut b, 1);
    send(&mut b, 2);
    assert_eq!(counters.snapshot().records, 2);
    control.start(open("b"));
    send(&mut b, 3);
    assert!(control.stop());
    assert!(!control.stop());
    assert!(control.current().is_none());
    send(&mut b, 4);
    assert_eq!(b.pcap_stats(), None);
    let fills = |name: &str| -> Vec<u8> {
        read(&d.join(name))
            .unwrap()
            .records
            .iter()
            .map(|r| r.data[20])
            .collect()
    };
    assert_eq!(fills("a"), [1, 2]);
    assert_eq!(fills("b"), [3]);
    // Only regular files, open for appending, as many as the limit wants.
    let from = |fds: Vec<File>, max| {
        let fds = fds.into_iter().map(OwnedFd::from).collect();
        PcapFiles::from_fds(d.join("c"), max, fds)
    };
    let dev_null = || File::options().append(true).open("/dev/null").unwrap();
    assert!(matches!(
        from(vec![dev_null()], None),
        Err(PcapError::NotRegular { .. })
    ));
    let plain = File::create(d.join("c")).unwrap();
    assert!(matches!(
        from(vec![plain], None),
        Err(PcapError::NotAppend { .. })
    ));
    let app = |n: &str| {
        File::options()
            .append(true)
            .create(true)
            .open(d.join(n))
            .unwrap()
    };
    assert!(matches!(
        from(vec![app("c")], Some(4096)),
        Err(PcapError::Descriptors {
            want: 3,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        from(vec![app("c"), app("c.1"), app("x")], Some(4096)),
        Err(PcapError::NotRegular { .. })
    ));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A rotating capture whose files came as descriptors (the control
/// socket's `pcap NAME start FILE MAX`) rotates like one opened by path.
#[test]
fn a_rotating_capture_from_descriptors_rotates() {
    let d = std::env::temp_dir().join(format!("tapir-pcap-fds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("r.pcap");
    // What tapir ctl does: open (headers written, exchange checked) ...
    let opened = PcapFiles::open(&path, Some(1000)).unwrap();
    assert_eq!(opened.max(), Some(1000));
    // ... and pass duplicates of the descriptors.
    let fds = opened
        .fds()
        .iter()
        .map(|fd| fd.try_clone_to_owned().unwrap())
        .collect();
    drop(opened);
    let files = PcapFiles::from_fds(path.clone(), Some(1000), fds).unwrap();
    let mut w = PcapWriter::from_files(files).unwrap();
    for i in 0..40u8 {
        w.push(Duration::from_secs(u64::from(i)), &[&[i; 100]]);
        w.flush();
    }
    let s = w.stats();
    assert!(s.rotations >= 2 && !s.stopped, "{s:?}");
    for p in [path.clone(), d.join("r.pcap.1")] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 1000, "{}: {size}", p.display());
        assert!(!read(&p).unwrap().records.is_empty());
    }
    // The newest record is in FILE.
    let last = read(&path).unwrap().records.last().unwrap().data[0];
    assert_eq!(last, 39);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Independent check of the reader the other tests use.
#[test]
fn the_test_reader_rejects_what_is_not_pcap() {
    assert!(parse(&[0; 10]).is_err());
    assert!(parse(&[0; 24]).is_err());
    let mut ok = file_header().to_vec();
    assert!(matches!(parse(&ok), Ok(PcapFile { nanos: true, .. })));
    ok.extend_from_slice(&record_header(Duration::ZERO, 60));
    assert!(parse(&ok).is_err(), "a record cut short");
}

/// Not a check: the cost of capture, printed (docs/pcap.md has the
/// figures). Run with
/// `cargo test -p tapir-net-backend --release --lib -- --ignored pcap_cost --nocapture`;
/// `TAPIR_PCAP_BENCH_DIR` picks the file system (default: the temp dir).
///
/// - `writer`: [`PcapWriter::push`] + [`PcapWriter::flush`] per frame, as
///   [`PcapBackend`] does: a time stamp, a copy and one `write(2)`.
/// - `backend`: a frame sent through a [`PcapBackend`] over a
///   [`MemoryBackend`] (whose peer takes it each time), against the bare
///   backend: the difference is what capture adds to a send.
/// - a 64 KiB TSO frame: cut into its 46 segments and written in one write.
#[test]
#[ignore]
fn pcap_cost() {
    use std::time::Instant;
    let dir = std::env::var_os("TAPIR_PCAP_BENCH_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tmpdir("cost"));
    let path = dir.join("tapir-pcap-cost.pcap");
    let report = |what: &str, n: usize, bytes: usize, secs: f64| {
        println!(
            "{what:<44} {:>10.0} frames/s {:>7.0} ns/frame {:>7.0} MB/s",
            n as f64 / secs,
            secs * 1e9 / n as f64,
            bytes as f64 / secs / 1e6
        );
    };
    println!("capture file in {}", dir.display());
    for len in [64usize, 1514] {
        let n = if len == 64 { 2_000_000 } else { 1_000_000 };
        let f = frame(true, None, len, 0x5a);
        for max in [None, Some(64u64 << 20)] {
            let mut w = PcapWriter::create(&path, max).unwrap();
            let t = Instant::now();
            for _ in 0..n {
                w.push(now(), &[&f]);
                w.flush();
            }
            let secs = t.elapsed().as_secs_f64();
            assert!(!w.stats().stopped);
            let what = match max {
                None => format!("writer, {len}-byte frames"),
                Some(_) => format!("writer, {len}-byte frames, pcap_max=64M"),
            };
            report(&what, n, n * len, secs);
        }
        // The backend: bare, wrapped with no capture running (every NIC
        // without pcap=), captured.
        let n = n / 4;
        let mut per = [0f64; 3];
        for (i, what) in ["bare", "wrapped, not capturing", "captured"]
            .into_iter()
            .enumerate()
        {
            let (mem, peer) = MemoryBackend::new(4, Offloads::ALL).unwrap();
            let mut b: Box<dyn NetBackend> = match i {
                0 => Box::new(mem),
                1 => Box::new(PcapBackend::new(mem, None)),
                _ => Box::new(PcapBackend::new(
                    mem,
                    Some(PcapWriter::create(&path, None).unwrap()),
                )),
            };
            let t = Instant::now();
            for _ in 0..n {
                b.send(&NetHdr::default(), &[IoSlice::new(&f)]).unwrap();
                peer.take().unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            per[i] = secs * 1e9 / n as f64;
            report(
                &format!("memory backend send, {len} bytes, {what}"),
                n,
                n * len,
                secs,
            );
        }
        println!(
            "{:<44} {:>7.0} ns/frame (the wrapper alone: {:.0} ns/frame)",
            format!("  capture adds ({len} bytes)"),
            per[2] - per[0],
            per[1] - per[0]
        );
    }
    // The wrapper with no capture running, over a backend that does
    // nothing (the memory backend's eventfds drown it in noise).
    struct Null;
    impl NetBackend for Null {
        fn describe(&self) -> String {
            "null".into()
        }
        fn send(&mut self, _: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
            Ok(std::hint::black_box(frame).len())
        }
        fn recv(&mut self, _: &mut [u8]) -> io::Result<(NetHdr, usize)> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn rx_fd(&self) -> RawFd {
            -1
        }
        fn tx_fd(&self) -> RawFd {
            -1
        }
        fn offloads(&self) -> Offloads {
            Offloads::default()
        }
        fn set_offloads(&mut self, _: Offloads) -> io::Result<()> {
            Ok(())
        }
        fn stats(&self) -> BackendStats {
            BackendStats::default()
        }
    }
    let n = 20_000_000;
    let f = frame(true, None, 64, 0);
    let mut per = [0f64; 2];
    for (i, mut b) in [
        Box::new(Null) as Box<dyn NetBackend>,
        Box::new(PcapBackend::new(Null, None)),
    ]
    .into_iter()
    .enumerate()
    {
        let t = Instant::now();
        for _ in 0..n {
            b.send(&NetHdr::default(), &[IoSlice::new(&f)]).unwrap();
        }
        per[i] = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    }
    println!(
        "{:<44} {:>7.1} ns/frame (a backend that does nothing: {:.1} ns, wrapped {:.1} ns)",
        "the wrapper, not capturing",
        per[1] - per[0],
        per[0],
        per[1]
    );
    let tso = tcp4(65_000);
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let segments = offload::segment(&hdr, &tso).unwrap().len();
    let n = 20_000;
    let mut per = [0f64; 2];
    for (i, capture) in [false, true].into_iter().enumerate() {
        let (mem, peer) = MemoryBackend::new(4, Offloads::ALL).unwrap();
        let mut b: Box<dyn NetBackend> = if capture {
            Box::new(PcapBackend::new(
                mem,
                Some(PcapWriter::create(&path, None).unwrap()),
            ))
        } else {
            Box::new(mem)
        };
        let t = Instant::now();
        for _ in 0..n {
            b.send(&hdr, &[IoSlice::new(&tso)]).unwrap();
            peer.take().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        per[i] = secs * 1e9 / n as f64;
        let what = format!(
            "TSO 64 KiB ({segments} segments), {}",
            if capture { "captured" } else { "bare" }
        );
        report(&what, n, n * tso.len(), secs);
    }
    println!(
        "{:<44} {:>7.0} ns/frame ({:.0} ns/segment)",
        "  capture adds (TSO 64 KiB)",
        per[1] - per[0],
        (per[1] - per[0]) / segments as f64
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(dir.join("tapir-pcap-cost.pcap.1"));
}
