//! The MSR policy: every MSR index in one table (issue 13, "default-deny
//! MSR policy"). The base MSR bitmap ([`configure_base`])
//! is built from [`TABLE`] alone: it starts with every bit set (every
//! RDMSR and WRMSR exits) and clears only the bits of the accesses a row
//! passes through. MSRs outside 0..=0x1FFF and 0xC000_0000..=0xC000_1FFF
//! always exit (SDM Vol. 3C §25.6.9, §26.1.3), so their rows can only be
//! emulated, mediated or refused.
//!
//! What an access gets ([`Read`], [`Write`]):
//! - **pass**: the bitmap bit is clear; the processor performs the access
//!   in VMX non-root operation and raises any #GP itself (an MSR the
//!   processor lacks faults in the guest, never in the monitor). Only for
//!   MSRs that are hot on a kernel's paths *and* harmless to the monitor:
//!   switched by VM entry/exit, or state the monitor never uses.
//! - **lockable**: passed through until the kernel locks it (`LockMsr`,
//!   `hypercall::locks`); from then on its writes exit and only the locked
//!   value is accepted (invariant 5).
//! - **mediated**: the write exits to a handler that validates it
//!   ([`super::apic`], [`super::msr_shared`]).
//! - **emulated**: the read exits and the monitor answers
//!   (IA32_FEATURE_CONTROL: VMX off and locked).
//! - **fault**: the access exits and the guest gets #GP, as on a processor
//!   without the MSR (hidden features: VMX, SMM monitor; read-only MSRs).
//! - **deny**: the write exits and is refused: #GP and an audit record
//!   `msr-write` (what a kernel exploit would try).
//!
//! Everything not in the table: the read faults (#GP, no audit: as on a
//! processor without the MSR; a kernel probes MSRs with `rdmsr_safe`), the
//! write is denied (#GP + audit). The monitor never executes RDMSR or WRMSR
//! of an index the guest chose unless a row's handler validated it, so a
//! guest cannot make the monitor fault on an MSR its processor lacks.

/// What a RDMSR of the MSR gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Passed through: no exit.
    Pass,
    /// Exits; the monitor answers ([`super::msr::handle_rdmsr`]).
    Emulated,
    /// Exits; #GP, no audit.
    Fault,
}

/// Which handler judges a mediated write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mediator {
    /// [`super::apic`]: IA32_APIC_BASE and the x2APIC MSRs.
    Apic,
    /// [`super::msr_shared`]: state the guest shares with the monitor.
    Shared,
}

/// What a WRMSR of the MSR gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Passed through: no exit.
    Pass,
    /// Passed through until locked (`LockMsr`), then exits: only the
    /// locked value is accepted.
    Lockable,
    /// Exits to the handler that validates it.
    Mediated(Mediator),
    /// Exits; #GP, no audit.
    Fault,
    /// Exits; #GP and an audit record `msr-write`.
    Deny,
}

/// One row: the MSRs `first..=last`, what reads and writes get, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// First index.
    pub first: u32,
    /// Last index (inclusive).
    pub last: u32,
    /// Reads.
    pub read: Read,
    /// Writes.
    pub write: Write,
    /// The name and the reason.
    pub why: &'static str,
}

const fn row(first: u32, last: u32, read: Read, write: Write, why: &'static str) -> Row {
    Row {
        first,
        last,
        read,
        write,
        why,
    }
}

use crate::msrs::{
    IA32_APIC_BASE, IA32_ARCH_CAPABILITIES, IA32_DEBUGCTL, IA32_EFER, IA32_FEATURE_CONTROL,
    IA32_FMASK, IA32_FS_BASE, IA32_GS_BASE, IA32_INTERRUPT_SSP_TABLE_ADDR, IA32_KERNEL_GS_BASE,
    IA32_MISC_ENABLE, IA32_MTRR_DEF_TYPE, IA32_MTRRCAP, IA32_PAT, IA32_PL0_SSP, IA32_S_CET,
    IA32_SMM_MONITOR_CTL, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_TSC,
    IA32_TSC_ADJUST, IA32_TSC_DEADLINE, IA32_VMX_BASIC, IA32_VMX_EXIT_CTLS2, IA32_XSS,
    X2APIC_FIRST, X2APIC_LAST,
};
use Mediator::{Apic, Shared};
use Read::{Emulated, Fault as RFault, Pass as RPass};
use Write::{Deny, Fault as WFault, Lockable, Mediated, Pass as WPass};

