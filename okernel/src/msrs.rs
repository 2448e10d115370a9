//! Every MSR number the monitor names, defined once (SDM Vol. 4,
//! Chapter 2, "Model-Specific Registers (MSRs)"; the VMX capability MSRs:
//! Vol. 3D Appendix A).

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_SYSENTER_CS.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_DEBUGCTL.
pub const IA32_DEBUGCTL: u32 = 0x1d9;
/// IA32_PAT.
pub const IA32_PAT: u32 = 0x277;
/// IA32_VMX_BASIC: the first VMX capability MSR.
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS.
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS.
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS.
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS.
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_MISC.
pub const IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0.
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1.
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0.
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1.
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM.
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
/// IA32_VMX_PROCBASED_CTLS2.
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// IA32_VMX_EPT_VPID_CAP.
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
/// IA32_VMX_TRUE_PINBASED_CTLS.
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
/// IA32_VMX_TRUE_PROCBASED_CTLS.
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
/// IA32_VMX_TRUE_EXIT_CTLS.
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
/// IA32_VMX_TRUE_ENTRY_CTLS.
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_VMX_VMFUNC.
pub const IA32_VMX_VMFUNC: u32 = 0x491;
/// IA32_VMX_PROCBASED_CTLS3.
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// IA32_VMX_EXIT_CTLS2: the last VMX capability MSR.
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;
/// IA32_EFER.
pub const IA32_EFER: u32 = 0xc000_0080;
/// IA32_FS_BASE.
pub const IA32_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE.
pub const IA32_GS_BASE: u32 = 0xc000_0101;

/// Whether `msr` is one of the VMX capability MSRs (0x480..=0x493),
/// which the guest must not see (invariant 12).
pub const fn is_vmx_capability(msr: u32) -> bool {
    msr >= IA32_VMX_BASIC && msr <= IA32_VMX_EXIT_CTLS2
}

/// IA32_STAR.
pub const IA32_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR.
pub const IA32_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK.
pub const IA32_FMASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE.
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC.
pub const IA32_TSC: u32 = 0x10;
/// IA32_TSC_ADJUST.
pub const IA32_TSC_ADJUST: u32 = 0x3b;
/// IA32_SMM_MONITOR_CTL.
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9b;
/// IA32_MTRRCAP (read-only).
pub const IA32_MTRRCAP: u32 = 0xfe;
/// IA32_MISC_ENABLE.
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MTRR_DEF_TYPE.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
/// IA32_XSS.
pub const IA32_XSS: u32 = 0xda0;
/// IA32_APIC_BASE.
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_ARCH_CAPABILITIES (read-only).
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
/// IA32_TSC_DEADLINE.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;

/// IA32_U_CET: user-mode CET configuration, the first CET MSR (SDM Vol. 1,
/// "Control-Flow Enforcement Technology (CET)"; Vol. 4 Table 2-2).
pub const IA32_U_CET: u32 = 0x6a0;
/// IA32_S_CET: supervisor-mode CET configuration.
pub const IA32_S_CET: u32 = 0x6a2;
/// IA32_PL0_SSP: the ring-0 shadow-stack pointer.
pub const IA32_PL0_SSP: u32 = 0x6a4;
/// IA32_PL1_SSP.
pub const IA32_PL1_SSP: u32 = 0x6a5;
/// IA32_PL2_SSP.
pub const IA32_PL2_SSP: u32 = 0x6a6;
/// IA32_PL3_SSP.
pub const IA32_PL3_SSP: u32 = 0x6a7;
/// IA32_INTERRUPT_SSP_TABLE_ADDR: the last CET MSR.
pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6a8;

/// The first MSR of the x2APIC register range 0x800..=0x8FF (SDM Vol. 3A
/// §11.12.1.2 "x2APIC Register Address Space").
pub const X2APIC_FIRST: u32 = 0x800;
/// The last MSR of the x2APIC register range.
pub const X2APIC_LAST: u32 = 0x8ff;
/// IA32_X2APIC_APICID: this processor's x2APIC ID (read-only).
pub const IA32_X2APIC_APICID: u32 = 0x802;
/// IA32_X2APIC_TPR: task priority (SDM Vol. 3A §11.12.1.2, "Local APIC
/// Register Address Map Supported by x2APIC"; Vol. 4 Table 2-2).
pub const IA32_X2APIC_TPR: u32 = 0x808;
/// IA32_X2APIC_EOI: end of interrupt.
pub const IA32_X2APIC_EOI: u32 = 0x80b;
/// IA32_X2APIC_ICR: interrupt command.
pub const IA32_X2APIC_ICR: u32 = 0x830;
/// IA32_X2APIC_SELF_IPI.
pub const IA32_X2APIC_SELF_IPI: u32 = 0x83f;

