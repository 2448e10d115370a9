//! Issue 13, class 5: writes of the MSRs whose state the guest shares with
//! the monitor (TSC, MISC_ENABLE, XSS, MTRRs, Intel PT) and the hidden
//! IA32_SMM_MONITOR_CTL, through the fake VMCS. Reads of all but the last
//! pass through (the bitmap test in `vmx::msr_bitmap`).

use super::exits_cpuid_msr::wrmsr;
use super::*;
use crate::hw::CpuidResult;
use crate::msrs::{
    IA32_MISC_ENABLE, IA32_MTRR_DEF_TYPE, IA32_MTRRCAP, IA32_SMM_MONITOR_CTL, IA32_TSC,
    IA32_TSC_ADJUST, IA32_XSS,
};
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::regs::Gpr;

/// CPUID.1:EDX.MTRR, 8 variable MTRRs and the fixed ones; XSAVES with
/// XSS bits 8 (PT), 11, 12 supported; no Intel PT.
fn vcpu_with_msrs() -> Vcpu<FakeVmcs, FakeCpu, BasePolicy> {
    let mut v = vcpu();
    let leaf1 = v.cpu.cpuid_for_tests(1);
    v.cpu
        .set_cpuid(
            1,
            0,
            CpuidResult {
                edx: leaf1.edx | (1 << 12),
                ..leaf1
            },
        )
        .set_cpuid(
            0xd,
            1,
            CpuidResult {
                eax: 1 << 3,
                ebx: 0,
                ecx: (1 << 8) | (1 << 11) | (1 << 12),
                edx: 0,
            },
        )
        .set_msr(IA32_MTRRCAP, 0x508)
        .set_msr(IA32_MTRR_DEF_TYPE, 0xc06)
        .set_msr(0x200, 0x6)
        .set_msr(0x250, 0x0606_0606_0606_0606)
        .set_msr(IA32_XSS, 0)
        .set_msr(IA32_MISC_ENABLE, MISC);
    v
}

fn denied(v: &Vcpu<FakeVmcs, FakeCpu, BasePolicy>, r: Result<ExitAction, ExitError>, msr: u32) {
    assert_injected(v, r, GP);
    let rec = v.audit.last().expect("audited");
    assert_eq!(
        (rec.kind, rec.gpa, rec.action),
        (AuditKind::MsrLock, u64::from(msr), AuditAction::InjectGp)
    );
    assert_eq!(v.cpu.msr_writes, 0, "nothing written");
}

/// MISC_ENABLE as the test processor holds it: fast strings, limit
/// CPUID, XD disable.
const MISC: u64 = 1 | (1 << 22) | (1 << 34);

#[test]
fn tsc_and_misc_enable_changes_are_refused_and_audited() {
    // A TSC write; MISC_ENABLE: MONITOR/MWAIT set, fast strings cleared.
    for (msr, value) in [
        (IA32_TSC, 0),
        (IA32_TSC, 1 << 40),
        (IA32_MISC_ENABLE, MISC | (1 << 18)),
        (IA32_MISC_ENABLE, MISC & !1),
    ] {
        let mut v = vcpu_with_msrs();
        let r = wrmsr(&mut v, msr, value);
        denied(&v, r, msr);
    }
}

#[test]
fn misc_enable_may_unmask_cpuid_and_nx() {
    // Linux clears "limit CPUID maxval" at boot (and XD disable where
    // firmware set it): written; the same value: a no-op.
    // Linux also turns automatic thermal control (TM1, bit 3) on.
    for value in [MISC & !(1 << 22), MISC & !(1 << 34), 1, MISC | 8, 9] {
        let mut v = vcpu_with_msrs();
        let r = wrmsr(&mut v, IA32_MISC_ENABLE, value);
        assert_advanced(&v, r, 2);
        assert_eq!(v.cpu.read_msr_for_tests(IA32_MISC_ENABLE), value);
        assert_eq!(v.audit.total(), 0);
    }
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, IA32_MISC_ENABLE, MISC);
    assert_advanced(&v, r, 2);
    assert_eq!(v.cpu.msr_writes, 0);
}

