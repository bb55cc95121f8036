//! vCPU state at boot: CPUID topology, the boot MSR set, FPU, LAPIC LINT
//! pins, and the register/segment/page-table state of the two entry modes
//! (64-bit long mode for the Linux boot protocol, 32-bit flat protected mode
//! for PVH and multiboot).
//!
//! FPU state is set with `KVM_SET_FPU` only: some hosts tapir runs on have
//! no `KVM_CAP_XSAVE`/`KVM_CAP_XCRS`.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment,
    kvm_sregs, CpuId, Msrs, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};
use kvm_ioctls::{Kvm, VcpuFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, PML4_START};

/// Errors of vCPU set-up.
#[derive(Debug, Error)]
pub enum CpuError {
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The operation (ioctl) that failed.
        what: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM accepted only part of the boot MSRs.
    #[error("KVM set only {set} of {requested} boot MSRs (it refused MSR {index:#x})")]
    MsrsNotSet {
        /// The first MSR KVM did not set.
        index: u32,
        /// How many were set.
        set: usize,
        /// How many were requested.
        requested: usize,
    },
    /// More MSR entries than a `kvm_msrs` can hold.
    #[error("too many MSR entries")]
    TooManyMsrs,
    /// Writing a boot structure to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, CpuError>;

fn kvm_error(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

fn mem_error(what: &'static str) -> impl FnOnce(GuestMemoryError) -> CpuError {
    move |source| CpuError::GuestMemory { what, source }
}

// ---------------------------------------------------------------------------
// CPUID

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_ADDR_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 1 ECX: TSC-deadline mode of the LAPIC timer.
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 6 EAX: the APIC timer keeps running in deep C-states. KVM's timer
/// always does, so this is the one power-management bit worth keeping.
const EAX_ARAT: u32 = 1 << 2;

/// Topology level types of leaves 0xB/0x1F (ECX[15:8]).
const TOPOLOGY_LEVEL_INVALID: u32 = 0;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// Number of bits of the APIC id that select a core: ceil(log2(n)).
fn core_id_bits(nr_vcpus: u8) -> u32 {
    u32::from(nr_vcpus.max(1))
        .next_power_of_two()
        .trailing_zeros()
}

/// One subleaf of the x2APIC topology leaves (0xB and 0x1F): level 0 is SMT
/// (one thread per core), level 1 is the core level holding all vCPUs, and
/// anything above is the invalid terminator.
fn topology_subleaf(entry: &mut kvm_cpuid_entry2, vcpu_id: u8, nr_vcpus: u8) {
    let level = entry.index;
    let (shift, count, level_type) = match level {
        0 => (0, 1, TOPOLOGY_LEVEL_SMT),
        1 => (
            core_id_bits(nr_vcpus),
            u32::from(nr_vcpus.max(1)),
            TOPOLOGY_LEVEL_CORE,
        ),
        _ => (0, 0, TOPOLOGY_LEVEL_INVALID),
    };
    entry.eax = shift;
    entry.ebx = count;
    entry.ecx = (level_type << 8) | (level & 0xff);
    entry.edx = u32::from(vcpu_id);
}

/// Adjusts the CPUID entries from `KVM_GET_SUPPORTED_CPUID` for vCPU
/// `vcpu_id` of `nr_vcpus`, presented as one socket with `nr_vcpus` cores
/// of one thread each (APIC id = `vcpu_id`).
///
/// Touches leaves 1 (APIC id, logical count, HTT, hypervisor and
/// TSC-deadline bits), 4 (cores per package, cache sharing), 6 (drops power
/// management we do not emulate), 0xB and 0x1F (x2APIC topology; subleaves
/// 0–2 are added when KVM only reported subleaf 0), 0x80000008 (core count)
/// and 0x8000001E. Leaves that are absent stay absent. Pure: no ioctls.
pub fn filter_cpuid(cpuid: &mut CpuId, vcpu_id: u8, nr_vcpus: u8, tsc_deadline: bool) {
    let nr = u32::from(nr_vcpus.max(1));
    let core_bits = core_id_bits(nr_vcpus);

    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(vcpu_id) << 24) | (nr << 16);
                if nr > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
                entry.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    entry.ecx |= ECX_TSC_DEADLINE;
                } else {
                    entry.ecx &= !ECX_TSC_DEADLINE;
                }
            }
            LEAF_CACHE_PARAMS => {
                // Subleaves with cache type 0 terminate the list.
                if entry.eax & 0x1f == 0 {
                    continue;
                }
                let level = (entry.eax >> 5) & 0x7;
                // L1/L2 are private to a core (one thread), the LLC is shared.
                let sharing = if level >= 3 { (1 << core_bits) - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | ((nr - 1) << 26) | (sharing << 14);
            }
            LEAF_THERMAL_POWER => {
                entry.eax &= EAX_ARAT;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                topology_subleaf(entry, vcpu_id, nr_vcpus);
            }
            LEAF_ADDR_SIZES => {
                // ECX[7:0] NC = cores - 1, ECX[15:12] ApicIdCoreIdSize.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (nr - 1);
            }
            LEAF_AMD_EXT_APIC_ID => {
                // Extended APIC id; core (compute unit) id, one thread each;
                // a single node.
                entry.eax = u32::from(vcpu_id);
                entry.ebx = u32::from(vcpu_id);
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }

    // Linux walks the topology subleaves until it finds an invalid one; KVM
    // may report only subleaf 0, and an unknown subleaf of a known leaf is
    // answered with unrelated data, so make sure 0..=2 exist.
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        let present: Vec<u32> = cpuid
            .as_slice()
            .iter()
            .filter(|e| e.function == leaf)
            .map(|e| e.index)
            .collect();
        if present.is_empty() {
            continue;
        }
        for index in 0..=2 {
            if present.contains(&index) {
                continue;
            }
            let mut entry = kvm_cpuid_entry2 {
                function: leaf,
                index,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            };
            topology_subleaf(&mut entry, vcpu_id, nr_vcpus);
            // Only fails when the table is full (256 entries), far more
            // than KVM reports; the leaf then keeps what KVM said.
            let _ = cpuid.push(entry);
        }
    }
}

