//! The EPT views the protection policy works on: the trusted view (slot
//! 0, the base view `launch` builds) and one view per untrusted context
//! (slots 1..=[`MAX_CONTEXTS`]), each a copy of the trusted view made with
//! the `ept` crate's `try_clone` from the monitor's frame pool.
//!
//! [`Views`] is what the policy needs of them, as a trait object so the
//! hypercall handlers stay independent of the frame allocator;
//! [`ViewMemory`] implements it. Every view change goes through
//! [`Views::protect`], which is all-or-nothing per call (the `ept` crate's
//! plan/reserve/apply); the caller checks [`Views::frames_available`]
//! against [`FRAMES_PER_PROTECT`] per call first, so a sequence of calls
//! cannot run out half-way (see `policy::apply`).

#[cfg(any(test, feature = "fake", feature = "fuzz"))]
use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(any(test, feature = "fake", feature = "fuzz"))]
use ept::PAGE_SIZE;
use ept::{FrameAllocator, Gpa, Perms, Translation, View};
use okernel_abi::policy::MAX_CONTEXTS;

use crate::hypercall::memory::{MemoryError, PhysMemory, ViewMemory};
use crate::launch::config::PhysRange;

/// The most new tables one `protect` of a contiguous range can need: at
/// each end of the range a 1 GiB leaf may split into a page directory and
/// the 2 MiB leaf at the boundary into a page table (SDM Vol. 3C §29.3.2:
/// 4-level EPT, leaves at the PDPT, PD and PT levels).
pub const FRAMES_PER_PROTECT: u64 = 4;

/// A frame allocator that several views can share (a handle: cloning it
/// gives another handle to the same frames) and that can say how many
/// frames it still has.
pub trait SharedFrames: FrameAllocator + Clone {
    /// Frames that can still be allocated.
    fn available(&self) -> u64;
}

/// The policy's access to the views and to guest RAM. Contexts are view
/// slots: 0 = trusted, 1..=[`MAX_CONTEXTS`] = untrusted.
pub trait Views {
    /// Whether context `ctx` has a view.
    fn is_live(&self, ctx: u16) -> bool;
    /// The context whose view the guest runs in.
    fn current(&self) -> u16;
    /// Makes `ctx`'s view the one guest memory is read through; `false`
    /// if it is not live.
    fn set_current(&mut self, ctx: u16) -> bool;
    /// Sets the rights of every mapped page of `[gpa, gpa + len)` in
    /// `ctx`'s view (holes stay holes). All-or-nothing.
    fn protect(&mut self, ctx: u16, gpa: u64, len: u64, perms: Perms) -> Result<(), ept::Error>;
    /// Creates `ctx`'s view as a copy of the trusted view. All-or-nothing.
    fn create(&mut self, ctx: u16) -> Result<(), ept::Error>;
    /// Drops `ctx`'s view (never 0 or the current one), returning its
    /// tables to the pool; `false` if there was none to drop.
    fn destroy(&mut self, ctx: u16) -> bool;
    /// The EPT pointer of `ctx`'s view (write-back, no A/D flags).
    fn eptp(&self, ctx: u16) -> Option<u64>;
    /// The tables `ctx`'s view uses.
    fn tables(&self, ctx: u16) -> u64;
    /// Frames the pool can still give.
    fn frames_available(&self) -> u64;
    /// What `ctx`'s view maps at `gpa`.
    fn translate(&self, ctx: u16, gpa: u64) -> Option<Translation>;
    /// The rights `ctx`'s view gives `gpa` (none where nothing maps it),
    /// and the end of the leaf or empty entry that decides them: every
    /// address up to it has the same rights (one walk per 4 KiB, 2 MiB or
    /// 1 GiB, SDM Vol. 3C §29.3.2). For the fuzzing oracles.
    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn rights_at(&self, ctx: u16, gpa: u64) -> (Perms, u64);
    /// The monitor's memory, page-aligned outward: the loader's monitor
    /// ranges, then the frame pool (last).
    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn monitor(&self) -> &[PhysRange];
    /// The end of the highest memory-map entry (page-aligned).
    fn mapped_end(&self) -> u64;
    /// The RAM ranges of the memory map.
    fn ram(&self) -> &[PhysRange];
    /// Whether `[gpa, gpa + len)` is guest RAM, outside monitor memory,
    /// and below the monitor's identity map (monitor memory checked
    /// first).
    fn check_ram(&self, gpa: u64, len: u64) -> Result<(), MemoryError>;
    /// Reads guest RAM that [`Views::check_ram`] accepted, whatever the
    /// views map (page-table entries the monitor validates).
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Hands `f` the bytes of guest RAM `[gpa, gpa + len)` that
    /// [`Views::check_ram`] accepted, whatever the views map, in order as
    /// one or more consecutive slices (in place where the monitor's map
    /// allows: no copy). For the fuzzing oracles' checksums.
    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn read_phys_with(
        &self,
        gpa: u64,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MemoryError>;
    /// Writes guest RAM that [`Views::check_ram`] accepted, whatever the
    /// views map (validated page-table entries, zeroing freed pages).
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError>;
    /// The views generation and the monitor write log
    /// (`crate::fuzz::dirty`): what makes `CALL_CHECK` incremental.
    #[cfg(feature = "fuzz")]
    fn dirty(&self) -> &crate::fuzz::dirty::Dirty;
    /// Empties the monitor write log (the generation stays).
    #[cfg(feature = "fuzz")]
    fn clear_write_log(&mut self);
}

fn slot(ctx: u16) -> usize {
    usize::from(ctx)
}

impl<A: SharedFrames, R: PhysMemory> Views for ViewMemory<A, R> {
    fn is_live(&self, ctx: u16) -> bool {
        self.slot(slot(ctx)).is_some()
    }

