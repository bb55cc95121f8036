//! `net=user`'s guest-frame input: frames (with offload headers) from a
//! guest into the NAT, and everything it answers. `restrict=on`: nothing
//! leaves the machine.
#![no_main]

use std::io::IoSlice;

use libfuzzer_sys::fuzz_target;
use tapir_net_backend::{NetBackend, NetHdr};
use tapir_net_user::{UserBackend, UserNetConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = UserNetConfig {
        restrict: true,
        ..UserNetConfig::default()
    };
    let Ok(mut backend) = UserBackend::new("fuzz", cfg) else {
        return;
    };
    let mut buf = vec![0u8; 65_600];
    // Frames: a length byte pair, a header byte, the bytes.
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 2048;
        let kind = rest[2];
        rest = &rest[3..];
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let hdr = NetHdr {
            flags: kind & 3,
            gso_type: [0, 1, 4, 0x81][usize::from((kind >> 2) & 3)],
            gso_size: u16::from(kind) * 11,
            csum_start: 14 + u16::from(kind & 0x3f),
            csum_offset: u16::from(kind >> 6) * 6,
            ..NetHdr::default()
        };
        let _ = backend.send(&hdr, &[IoSlice::new(frame)]);
        while backend.recv(&mut buf).is_ok() {}
    }
});
