//! VMX capability checks: every refusal has a named reason whose message
//! ends up in the run result (`OKERNEL-RESULT: vmx-unavailable: <reason>`),
//! and every degraded-but-usable feature a named warning.
//!
//! The checks read MSRs only once they are known to exist: the VMX
//! capability MSRs after CPUID.1:ECX.VMX = 1, the TRUE_ MSRs after
//! IA32_VMX_BASIC\[55\] = 1, IA32_VMX_PROCBASED_CTLS2 after the primary
//! controls allow "activate secondary controls", IA32_VMX_EPT_VPID_CAP after
//! the secondary controls allow EPT (SDM Vol. 3D Appendix A.3.3, A.10).

// Safe code only above the hardware layers (`hw`, `arch`, `launch`):
// issue 14, DESIGN.md §6.
#![forbid(unsafe_code)]

use thiserror::Error;

use crate::bits::CPUID1_ECX_VMX;
use crate::hw::Cpu;
use crate::msrs;
use crate::vmx::capability::{AllowedSettings, EptVpidCap, FixedBits, VmxBasic, feature_control};
use crate::vmx::controls::{
    ControlGroup, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};

/// Why okernel refuses to run: the message is the reason printed after
/// "VMX unavailable: ".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VmxUnavailable {
    /// CPUID.1:ECX.VMX=0
    #[error("CPUID.1:ECX.VMX=0")]
    NoVmx,
    /// IA32_FEATURE_CONTROL locked with VMX disabled outside SMX
    #[error("IA32_FEATURE_CONTROL locked with VMX disabled outside SMX")]
    FeatureControlLocked,
    /// true VMX controls not supported
    #[error("true VMX controls not supported")]
    NoTrueControls,
    /// VMCS memory type is not write-back
    #[error("VMCS memory type {0} is not write-back")]
    VmcsMemoryType(u8),
    /// VMXON/VMCS region larger than 4 KiB
    #[error("VMXON/VMCS region of {0} bytes is larger than 4 KiB")]
    RegionTooLarge(u32),
    /// secondary processor-based VM-execution controls not supported
    #[error("secondary processor-based VM-execution controls not supported")]
    NoSecondaryControls,
    /// MSR bitmaps not supported
    #[error("MSR bitmaps not supported")]
    NoMsrBitmaps,
    /// EPT not supported
    #[error("EPT not supported")]
    NoEpt,
    /// unrestricted guest not supported
    #[error("unrestricted guest not supported")]
    NoUnrestrictedGuest,
    /// EPT 4-level page walk not supported
    #[error("EPT 4-level page walk not supported")]
    NoEptPageWalk4,
    /// EPT write-back paging-structure memory type not supported
    #[error("EPT write-back paging-structure memory type not supported")]
    NoEptWriteBack,
    /// INVEPT not supported
    #[error("INVEPT (single- or all-context) not supported")]
    NoInvept,
    /// a required control is not supported
    #[error("required {group} controls not supported: {missing:#x}")]
    MissingControls {
        /// The control field.
        group: ControlGroup,
        /// The bits the CPU does not allow.
        missing: u32,
    },
    /// the processor forces "NMI exiting" or "virtual NMIs" on
    #[error(
        "the processor forces NMI exiting or virtual NMIs on (pin-based controls {0:#x}): gates need the processor's own NMI blocking"
    )]
    NmiControlsForced(u32),
}

/// A feature okernel works without, at some cost: logged at launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VmxWarning {
    /// 1G EPT pages not supported (falling back to 2M)
    #[error("1G EPT pages not supported (falling back to 2M)")]
    NoEpt1GPages,
    /// 2M EPT pages not supported (falling back to 4K)
    #[error("2M EPT pages not supported (falling back to 4K)")]
    NoEpt2MPages,
    /// VPID not supported (every VM transition flushes the TLB)
    #[error("VPID not supported (every VM transition flushes the TLB)")]
    NoVpid,
    /// IA32_PAT is not switched by VM entry and exit
    #[error("IA32_PAT is not switched by VM entry and exit (guest PAT changes reach the monitor)")]
    NoPatSwitching,
}

/// The warnings of one probe (at most one of each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warnings {
    list: [Option<VmxWarning>; 4],
}

impl Warnings {
    fn push(&mut self, w: VmxWarning) {
        if let Some(slot) = self.list.iter_mut().find(|s| s.is_none()) {
            *slot = Some(w);
        }
    }
    /// The warnings, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = VmxWarning> + '_ {
        self.list.iter().flatten().copied()
    }
    /// Whether `w` was raised.
    pub fn contains(&self, w: VmxWarning) -> bool {
        self.iter().any(|x| x == w)
    }
}

