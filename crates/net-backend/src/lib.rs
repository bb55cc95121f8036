//! Network backends: where a NIC's frames go on the host side.
//!
//! A NIC model talks to the world only through [`NetBackend`], and a
//! backend never knows which model feeds it. Frames cross this seam as an
//! Ethernet frame preceded by a [`NetHdr`] (the virtio-net header layout,
//! used as a neutral description of checksum and segmentation offloads).
//! A backend that cannot carry offloads reports so in [`NetBackend::offloads`];
//! the sender then completes checksums and segmentation itself before
//! calling [`NetBackend::send`] (see [`offload`]).

pub mod bridge;
pub mod error;
pub mod guest_buf;
pub mod hdr;
pub mod macvtap;
pub mod memory;
pub mod offload;
pub mod pcap;
mod rtnl;
mod sys;
pub mod tap;

pub use bridge::BridgeBackend;
pub use error::BackendError;
pub use guest_buf::GuestBuf;
pub use hdr::{NetHdr, NET_HDR_LEN};
pub use macvtap::MacvtapBackend;
pub use memory::{MemoryBackend, MemoryPeer};
pub use offload::OffloadError;
pub use pcap::{
    PcapBackend, PcapControl, PcapCounters, PcapError, PcapFiles, PcapStats, PcapWriter,
};
pub use tap::{TapBackend, TapConfig};

use std::io;
use std::os::fd::RawFd;

/// Offloads a backend can carry in both directions (host <-> guest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Partial checksums (`NEEDS_CSUM`) may be sent and received.
    pub csum: bool,
    /// TCPv4 segmentation offload (frames up to 64 KiB).
    pub tso4: bool,
    /// TCPv6 segmentation offload.
    pub tso6: bool,
    /// TCP with ECN in segmentation offload.
    pub tso_ecn: bool,
}

impl Offloads {
    /// Every offload this crate knows.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
        tso_ecn: true,
    };

    /// Whether every offload in `self` is also in `other`.
    pub fn is_subset_of(&self, other: &Offloads) -> bool {
        (!self.csum || other.csum)
            && (!self.tso4 || other.tso4)
            && (!self.tso6 || other.tso6)
            && (!self.tso_ecn || other.tso_ecn)
    }

    /// Checks a set to enable on a backend offering `supported`: a subset,
    /// TSO only with checksum offload, and ECN only with TSO (the rules of
    /// virtio-net and of the tap driver). Errors are `InvalidInput`.
    pub fn check_against(&self, supported: &Offloads) -> io::Result<()> {
        let bad = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        if !self.is_subset_of(supported) {
            return bad("offloads asked for are not offered by the backend");
        }
        if (self.tso4 || self.tso6) && !self.csum {
            return bad("TCP segmentation offload needs checksum offload");
        }
        if self.tso_ecn && !(self.tso4 || self.tso6) {
            return bad("TSO with ECN needs TSO");
        }
        Ok(())
    }
}

/// Counters every backend keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Frames handed to the host side.
    pub tx_frames: u64,
    /// Frames received from the host side.
    pub rx_frames: u64,
    /// Frames the host side refused (errors other than would-block).
    pub tx_errors: u64,
}

