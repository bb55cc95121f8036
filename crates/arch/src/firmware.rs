//! The little "firmware" tapir places in guest memory: a reset-vector stub.
//!
//! Linux on a HW-reduced ACPI machine without EFI reboots by jumping to the
//! real-mode reset vector (F000:FFF0), expecting firmware there. tapir has
//! no BIOS, so it puts 16 bytes of real-mode code at that address that do
//! what a firmware's reset path does: write the ACPI reset register.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{ACPI_RESET_PORT, ACPI_RESET_VALUE, RESET_VECTOR};

/// The real-mode reset stub (16 bytes).
pub fn reset_stub() -> [u8; 16] {
    let port = (ACPI_RESET_PORT as u16).to_le_bytes();
    [
        0xba,
        port[0],
        port[1], // mov dx, ACPI_RESET_PORT
        0xb0,
        ACPI_RESET_VALUE, // mov al, ACPI_RESET_VALUE
        0xee,             // out dx, al
        0xfa,             // cli
        0xf4,             // hlt
        0xeb,
        0xfc, // jmp back to cli
        0x90,
        0x90,
        0x90,
        0x90,
        0x90,
        0x90, // nop padding
    ]
}

/// Writes the reset stub at [`RESET_VECTOR`].
pub fn write_reset_stub<M: GuestMemoryBackend>(mem: &M) -> Result<(), GuestMemoryError> {
    mem.write_slice(&reset_stub(), GuestAddress(RESET_VECTOR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ACPI_START, ACPI_TABLES_SIZE};
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn stub_sits_at_the_reset_vector_after_the_acpi_tables() {
        const { assert!(ACPI_START + ACPI_TABLES_SIZE <= RESET_VECTOR) };
        const { assert!(RESET_VECTOR + 16 == 0x10_0000) };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_reset_stub(&mem).unwrap();
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(RESET_VECTOR)).unwrap();
        // mov dx, 0x602; mov al, 1; out dx, al
        assert_eq!(&b[..6], &[0xba, 0x02, 0x06, 0xb0, 0x01, 0xee]);
        // The loop jumps back to `cli` (offset 6): 8 + 2 - 4 = 6.
        assert_eq!(&b[6..10], &[0xfa, 0xf4, 0xeb, 0xfc]);
    }
}
