//! The guest-physical memory map and fixed I/O ports of a tapir x86_64 VM.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_6000  PVH start_info (+ memmap)
//!                                       or multiboot info (+ mmap, modules)
//! 0x0000_0520  IDT                      0x0000_7000  Linux boot_params (zero page)
//! 0x0000_8ff0  initial stack top        0x0000_9000  PML4, then PDPT, PD x4 (identity 4 GiB)
//! 0x0002_0000  kernel command line      0x000e_0000  ACPI tables (RSDP first)
//! 0x0010_0000  kernel load address      ...          RAM up to min(size, 3 GiB)
//! 0xc000_0000  PCI MMIO32 window        0xe000_0000  PCI ECAM (bus 0)
//! 0xfec0_0000  IOAPIC                   0xfee0_0000  LAPIC
//! 0x1_0000_0000  RAM above 4 GiB        0x40_0000_0000 PCI MMIO64 window
//! ```

/// GDT location.
pub const GDT_START: u64 = 0x500;
/// IDT location (an empty IDT is loaded at boot).
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map table.
pub const PVH_INFO_START: u64 = 0x6000;
/// Multiboot information structure, followed by its memory map, module
/// list and strings, up to [`ZERO_PAGE_START`]. The same page as
/// [`PVH_INFO_START`]: a guest boots with one protocol only.
pub const MULTIBOOT_INFO_START: u64 = PVH_INFO_START;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-table root (PML4); PDPT at +0x1000, four PDs at +0x2000..+0x6000.
pub const PML4_START: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we accept (including the trailing NUL).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// End of the low RAM that is reported as usable (EBDA starts here).
pub const LOW_RAM_END: u64 = 0x9fc00;
/// Firmware area (reserved in the e820 map): ACPI tables, RSDP first,
/// and the reset-vector stub in its last page.
pub const ACPI_START: u64 = 0xe0000;
/// Size of the reserved firmware area (up to 1 MiB).
pub const ACPI_SIZE: u64 = 0x20000;
/// Room for the ACPI tables inside the firmware area.
pub const ACPI_TABLES_SIZE: u64 = 0x1f000;
/// The real-mode reset vector (F000:FFF0). Linux falls back to jumping
/// here to reboot ("BIOS reboot"); tapir places a stub that writes the ACPI
/// reset register, as a firmware's reset path would.
pub const RESET_VECTOR: u64 = 0xffff0;
/// Where the kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole (RAM stops here and resumes at 4 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO_HOLE_SIZE: u64 = 0x1_0000_0000 - MMIO_HOLE_START;
/// PCI 32-bit memory window for BARs.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit PCI window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI Express enhanced configuration access (ECAM), bus 0 only.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// ECAM size for one bus (32 devices x 8 functions x 4 KiB).
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// LAPIC MMIO base.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Start of RAM above the hole.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// PCI 64-bit memory window for BARs (below 40 physical address bits).
pub const PCI_MMIO64_START: u64 = 0x40_0000_0000;
/// Size of the 64-bit PCI window.
pub const PCI_MMIO64_SIZE: u64 = 0x10_0000_0000;

/// PCI I/O port window for BARs.
pub const PCI_IO_START: u64 = 0xc000;
/// Size of the PCI I/O window.
pub const PCI_IO_SIZE: u64 = 0x4000;
/// Type-1 PCI configuration ports (0xcf8 address, 0xcfc data).
pub const PCI_CONFIG_IO_START: u64 = 0xcf8;
/// Size of the type-1 configuration port range.
pub const PCI_CONFIG_IO_SIZE: u64 = 8;

/// COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1 interrupt (ISA IRQ, identity-mapped to the same GSI).
pub const COM1_IRQ: u32 = 4;
/// i8042 data and command ports (only the reset command is implemented).
pub const I8042_DATA_PORT: u64 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// ACPI (HW-reduced) sleep control register, 1 byte.
pub const ACPI_SLEEP_CONTROL_PORT: u64 = 0x600;
/// ACPI sleep status register, 1 byte.
pub const ACPI_SLEEP_STATUS_PORT: u64 = 0x601;
/// ACPI reset register, 1 byte.
pub const ACPI_RESET_PORT: u64 = 0x602;
/// Value written to [`ACPI_RESET_PORT`] to reset the machine.
pub const ACPI_RESET_VALUE: u8 = 0x01;
/// SLP_TYP of the `_S5_` (soft-off) package in the DSDT.
pub const ACPI_S5_SLP_TYP: u8 = 5;

/// First GSI used for PCI INTx (IOAPIC pins 16..23).
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// Number of GSIs shared by PCI INTx.
pub const PCI_INTX_GSI_COUNT: u32 = 8;
/// Number of IOAPIC pins (GSIs 0..23).
pub const IOAPIC_PINS: u32 = 24;

/// Smallest guest RAM tapir accepts.
pub const MIN_MEMORY: u64 = 16 << 20;
