//! Capture of a NIC's frames to a file in libpcap format (`--nic
//! ...,pcap=FILE[,pcap_max=SIZE]`, docs/pcap.md).
//!
//! [`PcapBackend`] wraps the NIC's backend: every frame that crosses the
//! backend seam, both ways, is also written to the file, as that
//! backend's wire carries it (with the VLAN tag the worker put on or will
//! take off). A frame with segmentation offload (GSO) is written as the
//! segments it stands for, cut by [`crate::offload::segment`]; one that
//! cannot be cut is written whole and counted in
//! [`PcapStats::unsegmented`].
//!
//! [`PcapWriter`] writes the format (by hand: it is small): the classic
//! libpcap file with nanosecond time stamps (magic `0xa1b23c4d`, version
//! 2.4, link type 1, Ethernet). With a size limit it rotates: when a record
//! would take the file past the limit, the file becomes `FILE.1` (replacing
//! the older one) and a new `FILE` starts with a fresh header.
//!
//! Everything that needs opening is opened by [`PcapFiles::open`], on the
//! thread that builds the VM, or by the control socket's client, which
//! passes the descriptors ([`PcapFiles::from_fds`], started through
//! [`PcapControl`]): the NIC worker thread may not open files
//! (docs/seccomp.md). Rotation therefore never opens a file: both `FILE` and
//! `FILE.1` are held open from the start, and a rotation empties the older
//! one (`ftruncate`), writes a header into it and swaps the two names in
//! one `renameat2(RENAME_EXCHANGE)`.
//!
//! Capture never holds up the guest: a failed write (or rotation) is
//! logged once as a warning, and capture of that NIC stops; its frames go
//! on as before.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::guest_buf::{self, GuestBuf};
use crate::hdr::{GSO_ECN, GSO_NONE};
use crate::{offload, BackendStats, NetBackend, NetHdr, Offloads};

/// The magic of a pcap file with nanosecond time stamps, as written in the
/// writer's (native, little-endian) byte order.
pub const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
/// The magic of a pcap file with microsecond time stamps (read by tests).
pub const MAGIC_USEC: u32 = 0xa1b2_c3d4;
/// File format version 2.4.
pub const VERSION: (u16, u16) = (2, 4);
/// The snapshot length in the header: no frame is cut (the largest frame
/// the worker moves is 65562 bytes), and 262144 is what tcpdump uses.
pub const SNAPLEN: u32 = 262_144;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of a record's header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Bytes gathered before they are written: a GSO frame's segments go out
/// in one write when they fit.
const BATCH: usize = 128 << 10;