// ---------------------------------------------------------------------------
// MSRs

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE: fast-string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// MTRRdefType: MTRRs enabled (E), default memory type write-back.
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WB: u64 = 6;

/// The boot MSR values.
fn boot_msrs() -> [(u32, u64); 11] {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WB),
    ]
}

/// Splits the boot MSRs into those KVM lists in `KVM_GET_MSR_INDEX_LIST`
/// (which must all be accepted) and the MTRR default type, which KVM
/// emulates but never lists and which is therefore only tried.
fn msr_entries(supported: &[u32]) -> (Vec<kvm_msr_entry>, Option<kvm_msr_entry>) {
    let entry = |(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let mut listed = Vec::new();
    let mut mtrr = None;
    for msr in boot_msrs() {
        if supported.contains(&msr.0) {
            listed.push(entry(msr));
        } else if msr.0 == MSR_MTRR_DEF_TYPE {
            mtrr = Some(entry(msr));
        }
    }
    (listed, mtrr)
}

/// Sets the boot MSRs (SYSENTER/SYSCALL MSRs and KERNEL_GS_BASE zeroed, TSC
/// 0, fast strings on, MTRRs enabled with write-back default).
///
/// MSRs missing from `KVM_GET_MSR_INDEX_LIST` are skipped; every listed one
/// must be accepted. MTRRdefType is not in KVM's list even where KVM
/// emulates MTRRs, so it is set on its own and skipped if KVM refuses it.
pub fn setup_msrs(kvm: &Kvm, vcpu: &VcpuFd) -> Result<()> {
    let supported = kvm
        .get_msr_index_list()
        .map_err(kvm_error("KVM_GET_MSR_INDEX_LIST"))?;
    let (listed, mtrr) = msr_entries(supported.as_slice());

    let msrs = Msrs::from_entries(&listed).map_err(|_| CpuError::TooManyMsrs)?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_error("KVM_SET_MSRS"))?;
    if set != listed.len() {
        return Err(CpuError::MsrsNotSet {
            index: listed[set.min(listed.len() - 1)].index,
            set,
            requested: listed.len(),
        });
    }

    if let Some(mtrr) = mtrr {
        let msrs = Msrs::from_entries(&[mtrr]).map_err(|_| CpuError::TooManyMsrs)?;
        // 0 set means KVM does not emulate it here; nothing to do then.
        vcpu.set_msrs(&msrs).map_err(kvm_error("KVM_SET_MSRS"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// FPU and LAPIC

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision.
const FPU_FCW: u16 = 0x37f;
/// MXCSR reset value: all SSE exceptions masked.
const FPU_MXCSR: u32 = 0x1f80;

/// Sets the x87/SSE state to its reset values with `KVM_SET_FPU`.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<()> {
    let fpu = kvm_fpu {
        fcw: FPU_FCW,
        mxcsr: FPU_MXCSR,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_error("KVM_SET_FPU"))
}

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_DELIVERY_MODE_SHIFT: u32 = 8;
const APIC_DELIVERY_MODE_MASK: u32 = 0x7 << APIC_DELIVERY_MODE_SHIFT;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !APIC_DELIVERY_MODE_MASK) | (mode << APIC_DELIVERY_MODE_SHIFT)
}

/// Programs the LAPIC's LINT0 as ExtINT and LINT1 as NMI, as firmware would
/// (needs the in-kernel irqchip).
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<()> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_error("KVM_GET_LAPIC"))?;
    let lint0 = lapic_reg(&lapic, APIC_LVT_LINT0);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT0,
        with_delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    let lint1 = lapic_reg(&lapic, APIC_LVT_LINT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT1,
        with_delivery_mode(lint1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic).map_err(kvm_error("KVM_SET_LAPIC"))
}

