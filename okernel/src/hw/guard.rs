//! Guard pages below stacks.
//!
//! - The monitor's host stack (`launch`): the [`HOST_GUARD_PAGES`] frames
//!   below it are made not present in the page tables the monitor runs on
//!   ([`unmap`]). An overflow faults at its first access to them, before
//!   it reaches what lies below (the I/O bitmaps, whose bits decide which
//!   ports the guest reaches), at no cost per exit. The #PF cannot be
//!   delivered on the overflowing stack: its frame goes below the 16-byte
//!   aligned RSP (SDM Vol. 3A §6.14.2), which is still inside the guard
//!   when RSP is in the guard's lowest 16 bytes only because the guard is
//!   two pages deep; so it becomes a #DF, which the loader's IDT takes on
//!   its own IST stack and reports ([`overflow_at`]). Rust's stack probes
//!   (inline on x86_64-unknown-none) touch every page of a frame larger
//!   than a page in order, so no frame steps over the guard (SDM Vol. 3A
//!   §4.7 "Page-Fault Exceptions"; §6.15, #DF).
//! - The loader's boot stack: a page filled with [`PATTERN`] that nothing
//!   writes but an overflow ([`arm`], [`intact`]), checked in the
//!   loader's exception report and at the end of its run (the loader
//!   builds the page tables this would split, so it keeps the check).

use core::sync::atomic::{AtomicU64, Ordering};

/// What every word of an armed guard page holds (not zero: stack probes
/// and zeroed locals write zeros).
pub const PATTERN: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// Bytes in a page.
const PAGE: u64 = 4096;

/// Not-present pages below the monitor's host stack: two, so that the
/// frame of the #PF an overflow raises (pushed below RSP rounded down to
/// 16) cannot land on the present page below the guard.
pub const HOST_GUARD_PAGES: u64 = 2;

/// Words in a guard page.
const WORDS: usize = (PAGE / 8) as usize;

/// Fills the guard page at `page` with [`PATTERN`].
///
/// # Safety
/// `page` points to a 4 KiB, 8-byte aligned page that belongs to the
/// caller alone and is used as nothing but a guard.
pub unsafe fn arm(page: *mut u64) {
    for i in 0..WORDS {
        // SAFETY: `i` < WORDS: inside the caller's page, aligned.
        unsafe { page.add(i).write_volatile(PATTERN) };
    }
}

/// Whether the guard page at `page` still holds [`PATTERN`] in every
/// word: a frame larger than a page touches the guard anywhere, not only
/// at its top.
///
/// # Safety
/// As for [`arm`], and armed by it.
pub unsafe fn intact(page: *const u64) -> bool {
    (0..WORDS).all(|i| {
        // SAFETY: `i` < WORDS: inside the caller's page, aligned.
        // Volatile: nothing in the program writes it after arming, so a
        // plain read could be folded away.
        unsafe { page.add(i).read_volatile() == PATTERN }
    })
}

/// The 8-byte entries of 4-level page tables, by physical address.
pub trait TableMemory {
    /// The entry at `hpa` (8-byte aligned).
    fn entry(&self, hpa: u64) -> u64;
    /// Writes the entry at `hpa` (8-byte aligned).
    fn set_entry(&mut self, hpa: u64, value: u64);
}

/// Why a guard page could not be unmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnmapError {
    /// The page is not page-aligned.
    #[error("guard page {0:#x} is not 4 KiB-aligned")]
    Unaligned(u64),
    /// No translation reaches the page at this level (4 = PML4 ... 1 = PT).
    #[error("guard page {page:#x} is not mapped (no entry at level {level})")]
    NotMapped {
        /// The page.
        page: u64,
        /// The level of the missing entry.
        level: u8,
    },
    /// A 1 GiB page maps it (two splits would be needed; the loader maps
    /// with 2 MiB pages).
    #[error("guard page {0:#x} lies in a 1 GiB page")]
    GiantPage(u64),
    /// A 2 MiB page maps it and no frame was left for its page table.
    #[error("guard page {0:#x} needs a page table and no spare frame is left")]
    NoSpare(u64),
}

