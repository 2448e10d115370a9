//! VM fuzzing, the monitor's side (`fuzz` feature): the BASELINE and CHECK
//! calls against the protection policy over the fake VMCS (each verdict,
//! each refusal, the report's bytes) and the coverage the exits leave.
//! Without the feature, the two numbers must be unknown calls.

#[cfg(feature = "fuzz")]
mod checks;
#[cfg(feature = "fuzz")]
mod coverage;
#[cfg(feature = "fuzz")]
mod incremental;
#[cfg(feature = "fuzz")]
mod mirror;

use okernel_abi::fuzz::{CALL_BASELINE, CALL_CHECK};
use okernel_abi::hypercall::Status;

use super::policy::*;
use super::*;
use crate::hw::phys::PhysMemory;
use crate::vmx::regs::Gpr;

/// The guest page reports are written to (ordinary RAM).
pub const REPORT: u64 = DATA + 0x2000;

/// A guest write to `gpa` that the view denies.
#[cfg(feature = "fuzz")]
pub fn ept_write(v: &mut PVcpu, gpa: u64) {
    v.vmcs.set(GuestNatural::Rip, RIP);
    synth(
        v,
        ExitReason::EptViolation as u32,
        0b010 | (1 << 7) | (1 << 8),
        0,
    );
    v.vmcs
        .set(crate::vmx::fields::ReadOnly64::GuestPhysicalAddress, gpa);
    let r = handle_exit(v);
    assert_injected(v, r, GP);
}

/// Makes hypercall `number` with RDI = `rdi`; returns its status.
pub fn raw_call(v: &mut PVcpu, number: u64, rdi: u64) -> Status {
    v.vmcs.set(GuestNatural::Rip, RIP);
    v.regs.set(Gpr::Rax, number);
    v.regs.set(Gpr::Rdi, rdi);
    assert_eq!(run(v, ExitReason::Vmcall, 0, 3), Ok(ExitAction::Resume));
    assert_eq!(rip(v), RIP + 3, "every fuzz call resumes after the VMCALL");
    Status::from_raw(v.regs.rax()).expect("a defined status")
}

#[cfg(not(feature = "fuzz"))]
#[test]
fn without_the_feature_the_fuzz_calls_are_unknown() {
    let mut v = pvcpu();
    for number in [CALL_BASELINE, CALL_CHECK] {
        assert_eq!(raw_call(&mut v, number, REPORT), Status::UnknownCall);
        assert_eq!(v.regs.rdi(), REPORT, "nothing returned");
    }
    let mut page = [0u8; 16];
    v.memory.phys().copy(crate::memmap::Hpa(REPORT), &mut page);
    assert_eq!(page, [0; 16], "no report written");
}

#[cfg(feature = "fuzz")]
#[test]
fn with_the_feature_but_no_policy_the_fuzz_calls_are_unknown() {
    let mut v = vcpu();
    for number in [CALL_BASELINE, CALL_CHECK] {
        v.vmcs.set(GuestNatural::Rip, RIP);
        v.regs.set(Gpr::Rax, number);
        v.regs.set(Gpr::Rdi, REPORT);
        let r = run(&mut v, ExitReason::Vmcall, 0, 3);
        assert_advanced(&v, r, 3);
        assert_eq!(v.regs.rax(), Status::UnknownCall.raw());
    }
}
