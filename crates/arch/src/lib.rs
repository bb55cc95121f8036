//! x86_64 platform knowledge of the tapir VMM: the memory map, boot
//! protocols (Linux 64-bit, PVH, multiboot v1), vCPU register/CPUID/MSR set-up and the
//! ACPI tables that describe the machine to the guest.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod firmware;
pub mod layout;
pub mod multiboot;
