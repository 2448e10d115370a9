//! Event injection through the VM-entry interruption-information field
//! (format: SDM Vol. 3C §25.8.3 "VM-Entry Controls for Event Injection",
//! Table 25-16; delivery: §27.6 "Event Injection" — numbered §24.8.3 and
//! §26.5 in editions before the 2022 renumbering).

use crate::bits::RFLAGS_RF;

/// An exception vector (SDM Vol. 3A §6.3.1, Table 6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exception {
    /// #DE divide error.
    DivideError = 0,
    /// #DB debug.
    Debug = 1,
    /// #BP breakpoint.
    Breakpoint = 3,
    /// #OF overflow.
    Overflow = 4,
    /// #BR bound range exceeded.
    BoundRange = 5,
    /// #UD invalid opcode.
    InvalidOpcode = 6,
    /// #NM device not available.
    DeviceNotAvailable = 7,
    /// #DF double fault.
    DoubleFault = 8,
    /// #TS invalid TSS.
    InvalidTss = 10,
    /// #NP segment not present.
    SegmentNotPresent = 11,
    /// #SS stack fault.
    StackFault = 12,
    /// #GP general protection.
    GeneralProtection = 13,
    /// #PF page fault.
    PageFault = 14,
    /// #MF x87 floating-point error.
    FloatingPoint = 16,
    /// #AC alignment check.
    AlignmentCheck = 17,
    /// #MC machine check.
    MachineCheck = 18,
    /// #XM SIMD floating-point exception.
    Simd = 19,
    /// #VE virtualization exception.
    Virtualization = 20,
    /// #CP control protection.
    ControlProtection = 21,
}

/// How an exception is reported (SDM Vol. 3A §6.5 "Exception
/// Classifications", Table 6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionClass {
    /// Reported before the instruction: the saved RIP is the faulting
    /// instruction, which can be restarted.
    Fault,
    /// Reported after the instruction: the saved RIP is the next one.
    Trap,
    /// Severe: the program cannot be restarted (#DF, #MC).
    Abort,
}

impl Exception {
    /// The exception with vector `v` (None for reserved vectors, NMI and
    /// vectors 32..).
    pub const fn from_vector(v: u8) -> Option<Self> {
        use Exception as E;
        Some(match v {
            0 => E::DivideError,
            1 => E::Debug,
            3 => E::Breakpoint,
            4 => E::Overflow,
            5 => E::BoundRange,
            6 => E::InvalidOpcode,
            7 => E::DeviceNotAvailable,
            8 => E::DoubleFault,
            10 => E::InvalidTss,
            11 => E::SegmentNotPresent,
            12 => E::StackFault,
            13 => E::GeneralProtection,
            14 => E::PageFault,
            16 => E::FloatingPoint,
            17 => E::AlignmentCheck,
            18 => E::MachineCheck,
            19 => E::Simd,
            20 => E::Virtualization,
            21 => E::ControlProtection,
            _ => return None,
        })
    }

    /// Its class (Table 6-1). #DB is a fault for instruction breakpoints
    /// and a trap otherwise; the monitor only ever raises it as a trap.
    pub const fn class(self) -> ExceptionClass {
        match self {
            Exception::Debug | Exception::Breakpoint | Exception::Overflow => ExceptionClass::Trap,
            Exception::DoubleFault | Exception::MachineCheck => ExceptionClass::Abort,
            _ => ExceptionClass::Fault,
        }
    }

    /// Whether the exception pushes an error code (Table 6-1).
    pub const fn has_error_code(self) -> bool {
        matches!(
            self,
            Exception::DoubleFault
                | Exception::InvalidTss
                | Exception::SegmentNotPresent
                | Exception::StackFault
                | Exception::GeneralProtection
                | Exception::PageFault
                | Exception::AlignmentCheck
                | Exception::ControlProtection
        )
    }

