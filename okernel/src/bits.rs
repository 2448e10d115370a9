//! The architectural bits of CR0, CR3, CR4, IA32_EFER, RFLAGS,
//! IA32_APIC_BASE and IA32_DEBUGCTL the monitor tests and sets, each
//! defined once, as the `x86_64` crate names them where it has them
//! (SDM Vol. 3A §2.5 "Control Registers", §2.2.1 "Extended Feature
//! Enable Register"; Vol. 1 §3.4.3 "EFLAGS Register"). Plain `u64`
//! constants: the VMCS fields and the exit handlers work on raw values.
//! Then the CPUID feature bits the monitor tests, as `u32` (SDM Vol. 2A,
//! CPUID).

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::{ApicBaseFlags, EferFlags};
use x86_64::registers::rflags::RFlags;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = Cr0Flags::PROTECTED_MODE_ENABLE.bits();
/// CR0.MP: monitor coprocessor.
pub const CR0_MP: u64 = Cr0Flags::MONITOR_COPROCESSOR.bits();
/// CR0.TS: task switched.
pub const CR0_TS: u64 = Cr0Flags::TASK_SWITCHED.bits();
/// CR0.ET: extension type (always 1 on modern processors).
pub const CR0_ET: u64 = Cr0Flags::EXTENSION_TYPE.bits();
/// CR0.NE: native x87 error reporting.
pub const CR0_NE: u64 = Cr0Flags::NUMERIC_ERROR.bits();
/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = Cr0Flags::WRITE_PROTECT.bits();
/// CR0.AM: alignment checking at CPL 3 with RFLAGS.AC.
pub const CR0_AM: u64 = Cr0Flags::ALIGNMENT_MASK.bits();
/// CR0.NW: not write-through.
pub const CR0_NW: u64 = Cr0Flags::NOT_WRITE_THROUGH.bits();
/// CR0.CD: cache disable.
pub const CR0_CD: u64 = Cr0Flags::CACHE_DISABLE.bits();
/// CR0.PG: paging.
pub const CR0_PG: u64 = Cr0Flags::PAGING.bits();

/// CR3.LAM_U57 (bit 61): linear-address masking of user pointers, bits
/// 62:57 (SDM Vol. 3A §4.4 "Linear-Address Pre-Processing", §2.5; Intel
/// ISE "Linear Address Masking"; not in the `x86_64` crate).
pub const CR3_LAM_U57: u64 = 1 << 61;
/// CR3.LAM_U48 (bit 62): linear-address masking of user pointers, bits
/// 62:48 (SDM Vol. 3A §4.4; not in the `x86_64` crate).
pub const CR3_LAM_U48: u64 = 1 << 62;

/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = Cr4Flags::PAGE_SIZE_EXTENSION.bits();
/// CR4.PAE: physical-address extension.
pub const CR4_PAE: u64 = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = Cr4Flags::PAGE_GLOBAL.bits();
/// CR4.UMIP: user-mode instruction prevention.
pub const CR4_UMIP: u64 = Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION.bits();
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = Cr4Flags::L5_PAGING.bits();
/// CR4.VMXE: VMX enable.
pub const CR4_VMXE: u64 = Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits();
/// CR4.SMXE: SMX enable.
pub const CR4_SMXE: u64 = Cr4Flags::SAFER_MODE_EXTENSIONS.bits();
/// CR4.FSGSBASE: RDFSBASE and friends.
pub const CR4_FSGSBASE: u64 = Cr4Flags::FSGSBASE.bits();
/// CR4.PCIDE: process-context identifiers.
pub const CR4_PCIDE: u64 = Cr4Flags::PCID.bits();
/// CR4.OSXSAVE: XSAVE and XSETBV enabled.
pub const CR4_OSXSAVE: u64 = Cr4Flags::OSXSAVE.bits();
/// CR4.SMEP: supervisor-mode execution prevention.
pub const CR4_SMEP: u64 = Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits();
/// CR4.SMAP: supervisor-mode access prevention.
pub const CR4_SMAP: u64 = Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits();
/// CR4.PKE: protection keys for user pages.
pub const CR4_PKE: u64 = Cr4Flags::PROTECTION_KEY_USER.bits();
/// CR4.CET: control-flow enforcement.
pub const CR4_CET: u64 = Cr4Flags::CONTROL_FLOW_ENFORCEMENT.bits();
/// CR4.LAM_SUP (bit 28): linear-address masking of supervisor pointers
/// (SDM Vol. 3A §2.5, §4.4 "Linear-Address Pre-Processing"; not in the
/// `x86_64` crate).
pub const CR4_LAM_SUP: u64 = 1 << 28;

/// IA32_EFER.SCE: SYSCALL/SYSRET enable.
pub const EFER_SCE: u64 = EferFlags::SYSTEM_CALL_EXTENSIONS.bits();
/// IA32_EFER.LME: IA-32e mode enable.
pub const EFER_LME: u64 = EferFlags::LONG_MODE_ENABLE.bits();
/// IA32_EFER.LMA: IA-32e mode active (maintained by the processor).
pub const EFER_LMA: u64 = EferFlags::LONG_MODE_ACTIVE.bits();
/// IA32_EFER.NXE: execute-disable bit enable.
pub const EFER_NXE: u64 = EferFlags::NO_EXECUTE_ENABLE.bits();

