//! Issue 18: the RIP advance at every boundary and events that look like
//! the hardware's (RF in the pushed RFLAGS of a fault, error codes,
//! instruction lengths), through the fake VMCS.

use okernel_abi::hypercall::{Call, Status};

use super::*;
use crate::bits::{CR0_PE, CR4_LA57, DEBUGCTL_BTF, EFER_LMA, RFLAGS_RF, RFLAGS_TF};
use crate::exit::rip::next_rip;
use crate::msrs::IA32_VMX_BASIC;
use crate::vmx::fields::{Guest32, Guest64};
use crate::vmx::regs::Gpr;

/// The first RIP past the lower canonical half (48-bit).
const TOP48: u64 = 0x0000_8000_0000_0000;
/// The same with 5-level paging (57-bit).
const TOP57: u64 = 0x0100_0000_0000_0000;

fn wbinvd_at(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>, at: u64, len: u32) -> ExitAction {
    v.vmcs.set(GuestNatural::Rip, at);
    synth(v, ExitReason::Wbinvd as u32, 0, len);
    handle_exit(v).expect("a RIP boundary never stops the monitor")
}

#[test]
fn next_rip_follows_the_architecture() {
    // 64-bit: canonical results advance, non-canonical ones do not.
    assert_eq!(next_rip(TOP48 - 4, 3, 48), Some(TOP48 - 1));
    assert_eq!(next_rip(TOP48 - 3, 3, 48), None);
    assert_eq!(next_rip(TOP48 - 1, 1, 48), None);
    assert_eq!(next_rip(TOP48 - 3, 3, 57), Some(TOP48));
    assert_eq!(next_rip(TOP57 - 2, 2, 57), None);
    // The upper half runs into 2^64 and wraps to a canonical 0.
    assert_eq!(next_rip(u64::MAX - 1, 3, 48), Some(1));
    assert_eq!(
        next_rip(0xffff_8000_0000_0000, 15, 48),
        Some(0xffff_8000_0000_000f)
    );
    // Outside 64-bit mode EIP wraps at 4 GiB.
    assert_eq!(next_rip(0xffff_fffe, 3, 32), Some(1));
    assert_eq!(next_rip(0xffff_fff0, 15, 32), Some(0xffff_ffff));
}

#[test]
fn an_instruction_ending_at_the_canonical_boundary_completes_then_gp() {
    for len in [1u32, 3, 15] {
        let mut v = vcpu();
        let at = TOP48 - u64::from(len);
        v.vmcs.set(Guest32::InterruptibilityState, 0b01);
        assert_eq!(wbinvd_at(&mut v, at, len), ExitAction::Resume);
        assert_eq!(v.cpu.wbinvds, 1, "the instruction completed");
        // No guest memory here (no IDT to read): the monitor leaves the
        // #GP to the processor, at the instruction (tests/policy/fetch_gp.rs
        // has the software delivery with the non-canonical RIP).
        assert_eq!(rip(&v), at, "VM entry cannot load the non-canonical RIP");
        assert_eq!(injected(&v), GP);
        assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0);
        assert_ne!(v.vmcs.get(GuestNatural::Rflags) & RFLAGS_RF, 0, "a fault");
        assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0);
    }
    // One byte earlier it is an ordinary advance.
    let mut v = vcpu();
    wbinvd_at(&mut v, TOP48 - 4, 3);
    assert_eq!(rip(&v), TOP48 - 1);
    assert_eq!(injected(&v), 0);
}

#[test]
fn a_hypercall_at_the_boundary_is_answered_then_gp() {
    // Version goes through the slow half: RDI holds the answer.
    let mut v = vcpu();
    v.regs.set(Gpr::Rax, Call::Version.raw());
    v.vmcs.set(GuestNatural::Rip, 0x7fff_ffff_fffd);
    synth(&mut v, ExitReason::Vmcall as u32, 0, 3);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(v.regs.get(Gpr::Rax), Status::Success.raw());
    assert_ne!(v.regs.get(Gpr::Rdi), 0);
    assert_eq!(rip(&v), 0x7fff_ffff_fffd);
    assert_eq!(injected(&v), GP);
}