/// Entry bits (SDM Vol. 3A §4.5, Tables 4-15 to 4-20).
const P: u64 = 1 << 0;
/// A 2 MiB page's PS bit (a leaf PDE); in a PTE, bit 7 is PAT.
const PS: u64 = 1 << 7;
/// A 2 MiB page's PAT bit.
const PAT_LARGE: u64 = 1 << 12;
/// A PTE's PAT bit.
const PAT_4K: u64 = 1 << 7;
/// Bits 51:12: the address of a frame or table.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Bits 51:21: the address of a 2 MiB page.
const ADDRESS_2M: u64 = 0x000f_ffff_ffe0_0000;
/// XD (bit 63).
const XD: u64 = 1 << 63;
/// XD and bits 62:52 (protection key, ignored), which a leaf keeps.
const HIGH: u64 = 0xfff0_0000_0000_0000;
/// The low attribute bits a 4 KiB entry takes from a 2 MiB one: P, R/W,
/// U/S, PWT, PCD, A, D, G (bits 8:0 but PS) and the ignored bits 11:9.
const LOW_4K: u64 = 0xfff & !PS;
/// What a PDE that links a page table keeps of the 2 MiB entry it
/// replaces: P, R/W, U/S, PWT, PCD, A.
const LINK: u64 = 0x3f;

/// Makes the 4 KiB page at `page` not present in the 4-level page tables
/// rooted at `root` (CR3's address). Where a 2 MiB page maps it, that page
/// is first split into the page table at `spare` (a zeroed frame the
/// caller gives up; [`UnmapError::NoSpare`] without one) with the same
/// translation and attributes for the other 511 pages (PAT moved from bit
/// 12 to bit 7). Returns whether `spare` was used. The caller flushes the
/// page's translation.
pub fn unmap_in<M: TableMemory>(
    mem: &mut M,
    root: u64,
    page: u64,
    spare: Option<u64>,
) -> Result<bool, UnmapError> {
    if !page.is_multiple_of(PAGE) {
        return Err(UnmapError::Unaligned(page));
    }
    let index = |level: u32| (page >> (12 + 9 * (level - 1))) & 0x1ff;
    let mut table = root & ADDRESS;
    for level in [4u8, 3] {
        let e = mem.entry(table + 8 * index(u32::from(level)));
        if e & P == 0 {
            return Err(UnmapError::NotMapped { page, level });
        }
        if level == 3 && e & PS != 0 {
            return Err(UnmapError::GiantPage(page));
        }
        table = e & ADDRESS;
    }
    let pde_at = table + 8 * index(2);
    let pde = mem.entry(pde_at);
    if pde & P == 0 {
        return Err(UnmapError::NotMapped { page, level: 2 });
    }
    let split = pde & PS != 0;
    if split {
        let spare = spare.ok_or(UnmapError::NoSpare(page))?;
        let base = pde & ADDRESS_2M;
        let pat = if pde & PAT_LARGE != 0 { PAT_4K } else { 0 };
        let attributes = (pde & (LOW_4K | HIGH)) | pat;
        for i in 0..512 {
            mem.set_entry(spare + 8 * i, (base + i * PAGE) | attributes);
        }
        mem.set_entry(pde_at, (spare & ADDRESS) | (pde & (LINK | XD)));
        table = spare;
    } else {
        table = pde & ADDRESS;
    }
    let pte_at = table + 8 * index(1);
    let pte = mem.entry(pte_at);
    if pte & P == 0 {
        return Err(UnmapError::NotMapped { page, level: 1 });
    }
    mem.set_entry(pte_at, pte & !P);
    Ok(split)
}

/// The lowest page of the monitor's host-stack guard, once [`unmap`]
/// made the guard not present (0 before).
static HOST_STACK_GUARD: AtomicU64 = AtomicU64::new(0);

/// What an exception says about the monitor's host stack: the words for
/// its report when both the faulting address `cr2` and the stack pointer
/// `rsp` the exception frame saved lie in the guard (the 16 bytes above
/// it included: RSP is rounded down before the push). CR2 alone would not
/// do: a guest sets CR2 at will and VM exits do not switch it.
pub fn overflow_at(cr2: u64, rsp: u64) -> Option<&'static str> {
    let guard = HOST_STACK_GUARD.load(Ordering::Relaxed);
    let size = HOST_GUARD_PAGES * PAGE;
    let inside = |a: u64| a.wrapping_sub(guard) < size + 16;
    (guard != 0 && inside(cr2) && inside(rsp))
        .then_some("the monitor's host stack overflowed into its not-present guard pages")
}

/// The page tables the processor runs on, through the identity map.
struct CurrentTables;

impl TableMemory for CurrentTables {
    fn entry(&self, hpa: u64) -> u64 {
        // SAFETY: `unmap`'s contract: the tables are identity-mapped and
        // the monitor's own; `hpa` is 8-byte aligned (a table plus 8 times
        // an index).
        unsafe { core::ptr::with_exposed_provenance::<u64>(hpa as usize).read_volatile() }
    }