/// The host side of a NIC.
///
/// All I/O is non-blocking: `send` and `recv` return
/// [`io::ErrorKind::WouldBlock`] instead of waiting, and the caller polls
/// [`NetBackend::rx_fd`] / [`NetBackend::tx_fd`] for readiness. A frame
/// that would block on `send` is kept by the caller and retried when
/// `tx_fd` is writable: nothing is dropped for backpressure.
pub trait NetBackend: Send {
    /// A short description for messages, e.g. `tap tap0` or `bridge br0 (tap tapir0)`.
    fn describe(&self) -> String;
    /// Sends one frame: `hdr` then the Ethernet frame gathered from `frame`.
    /// Returns the Ethernet bytes sent.
    fn send(&mut self, hdr: &NetHdr, frame: &[io::IoSlice<'_>]) -> io::Result<usize>;
    /// Receives one frame into `buf` (at least 65550 bytes is always enough);
    /// returns its header and the Ethernet frame length.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)>;
    /// Like [`NetBackend::send`], with the frame gathered from guest memory.
    /// The default copies it out and calls `send`; the tap backend hands
    /// the buffers to the kernel as they are.
    fn send_guest(&mut self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        let mut bytes = Vec::new();
        guest_buf::gather(frame, &mut bytes);
        self.send(hdr, &[io::IoSlice::new(&bytes)])
    }
    /// Like [`NetBackend::recv`], with the frame scattered over guest
    /// memory. The caller gives room for the largest frame (65550 bytes);
    /// a frame that does not fit is an `InvalidInput` error and lost. The
    /// default receives into a buffer and copies; the tap backend reads
    /// straight into the buffers.
    fn recv_guest(&mut self, bufs: &[GuestBuf]) -> io::Result<(NetHdr, usize)> {
        let mut tmp = vec![0u8; guest_buf::total_len(bufs).min(1 << 17)];
        let (hdr, len) = self.recv(&mut tmp)?;
        if guest_buf::scatter(bufs, &tmp[..len]) < len {
            return Err(guest_buf::too_small());
        }
        Ok((hdr, len))
    }
    /// Readable when a frame may be waiting.
    fn rx_fd(&self) -> RawFd;
    /// Writable when `send` may succeed again.
    fn tx_fd(&self) -> RawFd;
    /// Offloads this backend can carry.
    fn offloads(&self) -> Offloads;
    /// Enables the offloads the guest negotiated (a subset of `offloads()`):
    /// the backend then may hand the guest frames that use them.
    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()>;
    /// Counters.
    fn stats(&self) -> BackendStats;
}

/// A boxed backend is a backend (so that wrappers such as [`PcapBackend`]
/// can take any backend the VMM opened).
impl<B: NetBackend + ?Sized> NetBackend for Box<B> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn send(&mut self, hdr: &NetHdr, frame: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (**self).send(hdr, frame)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(NetHdr, usize)> {
        (**self).recv(buf)
    }
    fn send_guest(&mut self, hdr: &NetHdr, frame: &[GuestBuf]) -> io::Result<usize> {
        (**self).send_guest(hdr, frame)
    }
    fn recv_guest(&mut self, bufs: &[GuestBuf]) -> io::Result<(NetHdr, usize)> {
        (**self).recv_guest(bufs)
    }
    fn rx_fd(&self) -> RawFd {
        (**self).rx_fd()
    }
    fn tx_fd(&self) -> RawFd {
        (**self).tx_fd()
    }
    fn offloads(&self) -> Offloads {
        (**self).offloads()
    }
    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        (**self).set_offloads(offloads)
    }
    fn stats(&self) -> BackendStats {
        (**self).stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_sets() {
        let csum = Offloads {
            csum: true,
            ..Default::default()
        };
        let tso4 = Offloads {
            csum: true,
            tso4: true,
            ..Default::default()
        };
        assert!(csum.is_subset_of(&Offloads::ALL) && tso4.is_subset_of(&Offloads::ALL));
        assert!(!Offloads::ALL.is_subset_of(&tso4));
        assert!(Offloads::default()
            .check_against(&Offloads::default())
            .is_ok());
        assert!(tso4.check_against(&Offloads::ALL).is_ok());
        assert!(Offloads::ALL.check_against(&Offloads::ALL).is_ok());
        assert!(tso4.check_against(&csum).is_err(), "not offered");
        let no_csum = Offloads {
            tso6: true,
            ..Default::default()
        };
        assert!(
            no_csum.check_against(&Offloads::ALL).is_err(),
            "TSO without csum"
        );
        let ecn_only = Offloads {
            csum: true,
            tso_ecn: true,
            ..Default::default()
        };
        assert!(
            ecn_only.check_against(&Offloads::ALL).is_err(),
            "ECN without TSO"
        );
    }

    #[test]
    fn backends_are_trait_objects() {
        fn boxed(b: impl NetBackend + 'static) -> Box<dyn NetBackend> {
            Box::new(b)
        }
        let (mem, _peer) = MemoryBackend::new(1, Offloads::ALL).unwrap();
        assert_eq!(boxed(mem).offloads(), Offloads::ALL);
        fn is_send<T: Send + Sync>() {}
        is_send::<MemoryPeer>();
        is_send::<TapBackend>();
        is_send::<BridgeBackend>();
    }
}
