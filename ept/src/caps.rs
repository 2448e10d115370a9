//! The CPU's EPT capabilities, passed to a view as a value.
//!
//! The processor reports them in `IA32_VMX_EPT_VPID_CAP` (MSR 0x48C, SDM Vol.
//! 3D, Appendix A.10 "VPID and EPT Capabilities") and in the allowed-1 half of
//! `IA32_VMX_PROCBASED_CTLS2` (MSR 0x48B, Appendix A.3.3). The library never
//! reads MSRs itself: the caller decodes them with [`EptCaps::from_msrs`] (or
//! builds a set by hand in tests) and hands the value to
//! [`View::new`](crate::View::new).

use crate::addr::PageSize;
use crate::error::Error;
use bitflags::bitflags;

bitflags! {
    /// EPT features a processor may support.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EptFeatures: u32 {
        /// Execute-only translations (`IA32_VMX_EPT_VPID_CAP` bit 0).
        const EXECUTE_ONLY = 1 << 0;
        /// A 4-level page walk (bit 6); this library needs it.
        const PAGE_WALK_4 = 1 << 1;
        /// Uncacheable EPT paging structures (bit 8).
        const EPTP_UC = 1 << 2;
        /// Write-back EPT paging structures (bit 14).
        const EPTP_WB = 1 << 3;
        /// 2 MiB pages mapped by EPT PDEs (bit 16).
        const PAGES_2M = 1 << 4;
        /// 1 GiB pages mapped by EPT PDPTEs (bit 17).
        const PAGES_1G = 1 << 5;
        /// Accessed and dirty flags (bit 21, SDM 29.3.5).
        const ACCESSED_DIRTY = 1 << 6;
        /// Advanced VM-exit information for EPT violations (bit 22): bits
        /// 11:9 of the exit qualification are valid.
        const ADVANCED_EXIT_INFO = 1 << 7;
        /// Single-context INVEPT (bit 25).
        const INVEPT_SINGLE_CONTEXT = 1 << 8;
        /// All-context INVEPT (bit 26).
        const INVEPT_ALL_CONTEXT = 1 << 9;
        /// Mode-based execute control for EPT: the secondary processor-based
        /// control bit 22 may be 1, and EPT bit 10 grants user-mode execute.
        const MODE_BASED_EXECUTE = 1 << 10;
        /// EPT-violation #VE: secondary control bit 18 may be 1, which gives
        /// EPT bit 63 (suppress #VE) its meaning.
        const VIRTUALIZATION_EXCEPTIONS = 1 << 11;
    }
}

/// (bit in `IA32_VMX_EPT_VPID_CAP`, feature) pairs.
const EPT_VPID_CAP_BITS: [(u32, EptFeatures); 10] = [
    (0, EptFeatures::EXECUTE_ONLY),
    (6, EptFeatures::PAGE_WALK_4),
    (8, EptFeatures::EPTP_UC),
    (14, EptFeatures::EPTP_WB),
    (16, EptFeatures::PAGES_2M),
    (17, EptFeatures::PAGES_1G),
    (21, EptFeatures::ACCESSED_DIRTY),
    (22, EptFeatures::ADVANCED_EXIT_INFO),
    (25, EptFeatures::INVEPT_SINGLE_CONTEXT),
    (26, EptFeatures::INVEPT_ALL_CONTEXT),
];

/// (secondary processor-based control bit, feature) pairs.
const PROCBASED2_BITS: [(u32, EptFeatures); 2] = [
    (18, EptFeatures::VIRTUALIZATION_EXCEPTIONS),
    (22, EptFeatures::MODE_BASED_EXECUTE),
];

/// What the CPU's EPT can do, and how wide its physical addresses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EptCaps {
    features: EptFeatures,
    phys_addr_bits: u8,
}

impl EptCaps {
    /// A capability set. `phys_addr_bits` is MAXPHYADDR
    /// (`CPUID.80000008H:EAX[7:0]`, SDM Vol. 3A 4.1.4).
    pub const fn new(features: EptFeatures, phys_addr_bits: u8) -> Result<Self, Error> {
        if !features.contains(EptFeatures::PAGE_WALK_4) {
            return Err(Error::PageWalk4Unsupported);
        }
        if phys_addr_bits < 36 || phys_addr_bits > 52 {
            return Err(Error::PhysAddrBits {
                bits: phys_addr_bits,
            });
        }
        Ok(EptCaps {
            features,
            phys_addr_bits,
        })
    }