/// RFLAGS.TF: single step.
pub const RFLAGS_TF: u64 = RFlags::TRAP_FLAG.bits();
/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = RFlags::INTERRUPT_FLAG.bits();
/// RFLAGS.DF: string direction.
pub const RFLAGS_DF: u64 = RFlags::DIRECTION_FLAG.bits();
/// RFLAGS.IOPL (two bits).
pub const RFLAGS_IOPL: u64 = RFlags::IOPL_LOW.bits() | RFlags::IOPL_HIGH.bits();
/// RFLAGS.NT: nested task.
pub const RFLAGS_NT: u64 = RFlags::NESTED_TASK.bits();
/// RFLAGS.RF: resume flag.
pub const RFLAGS_RF: u64 = RFlags::RESUME_FLAG.bits();
/// RFLAGS.VM: virtual-8086 mode.
pub const RFLAGS_VM: u64 = RFlags::VIRTUAL_8086_MODE.bits();
/// RFLAGS.AC: alignment check / SMAP override.
pub const RFLAGS_AC: u64 = RFlags::ALIGNMENT_CHECK.bits();

/// IA32_APIC_BASE.BSP: this processor is the bootstrap processor (SDM
/// Vol. 3A §11.4.4 "Local APIC Status and Location").
pub const APIC_BASE_BSP: u64 = ApicBaseFlags::BSP.bits();
/// IA32_APIC_BASE.EXTD: x2APIC mode (SDM Vol. 3A §11.12.1 "Detecting and
/// Enabling x2APIC Mode").
pub const APIC_BASE_EXTD: u64 = ApicBaseFlags::X2APIC_ENABLE.bits();
/// IA32_APIC_BASE.EN: the APIC is globally enabled (SDM Vol. 3A §11.4.4).
pub const APIC_BASE_EN: u64 = ApicBaseFlags::LAPIC_ENABLE.bits();
/// IA32_APIC_BASE bits 51:12: the APIC page's physical address (SDM Vol.
/// 3A §11.4.4; bits at and above MAXPHYADDR are reserved and compared
/// like the others).
pub const APIC_BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// IA32_DEBUGCTL.BTF: RFLAGS.TF traps on branches only (SDM Vol. 3B
/// §18.4.1 "IA32_DEBUGCTL MSR", §18.4.3 "Single-Stepping on Branches";
/// not in the `x86_64` crate).
pub const DEBUGCTL_BTF: u64 = 1 << 1;

/// Pending debug exceptions BS (bit 14): a single-step trap is pending
/// (SDM Vol. 3C §25.4.2, Table 25-4); the exit qualification of a #DB
/// exit has BS at the same bit (Vol. 3C Table 28-1).
pub const PENDING_BS: u64 = 1 << 14;

// CPUID feature bits (`u32`: the width of the register CPUID returns
// them in), from SDM Vol. 2A, CPUID—CPU Identification: Table 3-8
// "Information Returned by CPUID Instruction" (leaves 07H, 0DH and
// 80000001H), Table 3-10 "Feature Information Returned in the ECX
// Register" and Table 3-11 "More on Feature Information Returned in the
// EDX Register" (leaf 01H). Named `CPUID<leaf>_<register>_<feature>`,
// the leaf in hex as the SDM writes it, with the sub-leaf after it where
// it is not 0 (`CPUID0D1_`: leaf 0DH, sub-leaf 1). Not in the `x86_64`
// crate.

