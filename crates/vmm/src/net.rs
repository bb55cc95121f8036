//! Network interfaces: each `--nic` becomes a PCI NIC model joined to a
//! backend. This module only assembles; models live in tapir-nic, backends
//! in tapir-net-backend, the virtio transport in tapir-virtio.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use tapir_config::{BackendSpec as NetSpec, MacAddr, MacvtapMode, NicModel, NicSpec};
use tapir_net_backend::macvtap::{self, MacvtapLink};
use tapir_net_backend::{
    BridgeBackend, MacvtapBackend, NetBackend, PcapBackend, PcapError, PcapWriter, TapBackend,
    TapConfig,
};
use tapir_net_user::{UserBackend, UserNetConfig};
use tapir_nic::e1000::E1000;
use tapir_nic::rtl8139::{self, Rtl8139};
use tapir_nic::worker::WorkerThreads;
use tapir_nic::{default_mac, VirtioNet};
use tapir_pci::{intx_gsi, IntxPin, SharedPciDevice};
use tapir_virtio::VirtioPciDevice;
use vm_memory::GuestMemoryMmap;

use crate::control::command::{DeviceCounters, NicEntry};
use crate::irq::IrqfdLevel;
use crate::kvm_irq::{KvmIoEvents, KvmMsi};
use crate::pci::PciPlatform;

/// MSI-X vectors of a virtio-net NIC by default: config + RX + TX.
pub const DEFAULT_VIRTIO_VECTORS: u16 = 3;

/// Errors creating a NIC (each names the NIC).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The backend could not be opened.
    #[error("--nic {nic}: {source}")]
    Backend {
        nic: String,
        source: tapir_net_backend::BackendError,
    },
    /// net=user options, or the user-mode network could not start.
    #[error("--nic {nic}: net=user: {msg}")]
    User { nic: String, msg: String },
    /// A model or backend that is parsed but not built yet.
    #[error("--nic {nic}: {what} is not built yet in this version of tapir")]
    NotBuilt { nic: String, what: String },
    /// PCI slot or BAR problems.
    #[error("--nic {nic}: {msg}")]
    Pci { nic: String, msg: String },
    /// Interrupt or worker set-up.
    #[error("--nic {nic}: device set-up: {source}")]
    Irq { nic: String, source: std::io::Error },
    /// The capture file (`pcap=`) could not be set up.
    #[error("--nic {nic}: {source}")]
    Pcap { nic: String, source: PcapError },
    /// Two NICs with one name.
    #[error(
        "--nic {nic}: two NICs are named '{nic}' (id= must differ from the other NICs' names)"
    )]
    DuplicateName { nic: String },
}

/// What the VMM keeps of a NIC.
pub struct Nic {
    /// Its INTx line (resampled by the event loop).
    pub intx: Arc<IrqfdLevel>,
    /// Name, model, backend, cable and counters (the control socket, the
    /// exit report).
    pub entry: NicEntry,
    /// The host link tapir made for it, to delete at the end.
    pub link: Option<MacvtapLink>,
}

/// A NIC's opened backend, as [`open_backend`] (or a test's own opener,
/// see [`crate::run_with_backends`]) gives it.
pub struct OpenedBackend {
    /// The backend.
    pub backend: Box<dyn NetBackend>,
    /// The interface name the default MAC is derived from.
    pub ifname: String,
    /// What `tapir ctl info` shows (`tap:IF`, `bridge:BR:IF`, `user`).
    pub label: String,
    /// A host link made for this NIC, which tapir's main thread deletes at
    /// the end (passthrough's macvtap).
    pub link: Option<MacvtapLink>,
}

impl OpenedBackend {
    /// A backend with no host link of tapir's to delete at the end.
    pub fn new(backend: Box<dyn NetBackend>, ifname: String, label: String) -> OpenedBackend {
        OpenedBackend {
            backend,
            ifname,
            label,
            link: None,
        }
    }
}

/// Opens the backend of one NIC: the function [`crate::run_with_backends`]
/// calls for each NIC, with the NIC's name (`net0`, or its `id=`) and spec.
pub type BackendOpener<'a> = dyn FnMut(&str, &NicSpec) -> Result<OpenedBackend, NetError> + 'a;

