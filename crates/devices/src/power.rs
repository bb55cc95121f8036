//! How devices ask the VMM to end or restart the VM.

/// A guest-initiated change of the machine's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// ACPI S5 (soft off).
    PowerOff,
    /// A platform reset: ACPI reset register or the i8042 reset line.
    Reset,
}

/// Receives power events from devices (the VMM stops the vCPUs).
pub trait PowerSink: Send + Sync {
    /// Called from the vCPU thread that performed the access.
    fn power_event(&self, event: PowerEvent);
}