/// Whether `msr` is in the x2APIC register range (0x800..=0x8FF).
pub const fn is_x2apic(msr: u32) -> bool {
    msr >= X2APIC_FIRST && msr <= X2APIC_LAST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_are_the_sdms() {
        assert_eq!(
            [
                IA32_TSC,
                IA32_APIC_BASE,
                IA32_FEATURE_CONTROL,
                IA32_TSC_ADJUST,
                IA32_SMM_MONITOR_CTL,
                IA32_MTRRCAP,
                IA32_ARCH_CAPABILITIES,
                IA32_SYSENTER_CS,
                IA32_SYSENTER_ESP,
                IA32_SYSENTER_EIP,
                IA32_MISC_ENABLE,
                IA32_DEBUGCTL,
                IA32_PAT,
                IA32_MTRR_DEF_TYPE,
                IA32_TSC_DEADLINE,
                IA32_XSS,
            ],
            [
                0x10, 0x1b, 0x3a, 0x3b, 0x9b, 0xfe, 0x10a, 0x174, 0x175, 0x176, 0x1a0, 0x1d9,
                0x277, 0x2ff, 0x6e0, 0xda0
            ]
        );
        let vmx = [
            IA32_VMX_BASIC,
            IA32_VMX_PINBASED_CTLS,
            IA32_VMX_PROCBASED_CTLS,
            IA32_VMX_EXIT_CTLS,
            IA32_VMX_ENTRY_CTLS,
            IA32_VMX_MISC,
            IA32_VMX_CR0_FIXED0,
            IA32_VMX_CR0_FIXED1,
            IA32_VMX_CR4_FIXED0,
            IA32_VMX_CR4_FIXED1,
            IA32_VMX_VMCS_ENUM,
            IA32_VMX_PROCBASED_CTLS2,
            IA32_VMX_EPT_VPID_CAP,
            IA32_VMX_TRUE_PINBASED_CTLS,
            IA32_VMX_TRUE_PROCBASED_CTLS,
            IA32_VMX_TRUE_EXIT_CTLS,
            IA32_VMX_TRUE_ENTRY_CTLS,
            IA32_VMX_VMFUNC,
            IA32_VMX_PROCBASED_CTLS3,
            IA32_VMX_EXIT_CTLS2,
        ];
        assert!(vmx.iter().copied().eq(0x480..=0x493));
        assert_eq!(
            [
                IA32_U_CET,
                IA32_S_CET,
                IA32_PL0_SSP,
                IA32_PL1_SSP,
                IA32_PL2_SSP,
                IA32_PL3_SSP,
                IA32_INTERRUPT_SSP_TABLE_ADDR
            ],
            [0x6a0, 0x6a2, 0x6a4, 0x6a5, 0x6a6, 0x6a7, 0x6a8]
        );
        assert_eq!(
            [
                X2APIC_FIRST,
                IA32_X2APIC_TPR,
                IA32_X2APIC_EOI,
                IA32_X2APIC_ICR,
                IA32_X2APIC_SELF_IPI,
                X2APIC_LAST
            ],
            [0x800, 0x808, 0x80b, 0x830, 0x83f, 0x8ff]
        );
        assert_eq!(
            [
                IA32_EFER,
                IA32_STAR,
                IA32_LSTAR,
                IA32_CSTAR,
                IA32_FMASK,
                IA32_FS_BASE,
                IA32_GS_BASE,
                IA32_KERNEL_GS_BASE
            ],
            [
                0xc000_0080,
                0xc000_0081,
                0xc000_0082,
                0xc000_0083,
                0xc000_0084,
                0xc000_0100,
                0xc000_0101,
                0xc000_0102
            ]
        );
        assert!(is_x2apic(0x800) && is_x2apic(0x8ff));
        assert!(!is_x2apic(0x7ff) && !is_x2apic(0x900));
    }
}
