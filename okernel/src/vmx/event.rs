//! Event injection through the VM-entry interruption-information field
//! (format: SDM Vol. 3C §25.8.3 "VM-Entry Controls for Event Injection",
//! Table 25-16; delivery: §27.6 "Event Injection" — numbered §24.8.3 and
//! §26.5 in editions before the 2022 renumbering).

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
    /// #UD invalid opcode.
    InvalidOpcode = 6,
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
    /// #AC alignment check.
    AlignmentCheck = 17,
    /// #CP control protection.
    ControlProtection = 21,
}

impl Exception {
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
            Exception::InvalidOpcode => "#UD",
            Exception::DoubleFault => "#DF",
            Exception::InvalidTss => "#TS",
            Exception::SegmentNotPresent => "#NP",
            Exception::StackFault => "#SS",
            Exception::GeneralProtection => "#GP",
            Exception::PageFault => "#PF",
            Exception::AlignmentCheck => "#AC",
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