#[test]
fn la57_moves_the_boundary() {
    let mut v = vcpu();
    let cr4 = v.vmcs.get(GuestNatural::Cr4);
    v.vmcs.set(GuestNatural::Cr4, cr4 | CR4_LA57);
    wbinvd_at(&mut v, TOP48 - 3, 3);
    assert_eq!(rip(&v), TOP48, "canonical with 57 bits");
    assert_eq!(injected(&v), 0);
    wbinvd_at(&mut v, TOP57 - 3, 3);
    assert_eq!(injected(&v), GP);
    assert_eq!(rip(&v), TOP57 - 3);
}

#[test]
fn eip_wraps_at_4_gib_in_compatibility_mode() {
    let mut v = vcpu();
    let cs = v.vmcs.get(Guest32::CsAccessRights);
    v.vmcs.set(Guest32::CsAccessRights, cs & !(1 << 13)); // CS.L = 0
    assert_ne!(v.vmcs.get(Guest64::Efer) & EFER_LMA, 0, "IA-32e active");
    wbinvd_at(&mut v, 0xffff_fffe, 3);
    assert_eq!(rip(&v), 1);
    assert_eq!(injected(&v), 0);
}

#[test]
fn injected_faults_push_rf_set_and_traps_and_aborts_do_not() {
    use crate::vmx::event::{Exception, InterruptionInfo};
    // #GP from a hidden MSR, #UD from VMXON: faults.
    for (reason, rcx, event) in [
        (ExitReason::Rdmsr, IA32_VMX_BASIC.into(), GP),
        (ExitReason::Vmxon, 0, UD),
    ] {
        let mut v = vcpu();
        v.vmcs.set(GuestNatural::Rflags, 0x202);
        v.regs.set(Gpr::Rcx, rcx);
        let r = run(&mut v, reason, 0, 3);
        assert_injected(&v, r, event);
        assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x202 | RFLAGS_RF);
    }
    // #DF (an abort) and a re-delivered #BP (a trap) leave RF alone.
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rflags, 0x202);
    assert_eq!(v.inject(Exception::DoubleFault, 0), Ok(ExitAction::Resume));
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x202);
    assert_eq!(injected(&v), DF);
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rflags, 0x202);
    v.vmcs.set(ReadOnly32::ExitInstructionLength, 1);
    assert_eq!(
        v.reinject(InterruptionInfo(0x8000_0603)),
        Ok(ExitAction::Resume)
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x202);
}

#[test]
fn real_mode_faults_have_no_error_code_and_no_rf() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    let cr0 = v.vmcs.get(GuestNatural::Cr0);
    v.vmcs.set(GuestNatural::Cr0, cr0 & !CR0_PE);
    v.vmcs.set(GuestNatural::Rflags, 0x2);
    v.regs.set(Gpr::Rcx, IA32_VMX_BASIC.into());
    let r = run(&mut v, ExitReason::Rdmsr, 0, 2);
    assert_injected(&v, r, 0x8000_030d);
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2, "16-bit FLAGS: no RF");
}

#[test]
fn intercepted_events_are_delivered_as_they_were() {
    use crate::vmx::fields::ReadOnly32 as R;
    // #PF with its error code: RF set, error code copied.
    let mut v = vcpu();
    synth(&mut v, ExitReason::ExceptionOrNmi as u32, 0x1000, 0);
    v.vmcs
        .set(R::ExitInterruptionInfo, 0x8000_0b0e)
        .set(R::ExitInterruptionErrorCode, 0x7)
        .set(GuestNatural::Rflags, 0x2);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0x8000_0b0e);
    assert_eq!(v.vmcs.get(Control32::EntryExceptionErrorCode), 0x7);
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2 | RFLAGS_RF);
    assert_eq!(rip(&v), RIP);
    // INT3 (software exception): the instruction length goes with it.
    let mut v = vcpu();
    synth(&mut v, ExitReason::ExceptionOrNmi as u32, 0, 1);
    v.vmcs.set(R::ExitInterruptionInfo, 0x8000_0603);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0x8000_0603);
    assert_eq!(v.vmcs.get(Control32::EntryInstructionLength), 1);
    // An NMI; bit 12 (NMI unblocking by IRET) is not part of an injection.
    let mut v = vcpu();
    synth(&mut v, ExitReason::ExceptionOrNmi as u32, 0, 0);
    v.vmcs.set(R::ExitInterruptionInfo, 0x8000_1202);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), 0x8000_0202);
}

/// Pending debug exceptions: B0 (a data breakpoint the exit left).
const PENDING_B0: u64 = 1;

