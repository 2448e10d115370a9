//! XSETBV, cache flushes, GETSEC, guest VMX instructions, fatal and
//! malformed exits, RIP advance, counters.

use super::*;
use crate::bits::{CR0_PE, CR4_OSXSAVE};
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

fn xsetbv(
    v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>,
    xcr: u32,
    value: u64,
) -> Result<ExitAction, ExitError> {
    let cr4 = v.vmcs.get(GuestNatural::Cr4);
    v.vmcs.set(GuestNatural::Cr4, cr4 | CR4_OSXSAVE);
    v.regs.set(Gpr::Rcx, xcr.into());
    v.regs.set(Gpr::Rax, value & 0xffff_ffff);
    v.regs.set(Gpr::Rdx, value >> 32);
    run(v, ExitReason::Xsetbv, 0, 3)
}

#[test]
fn xsetbv_valid_value_is_executed() {
    let mut v = vcpu();
    let r = xsetbv(&mut v, 0, 0x7);
    assert_advanced(&v, r, 3);
    assert_eq!(v.cpu.xcr0, 0x7);
}

#[test]
fn xsetbv_invalid_values_raise_gp() {
    // Supported by the fake: x87, SSE, AVX (0x7).
    for (xcr, value) in [(0, 0x6), (0, 0x5), (0, 0xf), (1, 0x3), (0, 1 << 40)] {
        let mut v = vcpu();
        let r = xsetbv(&mut v, xcr, value);
        assert_injected(&v, r, GP);
        assert_eq!(v.cpu.xcr0, 1, "XCR0 unchanged");
    }
}

#[test]
fn xsetbv_rules_match_the_sdm() {
    use crate::exit::xsetbv::validate_xcr0;
    let all = (1 << 19) - 1;
    assert!(validate_xcr0(0x3, all).is_ok());
    assert!(validate_xcr0(0x1f, all).is_ok());
    assert!(validate_xcr0(0xe7, all).is_ok());
    assert!(validate_xcr0(0x27, all).is_err(), "partial AVX-512");
    assert!(validate_xcr0(0xe3, all).is_err(), "AVX-512 without AVX");
    assert!(validate_xcr0(0xb, all).is_err(), "BNDREGS without BNDCSR");
    assert!(
        validate_xcr0(0x2_0003, all).is_err(),
        "XTILECFG without XTILEDATA"
    );
    assert!(validate_xcr0(0x6_0003, all).is_ok());
}

#[test]
fn xsetbv_at_cpl3_raises_gp_and_without_osxsave_ud() {
    let mut v = vcpu();
    let ss = v.vmcs.get(Guest32::SsAccessRights);
    v.vmcs.set(Guest32::SsAccessRights, ss | (3 << 5));
    let r = xsetbv(&mut v, 0, 0x3);
    assert_injected(&v, r, GP);
    let mut v = vcpu();
    v.regs.set(Gpr::Rcx, 0);
    v.regs.set(Gpr::Rax, 3);
    let r = run(&mut v, ExitReason::Xsetbv, 0, 3); // guest CR4.OSXSAVE clear
    assert_injected(&v, r, UD);
}

#[test]
fn invd_and_wbinvd_write_back_and_continue() {
    for reason in [ExitReason::Invd, ExitReason::Wbinvd] {
        let mut v = vcpu();
        let r = run(&mut v, reason, 0, 2);
        assert_advanced(&v, r, 2);
        assert_eq!(v.cpu.wbinvds, 1);
    }
}

#[test]
fn getsec_and_every_vmx_instruction_raise_ud() {
    use ExitReason as R;
    for reason in [
        R::Getsec,
        R::Vmxon,
        R::Vmclear,
        R::Vmlaunch,
        R::Vmptrld,
        R::Vmptrst,
        R::Vmread,
        R::Vmresume,
        R::Vmwrite,
        R::Vmxoff,
        R::Invept,
        R::Invvpid,
        R::Vmfunc,
    ] {
        let mut v = vcpu();
        let r = run(&mut v, reason, 0, 4);
        assert_injected(&v, r, UD);
        assert_eq!(v.counters.get(reason), 1, "{}", reason.name());
    }
}

