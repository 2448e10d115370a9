//! Snapshot and reset, for fast repeated runs (the fuzzer's inner loop).
//!
//! A [`Snapshot`] holds the vCPU (registers, segment and control
//! registers, the usual MSRs, FPU/XSAVE and XCRs, LAPIC, pending events,
//! MP state, debug registers), the in-kernel PIC and IOAPIC, the nested
//! VMX state where KVM has KVM_CAP_NESTED_STATE, the devices, and a copy
//! of guest RAM. [`Vm::reset`] puts all of it back, copying only the pages
//! the guest wrote since the snapshot or the previous reset, as KVM's dirty
//! log (KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG) reports them. Pages
//! written by the harness itself through [`GuestRam`](super::memory::GuestRam)
//! are not in the log: take the snapshot after such writes.

use super::KvmError;
use super::devices::Devices;
use super::memory::PAGE_SIZE;
use super::vm::Vm;
use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, Msrs, Xsave, kvm_debugregs,
    kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, kvm_xsave2,
};
use kvm_ioctls::{Cap, KvmNestedStateBuffer};
use vmm_sys_util::fam::FamStruct;

/// IA32_FEATURE_CONTROL.
pub const MSR_IA32_FEATURE_CONTROL: u32 = 0x3a;
/// The MSRs a snapshot keeps, where KVM lists them (KVM_GET_MSR_INDEX_LIST):
/// FEATURE_CONTROL, SYSENTER_CS/ESP/EIP, PAT, EFER, STAR, LSTAR, CSTAR,
/// SFMASK, KERNEL_GS_BASE, TSC_AUX.
///
/// IA32_TSC is left out on purpose: KVM takes a host write that lands
/// within a second of the TSC it expects as an attempt to synchronise
/// vCPUs and keeps the running value, so a rewind would happen or not
/// depending on how long the run took. The guest's TSC keeps counting
/// across resets, as wall-clock time does.
pub const SNAPSHOT_MSRS: [u32; 12] = [
    MSR_IA32_FEATURE_CONTROL,
    0x174,
    0x175,
    0x176,
    0x277,
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
    0xc000_0103,
];

/// The vCPU's architectural state, comparable.
#[derive(Debug, Clone, PartialEq)]
pub struct VcpuState {
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// The MSRs of [`SNAPSHOT_MSRS`] that KVM has, with their values.
    pub msrs: Vec<(u32, u64)>,
    /// x87/SSE state.
    pub fpu: kvm_fpu,
}

/// Everything [`Vm::reset`] restores.
pub struct Snapshot {
    /// The vCPU's architectural state.
    pub state: VcpuState,
    xsave: Option<Xsave>,
    xcrs: kvm_xcrs,
    lapic: kvm_lapic_state,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    debugregs: kvm_debugregs,
    irqchips: Vec<kvm_irqchip>,
    nested: Option<Box<KvmNestedStateBuffer>>,
    devices: Devices,
    memory: Vec<u8>,
}

impl Snapshot {
    /// Whether the nested VMX state is part of the snapshot.
    pub fn has_nested_state(&self) -> bool {
        self.nested.is_some()
    }

    /// Guest RAM as it was.
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }
}

