//! MSRs whose state the guest shares with the monitor (issue 13, class
//! 5): VMX does not switch them between the guest and VMX root operation,
//! so a guest write changes the monitor's processor too. The base MSR
//! bitmap ([`crate::exit::msr_table::configure_base`], from
//! [`super::msr_table`]) makes their *writes* exit; their reads pass through, as on hardware (a Linux guest
//! reads the MTRRs, MISC_ENABLE, the TSC and XSS at boot), except
//! IA32_SMM_MONITOR_CTL, which is hidden.
//!
//! | MSR | write | why |
//! |-----|-------|-----|
//! | IA32_TSC (0x10) | refused: #GP + audit `msr-write` | the monitor's time base |
//! | IA32_TSC_ADJUST (0x3B) | the value it holds: skipped; any other: refused (#GP + audit); #GP where the processor lacks it (CPUID.7.0:EBX bit 1) | adds to the monitor's TSC too (SDM Vol. 3B §18.17.3) |
//! | IA32_SMM_MONITOR_CTL (0x9B) | read and write #GP, no audit | exists only with VMX or SMX (SDM Vol. 3C §33.15.5), both hidden (invariant 12) |
//! | IA32_MISC_ENABLE (0x1A0) | automatic thermal control (3) on or off, clearing "limit CPUID maxval" (22) or "XD bit disable" (34): written; the value it holds: skipped; any other change: refused (#GP + audit) | fast strings, XD disable (the monitor's NX), MONITOR/MWAIT |
//! | IA32_XSS (0xDA0) | written, but a reserved bit is #GP (as hardware) and PT (bit 8) or CET supervisor (bit 12) is refused (#GP + audit) | with them XRSTORS would load the Intel PT MSRs or PL0–2_SSP without a WRMSR exit |
//! | MTRRs (0x200–0x21F, 0x250, 0x258, 0x259, 0x268–0x26F, 0x2FF) | the value they hold: skipped (RIP advanced); any other: refused (#GP + audit); an MTRR the processor lacks: #GP | they set the memory types of the monitor's own accesses (SDM Vol. 3A §12.11); with EPT the guest's types come from the EPT and its PAT (Vol. 3C §29.3.7) |
//! | Intel PT, IA32_RTIT_* (0x560, 0x561, 0x570–0x572, 0x580–0x587) | refused (#GP + audit); #GP without audit where the processor has no PT | trace output goes to physical addresses the EPT does not check |
//!
//! Linux writes MTRR_DEF_TYPE around its cache set-up (disable, then the
//! same value back) with `wrmsr_safe`: the disable is refused and logged,
//! the restore is a no-op, the memory types stay as they were.

use crate::bits::{CPUID0D1_EAX_XSAVES, CPUID1_EDX_MTRR, CPUID7_EBX_PT, CPUID7_EBX_TSC_ADJUST};
use crate::hw::{Cpu, Vmcs};
use crate::msrs::{
    IA32_MISC_ENABLE, IA32_MTRR_DEF_TYPE, IA32_MTRRCAP, IA32_SMM_MONITOR_CTL, IA32_TSC,
    IA32_TSC_ADJUST, IA32_XSS,
};
use crate::policy::Policy;
use crate::policy::audit::AuditKind;
use crate::vcpu::memory::GuestMemory;
use crate::vcpu::{ExitAction, ExitError, Vcpu};
use crate::vmx::event::Exception;

/// The IA32_MISC_ENABLE bits a guest may clear: 22, limit CPUID maxval
/// (clearing unmasks CPUID leaves, as Linux does at boot), and 34, XD bit
/// disable (clearing makes NX available). Clearing either only gives the
/// processor back a feature; every other change is refused.
pub const MISC_ENABLE_CLEARABLE: u64 = (1 << 22) | (1 << 34);
/// IA32_MISC_ENABLE bit 3, automatic thermal control (TM1): a guest may
/// turn it on or off (Linux turns it on at boot); it throttles the clock,
/// and changes nothing the monitor relies on.
pub const MISC_ENABLE_TM1: u64 = 1 << 3;
/// XSS bit 8: Intel PT state.
pub const XSS_PT: u64 = 1 << 8;
/// XSS bit 12: CET supervisor state (PL0–2_SSP).
pub const XSS_CET_S: u64 = 1 << 12;

/// The variable-range MTRR pairs (0x200..=0x21F, up to 16 pairs).
const MTRR_VARIABLE: core::ops::RangeInclusive<u32> = 0x200..=0x21f;
/// The fixed-range MTRRs.
const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];
/// The Intel PT MSRs.
const RTIT: [u32; 13] = [
    0x560, 0x561, 0x570, 0x571, 0x572, 0x580, 0x581, 0x582, 0x583, 0x584, 0x585, 0x586, 0x587,
];

