//! Typed VM-execution, VM-exit and VM-entry controls (SDM Vol. 3C §25.6.1,
//! §25.6.2, §25.7.1, §25.8.1; capability MSRs in Vol. 3D Appendix A.3-A.5).

use bitflags::bitflags;

bitflags! {
    /// Pin-based VM-execution controls (SDM §25.6.1, Table 25-5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PinBased: u32 {
        /// External interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// Virtual NMIs.
        const VIRTUAL_NMIS = 1 << 5;
        /// Activate the VMX-preemption timer.
        const ACTIVATE_PREEMPTION_TIMER = 1 << 6;
        /// Process posted interrupts.
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
        const _ = !0;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM §25.6.2, Table 25-6).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PrimaryProcBased: u32 {
        /// Interrupt-window exiting.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Use TSC offsetting.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exiting.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exiting.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exiting.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exiting.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC exiting.
        const RDTSC_EXITING = 1 << 12;
        /// CR3-load exiting.
        const CR3_LOAD_EXITING = 1 << 15;
        /// CR3-store exiting.
        const CR3_STORE_EXITING = 1 << 16;
        /// Activate tertiary controls.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// CR8-load exiting.
        const CR8_LOAD_EXITING = 1 << 19;
        /// CR8-store exiting.
        const CR8_STORE_EXITING = 1 << 20;
        /// Use TPR shadow.
        const USE_TPR_SHADOW = 1 << 21;
        /// NMI-window exiting.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV-DR exiting.
        const MOV_DR_EXITING = 1 << 23;
        /// Unconditional I/O exiting.
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// Use I/O bitmaps.
        const USE_IO_BITMAPS = 1 << 25;
        /// Monitor trap flag.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Use MSR bitmaps.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exiting.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exiting.
        const PAUSE_EXITING = 1 << 30;
        /// Activate secondary controls.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
        const _ = !0;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM §25.6.2, Table 25-7).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SecondaryProcBased: u32 {
        /// Virtualize APIC accesses.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Enable EPT.
        const ENABLE_EPT = 1 << 1;
        /// Descriptor-table exiting (LGDT, LIDT, LLDT, LTR, SGDT, ...).
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// Enable RDTSCP (otherwise RDTSCP raises #UD).
        const ENABLE_RDTSCP = 1 << 3;
        /// Virtualize x2APIC mode.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Enable VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD exiting.
        const WBINVD_EXITING = 1 << 6;
        /// Unrestricted guest.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// PAUSE-loop exiting.
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exiting.
        const RDRAND_EXITING = 1 << 11;
        /// Enable INVPCID (otherwise INVPCID raises #UD).
        const ENABLE_INVPCID = 1 << 12;
        /// Enable VM functions.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// VMCS shadowing.
        const VMCS_SHADOWING = 1 << 14;
        /// Enable ENCLS exiting.
        const ENABLE_ENCLS_EXITING = 1 << 15;
        /// RDSEED exiting.
        const RDSEED_EXITING = 1 << 16;
        /// Enable PML.
        const ENABLE_PML = 1 << 17;
        /// EPT-violation #VE.
        const EPT_VIOLATION_VE = 1 << 18;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// Enable XSAVES/XRSTORS (otherwise they raise #UD).
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        /// Mode-based execute control for EPT.
        const MODE_BASED_EXECUTE_CONTROL = 1 << 22;
        /// Sub-page write permissions for EPT.
        const SUBPAGE_WRITE_PERMISSIONS = 1 << 23;
        /// Intel PT uses guest physical addresses.
        const PT_USES_GUEST_PHYSICAL = 1 << 24;
        /// Use TSC scaling.
        const USE_TSC_SCALING = 1 << 25;
        /// Enable user wait and pause (otherwise TPAUSE/UMONITOR/UMWAIT raise #UD).
        const ENABLE_USER_WAIT_PAUSE = 1 << 26;
        /// Enable ENCLV exiting.
        const ENABLE_ENCLV_EXITING = 1 << 28;
        const _ = !0;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM §25.7.1, Table 25-13).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ExitControls: u32 {
        /// Save debug controls (DR7, IA32_DEBUGCTL).
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// Host address-space size (64-bit host).
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 12;
        /// Acknowledge interrupt on exit.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15;
        /// Save IA32_PAT.
        const SAVE_PAT = 1 << 18;
        /// Load IA32_PAT.
        const LOAD_PAT = 1 << 19;
        /// Save IA32_EFER.
        const SAVE_EFER = 1 << 20;
        /// Load IA32_EFER.
        const LOAD_EFER = 1 << 21;
        /// Save VMX-preemption timer value.
        const SAVE_PREEMPTION_TIMER = 1 << 22;
        /// Clear IA32_BNDCFGS.
        const CLEAR_BNDCFGS = 1 << 23;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Clear IA32_RTIT_CTL.
        const CLEAR_RTIT_CTL = 1 << 25;
        /// Clear IA32_LBR_CTL.
        const CLEAR_LBR_CTL = 1 << 26;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 28;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 29;
        const _ = !0;
    }
}

bitflags! {
    /// VM-entry controls (SDM §25.8.1, Table 25-15).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct EntryControls: u32 {
        /// Load debug controls (DR7, IA32_DEBUGCTL).
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// IA-32e mode guest.
        const IA32E_MODE_GUEST = 1 << 9;
        /// Entry to SMM.
        const ENTRY_TO_SMM = 1 << 10;
        /// Deactivate dual-monitor treatment.
        const DEACTIVATE_DUAL_MONITOR = 1 << 11;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 13;
        /// Load IA32_PAT.
        const LOAD_PAT = 1 << 14;
        /// Load IA32_EFER.
        const LOAD_EFER = 1 << 15;
        /// Load IA32_BNDCFGS.
        const LOAD_BNDCFGS = 1 << 16;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Load IA32_RTIT_CTL.
        const LOAD_RTIT_CTL = 1 << 18;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 20;
        /// Load IA32_LBR_CTL.
        const LOAD_LBR_CTL = 1 << 21;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 22;
        const _ = !0;
    }
}

/// Which control field a capability MSR describes, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlGroup {
    /// Pin-based VM-execution controls.
    PinBased,
    /// Primary processor-based VM-execution controls.
    PrimaryProcBased,
    /// Secondary processor-based VM-execution controls.
    SecondaryProcBased,
    /// VM-exit controls.
    Exit,
    /// VM-entry controls.
    Entry,
}

impl ControlGroup {
    /// The group's name as the SDM words it.
    pub const fn name(self) -> &'static str {
        match self {
            ControlGroup::PinBased => "pin-based VM-execution",
            ControlGroup::PrimaryProcBased => "primary processor-based VM-execution",
            ControlGroup::SecondaryProcBased => "secondary processor-based VM-execution",
            ControlGroup::Exit => "VM-exit",
            ControlGroup::Entry => "VM-entry",
        }
    }
}

impl core::fmt::Display for ControlGroup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