/// Completing an exiting instruction clears RF (SDM Vol. 3A §19.3.1.1),
/// so a breakpoint on the next instruction fires (found by the
/// conformance kernel's `rf-cleared-after-cpuid`).
#[test]
fn the_rip_advance_clears_rf() {
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rflags, 0x2 | RFLAGS_RF);
    wbinvd_at(&mut v, RIP, 2);
    assert_eq!(rip(&v), RIP + 2);
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2);
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
    assert_eq!(injected(&v), 0);
}

/// With TF set the completed instruction owes a single-step trap: BS is
/// made pending for VM entry to deliver (SDM Vol. 3A §19.3.1.4, Vol. 3C
/// §27.7.3); other pending bits are kept; with BTF a non-branch owes none.
#[test]
fn the_rip_advance_under_tf_leaves_a_single_step_pending() {
    use crate::bits::PENDING_BS;
    let mut v = vcpu();
    v.vmcs
        .set(GuestNatural::Rflags, 0x202 | RFLAGS_TF)
        .set(GuestNatural::PendingDebugExceptions, PENDING_B0);
    wbinvd_at(&mut v, RIP, 3);
    assert_eq!(rip(&v), RIP + 3);
    assert_eq!(
        v.vmcs.get(GuestNatural::PendingDebugExceptions),
        PENDING_B0 | PENDING_BS
    );
    assert_eq!(
        v.vmcs.get(GuestNatural::Rflags),
        0x202 | RFLAGS_TF,
        "TF stays"
    );
    // The same through the hypercall path (VMCALL, answered).
    let mut v = vcpu();
    v.vmcs
        .set(GuestNatural::Rflags, 0x2 | RFLAGS_TF | RFLAGS_RF);
    v.regs.set(Gpr::Rax, Call::Version.raw());
    synth(&mut v, ExitReason::Vmcall as u32, 0, 3);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), PENDING_BS);
    assert_eq!(
        v.vmcs.get(GuestNatural::Rflags),
        0x2 | RFLAGS_TF,
        "RF cleared"
    );
    // BTF: single-step on branches only; WBINVD is none.
    let mut v = vcpu();
    v.vmcs
        .set(GuestNatural::Rflags, 0x202 | RFLAGS_TF)
        .set(Guest64::Debugctl, DEBUGCTL_BTF);
    wbinvd_at(&mut v, RIP, 2);
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
    // Neither flag: RFLAGS and the pending debug exceptions untouched.
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rflags, 0x246);
    wbinvd_at(&mut v, RIP, 2);
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x246);
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
}

/// At the canonical boundary the next fetch faults: the #GP(0) is
/// injected (RF set, a fault) and no single step is made pending for an
/// instruction whose successor cannot be reached.
#[test]
fn the_boundary_gp_wins_over_the_single_step() {
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rflags, 0x2 | RFLAGS_TF);
    wbinvd_at(&mut v, TOP48 - 2, 2);
    assert_eq!(injected(&v), GP);
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
}

/// The two fast exits complete the instruction the same below 2 GiB and
/// above (where the advance takes its own, mode-aware branch): RF
/// cleared, BS pending under TF, blocking by MOV SS cleared (blocking by
/// NMI kept), RAX answered, no event injected.
#[test]
fn fast_exits_complete_flags_and_blocking_near_and_far() {
    use crate::bits::PENDING_BS;
    use crate::exit::{FastPath, handle_fast};
    for at in [RIP, 0x8000_0000, TOP48 - 0x1000] {
        for (reason, wrote_rbx) in [(ExitReason::Vmcall, false), (ExitReason::Cpuid, true)] {
            let mut v = vcpu();
            v.regs.set(Gpr::Rax, Call::Null.raw());
            v.vmcs
                .set(GuestNatural::Rip, at)
                .set(GuestNatural::Rflags, 0x2 | RFLAGS_TF | RFLAGS_RF)
                .set(Guest32::InterruptibilityState, 0b1010);
            synth(&mut v, reason as u32, 0, 3);
            assert_eq!(handle_fast(&mut v), FastPath::Resumed { wrote_rbx });
            assert_eq!(rip(&v), at + 3, "{reason:?} at {at:#x}");
            assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2 | RFLAGS_TF);
            assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), PENDING_BS);
            assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0b1000);
            assert_eq!(injected(&v), 0);
            if !wrote_rbx {
                assert_eq!(v.regs.get(Gpr::Rax), Status::Success.raw());
            }
        }
    }
}
