//! VMCALL: the hypercall ABI.

use okernel_abi::hypercall::{Call, Status};
use okernel_abi::result::Outcome;

use super::*;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

fn vmcall<P: Policy>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P>,
    number: u64,
    arg0: u64,
) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rax, number);
    v.regs.set(Gpr::Rdi, arg0);
    v.regs.set(Gpr::Rsi, 0x5151);
    run(v, ExitReason::Vmcall, 0, 3)
}

#[test]
fn version_returns_the_packed_abi_version() {
    let mut v = vcpu();
    let r = vmcall(&mut v, Call::Version.raw(), 0);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::Success.raw());
    assert_eq!(v.regs.rdi(), u64::from(okernel_abi::ABI_VERSION.packed()));
    assert_eq!(v.regs.rsi(), 0x5151, "RSI untouched");
}

#[test]
fn exit_count_answers_one_reason_and_the_total() {
    let mut v = vcpu();
    run(&mut v, ExitReason::Cpuid, 0, 2).unwrap();
    run(&mut v, ExitReason::Cpuid, 0, 2).unwrap();
    v.vmcs.set(GuestNatural::Rip, RIP);
    let r = vmcall(&mut v, Call::ExitCount.raw(), ExitReason::Cpuid as u64);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::Success.raw());
    assert_eq!(
        (v.regs.rdi(), v.regs.rsi()),
        (2, 3),
        "CPUID; all, this VMCALL too"
    );
    v.vmcs.set(GuestNatural::Rip, RIP);
    let r = vmcall(&mut v, Call::ExitCount.raw(), ExitReason::Vmcall as u64);
    assert_advanced(&v, r, 3);
    assert_eq!((v.regs.rdi(), v.regs.rsi()), (2, 4));
    for bad in [
        okernel_abi::hypercall::EXIT_REASON_SLOTS,
        0x1_0000,
        u64::MAX,
    ] {
        v.vmcs.set(GuestNatural::Rip, RIP);
        let r = vmcall(&mut v, Call::ExitCount.raw(), bad);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::InvalidArgument.raw(), "{bad:#x}");
        assert_eq!(v.regs.rdi(), bad, "RDI untouched");
    }
}

#[test]
fn null_succeeds_and_changes_nothing_else() {
    let mut v = vcpu();
    let r = vmcall(&mut v, Call::Null.raw(), 0x77);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), 0);
    assert_eq!(v.regs.rdi(), 0x77);
    assert_eq!(v.counters.get(ExitReason::Vmcall), 1);
}

#[test]
fn exit_ends_the_run_with_the_guests_outcome() {
    for o in Outcome::ALL {
        let mut v = vcpu();
        assert_eq!(
            vmcall(&mut v, Call::Exit.raw(), o.code().into()),
            Ok(ExitAction::Stop(o))
        );
    }
}

#[test]
fn exit_from_an_untrusted_context_is_refused_and_audited() {
    // DenyAll reports context 7: an untrusted context.
    for o in Outcome::ALL {
        let mut v = vcpu_with(DenyAll, entry64());
        let r = vmcall(&mut v, Call::Exit.raw(), o.code().into());
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::PermissionDenied.raw());
        let rec = v.audit.last().copied().expect("audited");
        assert_eq!(rec.kind, AuditKind::Hypercall);
        assert_eq!(rec.action, AuditAction::Refused);
        assert_eq!((rec.context, rec.gpa), (7, Call::Exit.raw()));
        assert_eq!(rec.qualification, u64::from(o.code()));
        assert_eq!(v.audit.total(), 1);
    }
    // A malformed request gets the trusted context's answer, unaudited.
    let mut v = vcpu_with(DenyAll, entry64());
    let r = vmcall(&mut v, Call::Exit.raw(), 0x99);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::InvalidArgument.raw());
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn exit_with_a_bad_outcome_is_an_invalid_argument() {
    for arg in [0u64, 0x14, 0x110, u64::MAX] {
        let mut v = vcpu();
        let r = vmcall(&mut v, Call::Exit.raw(), arg);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::InvalidArgument.raw());
    }
}

#[test]
fn numbers_outside_the_abi_are_unknown_calls() {
    for n in [3u64, 0x100, 1 << 32, u64::MAX] {
        let mut v = vcpu();
        let r = vmcall(&mut v, n, 0);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::UnknownCall.raw());
    }
}

