//! Physical memory maps: the firmware's view of RAM, kept in a fixed-size,
//! sorted list so the loader needs no allocator.

use core::fmt;

/// The physical range type of the loader's API: okernel's own, re-exported
/// for the loader's users.
pub use okernel::memmap::PhysRange;

/// What a region of the firmware memory map holds: the E820 type, as
/// multiboot2 and PVH report it.
///
/// The loader's input only. It becomes the guest's hand-off map
/// ([`okernel_abi::boot::GuestMemoryKind`], which adds the monitor's and
/// the loader's own regions and folds the ACPI kinds into reserved) and
/// the monitor's EPT classes ([`okernel::memmap::MemoryKind`]); a locked
/// policy region's kind ([`okernel_abi::policy::RegionKind`]) is another
/// thing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareKind {
    /// RAM free for use.
    Usable,
    /// ACPI tables that may be reclaimed after they are read.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Bad,
    /// Anything else: firmware, MMIO holes, unknown types.
    Reserved,
}

impl FirmwareKind {
    /// A short name for the console.
    pub fn name(self) -> &'static str {
        match self {
            FirmwareKind::Usable => "usable",
            FirmwareKind::AcpiReclaimable => "acpi-reclaimable",
            FirmwareKind::AcpiNvs => "acpi-nvs",
            FirmwareKind::Bad => "bad",
            FirmwareKind::Reserved => "reserved",
        }
    }

    /// The kind for an E820 type (shared by multiboot2 and PVH).
    pub fn from_e820(ty: u32) -> Self {
        match ty {
            1 => FirmwareKind::Usable,
            3 => FirmwareKind::AcpiReclaimable,
            4 => FirmwareKind::AcpiNvs,
            5 => FirmwareKind::Bad,
            _ => FirmwareKind::Reserved,
        }
    }
}

/// One region of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The addresses it covers.
    pub range: PhysRange,
    /// What it holds.
    pub kind: FirmwareKind,
}

/// The most regions a map holds; firmware maps are far smaller.
pub const MAX_REGIONS: usize = 64;

/// Errors building a memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The boot information lists more memory regions than okernel supports.
    TooManyRegions,
    /// A memory-map entry wraps around the end of the address space.
    Overflow {
        /// The entry's base address.
        base: u64,
        /// The entry's length.
        length: u64,
    },
    /// The memory map has no usable RAM.
    NoUsableRam,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::TooManyRegions => write!(f, "memory map has more than {MAX_REGIONS} regions"),
            MapError::Overflow { base, length } => write!(
                f,
                "memory-map entry base {base:#x} length {length:#x} wraps around"
            ),
            MapError::NoUsableRam => write!(f, "memory map has no usable RAM"),
        }
    }
}

