//! Reading the host state from the CPU at launch (the loader's GDT, IDT,
//! TSS, CR3, segment selectors), rather than assuming the loader's layout.

use super::setup::{HostState, tss_base};
use crate::arch;
use crate::hw::Cpu;
use crate::msrs;

/// Reads the host state VM exits must restore. `rip` is the exit stub.
///
/// # Safety
/// The GDT that GDTR points at must be mapped and readable (it is: the
/// loader's own tables, identity-mapped in its page tables).
pub unsafe fn read_host_state(cpu: &impl Cpu) -> HostState {
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
    HostState {
        cr0: cpu.read_cr0(),
        cr3: cpu.read_cr3(),
        cr4: cpu.read_cr4(),
        cs: sel.cs,
        ss: sel.ss,
        ds: sel.ds,
        es: sel.es,
        fs: sel.fs,
        gs: sel.gs,
        tr: sel.tr,
        fs_base: cpu.read_msr(msrs::IA32_FS_BASE),
        gs_base: cpu.read_msr(msrs::IA32_GS_BASE),
        tr_base,
        gdtr_base: gdt_base,
        idtr_base: idtr.base,
        sysenter_cs: cpu.read_msr(msrs::IA32_SYSENTER_CS) as u32,
        sysenter_esp: cpu.read_msr(msrs::IA32_SYSENTER_ESP),
        sysenter_eip: cpu.read_msr(msrs::IA32_SYSENTER_EIP),
        efer: cpu.read_msr(msrs::IA32_EFER),
        pat: cpu.read_msr(msrs::IA32_PAT),
        rip: arch::run::vm_exit_entry(),
    }
}
