//! Platform devices of the tapir VMM and the buses they sit on.
//!
//! Devices are plain state machines: they see register accesses through
//! [`BusDevice`] and reach the outside world (interrupt lines, the VM's
//! power state, a guest-requested exit) only through injected traits from
//! [`irq`], [`power`] and [`debug_exit`].

pub mod bus;
pub mod irq;
pub mod power;
pub mod sync;
pub mod timer;

pub use bus::{Bus, BusDevice, BusError};
pub use irq::{EdgeIrq, LevelIrq};
pub use job_thread::{DeviceThreads, JobThread, ThreadStart};
pub use power::{PowerEvent, PowerSink};
pub use sync::lock;
pub use timer::Timer;
pub mod acpi_pm;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod job_thread;
pub mod pc_testdev;
pub mod serial;
