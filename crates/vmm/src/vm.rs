//! Building a VM from its configuration and running it to the end.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use tapir_arch::{acpi, boot, cpu, firmware, layout, multiboot};
use tapir_config::{SeccompMode, SerialConfig, VmConfig};
use tapir_devices::acpi_pm::{AcpiPm, REGISTER_BLOCK_LEN};
use tapir_devices::debug_exit::DebugExit;
use tapir_devices::fw_cfg::{self, FwCfg, FwCfgInfo};
use tapir_devices::i8042::I8042;
use tapir_devices::pc_testdev;
use tapir_devices::serial::{SerialDevice, SerialMetrics};
use tapir_devices::Bus;
use tapir_net_backend::macvtap::MacvtapLink;
use tapir_nic::worker::WorkerThreads;
use tapir_seccomp::{Filter, SeccompError, ThreadKind};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::console::{self, ConsoleInput, RawTerminal, StdoutWriter, TeeWriter};
use crate::control::command::NicEntry;
use crate::control::{ControlError, ControlServer};
use crate::host::{self, HostError, KvmKind};
use crate::irq::{IrqfdEdge, IrqfdLevel};
use crate::net::{self, BackendOpener};
use crate::pci::PciPlatform;
use crate::vcpu::{self, Buses, VcpuHandle, VcpuState};
use crate::{signals, ExitReason, VmControl};

/// Errors that stop tapir before or while building the VM (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// /dev/kvm problems.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A file given on the command line cannot be read.
    #[error("cannot open {what} '{path}': {source}")]
    OpenFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Guest memory too small.
    #[error("--memory {0} MiB is too small: tapir needs at least {min} MiB", min = layout::MIN_MEMORY >> 20)]
    TooLittleMemory(u64),
    /// Guest memory larger than the host's RAM.
    #[error("--memory {want} MiB is more than this host's RAM ({host} MiB)")]
    MoreMemoryThanHost { want: u64, host: u64 },
    /// Kernel loading.
    #[error("kernel '{path}': {source}")]
    Kernel {
        path: PathBuf,
        source: boot::BootError,
    },
    /// Initrd loading.
    #[error("initrd '{path}': {source}")]
    Initrd {
        path: PathBuf,
        source: boot::BootError,
    },
    /// Command line.
    #[error("kernel command line: {0}")]
    Cmdline(boot::BootError),
    /// Boot parameter set-up.
    #[error("boot set-up: {0}")]
    Boot(boot::BootError),
    /// ACPI tables.
    #[error("ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    /// vCPU register set-up.
    #[error("vCPU {0} set-up: {1}")]
    Cpu(u8, cpu::CpuError),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {0} MiB of guest memory: {1}")]
    Memory(u64, String),
    /// Device set-up.
    #[error("device set-up: {0}")]
    Device(String),
    /// A device's ports overlap the machine's own.
    #[error("--device {kind}: ports {first:#x}-{last:#x} overlap {other} (ports {other_first:#x}-{other_last:#x})")]
    PortConflict {
        kind: &'static str,
        first: u64,
        last: u64,
        other: &'static str,
        other_first: u64,
        other_last: u64,
    },
    /// A Linux bzImage on PVM would crawl for many minutes and then die.
    #[error("refusing to boot a Linux bzImage: /dev/kvm here is PVM (kvm_pvm), which runs unmodified guests under \
             instruction emulation, where Linux takes many minutes to decompress and then dies (cmpxchg16b, xrstor); \
             run it inside resources/nested/tapir-nested, or pass --allow-emulation to try anyway")]
    PvmLinux,
    /// A network interface could not be created.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// A disk could not be set up.
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    /// A `--device` could not be assigned.
    #[error(transparent)]
    Vfio(#[from] crate::vfio::VfioError),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Other I/O.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Io { what, source }
}