#[test]
fn injection_in_real_mode_drops_the_error_code() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    let cr0 = v.vmcs.get(GuestNatural::Cr0);
    v.vmcs.set(GuestNatural::Cr0, cr0 & !CR0_PE);
    v.regs.set(Gpr::Rcx, msrs::IA32_VMX_BASIC.into());
    let r = run(&mut v, ExitReason::Rdmsr, 0, 2);
    assert_injected(&v, r, 0x8000_030d);
}

#[test]
fn bad_instruction_lengths_are_errors_not_wrapped_rips() {
    for len in [0, 16, 0xffff_ffff] {
        let mut v = vcpu();
        let r = run(&mut v, ExitReason::Cpuid, 0, len);
        assert_eq!(r, Err(ExitError::BadInstructionLength(len)));
        assert_eq!(rip(&v), RIP, "RIP untouched");
    }
}

#[test]
fn rip_wraps_at_4_gib_outside_64_bit_mode() {
    let mut entry = entry64();
    entry.mode = GuestMode::Protected32;
    let mut v = vcpu_with(BasePolicy, entry);
    v.vmcs.set(GuestNatural::Rip, 0xffff_ffff);
    synth(&mut v, ExitReason::Wbinvd as u32, 0, 2);
    assert_eq!(handle_exit(&mut v), Ok(ExitAction::Resume));
    assert_eq!(rip(&v), 1);
}

#[test]
fn rip_advance_clears_sti_and_mov_ss_blocking() {
    let mut v = vcpu();
    v.vmcs.set(Guest32::InterruptibilityState, 0b1011);
    let r = run(&mut v, ExitReason::Wbinvd, 0, 2);
    assert_advanced(&v, r, 2);
    assert_eq!(v.vmcs.get(Guest32::InterruptibilityState), 0b1000);
}

#[test]
fn unknown_exit_reasons_are_reported() {
    for raw in [35u32, 42, 71, 80, 0xffff] {
        let mut v = vcpu();
        synth(&mut v, raw, 0, 1);
        assert_eq!(handle_exit(&mut v), Err(ExitError::UnknownReason(raw)));
    }
    let mut v = vcpu();
    synth(&mut v, 0xffff, 0, 1);
    let _ = handle_exit(&mut v);
    assert_eq!(v.counters.other(), 1);
}

#[test]
fn entry_failures_decode_the_qualification() {
    let mut v = vcpu();
    synth(&mut v, 0x8000_0021, 4, 0);
    let e = handle_exit(&mut v).unwrap_err();
    assert_eq!(
        e,
        ExitError::EntryFailure {
            reason: "invalid guest state",
            qualification: 4,
            meaning: "invalid VMCS link pointer"
        }
    );
    assert_eq!(
        e.to_string(),
        "VM-entry failure: invalid guest state (qualification 0x4: invalid VMCS link pointer)"
    );
    let mut v = vcpu();
    synth(&mut v, 0x8000_0022, 2, 0);
    assert!(matches!(
        handle_exit(&mut v),
        Err(ExitError::EntryFailure {
            reason: "MSR loading",
            qualification: 2,
            ..
        })
    ));
    let mut v = vcpu();
    synth(&mut v, 0x8000_0029, 0, 0);
    assert!(matches!(
        handle_exit(&mut v),
        Err(ExitError::EntryFailure {
            reason: "machine-check event",
            ..
        })
    ));
}

#[test]
fn guest_state_dump_reads_only_defined_fields() {
    // Every field the dump reads exists (the fake refuses undefined ones).
    let v = vcpu();
    assert_eq!(crate::exit::fatal::log_guest_state(&v), 0);
}