/// Every MSR whose write this module judges (the base bitmap intercepts
/// them).
pub fn write_intercepted() -> impl Iterator<Item = u32> {
    [
        IA32_TSC,
        IA32_TSC_ADJUST,
        IA32_SMM_MONITOR_CTL,
        IA32_MISC_ENABLE,
        IA32_XSS,
        IA32_MTRR_DEF_TYPE,
    ]
    .into_iter()
    .chain(MTRR_VARIABLE)
    .chain(MTRR_FIXED)
    .chain(RTIT)
}

/// Whether this module judges a write of `index`.
pub fn judges(index: u32) -> bool {
    write_intercepted().any(|m| m == index)
}

/// What happens to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Performed by the monitor.
    Write,
    /// A no-op: the MSR already holds the value.
    Skip,
    /// #GP, as the processor would raise it.
    Fault,
    /// Refused by the policy: #GP and an audit record.
    Deny,
}

/// Whether the MTRR `index` exists (SDM Vol. 3A §12.11.1): CPUID.1:EDX
/// bit 12, then IA32_MTRRCAP's variable-range count (bits 7:0) and
/// fixed-range support (bit 8).
fn mtrr_exists<C: Cpu>(cpu: &C, index: u32) -> bool {
    if cpu.cpuid(1, 0).edx & CPUID1_EDX_MTRR == 0 {
        return false;
    }
    let cap = cpu.read_msr(IA32_MTRRCAP);
    match index {
        IA32_MTRR_DEF_TYPE => true,
        i if MTRR_VARIABLE.contains(&i) => u64::from((i - 0x200) / 2) < cap & 0xff,
        _ => cap & (1 << 8) != 0,
    }
}

/// Judges WRMSR(`index`, `value`) of an MSR of this module.
pub fn judge<C: Cpu>(cpu: &C, index: u32, value: u64) -> Verdict {
    match index {
        IA32_SMM_MONITOR_CTL => Verdict::Fault,
        IA32_TSC => Verdict::Deny,
        IA32_TSC_ADJUST => {
            // CPUID.(EAX=07H,ECX=0):EBX[1]: IA32_TSC_ADJUST exists.
            if cpu.cpuid(7, 0).ebx & CPUID7_EBX_TSC_ADJUST == 0 {
                Verdict::Fault
            } else if cpu.read_msr(IA32_TSC_ADJUST) == value {
                Verdict::Skip
            } else {
                Verdict::Deny
            }
        }
        IA32_MISC_ENABLE => {
            let current = cpu.read_msr(IA32_MISC_ENABLE);
            let cleared = current & !value & !MISC_ENABLE_TM1;
            let set = value & !current & !MISC_ENABLE_TM1;
            if set != 0 || cleared & !MISC_ENABLE_CLEARABLE != 0 {
                Verdict::Deny
            } else if value == current {
                Verdict::Skip
            } else {
                Verdict::Write
            }
        }
        IA32_XSS => {
            let leaf = cpu.cpuid(0xd, 1);
            if leaf.eax & CPUID0D1_EAX_XSAVES == 0 {
                // No XSAVES: no IA32_XSS.
                return Verdict::Fault;
            }
            let supported = u64::from(leaf.ecx) | u64::from(leaf.edx) << 32;
            if value & !supported != 0 {
                Verdict::Fault
            } else if value & (XSS_PT | XSS_CET_S) != 0 {
                Verdict::Deny
            } else {
                Verdict::Write
            }
        }
        i if RTIT.contains(&i) => {
            // CPUID.(EAX=07H,ECX=0):EBX[25]: Intel PT.
            if cpu.cpuid(7, 0).ebx & CPUID7_EBX_PT == 0 {
                Verdict::Fault
            } else {
                Verdict::Deny
            }
        }
        i if !mtrr_exists(cpu, i) => Verdict::Fault,
        i if cpu.read_msr(i) == value => Verdict::Skip,
        _ => Verdict::Deny,
    }
}

/// Handles an intercepted WRMSR of an MSR of this module.
pub fn handle_write<V: Vmcs, C: Cpu, P: Policy, M: GuestMemory>(
    vcpu: &mut Vcpu<V, C, P, M>,
    index: u32,
    value: u64,
) -> Result<ExitAction, ExitError> {
    match judge(&vcpu.cpu, index, value) {
        Verdict::Write => {
            vcpu.cpu.write_msr(index, value);
            vcpu.advance_rip()
        }
        Verdict::Skip => vcpu.advance_rip(),
        Verdict::Fault => vcpu.inject(Exception::GeneralProtection, 0),
        Verdict::Deny => vcpu.deny_write(AuditKind::MsrLock, index.into(), None, value),
    }
}
