//! CPUID, RDMSR and WRMSR exits.

use super::*;
use crate::bits::CR4_OSXSAVE;
use crate::hw::CpuidResult;
use crate::policy::audit::{AuditAction, AuditKind};
use crate::vmx::fields::Guest32;
use crate::vmx::regs::Gpr;

fn cpuid(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>, leaf: u32, sub: u32) -> (u64, u64, u64, u64) {
    v.regs
        .set(Gpr::Rax, 0xdead_0000_0000_0000 | u64::from(leaf));
    v.regs.set(Gpr::Rcx, u64::from(sub));
    v.regs.set(Gpr::Rbx, u64::MAX);
    v.regs.set(Gpr::Rdx, u64::MAX);
    let r = run(v, ExitReason::Cpuid, 0, 2);
    assert_eq!(r, Ok(ExitAction::Resume));
    (
        v.regs.rax(),
        v.regs.get(Gpr::Rbx),
        v.regs.rcx(),
        v.regs.rdx(),
    )
}

#[test]
fn cpuid_hides_vmx_and_smx_and_reports_a_hypervisor() {
    let mut v = vcpu();
    let mut leaf1 = v.cpu.cpuid_for_tests(1);
    leaf1.ecx |= (1 << 5) | (1 << 6);
    v.cpu.set_cpuid(1, 0, leaf1);
    let (eax, _, ecx, _) = cpuid(&mut v, 1, 0);
    assert_eq!(
        eax,
        u64::from(leaf1.eax),
        "upper RAX bits cleared, leaf passed through"
    );
    assert_eq!(ecx & (1 << 5), 0, "VMX hidden");
    assert_eq!(ecx & (1 << 6), 0, "SMX hidden");
    assert_ne!(ecx & (1 << 31), 0, "hypervisor present");
    assert_ne!(ecx & (1 << 26), 0, "XSAVE passed through");
    assert_eq!(rip(&v), RIP + 2);
}

#[test]
fn cpuid_osxsave_follows_the_guest_cr4() {
    let mut v = vcpu();
    let mut leaf1 = v.cpu.cpuid_for_tests(1);
    leaf1.ecx |= 1 << 27; // the host's OSXSAVE
    v.cpu.set_cpuid(1, 0, leaf1);
    let (_, _, ecx, _) = cpuid(&mut v, 1, 0);
    assert_eq!(ecx & (1 << 27), 0, "guest CR4.OSXSAVE is clear");
    let cr4 = v.vmcs.get(GuestNatural::Cr4);
    v.vmcs.set(GuestNatural::Cr4, cr4 | CR4_OSXSAVE);
    let (_, _, ecx, _) = cpuid(&mut v, 1, 0);
    assert_ne!(ecx & (1 << 27), 0);
}

#[test]
fn cpuid_okernel_signature_and_version_leaves() {
    let mut v = vcpu();
    let (eax, ebx, ecx, edx) = cpuid(&mut v, 0x4000_0000, 0);
    assert_eq!(eax, u64::from(okernel_abi::cpuid::LEAF_MAX));
    assert!(okernel_abi::cpuid::is_signature(
        ebx as u32, ecx as u32, edx as u32
    ));
    let (eax, ebx, ecx, edx) = cpuid(&mut v, 0x4000_0001, 0);
    assert_eq!(eax, u64::from(okernel_abi::ABI_VERSION.packed()));
    assert_eq!((ebx, ecx, edx), (0, 0, 0));
    // The rest of the hypervisor range reads as zero, whatever the host says.
    v.cpu.set_cpuid(
        0x4000_0010,
        0,
        CpuidResult {
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        },
    );
    assert_eq!(cpuid(&mut v, 0x4000_0010, 0), (0, 0, 0, 0));
}

#[test]
fn cpuid_passes_other_leaves_through() {
    let mut v = vcpu();
    v.cpu.set_cpuid(
        7,
        0,
        CpuidResult {
            eax: 0,
            ebx: 0x1234,
            ecx: 1 << 4,
            edx: 0,
        },
    );
    let (_, ebx, ecx, _) = cpuid(&mut v, 7, 0);
    assert_eq!(ebx, 0x1234);
    assert_eq!(ecx & (1 << 4), 0, "OSPKE follows the guest CR4.PKE (clear)");
}

fn rdmsr(v: &mut Vcpu<FakeVmcs, FakeCpu, BasePolicy>, index: u32) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rcx, index.into());
    run(v, ExitReason::Rdmsr, 0, 2)
}