    fn set_entry(&mut self, hpa: u64, value: u64) {
        // SAFETY: as in `entry`; nothing else walks or writes these tables
        // while the monitor changes them (interrupts are off, other
        // processors never use the monitor's stack pages).
        unsafe { core::ptr::with_exposed_provenance_mut::<u64>(hpa as usize).write_volatile(value) }
    }
}

/// Makes the host stack's guard, the [`HOST_GUARD_PAGES`] pages from
/// `lowest` up, not present in the page tables this processor runs on
/// ([`unmap_in`] from CR3), flushes their translations and remembers the
/// guard for [`overflow_at`]. `spares` are zeroed frames for the page
/// tables a split needs (one per 2 MiB page the guard touches, so at most
/// [`HOST_GUARD_PAGES`]); those not used stay zeroed.
///
/// # Safety
/// CPL0 on the loader's identity map, whose page tables belong to the
/// monitor and are identity-mapped; the guard pages are frames nothing
/// will access, and `spares` zeroed frames the monitor gives up for good.
pub unsafe fn unmap(
    lowest: u64,
    spares: [u64; HOST_GUARD_PAGES as usize],
) -> Result<(), UnmapError> {
    let root = crate::arch::cpu::read_cr3();
    let mut spares = spares.into_iter();
    let mut spare = spares.next();
    for page in (0..HOST_GUARD_PAGES).map(|i| lowest + i * PAGE) {
        if unmap_in(&mut CurrentTables, root, page, spare)? {
            spare = spares.next();
        }
        // SAFETY: CPL0 (the caller's contract); INVLPG drops the TLB entry
        // that maps `page` (the 2 MiB one, if it was split) and the
        // paging-structure caches, so the next access walks the new tables
        // (SDM Vol. 3A §4.10.4.1). The other pages keep their translation.
        unsafe { crate::arch::cpu::invlpg(page) };
    }
    HOST_STACK_GUARD.store(lowest, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_write_anywhere_in_the_guard_is_seen() {
        for at in [0, 1, 255, 511] {
            for value in [0, PATTERN ^ 1] {
                let mut page = vec![0u64; WORDS];
                // SAFETY: a page-sized, aligned buffer of this test's alone.
                unsafe { arm(page.as_mut_ptr()) };
                // SAFETY: as above.
                assert!(unsafe { intact(page.as_ptr()) });
                page[at] = value;
                // SAFETY: as above.
                assert!(!unsafe { intact(page.as_ptr()) }, "word {at} = {value:#x}");
            }
        }
    }

    #[derive(Default)]
    struct Tables(BTreeMap<u64, u64>);

    impl TableMemory for Tables {
        fn entry(&self, hpa: u64) -> u64 {
            assert_eq!(hpa % 8, 0);
            self.0.get(&hpa).copied().unwrap_or(0)
        }
        fn set_entry(&mut self, hpa: u64, value: u64) {
            self.0.insert(hpa, value);
        }
    }

    const ROOT: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const SPARE: u64 = 0x9000;

    /// The loader's layout: PML4[0] → PDPT, PDPT[0..4] → PDs of 2 MiB
    /// pages (`attributes` on each), identity.
    fn loader_tables(attributes: u64) -> Tables {
        let mut t = Tables::default();
        t.set_entry(ROOT, PDPT | 0x3);
        t.set_entry(PDPT + 8 * 3, PD | 0x3);
        for i in 0..512 {
            t.set_entry(PD + 8 * i, ((3 << 30) + (i << 21)) | attributes);
        }
        t
    }

    /// What the processor makes of `va` (SDM Vol. 3A §4.6, §4.9.2): the
    /// physical address and the effective rights — R/W and U/S only
    /// where every level grants them, XD where any level sets it — and
    /// of the leaf: the memory-type index (PAT, PCD, PWT), G, A, D and
    /// the protection key; None where not present.
    fn translate(t: &Tables, va: u64) -> Option<(u64, u64)> {
        const RW_US: u64 = 0b110;
        let mut table = ROOT;
        let mut granted = RW_US;
        let mut xd = 0;
        for level in [4u32, 3, 2, 1] {
            let e = t.entry(table + 8 * ((va >> (12 + 9 * (level - 1))) & 0x1ff));
            if e & P == 0 {
                return None;
            }
            granted &= e;
            xd |= e & XD;
            let leaf = |pa: u64, pat: bool| {
                let index = u64::from(pat) << 2 | (e >> 3) & 0b11;
                let kept = e & (0x160 | 0x7800_0000_0000_0000);
                (pa, granted & RW_US | xd | index << 32 | kept)
            };
            if level == 2 && e & PS != 0 {
                return Some(leaf(
                    (e & ADDRESS_2M) + (va & 0x1f_ffff),
                    e & PAT_LARGE != 0,
                ));
            }
            if level == 1 {
                return Some(leaf((e & ADDRESS) + (va & 0xfff), e & PAT_4K != 0));
            }
            table = e & ADDRESS;
        }
        unreachable!()
    }

    #[test]
    fn a_2mib_page_is_split_and_only_the_guard_disappears() {
        let region = (3 << 30) + (7 << 21);
        let guard = region + 5 * PAGE;
        // Present, writable, user or not, every caching bit, A, D, G, a
        // protection key, XD: each must mean the same on the other 511
        // pages after the split.
        for attributes in [
            0x83,
            0x87 | PAT_LARGE | XD,
            0x83 | 0x18 | 0x60 | 0x100 | (0x5 << 59),
            0x81 | PAT_LARGE | 0x08,
        ] {
            let mut t = loader_tables(attributes);
            let before: std::vec::Vec<_> = (0..512)
                .map(|i| translate(&t, region + i * PAGE + 0x8))
                .collect();
            assert_eq!(unmap_in(&mut t, ROOT, guard, Some(SPARE)), Ok(true));
            for (i, was) in before.iter().enumerate() {
                let va = region + i as u64 * PAGE + 0x8;
                let now = translate(&t, va);
                if va & !0xfff == guard {
                    assert_eq!(now, None, "the guard is not present");
                } else {
                    assert_eq!(now, *was, "page {i} of {attributes:#x} changed");
                }
            }
            // The next 2 MiB page is untouched.
            assert_eq!(t.entry(PD + 8 * 8), (region + (1 << 21)) | attributes);
        }
    }

    #[test]
    fn a_split_without_a_spare_frame_is_refused_and_changes_nothing() {
        let mut t = loader_tables(0x83);
        let guard = (3 << 30) + (7 << 21);
        assert_eq!(
            unmap_in(&mut t, ROOT, guard, None),
            Err(UnmapError::NoSpare(guard))
        );
        assert_eq!(translate(&t, guard).map(|x| x.0), Some(guard));
    }

    #[test]
    fn a_page_table_already_there_is_used_and_the_spare_is_not() {
        let mut t = loader_tables(0x83);
        let pt = 0x5000;
        t.set_entry(PD + 8 * 9, pt | 0x3);
        for i in 0..512 {
            t.set_entry(pt + 8 * i, ((3 << 30) + (9 << 21) + i * PAGE) | 0x3);
        }
        let guard = (3 << 30) + (9 << 21) + 100 * PAGE;
        assert_eq!(unmap_in(&mut t, ROOT, guard, Some(SPARE)), Ok(false));
        assert_eq!(translate(&t, guard), None);
        assert_eq!(translate(&t, guard + PAGE).map(|x| x.0), Some(guard + PAGE));
        assert_eq!(t.entry(SPARE), 0, "spare untouched");
    }

    #[test]
    fn what_cannot_be_unmapped_is_named() {
        let mut t = loader_tables(0x83);
        assert_eq!(
            unmap_in(&mut t, ROOT, 0x1234, Some(SPARE)),
            Err(UnmapError::Unaligned(0x1234))
        );
        assert_eq!(
            unmap_in(&mut t, ROOT, 1 << 39, Some(SPARE)),
            Err(UnmapError::NotMapped {
                page: 1 << 39,
                level: 4
            })
        );
        assert_eq!(
            unmap_in(&mut t, ROOT, 0, Some(SPARE)),
            Err(UnmapError::NotMapped { page: 0, level: 3 })
        );
        t.set_entry(PDPT + 8, (1 << 30) | 0x83);
        assert_eq!(
            unmap_in(&mut t, ROOT, 1 << 30, Some(SPARE)),
            Err(UnmapError::GiantPage(1 << 30))
        );
        assert_eq!(t.entry(SPARE), 0);
    }

    #[test]
    fn only_a_fault_with_its_address_and_stack_in_the_guard_is_named_an_overflow() {
        HOST_STACK_GUARD.store(0x40_0000, Ordering::Relaxed);
        let top = 0x40_0000 + HOST_GUARD_PAGES * PAGE;
        for (cr2, rsp) in [
            (0x40_0000, 0x40_0008),
            (top - 8, top - 8),
            (top + 8, top + 8),
        ] {
            assert!(overflow_at(cr2, rsp).is_some(), "{cr2:#x} {rsp:#x}");
        }
        for (cr2, rsp) in [
            // CR2 is the guest's: not enough alone.
            (0x40_0000, 0x20_0000),
            (0x3f_fff8, 0x3f_fff8),
            (top + 16, top + 16),
        ] {
            assert!(overflow_at(cr2, rsp).is_none(), "{cr2:#x} {rsp:#x}");
        }
    }
}
