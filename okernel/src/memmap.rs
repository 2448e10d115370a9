//! The physical memory map as the monitor keeps it: address ranges and
//! what each holds (RAM, firmware-reserved, device memory), which decides
//! how the base EPT view maps it. The loader builds it (`LaunchConfig`);
//! the views, the policy and the guest-memory rules read it.

#![forbid(unsafe_code)]

/// A physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// `[start, start + len)`.
    pub const fn new(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
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
    /// The range widened to 4 KiB page boundaries.
    pub const fn page_aligned_outward(&self) -> Self {
        Self {
            start: self.start & !0xfff,
            end: self.end.saturating_add(0xfff) & !0xfff,
        }
    }
}

/// What a physical range holds, and so how the base EPT view maps it.
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
