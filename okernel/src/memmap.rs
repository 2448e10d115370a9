//! The physical memory map as the monitor keeps it: address ranges and
//! what each holds (RAM, firmware-reserved, device memory), which decides
//! how the base EPT view maps it. The loader builds it (`LaunchConfig`);
//! the views, the policy and the guest-memory rules read it.

#![forbid(unsafe_code)]

use core::fmt;

pub use ept::{Gpa, Hpa};

/// The host-physical address of guest-physical `gpa` in guest RAM: every
/// EPT view maps guest RAM to the same address (`launch::ept_view`'s
/// identity map), so the monitor reaches guest RAM that the memory map
/// and its monitor ranges allow at `gpa` itself, whatever a view maps.
pub const fn identity(gpa: Gpa) -> Hpa {
    Hpa(gpa.0)
}

/// A physical address range `[start, end)`: the one range type of the
/// monitor and the loader (firmware maps, images, hand-off areas, EPT
/// views).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// `[start, start + len)`, its end clamped to `u64::MAX` (see
    /// [`PhysRange::from_len`] for the checked form).
    pub const fn new(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
        }
    }
    /// `[start, start + len)`, or `None` if it wraps around the address
    /// space.
    pub const fn from_len(start: u64, len: u64) -> Option<Self> {
        match start.checked_add(len) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }
    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    /// Whether the range is empty.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    /// Whether two ranges share a byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }
    /// Whether `addr` lies in the range.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// Whether `other` lies wholly inside the range (an empty `other`
    /// counts when its bounds do).
    pub const fn contains_range(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
    /// The range widened to 4 KiB page boundaries.
    pub const fn page_aligned_outward(&self) -> Self {
        Self {
            start: self.start & !0xfff,
            end: self.end.saturating_add(0xfff) & !0xfff,
        }
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#011x}, {:#011x})", self.start, self.end)
    }
}

/// What a physical range holds, and so how the base EPT view maps it.
///
/// The monitor's own classification, which the loader derives from the
/// firmware map (`loader::memmap::FirmwareKind`, the E820 types) and the
/// device ranges it finds. Not the kinds of the guest's hand-off map
/// ([`okernel_abi::boot::GuestMemoryKind`]) nor of a locked policy region
/// ([`okernel_abi::policy::RegionKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM: identity-mapped read/write/execute, write-back.
    Ram,
    /// Firmware-reserved memory (ACPI, BIOS areas): identity-mapped
    /// read/write/execute, uncacheable.
    Reserved,
    /// Device memory (APIC, PCI BARs, framebuffers): identity-mapped
    /// read/write, uncacheable.
    Mmio,
}

/// One entry of the physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    /// The range.
    pub range: PhysRange,
    /// What it holds.
    pub kind: MemoryKind,
}

#[cfg(test)]
mod tests {
    use super::PhysRange;

    #[test]
    fn checked_and_saturating_constructors_differ_only_on_wrap() {
        assert_eq!(
            PhysRange::from_len(0x1000, 0x2000),
            Some(PhysRange::new(0x1000, 0x2000))
        );
        assert_eq!(PhysRange::from_len(u64::MAX, 2), None);
        assert_eq!(PhysRange::new(u64::MAX, 2).end, u64::MAX);
    }

    #[test]
    fn contains_takes_an_address_contains_range_a_range() {
        let r = PhysRange {
            start: 0x1000,
            end: 0x3000,
        };
        assert!(r.contains(0x1000) && !r.contains(0x3000));
        assert!(r.contains_range(&PhysRange {
            start: 0x2000,
            end: 0x3000
        }));
        assert!(!r.contains_range(&PhysRange {
            start: 0x2000,
            end: 0x3001
        }));
        assert_eq!(r.to_string(), "[0x000001000, 0x000003000)");
    }
}