// ---------------------------------------------------------------------------
// Segments, descriptor tables, page tables

const GDT_NULL: u64 = 0;
/// 64-bit code: present, ring 0, execute/read, accessed; L=1, G=1.
const GDT_CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// 32-bit code: present, ring 0, execute/read, accessed; D=1, G=1.
const GDT_CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// Flat data: present, ring 0, read/write, accessed; B=1, G=1.
const GDT_DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// Busy TSS, 104 bytes at 0 (only for loading TR; never used).
const GDT_TSS: u64 = gdt_entry(0x008b, 0, 0x67);

const CODE_SELECTOR_INDEX: u16 = 1;
const DATA_SELECTOR_INDEX: u16 = 2;
const TSS_SELECTOR_INDEX: u16 = 3;

/// Builds a segment descriptor from `flags` (bits 15:12 G/DB/L/AVL, bits
/// 7:0 the access byte), a 32-bit base and a 20-bit limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM segment register for GDT entry `index` holding `entry`.
fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = bit(55);
    let present = bit(47);
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Writes the GDT and an empty IDT and points `sregs` at them, loading the
/// code, data and TSS selectors.
fn setup_descriptor_tables<M: GuestMemoryBackend>(
    mem: &M,
    sregs: &mut kvm_sregs,
    code: u64,
) -> Result<()> {
    let gdt = [GDT_NULL, code, GDT_DATA, GDT_TSS];
    let bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(GDT_START))
        .map_err(mem_error("GDT"))?;
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(mem_error("IDT"))?;

    sregs.gdt = kvm_dtable {
        base: GDT_START,
        limit: (bytes.len() - 1) as u16,
        ..Default::default()
    };
    sregs.idt = kvm_dtable {
        base: IDT_START,
        limit: (std::mem::size_of::<u64>() - 1) as u16,
        ..Default::default()
    };
    let data = segment_from_gdt(GDT_DATA, DATA_SELECTOR_INDEX);
    sregs.cs = segment_from_gdt(code, CODE_SELECTOR_INDEX);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(GDT_TSS, TSS_SELECTOR_INDEX);
    Ok(())
}