/// What the processor offers, with the controls okernel will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls to program.
    pub pin: PinBased,
    /// Primary processor-based controls to program.
    pub primary: PrimaryProcBased,
    /// Secondary processor-based controls to program.
    pub secondary: SecondaryProcBased,
    /// VM-exit controls to program.
    pub exit: ExitControls,
    /// VM-entry controls to program, without "IA-32e mode guest" (added per
    /// guest mode; the probe checked it is allowed).
    pub entry: EntryControls,
    /// CR0 fixed bits.
    pub cr0_fixed: FixedBits,
    /// CR4 fixed bits.
    pub cr4_fixed: FixedBits,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept: EptVpidCap,
    /// The VMX-preemption timer's rate (IA32_VMX_MISC\[4:0\]: it counts
    /// once every 2^rate TSC cycles), when "activate VMX-preemption
    /// timer" and "save VMX-preemption timer value" may both be set (the
    /// console's timer, `crate::vcpu::timer`).
    pub preemption_timer: Option<u8>,
    /// Whether "MWAIT exiting" may be set (the console's timer sets it
    /// while it is armed: MWAIT into a deep C-state stops the timer).
    pub mwait_exiting: bool,
    /// Degraded features.
    pub warnings: Warnings,
}

impl Capabilities {
    /// Whether VPID is in use.
    pub fn vpid(&self) -> bool {
        self.secondary.contains(SecondaryProcBased::ENABLE_VPID)
    }
}

fn adjust(
    group: ControlGroup,
    msr_value: u64,
    required: u32,
    optional: u32,
) -> Result<u32, VmxUnavailable> {
    AllowedSettings::from_msr(msr_value)
        .adjust(required, optional)
        .map_err(|missing| VmxUnavailable::MissingControls { group, missing })
}

/// Makes VMXON possible outside SMX: if IA32_FEATURE_CONTROL is unlocked
/// (no firmware ran, as under the KVM harness), sets "VMX outside SMX" and
/// the lock bit; if it is locked without that bit, refuses (SDM Vol. 3C
/// §24.7).
pub fn enable_feature_control<C: Cpu>(cpu: &mut C) -> Result<(), VmxUnavailable> {
    let fc = cpu.read_msr(msrs::IA32_FEATURE_CONTROL);
    if fc & feature_control::LOCK != 0 {
        if fc & feature_control::VMX_OUTSIDE_SMX == 0 {
            return Err(VmxUnavailable::FeatureControlLocked);
        }
        return Ok(());
    }
    cpu.write_msr(
        msrs::IA32_FEATURE_CONTROL,
        fc | feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX,
    );
    Ok(())
}

