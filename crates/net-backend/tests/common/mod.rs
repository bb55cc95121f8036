//! Helpers for the tests that need root and /dev/net/tun.
#![allow(dead_code)]

use std::io;
use std::path::Path;

// Shared with tapir's own tests (tests/datapath.rs): taps, `ip`, the
// packet socket.
pub use tapir_test_support::net::*;

/// A local experimental EtherType, so that stray host traffic is ignored.
pub const ETH_P_TEST: u16 = 0x88b5;

/// The interface's index, if it exists.
pub fn ifindex_of(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the interface that had `ifindex` under `name` is gone. A
/// kernel-chosen name (tapN, tapirN) may be reused at once by a test running
/// in parallel, so the name alone does not tell.
/// Whether the interface `name` that had `ifindex` is gone, waiting up to
/// 5 s: a process another test thread is starting may hold a copy of the
/// tap's fd between its fork and its exec (O_CLOEXEC closes it only then).
pub fn iface_gone(name: &str, ifindex: Option<u32>) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if ifindex.is_some() && ifindex_of(name) != ifindex {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A test frame of EtherType [`ETH_P_TEST`].
pub fn test_frame(marker: u8, len: usize) -> Vec<u8> {
    let mut f = vec![
        0x52, 0x54, 0x00, 0x11, 0x22, 0x33, 0x52, 0x54, 0x00, 0x44, 0x55, marker,
    ];
    f.extend_from_slice(&ETH_P_TEST.to_be_bytes());
    f.extend((0..len.saturating_sub(14)).map(|i| (i as u8) ^ marker));
    f
}

/// Runs `f` on a thread whose effective capabilities lack CAP_NET_ADMIN
/// (capabilities are per thread for the raw capset syscall).
pub fn without_net_admin<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget with a v3 header writes two Data structs into `data`.
        let rc =
            unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
        const CAP_NET_ADMIN: u32 = 12;
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        // SAFETY: capset with a v3 header reads two Data structs; it only
        // changes this thread's capabilities.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}