fn open(what: &'static str, path: &Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::OpenFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Tokens of the VMM's own event subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Token {
    Exit = 0,
    Terminate = 1,
    Resample = 2,
}

impl Token {
    fn from_data(data: u32) -> Option<(Token, u32)> {
        let idx = data >> 8;
        match data & 0xff {
            0 => Some((Token::Exit, idx)),
            1 => Some((Token::Terminate, idx)),
            2 => Some((Token::Resample, idx)),
            _ => None,
        }
    }
    fn data(self, idx: u32) -> u32 {
        (idx << 8) | self as u32
    }
}

/// Watches the stop event, SIGINT/SIGTERM and INTx resample fds.
struct ControlSubscriber {
    control: Arc<VmControl>,
    term: EventFd,
    level_irqs: Vec<Arc<IrqfdLevel>>,
}

impl MutEventSubscriber for ControlSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(
            &self.control.exit_evt,
            Token::Exit.data(0),
            EventSet::IN,
        ));
        let _ = ops.add(Events::with_data(
            &self.term,
            Token::Terminate.data(0),
            EventSet::IN,
        ));
        for (i, l) in self.level_irqs.iter().enumerate() {
            let _ = ops.add(Events::with_data(
                l.resample_fd(),
                Token::Resample.data(i as u32),
                EventSet::IN,
            ));
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match Token::from_data(events.data()) {
            Some((Token::Exit, _)) => {
                let _ = self.control.exit_evt.read();
            }
            Some((Token::Terminate, _)) => {
                let _ = self.term.read();
                self.control.stop(ExitReason::Signal(
                    signals::received().unwrap_or(libc::SIGTERM),
                ));
            }
            Some((Token::Resample, i)) => {
                if let Some(l) = self.level_irqs.get(i as usize) {
                    let _ = l.resample();
                }
            }
            None => {}
        }
    }
}