    /// The mnemonic, for logs and audit records.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            Exception::DivideError => "#DE",
            Exception::Debug => "#DB",
            Exception::Breakpoint => "#BP",
            Exception::Overflow => "#OF",
            Exception::BoundRange => "#BR",
            Exception::InvalidOpcode => "#UD",
            Exception::DeviceNotAvailable => "#NM",
            Exception::DoubleFault => "#DF",
            Exception::InvalidTss => "#TS",
            Exception::SegmentNotPresent => "#NP",
            Exception::StackFault => "#SS",
            Exception::GeneralProtection => "#GP",
            Exception::PageFault => "#PF",
            Exception::FloatingPoint => "#MF",
            Exception::AlignmentCheck => "#AC",
            Exception::MachineCheck => "#MC",
            Exception::Simd => "#XM",
            Exception::Virtualization => "#VE",
            Exception::ControlProtection => "#CP",
        }
    }
}

/// The interruption type (bits 10:8 of the interruption-information field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum InterruptionType {
    /// External interrupt.
    External = 0,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception.
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3, INTO).
    SoftwareException = 6,
    /// Other event.
    Other = 7,
}

/// Bit 11: deliver an error code.
pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
/// Bit 31: valid.
pub const VALID: u32 = 1 << 31;

/// The guest RFLAGS to enter with when injecting hardware exception `e`
/// into a guest in protected mode (`protected`: CR0.PE = 1).
///
/// When the processor calls the handler of a fault-class exception it
/// pushes RFLAGS with RF set, so that returning to the restarted
/// instruction does not hit an instruction breakpoint again (SDM Vol. 3A
/// §18.3.1.1 "Instruction-Breakpoint Exception Condition": "for any
/// fault-class exception except a debug exception generated in response
/// to an instruction breakpoint, the value pushed for RF is 1"). An
/// injected event is delivered with the RFLAGS of the guest-state area
/// (SDM Vol. 3C §27.6.1.2: delivery is as if the event occurred after VM
/// entry loaded the guest state), so the monitor sets RF itself, as
/// hardware would; traps and aborts push RF as it is. Real mode pushes a
/// 16-bit FLAGS image without RF, so nothing changes there.
pub const fn rflags_for(e: Exception, protected: bool, rflags: u64) -> u64 {
    if protected && matches!(e.class(), ExceptionClass::Fault) {
        rflags | RFLAGS_RF
    } else {
        rflags
    }
}

/// The interruption-information value that injects hardware exception `e`.
///
/// `deliver_error_code` must be false when the guest will be in real mode
/// (unrestricted guest with CR0.PE = 0): SDM §27.2.1.3 forbids it there.
pub const fn hardware_exception(e: Exception, deliver_error_code: bool) -> u32 {
    let mut v = VALID | ((InterruptionType::HardwareException as u32) << 8) | e as u32;
    if deliver_error_code && e.has_error_code() {
        v |= DELIVER_ERROR_CODE;
    }
    v
}

/// A decoded IDT-vectoring or VM-exit interruption-information field
/// (SDM §25.9.2, §25.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    /// Bit 31.
    pub const fn valid(self) -> bool {
        self.0 & VALID != 0
    }
    /// Bits 7:0.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    /// Bits 10:8.
    pub const fn kind(self) -> u32 {
        (self.0 >> 8) & 7
    }
    /// Bit 11.
    pub const fn has_error_code(self) -> bool {
        self.0 & DELIVER_ERROR_CODE != 0
    }
    /// The same event as a VM-entry interruption-information value (bit 12,
    /// "NMI unblocking due to IRET", and reserved bits cleared).
    pub const fn for_reinjection(self) -> u32 {
        self.0 & (VALID | DELIVER_ERROR_CODE | 0x7ff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_encode_per_table_25_16() {
        assert_eq!(
            hardware_exception(Exception::InvalidOpcode, true),
            0x8000_0306
        );
        assert_eq!(
            hardware_exception(Exception::GeneralProtection, true),
            0x8000_0b0d
        );
        assert_eq!(
            hardware_exception(Exception::GeneralProtection, false),
            0x8000_030d
        );
    }

    #[test]
    fn vectoring_info_decodes() {
        let i = InterruptionInfo(0x8000_1b0e);
        assert!(i.valid());
        assert_eq!(i.vector(), 14);
        assert_eq!(i.kind(), 3);
        assert!(i.has_error_code());
        assert_eq!(i.for_reinjection(), 0x8000_0b0e);
        assert!(!InterruptionInfo(0x30d).valid());
    }
}