#[test]
fn calls_from_cpl3_are_denied_even_exit() {
    for n in [Call::Version.raw(), Call::Exit.raw(), 99] {
        let mut v = vcpu();
        let ss = v.vmcs.get(Guest32::SsAccessRights);
        v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
        let r = vmcall(&mut v, n, u64::from(Outcome::Pass.code()));
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::PermissionDenied.raw());
        assert_eq!(
            v.regs.rdi(),
            u64::from(Outcome::Pass.code()),
            "nothing returned"
        );
    }
}

#[test]
fn a_32_bit_guest_passes_32_bit_numbers() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    // The upper half of RAX is not part of a 32-bit guest's register.
    let r = vmcall(&mut v, 0xffff_ffff_0000_0001, 0);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::Success.raw());
}

#[test]
fn dispatch_is_total() {
    // Every call number, argument and CPL gives a reply (no panic), and
    // CPL > 0 is always refused with nothing returned.
    for number in (0..8).chain([u64::MAX, 1 << 63, 1 << 32 | 1]) {
        for cpl in 0..4u64 {
            for arg in [0, 0x10, 0x13, 0xff, u64::MAX] {
                let mut v = vcpu();
                let ss = v.vmcs.get(Guest32::SsAccessRights);
                v.vmcs.set(Guest32::SsAccessRights, ss | (cpl << 5));
                let r = vmcall(&mut v, number, arg);
                if cpl != 0 {
                    assert_advanced(&v, r, 3);
                    assert_eq!(v.regs.rax(), Status::PermissionDenied.raw());
                    assert_eq!(v.regs.rdi(), arg);
                } else {
                    assert!(r.is_ok(), "{number:#x} {arg:#x}: {r:?}");
                }
            }
        }
    }
}

#[test]
fn policy_calls_are_unknown_without_the_policy_whatever_their_arguments() {
    // The decoder refuses each of these; a monitor without the policy
    // does not know the calls at all.
    let malformed = [
        (Call::RegisterRegion, [0x1001, 0, 99]),
        (Call::PinCr, [3, 0, 0]),
        (Call::DestroyContext, [0, 0, 0]),
        (Call::RegisterGate, [1 << 63, 8, 1]),
        (Call::UpdatePageTable, [0x1001, 0, 0]),
        (Call::RegisterPatchSites, [0, 0, 9]),
        (Call::AuditRead, [0, 0, 0]),
    ];
    for (call, args) in malformed {
        let mut v = vcpu();
        v.regs.set(Gpr::Rax, call.raw());
        v.regs.set(Gpr::Rdi, args[0]);
        v.regs.set(Gpr::Rsi, args[1]);
        v.regs.set(Gpr::Rdx, args[2]);
        let r = run(&mut v, ExitReason::Vmcall, 0, 3);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::UnknownCall.raw(), "{call:?}");
    }
    // Calls outside the policy keep their own answer.
    let mut v = vcpu();
    let r = vmcall(&mut v, Call::ExitCount.raw(), 1 << 20);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::InvalidArgument.raw());
}

#[test]
fn register_gate_refuses_an_untrusted_caller_before_its_arguments() {
    use super::policy::{call, enter, ok, pvcpu};
    let mut v = pvcpu();
    ok(&mut v, Call::CreateContext, [0; 3]);
    let text = 0xffff_ffff_8100_0000;
    let malformed = [[1 << 63, 0, 0], [text, 8, 0], [text, 0, 1 << 63]];
    for args in malformed {
        assert_eq!(
            call(&mut v, Call::RegisterGate, args),
            Status::InvalidArgument
        );
    }
    enter(&mut v, 1);
    for args in malformed {
        assert_eq!(
            call(&mut v, Call::RegisterGate, args),
            Status::PermissionDenied,
            "{args:x?}"
        );
    }
    // Any other call answers a malformed request alike in every context.
    assert_eq!(
        call(&mut v, Call::SetExecuteRule, [7, 0, 0]),
        Status::InvalidArgument
    );
    assert_eq!(
        call(&mut v, Call::RegisterRegion, [0x1000, 0, 1]),
        Status::Empty
    );
}

