//! Issue 13, class 3: every one of the 76 basic exit reasons through the
//! dispatcher has a defined outcome, and none ends the run but the
//! trusted kernel's `Exit` — except the four only the monitor or the
//! machine can cause (VM-entry failures, EPT misconfiguration).

use okernel_abi::hypercall::{Call, Status};

use super::policy::{PVcpu, TEXT, call, enter, lock_for_gates, ok, pvcpu};
use super::*;
use crate::bits::{RFLAGS_IF, RFLAGS_TF};
use crate::exit::stop::{ActivityState, halt_state};
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::fields::{Control64, Guest16, Guest32, ReadOnly32};
use crate::vmx::regs::Gpr;

/// IA32_VMX_MISC with every inactive activity state (bits 6–8), as Intel
/// processors report it (the fake's default offers none).
const MISC_ALL_STATES: u64 = 0x0300_01e0;

/// The default VCPU on a processor that offers every activity state.
fn vcpu() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    let mut v = super::vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    v
}

/// Monitor-integrity exits: the only reasons that may end a run.
fn monitor_only(reason: ExitReason) -> bool {
    use ExitReason as R;
    matches!(
        reason,
        R::EntryFailureGuestState
            | R::EntryFailureMsrLoading
            | R::EntryFailureMachineCheck
            | R::EptMisconfiguration
    )
}

/// A plausible qualification for `reason`'s handler.
fn qualification(reason: ExitReason) -> u64 {
    match reason {
        ExitReason::EptViolation => 0x182,
        _ => 0,
    }
}

#[test]
fn all_76_basic_exit_reasons_have_a_non_fatal_outcome() {
    assert_eq!(ExitReason::ALL.len(), 76);
    for &reason in ExitReason::ALL {
        let mut v = vcpu();
        // RAX = 0: Version, for the VMCALL.
        let r = run(&mut v, reason, qualification(reason), 2);
        if monitor_only(reason) {
            assert!(r.is_err(), "{}: {r:?}", reason.name());
        } else {
            assert_eq!(r, Ok(ExitAction::Resume), "{}", reason.name());
        }
        assert_eq!(v.counters.get(reason), 1, "{} counted", reason.name());
    }
}

#[test]
fn all_exit_reasons_from_an_untrusted_context_leave_the_run_going() {
    for &reason in ExitReason::ALL {
        if monitor_only(reason) {
            continue;
        }
        let (mut v, _) = untrusted_with_gate();
        v.regs.set(Gpr::Rax, Call::Null.raw());
        let r = run(&mut v, reason, qualification(reason), 2);
        assert_eq!(r, Ok(ExitAction::Resume), "{}", reason.name());
    }
}

#[test]
fn only_the_trusted_kernels_exit_ends_the_run() {
    let mut v = vcpu();
    let pass = u64::from(okernel_abi::result::Outcome::Pass.code());
    v.regs.set(Gpr::Rax, Call::Exit.raw());
    v.regs.set(Gpr::Rdi, pass);
    let r = run(&mut v, ExitReason::Vmcall, 0, 3);
    assert!(matches!(r, Ok(ExitAction::Stop(_))), "{r:?}");
    let (mut v, _) = untrusted_with_gate();
    v.regs.set(Gpr::Rax, Call::Exit.raw());
    v.regs.set(Gpr::Rdi, pass);
    assert_eq!(
        run(&mut v, ExitReason::Vmcall, 0, 3),
        Ok(ExitAction::Resume)
    );
}

#[test]
fn instructions_never_emulated_get_ud_and_fault_like_exits_gp() {
    use ExitReason as R;
    for reason in [R::Rdtsc, R::MovDr, R::Rdrand, R::Rsm] {
        let mut v = vcpu();
        let r = run(&mut v, reason, 0, 2);
        assert_injected(&v, r, UD);
    }
    for reason in [R::ApicAccess, R::PmlFull] {
        let mut v = vcpu();
        let r = run(&mut v, reason, 0, 2);
        assert_injected(&v, r, GP);
    }
    for reason in [R::Pause, R::Invlpg] {
        let mut v = vcpu();
        let r = run(&mut v, reason, 0, 2);
        assert_advanced(&v, r, 2);
    }
    // (A SIPI outside wait-for-SIPI changes nothing either:
    // `tests/exits_sipi.rs`.)
    for reason in [R::ExternalInterrupt, R::MonitorTrapFlag, R::PreemptionTimer] {
        let mut v = vcpu();
        assert_eq!(run(&mut v, reason, 0, 2), Ok(ExitAction::Resume));
        assert_eq!((injected(&v), rip(&v)), (0, RIP), "{}", reason.name());
    }
}

#[test]
fn hlt_completes_and_halts() {
    let mut v = vcpu();
    let r = run(&mut v, ExitReason::Hlt, 0, 1);
    assert_advanced(&v, r, 1);
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::Hlt as u64
    );
}