    fn current(&self) -> u16 {
        // At most MAX_CONTEXTS + 1 slots.
        self.current_slot() as u16
    }

    fn set_current(&mut self, ctx: u16) -> bool {
        self.set_current_slot(slot(ctx))
    }

    fn protect(&mut self, ctx: u16, gpa: u64, len: u64, perms: Perms) -> Result<(), ept::Error> {
        match self.slot_mut(slot(ctx)) {
            Some(v) => v.protect(Gpa(gpa), len, perms),
            None => Ok(()),
        }
    }

    fn create(&mut self, ctx: u16) -> Result<(), ept::Error> {
        if ctx == 0 || usize::from(ctx) > MAX_CONTEXTS || self.is_live(ctx) {
            return Err(ept::Error::EmptyRange);
        }
        let copy = match self.slot(0) {
            Some(base) => base.try_clone()?,
            None => return Err(ept::Error::EmptyRange),
        };
        // The slot was checked free above.
        self.insert(slot(ctx), copy)
            .map_err(|_| ept::Error::EmptyRange)
    }

    fn destroy(&mut self, ctx: u16) -> bool {
        self.remove(slot(ctx)).is_some()
    }

    fn eptp(&self, ctx: u16) -> Option<u64> {
        let v: &View<A> = self.slot(slot(ctx))?;
        v.eptp(ept::MemoryType::WriteBack, false)
            .ok()
            .map(|e| e.raw())
    }

    fn tables(&self, ctx: u16) -> u64 {
        self.slot(slot(ctx)).map_or(0, |v| v.usage().total() as u64)
    }

    fn frames_available(&self) -> u64 {
        self.slot(0).map_or(0, |v| v.frames().available())
    }

    fn translate(&self, ctx: u16, gpa: u64) -> Option<Translation> {
        self.slot(slot(ctx))?.translate(Gpa(gpa)).ok().flatten()
    }

    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn rights_at(&self, ctx: u16, gpa: u64) -> (Perms, u64) {
        match self.slot(slot(ctx)) {
            Some(v) => rights_at(v, gpa),
            None => (Perms::NONE, u64::MAX),
        }
    }

    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn monitor(&self) -> &[PhysRange] {
        ViewMemory::monitor(self)
    }

    fn mapped_end(&self) -> u64 {
        ViewMemory::mapped_end(self)
    }

    fn ram(&self) -> &[PhysRange] {
        ViewMemory::ram(self)
    }

    fn check_ram(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, len)
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, buf.len() as u64)?;
        self.phys().copy(gpa, buf);
        Ok(())
    }

    #[cfg(any(test, feature = "fake", feature = "fuzz"))]
    fn read_phys_with(
        &self,
        gpa: u64,
        len: u64,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, len)?;
        self.phys().read_with(gpa, len, f);
        Ok(())
    }

    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        ViewMemory::check_ram(self, gpa, bytes.len() as u64)?;
        self.write_hpa(gpa, bytes);
        Ok(())
    }

    #[cfg(feature = "fuzz")]
    fn dirty(&self) -> &crate::fuzz::dirty::Dirty {
        ViewMemory::dirty(self)
    }

    #[cfg(feature = "fuzz")]
    fn clear_write_log(&mut self) {
        ViewMemory::clear_write_log(self);
    }
}

#[cfg(any(test, feature = "fake", feature = "fuzz"))]
/// [`Views::rights_at`] for one view: the last entry of the walk is a
/// leaf or an empty entry (rights 000b: not present), and it decides the
/// rights of the whole span its level covers. A 4 KiB entry's span is
/// extended over the following entries of its page table that give the
/// same rights (a few instructions each, not a walk each: the oracle
/// scans thousands of pages per check, most of them the monitor's,
/// unmapped in 4 KiB entries).
fn rights_at<A: FrameAllocator>(view: &View<A>, gpa: u64) -> (Perms, u64) {
    let Ok(path) = view.walk(Gpa(gpa)) else {
        return (Perms::NONE, u64::MAX);
    };
    let (level, entry) = path.last();
    let perms = entry.perms();
    let span = 1u64 << (12 + 9 * (u32::from(level) - 1));
    let end = (gpa | (span - 1)).saturating_add(1);
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
    let first = ((gpa >> 12) & 0x1ff) as usize;
    (
        perms,
        end + same_rights(&table[first + 1..], perms) * PAGE_SIZE,
    )
}

#[cfg(any(test, feature = "fake", feature = "fuzz"))]
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

#[cfg(any(test, feature = "fake", feature = "fuzz"))]
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