/// Why a capture could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    /// The capture file (or the spare file for rotation) cannot be created.
    #[error("cannot create pcap file '{}': {source}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path names no file (it ends in `/` or `..`, or is empty).
    #[error("pcap file '{}' is not a file name", .path.display())]
    NotAFile {
        /// The path as given.
        path: PathBuf,
    },
    /// The descriptor given for a capture is not a regular file.
    #[error("pcap file '{}' is not a regular file (a pipe or device could hold up the NIC)", .path.display())]
    NotRegular {
        /// Its name.
        path: PathBuf,
    },
    /// The control socket passed the wrong number of descriptors.
    #[error("pcap file '{}': {got} descriptors came with the command, {want} expected", .path.display())]
    Descriptors {
        /// The capture file.
        path: PathBuf,
        /// 1, or 3 with a size limit.
        want: usize,
        /// How many came.
        got: usize,
    },
    /// A file given for a capture is not open for appending.
    #[error("pcap file '{}' is not open for appending (O_APPEND)", .path.display())]
    NotAppend {
        /// Its name.
        path: PathBuf,
    },
    /// Rotation swaps two names with `renameat2(RENAME_EXCHANGE)`, which
    /// this file system refused when tried at start.
    #[error(
        "pcap_max: rotating '{}' needs a file system that can swap two names \
         (renameat2 RENAME_EXCHANGE): {source}",
        .path.display()
    )]
    NoExchange {
        /// The capture file.
        path: PathBuf,
        /// What the kernel answered.
        source: io::Error,
    },
    /// Writing the file failed; capture stopped.
    #[error("writing pcap file '{}' failed: {source}; capture stopped", .path.display())]
    Write {
        /// The capture file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Rotating the file failed; capture stopped.
    #[error("rotating pcap file '{}' failed: {source}; capture stopped", .path.display())]
    Rotate {
        /// The capture file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What a capture did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Records written (a GSO frame's segments count one each).
    pub records: u64,
    /// Bytes written, headers included, over every file.
    pub bytes: u64,
    /// Rotations (`FILE` became `FILE.1`).
    pub rotations: u64,
    /// GSO frames that could not be cut into segments and were written whole.
    pub unsegmented: u64,
    /// Capture stopped after an error.
    pub stopped: bool,
}

/// A capture's counters as [`PcapStats`], for other threads (the control
/// socket's `info`) while the NIC's worker writes: the writer publishes
/// them after each frame.
#[derive(Debug, Default)]
pub struct PcapCounters {
    records: AtomicU64,
    bytes: AtomicU64,
    rotations: AtomicU64,
    unsegmented: AtomicU64,
    stopped: AtomicBool,
}

impl PcapCounters {
    /// The counters now.
    pub fn snapshot(&self) -> PcapStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PcapStats {
            records: g(&self.records),
            bytes: g(&self.bytes),
            rotations: g(&self.rotations),
            unsegmented: g(&self.unsegmented),
            stopped: self.stopped.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, s: &PcapStats) {
        self.records.store(s.records, Ordering::Relaxed);
        self.bytes.store(s.bytes, Ordering::Relaxed);
        self.rotations.store(s.rotations, Ordering::Relaxed);
        self.unsegmented.store(s.unsegmented, Ordering::Relaxed);
        self.stopped.store(s.stopped, Ordering::Relaxed);
    }
}

/// The file header: magic, version 2.4, no time zone offset or accuracy,
/// [`SNAPLEN`], Ethernet.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_NSEC.to_le_bytes());
    h[4..6].copy_from_slice(&VERSION.0.to_le_bytes());
    h[6..8].copy_from_slice(&VERSION.1.to_le_bytes());
    // thiszone and sigfigs (8..16) stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// A record's header for a frame of `len` bytes at `ts` (since the epoch).
pub fn record_header(ts: std::time::Duration, len: usize) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    // u32 seconds last until 2106, as in every classic pcap file.
    h[0..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&ts.subsec_nanos().to_le_bytes());
    let incl = len.min(SNAPLEN as usize) as u32;
    h[8..12].copy_from_slice(&incl.to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

/// The second file of a rotating capture, and what swapping names needs.
#[derive(Debug)]
struct Spare {
    /// The most `FILE` may hold.
    max: u64,
    /// The file named `FILE.1`.
    file: File,
    /// The directory both names are in.
    dir: File,
    /// `FILE`'s and `FILE.1`'s names in `dir`.
    name: CString,
    name1: CString,
}

impl Spare {
    /// Swaps the names `FILE` and `FILE.1`.
    fn exchange(&self) -> io::Result<()> {
        let dir = self.dir.as_raw_fd();
        // SAFETY: both names are NUL-terminated strings that live across
        // the call, and `dir` is an open directory fd; the call touches no
        // memory of ours otherwise.
        let r = unsafe {
            libc::renameat2(
                dir,
                self.name.as_ptr(),
                dir,
                self.name1.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The open files of a capture that runs.
#[derive(Debug)]
struct Files {
    /// The file named `FILE`, written at its end.
    file: File,
    /// Bytes in `file`.
    size: u64,
    /// With `pcap_max=`.
    spare: Option<Spare>,
}

/// Writes frames to a pcap file, with rotation when given a limit. Frames
/// are gathered with [`PcapWriter::push`] and written by
/// [`PcapWriter::flush`] (or a push that fills the batch).
#[derive(Debug)]
pub struct PcapWriter {
    path: PathBuf,
    /// `None` once capture stopped.
    files: Option<Files>,
    /// Records not written yet.
    buf: Vec<u8>,
    stats: PcapStats,
    /// `stats`, published.
    counters: Arc<PcapCounters>,
}

/// `path` opened for writing at its end, emptied, with a file header.
fn create_file(path: &Path) -> Result<File, PcapError> {
    let create = |source| PcapError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(create)?;
    f.set_len(0).map_err(create)?;
    f.write_all(&file_header()).map_err(create)?;
    Ok(f)
}

/// The open files of a capture that has not started: `FILE` and, with a
/// size limit, `FILE.1` and the directory both are in. Whoever may open
/// files opens them ([`PcapFiles::open`]): the thread that builds the VM,
/// or `tapir ctl`, which passes the descriptors ([`PcapFiles::fds`]) over
/// the control socket, where tapir takes them back
/// ([`PcapFiles::from_fds`]).
#[derive(Debug)]
pub struct PcapFiles {
    path: PathBuf,
    file: File,
    spare: Option<Spare>,
}

/// `FILE` and `FILE.1`'s names in the directory of `path`, and that
/// directory's path.
fn names(path: &Path) -> Result<(CString, CString, &Path), PcapError> {
    let not_a_file = || PcapError::NotAFile {
        path: path.to_path_buf(),
    };
    let name = path.file_name().ok_or_else(not_a_file)?;
    let mut name1 = name.to_os_string();
    name1.push(".1");
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cstr = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(|_| not_a_file());
    Ok((cstr(name)?, cstr(&name1)?, dir_path))
}

impl PcapFiles {
    /// Creates (or empties) `path` and writes its header. With `max`, also
    /// creates `path.1` the same way (an empty capture until the first
    /// rotation), opens their directory and checks that the file system
    /// can swap the two names. Both files are opened for appending, with
    /// `O_NOFOLLOW`: a symbolic link is refused.
    pub fn open(path: &Path, max: Option<u64>) -> Result<PcapFiles, PcapError> {
        let file = create_file(path)?;
        let spare = match max {
            None => None,
            Some(max) => {
                let (name, name1, dir_path) = names(path)?;
                let dir = File::open(dir_path).map_err(|source| PcapError::Create {
                    path: dir_path.to_path_buf(),
                    source,
                })?;
                let spare = Spare {
                    max,
                    file: create_file(
                        &dir_path.join(std::ffi::OsStr::from_bytes(name1.as_bytes())),
                    )?,
                    dir,
                    name,
                    name1,
                };
                // Swapped and swapped back: each file keeps its name.
                let no_exchange = |source| PcapError::NoExchange {
                    path: path.to_path_buf(),
                    source,
                };
                spare.exchange().map_err(no_exchange)?;
                spare.exchange().map_err(no_exchange)?;
                Some(spare)
            }
        };
        Ok(PcapFiles {
            path: path.to_path_buf(),
            file,
            spare,
        })
    }

    /// The descriptors to pass: `FILE`, then with a limit `FILE.1` and the
    /// directory.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.file.as_fd()];
        if let Some(s) = &self.spare {
            v.push(s.file.as_fd());
            v.push(s.dir.as_fd());
        }
        v
    }

    /// The size limit, if any.
    pub fn max(&self) -> Option<u64> {
        self.spare.as_ref().map(|s| s.max)
    }

    /// The files [`PcapFiles::fds`] passed, taken back: one descriptor
    /// without `max`, three with it; `path` is `FILE`'s absolute name
    /// (rotation swaps the names in the directory). Each file must be a
    /// regular file open for appending (a pipe could hold up the NIC's
    /// worker; rotation writes headers at the start), the directory a
    /// directory. A file still empty gets its header.
    pub fn from_fds(
        path: PathBuf,
        max: Option<u64>,
        fds: Vec<OwnedFd>,
    ) -> Result<PcapFiles, PcapError> {
        let want = if max.is_some() { 3 } else { 1 };
        if fds.len() != want {
            return Err(PcapError::Descriptors {
                path,
                want,
                got: fds.len(),
            });
        }
        let mut fds = fds.into_iter().map(File::from);
        let file = Self::checked(&path, fds.next())?;
        let spare = match max {
            None => None,
            Some(max) => {
                let (name, name1, _) = names(&path)?;
                let file = Self::checked(&path, fds.next())?;
                let dir = fds
                    .next()
                    .ok_or_else(|| PcapError::NotRegular { path: path.clone() })?;
                let is_dir = dir.metadata().is_ok_and(|m| m.is_dir());
                if !is_dir {
                    return Err(PcapError::NotRegular { path });
                }
                Some(Spare {
                    max,
                    file,
                    dir,
                    name,
                    name1,
                })
            }
        };
        Ok(PcapFiles { path, file, spare })
    }

    /// `file`, if it is a regular file open for appending, with a header.
    fn checked(path: &Path, file: Option<File>) -> Result<File, PcapError> {
        let not_regular = || PcapError::NotRegular {
            path: path.to_path_buf(),
        };
        let mut file = file.ok_or_else(not_regular)?;
        let err = |source| PcapError::Create {
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(err)?;
        if !meta.file_type().is_file() {
            return Err(not_regular());
        }
        // SAFETY: F_GETFL on a descriptor this File owns reads its flags
        // and touches no memory.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        if flags & libc::O_APPEND == 0 {
            return Err(PcapError::NotAppend {
                path: path.to_path_buf(),
            });
        }
        if meta.len() == 0 {
            file.write_all(&file_header()).map_err(err)?;
        }
        Ok(file)
    }
}

impl PcapWriter {
    /// [`PcapFiles::open`], then a capture into them.
    pub fn create(path: &Path, max: Option<u64>) -> Result<PcapWriter, PcapError> {
        Self::from_files(PcapFiles::open(path, max)?)
    }

    /// A capture into files already open (see [`PcapFiles`]); it appends
    /// to `FILE` from its current size.
    pub fn from_files(files: PcapFiles) -> Result<PcapWriter, PcapError> {
        let PcapFiles { path, file, spare } = files;
        let size = file
            .metadata()
            .map_err(|source| PcapError::Create {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(PcapWriter {
            path,
            files: Some(Files { file, size, spare }),
            buf: Vec::with_capacity(BATCH + 65_562 + RECORD_HEADER_LEN),
            stats: PcapStats::default(),
            counters: Arc::default(),
        })
    }

    /// The capture file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the capture did so far.
    pub fn stats(&self) -> PcapStats {
        self.stats
    }

    /// The counters, for another thread to read while this one writes.
    pub fn counters(&self) -> Arc<PcapCounters> {
        self.counters.clone()
    }

    /// Whether capture still runs.
    pub fn is_running(&self) -> bool {
        self.files.is_some()
    }

    /// Adds one frame, gathered from `parts`, with time stamp `ts` (since
    /// the epoch). It is written by the next [`PcapWriter::flush`], or
    /// now when the batch is full or the frame starts a new file.
    pub fn push(&mut self, ts: std::time::Duration, parts: &[&[u8]]) {
        let Some(files) = &self.files else {
            return;
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let rec = (RECORD_HEADER_LEN + len.min(SNAPLEN as usize)) as u64;
        let pending = files.size + self.buf.len() as u64;
        // A file holds at least one record, however small the limit.
        let rotate = files
            .spare
            .as_ref()
            .is_some_and(|s| pending + rec > s.max && pending > FILE_HEADER_LEN as u64);
        if rotate {
            self.flush();
            if let Err(e) = self.rotate() {
                self.stop(e);
                return;
            }
        } else if self.buf.len() >= BATCH {
            self.flush();
        }
        if self.files.is_none() {
            return;
        }
        self.buf.extend_from_slice(&record_header(ts, len));
        let mut left = SNAPLEN as usize;
        for p in parts {
            let n = p.len().min(left);
            self.buf.extend_from_slice(&p[..n]);
            left -= n;
        }
        self.stats.records += 1;
    }

    /// Writes what [`PcapWriter::push`] gathered.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(files) = &mut self.files else {
            self.buf.clear();
            return;
        };
        let written = files.file.write_all(&self.buf);
        let n = self.buf.len() as u64;
        self.buf.clear();
        match written {
            Ok(()) => {
                files.size += n;
                self.stats.bytes += n;
                self.counters.publish(&self.stats);
            }
            Err(source) => self.stop(PcapError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// `FILE` becomes `FILE.1`, and the emptied older `FILE.1` the new
    /// `FILE`, with a fresh header.
    fn rotate(&mut self) -> Result<(), PcapError> {
        let Some(files) = &mut self.files else {
            return Ok(());
        };
        let Some(spare) = &mut files.spare else {
            return Ok(());
        };
        let err = |source| PcapError::Rotate {
            path: self.path.clone(),
            source,
        };
        spare.file.set_len(0).map_err(err)?;
        // Opened for appending: the header lands at the start.
        spare.file.write_all(&file_header()).map_err(err)?;
        spare.exchange().map_err(err)?;
        std::mem::swap(&mut files.file, &mut spare.file);
        files.size = FILE_HEADER_LEN as u64;
        self.stats.bytes += FILE_HEADER_LEN as u64;
        self.stats.rotations += 1;
        Ok(())
    }

    /// Stops capture after `e`, which is logged once.
    fn stop(&mut self, e: PcapError) {
        if self.files.take().is_some() {
            log::warn!("{e}");
        }
        self.buf.clear();
        self.stats.stopped = true;
        self.counters.publish(&self.stats);
    }
}

/// The time stamp for a record: now, since the epoch.
fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A change of capture asked for by another thread.
#[derive(Debug)]
enum Change {
    Start(PcapWriter),
    Stop,
}

/// Starts and stops a NIC's capture from another thread (the control
/// socket) while its worker runs: the worker looks at one atomic flag per
/// frame and, when it is set, takes the change (a new writer, or none).
/// A capture stopped or replaced is closed by the worker, before its next
/// frame.
#[derive(Debug, Default)]
pub struct PcapControl {
    changed: AtomicBool,
    next: Mutex<Option<Change>>,
    /// The capture running (as far as this side knows): its file and
    /// counters.
    shown: Mutex<Option<(PathBuf, Arc<PcapCounters>)>>,
}

impl PcapControl {
    /// Captures to `writer` from the next frame on, replacing (and
    /// closing) any capture running.
    pub fn start(&self, writer: PcapWriter) {
        let shown = (writer.path().to_path_buf(), writer.counters());
        self.set(Change::Start(writer));
        *self.shown.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown);
    }

    /// Stops the capture running, if any (`false`: none was).
    pub fn stop(&self) -> bool {
        let was = self
            .shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        self.set(Change::Stop);
        was
    }

    /// The capture running: its file and counters.
    pub fn current(&self) -> Option<(PathBuf, Arc<PcapCounters>)> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, change: Change) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(change);
        self.changed.store(true, Ordering::Release);
    }

    /// The change asked for since the last call, if any.
    fn take(&self) -> Option<Change> {
        if !self.changed.load(Ordering::Acquire) {
            return None;
        }
        self.changed.store(false, Ordering::Relaxed);
        self.next.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A backend whose frames, both ways, are also written to a pcap file
/// while a capture runs. Everything else is `B`'s: readiness fds,
/// offloads, counters.
pub struct PcapBackend<B: NetBackend> {
    inner: B,
    writer: Option<PcapWriter>,
    control: Arc<PcapControl>,
    /// A frame copied out of guest memory or cut into segments.
    scratch: Vec<u8>,
}

impl<B: NetBackend> PcapBackend<B> {
    /// `inner`, captured by `writer` (or not yet: [`PcapBackend::control`]
    /// starts a capture later).
    pub fn new(inner: B, writer: Option<PcapWriter>) -> Self {
        let control = Arc::new(PcapControl::default());
        if let Some(w) = &writer {
            *control.shown.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((w.path().to_path_buf(), w.counters()));
        }
        PcapBackend {
            inner,
            writer,
            control,
            scratch: Vec::new(),
        }
    }

    /// Starts and stops this backend's capture from another thread.
    pub fn control(&self) -> Arc<PcapControl> {
        self.control.clone()
    }

    /// What the capture running did so far.
    pub fn pcap_stats(&self) -> Option<PcapStats> {
        self.writer.as_ref().map(PcapWriter::stats)
    }

    /// The backend captured.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Takes any change asked for; whether a capture runs now (then
    /// `self.writer` is it).
    fn capturing(&mut self) -> bool {
        match self.control.take() {
            None => {}
            Some(Change::Start(w)) => self.writer = Some(w),
            Some(Change::Stop) => self.writer = None,
        }
        self.writer.as_ref().is_some_and(PcapWriter::is_running)
    }

    /// Writes one frame that crossed the seam with `hdr`.
    fn capture(writer: &mut PcapWriter, hdr: &NetHdr, frame: &[u8]) {
        let ts = now();
        if hdr.gso_type & !GSO_ECN == GSO_NONE {
            writer.push(ts, &[frame]);
        } else {
            match offload::segment(hdr, frame) {
                Ok(segments) => {
                    for s in &segments {
                        writer.push(ts, &[s]);
                    }
                }
                Err(e) => {
                    log::debug!(
                        "pcap {}: GSO frame written whole: {e}",
                        writer.path.display()
                    );
                    writer.stats.unsegmented += 1;
                    writer.push(ts, &[frame]);
                }
            }
        }
        writer.flush();
    }
}

impl<B: NetBackend> NetBackend for PcapBackend<B> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn send(&mut self, hdr: &NetHdr, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.inner.send(hdr, frame)?;
        if self.capturing() {
            if let (Some(w), [one]) = (&mut self.writer, frame) {
                Self::capture(w, hdr, one);
            } else if let Some(w) = &mut self.writer {
                self.scratch.clear();
                for s in frame {
                    self.scratch.extend_from_slice(s);
                }
                Self::capture(w, hdr, &self.scratch);
            }
        }
        Ok(n)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)> {
        let (hdr, len) = self.inner.recv(buf)?;
        if self.capturing() {
            if let (Some(w), Some(frame)) = (&mut self.writer, buf.get(..len)) {
                Self::capture(w, &hdr, frame);
            }
        }
        Ok((hdr, len))
    }

    fn send_guest(&mut self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        let n = self.inner.send_guest(hdr, frame)?;
        if self.capturing() {
            if let Some(w) = &mut self.writer {
                self.scratch.clear();
                guest_buf::gather(frame, &mut self.scratch);
                Self::capture(w, hdr, &self.scratch);
            }
        }
        Ok(n)
    }

    fn recv_guest(&mut self, bufs: &[GuestBuf]) -> io::Result<(NetHdr, usize)> {
        let (hdr, len) = self.inner.recv_guest(bufs)?;
        if self.capturing() {
            if let Some(w) = &mut self.writer {
                self.scratch.resize(len, 0);
                let got = guest_buf::read_stream(bufs, 0, &mut self.scratch);
                Self::capture(w, &hdr, &self.scratch[..got]);
            }
        }
        Ok((hdr, len))
    }

    fn rx_fd(&self) -> RawFd {
        self.inner.rx_fd()
    }

    fn tx_fd(&self) -> RawFd {
        self.inner.tx_fd()
    }

    fn offloads(&self) -> Offloads {
        self.inner.offloads()
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        self.inner.set_offloads(offloads)
    }

    fn stats(&self) -> BackendStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests;