const PAGE_SIZE: u64 = 0x1000;
const PDPT_START: u64 = PML4_START + PAGE_SIZE;
const PD_START: u64 = PML4_START + 2 * PAGE_SIZE;
/// Page directories: each maps 1 GiB with 2 MiB pages; four map 4 GiB.
const PD_COUNT: u64 = 4;
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// Writes identity page tables for the low 4 GiB (2 MiB pages) at
/// [`PML4_START`]: PML4, PDPT and four page directories.
fn setup_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<()> {
    let mut tables = vec![0u64; ((2 + PD_COUNT) * PAGE_SIZE / 8) as usize];
    let (pml4, rest) = tables.split_at_mut(512);
    let (pdpt, pds) = rest.split_at_mut(512);
    pml4[0] = PDPT_START | PTE_PRESENT | PTE_WRITABLE;
    for (i, entry) in pdpt.iter_mut().take(PD_COUNT as usize).enumerate() {
        *entry = (PD_START + i as u64 * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE;
    }
    for (i, entry) in pds.iter_mut().enumerate() {
        *entry = ((i as u64) << 21) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE;
    }
    let bytes: Vec<u8> = tables.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(PML4_START))
        .map_err(mem_error("page tables"))
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the always-one bit 1 set (interrupts off).
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Puts the vCPU in 64-bit long mode for the Linux 64-bit boot protocol:
/// GDT (null, code64 at 0x8, data at 0x10, TSS at 0x18), an empty IDT,
/// identity page tables for 4 GiB, then `RIP = entry`,
/// `RSP = RBP = BOOT_STACK_POINTER`, `RSI = boot_params`.
pub fn setup_long_mode<M: GuestMemoryBackend>(
    mem: &M,
    vcpu: &VcpuFd,
    entry: u64,
    boot_params: u64,
) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_error("KVM_GET_SREGS"))?;
    setup_descriptor_tables(mem, &mut sregs, GDT_CODE64)?;
    setup_page_tables(mem)?;
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm_error("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: boot_params,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_error("KVM_SET_REGS"))
}

