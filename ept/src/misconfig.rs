//! EPT misconfigurations: entries the processor refuses to use.
//!
//! SDM Vol. 3C, 29.3.3.1 "EPT Misconfigurations": a present entry (bits 2:0
//! not all zero, or bit 10 set under mode-based execute control) is a
//! misconfiguration if it grants write without read, is execute-only on a
//! CPU without execute-only translations, sets a reserved bit, or (as the
//! last entry of a walk) holds a reserved memory type (2, 3 or 7). The VM
//! exit (basic exit reason 49) reports only the guest-physical address, so
//! the exit handler walks the view to find the culprit: [`WalkPath::
//! misconfiguration`]. A view built by this crate never contains one.

use crate::addr::PageSize;
use crate::caps::{EptCaps, EptFeatures};
use crate::entry::{Entry, EntryFlags, Perms};
use crate::walk::WalkPath;

/// Why an entry is an EPT misconfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misconfiguration {
    /// Write access without read access (bits 1:0 = 10b).
    WriteWithoutRead,
    /// Execute access without read access, and the CPU does not support
    /// execute-only translations.
    ExecuteOnlyUnsupported,
    /// A leaf of a page size the CPU does not support (bit 7 is reserved
    /// there).
    PageSizeUnsupported(PageSize),
    /// Reserved bits (address bits at or above MAXPHYADDR, bits 7:3 of a
    /// non-leaf entry, the low address bits of a large page).
    ReservedBits(u64),
    /// A leaf with a reserved memory type.
    ReservedMemoryType(u8),
}

/// A misconfigured entry found on a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MisconfigReport {
    /// The entry's level (4 = PML4E ... 1 = PTE).
    pub level: u8,
    /// The entry.
    pub entry: Entry,
    /// What is wrong with it.
    pub cause: Misconfiguration,
}

/// Bits `lo..=hi` set.
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Checks one entry at `level` (1..=4) of a walk, for a CPU with `caps`
/// and with mode-based execute control enabled if `mbec`.
pub fn check_entry(
    entry: Entry,
    level: u8,
    caps: &EptCaps,
    mbec: bool,
) -> Result<(), Misconfiguration> {
    let perms = entry.perms();
    let user_exec = mbec && perms.contains(Perms::USER_EXECUTE);
    let read = perms.contains(Perms::READ);
    if !perms.intersects(Perms::RWX) && !user_exec {
        return Ok(()); // not present
    }
    if perms.contains(Perms::WRITE) && !read {
        return Err(Misconfiguration::WriteWithoutRead);
    }
    if !read && !caps.supports(EptFeatures::EXECUTE_ONLY) {
        return Err(Misconfiguration::ExecuteOnlyUnsupported);
    }
    let large = entry.flags().contains(EntryFlags::LARGE_PAGE);
    let size = match level {
        1 => Some(PageSize::Size4K),
        2 | 3 if large => PageSize::from_level(level),
        _ => None,
    };
    if let Some(size) = size
        && !caps.allows(size)
    {
        return Err(Misconfiguration::PageSizeUnsupported(size));
    }
    let mut reserved = bits(u32::from(caps.phys_addr_bits()), 51);
    reserved |= match (level, size) {
        (_, None) => bits(3, 7),
        (3, Some(_)) => bits(12, 29),
        (2, Some(_)) => bits(12, 20),
        _ => 0,
    };
    if entry.raw() & reserved != 0 {
        return Err(Misconfiguration::ReservedBits(entry.raw() & reserved));
    }
    if size.is_some() && entry.memory_type().is_none() {
        return Err(Misconfiguration::ReservedMemoryType(
            entry.memory_type_bits(),
        ));
    }
    Ok(())
}