#[test]
fn hlt_at_the_canonical_boundary_takes_the_gp_and_does_not_halt() {
    // The last byte below 2^47: the fetch after it faults; VM entry would
    // refuse the #GP's injection into the HLT state.
    let mut v = vcpu();
    v.vmcs.set(GuestNatural::Rip, 0x7fff_ffff_ffff);
    let r = run(&mut v, ExitReason::Hlt, 0, 1);
    assert_eq!(r, Ok(ExitAction::Resume));
    assert_eq!((injected(&v), rip(&v)), (GP, 0x7fff_ffff_ffff));
    assert_eq!(v.vmcs.get(Guest32::ActivityState), 0, "active");
}

#[test]
fn a_task_switch_is_refused_with_gp_and_audited() {
    // JMP to a TSS (qualification source 2).
    let mut v = vcpu();
    let r = run(&mut v, ExitReason::TaskSwitch, (2 << 30) | 0x28, 7);
    assert_injected(&v, r, GP);
    let rec = v.audit.last().unwrap();
    assert_eq!(
        (rec.kind, rec.gpa, rec.action),
        (AuditKind::Exit, 9, AuditAction::InjectGp)
    );
    // Through an IDT task gate while delivering #GP: a double fault.
    let mut v = vcpu();
    synth(&mut v, ExitReason::TaskSwitch as u32, 3 << 30, 0);
    v.vmcs.set(ReadOnly32::IdtVectoringInfo, 0x8000_0b0d);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(injected(&v), DF);
    assert_eq!(v.audit.last().unwrap().action, AuditAction::InjectDf);
}

#[test]
fn init_and_triple_fault_halt_the_trusted_context() {
    for reason in [ExitReason::InitSignal, ExitReason::TripleFault] {
        let mut v = vcpu();
        v.vmcs.set(Guest32::InterruptibilityState, 0b10);
        assert_eq!(run(&mut v, reason, 0, 0), Ok(ExitAction::Resume));
        assert_eq!(
            v.vmcs.get(Guest32::ActivityState),
            ActivityState::WaitForSipi as u64
        );
        assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0);
        let rec = v.audit.last().unwrap();
        assert_eq!(
            (rec.kind, rec.gpa, rec.action, rec.context),
            (AuditKind::Exit, reason as u64, AuditAction::Stop, 0)
        );
    }
}

#[test]
fn the_halt_state_is_the_best_the_processor_offers() {
    assert_eq!(halt_state(0x1e0), Some(ActivityState::WaitForSipi));
    assert_eq!(halt_state(0x0c0), Some(ActivityState::Shutdown));
    assert_eq!(halt_state(0x040), Some(ActivityState::Hlt));
    assert_eq!(halt_state(0x020), None);
    // No inactive state at all: the one case that still ends the run.
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, 0x20);
    assert_eq!(
        run(&mut v, ExitReason::TripleFault, 0, 0),
        Err(ExitError::Halted("triple-fault"))
    );
    // HLT only, with the guest at CPL 0: halted with interrupts off, and
    // with TF and the pending debug exceptions cleared (TF with HLT needs
    // BS pending, else VM entry fails, SDM Vol. 3C §27.3.1.5).
    let mut v = vcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, 0x60);
    v.vmcs
        .set(GuestNatural::Rflags, 0x2 | RFLAGS_IF | RFLAGS_TF);
    v.vmcs.set(GuestNatural::PendingDebugExceptions, 1);
    assert_eq!(
        run(&mut v, ExitReason::InitSignal, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::Hlt as u64
    );
    assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2);
    assert_eq!(v.vmcs.get(GuestNatural::PendingDebugExceptions), 0);
}

const GATE: u64 = TEXT + 0x40;
const STACK: u64 = 0x0077_f000;

