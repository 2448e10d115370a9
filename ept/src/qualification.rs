//! The exit qualification of an EPT-violation VM exit (basic exit reason 48).
//!
//! Layout: SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information", Table 28-7
//! "Exit Qualification for EPT Violations"; the rules that cause the
//! violation are in 29.3.3.2 "EPT Violations".

use crate::caps::{EptCaps, EptFeatures};
use crate::entry::Perms;
use crate::error::Error;
use bitflags::bitflags;

bitflags! {
    /// The kind of access that caused the violation (bits 2:0). More than
    /// one can be set (for example a read-modify-write instruction).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// A data read (bit 0).
        const READ = 1 << 0;
        /// A data write (bit 1).
        const WRITE = 1 << 1;
        /// An instruction fetch (bit 2).
        const FETCH = 1 << 2;
    }
}

/// What the guest was accessing when the violation hit (bits 8:7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearAccess {
    /// No guest linear address is associated (bit 7 clear): for example a
    /// guest paging-structure access for a PDPTE load, or a physical access.
    None,
    /// An access to a guest paging-structure entry during the guest's own
    /// page walk (bit 7 set, bit 8 clear); the guest-linear-address VMCS
    /// field holds the address being translated.
    PagingStructure,
    /// An access to the translation of a linear address (bits 7 and 8 set).
    Translation(Option<GuestPage>),
}

/// The guest paging attributes of the linear address (bits 11:9), valid
/// when the CPU supports advanced VM-exit information for EPT violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestPage {
    /// A user-mode linear address (bit 9).
    pub user: bool,
    /// The guest's paging allows writes (bit 10).
    pub writable: bool,
    /// The guest's paging forbids execution (bit 11).
    pub execute_disable: bool,
}

/// A decoded EPT-violation exit qualification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EptViolation {
    /// The access that caused the violation.
    pub access: Access,
    /// What the EPT walk allowed for the address (bits 5:3, and bit 6 under
    /// mode-based execute control): the AND of the rights of every entry
    /// used. `Perms::NONE` means the walk ended at a not-present entry.
    pub allowed: Perms,
    /// What the guest was accessing.
    pub linear: LinearAccess,
    /// The violation happened while an IRET unblocked NMIs (bit 12); the
    /// handler must re-block NMIs before resuming (SDM 28.2.3).
    pub nmi_unblocking: bool,
    /// A shadow-stack access (bit 13).
    pub shadow_stack: bool,
    /// The page is a supervisor shadow-stack page (bit 14).
    pub supervisor_shadow_stack: bool,
    /// Caused by a guest-paging verification (HLAT) check (bit 15).
    pub guest_paging_verification: bool,
    /// Asynchronous to instruction execution (bit 16), e.g. a trace or PEBS
    /// write: the guest's RIP does not point at the accessing instruction.
    pub asynchronous: bool,
}

/// Bits 63:17 are reserved and cleared to 0 (Table 28-7).
const RESERVED: u64 = !0 << 17;
const LINEAR_VALID: u64 = 1 << 7;
const TRANSLATION: u64 = 1 << 8;

impl EptViolation {
    /// Decodes `qualification` for a CPU with `caps`, with mode-based
    /// execute control enabled if `mbec` (which changes bits 5 and 6).
    /// Bits the SDM calls undefined in that configuration are ignored;
    /// reserved bits that are set are an error.
    pub fn decode(qualification: u64, caps: &EptCaps, mbec: bool) -> Result<Self, Error> {
        let q = qualification;
        let bit = |n: u32| q & (1 << n) != 0;
        let mut reserved = q & RESERVED;
        if q & LINEAR_VALID == 0 {
            reserved |= q & TRANSLATION;
        }
        if reserved != 0 {
            return Err(Error::ReservedQualificationBits { bits: reserved });
        }
        let mut allowed = Perms::empty();
        allowed.set(Perms::READ, bit(3));
        allowed.set(Perms::WRITE, bit(4));
        allowed.set(Perms::EXECUTE, bit(5));
        allowed.set(Perms::USER_EXECUTE, mbec && bit(6));
        let linear = match (bit(7), bit(8)) {
            (false, _) => LinearAccess::None,
            (true, false) => LinearAccess::PagingStructure,
            (true, true) => LinearAccess::Translation(
                caps.supports(EptFeatures::ADVANCED_EXIT_INFO)
                    .then_some(GuestPage {
                        user: bit(9),
                        writable: bit(10),
                        execute_disable: bit(11),
                    }),
            ),
        };
        Ok(EptViolation {
            access: Access::from_bits_truncate(q as u8),
            allowed,
            linear,
            nmi_unblocking: bit(12),
            shadow_stack: bit(13),
            supervisor_shadow_stack: bit(14),
            guest_paging_verification: bit(15),
            asynchronous: bit(16),
        })
    }

