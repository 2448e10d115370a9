//! The field lists of SDM Vol. 3D Appendix B, one group per table.

use super::fields::{Field, Kind, Width, vmcs_group};

vmcs_group! {
    /// 16-bit control fields (SDM Appendix B.1.1).
    Control16: u16, Bits16, Control {
        /// Virtual-processor identifier (VPID).
        Vpid = 0x0000,
        /// Posted-interrupt notification vector.
        PostedInterruptNotificationVector = 0x0002,
        /// EPTP index.
        EptpIndex = 0x0004,
    }
}

vmcs_group! {
    /// 16-bit guest-state fields (SDM Appendix B.1.2).
    Guest16: u16, Bits16, Guest {
        /// Guest ES selector.
        EsSelector = 0x0800,
        /// Guest CS selector.
        CsSelector = 0x0802,
        /// Guest SS selector.
        SsSelector = 0x0804,
        /// Guest DS selector.
        DsSelector = 0x0806,
        /// Guest FS selector.
        FsSelector = 0x0808,
        /// Guest GS selector.
        GsSelector = 0x080a,
        /// Guest LDTR selector.
        LdtrSelector = 0x080c,
        /// Guest TR selector.
        TrSelector = 0x080e,
        /// Guest interrupt status.
        InterruptStatus = 0x0810,
        /// PML index.
        PmlIndex = 0x0812,
    }
}

vmcs_group! {
    /// 16-bit host-state fields (SDM Appendix B.1.3).
    Host16: u16, Bits16, Host {
        /// Host ES selector.
        EsSelector = 0x0c00,
        /// Host CS selector.
        CsSelector = 0x0c02,
        /// Host SS selector.
        SsSelector = 0x0c04,
        /// Host DS selector.
        DsSelector = 0x0c06,
        /// Host FS selector.
        FsSelector = 0x0c08,
        /// Host GS selector.
        GsSelector = 0x0c0a,
        /// Host TR selector.
        TrSelector = 0x0c0c,
    }
}

vmcs_group! {
    /// 64-bit control fields (SDM Appendix B.2.1).
    Control64: u64, Bits64, Control {
        /// Address of I/O bitmap A.
        IoBitmapA = 0x2000,
        /// Address of I/O bitmap B.
        IoBitmapB = 0x2002,
        /// Address of MSR bitmaps.
        MsrBitmaps = 0x2004,
        /// VM-exit MSR-store address.
        ExitMsrStoreAddress = 0x2006,
        /// VM-exit MSR-load address.
        ExitMsrLoadAddress = 0x2008,
        /// VM-entry MSR-load address.
        EntryMsrLoadAddress = 0x200a,
        /// Executive-VMCS pointer.
        ExecutiveVmcsPointer = 0x200c,
        /// PML address.
        PmlAddress = 0x200e,
        /// TSC offset.
        TscOffset = 0x2010,
        /// Virtual-APIC address.
        VirtualApicAddress = 0x2012,
        /// APIC-access address.
        ApicAccessAddress = 0x2014,
        /// Posted-interrupt descriptor address.
        PostedInterruptDescriptor = 0x2016,
        /// VM-function controls.
        VmFunctionControls = 0x2018,
        /// EPT pointer (EPTP).
        Eptp = 0x201a,
        /// EOI-exit bitmap 0.
        EoiExitBitmap0 = 0x201c,
        /// EOI-exit bitmap 1.
        EoiExitBitmap1 = 0x201e,
        /// EOI-exit bitmap 2.
        EoiExitBitmap2 = 0x2020,
        /// EOI-exit bitmap 3.
        EoiExitBitmap3 = 0x2022,
        /// EPTP-list address.
        EptpListAddress = 0x2024,
        /// VMREAD-bitmap address.
        VmreadBitmap = 0x2026,
        /// VMWRITE-bitmap address.
        VmwriteBitmap = 0x2028,
        /// Virtualization-exception information address.
        VeInformationAddress = 0x202a,
        /// XSS-exiting bitmap.
        XssExitingBitmap = 0x202c,
        /// ENCLS-exiting bitmap.
        EnclsExitingBitmap = 0x202e,
        /// Sub-page-permission-table pointer.
        SppTablePointer = 0x2030,
        /// TSC multiplier.
        TscMultiplier = 0x2032,
        /// Tertiary processor-based VM-execution controls.
        TertiaryProcessorBasedControls = 0x2034,
        /// ENCLV-exiting bitmap.
        EnclvExitingBitmap = 0x2036,
    }
}

vmcs_group! {
    /// 64-bit read-only data fields (SDM Appendix B.2.2).
    ReadOnly64: u64, Bits64, ReadOnly {
        /// Guest-physical address (EPT violations and misconfigurations).
        GuestPhysicalAddress = 0x2400,
    }
}