#[test]
fn a_32_bit_guest_passes_32_bit_arguments() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    run(&mut v, ExitReason::Cpuid, 0, 2).unwrap();
    v.vmcs.set(GuestNatural::Rip, RIP);
    // ExitCount(2^32 + CPUID): the upper half is not the guest's.
    let reason = 0xdead_beef_0000_0000 | ExitReason::Cpuid as u64;
    let r = vmcall(&mut v, Call::ExitCount.raw(), reason);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::Success.raw());
    assert_eq!((v.regs.rdi(), v.regs.rsi()), (1, 2));
    // The same in a 64-bit guest is out of range.
    let mut v = vcpu();
    let r = vmcall(&mut v, Call::ExitCount.raw(), reason);
    assert_advanced(&v, r, 3);
    assert_eq!(v.regs.rax(), Status::InvalidArgument.raw());
}

/// Runs only the hypercall layer on a VMCALL with RAX, RDI, RSI, RDX =
/// `regs`, and checks that it left RIP alone: moving past the VMCALL is
/// the exit layer's (issue 14 item 2).
fn answer<P: Policy, M: GuestMemory>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P, M>,
    regs: [u64; 4],
) -> Result<crate::hypercall::Vmcall, ExitError> {
    let [rax, rdi, rsi, rdx] = regs;
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, rax);
    v.regs.set(Gpr::Rdi, rdi);
    v.regs.set(Gpr::Rsi, rsi);
    v.regs.set(Gpr::Rdx, rdx);
    synth(v, ExitReason::Vmcall as u32, 0, 3);
    let answer = crate::hypercall::handle_vmcall(v);
    assert_eq!(rip(v), RIP, "the hypercall layer does not move RIP");
    answer
}

#[test]
fn a_hypercall_says_what_becomes_of_the_vmcall_and_the_exit_layer_moves_rip() {
    use super::policy::{PVcpu, TEXT, enter, lock_for_gates, ok, pvcpu};
    use crate::hypercall::Vmcall;
    let advance = Ok(Vmcall::Advance { mode: None });
    let mut v = vcpu();
    assert_eq!(answer(&mut v, [Call::Null.raw(), 0, 0, 0]), advance);
    assert_eq!(v.regs.rax(), Status::Success.raw());
    assert_eq!(answer(&mut v, [Call::Version.raw(), 0, 0, 0]), advance);
    assert_eq!(answer(&mut v, [99, 0, 0, 0]), advance);
    assert_eq!(v.regs.rax(), Status::UnknownCall.raw());
    let pass = u64::from(Outcome::Pass.code());
    assert_eq!(
        answer(&mut v, [Call::Exit.raw(), pass, 0, 0]),
        Ok(Vmcall::Stop(Outcome::Pass)),
        "the run ends at the VMCALL"
    );
    let ss = v.vmcs.get(Guest32::SsAccessRights);
    v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
    assert_eq!(answer(&mut v, [Call::Exit.raw(), pass, 0, 0]), advance);
    assert_eq!(v.regs.rax(), Status::PermissionDenied.raw());

    // The mode the call read (for an upper half) goes with the answer,
    // so that the advance does not read it again.
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    assert_eq!(
        answer(&mut v, [0xffff_ffff_0000_0001, 0, 0, 0]),
        Ok(Vmcall::Advance { mode: Some(false) })
    );

    // A switch from context 1 back to the trusted one resumes at the
    // gate: RIP is set there, and nothing advances it.
    let mut v = pvcpu();
    lock_for_gates(&mut v);
    let gate = TEXT + 0x123;
    let g = ok(&mut v, Call::RegisterGate, [gate, 0, 0]);
    ok(&mut v, Call::CreateContext, [0; 3]);
    let switch_back = |v: &mut PVcpu| {
        enter(v, 1);
        v.vmcs.set(GuestNatural::Rip, RIP);
        v.regs.set(Gpr::Rax, Call::SwitchContext.raw());
        v.regs.set(Gpr::Rdi, 0);
        v.regs.set(Gpr::Rsi, g);
        synth(v, ExitReason::Vmcall as u32, 0, 3);
    };
    switch_back(&mut v);
    assert_eq!(
        crate::hypercall::handle_vmcall(&mut v),
        Ok(Vmcall::Redirected)
    );
    assert_eq!((rip(&v), v.regs.rax(), v.regs.rdi()), (gate, 0, 1));
    // Through the exit layer, the same answer leaves RIP at the gate.
    switch_back(&mut v);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(rip(&v), gate, "not the gate + 3");
}