impl WalkPath {
    /// The first misconfigured entry on this walk, if any.
    pub fn misconfiguration(&self, caps: &EptCaps, mbec: bool) -> Option<MisconfigReport> {
        self.iter().find_map(|(level, entry)| {
            check_entry(entry, level, caps, mbec)
                .err()
                .map(|cause| MisconfigReport {
                    level,
                    entry,
                    cause,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysFrame;
    use crate::entry::{Attributes, MemoryType};
    use Misconfiguration::*;

    fn caps(f: EptFeatures) -> EptCaps {
        EptCaps::new(f | EptFeatures::PAGE_WALK_4, 39).unwrap()
    }

    #[test]
    fn rights_combinations() {
        let all = caps(EptFeatures::all());
        let no_xo = all.without(EptFeatures::EXECUTE_ONLY);
        let pte = |rights: u64| Entry::from_raw(0x1000 | (6 << 3) | rights);
        assert_eq!(
            check_entry(pte(0b010), 1, &all, false),
            Err(WriteWithoutRead)
        );
        assert_eq!(
            check_entry(pte(0b110), 1, &all, false),
            Err(WriteWithoutRead)
        );
        assert_eq!(check_entry(pte(0b100), 1, &all, false), Ok(()));
        assert_eq!(
            check_entry(pte(0b100), 1, &no_xo, false),
            Err(ExecuteOnlyUnsupported)
        );
        // Bit 10 alone makes an entry present only under MBEC.
        assert_eq!(check_entry(pte(1 << 10), 1, &no_xo, false), Ok(()));
        assert_eq!(
            check_entry(pte(1 << 10), 1, &no_xo, true),
            Err(ExecuteOnlyUnsupported)
        );
        assert_eq!(check_entry(pte(0), 1, &no_xo, true), Ok(()));
        assert_eq!(check_entry(pte(0b111), 1, &no_xo, true), Ok(()));
    }

    #[test]
    fn reserved_bits_by_level() {
        let all = caps(EptFeatures::all());
        let table = Entry::table(PhysFrame::new(0x5000).unwrap());
        assert_eq!(check_entry(table, 4, &all, true), Ok(()));
        let with = |e: Entry, b: u64| Entry::from_raw(e.raw() | b);
        assert_eq!(
            check_entry(with(table, 1 << 7), 4, &all, false),
            Err(ReservedBits(1 << 7))
        );
        assert_eq!(
            check_entry(with(table, 1 << 4), 3, &all, false),
            Err(ReservedBits(1 << 4))
        );
        assert_eq!(
            check_entry(with(table, 1 << 40), 2, &all, false),
            Err(ReservedBits(1 << 40))
        );
        let huge = Entry::leaf(1 << 30, Attributes::RAM, 3);
        assert_eq!(check_entry(huge, 3, &all, false), Ok(()));
        assert_eq!(
            check_entry(with(huge, 1 << 21), 3, &all, false),
            Err(ReservedBits(1 << 21))
        );
        let big = Entry::leaf(2 << 20, Attributes::RAM, 2);
        assert_eq!(
            check_entry(with(big, 1 << 12), 2, &all, false),
            Err(ReservedBits(1 << 12))
        );
        let small = Entry::leaf(0x3000, Attributes::RAM, 1);
        // Bit 7 is ignored in a PTE, and bits 63:52 are not reserved.
        assert_eq!(
            check_entry(with(small, (1 << 7) | (1 << 62)), 1, &all, false),
            Ok(())
        );
    }

    #[test]
    fn page_sizes_and_memory_types() {
        let no_1g = caps(EptFeatures::all()).without(EptFeatures::PAGES_1G);
        let huge = Entry::leaf(1 << 30, Attributes::RAM, 3);
        assert_eq!(
            check_entry(huge, 3, &no_1g, false),
            Err(PageSizeUnsupported(PageSize::Size1G))
        );
        let base = Entry::leaf(
            0x3000,
            Attributes::new(Perms::R, MemoryType::Uncacheable),
            1,
        );
        for mt in 0..8u64 {
            let e = Entry::from_raw(base.raw() | (mt << 3));
            let expect = if matches!(mt, 2 | 3 | 7) {
                Err(ReservedMemoryType(mt as u8))
            } else {
                Ok(())
            };
            assert_eq!(check_entry(e, 1, &no_1g, false), expect);
        }
        // Bits 5:3 of a non-leaf entry are reserved, not a memory type.
        let table = Entry::from_raw(Entry::table(PhysFrame::new(0x5000).unwrap()).raw() | (2 << 3));
        assert_eq!(
            check_entry(table, 2, &no_1g, false),
            Err(ReservedBits(2 << 3))
        );
    }
}