/// A protected VCPU running in untrusted context 1, with a gate.
fn untrusted_with_gate() -> (PVcpu, u64) {
    let mut v = pvcpu();
    v.cpu.set_msr(crate::msrs::IA32_VMX_MISC, MISC_ALL_STATES);
    lock_for_gates(&mut v);
    // The kernel's 64-bit code and data segments, DPL 0.
    v.vmcs
        .set(Guest16::CsSelector, 0x08)
        .set(Guest32::CsAccessRights, 0xa09b)
        .set(Guest16::SsSelector, 0x10)
        .set(Guest32::SsAccessRights, 0xc093);
    let g = ok(&mut v, Call::RegisterGate, [GATE, STACK, 0]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    enter(&mut v, 1);
    (v, g)
}

#[test]
fn a_stopped_untrusted_context_returns_to_the_trusted_one_at_its_gate() {
    for reason in [ExitReason::TripleFault, ExitReason::InitSignal] {
        let (mut v, _) = untrusted_with_gate();
        v.vmcs
            .set(GuestNatural::Rflags, 0x2 | RFLAGS_IF | RFLAGS_TF);
        // The context left 64-bit mode for CPL 3 compatibility mode (a
        // 32-bit SYSRET) and sat in HLT when it was stopped: a 64-bit gate
        // address with its CS would fail VM entry, and the gate would
        // start halted.
        v.vmcs
            .set(Guest16::CsSelector, 0x23)
            .set(Guest32::CsAccessRights, 0xc0fb)
            .set(Guest16::SsSelector, 0x2b)
            .set(Guest32::SsAccessRights, 0xc0f3)
            .set(Guest32::ActivityState, ActivityState::Hlt as u64);
        assert_eq!(run(&mut v, reason, 0, 0), Ok(ExitAction::Resume));
        assert_eq!(
            (
                v.vmcs.get(Guest16::CsSelector),
                v.vmcs.get(Guest32::CsAccessRights),
                v.vmcs.get(Guest16::SsSelector),
                v.vmcs.get(Guest32::SsAccessRights),
            ),
            (0x08, 0xa09b, 0x10, 0xc093),
            "the kernel's CS and SS, CPL 0"
        );
        assert_eq!(v.policy.current, 0, "back in the trusted context");
        assert_eq!(
            v.vmcs.get(Control64::Eptp),
            crate::policy::views::Views::eptp(&v.memory, 0).unwrap()
        );
        assert_eq!(rip(&v), GATE);
        assert_eq!(v.vmcs.get(GuestNatural::Rsp), STACK);
        assert_eq!(v.vmcs.get(GuestNatural::Rflags), 0x2, "gate entry state");
        assert_eq!(
            v.vmcs.get(Guest32::InterruptibilityState),
            0b1000,
            "NMIs blocked until the gate's first IRET"
        );
        assert_eq!(v.regs.get(Gpr::Rax), Status::Refused.raw());
        assert_eq!(v.regs.get(Gpr::Rdi), 1);
        assert_eq!(v.regs.get(Gpr::Rsi), reason as u64);
        assert_eq!(v.vmcs.get(Guest32::ActivityState), 0, "still active");
        let rec = v.audit.last().unwrap();
        assert_eq!(
            (rec.kind, rec.context, rec.action),
            (AuditKind::Exit, 1, AuditAction::Gate)
        );
        // The trusted kernel goes on: the context is still there.
        assert_eq!(
            call(&mut v, Call::SwitchContext, [1, 0, 0]),
            Status::Success
        );
    }
}

#[test]
fn a_stopped_untrusted_context_without_a_usable_gate_halts() {
    let (mut v, _) = untrusted_with_gate();
    capture_lines(&mut v.audit);
    // The attacker's page tables no longer map the gate's page.
    v.vmcs.set(GuestNatural::Cr3, 0x70_0000);
    assert_eq!(
        run(&mut v, ExitReason::TripleFault, 0, 0),
        Ok(ExitAction::Resume)
    );
    assert_eq!(v.policy.current, 1, "not switched");
    assert_eq!(
        v.vmcs.get(Guest32::ActivityState),
        ActivityState::WaitForSipi as u64
    );
    assert_eq!(v.audit.last().unwrap().action, AuditAction::Stop);
    // Printed now: in wait-for-SIPI the console's timer does not count.
    assert!(!v.audit.has_pending());
    let lines = printed_lines();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("the virtual CPU waits for a reset (WaitForSipi)")),
        "{lines:?}"
    );
}

#[cfg(feature = "fuzz")]
#[test]
fn the_fuzzer_counts_exits_no_control_causes_as_unexpected() {
    use crate::exit::other::never_caused;
    let never = ExitReason::ALL.iter().filter(|&&r| never_caused(r)).count();
    // 44 until the I/O bitmaps made I/O-instruction exits expected, 43
    // until the console's timer made preemption-timer exits expected, 42
    // until it set MWAIT exiting while armed.
    assert_eq!(never, 41);
    assert!(!never_caused(ExitReason::Mwait));
    // A guest's INIT-SIPI-SIPI to a virtual CPU in wait-for-SIPI
    // (`exit::sipi`).
    assert!(!never_caused(ExitReason::Sipi));
    assert!(!never_caused(ExitReason::IoInstruction));
    assert!(!never_caused(ExitReason::PreemptionTimer));
    for reason in [
        ExitReason::Hlt,
        ExitReason::Rdtsc,
        ExitReason::ExceptionOrNmi,
    ] {
        // The fuzzer's hooks are those of its tracked memory.
        let mut v = crate::tests::policy::pvcpu();
        let _ = run(&mut v, reason, 0, 1);
        assert_eq!(v.hooks.unexpected, (1, reason as u16), "{}", reason.name());
    }
    let mut v = crate::tests::policy::pvcpu();
    let _ = run(&mut v, ExitReason::TripleFault, 0, 0);
    assert_eq!(
        v.hooks.unexpected,
        (0, 0),
        "a guest can always triple-fault"
    );
}