/// Every classified MSR, sorted by index, no overlaps (checked by the
/// tests). `docs/policy.md` ("MSR policy") is this table in prose.
pub const TABLE: &[Row] = &[
    row(
        IA32_TSC,
        IA32_TSC,
        RPass,
        Mediated(Shared),
        "IA32_TSC: the time base; reads hot, writes would move the monitor's clock",
    ),
    row(
        0x17,
        0x17,
        RPass,
        Deny,
        "IA32_PLATFORM_ID: read-only, read by the microcode driver",
    ),
    row(
        IA32_APIC_BASE,
        IA32_APIC_BASE,
        RPass,
        Mediated(Apic),
        "IA32_APIC_BASE: relocating the APIC page over monitor memory is refused",
    ),
    row(
        IA32_FEATURE_CONTROL,
        IA32_FEATURE_CONTROL,
        Emulated,
        WFault,
        "IA32_FEATURE_CONTROL: reads as locked with VMX off (invariant 12)",
    ),
    row(
        IA32_TSC_ADJUST,
        IA32_TSC_ADJUST,
        RPass,
        Mediated(Shared),
        "IA32_TSC_ADJUST: moves the monitor's TSC too; only its own value is accepted",
    ),
    row(
        0x48,
        0x49,
        RPass,
        WPass,
        "IA32_SPEC_CTRL, IA32_PRED_CMD: written per task (speculation controls only)",
    ),
    row(
        0x8b,
        0x8b,
        RPass,
        WPass,
        "IA32_BIOS_SIGN_ID: the microcode-revision protocol (write 0, CPUID, read)",
    ),
    row(
        IA32_SMM_MONITOR_CTL,
        IA32_SMM_MONITOR_CTL,
        RFault,
        WFault,
        "IA32_SMM_MONITOR_CTL: exists only with VMX or SMX, both hidden",
    ),
    row(0xce, 0xce, RPass, Deny, "MSR_PLATFORM_INFO: read-only"),
    row(
        0xe7,
        0xe8,
        RPass,
        Deny,
        "IA32_MPERF, IA32_APERF: read on every scheduler tick; writes refused",
    ),
    row(
        IA32_MTRRCAP,
        IA32_MTRRCAP,
        RPass,
        Deny,
        "IA32_MTRRCAP: read-only",
    ),
    row(
        IA32_ARCH_CAPABILITIES,
        IA32_ARCH_CAPABILITIES,
        RPass,
        Deny,
        "IA32_ARCH_CAPABILITIES: read-only",
    ),
    row(
        0x10b,
        0x10b,
        RPass,
        WPass,
        "IA32_FLUSH_CMD: L1D flush command, written on VM-entry-like paths",
    ),
    row(
        IA32_SYSENTER_CS,
        IA32_SYSENTER_EIP,
        RPass,
        Lockable,
        "IA32_SYSENTER_CS/ESP/EIP: switched by VM entry/exit; lockable",
    ),
    row(
        0x179,
        0x17b,
        RPass,
        WPass,
        "IA32_MCG_CAP/STATUS/CTL: machine-check reporting (a fault here is fatal to Linux; #MC is out of scope)",
    ),
    row(
        0x19b,
        0x19c,
        RPass,
        WPass,
        "IA32_THERM_INTERRUPT/STATUS: the guest's thermal LVT interrupt and its log bits",
    ),
    row(
        IA32_MISC_ENABLE,
        IA32_MISC_ENABLE,
        RPass,
        Mediated(Shared),
        "IA32_MISC_ENABLE: fast strings, XD disable, MWAIT are the monitor's too",
    ),
    row(
        0x1a2,
        0x1a2,
        RPass,
        Deny,
        "MSR_TEMPERATURE_TARGET: read-only",
    ),
    row(
        0x1b0,
        0x1b2,
        RPass,
        WPass,
        "IA32_ENERGY_PERF_BIAS, IA32_PACKAGE_THERM_STATUS/INTERRUPT: a power hint and thermal reporting",
    ),
    row(
        IA32_DEBUGCTL,
        IA32_DEBUGCTL,
        RPass,
        WPass,
        "IA32_DEBUGCTL: saved and loaded by VM exit/entry (cleared on exit)",
    ),
    row(
        0x200,
        0x21f,
        RPass,
        Mediated(Shared),
        "variable-range MTRRs: the monitor's memory types",
    ),
    row(
        0x250,
        0x250,
        RPass,
        Mediated(Shared),
        "fixed-range MTRR 64K",
    ),
    row(
        0x258,
        0x259,
        RPass,
        Mediated(Shared),
        "fixed-range MTRRs 16K",
    ),
    row(
        0x268,
        0x26f,
        RPass,
        Mediated(Shared),
        "fixed-range MTRRs 4K",
    ),
    row(
        IA32_PAT,
        IA32_PAT,
        RPass,
        Lockable,
        "IA32_PAT: switched by VM entry/exit; lockable",
    ),
    row(
        0x280,
        0x29f,
        RPass,
        WPass,
        "IA32_MCi_CTL2: machine-check bank controls (CMCI)",
    ),
    row(
        IA32_MTRR_DEF_TYPE,
        IA32_MTRR_DEF_TYPE,
        RPass,
        Mediated(Shared),
        "IA32_MTRR_DEF_TYPE: the monitor's default memory type",
    ),
    row(
        0x400,
        0x47f,
        RPass,
        WPass,
        "IA32_MCi_CTL/STATUS/ADDR/MISC: machine-check banks (Linux's MCE code panics on a fault)",
    ),
    row(
        IA32_VMX_BASIC,
        IA32_VMX_EXIT_CTLS2,
        RFault,
        WFault,
        "IA32_VMX_*: VMX capability MSRs, hidden (invariant 12)",
    ),
    row(
        0x4d0,
        0x4d0,
        RPass,
        WPass,
        "IA32_MCG_EXT_CTL: local machine-check enable",
    ),
    row(
        0x560,
        0x561,
        RPass,
        Mediated(Shared),
        "IA32_RTIT_OUTPUT_BASE/MASK_PTRS: Intel PT output is not checked by EPT",
    ),
    row(
        0x570,
        0x572,
        RPass,
        Mediated(Shared),
        "IA32_RTIT_CTL/STATUS/ADDR0: Intel PT",
    ),
    row(
        0x580,
        0x587,
        RPass,
        Mediated(Shared),
        "IA32_RTIT_ADDRn_A/B: Intel PT",
    ),
    row(
        IA32_S_CET,
        IA32_S_CET,
        RPass,
        Lockable,
        "IA32_S_CET: lockable where the processor has CET",
    ),
    row(
        IA32_PL0_SSP,
        IA32_INTERRUPT_SSP_TABLE_ADDR,
        RPass,
        Lockable,
        "IA32_PL0..3_SSP, INTERRUPT_SSP_TABLE_ADDR: lockable with CET",
    ),
    row(
        IA32_TSC_DEADLINE,
        IA32_TSC_DEADLINE,
        RPass,
        WPass,
        "IA32_TSC_DEADLINE: the guest's APIC timer, written on every timer event",
    ),
    row(
        X2APIC_FIRST,
        X2APIC_LAST,
        RPass,
        Mediated(Apic),
        "x2APIC registers: INIT/SIPI/SMI/NMI IPIs and unmediated registers refused",
    ),
    row(
        IA32_XSS,
        IA32_XSS,
        RPass,
        Mediated(Shared),
        "IA32_XSS: PT and CET-supervisor state refused",
    ),
    row(
        IA32_EFER,
        IA32_EFER,
        RPass,
        Lockable,
        "IA32_EFER: switched by VM entry/exit; lockable",
    ),
    row(
        IA32_STAR,
        IA32_FMASK,
        RPass,
        Lockable,
        "IA32_STAR/LSTAR/CSTAR/FMASK: the monitor uses no SYSCALL; lockable",
    ),
    row(
        IA32_FS_BASE,
        IA32_GS_BASE,
        RPass,
        WPass,
        "IA32_FS_BASE, IA32_GS_BASE: switched by VM entry/exit; hot",
    ),
    row(
        IA32_KERNEL_GS_BASE,
        IA32_KERNEL_GS_BASE,
        RPass,
        WPass,
        "IA32_KERNEL_GS_BASE: the monitor uses no SWAPGS; hot",
    ),
    row(
        0xc000_0103,
        0xc000_0103,
        RPass,
        WPass,
        "IA32_TSC_AUX: RDTSCP/RDPID's value; the monitor reads it never",
    ),
];

