//! Transport tests: a fake device and fake VMM plumbing, driven through
//! the `PciDevice` trait the way a guest driver drives a function.

mod bringup;
mod interrupts;
mod robustness;

use std::os::fd::AsRawFd;

use tapir_pci::configuration::{PCI_CAPABILITY_LIST, PCI_COMMAND, PCI_COMMAND_MEMORY};
use tapir_pci::msix::PCI_CAP_ID_MSIX;
use tapir_pci::MsiMessage;
use vm_memory::GuestAddress;

use super::*;
use crate::device::DEVICE_TYPE_NET;

/// Guest RAM of the tests.
pub(super) const MEM_SIZE: usize = 0x10_0000;
/// Where the tests place BAR 0 (as `PciSegment::add_device` would).
pub(super) const BAR0: u64 = 0xc000_0000;
/// Queue sizes of the fake device.
pub(super) const QUEUE_MAX: [u16; 2] = [256, 128];
/// A device feature bit with no meaning to the transport.
pub(super) const FEATURE_MAC: u64 = 1 << 5;
/// What the fake device offers.
pub(super) const OFFERED: u64 = FEATURE_VERSION_1 | FEATURE_EVENT_IDX | FEATURE_MAC;

// ---- fakes -------------------------------------------------------------------

/// What the fake device saw of one activation.
pub(super) struct Activation {
    pub acked: u64,
    pub queues: Vec<SeenQueue>,
    pub notify: Vec<EventFd>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// A queue as handed to the device.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SeenQueue {
    pub index: u16,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub event_idx: bool,
    pub ready: bool,
}

#[derive(Default)]
pub(super) struct DeviceLog {
    pub activations: Vec<Activation>,
    pub resets: usize,
    pub config_writes: Vec<(u64, Vec<u8>)>,
}

/// Two queues, a 16-byte config space, activation and reset recorded.
pub(super) struct FakeDevice {
    pub device_type: u32,
    pub max_sizes: Vec<u16>,
    pub features: u64,
    pub config: [u8; 16],
    pub fail_activate: bool,
    pub log: Arc<Mutex<DeviceLog>>,
}

impl FakeDevice {
    pub fn new() -> Self {
        let mut config = [0u8; 16];
        for (i, b) in config.iter_mut().enumerate() {
            *b = 0xa0 + i as u8;
        }
        Self {
            device_type: DEVICE_TYPE_NET,
            max_sizes: QUEUE_MAX.to_vec(),
            features: OFFERED,
            config,
            fail_activate: false,
            log: Arc::default(),
        }
    }
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *b = at.and_then(|a| self.config.get(a)).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Backend("no tap".into()));
        }
        let seen = queues
            .iter()
            .map(|q| SeenQueue {
                index: q.index,
                size: q.queue.size(),
                desc: q.queue.desc_table(),
                avail: q.queue.avail_ring(),
                used: q.queue.used_ring(),
                event_idx: q.queue.event_idx_enabled(),
                ready: q.queue.ready(),
            })
            .collect();
        self.log.lock().unwrap().activations.push(Activation {
            acked: acked_features,
            queues: seen,
            notify: queues.into_iter().map(|q| q.notify).collect(),
            interrupt,
        });
        Ok(())
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
}

#[derive(Default)]
pub(super) struct FakeMsi {
    pub sent: Mutex<Vec<(u16, MsiMessage)>>,
}