impl Vm {
    /// Writes MSRs; fails naming the first one KVM refused.
    pub(super) fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<(), KvmError> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let list = Msrs::from_entries(&entries).map_err(|_| KvmError::MissingCapability("MSRs"))?;
        let done = self
            .vcpu
            .set_msrs(&list)
            .map_err(KvmError::ioctl("KVM_SET_MSRS"))?;
        match msrs.get(done) {
            None => Ok(()),
            Some((index, _)) => Err(KvmError::Ioctl {
                op: "KVM_SET_MSRS (KVM refused an MSR)",
                source: std::io::Error::other(format!("MSR {index:#x}")),
            }),
        }
    }

    /// The MSRs of [`SNAPSHOT_MSRS`] that this vCPU can read, with values.
    fn read_msrs(&self) -> Result<Vec<(u32, u64)>, KvmError> {
        let listed = self
            .kvm
            .get_msr_index_list()
            .map_err(KvmError::ioctl("KVM_GET_MSR_INDEX_LIST"))?;
        let mut want: Vec<u32> = SNAPSHOT_MSRS
            .into_iter()
            .filter(|m| listed.as_slice().contains(m))
            .collect();
        loop {
            let entries: Vec<kvm_msr_entry> = want
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut list =
                Msrs::from_entries(&entries).map_err(|_| KvmError::MissingCapability("MSRs"))?;
            let read = self
                .vcpu
                .get_msrs(&mut list)
                .map_err(KvmError::ioctl("KVM_GET_MSRS"))?;
            if read == want.len() {
                return Ok(list.as_slice().iter().map(|e| (e.index, e.data)).collect());
            }
            // KVM stops at the first MSR it cannot read: drop it, retry.
            want.remove(read);
        }
    }

    /// The vCPU's architectural state.
    pub fn vcpu_state(&self) -> Result<VcpuState, KvmError> {
        Ok(VcpuState {
            regs: self.regs()?,
            sregs: self.sregs()?,
            msrs: self.read_msrs()?,
            fpu: self
                .vcpu
                .get_fpu()
                .map_err(KvmError::ioctl("KVM_GET_FPU"))?,
        })
    }

    fn xsave_entries(&self) -> Option<usize> {
        let size = usize::try_from(self.vm.check_extension_int(Cap::Xsave2)).ok()?;
        let extra = size.checked_sub(std::mem::size_of::<kvm_xsave>())?;
        Some(extra.div_ceil(std::mem::size_of::<<kvm_xsave2 as FamStruct>::Entry>()))
    }

    /// Takes a snapshot, and starts a fresh dirty log from it.
    pub fn snapshot(&mut self) -> Result<Snapshot, KvmError> {
        let xsave = match self.xsave_entries() {
            Some(n) => {
                let mut x = Xsave::new(n).map_err(|_| KvmError::MissingCapability("XSAVE2"))?;
                // SAFETY: `x` has room for the size KVM_CAP_XSAVE2 reports,
                // and this process enables no XSTATE feature dynamically
                // (arch_prctl), so the size cannot grow.
                unsafe { self.vcpu.get_xsave2(&mut x) }
                    .map_err(KvmError::ioctl("KVM_GET_XSAVE2"))?;
                Some(x)
            }
            None => None,
        };
        let mut irqchips = Vec::new();
        for chip_id in [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut chip)
                .map_err(KvmError::ioctl("KVM_GET_IRQCHIP"))?;
            irqchips.push(chip);
        }
        let nested = if self.kvm.check_extension(Cap::NestedState) {
            let mut buf = Box::<KvmNestedStateBuffer>::default();
            self.vcpu
                .nested_state(&mut buf)
                .map_err(KvmError::ioctl("KVM_GET_NESTED_STATE"))?;
            Some(buf)
        } else {
            None
        };
        let v = &self.vcpu;
        let snap = Snapshot {
            state: self.vcpu_state()?,
            xsave,
            xcrs: v.get_xcrs().map_err(KvmError::ioctl("KVM_GET_XCRS"))?,
            lapic: v.get_lapic().map_err(KvmError::ioctl("KVM_GET_LAPIC"))?,
            events: v
                .get_vcpu_events()
                .map_err(KvmError::ioctl("KVM_GET_VCPU_EVENTS"))?,
            mp_state: v
                .get_mp_state()
                .map_err(KvmError::ioctl("KVM_GET_MP_STATE"))?,
            debugregs: v
                .get_debug_regs()
                .map_err(KvmError::ioctl("KVM_GET_DEBUGREGS"))?,
            irqchips,
            nested,
            devices: self.devices.clone(),
            memory: self.ram.as_slice().to_vec(),
        };
        self.dirty_pages()?; // clears the log
        Ok(snap)
    }

    /// The guest pages written since the last call (clearing the log).
    pub fn dirty_pages(&self) -> Result<Vec<usize>, KvmError> {
        let bitmap = self
            .vm
            .get_dirty_log(0, self.ram.len())
            .map_err(KvmError::ioctl("KVM_GET_DIRTY_LOG"))?;
        let mut pages = Vec::new();
        for (word_index, mut word) in bitmap.into_iter().enumerate() {
            while word != 0 {
                pages.push(word_index * 64 + word.trailing_zeros() as usize);
                word &= word - 1;
            }
        }
        Ok(pages)
    }

    /// Puts everything in `snap` back. Returns how many pages were copied.
    pub fn reset(&mut self, snap: &Snapshot) -> Result<usize, KvmError> {
        let dirty = self.dirty_pages()?;
        let ram = self.ram.as_mut_slice();
        for &page in &dirty {
            let at = page * PAGE_SIZE;
            ram[at..at + PAGE_SIZE].copy_from_slice(&snap.memory[at..at + PAGE_SIZE]);
        }
        let v = &self.vcpu;
        let s = &snap.state;
        if let Some(nested) = &snap.nested {
            // Segment registers first so CR4.VMXE is as it was; setting the
            // nested state leaves L2 if the vCPU was in it; the registers
            // are then set again below for whichever level the snapshot
            // was taken in (QEMU's order: sregs, then nested state).
            v.set_sregs(&s.sregs)
                .map_err(KvmError::ioctl("KVM_SET_SREGS"))?;
            v.set_nested_state(nested)
                .map_err(KvmError::ioctl("KVM_SET_NESTED_STATE"))?;
        }
        v.set_sregs(&s.sregs)
            .map_err(KvmError::ioctl("KVM_SET_SREGS"))?;
        v.set_regs(&s.regs)
            .map_err(KvmError::ioctl("KVM_SET_REGS"))?;
        self.set_msrs(&s.msrs)?;
        match &snap.xsave {
            // SAFETY: the buffer was sized by KVM_CAP_XSAVE2 for this VM and
            // filled by KVM_GET_XSAVE2, so KVM reads no byte beyond it.
            Some(x) => unsafe { v.set_xsave2(x) }.map_err(KvmError::ioctl("KVM_SET_XSAVE2"))?,
            None => v.set_fpu(&s.fpu).map_err(KvmError::ioctl("KVM_SET_FPU"))?,
        }
        v.set_xcrs(&snap.xcrs)
            .map_err(KvmError::ioctl("KVM_SET_XCRS"))?;
        v.set_lapic(&snap.lapic)
            .map_err(KvmError::ioctl("KVM_SET_LAPIC"))?;
        v.set_vcpu_events(&snap.events)
            .map_err(KvmError::ioctl("KVM_SET_VCPU_EVENTS"))?;
        v.set_mp_state(snap.mp_state)
            .map_err(KvmError::ioctl("KVM_SET_MP_STATE"))?;
        v.set_debug_regs(&snap.debugregs)
            .map_err(KvmError::ioctl("KVM_SET_DEBUGREGS"))?;
        for chip in &snap.irqchips {
            self.vm
                .set_irqchip(chip)
                .map_err(KvmError::ioctl("KVM_SET_IRQCHIP"))?;
        }
        self.devices = snap.devices.clone();
        Ok(dirty.len())
    }
}
