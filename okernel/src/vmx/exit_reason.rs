//! Exit reasons (SDM Vol. 3D Appendix C "VMX Basic Exit Reasons") and the
//! exit-reason field (SDM Vol. 3C §25.9.1, Table 25-17).

macro_rules! exit_reasons {
    ($( $(#[$m:meta])* $var:ident = $n:literal, $name:literal; )*) => {
        /// A basic exit reason (bits 15:0 of the exit-reason field).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ExitReason {
            $( $(#[$m])* $var = $n, )*
        }

        impl ExitReason {
            /// Every basic exit reason Appendix C defines.
            pub const ALL: &'static [ExitReason] = &[$(ExitReason::$var),*];

            /// Decodes a basic exit reason; `None` for numbers Appendix C
            /// does not define.
            pub const fn from_raw(n: u16) -> Option<Self> {
                match n {
                    $( $n => Some(ExitReason::$var), )*
                    _ => None,
                }
            }

            /// A short name for logs and counters.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ExitReason::$var => $name, )*
                }
            }
        }
    };
}

exit_reasons! {
    /// Exception or non-maskable interrupt.
    ExceptionOrNmi = 0, "exception-or-nmi";
    /// External interrupt.
    ExternalInterrupt = 1, "external-interrupt";
    /// Triple fault.
    TripleFault = 2, "triple-fault";
    /// INIT signal.
    InitSignal = 3, "init-signal";
    /// Start-up IPI.
    Sipi = 4, "sipi";
    /// I/O system-management interrupt.
    IoSmi = 5, "io-smi";
    /// Other SMI.
    OtherSmi = 6, "other-smi";
    /// Interrupt window.
    InterruptWindow = 7, "interrupt-window";
    /// NMI window.
    NmiWindow = 8, "nmi-window";
    /// Task switch.
    TaskSwitch = 9, "task-switch";
    /// CPUID.
    Cpuid = 10, "cpuid";
    /// GETSEC.
    Getsec = 11, "getsec";
    /// HLT.
    Hlt = 12, "hlt";
    /// INVD.
    Invd = 13, "invd";
    /// INVLPG.
    Invlpg = 14, "invlpg";
    /// RDPMC.
    Rdpmc = 15, "rdpmc";
    /// RDTSC.
    Rdtsc = 16, "rdtsc";
    /// RSM.
    Rsm = 17, "rsm";
    /// VMCALL.
    Vmcall = 18, "vmcall";
    /// VMCLEAR.
    Vmclear = 19, "vmclear";
    /// VMLAUNCH.
    Vmlaunch = 20, "vmlaunch";
    /// VMPTRLD.
    Vmptrld = 21, "vmptrld";
    /// VMPTRST.
    Vmptrst = 22, "vmptrst";
    /// VMREAD.
    Vmread = 23, "vmread";
    /// VMRESUME.
    Vmresume = 24, "vmresume";
    /// VMWRITE.
    Vmwrite = 25, "vmwrite";
    /// VMXOFF.
    Vmxoff = 26, "vmxoff";
    /// VMXON.
    Vmxon = 27, "vmxon";
    /// Control-register accesses.
    CrAccess = 28, "cr-access";
    /// MOV DR.
    MovDr = 29, "mov-dr";
    /// I/O instruction.
    IoInstruction = 30, "io";
    /// RDMSR.
    Rdmsr = 31, "rdmsr";
    /// WRMSR.
    Wrmsr = 32, "wrmsr";
    /// VM-entry failure due to invalid guest state.
    EntryFailureGuestState = 33, "entry-failure-guest-state";
    /// VM-entry failure due to MSR loading.
    EntryFailureMsrLoading = 34, "entry-failure-msr-loading";
    /// MWAIT.
    Mwait = 36, "mwait";
    /// Monitor trap flag.
    MonitorTrapFlag = 37, "monitor-trap-flag";
    /// MONITOR.
    Monitor = 39, "monitor";
    /// PAUSE.
    Pause = 40, "pause";
    /// VM-entry failure due to machine-check event.
    EntryFailureMachineCheck = 41, "entry-failure-machine-check";
    /// TPR below threshold.
    TprBelowThreshold = 43, "tpr-below-threshold";
    /// APIC access.
    ApicAccess = 44, "apic-access";
    /// Virtualized EOI.
    VirtualizedEoi = 45, "virtualized-eoi";
    /// Access to GDTR or IDTR.
    GdtrIdtrAccess = 46, "gdtr-idtr-access";
    /// Access to LDTR or TR.
    LdtrTrAccess = 47, "ldtr-tr-access";
    /// EPT violation.
    EptViolation = 48, "ept-violation";
    /// EPT misconfiguration.
    EptMisconfiguration = 49, "ept-misconfiguration";
    /// INVEPT.
    Invept = 50, "invept";
    /// RDTSCP.
    Rdtscp = 51, "rdtscp";
    /// VMX-preemption timer expired.
    PreemptionTimer = 52, "preemption-timer";
    /// INVVPID.
    Invvpid = 53, "invvpid";
    /// WBINVD or WBNOINVD.
    Wbinvd = 54, "wbinvd";
    /// XSETBV.
    Xsetbv = 55, "xsetbv";
    /// APIC write.
    ApicWrite = 56, "apic-write";
    /// RDRAND.
    Rdrand = 57, "rdrand";
    /// INVPCID.
    Invpcid = 58, "invpcid";
    /// VMFUNC.
    Vmfunc = 59, "vmfunc";
    /// ENCLS.
    Encls = 60, "encls";
    /// RDSEED.
    Rdseed = 61, "rdseed";
    /// Page-modification log full.
    PmlFull = 62, "pml-full";
    /// XSAVES.
    Xsaves = 63, "xsaves";
    /// XRSTORS.
    Xrstors = 64, "xrstors";
    /// PCONFIG.
    Pconfig = 65, "pconfig";
    /// SPP-related event.
    SppEvent = 66, "spp-event";
    /// UMWAIT.
    Umwait = 67, "umwait";
    /// TPAUSE.
    Tpause = 68, "tpause";
    /// LOADIWKEY.
    Loadiwkey = 69, "loadiwkey";
    /// ENCLV.
    Enclv = 70, "enclv";
    /// ENQCMD PASID translation failure.
    EnqcmdPasidFailure = 72, "enqcmd-pasid-failure";
    /// ENQCMDS PASID translation failure.
    EnqcmdsPasidFailure = 73, "enqcmds-pasid-failure";
    /// Bus lock.
    BusLock = 74, "bus-lock";
    /// Instruction timeout.
    InstructionTimeout = 75, "instruction-timeout";
    /// SEAMCALL.
    Seamcall = 76, "seamcall";
    /// TDCALL.
    Tdcall = 77, "tdcall";
    /// RDMSRLIST.
    Rdmsrlist = 78, "rdmsrlist";
    /// WRMSRLIST.
    Wrmsrlist = 79, "wrmsrlist";
}

/// The number of counter slots: every basic reason below this has its own.
pub const REASON_SLOTS: usize = okernel_abi::hypercall::EXIT_REASON_SLOTS as usize;

/// The 32-bit exit-reason field (SDM Vol. 3C §25.9.1, Table 25-17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitReasonField(pub u32);

impl ExitReasonField {
    /// The basic exit reason number (bits 15:0).
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }
    /// The decoded basic reason, if Appendix C defines it.
    pub const fn reason(self) -> Option<ExitReason> {
        ExitReason::from_raw(self.basic())
    }
    /// Bit 31: the VM entry failed (reasons 33, 34, 41).
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
    /// Bit 29: VM exit from VMX root operation (SMM dual monitor only).
    pub const fn from_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 28: a pending MTF VM exit.
    pub const fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for &r in ExitReason::ALL {
            assert_eq!(ExitReason::from_raw(r as u16), Some(r));
            assert!((r as usize) < REASON_SLOTS);
            assert!(!r.name().is_empty());
        }
        for undefined in [35u16, 38, 42, 71, 80, 0xffff] {
            assert_eq!(ExitReason::from_raw(undefined), None);
        }
    }

    #[test]
    fn entry_failure_bit_decodes() {
        let f = ExitReasonField(0x8000_0021);
        assert!(f.entry_failure());
        assert_eq!(f.reason(), Some(ExitReason::EntryFailureGuestState));
        let c = ExitReasonField(10);
        assert!(!c.entry_failure());
        assert_eq!(c.reason(), Some(ExitReason::Cpuid));
    }
}