impl MsiSender for FakeMsi {
    fn send(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
        self.sent.lock().unwrap().push((vector, msg));
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct FakeLine {
    pub levels: Mutex<Vec<bool>>,
}

impl FakeLine {
    pub fn high(&self) -> bool {
        self.levels.lock().unwrap().last().copied().unwrap_or(false)
    }
}

impl LevelIrq for FakeLine {
    fn set_level(&self, high: bool) -> io::Result<()> {
        self.levels.lock().unwrap().push(high);
        Ok(())
    }
}

/// Records registrations as (raw fd, address, len).
#[derive(Default)]
pub(super) struct FakeIoEvents {
    pub registered: Mutex<Vec<(i32, u64, u32)>>,
    pub unregistered: Mutex<Vec<(i32, u64, u32)>>,
    /// Refuse registrations at this address.
    pub fail_at: Mutex<Option<u64>>,
}

impl FakeIoEvents {
    pub fn addresses(&self) -> Vec<u64> {
        let mut a: Vec<_> = self
            .registered
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.1)
            .collect();
        a.sort_unstable();
        a
    }
}

impl IoEventRegistry for FakeIoEvents {
    fn register(&self, fd: &EventFd, addr: u64, len: u32) -> io::Result<()> {
        if *self.fail_at.lock().unwrap() == Some(addr) {
            return Err(io::Error::other("address in use"));
        }
        self.registered
            .lock()
            .unwrap()
            .push((fd.as_raw_fd(), addr, len));
        Ok(())
    }
    fn unregister(&self, fd: &EventFd, addr: u64, len: u32) -> io::Result<()> {
        let entry = (fd.as_raw_fd(), addr, len);
        let mut reg = self.registered.lock().unwrap();
        let pos = reg
            .iter()
            .position(|r| *r == entry)
            .ok_or_else(|| io::Error::other("not registered"))?;
        reg.remove(pos);
        self.unregistered.lock().unwrap().push(entry);
        Ok(())
    }
}

// ---- harness -----------------------------------------------------------------

pub(super) struct Harness {
    pub dev: VirtioPciDevice<FakeDevice>,
    pub log: Arc<Mutex<DeviceLog>>,
    pub msi: Arc<FakeMsi>,
    pub line: Arc<FakeLine>,
    pub ioevents: Arc<FakeIoEvents>,
}

pub(super) fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub(super) fn try_build(device: FakeDevice, nr_vectors: u16) -> Result<Harness, VirtioPciError> {
    let log = device.log.clone();
    let msi = Arc::new(FakeMsi::default());
    let line = Arc::new(FakeLine::default());
    let ioevents = Arc::new(FakeIoEvents::default());
    let mut dev = VirtioPciDevice::new(
        device,
        guest_memory(),
        nr_vectors,
        msi.clone(),
        line.clone(),
        ioevents.clone(),
    )?;
    // What PciSegment::add_device does, plus the guest enabling decode.
    dev.config_mut().set_bar_address(VIRTIO_BAR, BAR0).unwrap();
    dev.write_config(PCI_COMMAND, &PCI_COMMAND_MEMORY.to_le_bytes());
    Ok(Harness {
        dev,
        log,
        msi,
        line,
        ioevents,
    })
}

pub(super) fn build_with(device: FakeDevice, nr_vectors: u16) -> Harness {
    try_build(device, nr_vectors).unwrap()
}

pub(super) fn build(nr_vectors: u16) -> Harness {
    build_with(FakeDevice::new(), nr_vectors)
}

/// A virtio vendor capability as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cap {
    pub at: u16,
    pub cfg_type: u8,
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// The BAR offsets a driver found by walking the capabilities.
#[derive(Clone, Copy, Debug)]
pub(super) struct Regions {
    pub common: u64,
    pub isr: u64,
    pub device: u64,
    pub notify: u64,
    pub multiplier: u32,
}

impl Harness {
    pub fn cfg_read(&mut self, offset: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_config(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    pub fn cfg_write(&mut self, offset: u16, data: &[u8]) {
        if let Some(change) = self.dev.write_config(offset, data) {
            self.dev.bar_moved(&change);
        }
    }

    pub fn bar_read(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read_bar(VIRTIO_BAR, offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    pub fn bar_write(&mut self, offset: u64, value: u64, len: usize) {
        self.dev
            .write_bar(VIRTIO_BAR, offset, &value.to_le_bytes()[..len]);
    }

    /// Every capability ID on the list, in order, walking from 0x34.
    pub fn cap_ids(&mut self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        let mut ptr = (self.cfg_read(PCI_CAPABILITY_LIST, 1) & 0xfc) as u16;
        while ptr != 0 && out.len() < 48 {
            out.push((ptr, self.cfg_read(ptr, 1) as u8));
            ptr = (self.cfg_read(ptr + 1, 1) & 0xfc) as u16;
        }
        out
    }

    /// The virtio capabilities, walking the list like a driver.
    pub fn virtio_caps(&mut self) -> Vec<Cap> {
        let ids = self.cap_ids();
        ids.into_iter()
            .filter(|(_, id)| *id == PCI_CAP_ID_VNDR)
            .map(|(at, _)| Cap {
                at,
                cfg_type: self.cfg_read(at + VIRTIO_CAP_CFG_TYPE, 1) as u8,
                bar: self.cfg_read(at + VIRTIO_CAP_BAR, 1) as u8,
                offset: self.cfg_read(at + VIRTIO_CAP_OFFSET, 4),
                length: self.cfg_read(at + VIRTIO_CAP_LENGTH, 4),
            })
            .collect()
    }

    pub fn msix_cap(&mut self) -> Option<u16> {
        self.cap_ids()
            .into_iter()
            .find(|(_, id)| *id == PCI_CAP_ID_MSIX)
            .map(|(at, _)| at)
    }

    pub fn regions(&mut self) -> Regions {
        let caps = self.virtio_caps();
        let find = |t| {
            let c = caps.iter().find(|c| c.cfg_type == t).expect("capability");
            assert_eq!(c.bar, VIRTIO_BAR);
            *c
        };
        let notify = find(VIRTIO_PCI_CAP_NOTIFY_CFG);
        Regions {
            common: find(VIRTIO_PCI_CAP_COMMON_CFG).offset.into(),
            isr: find(VIRTIO_PCI_CAP_ISR_CFG).offset.into(),
            device: find(VIRTIO_PCI_CAP_DEVICE_CFG).offset.into(),
            notify: notify.offset.into(),
            multiplier: self.cfg_read(notify.at + VIRTIO_CAP_NOTIFY_MULTIPLIER, 4),
        }
    }

    // Common configuration accessors at natural widths.

    pub fn common_read(&mut self, field: u64, len: usize) -> u64 {
        let base = self.regions().common;
        self.bar_read(base + field, len)
    }

    pub fn common_write(&mut self, field: u64, value: u64, len: usize) {
        let base = self.regions().common;
        self.bar_write(base + field, value, len);
    }

    pub fn status(&mut self) -> u8 {
        self.common_read(COMMON_DEVICE_STATUS, 1) as u8
    }

    pub fn set_status(&mut self, status: u8) {
        self.common_write(COMMON_DEVICE_STATUS, status.into(), 1);
    }

    pub fn device_features(&mut self) -> u64 {
        self.common_write(COMMON_DEVICE_FEATURE_SELECT, 0, 4);
        let lo = self.common_read(COMMON_DEVICE_FEATURE, 4);
        self.common_write(COMMON_DEVICE_FEATURE_SELECT, 1, 4);
        let hi = self.common_read(COMMON_DEVICE_FEATURE, 4);
        hi << 32 | lo
    }

    pub fn write_driver_features(&mut self, features: u64) {
        self.common_write(COMMON_DRIVER_FEATURE_SELECT, 0, 4);
        self.common_write(COMMON_DRIVER_FEATURE, features & 0xffff_ffff, 4);
        self.common_write(COMMON_DRIVER_FEATURE_SELECT, 1, 4);
        self.common_write(COMMON_DRIVER_FEATURE, features >> 32, 4);
    }

    pub fn driver_features(&mut self) -> u64 {
        self.common_write(COMMON_DRIVER_FEATURE_SELECT, 0, 4);
        let lo = self.common_read(COMMON_DRIVER_FEATURE, 4);
        self.common_write(COMMON_DRIVER_FEATURE_SELECT, 1, 4);
        let hi = self.common_read(COMMON_DRIVER_FEATURE, 4);
        hi << 32 | lo
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK. Returns the
    /// status read back.
    pub fn negotiate(&mut self, features: u64) -> u8 {
        self.set_status(0);
        self.set_status(STATUS_ACKNOWLEDGE);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let offered = self.device_features();
        self.write_driver_features(features & offered);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        self.status()
    }

    /// Programs queue `index` (size and ring addresses) and enables it,
    /// with 32-bit halves for the addresses like Linux does.
    pub fn setup_queue(&mut self, index: u16, q: QueueSetup) {
        self.common_write(COMMON_QUEUE_SELECT, index.into(), 2);
        self.common_write(COMMON_QUEUE_SIZE, q.size.into(), 2);
        for (field, addr) in [
            (COMMON_QUEUE_DESC, q.desc),
            (COMMON_QUEUE_DRIVER, q.avail),
            (COMMON_QUEUE_DEVICE, q.used),
        ] {
            self.common_write(field, addr & 0xffff_ffff, 4);
            self.common_write(field + 4, addr >> 32, 4);
        }
        self.common_write(COMMON_QUEUE_ENABLE, 1, 2);
    }

    /// Features negotiated, both queues set up as in [`queue_setup`],
    /// DRIVER_OK.
    pub fn bring_up(&mut self, features: u64) {
        self.bring_up_with(features, |_| {});
    }

    /// Like [`Self::bring_up`], running `extra` (e.g. vector assignment)
    /// after negotiation and before DRIVER_OK, as a driver does.
    pub fn bring_up_with(&mut self, features: u64, extra: impl FnOnce(&mut Self)) {
        assert_ne!(self.negotiate(features) & STATUS_FEATURES_OK, 0);
        for i in 0..2 {
            self.setup_queue(i, queue_setup(i));
        }
        extra(self);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    }

    /// Writes `msix_config` and each `(queue, vector)`.
    pub fn assign_vectors(&mut self, config: u16, queues: &[(u16, u16)]) {
        self.common_write(COMMON_MSIX_CONFIG, config.into(), 2);
        for (q, v) in queues {
            self.common_write(COMMON_QUEUE_SELECT, (*q).into(), 2);
            self.common_write(COMMON_QUEUE_MSIX_VECTOR, (*v).into(), 2);
        }
    }

    pub fn activations(&self) -> usize {
        self.log.lock().unwrap().activations.len()
    }
}

/// A queue configuration a driver writes.
#[derive(Clone, Copy, Debug)]
pub(super) struct QueueSetup {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// Valid rings for queue `i`, each on its own page.
pub(super) fn queue_setup(i: u16) -> QueueSetup {
    let base = 0x1_0000 * (u64::from(i) + 1);
    QueueSetup {
        size: QUEUE_MAX[usize::from(i)],
        desc: base,
        avail: base + 0x4000,
        used: base + 0x8000,
    }
}

/// Whether `fd` was signalled (and consumes the count).
pub(super) fn signalled(fd: &EventFd) -> bool {
    fd.read().is_ok()
}