    /// Decodes `IA32_VMX_EPT_VPID_CAP` and the raw 64-bit
    /// `IA32_VMX_PROCBASED_CTLS2` (whose bits 63:32 are the allowed-1
    /// settings of the secondary processor-based controls).
    pub fn from_msrs(
        ept_vpid_cap: u64,
        procbased_ctls2: u64,
        phys_addr_bits: u8,
    ) -> Result<Self, Error> {
        let allowed1 = procbased_ctls2 >> 32;
        let from = |raw: u64, table: &[(u32, EptFeatures)]| {
            table
                .iter()
                .filter(|(bit, _)| raw & (1 << bit) != 0)
                .fold(EptFeatures::empty(), |acc, (_, f)| acc | *f)
        };
        let features = from(ept_vpid_cap, &EPT_VPID_CAP_BITS) | from(allowed1, &PROCBASED2_BITS);
        Self::new(features, phys_addr_bits)
    }

    /// The supported features.
    pub const fn features(self) -> EptFeatures {
        self.features
    }

    /// `true` if every feature in `f` is supported.
    #[inline]
    pub const fn supports(self, f: EptFeatures) -> bool {
        self.features.contains(f)
    }

    /// MAXPHYADDR: host-physical addresses are below `2^phys_addr_bits`.
    pub const fn phys_addr_bits(self) -> u8 {
        self.phys_addr_bits
    }

    /// One past the highest host-physical address.
    pub const fn hpa_limit(self) -> u64 {
        1 << self.phys_addr_bits
    }

    /// The same capabilities without `f` (for example a "4 KiB pages only"
    /// baseline: `caps.without(EptFeatures::PAGES_2M | EptFeatures::PAGES_1G)`).
    pub const fn without(self, f: EptFeatures) -> Self {
        EptCaps {
            features: self.features.difference(f),
            phys_addr_bits: self.phys_addr_bits,
        }
    }

    /// `true` if a leaf entry mapping a page of `size` is allowed.
    #[inline]
    pub const fn allows(self, size: PageSize) -> bool {
        match size {
            PageSize::Size4K => true,
            PageSize::Size2M => self.supports(EptFeatures::PAGES_2M),
            PageSize::Size1G => self.supports(EptFeatures::PAGES_1G),
        }
    }

    /// `true` if an entry at `level` (1..=4) may be a leaf.
    #[inline]
    pub(crate) const fn leaf_at(self, level: u8) -> bool {
        match PageSize::from_level(level) {
            Some(size) => self.allows(size),
            None => false,
        }
    }

    /// The largest page size allowed.
    pub const fn largest_page(self) -> PageSize {
        if self.allows(PageSize::Size1G) {
            PageSize::Size1G
        } else if self.allows(PageSize::Size2M) {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_msrs() {
        // IA32_VMX_EPT_VPID_CAP of a Skylake server: execute-only, 4-level
        // walk, UC, WB, 2M, 1G, INVEPT, A/D, advanced exit information,
        // single- and all-context INVEPT, INVVPID.
        let cap = 0x0f01_0673_4141u64;
        let ctls2 = (1u64 << 22 | 1 << 18) << 32;
        let caps = EptCaps::from_msrs(cap, ctls2, 39).unwrap();
        assert!(caps.supports(
            EptFeatures::EXECUTE_ONLY
                | EptFeatures::PAGE_WALK_4
                | EptFeatures::ACCESSED_DIRTY
                | EptFeatures::ADVANCED_EXIT_INFO
                | EptFeatures::INVEPT_SINGLE_CONTEXT
                | EptFeatures::MODE_BASED_EXECUTE
                | EptFeatures::VIRTUALIZATION_EXCEPTIONS
        ));
        assert_eq!(caps.largest_page(), PageSize::Size1G);
        assert_eq!(caps.hpa_limit(), 1 << 39);
        // Bit 22 in the allowed-0 half does not count.
        let low_only = EptCaps::from_msrs(cap, 1 << 22, 39).unwrap();
        assert!(!low_only.supports(EptFeatures::MODE_BASED_EXECUTE));
    }

    #[test]
    fn refuses_unusable_sets() {
        assert_eq!(
            EptCaps::from_msrs(0, 0, 46),
            Err(Error::PageWalk4Unsupported)
        );
        assert_eq!(
            EptCaps::new(EptFeatures::PAGE_WALK_4, 53),
            Err(Error::PhysAddrBits { bits: 53 })
        );
        assert_eq!(
            EptCaps::new(EptFeatures::PAGE_WALK_4, 35),
            Err(Error::PhysAddrBits { bits: 35 })
        );
    }

    #[test]
    fn page_size_limits() {
        let all = EptCaps::new(EptFeatures::all(), 46).unwrap();
        let small = all.without(EptFeatures::PAGES_2M | EptFeatures::PAGES_1G);
        assert_eq!(small.largest_page(), PageSize::Size4K);
        assert!(!small.leaf_at(2) && small.leaf_at(1));
        let mid = all.without(EptFeatures::PAGES_1G);
        assert_eq!(mid.largest_page(), PageSize::Size2M);
        assert!(!all.leaf_at(4) && all.leaf_at(3));
    }
}
