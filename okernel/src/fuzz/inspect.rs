//! [`Inspect`]: what the fuzzing oracles read of the EPT views beyond the
//! policy's [`Views`] (runs of equal rights, the monitor's ranges, guest
//! RAM in place), for the VM fuzzer's checks and the host `policy` fuzz
//! target (built with `fake`). [`ViewMemory`] implements it here, with its
//! public methods, so production builds have none of it; the fuzz build's
//! tracking decorator forwards it (`super::tracked`).

use core::sync::atomic::{AtomicU64, Ordering};

use ept::{FrameAllocator, PAGE_SIZE, Perms, View};

use crate::hw::phys::PhysMemory;
use crate::mem::{MemoryError, ViewMemory};
use crate::memmap::{Gpa, PhysRange, identity};
use crate::policy::views::{SharedFrames, Views};

/// What the fuzzing oracles read of the views (see the module docs).
/// Contexts are view slots, as in [`Views`].
pub trait Inspect: Views {
    /// The rights `ctx`'s view gives `gpa` (none where nothing maps it),
    /// and the end of the leaf or empty entry that decides them: every
    /// address up to it has the same rights (one walk per 4 KiB, 2 MiB or
    /// 1 GiB, SDM Vol. 3C §29.3.2).
    fn rights_at(&self, ctx: u16, gpa: Gpa) -> (Perms, u64);
    /// The monitor's memory, page-aligned outward: the loader's monitor
    /// ranges, then the frame pool (last).
    fn monitor(&self) -> &[PhysRange];
    /// Hands `f` the bytes of guest RAM `[gpa, gpa + len)` that
    /// [`Views::check_ram`] accepted, whatever the views map, in order as
    /// one or more consecutive slices (in place where the monitor's map
    /// allows: no copy). For the oracles' checksums.
    fn read_phys_with(
        &self,
        gpa: Gpa,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MemoryError>;
}

impl<A: SharedFrames, R: PhysMemory> Inspect for ViewMemory<A, R> {
    fn rights_at(&self, ctx: u16, gpa: Gpa) -> (Perms, u64) {
        match self.slot(usize::from(ctx)) {
            Some(v) => rights_at(v, gpa),
            None => (Perms::NONE, u64::MAX),
        }
    }

    fn monitor(&self) -> &[PhysRange] {
        ViewMemory::monitor(self)
    }

    fn read_phys_with(
        &self,
        gpa: Gpa,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, len)?;
        self.phys().read_with(identity(gpa), len, f);
        Ok(())
    }
}

/// [`Inspect::rights_at`] for one view: the last entry of the walk is a
/// leaf or an empty entry (rights 000b: not present), and it decides the
/// rights of the whole span its level covers. A 4 KiB entry's span is
/// extended over the following entries of its page table that give the
/// same rights (a few instructions each, not a walk each: the oracle
/// scans thousands of pages per check, most of them the monitor's,
/// unmapped in 4 KiB entries).
fn rights_at<A: FrameAllocator>(view: &View<A>, gpa: Gpa) -> (Perms, u64) {
    let Ok(path) = view.walk(gpa) else {
        return (Perms::NONE, u64::MAX);
    };
    let (level, entry) = path.last();
    let perms = entry.perms();
    let span = 1u64 << (12 + 9 * (u32::from(level) - 1));
    let end = (gpa.0 | (span - 1)).saturating_add(1);
    if level != 1 {
        return (perms, end);
    }
    // The walk reached level 1 through a level-2 table entry.
    let Some((_, pde)) = path.iter().find(|&(l, _)| l == 2) else {
        return (perms, end);
    };
    let Some(frame) = ept::PhysFrame::new(pde.addr()) else {
        return (perms, end);
    };
    let table = view.frames().table_ptr(frame).cast::<AtomicU64>();
    // SAFETY: `table_ptr` gives the page table of an allocated frame (the
    // `FrameAllocator` contract: ENTRIES entries, aligned), and this frame
    // is one of `view`'s tables (its walk just went through it), which
    // stays allocated while `view` is borrowed; entries are read
    // atomically, as the `ept` crate reads them.
    let table = unsafe { core::slice::from_raw_parts(table.as_ptr().cast_const(), ept::ENTRIES) };
    let first = ((gpa.0 >> 12) & 0x1ff) as usize;
    (
        perms,
        end + same_rights(&table[first + 1..], perms) * PAGE_SIZE,
    )
}

/// How many of `entries`, from the first, give exactly `perms`: eight at a
/// time while all eight do (three instructions an entry: a load, an or
/// and an and), then one by one.
fn same_rights(entries: &[AtomicU64], perms: Perms) -> u64 {
    let (mask, want) = (Perms::all().bits(), perms.bits());
    let mut same = 0;
    let mut eights = entries.chunks_exact(8);
    for eight in &mut eights {
        let (mut any, mut all) = (0, u64::MAX);
        for e in eight {
            let raw = e.load(Ordering::Acquire);
            any |= raw;
            all &= raw;
        }
        if any & mask != want || all & mask != want {
            // One of these eight differs: the count stops there.
            return same + one_by_one(eight.iter(), mask, want);
        }
        same += 8;
    }
    same + one_by_one(eights.remainder().iter(), mask, want)
}

fn one_by_one<'a>(entries: impl Iterator<Item = &'a AtomicU64>, mask: u64, want: u64) -> u64 {
    entries
        .take_while(|e| e.load(Ordering::Acquire) & mask == want)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_rights_stops_at_the_first_entry_that_differs() {
        let rx = Perms::READ | Perms::EXECUTE;
        for len in [0usize, 1, 7, 8, 9, 16, 23, 511] {
            for differ in 0..=len {
                let entries: Vec<AtomicU64> = (0..len)
                    .map(|i| {
                        // Address bits and memory type do not count, only rights.
                        let raw = (i as u64) << 12 | 6 << 3;
                        AtomicU64::new(raw | if i == differ { 1 } else { rx.bits() })
                    })
                    .collect();
                assert_eq!(same_rights(&entries, rx), differ as u64, "{len} {differ}");
            }
        }
        let none: Vec<AtomicU64> = (0..16).map(|i| AtomicU64::new(i << 12)).collect();
        assert_eq!(same_rights(&none, Perms::NONE), 16);
        assert_eq!(same_rights(&none, rx), 0);
    }
}