    /// `true` if the walk ended at a not-present entry (nothing mapped, or
    /// a no-access mapping), rather than at a present entry lacking a right.
    pub fn not_present(&self) -> bool {
        self.allowed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(f: EptFeatures) -> EptCaps {
        EptCaps::new(f | EptFeatures::PAGE_WALK_4, 46).unwrap()
    }

    #[test]
    fn write_to_read_only_translation() {
        // Write; R and X allowed; linear address valid, final translation;
        // supervisor, guest-writable page.
        let q = 0b010 | (0b101 << 3) | (1 << 7) | (1 << 8) | (1 << 10);
        let v = EptViolation::decode(q, &caps(EptFeatures::ADVANCED_EXIT_INFO), false).unwrap();
        assert_eq!(v.access, Access::WRITE);
        assert_eq!(v.allowed, Perms::RX);
        assert!(!v.not_present());
        let page = GuestPage {
            user: false,
            writable: true,
            execute_disable: false,
        };
        assert_eq!(v.linear, LinearAccess::Translation(Some(page)));
        assert!(!v.nmi_unblocking && !v.asynchronous);
    }

    #[test]
    fn mode_based_execute_changes_bit_6() {
        let q = 0b100 | (1 << 3) | (1 << 6);
        let plain = EptViolation::decode(q, &caps(EptFeatures::empty()), false).unwrap();
        assert_eq!(plain.allowed, Perms::R);
        let mbec = EptViolation::decode(q, &caps(EptFeatures::empty()), true).unwrap();
        assert_eq!(mbec.allowed, Perms::R | Perms::USER_EXECUTE);
        assert_eq!(mbec.access, Access::FETCH);
        assert_eq!(mbec.linear, LinearAccess::None);
    }

    #[test]
    fn advanced_information_only_when_supported() {
        let q = 1 | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 11);
        let v = EptViolation::decode(q, &caps(EptFeatures::empty()), false).unwrap();
        assert_eq!(v.linear, LinearAccess::Translation(None));
        assert!(v.not_present());
        let v = EptViolation::decode(1 | (1 << 7), &caps(EptFeatures::empty()), false).unwrap();
        assert_eq!(v.linear, LinearAccess::PagingStructure);
    }

    #[test]
    fn flag_bits_12_to_16() {
        let names = |v: EptViolation| {
            [
                v.nmi_unblocking,
                v.shadow_stack,
                v.supervisor_shadow_stack,
                v.guest_paging_verification,
                v.asynchronous,
            ]
        };
        for n in 12..=16 {
            let v = EptViolation::decode(2 | (1 << n), &caps(EptFeatures::empty()), false).unwrap();
            let mut expect = [false; 5];
            expect[n - 12] = true;
            assert_eq!(names(v), expect, "bit {n}");
        }
    }

    #[test]
    fn reserved_bits_are_errors() {
        let c = caps(EptFeatures::all());
        assert_eq!(
            EptViolation::decode(1 | (1 << 17), &c, true),
            Err(Error::ReservedQualificationBits { bits: 1 << 17 })
        );
        assert_eq!(
            EptViolation::decode(1 << 63, &c, true),
            Err(Error::ReservedQualificationBits { bits: 1 << 63 })
        );
        // Bit 8 without bit 7 is reserved.
        assert_eq!(
            EptViolation::decode(1 | (1 << 8), &c, true),
            Err(Error::ReservedQualificationBits { bits: 1 << 8 })
        );
    }
}
