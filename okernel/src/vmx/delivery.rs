//! What the processor raises when delivering an event faults: the
//! double-fault rules (SDM Vol. 3A §6.15 "Interrupt 8—Double Fault
//! Exception (#DF)", Tables 6-4 and 6-5), applied to the event a VM exit
//! interrupted (the IDT-vectoring information, SDM Vol. 3C §28.2.4
//! "Information for VM Exits That Occur During Event Delivery").
//!
//! okernel answers a denied access with #GP(0) (invariant 10). When the
//! access was made by the processor while delivering an event — pushing
//! the frame on a stack the EPT view makes read-only, reading an IDT or
//! TSS the view hides, fetching a handler it makes non-executable — the
//! #GP is an exception *during delivery*, and the processor would combine
//! it with the event it was delivering as Table 6-5 says: after a benign
//! event the #GP is delivered (the first event is lost, as it is when
//! hardware handles the two serially); after a contributory exception or
//! a page fault it becomes a double fault; after a double fault the
//! processor shuts down (a triple fault).

use super::event::{Exception, InterruptionInfo, InterruptionType};

/// The exception classes of Table 6-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combining {
    /// #DB, NMI, #BP, #OF, #BR, #UD, #NM, #MF, #AC, #MC, #XM, interrupts
    /// (external and INT n) and the rest.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP, #CP.
    Contributory,
    /// #PF and #VE.
    PageFault,
    /// #DF itself (its own row of Table 6-5).
    DoubleFault,
}

/// The class of the event an IDT-vectoring information field describes.
pub const fn combining(event: InterruptionInfo) -> Combining {
    if event.kind() != InterruptionType::HardwareException as u32 {
        return Combining::Benign;
    }
    match Exception::from_vector(event.vector()) {
        Some(
            Exception::DivideError
            | Exception::InvalidTss
            | Exception::SegmentNotPresent
            | Exception::StackFault
            | Exception::GeneralProtection
            | Exception::ControlProtection,
        ) => Combining::Contributory,
        Some(Exception::PageFault | Exception::Virtualization) => Combining::PageFault,
        Some(Exception::DoubleFault) => Combining::DoubleFault,
        _ => Combining::Benign,
    }
}

/// What the guest gets for a #GP raised while delivering `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuringDelivery {
    /// #GP with this error code (0, or 1 = EXT when the event was external
    /// to the program: an interrupt, an NMI, a hardware exception or INT1;
    /// SDM Vol. 3A §6.13 "Error Code").
    GeneralProtection(u32),
    /// #DF(0): the #GP follows a contributory exception or a page fault.
    DoubleFault,
    /// Shutdown: the #GP follows a double fault.
    TripleFault,
}

/// Table 6-5 with a contributory second exception (#GP).
pub const fn gp_during(event: InterruptionInfo) -> DuringDelivery {
    match combining(event) {
        Combining::Benign => {
            let software = event.kind() == InterruptionType::SoftwareInterrupt as u32
                || event.kind() == InterruptionType::SoftwareException as u32;
            DuringDelivery::GeneralProtection(if software { 0 } else { 1 })
        }
        Combining::Contributory | Combining::PageFault => DuringDelivery::DoubleFault,
        Combining::DoubleFault => DuringDelivery::TripleFault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn hw(vector: u8) -> InterruptionInfo {
        InterruptionInfo(0x8000_0300 | vector as u32)
    }

    #[test]
    fn table_6_5_with_a_general_protection_second() {
        use DuringDelivery::*;
        // Benign first events: the #GP is delivered, EXT set for
        // hardware events.
        for v in [1, 3, 4, 5, 6, 7, 16, 17, 18, 19] {
            assert_eq!(gp_during(hw(v)), GeneralProtection(1), "vector {v}");
        }
        for v in [0, 10, 11, 12, 13, 21, 14, 20] {
            assert_eq!(gp_during(hw(v)), DoubleFault, "vector {v}");
        }
        assert_eq!(gp_during(hw(8)), TripleFault);
        // External interrupt, NMI, INT n, INT1, INT3.
        assert_eq!(
            gp_during(InterruptionInfo(0x8000_0020)),
            GeneralProtection(1)
        );
        assert_eq!(
            gp_during(InterruptionInfo(0x8000_0202)),
            GeneralProtection(1)
        );
        assert_eq!(
            gp_during(InterruptionInfo(0x8000_0480)),
            GeneralProtection(0)
        );
        assert_eq!(
            gp_during(InterruptionInfo(0x8000_0501)),
            GeneralProtection(1)
        );
        assert_eq!(
            gp_during(InterruptionInfo(0x8000_0603)),
            GeneralProtection(0)
        );
    }

    #[test]
    fn classes_follow_table_6_1() {
        use super::super::event::ExceptionClass::*;
        assert_eq!(Exception::GeneralProtection.class(), Fault);
        assert_eq!(Exception::InvalidOpcode.class(), Fault);
        assert_eq!(Exception::PageFault.class(), Fault);
        assert_eq!(Exception::Breakpoint.class(), Trap);
        assert_eq!(Exception::Overflow.class(), Trap);
        assert_eq!(Exception::DoubleFault.class(), Abort);
        assert_eq!(Exception::MachineCheck.class(), Abort);
        for v in 0..=255u8 {
            if let Some(e) = Exception::from_vector(v) {
                assert_eq!(e as u8, v);
            }
        }
        assert_eq!(Exception::from_vector(2), None, "NMI is not an exception");
        assert_eq!(Exception::from_vector(32), None);
    }
}
