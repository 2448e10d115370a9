//! The extended-page-table pointer (EPTP), the VMCS field that names a view.
//!
//! Format: SDM Vol. 3C, 25.6.11 "Extended-Page-Table Pointer (EPTP)", Table
//! 25-9: bits 2:0 the memory type of the paging structures (UC or WB), bits
//! 5:3 the page-walk length minus one, bit 6 enables accessed and dirty
//! flags, bit 7 enables supervisor shadow-stack enforcement, bits 11:8 are
//! reserved and bits N-1:12 hold the PML4 table's address. VM entry checks
//! these rules (27.2.1.1); an EPTP built here passes them.

use crate::addr::PhysFrame;
use crate::caps::{EptCaps, EptFeatures};
use crate::entry::MemoryType;
use crate::error::Error;

const MEMORY_TYPE_MASK: u64 = 0b111;
const WALK_LENGTH_SHIFT: u32 = 3;
const WALK_LENGTH_MASK: u64 = 0b111 << WALK_LENGTH_SHIFT;
/// Page-walk length minus one for a 4-level EPT.
const WALK_4: u64 = 3;
const ACCESSED_DIRTY: u64 = 1 << 6;
const SUPERVISOR_SHADOW_STACK: u64 = 1 << 7;
const RESERVED_LOW: u64 = 0xf00;

/// A validated EPTP value for a 4-level EPT.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Eptp(u64);

impl Eptp {
    /// The EPTP for the PML4 table in `root`, with the paging structures of
    /// `memory_type` and accessed/dirty flags enabled if `accessed_dirty`.
    pub fn new(
        root: PhysFrame,
        memory_type: MemoryType,
        accessed_dirty: bool,
        caps: &EptCaps,
    ) -> Result<Self, Error> {
        let needed = match memory_type {
            MemoryType::Uncacheable => EptFeatures::EPTP_UC,
            MemoryType::WriteBack => EptFeatures::EPTP_WB,
            other => {
                return Err(Error::EptpMemoryTypeUnsupported {
                    value: other.bits(),
                });
            }
        };
        if !caps.supports(needed) {
            return Err(Error::EptpMemoryTypeUnsupported {
                value: memory_type.bits(),
            });
        }
        if accessed_dirty && !caps.supports(EptFeatures::ACCESSED_DIRTY) {
            return Err(Error::AccessedDirtyUnsupported);
        }
        if root.addr() >= caps.hpa_limit() {
            return Err(Error::HpaOutOfRange {
                end: root.addr(),
                bits: caps.phys_addr_bits(),
            });
        }
        let ad = if accessed_dirty { ACCESSED_DIRTY } else { 0 };
        Ok(Eptp(
            root.addr() | memory_type.bits() as u64 | (WALK_4 << WALK_LENGTH_SHIFT) | ad,
        ))
    }

    /// Checks a raw EPTP (for example one read back from the VMCS) against
    /// the rules of SDM 27.2.1.1 for a 4-level EPT on a CPU with `caps`.
    pub fn from_raw(raw: u64, caps: &EptCaps) -> Result<Self, Error> {
        let malformed = |reason| Error::MalformedEptp { raw, reason };
        if (raw & WALK_LENGTH_MASK) >> WALK_LENGTH_SHIFT != WALK_4 {
            return Err(malformed("page-walk length is not 4"));
        }
        if raw & RESERVED_LOW != 0 {
            return Err(malformed("reserved bits 11:8 are set"));
        }
        if raw & SUPERVISOR_SHADOW_STACK != 0 {
            return Err(malformed(
                "supervisor shadow-stack enforcement is not supported",
            ));
        }
        let Some(memory_type) = MemoryType::from_bits((raw & MEMORY_TYPE_MASK) as u8) else {
            return Err(malformed("reserved memory type"));
        };
        let root = PhysFrame::containing(raw);
        if root.addr() >= caps.hpa_limit() {
            return Err(malformed("address bits beyond MAXPHYADDR are set"));
        }
        Eptp::new(root, memory_type, raw & ACCESSED_DIRTY != 0, caps)
    }