/// Checks everything okernel needs, enables VMX in IA32_FEATURE_CONTROL
/// when it is unlocked, and chooses the controls.
pub fn probe<C: Cpu>(cpu: &mut C) -> Result<Capabilities, VmxUnavailable> {
    if cpu.cpuid(0, 0).eax < 1 || cpu.cpuid(1, 0).ecx & CPUID1_ECX_VMX == 0 {
        return Err(VmxUnavailable::NoVmx);
    }
    enable_feature_control(cpu)?;

    let basic = VmxBasic(cpu.read_msr(msrs::IA32_VMX_BASIC));
    if !basic.true_controls() {
        return Err(VmxUnavailable::NoTrueControls);
    }
    if basic.memory_type() != 6 {
        return Err(VmxUnavailable::VmcsMemoryType(basic.memory_type()));
    }
    if basic.region_size() > 4096 {
        return Err(VmxUnavailable::RegionTooLarge(basic.region_size()));
    }

    let pin_caps = cpu.read_msr(msrs::IA32_VMX_TRUE_PINBASED_CTLS);
    let pin = adjust(ControlGroup::PinBased, pin_caps, 0, 0)?;
    // A gate starts with blocking by NMI set and ends it with an IRET
    // (`vcpu::guest::GateEntry`): that needs NMIs delivered to the guest
    // (no NMI exiting) and bit 3 to be real NMI blocking (no virtual
    // NMIs; SDM Vol. 3C §27.7.1).
    if pin & (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits() != 0 {
        return Err(VmxUnavailable::NmiControlsForced(pin));
    }

    let primary_caps = cpu.read_msr(msrs::IA32_VMX_TRUE_PROCBASED_CTLS);
    let primary_allowed = AllowedSettings::from_msr(primary_caps);
    if !primary_allowed.allows(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits()) {
        return Err(VmxUnavailable::NoSecondaryControls);
    }
    if !primary_allowed.allows(PrimaryProcBased::USE_MSR_BITMAPS.bits()) {
        return Err(VmxUnavailable::NoMsrBitmaps);
    }
    // The I/O bitmaps (the ports of `exit::io` exit, every other passes):
    // every VMX processor allows them; a named refusal otherwise.
    let primary = adjust(
        ControlGroup::PrimaryProcBased,
        primary_caps,
        (PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS
            | PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::USE_IO_BITMAPS)
            .bits(),
        0,
    )?;

    let secondary_caps = cpu.read_msr(msrs::IA32_VMX_PROCBASED_CTLS2);
    let secondary_allowed = AllowedSettings::from_msr(secondary_caps);
    if !secondary_allowed.allows(SecondaryProcBased::ENABLE_EPT.bits()) {
        return Err(VmxUnavailable::NoEpt);
    }
    if !secondary_allowed.allows(SecondaryProcBased::UNRESTRICTED_GUEST.bits()) {
        return Err(VmxUnavailable::NoUnrestrictedGuest);
    }
    // Instructions that raise #UD in the guest unless their "enable" control
    // is set; none of them exits with the other controls chosen here.
    let optional2 = SecondaryProcBased::ENABLE_RDTSCP
        | SecondaryProcBased::ENABLE_VPID
        | SecondaryProcBased::ENABLE_INVPCID
        | SecondaryProcBased::ENABLE_XSAVES_XRSTORS
        | SecondaryProcBased::ENABLE_USER_WAIT_PAUSE
        | SecondaryProcBased::CONCEAL_VMX_FROM_PT;
    let secondary = adjust(
        ControlGroup::SecondaryProcBased,
        secondary_caps,
        (SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::UNRESTRICTED_GUEST).bits(),
        optional2.bits(),
    )?;

    let exit_caps = cpu.read_msr(msrs::IA32_VMX_TRUE_EXIT_CTLS);
    let exit = adjust(
        ControlGroup::Exit,
        exit_caps,
        (ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::SAVE_EFER | ExitControls::LOAD_EFER)
            .bits(),
        (ExitControls::SAVE_PAT
            | ExitControls::LOAD_PAT
            | ExitControls::SAVE_DEBUG_CONTROLS
            | ExitControls::CONCEAL_VMX_FROM_PT)
            .bits(),
    )?;
    let entry = adjust(
        ControlGroup::Entry,
        cpu.read_msr(msrs::IA32_VMX_TRUE_ENTRY_CTLS),
        (EntryControls::LOAD_EFER | EntryControls::IA32E_MODE_GUEST).bits(),
        (EntryControls::LOAD_PAT
            | EntryControls::LOAD_DEBUG_CONTROLS
            | EntryControls::CONCEAL_VMX_FROM_PT)
            .bits(),
    )?;

    // The console's timer (`vcpu::timer`): off at launch, armed by the
    // exit layer while console lines wait; both of its controls allowed.
    let preemption_timer = (AllowedSettings::from_msr(pin_caps)
        .allows(PinBased::ACTIVATE_PREEMPTION_TIMER.bits())
        && AllowedSettings::from_msr(exit_caps).allows(ExitControls::SAVE_PREEMPTION_TIMER.bits()))
    .then(|| (cpu.read_msr(msrs::IA32_VMX_MISC) & 0x1f) as u8);
    let mwait_exiting = primary_allowed.allows(PrimaryProcBased::MWAIT_EXITING.bits());

    let ept = EptVpidCap(cpu.read_msr(msrs::IA32_VMX_EPT_VPID_CAP));
    if !ept.page_walk_4() {
        return Err(VmxUnavailable::NoEptPageWalk4);
    }
    if !ept.memory_type_wb() {
        return Err(VmxUnavailable::NoEptWriteBack);
    }
    if !ept.invept() || !(ept.invept_single_context() || ept.invept_all_context()) {
        return Err(VmxUnavailable::NoInvept);
    }

    let mut warnings = Warnings::default();
    let mut secondary = SecondaryProcBased::from_bits_retain(secondary);
    if !ept.pages_2m() {
        warnings.push(VmxWarning::NoEpt2MPages);
    }
    if !ept.pages_1g() {
        warnings.push(VmxWarning::NoEpt1GPages);
    }
    // VPID needs INVVPID to be usable; without it, run untagged.
    if !secondary.contains(SecondaryProcBased::ENABLE_VPID)
        || !ept.invvpid()
        || !ept.invvpid_single_context()
    {
        secondary.remove(SecondaryProcBased::ENABLE_VPID);
        warnings.push(VmxWarning::NoVpid);
    }
    let exit = ExitControls::from_bits_retain(exit);
    let entry = EntryControls::from_bits_retain(entry);
    if !(exit.contains(ExitControls::SAVE_PAT | ExitControls::LOAD_PAT)
        && entry.contains(EntryControls::LOAD_PAT))
    {
        warnings.push(VmxWarning::NoPatSwitching);
    }

    Ok(Capabilities {
        basic,
        pin: PinBased::from_bits_retain(pin),
        primary: PrimaryProcBased::from_bits_retain(primary),
        secondary,
        exit,
        entry: entry - EntryControls::IA32E_MODE_GUEST,
        cr0_fixed: FixedBits {
            fixed0: cpu.read_msr(msrs::IA32_VMX_CR0_FIXED0),
            fixed1: cpu.read_msr(msrs::IA32_VMX_CR0_FIXED1),
        },
        cr4_fixed: FixedBits {
            fixed0: cpu.read_msr(msrs::IA32_VMX_CR4_FIXED0),
            fixed1: cpu.read_msr(msrs::IA32_VMX_CR4_FIXED1),
        },
        ept,
        preemption_timer,
        mwait_exiting,
        warnings,
    })
}