#[test]
fn smm_monitor_ctl_is_hidden_like_vmx() {
    let mut v = vcpu_with_msrs();
    v.regs.set(Gpr::Rcx, IA32_SMM_MONITOR_CTL.into());
    let r = run(&mut v, ExitReason::Rdmsr, 0, 2);
    assert_injected(&v, r, GP);
    let r = wrmsr(&mut v, IA32_SMM_MONITOR_CTL, 1);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 0, "what the processor itself raises");
}

#[test]
fn mtrrs_keep_their_values() {
    // The value an MTRR holds: a no-op (Linux's restore after its
    // disable); any other: refused.
    for (msr, same) in [
        (IA32_MTRR_DEF_TYPE, 0xc06),
        (0x200, 0x6),
        (0x250, 0x0606_0606_0606_0606),
    ] {
        let mut v = vcpu_with_msrs();
        let r = wrmsr(&mut v, msr, same);
        assert_advanced(&v, r, 2);
        assert_eq!((v.cpu.msr_writes, v.audit.total()), (0, 0));
        let mut v = vcpu_with_msrs();
        let r = wrmsr(&mut v, msr, same ^ 0x800);
        denied(&v, r, msr);
    }
    // Variable pair 8 does not exist (MTRRCAP.VCNT = 8): #GP, no audit,
    // and the monitor never reads it.
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, 0x210, 0);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn xss_refuses_the_state_that_would_load_intercepted_msrs() {
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, IA32_XSS, 1 << 11);
    assert_advanced(&v, r, 2);
    assert_eq!(
        v.cpu.read_msr_for_tests(IA32_XSS),
        1 << 11,
        "CET user state: written"
    );
    for bit in [8, 12] {
        let mut v = vcpu_with_msrs();
        let r = wrmsr(&mut v, IA32_XSS, 1 << bit);
        denied(&v, r, IA32_XSS);
    }
    // Unsupported bits: #GP as the processor raises it, no audit.
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, IA32_XSS, 1 << 0);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 0);
}

#[test]
fn intel_pt_msrs_are_refused_or_absent() {
    // The fake has no Intel PT: #GP without audit, as the hardware.
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, 0x570, 1);
    assert_injected(&v, r, GP);
    assert_eq!(v.audit.total(), 0);
    // With PT (CPUID.7.0:EBX[25]): refused and audited.
    for msr in [0x560, 0x561, 0x570, 0x571, 0x572, 0x580, 0x587] {
        let mut v = vcpu_with_msrs();
        let l7 = v.cpu.cpuid_for_tests(7);
        v.cpu.set_cpuid(
            7,
            0,
            CpuidResult {
                ebx: l7.ebx | (1 << 25),
                ..l7
            },
        );
        let r = wrmsr(&mut v, msr, 0x2001);
        denied(&v, r, msr);
    }
}

#[test]
fn tsc_adjust_keeps_its_value_and_is_absent_without_cpuid() {
    // No CPUID.7.0:EBX[1]: the processor has no TSC_ADJUST, #GP unaudited.
    let mut v = vcpu_with_msrs();
    let r = wrmsr(&mut v, IA32_TSC_ADJUST, 5);
    assert_injected(&v, r, GP);
    assert!(v.audit.is_empty());
    let mut v = vcpu_with_msrs();
    v.cpu
        .set_cpuid(
            7,
            0,
            CpuidResult {
                ebx: 1 << 1,
                ..CpuidResult::default()
            },
        )
        .set_msr(IA32_TSC_ADJUST, 0);
    // Its own value (Linux's tsc_sync writes it back): a no-op.
    let r = wrmsr(&mut v, IA32_TSC_ADJUST, 0);
    assert_advanced(&v, r, 2);
    assert_eq!(v.cpu.msr_writes, 0);
    // Anything else would move the monitor's TSC too.
    v.vmcs.set(GuestNatural::Rip, RIP);
    let r = wrmsr(&mut v, IA32_TSC_ADJUST, 1 << 32);
    denied(&v, r, IA32_TSC_ADJUST);
}