    /// The raw value to write to the VMCS EPT-pointer field.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The PML4 table.
    pub const fn root(self) -> PhysFrame {
        PhysFrame::containing(self.0)
    }

    /// The memory type used to access the paging structures.
    pub const fn memory_type(self) -> MemoryType {
        match MemoryType::from_bits((self.0 & MEMORY_TYPE_MASK) as u8) {
            Some(mt) => mt,
            // Unreachable: both constructors store UC or WB.
            None => MemoryType::Uncacheable,
        }
    }

    /// `true` if accessed and dirty flags are enabled.
    pub const fn accessed_dirty(self) -> bool {
        self.0 & ACCESSED_DIRTY != 0
    }

    /// The number of levels walked (always 4).
    pub const fn page_walk_length(self) -> u8 {
        (((self.0 & WALK_LENGTH_MASK) >> WALK_LENGTH_SHIFT) + 1) as u8
    }
}

impl core::fmt::Debug for Eptp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Eptp({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(f: EptFeatures) -> EptCaps {
        EptCaps::new(f | EptFeatures::PAGE_WALK_4, 39).unwrap()
    }

    #[test]
    fn builds_the_sdm_layout() {
        let root = PhysFrame::new(0x12_3000).unwrap();
        let all = caps(EptFeatures::all());
        let e = Eptp::new(root, MemoryType::WriteBack, true, &all).unwrap();
        assert_eq!(e.raw(), 0x12_3000 | 6 | (3 << 3) | (1 << 6));
        assert_eq!(e.root(), root);
        assert_eq!(e.memory_type(), MemoryType::WriteBack);
        assert!(e.accessed_dirty());
        assert_eq!(e.page_walk_length(), 4);
        assert_eq!(Eptp::from_raw(e.raw(), &all), Ok(e));
        let uc = Eptp::new(root, MemoryType::Uncacheable, false, &all).unwrap();
        assert_eq!(uc.raw(), 0x12_3000 | (3 << 3));
    }

    #[test]
    fn refuses_what_the_cpu_cannot_do() {
        let root = PhysFrame::new(0x1000).unwrap();
        let wb_only = caps(EptFeatures::EPTP_WB);
        assert_eq!(
            Eptp::new(root, MemoryType::Uncacheable, false, &wb_only),
            Err(Error::EptpMemoryTypeUnsupported { value: 0 })
        );
        assert_eq!(
            Eptp::new(
                root,
                MemoryType::WriteThrough,
                false,
                &caps(EptFeatures::all())
            ),
            Err(Error::EptpMemoryTypeUnsupported { value: 4 })
        );
        assert_eq!(
            Eptp::new(root, MemoryType::WriteBack, true, &wb_only),
            Err(Error::AccessedDirtyUnsupported)
        );
        let high = PhysFrame::new(1 << 39).unwrap();
        assert!(matches!(
            Eptp::new(high, MemoryType::WriteBack, false, &wb_only),
            Err(Error::HpaOutOfRange { .. })
        ));
    }

    #[test]
    fn from_raw_checks_every_field() {
        let all = caps(EptFeatures::all());
        let good = 0x5000 | 6 | (3 << 3);
        assert!(Eptp::from_raw(good, &all).is_ok());
        for bad in [
            good & !(3 << 3),              // walk length 1
            (good & !(7 << 3)) | (4 << 3), // walk length 5
            good | 0x100,                  // reserved bit 8
            good | 0x80,                   // shadow-stack enforcement
            (good & !7) | 2,               // reserved memory type
            good | (1 << 40),              // beyond MAXPHYADDR
        ] {
            assert!(
                matches!(Eptp::from_raw(bad, &all), Err(Error::MalformedEptp { .. })),
                "{bad:#x}"
            );
        }
    }
}
