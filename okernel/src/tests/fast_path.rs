//! The fast half of exit handling: what the exit stub relies on (which
//! registers a fast handler may touch) and that it decides exactly as the
//! full dispatch does.

use okernel_abi::hypercall::{Call, Status};

use super::*;
use crate::exit::{FastPath, handle_fast};
use crate::vcpu::hooks::SlowExit;
use crate::vmx::exit_reason::ExitReasonField;
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

/// Every register set to a distinct value.
fn marked() -> GuestRegisters {
    let mut r = GuestRegisters::default();
    for (i, g) in r.gpr.iter_mut().enumerate() {
        *g = 0x1111_0000 + i as u64;
    }
    r
}

/// RBX, RBP, R12–R15: the registers the stub does not store before the
/// fast half.
const CALLEE_SAVED: [Gpr; 6] = [Gpr::Rbx, Gpr::Rbp, Gpr::R12, Gpr::R13, Gpr::R14, Gpr::R15];

#[test]
fn the_null_hypercall_is_handled_fast_and_touches_only_rax() {
    let mut v = vcpu();
    v.regs = marked();
    v.regs.set(Gpr::Rax, Call::Null.raw());
    synth(&mut v, ExitReason::Vmcall as u32, 0, 3);
    let before = v.regs;
    assert_eq!(handle_fast(&mut v), FastPath::Resumed { wrote_rbx: false });
    assert_eq!(v.regs.rax(), Status::Success.raw());
    for r in (0..16).map(Gpr::from_index).filter(|&r| r != Gpr::Rax) {
        assert_eq!(v.regs.get(r), before.get(r), "{}", r.name());
    }
    assert_eq!(rip(&v), RIP + 3);
    assert_eq!(v.counters.get(ExitReason::Vmcall), 1);
}

#[test]
fn cpuid_is_handled_fast_and_says_it_wrote_rbx() {
    let mut v = vcpu();
    v.regs = marked();
    v.regs
        .set(Gpr::Rax, u64::from(okernel_abi::cpuid::LEAF_SIGNATURE));
    synth(&mut v, ExitReason::Cpuid as u32, 0, 2);
    let before = v.regs;
    assert_eq!(handle_fast(&mut v), FastPath::Resumed { wrote_rbx: true });
    for r in CALLEE_SAVED.iter().filter(|&&r| r != Gpr::Rbx) {
        assert_eq!(v.regs.get(*r), before.get(*r), "{}", r.name());
    }
    assert_eq!(rip(&v), RIP + 2);
    assert_eq!(v.counters.get(ExitReason::Cpuid), 1);
}

#[test]
fn other_calls_and_callers_go_slow_with_the_cpl_already_read() {
    for (number, cpl) in [
        (Call::Version.raw(), 0),
        (Call::Null.raw(), 3),
        (99, 0),
        (1 << 32 | 1, 0),
    ] {
        let mut v = vcpu();
        v.regs.set(Gpr::Rax, number);
        let ss = v.vmcs.get(Guest32::SsAccessRights);
        v.vmcs
            .set(Guest32::SsAccessRights, ss | (u64::from(cpl) << 5));
        synth(&mut v, ExitReason::Vmcall as u32, 0, 3);
        assert_eq!(
            handle_fast(&mut v),
            FastPath::Slow(SlowExit::Vmcall { cpl })
        );
        assert_eq!(rip(&v), RIP, "nothing done yet");
        assert_eq!(v.regs.rax(), number, "nothing done yet");
        assert_eq!(v.counters.get(ExitReason::Vmcall), 1, "counted once");
    }
}

#[test]
fn any_other_exit_reason_field_goes_slow_uncounted() {
    // Other reasons, and VMCALL/CPUID with the entry-failure bit or a
    // modifier bit (pending MTF, bit 28) set.
    for field in [ExitReason::Rdmsr as u32, 18 | 1 << 31, 10 | 1 << 28, 0xffff] {
        let mut v = vcpu();
        synth(&mut v, field, 0, 3);
        assert_eq!(
            handle_fast(&mut v),
            FastPath::Slow(SlowExit::Other(ExitReasonField(field)))
        );
        assert_eq!(v.counters.total(), 0);
    }
}

#[test]
fn a_fast_exit_with_a_bad_instruction_length_fails() {
    let mut v = vcpu();
    v.regs.set(Gpr::Rax, Call::Null.raw());
    synth(&mut v, ExitReason::Vmcall as u32, 0, 16);
    assert_eq!(
        handle_fast(&mut v),
        FastPath::Failed(ExitError::BadInstructionLength(16))
    );
    assert_eq!(rip(&v), RIP);
}

#[test]
fn a_fast_exit_far_up_reads_the_mode_and_checks_canonical() {
    // RIP above 2 GiB in 64-bit mode: advanced with the canonical check.
    let mut v = vcpu();
    v.regs.set(Gpr::Rax, Call::Null.raw());
    synth(&mut v, ExitReason::Vmcall as u32, 0, 3);
    v.vmcs.set(GuestNatural::Rip, 0xffff_ffff_8000_0000);
    assert_eq!(handle_fast(&mut v), FastPath::Resumed { wrote_rbx: false });
    assert_eq!(rip(&v), 0xffff_ffff_8000_0003);
    v.vmcs.set(GuestNatural::Rip, 0x0000_7fff_ffff_fffe);
    v.regs.set(Gpr::Rax, Call::Null.raw());
    // The next RIP is not canonical: the Null call completed, and the
    // guest takes #GP(0) at the VMCALL (issue 18), never a monitor stop.
    assert_eq!(handle_fast(&mut v), FastPath::Resumed { wrote_rbx: false });
    assert_eq!(rip(&v), 0x0000_7fff_ffff_fffe);
    assert_eq!(injected(&v), GP);
    assert_eq!(v.regs.get(Gpr::Rax), 0, "the call itself succeeded");
}