/// CPUID.01H:ECX.VMX\[bit 5\]: virtual-machine extensions (Table 3-10).
pub const CPUID1_ECX_VMX: u32 = 1 << 5;
/// CPUID.01H:ECX.SMX\[bit 6\]: safer-mode extensions, GETSEC (Table 3-10).
pub const CPUID1_ECX_SMX: u32 = 1 << 6;
/// CPUID.01H:ECX.x2APIC\[bit 21\]: the local APIC has x2APIC mode
/// (Table 3-10).
pub const CPUID1_ECX_X2APIC: u32 = 1 << 21;
/// CPUID.01H:ECX.XSAVE\[bit 26\]: XSAVE/XRSTOR, XSETBV/XGETBV and XCR0
/// (Table 3-10).
pub const CPUID1_ECX_XSAVE: u32 = 1 << 26;
/// CPUID.01H:ECX.OSXSAVE\[bit 27\]: a copy of CR4.OSXSAVE (Table 3-10).
pub const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID.01H:ECX\[bit 31\]: "hypervisor present". The SDM reserves the bit
/// ("Not Used. Always returns 0", Table 3-10); hypervisors set it by
/// convention.
pub const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.01H:EDX.MTRR\[bit 12\]: the MTRRs and IA32_MTRRCAP exist
/// (Table 3-11).
pub const CPUID1_EDX_MTRR: u32 = 1 << 12;
/// CPUID.(EAX=07H,ECX=0):EBX.IA32_TSC_ADJUST\[bit 1\] (Table 3-8).
pub const CPUID7_EBX_TSC_ADJUST: u32 = 1 << 1;
/// CPUID.(EAX=07H,ECX=0):EBX.INTEL_PT\[bit 25\]: Intel Processor Trace
/// (Table 3-8).
pub const CPUID7_EBX_PT: u32 = 1 << 25;
/// CPUID.(EAX=07H,ECX=0):ECX.OSPKE\[bit 4\]: a copy of CR4.PKE (Table 3-8).
pub const CPUID7_ECX_OSPKE: u32 = 1 << 4;
/// CPUID.(EAX=07H,ECX=0):ECX.CET_SS\[bit 7\]: CET shadow stacks
/// (Table 3-8).
pub const CPUID7_ECX_CET_SS: u32 = 1 << 7;
/// CPUID.(EAX=07H,ECX=0):EDX.CET_IBT\[bit 20\]: CET indirect-branch
/// tracking (Table 3-8).
pub const CPUID7_EDX_CET_IBT: u32 = 1 << 20;
/// CPUID.(EAX=0DH,ECX=1):EAX\[bit 3\]: XSAVES/XRSTORS and IA32_XSS
/// (Table 3-8).
pub const CPUID0D1_EAX_XSAVES: u32 = 1 << 3;
/// CPUID.80000001H:EDX\[bit 20\]: the execute-disable bit, IA32_EFER.NXE
/// (Table 3-8).
pub const CPUID80000001_EDX_NX: u32 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bits_are_the_sdms() {
        assert_eq!(
            [
                CR0_PE, CR0_MP, CR0_TS, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG
            ],
            [
                1,
                1 << 1,
                1 << 3,
                1 << 4,
                1 << 5,
                1 << 16,
                1 << 18,
                1 << 29,
                1 << 30,
                1 << 31
            ]
        );
        assert_eq!([CR3_LAM_U57, CR3_LAM_U48], [1 << 61, 1 << 62]);
        assert_eq!(
            [
                CR4_PSE, CR4_PAE, CR4_PGE, CR4_UMIP, CR4_LA57, CR4_VMXE, CR4_SMXE
            ],
            [1 << 4, 1 << 5, 1 << 7, 1 << 11, 1 << 12, 1 << 13, 1 << 14]
        );
        assert_eq!(
            [
                CR4_FSGSBASE,
                CR4_PCIDE,
                CR4_OSXSAVE,
                CR4_SMEP,
                CR4_SMAP,
                CR4_PKE,
                CR4_CET,
                CR4_LAM_SUP
            ],
            [
                1 << 16,
                1 << 17,
                1 << 18,
                1 << 20,
                1 << 21,
                1 << 22,
                1 << 23,
                1 << 28
            ]
        );
        assert_eq!(
            [EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE],
            [1, 1 << 8, 1 << 10, 1 << 11]
        );
        assert_eq!(
            [
                RFLAGS_TF,
                RFLAGS_IF,
                RFLAGS_DF,
                RFLAGS_IOPL,
                RFLAGS_NT,
                RFLAGS_RF,
                RFLAGS_VM,
                RFLAGS_AC
            ],
            [
                1 << 8,
                1 << 9,
                1 << 10,
                3 << 12,
                1 << 14,
                1 << 16,
                1 << 17,
                1 << 18
            ]
        );
        assert_eq!(
            [APIC_BASE_BSP, APIC_BASE_EXTD, APIC_BASE_EN],
            [1 << 8, 1 << 10, 1 << 11]
        );
        assert_eq!(APIC_BASE_ADDRESS, ((1 << 52) - 1) & !0xfff);
        assert_eq!(DEBUGCTL_BTF, 1 << 1);
        assert_eq!(PENDING_BS, 1 << 14);
    }

    #[test]
    fn the_cpuid_bits_are_the_sdms() {
        assert_eq!(
            [
                CPUID1_ECX_VMX,
                CPUID1_ECX_SMX,
                CPUID1_ECX_X2APIC,
                CPUID1_ECX_XSAVE,
                CPUID1_ECX_OSXSAVE,
                CPUID1_ECX_HYPERVISOR
            ],
            [1 << 5, 1 << 6, 1 << 21, 1 << 26, 1 << 27, 1 << 31]
        );
        assert_eq!(CPUID1_EDX_MTRR, 1 << 12);
        assert_eq!(
            [
                CPUID7_EBX_TSC_ADJUST,
                CPUID7_EBX_PT,
                CPUID7_ECX_OSPKE,
                CPUID7_ECX_CET_SS,
                CPUID7_EDX_CET_IBT
            ],
            [1 << 1, 1 << 25, 1 << 4, 1 << 7, 1 << 20]
        );
        assert_eq!(CPUID0D1_EAX_XSAVES, 1 << 3);
        assert_eq!(CPUID80000001_EDX_NX, 1 << 20);
    }
}