vmcs_group! {
    /// 64-bit guest-state fields (SDM Appendix B.2.3).
    Guest64: u64, Bits64, Guest {
        /// VMCS link pointer (all ones when unused).
        VmcsLinkPointer = 0x2800,
        /// Guest IA32_DEBUGCTL.
        Debugctl = 0x2802,
        /// Guest IA32_PAT.
        Pat = 0x2804,
        /// Guest IA32_EFER.
        Efer = 0x2806,
        /// Guest IA32_PERF_GLOBAL_CTRL.
        PerfGlobalCtrl = 0x2808,
        /// Guest PDPTE0 (PAE paging with EPT).
        Pdpte0 = 0x280a,
        /// Guest PDPTE1.
        Pdpte1 = 0x280c,
        /// Guest PDPTE2.
        Pdpte2 = 0x280e,
        /// Guest PDPTE3.
        Pdpte3 = 0x2810,
        /// Guest IA32_BNDCFGS.
        Bndcfgs = 0x2812,
        /// Guest IA32_RTIT_CTL.
        RtitCtl = 0x2814,
        /// Guest IA32_LBR_CTL.
        LbrCtl = 0x2816,
        /// Guest IA32_PKRS.
        Pkrs = 0x2818,
    }
}

vmcs_group! {
    /// 64-bit host-state fields (SDM Appendix B.2.4).
    Host64: u64, Bits64, Host {
        /// Host IA32_PAT.
        Pat = 0x2c00,
        /// Host IA32_EFER.
        Efer = 0x2c02,
        /// Host IA32_PERF_GLOBAL_CTRL.
        PerfGlobalCtrl = 0x2c04,
        /// Host IA32_PKRS.
        Pkrs = 0x2c06,
    }
}

vmcs_group! {
    /// 32-bit control fields (SDM Appendix B.3.1).
    Control32: u32, Bits32, Control {
        /// Pin-based VM-execution controls.
        PinBasedControls = 0x4000,
        /// Primary processor-based VM-execution controls.
        PrimaryProcessorBasedControls = 0x4002,
        /// Exception bitmap.
        ExceptionBitmap = 0x4004,
        /// Page-fault error-code mask.
        PageFaultErrorCodeMask = 0x4006,
        /// Page-fault error-code match.
        PageFaultErrorCodeMatch = 0x4008,
        /// CR3-target count.
        Cr3TargetCount = 0x400a,
        /// Primary VM-exit controls.
        ExitControls = 0x400c,
        /// VM-exit MSR-store count.
        ExitMsrStoreCount = 0x400e,
        /// VM-exit MSR-load count.
        ExitMsrLoadCount = 0x4010,
        /// VM-entry controls.
        EntryControls = 0x4012,
        /// VM-entry MSR-load count.
        EntryMsrLoadCount = 0x4014,
        /// VM-entry interruption-information field.
        EntryInterruptionInfo = 0x4016,
        /// VM-entry exception error code.
        EntryExceptionErrorCode = 0x4018,
        /// VM-entry instruction length.
        EntryInstructionLength = 0x401a,
        /// TPR threshold.
        TprThreshold = 0x401c,
        /// Secondary processor-based VM-execution controls.
        SecondaryProcessorBasedControls = 0x401e,
        /// PLE_Gap.
        PleGap = 0x4020,
        /// PLE_Window.
        PleWindow = 0x4022,
    }
}

vmcs_group! {
    /// 32-bit read-only data fields (SDM Appendix B.3.2).
    ReadOnly32: u32, Bits32, ReadOnly {
        /// VM-instruction error.
        VmInstructionError = 0x4400,
        /// Exit reason.
        ExitReason = 0x4402,
        /// VM-exit interruption information.
        ExitInterruptionInfo = 0x4404,
        /// VM-exit interruption error code.
        ExitInterruptionErrorCode = 0x4406,
        /// IDT-vectoring information field.
        IdtVectoringInfo = 0x4408,
        /// IDT-vectoring error code.
        IdtVectoringErrorCode = 0x440a,
        /// VM-exit instruction length.
        ExitInstructionLength = 0x440c,
        /// VM-exit instruction information.
        ExitInstructionInfo = 0x440e,
    }
}

vmcs_group! {
    /// 32-bit guest-state fields (SDM Appendix B.3.3).
    Guest32: u32, Bits32, Guest {
        /// Guest ES limit.
        EsLimit = 0x4800,
        /// Guest CS limit.
        CsLimit = 0x4802,
        /// Guest SS limit.
        SsLimit = 0x4804,
        /// Guest DS limit.
        DsLimit = 0x4806,
        /// Guest FS limit.
        FsLimit = 0x4808,
        /// Guest GS limit.
        GsLimit = 0x480a,
        /// Guest LDTR limit.
        LdtrLimit = 0x480c,
        /// Guest TR limit.
        TrLimit = 0x480e,
        /// Guest GDTR limit.
        GdtrLimit = 0x4810,
        /// Guest IDTR limit.
        IdtrLimit = 0x4812,
        /// Guest ES access rights.
        EsAccessRights = 0x4814,
        /// Guest CS access rights.
        CsAccessRights = 0x4816,
        /// Guest SS access rights.
        SsAccessRights = 0x4818,
        /// Guest DS access rights.
        DsAccessRights = 0x481a,
        /// Guest FS access rights.
        FsAccessRights = 0x481c,
        /// Guest GS access rights.
        GsAccessRights = 0x481e,
        /// Guest LDTR access rights.
        LdtrAccessRights = 0x4820,
        /// Guest TR access rights.
        TrAccessRights = 0x4822,
        /// Guest interruptibility state.
        InterruptibilityState = 0x4824,
        /// Guest activity state.
        ActivityState = 0x4826,
        /// Guest SMBASE.
        Smbase = 0x4828,
        /// Guest IA32_SYSENTER_CS.
        SysenterCs = 0x482a,
        /// VMX-preemption timer value.
        PreemptionTimerValue = 0x482e,
    }
}