/// Puts the vCPU in 32-bit flat protected mode with paging off, the entry
/// state shared by PVH and multiboot: GDT (null, flat code32 at 0x8, flat
/// data at 0x10 in DS/ES/FS/GS/SS, TSS at 0x18), an empty IDT, interrupts
/// off, `EIP = entry`, `EAX = eax` (multiboot's magic; PVH leaves it
/// undefined) and `EBX = ebx` (the boot information structure).
pub fn setup_protected_mode<M: GuestMemoryBackend>(
    mem: &M,
    vcpu: &VcpuFd,
    entry: u64,
    eax: u32,
    ebx: u32,
) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_error("KVM_GET_SREGS"))?;
    setup_descriptor_tables(mem, &mut sregs, GDT_CODE32)?;
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_error("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rax: eax.into(),
        rbx: ebx.into(),
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_error("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
    use kvm_ioctls::{VcpuExit, VmFd};
    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::layout::ZERO_PAGE_START;

    const MEM_SIZE: usize = 64 << 20;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if matches!(function, 4 | 0xb | 0x1f) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// Roughly what KVM reports on an Intel host (values from a real
    /// `KVM_GET_SUPPORTED_CPUID`), including a leaf 0xB with only subleaf 0.
    fn synthetic_cpuid() -> CpuId {
        CpuId::from_entries(&[
            entry(0x0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(0x1, 0, [0x000a_0671, 0x0102_0800, 0x8120_2000, 0x0f8b_fbff]),
            entry(0x4, 0, [0x0400_0121, 0x02c0_003f, 0x3f, 0]),
            entry(0x4, 1, [0x0400_0122, 0x03c0_003f, 0x3f, 0]),
            entry(0x4, 2, [0x0400_0143, 0x03c0_003f, 0x7ff, 0]),
            entry(0x4, 3, [0x0400_4163, 0x03c0_003f, 0x77fff, 0]),
            entry(0x4, 4, [0, 0, 0, 0]),
            entry(0x6, 0, [0x0000_27f7, 0x2, 0x9, 0]),
            entry(0xb, 0, [0, 0, 0, 1]),
            entry(0x1f, 0, [0, 0, 0, 1]),
            entry(0x1f, 1, [0, 0, 0, 1]),
            entry(0x8000_0000, 0, [0x8000_001e, 0, 0, 0]),
            entry(0x8000_0008, 0, [0x3930, 0, 0x0003_5007, 0]),
            entry(0x8000_001e, 0, [7, 0x105, 0x301, 0]),
        ])
        .unwrap()
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
    }

    #[test]
    fn core_id_bits_is_ceil_log2() {
        let bits: Vec<u32> = [0u8, 1, 2, 3, 4, 5, 8, 9, 255]
            .iter()
            .map(|&n| core_id_bits(n))
            .collect();
        assert_eq!(bits, [0, 0, 1, 2, 2, 3, 3, 4, 8]);
    }

    #[test]
    fn filter_cpuid_single_vcpu() {
        let mut cpuid = synthetic_cpuid();
        filter_cpuid(&mut cpuid, 0, 1, false);

        let l1 = find(&cpuid, 1, 0);
        assert_eq!(l1.ebx, 0x0001_0800); // APIC id 0, 1 logical CPU, CLFLUSH kept
        assert_eq!(l1.edx & EDX_HTT, 0);
        assert_eq!(l1.ecx & ECX_HYPERVISOR, ECX_HYPERVISOR);
        assert_eq!(l1.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(l1.eax, 0x000a_0671);

        for i in 0..4 {
            assert_eq!(find(&cpuid, 4, i).eax >> 26, 0, "leaf 4.{i}");
            assert_eq!((find(&cpuid, 4, i).eax >> 14) & 0xfff, 0, "leaf 4.{i}");
        }
        assert_eq!(find(&cpuid, 4, 4).eax, 0);

        let l6 = find(&cpuid, 6, 0);
        assert_eq!((l6.eax, l6.ebx, l6.ecx, l6.edx), (EAX_ARAT, 0, 0, 0));

        let smt = find(&cpuid, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 0));
        let core = find(&cpuid, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (0, 1, 0x201, 0));
        assert_eq!(core.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        let end = find(&cpuid, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 0));

        assert_eq!(find(&cpuid, 0x8000_0008, 0).ecx, 0x0003_0000);
        let amd = find(&cpuid, 0x8000_001e, 0);
        assert_eq!((amd.eax, amd.ebx, amd.ecx, amd.edx), (0, 0, 0, 0));
    }

    #[test]
    fn filter_cpuid_two_vcpus() {
        let mut cpuid = synthetic_cpuid();
        filter_cpuid(&mut cpuid, 1, 2, true);

        let l1 = find(&cpuid, 1, 0);
        assert_eq!(l1.ebx >> 24, 1);
        assert_eq!((l1.ebx >> 16) & 0xff, 2);
        assert_eq!(l1.edx & EDX_HTT, EDX_HTT);
        assert_eq!(l1.ecx & ECX_TSC_DEADLINE, ECX_TSC_DEADLINE);

        assert_eq!(find(&cpuid, 4, 0).eax, 0x0400_0121);
        assert_eq!(find(&cpuid, 4, 3).eax, 0x0400_4163); // L3 shared by 2
        for leaf in [0xb, 0x1f] {
            let smt = find(&cpuid, leaf, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 1));
            let core = find(&cpuid, leaf, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (1, 2, 0x201, 1));
            let end = find(&cpuid, leaf, 2);
            assert_eq!((end.ecx & 0xff00, end.edx), (0, 1));
        }
        assert_eq!(find(&cpuid, 0x8000_0008, 0).ecx, 0x0003_1001);
        let amd = find(&cpuid, 0x8000_001e, 0);
        assert_eq!((amd.eax, amd.ebx), (1, 1));
    }

    #[test]
    fn filter_cpuid_four_vcpus() {
        for vcpu in 0..4u8 {
            let mut cpuid = synthetic_cpuid();
            filter_cpuid(&mut cpuid, vcpu, 4, true);
            let id = u32::from(vcpu);

            let l1 = find(&cpuid, 1, 0);
            assert_eq!(l1.ebx, (id << 24) | (4 << 16) | 0x0800);
            assert_eq!(l1.edx & EDX_HTT, EDX_HTT);
            for i in 0..4 {
                assert_eq!(find(&cpuid, 4, i).eax >> 26, 3, "leaf 4.{i}");
            }
            // L1d/L1i/L2 private, L3 shared by the 4 cores.
            assert_eq!((find(&cpuid, 4, 2).eax >> 14) & 0xfff, 0);
            assert_eq!((find(&cpuid, 4, 3).eax >> 14) & 0xfff, 3);

            let core = find(&cpuid, 0xb, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, id));
            assert_eq!(find(&cpuid, 0xb, 0).edx, id);
            assert_eq!(find(&cpuid, 0x1f, 2).edx, id);
            assert_eq!(find(&cpuid, 0x8000_0008, 0).ecx, 0x0003_2003);
            assert_eq!(find(&cpuid, 0x8000_001e, 0).eax, id);
        }
    }

    #[test]
    fn filter_cpuid_leaves_absent_leaves_absent() {
        let mut cpuid = CpuId::from_entries(&[entry(0x1, 0, [0, 0, 0, 0])]).unwrap();
        filter_cpuid(&mut cpuid, 0, 4, false);
        assert_eq!(cpuid.as_slice().len(), 1);
    }

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        assert_eq!(GDT_CODE64, 0x00af_9b00_0000_ffff);
        assert_eq!(GDT_CODE32, 0x00cf_9b00_0000_ffff);
        assert_eq!(GDT_DATA, 0x00cf_9300_0000_ffff);

        let cs = segment_from_gdt(GDT_CODE64, 1);
        assert_eq!(
            (cs.base, cs.limit, cs.selector, cs.type_),
            (0, 0xffff_ffff, 8, 0xb)
        );
        assert_eq!(
            (cs.present, cs.dpl, cs.s, cs.l, cs.db, cs.g),
            (1, 0, 1, 1, 0, 1)
        );
        let cs32 = segment_from_gdt(GDT_CODE32, 1);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let ds = segment_from_gdt(GDT_DATA, 2);
        assert_eq!(
            (ds.selector, ds.type_, ds.l, ds.db, ds.limit),
            (0x10, 3, 0, 1, 0xffff_ffff)
        );
        let tr = segment_from_gdt(GDT_TSS, 3);
        assert_eq!(
            (tr.selector, tr.type_, tr.s, tr.limit, tr.g),
            (0x18, 0xb, 0, 0x67, 0)
        );
        let null = segment_from_gdt(GDT_NULL, 0);
        assert_eq!(null.unusable, 1);
        let based = segment_from_gdt(gdt_entry(0xc093, 0x1234_5678, 0xabcde), 2);
        assert_eq!((based.base, based.limit), (0x1234_5678, 0xabcd_efff));
    }

    #[test]
    fn msr_entries_follow_the_index_list() {
        let all: Vec<u32> = boot_msrs().iter().map(|m| m.0).collect();
        let (listed, mtrr) = msr_entries(&all);
        assert_eq!(listed.len(), 11);
        assert!(mtrr.is_none());

        let (listed, mtrr) = msr_entries(&[MSR_LSTAR, MSR_IA32_MISC_ENABLE, 0x1234]);
        let got: Vec<(u32, u64)> = listed.iter().map(|e| (e.index, e.data)).collect();
        assert_eq!(got, [(MSR_LSTAR, 0), (MSR_IA32_MISC_ENABLE, 1)]);
        let mtrr = mtrr.unwrap();
        assert_eq!((mtrr.index, mtrr.data), (0x2ff, 0x806));
    }

    #[test]
    fn lapic_delivery_mode_edit() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, 0x0001_0000);
        let v = with_delivery_mode(lapic_reg(&lapic, APIC_LVT_LINT0), APIC_MODE_EXTINT);
        assert_eq!(v, 0x0001_0700);
        assert_eq!(with_delivery_mode(0x0001_07ff, APIC_MODE_NMI), 0x0001_04ff);
        set_lapic_reg(&mut lapic, APIC_LVT_LINT1, 0xdead_beef);
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT1), 0xdead_beef);
    }

    /// A VM with 64 MiB of RAM at 0, or `None` (with a note) without KVM.
    fn test_vm() -> Option<(Kvm, VmFd, GuestMemoryMmap)> {
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                tapir_test_support::skipped(
                    "tapir-arch cpu tests on KVM",
                    &format!("/dev/kvm unavailable ({e})"),
                );
                return None;
            }
        };
        let vm = kvm.create_vm().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let region = mem.iter().next().unwrap();
        let host_addr = region.as_ptr() as u64;
        // SAFETY: the mapping is `MEM_SIZE` bytes at `host_addr`, owned by
        // `mem`, which the callers keep alive for as long as the VM.
        unsafe {
            vm.set_user_memory_region(kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MEM_SIZE as u64,
                userspace_addr: host_addr,
            })
            .unwrap();
        }
        Some((kvm, vm, mem))
    }

    #[test]
    fn long_mode_vcpu_state() {
        let Some((kvm, vm, mem)) = test_vm() else {
            return;
        };
        let mut vcpu = vm.create_vcpu(0).unwrap();
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
        filter_cpuid(&mut cpuid, 0, 1, false);
        vcpu.set_cpuid2(&cpuid).unwrap();

        const ENTRY: u64 = 0x10_0000;
        setup_long_mode(&mem, &vcpu, ENTRY, ZERO_PAGE_START).unwrap();
        setup_msrs(&kvm, &vcpu).unwrap();
        setup_fpu(&vcpu).unwrap();

        let sregs = vcpu.get_sregs().unwrap();
        assert_eq!(sregs.efer & (EFER_LMA | EFER_LME), EFER_LMA | EFER_LME);
        assert_eq!(
            sregs.cr0 & (X86_CR0_PG | X86_CR0_PE),
            X86_CR0_PG | X86_CR0_PE
        );
        assert_eq!(sregs.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!((sregs.cs.selector, sregs.cs.l), (0x8, 1));
        assert_eq!((sregs.ds.selector, sregs.ss.selector), (0x10, 0x10));
        assert_eq!(sregs.tr.selector, 0x18);
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (GDT_START, 31));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (IDT_START, 7));

        let regs = vcpu.get_regs().unwrap();
        assert_eq!(
            (regs.rip, regs.rsi, regs.rflags),
            (ENTRY, ZERO_PAGE_START, 2)
        );
        assert_eq!(
            (regs.rsp, regs.rbp),
            (BOOT_STACK_POINTER, BOOT_STACK_POINTER)
        );

        let fpu = vcpu.get_fpu().unwrap();
        assert_eq!(fpu.fcw, 0x37f);
        // Some KVMs (this project's PVM host) report MXCSR as 0 through
        // KVM_GET_FPU whatever was set; accept that, reject anything else.
        assert!(matches!(fpu.mxcsr, 0x1f80 | 0), "mxcsr {:#x}", fpu.mxcsr);

        let mut msrs = Msrs::from_entries(&[
            kvm_msr_entry {
                index: MSR_LSTAR,
                data: 0xdead,
                ..Default::default()
            },
            kvm_msr_entry {
                index: MSR_IA32_MISC_ENABLE,
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 2);
        assert_eq!(msrs.as_slice()[0].data, 0);
        assert_eq!(msrs.as_slice()[1].data & MISC_ENABLE_FAST_STRING, 1);
        // MTRRdefType is best effort: where KVM has it, it holds E|WB.
        let mut mtrr = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_MTRR_DEF_TYPE,
            ..Default::default()
        }])
        .unwrap();
        if vcpu.get_msrs(&mut mtrr).unwrap() == 1 {
            assert_eq!(mtrr.as_slice()[0].data, MTRR_ENABLE | MTRR_TYPE_WB);
        }

        // Page tables: PML4 -> PDPT -> 4 PDs of 2 MiB pages, identity.
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPT_START | 0x3);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PML4_START + 8)).unwrap(),
            0
        );
        for i in 0..4 {
            let pdpte: u64 = mem.read_obj(GuestAddress(PDPT_START + i * 8)).unwrap();
            assert_eq!(pdpte, (PD_START + i * PAGE_SIZE) | 0x3);
        }
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PDPT_START + 32)).unwrap(),
            0
        );
        for (pd, slot) in [(0u64, 0u64), (0, 1), (1, 7), (3, 511)] {
            let pde: u64 = mem
                .read_obj(GuestAddress(PD_START + pd * PAGE_SIZE + slot * 8))
                .unwrap();
            assert_eq!(pde, ((pd * 512 + slot) << 21) | 0x83);
        }
        // GDT in memory.
        let cs: u64 = mem.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(cs, GDT_CODE64);

        // Run: read a byte through the 2 MiB mapping at 32 MiB, read the
        // MMIO hole through the 4th page directory, report both on port 0x80.
        mem.write_obj(0xa5u8, GuestAddress(0x200_0010)).unwrap();
        #[rustfmt::skip]
        let code = [
            0xa0, 0x10, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // movabs al, [0x2000010]
            0xe6, 0x80,                                           // out 0x80, al
            0xa0, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x00, 0x00, 0x00, // movabs al, [0xd0000000]
            0xe6, 0x80,                                           // out 0x80, al
            0xf4,                                                 // hlt
        ];
        mem.write_slice(&code, GuestAddress(ENTRY)).unwrap();
        let mut outs = Vec::new();
        loop {
            match vcpu.run().unwrap() {
                VcpuExit::IoOut(0x80, data) => outs.push(data[0]),
                VcpuExit::MmioRead(addr, data) => {
                    assert_eq!(addr, 0xd000_0000);
                    data.fill(0x5a);
                }
                VcpuExit::Hlt => break,
                other => panic!("unexpected exit {other:?}"),
            }
        }
        assert_eq!(outs, [0xa5, 0x5a]);
    }

    #[test]
    fn protected_mode_vcpu_state() {
        let Some((_kvm, vm, mem)) = test_vm() else {
            return;
        };
        let mut vcpu = vm.create_vcpu(0).unwrap();
        const ENTRY: u64 = 0x10_0000;
        setup_protected_mode(&mem, &vcpu, ENTRY, 0x2bad_b002, 0x6000).unwrap();
        setup_fpu(&vcpu).unwrap();

        let sregs = vcpu.get_sregs().unwrap();
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((sregs.cr4, sregs.efer & EFER_LMA), (0, 0));
        assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (0x8, 1, 0));
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!((sregs.ds.selector, sregs.ds.db), (0x10, 1));
        let regs = vcpu.get_regs().unwrap();
        assert_eq!((regs.rip, regs.rbx, regs.rflags), (ENTRY, 0x6000, 2));
        assert_eq!(regs.rax, 0x2bad_b002);

        // Run 32-bit code: read the byte EBX points at, report it, halt.
        mem.write_obj(0x77u8, GuestAddress(0x6000)).unwrap();
        let code = [0x8a, 0x03, 0xe6, 0x80, 0xf4]; // mov al, [ebx]; out 0x80, al; hlt
        mem.write_slice(&code, GuestAddress(ENTRY)).unwrap();
        let mut outs = Vec::new();
        loop {
            match vcpu.run().unwrap() {
                VcpuExit::IoOut(0x80, data) => outs.push(data[0]),
                VcpuExit::Hlt => break,
                other => panic!("unexpected exit {other:?}"),
            }
        }
        assert_eq!(outs, [0x77]);
    }

    #[test]
    fn lapic_lint_pins() {
        let Some((_kvm, vm, _mem)) = test_vm() else {
            return;
        };
        vm.create_irq_chip().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        setup_lapic(&vcpu).unwrap();
        let lapic = vcpu.get_lapic().unwrap();
        assert_eq!(
            (lapic_reg(&lapic, APIC_LVT_LINT0) >> 8) & 0x7,
            APIC_MODE_EXTINT
        );
        assert_eq!(
            (lapic_reg(&lapic, APIC_LVT_LINT1) >> 8) & 0x7,
            APIC_MODE_NMI
        );
    }
}
