//! The policy on more than one processor (issue 17): a change one
//! processor makes reaches another's VMCS and TLB at that processor's
//! next exit (`exit::vmcs_sync`). One shared virtual CPU plays both
//! processors, as the run does (`launch::run`): the second processor's
//! own VMCS and generation are swapped in for its exits.

use super::*;
use crate::bits::CR0_WP;
use crate::hw::fake::FakeVmcs;
use crate::vmx::controls::SecondaryProcBased;
use crate::vmx::fields::ControlNatural;
use okernel_abi::policy::RegionKind;

/// The other processor: its VMCS and the generation it reflects.
struct Other {
    vmcs: FakeVmcs,
    seen: u64,
}

impl Other {
    /// A processor whose VMCS is `v`'s as it is now (brought up before
    /// any policy change, like an application processor at launch).
    fn like(v: &PVcpu) -> Self {
        Self {
            vmcs: v.vmcs.clone(),
            seen: v.seen_generation,
        }
    }

    /// Runs `f` as this processor: its VMCS and generation in the shared
    /// virtual CPU for the length of `f`.
    fn on<R>(&mut self, v: &mut PVcpu, f: impl FnOnce(&mut PVcpu) -> R) -> R {
        core::mem::swap(&mut v.vmcs, &mut self.vmcs);
        core::mem::swap(&mut v.seen_generation, &mut self.seen);
        let r = f(v);
        core::mem::swap(&mut v.vmcs, &mut self.vmcs);
        core::mem::swap(&mut v.seen_generation, &mut self.seen);
        r
    }
}

fn cpuid_exit(v: &mut PVcpu) {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, 0);
    run(v, ExitReason::Cpuid, 0, 2).unwrap();
}

#[test]
fn a_pin_set_on_one_processor_reaches_the_others_vmcs_at_its_next_exit() {
    let mut v = pvcpu();
    let mut cpu1 = Other::like(&v);
    ok(&mut v, Call::PinCr, [0, CR0_WP, 0]);
    assert_ne!(v.vmcs.get(ControlNatural::Cr0GuestHostMask) & CR0_WP, 0);
    let mask_before = cpu1.vmcs.get(ControlNatural::Cr0GuestHostMask);
    assert_eq!(mask_before & CR0_WP, 0, "not yet on the other processor");
    let invepts = v.cpu.invepts;
    cpu1.on(&mut v, cpuid_exit);
    assert_ne!(
        cpu1.vmcs.get(ControlNatural::Cr0GuestHostMask) & CR0_WP,
        0,
        "its next exit made writes of the pinned bit exit there too"
    );
    assert_eq!(
        cpu1.vmcs.get(ControlNatural::Cr0ReadShadow) & CR0_WP,
        cpu1.vmcs.get(GuestNatural::Cr0) & CR0_WP,
        "the shadow keeps what that processor's guest saw"
    );
    assert_eq!(v.cpu.invepts, invepts + 1, "and dropped its translations");
    // Once caught up, nothing more.
    cpu1.on(&mut v, cpuid_exit);
    assert_eq!(v.cpu.invepts, invepts + 1);
}

#[test]
fn a_region_locked_on_one_processor_is_invalidated_on_the_other_once() {
    let mut v = pvcpu();
    let mut cpu1 = Other::like(&v);
    lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
    let invepts = v.cpu.invepts;
    // The processor that locked does not catch up with itself.
    cpuid_exit(&mut v);
    assert_eq!(v.cpu.invepts, invepts);
    cpu1.on(&mut v, cpuid_exit);
    assert_eq!(v.cpu.invepts, invepts + 1, "INVEPT at its next exit");
    cpu1.on(&mut v, cpuid_exit);
    assert_eq!(v.cpu.invepts, invepts + 1);
}

#[test]
fn the_descriptor_table_lock_reaches_the_other_processor() {
    let mut v = pvcpu();
    let mut cpu1 = Other::like(&v);
    ok(&mut v, Call::LockDescriptorTables, [0; 3]);
    let dte = u64::from(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING.bits());
    assert_ne!(
        v.vmcs.get(Control32::SecondaryProcessorBasedControls) & dte,
        0
    );
    assert_eq!(
        cpu1.vmcs.get(Control32::SecondaryProcessorBasedControls) & dte,
        0
    );
    cpu1.on(&mut v, cpuid_exit);
    assert_ne!(
        cpu1.vmcs.get(Control32::SecondaryProcessorBasedControls) & dte,
        0
    );
}

#[test]
fn every_call_another_processor_must_see_bumps_the_generation() {
    // The generation is what makes the caller wait for the others to
    // leave the guest (`launch::presence`) and the others catch up: each
    // call that changes their EPT translations, their VMCS controls or
    // the shared bitmaps bumps it; a call that changes nothing does not.
    let mut v = pvcpu();
    let changed = |v: &mut PVcpu, call, args| {
        let before = v.policy.generation;
        ok(v, call, args);
        v.policy.generation != before
    };
    assert!(!changed(&mut v, Call::Null, [0; 3]));
    assert!(changed(&mut v, Call::PinCr, [0, CR0_WP, 0]));
    v.cpu
        .set_msr(crate::msrs::IA32_LSTAR, 0xffff_8000_0000_1000);
    assert!(changed(
        &mut v,
        Call::LockMsr,
        [crate::msrs::IA32_LSTAR.into(), 0, 0]
    ));
    assert!(changed(&mut v, Call::LockDescriptorTables, [0; 3]));
    let before = v.policy.generation;
    lock(&mut v, RODATA, 0x1000, RegionKind::Rodata);
    assert_ne!(v.policy.generation, before, "LockRegion");
    assert!(changed(&mut v, Call::CreateContext, [0; 3]));
    assert!(changed(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]));
    assert!(changed(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]));
}

#[test]
fn a_protected_page_of_a_context_another_processor_runs_in_is_not_freed() {
    let mut v = pvcpu();
    assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), 1);
    ok(&mut v, Call::AllocProtectedPage, [1, SECRET, 0]);
    // Processor B runs in context 1, where the page is mapped writable
    // until it leaves the guest: zeroed now, a write of B's would reach
    // every view once the page is plain.
    v.policy.moved(0, 1);
    assert_eq!(
        call(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]),
        Status::BadContext
    );
    v.policy.moved(1, 0);
    ok(&mut v, Call::FreeProtectedPage, [1, SECRET, 0]);
}

#[test]
fn a_context_another_processor_runs_in_cannot_be_destroyed() {
    let mut v = pvcpu();
    assert_eq!(ok(&mut v, Call::CreateContext, [0; 3]), 1);
    // Processor B entered context 1 (the run loop counts it as the
    // processor's exit ends, `launch::run`); processor A, in the trusted
    // context, destroys it.
    v.policy.moved(0, 1);
    assert_eq!(
        call(&mut v, Call::DestroyContext, [1, 0, 0]),
        Status::BadContext,
        "its view would be freed under B"
    );
    // B back in the trusted context: now it can go.
    v.policy.moved(1, 0);
    ok(&mut v, Call::DestroyContext, [1, 0, 0]);
}
