//! RDMSR and WRMSR exits. The base MSR bitmap
//! ([`crate::exit::msr_table::configure_base`]) is default deny: it is
//! built from [`super::msr_table::TABLE`], which classifies every MSR, and
//! every MSR the table does not pass through exits (so do MSRs outside
//! the bitmap ranges, SDM Vol. 3C §26.1.3). This module applies the
//! table to the exits:
//!
//! | MSR                         | RDMSR                                  | WRMSR          |
//! |-----------------------------|----------------------------------------|----------------|
//! | IA32_FEATURE_CONTROL (0x3A) | emulated: locked, VMX and SENTER bits clear | #GP (locked)   |
//! | 0x480..=0x493 (VMX caps), IA32_SMM_MONITOR_CTL (0x9B) | #GP (as without VMX)  | #GP            |
//! | LSTAR, CSTAR, STAR, SFMASK, KERNEL_GS_BASE | passed through | passed through until locked (`LockMsr`); if it exits: policy hook, canonical check, then written |
//! | SYSENTER_CS/ESP/EIP         | passed through                         | as above, into the VMCS guest field |
//! | IA32_APIC_BASE, x2APIC 0x800..=0x8FF | passed through | [`super::apic`]: relocation and non-fixed IPIs refused + audit |
//! | IA32_TSC, TSC_ADJUST, MISC_ENABLE, XSS, MTRRs, IA32_RTIT_* | passed through | [`super::msr_shared`]: changes refused + audit (XSS: PT and CET-supervisor bits) |
//! | read-only MSRs of the table (PLATFORM_ID, MTRRCAP, APERF/MPERF, ...) | passed through | #GP + audit `msr-write` |
//! | every MSR the table does not list | #GP (no audit: as on a processor without it) | #GP + audit `msr-write` |
//! | a locked MSR (LockMsr)      | n/a                                    | its locked value: skipped; any other: #GP + audit |
//!
//! The monitor executes RDMSR/WRMSR of a guest-chosen index only after a
//! handler has validated it, so a guest cannot make the monitor itself
//! fault on an MSR the processor lacks.

use super::msr_table::{self, Write};
use super::{apic, msr_shared};
use crate::bits::EFER_LMA;
use crate::hw::{Cpu, Vmcs};
use crate::msrs;
use crate::msrs::{
    IA32_APIC_BASE, IA32_CSTAR, IA32_EFER, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_LSTAR, IA32_STAR,
    X2APIC_FIRST, X2APIC_LAST,
};
use crate::policy::audit::AuditKind;
use crate::policy::{Decision, Policy};
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::capability::feature_control;
use crate::vmx::event::Exception;
use crate::vmx::fields::{Guest32, GuestNatural};
use crate::vmx::regs::Gpr;

/// The value the guest reads from IA32_FEATURE_CONTROL: locked, with VMX
/// (inside and outside SMX) and the SENTER enables clear — what firmware
/// leaves on a machine whose VMX is disabled.
pub const fn hidden_feature_control(real: u64) -> u64 {
    (real
        & !(feature_control::VMX_INSIDE_SMX
            | feature_control::VMX_OUTSIDE_SMX
            | feature_control::SENTER_ENABLES))
        | feature_control::LOCK
}

const fn is_canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Handles an RDMSR exit.
pub fn handle_rdmsr<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let index = vcpu.regs.rcx() as u32;
    let value = match index {
        msrs::IA32_FEATURE_CONTROL => hidden_feature_control(vcpu.cpu.read_msr(index)),
        _ => return vcpu.inject(Exception::GeneralProtection, 0),
    };
    vcpu.regs.set(Gpr::Rax, value & 0xffff_ffff);
    vcpu.regs.set(Gpr::Rdx, value >> 32);
    vcpu.advance_rip()
}

/// Handles a WRMSR exit.
pub fn handle_wrmsr<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
) -> Result<ExitAction, ExitError> {
    let index = vcpu.regs.rcx() as u32;
    let value = (vcpu.regs.rdx() << 32) | (vcpu.regs.rax() & 0xffff_ffff);
    if let Some(locked) = vcpu.policy.locked_msr(index) {
        // A locked MSR (invariant 5): the value it is locked at is a no-op
        // (EFER.LMA, which the processor maintains, is not compared);
        // anything else is denied.
        let ignore = if index == IA32_EFER { EFER_LMA } else { 0 };
        if (value ^ locked) & !ignore == 0 {
            return vcpu.advance_rip();
        }
        return vcpu.deny_write(AuditKind::MsrLock, index.into(), None, value);
    }
    let target = match index {
        IA32_APIC_BASE | X2APIC_FIRST..=X2APIC_LAST => {
            return apic::handle_write(vcpu, index, value);
        }
        i if msr_shared::judges(i) => return msr_shared::handle_write(vcpu, index, value),
        IA32_STAR => Target::Msr,
        IA32_FMASK if value >> 32 == 0 => Target::Msr,
        IA32_LSTAR | IA32_CSTAR | IA32_KERNEL_GS_BASE if is_canonical(value) => Target::Msr,
        msrs::IA32_SYSENTER_CS if value >> 32 == 0 => Target::Guest32(Guest32::SysenterCs),
        msrs::IA32_SYSENTER_ESP if is_canonical(value) => {
            Target::GuestNatural(GuestNatural::SysenterEsp)
        }
        msrs::IA32_SYSENTER_EIP if is_canonical(value) => {
            Target::GuestNatural(GuestNatural::SysenterEip)
        }
        // The rest follows the table: hidden or read-only MSRs fault as
        // on a processor without them; a denied or unlisted MSR is
        // refused and audited (default deny).
        _ => {
            return match msr_table::classify(index).1 {
                Write::Deny => vcpu.deny_write(AuditKind::MsrLock, index.into(), None, value),
                _ => vcpu.inject(Exception::GeneralProtection, 0),
            };
        }
    };
    if vcpu.policy.msr_write(index, value) == Decision::Deny {
        return vcpu.deny_write(AuditKind::MsrLock, index.into(), None, value);
    }
    match target {
        Target::Msr => vcpu.cpu.write_msr(index, value),
        Target::Guest32(f) => vcpu.vmcs.write(f, value as u32)?,
        Target::GuestNatural(f) => vcpu.vmcs.write(f, value)?,
    }
    vcpu.advance_rip()
}

/// Where an allowed intercepted write goes.
enum Target {
    /// The real MSR (not switched by VM entry/exit).
    Msr,
    /// A 32-bit guest-state field.
    Guest32(Guest32),
    /// A natural-width guest-state field.
    GuestNatural(GuestNatural),
}