fn create_memory(vm: &VmFd, mem_size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let regions = boot::ram_regions(mem_size);
    let mem = GuestMemoryMmap::<()>::from_ranges(&regions)
        .map_err(|e| VmmError::Memory(mem_size >> 20, e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Memory(mem_size >> 20, e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the VM
        // (and every vCPU) keeps until after the vCPU threads are joined.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(mem)
}

/// Everything a built VM owns.
struct Vm {
    _kvm: Kvm,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    control: Arc<VmControl>,
    buses: Arc<Buses>,
    serial: Arc<SerialDevice>,
    serial_space: EventFd,
    level_irqs: Vec<Arc<IrqfdLevel>>,
    nics: Vec<NicEntry>,
    /// Host links tapir made for NICs (passthrough's macvtaps), deleted by
    /// this thread at the end (see [`MacvtapLink`]).
    links: Vec<MacvtapLink>,
    /// Assigned devices' host handles: never dropped (see
    /// [`crate::vfio::add_devices`]); the kernel closes them at exit.
    _assigned: std::mem::ManuallyDrop<Vec<crate::vfio::Assigned>>,
    rsdp: GuestAddress,
}

fn build_platform(
    kvm: Kvm,
    config: &VmConfig,
    open_backend: &mut BackendOpener<'_>,
    disks: Vec<crate::disk::OpenedDisk>,
    filters: &Filters,
) -> Result<Vm, VmmError> {
    let vm = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
    vm.set_tss_address(0xfffb_d000)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(0xfffb_c000)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    let mem = create_memory(&vm, config.memory)?;

    let control = Arc::new(VmControl::new().map_err(io_err("eventfd"))?);
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    // COM1.
    let serial_space = EventFd::new(EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    let space = serial_space.try_clone().map_err(io_err("eventfd"))?;
    let metrics = Arc::new(SerialMetrics::new(Box::new(move || {
        let _ = space.write(1);
    })));
    let open_out = |what, p: &PathBuf| {
        console::file_writer(p).map_err(|source| VmmError::OpenFile {
            what,
            path: p.clone(),
            source,
        })
    };
    let mut out: Box<dyn Write + Send> = match &config.serial {
        SerialConfig::Stdio => Box::new(StdoutWriter),
        SerialConfig::File(p) => Box::new(open_out("serial output file", p)?),
        SerialConfig::None => Box::new(std::io::sink()),
    };
    if let Some(p) = &config.serial_log {
        out = Box::new(TeeWriter::new(out, open_out("serial log file", p)?));
    }
    let com1_irq = Arc::new(IrqfdEdge::new(&vm, layout::COM1_IRQ).map_err(io_err("COM1 irqfd"))?);
    let serial = Arc::new(SerialDevice::new(com1_irq, metrics, out));
    let dev_err = |e: tapir_devices::BusError| VmmError::Device(e.to_string());
    pio.insert(layout::COM1_PORT, 8, serial.clone())
        .map_err(dev_err)?;
    pio.insert(
        layout::I8042_DATA_PORT,
        5,
        Arc::new(I8042::new(control.clone())),
    )
    .map_err(dev_err)?;
    let pm = AcpiPm::new(
        layout::ACPI_S5_SLP_TYP,
        layout::ACPI_RESET_VALUE,
        control.clone(),
    );
    pio.insert(
        layout::ACPI_SLEEP_CONTROL_PORT,
        REGISTER_BLOCK_LEN,
        Arc::new(pm),
    )
    .map_err(dev_err)?;

    // fw_cfg, always there as on QEMU's x86 machines (docs/test-kernels.md).
    let fw_cfg = FwCfg::new(FwCfgInfo {
        ram_size: config.memory,
        nb_cpus: config.cpus.into(),
        max_cpus: config.cpus.into(),
    });
    pio.insert(
        fw_cfg::PORT_BASE.into(),
        fw_cfg::PORT_LEN.into(),
        Arc::new(fw_cfg),
    )
    .map_err(dev_err)?;

    // PCI root complex on bus 0.
    let mut pci = PciPlatform::new(&mut pio, &mut mmio).map_err(VmmError::Device)?;
    add_debug_exit(&mut pio, config, &control)?;
    add_pc_testdev(&mut pio, &mut mmio, config, &vm)?;
    let nic_threads = filters.nic_threads(&control);
    let nics = net::add_nics(
        &vm,
        &mem,
        &mut pci,
        &config.nics,
        open_backend,
        &nic_threads,
    )?;
    let mut level_irqs: Vec<_> = nics.iter().map(|n| n.intx.clone()).collect();
    let links = nics.iter().filter_map(|n| n.link.clone()).collect();
    let nics = nics.into_iter().map(|n| n.entry).collect();
    let assigned = crate::vfio::add_devices(&vm, &mem, &mut pci, &config.devices)?;
    // After the devices that may name their slot (addr=).
    level_irqs.extend(crate::disk::add_disks(
        &vm,
        &mem,
        &mut pci,
        disks,
        &filters.disk_threads(&control),
    )?);

    let rsdp = acpi::create_acpi_tables(
        &mem,
        &acpi::AcpiConfig {
            nr_cpus: config.cpus,
            pci: pci.acpi_info(),
            serial_ports: vec![(layout::COM1_PORT as u16, layout::COM1_IRQ)],
        },
    )?;
    firmware::write_reset_stub(&mem).map_err(|e| VmmError::Device(format!("reset vector: {e}")))?;
    let buses = Arc::new(Buses { pio, mmio });
    Ok(Vm {
        _kvm: kvm,
        vm,
        mem,
        control,
        buses,
        serial,
        serial_space,
        level_irqs,
        nics,
        links,
        _assigned: std::mem::ManuallyDrop::new(assigned),
        rsdp,
    })
}

/// The machine's own port ranges (name, first port, length), for the
/// message when a `--device` overlaps one.
const PLATFORM_PORTS: &[(&str, u64, u64)] = &[
    ("the i8042", layout::I8042_DATA_PORT, 5),
    ("COM1", layout::COM1_PORT, 8),
    ("fw_cfg", fw_cfg::PORT_BASE as u64, fw_cfg::PORT_LEN as u64),
    (
        "the ACPI PM registers",
        layout::ACPI_SLEEP_CONTROL_PORT,
        REGISTER_BLOCK_LEN,
    ),
    (
        "PCI configuration",
        layout::PCI_CONFIG_IO_START,
        layout::PCI_CONFIG_IO_SIZE,
    ),
    (
        "the PCI I/O window",
        layout::PCI_IO_START,
        layout::PCI_IO_SIZE,
    ),
];

/// `--device pc-testdev`, if given: its ports and its scratch memory.
fn add_pc_testdev(
    pio: &mut Bus,
    mmio: &mut Bus,
    config: &VmConfig,
    vm: &Arc<VmFd>,
) -> Result<(), VmmError> {
    if !config
        .devices
        .iter()
        .any(|d| matches!(d, tapir_config::DeviceSpec::PcTestdev))
    {
        return Ok(());
    }
    let err = |e: tapir_devices::BusError| VmmError::Device(format!("pc-testdev: {e}"));
    pio.insert(
        pc_testdev::IO_PORT.into(),
        pc_testdev::IO_LEN.into(),
        Arc::new(pc_testdev::TestdevPorts::default()),
    )
    .map_err(err)?;
    let lines = Arc::new(crate::kvm_irq::KvmIrqLines::new(vm.clone()));
    pio.insert(
        pc_testdev::IRQ_PORT_BASE.into(),
        pc_testdev::IRQ_LINES.into(),
        Arc::new(pc_testdev::TestdevIrqLines::new(lines)),
    )
    .map_err(err)?;
    mmio.insert(
        pc_testdev::IORAM_BASE,
        pc_testdev::IORAM_LEN,
        Arc::new(pc_testdev::TestdevIoram::default()),
    )
    .map_err(err)
}

/// `--device isa-debug-exit`, if given: after the machine's own port
/// devices, so that an overlap names the one it hits.
fn add_debug_exit(
    pio: &mut Bus,
    config: &VmConfig,
    control: &Arc<VmControl>,
) -> Result<(), VmmError> {
    let Some(spec) = config.devices.iter().find_map(|d| d.as_debug_exit()) else {
        return Ok(());
    };
    let (base, len) = (u64::from(spec.iobase), u64::from(spec.iosize));
    let device = Arc::new(DebugExit::new(control.clone()));
    pio.insert(base, len, device).map_err(|e| {
        match PLATFORM_PORTS
            .iter()
            .find(|(_, b, l)| base < b + l && *b < base + len)
        {
            Some(&(other, b, l)) => VmmError::PortConflict {
                kind: "isa-debug-exit",
                first: base,
                last: base + len - 1,
                other,
                other_first: b,
                other_last: b + l - 1,
            },
            None => VmmError::Device(format!("isa-debug-exit: {e}")),
        }
    })
}

/// Where the boot vCPU starts.
enum Start {
    Linux64 {
        rip: u64,
    },
    /// 32-bit flat protected mode (PVH, multiboot).
    Protected32 {
        eip: u64,
        eax: u32,
        ebx: u32,
    },
}

/// The loaded guest's entry and what it is.
struct Entry {
    start: Start,
    is_linux_bzimage: bool,
}

fn load_guest(vm: &Vm, config: &VmConfig) -> Result<Entry, VmmError> {
    let mut kf = open("kernel", &config.kernel)?;
    let kernel = boot::load_kernel(&vm.mem, &mut kf).map_err(|source| VmmError::Kernel {
        path: config.kernel.clone(),
        source,
    })?;
    let initrd = match &config.initrd {
        Some(p) => {
            let mut f = open("initrd", p)?;
            Some(
                boot::load_initrd(&vm.mem, &kernel, &mut f, config.memory).map_err(|source| {
                    VmmError::Initrd {
                        path: p.clone(),
                        source,
                    }
                })?,
            )
        }
        None => None,
    };
    if kernel.kind == boot::KernelKind::Multiboot {
        return configure_multiboot(vm, config, &kernel, initrd);
    }
    let cmdline_size = boot::write_cmdline(&vm.mem, &config.cmdline).map_err(VmmError::Cmdline)?;
    let is_linux_bzimage = kernel.kind == boot::KernelKind::BzImage;
    let start = match kernel.kind {
        boot::KernelKind::ElfPvh => {
            let cmdline = GuestAddress(layout::CMDLINE_START);
            boot::configure_pvh_boot(&vm.mem, cmdline, initrd, vm.rsdp, config.memory)
                .map_err(VmmError::Boot)?;
            Start::Protected32 {
                eip: kernel.entry.0,
                eax: 0,
                ebx: layout::PVH_INFO_START as u32,
            }
        }
        _ => {
            boot::configure_linux_boot(
                &vm.mem,
                &kernel,
                cmdline_size,
                initrd,
                vm.rsdp,
                config.memory,
            )
            .map_err(VmmError::Boot)?;
            Start::Linux64 {
                rip: kernel.entry.0,
            }
        }
    };
    Ok(Entry {
        start,
        is_linux_bzimage,
    })
}

/// Multiboot: the command line starts with the kernel's file name (as GRUB
/// and QEMU pass it) and the initrd is module 0.
fn configure_multiboot(
    vm: &Vm,
    config: &VmConfig,
    kernel: &boot::LoadedKernel,
    initrd: Option<(GuestAddress, usize)>,
) -> Result<Entry, VmmError> {
    let kernel_name = config.kernel.to_string_lossy();
    let cmdline = multiboot::command_line(&kernel_name, &config.cmdline);
    boot::write_cmdline(&vm.mem, &cmdline).map_err(VmmError::Cmdline)?;
    let module_name = config
        .initrd
        .as_ref()
        .map(|p| p.to_string_lossy())
        .unwrap_or_default();
    let modules: Vec<multiboot::Module> = initrd
        .map(|(addr, size)| multiboot::Module {
            addr,
            size,
            string: &module_name,
        })
        .into_iter()
        .collect();
    multiboot::configure_multiboot_boot(
        &vm.mem,
        GuestAddress(layout::CMDLINE_START),
        &modules,
        config.memory,
    )
    .map_err(VmmError::Boot)?;
    Ok(Entry {
        start: Start::Protected32 {
            eip: kernel.entry.0,
            eax: multiboot::BOOTLOADER_MAGIC,
            ebx: layout::MULTIBOOT_INFO_START as u32,
        },
        is_linux_bzimage: false,
    })
}

fn create_vcpus(
    kvm: &Kvm,
    vm: &Vm,
    config: &VmConfig,
    entry: &Entry,
) -> Result<Vec<kvm_ioctls::VcpuFd>, VmmError> {
    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    let mut vcpus = Vec::with_capacity(config.cpus as usize);
    for id in 0..config.cpus {
        let vcpu = vm
            .vm
            .create_vcpu(id as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = base_cpuid.clone();
        cpu::filter_cpuid(&mut cpuid, id, config.cpus, tsc_deadline);
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let e = |err| VmmError::Cpu(id, err);
        cpu::setup_msrs(kvm, &vcpu).map_err(e)?;
        cpu::setup_fpu(&vcpu).map_err(e)?;
        cpu::setup_lapic(&vcpu).map_err(e)?;
        if id == 0 {
            match &entry.start {
                Start::Linux64 { rip } => {
                    cpu::setup_long_mode(&vm.mem, &vcpu, *rip, layout::ZERO_PAGE_START)
                        .map_err(e)?
                }
                Start::Protected32 { eip, eax, ebx } => {
                    cpu::setup_protected_mode(&vm.mem, &vcpu, *eip, *eax, *ebx).map_err(e)?
                }
            }
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// The seccomp filters of a VM's threads (docs/seccomp.md), compiled
/// before any thread starts; `None` where that kind of thread runs
/// without one.
struct Filters {
    vcpu: Option<Arc<Filter>>,
    nic_worker: Option<Arc<Filter>>,
    disk_worker: Option<Arc<Filter>>,
    main: Option<Arc<Filter>>,
}

impl Filters {
    fn new(mode: SeccompMode) -> Result<Filters, VmmError> {
        let filter = |kind| Filter::new(kind).map(Arc::new);
        Ok(match mode {
            SeccompMode::On | SeccompMode::SpawnedThreads => Filters {
                vcpu: Some(filter(ThreadKind::Vcpu)?),
                nic_worker: Some(filter(ThreadKind::NicWorker)?),
                disk_worker: Some(filter(ThreadKind::DiskWorker)?),
                main: match mode {
                    SeccompMode::On => Some(filter(ThreadKind::Main)?),
                    _ => None,
                },
            },
            SeccompMode::Off => {
                log::warn!("seccomp is off (--seccomp=off): tapir's threads may make any syscall");
                Filters {
                    vcpu: None,
                    nic_worker: None,
                    disk_worker: None,
                    main: None,
                }
            }
        })
    }

    /// Where the NIC worker threads come from: each installs its filter
    /// first, and one that cannot stops the VM.
    fn nic_threads(&self, control: &Arc<VmControl>) -> WorkerThreads {
        let Some(filter) = self.nic_worker.clone() else {
            return WorkerThreads::default();
        };
        let control = control.clone();
        WorkerThreads::new(Arc::new(move || {
            filter.apply().map_err(|e| {
                control.stop(ExitReason::Seccomp(e.to_string()));
                e.into()
            })
        }))
    }
}

impl Filters {
    /// Where the disk worker threads come from: as [`Filters::nic_threads`].
    fn disk_threads(&self, control: &Arc<VmControl>) -> tapir_block::DiskThreads {
        let Some(filter) = self.disk_worker.clone() else {
            return tapir_block::DiskThreads::default();
        };
        let control = control.clone();
        tapir_block::DiskThreads::new(Arc::new(move || {
            filter.apply().map_err(|e| {
                control.stop(ExitReason::Seccomp(e.to_string()));
                e.into()
            })
        }))
    }
}

/// How long teardown waits for vCPU threads to leave KVM_RUN.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(5);

fn stop_vcpus(handles: &mut [VcpuHandle]) {
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    loop {
        let running: Vec<&VcpuHandle> = handles
            .iter()
            .filter(|h| h.state() != VcpuState::Exited)
            .collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let ids: Vec<String> = running.iter().map(|h| h.id.to_string()).collect();
            eprintln!(
                "tapir: warning: vCPU(s) {} did not stop in time; exiting anyway",
                ids.join(",")
            );
            return;
        }
        for h in &running {
            h.kick();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in handles.iter_mut() {
        h.join();
    }
}

/// Builds the VM described by `config`, runs it until it stops, and says why.
pub fn run(config: &VmConfig) -> Result<ExitReason, VmmError> {
    run_with_backends(config, &mut net::open_backend)
}

/// [`run`], with each NIC's backend opened by `open_backend` instead of
/// [`net::open_backend`]: the seam for tests that give a NIC an in-memory
/// backend (`tapir_net_backend::MemoryBackend`).
///
/// The VM runs in the caller's process: it installs process-wide handlers
/// for SIGINT, SIGTERM, SIGSYS and the vCPU kick signal (SIGTERM stops the
/// VM), so one process runs one such VM at a time. With
/// `config.seccomp` on, the caller's thread installs the main thread's
/// seccomp filter for good before the event loop starts: a caller whose
/// thread has more to do afterwards (a test) asks for
/// [`tapir_config::SeccompMode::SpawnedThreads`].
pub fn run_with_backends(
    config: &VmConfig,
    open_backend: &mut BackendOpener<'_>,
) -> Result<ExitReason, VmmError> {
    if config.memory < layout::MIN_MEMORY {
        return Err(VmmError::TooLittleMemory(config.memory >> 20));
    }
    if let Some(host) = host::ram_bytes().filter(|&h| config.memory > h) {
        return Err(VmmError::MoreMemoryThanHost {
            want: config.memory >> 20,
            host: host >> 20,
        });
    }
    // Fail on unreadable inputs before touching KVM.
    open("kernel", &config.kernel)?;
    if let Some(p) = &config.initrd {
        open("initrd", p)?;
    }
    let disks = crate::disk::open_disks(&config.disks)?;
    let filters = Filters::new(config.seccomp)?;
    let kvm = host::open_kvm()?;
    let base_kvm = host::open_kvm()?;
    let vm = build_platform(kvm, config, open_backend, disks, &filters)?;
    let entry = load_guest(&vm, config)?;
    let vcpus = create_vcpus(&base_kvm, &vm, config, &entry)?;

    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
        .map_err(|e| VmmError::Device(format!("event loop: {e:?}")))?;
    let term = EventFd::new(EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    signals::install(&term).map_err(io_err("installing signal handlers"))?;
    let ctl = ControlSubscriber {
        control: vm.control.clone(),
        term,
        level_irqs: vm.level_irqs.clone(),
    };
    em.add_subscriber(Arc::new(Mutex::new(ctl)));
    // Declared after `em`, so dropped before it closes `term`, on every
    // return: a signal must not be written to a closed (or reused) fd.
    let _detach = DetachSignals;
    if let Some(path) = &config.control_socket {
        let server = ControlServer::bind(path, vm.nics.clone(), vm.control.clone())?;
        em.add_subscriber(Arc::new(Mutex::new(server)));
    }
    // Last of all the checks, so that every error in the configuration is
    // said first.
    if host::kvm_kind() == KvmKind::Pvm {
        if entry.is_linux_bzimage && !config.allow_emulation {
            return Err(VmmError::PvmLinux);
        }
        eprintln!("tapir: {}", host::PVM_NOTE);
    }

    let interactive = config.serial == SerialConfig::Stdio
        && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let _raw_terminal = if interactive {
        RawTerminal::stdin()
    } else {
        None
    };
    if config.serial == SerialConfig::Stdio {
        let space = vm.serial_space.try_clone().map_err(io_err("eventfd"))?;
        let input = ConsoleInput::new(vm.serial.clone(), space, interactive, vm.control.clone());
        em.add_subscriber(Arc::new(Mutex::new(input)));
    }

    let mut handles = Vec::with_capacity(vcpus.len());
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let filter = filters.vcpu.clone();
        match vcpu::spawn(id as u8, vcpu, vm.buses.clone(), vm.control.clone(), filter) {
            Ok(h) => handles.push(h),
            Err(e) => {
                vm.control.stop(ExitReason::Signal(0));
                stop_vcpus(&mut handles);
                return Err(VmmError::Io {
                    what: "starting vCPU thread",
                    source: e,
                });
            }
        }
    }
    // This thread's own filter: after the threads it starts (which would
    // inherit it), before its event loop reads anything the guest sends.
    if let Some(f) = &filters.main {
        if let Err(e) = f.apply() {
            vm.control.stop(ExitReason::Signal(0));
            stop_vcpus(&mut handles);
            return Err(e.into());
        }
    }
    // --timeout stops the VM the way a signal does: through VmControl,
    // then the same teardown below.
    let deadline = config
        .timeout
        .as_ref()
        .map(|t| (Instant::now() + t.duration, t.to_string()));
    while !vm.control.stopping() {
        let mut wait_ms = 500;
        if let Some((at, text)) = &deadline {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                vm.control.stop(ExitReason::Timeout(text.clone()));
                continue;
            }
            // Rounded up, so that the loop does not spin in its last ms.
            wait_ms = wait_ms.min(left.as_millis() as i32 + 1);
        }
        if let Err(e) = em.run_with_timeout(wait_ms) {
            if !matches!(e, event_manager::Error::Epoll(ref errno) if errno.errno() == libc::EINTR)
            {
                eprintln!("tapir: event loop error: {e:?}");
                vm.control.stop(ExitReason::Signal(0));
            }
        }
    }
    stop_vcpus(&mut handles);
    for link in &vm.links {
        link.delete();
    }
    report_nic_losses(&vm.nics);
    let _ = vm.vm.as_raw_fd();
    Ok(vm.control.reason().unwrap_or(ExitReason::PowerOff))
}

/// Stops forwarding termination signals to the event loop's eventfd when
/// dropped.
struct DetachSignals;

impl Drop for DetachSignals {
    fn drop(&mut self) {
        signals::detach();
    }
}

/// One line per NIC that dropped frames, so that none is lost silently.
fn report_nic_losses(nics: &[NicEntry]) {
    for n in nics {
        let losses = n.stats.losses();
        if !losses.is_empty() {
            eprintln!(
                "tapir: note: {}: frames not delivered: {}",
                n.name,
                losses.join(" ")
            );
        }
    }
}