#[test]
fn feature_control_reads_locked_with_vmx_off() {
    let mut v = vcpu();
    v.cpu.set_msr(msrs::IA32_FEATURE_CONTROL, 0xff07);
    let r = rdmsr(&mut v, msrs::IA32_FEATURE_CONTROL);
    assert_advanced(&v, r, 2);
    assert_eq!(v.regs.rax(), 1, "lock only: VMX and SENTER bits cleared");
    assert_eq!(v.regs.rdx(), 0);
}

#[test]
fn vmx_capability_msrs_raise_gp() {
    for m in [
        msrs::IA32_VMX_BASIC,
        msrs::IA32_VMX_PINBASED_CTLS,
        msrs::IA32_VMX_PROCBASED_CTLS2,
        msrs::IA32_VMX_EPT_VPID_CAP,
        msrs::IA32_VMX_VMFUNC,
    ] {
        let mut v = vcpu();
        let r = rdmsr(&mut v, m);
        assert_injected(&v, r, GP);
    }
}

#[test]
fn msrs_outside_the_bitmap_ranges_raise_gp() {
    let mut v = vcpu();
    let r = rdmsr(&mut v, 0x4000_0000);
    assert_injected(&v, r, GP);
}

pub(super) fn wrmsr<P: Policy>(
    v: &mut Vcpu<FakeVmcs, FakeCpu, P>,
    index: u32,
    value: u64,
) -> Result<ExitAction, ExitError> {
    v.regs.set(Gpr::Rcx, index.into());
    v.regs
        .set(Gpr::Rax, 0xffff_ffff_0000_0000 | (value & 0xffff_ffff));
    v.regs.set(Gpr::Rdx, value >> 32);
    run(v, ExitReason::Wrmsr, 0, 2)
}

#[test]
fn writes_to_hidden_msrs_raise_gp_and_change_nothing() {
    for m in [
        msrs::IA32_FEATURE_CONTROL,
        msrs::IA32_VMX_BASIC,
        msrs::IA32_VMX_TRUE_PINBASED_CTLS,
        0x1_0000,
    ] {
        let mut v = vcpu();
        let r = wrmsr(&mut v, m, 0);
        assert_injected(&v, r, GP);
        assert_eq!(v.cpu.msr_writes, 0);
    }
}

#[test]
fn intercepted_syscall_msrs_are_written_when_allowed_and_canonical() {
    let mut v = vcpu();
    v.cpu.set_msr(msrs::IA32_LSTAR, 0);
    let r = wrmsr(&mut v, msrs::IA32_LSTAR, 0xffff_8000_0010_0000);
    assert_advanced(&v, r, 2);
    assert_eq!(
        v.cpu.read_msr_for_tests(msrs::IA32_LSTAR),
        0xffff_8000_0010_0000
    );
    // Non-canonical: #GP, as WRMSR would raise.
    let mut v = vcpu();
    v.cpu.set_msr(msrs::IA32_LSTAR, 0);
    let r = wrmsr(&mut v, msrs::IA32_LSTAR, 0x8000_0000_0000_0000);
    assert_injected(&v, r, GP);
    assert_eq!(v.cpu.msr_writes, 0);
}

#[test]
fn sysenter_writes_go_to_the_vmcs_guest_fields() {
    let mut v = vcpu();
    let r = wrmsr(&mut v, msrs::IA32_SYSENTER_CS, 0x10);
    assert_advanced(&v, r, 2);
    assert_eq!(v.vmcs.get(Guest32::SysenterCs), 0x10);
    assert_eq!(v.cpu.msr_writes, 0);
}

#[test]
fn policy_denied_msr_write_is_audited() {
    let mut v = vcpu_with(DenyAll, entry64());
    v.cpu.set_msr(msrs::IA32_LSTAR, 0);
    let r = wrmsr(&mut v, msrs::IA32_LSTAR, 0xffff_8000_0000_0000);
    assert_injected(&v, r, GP);
    let rec = v.audit.last().copied().unwrap();
    assert_eq!(rec.kind, AuditKind::MsrLock);
    assert_eq!(rec.gpa, u64::from(msrs::IA32_LSTAR));
    assert_eq!(rec.qualification, 0xffff_8000_0000_0000);
    assert_eq!(rec.context, 7);
    assert_eq!(rec.action, AuditAction::InjectGp);
    assert_eq!(v.cpu.msr_writes, 0);
}