fn macvtap_mode(mode: MacvtapMode) -> macvtap::Mode {
    match mode {
        MacvtapMode::Bridge => macvtap::Mode::Bridge,
        MacvtapMode::Vepa => macvtap::Mode::Vepa,
        MacvtapMode::Private => macvtap::Mode::Private,
        MacvtapMode::Passthru => macvtap::Mode::Passthru,
    }
}

/// tapir's own opener: the backend `spec.net` names.
pub fn open_backend(name: &str, spec: &NicSpec) -> Result<OpenedBackend, NetError> {
    let be = |source| NetError::Backend {
        nic: name.to_string(),
        source,
    };
    match &spec.net {
        NetSpec::Tap { ifname, fd } => {
            let tap = TapBackend::open(TapConfig {
                ifname: ifname.clone(),
                fd: *fd,
                vnet_hdr: true,
            })
            .map_err(be)?;
            let ifname = tap.ifname().to_string();
            let label = format!("tap:{ifname}");
            Ok(OpenedBackend::new(Box::new(tap), ifname, label))
        }
        NetSpec::Bridge { br, ifname } => {
            let b = BridgeBackend::open(br, ifname.as_deref()).map_err(be)?;
            let ifname = b.ifname().to_string();
            let label = format!("bridge:{br}:{ifname}");
            Ok(OpenedBackend::new(Box::new(b), ifname, label))
        }
        NetSpec::User { options, hostfwd } => {
            let user_err = |msg: String| NetError::User {
                nic: name.to_string(),
                msg,
            };
            let cfg =
                UserNetConfig::parse(options, hostfwd).map_err(|e| user_err(e.to_string()))?;
            let user = UserBackend::new(name, cfg).map_err(|e| user_err(e.to_string()))?;
            Ok(OpenedBackend::new(
                Box::new(user),
                "user".to_string(),
                "user".to_string(),
            ))
        }
        NetSpec::Passthrough { host, mode } => {
            let mac = spec
                .mac
                .map(|m| m.0)
                .unwrap_or_else(|| default_mac(&format!("{name}/{host}")));
            let m = MacvtapBackend::open(host, mac, macvtap_mode(*mode)).map_err(be)?;
            let ifname = m.ifname().to_string();
            let label = format!("passthrough:{host}:{ifname}");
            let link = m.link();
            let mut opened = OpenedBackend::new(Box::new(m), ifname, label);
            opened.link = Some(link);
            Ok(opened)
        }
    }
}

