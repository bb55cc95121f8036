//! The backend offloads a NIC model without receive offloads of its own
//! (e1000, RTL8139) still asks for: checksum offload and, with it, TSO.
//! The backend then hands over frames with partial checksums and TCP
//! frames of up to 64 KiB, which the model completes and segments itself
//! (`tapir_net_backend::offload::segment`) before they reach the guest:
//! one backend read and one pass instead of dozens, and checksums the
//! model knows to be right (its receive checksum status can say so).

use std::io;

use tapir_net_backend::{NetBackend, Offloads};

/// Turns on checksum offload and the TSO kinds the backend offers.
/// Returns the set it took (partial checksums and GSO frames of those
/// kinds may then also be sent to it); a backend that refuses the set gets
/// none.
pub fn enable(backend: &mut dyn NetBackend) -> io::Result<Offloads> {
    let offered = backend.offloads();
    let want = if offered.csum {
        let tso = offered.tso4 || offered.tso6;
        Offloads {
            csum: true,
            tso4: offered.tso4,
            tso6: offered.tso6,
            tso_ecn: tso && offered.tso_ecn,
        }
    } else {
        Offloads::default()
    };
    if want != Offloads::default() && backend.set_offloads(want).is_ok() {
        return Ok(want);
    }
    backend.set_offloads(Offloads::default())?;
    Ok(Offloads::default())
}