/// The row of `index`, if it is listed.
pub fn lookup(index: u32) -> Option<&'static Row> {
    TABLE.iter().find(|r| (r.first..=r.last).contains(&index))
}

/// What reads and writes of `index` get; unlisted MSRs: read
/// [`Read::Fault`], write [`Write::Deny`].
pub fn classify(index: u32) -> (Read, Write) {
    lookup(index).map_or((Read::Fault, Write::Deny), |r| (r.read, r.write))
}

/// The okernel base MSR bitmap (SDM Vol. 3C §25.6.9): default deny. Every bit is set (every
/// RDMSR and WRMSR in the bitmap ranges exits) except those of the
/// accesses [`TABLE`] passes through
/// ([`Read::Pass`], [`Write::Pass`], and [`Write::Lockable`] until the policy locks the
/// MSR). An MSR the table does not list always exits.
pub fn configure_base(page: &mut [u8; 4096]) {
    use crate::vmx::msr_bitmap::{MsrAccess, MsrBitmap};
    page.fill(0xff);
    let mut b = MsrBitmap::wrap(page);
    for row in TABLE {
        for m in row.first..=row.last {
            if row.read == Read::Pass {
                b.pass(m, MsrAccess::Read);
            }
            if matches!(row.write, Write::Pass | Write::Lockable) {
                b.pass(m, MsrAccess::Write);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::msr_bitmap::{MsrAccess, MsrBitmap};

    #[test]
    fn base_bitmap_is_default_deny() {
        let mut page = [0u8; 4096];
        configure_base(&mut page);
        let b = MsrBitmap::wrap(&mut page);
        // Unlisted MSRs in both ranges exit both ways.
        for m in [
            0x0,
            0x11,
            0x33,
            0x79,
            0x140,
            0x600,
            0x7ff,
            0x900,
            0x1fff,
            0xc000_0085,
            0xc000_1fff,
        ] {
            assert!(b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Hidden.
        for m in [0x3a, 0x480, 0x48c, 0x491, 0x493, 0x9b] {
            assert!(b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Read passes, write mediated.
        for m in [
            0x10, 0x1b, 0x800, 0x830, 0x8ff, 0x1a0, 0xda0, 0x200, 0x2ff, 0x560, 0x587,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Hot and harmless, or lockable (passed until locked).
        for m in [
            0x48,
            0x1d9,
            0x277,
            0x6e0,
            0xc000_0080,
            0xc000_0082,
            0xc000_0100,
            0xc000_0102,
        ] {
            assert!(!b.exits(m, MsrAccess::Read), "{m:#x}");
            assert!(!b.exits(m, MsrAccess::Write), "{m:#x}");
        }
        // Outside the ranges: always exits.
        assert!(b.exits(0x4000_0000, MsrAccess::Read));
        assert!(b.exits(0x2000, MsrAccess::Write));
    }
}