/// Creates every NIC of `nics` on bus 0, each with the backend `open`
/// gives and its worker thread from `threads`.
pub fn add_nics(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pci: &mut PciPlatform,
    nics: &[NicSpec],
    open: &mut BackendOpener<'_>,
    threads: &WorkerThreads,
) -> Result<Vec<Nic>, NetError> {
    let mut out: Vec<Nic> = Vec::with_capacity(nics.len());
    for (i, spec) in nics.iter().enumerate() {
        let name = spec.id.clone().unwrap_or_else(|| format!("net{i}"));
        let taken = nics.iter().enumerate().any(|(j, other)| {
            j != i && other.id.clone().unwrap_or_else(|| format!("net{j}")) == name
        });
        if taken {
            return Err(NetError::DuplicateName { nic: name });
        }
        let pci_err = |msg: String| NetError::Pci {
            nic: name.clone(),
            msg,
        };
        let slot = pci
            .segment()
            .reserve_slot(spec.slot)
            .map_err(|e| pci_err(e.to_string()))?;
        // A macvtap is made with the NIC's MAC, so passthrough's default
        // comes from the host NIC, before the backend is opened.
        let mut resolved;
        let spec = match &spec.net {
            NetSpec::Passthrough { host, .. } if spec.mac.is_none() => {
                resolved = spec.clone();
                resolved.mac = Some(MacAddr(default_mac(&format!("{i}/{host}"))));
                &resolved
            }
            _ => spec,
        };
        let OpenedBackend {
            backend,
            ifname,
            label: backend_name,
            link: host_link,
        } = open(&name, spec)?;
        // Capture wraps whatever backend was opened: every frame of every
        // model crosses this seam (docs/pcap.md). Every NIC's is wrapped, so
        // that the control socket can start a capture later. Its files are
        // opened here, on the thread that builds the VM (the worker may not
        // open files).
        let writer = match &spec.pcap {
            None => None,
            Some(p) => {
                Some(
                    PcapWriter::create(&p.path, p.max).map_err(|source| NetError::Pcap {
                        nic: name.clone(),
                        source,
                    })?,
                )
            }
        };
        let backend = PcapBackend::new(backend, writer);
        let pcap = backend.control();
        let backend: Box<dyn NetBackend> = Box::new(backend);
        let mac = spec
            .mac
            .map(|m| m.0)
            .unwrap_or_else(|| default_mac(&format!("{i}/{ifname}")));
        if let Some(first) = out.iter().find(|n| n.entry.mac == mac) {
            eprintln!(
                "tapir: warning: {name} and {} have the same MAC address {}: a guest bridging or \
                 routing between them will misbehave",
                first.entry.name,
                MacAddr(mac)
            );
        }
        let gsi = intx_gsi(slot, IntxPin::IntA);
        let intx = Arc::new(IrqfdLevel::new(vm, gsi).map_err(|source| NetError::Irq {
            nic: name.clone(),
            source,
        })?);
        // virtio's transport registers its ioeventfds once BAR 0 has an address.
        let mut virtio = None;
        let mut msi_sent = Arc::default();
        let setup_err = |source| NetError::Irq {
            nic: name.clone(),
            source,
        };
        let (device, link, stats): (SharedPciDevice, _, _) = match spec.model {
            NicModel::Virtio => {
                let device = VirtioNet::new(name.clone(), mac, spec.vlan, backend, threads)
                    .map_err(setup_err)?;
                let (link, stats) = (device.link(), device.stats());
                let vectors = spec.vectors.unwrap_or(DEFAULT_VIRTIO_VECTORS);
                let msi = KvmMsi::new(vm.clone());
                msi_sent = msi.sent();
                let transport = VirtioPciDevice::new(
                    device,
                    mem.clone(),
                    vectors,
                    Arc::new(msi),
                    intx.clone(),
                    Arc::new(KvmIoEvents::new(vm.clone())),
                )
                .map_err(|e| pci_err(e.to_string()))?;
                let transport = Arc::new(Mutex::new(transport));
                virtio = Some(transport.clone());
                (transport, link, stats)
            }
            NicModel::E1000 => {
                let nic = E1000::new(
                    mac,
                    mem.clone(),
                    intx.clone(),
                    backend,
                    spec.vlan,
                    name.clone(),
                    threads,
                )
                .map_err(setup_err)?;
                let (link, stats) = (nic.link(), nic.stats());
                (Arc::new(Mutex::new(nic)), link, stats)
            }
            NicModel::Rtl8139 => {
                let revision = spec.revision.unwrap_or(rtl8139::DEFAULT_REVISION);
                let nic = Rtl8139::new(
                    mac,
                    revision,
                    mem.clone(),
                    intx.clone(),
                    backend,
                    spec.vlan,
                    name.clone(),
                    threads,
                )
                .map_err(setup_err)?;
                let (link, stats) = (nic.link(), nic.stats());
                (Arc::new(Mutex::new(nic)), link, stats)
            }
        };
        pci.segment()
            .add_device(slot, device)
            .map_err(|e| pci_err(e.to_string()))?;
        if let Some(t) = virtio {
            // Kicks then go straight to the queue eventfds (KVM ioeventfd)
            // instead of through the vCPU thread.
            t.lock()
                .unwrap()
                .register_ioevents()
                .map_err(|e| pci_err(e.to_string()))?;
        }
        let device_counters = DeviceCounters {
            access: pci
                .segment()
                .access_counters(slot)
                .ok_or_else(|| pci_err(format!("slot {slot} has no counters")))?,
            intx: intx.raised(),
            msi: msi_sent,
        };
        out.push(Nic {
            intx,
            entry: NicEntry {
                name,
                model: spec.model.name(),
                backend: backend_name,
                mac,
                link,
                stats,
                pcap,
                device: device_counters,
            },
            link: host_link,
        });
    }
    Ok(out)
}