vmcs_group! {
    /// 32-bit host-state field (SDM Appendix B.3.4).
    Host32: u32, Bits32, Host {
        /// Host IA32_SYSENTER_CS.
        SysenterCs = 0x4c00,
    }
}

vmcs_group! {
    /// Natural-width control fields (SDM Appendix B.4.1).
    ControlNatural: u64, Natural, Control {
        /// CR0 guest/host mask.
        Cr0GuestHostMask = 0x6000,
        /// CR4 guest/host mask.
        Cr4GuestHostMask = 0x6002,
        /// CR0 read shadow.
        Cr0ReadShadow = 0x6004,
        /// CR4 read shadow.
        Cr4ReadShadow = 0x6006,
        /// CR3-target value 0.
        Cr3Target0 = 0x6008,
        /// CR3-target value 1.
        Cr3Target1 = 0x600a,
        /// CR3-target value 2.
        Cr3Target2 = 0x600c,
        /// CR3-target value 3.
        Cr3Target3 = 0x600e,
    }
}

vmcs_group! {
    /// Natural-width read-only data fields (SDM Appendix B.4.2).
    ReadOnlyNatural: u64, Natural, ReadOnly {
        /// Exit qualification.
        ExitQualification = 0x6400,
        /// I/O RCX.
        IoRcx = 0x6402,
        /// I/O RSI.
        IoRsi = 0x6404,
        /// I/O RDI.
        IoRdi = 0x6406,
        /// I/O RIP.
        IoRip = 0x6408,
        /// Guest-linear address.
        GuestLinearAddress = 0x640a,
    }
}

vmcs_group! {
    /// Natural-width guest-state fields (SDM Appendix B.4.3).
    GuestNatural: u64, Natural, Guest {
        /// Guest CR0.
        Cr0 = 0x6800,
        /// Guest CR3.
        Cr3 = 0x6802,
        /// Guest CR4.
        Cr4 = 0x6804,
        /// Guest ES base.
        EsBase = 0x6806,
        /// Guest CS base.
        CsBase = 0x6808,
        /// Guest SS base.
        SsBase = 0x680a,
        /// Guest DS base.
        DsBase = 0x680c,
        /// Guest FS base.
        FsBase = 0x680e,
        /// Guest GS base.
        GsBase = 0x6810,
        /// Guest LDTR base.
        LdtrBase = 0x6812,
        /// Guest TR base.
        TrBase = 0x6814,
        /// Guest GDTR base.
        GdtrBase = 0x6816,
        /// Guest IDTR base.
        IdtrBase = 0x6818,
        /// Guest DR7.
        Dr7 = 0x681a,
        /// Guest RSP.
        Rsp = 0x681c,
        /// Guest RIP.
        Rip = 0x681e,
        /// Guest RFLAGS.
        Rflags = 0x6820,
        /// Guest pending debug exceptions.
        PendingDebugExceptions = 0x6822,
        /// Guest IA32_SYSENTER_ESP.
        SysenterEsp = 0x6824,
        /// Guest IA32_SYSENTER_EIP.
        SysenterEip = 0x6826,
    }
}

vmcs_group! {
    /// Natural-width host-state fields (SDM Appendix B.4.4).
    HostNatural: u64, Natural, Host {
        /// Host CR0.
        Cr0 = 0x6c00,
        /// Host CR3.
        Cr3 = 0x6c02,
        /// Host CR4.
        Cr4 = 0x6c04,
        /// Host FS base.
        FsBase = 0x6c06,
        /// Host GS base.
        GsBase = 0x6c08,
        /// Host TR base.
        TrBase = 0x6c0a,
        /// Host GDTR base.
        GdtrBase = 0x6c0c,
        /// Host IDTR base.
        IdtrBase = 0x6c0e,
        /// Host IA32_SYSENTER_ESP.
        SysenterEsp = 0x6c10,
        /// Host IA32_SYSENTER_EIP.
        SysenterEip = 0x6c12,
        /// Host RSP.
        Rsp = 0x6c14,
        /// Host RIP.
        Rip = 0x6c16,
    }
}