/// A sorted memory map with at most [`MAX_REGIONS`] regions.
#[derive(Debug, Clone)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        const EMPTY: Region = Region {
            range: PhysRange::new(0, 0),
            kind: FirmwareKind::Reserved,
        };
        Self {
            regions: [EMPTY; MAX_REGIONS],
            len: 0,
        }
    }

    /// Adds a firmware entry; empty entries are ignored. Keeps the map
    /// sorted by start address.
    pub fn add(&mut self, base: u64, length: u64, kind: FirmwareKind) -> Result<(), MapError> {
        let range = PhysRange::from_len(base, length).ok_or(MapError::Overflow { base, length })?;
        if range.is_empty() {
            return Ok(());
        }
        if self.len == MAX_REGIONS {
            return Err(MapError::TooManyRegions);
        }
        let at = self.regions[..self.len]
            .iter()
            .position(|r| r.range.start > base)
            .unwrap_or(self.len);
        self.regions.copy_within(at..self.len, at + 1);
        self.regions[at] = Region { range, kind };
        self.len += 1;
        Ok(())
    }

    /// The regions, sorted by start address.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Fails unless the map has some usable RAM.
    pub fn require_usable(&self) -> Result<(), MapError> {
        if self.usable().next().is_some() {
            Ok(())
        } else {
            Err(MapError::NoUsableRam)
        }
    }

    /// The usable ranges.
    pub fn usable(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.regions()
            .iter()
            .filter(|r| r.kind == FirmwareKind::Usable)
            .map(|r| r.range)
    }

    /// Whether `range` lies wholly inside usable RAM. Adjacent usable
    /// regions count as one.
    pub fn is_usable(&self, range: &PhysRange) -> bool {
        let mut covered = range.start;
        for r in self.usable() {
            if r.start <= covered && covered < r.end {
                covered = r.end;
            }
            if covered >= range.end {
                return true;
            }
        }
        range.is_empty()
    }

    /// The lowest `align`-aligned range of `len` bytes in usable RAM, at or
    /// above `floor`, that overlaps none of `avoid`. `align` must be a power
    /// of two.
    pub fn find_free(
        &self,
        len: u64,
        align: u64,
        floor: u64,
        avoid: &[PhysRange],
    ) -> Option<PhysRange> {
        debug_assert!(align.is_power_of_two());
        for r in self.usable() {
            let mut start = align_up(r.start.max(floor), align)?;
            loop {
                let cand = PhysRange::from_len(start, len)?;
                if cand.end > r.end {
                    break;
                }
                match avoid
                    .iter()
                    .filter(|a| a.overlaps(&cand))
                    .map(|a| a.end)
                    .max()
                {
                    None => return Some(cand),
                    Some(end) => start = align_up(end, align)?,
                }
            }
        }
        None
    }

    /// The end of the highest usable byte.
    pub fn top_of_ram(&self) -> u64 {
        self.usable().map(|r| r.end).max().unwrap_or(0)
    }
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0x10_0000, 0x700_0000, FirmwareKind::Usable).unwrap();
        m.add(0, 0x9_fc00, FirmwareKind::Usable).unwrap();
        m.add(0xf_0000, 0x1_0000, FirmwareKind::Reserved).unwrap();
        m
    }

    #[test]
    fn keeps_regions_sorted_and_drops_empty_ones() {
        let mut m = map();
        m.add(0x5000, 0, FirmwareKind::Usable).unwrap();
        let starts: Vec<u64> = m.regions().iter().map(|r| r.range.start).collect();
        assert_eq!(starts, vec![0, 0xf_0000, 0x10_0000]);
    }

    #[test]
    fn rejects_wrapping_entries_and_overflowing_maps() {
        let mut m = MemoryMap::new();
        assert_eq!(
            m.add(u64::MAX, 2, FirmwareKind::Usable),
            Err(MapError::Overflow {
                base: u64::MAX,
                length: 2
            })
        );
        for i in 0..MAX_REGIONS as u64 {
            m.add(i * 0x1000, 0x1000, FirmwareKind::Usable).unwrap();
        }
        assert_eq!(
            m.add(1 << 40, 1, FirmwareKind::Usable),
            Err(MapError::TooManyRegions)
        );
        assert_eq!(
            MemoryMap::new().require_usable(),
            Err(MapError::NoUsableRam)
        );
    }

    #[test]
    fn usable_checks_cover_adjacent_regions_only() {
        let mut m = map();
        m.add(0x710_0000, 0x10_0000, FirmwareKind::Usable).unwrap();
        assert!(m.is_usable(&PhysRange {
            start: 0x700_0000,
            end: 0x720_0000
        }));
        assert!(!m.is_usable(&PhysRange {
            start: 0x9_f000,
            end: 0x10_1000
        }));
        assert!(!m.is_usable(&PhysRange {
            start: 0x800_0000,
            end: 0x800_1000
        }));
    }

    #[test]
    fn find_free_skips_what_it_must_avoid() {
        let m = map();
        let avoid = [PhysRange {
            start: 0x10_0000,
            end: 0x20_0800,
        }];
        let r = m.find_free(0x2000, 0x1000, 0x10_0000, &avoid).unwrap();
        assert_eq!(
            r,
            PhysRange {
                start: 0x20_1000,
                end: 0x20_3000
            }
        );
        assert!(m.find_free(1 << 40, 0x1000, 0, &[]).is_none());
        assert!(m.find_free(u64::MAX, 0x1000, 0, &[]).is_none());
    }
}
