//! Reading the host state from the CPU at launch (the loader's GDT, IDT,
//! TSS, CR3, segment selectors), rather than assuming the loader's layout.
//! Split in two: [`read_host_tables`] reads what [`Cpu`] does not reach
//! (the selectors, the descriptor tables, the TSS descriptor in the GDT);
//! [`host_state`] adds the control registers and MSRs through [`Cpu`], so
//! bring-up reads them in its own order (after CR4.VMXE is set).

use super::setup::{HostState, tss_base};
use crate::arch;
use crate::arch::descriptors::Selectors;
use crate::hw::Cpu;
use crate::msrs;

/// The host state [`Cpu`] does not read: selectors, descriptor-table
/// bases, the TSS base and the VM-exit entry stub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTables {
    /// The segment selectors and TR.
    pub selectors: Selectors,
    /// TSS base (from the TR descriptor in the GDT; 0 without one).
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// HOST_RIP: the VM-exit entry stub.
    pub rip: u64,
}

/// Reads the selectors, GDTR, IDTR and the TSS base of this processor.
///
/// # Safety
/// The GDT that GDTR points at must be mapped and readable (it is: the
/// loader's own tables, identity-mapped in its page tables).
pub unsafe fn read_host_tables() -> HostTables {
    let sel = arch::descriptors::selectors();
    let gdtr = arch::descriptors::sgdt();
    let idtr = arch::descriptors::sidt();
    let gdt_base = gdtr.base;
    let gdt_limit = u64::from(gdtr.limit);
    let tr_offset = u64::from(sel.tr & !7);
    let tr_base = if sel.tr & !7 != 0 && tr_offset + 15 <= gdt_limit {
        let p = (gdt_base + tr_offset) as *const u64;
        // SAFETY: the descriptor lies within the GDT limit, and the caller
        // guarantees the GDT is mapped; unaligned reads are used because
        // the GDT base need not be 8-byte aligned.
        let (low, high) = unsafe { (p.read_unaligned(), p.add(1).read_unaligned()) };
        tss_base(low, high)
    } else {
        // No usable TR: VM entry will fail its host-state checks (VM-
        // instruction error 8), which is reported, not hidden.
        0
    };
    HostTables {
        selectors: sel,
        tr_base,
        gdtr_base: gdt_base,
        idtr_base: idtr.base,
        // The one-processor stub; `launch` and `ap` pick the final one.
        rip: arch::run::vm_exit_entry(false),
    }
}

/// The host state VM exits must restore: `tables` with the control
/// registers and MSRs as `cpu` reads them now.
pub fn host_state(cpu: &impl Cpu, tables: &HostTables) -> HostState {
    HostState {
        cr0: cpu.read_cr0(),
        cr3: cpu.read_cr3(),
        cr4: cpu.read_cr4(),
        selectors: tables.selectors,
        fs_base: cpu.read_msr(msrs::IA32_FS_BASE),
        gs_base: cpu.read_msr(msrs::IA32_GS_BASE),
        tr_base: tables.tr_base,
        gdtr_base: tables.gdtr_base,
        idtr_base: tables.idtr_base,
        sysenter_cs: cpu.read_msr(msrs::IA32_SYSENTER_CS) as u32,
        sysenter_esp: cpu.read_msr(msrs::IA32_SYSENTER_ESP),
        sysenter_eip: cpu.read_msr(msrs::IA32_SYSENTER_EIP),
        efer: cpu.read_msr(msrs::IA32_EFER),
        pat: cpu.read_msr(msrs::IA32_PAT),
        rip: tables.rip,
    }
}
